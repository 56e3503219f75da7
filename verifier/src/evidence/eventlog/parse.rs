//! Parsing the log's framing: the header event, then events in the crypto-agile or legacy format.
//! Every length is checked against what remains before anything is read or allocated.

use crate::evidence::digest::HashAlgorithm;
use crate::evidence::reader::{Problem, ReadError, Reader};

use super::{EV_NO_ACTION, MAX_DIGESTS, MAX_EVENT_DATA, MAX_EVENTS, MAX_LOG_SIZE};

const SPEC_ID_SIGNATURE: &[u8; 16] = b"Spec ID Event03\0";
/// Most algorithms a Spec ID event may list.
const MAX_SPEC_ALGORITHMS: usize = 16;

/// Why a log could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventLogError {
    #[error("the log is empty")]
    Empty,
    #[error("the log is {0} bytes, more than the {MAX_LOG_SIZE} accepted")]
    TooLarge(usize),
    #[error("more than {MAX_EVENTS} events")]
    TooManyEvents,
    #[error("event {index}: {source}")]
    Event { index: usize, source: ReadError },
    #[error("header: {0}")]
    Header(ReadError),
}

impl EventLogError {
    /// The byte offset of the problem, when known.
    pub fn offset(&self) -> Option<usize> {
        match self {
            Self::Event { source, .. } | Self::Header(source) => Some(source.offset),
            _ => None,
        }
    }
}

/// Which framing the log uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// TCG_PCR_EVENT2 events after a Spec ID Event03 header.
    CryptoAgile,
    /// TCG_PCClientPCREvent (SHA-1 only) throughout.
    LegacySha1,
}

/// The Spec ID event (TCG_EfiSpecIdEvent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecId {
    pub platform_class: u32,
    pub spec_version: (u8, u8, u8),
    pub uintn_size: u8,
    /// (TPM_ALG_ID, digest size) as the firmware declared them.
    pub algorithms: Vec<(u16, u16)>,
    pub vendor_info: Vec<u8>,
}

/// One logged event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Position in the log (the header event is 0).
    pub index: usize,
    /// Byte offset of the event in the log.
    pub offset: usize,
    pub pcr: u32,
    pub event_type: u32,
    /// Digests for the banks we know; unknown algorithms are skipped by their declared size.
    pub digests: Vec<(HashAlgorithm, Vec<u8>)>,
    pub data: Vec<u8>,
}

impl Event {
    pub fn digest(&self, bank: HashAlgorithm) -> Option<&[u8]> {
        self.digests
            .iter()
            .find(|(alg, _)| *alg == bank)
            .map(|(_, d)| d.as_slice())
    }
}

/// A parsed event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLog {
    pub format: LogFormat,
    pub spec_id: Option<SpecId>,
    /// The banks the log carries digests for (known algorithms only).
    pub banks: Vec<HashAlgorithm>,
    /// Every event, including the header event (index 0).
    pub events: Vec<Event>,
}

fn read_spec_id(r: &mut Reader<'_>) -> Result<SpecId, ReadError> {
    r.bytes("signature", 16)?;
    let platform_class = r.u32_le("platformClass")?;
    let minor = r.u8("specVersionMinor")?;
    let major = r.u8("specVersionMajor")?;
    let errata = r.u8("specErrata")?;
    let uintn_size = r.u8("uintnSize")?;
    let count = r.u32_le("numberOfAlgorithms")? as usize;
    if count == 0 || count > MAX_SPEC_ALGORITHMS {
        return Err(r.invalid(
            "numberOfAlgorithms",
            format!("{count} (must be 1..={MAX_SPEC_ALGORITHMS})"),
        ));
    }
    let mut algorithms = Vec::with_capacity(count);
    for _ in 0..count {
        let id = r.u16_le("algorithmId")?;
        let size = r.u16_le("digestSize")?;
        if let Some(known) = HashAlgorithm::from_tpm_alg_id(id)
            && usize::from(size) != known.size()
        {
            return Err(r.invalid("digestSize", format!("{known} declared with {size} bytes")));
        }
        if usize::from(size) > 64 {
            return Err(r.invalid(
                "digestSize",
                format!("{size} bytes for algorithm 0x{id:04x}"),
            ));
        }
        algorithms.push((id, size));
    }
    let vendor_size = usize::from(r.u8("vendorInfoSize")?);
    let vendor_info = r.bytes("vendorInfo", vendor_size)?.to_vec();
    r.finish()?;
    Ok(SpecId {
        platform_class,
        spec_version: (major, minor, errata),
        uintn_size,
        algorithms,
        vendor_info,
    })
}

