//! UEFI device paths (UEFI 2.10 §10.3) rendered as the text firmware shells print, for the node
//! types boot policies meet; any other node is shown as `Path(type,subtype,hex)`.

use crate::reader::Reader;

/// Most nodes rendered before giving up (a real path has fewer than ten).
const MAX_NODES: usize = 64;

/// Formats a GUID from its little-endian wire form.
pub fn guid(bytes: &[u8]) -> String {
    match bytes {
        [a0, a1, a2, a3, b0, b1, c0, c1, rest @ ..] if rest.len() == 8 => format!(
            "{:08X}-{:04X}-{:04X}-{}-{}",
            u32::from_le_bytes([*a0, *a1, *a2, *a3]),
            u16::from_le_bytes([*b0, *b1]),
            u16::from_le_bytes([*c0, *c1]),
            hex::encode_upper(rest.get(..2).unwrap_or_default()),
            hex::encode_upper(rest.get(2..).unwrap_or_default())
        ),
        _ => hex::encode(bytes),
    }
}

/// Decodes UTF-16LE up to the first NUL (lossy).
pub fn utf16(bytes: &[u8]) -> String {
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .filter_map(|pair| pair.try_into().ok().map(u16::from_le_bytes))
        .take_while(|unit| *unit != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

/// A vendor-defined node: its GUID, and any vendor data in hex.
fn vendor(name: &str, data: &[u8]) -> String {
    match (data.get(..16), data.get(16..)) {
        (Some(id), Some([])) => format!("{name}({})", guid(id)),
        (Some(id), Some(rest)) => format!("{name}({},{})", guid(id), hex::encode(rest)),
        _ => format!("{name}({})", hex::encode(data)),
    }
}

fn node(kind: u8, subtype: u8, data: &[u8]) -> String {
    let mut r = Reader::new(data);
    let rendered = match (kind, subtype) {
        (0x01, 0x01) => (|| Some(format!("Pci(0x{:x},0x{:x})", data.get(1)?, data.first()?)))(),
        (0x02, 0x01) => (|| {
            let hid = r.u32_le("hid").ok()?;
            let uid = r.u32_le("uid").ok()?;
            Some(if hid == 0x0a03_41d0 {
                format!("PciRoot(0x{uid:x})")
            } else {
                format!("Acpi(0x{hid:08x},0x{uid:x})")
            })
        })(),
        (0x03, 0x05) => (|| Some(format!("USB(0x{:x},0x{:x})", data.first()?, data.get(1)?)))(),
        (0x03, 0x12) => (|| {
            Some(format!(
                "Sata(0x{:x},0x{:x},0x{:x})",
                r.u16_le("hba").ok()?,
                r.u16_le("pm").ok()?,
                r.u16_le("lun").ok()?
            ))
        })(),
        (0x03, 0x17) => (|| {
            let nsid = r.u32_le("nsid").ok()?;
            Some(format!(
                "NVMe(0x{nsid:x},{})",
                hex::encode_upper(r.bytes("eui", 8).ok()?)
            ))
        })(),
        (0x03, 0x02) => (|| {
            Some(format!(
                "Scsi(0x{:x},0x{:x})",
                r.u16_le("pun").ok()?,
                r.u16_le("lun").ok()?
            ))
        })(),
        (0x03, 0x0b) => (|| Some(format!("MAC({})", hex::encode(r.bytes("mac", 6).ok()?))))(),
        (0x04, 0x01) => (|| {
            let number = r.u32_le("partition").ok()?;
            let start = r.u64_le("start").ok()?;
            let size = r.u64_le("size").ok()?;
            let signature = r.bytes("signature", 16).ok()?;
            let format = r.u8("format").ok()?;
            let kind = r.u8("signatureType").ok()?;
            Some(match (format, kind) {
                (2, 2) => format!(
                    "HD({number},GPT,{},0x{start:x},0x{size:x})",
                    guid(signature)
                ),
                (1, 1) => format!(
                    "HD({number},MBR,0x{:08x},0x{start:x},0x{size:x})",
                    u32::from_le_bytes(signature.get(..4)?.try_into().ok()?)
                ),
                _ => format!("HD({number},0x{start:x},0x{size:x})"),
            })
        })(),
        (0x04, 0x04) => Some(format!("File({})", utf16(data))),
        (0x01, 0x03) => (|| {
            let memory_type = r.u32_le("type").ok()?;
            let start = r.u64_le("start").ok()?;
            let end = r.u64_le("end").ok()?;
            Some(format!(
                "MemoryMapped(0x{memory_type:x},0x{start:x},0x{end:x})"
            ))
        })(),
        (0x01, 0x04) => Some(vendor("VenHw", data)),
        (0x01, 0x05) => (|| Some(format!("Ctrl(0x{:x})", r.u32_le("controller").ok()?)))(),
        (0x02, 0x03) => (|| Some(format!("AcpiAdr(0x{:x})", r.u32_le("adr").ok()?)))(),
        (0x03, 0x01) => (|| {
            Some(format!(
                "Ata(0x{:x},0x{:x},0x{:x})",
                r.u8("primary").ok()?,
                r.u8("slave").ok()?,
                r.u16_le("lun").ok()?
            ))
        })(),
        (0x03, 0x0a) => Some(vendor("VenMsg", data)),
        (0x03, 0x0c) => (|| {
            let local = r.bytes("local", 4).ok()?;
            let remote = r.bytes("remote", 4).ok()?;
            let dotted = |b: &[u8]| b.iter().map(u8::to_string).collect::<Vec<_>>().join(".");
            Some(format!("IPv4({},{})", dotted(remote), dotted(local)))
        })(),
        (0x03, 0x18) => Some(format!("Uri({})", String::from_utf8_lossy(data))),
        (0x04, 0x02) => (|| {
            Some(format!(
                "CDROM(0x{:x},0x{:x},0x{:x})",
                r.u32_le("entry").ok()?,
                r.u64_le("start").ok()?,
                r.u64_le("size").ok()?
            ))
        })(),
        (0x04, 0x03) => Some(vendor("VenMedia", data)),
        (0x05, 0x01) => (|| {
            let device_type = r.u16_le("deviceType").ok()?;
            r.u16_le("statusFlag").ok()?;
            let description = String::from_utf8_lossy(r.rest());
            Some(format!(
                "BBS(0x{device_type:x},{})",
                description.trim_end_matches('\0')
            ))
        })(),
        (0x04, 0x06) => Some(format!("FvFile({})", guid(data))),
        (0x04, 0x07) => Some(format!("Fv({})", guid(data))),
        (0x04, 0x08) => (|| {
            Some(format!(
                "Offset(0x{:x},0x{:x})",
                r.u64_le("s").ok()?,
                r.u64_le("e").ok()?
            ))
        })(),
        _ => None,
    };
    rendered.unwrap_or_else(|| format!("Path({kind},{subtype},{})", hex::encode(data)))
}

/// Renders a device path; instances are separated by `,`, nodes by `/`.
pub fn render(bytes: &[u8]) -> String {
    let mut out = String::new();
    let mut r = Reader::new(bytes);
    for _ in 0..MAX_NODES {
        let (Ok(kind), Ok(subtype), Ok(length)) =
            (r.u8("type"), r.u8("subtype"), r.u16_le("length"))
        else {
            break;
        };
        let Some(data_length) = usize::from(length).checked_sub(4) else {
            out.push_str("/<bad node length>");
            break;
        };
        let Ok(data) = r.bytes("node", data_length) else {
            out.push_str("/<truncated>");
            break;
        };
        match (kind, subtype) {
            (0x7f, 0xff) => break,
            (0x7f, 0x01) => out.push(','),
            _ => {
                if !out.is_empty() && !out.ends_with(',') {
                    out.push('/');
                }
                out.push_str(&node(kind, subtype, data));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_common_nodes_and_survives_garbage() {
        let mut path = vec![0x02, 0x01, 0x0c, 0x00, 0xd0, 0x41, 0x03, 0x0a, 0, 0, 0, 0];
        path.extend_from_slice(&[0x01, 0x01, 0x06, 0x00, 0x01, 0x1f]);
        let name: Vec<u8> = "\\EFI\\BOOT\\BOOTX64.EFI\0"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        path.extend_from_slice(&[0x04, 0x04]);
        path.extend_from_slice(&((name.len() + 4) as u16).to_le_bytes());
        path.extend_from_slice(&name);
        path.extend_from_slice(&[0x7f, 0xff, 0x04, 0x00]);
        assert_eq!(
            render(&path),
            "PciRoot(0x0)/Pci(0x1f,0x1)/File(\\EFI\\BOOT\\BOOTX64.EFI)"
        );
        for len in 0..path.len() {
            let _ = render(&path[..len]);
        }
        assert!(render(&[0x01, 0x01, 0x02, 0x00]).contains("bad node length"));
    }
}
