//! The agent's TPM layer on real swtpm devices (from the `trustchain-swtpm` harness): EK
//! certificates and publics, AK creation and reuse, quotes, credential activation, leftovers,
//! persistent AKs, TPM resets, and what each operation costs. Fails (never skips) when swtpm is
//! missing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use trustchain_agent::config::EkChoice;
use trustchain_agent::tpm::ak_blob::AkBlob;
use trustchain_agent::tpm::esapi::{AK_BLOB_FILE, AkAlgorithm, AkStorage, EsapiTpm};
use trustchain_agent::tpm::{SHA256_BANK, TctiConfig, Tpm, TpmError};
use trustchain_swtpm::{Bank, EkKind, SwtpmDevice, TpmMaker};
use tss_esapi::abstraction::{ak, ek};
use tss_esapi::constants::{CapabilityType, SessionType};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::structures::{
    AttestInfo, CapabilityData, Digest, Name, Private, Public, Signature, SymmetricDefinition,
};
use tss_esapi::traits::{Marshall, UnMarshall};

struct Fixture {
    device: SwtpmDevice,
    state: tempfile::TempDir,
    _maker: TpmMaker,
}

impl Fixture {
    fn start(label: &str) -> Self {
        let maker = TpmMaker::generate("Agent Test TPM Maker").expect("test maker");
        let device = SwtpmDevice::start(&maker, label)
            .expect("swtpm must be installed and start (apt-get install swtpm swtpm-tools)");
        Self {
            device,
            state: tempfile::tempdir().unwrap(),
            _maker: maker,
        }
    }

    fn tpm(&self, ek: EkChoice, ak: AkAlgorithm) -> EsapiTpm {
        EsapiTpm::new(&self.device.tcti(), self.state.path(), ek, ak).unwrap()
    }
}

