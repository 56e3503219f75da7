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

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Identity;
use trustchain_proto::v1::admin_client::AdminClient;
use trustchain_proto::v1::attestation_client::AttestationClient;
use trustchain_proto::v1::enrollment_client::EnrollmentClient;
use trustchain_proto::v1::{
    ActivationResponse, AgentMessage, Challenge, DeviceRequest, Evidence, Hello, SignedDocument,
    TrustState, VerdictNotice, agent_message, verifier_message,
};
use trustchain_swtpm::boot::EV_EFI_BOOT_SERVICES_APPLICATION;
use trustchain_swtpm::{Bank, BootProfile, TestMakers};
use trustchain_tests::soft_tpm::{SoftTpm, answer, enroll_request};
use trustchain_tests::{TestDevice, TestVerifier};
use trustchain_verifier::audit::SigningKey;
use trustchain_verifier::device::DeviceState;
use trustchain_verifier::reference::documents::{
    BootKind, BootMeasurement, BootReferences, DeviceMatch, MANIFEST_KIND, MakerCa, Manifest,
    ManifestSigner, Revocations, Scope, TRUST_LIST_KIND, TrustList,
};
use trustchain_verifier::reference::signed::{self, MANIFEST_TYPE, TRUST_LIST_TYPE};
use trustchain_verifier::verdict::Failure;

const WAIT: Duration = Duration::from_secs(40);

/// A deployment: a trust-list authority, one supplier (Acme) and a real verifier.
struct Deployment {
    verifier: TestVerifier,
    makers: TestMakers,
    authority: SigningKey,
    acme: SigningKey,
    /// Trust list v1 as imported.
    list: TrustList,
    _keys: tempfile::TempDir,
}

fn key(dir: &std::path::Path, name: &str) -> SigningKey {
    let files = trustchain_ca::signing_key::create(dir, name).unwrap();
    SigningKey::from_pkcs8(&std::fs::read(files.private_key).unwrap()).unwrap()
}

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
    format!(
        r#"name = "gateways"
version = {version}

[match]
device_classes = ["gateway"]

[tier]
irreversibility = "medium"
economic_impact = "medium"
interval_seconds = 2

[boot]
check_boot_applications = true

[ima]
enforce_allowlist = true

[ima.allowlist]
{allowlist}
[[components]]
supplier = "Acme"
product = "boot-chain"

[[components]]
supplier = "Acme"
product = "kernel"
"#
    )
}

/// The boot applications a profile measures, with their SHA-256 digests.
fn boot_applications(profile: &BootProfile) -> Vec<(String, String)> {
    profile
        .events()
        .iter()
        .filter(|e| e.event_type == EV_EFI_BOOT_SERVICES_APPLICATION)
        .enumerate()
        .map(|(i, e)| {
            let digest = e
                .digests
                .iter()
                .find(|(bank, _)| *bank == Bank::Sha256)
                .map(|(_, d)| hex::encode(d))
                .unwrap();
            (format!("app {i}"), digest)
        })
        .collect()
}

fn manifest(product: &str, apps: &[(String, String)]) -> Manifest {
    Manifest {
        kind: MANIFEST_KIND.into(),
        supplier: "Acme".into(),
        product: product.into(),
        version: "1".into(),
        issued_at: "2026-11-25T00:00:00Z".into(),
        description: String::new(),
        boot: BootReferences {
            events: apps
                .iter()
                .map(|(name, digest)| BootMeasurement {
                    pcr: 4,
                    kind: BootKind::BootApplication,
                    description: name.clone(),
                    digests: BTreeMap::from([("sha256".to_string(), digest.clone())]),
                })
                .collect(),
            kernel_cmdlines: Vec::new(),
            secure_boot: None,
        },
        runtime: BTreeMap::new(),
    }
}

