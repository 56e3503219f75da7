//! Fail-open review, boot appraisal (issue 20, items 2 and 4), end to end: a signed trust list,
//! a supplier's manifests and a policy imported over the operator's mTLS into a real verifier,
//! real swtpm devices booted by the harness, and either the real agent or a hand-driven stream
//! that answers as an attacker holding one enrolled device would.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use trustchain_agent::tpm::Tpm;
use trustchain_proto::v1::admin_client::AdminClient;
use trustchain_proto::v1::attestation_client::AttestationClient;
use trustchain_proto::v1::{
    AgentMessage, Challenge, DeviceRequest, Evidence, Hello, PcrValue, SignedDocument,
    agent_message, verifier_message,
};
use trustchain_swtpm::boot::{BootEvent, EV_EFI_BOOT_SERVICES_APPLICATION};
use trustchain_swtpm::{Bank, BootProfile, TestMakers};
use trustchain_tests::{TestDevice, TestVerifier};
use trustchain_verifier::audit::SigningKey;
use trustchain_verifier::device::{DeviceState, EventKind};
use trustchain_verifier::reference::documents::{
    BootKind, BootMeasurement, BootReferences, MANIFEST_KIND, MakerCa, Manifest, ManifestSigner,
    Revocations, Scope, TRUST_LIST_KIND, TrustList,
};
use trustchain_verifier::reference::signed::{self, MANIFEST_TYPE, TRUST_LIST_TYPE};
use trustchain_verifier::verdict::Failure;

const WAIT: Duration = Duration::from_secs(40);

const EV_POST_CODE: u32 = 0x0000_0001;
const EV_IPL: u32 = 0x0000_000d;
const EV_EFI_ACTION: u32 = 0x8000_0007;

/// A verifier with a trust-list authority, Acme's manifests for the default boot chain, and a
/// policy for the gateways.
struct Deployment {
    verifier: TestVerifier,
    makers: TestMakers,
    acme: SigningKey,
    _keys: tempfile::TempDir,
}

impl Deployment {
    /// Trust list v1 (the test maker; Acme signs for Acme), Acme's manifest for the default
    /// profile's boot applications, and policy `gateways` v1 challenging every `interval` s.
    async fn start(interval: u64) -> Self {
        let makers = TestMakers::generate().unwrap();
        let keys = tempfile::tempdir().unwrap();
        let create = |name: &str| {
            let files = trustchain_ca::signing_key::create(keys.path(), name).unwrap();
            SigningKey::from_pkcs8(&std::fs::read(files.private_key).unwrap()).unwrap()
        };
        let authority = create("trust-list-authority");
        let acme = create("acme");
        let authority_pub = keys.path().join("trust-list-authority.pub");
        let verifier = TestVerifier::start_with(&makers.trusted, |c| {
            c.trust_list_authority = Some(authority_pub);
            c.attestation.default_interval_seconds = interval;
        })
        .await
        .unwrap();
        let (root, intermediate) = makers.trusted.write_pem(keys.path()).unwrap();
        let list = TrustList {
            kind: TRUST_LIST_KIND.into(),
            version: 1,
            issued_at: "2026-12-01T00:00:00Z".into(),
            maker_cas: [
                ("test maker root", root),
                ("test maker intermediate", intermediate),
            ]
            .into_iter()
            .map(|(name, pem)| MakerCa {
                name: name.into(),
                certificate_pem: std::fs::read_to_string(pem).unwrap(),
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
            acme,
            _keys: keys,
        };
        d.import(
            Kind::TrustList,
            signed::sign(&list, TRUST_LIST_TYPE, &authority).unwrap(),
        )
        .await;
        let manifest = boot_chain_manifest(&BootProfile::default_linux());
        d.import(
            Kind::Manifest,
            signed::sign(&manifest, MANIFEST_TYPE, &d.acme).unwrap(),
        )
        .await;
        d.import(Kind::Policy, policy(1, interval)).await;
        d
    }

    async fn import(&self, kind: Kind, document: String) -> String {
        let mut admin = AdminClient::new(self.verifier.operator_channel().await.unwrap());
        let request = SignedDocument {
            document: document.into_bytes(),
        };
        let answer = match kind {
            Kind::TrustList => admin.import_trust_list(request).await,
            Kind::Manifest => admin.import_manifest(request).await,
            Kind::Policy => admin.import_policy(request).await,
        };
        answer.unwrap().into_inner().note
    }

    async fn wait(&self, device: &TestDevice, state: DeviceState) {
        self.verifier
            .wait_for_state(&device.device_id(), state, WAIT)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{e}; last failure: {}",
                    self.verifier.failure_summary(&device.device_id())
                )
            });
    }

    fn last_failures(&self, device: &TestDevice) -> Vec<Failure> {
        self.verifier
            .service
            .last_failed_verdict(&device.device_id())
            .map(|v| v.failures().to_vec())
            .unwrap_or_default()
    }

    fn events(&self, device: &TestDevice, kind: EventKind) -> Vec<String> {
        self.verifier
            .service
            .storage()
            .events(0, 10_000)
            .unwrap()
            .into_iter()
            .filter(|(_, e)| e.kind == kind && e.device_id == device.device_id())
            .map(|(_, e)| e.detail)
            .collect()
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    TrustList,
    Manifest,
    Policy,
}

