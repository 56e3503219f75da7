//! [`Tpm`] on tss-esapi.
//!
//! No connection is held between calls: each operation opens the TCTI, does its work and closes
//! it. On a machine that is what `/dev/tpmrm0` is made for; on swtpm, which serves one client at a
//! time, it lets test harnesses and other tools share the TPM. The AK is not persisted in TPM NV
//! (that would need owner authorisation, which the agent never takes): its key blob
//! (TPM2B_PRIVATE + TPM2B_PUBLIC, encrypted by the TPM under the EK) is saved in the state
//! directory with mode 0600 and reloaded under the EK for each operation.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use tss_esapi::Context;
use tss_esapi::abstraction::{AsymmetricAlgorithmSelection, ak, ek};
use tss_esapi::attributes::SessionAttributesBuilder;
use tss_esapi::constants::{CapabilityType, PropertyTag, SessionType};
use tss_esapi::handles::AuthHandle;
use tss_esapi::handles::{KeyHandle, ObjectHandle, SessionHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, SignatureSchemeAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    CapabilityData, Data, EncryptedSecret, IdObject, PcrSelectionListBuilder, PcrSlot, Private,
    Public, SignatureScheme, SymmetricDefinition,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::{Marshall, UnMarshall};

use super::{BankSelection, Quote, Tpm, TpmError};
use crate::config::EkChoice;

const AK_BLOB: &str = "ak.blob";

/// (TPM_ALG_ID, PCR index, value).
type PcrList = Vec<(u16, u32, Vec<u8>)>;
/// Attempts at a quote whose PCRs did not change while it was taken.
const QUOTE_ATTEMPTS: usize = 5;

/// Which AK to create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AkAlgorithm {
    /// RSA-2048, RSASSA with SHA-256.
    Rsa2048,
    /// NIST P-256, ECDSA with SHA-256.
    EccP256,
}

/// The tss-esapi TPM.
#[derive(Debug)]
pub struct EsapiTpm {
    tcti: String,
    state_dir: PathBuf,
    ek: EkChoice,
    ak_algorithm: AkAlgorithm,
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

fn hashing(alg_id: u16) -> Result<HashingAlgorithm, TpmError> {
    match alg_id {
        0x0004 => Ok(HashingAlgorithm::Sha1),
        0x000b => Ok(HashingAlgorithm::Sha256),
        0x000c => Ok(HashingAlgorithm::Sha384),
        0x000d => Ok(HashingAlgorithm::Sha512),
        other => Err(TpmError::Invalid(format!(
            "unsupported PCR bank 0x{other:04x}"
        ))),
    }
}

impl EsapiTpm {
    /// `tcti` as in the config (`device:/dev/tpmrm0`, `swtpm:host=..,port=..`); `state_dir` holds
    /// the AK blob.
    pub fn new(
        tcti: &str,
        state_dir: &Path,
        ek: EkChoice,
        ak_algorithm: AkAlgorithm,
    ) -> Result<Self, TpmError> {
        TctiNameConf::from_str(tcti).map_err(|e| TpmError::Tcti {
            tcti: tcti.into(),
            detail: e.to_string(),
        })?;
        Ok(Self {
            tcti: tcti.to_string(),
            state_dir: state_dir.to_path_buf(),
            ek,
            ak_algorithm,
        })
    }

    fn context(&self) -> Result<Context, TpmError> {
        let tcti = TctiNameConf::from_str(&self.tcti).map_err(|e| TpmError::Tcti {
            tcti: self.tcti.clone(),
            detail: e.to_string(),
        })?;
        Context::new(tcti).map_err(|e| TpmError::Tcti {
            tcti: self.tcti.clone(),
            detail: e.to_string(),
        })
    }

    fn blob_path(&self) -> PathBuf {
        self.state_dir.join(AK_BLOB)
    }

