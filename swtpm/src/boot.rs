//! Simulated UEFI measured boot: a boot profile becomes the list of events real firmware, shim and
//! GRUB would measure, and a TCG PC Client crypto-agile event log (TCG PC Client Platform Firmware
//! Profile, §9 and §10) that records exactly what is extended.
//!
//! Written independently of the verifier's parser on purpose: the tests compare the two.

use sha1::Sha1;
use sha2::{Digest as _, Sha256};

/// A PCR bank the simulated firmware extends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bank {
    Sha1,
    Sha256,
}

impl Bank {
    pub fn alg_id(self) -> u16 {
        match self {
            Bank::Sha1 => 0x0004,
            Bank::Sha256 => 0x000b,
        }
    }

    pub fn size(self) -> usize {
        match self {
            Bank::Sha1 => 20,
            Bank::Sha256 => 32,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Bank::Sha1 => "sha1",
            Bank::Sha256 => "sha256",
        }
    }

    pub fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            Bank::Sha1 => Sha1::digest(data).to_vec(),
            Bank::Sha256 => Sha256::digest(data).to_vec(),
        }
    }

    /// PCR extend in software: H(old || digest).
    pub fn extend(self, old: &[u8], digest: &[u8]) -> Vec<u8> {
        let mut joined = old.to_vec();
        joined.extend_from_slice(digest);
        self.hash(&joined)
    }
}

// Event types (TCG PC Client PFP, Table 9 and Table 10).
pub const EV_POST_CODE: u32 = 0x0000_0001;
pub const EV_NO_ACTION: u32 = 0x0000_0003;
pub const EV_SEPARATOR: u32 = 0x0000_0004;
pub const EV_S_CRTM_VERSION: u32 = 0x0000_0008;
pub const EV_IPL: u32 = 0x0000_000d;
pub const EV_EFI_VARIABLE_DRIVER_CONFIG: u32 = 0x8000_0001;
pub const EV_EFI_VARIABLE_BOOT: u32 = 0x8000_0002;
pub const EV_EFI_BOOT_SERVICES_APPLICATION: u32 = 0x8000_0003;
pub const EV_EFI_ACTION: u32 = 0x8000_0007;
pub const EV_EFI_PLATFORM_FIRMWARE_BLOB: u32 = 0x8000_0008;
pub const EV_EFI_VARIABLE_AUTHORITY: u32 = 0x8000_00e0;

/// EFI_GLOBAL_VARIABLE {8BE4DF61-93CA-11D2-AA0D-00E098032B8C}, in its little-endian wire form.
pub const EFI_GLOBAL_VARIABLE: [u8; 16] = [
    0x61, 0xdf, 0xe4, 0x8b, 0xca, 0x93, 0xd2, 0x11, 0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c,
];
/// EFI_IMAGE_SECURITY_DATABASE_GUID {D719B2CB-3D3A-4596-A3BC-DAD00E67656F}.
pub const EFI_IMAGE_SECURITY_DATABASE: [u8; 16] = [
    0xcb, 0xb2, 0x19, 0xd7, 0x3a, 0x3d, 0x96, 0x45, 0xa3, 0xbc, 0xda, 0xd0, 0x0e, 0x67, 0x65, 0x6f,
];

/// What a simulated device boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootProfile {
    /// Banks extended and logged (sha256 always; sha1 optionally too).
    pub banks: Vec<Bank>,
    pub crtm_version: String,
    pub firmware_blobs: Vec<Vec<u8>>,
    pub secure_boot: bool,
    pub pk: Vec<u8>,
    pub kek: Vec<u8>,
    pub db: Vec<u8>,
    pub dbx: Vec<u8>,
    pub shim: Vec<u8>,
    pub grub: Vec<u8>,
    pub kernel: Vec<u8>,
    pub initrd: Vec<u8>,
    pub grub_commands: Vec<String>,
    pub kernel_cmdline: String,
    /// Log an EV_NO_ACTION StartupLocality event with this locality (PCR0 then starts at it).
    pub startup_locality: Option<u8>,
}

