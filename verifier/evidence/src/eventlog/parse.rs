//! Parsing the log's framing: the header event, then events in the crypto-agile or legacy format.
//! Every length is checked against what remains before anything is read or allocated.
//!
//! Events do not copy their bytes: the log is copied once into a shared buffer and each event's
//! data and digests are ranges of it ([`LogBytes`], [`Digests`]), so parsing costs one allocation
//! for the bytes rather than one per event and per digest.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use crate::digest::HashAlgorithm;
use crate::reader::{Problem, ReadError, Reader};

use super::{EV_NO_ACTION, MAX_DIGESTS, MAX_EVENT_DATA, MAX_EVENTS, MAX_LOG_SIZE};

const SPEC_ID_SIGNATURE: &[u8; 16] = b"Spec ID Event03\0";
/// Most algorithms a Spec ID event may list.
const MAX_SPEC_ALGORITHMS: usize = 16;
/// Largest digest an unknown algorithm may declare (SHA-512, the largest TPM hash, is 64).
const MAX_DIGEST_SIZE: u16 = 64;
/// Size of the legacy TCG_PCClientPCREvent header before the event data.
const LEGACY_HEADER: usize = 32;

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

/// A range of bytes in a shared buffer (usually the log); reads as `&[u8]`.
#[derive(Clone)]
pub struct LogBytes {
    buffer: Arc<[u8]>,
    start: usize,
    end: usize,
}

impl LogBytes {
    fn range(buffer: &Arc<[u8]>, start: usize, end: usize) -> Self {
        Self {
            buffer: Arc::clone(buffer),
            start,
            end,
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        self.buffer.get(self.start..self.end).unwrap_or_default()
    }
}

impl Default for LogBytes {
    fn default() -> Self {
        Self::from(&[][..])
    }
}

impl From<&[u8]> for LogBytes {
    fn from(bytes: &[u8]) -> Self {
        Self {
            buffer: Arc::from(bytes),
            start: 0,
            end: bytes.len(),
        }
    }
}

impl From<Vec<u8>> for LogBytes {
    fn from(bytes: Vec<u8>) -> Self {
        let end = bytes.len();
        Self {
            buffer: Arc::from(bytes),
            start: 0,
            end,
        }
    }
}

impl Deref for LogBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsRef<[u8]> for LogBytes {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl PartialEq for LogBytes {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for LogBytes {}

impl PartialEq<[u8]> for LogBytes {
    fn eq(&self, other: &[u8]) -> bool {
        self.as_slice() == other
    }
}

impl fmt::Debug for LogBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LogBytes({})", hex::encode(self.as_slice()))
    }
}

/// An event's digests (TPML_DIGEST_VALUES) for the banks we know, in log order; digests of
/// algorithms we do not know are skipped. Stored inline: at most [`MAX_DIGESTS`].
#[derive(Clone, Default)]
pub struct Digests {
    /// The bytes the offsets below point into.
    bytes: LogBytes,
    entries: [(Option<HashAlgorithm>, u16); MAX_DIGESTS],
    count: usize,
}

impl Digests {
    /// Builds a digest list from values (for events made outside a log, e.g. in tests). `None`
    /// when there are more than [`MAX_DIGESTS`], a bank repeats, or a digest has the wrong size.
    pub fn from_values(values: &[(HashAlgorithm, &[u8])]) -> Option<Self> {
        if values.len() > MAX_DIGESTS {
            return None;
        }
        let mut bytes = Vec::new();
        let mut digests = Digests::default();
        for (alg, digest) in values {
            if digest.len() != alg.size() || digests.get(*alg).is_some() {
                return None;
            }
            let at = u16::try_from(bytes.len()).ok()?;
            bytes.extend_from_slice(digest);
            *digests.entries.get_mut(digests.count)? = (Some(*alg), at);
            digests.count += 1;
        }
        digests.bytes = LogBytes::from(bytes);
        Some(digests)
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// (bank, digest) pairs in log order.
    pub fn iter(&self) -> DigestIter<'_> {
        DigestIter {
            bytes: self.bytes.as_slice(),
            entries: self.entries.get(..self.count).unwrap_or_default().iter(),
        }
    }

    /// The digest for `bank`, if the event carries one.
    pub fn get(&self, bank: HashAlgorithm) -> Option<&[u8]> {
        self.iter()
            .find(|(alg, _)| *alg == bank)
            .map(|(_, digest)| digest)
    }

    pub fn banks(&self) -> impl Iterator<Item = HashAlgorithm> + '_ {
        self.iter().map(|(alg, _)| alg)
    }
}

/// Iterator over an event's (bank, digest) pairs.
#[derive(Debug, Clone)]
pub struct DigestIter<'a> {
    bytes: &'a [u8],
    entries: std::slice::Iter<'a, (Option<HashAlgorithm>, u16)>,
}

impl<'a> Iterator for DigestIter<'a> {
    type Item = (HashAlgorithm, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        for (alg, at) in self.entries.by_ref() {
            let start = usize::from(*at);
            if let Some(alg) = alg
                && let Some(digest) = self.bytes.get(start..start + alg.size())
            {
                return Some((*alg, digest));
            }
        }
        None
    }
}

