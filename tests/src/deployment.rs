//! A deployment for the trust-list, boot and runtime tests: a real in-process verifier that takes
//! trust lists from a trust-list authority, one supplier (Acme) whose key signs manifests, the
//! signed trust list v1 admitting the test maker's TPMs as gateways, boot-chain manifests and a
//! policy, all imported over the operator's mTLS.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use tonic::transport::Channel;
use trustchain_proto::v1::SignedDocument;
use trustchain_proto::v1::admin_client::AdminClient;
use trustchain_swtpm::boot::{BootEvent, EV_EFI_BOOT_SERVICES_APPLICATION};
use trustchain_swtpm::{Bank, BootProfile, TestMakers, TpmMaker};
use trustchain_verifier::audit::SigningKey;
use trustchain_verifier::device::DeviceState;
use trustchain_verifier::reference::documents::{
    BootKind, BootMeasurement, BootReferences, MANIFEST_KIND, MakerCa, Manifest, ManifestSigner,
    PolicySigner, Revocations, Scope, TRUST_LIST_KIND, TrustList,
};
use trustchain_verifier::reference::signed::{self, MANIFEST_TYPE, TRUST_LIST_TYPE};
use trustchain_verifier::verdict::Failure;

use crate::{TestDevice, TestVerifier};

/// How long a test waits for a device to reach a state.
pub const WAIT: Duration = Duration::from_secs(40);

/// When the trust lists and manifests of these tests were issued.
pub const ISSUED_AT: &str = "2026-11-25T00:00:00Z";

/// A new signing key `name` in `dir` (its public half beside it as `name.pub`).
pub fn signing_key(dir: &Path, name: &str) -> anyhow::Result<SigningKey> {
    let files = trustchain_ca::signing_key::create(dir, name)?;
    Ok(SigningKey::from_pkcs8(&std::fs::read(files.private_key)?)?)
}

/// `maker`'s root and intermediate CAs as a trust list lists them (written to `dir`).
pub fn maker_cas(maker: &TpmMaker, dir: &Path) -> anyhow::Result<Vec<MakerCa>> {
    let (root, intermediate) = maker.write_pem(dir)?;
    [
        ("test maker root", root),
        ("test maker intermediate", intermediate),
    ]
    .into_iter()
    .map(|(name, path)| {
        Ok(MakerCa {
            name: name.into(),
            certificate_pem: std::fs::read_to_string(path)?,
        })
    })
    .collect()
}

/// A manifest signer `name` with `key`, for every product of `suppliers`.
pub fn manifest_signer(name: &str, key: &SigningKey, suppliers: &[&str]) -> ManifestSigner {
    ManifestSigner {
        name: name.into(),
        public_key: key.public_hex(),
        scope: Scope {
            suppliers: suppliers.iter().map(|s| s.to_string()).collect(),
            products: vec!["*".into()],
        },
    }
}