impl BootProfile {
    /// A typical Linux boot: UEFI firmware, secure boot on, shim, GRUB, a kernel and initrd.
    pub fn default_linux() -> Self {
        Self {
            banks: vec![Bank::Sha256],
            crtm_version: "TrustChain Sim Firmware 1.0".into(),
            firmware_blobs: vec![
                b"firmware volume: PEI core v1".to_vec(),
                b"firmware volume: DXE core v1".to_vec(),
            ],
            secure_boot: true,
            pk: b"PK: TrustChain Sim Platform Key".to_vec(),
            kek: b"KEK: TrustChain Sim Key Exchange Key".to_vec(),
            db: b"db: TrustChain Sim Distro CA".to_vec(),
            dbx: b"dbx: revoked hashes v1".to_vec(),
            shim: b"shimx64.efi 15.8".to_vec(),
            grub: b"grubx64.efi 2.12".to_vec(),
            kernel: b"vmlinuz-6.1.0-approved".to_vec(),
            initrd: b"initrd.img-6.1.0-approved".to_vec(),
            grub_commands: vec![
                "set root=(hd0,gpt2)".into(),
                "linux /vmlinuz root=/dev/sda2 ro quiet".into(),
            ],
            kernel_cmdline: "/vmlinuz root=/dev/sda2 ro quiet".into(),
            startup_locality: None,
        }
    }

    pub fn with_kernel(mut self, kernel: &[u8]) -> Self {
        self.kernel = kernel.to_vec();
        self
    }

    pub fn with_banks(mut self, banks: &[Bank]) -> Self {
        self.banks = banks.to_vec();
        self
    }

    pub fn with_kernel_cmdline(mut self, cmdline: &str) -> Self {
        self.kernel_cmdline = cmdline.to_string();
        self
    }

    pub fn with_firmware(mut self, blob: &[u8]) -> Self {
        self.firmware_blobs = vec![blob.to_vec()];
        self
    }

    pub fn with_secure_boot(mut self, on: bool) -> Self {
        self.secure_boot = on;
        self
    }

    pub fn with_shim(mut self, shim: &[u8]) -> Self {
        self.shim = shim.to_vec();
        self
    }

    pub fn with_grub(mut self, grub: &[u8]) -> Self {
        self.grub = grub.to_vec();
        self
    }

    pub fn with_initrd(mut self, initrd: &[u8]) -> Self {
        self.initrd = initrd.to_vec();
        self
    }

    pub fn with_grub_commands(mut self, commands: &[&str]) -> Self {
        self.grub_commands = commands.iter().map(|c| (*c).to_string()).collect();
        self
    }

    /// Secure-boot variables (PK, KEK, db, dbx contents).
    pub fn with_secure_boot_keys(mut self, pk: &[u8], kek: &[u8], db: &[u8], dbx: &[u8]) -> Self {
        self.pk = pk.to_vec();
        self.kek = kek.to_vec();
        self.db = db.to_vec();
        self.dbx = dbx.to_vec();
        self
    }

    /// Log a StartupLocality event; with 3, [`crate::SwtpmDevice::boot`] really starts the TPM
    /// from locality 3 so PCR 0 begins at 3.
    pub fn with_startup_locality(mut self, locality: u8) -> Self {
        self.startup_locality = Some(locality);
        self
    }
}

/// One measured (or, for EV_NO_ACTION, only logged) event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootEvent {
    pub pcr: u32,
    pub event_type: u32,
    /// The digest per bank; for measured events, what is extended.
    pub digests: Vec<(Bank, Vec<u8>)>,
    pub data: Vec<u8>,
}

impl BootEvent {
    /// True for events that are extended into a PCR.
    pub fn is_extended(&self) -> bool {
        self.event_type != EV_NO_ACTION
    }
}

