//! The Secure Boot databases' EFI_SIGNATURE_LIST decoder (PK, KEK, db, dbx): the input as one
//! database, and, when it parses as an event log (the seeds are real logs), every variable
//! event's value as one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustchain_evidence::eventlog::{events, parse, signature_list};

fn decode(value: &[u8]) {
    if let Ok(lists) = signature_list::parse(value) {
        let _ = signature_list::sha256_hashes(&lists).count();
    }
}

fuzz_target!(|data: &[u8]| {
    decode(data);
    if let Ok(log) = parse(data) {
        for event in &log.events {
            if let Some((_, _, value)) = events::variable(event.data.as_slice()) {
                decode(value);
            }
        }
    }
});