    /// Runs `work` with the EK and the AK loaded, flushing both afterwards whatever happens.
    fn with_keys<T>(
        &self,
        work: impl FnOnce(&mut Context, KeyHandle, KeyHandle) -> Result<T, TpmError>,
    ) -> Result<T, TpmError> {
        let mut ctx = self.context()?;
        let (private, public) = self.ensure_ak_blob(&mut ctx)?;
        let ek =
            ek::create_ek_object_2(&mut ctx, selection(self.ek), None).map_err(tpm("create EK"))?;
        let ak = match ak::load_ak(&mut ctx, ek, None, private, public) {
            Ok(ak) => ak,
            Err(source) => {
                let _ = ctx.flush_context(ek.into());
                return Err(TpmError::Tpm {
                    operation: "load AK",
                    source,
                });
            }
        };
        let result = work(&mut ctx, ek, ak);
        let _ = ctx.flush_context(ak.into());
        let _ = ctx.flush_context(ek.into());
        result
    }

    /// The saved AK blob, creating the AK (under the EK) if there is none.
    fn ensure_ak_blob(&self, ctx: &mut Context) -> Result<(Private, Public), TpmError> {
        match self.read_blob()? {
            Some(blob) => Ok(blob),
            None => self.create_ak(ctx),
        }
    }

    fn create_ak(&self, ctx: &mut Context) -> Result<(Private, Public), TpmError> {
        let ek = ek::create_ek_object_2(ctx, selection(self.ek), None).map_err(tpm("create EK"))?;
        let (key, sign) = match self.ak_algorithm {
            AkAlgorithm::Rsa2048 => (
                AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
                SignatureSchemeAlgorithm::RsaSsa,
            ),
            AkAlgorithm::EccP256 => (
                AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256),
                SignatureSchemeAlgorithm::EcDsa,
            ),
        };
        let created = ak::create_ak_2(ctx, ek, HashingAlgorithm::Sha256, key, sign, None, None);
        let _ = ctx.flush_context(ek.into());
        let created = created.map_err(tpm("create AK"))?;
        self.write_blob(&created.out_private, &created.out_public)?;
        tracing::info!("created a new attestation key");
        Ok((created.out_private, created.out_public))
    }

    fn read_blob(&self) -> Result<Option<(Private, Public)>, TpmError> {
        let path = self.blob_path();
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(TpmError::Io {
                    operation: "read",
                    path,
                    source,
                });
            }
        };
        let bad = |detail: &str| TpmError::BadAkBlob {
            path: path.clone(),
            detail: detail.into(),
        };
        // u16 private length || private || marshalled TPMT_PUBLIC.
        let (length, rest) = bytes.split_at_checked(2).ok_or_else(|| bad("truncated"))?;
        let length: [u8; 2] = length.try_into().map_err(|_| bad("truncated"))?;
        let length = usize::from(u16::from_be_bytes(length));
        let (private, public) = rest
            .split_at_checked(length)
            .ok_or_else(|| bad("truncated"))?;
        let private = Private::try_from(private.to_vec()).map_err(|e| bad(&e.to_string()))?;
        let public = Public::unmarshall(public).map_err(|e| bad(&e.to_string()))?;
        Ok(Some((private, public)))
    }

    fn write_blob(&self, private: &Private, public: &Public) -> Result<(), TpmError> {
        let path = self.blob_path();
        let io = |operation: &'static str| {
            let path = path.clone();
            move |source| TpmError::Io {
                operation,
                path,
                source,
            }
        };
        let public = public.marshall().map_err(tpm("marshal AK public"))?;
        let private = private.value();
        let length = u16::try_from(private.len())
            .map_err(|_| TpmError::Invalid("AK private too large".into()))?;
        let mut contents = length.to_be_bytes().to_vec();
        contents.extend_from_slice(private);
        contents.extend_from_slice(&public);
        std::fs::create_dir_all(&self.state_dir).map_err(io("create"))?;
        let tmp = path.with_extension("tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io("create"))?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io("chmod"))?;
        file.write_all(&contents).map_err(io("write"))?;
        file.sync_all().map_err(io("sync"))?;
        std::fs::rename(&tmp, &path).map_err(io("rename"))
    }

    /// Reads the selected PCRs; returns the PCR update counter and the values.
    fn read_pcrs(
        ctx: &mut Context,
        selection: &[BankSelection],
    ) -> Result<(u32, PcrList), TpmError> {
        let mut values = Vec::new();
        let mut counter = 0;
        for (alg, pcrs) in selection {
            // TPM2_PCR_Read returns at most 8 digests per call.
            for chunk in pcrs.chunks(8) {
                let slots: Vec<PcrSlot> = chunk
                    .iter()
                    .map(|p| PcrSlot::try_from(1u32 << p).map_err(tpm("PCR slot")))
                    .collect::<Result<_, _>>()?;
                let list = PcrSelectionListBuilder::new()
                    .with_selection(hashing(*alg)?, &slots)
                    .build()
                    .map_err(tpm("PCR selection"))?;
                let (update_counter, _, digests) = ctx.pcr_read(list).map_err(tpm("PCR read"))?;
                counter = update_counter;
                if digests.value().len() != chunk.len() {
                    return Err(TpmError::Invalid(
                        "TPM returned fewer PCRs than selected".into(),
                    ));
                }
                for (pcr, digest) in chunk.iter().zip(digests.value()) {
                    values.push((*alg, *pcr, digest.value().to_vec()));
                }
            }
        }
        Ok((counter, values))
    }
}

