//! Typed decoding of events, for policies and for people, and the checks of events whose digest
//! must be the hash of their own data.

use serde::Serialize;

use super::device_path::{self, guid, utf16};
use super::parse::Event;
use super::*;
use crate::evidence::digest::HashAlgorithm;
use crate::evidence::reader::Reader;

/// The name of an event type (EV_*), or its number in hex.
pub fn event_type_name(event_type: u32) -> String {
    let name = match event_type {
        EV_PREBOOT_CERT => "EV_PREBOOT_CERT",
        EV_POST_CODE => "EV_POST_CODE",
        EV_UNUSED => "EV_UNUSED",
        EV_NO_ACTION => "EV_NO_ACTION",
        EV_SEPARATOR => "EV_SEPARATOR",
        EV_ACTION => "EV_ACTION",
        EV_EVENT_TAG => "EV_EVENT_TAG",
        EV_S_CRTM_CONTENTS => "EV_S_CRTM_CONTENTS",
        EV_S_CRTM_VERSION => "EV_S_CRTM_VERSION",
        EV_CPU_MICROCODE => "EV_CPU_MICROCODE",
        EV_PLATFORM_CONFIG_FLAGS => "EV_PLATFORM_CONFIG_FLAGS",
        EV_TABLE_OF_DEVICES => "EV_TABLE_OF_DEVICES",
        EV_COMPACT_HASH => "EV_COMPACT_HASH",
        EV_IPL => "EV_IPL",
        EV_IPL_PARTITION_DATA => "EV_IPL_PARTITION_DATA",
        EV_NONHOST_CODE => "EV_NONHOST_CODE",
        EV_NONHOST_CONFIG => "EV_NONHOST_CONFIG",
        EV_NONHOST_INFO => "EV_NONHOST_INFO",
        EV_OMIT_BOOT_DEVICE_EVENTS => "EV_OMIT_BOOT_DEVICE_EVENTS",
        EV_EFI_VARIABLE_DRIVER_CONFIG => "EV_EFI_VARIABLE_DRIVER_CONFIG",
        EV_EFI_VARIABLE_BOOT => "EV_EFI_VARIABLE_BOOT",
        EV_EFI_BOOT_SERVICES_APPLICATION => "EV_EFI_BOOT_SERVICES_APPLICATION",
        EV_EFI_BOOT_SERVICES_DRIVER => "EV_EFI_BOOT_SERVICES_DRIVER",
        EV_EFI_RUNTIME_SERVICES_DRIVER => "EV_EFI_RUNTIME_SERVICES_DRIVER",
        EV_EFI_GPT_EVENT => "EV_EFI_GPT_EVENT",
        EV_EFI_ACTION => "EV_EFI_ACTION",
        EV_EFI_PLATFORM_FIRMWARE_BLOB => "EV_EFI_PLATFORM_FIRMWARE_BLOB",
        EV_EFI_HANDOFF_TABLES => "EV_EFI_HANDOFF_TABLES",
        EV_EFI_PLATFORM_FIRMWARE_BLOB2 => "EV_EFI_PLATFORM_FIRMWARE_BLOB2",
        EV_EFI_HANDOFF_TABLES2 => "EV_EFI_HANDOFF_TABLES2",
        EV_EFI_VARIABLE_BOOT2 => "EV_EFI_VARIABLE_BOOT2",
        EV_EFI_GPT_EVENT2 => "EV_EFI_GPT_EVENT2",
        EV_EFI_HCRTM_EVENT => "EV_EFI_HCRTM_EVENT",
        EV_EFI_VARIABLE_AUTHORITY => "EV_EFI_VARIABLE_AUTHORITY",
        EV_EFI_SPDM_FIRMWARE_BLOB => "EV_EFI_SPDM_FIRMWARE_BLOB",
        EV_EFI_SPDM_FIRMWARE_CONFIG => "EV_EFI_SPDM_FIRMWARE_CONFIG",
        other => return format!("0x{other:08x}"),
    };
    name.to_string()
}

