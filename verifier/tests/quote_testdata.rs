//! Real TPM quotes from ../shared/testdata/quotes: each verifies with its AK, and each kind of
//! tampering fails with its own error.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;

use base64::Engine as _;
use trustchain_verifier::evidence::digest::HashAlgorithm;
use trustchain_verifier::evidence::quote::{
    PcrValues, QuoteError, QuoteExpectations, VerifyingKey, check_attest, verify_quote,
};
use trustchain_verifier::evidence::tpm::{
    Attest, AttestType, ENDORSEMENT_HIERARCHY, Public, Signature, SignatureScheme,
    hierarchy_qualified_name,
};

fn testdata(path: &str) -> PathBuf {
    let full = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/testdata"
    ))
    .join(path);
    assert!(
        full.exists(),
        "testdata {} is missing: ../shared must sit beside the repository",
        full.display()
    );
    full
}

fn read(path: &str) -> Vec<u8> {
    std::fs::read(testdata(path)).unwrap()
}

fn json(path: &str) -> serde_json::Value {
    serde_json::from_slice(&read(path)).unwrap()
}

/// One real quote with everything needed to verify it.
struct Case {
    name: String,
    attest: Vec<u8>,
    signature: Vec<u8>,
    key: VerifyingKey,
    pcrs: PcrValues,
}

