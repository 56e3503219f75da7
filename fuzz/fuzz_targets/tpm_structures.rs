//! TPMS_ATTEST, TPMT_PUBLIC (with and without TPM2B), TPMT_SIGNATURE.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustchain_evidence::tpm::{Attest, Public, Signature};

fuzz_target!(|data: &[u8]| {
    let _ = Attest::parse(data);
    let _ = Signature::parse(data);
    if let Ok(public) = Public::parse(data) {
        let _ = public.name();
        let _ = public.spki_der();
        let _ = public.key_material();
    }
});
