//! Replaying an event log to the PCR values it claims.
//!
//! Rules (TCG PC Client PFP §3.3.4, §10.4.5.3, and the TPM's startup behaviour):
//! - EV_NO_ACTION events are never extended.
//! - A StartupLocality EV_NO_ACTION event (PCR 0, data "StartupLocality\0" + one byte) sets PCR 0's
//!   value before its first extend to 0x00..0L: the TPM was started from locality L (3), or by an
//!   H-CRTM sequence (4).
//! - An EV_EFI_HCRTM_EVENT is the H-CRTM's measurement, which the TPM extended into PCR 0 after
//!   `_TPM_Hash_Start` reset it to 0x00..04: if it is PCR 0's first extend and no StartupLocality
//!   event said otherwise, PCR 0 starts at 0x00..04.
//! - Vendor workarounds are named options, off by default ([`ReplayOptions`]).
//!
//! [`replay`] gives the final values only (the fast path); [`replay_detailed`] also says which
//! events made each (bank, PCR) value, for appraisal rules and policy learning.

use std::collections::BTreeMap;

use super::parse::EventLog;
use super::{EV_EFI_ACTION, EV_EFI_HCRTM_EVENT, EV_NO_ACTION};
use crate::digest::HashAlgorithm;

/// PCRs a TPM has. Events naming a higher index are replayed apart (a TPM could not have
/// extended them; the appraisal's event rules refuse them).
pub const PCR_COUNT: u32 = 24;
/// Largest digest of any bank (SHA-512).
const MAX_DIGEST: usize = 64;
/// Locality of an H-CRTM startup (`_TPM_Hash_Start`).
const HCRTM_LOCALITY: u8 = 4;

const STARTUP_LOCALITY: &[u8] = b"StartupLocality\0";
const EBS_INVOCATION: &[u8] = b"Exit Boot Services Invocation";
const EBS_SUCCESS: &[u8] = b"Exit Boot Services Returned with Success";

/// PCR values per bank: bank -> PCR index -> value. Only PCRs some event extended appear.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PcrBanks(pub BTreeMap<HashAlgorithm, BTreeMap<u32, Vec<u8>>>);

impl PcrBanks {
    pub fn get(&self, bank: HashAlgorithm, pcr: u32) -> Option<&[u8]> {
        self.0
            .get(&bank)
            .and_then(|pcrs| pcrs.get(&pcr))
            .map(Vec::as_slice)
    }
}

/// Named, explicit vendor workarounds; all off by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayOptions {
    /// Some HP firmware measures "Exit Boot Services Invocation" and "Exit Boot Services Returned
    /// with Success" into PCR 5 without logging them. When set, and the log has no such events,
    /// both are extended after the last event, in every bank of the log.
    pub hp_unlogged_exit_boot_services: bool,
}

/// Name of the HP workaround, as [`ReplayedPcr::workaround_extends`] reports it.
pub const HP_UNLOGGED_EXIT_BOOT_SERVICES: &str = "hp_unlogged_exit_boot_services";

/// What one PCR of one bank replayed to, and from which events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayedPcr {
    pub value: Vec<u8>,
    /// The value before the first extend: zero, or the startup locality in PCR 0's last byte.
    pub initial: Vec<u8>,
    /// [`Event::index`](super::Event::index) of each event extended into this PCR in this bank,
    /// in log order.
    pub events: Vec<usize>,
    /// Extends a vendor workaround added after the events (the workaround's name, per extend).
    pub workaround_extends: Vec<&'static str>,
}

/// A replay with its provenance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replay {
    /// (bank, PCR) -> what it replayed to. Only PCRs some event extended appear.
    pub pcrs: BTreeMap<(HashAlgorithm, u32), ReplayedPcr>,
    /// PCR 0's start locality, when a StartupLocality event or an H-CRTM event set it.
    pub startup_locality: Option<u8>,
    /// Events (index, bank) that are extended but carry no digest for one of the log's banks:
    /// that bank's replay cannot reflect them.
    pub missing_digests: Vec<(usize, HashAlgorithm)>,
}

impl Replay {
    pub fn get(&self, bank: HashAlgorithm, pcr: u32) -> Option<&ReplayedPcr> {
        self.pcrs.get(&(bank, pcr))
    }