/// Acme's manifest listing every boot application of `profile` (shim, GRUB, kernel).
fn boot_chain_manifest(profile: &BootProfile) -> Manifest {
    let events = profile
        .events()
        .iter()
        .filter(|e| e.event_type == EV_EFI_BOOT_SERVICES_APPLICATION)
        .map(|e| BootMeasurement {
            pcr: 4,
            kind: BootKind::BootApplication,
            description: "boot chain".into(),
            digests: e
                .digests
                .iter()
                .map(|(bank, digest)| (bank.name().to_string(), hex::encode(digest)))
                .collect(),
        })
        .collect();
    Manifest {
        kind: MANIFEST_KIND.into(),
        supplier: "Acme".into(),
        product: "gateway".into(),
        version: "1".into(),
        issued_at: "2026-12-01T00:00:00Z".into(),
        description: String::new(),
        boot: BootReferences {
            events,
            kernel_cmdlines: Vec::new(),
            secure_boot: None,
        },
        runtime: BTreeMap::new(),
    }
}

/// Policy `gateways`: boot applications must match Acme's manifests; IMA not enforced.
fn policy(version: u64, interval: u64) -> String {
    format!(
        r#"name = "gateways"
version = {version}

[match]
device_classes = ["gateway"]

[tier]
irreversibility = "medium"
economic_impact = "medium"
interval_seconds = {interval}

[boot]
check_boot_applications = true

[ima]
enforce_allowlist = false

[[components]]
supplier = "Acme"
product = "gateway"
"#
    )
}

/// A hand-driven agent stream: the attacker's side of the protocol.
struct RawStream {
    outbound: mpsc::Sender<AgentMessage>,
    inbound: tonic::Streaming<trustchain_proto::v1::VerifierMessage>,
}