impl Tpm for EsapiTpm {
    fn is_software(&mut self) -> Result<bool, TpmError> {
        let mut ctx = self.context()?;
        let manufacturer = ctx
            .get_tpm_property(PropertyTag::Manufacturer)
            .map_err(tpm("read manufacturer"))?;
        let vendor = ctx
            .get_tpm_property(PropertyTag::VendorString1)
            .map_err(tpm("read vendor string"))?;
        let text =
            |v: Option<u32>| String::from_utf8_lossy(&v.unwrap_or(0).to_be_bytes()).into_owned();
        // swtpm/libtpms reports manufacturer "IBM" and vendor "SW  "; the Microsoft simulator
        // "MSFT"/"xCG ".
        let manufacturer = text(manufacturer);
        let vendor = text(vendor);
        Ok(vendor.starts_with("SW")
            || manufacturer.starts_with("MSFT")
            || vendor.starts_with("xCG"))
    }

    fn flush_leftovers(&mut self) -> Result<usize, TpmError> {
        let mut ctx = self.context()?;
        let mut flushed = 0;
        // Transient objects, then HMAC and policy sessions.
        for first in [0x8000_0000u32, 0x0200_0000, 0x0300_0000] {
            let (data, _) = ctx
                .get_capability(CapabilityType::Handles, first, 64)
                .map_err(tpm("list handles"))?;
            let CapabilityData::Handles(handles) = data else {
                continue;
            };
            for handle in handles.iter() {
                let Ok(object) = ctx.tr_from_tpm_public(*handle) else {
                    continue;
                };
                if ctx.flush_context(object).is_ok() {
                    flushed += 1;
                }
            }
        }
        Ok(flushed)
    }

    fn ek_certificate(&mut self, ek: EkChoice) -> Result<Vec<u8>, TpmError> {
        let mut ctx = self.context()?;
        ek::retrieve_ek_pubcert(&mut ctx, selection(ek)).map_err(tpm("read EK certificate"))
    }

    fn ek_public(&mut self, ek: EkChoice) -> Result<Vec<u8>, TpmError> {
        let mut ctx = self.context()?;
        let handle =
            ek::create_ek_object_2(&mut ctx, selection(ek), None).map_err(tpm("create EK"))?;
        let public = ctx.read_public(handle).map_err(tpm("read EK public"));
        let _ = ctx.flush_context(handle.into());
        public?.0.marshall().map_err(tpm("marshal EK public"))
    }

