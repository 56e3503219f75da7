//! [`Tpm`] on tss-esapi.
//!
//! No connection is held between calls: each operation opens the TCTI, does its work, flushes
//! what it loaded and closes the connection. On a machine that is what `/dev/tpmrm0` is made
//! for; on swtpm, which serves one client at a time, it lets test harnesses and other tools use
//! the TPM between the agent's operations.
//!
//! To keep that cheap, the EK and the AK are not re-created and re-loaded for every operation:
//! after the first load their contexts are saved (TPM2_ContextSave, encrypted and
//! integrity-protected by the TPM) and kept in memory; the next operation loads them back with
//! one TPM2_ContextLoad each. Re-creating the EK is the expensive part (an RSA-2048
//! CreatePrimary takes ~40 ms on swtpm and can take seconds on a hardware TPM). When a saved
//! context no longer loads (e.g. after the TPM was reset or replaced), the keys are rebuilt from
//! the EK template and the saved AK.
//!
//! Where the AK lives ([`AkStorage`]): by default a key blob in the state directory (see
//! [`super::ak_blob`] for why); optionally a persistent handle in the owner range, made with
//! TPM2_EvictControl under the (empty) owner authorisation, never by taking ownership.

use std::path::{Path, PathBuf};

use tss_esapi::Context;
use tss_esapi::abstraction::{AsymmetricAlgorithmSelection, ak, ek};
use tss_esapi::attributes::SessionAttributesBuilder;
use tss_esapi::constants::{CapabilityType, PropertyTag, SessionType};
use tss_esapi::handles::{
    AuthHandle, KeyHandle, ObjectHandle, PersistentTpmHandle, SessionHandle, TpmHandle,
};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, SignatureSchemeAlgorithm};
use tss_esapi::interface_types::dynamic_handles::Persistent;
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::resource_handles::Provision;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    AttestInfo, CapabilityData, Data, EncryptedSecret, IdObject, Private, Public, SignatureScheme,
    SymmetricDefinition,
};
use tss_esapi::traits::{Marshall, UnMarshall};
use tss_esapi::utils::TpmsContext;

pub use super::AkAlgorithm;
use super::ak_blob::AkBlob;
use super::{AkInfo, BankSelection, Quote, TctiConfig, Tpm, TpmError, object_name, pcr};
use crate::config::EkChoice;

/// The saved AK's file name in the state directory.
pub const AK_BLOB_FILE: &str = "ak.blob";
/// Quotes retried when a PCR changed between TPM2_Quote and TPM2_PCR_Read.
const QUOTE_ATTEMPTS: usize = 5;
/// Owner-range persistent handles (TPM 2.0 Part 2, TPM_HT_PERSISTENT, owner allocation).
const OWNER_PERSISTENT: std::ops::RangeInclusive<u32> = 0x8100_0000..=0x817f_ffff;
/// What flush_leftovers lists: transient objects, then loaded sessions, and the handle types
/// each listing may return (a loaded-session listing returns HMAC sessions as 0x02.. and policy
/// sessions as 0x03..). Saved sessions belong to whoever saved them and are left alone.
const LEFTOVER_RANGES: [(u32, &[u8]); 2] = [(0x8000_0000, &[0x80]), (0x0200_0000, &[0x02, 0x03])];
/// Bounds the pages flush_leftovers asks for, whatever the TPM answers.
const MAX_HANDLE_PAGES: usize = 16;

/// Where the AK is kept between operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AkStorage {
    /// TPM-wrapped key blob in a 0600 file, reloaded under the EK (the default).
    SavedBlob { path: PathBuf },
    /// A persistent object in the owner range (0x81000000..=0x817fffff), made with
    /// TPM2_EvictControl. Needs the owner authorisation to be empty.
    Persistent { handle: u32 },
}

impl AkStorage {
    /// The default: `ak.blob` in the agent's state directory.
    pub fn saved_blob_in(state_dir: &Path) -> Self {
        AkStorage::SavedBlob {
            path: state_dir.join(AK_BLOB_FILE),
        }
    }
}

