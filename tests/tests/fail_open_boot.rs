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

use trustchain_proto::v1::{Challenge, DeviceRequest, Evidence};
use trustchain_swtpm::boot::{BootEvent, EV_EFI_BOOT_SERVICES_APPLICATION};
use trustchain_swtpm::{Bank, BootProfile};
use trustchain_tests::TestDevice;
use trustchain_tests::deployment::{
    Deployment, Document, ISSUED_AT, acme_components, gateway_policy,
};
use trustchain_tests::stream::AttestStream;
use trustchain_verifier::device::{DeviceState, EventKind};
use trustchain_verifier::reference::documents::{
    BootKind, BootMeasurement, BootReferences, MANIFEST_KIND, Manifest,
};

const EV_POST_CODE: u32 = 0x0000_0001;
const EV_IPL: u32 = 0x0000_000d;
const EV_EFI_ACTION: u32 = 0x8000_0007;

/// Trust list v1 (the test maker; Acme signs for Acme), Acme's manifest for the default
/// profile's boot applications, and policy `gateways` v1 challenging every `interval` s.
async fn deployment(interval: u64) -> Deployment {
    Deployment::builder()
        .interval(interval)
        .manifest(boot_chain_manifest(&BootProfile::default_linux()))
        .policy(policy(1, interval))
        .start()
        .await
        .unwrap()
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
        issued_at: ISSUED_AT.into(),
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
    gateway_policy(version, interval, None, &acme_components(&["gateway"]))
}

/// What the device's real TPM says for `challenge` on `stream`, with the boot log when asked.
fn honest(device: &TestDevice, stream: &AttestStream, challenge: &Challenge) -> Evidence {
    device
        .evidence(challenge, &stream.bound(challenge), 0x000b)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_that_leaves_out_a_requested_boot_log_fails_and_the_rejudgement_is_recorded() {
    let d = deployment(4).await;
    let mut device = TestDevice::enrolled(
        &d.verifier,
        &d.makers.trusted,
        "gw-omit-log",
        &BootProfile::default_linux(),
    )
    .await
    .unwrap();
    device.swtpm.ima_measure("/usr/bin/bash", b"bash").unwrap();
    let mut stream = AttestStream::open(&d.verifier, &device).await.unwrap();
    let first = stream.challenge().await.unwrap();
    assert!(first.want_boot_log);
    stream
        .answer(honest(&device, &stream, &first))
        .await
        .unwrap();
    d.wait(&device.device_id(), DeviceState::Trusted)
        .await
        .unwrap();
    let second = stream.challenge().await.unwrap();
    assert!(!second.want_boot_log, "a judged log is not asked for again");
    stream
        .answer(honest(&device, &stream, &second))
        .await
        .unwrap();

    // A new policy version: the log must be judged under it, so the verifier asks for it.
    d.import(Document::Policy, &policy(2, 4)).await.unwrap();
    let third = loop {
        let challenge = stream.challenge().await.unwrap();
        if challenge.want_boot_log {
            break challenge;
        }
        // Built before the import reached this stream's round.
        stream
            .answer(honest(&device, &stream, &challenge))
            .await
            .unwrap();
    };
    // The attacker keeps the old judgement: the PCRs still match the accepted log.
    let mut omitted = honest(&device, &stream, &third);
    omitted.boot_log.clear();
    omitted.boot_log_included = false;
    stream.answer(omitted).await.unwrap();
    d.wait(&device.device_id(), DeviceState::Untrusted)
        .await
        .unwrap();
    let failures = d.last_failures(&device.device_id());
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].rule.name(), "requested_evidence");
    assert_eq!(failures[0].subject, "boot log");
    assert!(
        d.verifier
            .events_of(&device.device_id(), EventKind::BootRejudged)
            .unwrap()
            .is_empty()
    );

    // The operator clears the device; it is asked again, and an honest answer passes.
    let mut admin = d.admin().await.unwrap();
    admin
        .clear_device(DeviceRequest {
            device_id: device.device_id(),
            comment: "agent updated".into(),
        })
        .await
        .unwrap();
    let fourth = stream.challenge().await.unwrap();
    assert!(fourth.want_boot_log, "not judged yet: still asked for");
    stream
        .answer(honest(&device, &stream, &fourth))
        .await
        .unwrap();
    d.wait(&device.device_id(), DeviceState::Trusted)
        .await
        .unwrap();

    // Recorded once, naming the basis; and the verifier stops asking.
    let fifth = stream.challenge().await.unwrap();
    assert!(
        !fifth.want_boot_log,
        "re-judged: the log is not asked for again"
    );
    let rejudged = d
        .verifier
        .events_of(&device.device_id(), EventKind::BootRejudged)
        .unwrap();
    assert_eq!(rejudged.len(), 1, "{rejudged:?}");
    assert!(rejudged[0].contains("/gateways/2"), "{rejudged:?}");
    stream
        .answer(honest(&device, &stream, &fifth))
        .await
        .unwrap();
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
    d.forged_log(label, &BootProfile::default_linux(), (4, measured), event)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unapproved_kernel_retyped_as_ev_ipl_or_ev_post_code_in_pcr_4_is_caught() {
    let d = deployment(2).await;
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
        let failures = d.last_failures(&device.device_id());
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
    let d = deployment(2).await;
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
    let failures = d.last_failures(&device.device_id());
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
