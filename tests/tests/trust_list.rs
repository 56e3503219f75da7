//! Trust proof end to end: a signed trust list, suppliers' signed manifests and a policy, imported
//! over the operator's mTLS into a real verifier, judging real swtpm devices run by the real
//! agent. Each test breaks one thing and sees the verdict name it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

use base64::Engine as _;
use sha2::{Digest, Sha256};
use trustchain_swtpm::BootProfile;
use trustchain_tests::TestDevice;
use trustchain_tests::deployment::{
    Deployment, Document, acme_components, boot_applications, boot_manifest, gateway_policy,
    manifest_signer, signing_key,
};
use trustchain_verifier::audit::SigningKey;
use trustchain_verifier::device::DeviceState;
use trustchain_verifier::reference::documents::{
    DeviceMatch, Manifest, ManifestSigner, Revocations, TrustList,
};
use trustchain_verifier::reference::signed::{self, MANIFEST_TYPE, TRUST_LIST_TYPE};

fn der_sha256(pem: &str) -> String {
    let der = pem::parse(pem).unwrap().into_contents();
    hex::encode(Sha256::digest(der))
}

/// A verifier taking trust lists from an authority, with Acme's key; nothing imported yet.
async fn start() -> Deployment {
    Deployment::builder()
        .interval(2)
        .start_bare()
        .await
        .unwrap()
}

/// Trust list `version` (the test maker, its TPMs gateways) with `signers`, signed by the
/// authority.
fn signed_list(
    d: &Deployment,
    version: u64,
    signers: Vec<ManifestSigner>,
    revoked: Revocations,
) -> String {
    let mut list = d.trust_list(version, revoked);
    list.manifest_signers = signers;
    d.sign_trust_list(&list).unwrap()
}

/// Imports one document over the operator's mTLS: the verifier's note, or its refusal.
async fn import(d: &Deployment, kind: Document, document: &str) -> Result<String, String> {
    d.try_import(kind, document)
        .await
        .map_err(|s| s.message().to_string())
}

async fn import_trust_list(d: &Deployment, document: &str) -> Result<String, String> {
    import(d, Document::TrustList, document).await
}

async fn import_manifest(d: &Deployment, document: &str) -> Result<String, String> {
    import(d, Document::Manifest, document).await
}

async fn import_policy(d: &Deployment, text: &str) -> Result<String, String> {
    import(d, Document::Policy, text).await
}

/// Trust list v1 (the test maker, Acme may sign for Acme), manifests for the boot chain and
/// kernel 6.1, and a policy admitting them.
async fn standard_setup(d: &Deployment, kernel_component: &str) {
    let acme = d.acme_signer();
    import_trust_list(d, &signed_list(d, 1, vec![acme], Revocations::default()))
        .await
        .unwrap();
    let profile = BootProfile::default_linux();
    let apps = boot_applications(&profile);
    import_manifest(
        d,
        &sign_manifest(&manifest("boot-chain", "1", &apps[..2]), &d.acme),
    )
    .await
    .unwrap();
    import_manifest(
        d,
        &sign_manifest(&manifest("kernel", "6.1", &apps[2..]), &d.acme),
    )
    .await
    .unwrap();
    import_policy(d, &policy(1, kernel_component))
        .await
        .unwrap();
}

/// The claims of the device's latest signed result.
fn last_result_claims(d: &Deployment, device: &TestDevice) -> serde_json::Value {
    let jwt = d.verifier.service.last_result(&device.device_id()).unwrap();
    trustchain_tests::jwt_claims(&jwt).unwrap()
}

fn kernel_digest(profile: &BootProfile) -> String {
    boot_applications(profile).last().unwrap().1.clone()
}

fn manifest(product: &str, version: &str, apps: &[(String, String)]) -> Manifest {
    boot_manifest("Acme", product, version, apps)
}

