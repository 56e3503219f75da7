//! UEFI event log: parse, decode every event, replay.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustchain_verifier::evidence::eventlog::{self, ReplayOptions};

fuzz_target!(|data: &[u8]| {
    if let Ok(log) = eventlog::parse(data) {
        let _ = eventlog::replay(&log, &ReplayOptions { hp_unlogged_exit_boot_services: true });
        for event in &log.events {
            let _ = event.decoded();
            let _ = event.digest_check();
        }
    }
});