fn gce_cases() -> Vec<Case> {
    let dir = "quotes/gce-cos-85-no-nonce";
    let ak = Public::parse(&read(&format!("{dir}/ak_pub.tpmt_public.bin"))).unwrap();
    // This AK is a primary key in the endorsement hierarchy.
    let signer = ak.qualified_name(&hierarchy_qualified_name(ENDORSEMENT_HIERARCHY));
    let attestation = json(&format!("{dir}/attestation.json"));
    let files = [
        ("quote0_sha1", "sha1"),
        ("quote1_sha256", "sha256"),
        ("quote2_sha384", "sha384"),
    ];
    files
        .iter()
        .map(|(file, bank)| {
            let quote = attestation["quotes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|q| q["hash"] == *bank)
                .unwrap();
            let bank = HashAlgorithm::from_name(bank).unwrap();
            let mut pcrs = PcrValues::default();
            for (index, value) in quote["pcrs"].as_object().unwrap() {
                pcrs.insert(
                    bank,
                    index.parse().unwrap(),
                    hex::decode(value.as_str().unwrap()).unwrap(),
                );
            }
            Case {
                name: (*file).to_string(),
                attest: read(&format!("{dir}/{file}.tpms_attest.bin")),
                signature: read(&format!("{dir}/{file}.tpmt_signature.bin")),
                key: VerifyingKey::new(ak.clone(), SignatureScheme::RsaSsa, HashAlgorithm::Sha256)
                    .unwrap()
                    .with_signer(signer.clone()),
                pcrs,
            }
        })
        .collect()
}

/// The Windows GCP shielded VM's AK, from go-attestation's dump.
fn windows_ak() -> Vec<u8> {
    let dump = json("quotes/windows-gcp/windows_gcp_shielded_vm.json");
    base64::engine::general_purpose::STANDARD
        .decode(dump["AK"]["Public"].as_str().unwrap())
        .unwrap()
}

/// The Windows GCP shielded VM's real quote is signed RSASSA over SHA-1: no verifying key can
/// be pinned to SHA-1 (issue 20, item 11), so it never verifies.
#[test]
fn a_real_sha1_signed_windows_quote_is_refused() {
    assert_eq!(
        VerifyingKey::from_public_bytes(
            &windows_ak(),
            SignatureScheme::RsaSsa,
            HashAlgorithm::Sha1
        )
        .err(),
        Some(QuoteError::Sha1Signature)
    );
}

fn all_cases() -> Vec<Case> {
    gce_cases()
}

fn verify(
    case: &Case,
    attest: &[u8],
    signature: &[u8],
    nonce: &[u8],
    pcrs: &PcrValues,
) -> Result<Attest, QuoteError> {
    verify_quote(
        attest,
        signature,
        &QuoteExpectations {
            key: &case.key,
            nonce,
            pcr_values: pcrs,
        },
    )
    .map(|v| v.attest)
}

#[test]
fn every_real_quote_verifies_and_matches_expected_fields() {
    let expected = json("quotes/expected.json");
    for case in all_cases() {
        let attest = verify(&case, &case.attest, &case.signature, &[], &case.pcrs)
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let key = format!("go-tpm-tools/gce-cos-85-no-nonce.decoded/{}", case.name);
        let want = &expected[&key];
        assert_eq!(
            hex::encode(&attest.qualified_signer),
            want["qualifiedSigner"].as_str().unwrap(),
            "{key}"
        );
        assert_eq!(
            attest.clock_info.clock,
            want["clock"].as_u64().unwrap(),
            "{key}"
        );
        assert_eq!(
            u64::from(attest.clock_info.reset_count),
            want["resetCount"].as_u64().unwrap()
        );
        assert_eq!(
            u64::from(attest.clock_info.restart_count),
            want["restartCount"].as_u64().unwrap()
        );
        assert_eq!(
            format!("0x{:016x}", attest.firmware_version),
            want["firmwareVersion"].as_str().unwrap()
        );
        assert_eq!(
            hex::encode(attest.quote.unwrap().pcr_digest),
            want["pcrDigest"].as_str().unwrap()
        );
    }
}

#[test]
fn one_flipped_signature_bit_fails_the_signature() {
    for case in all_cases() {
        let mut signature = case.signature.clone();
        let last = signature.len() - 1;
        signature[last] ^= 0x01;
        let result = verify(&case, &case.attest, &signature, &[], &case.pcrs);
        assert_eq!(result, Err(QuoteError::BadSignature), "{}", case.name);
    }
}

#[test]
fn a_different_nonce_fails_the_nonce() {
    for case in all_cases() {
        let result = verify(&case, &case.attest, &case.signature, &[7u8; 32], &case.pcrs);
        assert_eq!(result, Err(QuoteError::NonceMismatch), "{}", case.name);
    }
}

#[test]
fn a_changed_pcr_value_fails_the_digest() {
    for case in all_cases() {
        let mut pcrs = case.pcrs.clone();
        let (_, value) = pcrs.0.iter_mut().next().unwrap();
        value[0] ^= 0x80;
        let result = verify(&case, &case.attest, &case.signature, &[], &pcrs);
        assert_eq!(result, Err(QuoteError::PcrDigestMismatch), "{}", case.name);
    }
}

#[test]
fn a_changed_selection_is_caught() {
    for case in all_cases() {
        // A signed PCR whose value is withheld.
        let mut missing = case.pcrs.clone();
        let first = *missing.0.keys().next().unwrap();
        missing.0.remove(&first);
        let result = verify(&case, &case.attest, &case.signature, &[], &missing);
        assert!(
            matches!(result, Err(QuoteError::PcrValueMissing { .. })),
            "{}: {result:?}",
            case.name
        );
        // A value for a PCR the quote does not cover.
        let mut extra = case.pcrs.clone();
        extra.insert(HashAlgorithm::Sha512, 3, vec![0; 64]);
        let result = verify(&case, &case.attest, &case.signature, &[], &extra);
        assert!(
            matches!(result, Err(QuoteError::PcrValueExtra { .. })),
            "{}: {result:?}",
            case.name
        );
    }
}

#[test]
fn a_wrong_magic_or_type_is_refused() {
    for case in all_cases() {
        // Tampering with the signed bytes breaks the signature first...
        let mut attest = case.attest.clone();
        attest[0] ^= 0xff;
        assert_eq!(
            verify(&case, &attest, &case.signature, &[], &case.pcrs),
            Err(QuoteError::BadSignature)
        );
        // ...and a signed structure that really carries another magic or type is named for it.
        let expectations = QuoteExpectations {
            key: &case.key,
            nonce: &[],
            pcr_values: &case.pcrs,
        };
        let mut parsed = Attest::parse(&case.attest).unwrap();
        parsed.magic = 0x1234_5678;
        assert_eq!(
            check_attest(&parsed, &expectations),
            Err(QuoteError::BadMagic(0x1234_5678))
        );
        let mut parsed = Attest::parse(&case.attest).unwrap();
        parsed.attest_type = AttestType::Certify;
        assert_eq!(
            check_attest(&parsed, &expectations),
            Err(QuoteError::WrongType(AttestType::Certify))
        );
    }
}

#[test]
fn a_different_ak_fails_the_signature_and_the_signer() {
    let gce = gce_cases();
    let case = &gce[1];
    let other = VerifyingKey::new(
        Public::parse(&windows_ak()).unwrap(),
        SignatureScheme::RsaSsa,
        HashAlgorithm::Sha256,
    )
    .unwrap();
    let expectations = QuoteExpectations {
        key: &other,
        nonce: &[],
        pcr_values: &case.pcrs,
    };
    assert_eq!(
        verify_quote(&case.attest, &case.signature, &expectations),
        Err(QuoteError::BadSignature)
    );
    // The right key, but the quote names another signer than the one expected.
    let wrong_signer = VerifyingKey::new(
        case.key.public().clone(),
        SignatureScheme::RsaSsa,
        HashAlgorithm::Sha256,
    )
    .unwrap();
    let expectations = QuoteExpectations {
        key: &wrong_signer,
        nonce: &[],
        pcr_values: &case.pcrs,
    };
    assert_eq!(
        verify_quote(&case.attest, &case.signature, &expectations),
        Err(QuoteError::SignerMismatch)
    );
}

#[test]
fn the_pinned_scheme_is_enforced() {
    let case = &gce_cases()[1];
    // A SHA-1 pin cannot even be made (issue 20, item 11).
    assert_eq!(
        VerifyingKey::new(
            case.key.public().clone(),
            SignatureScheme::RsaSsa,
            HashAlgorithm::Sha1
        )
        .err(),
        Some(QuoteError::Sha1Signature)
    );
    for (scheme, hash) in [
        (SignatureScheme::RsaSsa, HashAlgorithm::Sha384),
        (SignatureScheme::RsaPss, HashAlgorithm::Sha256),
    ] {
        let pinned = VerifyingKey::new(case.key.public().clone(), scheme, hash).unwrap();
        let expectations = QuoteExpectations {
            key: &pinned,
            nonce: &[],
            pcr_values: &case.pcrs,
        };
        let result = verify_quote(&case.attest, &case.signature, &expectations);
        assert!(
            matches!(result, Err(QuoteError::SchemeMismatch { .. })),
            "{result:?}"
        );
    }
}

#[test]
fn truncated_and_random_input_gives_errors_not_panics() {
    for case in all_cases() {
        for len in 0..case.attest.len() {
            assert!(verify(&case, &case.attest[..len], &case.signature, &[], &case.pcrs).is_err());
        }
        for len in 0..case.signature.len() {
            assert!(verify(&case, &case.attest, &case.signature[..len], &[], &case.pcrs).is_err());
        }
    }
    let mut state = 0x1234_5678_u32;
    for round in 0..2000 {
        let bytes: Vec<u8> = (0..round % 300)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state as u8
            })
            .collect();
        let _ = Attest::parse(&bytes);
        let _ = Public::parse(&bytes);
        let _ = Signature::parse(&bytes);
    }
}

