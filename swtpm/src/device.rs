//! A simulated device: one swtpm process provisioned with EK certificates from a test maker, plus
//! the boot and IMA logs the device's firmware and kernel would have written.
//!
//! swtpm serves one client at a time, and the agent under test connects to it too, so every
//! operation here opens a TPM connection, does its work, and closes it again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use tss_esapi::abstraction::ek;
use tss_esapi::attributes::NvIndexAttributesBuilder;
use tss_esapi::handles::{NvIndexTpmHandle, PcrHandle};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::resource_handles::{NvAuth, Provision};
use tss_esapi::structures::{
    Digest, DigestValues, MaxNvBuffer, NvPublicBuilder, PcrSelectionListBuilder, PcrSlot,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::Marshall;
use tss_esapi::{Context, abstraction::AsymmetricAlgorithmSelection};

use crate::HarnessError;
use crate::boot::{Bank, BootEvent, BootProfile};
use crate::ima::{ImaEntry, boot_aggregate};
use crate::maker::TpmMaker;
use crate::process::SwtpmProcess;

/// The EKs a simulated device carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EkKind {
    /// TCG default template L-1, certificate at NV 0x01c00002.
    Rsa2048,
    /// TCG default template L-2, certificate at NV 0x01c0000a.
    EccP256,
}

impl EkKind {
    pub fn selection(self) -> AsymmetricAlgorithmSelection {
        match self {
            EkKind::Rsa2048 => AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
            EkKind::EccP256 => AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256),
        }
    }

    pub fn nv_index(self) -> u32 {
        match self {
            EkKind::Rsa2048 => 0x01c0_0002,
            EkKind::EccP256 => 0x01c0_000a,
        }
    }
}

pub const EVENT_LOG_FILE: &str = "binary_bios_measurements";
pub const IMA_LOG_FILE: &str = "ascii_runtime_measurements";

/// A running simulated device.
#[derive(Debug)]
pub struct SwtpmDevice {
    label: String,
    /// Serialises TPM use between this harness and an agent in the same process: swtpm does not
    /// cope with commands from two connections at once.
    access: std::sync::Arc<std::sync::Mutex<()>>,
    // Field order matters: the process must die before its directory is removed.
    process: SwtpmProcess,
    dir: tempfile::TempDir,
    boot_events: Vec<BootEvent>,
    /// The event log file as last written (after any tampering).
    event_log: Vec<u8>,
    profile: Option<BootProfile>,
    ima_entries: Vec<ImaEntry>,
}

fn tpm_error(operation: &'static str) -> impl FnOnce(tss_esapi::Error) -> HarnessError {
    move |source| HarnessError::Tpm { operation, source }
}

fn pcr_handle(index: u32) -> Result<PcrHandle, HarnessError> {
    const HANDLES: [PcrHandle; 24] = [
        PcrHandle::Pcr0,
        PcrHandle::Pcr1,
        PcrHandle::Pcr2,
        PcrHandle::Pcr3,
        PcrHandle::Pcr4,
        PcrHandle::Pcr5,
        PcrHandle::Pcr6,
        PcrHandle::Pcr7,
        PcrHandle::Pcr8,
        PcrHandle::Pcr9,
        PcrHandle::Pcr10,
        PcrHandle::Pcr11,
        PcrHandle::Pcr12,
        PcrHandle::Pcr13,
        PcrHandle::Pcr14,
        PcrHandle::Pcr15,
        PcrHandle::Pcr16,
        PcrHandle::Pcr17,
        PcrHandle::Pcr18,
        PcrHandle::Pcr19,
        PcrHandle::Pcr20,
        PcrHandle::Pcr21,
        PcrHandle::Pcr22,
        PcrHandle::Pcr23,
    ];
    HANDLES
        .get(index as usize)
        .copied()
        .ok_or_else(|| HarnessError::response("PCR handle", format!("no PCR {index}")))
}

fn hashing(bank: Bank) -> HashingAlgorithm {
    match bank {
        Bank::Sha1 => HashingAlgorithm::Sha1,
        Bank::Sha256 => HashingAlgorithm::Sha256,
    }
}