/// The boot applications a profile measures (shim, GRUB, kernel), with their SHA-256 digests.
pub fn boot_applications(profile: &BootProfile) -> Vec<(String, String)> {
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
                .unwrap_or_default();
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

/// `supplier`'s manifest for `product` `version`, listing `apps` (name, SHA-256) in PCR 4.
pub fn boot_manifest(
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
        issued_at: ISSUED_AT.into(),
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

/// The three kinds of document an operator imports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Document {
    TrustList,
    Manifest,
    Policy,
}

/// Imports one document into `verifier` over the operator's mTLS: its note, or its refusal.
pub async fn try_import(
    verifier: &TestVerifier,
    kind: Document,
    document: &str,
) -> Result<String, tonic::Status> {
    let mut admin = verifier
        .admin()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let request = SignedDocument {
        document: document.as_bytes().to_vec(),
    };
    let answer = match kind {
        Document::TrustList => admin.import_trust_list(request).await,
        Document::Manifest => admin.import_manifest(request).await,
        Document::Policy => admin.import_policy(request).await,
    };
    answer.map(|r| r.into_inner().note)
}

/// See [`Deployment::trust_list`].
fn gateway_list(
    maker: &TpmMaker,
    maker_cas: &[MakerCa],
    keys: (&SigningKey, &SigningKey),
    version: u64,
    revoked: Revocations,
) -> TrustList {
    let (acme, policy_office) = keys;
    TrustList {
        kind: TRUST_LIST_KIND.into(),
        version,
        issued_at: ISSUED_AT.into(),
        maker_cas: maker_cas.to_vec(),
        devices: vec![crate::maker_class(maker, "gateway")],
        manifest_signers: vec![manifest_signer("acme", acme, &["Acme"])],
        policy_signers: vec![PolicySigner {
            name: POLICY_SIGNER.into(),
            public_key: policy_office.public_hex(),
        }],
        revoked,
    }
}

/// The name trust lists give the deployment's policy signer.
pub const POLICY_SIGNER: &str = "policy-office";

/// What the builder imports before the deployment is handed to the test.
#[derive(Debug, Default)]
pub struct DeploymentBuilder {
    interval: Option<u64>,
    signed_policies: bool,
    manifests: Vec<Manifest>,
    policies: Vec<String>,
}

impl DeploymentBuilder {
    /// The verifier's default challenge interval.
    pub fn interval(mut self, seconds: u64) -> Self {
        self.interval = Some(seconds);
        self
    }

    /// The verifier requires signed policies (its own default; the harness's is off), and the
    /// builder's policies are imported signed by the policy office.
    pub fn signed_policies(mut self) -> Self {
        self.signed_policies = true;
        self
    }

    /// A manifest Acme signs, imported after trust list v1.
    pub fn manifest(mut self, manifest: Manifest) -> Self {
        self.manifests.push(manifest);
        self
    }

    /// A policy imported after the manifests.
    pub fn policy(mut self, text: impl Into<String>) -> Self {
        self.policies.push(text.into());
        self
    }

    /// The verifier, with nothing imported yet.
    pub async fn start_bare(self) -> anyhow::Result<Deployment> {
        let makers = TestMakers::generate()?;
        let keys = tempfile::tempdir()?;
        let authority = signing_key(keys.path(), "trust-list-authority")?;
        let acme = signing_key(keys.path(), "acme")?;
        let policy_office = signing_key(keys.path(), POLICY_SIGNER)?;
        let authority_pub = keys.path().join("trust-list-authority.pub");
        let interval = self.interval;
        let signed_policies = self.signed_policies;
        let verifier = TestVerifier::start_with(&makers.trusted, |c| {
            c.trust_list_authority = Some(authority_pub);
            c.require_signed_policies = signed_policies;
            if let Some(interval) = interval {
                c.attestation.default_interval_seconds = interval;
            }
        })
        .await?;
        let maker_cas = maker_cas(&makers.trusted, keys.path())?;
        let list = gateway_list(
            &makers.trusted,
            &maker_cas,
            (&acme, &policy_office),
            1,
            Revocations::default(),
        );
        Ok(Deployment {
            verifier,
            makers,
            authority,
            acme,
            policy_office,
            signed_policies,
            maker_cas,
            list,
            keys,
        })
    }

    /// The verifier with trust list v1, then the manifests, then the policies imported.
    pub async fn start(mut self) -> anyhow::Result<Deployment> {
        let manifests = std::mem::take(&mut self.manifests);
        let policies = std::mem::take(&mut self.policies);
        let d = self.start_bare().await?;
        d.import(Document::TrustList, &d.sign_trust_list(&d.list)?)
            .await?;
        for manifest in &manifests {
            d.import(Document::Manifest, &d.sign_manifest(manifest)?)
                .await?;
        }
        for policy in &policies {
            let document = if d.signed_policies {
                d.sign_policy(policy)?
            } else {
                policy.clone()
            };
            d.import(Document::Policy, &document).await?;
        }
        Ok(d)
    }
}

/// A verifier with a trust-list authority and one supplier key (Acme).
pub struct Deployment {
    pub verifier: TestVerifier,
    pub makers: TestMakers,
    /// The trust-list authority's key.
    pub authority: SigningKey,
    /// Acme's manifest-signing key.
    pub acme: SigningKey,
    /// The policy signer's key (the trust lists' [`POLICY_SIGNER`]).
    pub policy_office: SigningKey,
    /// Whether the verifier requires signed policies.
    pub signed_policies: bool,
    /// The test maker's CAs as the trust lists list them.
    pub maker_cas: Vec<MakerCa>,
    /// Trust list v1 as [`DeploymentBuilder::start`] imports it.
    pub list: TrustList,
    /// Where the keys live (more can be created there).
    pub keys: tempfile::TempDir,
}

impl std::fmt::Debug for Deployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployment")
            .field("verifier", &self.verifier)
            .finish_non_exhaustive()
    }
}

impl Deployment {
    pub fn builder() -> DeploymentBuilder {
        DeploymentBuilder::default()
    }

    /// Acme, which may sign manifests for Acme's products.
    pub fn acme_signer(&self) -> ManifestSigner {
        manifest_signer("acme", &self.acme, &["Acme"])
    }