/// What an event's data says, decoded for the event types a policy needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventData {
    SpecId,
    StartupLocality {
        locality: u8,
    },
    /// Another EV_NO_ACTION (e.g. an SP800-155 reference-manifest event): never extended.
    NoAction {
        signature: String,
    },
    Separator {
        value: String,
    },
    EfiVariable {
        guid: String,
        name: String,
        data_hex: String,
        data_size: usize,
    },
    ImageLoad {
        location: u64,
        length: u64,
        link_time_address: u64,
        device_path: String,
    },
    Action {
        text: String,
    },
    FirmwareBlob {
        base: u64,
        length: u64,
    },
    FirmwareBlob2 {
        description: String,
        base: u64,
        length: u64,
    },
    PostCode {
        text: String,
    },
    Ipl {
        text: String,
    },
    Gpt {
        disk_guid: String,
        partitions: u64,
    },
    HandoffTables {
        tables: u64,
    },
    CrtmVersion {
        version: String,
    },
    Raw {
        data_hex: String,
    },
}

/// Text from bytes that should be ASCII/UTF-8, with trailing NULs removed.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .trim_end_matches('\0')
        .to_string()
}

fn raw(data: &[u8]) -> EventData {
    // Big blobs are summarised; the raw bytes stay on the event.
    let shown = data.get(..data.len().min(256)).unwrap_or_default();
    EventData::Raw {
        data_hex: hex::encode(shown),
    }
}

/// UEFI_VARIABLE_DATA: (guid, name, data).
pub fn variable(data: &[u8]) -> Option<(String, String, &[u8])> {
    let mut r = Reader::new(data);
    let guid_bytes = r.bytes("guid", 16).ok()?;
    let name_length = usize::try_from(r.u64_le("nameLength").ok()?).ok()?;
    let data_length = usize::try_from(r.u64_le("dataLength").ok()?).ok()?;
    let name = r.bytes("name", name_length.checked_mul(2)?).ok()?;
    let value = r.bytes("data", data_length).ok()?;
    Some((guid(guid_bytes), utf16(name), value))
}