    pub fn value(&self, bank: HashAlgorithm, pcr: u32) -> Option<&[u8]> {
        self.get(bank, pcr).map(|p| p.value.as_slice())
    }

    /// The final values alone, as [`replay`] gives them.
    pub fn banks(&self) -> PcrBanks {
        let mut banks = PcrBanks::default();
        for ((bank, pcr), replayed) in &self.pcrs {
            banks
                .0
                .entry(*bank)
                .or_default()
                .insert(*pcr, replayed.value.clone());
        }
        banks
    }
}

/// Where an extend came from.
#[derive(Debug, Clone, Copy)]
enum Source {
    Event(usize),
    Workaround(&'static str),
}

/// One bank's PCRs during replay: fixed arrays, so an extend neither allocates nor searches a map.
struct BankState {
    bank: HashAlgorithm,
    values: [[u8; MAX_DIGEST]; PCR_COUNT as usize],
    /// Bit `i` set: PCR `i` was extended.
    touched: u32,
}

struct Machine {
    banks: Vec<BankState>,
    /// PCRs at or past [`PCR_COUNT`], which real logs never extend.
    beyond: BTreeMap<(HashAlgorithm, u32), Vec<u8>>,
    /// Set by a StartupLocality event, until PCR 0's first extend fixes it.
    startup_locality: Option<u8>,
    /// PCR 0's start locality, fixed at its first extend.
    pcr0_locality: Option<u8>,
    pcr0_started: bool,
}

impl Machine {
    fn new(banks: &[HashAlgorithm]) -> Self {
        Self {
            banks: banks
                .iter()
                .map(|bank| BankState {
                    bank: *bank,
                    values: [[0; MAX_DIGEST]; PCR_COUNT as usize],
                    touched: 0,
                })
                .collect(),
            beyond: BTreeMap::new(),
            startup_locality: None,
            pcr0_locality: None,
            pcr0_started: false,
        }
    }

    fn initial(&self, bank: HashAlgorithm, pcr: u32) -> Vec<u8> {
        let mut value = vec![0u8; bank.size()];
        if pcr == 0
            && let (Some(locality), Some(last)) = (self.pcr0_locality, value.last_mut())
        {
            *last = locality;
        }
        value
    }

    fn extend(&mut self, bank: HashAlgorithm, pcr: u32, event_type: u32, digest: &[u8]) {
        if pcr == 0 && !self.pcr0_started {
            self.pcr0_started = true;
            self.pcr0_locality = self
                .startup_locality
                .or((event_type == EV_EFI_HCRTM_EVENT).then_some(HCRTM_LOCALITY));
        }
        if pcr >= PCR_COUNT {
            let start = self.initial(bank, pcr);
            let value = self.beyond.entry((bank, pcr)).or_insert(start);
            bank.extend_in_place(value, digest);
            return;
        }
        let slot = match self.banks.iter().position(|state| state.bank == bank) {
            Some(slot) => slot,
            None => {
                // An event built outside a parsed log may name a bank the header did not.
                self.banks.push(BankState {
                    bank,
                    values: [[0; MAX_DIGEST]; PCR_COUNT as usize],
                    touched: 0,
                });
                self.banks.len() - 1
            }
        };
        let locality = if pcr == 0 { self.pcr0_locality } else { None };
        let Some(state) = self.banks.get_mut(slot) else {
            return;
        };
        let bit = 1u32 << pcr;
        let Some(value) = state
            .values
            .get_mut(pcr as usize)
            .and_then(|v| v.get_mut(..bank.size()))
        else {
            return;
        };
        if state.touched & bit == 0 {
            state.touched |= bit;
            if let (Some(locality), Some(last)) = (locality, value.last_mut()) {
                *last = locality;
            }
        }
        bank.extend_in_place(value, digest);
    }

