//! IMA measurement lists, ASCII and binary (classic and per-bank hash sizes), replay, the
//! template-hash check and replay up to a quoted PCR.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustchain_evidence::digest::HashAlgorithm;
use trustchain_evidence::ima::{self, ImaState};

const BANKS: [HashAlgorithm; 2] = [HashAlgorithm::Sha1, HashAlgorithm::Sha256];

fuzz_target!(|data: &[u8]| {
    for parsed in [
        ima::parse(data),
        ima::parse_ascii(data, 0),
        ima::parse_binary(data, 0),
        ima::parse_binary_with_hash_size(data, 0, 32),
    ] {
        if let Ok(log) = parsed {
            let replayed = ima::replay(&ImaState::default(), &log, &BANKS);
            let _ = replayed.check_template_hashes(&log);
            let _ = ima::replay_to_quote(
                &ImaState::default(),
                &log,
                &BANKS,
                HashAlgorithm::Sha256,
                10,
                &[0; 32],
            );
        }
    }
});
