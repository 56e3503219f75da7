//! Replaying an event log to the PCR values it claims.

use std::collections::BTreeMap;

use super::parse::EventLog;
use super::{EV_EFI_ACTION, EV_NO_ACTION};
use crate::evidence::digest::HashAlgorithm;

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
    /// both are extended after the last event.
    pub hp_unlogged_exit_boot_services: bool,
}

const EBS_INVOCATION: &[u8] = b"Exit Boot Services Invocation";
const EBS_SUCCESS: &[u8] = b"Exit Boot Services Returned with Success";

/// Replays `log`. EV_NO_ACTION events are never extended; a StartupLocality event sets PCR 0's
/// initial value to the locality (PFP §10.4.5.3), as the TPM does for an H-CRTM or locality-3
/// startup.
pub fn replay(log: &EventLog, options: &ReplayOptions) -> PcrBanks {
    let mut banks = PcrBanks::default();
    let mut pcr0_start: Option<u8> = None;
    for event in &log.events {
        if event.event_type == EV_NO_ACTION {
            if event.pcr == 0
                && let Some([locality]) = event.data.strip_prefix(b"StartupLocality\0")
            {
                pcr0_start = Some(*locality);
            }
            continue;
        }
        for (bank, digest) in &event.digests {
            let pcrs = banks.0.entry(*bank).or_default();
            let current = pcrs
                .entry(event.pcr)
                .or_insert_with(|| initial(*bank, event.pcr, pcr0_start));
            bank.extend_in_place(current, digest);
        }
    }
    if options.hp_unlogged_exit_boot_services {
        let logged = log.events.iter().any(|e| {
            e.pcr == 5 && e.event_type == EV_EFI_ACTION && e.data.starts_with(EBS_INVOCATION)
        });
        if !logged {
            for bank in &log.banks {
                let pcrs = banks.0.entry(*bank).or_default();
                let current = pcrs.entry(5).or_insert_with(|| vec![0u8; bank.size()]);
                for action in [EBS_INVOCATION, EBS_SUCCESS] {
                    *current = bank.extend(current, &bank.hash(action));
                }
            }
        }
    }
    banks
}

fn initial(bank: HashAlgorithm, pcr: u32, pcr0_start: Option<u8>) -> Vec<u8> {
    let mut value = vec![0u8; bank.size()];
    if pcr == 0
        && let (Some(locality), Some(last)) = (pcr0_start, value.last_mut())
    {
        *last = locality;
    }
    value
}
