//! Issue 20, "runtime integrity and signed results" (items 5, 7 and 9), end to end: a real
//! verifier (in process, real TLS, real sled, real CA) with a signed trust list, a supplier's
//! manifests and a policy that enforces an IMA allowlist; real swtpm devices run by the real
//! agent, or the software TPM driven by hand over a real attestation stream where a test plays
//! the attacker. Each test performs the attack and sees it refused, naming the rule.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

use sha2::{Digest, Sha256};
use trustchain_proto::v1::enrollment_client::EnrollmentClient;
use trustchain_proto::v1::{
    ActivationResponse, Challenge, DeviceRequest, Evidence, TrustState, VerdictNotice,
};
use trustchain_swtpm::BootProfile;
use trustchain_tests::TestDevice;
use trustchain_tests::deployment::{
    Deployment, Document, acme_components, boot_applications, boot_manifest, gateway_policy,
};
use trustchain_tests::soft_tpm::{SoftTpm, answer, enroll_request};
use trustchain_tests::stream::AttestStream;
use trustchain_verifier::device::DeviceState;
use trustchain_verifier::reference::documents::{DeviceMatch, Manifest};

fn sha256_hex(content: &[u8]) -> String {
    hex::encode(Sha256::digest(content))
}

/// The allowlist entry for a file with `content`.
fn allowed(path: &str, content: &[u8]) -> String {
    format!("\"{path}\" = [\"sha256:{}\"]\n", sha256_hex(content))
}

/// A policy for the test gateways: the boot chain and kernel must match Acme's manifests, the
/// IMA allowlist is enforced with `allowlist` (TOML lines), a 2 s interval.
fn policy(version: u64, allowlist: &str) -> String {
    gateway_policy(
        version,
        2,
        Some(allowlist),
        &acme_components(&["boot-chain", "kernel"]),
    )
}

/// Trust list v1 (the test maker; Acme may sign for Acme), Acme's manifests for the default
/// boot chain and kernel, and policy v1 with `allowlist`.
async fn deployment(allowlist: &str) -> Deployment {
    let apps = boot_applications(&BootProfile::default_linux());
    Deployment::builder()
        .interval(2)
        .manifest(manifest("boot-chain", &apps[..2]))
        .manifest(manifest("kernel", &apps[2..]))
        .policy(policy(1, allowlist))
        .start()
        .await
        .unwrap()
}

fn manifest(product: &str, apps: &[(String, String)]) -> Manifest {
    boot_manifest("Acme", product, "1", apps)
}

