//! TCG PC Client UEFI event logs (`binary_bios_measurements`): parsing, typed decoding, replay.
//!
//! - `parse`: the crypto-agile format (TCG_PCR_EVENT2 after a "Spec ID Event03" header) and the
//!   legacy SHA-1 format, with explicit limits; events borrow one shared copy of the log.
//! - `events`: typed decoding of the events a policy needs (variables, image loads, actions,
//!   separators, firmware blobs, IPL strings, GPT...) and the digest-versus-data checks.
//! - `device_path`: UEFI device paths rendered as text.
//! - `signature_list`: the Secure Boot databases' EFI_SIGNATURE_LISTs (PK, KEK, db, dbx).
//! - `replay`: final PCR values per bank (`replay`), or with the events behind each value
//!   (`replay_detailed`); StartupLocality, H-CRTM and named vendor workarounds.
//!
//! Facts from the TCG PC Client Platform Firmware Profile (PFP) 1.05 and UEFI 2.10.

pub mod device_path;
pub mod events;
pub mod parse;
pub mod replay;
pub mod signature_list;

pub use events::{DigestCheck, DigestQuirk, EventData, event_type_name};
pub use parse::{
    DigestIter, Digests, Event, EventLog, EventLogError, LogBytes, LogFormat, SpecId, parse,
};
pub use replay::{
    HP_UNLOGGED_EXIT_BOOT_SERVICES, PCR_COUNT, PcrBanks, Replay, ReplayOptions, ReplayedPcr,
    replay, replay_detailed,
};

/// Largest event log accepted (real logs are 10-200 KiB).
pub const MAX_LOG_SIZE: usize = 16 * 1024 * 1024;
/// Largest single event's data (a big dbx is ~15 KiB; GPT events a few KiB).
pub const MAX_EVENT_DATA: usize = 1024 * 1024;
/// Most events in one log.
pub const MAX_EVENTS: usize = 100_000;
/// Most digests in one event (one per bank).
pub const MAX_DIGESTS: usize = 8;

// Event types (PFP Table 9, Table 10).
pub const EV_PREBOOT_CERT: u32 = 0x0000_0000;
pub const EV_POST_CODE: u32 = 0x0000_0001;
pub const EV_UNUSED: u32 = 0x0000_0002;
pub const EV_NO_ACTION: u32 = 0x0000_0003;
pub const EV_SEPARATOR: u32 = 0x0000_0004;
pub const EV_ACTION: u32 = 0x0000_0005;
pub const EV_EVENT_TAG: u32 = 0x0000_0006;
pub const EV_S_CRTM_CONTENTS: u32 = 0x0000_0007;
pub const EV_S_CRTM_VERSION: u32 = 0x0000_0008;
pub const EV_CPU_MICROCODE: u32 = 0x0000_0009;
pub const EV_PLATFORM_CONFIG_FLAGS: u32 = 0x0000_000a;
pub const EV_TABLE_OF_DEVICES: u32 = 0x0000_000b;
pub const EV_COMPACT_HASH: u32 = 0x0000_000c;
pub const EV_IPL: u32 = 0x0000_000d;
pub const EV_IPL_PARTITION_DATA: u32 = 0x0000_000e;
pub const EV_NONHOST_CODE: u32 = 0x0000_000f;
pub const EV_NONHOST_CONFIG: u32 = 0x0000_0010;
pub const EV_NONHOST_INFO: u32 = 0x0000_0011;
pub const EV_OMIT_BOOT_DEVICE_EVENTS: u32 = 0x0000_0012;
pub const EV_EFI_VARIABLE_DRIVER_CONFIG: u32 = 0x8000_0001;
pub const EV_EFI_VARIABLE_BOOT: u32 = 0x8000_0002;
pub const EV_EFI_BOOT_SERVICES_APPLICATION: u32 = 0x8000_0003;
pub const EV_EFI_BOOT_SERVICES_DRIVER: u32 = 0x8000_0004;
pub const EV_EFI_RUNTIME_SERVICES_DRIVER: u32 = 0x8000_0005;
pub const EV_EFI_GPT_EVENT: u32 = 0x8000_0006;
pub const EV_EFI_ACTION: u32 = 0x8000_0007;
pub const EV_EFI_PLATFORM_FIRMWARE_BLOB: u32 = 0x8000_0008;
pub const EV_EFI_HANDOFF_TABLES: u32 = 0x8000_0009;
pub const EV_EFI_PLATFORM_FIRMWARE_BLOB2: u32 = 0x8000_000a;
pub const EV_EFI_HANDOFF_TABLES2: u32 = 0x8000_000b;
pub const EV_EFI_VARIABLE_BOOT2: u32 = 0x8000_000c;
pub const EV_EFI_GPT_EVENT2: u32 = 0x8000_000d;
pub const EV_EFI_HCRTM_EVENT: u32 = 0x8000_0010;
pub const EV_EFI_VARIABLE_AUTHORITY: u32 = 0x8000_00e0;
pub const EV_EFI_SPDM_FIRMWARE_BLOB: u32 = 0x8000_00e1;
pub const EV_EFI_SPDM_FIRMWARE_CONFIG: u32 = 0x8000_00e2;