/// The tss-esapi TPM. Holds no connection, only where to connect and the saved contexts.
pub struct EsapiTpm {
    tcti: TctiConfig,
    ek: EkChoice,
    ak_algorithm: AkAlgorithm,
    storage: AkStorage,
    saved_ek: Option<TpmsContext>,
    saved_ak: Option<TpmsContext>,
}

impl std::fmt::Debug for EsapiTpm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EsapiTpm")
            .field("tcti", &self.tcti.to_string())
            .field("ek", &self.ek)
            .field("ak_algorithm", &self.ak_algorithm)
            .field("storage", &self.storage)
            .field("saved_ek", &self.saved_ek.is_some())
            .field("saved_ak", &self.saved_ak.is_some())
            .finish()
    }
}

fn tpm(operation: &'static str) -> impl FnOnce(tss_esapi::Error) -> TpmError {
    move |source| TpmError::Tpm { operation, source }
}

fn selection(ek: EkChoice) -> AsymmetricAlgorithmSelection {
    match ek {
        EkChoice::Rsa2048 => AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
        EkChoice::EccP256 => AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256),
    }
}

fn describe_ek(ek: EkChoice) -> &'static str {
    match ek {
        EkChoice::Rsa2048 => "the RSA-2048 EK",
        EkChoice::EccP256 => "the ECC P-256 EK",
    }
}

fn describe_ak(algorithm: AkAlgorithm) -> &'static str {
    match algorithm {
        AkAlgorithm::Rsa2048 => "an RSA-2048 AK",
        AkAlgorithm::EccP256 => "an ECC P-256 AK",
    }
}

/// Starts an HMAC or policy session (unbound, unsalted, AES-128-CFB, SHA-256); `encrypt` also
/// turns on parameter encryption (at most one session per command may have it).
fn start_session(
    ctx: &mut Context,
    kind: SessionType,
    encrypt: bool,
) -> Result<AuthSession, TpmError> {
    let session = ctx
        .start_auth_session(
            None,
            None,
            None,
            kind,
            SymmetricDefinition::AES_128_CFB,
            HashingAlgorithm::Sha256,
        )
        .map_err(tpm("start session"))?
        .ok_or_else(|| TpmError::Unexpected("no session handle".into()))?;
    if encrypt {
        let (attributes, mask) = SessionAttributesBuilder::new()
            .with_decrypt(true)
            .with_encrypt(true)
            .build();
        if let Err(source) = ctx.tr_sess_set_attributes(session, attributes, mask) {
            flush_session(ctx, session);
            return Err(TpmError::Tpm {
                operation: "session attributes",
                source,
            });
        }
    }
    Ok(session)
}

fn flush_session(ctx: &mut Context, session: AuthSession) {
    if let Err(error) = ctx.flush_context(SessionHandle::from(session).into()) {
        tracing::warn!(%error, "flushing a TPM session failed");
    }
}

/// Checks that a persistent object is a restricted signing key of the configured kind.
fn check_ak_public(public: &Public, algorithm: AkAlgorithm, handle: u32) -> Result<(), TpmError> {
    let attributes = public.object_attributes();
    let kind_ok = matches!(
        (public, algorithm),
        (Public::Rsa { .. }, AkAlgorithm::Rsa2048) | (Public::Ecc { .. }, AkAlgorithm::EccP256)
    );
    let detail = if !kind_ok {
        Some(format!("not {}", describe_ak(algorithm)))
    } else if !(attributes.restricted() && attributes.sign_encrypt() && !attributes.decrypt()) {
        Some("not a restricted signing key".to_string())
    } else if !(attributes.fixed_tpm() && attributes.sensitive_data_origin()) {
        Some("not generated inside this TPM".to_string())
    } else {
        None
    };
    match detail {
        Some(detail) => Err(TpmError::NotAnAk { handle, detail }),
        None => Ok(()),
    }
}