fn sign_manifest(manifest: &Manifest, key: &SigningKey) -> String {
    signed::sign(manifest, MANIFEST_TYPE, key).unwrap()
}

/// A policy for the test gateways: boot applications must match manifests; a 2 s interval.
fn policy(version: u64, kernel_component: &str) -> String {
    gateway_policy(
        version,
        2,
        None,
        &(acme_components(&["boot-chain"]) + kernel_component),
    )
}

const ANY_KERNEL: &str = "[[components]]\nsupplier = \"Acme\"\nproduct = \"kernel\"\n";

fn new_kernel() -> BootProfile {
    BootProfile::default_linux().with_kernel(b"vmlinuz-6.2.0-not-yet-approved")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unapproved_kernel_is_caught_and_admitted_once_its_supplier_signs_it() {
    let d = start().await;
    standard_setup(&d, ANY_KERNEL).await;
    let mut device = d
        .device("gw-kernel", &BootProfile::default_linux())
        .await
        .unwrap();
    d.wait(&device.device_id(), DeviceState::Trusted)
        .await
        .unwrap();

    // The verdict names what it relied on, and the signed result carries it.
    let claims = last_result_claims(&d, &device);
    assert_eq!(claims["trustchain.trust-list-version"], "1");
    assert_eq!(
        claims["trustchain.policy-version"],
        "trustchain:policy:gateways:v1"
    );
    let manifests = claims["trustchain.manifests"].as_array().unwrap();
    assert!(
        manifests
            .iter()
            .any(|m| m["id"] == "Acme/kernel/6.1" && m["signer"] == "acme")
    );

    // Reboot into a kernel no manifest lists.
    device.stop_agent();
    let unapproved = new_kernel();
    device.swtpm.reboot(&unapproved).unwrap();
    device.swtpm.ima_measure("/usr/bin/bash", b"bash").unwrap();
    device.start_agent();
    d.wait(&device.device_id(), DeviceState::Untrusted)
        .await
        .unwrap();
    let failures = d.last_failures(&device.device_id());
    let kernel = failures
        .iter()
        .find(|f| f.rule.name() == "boot_reference_values")
        .unwrap_or_else(|| panic!("no boot_reference_values failure: {failures:?}"));
    assert!(
        kernel.subject.contains("EV_EFI_BOOT_SERVICES_APPLICATION"),
        "{kernel:?}"
    );
    assert_eq!(kernel.measured, kernel_digest(&unapproved), "{kernel:?}");
    assert_eq!(failures.len(), 1, "only the kernel fails: {failures:?}");

    // The supplier signs a manifest for the new kernel; the device is trusted again.
    let apps = boot_applications(&unapproved);
    import_manifest(
        &d,
        &sign_manifest(&manifest("kernel", "6.2", &apps[2..]), &d.acme),
    )
    .await
    .unwrap();
    d.wait(&device.device_id(), DeviceState::Trusted)
        .await
        .unwrap();
    let claims = last_result_claims(&d, &device);
    assert!(
        claims["trustchain.manifests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "Acme/kernel/6.2")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn manifests_from_unknown_or_out_of_scope_signers_are_not_used() {
    let d = start().await;
    standard_setup(&d, ANY_KERNEL).await;
    let unapproved = new_kernel();
    let device = d.device("gw-signers", &unapproved).await.unwrap();
    d.wait(&device.device_id(), DeviceState::Untrusted)
        .await
        .unwrap();
    let apps = boot_applications(&unapproved);

    // Signed by a key the trust list does not know: kept, not used, and the verdict says so.
    let keys = tempfile::tempdir().unwrap();
    let stranger = signing_key(keys.path(), "stranger").unwrap();
    let note = import_manifest(
        &d,
        &sign_manifest(&manifest("kernel", "6.2", &apps[2..]), &stranger),
    )
    .await
    .unwrap();
    assert!(note.contains("NOT USED"), "{note}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let state = d
        .verifier
        .service
        .storage()
        .device(&device.device_id())
        .unwrap()
        .unwrap()
        .state;
    assert_eq!(state, DeviceState::Untrusted);
    let failure = d
        .last_failures(&device.device_id())
        .into_iter()
        .find(|f| f.rule.name() == "boot_reference_values")
        .unwrap();
    let text = failure.to_string();
    assert!(
        text.contains("not a manifest signer on trust list v1"),
        "{text}"
    );

    // A signer the trust list admits, but only for another supplier.
    let other = signing_key(keys.path(), "other").unwrap();
    let acme = manifest_signer("acme", &d.acme, &["Acme"]);
    let narrow = manifest_signer("other", &other, &["Other Corp"]);
    import_trust_list(
        &d,
        &signed_list(&d, 2, vec![acme, narrow], Revocations::default()),
    )
    .await
    .unwrap();
    let note = import_manifest(
        &d,
        &sign_manifest(&manifest("kernel", "6.2-b", &apps[2..]), &other),
    )
    .await
    .unwrap();
    assert!(
        note.contains("NOT USED") && note.contains("outside its scope"),
        "{note}"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let state = d
        .verifier
        .service
        .storage()
        .device(&device.device_id())
        .unwrap()
        .unwrap()
        .state;
    assert_eq!(state, DeviceState::Untrusted);
    let text = d
        .last_failures(&device.device_id())
        .into_iter()
        .find(|f| f.rule.name() == "boot_reference_values")
        .unwrap()
        .to_string();
    assert!(text.contains("outside its scope"), "{text}");

    // The trust list now admits that signer for Acme: its manifest is used, the device recovers.
    let acme = manifest_signer("acme", &d.acme, &["Acme"]);
    let widened = manifest_signer("other", &other, &["Other Corp", "Acme"]);
    import_trust_list(
        &d,
        &signed_list(&d, 3, vec![acme, widened], Revocations::default()),
    )
    .await
    .unwrap();
    d.wait(&device.device_id(), DeviceState::Trusted)
        .await
        .unwrap();
    let claims = last_result_claims(&d, &device);
    assert!(
        claims["trustchain.manifests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "Acme/kernel/6.2-b" && m["signer"] == "other"),
        "{claims}"
    );
    assert_eq!(claims["trustchain.trust-list-version"], "3");
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_signatures_and_lower_versions_are_refused_at_import() {
    let d = start().await;
    standard_setup(&d, ANY_KERNEL).await;

    // A trust list whose signature is broken (one payload byte changed after signing).
    let acme = manifest_signer("acme", &d.acme, &["Acme"]);
    let good = signed_list(&d, 5, vec![acme.clone()], Revocations::default());
    let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
    let mut payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&parts[1])
        .unwrap();
    let at = payload.len() / 2;
    payload[at] ^= 0x01;
    parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&payload);
    let error = import_trust_list(&d, &parts.join(".")).await.unwrap_err();
    assert!(error.contains("signature does not verify"), "{error}");

    // Signed by someone other than the authority.
    let keys = tempfile::tempdir().unwrap();
    let mallory = signing_key(keys.path(), "mallory").unwrap();
    let list: TrustList = signed::open(&good).unwrap().payload_unchecked().unwrap();
    let forged = signed::sign(&list, TRUST_LIST_TYPE, &mallory).unwrap();
    assert!(import_trust_list(&d, &forged).await.is_err());

    // A manifest from a known signer with a broken signature.
    let apps = boot_applications(&BootProfile::default_linux());
    let document = sign_manifest(&manifest("kernel", "6.1-r2", &apps[2..]), &d.acme);
    let mut parts: Vec<String> = document.split('.').map(str::to_string).collect();
    let mut signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&parts[2])
        .unwrap();
    signature[0] ^= 0x80;
    parts[2] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&signature);
    let error = import_manifest(&d, &parts.join(".")).await.unwrap_err();
    assert!(error.contains("signature does not verify"), "{error}");

    // Versions only go up: v5 is accepted, then v4 and v5 again are refused; v1 stays in the
    // store, v5 is active.
    import_trust_list(&d, &good).await.unwrap();
    let lower = signed_list(&d, 4, vec![acme.clone()], Revocations::default());
    let error = import_trust_list(&d, &lower).await.unwrap_err();
    assert!(error.contains("not above the active version 5"), "{error}");
    assert!(import_trust_list(&d, &good).await.is_err());
    assert_eq!(
        d.verifier.service.trust().current().trust_list_version(),
        Some(5)
    );
    // Policies too.
    let error = import_policy(&d, &policy(1, ANY_KERNEL)).await.unwrap_err();
    assert!(error.contains("not above the active version 1"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn revoking_a_device_then_its_maker_ca_untrusts_them_at_the_next_appraisal() {
    let d = start().await;
    standard_setup(&d, ANY_KERNEL).await;
    let first = d
        .device("gw-revoke-1", &BootProfile::default_linux())
        .await
        .unwrap();
    let second = d
        .device("gw-revoke-2", &BootProfile::default_linux())
        .await
        .unwrap();
    d.wait(&first.device_id(), DeviceState::Trusted)
        .await
        .unwrap();
    d.wait(&second.device_id(), DeviceState::Trusted)
        .await
        .unwrap();
    let acme = manifest_signer("acme", &d.acme, &["Acme"]);

    // Revoke the first device's EK.
    let ek = d
        .verifier
        .service
        .storage()
        .device(&first.device_id())
        .unwrap()
        .unwrap();
    let revoked = Revocations {
        devices: vec![DeviceMatch {
            ek_public_sha256: Some(hex::encode(Sha256::digest(&ek.ek_public))),
            ..DeviceMatch::default()
        }],
        ..Revocations::default()
    };
    import_trust_list(&d, &signed_list(&d, 2, vec![acme.clone()], revoked.clone()))
        .await
        .unwrap();
    d.wait(&first.device_id(), DeviceState::Untrusted)
        .await
        .unwrap();
    let text = d
        .last_failures(&first.device_id())
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    assert!(
        text.contains("trust_list") && text.contains("revoked by trust list v2"),
        "{text}"
    );
    // The other device of that maker is still trusted after several intervals.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let state = d
        .verifier
        .service
        .storage()
        .device(&second.device_id())
        .unwrap()
        .unwrap()
        .state;
    assert_eq!(state, DeviceState::Trusted);

    // Revoke the maker's intermediate CA (which issued both EK certificates).
    let intermediate = &d.maker_cas[1].certificate_pem;
    let revoked = Revocations {
        maker_cas: vec![der_sha256(intermediate)],
        ..revoked
    };
    import_trust_list(&d, &signed_list(&d, 3, vec![acme], revoked))
        .await
        .unwrap();
    d.wait(&second.device_id(), DeviceState::Untrusted)
        .await
        .unwrap();
    let text = d
        .last_failures(&second.device_id())
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    assert!(text.contains("maker CA revoked by trust list v3"), "{text}");

    // And no new device of that maker can enroll.
    let refused = TestDevice::enrolled(
        &d.verifier,
        &d.makers.trusted,
        "gw-revoke-3",
        &BootProfile::default_linux(),
    )
    .await;
    assert!(refused.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_window_admits_old_and_new_kernels_until_it_ends() {
    let d = start().await;
    // Kernel 6.1 is admitted until a few seconds from now; 6.2 without end.
    let end = time::OffsetDateTime::now_utc() + time::Duration::seconds(12);
    let end = end
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let components = format!(
        "[[components]]\nsupplier = \"Acme\"\nproduct = \"kernel\"\nversion = \"6.1\"\nuntil = \"{end}\"\n\n[[components]]\nsupplier = \"Acme\"\nproduct = \"kernel\"\nversion = \"6.2\"\n"
    );
    standard_setup(&d, &components).await;
    let updated = new_kernel();
    let apps = boot_applications(&updated);
    import_manifest(
        &d,
        &sign_manifest(&manifest("kernel", "6.2", &apps[2..]), &d.acme),
    )
    .await
    .unwrap();

    let old = d
        .device("gw-window-old", &BootProfile::default_linux())
        .await
        .unwrap();
    let new = d.device("gw-window-new", &updated).await.unwrap();
    d.wait(&old.device_id(), DeviceState::Trusted)
        .await
        .unwrap();
    d.wait(&new.device_id(), DeviceState::Trusted)
        .await
        .unwrap();

    // After the window: the old kernel fails, naming its event; the new one passes.
    d.wait(&old.device_id(), DeviceState::Untrusted)
        .await
        .unwrap();
    let failure = d
        .last_failures(&old.device_id())
        .into_iter()
        .find(|f| f.rule.name() == "boot_reference_values")
        .unwrap();
    assert_eq!(
        failure.measured,
        kernel_digest(&BootProfile::default_linux())
    );
    assert!(failure.to_string().contains("change window"), "{failure}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let state = d
        .verifier
        .service
        .storage()
        .device(&new.device_id())
        .unwrap()
        .unwrap()
        .state;
    assert_eq!(state, DeviceState::Trusted);
}

/// Builds a Keylime runtime policy (the JSON `keylime_create_policy` writes) for `files`.
fn keylime_runtime_policy(files: &[(&str, &[u8])], excludes: &[&str]) -> Vec<u8> {
    let digests: serde_json::Map<String, serde_json::Value> = files
        .iter()
        .map(|(path, content)| {
            (
                path.to_string(),
                serde_json::json!([hex::encode(Sha256::digest(content))]),
            )
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "meta": {"version": 1, "generator": 1, "timestamp": "2026-11-25 00:00:00"},
        "release": 0,
        "digests": digests,
        "excludes": excludes,
        "keyrings": {},
        "ima": {"ignored_keyrings": [], "log_hash_alg": "sha256", "dm_policy": null},
        "ima-buf": {},
        "verification-keys": ""
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_keylime_runtime_policy_decides_the_ima_appraisal() {
    use trustchain_verifier::reference::Policy;
    let d = start().await;
    standard_setup(&d, ANY_KERNEL).await;
    // The operator imports what the Keylime deployment already had.
    let imported =
        trustchain_verifier::reference::keylime::import_runtime_policy(&keylime_runtime_policy(
            &[("/usr/bin/bash", b"bash"), ("/usr/sbin/sshd", b"sshd")],
            &["^/tmp/.*"],
        ))
        .unwrap();
    let mut policy = Policy::from_toml(&policy(2, ANY_KERNEL)).unwrap();
    policy.ima.enforce_allowlist = true;
    policy.ima.allowlist = imported.runtime;
    policy.ima.excludes = imported.excludes;
    import_policy(&d, &policy.to_toml().unwrap()).await.unwrap();

    let mut device = d
        .device("gw-keylime", &BootProfile::default_linux())
        .await
        .unwrap();
    d.wait(&device.device_id(), DeviceState::Trusted)
        .await
        .unwrap();
    // An excluded path and an allowed file keep it trusted.
    device
        .swtpm
        .ima_measure("/tmp/scratch", b"anything")
        .unwrap();
    device.swtpm.ima_measure("/usr/sbin/sshd", b"sshd").unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let state = d
        .verifier
        .service
        .storage()
        .device(&device.device_id())
        .unwrap()
        .unwrap()
        .state;
    assert_eq!(
        state,
        DeviceState::Trusted,
        "{}",
        d.verifier.failure_summary(&device.device_id())
    );
    // A file the allowlist does not know, and a known file with other contents.
    device
        .swtpm
        .ima_measure("/usr/bin/implant", b"implant")
        .unwrap();
    device
        .swtpm
        .ima_measure("/usr/bin/bash", b"trojaned bash")
        .unwrap();
    d.wait(&device.device_id(), DeviceState::Untrusted)
        .await
        .unwrap();
    let failures: Vec<_> = d
        .last_failures(&device.device_id())
        .into_iter()
        .filter(|f| f.rule.name() == "ima_allowlist")
        .collect();
    assert!(
        failures
            .iter()
            .any(|f| f.subject.contains("/usr/bin/implant")),
        "{failures:?}"
    );
    let bash = failures
        .iter()
        .find(|f| f.subject.contains("/usr/bin/bash"))
        .unwrap_or_else(|| panic!("{failures:?}"));
    assert!(
        bash.measured
            .contains(&hex::encode(Sha256::digest(b"trojaned bash"))),
        "{bash:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_quarantine_tier_cuts_the_device_off_on_failure() {
    let d = start().await;
    standard_setup(&d, ANY_KERNEL).await;
    let quarantine = policy(2, ANY_KERNEL).replace(
        "interval_seconds = 2",
        "interval_seconds = 2\non_failure = \"quarantine\"",
    );
    import_policy(&d, &quarantine).await.unwrap();
    let device = d.device("gw-quarantine", &new_kernel()).await.unwrap();
    d.wait(&device.device_id(), DeviceState::Quarantined)
        .await
        .unwrap();
    let record = d
        .verifier
        .service
        .storage()
        .device(&device.device_id())
        .unwrap()
        .unwrap();
    assert!(
        record.state_reason.contains("quarantine"),
        "{}",
        record.state_reason
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn enrollment_admits_only_devices_the_trust_list_admits() {
    let d = start().await;
    let mut list: TrustList = signed::open(&signed_list(&d, 1, Vec::new(), Revocations::default()))
        .unwrap()
        .payload_unchecked()
        .unwrap();
    // A model narrows an entry that names the EK (here by its issuer); alone it is refused.
    list.devices = vec![DeviceMatch {
        ek_issuer: Some(trustchain_tests::maker_issuer(&d.makers.trusted)),
        model: Some("another model".into()),
        ..DeviceMatch::default()
    }];
    import_trust_list(
        &d,
        &signed::sign(&list, TRUST_LIST_TYPE, &d.authority).unwrap(),
    )
    .await
    .unwrap();
    let refused = TestDevice::enrolled(
        &d.verifier,
        &d.makers.trusted,
        "gw-not-admitted",
        &BootProfile::default_linux(),
    )
    .await;
    assert!(refused.is_err());
    let events = d.verifier.service.storage().events(0, 10_000).unwrap();
    assert!(
        events
            .iter()
            .any(|(_, e)| e.detail.contains("not admitted by trust list v1")),
        "{events:?}"
    );
    list.version = 2;
    list.devices = vec![DeviceMatch {
        ek_issuer: Some(trustchain_tests::maker_issuer(&d.makers.trusted)),
        model: Some("swtpm test device".into()),
        ..DeviceMatch::default()
    }];
    import_trust_list(
        &d,
        &signed::sign(&list, TRUST_LIST_TYPE, &d.authority).unwrap(),
    )
    .await
    .unwrap();
    TestDevice::enrolled(
        &d.verifier,
        &d.makers.trusted,
        "gw-admitted",
        &BootProfile::default_linux(),
    )
    .await
    .unwrap();
    // The trust list replaces the configured maker anchors: a list without this maker refuses
    // its devices, although the configuration names the maker.
    list.version = 3;
    list.maker_cas.clear();
    import_trust_list(
        &d,
        &signed::sign(&list, TRUST_LIST_TYPE, &d.authority).unwrap(),
    )
    .await
    .unwrap();
    let unlisted = TestDevice::enrolled(
        &d.verifier,
        &d.makers.trusted,
        "gw-maker-unlisted",
        &BootProfile::default_linux(),
    )
    .await;
    assert!(unlisted.is_err());
}
