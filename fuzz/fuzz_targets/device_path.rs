//! UEFI device path rendering.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustchain_evidence::eventlog::device_path;

fuzz_target!(|data: &[u8]| {
    let _ = device_path::render(data);
});