impl SwtpmDevice {
    /// Starts a fresh swtpm and provisions RSA-2048 and P-256 EK certificates from `maker`.
    pub fn start(maker: &TpmMaker, label: &str) -> Result<Self, HarnessError> {
        let dir = tempfile::Builder::new()
            .prefix("trustchain-swtpm-")
            .tempdir()
            .map_err(|e| HarnessError::io("create temp dir", Path::new("/tmp"), e))?;
        let process = SwtpmProcess::start(&dir.path().join("tpm"))?;
        let device = Self {
            label: label.to_string(),
            access: std::sync::Arc::default(),
            process,
            dir,
            boot_events: Vec::new(),
            event_log: Vec::new(),
            profile: None,
            ima_entries: Vec::new(),
        };
        for kind in [EkKind::Rsa2048, EkKind::EccP256] {
            device.provision_ek_certificate(maker, kind)?;
        }
        Ok(device)
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// The lock every TPM use of this device takes; an in-process agent takes it too.
    pub fn access(&self) -> std::sync::Arc<std::sync::Mutex<()>> {
        self.access.clone()
    }

    /// TCTI string for tss-esapi and the agent's config.
    pub fn tcti(&self) -> String {
        self.process.tcti()
    }

    /// The device's directory (logs live here).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn event_log_path(&self) -> PathBuf {
        self.dir.path().join(EVENT_LOG_FILE)
    }

    pub fn ima_log_path(&self) -> PathBuf {
        self.dir.path().join(IMA_LOG_FILE)
    }

    /// The events of the current boot (what was really extended).
    pub fn boot_events(&self) -> &[BootEvent] {
        &self.boot_events
    }

    /// The event log bytes as last written to [`SwtpmDevice::event_log_path`].
    pub fn event_log(&self) -> &[u8] {
        &self.event_log
    }

    /// The profile of the current boot, if the device has booted.
    pub fn profile(&self) -> Option<&BootProfile> {
        self.profile.as_ref()
    }

    /// Runs `operation` on a fresh TPM connection, closed afterwards.
    pub fn with_context<T>(
        &self,
        operation: impl FnOnce(&mut Context) -> Result<T, HarnessError>,
    ) -> Result<T, HarnessError> {
        let _guard = self.access.lock().unwrap_or_else(|p| p.into_inner());
        let tcti = TctiNameConf::from_str(&self.tcti()).map_err(tpm_error("TCTI"))?;
        let mut context = Context::new(tcti).map_err(tpm_error("connect"))?;
        operation(&mut context)
    }

    fn provision_ek_certificate(&self, maker: &TpmMaker, kind: EkKind) -> Result<(), HarnessError> {
        let spki = self.ek_spki_der(kind)?;
        let certificate =
            maker.issue_ek_certificate(&spki, &self.label, kind == EkKind::Rsa2048)?;
        self.write_nv(kind.nv_index(), &certificate)
    }

    /// Defines a platform-created NV index as TPM makers do for EK certificates, and writes `data`.
    fn write_nv(&self, index: u32, data: &[u8]) -> Result<(), HarnessError> {
        self.with_context(|ctx| {
            let nv_index = NvIndexTpmHandle::new(index).map_err(tpm_error("NV index"))?;
            let attributes = NvIndexAttributesBuilder::new()
                .with_pp_write(true)
                .with_pp_read(true)
                .with_owner_read(true)
                .with_auth_read(true)
                .with_no_da(true)
                .with_platform_create(true)
                .build()
                .map_err(tpm_error("NV attributes"))?;
            let public = NvPublicBuilder::new()
                .with_nv_index(nv_index)
                .with_index_name_algorithm(HashingAlgorithm::Sha256)
                .with_index_attributes(attributes)
                .with_data_area_size(data.len())
                .build()
                .map_err(tpm_error("NV public"))?;
            let handle = ctx
                .execute_with_nullauth_session(|c| {
                    c.nv_define_space(Provision::Platform, None, public)
                })
                .map_err(tpm_error("NV define space"))?;
            let chunk = tss_esapi::abstraction::nv::max_nv_buffer_size(ctx)
                .map_err(tpm_error("NV buffer size"))?;
            for (number, part) in data.chunks(chunk.max(64)).enumerate() {
                let buffer =
                    MaxNvBuffer::try_from(part.to_vec()).map_err(tpm_error("NV buffer"))?;
                let offset = u16::try_from(number * chunk.max(64))
                    .map_err(|_| HarnessError::response("NV write", "offset overflow"))?;
                ctx.execute_with_nullauth_session(|c| {
                    c.nv_write(NvAuth::Platform, handle, buffer, offset)
                })
                .map_err(tpm_error("NV write"))?;
            }
            Ok(())
        })
    }