#[test]
fn the_cli_verifies_a_real_quote_and_fails_on_tampering() {
    let bin = env!("CARGO_BIN_EXE_trustchain");
    let dir = testdata("quotes/gce-cos-85-no-nonce");
    let attestation = json("quotes/gce-cos-85-no-nonce/attestation.json");
    let quote = attestation["quotes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["hash"] == "sha256")
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let pcrs = tmp.path().join("pcrs.json");
    std::fs::write(
        &pcrs,
        serde_json::json!({ "pcrs": { "sha256": quote["pcrs"] } }).to_string(),
    )
    .unwrap();
    let run = |signature: &std::path::Path, nonce: &str| {
        std::process::Command::new(bin)
            .args(["quote", "verify", "--ak"])
            .arg(dir.join("ak_pub.tpmt_public.bin"))
            .arg("--quote")
            .arg(dir.join("quote1_sha256.tpms_attest.bin"))
            .arg("--signature")
            .arg(signature)
            .args(["--nonce", nonce, "--pcrs"])
            .arg(&pcrs)
            .output()
            .unwrap()
    };
    let good = run(&dir.join("quote1_sha256.tpmt_signature.bin"), "");
    let stdout = String::from_utf8_lossy(&good.stdout);
    assert!(good.status.success(), "{stdout}");
    assert!(
        stdout.contains("OK    signature") && stdout.contains("QN under the endorsement hierarchy"),
        "{stdout}"
    );

    let wrong_nonce = run(&dir.join("quote1_sha256.tpmt_signature.bin"), "00");
    assert_eq!(wrong_nonce.status.code(), Some(1));
    let mut signature = read("quotes/gce-cos-85-no-nonce/quote1_sha256.tpmt_signature.bin");
    *signature.last_mut().unwrap() ^= 1;
    let flipped = tmp.path().join("sig.bin");
    std::fs::write(&flipped, signature).unwrap();
    let bad = run(&flipped, "");
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stdout).contains("FAIL  signature"));
    // Malformed input: one line naming the offset.
    let junk = tmp.path().join("junk.bin");
    std::fs::write(&junk, [0u8, 0x14, 0]).unwrap();
    let malformed = run(&junk, "");
    assert_eq!(malformed.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&malformed.stderr);
    assert!(
        stderr.contains("offset") && stderr.lines().count() == 1,
        "{stderr}"
    );
}

