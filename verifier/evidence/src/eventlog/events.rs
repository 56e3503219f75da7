//! Typed decoding of events, for policies and for people, and the checks of events whose digest
//! must be the hash of their own data.

use serde::Serialize;

use super::device_path::{self, guid, utf16};
use super::parse::Event;
use super::*;
use crate::digest::HashAlgorithm;
use crate::reader::Reader;

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
        /// The value firmware logs when it met an error (PFP §10.4.5: 0x00000001; 0xFFFFFFFF in
        /// older firmware) instead of 0x00000000.
        error: bool,
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
                error: matches!(data, [1, 0, 0, 0] | [0xff, 0xff, 0xff, 0xff]),
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
    ///
    /// Two firmware habits are accepted and named in [`DigestCheck::quirk`], because the digest
    /// still covers everything a policy reads from the event:
    /// - Boot#### variables (EV_EFI_VARIABLE_BOOT/BOOT2) hashed over the variable's value only;
    /// - variable events whose logged data has one more byte than was measured (seen from shim
    ///   and Google's firmware on EV_EFI_VARIABLE_AUTHORITY): the digest is the hash of all but
    ///   the last byte, which still holds the whole UEFI_VARIABLE_DATA.
    pub fn digest_check(&self) -> Option<DigestCheck> {
        let data = self.data.as_slice();
        let is_variable = matches!(
            self.event_type,
            EV_EFI_VARIABLE_DRIVER_CONFIG
                | EV_EFI_VARIABLE_AUTHORITY
                | EV_EFI_VARIABLE_BOOT
                | EV_EFI_VARIABLE_BOOT2
        );
        if !is_variable
            && !matches!(
                self.event_type,
                EV_SEPARATOR | EV_EFI_ACTION | EV_ACTION | EV_EFI_GPT_EVENT | EV_S_CRTM_VERSION
            )
        {
            return None;
        }
        let mut alternatives: Vec<(DigestQuirk, &[u8])> = Vec::new();
        if is_variable && let Some(parsed) = variable_layout(data) {
            if matches!(
                self.event_type,
                EV_EFI_VARIABLE_BOOT | EV_EFI_VARIABLE_BOOT2
            ) {
                alternatives.push((DigestQuirk::VariableValueOnly, parsed.value));
            }
            if let Some(measured) = data.get(..data.len().saturating_sub(1))
                && measured.len() >= parsed.structure_length
            {
                alternatives.push((DigestQuirk::LastByteUnmeasured, measured));
            }
        }
        let mut check = DigestCheck {
            mismatched: Vec::new(),
            quirk: None,
        };
        for (alg, digest) in &self.digests {
            if alg.hash(data) == digest {
                continue;
            }
            match alternatives
                .iter()
                .find(|(_, measured)| alg.hash(measured) == digest)
            {
                Some((quirk, _)) => check.quirk = Some(*quirk),
                None => check.mismatched.push(alg),
            }
        }
        Some(check)
    }
}

/// Where the parts of a UEFI_VARIABLE_DATA lie.
struct VariableLayout<'a> {
    value: &'a [u8],
    /// Bytes the structure itself takes (header, name, value); logged data may have more.
    structure_length: usize,
}

fn variable_layout(data: &[u8]) -> Option<VariableLayout<'_>> {
    let mut r = Reader::new(data);
    r.bytes("guid", 16).ok()?;
    let name_length = usize::try_from(r.u64_le("nameLength").ok()?).ok()?;
    let data_length = usize::try_from(r.u64_le("dataLength").ok()?).ok()?;
    r.bytes("name", name_length.checked_mul(2)?).ok()?;
    let value = r.bytes("data", data_length).ok()?;
    Some(VariableLayout {
        value,
        structure_length: r.offset(),
    })
}

/// A firmware habit under which an event's digest is not the hash of its whole data, yet still
/// covers what the event says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DigestQuirk {
    /// A Boot#### variable hashed over its value only.
    VariableValueOnly,
    /// The logged data has one trailing byte more than was measured.
    LastByteUnmeasured,
}

/// Result of a digest-versus-data check.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DigestCheck {
    /// Banks whose digest is not the hash of the event data.
    pub mismatched: Vec<HashAlgorithm>,
    /// A known firmware habit under which the digests matched.
    pub quirk: Option<DigestQuirk>,
}

impl DigestCheck {
    pub fn holds(&self) -> bool {
        self.mismatched.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse::Digests;
    use super::*;

    fn event(event_type: u32, data: &[u8], measured: &[u8]) -> Event {
        let digest = HashAlgorithm::Sha256.hash(measured);
        let digests = Digests::from_values(&[(HashAlgorithm::Sha256, &digest[..])]).unwrap();
        Event::new(1, 7, event_type, digests, data)
    }

    fn variable_data(name: &str, value: &[u8]) -> Vec<u8> {
        let mut out = vec![0x61u8; 16];
        out.extend_from_slice(&(name.len() as u64).to_le_bytes());
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
        out.extend(name.encode_utf16().flat_map(u16::to_le_bytes));
        out.extend_from_slice(value);
        out
    }

    #[test]
    fn separators_name_firmware_errors() {
        for (data, error) in [
            (&[0u8, 0, 0, 0][..], false),
            (&[1, 0, 0, 0], true),
            (&[0xff; 4], true),
        ] {
            let separator = event(EV_SEPARATOR, data, data);
            assert!(
                matches!(separator.decoded(), EventData::Separator { error: e, .. } if e == error)
            );
            assert!(separator.digest_check().unwrap().holds());
        }
        let forged = event(EV_SEPARATOR, &[0; 4], &[1, 0, 0, 0]);
        assert_eq!(
            forged.digest_check().unwrap().mismatched,
            vec![HashAlgorithm::Sha256]
        );
    }

    #[test]
    fn variable_digests_accept_only_the_named_quirks() {
        let data = variable_data("db", b"certificate");
        let exact = event(EV_EFI_VARIABLE_AUTHORITY, &data, &data);
        assert!(matches!(exact.decoded(), EventData::EfiVariable { ref name, .. } if name == "db"));
        assert_eq!(exact.digest_check().unwrap().quirk, None);

        let mut logged = data.clone();
        logged.push(0xaf);
        let check = event(EV_EFI_VARIABLE_AUTHORITY, &logged, &data)
            .digest_check()
            .unwrap();
        assert!(check.holds());
        assert_eq!(check.quirk, Some(DigestQuirk::LastByteUnmeasured));
        // Dropping a byte of the structure itself is not that quirk.
        let short = &data[..data.len() - 1];
        let truncated = event(EV_EFI_VARIABLE_AUTHORITY, &data, short);
        assert!(!truncated.digest_check().unwrap().holds());

        let boot = event(EV_EFI_VARIABLE_BOOT, &data, b"certificate");
        assert_eq!(
            boot.digest_check().unwrap().quirk,
            Some(DigestQuirk::VariableValueOnly)
        );
        let not_boot = event(EV_EFI_VARIABLE_DRIVER_CONFIG, &data, b"certificate");
        assert!(!not_boot.digest_check().unwrap().holds());
    }
}