    /// The EK certificate (DER) as stored in the TPM's NV.
    pub fn ek_certificate_der(&self, kind: EkKind) -> Result<Vec<u8>, HarnessError> {
        self.with_context(|ctx| {
            ek::retrieve_ek_pubcert(ctx, kind.selection()).map_err(tpm_error("read EK certificate"))
        })
    }

    /// The EK's public area, re-created from the TCG default template (it is the same key each
    /// time: the TPM derives it from its endorsement seed).
    pub fn ek_public(&self, kind: EkKind) -> Result<tss_esapi::structures::Public, HarnessError> {
        self.with_context(|ctx| {
            let handle = ek::create_ek_object_2(ctx, kind.selection(), None)
                .map_err(tpm_error("create EK"))?;
            let public = ctx
                .read_public(handle)
                .map(|(public, _, _)| public)
                .map_err(tpm_error("read EK public"));
            let _ = ctx.flush_context(handle.into());
            public
        })
    }

    /// The EK as SubjectPublicKeyInfo DER (the key its certificate must carry).
    pub fn ek_spki_der(&self, kind: EkKind) -> Result<Vec<u8>, HarnessError> {
        let marshalled = self
            .ek_public(kind)?
            .marshall()
            .map_err(tpm_error("marshal EK"))?;
        spki_from_tpmt_public(&marshalled)
    }

    /// Reads PCR values of one bank.
    pub fn read_pcrs(
        &self,
        bank: Bank,
        indices: &[u32],
    ) -> Result<BTreeMap<u32, Vec<u8>>, HarnessError> {
        self.with_context(|ctx| {
            let mut out = BTreeMap::new();
            for &index in indices {
                let slot = PcrSlot::try_from(1u32 << index).map_err(tpm_error("PCR slot"))?;
                let selection = PcrSelectionListBuilder::new()
                    .with_selection(hashing(bank), &[slot])
                    .build()
                    .map_err(tpm_error("PCR selection"))?;
                let (_, _, digests) = ctx.pcr_read(selection).map_err(tpm_error("PCR read"))?;
                let value = digests.value().first().ok_or_else(|| {
                    HarnessError::response("PCR read", format!("PCR {index} not returned"))
                })?;
                out.insert(index, value.value().to_vec());
            }
            Ok(out)
        })
    }

    /// The TPM's clock information (resetCount advances with each TPM reset), read from a quote by
    /// a throwaway P-256 key in the endorsement hierarchy (tss-esapi 7.7 has no ReadClock). Not the
    /// null or owner hierarchy: the TPM obfuscates resetCount and restartCount in quotes by keys
    /// outside the endorsement and platform hierarchies.
    pub fn clock_info(&self) -> Result<tss_esapi::structures::ClockInfo, HarnessError> {
        use tss_esapi::interface_types::algorithm::EccSchemeAlgorithm;
        use tss_esapi::interface_types::resource_handles::Hierarchy;
        use tss_esapi::structures::{Data, EccScheme, PcrSelectionList, SignatureScheme};
        self.with_context(|ctx| {
            let scheme = EccScheme::create(
                EccSchemeAlgorithm::EcDsa,
                Some(HashingAlgorithm::Sha256),
                None,
            )
            .map_err(tpm_error("scheme"))?;
            let template = tss_esapi::utils::create_unrestricted_signing_ecc_public(
                scheme,
                EccCurve::NistP256,
            )
            .map_err(tpm_error("template"))?;
            let key = ctx
                .execute_with_nullauth_session(|c| {
                    c.create_primary(Hierarchy::Endorsement, template, None, None, None, None)
                })
                .map_err(tpm_error("create signing key"))?
                .key_handle;
            let quoted = ctx.execute_with_nullauth_session(|c| {
                c.quote(
                    key,
                    Data::default(),
                    SignatureScheme::Null,
                    PcrSelectionList::builder().build()?,
                )
            });
            let _ = ctx.flush_context(key.into());
            let (attest, _) = quoted.map_err(tpm_error("quote"))?;
            Ok(*attest.clock_info())
        })
    }

    /// The TPM's reset count (advances with each TPM reset).
    pub fn reset_count(&self) -> Result<u32, HarnessError> {
        Ok(self.clock_info()?.reset_count())
    }

    fn extend(
        ctx: &mut Context,
        pcr: u32,
        digests: &[(Bank, Vec<u8>)],
    ) -> Result<(), HarnessError> {
        let mut values = DigestValues::new();
        for (bank, digest) in digests {
            values.set(
                hashing(*bank),
                Digest::try_from(digest.clone()).map_err(tpm_error("digest"))?,
            );
        }
        let handle = pcr_handle(pcr)?;
        ctx.execute_with_nullauth_session(|c| c.pcr_extend(handle, values))
            .map_err(tpm_error("PCR extend"))
    }

