//! Trust proof end to end: a signed trust list, suppliers' signed manifests and a policy, imported
//! over the operator's mTLS into a real verifier, judging real swtpm devices run by the real
//! agent. Each test breaks one thing and sees the verdict name it.
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
use trustchain_proto::v1::SignedDocument;
use trustchain_proto::v1::admin_client::AdminClient;
use trustchain_swtpm::boot::EV_EFI_BOOT_SERVICES_APPLICATION;
use trustchain_swtpm::{Bank, BootProfile, TestMakers, TpmMaker};
use trustchain_tests::{TestDevice, TestVerifier};
use trustchain_verifier::audit::SigningKey;
use trustchain_verifier::device::DeviceState;
use trustchain_verifier::reference::documents::{
    BootKind, BootMeasurement, BootReferences, DeviceMatch, MANIFEST_KIND, MakerCa, Manifest,
    ManifestSigner, Revocations, Scope, TRUST_LIST_KIND, TrustList,
};
use trustchain_verifier::reference::signed::{self, MANIFEST_TYPE, TRUST_LIST_TYPE};

const WAIT: Duration = Duration::from_secs(40);

/// Which trust document an import carries.
#[derive(Debug, Clone, Copy)]
enum Kind {
    TrustList,
    Manifest,
    Policy,
}

/// A deployment with a trust-list authority, one supplier key, and a real verifier.
struct Deployment {
    verifier: TestVerifier,
    makers: TestMakers,
    authority: SigningKey,
    acme: SigningKey,
    maker_pems: Vec<(String, String)>,
    _keys: tempfile::TempDir,
}

fn key(dir: &std::path::Path, name: &str) -> SigningKey {
    let files = trustchain_ca::signing_key::create(dir, name).unwrap();
    SigningKey::from_pkcs8(&std::fs::read(files.private_key).unwrap()).unwrap()
}

fn maker_pems(maker: &TpmMaker, dir: &std::path::Path) -> Vec<(String, String)> {
    let (root, intermediate) = maker.write_pem(dir).unwrap();
    vec![
        (
            "test maker root".into(),
            std::fs::read_to_string(root).unwrap(),
        ),
        (
            "test maker intermediate".into(),
            std::fs::read_to_string(intermediate).unwrap(),
        ),
    ]
}

fn der_sha256(pem: &str) -> String {
    let der = pem::parse(pem).unwrap().into_contents();
    hex::encode(Sha256::digest(der))
}

impl Deployment {
    async fn start() -> Self {
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
        let maker_pems = maker_pems(&makers.trusted, keys.path());
        Self {
            verifier,
            makers,
            authority,
            acme,
            maker_pems,
            _keys: keys,
        }
    }

    fn signer(&self, name: &str, key: &SigningKey, suppliers: &[&str]) -> ManifestSigner {
        ManifestSigner {
            name: name.into(),
            public_key: key.public_hex(),
            scope: Scope {
                suppliers: suppliers.iter().map(|s| s.to_string()).collect(),
                products: vec!["*".into()],
            },
        }
    }

    fn trust_list(
        &self,
        version: u64,
        signers: Vec<ManifestSigner>,
        revoked: Revocations,
    ) -> String {
        let list = TrustList {
            kind: TRUST_LIST_KIND.into(),
            version,
            issued_at: "2026-11-25T00:00:00Z".into(),
            maker_cas: self
                .maker_pems
                .iter()
                .map(|(name, pem)| MakerCa {
                    name: name.clone(),
                    certificate_pem: pem.clone(),
                })
                .collect(),
            // The test maker's TPMs are gateways: the class comes from the trust list by EK
            // certificate issuer, never from the agent's claim (issue 20, item 3).
            devices: vec![DeviceMatch {
                ek_issuer: Some(self.maker_issuer()),
                device_class: Some("gateway".into()),
                ..DeviceMatch::default()
            }],
            manifest_signers: signers,
            revoked,
        };
        signed::sign(&list, TRUST_LIST_TYPE, &self.authority).unwrap()
    }

    /// The issuer of the test maker's EK certificates, as the verifier names it.
    fn maker_issuer(&self) -> String {
        trustchain_tests::maker_issuer(&self.makers.trusted)
    }

    async fn admin(&self) -> AdminClient<tonic::transport::Channel> {
        AdminClient::new(self.verifier.operator_channel().await.unwrap())
    }

