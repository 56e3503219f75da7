//! Quote verification: RSA-2048 (a real Google Cloud quote) and P-256 (a quote signed here with a
//! software key in the TPM's formats). Target: RSA-2048 <= 40 us on one core.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::hint::black_box;
use std::path::PathBuf;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use criterion::{Criterion, criterion_group, criterion_main};
use trustchain_verifier::evidence::digest::HashAlgorithm;
use trustchain_verifier::evidence::quote::{
    PcrValues, QuoteExpectations, VerifyingKey, verify_quote,
};
use trustchain_verifier::evidence::tpm::{
    ENDORSEMENT_HIERARCHY, PcrSelection, Public, SignatureScheme, hierarchy_qualified_name,
};

fn testdata(path: &str) -> Vec<u8> {
    let full = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/testdata"
    ))
    .join(path);
    std::fs::read(&full).unwrap_or_else(|e| panic!("testdata {} missing: {e}", full.display()))
}

fn rsa(c: &mut Criterion) {
    let dir = "quotes/gce-cos-85-no-nonce";
    let ak = Public::parse(&testdata(&format!("{dir}/ak_pub.tpmt_public.bin"))).unwrap();
    let signer = ak.qualified_name(&hierarchy_qualified_name(ENDORSEMENT_HIERARCHY));
    let key = VerifyingKey::new(ak, SignatureScheme::RsaSsa, HashAlgorithm::Sha256)
        .unwrap()
        .with_signer(signer);
    let attest = testdata(&format!("{dir}/quote1_sha256.tpms_attest.bin"));
    let signature = testdata(&format!("{dir}/quote1_sha256.tpmt_signature.bin"));
    let json: serde_json::Value =
        serde_json::from_slice(&testdata(&format!("{dir}/attestation.json"))).unwrap();
    let quote = json["quotes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["hash"] == "sha256")
        .unwrap();
    let mut pcrs = PcrValues::default();
    for (i, v) in quote["pcrs"].as_object().unwrap() {
        pcrs.insert(
            HashAlgorithm::Sha256,
            i.parse().unwrap(),
            hex::decode(v.as_str().unwrap()).unwrap(),
        );
    }
    let expectations = QuoteExpectations {
        key: &key,
        nonce: &[],
        pcr_values: &pcrs,
    };
    verify_quote(&attest, &signature, &expectations).unwrap();
    c.bench_function("quote_verify/rsa2048_rsassa_sha256_24pcrs", |b| {
        b.iter(|| {
            verify_quote(
                black_box(&attest),
                black_box(&signature),
                black_box(&expectations),
            )
            .unwrap()
        })
    });
}

/// Builds a TPMT_PUBLIC for an ECC P-256 signing key (restricted, ECDSA-SHA256).
fn p256_public(point: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0x0023u16.to_be_bytes()); // TPM_ALG_ECC
    out.extend_from_slice(&0x000bu16.to_be_bytes()); // nameAlg SHA-256
    out.extend_from_slice(&0x0005_0072u32.to_be_bytes()); // fixedTPM|fixedParent|sensitiveDataOrigin|userWithAuth|restricted|sign
    out.extend_from_slice(&0u16.to_be_bytes()); // authPolicy
    out.extend_from_slice(&0x0010u16.to_be_bytes()); // symmetric NULL
    out.extend_from_slice(&0x0018u16.to_be_bytes()); // ECDSA
    out.extend_from_slice(&0x000bu16.to_be_bytes()); // SHA-256
    out.extend_from_slice(&0x0003u16.to_be_bytes()); // NIST P-256
    out.extend_from_slice(&0x0010u16.to_be_bytes()); // kdf NULL
    for coordinate in [&point[1..33], &point[33..65]] {
        out.extend_from_slice(&32u16.to_be_bytes());
        out.extend_from_slice(coordinate);
    }
    out
}

fn p256(c: &mut Criterion) {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let public = Public::parse(&p256_public(pair.public_key().as_ref())).unwrap();
    let name = public.name();
    let key = VerifyingKey::new(public, SignatureScheme::EcDsa, HashAlgorithm::Sha256).unwrap();

    let nonce = [7u8; 32];
    let selection = PcrSelection::new(vec![(HashAlgorithm::Sha256, (0..11).collect())]);
    let mut pcrs = PcrValues::default();
    let mut concatenated = Vec::new();
    for pcr in 0..11u32 {
        let value = HashAlgorithm::Sha256.hash(&pcr.to_be_bytes());
        concatenated.extend_from_slice(&value);
        pcrs.insert(HashAlgorithm::Sha256, pcr, value);
    }
    let mut attest = Vec::new();
    attest.extend_from_slice(&0xff54_4347u32.to_be_bytes());
    attest.extend_from_slice(&0x8018u16.to_be_bytes());
    attest.extend_from_slice(&(name.len() as u16).to_be_bytes());
    attest.extend_from_slice(&name);
    attest.extend_from_slice(&32u16.to_be_bytes());
    attest.extend_from_slice(&nonce);
    attest.extend_from_slice(&[0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]); // clockInfo
    attest.extend_from_slice(&0u64.to_be_bytes());
    attest.extend_from_slice(&selection.marshal());
    attest.extend_from_slice(&32u16.to_be_bytes());
    attest.extend_from_slice(&HashAlgorithm::Sha256.hash(&concatenated));
    let fixed = pair.sign(&rng, &attest).unwrap();
    let mut signature = Vec::new();
    signature.extend_from_slice(&0x0018u16.to_be_bytes());
    signature.extend_from_slice(&0x000bu16.to_be_bytes());
    for part in [&fixed.as_ref()[..32], &fixed.as_ref()[32..]] {
        signature.extend_from_slice(&32u16.to_be_bytes());
        signature.extend_from_slice(part);
    }
    let expectations = QuoteExpectations {
        key: &key,
        nonce: &nonce,
        pcr_values: &pcrs,
    };
    verify_quote(&attest, &signature, &expectations).unwrap();
    c.bench_function("quote_verify/p256_ecdsa_sha256_11pcrs", |b| {
        b.iter(|| {
            verify_quote(
                black_box(&attest),
                black_box(&signature),
                black_box(&expectations),
            )
            .unwrap()
        })
    });
}

criterion_group!(benches, rsa, p256);
criterion_main!(benches);