fn kind(ek: EkChoice) -> EkKind {
    match ek {
        EkChoice::Rsa2048 => EkKind::Rsa2048,
        EkChoice::EccP256 => EkKind::EccP256,
    }
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

/// Handles listed in a capability range.
fn handles(device: &SwtpmDevice, first: u32) -> Vec<u32> {
    device
        .with_context(|ctx| {
            let (data, _) = ctx
                .get_capability(CapabilityType::Handles, first, 64)
                .unwrap();
            let CapabilityData::Handles(list) = data else {
                panic!("not a handle list")
            };
            Ok(list
                .iter()
                .map(|h| u32::from(*h))
                // A loaded-session listing returns policy sessions as 0x03...
                .filter(|h| h >> 24 == first >> 24 || (first == 0x0200_0000 && h >> 24 == 0x03))
                .collect())
        })
        .unwrap()
}

#[test]
fn ek_certificates_and_publics_for_both_eks() {
    let fixture = Fixture::start("ek");
    let mut tpm = fixture.tpm(EkChoice::Rsa2048, AkAlgorithm::Rsa2048);
    for ek in [EkChoice::Rsa2048, EkChoice::EccP256] {
        let certificate = tpm.ek_certificate(ek).unwrap();
        assert_eq!(
            certificate,
            fixture.device.ek_certificate_der(kind(ek)).unwrap(),
            "{ek:?}: the certificate the maker wrote to NV"
        );
        let public = tpm.ek_public(ek).unwrap();
        let from_template = fixture.device.ek_public(kind(ek)).unwrap();
        assert_eq!(public, from_template.marshall().unwrap(), "{ek:?}");
        // The certificate certifies this very key.
        let spki = trustchain_swtpm::device::spki_from_tpmt_public(&public).unwrap();
        assert!(
            certificate.windows(spki.len()).any(|w| w == spki),
            "{ek:?}: the certificate holds the EK's SubjectPublicKeyInfo"
        );
        // The EK is the same key every time (derived from the endorsement seed).
        assert_eq!(tpm.ek_public(ek).unwrap(), public);
    }
    assert!(tpm.is_software().unwrap(), "swtpm is a software TPM");
    assert!(
        handles(&fixture.device, 0x8000_0000).is_empty(),
        "no transient object left behind"
    );
}

/// The Name the TPM itself computes for the saved AK, loaded under the EK by tss-esapi alone.
fn name_by_the_tpm(device: &SwtpmDevice, blob: &AkBlob, ek: EkChoice) -> Vec<u8> {
    device
        .with_context(|ctx| {
            let parent = ek::create_ek_object_2(ctx, kind(ek).selection(), None).unwrap();
            let key = ak::load_ak(
                ctx,
                parent,
                None,
                Private::try_from(blob.private.clone()).unwrap(),
                Public::unmarshall(&blob.public).unwrap(),
            )
            .unwrap();
            let name = ctx.tr_get_name(key.into()).unwrap();
            ctx.flush_context(key.into()).unwrap();
            ctx.flush_context(parent.into()).unwrap();
            Ok(name.value().to_vec())
        })
        .unwrap()
}

fn ak_is_created_once_and_reused(ek: EkChoice, algorithm: AkAlgorithm) {
    let fixture = Fixture::start("ak");
    let mut tpm = fixture.tpm(ek, algorithm);
    let first = tpm.ensure_ak().unwrap();
    assert!(first.created, "{ek:?}/{algorithm:?}: created on first use");
    assert_eq!(first.algorithm, algorithm);
    assert_eq!(tpm.ak_name().unwrap(), first.name);
    assert_eq!(tpm.ak_public().unwrap(), first.public);
    drop(tpm);

    let path = fixture.state.path().join(AK_BLOB_FILE);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the AK blob is private to the agent");
    let blob = AkBlob::read(&path).unwrap().unwrap();
    assert_eq!(blob.public, first.public);
    assert_eq!(name_by_the_tpm(&fixture.device, &blob, ek), first.name);

    // A new agent process: same AK, from the saved blob, and it signs.
    let mut again = fixture.tpm(ek, algorithm);
    let reused = again.ensure_ak().unwrap();
    assert!(!reused.created);
    assert_eq!(reused.name, first.name);
    again.quote(&[1; 32], &[(SHA256_BANK, vec![0])]).unwrap();
    assert_eq!(again.ak_name().unwrap(), first.name);

    // Rotation replaces it.
    let rotated = again.rotate_ak().unwrap();
    assert_ne!(rotated, first.public);
    assert_eq!(again.ak_public().unwrap(), rotated);
    again.quote(&[2; 32], &[(SHA256_BANK, vec![0])]).unwrap();
}

#[test]
fn rsa_ak_under_the_rsa_ek_is_created_once_and_reused() {
    ak_is_created_once_and_reused(EkChoice::Rsa2048, AkAlgorithm::Rsa2048);
}

#[test]
fn ecc_ak_under_the_ecc_ek_is_created_once_and_reused() {
    ak_is_created_once_and_reused(EkChoice::EccP256, AkAlgorithm::EccP256);
}

#[test]
fn a_saved_ak_for_another_configuration_or_damaged_is_refused() {
    let fixture = Fixture::start("mismatch");
    fixture
        .tpm(EkChoice::Rsa2048, AkAlgorithm::Rsa2048)
        .ensure_ak()
        .unwrap();
    let error = fixture
        .tpm(EkChoice::EccP256, AkAlgorithm::EccP256)
        .ensure_ak()
        .unwrap_err();
    assert!(matches!(error, TpmError::AkMismatch { .. }), "{error}");
    assert!(error.to_string().contains("rotate"), "{error}");

    std::fs::write(fixture.state.path().join(AK_BLOB_FILE), b"TCAK\x01garbage").unwrap();
    let error = fixture
        .tpm(EkChoice::Rsa2048, AkAlgorithm::Rsa2048)
        .quote(&[0; 32], &[(SHA256_BANK, vec![0])])
        .unwrap_err();
    assert!(matches!(error, TpmError::BadAkBlob { .. }), "{error}");
}

fn check_quote(ek: EkChoice, algorithm: AkAlgorithm) {
    let fixture = Fixture::start("quote");
    fixture.device.extend_unlisted(10, b"ima entry").unwrap();
    fixture.device.extend_unlisted(7, b"secure boot").unwrap();
    let mut tpm = fixture.tpm(ek, algorithm);
    let nonce: Vec<u8> = (0u8..32).collect();
    let pcrs = vec![0, 1, 2, 3, 4, 5, 6, 7, 10];
    let quote = tpm.quote(&nonce, &[(SHA256_BANK, pcrs.clone())]).unwrap();

    let expected = fixture.device.read_pcrs(Bank::Sha256, &pcrs).unwrap();
    let listed: Vec<(u16, u32)> = quote.pcr_values.iter().map(|(b, i, _)| (*b, *i)).collect();
    assert_eq!(
        listed,
        pcrs.iter().map(|i| (SHA256_BANK, *i)).collect::<Vec<_>>()
    );
    for (_, index, value) in &quote.pcr_values {
        assert_eq!(value, &expected[index], "PCR {index}");
    }
    assert_ne!(expected[&10], vec![0; 32]);

    let attest = tss_esapi::structures::Attest::unmarshall(&quote.attest).unwrap();
    assert_eq!(attest.extra_data().value(), nonce.as_slice());
    let AttestInfo::Quote { info } = attest.attested() else {
        panic!("not a quote")
    };
    let mut hasher = Sha256::new();
    for (_, _, value) in &quote.pcr_values {
        hasher.update(value);
    }
    assert_eq!(info.pcr_digest().value(), hasher.finalize().as_slice());
    assert_eq!(quote.reset_count, attest.clock_info().reset_count());

    // The TPM accepts the signature over SHA-256(attest) with the saved AK.
    let signature = Signature::unmarshall(&quote.signature).unwrap();
    match (algorithm, &signature) {
        (AkAlgorithm::Rsa2048, Signature::RsaSsa(_))
        | (AkAlgorithm::EccP256, Signature::EcDsa(_)) => {}
        other => panic!("unexpected signature kind {other:?}"),
    }
    let blob = AkBlob::read(&fixture.state.path().join(AK_BLOB_FILE))
        .unwrap()
        .unwrap();
    let digest = Digest::try_from(Sha256::digest(&quote.attest).to_vec()).unwrap();
    fixture
        .device
        .with_context(|ctx| {
            let parent = ek::create_ek_object_2(ctx, kind(ek).selection(), None).unwrap();
            let key = ak::load_ak(
                ctx,
                parent,
                None,
                Private::try_from(blob.private.clone()).unwrap(),
                Public::unmarshall(&blob.public).unwrap(),
            )
            .unwrap();
            ctx.verify_signature(key, digest.clone(), signature.clone())
                .expect("the TPM verifies the agent's quote signature");
            ctx.flush_context(key.into()).unwrap();
            ctx.flush_context(parent.into()).unwrap();
            Ok(())
        })
        .unwrap();

    // Another nonce, another quote.
    let other = tpm.quote(&[0xee; 32], &[(SHA256_BANK, pcrs)]).unwrap();
    assert_ne!(other.attest, quote.attest);
    assert!(
        handles(&fixture.device, 0x8000_0000).is_empty(),
        "no transient object left behind"
    );
    assert!(
        handles(&fixture.device, 0x0200_0000).is_empty(),
        "no session left behind"
    );
}

#[test]
fn rsa_quote_over_sha256_pcrs_0_to_7_and_10() {
    check_quote(EkChoice::Rsa2048, AkAlgorithm::Rsa2048);
}

#[test]
fn ecc_quote_over_sha256_pcrs_0_to_7_and_10() {
    check_quote(EkChoice::EccP256, AkAlgorithm::EccP256);
}

#[test]
fn bad_selections_and_nonces_are_refused_before_the_tpm() {
    let fixture = Fixture::start("selection");
    let mut tpm = fixture.tpm(EkChoice::Rsa2048, AkAlgorithm::Rsa2048);
    for selection in [
        vec![],
        vec![(SHA256_BANK, vec![24])],
        vec![(SHA256_BANK, vec![])],
        vec![(0x0099, vec![0])],
    ] {
        assert!(
            matches!(tpm.quote(&[0; 32], &selection), Err(TpmError::Selection(_))),
            "{selection:?}"
        );
    }
    assert!(tpm.quote(&[0; 65], &[(SHA256_BANK, vec![0])]).is_err());
}

/// A credential the TPM itself made for the AK's Name, with the EK loaded.
fn activation_with_tpm_made_credential(ek: EkChoice) {
    let fixture = Fixture::start("activate");
    let mut tpm = fixture.tpm(ek, AkAlgorithm::Rsa2048);
    let name = tpm.ak_name().unwrap();
    let secret: Vec<u8> = (100u8..132).collect();
    let make = |name: Vec<u8>| {
        let secret = secret.clone();
        fixture
            .device
            .with_context(move |ctx| {
                let key = ek::create_ek_object_2(ctx, kind(ek).selection(), None).unwrap();
                let made = ctx
                    .make_credential(
                        key,
                        Digest::try_from(secret).unwrap(),
                        Name::try_from(name).unwrap(),
                    )
                    .unwrap();
                ctx.flush_context(key.into()).unwrap();
                Ok((made.0.value().to_vec(), made.1.value().to_vec()))
            })
            .unwrap()
    };
    let (blob, encrypted) = make(name.clone());
    assert_eq!(tpm.activate_credential(&blob, &encrypted).unwrap(), secret);

    let mut other = name.clone();
    *other.last_mut().unwrap() ^= 1;
    let (blob, encrypted) = make(other);
    let error = tpm.activate_credential(&blob, &encrypted).unwrap_err();
    assert!(error.to_string().contains("ActivateCredential"), "{error}");

    assert!(handles(&fixture.device, 0x8000_0000).is_empty());
    assert!(
        handles(&fixture.device, 0x0200_0000).is_empty(),
        "both sessions flushed, on success and on failure"
    );
}

#[test]
fn activate_credential_with_the_rsa_ek() {
    activation_with_tpm_made_credential(EkChoice::Rsa2048);
}

#[test]
fn activate_credential_with_the_ecc_ek() {
    activation_with_tpm_made_credential(EkChoice::EccP256);
}

const CRASH_TCTI: &str = "TRUSTCHAIN_TEST_CRASH_TCTI";

/// Child process of `leftover_objects_and_sessions_are_flushed`: loads an EK, starts two
/// sessions and exits without dropping its context, as a crashed agent would (swtpm has no
/// resource manager, so they stay in the TPM).
#[test]
#[ignore = "helper: run in a child process by leftover_objects_and_sessions_are_flushed"]
fn crash_holding_tpm_objects() {
    let tcti = std::env::var(CRASH_TCTI).expect("run by leftover_objects_and_sessions_are_flushed");
    let config: TctiConfig = tcti.parse().unwrap();
    let mut ctx = tss_esapi::Context::new(config.name_conf().unwrap()).unwrap();
    ek::create_ek_object_2(&mut ctx, kind(EkChoice::EccP256).selection(), None).unwrap();
    for kind in [SessionType::Hmac, SessionType::Policy] {
        ctx.start_auth_session(
            None,
            None,
            None,
            kind,
            SymmetricDefinition::AES_128_CFB,
            HashingAlgorithm::Sha256,
        )
        .unwrap()
        .unwrap();
    }
    println!("LEFT-BEHIND");
    // exit() runs no destructors: nothing is flushed.
    std::process::exit(0);
}

#[test]
fn leftover_objects_and_sessions_are_flushed() {
    let fixture = Fixture::start("leftovers");
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_holding_tpm_objects",
            "--ignored",
            "--nocapture",
        ])
        .env(CRASH_TCTI, fixture.device.tcti())
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("LEFT-BEHIND"),
        "the crashing child ran: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(handles(&fixture.device, 0x8000_0000).len(), 1);
    assert_eq!(handles(&fixture.device, 0x0200_0000).len(), 2);

    let mut tpm = fixture.tpm(EkChoice::Rsa2048, AkAlgorithm::Rsa2048);
    assert_eq!(tpm.flush_leftovers().unwrap(), 3);
    assert!(handles(&fixture.device, 0x8000_0000).is_empty());
    assert!(handles(&fixture.device, 0x0200_0000).is_empty());
    assert_eq!(tpm.flush_leftovers().unwrap(), 0);
    tpm.quote(&[3; 32], &[(SHA256_BANK, vec![0, 1])]).unwrap();
}

