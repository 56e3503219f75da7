//! UEFI event log: parse, decode every event, replay; UEFI_VARIABLE_DATA on its own.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustchain_evidence::eventlog::{self, ReplayOptions};

fuzz_target!(|data: &[u8]| {
    let _ = eventlog::events::variable(data);
    if let Ok(log) = eventlog::parse(data) {
        let _ = eventlog::replay(&log, &ReplayOptions { hp_unlogged_exit_boot_services: true });
        for event in &log.events {
            let _ = event.decoded();
            let _ = event.digest_check();
        }
    }
});