impl<'a> IntoIterator for &'a Digests {
    type Item = (HashAlgorithm, &'a [u8]);
    type IntoIter = DigestIter<'a>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl PartialEq for Digests {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Digests {}

impl fmt::Debug for Digests {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(alg, d)| (alg.name(), hex::encode(d))))
            .finish()
    }
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
    pub digests: Digests,
    pub data: LogBytes,
}

impl Event {
    /// Builds an event outside a log (for tests and synthetic logs).
    pub fn new(index: usize, pcr: u32, event_type: u32, digests: Digests, data: &[u8]) -> Self {
        Self {
            index,
            offset: 0,
            pcr,
            event_type,
            digests,
            data: LogBytes::from(data),
        }
    }

    pub fn digest(&self, bank: HashAlgorithm) -> Option<&[u8]> {
        self.digests.get(bank)
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
    let mut algorithms: Vec<(u16, u16)> = Vec::with_capacity(count);
    for _ in 0..count {
        let id = r.u16_le("algorithmId")?;
        let size = r.u16_le("digestSize")?;
        if let Some(known) = HashAlgorithm::from_tpm_alg_id(id)
            && usize::from(size) != known.size()
        {
            return Err(r.invalid("digestSize", format!("{known} declared with {size} bytes")));
        }
        if size > MAX_DIGEST_SIZE {
            return Err(r.invalid(
                "digestSize",
                format!("{size} bytes for algorithm 0x{id:04x}"),
            ));
        }
        if algorithms.iter().any(|(listed, _)| *listed == id) {
            return Err(r.invalid("algorithmId", format!("0x{id:04x} listed twice")));
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

/// How to read the digests of crypto-agile events: the Spec ID event's table, resolved once.
struct DigestTable {
    /// (TPM_ALG_ID, declared size, the algorithm when we know it).
    algorithms: Vec<(u16, usize, Option<HashAlgorithm>)>,
}

impl DigestTable {
    fn new(spec: &SpecId) -> Self {
        Self {
            algorithms: spec
                .algorithms
                .iter()
                .map(|(id, size)| (*id, usize::from(*size), HashAlgorithm::from_tpm_alg_id(*id)))
                .collect(),
        }
    }
}

/// Reads one legacy TCG_PCClientPCREvent.
fn read_legacy_event(
    r: &mut Reader<'_>,
    buffer: &Arc<[u8]>,
    index: usize,
) -> Result<Event, ReadError> {
    let offset = r.offset();
    let pcr = r.u32_le("pcrIndex")?;
    let event_type = r.u32_le("eventType")?;
    let digest_at = r.offset();
    r.bytes("digest", HashAlgorithm::Sha1.size())?;
    let size = r.u32_le("eventSize")? as usize;
    let data_at = r.offset();
    r.bytes_limited("event", size, MAX_EVENT_DATA)?;
    let mut entries = [(None, 0u16); MAX_DIGESTS];
    if let Some(first) = entries.first_mut() {
        *first = (Some(HashAlgorithm::Sha1), 0);
    }
    Ok(Event {
        index,
        offset,
        pcr,
        event_type,
        digests: Digests {
            bytes: LogBytes::range(buffer, digest_at, digest_at + HashAlgorithm::Sha1.size()),
            entries,
            count: 1,
        },
        data: LogBytes::range(buffer, data_at, data_at + size),
    })
}

/// Reads one crypto-agile TCG_PCR_EVENT2.
fn read_agile_event(
    r: &mut Reader<'_>,
    buffer: &Arc<[u8]>,
    index: usize,
    table: &DigestTable,
) -> Result<Event, ReadError> {
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
    let digests_at = r.offset();
    let mut entries = [(None, 0u16); MAX_DIGESTS];
    let mut known = 0;
    for _ in 0..count {
        let id = r.u16_le("digest.hashAlg")?;
        let (size, alg) = table
            .algorithms
            .iter()
            .find(|(listed, _, _)| *listed == id)
            .map(|(_, size, alg)| (*size, *alg))
            .ok_or_else(|| {
                r.invalid(
                    "digest.hashAlg",
                    format!("0x{id:04x} is not in the Spec ID event"),
                )
            })?;
        let at = r.offset() - digests_at;
        r.bytes("digest", size)?;
        if let Some(alg) = alg {
            if entries.iter().take(known).any(|(a, _)| *a == Some(alg)) {
                return Err(r.invalid("digest.hashAlg", format!("{alg} digest given twice")));
            }
            // At most 8 digests of at most 66 bytes each: the offset fits in a u16.
            let at = u16::try_from(at).map_err(|_| r.invalid("digest", "offset overflow"))?;
            if let Some(slot) = entries.get_mut(known) {
                *slot = (Some(alg), at);
                known += 1;
            }
        }
    }
    let digests_end = r.offset();
    let size = r.u32_le("eventSize")? as usize;
    let data_at = r.offset();
    r.bytes_limited("event", size, MAX_EVENT_DATA)?;
    Ok(Event {
        index,
        offset,
        pcr,
        event_type,
        digests: Digests {
            bytes: LogBytes::range(buffer, digests_at, digests_end),
            entries,
            count: known,
        },
        data: LogBytes::range(buffer, data_at, data_at + size),
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
    let buffer: Arc<[u8]> = Arc::from(bytes);
    let mut r = Reader::new(&buffer);
    // The first event is always in the legacy format; in a crypto-agile log it is the Spec ID event.
    let header = read_legacy_event(&mut r, &buffer, 0).map_err(EventLogError::Header)?;
    let spec_id = if header.event_type == EV_NO_ACTION && header.data.starts_with(SPEC_ID_SIGNATURE)
    {
        // A sub-reader over the header's data keeps offsets absolute.
        let mut spec_reader = Reader::new(&buffer);
        spec_reader
            .bytes("header", header.offset + LEGACY_HEADER)
            .map_err(EventLogError::Header)?;
        let mut spec_reader = spec_reader
            .sub("specIdEvent", header.data.len())
            .map_err(EventLogError::Header)?;
        Some(read_spec_id(&mut spec_reader).map_err(EventLogError::Header)?)
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
    let table = spec_id.as_ref().map(DigestTable::new);
    // Real events average 300-500 bytes; a guess that avoids most regrowth without trusting much.
    let mut events = Vec::with_capacity((bytes.len() / 256).clamp(16, 4096));
    events.push(header);
    while !r.is_empty() {
        let index = events.len();
        if index > MAX_EVENTS {
            return Err(EventLogError::TooManyEvents);
        }
        let event = match &table {
            Some(table) => read_agile_event(&mut r, &buffer, index, table),
            None => read_legacy_event(&mut r, &buffer, index),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A crypto-agile header listing `algorithms`.
    fn header(algorithms: &[(u16, u16)]) -> Vec<u8> {
        let mut spec = SPEC_ID_SIGNATURE.to_vec();
        spec.extend_from_slice(&0u32.to_le_bytes());
        spec.extend_from_slice(&[0, 2, 0, 2]);
        spec.extend_from_slice(&(algorithms.len() as u32).to_le_bytes());
        for (id, size) in algorithms {
            spec.extend_from_slice(&id.to_le_bytes());
            spec.extend_from_slice(&size.to_le_bytes());
        }
        spec.push(0);
        let mut out = Vec::new();
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&EV_NO_ACTION.to_le_bytes());
        out.extend_from_slice(&[0u8; 20]);
        out.extend_from_slice(&(spec.len() as u32).to_le_bytes());
        out.extend_from_slice(&spec);
        out
    }

    #[test]
    fn unknown_algorithms_are_skipped_by_their_declared_size() {
        let mut log = header(&[(0x000b, 32), (0x7777, 5)]);
        let header_length = log.len();
        log.extend_from_slice(&4u32.to_le_bytes());
        log.extend_from_slice(&super::super::EV_SEPARATOR.to_le_bytes());
        log.extend_from_slice(&2u32.to_le_bytes());
        log.extend_from_slice(&0x7777u16.to_le_bytes());
        log.extend_from_slice(&[9u8; 5]);
        log.extend_from_slice(&0x000bu16.to_le_bytes());
        log.extend_from_slice(&[7u8; 32]);
        log.extend_from_slice(&4u32.to_le_bytes());
        log.extend_from_slice(&[0u8; 4]);
        let parsed = parse(&log).unwrap();
        assert_eq!(parsed.banks, vec![HashAlgorithm::Sha256]);
        let event = &parsed.events[1];
        assert_eq!(event.digests.len(), 1);
        assert_eq!(event.digest(HashAlgorithm::Sha256), Some(&[7u8; 32][..]));
        assert_eq!(event.data.as_slice(), &[0u8; 4]);
        // Every truncation but the one at the event boundary is an error, never a panic.
        for len in 1..log.len() {
            assert_eq!(
                parse(&log[..len]).is_ok(),
                len == header_length,
                "length {len}"
            );
        }
    }

    #[test]
    fn inconsistent_spec_id_tables_are_refused_with_their_offset() {
        let log = header(&[(0x000b, 20)]);
        let error = parse(&log).unwrap_err();
        assert!(error.to_string().contains("digestSize"), "{error}");
        // 32-byte header, 16 signature, 8 fixed, 4 count, 2 id: the size field ends at 64.
        assert_eq!(error.offset(), Some(64));
        assert!(parse(&header(&[(0x7777, 65)])).is_err());
        assert!(parse(&header(&[(0x000b, 32), (0x000b, 32)])).is_err());
    }

    #[test]
    fn digests_built_by_hand_read_back() {
        let sha1 = [1u8; 20];
        let sha256 = [2u8; 32];
        let digests = Digests::from_values(&[
            (HashAlgorithm::Sha1, &sha1[..]),
            (HashAlgorithm::Sha256, &sha256[..]),
        ])
        .unwrap();
        assert_eq!(digests.get(HashAlgorithm::Sha256), Some(&sha256[..]));
        assert_eq!(digests.iter().count(), 2);
        assert!(Digests::from_values(&[(HashAlgorithm::Sha1, &sha256[..])]).is_none());
    }
}