impl RawStream {
    async fn open(verifier: &TestVerifier, device: &TestDevice) -> Self {
        let enrollment = device.enrollment.as_ref().unwrap();
        let channel = verifier
            .channel(Some((&enrollment.certificate_pem, &enrollment.key_pem)))
            .await
            .unwrap();
        let (outbound, rx) = mpsc::channel(4);
        outbound
            .send(AgentMessage {
                body: Some(agent_message::Body::Hello(Hello {
                    device_id: enrollment.device_id.clone(),
                    agent_version: "raw".into(),
                })),
            })
            .await
            .unwrap();
        let inbound = AttestationClient::new(channel)
            .attest(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Self { outbound, inbound }
    }

    async fn challenge(&mut self) -> Challenge {
        loop {
            match self.inbound.message().await.unwrap().unwrap().body.unwrap() {
                verifier_message::Body::Challenge(c) => return c,
                verifier_message::Body::Verdict(_) => {}
            }
        }
    }

    async fn answer(&self, evidence: Evidence) {
        self.outbound
            .send(AgentMessage {
                body: Some(agent_message::Body::Evidence(evidence)),
            })
            .await
            .unwrap();
    }
}

/// What the device's real TPM says for `challenge`, with the boot log when asked.
fn honest(device: &TestDevice, challenge: &Challenge) -> Evidence {
    let selection: Vec<(u16, Vec<u32>)> = challenge
        .pcr_selection
        .iter()
        .map(|b| (0x000b, b.pcrs.clone()))
        .collect();
    let quote = device
        .tpm
        .lock()
        .unwrap()
        .quote(&challenge.nonce, &selection)
        .unwrap();
    let ima: String = std::fs::read_to_string(device.swtpm.ima_log_path())
        .unwrap()
        .lines()
        .skip(challenge.ima_offset as usize)
        .map(|l| format!("{l}\n"))
        .collect();
    Evidence {
        challenge_id: challenge.challenge_id,
        quote: quote.attest,
        signature: quote.signature,
        pcr_values: quote
            .pcr_values
            .into_iter()
            .map(|(a, i, d)| PcrValue {
                hash_algorithm: u32::from(a),
                index: i,
                digest: d,
            })
            .collect(),
        boot_log: if challenge.want_boot_log {
            std::fs::read(device.swtpm.event_log_path()).unwrap()
        } else {
            Vec::new()
        },
        boot_log_included: challenge.want_boot_log,
        ima_offset: challenge.ima_offset,
        ima_entries: ima.into_bytes(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_that_leaves_out_a_requested_boot_log_fails_and_the_rejudgement_is_recorded() {
    let d = Deployment::start(4).await;
    let mut device = TestDevice::enrolled(
        &d.verifier,
        &d.makers.trusted,
        "gw-omit-log",
        &BootProfile::default_linux(),
    )
    .await
    .unwrap();
    device.swtpm.ima_measure("/usr/bin/bash", b"bash").unwrap();
    let mut stream = RawStream::open(&d.verifier, &device).await;
    let first = stream.challenge().await;
    assert!(first.want_boot_log);
    stream.answer(honest(&device, &first)).await;
    d.wait(&device, DeviceState::Trusted).await;
    let second = stream.challenge().await;
    assert!(!second.want_boot_log, "a judged log is not asked for again");
    stream.answer(honest(&device, &second)).await;

    // A new policy version: the log must be judged under it, so the verifier asks for it.
    d.import(Kind::Policy, policy(2, 4)).await;
    let third = loop {
        let challenge = stream.challenge().await;
        if challenge.want_boot_log {
            break challenge;
        }
        // Built before the import reached this stream's round.
        stream.answer(honest(&device, &challenge)).await;
    };
    // The attacker keeps the old judgement: the PCRs still match the accepted log.
    let mut omitted = honest(&device, &third);
    omitted.boot_log.clear();
    omitted.boot_log_included = false;
    stream.answer(omitted).await;
    d.wait(&device, DeviceState::Untrusted).await;
    let failures = d.last_failures(&device);
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].rule.name(), "requested_evidence");
    assert_eq!(failures[0].subject, "boot log");
    assert!(d.events(&device, EventKind::BootRejudged).is_empty());

    // The operator clears the device; it is asked again, and an honest answer passes.
    let mut admin = AdminClient::new(d.verifier.operator_channel().await.unwrap());
    admin
        .clear_device(DeviceRequest {
            device_id: device.device_id(),
            comment: "agent updated".into(),
        })
        .await
        .unwrap();
    let fourth = stream.challenge().await;
    assert!(fourth.want_boot_log, "not judged yet: still asked for");
    stream.answer(honest(&device, &fourth)).await;
    d.wait(&device, DeviceState::Trusted).await;

    // Recorded once, naming the basis; and the verifier stops asking.
    let fifth = stream.challenge().await;
    assert!(
        !fifth.want_boot_log,
        "re-judged: the log is not asked for again"
    );
    let rejudged = d.events(&device, EventKind::BootRejudged);
    assert_eq!(rejudged.len(), 1, "{rejudged:?}");
    assert!(rejudged[0].contains("/gateways/2"), "{rejudged:?}");
    stream.answer(honest(&device, &fifth)).await;
}

/// An event the attacker adds to the boot log for a measurement really extended into PCR 4 (an
/// unapproved kernel), so that the log still replays to the quoted PCRs.
fn retyped(event_type: u32, measured: &[u8], data: &[u8]) -> BootEvent {
    BootEvent {
        pcr: 4,
        event_type,
        digests: vec![(Bank::Sha256, Bank::Sha256.hash(measured))],
        data: data.to_vec(),
    }
}

/// A trusted device running the real agent that then extends `measured` into PCR 4 and logs it
/// as `event`; the agent's next stream carries the rewritten log.
async fn retype_on(d: &Deployment, label: &str, measured: &[u8], event: BootEvent) -> TestDevice {
    let mut device = TestDevice::enrolled(
        &d.verifier,
        &d.makers.trusted,
        label,
        &BootProfile::default_linux(),
    )
    .await
    .unwrap();
    device.swtpm.ima_measure("/usr/bin/bash", b"bash").unwrap();
    device.start_agent();
    d.wait(&device, DeviceState::Trusted).await;
    device.stop_agent();
    device.swtpm.extend_unlisted(4, measured).unwrap();
    device
        .swtpm
        .rewrite_boot_log(|events: &mut Vec<BootEvent>| events.push(event))
        .unwrap();
    device.start_agent();
    d.wait(&device, DeviceState::Untrusted).await;
    device
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unapproved_kernel_retyped_as_ev_ipl_or_ev_post_code_in_pcr_4_is_caught() {
    let d = Deployment::start(2).await;
    let kernel = b"vmlinuz-6.6.6-unapproved";
    for (label, event_type, name) in [
        ("gw-retype-ipl", EV_IPL, "EV_IPL"),
        ("gw-retype-post", EV_POST_CODE, "EV_POST_CODE"),
    ] {
        let device = retype_on(
            &d,
            label,
            kernel,
            retyped(event_type, kernel, b"/vmlinuz\0"),
        )
        .await;
        let failures = d.last_failures(&device);
        let caught = failures
            .iter()
            .find(|f| f.rule.name() == "boot_event_rules")
            .unwrap_or_else(|| panic!("no boot_event_rules failure: {failures:?}"));
        assert!(
            caught.subject.ends_with(&format!("(PCR 4, {name})")),
            "{caught:?}"
        );
        assert_eq!(caught.detail, "event type not allowed in this PCR");
        // The log replayed: only the event rules caught it.
        assert!(failures.iter().all(|f| f.rule.name() != "boot_log_replay"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unapproved_kernel_logged_as_an_action_hashing_its_image_is_caught() {
    let d = Deployment::start(2).await;
    // An EV_EFI_ACTION whose digest is the hash of its data passes the structural rules; when
    // the data is an image rather than an action string, no check binds it but the reference
    // values, which must cover every event of PCR 4 whatever its type.
    let image = [b"MZ unapproved kernel image ".as_slice(), &[0x90; 512]].concat();
    let device = retype_on(
        &d,
        "gw-retype-action",
        &image,
        retyped(EV_EFI_ACTION, &image, &image),
    )
    .await;
    let failures = d.last_failures(&device);
    assert_eq!(failures.len(), 1, "{failures:?}");
    let caught = &failures[0];
    assert_eq!(caught.rule.name(), "boot_reference_values");
    assert!(
        caught.subject.ends_with("(PCR 4, EV_EFI_ACTION)"),
        "{caught:?}"
    );
    assert_eq!(caught.measured, hex::encode(Bank::Sha256.hash(&image)));
    assert!(
        caught
            .detail
            .contains("no reference value or data check binds"),
        "{caught:?}"
    );
}
