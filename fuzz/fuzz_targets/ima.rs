//! IMA measurement lists, ASCII and binary, and replay.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustchain_verifier::evidence::digest::HashAlgorithm;
use trustchain_verifier::evidence::ima::{self, ImaState};

fuzz_target!(|data: &[u8]| {
    for parsed in [ima::parse_ascii(data, 0), ima::parse_binary(data, 0)] {
        if let Ok(log) = parsed {
            let _ = ima::replay(&ImaState::default(), &log, &[HashAlgorithm::Sha1, HashAlgorithm::Sha256]);
        }
    }
});