    /// Imports one document over the operator's mTLS: the verifier's note, or its refusal.
    async fn import(&self, kind: Kind, document: &str) -> Result<String, String> {
        let mut admin = self.admin().await;
        let request = SignedDocument {
            document: document.as_bytes().to_vec(),
        };
        let answer = match kind {
            Kind::TrustList => admin.import_trust_list(request).await,
            Kind::Manifest => admin.import_manifest(request).await,
            Kind::Policy => admin.import_policy(request).await,
        };
        answer
            .map(|r| r.into_inner().note)
            .map_err(|s| s.message().to_string())
    }

    async fn import_trust_list(&self, document: &str) -> Result<String, String> {
        self.import(Kind::TrustList, document).await
    }

    async fn import_manifest(&self, document: &str) -> Result<String, String> {
        self.import(Kind::Manifest, document).await
    }

    async fn import_policy(&self, text: &str) -> Result<String, String> {
        self.import(Kind::Policy, text).await
    }

    /// Trust list v1 (the test maker, Acme may sign for Acme), manifests for the boot chain and
    /// kernel 6.1, and a policy admitting them.
    async fn standard_setup(&self, kernel_component: &str) {
        let acme = self.signer("acme", &self.acme, &["Acme"]);
        self.import_trust_list(&self.trust_list(1, vec![acme], Revocations::default()))
            .await
            .unwrap();
        let profile = BootProfile::default_linux();
        let apps = boot_applications(&profile);
        self.import_manifest(&sign_manifest(
            &manifest("boot-chain", "1", &apps[..2]),
            &self.acme,
        ))
        .await
        .unwrap();
        self.import_manifest(&sign_manifest(
            &manifest("kernel", "6.1", &apps[2..]),
            &self.acme,
        ))
        .await
        .unwrap();
        self.import_policy(&policy(1, kernel_component))
            .await
            .unwrap();
    }

    async fn device(&self, label: &str, profile: &BootProfile) -> TestDevice {
        let mut device = TestDevice::enrolled(&self.verifier, &self.makers.trusted, label, profile)
            .await
            .unwrap();
        device.swtpm.ima_measure("/usr/bin/bash", b"bash").unwrap();
        device.start_agent();
        device
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

    fn last_failures(&self, device: &TestDevice) -> Vec<trustchain_verifier::verdict::Failure> {
        self.verifier
            .service
            .last_failed_verdict(&device.device_id())
            .map(|v| v.failures().to_vec())
            .unwrap_or_default()
    }

    /// The claims of the device's latest signed result.
    fn last_result_claims(&self, device: &TestDevice) -> serde_json::Value {
        let jwt = self
            .verifier
            .service
            .last_result(&device.device_id())
            .unwrap();
        let payload = jwt.split('.').nth(1).unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap()
    }
}

/// The boot applications a profile measures (shim, GRUB, kernel), with their SHA-256 digests.
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
            (
                ["shim", "grub", "kernel"]
                    .get(i)
                    .unwrap_or(&"app")
                    .to_string(),
                digest,
            )
        })
        .collect()
}

fn kernel_digest(profile: &BootProfile) -> String {
    boot_applications(profile).last().unwrap().1.clone()
}

fn manifest(product: &str, version: &str, apps: &[(String, String)]) -> Manifest {
    manifest_from("Acme", product, version, apps)
}