    /// Every (bank, PCR) extended, with its final value.
    fn finish(self, mut each: impl FnMut(HashAlgorithm, u32, Vec<u8>)) {
        for state in &self.banks {
            for pcr in 0..PCR_COUNT {
                if state.touched & (1 << pcr) != 0
                    && let Some(value) = state
                        .values
                        .get(pcr as usize)
                        .and_then(|v| v.get(..state.bank.size()))
                {
                    each(state.bank, pcr, value.to_vec());
                }
            }
        }
        for ((bank, pcr), value) in self.beyond {
            each(bank, pcr, value);
        }
    }
}

/// Replays `log`, calling `observe` for each extend.
fn run(
    log: &EventLog,
    options: &ReplayOptions,
    mut observe: impl FnMut(HashAlgorithm, u32, Source),
) -> Machine {
    let mut machine = Machine::new(&log.banks);
    for event in &log.events {
        if event.event_type == EV_NO_ACTION {
            if event.pcr == 0
                && !machine.pcr0_started
                && let Some([locality]) = event.data.strip_prefix(STARTUP_LOCALITY)
            {
                machine.startup_locality = Some(*locality);
            }
            continue;
        }
        for (bank, digest) in &event.digests {
            machine.extend(bank, event.pcr, event.event_type, digest);
            observe(bank, event.pcr, Source::Event(event.index));
        }
    }
    if options.hp_unlogged_exit_boot_services {
        let logged = log.events.iter().any(|e| {
            e.pcr == 5 && e.event_type == EV_EFI_ACTION && e.data.starts_with(EBS_INVOCATION)
        });
        if !logged {
            for bank in &log.banks {
                for action in [EBS_INVOCATION, EBS_SUCCESS] {
                    machine.extend(*bank, 5, EV_EFI_ACTION, &bank.hash(action));
                    observe(*bank, 5, Source::Workaround(HP_UNLOGGED_EXIT_BOOT_SERVICES));
                }
            }
        }
    }
    machine
}

/// Replays `log` to its final PCR values per bank.
pub fn replay(log: &EventLog, options: &ReplayOptions) -> PcrBanks {
    let mut banks = PcrBanks::default();
    run(log, options, |_, _, _| {}).finish(|bank, pcr, value| {
        banks.0.entry(bank).or_default().insert(pcr, value);
    });
    banks
}

/// Replays `log`, recording for each (bank, PCR) the events (by index) that made its value.
pub fn replay_detailed(log: &EventLog, options: &ReplayOptions) -> Replay {
    /// Per (bank, PCR): event indexes, then workaround names.
    type Sources = BTreeMap<(HashAlgorithm, u32), (Vec<usize>, Vec<&'static str>)>;
    let mut sources = Sources::new();
    let machine = run(log, options, |bank, pcr, source| {
        let (events, workarounds) = sources.entry((bank, pcr)).or_default();
        match source {
            Source::Event(index) => events.push(index),
            Source::Workaround(name) => workarounds.push(name),
        }
    });
    let startup_locality = machine.pcr0_locality;
    let mut replay = Replay {
        startup_locality,
        ..Replay::default()
    };
    let initial_of = |bank: HashAlgorithm, pcr: u32| {
        let mut value = vec![0u8; bank.size()];
        if pcr == 0
            && let (Some(locality), Some(last)) = (startup_locality, value.last_mut())
        {
            *last = locality;
        }
        value
    };
    machine.finish(|bank, pcr, value| {
        let (events, workaround_extends) = sources.remove(&(bank, pcr)).unwrap_or_default();
        replay.pcrs.insert(
            (bank, pcr),
            ReplayedPcr {
                value,
                initial: initial_of(bank, pcr),
                events,
                workaround_extends,
            },
        );
    });
    for event in log.events.iter().filter(|e| e.event_type != EV_NO_ACTION) {
        for bank in &log.banks {
            if event.digest(*bank).is_none() {
                replay.missing_digests.push((event.index, *bank));
            }
        }
    }
    replay
}

#[cfg(test)]
mod tests {
    use super::super::parse::{Digests, Event, LogFormat};
    use super::*;

    fn log(events: Vec<Event>) -> EventLog {
        EventLog {
            format: LogFormat::CryptoAgile,
            spec_id: None,
            banks: vec![HashAlgorithm::Sha256],
            events,
        }
    }

    fn event(index: usize, pcr: u32, event_type: u32, data: &[u8]) -> Event {
        let digest = HashAlgorithm::Sha256.hash(data);
        let digests = Digests::from_values(&[(HashAlgorithm::Sha256, &digest[..])]).unwrap();
        Event::new(index, pcr, event_type, digests, data)
    }

    fn start(locality: u8) -> Vec<u8> {
        let mut value = vec![0u8; 32];
        value[31] = locality;
        value
    }

    #[test]
    fn startup_locality_sets_pcr0_start_and_no_action_is_never_extended() {
        let sha = HashAlgorithm::Sha256;
        let mut locality = b"StartupLocality\0".to_vec();
        locality.push(3);
        let log = log(vec![
            event(0, 0, EV_NO_ACTION, &locality),
            event(1, 0, 0x8000_0008, b"firmware"),
            event(2, 7, EV_NO_ACTION, b"SP800-155 Event3"),
        ]);
        let replayed = replay_detailed(&log, &ReplayOptions::default());
        let expected = sha.extend(&start(3), &sha.hash(b"firmware"));
        assert_eq!(replayed.value(sha, 0), Some(expected.as_slice()));
        assert_eq!(replayed.get(sha, 0).unwrap().events, vec![1]);
        assert_eq!(replayed.get(sha, 0).unwrap().initial, start(3));
        assert_eq!(replayed.startup_locality, Some(3));
        assert!(replayed.get(sha, 7).is_none());
        assert_eq!(replayed.banks(), replay(&log, &ReplayOptions::default()));
    }

    #[test]
    fn an_hcrtm_event_starts_pcr0_at_locality_4() {
        let sha = HashAlgorithm::Sha256;
        let log = log(vec![
            event(1, 0, EV_EFI_HCRTM_EVENT, b"HCRTM"),
            event(2, 0, 0x0000_0008, b"version"),
        ]);
        let replayed = replay(&log, &ReplayOptions::default());
        let expected = sha.extend(
            &sha.extend(&start(4), &sha.hash(b"HCRTM")),
            &sha.hash(b"version"),
        );
        assert_eq!(replayed.get(sha, 0), Some(expected.as_slice()));
        // A StartupLocality event logged after PCR 0's first extend changes nothing.
        let mut late = log.events.clone();
        let mut locality = b"StartupLocality\0".to_vec();
        locality.push(3);
        late.insert(1, event(9, 0, EV_NO_ACTION, &locality));
        let replayed = replay(&self::log(late), &ReplayOptions::default());
        assert_eq!(replayed.get(sha, 0), Some(expected.as_slice()));
    }

    #[test]
    fn the_hp_workaround_is_named_and_skipped_when_the_events_are_logged() {
        let sha = HashAlgorithm::Sha256;
        let options = ReplayOptions {
            hp_unlogged_exit_boot_services: true,
        };
        let plain = log(vec![event(1, 5, 0x8000_0006, b"gpt")]);
        let replayed = replay_detailed(&plain, &options);
        let pcr5 = replayed.get(sha, 5).unwrap();
        assert_eq!(pcr5.events, vec![1]);
        assert_eq!(
            pcr5.workaround_extends,
            vec![HP_UNLOGGED_EXIT_BOOT_SERVICES; 2]
        );
        let logged = log(vec![
            event(1, 5, EV_EFI_ACTION, EBS_INVOCATION),
            event(2, 5, EV_EFI_ACTION, EBS_SUCCESS),
        ]);
        assert_eq!(
            replay(&logged, &options),
            replay(&logged, &ReplayOptions::default())
        );
        // The workaround equals a log that had recorded both events after the GPT.
        let recorded = log(vec![
            event(1, 5, 0x8000_0006, b"gpt"),
            event(2, 5, EV_EFI_ACTION, EBS_INVOCATION),
            event(3, 5, EV_EFI_ACTION, EBS_SUCCESS),
        ]);
        assert_eq!(
            replay(&recorded, &ReplayOptions::default()).get(sha, 5),
            Some(pcr5.value.as_slice())
        );
    }

    #[test]
    fn events_beyond_pcr_23_and_missing_banks_are_reported_not_lost() {
        let mut log = log(vec![event(1, 30, 0x0000_000d, b"odd")]);
        log.banks.push(HashAlgorithm::Sha1);
        let replayed = replay_detailed(&log, &ReplayOptions::default());
        assert_eq!(
            replayed.get(HashAlgorithm::Sha256, 30).unwrap().events,
            vec![1]
        );
        assert_eq!(replayed.missing_digests, vec![(1, HashAlgorithm::Sha1)]);
    }
}