/// Quotes made here, in the TPM's formats, with software keys: what a TPM would never sign
/// (another magic, another type) can then still carry a valid signature, so the checks after the
/// signature are exercised through `verify_quote` itself.
mod software {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::rsa::KeySize;
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RSA_PSS_SHA256, RsaKeyPair,
    };
    use trustchain_verifier::evidence::tpm::PcrSelection;

    use super::*;

    pub enum Signer {
        P256(EcdsaKeyPair),
        RsaPss(RsaKeyPair),
    }

    impl Signer {
        pub fn p256() -> Self {
            let rng = SystemRandom::new();
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
            Self::P256(
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap(),
            )
        }

        pub fn rsa_pss() -> Self {
            Self::RsaPss(RsaKeyPair::generate(KeySize::Rsa2048).unwrap())
        }

        /// A restricted signing key's TPMT_PUBLIC, as a TPM would report it.
        pub fn tpmt_public(&self) -> Vec<u8> {
            let mut out = Vec::new();
            let words = |out: &mut Vec<u8>, words: &[u16]| {
                for w in words {
                    out.extend_from_slice(&w.to_be_bytes());
                }
            };
            match self {
                Self::P256(pair) => {
                    let point = pair.public_key().as_ref().to_vec();
                    words(&mut out, &[0x0023, 0x000b]);
                    out.extend_from_slice(&0x0005_0072u32.to_be_bytes());
                    // authPolicy, symmetric NULL, ECDSA/SHA-256, P-256, kdf NULL.
                    words(&mut out, &[0, 0x0010, 0x0018, 0x000b, 0x0003, 0x0010]);
                    for coordinate in [&point[1..33], &point[33..65]] {
                        words(&mut out, &[32]);
                        out.extend_from_slice(coordinate);
                    }
                }
                Self::RsaPss(pair) => {
                    let modulus = pair
                        .public_key()
                        .modulus()
                        .big_endian_without_leading_zero()
                        .to_vec();
                    words(&mut out, &[0x0001, 0x000b]);
                    out.extend_from_slice(&0x0005_0072u32.to_be_bytes());
                    // authPolicy, symmetric NULL, RSAPSS/SHA-256, 2048 bits, exponent 0 (65537).
                    words(&mut out, &[0, 0x0010, 0x0016, 0x000b, 2048, 0, 0, 256]);
                    out.extend_from_slice(&modulus);
                }
            }
            out
        }

        /// A TPMT_SIGNATURE over `message`.
        pub fn sign(&self, message: &[u8]) -> Vec<u8> {
            let rng = SystemRandom::new();
            let mut out = Vec::new();
            match self {
                Self::P256(pair) => {
                    let fixed = pair.sign(&rng, message).unwrap();
                    out.extend_from_slice(&[0x00, 0x18, 0x00, 0x0b]);
                    for part in [&fixed.as_ref()[..32], &fixed.as_ref()[32..]] {
                        out.extend_from_slice(&32u16.to_be_bytes());
                        out.extend_from_slice(part);
                    }
                }
                Self::RsaPss(pair) => {
                    let mut signature = vec![0; pair.public_modulus_len()];
                    pair.sign(&RSA_PSS_SHA256, &rng, message, &mut signature)
                        .unwrap();
                    out.extend_from_slice(&[0x00, 0x16, 0x00, 0x0b]);
                    out.extend_from_slice(&(signature.len() as u16).to_be_bytes());
                    out.extend_from_slice(&signature);
                }
            }
            out
        }
    }

    /// A TPMS_ATTEST with the given magic and type over SHA-256 PCRs 0..8 (PCR n = H(n)).
    pub fn attest(magic: u32, tag: u16, signer: &[u8], nonce: &[u8]) -> (Vec<u8>, PcrValues) {
        let selection = PcrSelection::new(vec![(HashAlgorithm::Sha256, (0..8).collect())]);
        let mut pcrs = PcrValues::default();
        let mut concatenated = Vec::new();
        for pcr in 0..8u32 {
            let value = HashAlgorithm::Sha256.hash(&pcr.to_be_bytes());
            concatenated.extend_from_slice(&value);
            pcrs.insert(HashAlgorithm::Sha256, pcr, value);
        }
        let mut out = Vec::new();
        out.extend_from_slice(&magic.to_be_bytes());
        out.extend_from_slice(&tag.to_be_bytes());
        for field in [signer, nonce] {
            out.extend_from_slice(&(field.len() as u16).to_be_bytes());
            out.extend_from_slice(field);
        }
        out.extend_from_slice(&1234u64.to_be_bytes()); // clock
        out.extend_from_slice(&5u32.to_be_bytes()); // resetCount
        out.extend_from_slice(&6u32.to_be_bytes()); // restartCount
        out.push(1); // safe
        out.extend_from_slice(&0x0102_0304_0506_0708u64.to_be_bytes());
        out.extend_from_slice(&selection.marshal());
        out.extend_from_slice(&32u16.to_be_bytes());
        out.extend_from_slice(&HashAlgorithm::Sha256.hash(&concatenated));
        (out, pcrs)
    }

    fn key_for(signer: &Signer, scheme: SignatureScheme) -> VerifyingKey {
        let public = Public::parse(&signer.tpmt_public()).unwrap();
        assert_eq!(
            VerifyingKey::key_scheme(&public),
            Some((scheme, HashAlgorithm::Sha256))
        );
        let name = public.name();
        VerifyingKey::new(public, scheme, HashAlgorithm::Sha256)
            .unwrap()
            .with_signer(name)
    }

    fn check(signer: &Signer, scheme: SignatureScheme) {
        let key = key_for(signer, scheme);
        let name = key.signer().to_vec();
        let nonce = [0x5a; 32];
        let run = |attest: &[u8], signature: &[u8], nonce: &[u8], pcrs: &PcrValues| {
            verify_quote(
                attest,
                signature,
                &QuoteExpectations {
                    key: &key,
                    nonce,
                    pcr_values: pcrs,
                },
            )
        };

        let (good, pcrs) = attest(0xff54_4347, 0x8018, &name, &nonce);
        let verified = run(&good, &signer.sign(&good), &nonce, &pcrs).unwrap();
        assert_eq!(verified.attest.clock_info.clock, 1234);
        assert!(verified.attest.clock_info.safe);
        assert_eq!(verified.attest.firmware_version, 0x0102_0304_0506_0708);

        let (bad_magic, _) = attest(0xff54_4348, 0x8018, &name, &nonce);
        assert_eq!(
            run(&bad_magic, &signer.sign(&bad_magic), &nonce, &pcrs),
            Err(QuoteError::BadMagic(0xff54_4348))
        );
        // A certify structure, signed: parsed far enough to be named, then refused.
        let (certify, _) = attest(0xff54_4347, 0x8017, &name, &nonce);
        assert_eq!(
            run(&certify, &signer.sign(&certify), &nonce, &pcrs),
            Err(QuoteError::WrongType(AttestType::Certify))
        );
        let (other_signer, _) = attest(0xff54_4347, 0x8018, &[0, 0x0b, 1, 2, 3], &nonce);
        assert_eq!(
            run(&other_signer, &signer.sign(&other_signer), &nonce, &pcrs),
            Err(QuoteError::SignerMismatch)
        );
        let mut other_nonce = nonce;
        other_nonce[31] ^= 1;
        let error = run(&good, &signer.sign(&good), &other_nonce, &pcrs).unwrap_err();
        assert_eq!(error, QuoteError::NonceMismatch);
        assert!(!error.to_string().contains("5a5a"));

        // A freshly generated key of the same kind does not verify it.
        let stranger = match signer {
            Signer::P256(_) => Signer::p256(),
            Signer::RsaPss(_) => Signer::rsa_pss(),
        };
        assert_eq!(
            run(&good, &stranger.sign(&good), &nonce, &pcrs),
            Err(QuoteError::BadSignature)
        );
        // Trailing bytes after the quote body, even when signed, are malformed.
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(matches!(
            run(&trailing, &signer.sign(&trailing), &nonce, &pcrs),
            Err(QuoteError::Malformed { what: "quote", .. })
        ));
    }

    #[test]
    fn p256_ecdsa_quotes() {
        let signer = Signer::p256();
        check(&signer, SignatureScheme::EcDsa);
        // r or s with its leading zero dropped, as some TPMs marshal them, still verifies.
        let key = key_for(&signer, SignatureScheme::EcDsa);
        let (good, pcrs) = attest(0xff54_4347, 0x8018, key.signer(), &[]);
        let expectations = QuoteExpectations {
            key: &key,
            nonce: &[],
            pcr_values: &pcrs,
        };
        let mut tried = 0;
        while tried < 2000 {
            tried += 1;
            let signature = signer.sign(&good);
            // sigAlg, hash, then r: u16 size (32) and 32 bytes.
            if signature[6] != 0 {
                continue;
            }
            let mut short = signature[..4].to_vec();
            short.extend_from_slice(&31u16.to_be_bytes());
            short.extend_from_slice(&signature[7..]);
            verify_quote(&good, &short, &expectations).unwrap();
            return;
        }
        panic!("no signature with a leading zero in r after {tried} tries");
    }

    #[test]
    fn rsa_pss_quotes() {
        check(&Signer::rsa_pss(), SignatureScheme::RsaPss);
    }

    #[test]
    fn a_scheme_other_than_the_pinned_one_is_refused() {
        let signer = Signer::p256();
        let public = Public::parse(&signer.tpmt_public()).unwrap();
        // The pinned hash differs from the signature's.
        assert_eq!(
            VerifyingKey::new(
                public.clone(),
                SignatureScheme::EcDsa,
                HashAlgorithm::Sha384
            )
            .unwrap_err(),
            QuoteError::UnsupportedKey
        );
        // RSA schemes cannot be pinned to an EC key.
        assert_eq!(
            VerifyingKey::new(public, SignatureScheme::RsaSsa, HashAlgorithm::Sha256).unwrap_err(),
            QuoteError::UnsupportedKey
        );
        // An RSA key pinned to RSASSA refuses an RSAPSS signature by scheme, not by math.
        let rsa = Signer::rsa_pss();
        let public = Public::parse(&rsa.tpmt_public()).unwrap();
        let key = VerifyingKey::new(
            public.clone(),
            SignatureScheme::RsaSsa,
            HashAlgorithm::Sha256,
        )
        .unwrap()
        .with_signer(public.name());
        let (good, pcrs) = attest(0xff54_4347, 0x8018, &public.name(), &[]);
        let result = verify_quote(
            &good,
            &rsa.sign(&good),
            &QuoteExpectations {
                key: &key,
                nonce: &[],
                pcr_values: &pcrs,
            },
        );
        assert_eq!(
            result,
            Err(QuoteError::SchemeMismatch {
                found_scheme: SignatureScheme::RsaPss,
                found_hash: HashAlgorithm::Sha256,
                pinned_scheme: SignatureScheme::RsaSsa,
                pinned_hash: HashAlgorithm::Sha256,
            })
        );
    }
}