#[test]
fn a_persistent_ak_is_made_without_taking_ownership_and_reused() {
    let fixture = Fixture::start("persistent");
    let handle = 0x8101_0100;
    let open = || {
        EsapiTpm::open(
            fixture.device.tcti().parse::<TctiConfig>().unwrap(),
            AkStorage::Persistent { handle },
            EkChoice::Rsa2048,
            AkAlgorithm::EccP256,
        )
        .unwrap()
    };
    let mut tpm = open();
    let first = tpm.ensure_ak().unwrap();
    assert!(first.created);
    assert_eq!(
        handles(&fixture.device, 0x8100_0000)
            .iter()
            .filter(|h| **h == handle)
            .count(),
        1
    );
    let quote = tpm.quote(&[4; 32], &[(SHA256_BANK, vec![0, 7])]).unwrap();
    assert!(!quote.signature.is_empty());
    drop(tpm);

    let mut again = open();
    let reused = again.ensure_ak().unwrap();
    assert!(!reused.created);
    assert_eq!(reused.name, first.name);
    let secret: Vec<u8> = vec![9; 32];
    let (blob, encrypted) = fixture
        .device
        .with_context(|ctx| {
            let key =
                ek::create_ek_object_2(ctx, kind(EkChoice::Rsa2048).selection(), None).unwrap();
            let made = ctx
                .make_credential(
                    key,
                    Digest::try_from(secret.clone()).unwrap(),
                    Name::try_from(reused.name.clone()).unwrap(),
                )
                .unwrap();
            ctx.flush_context(key.into()).unwrap();
            Ok((made.0.value().to_vec(), made.1.value().to_vec()))
        })
        .unwrap();
    assert_eq!(
        again.activate_credential(&blob, &encrypted).unwrap(),
        secret
    );

    let rotated = again.rotate_ak().unwrap();
    assert_ne!(rotated, first.public);
    assert_eq!(again.ak_public().unwrap(), rotated);
    assert!(
        EsapiTpm::open(
            fixture.device.tcti().parse().unwrap(),
            AkStorage::Persistent {
                handle: 0x8180_0000
            },
            EkChoice::Rsa2048,
            AkAlgorithm::EccP256,
        )
        .is_err(),
        "platform-range handles are refused"
    );
}