/// Transient objects and loaded sessions in the TPM (on `/dev/tpmrm0`: this connection's only).
fn list_leftovers(ctx: &mut Context) -> Result<Vec<TpmHandle>, TpmError> {
    let mut handles = Vec::new();
    for (first, types) in LEFTOVER_RANGES {
        let mut next = first;
        for _ in 0..MAX_HANDLE_PAGES {
            let (data, more) = ctx
                .get_capability(CapabilityType::Handles, next, 64)
                .map_err(tpm("list handles"))?;
            let CapabilityData::Handles(list) = data else {
                break;
            };
            let page: Vec<TpmHandle> = list
                .iter()
                .copied()
                .filter(|h| types.contains(&u32::from(*h).to_be_bytes()[0]))
                .collect();
            let last = page.last().map(|h| u32::from(*h));
            handles.extend(page);
            // Page on only within the listing's own handle type: asking from a 0x03.. handle
            // would list saved sessions instead.
            match last {
                Some(last) if more && last.to_be_bytes()[0] == first.to_be_bytes()[0] => {
                    next = last.saturating_add(1)
                }
                _ => break,
            }
        }
    }
    Ok(handles)
}

impl EsapiTpm {
    /// `tcti` as in the config (`device:/dev/tpmrm0`, `swtpm:host=..,port=..`); the AK blob is
    /// kept in `state_dir`.
    pub fn new(
        tcti: &str,
        state_dir: &Path,
        ek: EkChoice,
        ak_algorithm: AkAlgorithm,
    ) -> Result<Self, TpmError> {
        Self::open(
            tcti.parse()?,
            AkStorage::saved_blob_in(state_dir),
            ek,
            ak_algorithm,
        )
    }

    /// Full control over where the AK lives. Does not connect yet.
    pub fn open(
        tcti: TctiConfig,
        storage: AkStorage,
        ek: EkChoice,
        ak_algorithm: AkAlgorithm,
    ) -> Result<Self, TpmError> {
        tcti.name_conf()?;
        if let AkStorage::Persistent { handle } = storage
            && !OWNER_PERSISTENT.contains(&handle)
        {
            return Err(TpmError::Invalid(format!(
                "AK handle 0x{handle:08x} is outside the owner persistent range \
                 0x81000000..=0x817fffff"
            )));
        }
        Ok(Self {
            tcti,
            ek,
            ak_algorithm,
            storage,
            saved_ek: None,
            saved_ak: None,
        })
    }

    pub fn tcti(&self) -> &TctiConfig {
        &self.tcti
    }

    pub fn storage(&self) -> &AkStorage {
        &self.storage
    }

    /// Opens a connection, runs `work`, then flushes the transient objects `work` recorded in
    /// its list (newest first) and closes the connection, whatever `work` returned.
    fn with_connection<T>(
        &mut self,
        work: impl FnOnce(&mut Self, &mut Context, &mut Vec<ObjectHandle>) -> Result<T, TpmError>,
    ) -> Result<T, TpmError> {
        let name_conf = self.tcti.name_conf()?;
        let mut ctx = Context::new(name_conf).map_err(|source| TpmError::Connect {
            tcti: self.tcti.to_string(),
            source,
        })?;
        let mut loaded = Vec::new();
        let result = work(self, &mut ctx, &mut loaded);
        for handle in loaded.into_iter().rev() {
            if let Err(error) = ctx.flush_context(handle) {
                tracing::warn!(%error, "flushing a transient TPM object failed");
            }
        }
        result
    }

    /// Runs `work` with the AK (and, with `need_ek`, the EK) loaded.
    fn with_keys<T>(
        &mut self,
        need_ek: bool,
        work: impl FnOnce(&mut Context, Option<KeyHandle>, KeyHandle) -> Result<T, TpmError>,
    ) -> Result<T, TpmError> {
        self.with_connection(|this, ctx, loaded| {
            let mut ek = None;
            if need_ek {
                this.ensure_ek(ctx, &mut ek, loaded)?;
            }
            let (ak, _) = this.load_ak(ctx, &mut ek, loaded)?;
            work(ctx, ek, ak)
        })
    }