    /// Simulates firmware, shim and GRUB: extends the profile's events into the TPM and writes
    /// the event log. The IMA log restarts with its boot aggregate. Expects PCRs as after a reset
    /// (a fresh device, or after [`SwtpmDevice::reset`]).
    ///
    /// With `startup_locality: Some(3)` the TPM is first reset with TPM2_Startup sent from
    /// locality 3, so PCR 0 really starts at 3 (resetCount advances by one more); `Some(0)` only
    /// logs the event. Other localities are refused.
    pub fn boot(&mut self, profile: &BootProfile) -> Result<(), HarnessError> {
        let locality = startup_locality(profile)?;
        if locality != 0 {
            self.reset_at_locality(locality)?;
        }
        self.boot_measured(profile)
    }

    /// The boot itself, on a TPM already started at the profile's locality.
    fn boot_measured(&mut self, profile: &BootProfile) -> Result<(), HarnessError> {
        let events = profile.events();
        self.with_context(|ctx| {
            for event in events.iter().filter(|e| e.is_extended()) {
                Self::extend(ctx, event.pcr, &event.digests)?;
            }
            Ok(())
        })?;
        let log = profile.encode_log(&events);
        std::fs::write(self.event_log_path(), &log)
            .map_err(|e| HarnessError::io("write", &self.event_log_path(), e))?;
        self.event_log = log;
        self.boot_events = events;
        self.profile = Some(profile.clone());
        self.ima_entries.clear();
        std::fs::write(self.ima_log_path(), b"")
            .map_err(|e| HarnessError::io("write", &self.ima_log_path(), e))?;
        let pcrs = self.read_pcrs(Bank::Sha256, &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9])?;
        let aggregate = boot_aggregate(&pcrs.into_values().collect::<Vec<_>>());
        self.append_ima(vec![aggregate])
    }

    fn append_ima(&mut self, entries: Vec<ImaEntry>) -> Result<(), HarnessError> {
        let banks = self
            .profile
            .as_ref()
            .map(|p| p.banks.clone())
            .unwrap_or_else(|| vec![Bank::Sha256]);
        self.with_context(|ctx| {
            for entry in &entries {
                let digests: Vec<(Bank, Vec<u8>)> = banks
                    .iter()
                    .map(|b| (*b, entry.template_hash(*b)))
                    .collect();
                Self::extend(ctx, 10, &digests)?;
            }
            Ok(())
        })?;
        use std::io::Write;
        let path = self.ima_log_path();
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| HarnessError::io("open", &path, e))?;
        for entry in &entries {
            file.write_all(entry.ascii_line().as_bytes())
                .map_err(|e| HarnessError::io("append", &path, e))?;
        }
        self.ima_entries.extend(entries);
        Ok(())
    }

    /// The kernel measured a file: append an ima-ng entry and extend PCR 10.
    pub fn ima_measure(&mut self, path: &str, content: &[u8]) -> Result<(), HarnessError> {
        self.append_ima(vec![ImaEntry::for_file(path, content)])
    }

    /// Several files at once.
    pub fn ima_measure_many(&mut self, files: &[(String, Vec<u8>)]) -> Result<(), HarnessError> {
        self.append_ima(
            files
                .iter()
                .map(|(path, content)| ImaEntry::for_file(path, content))
                .collect(),
        )
    }

    pub fn ima_entries(&self) -> &[ImaEntry] {
        &self.ima_entries
    }

    /// Tamper: extends `data`'s hash into `pcr` of every bank, without logging it.
    pub fn extend_unlisted(&self, pcr: u32, data: &[u8]) -> Result<(), HarnessError> {
        let banks = self
            .profile
            .as_ref()
            .map(|p| p.banks.clone())
            .unwrap_or_else(|| vec![Bank::Sha256]);
        let digests: Vec<(Bank, Vec<u8>)> = banks.iter().map(|b| (*b, b.hash(data))).collect();
        self.with_context(|ctx| Self::extend(ctx, pcr, &digests))
    }

    /// Tamper: rewrites the event log file after the fact (the TPM keeps what was really
    /// extended). `edit` gets the events and may change them.
    pub fn rewrite_boot_log(
        &mut self,
        edit: impl FnOnce(&mut Vec<BootEvent>),
    ) -> Result<(), HarnessError> {
        let profile = self
            .profile
            .clone()
            .ok_or_else(|| HarnessError::Unsupported("no boot yet".into()))?;
        let mut events = self.boot_events.clone();
        edit(&mut events);
        let log = profile.encode_log(&events);
        std::fs::write(self.event_log_path(), &log)
            .map_err(|e| HarnessError::io("write", &self.event_log_path(), e))?;
        self.event_log = log;
        Ok(())
    }

    /// Tamper: the event log claims `kernel` was booted (the kernel's PCR 4 application event
    /// and PCR 9 load event carry its digests) while the TPM holds the real kernel's.
    pub fn forge_logged_kernel(&mut self, kernel: &[u8]) -> Result<(), HarnessError> {
        let real = self
            .profile
            .as_ref()
            .map(|p| p.kernel.clone())
            .ok_or_else(|| HarnessError::Unsupported("no boot yet".into()))?;
        self.rewrite_boot_log(|events| {
            for event in events.iter_mut() {
                let is_kernel = event.digests.iter().all(|(bank, d)| *d == bank.hash(&real));
                let kernel_event = (event.pcr == 4
                    && event.event_type == crate::boot::EV_EFI_BOOT_SERVICES_APPLICATION)
                    || (event.pcr == 9 && event.event_type == crate::boot::EV_IPL);
                if kernel_event && is_kernel {
                    for (bank, digest) in event.digests.iter_mut() {
                        *digest = bank.hash(kernel);
                    }
                }
            }
        })
    }

    /// Writes raw bytes as the IMA log (tamper helper).
    pub fn overwrite_ima_log(&self, contents: &[u8]) -> Result<(), HarnessError> {
        std::fs::write(self.ima_log_path(), contents)
            .map_err(|e| HarnessError::io("write", &self.ima_log_path(), e))
    }

    /// Resets the TPM as a power cycle does (control-channel `_TPM_Init`, then
    /// TPM2_Startup(CLEAR)): PCRs cleared, resetCount advances. Nothing is booted; the
    /// harness forgets the boot and IMA events (the log files stay until the next boot).
    pub fn reset(&mut self) -> Result<(), HarnessError> {
        self.reset_at_locality(0)
    }

    fn reset_at_locality(&mut self, locality: u8) -> Result<(), HarnessError> {
        {
            let _guard = self.access.lock().unwrap_or_else(|p| p.into_inner());
            self.process.reset_at_locality(locality)?;
        }
        self.boot_events.clear();
        self.ima_entries.clear();
        Ok(())
    }

    /// Reboot: TPM reset (from the profile's startup locality), then a new boot with `profile`
    /// (new event log, IMA log restarted).
    pub fn reboot(&mut self, profile: &BootProfile) -> Result<(), HarnessError> {
        self.reset_at_locality(startup_locality(profile)?)?;
        self.boot_measured(profile)
    }

    /// Stops the swtpm process (the TPM "dies"); `restart` brings it back with the same state.
    pub fn kill_tpm(&mut self) {
        self.process.stop();
    }

    /// Restarts a killed TPM with its state (same EK); PCRs are reset as after power loss.
    pub fn restart_tpm(&mut self) -> Result<(), HarnessError> {
        self.process = SwtpmProcess::start(&self.dir.path().join("tpm"))?;
        Ok(())
    }
}

/// The locality TPM2_Startup must come from for `profile`: 0, or 3 when it logs StartupLocality 3
/// (the only value that changes PCR 0's initial value).
fn startup_locality(profile: &BootProfile) -> Result<u8, HarnessError> {
    match profile.startup_locality {
        None | Some(0) => Ok(0),
        Some(3) => Ok(3),
        Some(other) => Err(HarnessError::Unsupported(format!(
            "StartupLocality {other} (only 0 and 3 exist)"
        ))),
    }
}

/// SubjectPublicKeyInfo DER for a marshalled TPMT_PUBLIC (uses the verifier's pure-Rust
/// structure parser; the tests check the result against the TPM independently).
pub fn spki_from_tpmt_public(marshalled: &[u8]) -> Result<Vec<u8>, HarnessError> {
    let public = trustchain_evidence::tpm::Public::parse(marshalled)
        .map_err(|e| HarnessError::response("EK public", e.to_string()))?;
    public
        .spki_der()
        .ok_or_else(|| HarnessError::response("EK public", "unsupported key"))
}