    fn ak_public(&mut self) -> Result<Vec<u8>, TpmError> {
        let mut ctx = self.context()?;
        let (_, public) = self.ensure_ak_blob(&mut ctx)?;
        public.marshall().map_err(tpm("marshal AK public"))
    }

    fn rotate_ak(&mut self) -> Result<Vec<u8>, TpmError> {
        let mut ctx = self.context()?;
        let (_, public) = self.create_ak(&mut ctx)?;
        public.marshall().map_err(tpm("marshal AK public"))
    }

    fn activate_credential(
        &mut self,
        credential_blob: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8>, TpmError> {
        let blob = IdObject::try_from(credential_blob.to_vec()).map_err(tpm("credential blob"))?;
        let secret = EncryptedSecret::try_from(encrypted_secret.to_vec())
            .map_err(tpm("encrypted secret"))?;
        self.with_keys(|ctx, ek, ak| {
            // The EK's policy is PolicySecret(TPM_RH_ENDORSEMENT).
            let session = ctx
                .start_auth_session(
                    None,
                    None,
                    None,
                    SessionType::Policy,
                    SymmetricDefinition::AES_128_CFB,
                    HashingAlgorithm::Sha256,
                )
                .map_err(tpm("start policy session"))?
                .ok_or_else(|| TpmError::Invalid("no policy session".into()))?;
            let (attributes, mask) = SessionAttributesBuilder::new()
                .with_decrypt(true)
                .with_encrypt(true)
                .build();
            let outcome = (|| {
                ctx.tr_sess_set_attributes(session, attributes, mask)
                    .map_err(tpm("session attributes"))?;
                let policy = PolicySession::try_from(session).map_err(tpm("policy session"))?;
                ctx.execute_with_nullauth_session(|c| {
                    c.policy_secret(
                        policy,
                        AuthHandle::Endorsement,
                        Default::default(),
                        Default::default(),
                        Default::default(),
                        None,
                    )
                })
                .map_err(tpm("PolicySecret"))?;
                ctx.execute_with_sessions((Some(AuthSession::Password), Some(session), None), |c| {
                    c.activate_credential(ak, ek, blob, secret)
                })
                .map_err(tpm("ActivateCredential"))
            })();
            let _ = ctx.flush_context(ObjectHandle::from(SessionHandle::from(session)));
            Ok(outcome?.value().to_vec())
        })
    }

    fn quote(&mut self, nonce: &[u8], selection: &[BankSelection]) -> Result<Quote, TpmError> {
        let qualifying = Data::try_from(nonce.to_vec()).map_err(tpm("nonce"))?;
        self.with_keys(|ctx, _ek, ak| {
            let mut builder = PcrSelectionListBuilder::new();
            for (alg, pcrs) in selection {
                let slots: Vec<PcrSlot> = pcrs
                    .iter()
                    .map(|p| PcrSlot::try_from(1u32 << p).map_err(tpm("PCR slot")))
                    .collect::<Result<_, _>>()?;
                builder = builder.with_selection(hashing(*alg)?, &slots);
            }
            let list = builder.build().map_err(tpm("PCR selection"))?;
            for _ in 0..QUOTE_ATTEMPTS {
                let (before, _) = Self::read_pcrs(ctx, selection)?;
                let (attest, signature) = ctx
                    .execute_with_nullauth_session(|c| {
                        c.quote(ak, qualifying.clone(), SignatureScheme::Null, list.clone())
                    })
                    .map_err(tpm("quote"))?;
                let (after, pcr_values) = Self::read_pcrs(ctx, selection)?;
                // A PCR extended between the quote and the read would make the values disagree
                // with the signed digest; the update counter tells, so try again.
                if before == after {
                    return Ok(Quote {
                        reset_count: attest.clock_info().reset_count(),
                        attest: attest.marshall().map_err(tpm("marshal attest"))?,
                        signature: signature.marshall().map_err(tpm("marshal signature"))?,
                        pcr_values,
                    });
                }
            }
            Err(TpmError::PcrsUnstable)
        })
    }
}