/// The claims of the device's latest signed result, read as a relying party would: over
/// Admin.GetDevice, the JWT's payload decoded.
async fn result_claims(d: &Deployment, device_id: &str) -> serde_json::Value {
    let detail = d
        .admin()
        .await
        .unwrap()
        .get_device(DeviceRequest {
            device_id: device_id.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    trustchain_tests::jwt_claims(&detail.last_result_jwt).unwrap()
}

/// A device running program X (`/usr/local/bin/tool`), trusted, whose entry for X has been
/// accepted (judged once, incrementally): what a revocation then has to judge again.
async fn running_tool(d: &Deployment, label: &str) -> (TestDevice, String) {
    let mut device = d
        .device(label, &BootProfile::default_linux())
        .await
        .unwrap();
    let id = device.device_id();
    device
        .swtpm
        .ima_measure("/usr/local/bin/tool", b"tool v1")
        .unwrap();
    d.wait(&id, DeviceState::Trusted).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let record = d.verifier.service.storage().device(&id).unwrap().unwrap();
    assert_eq!(
        record.state,
        DeviceState::Trusted,
        "{}",
        d.verifier.failure_summary(&id)
    );
    (device, id)
}

/// Policy v2: the allowlist of bash gains `/usr/bin/ls`.
async fn import_allowlist_v2(d: &Deployment) {
    let allowlist = format!(
        "{}{}",
        allowed("/usr/bin/bash", b"bash"),
        allowed("/usr/bin/ls", b"ls")
    );
    d.import(Document::Policy, &policy(2, &allowlist))
        .await
        .unwrap();
}

/// A software-TPM device whose attestation stream the test drives by hand.
struct HandDriven {
    device_id: String,
    tpm: SoftTpm,
    stream: AttestStream,
}

impl HandDriven {
    /// Enrolls a soft TPM (Begin, ActivateCredential in software, Complete) and opens its stream.
    async fn enroll(d: &Deployment, label: &str) -> Self {
        let tpm = SoftTpm::new(&d.makers.trusted, label, &BootProfile::default_linux()).unwrap();
        let mut enrollment = EnrollmentClient::new(d.verifier.channel(None).await.unwrap());
        let challenge = enrollment
            .begin(enroll_request(&tpm, label))
            .await
            .unwrap()
            .into_inner();
        let secret = tpm
            .activate_credential(&challenge.credential_blob, &challenge.encrypted_secret)
            .unwrap();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let csr = rcgen::CertificateParams::default()
            .serialize_request(&key)
            .unwrap();
        let result = enrollment
            .complete(ActivationResponse {
                attempt_id: challenge.attempt_id,
                secret,
                client_csr: csr.der().to_vec(),
            })
            .await
            .unwrap()
            .into_inner();
        let ca = trustchain_ca::Authority::load(&d.verifier.dir.path().join("ca")).unwrap();
        let chain = pem::encode(&pem::Pem::new("CERTIFICATE", result.client_certificate))
            + ca.issuing_pem();
        let stream =
            AttestStream::open_as(&d.verifier, &result.device_id, &chain, &key.serialize_pem())
                .await
                .unwrap();
        Self {
            device_id: result.device_id,
            tpm,
            stream,
        }
    }

    async fn challenge(&mut self) -> Challenge {
        self.stream.challenge().await.unwrap()
    }

    async fn send(&mut self, evidence: Evidence) -> VerdictNotice {
        self.stream.send(evidence).await.unwrap()
    }

    /// Enrolls, measures `path` with `content`, and passes one honest round: trusted.
    async fn trusted(d: &Deployment, label: &str, path: &str, content: &[u8]) -> Self {
        let mut device = Self::enroll(d, label).await;
        device.tpm.measure_file(path, content);
        let (_, verdict) = device.honest_round().await;
        assert!(
            trusted(&verdict),
            "{}",
            d.verifier.failure_summary(&device.device_id)
        );
        device
    }

    /// One honest round: the next challenge answered as a genuine agent would.
    async fn honest_round(&mut self) -> (Challenge, VerdictNotice) {
        let challenge = self.challenge().await;
        let bound = self.stream.bound(&challenge);
        let evidence = answer(&mut self.tpm, &challenge, &bound).unwrap();
        let verdict = self.send(evidence).await;
        (challenge, verdict)
    }
}

fn trusted(verdict: &VerdictNotice) -> bool {
    verdict.state == TrustState::Trusted as i32
}

// ---------------------------------------------------------------------------------------------
// Item 9: only the first entry, checked against PCRs 0-9, is the boot aggregate.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_program_measured_under_the_name_boot_aggregate_fails_the_allowlist() {
    let d = deployment(&allowed("/usr/bin/bash", b"bash")).await;
    let mut device = d
        .device("gw-aggregate", &BootProfile::default_linux())
        .await
        .unwrap();
    let id = device.device_id();
    // The kernel's own boot aggregate (entry 0, SHA-256 over the quoted PCRs 0-9) passes.
    d.wait(&id, DeviceState::Trusted).await.unwrap();
    // The attacker runs an unknown program from a file named `boot_aggregate`.
    device
        .swtpm
        .ima_measure("boot_aggregate", b"an implant the allowlist never saw")
        .unwrap();
    d.wait(&id, DeviceState::Untrusted).await.unwrap();
    let failures = d.last_failures(&id);
    let failure = failures
        .iter()
        .find(|f| f.rule.name() == "ima_allowlist")
        .unwrap_or_else(|| panic!("{failures:?}"));
    assert!(
        failure.subject.starts_with("IMA entry ") && failure.subject.ends_with("(boot_aggregate)"),
        "{failure:?}"
    );
    assert_ne!(
        failure.subject, "IMA entry 0 (boot_aggregate)",
        "{failure:?}"
    );
    assert!(
        failure
            .measured
            .contains(&sha256_hex(b"an implant the allowlist never saw")),
        "{failure:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Item 5: IMA entries are judged again when the allowlist changes.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_binary_measured_before_its_revocation_fails_at_the_next_appraisal() {
    let bash = allowed("/usr/bin/bash", b"bash");
    let tool = allowed("/usr/local/bin/tool", b"tool v1");
    let d = deployment(&format!("{bash}{tool}")).await;
    // The device runs program X, which the allowlist allows.
    // Let X's entry be accepted (judged once, incrementally) before the revocation.
    let (_device, id) = running_tool(&d, "gw-revoked-binary").await;
    // The operator imports an allowlist without X. Nothing new is measured.
    d.import(Document::Policy, &policy(2, &bash)).await.unwrap();
    d.wait(&id, DeviceState::Untrusted).await.unwrap();
    let failures = d.last_failures(&id);
    let failure = failures
        .iter()
        .find(|f| f.rule.name() == "ima_allowlist")
        .unwrap_or_else(|| panic!("{failures:?}"));
    assert!(
        failure.subject.contains("/usr/local/bin/tool"),
        "{failure:?}"
    );
    assert!(
        failure.measured.contains(&sha256_hex(b"tool v1")),
        "{failure:?}"
    );
    // Recorded: the failed appraisal names X in the device's history.
    let events = d.verifier.service.storage().events(0, 10_000).unwrap();
    assert!(
        events
            .iter()
            .any(|(_, e)| e.device_id == id && e.detail.contains("/usr/local/bin/tool")),
        "no audit record names the revoked binary"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_binary_from_a_manifest_the_trust_list_then_revokes_fails_at_the_next_appraisal() {
    let d = deployment(&allowed("/usr/bin/bash", b"bash")).await;
    // Acme's "tools" manifest lists program X's digest; the policy admits it.
    let mut tools = manifest("tools", &[]);
    tools.runtime.insert(
        "/usr/local/bin/tool".into(),
        vec![format!("sha256:{}", sha256_hex(b"tool v1"))],
    );
    d.import(Document::Manifest, &d.sign_manifest(&tools).unwrap())
        .await
        .unwrap();
    let with_tools = policy(2, &allowed("/usr/bin/bash", b"bash"))
        + "\n[[components]]\nsupplier = \"Acme\"\nproduct = \"tools\"\n";
    d.import(Document::Policy, &with_tools).await.unwrap();
    let (_device, id) = running_tool(&d, "gw-revoked-manifest").await;
    // Trust list v2 revokes the manifest. Nothing new is measured.
    let mut list = d.list.clone();
    list.version = 2;
    list.revoked.manifests.push(tools.id());
    d.import(Document::TrustList, &d.sign_trust_list(&list).unwrap())
        .await
        .unwrap();
    d.wait(&id, DeviceState::Untrusted).await.unwrap();
    let failures = d.last_failures(&id);
    assert!(
        failures
            .iter()
            .any(|f| f.rule.name() == "ima_allowlist" && f.subject.contains("/usr/local/bin/tool")),
        "{failures:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_that_leaves_out_the_start_of_a_rejudged_ima_list_is_refused() {
    let d = deployment(&allowed("/usr/bin/bash", b"bash")).await;
    let mut device = HandDriven::trusted(&d, "soft-rejudge", "/usr/bin/bash", b"bash").await;
    let (challenge, verdict) = device.honest_round().await;
    assert!(trusted(&verdict));
    assert!(challenge.ima_offset > 0, "IMA travels incrementally");
    let offset = challenge.ima_offset;

    // The allowlist changes (a file is added): the next challenge asks for the whole list.
    import_allowlist_v2(&d).await;
    let challenge = device.challenge().await;
    assert_eq!(
        challenge.ima_offset, 0,
        "a re-judgement asks for entry 0 on"
    );
    // The attacker answers with only the entries after the old offset, hiding the start.
    let mut evidence = answer(
        &mut device.tpm,
        &challenge,
        &device.stream.bound(&challenge),
    )
    .unwrap();
    let tail: String = String::from_utf8(evidence.ima_entries.clone())
        .unwrap()
        .lines()
        .skip(usize::try_from(offset).unwrap())
        .map(|line| format!("{line}\n"))
        .collect();
    evidence.ima_entries = tail.into_bytes();
    evidence.ima_offset = offset;
    let verdict = device.send(evidence).await;
    assert!(!trusted(&verdict));
    assert_eq!(
        d.verifier.failed_rules(&device.device_id),
        vec!["ima_rejudgement".to_string()],
        "{}",
        d.verifier.failure_summary(&device.device_id)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_honest_device_resends_its_whole_list_once_and_the_rejudgement_is_recorded() {
    let d = deployment(&allowed("/usr/bin/bash", b"bash")).await;
    let mut device = HandDriven::trusted(&d, "soft-rejudged", "/usr/bin/bash", b"bash").await;
    import_allowlist_v2(&d).await;
    let (challenge, verdict) = device.honest_round().await;
    assert_eq!(challenge.ima_offset, 0);
    assert!(
        trusted(&verdict),
        "{}",
        d.verifier.failure_summary(&device.device_id)
    );
    let claims = result_claims(&d, &device.device_id).await;
    assert!(
        claims["trustchain.notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().contains("re-judged from the start")),
        "{claims}"
    );
    // Judged once under the new allowlist: the list travels incrementally again.
    let (challenge, verdict) = device.honest_round().await;
    assert!(challenge.ima_offset > 0, "{challenge:?}");
    assert!(trusted(&verdict));
}

// ---------------------------------------------------------------------------------------------
// Item 7: signed results claim only what the rules and the standing state back.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn an_honest_pass_of_an_untrusted_device_is_not_signed_affirming() {
    let d = deployment(&allowed("/usr/bin/bash", b"bash")).await;
    let mut device = HandDriven::trusted(&d, "soft-untrusted", "/usr/bin/bash", b"bash").await;
    let claims = result_claims(&d, &device.device_id).await;
    let submod = &claims["submods"][&device.device_id];
    assert_eq!(submod["ear.status"], "affirming", "{claims}");
    assert_eq!(claims["trustchain.device-state"], "trusted", "{claims}");
    // Boot backed by admitted manifests and every IMA entry judged by the enforced allowlist.
    assert_eq!(
        submod["ear.trustworthiness-vector"]["executables"], 2,
        "{claims}"
    );

    // One forged answer (a flipped signature bit): an integrity failure, sticky.
    let challenge = device.challenge().await;
    let mut evidence = answer(
        &mut device.tpm,
        &challenge,
        &device.stream.bound(&challenge),
    )
    .unwrap();
    let last = evidence.signature.len() - 1;
    evidence.signature[last] ^= 1;
    let verdict = device.send(evidence).await;
    assert!(!trusted(&verdict));
    assert!(
        d.verifier
            .failed_rules(&device.device_id)
            .contains(&"quote_signature".to_string())
    );

    // Then an honest round: every rule passes, and the device stays untrusted.
    let (_, verdict) = device.honest_round().await;
    assert_eq!(verdict.state, TrustState::Untrusted as i32);
    let claims = result_claims(&d, &device.device_id).await;
    let submod = &claims["submods"][&device.device_id];
    assert!(
        claims["trustchain.failed-rules"]
            .as_array()
            .unwrap()
            .is_empty(),
        "the round itself passed: {claims}"
    );
    assert_ne!(submod["ear.status"], "affirming", "{claims}");
    assert_eq!(claims["trustchain.device-state"], "untrusted", "{claims}");
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert!(exp > iat, "{claims}");
    // Interval 2 s times the timeout allowance.
    let allowance = i64::from(
        d.verifier
            .service
            .attestation_config()
            .timeout_after_missed_intervals
            .max(1),
    );
    assert_eq!(exp - iat, 2 * allowance, "{claims}");
}

#[tokio::test(flavor = "multi_thread")]
async fn executables_are_not_affirmed_with_the_allowlist_off() {
    let d = deployment(&allowed("/usr/bin/bash", b"bash")).await;
    d.import(
        Document::Policy,
        &policy(2, "").replace("enforce_allowlist = true", "enforce_allowlist = false"),
    )
    .await
    .unwrap();
    let device =
        HandDriven::trusted(&d, "soft-allowlist-off", "/usr/bin/anything", b"anything").await;
    let claims = result_claims(&d, &device.device_id).await;
    let submod = &claims["submods"][&device.device_id];
    assert_eq!(submod["ear.status"], "affirming", "{claims}");
    assert_eq!(
        submod["ear.trustworthiness-vector"]["executables"], 0,
        "{claims}"
    );
    assert!(claims["trustchain.allowlist"].is_null(), "{claims}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_its_trust_list_revokes_gets_no_hardware_or_identity_claim() {
    let d = deployment(&allowed("/usr/bin/bash", b"bash")).await;
    let mut device = HandDriven::enroll(&d, "soft-revoked").await;
    device.tpm.measure_file("/usr/bin/bash", b"bash");
    let (_, verdict) = device.honest_round().await;
    assert!(trusted(&verdict));
    // Trust list v2 revokes the device; its evidence stays genuine.
    let mut list = d.list.clone();
    list.version = 2;
    list.revoked.devices.push(DeviceMatch {
        ek_public_sha256: Some(sha256_hex(&device.tpm.ek_public)),
        ..DeviceMatch::default()
    });
    d.import(Document::TrustList, &d.sign_trust_list(&list).unwrap())
        .await
        .unwrap();
    let (_, verdict) = device.honest_round().await;
    assert!(!trusted(&verdict));
    let claims = result_claims(&d, &device.device_id).await;
    let vector = &claims["submods"][&device.device_id]["ear.trustworthiness-vector"];
    assert_eq!(vector["hardware"], 96, "{claims}");
    assert_eq!(vector["instance-identity"], 96, "{claims}");
}
