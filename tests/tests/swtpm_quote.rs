//! Quotes made by the agent's TPM code on a real swtpm verify with the verifier's pure-Rust quote
//! verification, for RSA and ECC AKs, and fail with another nonce, altered PCR values or an
//! altered signature.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use trustchain_agent::config::EkChoice;
use trustchain_agent::tpm::esapi::{AkAlgorithm, EsapiTpm};
use trustchain_agent::tpm::{Quote, SHA256_BANK, Tpm};
use trustchain_swtpm::{Bank, BootProfile, SwtpmDevice, TpmMaker};
use trustchain_verifier::enrollment::keys::ak_qualified_name;
use trustchain_verifier::evidence::digest::HashAlgorithm;
use trustchain_verifier::evidence::quote::{
    PcrValues, QuoteError, QuoteExpectations, VerifyingKey, verify_quote,
};
use trustchain_verifier::evidence::tpm::{Public, SignatureScheme};

fn pcr_values(quote: &Quote) -> PcrValues {
    let mut values = PcrValues::default();
    for (bank, index, value) in &quote.pcr_values {
        values.insert(
            HashAlgorithm::from_tpm_alg_id(*bank).unwrap(),
            *index,
            value.clone(),
        );
    }
    values
}

fn quotes_verify(ek: EkChoice, ak_algorithm: AkAlgorithm, scheme: SignatureScheme) {
    let maker = TpmMaker::generate("Quote Test Maker").unwrap();
    let mut device = SwtpmDevice::start(&maker, "quote")
        .expect("swtpm must be installed and start (apt-get install swtpm swtpm-tools)");
    let profile = BootProfile::default_linux().with_banks(&[Bank::Sha1, Bank::Sha256]);
    device.boot(&profile).unwrap();
    device.ima_measure("/usr/bin/true", b"true").unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut tpm = EsapiTpm::new(&device.tcti(), state.path(), ek, ak_algorithm).unwrap();

    let ak_public = tpm.ak_public().unwrap();
    let ek_public = tpm.ek_public(ek).unwrap();
    let parsed = Public::parse(&ak_public).unwrap();
    assert_eq!(
        VerifyingKey::key_scheme(&parsed),
        Some((scheme, HashAlgorithm::Sha256)),
        "the AK fixes its own signing scheme"
    );
    let key = VerifyingKey::new(parsed, scheme, HashAlgorithm::Sha256)
        .unwrap()
        .with_signer(ak_qualified_name(&ek_public, &ak_public).unwrap());

    // Two banks in one quote: the agent's own digest check must follow the TPM's bank order.
    let selections = [
        vec![(SHA256_BANK, vec![0, 1, 2, 3, 4, 5, 6, 7, 10])],
        vec![
            (Bank::Sha1.alg_id(), vec![0, 7]),
            (SHA256_BANK, vec![0, 4, 7, 10]),
        ],
    ];
    for selection in selections {
        let nonce: Vec<u8> = (0..32).map(|i| i * 7).collect();
        let quote = tpm.quote(&nonce, &selection).unwrap();
        let values = pcr_values(&quote);
        let expected = QuoteExpectations {
            key: &key,
            nonce: &nonce,
            pcr_values: &values,
        };
        let verified = verify_quote(&quote.attest, &quote.signature, &expected)
            .unwrap_or_else(|e| panic!("{ak_algorithm:?} {selection:?}: {e}"));
        assert_eq!(verified.attest.clock_info.reset_count, quote.reset_count);

        // Values really are the TPM's: PCR 10 holds the IMA measurement.
        let sha256 = device.read_pcrs(Bank::Sha256, &[10]).unwrap();
        assert_eq!(
            values.get(HashAlgorithm::Sha256, 10).unwrap(),
            sha256[&10].as_slice()
        );

        let wrong_nonce = [0u8; 32];
        assert_eq!(
            verify_quote(
                &quote.attest,
                &quote.signature,
                &QuoteExpectations {
                    nonce: &wrong_nonce,
                    ..expected
                }
            ),
            Err(QuoteError::NonceMismatch),
            "{ak_algorithm:?}: another nonce"
        );

        let mut altered = values.clone();
        altered.insert(HashAlgorithm::Sha256, 10, vec![0x11; 32]);
        assert_eq!(
            verify_quote(
                &quote.attest,
                &quote.signature,
                &QuoteExpectations {
                    pcr_values: &altered,
                    ..expected
                }
            ),
            Err(QuoteError::PcrDigestMismatch),
            "{ak_algorithm:?}: altered PCR value"
        );

        let mut signature = quote.signature.clone();
        let last = signature.len() - 1;
        signature[last] ^= 0x01;
        assert!(
            verify_quote(&quote.attest, &signature, &expected).is_err(),
            "{ak_algorithm:?}: altered signature"
        );
    }

    // A PCR extended after one quote is reflected, signed, in the next.
    let before = tpm.quote(&[1; 32], &[(SHA256_BANK, vec![10])]).unwrap();
    device.ima_measure("/usr/bin/false", b"false").unwrap();
    let after = tpm.quote(&[2; 32], &[(SHA256_BANK, vec![10])]).unwrap();
    assert_ne!(before.pcr_values, after.pcr_values);
    let values = pcr_values(&after);
    verify_quote(
        &after.attest,
        &after.signature,
        &QuoteExpectations {
            key: &key,
            nonce: &[2; 32],
            pcr_values: &values,
        },
    )
    .unwrap();
}

#[test]
fn rsa_ak_quotes_from_swtpm_verify_in_pure_rust() {
    quotes_verify(
        EkChoice::Rsa2048,
        AkAlgorithm::Rsa2048,
        SignatureScheme::RsaSsa,
    );
}

#[test]
fn ecc_ak_quotes_from_swtpm_verify_in_pure_rust() {
    quotes_verify(
        EkChoice::EccP256,
        AkAlgorithm::EccP256,
        SignatureScheme::EcDsa,
    );
}
