//! The verifier's pure-Rust MakeCredential, activated by the agent's TPM code on a real swtpm:
//! the TPM recovers the secret for the RSA-2048 EK and for the ECC P-256 EK, and refuses a
//! credential bound to another Name (an AK in another TPM) or wrapped to the other EK.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use trustchain_agent::config::EkChoice;
use trustchain_agent::tpm::Tpm;
use trustchain_agent::tpm::esapi::{AkAlgorithm, EsapiTpm};
use trustchain_swtpm::{SwtpmDevice, TpmMaker};
use trustchain_verifier::enrollment::credential::{EkKey, make_credential};
use trustchain_verifier::enrollment::keys::{attestation_key, ek_key_material};
use x509_parser::prelude::{FromDer, X509Certificate};

/// The EK key as enrollment takes it: from the EK certificate (SPKI DER for RSA, the
/// uncompressed point for P-256), checked against the TPM's EK public area.
fn ek_key_from_certificate(tpm: &mut EsapiTpm, ek: EkChoice) -> EkKey {
    let der = tpm.ek_certificate(ek).unwrap();
    let (_, certificate) = X509Certificate::from_der(&der).unwrap();
    let spki = certificate.public_key();
    let material = ek_key_material(&tpm.ek_public(ek).unwrap()).unwrap();
    match ek {
        EkChoice::Rsa2048 => {
            let key = spki.parsed().unwrap();
            let x509_parser::public_key::PublicKey::RSA(rsa) = key else {
                panic!("the RSA EK certificate holds {key:?}")
            };
            let modulus: Vec<u8> = rsa
                .modulus
                .iter()
                .copied()
                .skip_while(|b| *b == 0)
                .collect();
            assert_eq!(modulus, material.material, "certificate and TPM agree");
            EkKey::Rsa {
                spki_der: spki.raw.to_vec(),
            }
        }
        EkChoice::EccP256 => {
            let point = spki.subject_public_key.data.to_vec();
            assert_eq!(point, material.material, "certificate and TPM agree");
            EkKey::EccP256 { point }
        }
    }
}

fn round_trip(ek: EkChoice, ak_algorithm: AkAlgorithm) {
    let maker = TpmMaker::generate("Credential Test Maker").unwrap();
    let device = SwtpmDevice::start(&maker, "credential")
        .expect("swtpm must be installed and start (apt-get install swtpm swtpm-tools)");
    let state = tempfile::tempdir().unwrap();
    let mut tpm = EsapiTpm::new(&device.tcti(), state.path(), ek, ak_algorithm).unwrap();
    let key = ek_key_from_certificate(&mut tpm, ek);

    let ak = tpm.ensure_ak().unwrap();
    let verifier_view = attestation_key(&ak.public).unwrap();
    assert_eq!(
        verifier_view.name, ak.name,
        "agent and verifier agree on the AK's Name"
    );

    // Twice: each credential has a fresh seed, and the second runs on the saved contexts.
    for round in 0..2 {
        let made = make_credential(&key, &ak.name).unwrap();
        let secret = tpm
            .activate_credential(&made.credential_blob, &made.encrypted_secret)
            .unwrap_or_else(|e| panic!("{ek:?} round {round}: activation failed: {e}"));
        assert_eq!(secret, made.secret.to_vec(), "{ek:?} round {round}");
    }

    // Bound to another Name, as for an AK living in another TPM: the TPM refuses it.
    for position in [2, ak.name.len() - 1] {
        let mut other = ak.name.clone();
        other[position] ^= 0x01;
        let made = make_credential(&key, &other).unwrap();
        let error = tpm
            .activate_credential(&made.credential_blob, &made.encrypted_secret)
            .unwrap_err();
        assert!(
            error.to_string().contains("ActivateCredential"),
            "{ek:?}: {error}"
        );
    }

    // Wrapped to the device's other EK: the configured EK cannot unwrap it.
    let other_ek = match ek {
        EkChoice::Rsa2048 => EkChoice::EccP256,
        EkChoice::EccP256 => EkChoice::Rsa2048,
    };
    let other_key = ek_key_from_certificate(&mut tpm, other_ek);
    let made = make_credential(&other_key, &ak.name).unwrap();
    assert!(
        tpm.activate_credential(&made.credential_blob, &made.encrypted_secret)
            .is_err(),
        "{ek:?}: a credential for {other_ek:?} does not activate"
    );

    // And a good one still works after the failures (sessions were flushed).
    let made = make_credential(&key, &ak.name).unwrap();
    assert_eq!(
        tpm.activate_credential(&made.credential_blob, &made.encrypted_secret)
            .unwrap(),
        made.secret.to_vec()
    );
}

#[test]
fn verifier_credential_activates_with_the_rsa_2048_ek() {
    round_trip(EkChoice::Rsa2048, AkAlgorithm::Rsa2048);
}

#[test]
fn verifier_credential_activates_with_the_ecc_p256_ek() {
    round_trip(EkChoice::EccP256, AkAlgorithm::EccP256);
}

#[test]
fn verifier_credential_activates_for_an_ecc_ak_under_the_rsa_ek() {
    round_trip(EkChoice::Rsa2048, AkAlgorithm::EccP256);
}