fn utf16(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// UEFI_VARIABLE_DATA.
pub fn variable_data(guid: &[u8; 16], name: &str, data: &[u8]) -> Vec<u8> {
    let name16 = utf16(name);
    let mut out = guid.to_vec();
    out.extend_from_slice(&(name.encode_utf16().count() as u64).to_le_bytes());
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(&name16);
    out.extend_from_slice(data);
    out
}

/// A device path: hard drive partition + file path, ended.
fn device_path(file: &str) -> Vec<u8> {
    let mut path = Vec::new();
    // ACPI PciRoot(0x0): type 2, subtype 1, length 12, HID PNP0A03, UID 0.
    path.extend_from_slice(&[
        0x02, 0x01, 0x0c, 0x00, 0xd0, 0x41, 0x03, 0x0a, 0x00, 0x00, 0x00, 0x00,
    ]);
    // Media file path: type 4, subtype 4.
    let mut name = utf16(file);
    name.extend_from_slice(&[0, 0]);
    path.extend_from_slice(&[0x04, 0x04]);
    path.extend_from_slice(&((name.len() + 4) as u16).to_le_bytes());
    path.extend_from_slice(&name);
    // End of entire device path.
    path.extend_from_slice(&[0x7f, 0xff, 0x04, 0x00]);
    path
}

/// UEFI_IMAGE_LOAD_EVENT.
fn image_load(location: u64, length: usize, file: &str) -> Vec<u8> {
    let path = device_path(file);
    let mut out = Vec::new();
    out.extend_from_slice(&location.to_le_bytes());
    out.extend_from_slice(&(length as u64).to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(&(path.len() as u64).to_le_bytes());
    out.extend_from_slice(&path);
    out
}

impl BootProfile {
    fn event(&self, pcr: u32, event_type: u32, data: Vec<u8>, measured: &[u8]) -> BootEvent {
        let digests = self
            .banks
            .iter()
            .map(|bank| (*bank, bank.hash(measured)))
            .collect();
        BootEvent {
            pcr,
            event_type,
            digests,
            data,
        }
    }

    /// Events whose digest is the hash of their own data.
    fn self_event(&self, pcr: u32, event_type: u32, data: Vec<u8>) -> BootEvent {
        let measured = data.clone();
        self.event(pcr, event_type, data, &measured)
    }

    /// The events of one boot, in order.
    pub fn events(&self) -> Vec<BootEvent> {
        let mut events = Vec::new();
        if let Some(locality) = self.startup_locality {
            let mut data = b"StartupLocality\0".to_vec();
            data.push(locality);
            let digests = self
                .banks
                .iter()
                .map(|bank| (*bank, vec![0u8; bank.size()]))
                .collect();
            events.push(BootEvent {
                pcr: 0,
                event_type: EV_NO_ACTION,
                digests,
                data,
            });
        }
        let mut crtm = utf16(&self.crtm_version);
        crtm.extend_from_slice(&[0, 0]);
        events.push(self.self_event(0, EV_S_CRTM_VERSION, crtm));
        for (index, blob) in self.firmware_blobs.iter().enumerate() {
            // UEFI_PLATFORM_FIRMWARE_BLOB: base and length; the digest is over the blob itself.
            let mut data = (0xff00_0000u64 + index as u64 * 0x10_0000)
                .to_le_bytes()
                .to_vec();
            data.extend_from_slice(&(blob.len() as u64).to_le_bytes());
            events.push(self.event(0, EV_EFI_PLATFORM_FIRMWARE_BLOB, data, blob));
        }
        let secure_boot = [u8::from(self.secure_boot)];
        for (guid, name, value) in [
            (&EFI_GLOBAL_VARIABLE, "SecureBoot", secure_boot.as_slice()),
            (&EFI_GLOBAL_VARIABLE, "PK", self.pk.as_slice()),
            (&EFI_GLOBAL_VARIABLE, "KEK", self.kek.as_slice()),
            (&EFI_IMAGE_SECURITY_DATABASE, "db", self.db.as_slice()),
            (&EFI_IMAGE_SECURITY_DATABASE, "dbx", self.dbx.as_slice()),
        ] {
            events.push(self.self_event(
                7,
                EV_EFI_VARIABLE_DRIVER_CONFIG,
                variable_data(guid, name, value),
            ));
        }
        // Firmware closes PCR 7's configuration right away; PCRs 0-6 at ReadyToBoot, below.
        events.push(self.self_event(7, EV_SEPARATOR, vec![0, 0, 0, 0]));
        events.push(self.self_event(
            1,
            EV_EFI_VARIABLE_BOOT,
            variable_data(&EFI_GLOBAL_VARIABLE, "BootOrder", &[1, 0]),
        ));
        let mut boot_entry = vec![1, 0, 0, 0];
        boot_entry.extend_from_slice(&utf16("debian\0"));
        events.push(self.self_event(
            1,
            EV_EFI_VARIABLE_BOOT,
            variable_data(&EFI_GLOBAL_VARIABLE, "Boot0001", &boot_entry),
        ));
        events.push(self.self_event(
            4,
            EV_EFI_ACTION,
            b"Calling EFI Application from Boot Option".to_vec(),
        ));
        for pcr in 0..7 {
            events.push(self.self_event(pcr, EV_SEPARATOR, vec![0, 0, 0, 0]));
        }
        events.push(self.event(
            4,
            EV_EFI_BOOT_SERVICES_APPLICATION,
            image_load(0x7e00_0000, self.shim.len(), "\\EFI\\debian\\shimx64.efi"),
            &self.shim,
        ));
        if self.secure_boot {
            events.push(self.self_event(
                7,
                EV_EFI_VARIABLE_AUTHORITY,
                variable_data(&EFI_IMAGE_SECURITY_DATABASE, "db", &self.db),
            ));
        }
        events.push(self.event(
            4,
            EV_EFI_BOOT_SERVICES_APPLICATION,
            image_load(0x7d00_0000, self.grub.len(), "\\EFI\\debian\\grubx64.efi"),
            &self.grub,
        ));
        // GRUB logs "grub_cmd: <command>" and "kernel_cmdline: <line>" (NUL-terminated) but
        // measures only the command or line itself, without the prefix: as real GRUB 2.06 logs
        // in the testdata do.
        for command in &self.grub_commands {
            let mut data = format!("grub_cmd: {command}").into_bytes();
            data.push(0);
            events.push(self.event(8, EV_IPL, data, command.as_bytes()));
        }
        events.push(self.event(9, EV_IPL, b"/vmlinuz\0".to_vec(), &self.kernel));
        events.push(self.event(9, EV_IPL, b"/initrd.img\0".to_vec(), &self.initrd));
        let mut data = format!("kernel_cmdline: {}", self.kernel_cmdline).into_bytes();
        data.push(0);
        events.push(self.event(8, EV_IPL, data, self.kernel_cmdline.as_bytes()));
        events.push(self.event(
            4,
            EV_EFI_BOOT_SERVICES_APPLICATION,
            image_load(0x7c00_0000, self.kernel.len(), "\\vmlinuz"),
            &self.kernel,
        ));
        events.push(self.self_event(5, EV_EFI_ACTION, b"Exit Boot Services Invocation".to_vec()));
        events.push(self.self_event(
            5,
            EV_EFI_ACTION,
            b"Exit Boot Services Returned with Success".to_vec(),
        ));
        events
    }

    /// The crypto-agile event log for `events`: the Spec ID header event, then TCG_PCR_EVENT2s.
    pub fn encode_log(&self, events: &[BootEvent]) -> Vec<u8> {
        let mut spec_id = b"Spec ID Event03\0".to_vec();
        spec_id.extend_from_slice(&0u32.to_le_bytes()); // platformClass: client
        spec_id.extend_from_slice(&[0, 2, 0, 2]); // version 2.0, errata 0, uintnSize 2 (64-bit)
        spec_id.extend_from_slice(&(self.banks.len() as u32).to_le_bytes());
        for bank in &self.banks {
            spec_id.extend_from_slice(&bank.alg_id().to_le_bytes());
            spec_id.extend_from_slice(&(bank.size() as u16).to_le_bytes());
        }
        spec_id.push(0); // vendorInfoSize

        let mut log = Vec::new();
        log.extend_from_slice(&0u32.to_le_bytes());
        log.extend_from_slice(&EV_NO_ACTION.to_le_bytes());
        log.extend_from_slice(&[0u8; 20]);
        log.extend_from_slice(&(spec_id.len() as u32).to_le_bytes());
        log.extend_from_slice(&spec_id);
        for event in events {
            log.extend_from_slice(&event.pcr.to_le_bytes());
            log.extend_from_slice(&event.event_type.to_le_bytes());
            log.extend_from_slice(&(event.digests.len() as u32).to_le_bytes());
            for (bank, digest) in &event.digests {
                log.extend_from_slice(&bank.alg_id().to_le_bytes());
                log.extend_from_slice(digest);
            }
            log.extend_from_slice(&(event.data.len() as u32).to_le_bytes());
            log.extend_from_slice(&event.data);
        }
        log
    }
}

/// Replays events in software: PCR index -> value, per bank (PCRs start at zero, PCR0 at the
/// StartupLocality if one is logged).
pub fn replay(events: &[BootEvent], bank: Bank) -> std::collections::BTreeMap<u32, Vec<u8>> {
    let mut pcrs = std::collections::BTreeMap::new();
    for event in events {
        if event.event_type == EV_NO_ACTION {
            if let Some(locality) = event
                .data
                .strip_prefix(b"StartupLocality\0")
                .and_then(|d| d.first())
            {
                let mut start = vec![0u8; bank.size()];
                if let Some(last) = start.last_mut() {
                    *last = *locality;
                }
                pcrs.insert(0, start);
            }
            continue;
        }
        if let Some((_, digest)) = event.digests.iter().find(|(b, _)| *b == bank) {
            let old = pcrs
                .entry(event.pcr)
                .or_insert_with(|| vec![0u8; bank.size()]);
            *old = bank.extend(old, digest);
        }
    }
    pcrs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_starts_with_a_sha1_format_spec_id_event() {
        let profile = BootProfile::default_linux().with_banks(&[Bank::Sha256, Bank::Sha1]);
        let log = profile.encode_log(&profile.events());
        assert_eq!(&log[0..4], &[0, 0, 0, 0]);
        assert_eq!(&log[4..8], &EV_NO_ACTION.to_le_bytes());
        assert_eq!(&log[8..28], &[0u8; 20]);
        assert_eq!(&log[32..48], b"Spec ID Event03\0");
        // numberOfAlgorithms, then (sha256, 32) and (sha1, 20).
        assert_eq!(&log[56..60], &2u32.to_le_bytes());
        assert_eq!(&log[60..64], &[0x0b, 0, 32, 0]);
        assert_eq!(&log[64..68], &[0x04, 0, 20, 0]);
    }

    #[test]
    fn events_follow_a_uefi_shim_grub_boot() {
        let events = BootProfile::default_linux().events();
        let position = |pcr: u32, event_type: u32| {
            events
                .iter()
                .position(|e| e.pcr == pcr && e.event_type == event_type)
                .unwrap()
        };
        assert!(position(7, EV_EFI_VARIABLE_DRIVER_CONFIG) < position(7, EV_SEPARATOR));
        assert!(position(7, EV_SEPARATOR) < position(1, EV_EFI_VARIABLE_BOOT));
        assert!(position(4, EV_EFI_ACTION) < position(0, EV_SEPARATOR));
        assert!(position(4, EV_SEPARATOR) < position(4, EV_EFI_BOOT_SERVICES_APPLICATION));
        assert!(position(7, EV_SEPARATOR) < position(7, EV_EFI_VARIABLE_AUTHORITY));
        for pcr in 0..8 {
            let separators = events
                .iter()
                .filter(|e| e.pcr == pcr && e.event_type == EV_SEPARATOR)
                .count();
            assert_eq!(separators, 1, "PCR {pcr}");
        }
        let applications = events
            .iter()
            .filter(|e| e.event_type == EV_EFI_BOOT_SERVICES_APPLICATION)
            .count();
        assert_eq!(applications, 3, "shim, grub, kernel");
        let no_secure_boot = BootProfile::default_linux()
            .with_secure_boot(false)
            .events();
        assert!(
            !no_secure_boot
                .iter()
                .any(|e| e.event_type == EV_EFI_VARIABLE_AUTHORITY)
        );
    }

    #[test]
    fn replay_starts_pcr0_at_the_startup_locality() {
        let profile = BootProfile::default_linux().with_startup_locality(3);
        let events = profile.events();
        assert_eq!(events[0].event_type, EV_NO_ACTION);
        let mut expected = vec![0u8; 32];
        expected[31] = 3;
        for event in events.iter().filter(|e| e.pcr == 0 && e.is_extended()) {
            expected = Bank::Sha256.extend(&expected, &event.digests[0].1);
        }
        assert_eq!(replay(&events, Bank::Sha256)[&0], expected);
    }
}