    /// The configured EK, loaded once per connection: from the saved context if it still
    /// loads, else re-created from the TCG default template.
    fn ensure_ek(
        &mut self,
        ctx: &mut Context,
        ek: &mut Option<KeyHandle>,
        loaded: &mut Vec<ObjectHandle>,
    ) -> Result<KeyHandle, TpmError> {
        if let Some(handle) = *ek {
            return Ok(handle);
        }
        if let Some(saved) = self.saved_ek.clone() {
            match ctx.context_load(saved) {
                Ok(handle) => {
                    loaded.push(handle);
                    *ek = Some(handle.into());
                    return Ok(handle.into());
                }
                Err(error) => {
                    tracing::debug!(%error, "the saved EK context no longer loads; re-creating");
                    self.saved_ek = None;
                }
            }
        }
        let handle =
            ek::create_ek_object_2(ctx, selection(self.ek), None).map_err(tpm("create EK"))?;
        loaded.push(handle.into());
        *ek = Some(handle);
        self.saved_ek = ctx.context_save(handle.into()).ok();
        Ok(handle)
    }

    /// Loads the AK, creating it on first use; returns its handle and marshalled public area
    /// (empty when it came from a saved context: callers that need it use [`Self::ak_info`]).
    fn load_ak(
        &mut self,
        ctx: &mut Context,
        ek: &mut Option<KeyHandle>,
        loaded: &mut Vec<ObjectHandle>,
    ) -> Result<(KeyHandle, Vec<u8>), TpmError> {
        match self.storage.clone() {
            AkStorage::SavedBlob { path } => {
                if let Some(saved) = self.saved_ak.clone() {
                    match ctx.context_load(saved) {
                        Ok(handle) => {
                            loaded.push(handle);
                            return Ok((handle.into(), Vec::new()));
                        }
                        Err(error) => {
                            tracing::debug!(%error, "the saved AK context no longer loads");
                            self.saved_ak = None;
                        }
                    }
                }
                let parent = self.ensure_ek(ctx, ek, loaded)?;
                let (blob, _) = self.blob_or_create(ctx, parent, &path)?;
                let bad = |detail: String| TpmError::BadAkBlob {
                    path: path.clone(),
                    detail,
                };
                let private = Private::try_from(blob.private.clone())
                    .map_err(|e| bad(format!("private part: {e}")))?;
                let public = Public::unmarshall(&blob.public)
                    .map_err(|e| bad(format!("public area: {e}")))?;
                let handle =
                    ak::load_ak(ctx, parent, None, private, public).map_err(tpm("load AK"))?;
                loaded.push(handle.into());
                self.saved_ak = ctx.context_save(handle.into()).ok();
                Ok((handle, blob.public))
            }
            AkStorage::Persistent { handle } => {
                let (object, public, _) = self.persistent_ak(ctx, handle, ek, loaded)?;
                Ok((object, public))
            }
        }
    }

    /// The saved AK blob, or a new AK (created under `parent` and saved) when there is none.
    fn blob_or_create(
        &mut self,
        ctx: &mut Context,
        parent: KeyHandle,
        path: &Path,
    ) -> Result<(AkBlob, bool), TpmError> {
        if let Some(blob) = AkBlob::read(path)? {
            self.check_blob(&blob)?;
            return Ok((blob, false));
        }
        let blob = self.create_ak(ctx, parent)?;
        blob.write(path)?;
        self.saved_ak = None;
        Ok((blob, true))
    }

    fn check_blob(&self, blob: &AkBlob) -> Result<(), TpmError> {
        if blob.ek != self.ek || blob.algorithm != self.ak_algorithm {
            return Err(TpmError::AkMismatch {
                saved: format!(
                    "{} under {}",
                    describe_ak(blob.algorithm),
                    describe_ek(blob.ek)
                ),
                configured: format!(
                    "{} under {}",
                    describe_ak(self.ak_algorithm),
                    describe_ek(self.ek)
                ),
            });
        }
        Ok(())
    }

