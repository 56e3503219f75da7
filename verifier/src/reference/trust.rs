//! The active trust list, policies and manifests as one snapshot.
//!
//! Imports are checked (signature, kind, version) and stored durably, then a new [`Snapshot`] is
//! built from everything stored and swapped in whole: an appraisal takes one `Arc<Snapshot>` and
//! uses that one consistent version of the trust list, the device's policy and the manifests
//! from start to end, whatever is imported meanwhile.
//!
//! What a snapshot decides:
//! - enrollment: which maker CAs an EK certificate must chain to, and whether the trust list
//!   admits (and has not revoked) the device;
//! - every appraisal: whether the device, the maker CAs its EK chains to and its TPM firmware are
//!   still admitted (rule `trust_list`), which policy governs it, and which manifests it may rely
//!   on (admitted by the policy, signed by a signer the trust list admits for that scope, not
//!   revoked, change window open).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::assignment;
use super::documents::AdmittedManifest;
use super::documents::{MANIFEST_KIND, Manifest, ManifestSigner, TRUST_LIST_KIND, TrustList};
use super::policy::{Policy, PolicyError, Tier};
use super::references::References;
use super::signed::{self, MANIFEST_TYPE, SignedError, TRUST_LIST_TYPE};
use super::signed_policy::{self as signed_policy, PolicySignatureError};
use crate::device::DeviceRecord;
use crate::enrollment::ek_chain::{self, MakerAnchors};
use crate::storage::{DocumentKind, Storage, StorageError};
use crate::verdict::{Basis, PolicyRef};
use crate::verdict::{Failure, Rule};

/// Most documents of one kind kept in a snapshot (a bound on memory, not a product limit).
const MAX_DOCUMENTS: usize = 10_000;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    #[error("no trust-list authority key is configured; trust lists cannot be accepted")]
    NoAuthority,
    #[error("refused: {0}")]
    Signature(#[from] SignedError),
    #[error("refused: payload kind is {found:?}, expected {expected:?}")]
    Kind { found: String, expected: String },
    #[error("refused: version {offered} is not above the active version {active} (no rollback)")]
    Rollback { offered: u64, active: u64 },
    #[error("refused: {0}")]
    Invalid(String),
    #[error("refused: {0}")]
    Policy(#[from] PolicyError),
    #[error("refused: {0}")]
    PolicySignature(#[from] PolicySignatureError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What an import accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    pub version: u64,
    /// SHA-256 of the stored bytes, hex.
    pub digest: String,
    /// For a manifest: whether the active trust list lets appraisals use it, and why not.
    pub note: String,
}

/// A stored manifest and whether the trust list lets appraisals use it.
#[derive(Debug, Clone)]
struct StoredManifest {
    manifest: Manifest,
    /// The signer's name, or why the manifest may not be used.
    signer: Result<String, String>,
}

/// One consistent view of the trust documents.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Increases with every accepted import: appraisal state records the epoch its boot log was
    /// judged under, so a change makes the verifier ask for the boot log again.
    pub epoch: u64,
    /// SHA-256 over every stored document's key: equal fingerprints, equal documents (unlike the
    /// epoch, it survives a restart).
    pub fingerprint: String,
    pub trust_list: Option<TrustList>,
    /// Maker CAs from the trust list: (without revoked ones, with them).
    makers: Option<(MakerAnchors, MakerAnchors)>,
    /// Latest version of each policy, in name order.
    policies: Vec<Policy>,
    manifests: Vec<StoredManifest>,
    /// Per-policy references, with the time (Unix seconds) until which they hold (change
    /// windows close).
    references: Mutex<HashMap<String, (Arc<References>, i64)>>,
    /// Per-device `trust_list` findings under this snapshot (EK chain validation is not free).
    device_findings: Mutex<HashMap<String, Vec<Failure>>>,
}

/// Whether judging a device re-validates its EK chain against the trust list's maker CAs (every
/// appraisal), or leaves it to the enroller, which validates it with the device's own
/// intermediates (enrollment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChainCheck {
    AgainstTrustList,
    DoneByTheEnroller,
}

