//! Property tests on stable Rust: random bytes and mutations of the real testdata (bit flips,
//! truncations, insertions, overwritten length fields) fed to every evidence parser. The only
//! property: no panic, and whatever parses also replays without panicking.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;
use std::sync::OnceLock;

use proptest::prelude::*;
use trustchain_verifier::evidence::digest::HashAlgorithm;
use trustchain_verifier::evidence::eventlog::{self, ReplayOptions};
use trustchain_verifier::evidence::ima::{self, ImaState};
use trustchain_verifier::evidence::quote::{self, VerifyingKey};
use trustchain_verifier::evidence::tpm::{Attest, Public, Signature};

fn testdata(path: &str) -> Vec<u8> {
    let full = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/testdata"
    ))
    .join(path);
    std::fs::read(&full).unwrap_or_else(|e| panic!("testdata {} is missing: {e}", full.display()))
}

/// Seeds: small real files of each kind (kept small so each case is cheap in a debug build).
fn seeds() -> &'static Vec<Vec<u8>> {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        vec![
            testdata("eventlogs/go-tpm-tools__arch-linux-workstation.bin"),
            testdata("eventlogs/go-attestation__windows_gcp_shielded_vm.eventlog.bin"),
            testdata("eventlogs/tpm2-tools__event.bin"),
            testdata("eventlogs/go-attestation__short_no_action_eventlog.bin"),
            testdata("ima/tpm2-tss__sml-ima-sig-sha256.bin"),
            testdata("ima/keylime__create-runtime-policy__ima-log-sha256"),
            testdata("ima/keylime__create-runtime-policy__ima-log-sm3_256"),
            testdata("ima/tpm2-tss__sml-ima-sha1.bin"),
            testdata("quotes/gce-cos-85-no-nonce/quote1_sha256.tpms_attest.bin"),
            testdata("quotes/gce-cos-85-no-nonce/quote1_sha256.tpmt_signature.bin"),
            testdata("quotes/gce-cos-85-no-nonce/ak_pub.tpmt_public.bin"),
        ]
    })
}

/// The real AK, pinned to the scheme its quotes use: mutated signatures are checked against it.
fn ak() -> &'static VerifyingKey {
    static AK: OnceLock<VerifyingKey> = OnceLock::new();
    AK.get_or_init(|| {
        let bytes = testdata("quotes/gce-cos-85-no-nonce/ak_pub.tpmt_public.bin");
        let public = Public::parse(&bytes).unwrap();
        let signature = Signature::parse(&testdata(
            "quotes/gce-cos-85-no-nonce/quote1_sha256.tpmt_signature.bin",
        ))
        .unwrap();
        VerifyingKey::new(public, signature.scheme(), signature.hash()).unwrap()
    })
}

#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    /// Overwrite 4 bytes (a length field, often) with an extreme value.
    Length(usize, u32),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit(at, bit)),
        any::<usize>().prop_map(Mutation::Truncate),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(at, b)| Mutation::Insert(at, b)),
        (
            any::<usize>(),
            prop_oneof![
                Just(0u32),
                Just(1),
                Just(0xffff),
                Just(0x7fff_ffff),
                Just(u32::MAX),
                any::<u32>()
            ]
        )
            .prop_map(|(at, v)| Mutation::Length(at, v)),
    ]
}

fn apply(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        if bytes.is_empty() {
            break;
        }
        let len = bytes.len();
        match m {
            Mutation::FlipBit(at, bit) => bytes[at % len] ^= 1 << bit,
            Mutation::Truncate(at) => bytes.truncate(at % len),
            Mutation::Insert(at, extra) => {
                let at = at % len;
                bytes.splice(at..at, extra.iter().copied());
            }
            Mutation::Length(at, value) => {
                let at = at % len;
                for (i, b) in value.to_le_bytes().iter().enumerate() {
                    if let Some(slot) = bytes.get_mut(at + i) {
                        *slot = *b;
                    }
                }
            }
        }
    }
    bytes
}

/// Every parser entry point on one input.
fn exercise(bytes: &[u8]) {
    if let Ok(log) = eventlog::parse(bytes) {
        let _ = eventlog::replay(
            &log,
            &ReplayOptions {
                hp_unlogged_exit_boot_services: true,
            },
        );
        for event in &log.events {
            let _ = event.decoded();
            let _ = event.digest_check();
            if let Some((_, _, value)) = eventlog::events::variable(event.data.as_slice()) {
                let _ = eventlog::signature_list::parse(value);
            }
        }
    }
    let _ = eventlog::events::variable(bytes);
    if let Ok(lists) = eventlog::signature_list::parse(bytes) {
        let _ = eventlog::signature_list::sha256_hashes(&lists).count();
    }
    let banks = [HashAlgorithm::Sha1, HashAlgorithm::Sha256];
    for log in [
        ima::parse(bytes),
        ima::parse_ascii(bytes, 7),
        ima::parse_binary(bytes, 0),
        ima::parse_binary_with_hash_size(bytes, 0, 32),
    ]
    .into_iter()
    .flatten()
    {
        let replayed = ima::replay(&ImaState::default(), &log, &banks);
        let _ = replayed.check_template_hashes(&log);
        let _ = ima::replay_to_quote(
            &replayed.state,
            &log,
            &banks,
            HashAlgorithm::Sha256,
            10,
            &[0; 32],
        );
    }
    let _ = Attest::parse(bytes);
    if let Ok(signature) = Signature::parse(bytes) {
        let _ = ak().verify_signature(bytes, &signature);
    }
    // The quote entry point takes two inputs: split this one.
    let (attest, signature) = bytes.split_at(bytes.len() / 2);
    let _ = quote::parse(attest, signature);
    let _ = quote::check_signature(attest, signature, ak());
    if let Ok(public) = Public::parse(bytes) {
        let _ = public.spki_der();
        let _ = public.name();
        let _ = VerifyingKey::key_scheme(&public);
    }
    let _ = eventlog::device_path::render(bytes);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_real_evidence_never_panics(
        seed in 0usize..64,
        mutations in proptest::collection::vec(mutation(), 1..6),
    ) {
        let bytes = apply(seeds()[seed % seeds().len()].clone(), &mutations);
        exercise(&bytes);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        exercise(&bytes);
    }
}