#[test]
fn the_cli_takes_an_spki_ak_and_testdata_pcr_files() {
    use x509_parser::prelude::FromDer as _;
    let bin = env!("CARGO_BIN_EXE_trustchain");
    let dir = testdata("quotes/gce-cos-85-no-nonce");
    let cert = read("quotes/gce-cos-85-no-nonce/ak_cert.der");
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&cert).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let spki = tmp.path().join("ak.spki.der");
    std::fs::write(&spki, cert.public_key().raw).unwrap();
    let run = |ak: &std::path::Path, extra: &[&str]| {
        std::process::Command::new(bin)
            .args(["quote", "verify", "--ak"])
            .arg(ak)
            .arg("--quote")
            .arg(dir.join("quote1_sha256.tpms_attest.bin"))
            .arg("--signature")
            .arg(dir.join("quote1_sha256.tpmt_signature.bin"))
            .arg("--pcrs")
            .arg(dir.join("expected_pcrs_from_quotes.json"))
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(
        &spki,
        &["--scheme", "rsassa", "--hash", "sha256", "--nonce", ""],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("OK    PCR digest"), "{stdout}");
    assert!(stdout.contains("from a SubjectPublicKeyInfo"), "{stdout}");
    // Pinned to another hash: the signature check fails, and so does the command.
    let out = run(&spki, &["--hash", "sha384"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAIL  signature"));
    // A different AK (the Windows VM's, as a TPMT_PUBLIC file): the signature fails.
    let dump = json("quotes/windows-gcp/windows_gcp_shielded_vm.json");
    let other = base64::engine::general_purpose::STANDARD
        .decode(dump["AK"]["Public"].as_str().unwrap())
        .unwrap();
    let other_path = tmp.path().join("other.tpmt");
    std::fs::write(&other_path, other).unwrap();
    let out = run(&other_path, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAIL  signature"));
}