/// What governs one device under a snapshot.
#[derive(Debug, Clone)]
pub struct Governance {
    pub references: Arc<References>,
    pub tier: Tier,
    /// Unix seconds until which `references` hold (the next change window to close).
    pub valid_until: i64,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn pem_to_der(pem: &str) -> Result<Vec<u8>, String> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .ok_or_else(|| "no PEM certificate".to_string())?
        .map(|c| c.to_vec())
        .map_err(|e| e.to_string())
}

/// The manifest signer on `list` whose key has the id `kid` (a JWS header's `kid`).
fn signer_for_key_id<'a>(list: &'a TrustList, kid: &str) -> Option<&'a ManifestSigner> {
    list.manifest_signers.iter().find(|s| {
        signed::public_key_from_hex(&s.public_key)
            .map(|k| signed::key_id(&k) == kid)
            .unwrap_or(false)
    })
}

impl Snapshot {
    fn build(
        epoch: u64,
        storage: &dyn Storage,
        authority: Option<&[u8]>,
    ) -> Result<Self, StorageError> {
        let mut snapshot = Snapshot {
            epoch,
            ..Snapshot::default()
        };
        let mut fingerprint = Sha256::new();
        for kind in [
            DocumentKind::TrustList,
            DocumentKind::Manifest,
            DocumentKind::Policy,
        ] {
            for (key, value) in storage.documents(kind)? {
                fingerprint.update((key.len() as u64).to_be_bytes());
                fingerprint.update(&key);
                fingerprint.update(Sha256::digest(&value));
            }
            fingerprint.update(b"|");
        }
        snapshot.fingerprint = hex::encode(fingerprint.finalize());
        // The newest stored trust list, or no snapshot at all: never an older one.
        snapshot.trust_list = super::stored::newest_trust_list(storage, authority)?;
        if let Some(list) = &snapshot.trust_list {
            let mut active = MakerAnchors::default();
            let mut all = MakerAnchors::default();
            for ca in &list.maker_cas {
                let Ok(der) = pem_to_der(&ca.certificate_pem) else {
                    continue;
                };
                let revoked = list
                    .revoked
                    .maker_cas
                    .iter()
                    .any(|r| r.eq_ignore_ascii_case(&sha256_hex(&der)));
                // Every listed CA anchors, roots and intermediates alike: the trust list is
                // what says a CA is trusted, and revoking an intermediate must cut its devices
                // off even though its root stays listed.
                all.anchors.push(der.clone());
                if !revoked {
                    active.anchors.push(der);
                }
            }
            snapshot.makers = Some((active, all));
        }
        // Policies: the latest version of each name; every stored one must still parse.
        snapshot.policies = super::stored::latest_policies(storage, MAX_DOCUMENTS)?;
        // Manifests, each with its standing under the trust list.
        for (_, jws) in storage
            .documents(DocumentKind::Manifest)?
            .into_iter()
            .take(MAX_DOCUMENTS)
        {
            let text = String::from_utf8_lossy(&jws);
            let Ok(opened) = signed::open(&text) else {
                continue;
            };
            let Ok(manifest) = opened.payload_unchecked::<Manifest>() else {
                continue;
            };
            let signer = snapshot.manifest_standing(&opened, &manifest);
            snapshot.manifests.push(StoredManifest { manifest, signer });
        }
        Ok(snapshot)
    }

    /// Whether the trust list lets appraisals use this manifest: its name, or why not.
    fn manifest_standing(
        &self,
        opened: &signed::Unverified,
        manifest: &Manifest,
    ) -> Result<String, String> {
        let id = manifest.id();
        let Some(list) = &self.trust_list else {
            return Err(format!(
                "manifest {id}: no trust list is active to admit its signer"
            ));
        };
        let version = list.version;
        let signer = signer_for_key_id(list, &opened.header.kid);
        let Some(signer) = signer else {
            return Err(format!(
                "manifest {id}: signed by key {} which is not a manifest signer on trust list v{version}",
                opened.header.kid
            ));
        };
        let key = signed::public_key_from_hex(&signer.public_key)
            .map_err(|e| format!("manifest {id}: signer {}: {e}", signer.name))?;
        opened
            .verify::<Manifest>(MANIFEST_TYPE, &key)
            .map_err(|e| format!("manifest {id}: {e}"))?;
        if list.revoked.manifest_signers.contains(&signer.name) {
            return Err(format!(
                "manifest {id}: signer {} is revoked by trust list v{version}",
                signer.name
            ));
        }
        if list.revoked.manifests.contains(&id) {
            return Err(format!("manifest {id} is revoked by trust list v{version}"));
        }
        if !signer.scope.covers(&manifest.supplier, &manifest.product) {
            return Err(format!(
                "manifest {id}: signer {} may not vouch for {}/{} (outside its scope on trust list v{version})",
                signer.name, manifest.supplier, manifest.product
            ));
        }
        Ok(signer.name.clone())
    }

