//! Quote entry points: the input is split into TPMS_ATTEST and TPMT_SIGNATURE at a position taken
//! from its first byte; both are parsed and the signature checked against a real AK.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use trustchain_evidence::quote::{self, VerifyingKey};
use trustchain_evidence::tpm::{Public, Signature};

const AK_PUB: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/testdata/quotes/gce-cos-85-no-nonce/ak_pub.tpmt_public.bin"
));
const SIGNATURE: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/testdata/quotes/gce-cos-85-no-nonce/quote1_sha256.tpmt_signature.bin"
));

fn ak() -> Option<&'static VerifyingKey> {
    static AK: OnceLock<Option<VerifyingKey>> = OnceLock::new();
    AK.get_or_init(|| {
        let public = Public::parse(AK_PUB).ok()?;
        let signature = Signature::parse(SIGNATURE).ok()?;
        VerifyingKey::new(public, signature.scheme(), signature.hash()).ok()
    })
    .as_ref()
}

fuzz_target!(|data: &[u8]| {
    let Some((first, rest)) = data.split_first() else {
        return;
    };
    let (attest, signature) = rest.split_at(usize::from(*first).min(rest.len()));
    let _ = quote::parse(attest, signature);
    if let Some(ak) = ak() {
        let _ = quote::check_signature(attest, signature, ak);
    }
});