#[test]
fn quotes_survive_a_tpm_reset() {
    let mut fixture = Fixture::start("reset");
    let mut tpm = fixture.tpm(EkChoice::Rsa2048, AkAlgorithm::Rsa2048);
    let before = tpm.quote(&[5; 32], &[(SHA256_BANK, vec![0])]).unwrap();
    fixture.device.reset().unwrap();
    let after = tpm.quote(&[6; 32], &[(SHA256_BANK, vec![0])]).unwrap();
    assert!(after.reset_count > before.reset_count);
    let (blob, encrypted) = {
        let name = tpm.ak_name().unwrap();
        fixture
            .device
            .with_context(|ctx| {
                let key =
                    ek::create_ek_object_2(ctx, kind(EkChoice::Rsa2048).selection(), None).unwrap();
                let made = ctx
                    .make_credential(
                        key,
                        Digest::try_from(vec![7u8; 32]).unwrap(),
                        Name::try_from(name).unwrap(),
                    )
                    .unwrap();
                ctx.flush_context(key.into()).unwrap();
                Ok((made.0.value().to_vec(), made.1.value().to_vec()))
            })
            .unwrap()
    };
    assert_eq!(
        tpm.activate_credential(&blob, &encrypted).unwrap(),
        vec![7u8; 32]
    );
}