impl Deployment {
    /// Trust list v1 (the test maker; Acme may sign for Acme), Acme's manifests for the default
    /// boot chain and kernel, and policy v1 with `allowlist`.
    async fn start(allowlist: &str) -> Self {
        let makers = TestMakers::generate().unwrap();
        let keys = tempfile::tempdir().unwrap();
        let authority = key(keys.path(), "trust-list-authority");
        let acme = key(keys.path(), "acme");
        let authority_pub = keys.path().join("trust-list-authority.pub");
        let verifier = TestVerifier::start_with(&makers.trusted, |c| {
            c.trust_list_authority = Some(authority_pub);
            c.attestation.default_interval_seconds = 2;
        })
        .await
        .unwrap();
        let (root, intermediate) = makers.trusted.write_pem(keys.path()).unwrap();
        let list = TrustList {
            kind: TRUST_LIST_KIND.into(),
            version: 1,
            issued_at: "2026-11-25T00:00:00Z".into(),
            maker_cas: [
                ("test maker root", root),
                ("test maker intermediate", intermediate),
            ]
            .into_iter()
            .map(|(name, path)| MakerCa {
                name: name.into(),
                certificate_pem: std::fs::read_to_string(path).unwrap(),
            })
            .collect(),
            devices: vec![trustchain_tests::maker_class(&makers.trusted, "gateway")],
            manifest_signers: vec![ManifestSigner {
                name: "acme".into(),
                public_key: acme.public_hex(),
                scope: Scope {
                    suppliers: vec!["Acme".into()],
                    products: vec!["*".into()],
                },
            }],
            revoked: Revocations::default(),
        };
        let d = Self {
            verifier,
            makers,
            authority,
            acme,
            list,
            _keys: keys,
        };
        d.import(
            "trust list",
            &signed::sign(&d.list, TRUST_LIST_TYPE, &d.authority).unwrap(),
        )
        .await;
        let apps = boot_applications(&BootProfile::default_linux());
        for (product, apps) in [("boot-chain", &apps[..2]), ("kernel", &apps[2..])] {
            let document = signed::sign(&manifest(product, apps), MANIFEST_TYPE, &d.acme).unwrap();
            d.import("manifest", &document).await;
        }
        d.import("policy", &policy(1, allowlist)).await;
        d
    }

    async fn admin(&self) -> AdminClient<tonic::transport::Channel> {
        AdminClient::new(self.verifier.operator_channel().await.unwrap())
    }

    /// Imports one document over the operator's mTLS; it must be accepted.
    async fn import(&self, kind: &str, document: &str) {
        let mut admin = self.admin().await;
        let request = SignedDocument {
            document: document.as_bytes().to_vec(),
        };
        let answer = match kind {
            "trust list" => admin.import_trust_list(request).await,
            "manifest" => admin.import_manifest(request).await,
            _ => admin.import_policy(request).await,
        };
        if let Err(status) = answer {
            panic!("{kind} refused: {}", status.message());
        }
    }

    /// A swtpm device booted with the default profile, enrolled, bash measured, agent running.
    async fn device(&self, label: &str) -> TestDevice {
        let mut device = TestDevice::enrolled(
            &self.verifier,
            &self.makers.trusted,
            label,
            &BootProfile::default_linux(),
        )
        .await
        .unwrap();
        device.swtpm.ima_measure("/usr/bin/bash", b"bash").unwrap();
        device.start_agent();
        device
    }