    /// TPM2_Create of a restricted signing key under the EK (endorsement hierarchy).
    fn create_ak(&self, ctx: &mut Context, parent: KeyHandle) -> Result<AkBlob, TpmError> {
        let (key, scheme) = match self.ak_algorithm {
            AkAlgorithm::Rsa2048 => (
                AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
                SignatureSchemeAlgorithm::RsaSsa,
            ),
            AkAlgorithm::EccP256 => (
                AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256),
                SignatureSchemeAlgorithm::EcDsa,
            ),
        };
        let created = ak::create_ak_2(
            ctx,
            parent,
            HashingAlgorithm::Sha256,
            key,
            scheme,
            None,
            None,
        )
        .map_err(tpm("create AK"))?;
        tracing::info!(
            algorithm = describe_ak(self.ak_algorithm),
            "created a new attestation key"
        );
        Ok(AkBlob {
            ek: self.ek,
            algorithm: self.ak_algorithm,
            private: created.out_private.value().to_vec(),
            public: created
                .out_public
                .marshall()
                .map_err(tpm("marshal AK public"))?,
        })
    }

    /// True when a persistent object sits at `handle`.
    fn persistent_present(ctx: &mut Context, handle: u32) -> Result<bool, TpmError> {
        let (data, _) = ctx
            .get_capability(CapabilityType::Handles, handle, 1)
            .map_err(tpm("list persistent handles"))?;
        Ok(match data {
            CapabilityData::Handles(list) => list.iter().any(|h| u32::from(*h) == handle),
            _ => false,
        })
    }

    /// The persistent AK at `handle`, created and made persistent when the handle is free.
    /// Returns its ESYS handle (closed, not flushed, with the connection), public area and
    /// whether it was created.
    fn persistent_ak(
        &mut self,
        ctx: &mut Context,
        handle: u32,
        ek: &mut Option<KeyHandle>,
        loaded: &mut Vec<ObjectHandle>,
    ) -> Result<(KeyHandle, Vec<u8>, bool), TpmError> {
        let tpm_handle = PersistentTpmHandle::new(handle).map_err(tpm("persistent handle"))?;
        let (object, created) = if Self::persistent_present(ctx, handle)? {
            let object = ctx
                .tr_from_tpm_public(TpmHandle::Persistent(tpm_handle))
                .map_err(tpm("open persistent AK"))?;
            (object, false)
        } else {
            let parent = self.ensure_ek(ctx, ek, loaded)?;
            let blob = self.create_ak(ctx, parent)?;
            let private = Private::try_from(blob.private).map_err(tpm("AK private"))?;
            let public = Public::unmarshall(&blob.public).map_err(tpm("AK public"))?;
            let transient =
                ak::load_ak(ctx, parent, None, private, public).map_err(tpm("load AK"))?;
            loaded.push(transient.into());
            let object = ctx
                .execute_with_session(Some(AuthSession::Password), |c| {
                    c.evict_control(
                        Provision::Owner,
                        transient.into(),
                        Persistent::Persistent(tpm_handle),
                    )
                })
                .map_err(tpm("EvictControl (persist AK; needs empty owner auth)"))?;
            (object, true)
        };
        let (public, _, _) = ctx
            .read_public(object.into())
            .map_err(tpm("read AK public"))?;
        check_ak_public(&public, self.ak_algorithm, handle)?;
        let marshalled = public.marshall().map_err(tpm("marshal AK public"))?;
        Ok((object.into(), marshalled, created))
    }

    /// Removes the persistent AK at `handle`, if any.
    fn evict_persistent(ctx: &mut Context, handle: u32) -> Result<(), TpmError> {
        if !Self::persistent_present(ctx, handle)? {
            return Ok(());
        }
        let tpm_handle = PersistentTpmHandle::new(handle).map_err(tpm("persistent handle"))?;
        let object = ctx
            .tr_from_tpm_public(TpmHandle::Persistent(tpm_handle))
            .map_err(tpm("open persistent AK"))?;
        ctx.execute_with_session(Some(AuthSession::Password), |c| {
            c.evict_control(Provision::Owner, object, Persistent::Persistent(tpm_handle))
        })
        .map_err(tpm("EvictControl (remove AK)"))?;
        Ok(())
    }

    /// The AK (public area, Name, whether this call created it), creating it on first use.
    /// With a saved blob this reads the file and connects to the TPM only to create the AK.
    pub fn ak_info(&mut self) -> Result<AkInfo, TpmError> {
        let (public, created) = match self.storage.clone() {
            AkStorage::SavedBlob { path } => match AkBlob::read(&path)? {
                Some(blob) => {
                    self.check_blob(&blob)?;
                    (blob.public, false)
                }
                None => self.with_connection(|this, ctx, loaded| {
                    let parent = this.ensure_ek(ctx, &mut None, loaded)?;
                    let (blob, created) = this.blob_or_create(ctx, parent, &path)?;
                    Ok((blob.public, created))
                })?,
            },
            AkStorage::Persistent { handle } => self.with_connection(|this, ctx, loaded| {
                let (_, public, created) = this.persistent_ak(ctx, handle, &mut None, loaded)?;
                Ok((public, created))
            })?,
        };
        Ok(AkInfo {
            algorithm: self.ak_algorithm,
            name: object_name(&public)?,
            public,
            created,
        })
    }
}