    /// The maker CAs enrollment validates EK chains against, when a trust list is active.
    pub fn maker_anchors(&self) -> Option<&MakerAnchors> {
        self.makers.as_ref().map(|(active, _)| active)
    }

    /// The latest version of each policy, in name order.
    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }
    /// Each stored manifest's id with its signer's name, or why appraisals may not use it.
    pub fn manifest_signers(&self) -> Vec<(String, Result<String, String>)> {
        self.manifests
            .iter()
            .map(|m| (m.manifest.id(), m.signer.clone()))
            .collect()
    }

    pub fn trust_list_version(&self) -> Option<u64> {
        self.trust_list.as_ref().map(|l| l.version)
    }

    /// The trust list's word on a device (rule `trust_list`): revoked, not admitted, or its EK
    /// no longer chaining to an admitted maker CA. Empty when no trust list is active.
    pub fn device_findings(&self, device: &DeviceRecord) -> Vec<Failure> {
        if let Ok(cache) = self.device_findings.lock()
            && let Some(found) = cache.get(&device.device_id)
        {
            return found.clone();
        }
        let found = self.judge_device(device, ChainCheck::AgainstTrustList);
        if let Ok(mut cache) = self.device_findings.lock() {
            cache.insert(device.device_id.clone(), found.clone());
        }
        found
    }

    fn judge_device(&self, device: &DeviceRecord, chain: ChainCheck) -> Vec<Failure> {
        let Some(list) = &self.trust_list else {
            return Vec::new();
        };
        let version = list.version;
        let mut failures = Vec::new();
        let subject = format!("device {}", device.device_id);
        if let Some(entry) = list
            .revoked
            .devices
            .iter()
            .find(|e| assignment::matches_every_named_field(e, device))
        {
            failures.push(
                Failure::new(
                    Rule::TrustList,
                    format!("the device is revoked by trust list v{version}"),
                )
                .subject(subject.clone())
                .values(
                    format!("EK {}", assignment::ek_hash(device)),
                    format!(
                        "not revoked ({})",
                        serde_json::to_string(entry).unwrap_or_default()
                    ),
                ),
            );
        }
        if !list.devices.is_empty() && !list.devices.iter().any(|e| assignment::admits(e, device)) {
            failures.push(
                Failure::new(
                    Rule::TrustList,
                    format!("the device is not admitted by trust list v{version}"),
                )
                .subject(subject.clone()),
            );
        }
        if chain == ChainCheck::AgainstTrustList
            && let Some((active, all)) = &self.makers
            && let Err(error) = ek_chain::validate(&device.ek_certificate, &[], active)
        {
            let detail = if ek_chain::validate(&device.ek_certificate, &[], all).is_ok() {
                format!(
                    "the EK certificate chains only to a maker CA revoked by trust list v{version}"
                )
            } else {
                format!(
                    "the EK certificate does not chain to a maker CA on trust list v{version}: {error}"
                )
            };
            failures.push(Failure::new(Rule::TrustList, detail).subject(format!(
                "EK certificate issued by {}",
                device.ek_certificate_issuer
            )));
        }
        failures
    }

    /// Whether the trust list revokes this TPM firmware version (the quote's signed
    /// firmwareVersion).
    pub fn firmware_revoked(&self, firmware_version: u64) -> Option<Failure> {
        let list = self.trust_list.as_ref()?;
        let text = format!("{firmware_version:016x}");
        list.revoked
            .firmware_versions
            .iter()
            .any(|v| v.trim_start_matches("0x").eq_ignore_ascii_case(&text))
            .then(|| {
                Failure::new(
                    Rule::TrustList,
                    format!(
                        "TPM firmware version is revoked by trust list v{}",
                        list.version
                    ),
                )
                .values(text, "a firmware version not on the revocation list")
            })
    }

    /// The class the active trust list assigns the device by its EK; never the agent's claim.
    pub fn assigned_class(&self, device: &DeviceRecord) -> Option<&str> {
        assignment::assigned_class(self.trust_list.as_ref()?, device)
    }

    /// The policy governing a device: the first (by name) whose selector matches its id or its
    /// assigned class, else the first default policy (empty selector). None: no policy applies
    /// (integrity rules only).
    pub fn policy_for(&self, device: &DeviceRecord) -> Option<&Policy> {
        let class = self.assigned_class(device);
        self.policies
            .iter()
            .find(|p| p.selector.matches(&device.device_id, class))
            .or_else(|| self.policies.iter().find(|p| p.selector.is_default()))
    }

    /// The references and tier for a device at `now_unix`, if a policy governs it.
    pub fn governance(&self, device: &DeviceRecord, now_unix: i64) -> Option<Governance> {
        let policy = self.policy_for(device)?;
        let (references, valid_until) = self.references(policy, now_unix);
        Some(Governance {
            references,
            tier: policy.tier.resolve(),
            valid_until,
        })
    }

    fn references(&self, policy: &Policy, now_unix: i64) -> (Arc<References>, i64) {
        if let Ok(cache) = self.references.lock()
            && let Some((refs, valid_until)) = cache.get(&policy.name)
            && now_unix < *valid_until
        {
            return (refs.clone(), *valid_until);
        }
        let mut admitted = Vec::new();
        let mut passed_over = Vec::new();
        for stored in &self.manifests {
            let m = &stored.manifest;
            let wanted = policy
                .components
                .iter()
                .any(|c| c.admits(&m.supplier, &m.product, &m.version, now_unix));
            if !wanted {
                let closed = policy.components.iter().any(|c| {
                    c.until.is_some()
                        && c.supplier == m.supplier
                        && c.product == m.product
                        && (c.version == "*" || c.version == m.version)
                });
                if closed {
                    passed_over.push(format!(
                        "manifest {}: its change window in policy {} has ended",
                        m.id(),
                        policy.name
                    ));
                }
                continue;
            }
            match &stored.signer {
                Ok(signer) => admitted.push(AdmittedManifest {
                    manifest: m.clone(),
                    signer: signer.clone(),
                }),
                Err(why) => passed_over.push(why.clone()),
            }
        }
        // Valid until the next change window closes.
        let valid_until = policy
            .components
            .iter()
            .filter_map(|c| c.until_unix())
            .filter(|end| *end > now_unix)
            .min()
            .unwrap_or(i64::MAX);
        let refs = Arc::new(References::new(policy.clone(), admitted, passed_over));
        if let Ok(mut cache) = self.references.lock() {
            cache.insert(policy.name.clone(), (refs.clone(), valid_until));
        }
        (refs, valid_until)
    }

    /// What an appraisal under this snapshot relies on.
    pub fn basis(&self, governance: Option<&Governance>) -> Basis {
        Basis {
            trust_list_version: self.trust_list_version(),
            policy: governance.map(|g| PolicyRef {
                name: g.references.policy.name.clone(),
                version: g.references.policy.version,
            }),
            manifests: governance
                .map(|g| g.references.manifest_refs())
                .unwrap_or_default(),
        }
    }

    /// The trust list's admission of a device at enrollment (before it has a record):
    /// revocations and the admitted-device list. The EK chain is checked against
    /// [`Snapshot::maker_anchors`] by the enroller.
    pub fn admits_at_enrollment(&self, candidate: &DeviceRecord) -> Result<(), String> {
        match self
            .judge_device(candidate, ChainCheck::DoneByTheEnroller)
            .into_iter()
            .next()
        {
            Some(failure) => Err(failure.detail),
            None => Ok(()),
        }
    }
}