/// Prints what each operation costs on swtpm (run with `--nocapture` to see the table).
#[test]
fn per_operation_costs() {
    let fixture = Fixture::start("costs");
    let selection = [(SHA256_BANK, vec![0, 1, 2, 3, 4, 5, 6, 7, 10])];
    for (ek, algorithm) in [
        (EkChoice::Rsa2048, AkAlgorithm::Rsa2048),
        (EkChoice::EccP256, AkAlgorithm::EccP256),
    ] {
        let state = tempfile::tempdir().unwrap();
        let open = || EsapiTpm::new(&fixture.device.tcti(), state.path(), ek, algorithm).unwrap();
        let mut tpm = open();
        let (_, connect) = timed(|| tpm.is_software().unwrap());
        let (_, flush) = timed(|| tpm.flush_leftovers().unwrap());
        let (_, certificate) = timed(|| tpm.ek_certificate(ek).unwrap());
        let (_, ek_public) = timed(|| tpm.ek_public(ek).unwrap());
        let (info, create) = timed(|| tpm.ensure_ak().unwrap());
        assert!(info.created);
        let (_, first_quote) = timed(|| tpm.quote(&[1; 32], &selection).unwrap());
        let mut warm = Vec::new();
        for i in 0..5u8 {
            warm.push(timed(|| tpm.quote(&[i; 32], &selection).unwrap()).1);
        }
        warm.sort();
        let name = tpm.ak_name().unwrap();
        let (blob, encrypted) = fixture
            .device
            .with_context(|ctx| {
                let key = ek::create_ek_object_2(ctx, kind(ek).selection(), None).unwrap();
                let made = ctx
                    .make_credential(
                        key,
                        Digest::try_from(vec![1u8; 32]).unwrap(),
                        Name::try_from(name).unwrap(),
                    )
                    .unwrap();
                ctx.flush_context(key.into()).unwrap();
                Ok((made.0.value().to_vec(), made.1.value().to_vec()))
            })
            .unwrap();
        let (_, activate) = timed(|| tpm.activate_credential(&blob, &encrypted).unwrap());
        // A new process: nothing saved in memory, the EK is re-created and the AK re-loaded.
        let mut cold = open();
        let (_, cold_quote) = timed(|| cold.quote(&[9; 32], &selection).unwrap());
        eprintln!(
            "{ek:?}/{algorithm:?}: connect+GetCapability {connect:?}, flush_leftovers {flush:?}, \
             EK certificate {certificate:?}, EK public {ek_public:?}, create AK {create:?}, \
             first quote {first_quote:?}, warm quote median {:?} (min {:?}), \
             cold quote (new process) {cold_quote:?}, activate credential {activate:?}",
            warm[2], warm[0]
        );
    }
}