    async fn wait(&self, device_id: &str, state: DeviceState) {
        self.verifier
            .wait_for_state(device_id, state, WAIT)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{e}; last failure: {}",
                    self.verifier.failure_summary(device_id)
                )
            });
    }

    fn last_failures(&self, device_id: &str) -> Vec<Failure> {
        self.verifier
            .service
            .last_failed_verdict(device_id)
            .map(|v| v.failures().to_vec())
            .unwrap_or_default()
    }

    /// The claims of the device's latest signed result, read as a relying party would: over
    /// Admin.GetDevice, the JWT's payload decoded.
    async fn result_claims(&self, device_id: &str) -> serde_json::Value {
        let detail = self
            .admin()
            .await
            .get_device(DeviceRequest {
                device_id: device_id.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let payload = detail
            .last_result_jwt
            .split('.')
            .nth(1)
            .unwrap()
            .to_string();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap()
    }
}

/// A software-TPM device whose attestation stream the test drives by hand.
struct HandDriven {
    device_id: String,
    tpm: SoftTpm,
    outbound: mpsc::Sender<AgentMessage>,
    inbound: tonic::Streaming<trustchain_proto::v1::VerifierMessage>,
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
        let identity = Identity::from_pem(chain, key.serialize_pem());
        let root = std::fs::read_to_string(&d.verifier.root_pem_path).unwrap();
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(root))
            .domain_name("localhost")
            .identity(identity);
        let channel = tonic::transport::Endpoint::from_shared(d.verifier.url())
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let (outbound, rx) = mpsc::channel(8);
        outbound
            .send(AgentMessage {
                body: Some(agent_message::Body::Hello(Hello {
                    device_id: result.device_id.clone(),
                    agent_version: "hand-driven".into(),
                })),
            })
            .await
            .unwrap();
        let inbound = AttestationClient::new(channel)
            .attest(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Self {
            device_id: result.device_id,
            tpm,
            outbound,
            inbound,
        }
    }

    async fn challenge(&mut self) -> Challenge {
        loop {
            let message = tokio::time::timeout(WAIT, self.inbound.message())
                .await
                .expect("no challenge in time")
                .unwrap()
                .expect("stream ended");
            if let Some(verifier_message::Body::Challenge(challenge)) = message.body {
                return challenge;
            }
        }
    }

    async fn send(&mut self, evidence: Evidence) -> VerdictNotice {
        for message in trustchain_proto::evidence_messages(evidence) {
            self.outbound.send(message).await.unwrap();
        }
        loop {
            let message = tokio::time::timeout(WAIT, self.inbound.message())
                .await
                .expect("no verdict in time")
                .unwrap()
                .expect("stream ended");
            if let Some(verifier_message::Body::Verdict(verdict)) = message.body {
                return verdict;
            }
        }
    }

    /// One honest round: the next challenge answered as a genuine agent would.
    async fn honest_round(&mut self) -> (Challenge, VerdictNotice) {
        let challenge = self.challenge().await;
        let evidence = answer(&mut self.tpm, &challenge, &challenge.nonce).unwrap();
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
    let d = Deployment::start(&allowed("/usr/bin/bash", b"bash")).await;
    let mut device = d.device("gw-aggregate").await;
    let id = device.device_id();
    // The kernel's own boot aggregate (entry 0, SHA-256 over the quoted PCRs 0-9) passes.
    d.wait(&id, DeviceState::Trusted).await;
    // The attacker runs an unknown program from a file named `boot_aggregate`.
    device
        .swtpm
        .ima_measure("boot_aggregate", b"an implant the allowlist never saw")
        .unwrap();
    d.wait(&id, DeviceState::Untrusted).await;
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
    let d = Deployment::start(&format!("{bash}{tool}")).await;
    let mut device = d.device("gw-revoked-binary").await;
    let id = device.device_id();
    // The device runs program X, which the allowlist allows.
    device
        .swtpm
        .ima_measure("/usr/local/bin/tool", b"tool v1")
        .unwrap();
    d.wait(&id, DeviceState::Trusted).await;
    // Let X's entry be accepted (judged once, incrementally) before the revocation.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let record = d.verifier.service.storage().device(&id).unwrap().unwrap();
    assert_eq!(
        record.state,
        DeviceState::Trusted,
        "{}",
        d.verifier.failure_summary(&id)
    );
    // The operator imports an allowlist without X. Nothing new is measured.
    d.import("policy", &policy(2, &bash)).await;
    d.wait(&id, DeviceState::Untrusted).await;
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
    let d = Deployment::start(&allowed("/usr/bin/bash", b"bash")).await;
    // Acme's "tools" manifest lists program X's digest; the policy admits it.
    let mut tools = manifest("tools", &[]);
    tools.runtime.insert(
        "/usr/local/bin/tool".into(),
        vec![format!("sha256:{}", sha256_hex(b"tool v1"))],
    );
    d.import(
        "manifest",
        &signed::sign(&tools, MANIFEST_TYPE, &d.acme).unwrap(),
    )
    .await;
    let with_tools = policy(2, &allowed("/usr/bin/bash", b"bash"))
        + "\n[[components]]\nsupplier = \"Acme\"\nproduct = \"tools\"\n";
    d.import("policy", &with_tools).await;
    let mut device = d.device("gw-revoked-manifest").await;
    let id = device.device_id();
    device
        .swtpm
        .ima_measure("/usr/local/bin/tool", b"tool v1")
        .unwrap();
    d.wait(&id, DeviceState::Trusted).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let record = d.verifier.service.storage().device(&id).unwrap().unwrap();
    assert_eq!(
        record.state,
        DeviceState::Trusted,
        "{}",
        d.verifier.failure_summary(&id)
    );
    // Trust list v2 revokes the manifest. Nothing new is measured.
    let mut list = d.list.clone();
    list.version = 2;
    list.revoked.manifests.push(tools.id());
    d.import(
        "trust list",
        &signed::sign(&list, TRUST_LIST_TYPE, &d.authority).unwrap(),
    )
    .await;
    d.wait(&id, DeviceState::Untrusted).await;
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
    let d = Deployment::start(&allowed("/usr/bin/bash", b"bash")).await;
    let mut device = HandDriven::enroll(&d, "soft-rejudge").await;
    device.tpm.measure_file("/usr/bin/bash", b"bash");
    let (_, verdict) = device.honest_round().await;
    assert!(
        trusted(&verdict),
        "{}",
        d.verifier.failure_summary(&device.device_id)
    );
    let (challenge, verdict) = device.honest_round().await;
    assert!(trusted(&verdict));
    assert!(challenge.ima_offset > 0, "IMA travels incrementally");
    let offset = challenge.ima_offset;

    // The allowlist changes (a file is added): the next challenge asks for the whole list.
    d.import(
        "policy",
        &policy(
            2,
            &format!(
                "{}{}",
                allowed("/usr/bin/bash", b"bash"),
                allowed("/usr/bin/ls", b"ls")
            ),
        ),
    )
    .await;
    let challenge = device.challenge().await;
    assert_eq!(
        challenge.ima_offset, 0,
        "a re-judgement asks for entry 0 on"
    );
    // The attacker answers with only the entries after the old offset, hiding the start.
    let mut evidence = answer(&mut device.tpm, &challenge, &challenge.nonce).unwrap();
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
    let d = Deployment::start(&allowed("/usr/bin/bash", b"bash")).await;
    let mut device = HandDriven::enroll(&d, "soft-rejudged").await;
    device.tpm.measure_file("/usr/bin/bash", b"bash");
    let (_, verdict) = device.honest_round().await;
    assert!(
        trusted(&verdict),
        "{}",
        d.verifier.failure_summary(&device.device_id)
    );
    d.import(
        "policy",
        &policy(
            2,
            &format!(
                "{}{}",
                allowed("/usr/bin/bash", b"bash"),
                allowed("/usr/bin/ls", b"ls")
            ),
        ),
    )
    .await;
    let (challenge, verdict) = device.honest_round().await;
    assert_eq!(challenge.ima_offset, 0);
    assert!(
        trusted(&verdict),
        "{}",
        d.verifier.failure_summary(&device.device_id)
    );
    let claims = d.result_claims(&device.device_id).await;
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
    let d = Deployment::start(&allowed("/usr/bin/bash", b"bash")).await;
    let mut device = HandDriven::enroll(&d, "soft-untrusted").await;
    device.tpm.measure_file("/usr/bin/bash", b"bash");
    let (_, verdict) = device.honest_round().await;
    assert!(
        trusted(&verdict),
        "{}",
        d.verifier.failure_summary(&device.device_id)
    );
    let claims = d.result_claims(&device.device_id).await;
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
    let mut evidence = answer(&mut device.tpm, &challenge, &challenge.nonce).unwrap();
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
    let claims = d.result_claims(&device.device_id).await;
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
    let d = Deployment::start(&allowed("/usr/bin/bash", b"bash")).await;
    d.import(
        "policy",
        &policy(2, "").replace("enforce_allowlist = true", "enforce_allowlist = false"),
    )
    .await;
    let mut device = HandDriven::enroll(&d, "soft-allowlist-off").await;
    device.tpm.measure_file("/usr/bin/anything", b"anything");
    let (_, verdict) = device.honest_round().await;
    assert!(
        trusted(&verdict),
        "{}",
        d.verifier.failure_summary(&device.device_id)
    );
    let claims = d.result_claims(&device.device_id).await;
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
    let d = Deployment::start(&allowed("/usr/bin/bash", b"bash")).await;
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
    d.import(
        "trust list",
        &signed::sign(&list, TRUST_LIST_TYPE, &d.authority).unwrap(),
    )
    .await;
    let (_, verdict) = device.honest_round().await;
    assert!(!trusted(&verdict));
    let claims = d.result_claims(&device.device_id).await;
    let vector = &claims["submods"][&device.device_id]["ear.trustworthiness-vector"];
    assert_eq!(vector["hardware"], 96, "{claims}");
    assert_eq!(vector["instance-identity"], 96, "{claims}");
}