    /// A trust list of `version`: the test maker's CAs, its TPMs gateways (the class comes from
    /// the trust list by EK certificate issuer, never from the agent's claim: issue 20, item 3),
    /// Acme as its manifest signer, and `revoked`.
    pub fn trust_list(&self, version: u64, revoked: Revocations) -> TrustList {
        gateway_list(
            &self.makers.trusted,
            &self.maker_cas,
            (&self.acme, &self.policy_office),
            version,
            revoked,
        )
    }

    /// `list` signed by the trust-list authority.
    pub fn sign_trust_list(&self, list: &TrustList) -> anyhow::Result<String> {
        Ok(signed::sign(list, TRUST_LIST_TYPE, &self.authority)?)
    }

    /// `manifest` signed by Acme.
    pub fn sign_manifest(&self, manifest: &Manifest) -> anyhow::Result<String> {
        Ok(signed::sign(manifest, MANIFEST_TYPE, &self.acme)?)
    }

    /// `policy` (TOML) signed by the policy office.
    pub fn sign_policy(&self, policy: &str) -> anyhow::Result<String> {
        Ok(trustchain_verifier::reference::signed_policy::sign(
            policy,
            &self.policy_office,
        )?)
    }

    pub async fn admin(&self) -> anyhow::Result<AdminClient<Channel>> {
        self.verifier.admin().await
    }

    /// Imports one document: the verifier's note, or its refusal.
    pub async fn try_import(
        &self,
        kind: Document,
        document: &str,
    ) -> Result<String, tonic::Status> {
        try_import(&self.verifier, kind, document).await
    }

    /// Imports one document, which must be accepted; the verifier's note.
    pub async fn import(&self, kind: Document, document: &str) -> anyhow::Result<String> {
        self.try_import(kind, document)
            .await
            .map_err(|status| anyhow::anyhow!("{kind:?} refused: {}", status.message()))
    }

    /// A swtpm device booted with `profile`, enrolled, bash measured, the real agent running.
    pub async fn device(&self, label: &str, profile: &BootProfile) -> anyhow::Result<TestDevice> {
        let mut device =
            TestDevice::enrolled(&self.verifier, &self.makers.trusted, label, profile).await?;
        device.swtpm.ima_measure("/usr/bin/bash", b"bash")?;
        device.start_agent();
        Ok(device)
    }

    /// A device booted with `profile` and trusted, that then extends `measured` into `pcr`
    /// behind the agent's back and logs it as `event`, so the log still replays to the quoted
    /// PCRs; returned once the agent's next stream, carrying the forged log, made it untrusted.
    pub async fn forged_log(
        &self,
        label: &str,
        profile: &BootProfile,
        (pcr, measured): (u32, &[u8]),
        event: BootEvent,
    ) -> anyhow::Result<TestDevice> {
        let mut device = self.device(label, profile).await?;
        self.wait(&device.device_id(), DeviceState::Trusted).await?;
        device.stop_agent();
        device.swtpm.extend_unlisted(pcr, measured)?;
        device
            .swtpm
            .rewrite_boot_log(|events: &mut Vec<BootEvent>| events.push(event))?;
        device.start_agent();
        self.wait(&device.device_id(), DeviceState::Untrusted)
            .await?;
        Ok(device)
    }

    /// Waits for `device_id` to reach `state`; the error names its last failure.
    pub async fn wait(&self, device_id: &str, state: DeviceState) -> anyhow::Result<()> {
        self.verifier.settle(device_id, state).await
    }

    /// The failures of the device's last failed verdict.
    pub fn last_failures(&self, device_id: &str) -> Vec<Failure> {
        self.verifier.last_failures(device_id)
    }
}

/// Policy `gateways` `version` for the gateway class: challenged every `interval` s, boot
/// applications checked against the manifests of `components` (TOML `[[components]]` tables,
/// see [`acme_components`]), and with `allowlist` (TOML lines) the IMA allowlist enforced.
pub fn gateway_policy(
    version: u64,
    interval: u64,
    allowlist: Option<&str>,
    components: &str,
) -> String {
    let ima = match allowlist {
        None => "enforce_allowlist = false\n".to_string(),
        Some(lines) => format!("enforce_allowlist = true\n\n[ima.allowlist]\n{lines}"),
    };
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
{ima}
{components}"#
    )
}

/// `[[components]]` tables naming Acme's `products`.
pub fn acme_components(products: &[&str]) -> String {
    products
        .iter()
        .map(|product| format!("[[components]]\nsupplier = \"Acme\"\nproduct = \"{product}\"\n\n"))
        .collect()
}