impl Event {
    /// The decoded data. Never fails: what cannot be decoded is shown raw.
    pub fn decoded(&self) -> EventData {
        let data = self.data.as_slice();
        let mut r = Reader::new(data);
        let decoded = match self.event_type {
            EV_NO_ACTION if self.index == 0 && data.starts_with(b"Spec ID Event03") => {
                Some(EventData::SpecId)
            }
            EV_NO_ACTION => Some(match data.strip_prefix(b"StartupLocality\0") {
                Some([locality]) => EventData::StartupLocality {
                    locality: *locality,
                },
                _ => {
                    let end = data
                        .iter()
                        .position(|b| *b == 0)
                        .unwrap_or(data.len().min(32));
                    EventData::NoAction {
                        signature: text(data.get(..end).unwrap_or_default()),
                    }
                }
            }),
            EV_SEPARATOR => Some(EventData::Separator {
                value: hex::encode(data),
            }),
            EV_EFI_VARIABLE_DRIVER_CONFIG
            | EV_EFI_VARIABLE_BOOT
            | EV_EFI_VARIABLE_BOOT2
            | EV_EFI_VARIABLE_AUTHORITY => {
                variable(data).map(|(guid, name, value)| EventData::EfiVariable {
                    guid,
                    name,
                    data_size: value.len(),
                    data_hex: hex::encode(value.get(..value.len().min(256)).unwrap_or_default()),
                })
            }
            EV_EFI_BOOT_SERVICES_APPLICATION
            | EV_EFI_BOOT_SERVICES_DRIVER
            | EV_EFI_RUNTIME_SERVICES_DRIVER => (|| {
                let location = r.u64_le("location").ok()?;
                let length = r.u64_le("length").ok()?;
                let link_time_address = r.u64_le("linkTimeAddress").ok()?;
                let path_length = usize::try_from(r.u64_le("devicePathLength").ok()?).ok()?;
                let path = r.bytes("devicePath", path_length).ok()?;
                Some(EventData::ImageLoad {
                    location,
                    length,
                    link_time_address,
                    device_path: device_path::render(path),
                })
            })(),
            EV_EFI_ACTION | EV_ACTION => Some(EventData::Action { text: text(data) }),
            EV_EFI_PLATFORM_FIRMWARE_BLOB => (|| {
                Some(EventData::FirmwareBlob {
                    base: r.u64_le("base").ok()?,
                    length: r.u64_le("length").ok()?,
                })
            })(),
            EV_EFI_PLATFORM_FIRMWARE_BLOB2 => (|| {
                let size = usize::from(r.u8("descriptionSize").ok()?);
                let description = text(r.bytes("description", size).ok()?);
                Some(EventData::FirmwareBlob2 {
                    description,
                    base: r.u64_le("base").ok()?,
                    length: r.u64_le("length").ok()?,
                })
            })(),
            EV_POST_CODE => Some(if data.len() == 16 {
                let base = r.u64_le("base").unwrap_or_default();
                let length = r.u64_le("length").unwrap_or_default();
                EventData::FirmwareBlob { base, length }
            } else {
                EventData::PostCode { text: text(data) }
            }),
            EV_IPL => Some(EventData::Ipl { text: text(data) }),
            EV_EFI_GPT_EVENT => (|| {
                // UEFI_PARTITION_TABLE_HEADER (92 bytes), then a u64 count of partitions.
                let header = r.bytes("header", 92).ok()?;
                let disk_guid = guid(header.get(56..72)?);
                Some(EventData::Gpt {
                    disk_guid,
                    partitions: r.u64_le("numberOfPartitions").ok()?,
                })
            })(),
            EV_EFI_HANDOFF_TABLES => (|| {
                Some(EventData::HandoffTables {
                    tables: r.u64_le("numberOfTables").ok()?,
                })
            })(),
            EV_S_CRTM_VERSION => Some(EventData::CrtmVersion {
                version: if data.len() >= 2
                    && data.len().is_multiple_of(2)
                    && data.get(1) == Some(&0)
                {
                    utf16(data)
                } else {
                    text(data)
                },
            }),
            _ => None,
        };
        decoded.unwrap_or_else(|| raw(data))
    }

    /// For events whose digest must be the hash of their own data (PFP §10.4): the banks where it
    /// is not. `None` for event types that measure something else (an image, a blob).
    pub fn digest_check(&self) -> Option<DigestCheck> {
        let variable_data_only = match self.event_type {
            EV_SEPARATOR
            | EV_EFI_ACTION
            | EV_ACTION
            | EV_EFI_VARIABLE_DRIVER_CONFIG
            | EV_EFI_VARIABLE_AUTHORITY
            | EV_EFI_GPT_EVENT
            | EV_S_CRTM_VERSION => None,
            // Some firmware measures only the variable's value for Boot#### variables.
            EV_EFI_VARIABLE_BOOT | EV_EFI_VARIABLE_BOOT2 => {
                variable(&self.data).map(|(_, _, value)| value)
            }
            _ => return None,
        };
        let mismatched: Vec<HashAlgorithm> = self
            .digests
            .iter()
            .filter(|(alg, digest)| {
                alg.hash(&self.data) != *digest
                    && variable_data_only.is_none_or(|value| alg.hash(value) != *digest)
            })
            .map(|(alg, _)| *alg)
            .collect();
        Some(DigestCheck { mismatched })
    }
}

/// Result of a digest-versus-data check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestCheck {
    /// Banks whose digest is not the hash of the event data.
    pub mismatched: Vec<HashAlgorithm>,
}

impl DigestCheck {
    pub fn holds(&self) -> bool {
        self.mismatched.is_empty()
    }
}
