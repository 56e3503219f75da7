//! The agent's TPM code on real swtpm devices, cross-checked with the verifier's pure-Rust code:
//! software MakeCredential is unwrapped by the real TPM (RSA and ECC EKs), and real quotes verify.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use trustchain_agent::config::EkChoice;
use trustchain_agent::tpm::Tpm;
use trustchain_agent::tpm::esapi::{AkAlgorithm, EsapiTpm};
use trustchain_swtpm::{BootProfile, SwtpmDevice, TestMakers};
use trustchain_verifier::enrollment::credential::{EkKey, make_credential};
use trustchain_verifier::enrollment::ek_chain::{MakerAnchors, validate};
use trustchain_verifier::enrollment::keys::{ak_qualified_name, attestation_key};
use trustchain_verifier::evidence::digest::HashAlgorithm;
use trustchain_verifier::evidence::quote::{
    PcrValues, QuoteError, QuoteExpectations, VerifyingKey, verify_quote,
};
use trustchain_verifier::evidence::tpm::{Public, SignatureScheme};

fn device_and_tpm(
    ek: EkChoice,
    ak: AkAlgorithm,
) -> (TestMakers, SwtpmDevice, EsapiTpm, tempfile::TempDir) {
    let makers = TestMakers::generate().unwrap();
    let device = SwtpmDevice::start(&makers.trusted, "cross").unwrap();
    let state = tempfile::tempdir().unwrap();
    let tpm = EsapiTpm::new(&device.tcti(), state.path(), ek, ak).unwrap();
    (makers, device, tpm, state)
}

fn ek_key(makers: &TestMakers, tpm: &mut EsapiTpm, ek: EkChoice) -> EkKey {
    let cert = tpm.ek_certificate(ek).unwrap();
    let anchors = MakerAnchors {
        anchors: vec![makers.trusted.root_der().to_vec()],
        intermediates: vec![],
    };
    validate(
        &cert,
        &[makers.trusted.intermediate_der().to_vec()],
        &anchors,
    )
    .unwrap()
    .key
}

fn activation_round_trip(ek: EkChoice) {
    let (makers, _device, mut tpm, _state) = device_and_tpm(ek, AkAlgorithm::Rsa2048);
    let key = ek_key(&makers, &mut tpm, ek);
    let ak = attestation_key(&tpm.ak_public().unwrap()).unwrap();

    let made = make_credential(&key, &ak.name).unwrap();
    let secret = tpm
        .activate_credential(&made.credential_blob, &made.encrypted_secret)
        .unwrap();
    assert_eq!(
        secret,
        made.secret.to_vec(),
        "{ek:?}: the TPM recovers the verifier's secret"
    );

    // A credential for another object's Name (an AK in another TPM) does not activate.
    let mut other_name = ak.name.clone();
    *other_name.last_mut().unwrap() ^= 1;
    let made = make_credential(&key, &other_name).unwrap();
    assert!(
        tpm.activate_credential(&made.credential_blob, &made.encrypted_secret)
            .is_err(),
        "{ek:?}"
    );
}

#[test]
fn software_make_credential_activates_on_a_real_tpm_with_the_rsa_ek() {
    activation_round_trip(EkChoice::Rsa2048);
}

#[test]
fn software_make_credential_activates_on_a_real_tpm_with_the_ecc_ek() {
    activation_round_trip(EkChoice::EccP256);
}

#[test]
fn the_ak_survives_a_new_agent_process() {
    let (_makers, device, mut tpm, state) = device_and_tpm(EkChoice::Rsa2048, AkAlgorithm::Rsa2048);
    let first = tpm.ak_public().unwrap();
    drop(tpm);
    let mut again = EsapiTpm::new(
        &device.tcti(),
        state.path(),
        EkChoice::Rsa2048,
        AkAlgorithm::Rsa2048,
    )
    .unwrap();
    assert_eq!(again.ak_public().unwrap(), first);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(state.path().join("ak.blob"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        again.is_software().unwrap(),
        "swtpm must be recognised as a software TPM"
    );
    again.flush_leftovers().unwrap();
}

fn quote_verifies(ak_algorithm: AkAlgorithm, scheme: SignatureScheme) {
    let (_makers, mut device, mut tpm, _state) = device_and_tpm(EkChoice::Rsa2048, ak_algorithm);
    device.boot(&BootProfile::default_linux()).unwrap();
    device.ima_measure("/usr/bin/ls", b"ls").unwrap();
    let nonce = [0x5a; 32];
    let selection = vec![(0x000b_u16, vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10])];
    let quote = tpm.quote(&nonce, &selection).unwrap();

    let ek_public = tpm.ek_public(EkChoice::Rsa2048).unwrap();
    let ak_public = tpm.ak_public().unwrap();
    let key = VerifyingKey::new(
        Public::parse(&ak_public).unwrap(),
        scheme,
        HashAlgorithm::Sha256,
    )
    .unwrap()
    .with_signer(ak_qualified_name(&ek_public, &ak_public).unwrap());
    let mut pcrs = PcrValues::default();
    for (alg, index, value) in &quote.pcr_values {
        pcrs.insert(
            HashAlgorithm::from_tpm_alg_id(*alg).unwrap(),
            *index,
            value.clone(),
        );
    }
    let verified = verify_quote(
        &quote.attest,
        &quote.signature,
        &QuoteExpectations {
            key: &key,
            nonce: &nonce,
            pcr_values: &pcrs,
        },
    )
    .unwrap();
    assert!(verified.attest.clock_info.safe);
    let wrong = [0u8; 32];
    assert_eq!(
        verify_quote(
            &quote.attest,
            &quote.signature,
            &QuoteExpectations {
                key: &key,
                nonce: &wrong,
                pcr_values: &pcrs
            }
        ),
        Err(QuoteError::NonceMismatch)
    );
}

#[test]
fn real_swtpm_rsa_quotes_verify_in_pure_rust() {
    quote_verifies(AkAlgorithm::Rsa2048, SignatureScheme::RsaSsa);
}

#[test]
fn real_swtpm_ecc_quotes_verify_in_pure_rust() {
    quote_verifies(AkAlgorithm::EccP256, SignatureScheme::EcDsa);
}