impl Tpm for EsapiTpm {
    fn is_software(&mut self) -> Result<bool, TpmError> {
        self.with_connection(|_, ctx, _| {
            let manufacturer = ctx
                .get_tpm_property(PropertyTag::Manufacturer)
                .map_err(tpm("read manufacturer"))?;
            let vendor = ctx
                .get_tpm_property(PropertyTag::VendorString1)
                .map_err(tpm("read vendor string"))?;
            let text = |v: Option<u32>| {
                String::from_utf8_lossy(&v.unwrap_or(0).to_be_bytes()).into_owned()
            };
            // swtpm/libtpms reports manufacturer "IBM" and vendor "SW  "; the Microsoft
            // reference simulator "MSFT"/"xCG ".
            let manufacturer = text(manufacturer);
            let vendor = text(vendor);
            Ok(vendor.starts_with("SW")
                || manufacturer.starts_with("MSFT")
                || vendor.starts_with("xCG"))
        })
    }

    fn flush_leftovers(&mut self) -> Result<usize, TpmError> {
        self.with_connection(|_, ctx, _| {
            let leftovers = list_leftovers(ctx)?;
            for handle in &leftovers {
                // tss-esapi's bookkeeping refuses to flush policy-session handles it did not
                // start (the TPM has flushed them by then), so success is judged by listing again.
                match ctx.tr_from_tpm_public(*handle) {
                    Ok(object) => {
                        if let Err(error) = ctx.flush_context(object) {
                            tracing::debug!(%error, "flushing a leftover handle reported an error");
                        }
                    }
                    Err(error) => tracing::debug!(%error, "cannot address a leftover handle"),
                }
            }
            let remaining = list_leftovers(ctx)?;
            if !remaining.is_empty() {
                tracing::warn!(
                    remaining = remaining.len(),
                    "some transient objects or sessions could not be flushed"
                );
            }
            Ok(leftovers.len().saturating_sub(remaining.len()))
        })
    }

    fn ek_certificate(&mut self, ek: EkChoice) -> Result<Vec<u8>, TpmError> {
        self.with_connection(|_, ctx, _| {
            ek::retrieve_ek_pubcert(ctx, selection(ek)).map_err(tpm("read EK certificate"))
        })
    }

    fn ek_public(&mut self, kind: EkChoice) -> Result<Vec<u8>, TpmError> {
        self.with_connection(|this, ctx, loaded| {
            let handle = if kind == this.ek {
                this.ensure_ek(ctx, &mut None, loaded)?
            } else {
                let handle =
                    ek::create_ek_object_2(ctx, selection(kind), None).map_err(tpm("create EK"))?;
                loaded.push(handle.into());
                handle
            };
            let (public, _, _) = ctx.read_public(handle).map_err(tpm("read EK public"))?;
            public.marshall().map_err(tpm("marshal EK public"))
        })
    }

    fn ak_public(&mut self) -> Result<Vec<u8>, TpmError> {
        Ok(self.ak_info()?.public)
    }