/// Reads one legacy TCG_PCClientPCREvent.
fn read_legacy_event(r: &mut Reader<'_>, index: usize) -> Result<Event, ReadError> {
    let offset = r.offset();
    let pcr = r.u32_le("pcrIndex")?;
    let event_type = r.u32_le("eventType")?;
    let digest = r.bytes("digest", 20)?.to_vec();
    let size = r.u32_le("eventSize")? as usize;
    let data = r.bytes_limited("event", size, MAX_EVENT_DATA)?.to_vec();
    Ok(Event {
        index,
        offset,
        pcr,
        event_type,
        digests: vec![(HashAlgorithm::Sha1, digest)],
        data,
    })
}

/// Reads one crypto-agile TCG_PCR_EVENT2.
fn read_agile_event(r: &mut Reader<'_>, index: usize, spec: &SpecId) -> Result<Event, ReadError> {
    let offset = r.offset();
    let pcr = r.u32_le("pcrIndex")?;
    let event_type = r.u32_le("eventType")?;
    let count = r.u32_le("digests.count")? as usize;
    if count > MAX_DIGESTS {
        return Err(r.error(Problem::TooLarge {
            field: "digests.count",
            declared: count,
            limit: MAX_DIGESTS,
        }));
    }
    let mut digests = Vec::with_capacity(count);
    for _ in 0..count {
        let id = r.u16_le("digest.hashAlg")?;
        let size = spec
            .algorithms
            .iter()
            .find(|(alg, _)| *alg == id)
            .map(|(_, size)| usize::from(*size))
            .ok_or_else(|| {
                r.invalid(
                    "digest.hashAlg",
                    format!("0x{id:04x} is not in the Spec ID event"),
                )
            })?;
        let digest = r.bytes("digest", size)?;
        if let Some(alg) = HashAlgorithm::from_tpm_alg_id(id) {
            if digests.iter().any(|(a, _)| *a == alg) {
                return Err(r.invalid("digest.hashAlg", format!("{alg} digest given twice")));
            }
            digests.push((alg, digest.to_vec()));
        }
    }
    let size = r.u32_le("eventSize")? as usize;
    let data = r.bytes_limited("event", size, MAX_EVENT_DATA)?.to_vec();
    Ok(Event {
        index,
        offset,
        pcr,
        event_type,
        digests,
        data,
    })
}

/// Parses a whole event log.
pub fn parse(bytes: &[u8]) -> Result<EventLog, EventLogError> {
    if bytes.is_empty() {
        return Err(EventLogError::Empty);
    }
    if bytes.len() > MAX_LOG_SIZE {
        return Err(EventLogError::TooLarge(bytes.len()));
    }
    let mut r = Reader::new(bytes);
    // The first event is always in the legacy format; in a crypto-agile log it is the Spec ID event.
    let header = read_legacy_event(&mut r, 0).map_err(EventLogError::Header)?;
    let spec_id = if header.event_type == EV_NO_ACTION && header.data.starts_with(SPEC_ID_SIGNATURE)
    {
        let mut spec_reader = Reader::new(&header.data);
        let spec = read_spec_id(&mut spec_reader).map_err(|mut e| {
            // Offsets inside the header's data, made absolute: data starts 32 bytes in.
            e.offset += header.offset + 32;
            EventLogError::Header(e)
        })?;
        Some(spec)
    } else {
        None
    };
    let (format, banks) = match &spec_id {
        Some(spec) => (
            LogFormat::CryptoAgile,
            spec.algorithms
                .iter()
                .filter_map(|(id, _)| HashAlgorithm::from_tpm_alg_id(*id))
                .collect(),
        ),
        None => (LogFormat::LegacySha1, vec![HashAlgorithm::Sha1]),
    };
    let mut events = vec![header];
    while !r.is_empty() {
        let index = events.len();
        if index > MAX_EVENTS {
            return Err(EventLogError::TooManyEvents);
        }
        let event = match &spec_id {
            Some(spec) => read_agile_event(&mut r, index, spec),
            None => read_legacy_event(&mut r, index),
        }
        .map_err(|source| EventLogError::Event { index, source })?;
        events.push(event);
    }
    Ok(EventLog {
        format,
        spec_id,
        banks,
        events,
    })
}