fn manifest_from(
    supplier: &str,
    product: &str,
    version: &str,
    apps: &[(String, String)],
) -> Manifest {
    Manifest {
        kind: MANIFEST_KIND.into(),
        supplier: supplier.into(),
        product: product.into(),
        version: version.into(),
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

fn sign_manifest(manifest: &Manifest, key: &SigningKey) -> String {
    signed::sign(manifest, MANIFEST_TYPE, key).unwrap()
}

/// A policy for the test gateways: boot applications must match manifests; a 2 s interval.
fn policy(version: u64, kernel_component: &str) -> String {
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
enforce_allowlist = false

[[components]]
supplier = "Acme"
product = "boot-chain"

{kernel_component}
"#
    )
}

const ANY_KERNEL: &str = "[[components]]\nsupplier = \"Acme\"\nproduct = \"kernel\"\n";

fn new_kernel() -> BootProfile {
    BootProfile::default_linux().with_kernel(b"vmlinuz-6.2.0-not-yet-approved")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unapproved_kernel_is_caught_and_admitted_once_its_supplier_signs_it() {
    let d = Deployment::start().await;
    d.standard_setup(ANY_KERNEL).await;
    let mut device = d.device("gw-kernel", &BootProfile::default_linux()).await;
    d.wait(&device, DeviceState::Trusted).await;

    // The verdict names what it relied on, and the signed result carries it.
    let claims = d.last_result_claims(&device);
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
    d.wait(&device, DeviceState::Untrusted).await;
    let failures = d.last_failures(&device);
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
    d.import_manifest(&sign_manifest(
        &manifest("kernel", "6.2", &apps[2..]),
        &d.acme,
    ))
    .await
    .unwrap();
    d.wait(&device, DeviceState::Trusted).await;
    let claims = d.last_result_claims(&device);
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
    let d = Deployment::start().await;
    d.standard_setup(ANY_KERNEL).await;
    let unapproved = new_kernel();
    let device = d.device("gw-signers", &unapproved).await;
    d.wait(&device, DeviceState::Untrusted).await;
    let apps = boot_applications(&unapproved);

    // Signed by a key the trust list does not know: kept, not used, and the verdict says so.
    let keys = tempfile::tempdir().unwrap();
    let stranger = key(keys.path(), "stranger");
    let note = d
        .import_manifest(&sign_manifest(
            &manifest("kernel", "6.2", &apps[2..]),
            &stranger,
        ))
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
        .last_failures(&device)
        .into_iter()
        .find(|f| f.rule.name() == "boot_reference_values")
        .unwrap();
    let text = failure.to_string();
    assert!(
        text.contains("not a manifest signer on trust list v1"),
        "{text}"
    );

    // A signer the trust list admits, but only for another supplier.
    let other = key(keys.path(), "other");
    let acme = d.signer("acme", &d.acme, &["Acme"]);
    let narrow = d.signer("other", &other, &["Other Corp"]);
    d.import_trust_list(&d.trust_list(2, vec![acme, narrow], Revocations::default()))
        .await
        .unwrap();
    let note = d
        .import_manifest(&sign_manifest(
            &manifest("kernel", "6.2-b", &apps[2..]),
            &other,
        ))
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
        .last_failures(&device)
        .into_iter()
        .find(|f| f.rule.name() == "boot_reference_values")
        .unwrap()
        .to_string();
    assert!(text.contains("outside its scope"), "{text}");

    // The trust list now admits that signer for Acme: its manifest is used, the device recovers.
    let acme = d.signer("acme", &d.acme, &["Acme"]);
    let widened = d.signer("other", &other, &["Other Corp", "Acme"]);
    d.import_trust_list(&d.trust_list(3, vec![acme, widened], Revocations::default()))
        .await
        .unwrap();
    d.wait(&device, DeviceState::Trusted).await;
    let claims = d.last_result_claims(&device);
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
    let d = Deployment::start().await;
    d.standard_setup(ANY_KERNEL).await;

    // A trust list whose signature is broken (one payload byte changed after signing).
    let acme = d.signer("acme", &d.acme, &["Acme"]);
    let good = d.trust_list(5, vec![acme.clone()], Revocations::default());
    let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
    let mut payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&parts[1])
        .unwrap();
    let at = payload.len() / 2;
    payload[at] ^= 0x01;
    parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&payload);
    let error = d.import_trust_list(&parts.join(".")).await.unwrap_err();
    assert!(error.contains("signature does not verify"), "{error}");

    // Signed by someone other than the authority.
    let keys = tempfile::tempdir().unwrap();
    let mallory = key(keys.path(), "mallory");
    let list: TrustList = signed::open(&good).unwrap().payload_unchecked().unwrap();
    let forged = signed::sign(&list, TRUST_LIST_TYPE, &mallory).unwrap();
    assert!(d.import_trust_list(&forged).await.is_err());

    // A manifest from a known signer with a broken signature.
    let apps = boot_applications(&BootProfile::default_linux());
    let document = sign_manifest(&manifest("kernel", "6.1-r2", &apps[2..]), &d.acme);
    let mut parts: Vec<String> = document.split('.').map(str::to_string).collect();
    let mut signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&parts[2])
        .unwrap();
    signature[0] ^= 0x80;
    parts[2] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&signature);
    let error = d.import_manifest(&parts.join(".")).await.unwrap_err();
    assert!(error.contains("signature does not verify"), "{error}");

    // Versions only go up: v5 is accepted, then v4 and v5 again are refused; v1 stays in the
    // store, v5 is active.
    d.import_trust_list(&good).await.unwrap();
    let lower = d.trust_list(4, vec![acme.clone()], Revocations::default());
    let error = d.import_trust_list(&lower).await.unwrap_err();
    assert!(error.contains("not above the active version 5"), "{error}");
    assert!(d.import_trust_list(&good).await.is_err());
    assert_eq!(
        d.verifier.service.trust().current().trust_list_version(),
        Some(5)
    );
    // Policies too.
    let error = d.import_policy(&policy(1, ANY_KERNEL)).await.unwrap_err();
    assert!(error.contains("not above the active version 1"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn revoking_a_device_then_its_maker_ca_untrusts_them_at_the_next_appraisal() {
    let d = Deployment::start().await;
    d.standard_setup(ANY_KERNEL).await;
    let first = d.device("gw-revoke-1", &BootProfile::default_linux()).await;
    let second = d.device("gw-revoke-2", &BootProfile::default_linux()).await;
    d.wait(&first, DeviceState::Trusted).await;
    d.wait(&second, DeviceState::Trusted).await;
    let acme = d.signer("acme", &d.acme, &["Acme"]);

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
    d.import_trust_list(&d.trust_list(2, vec![acme.clone()], revoked.clone()))
        .await
        .unwrap();
    d.wait(&first, DeviceState::Untrusted).await;
    let text = d
        .last_failures(&first)
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
    let intermediate = &d.maker_pems[1].1;
    let revoked = Revocations {
        maker_cas: vec![der_sha256(intermediate)],
        ..revoked
    };
    d.import_trust_list(&d.trust_list(3, vec![acme], revoked))
        .await
        .unwrap();
    d.wait(&second, DeviceState::Untrusted).await;
    let text = d
        .last_failures(&second)
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
    let d = Deployment::start().await;
    // Kernel 6.1 is admitted until a few seconds from now; 6.2 without end.
    let end = time::OffsetDateTime::now_utc() + time::Duration::seconds(12);
    let end = end
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let components = format!(
        "[[components]]\nsupplier = \"Acme\"\nproduct = \"kernel\"\nversion = \"6.1\"\nuntil = \"{end}\"\n\n[[components]]\nsupplier = \"Acme\"\nproduct = \"kernel\"\nversion = \"6.2\"\n"
    );
    d.standard_setup(&components).await;
    let updated = new_kernel();
    let apps = boot_applications(&updated);
    d.import_manifest(&sign_manifest(
        &manifest("kernel", "6.2", &apps[2..]),
        &d.acme,
    ))
    .await
    .unwrap();

    let old = d
        .device("gw-window-old", &BootProfile::default_linux())
        .await;
    let new = d.device("gw-window-new", &updated).await;
    d.wait(&old, DeviceState::Trusted).await;
    d.wait(&new, DeviceState::Trusted).await;

    // After the window: the old kernel fails, naming its event; the new one passes.
    d.wait(&old, DeviceState::Untrusted).await;
    let failure = d
        .last_failures(&old)
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
    let d = Deployment::start().await;
    d.standard_setup(ANY_KERNEL).await;
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
    d.import_policy(&policy.to_toml().unwrap()).await.unwrap();

    let mut device = d.device("gw-keylime", &BootProfile::default_linux()).await;
    d.wait(&device, DeviceState::Trusted).await;
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
    d.wait(&device, DeviceState::Untrusted).await;
    let failures: Vec<_> = d
        .last_failures(&device)
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
    let d = Deployment::start().await;
    d.standard_setup(ANY_KERNEL).await;
    let quarantine = policy(2, ANY_KERNEL).replace(
        "interval_seconds = 2",
        "interval_seconds = 2\non_failure = \"quarantine\"",
    );
    d.import_policy(&quarantine).await.unwrap();
    let device = d.device("gw-quarantine", &new_kernel()).await;
    d.wait(&device, DeviceState::Quarantined).await;
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
    let d = Deployment::start().await;
    let mut list: TrustList = signed::open(&d.trust_list(1, Vec::new(), Revocations::default()))
        .unwrap()
        .payload_unchecked()
        .unwrap();
    // A model narrows an entry that names the EK (here by its issuer); alone it is refused.
    list.devices = vec![DeviceMatch {
        ek_issuer: Some(d.maker_issuer()),
        model: Some("another model".into()),
        ..DeviceMatch::default()
    }];
    d.import_trust_list(&signed::sign(&list, TRUST_LIST_TYPE, &d.authority).unwrap())
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
        ek_issuer: Some(d.maker_issuer()),
        model: Some("swtpm test device".into()),
        ..DeviceMatch::default()
    }];
    d.import_trust_list(&signed::sign(&list, TRUST_LIST_TYPE, &d.authority).unwrap())
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
    d.import_trust_list(&signed::sign(&list, TRUST_LIST_TYPE, &d.authority).unwrap())
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