    fn ensure_ak(&mut self) -> Result<AkInfo, TpmError> {
        self.ak_info()
    }

    fn ak_name(&mut self) -> Result<Vec<u8>, TpmError> {
        Ok(self.ak_info()?.name)
    }

    fn rotate_ak(&mut self) -> Result<Vec<u8>, TpmError> {
        self.saved_ak = None;
        match self.storage.clone() {
            AkStorage::SavedBlob { path } => self.with_connection(|this, ctx, loaded| {
                let parent = this.ensure_ek(ctx, &mut None, loaded)?;
                let blob = this.create_ak(ctx, parent)?;
                blob.write(&path)?;
                Ok(blob.public)
            }),
            AkStorage::Persistent { handle } => self.with_connection(|this, ctx, loaded| {
                Self::evict_persistent(ctx, handle)?;
                let (_, public, _) = this.persistent_ak(ctx, handle, &mut None, loaded)?;
                Ok(public)
            }),
        }
    }

    fn activate_credential(
        &mut self,
        credential_blob: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8>, TpmError> {
        let blob = IdObject::try_from(credential_blob.to_vec()).map_err(tpm("credential blob"))?;
        let secret = EncryptedSecret::try_from(encrypted_secret.to_vec())
            .map_err(tpm("encrypted secret"))?;
        self.with_keys(true, |ctx, ek, ak| {
            let ek = ek.ok_or_else(|| TpmError::Unexpected("EK not loaded".into()))?;
            // The AK (empty auth) through an HMAC session that also encrypts the parameters;
            // the EK through a policy session satisfying its policy, PolicySecret(endorsement).
            let hmac = start_session(ctx, SessionType::Hmac, true)?;
            let policy = match start_session(ctx, SessionType::Policy, false) {
                Ok(policy) => policy,
                Err(error) => {
                    flush_session(ctx, hmac);
                    return Err(error);
                }
            };
            let outcome = (|| {
                let policy_session =
                    PolicySession::try_from(policy).map_err(tpm("policy session"))?;
                ctx.execute_with_nullauth_session(|c| {
                    c.policy_secret(
                        policy_session,
                        AuthHandle::Endorsement,
                        Default::default(),
                        Default::default(),
                        Default::default(),
                        None,
                    )
                })
                .map_err(tpm("PolicySecret(endorsement)"))?;
                ctx.execute_with_sessions((Some(hmac), Some(policy), None), |c| {
                    c.activate_credential(ak, ek, blob, secret)
                })
                .map_err(tpm("ActivateCredential"))
            })();
            flush_session(ctx, policy);
            flush_session(ctx, hmac);
            Ok(outcome?.value().to_vec())
        })
    }

    fn quote(&mut self, nonce: &[u8], selection: &[BankSelection]) -> Result<Quote, TpmError> {
        let wanted = pcr::validate(selection)?;
        let list = pcr::selection_list(selection)?;
        let qualifying = Data::try_from(nonce.to_vec()).map_err(tpm("nonce"))?;
        self.with_keys(false, |ctx, _, ak| {
            for attempt in 1..=QUOTE_ATTEMPTS {
                let (attest, signature) = ctx
                    .execute_with_nullauth_session(|c| {
                        c.quote(ak, qualifying.clone(), SignatureScheme::Null, list.clone())
                    })
                    .map_err(tpm("quote"))?;
                let AttestInfo::Quote { info } = attest.attested() else {
                    return Err(TpmError::Unexpected("TPM2_Quote attested no quote".into()));
                };
                let pcr_values = pcr::read(ctx, selection)?;
                if pcr::matches_quote(info, &wanted, &pcr_values)? {
                    return Ok(Quote {
                        reset_count: attest.clock_info().reset_count(),
                        attest: attest.marshall().map_err(tpm("marshal attest"))?,
                        signature: signature.marshall().map_err(tpm("marshal signature"))?,
                        pcr_values,
                    });
                }
                tracing::debug!(attempt, "a PCR changed between the quote and the read");
            }
            Err(TpmError::PcrsUnstable)
        })
    }
}