/// The trust documents of one verifier: imports, storage and the active snapshot.
#[derive(Debug)]
pub struct TrustStore {
    storage: Arc<dyn Storage>,
    /// The trust-list authority's public key (uncompressed P-256 point).
    authority: Option<Vec<u8>>,
    current: RwLock<Arc<Snapshot>>,
    /// Imports one at a time: check, store, rebuild, swap.
    imports: Mutex<()>,
    /// Whether policies must be signed by a policy signer of the active trust list.
    require_signed_policies: bool,
}

impl TrustStore {
    pub fn open(
        storage: Arc<dyn Storage>,
        authority: Option<Vec<u8>>,
    ) -> Result<Self, StorageError> {
        let snapshot = Snapshot::build(1, storage.as_ref(), authority.as_deref())?;
        Ok(Self {
            storage,
            authority,
            current: RwLock::new(Arc::new(snapshot)),
            imports: Mutex::new(()),
            require_signed_policies: true,
        })
    }

    /// Whether policies must be signed (on unless the configuration turns it off).
    pub fn requiring_signed_policies(mut self, required: bool) -> Self {
        self.require_signed_policies = required;
        self
    }

    /// The active snapshot: hold it for the whole of one appraisal.
    pub fn current(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Rebuilds the snapshot from storage if the stored documents changed (another replica
    /// imported one): true if a new snapshot is in force.
    pub fn reload(&self) -> Result<bool, StorageError> {
        let _guard = self.imports.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.current();
        let built = Snapshot::build(
            current.epoch + 1,
            self.storage.as_ref(),
            self.authority.as_deref(),
        )?;
        if built.fingerprint == current.fingerprint {
            return Ok(false);
        }
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(built);
        Ok(true)
    }

    fn rebuild(&self) -> Result<(), StorageError> {
        let epoch = self.current().epoch + 1;
        let snapshot = Snapshot::build(epoch, self.storage.as_ref(), self.authority.as_deref())?;
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        *current = Arc::new(snapshot);
        Ok(())
    }

    /// What a trust-list import checks of the document alone (signature, kind, content),
    /// without storing it: a pending import passes this when submitted.
    pub fn check_trust_list(&self, document: &str) -> Result<TrustList, ImportError> {
        let authority = self.authority.as_ref().ok_or(ImportError::NoAuthority)?;
        let list: TrustList = signed::verify(document, TRUST_LIST_TYPE, authority)?;
        if list.kind != TRUST_LIST_KIND {
            return Err(ImportError::Kind {
                found: list.kind,
                expected: TRUST_LIST_KIND.into(),
            });
        }
        let list = super::stored::checked_trust_list(list).map_err(ImportError::Invalid)?;
        for ca in &list.maker_cas {
            let der = pem_to_der(&ca.certificate_pem)
                .map_err(|e| ImportError::Invalid(format!("maker CA {}: {e}", ca.name)))?;
            X509Certificate::from_der(&der).map_err(|e| {
                ImportError::Invalid(format!("maker CA {}: not X.509: {e}", ca.name))
            })?;
        }
        let signers = list
            .manifest_signers
            .iter()
            .map(|s| (&s.name, &s.public_key));
        let policy_signers = list.policy_signers.iter().map(|s| (&s.name, &s.public_key));
        for (name, public_key) in signers.chain(policy_signers) {
            signed::public_key_from_hex(public_key)
                .map_err(|e| ImportError::Invalid(format!("signer {name}: {e}")))?;
        }
        assignment::check_entries(&list).map_err(ImportError::Invalid)?;
        Ok(list)
    }

    pub fn import_trust_list(&self, document: &str) -> Result<Imported, ImportError> {
        let list = self.check_trust_list(document)?;
        let _guard = self.imports.lock().unwrap_or_else(|p| p.into_inner());
        let stored_max = self
            .storage
            .documents(DocumentKind::TrustList)?
            .last()
            .and_then(|(key, _)| <[u8; 8]>::try_from(key.as_slice()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0);
        let active = self
            .current()
            .trust_list_version()
            .unwrap_or(0)
            .max(stored_max);
        if list.version <= active {
            return Err(ImportError::Rollback {
                offered: list.version,
                active,
            });
        }
        self.storage.put_document(
            DocumentKind::TrustList,
            &list.version.to_be_bytes(),
            document.trim().as_bytes(),
        )?;
        self.rebuild()?;
        Ok(Imported {
            version: list.version,
            digest: sha256_hex(document.trim().as_bytes()),
            note: format!(
                "trust list v{} active: {} maker CAs, {} manifest signers, {} policy signers",
                list.version,
                list.maker_cas.len(),
                list.manifest_signers.len(),
                list.policy_signers.len()
            ),
        })
    }

    pub fn import_manifest(&self, document: &str) -> Result<Imported, ImportError> {
        let opened = signed::open(document)?;
        if opened.header.typ != MANIFEST_TYPE {
            return Err(SignedError::WrongType {
                found: opened.header.typ.clone(),
                expected: MANIFEST_TYPE.into(),
            }
            .into());
        }
        let manifest: Manifest = opened.payload_unchecked()?;
        if manifest.kind != MANIFEST_KIND {
            return Err(ImportError::Kind {
                found: manifest.kind,
                expected: MANIFEST_KIND.into(),
            });
        }
        let snapshot = self.current();
        // A signer the trust list knows whose signature does not verify: a broken document,
        // refused. A signer it does not know: kept (a later trust list may admit it) but not used.
        if let Some(list) = &snapshot.trust_list
            && let Some(signer) = signer_for_key_id(list, &opened.header.kid)
        {
            let key = signed::public_key_from_hex(&signer.public_key)?;
            opened.verify::<Manifest>(MANIFEST_TYPE, &key)?;
        }
        let digest = sha256_hex(document.trim().as_bytes());
        let mut key = manifest.id().into_bytes();
        key.push(0);
        key.extend_from_slice(digest.as_bytes());
        let _guard = self.imports.lock().unwrap_or_else(|p| p.into_inner());
        self.storage
            .put_document(DocumentKind::Manifest, &key, document.trim().as_bytes())?;
        self.rebuild()?;
        let note = match snapshot.manifest_standing(&opened, &manifest) {
            Ok(signer) => format!("manifest {} signed by {signer}: usable", manifest.id()),
            Err(why) => format!("stored but NOT USED: {why}"),
        };
        Ok(Imported {
            version: 0,
            digest,
            note,
        })
    }

    /// What a policy import checks of the document alone (signature by a policy signer of the
    /// active trust list, or unsigned when allowed; the policy's format), without storing it.
    pub fn check_policy(&self, document: &str) -> Result<Policy, ImportError> {
        Ok(self.admit_policy(&self.current(), document)?.0)
    }

    /// The policy `document` holds and its signer's name, if `snapshot`'s trust list admits the
    /// signature (or it may be unsigned) and the policy's format is right.
    fn admit_policy(
        &self,
        snapshot: &Snapshot,
        document: &str,
    ) -> Result<(Policy, Option<String>), ImportError> {
        let admitted = signed_policy::admit(
            document,
            snapshot.trust_list.as_ref(),
            self.require_signed_policies,
        )?;
        Ok((Policy::from_toml(&admitted.text)?, admitted.signer))
    }

    /// Imports a policy: a JWS from a policy signer the active trust list admits, or TOML text
    /// when signatures are not required. The document is stored as received.
    pub fn import_policy(&self, document: &str) -> Result<Imported, ImportError> {
        // A JWS is stored as its three parts (like trust lists and manifests), TOML as written.
        let document = if signed_policy::is_signed(document) {
            document.trim()
        } else {
            document
        };
        let _guard = self.imports.lock().unwrap_or_else(|p| p.into_inner());
        let snapshot = self.current();
        let (policy, signer) = self.admit_policy(&snapshot, document)?;
        if let Some(existing) = snapshot.policies.iter().find(|p| p.name == policy.name)
            && policy.version <= existing.version
        {
            return Err(ImportError::Rollback {
                offered: policy.version,
                active: existing.version,
            });
        }
        let mut key = policy.name.clone().into_bytes();
        key.push(0);
        key.extend_from_slice(&policy.version.to_be_bytes());
        self.storage
            .put_document(DocumentKind::Policy, &key, document.as_bytes())?;
        self.rebuild()?;
        let signer = match &signer {
            Some(name) => format!("signed by {name}"),
            None => "unsigned".to_string(),
        };
        Ok(Imported {
            version: policy.version,
            digest: sha256_hex(document.as_bytes()),
            note: format!(
                "policy {} v{} active ({signer})",
                policy.name, policy.version
            ),
        })
    }
}

#[cfg(test)]
#[path = "trust_tests.rs"]
mod tests;
