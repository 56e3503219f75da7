//! The contents of the Secure Boot signature databases (PK, KEK, db, dbx): a sequence of
//! EFI_SIGNATURE_LISTs (UEFI 2.10 §32.4.1), decoded exactly as the spec lays them out and
//! refused on any inconsistency.
//!
//! ```text
//! EFI_SIGNATURE_LIST: SignatureType (GUID, 16) | SignatureListSize (u32) |
//!                     SignatureHeaderSize (u32) | SignatureSize (u32) |
//!                     SignatureHeader[SignatureHeaderSize] | Signatures[..][SignatureSize]
//! EFI_SIGNATURE_DATA: SignatureOwner (GUID, 16) | SignatureData[SignatureSize - 16]
//! ```
//!
//! The header is skipped by its declared size, never read as signatures: a decoder that did not
//! skip it let a crafted db inject hashes (go-attestation GHSA-9r4w-jg96-92mv). The spec defines
//! no header for any known type, so a known type with one is refused, as is a known type whose
//! SignatureSize is not the spec's (a SHA-256 entry is 16 + 32 bytes). Every size is checked
//! against the bytes present before anything is kept; entries borrow the input (nothing is
//! allocated per declared size), and no list can be longer than what is left of the input.

use crate::reader::{Problem, ReadError, Reader};

/// SignatureType, SignatureListSize, SignatureHeaderSize, SignatureSize.
const LIST_HEADER: usize = 16 + 4 + 4 + 4;
/// SignatureOwner.
const OWNER: usize = 16;

/// A signature type: its GUID in wire form (the first three fields little-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureType {
    Sha256,
    Sha1,
    Sha224,
    Sha384,
    Sha512,
    Rsa2048,
    Rsa2048Sha256,
    Rsa2048Sha1,
    X509,
    X509Sha256,
    X509Sha384,
    X509Sha512,
    /// A type this decoder does not know: its entries are kept, and judged by nothing.
    Unknown([u8; 16]),
}

/// Known types: wire GUID, and SignatureData's size (`None`: variable, an X.509 certificate).
const KNOWN: [(SignatureType, [u8; 16], Option<usize>); 12] = [
    (
        SignatureType::Sha256,
        guid(
            0xc1c4_1626,
            0x504c,
            0x4092,
            [0xac, 0xa9, 0x41, 0xf9, 0x36, 0x93, 0x43, 0x28],
        ),
        Some(32),
    ),
    (
        SignatureType::Sha1,
        guid(
            0x826c_a512,
            0xcf10,
            0x4ac9,
            [0xb1, 0x87, 0xbe, 0x01, 0x49, 0x66, 0x31, 0xbd],
        ),
        Some(20),
    ),
    (
        SignatureType::Sha224,
        guid(
            0x0b6e_5233,
            0xa65c,
            0x44c9,
            [0x94, 0x07, 0xd9, 0xab, 0x83, 0xbf, 0xc8, 0xbd],
        ),
        Some(28),
    ),
    (
        SignatureType::Sha384,
        guid(
            0xff3e_5307,
            0x9fd0,
            0x48c9,
            [0x85, 0xf1, 0x8a, 0xd5, 0x6c, 0x70, 0x1e, 0x01],
        ),
        Some(48),
    ),
    (
        SignatureType::Sha512,
        guid(
            0x093e_0fae,
            0xa6c4,
            0x4f50,
            [0x9f, 0x1b, 0xd4, 0x1e, 0x2b, 0x89, 0xc1, 0x9a],
        ),
        Some(64),
    ),
    (
        SignatureType::Rsa2048,
        guid(
            0x3c57_66e8,
            0x269c,
            0x4e34,
            [0xaa, 0x14, 0xed, 0x77, 0x6e, 0x85, 0xb3, 0xb6],
        ),
        Some(256),
    ),
    (
        SignatureType::Rsa2048Sha256,
        guid(
            0xe2b3_6190,
            0x879b,
            0x4a3d,
            [0xad, 0x8d, 0xf2, 0xe7, 0xbb, 0xa3, 0x27, 0x84],
        ),
        Some(256),
    ),
    (
        SignatureType::Rsa2048Sha1,
        guid(
            0x67f8_444f,
            0x8743,
            0x48f1,
            [0xa3, 0x28, 0x1e, 0xaa, 0xb8, 0x73, 0x60, 0x80],
        ),
        Some(256),
    ),
    (
        SignatureType::X509,
        guid(
            0xa5c0_59a1,
            0x94e4,
            0x4aa7,
            [0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0, 0x72],
        ),
        None,
    ),
    // EFI_CERT_X509_SHAxxx: the certificate's to-be-signed hash, then EFI_TIME (16 bytes).
    (
        SignatureType::X509Sha256,
        guid(
            0x3bd2_a492,
            0x96c0,
            0x4079,
            [0xb4, 0x20, 0xfc, 0xf9, 0x8e, 0xf1, 0x03, 0xed],
        ),
        Some(32 + 16),
    ),
    (
        SignatureType::X509Sha384,
        guid(
            0x7076_876e,
            0x80c2,
            0x4ee6,
            [0xaa, 0xd2, 0x28, 0xb3, 0x49, 0xa6, 0x86, 0x5b],
        ),
        Some(48 + 16),
    ),
    (
        SignatureType::X509Sha512,
        guid(
            0x446d_bf63,
            0x2502,
            0x4cda,
            [0xbc, 0xfa, 0x24, 0x65, 0xd2, 0xb0, 0xfe, 0x9d],
        ),
        Some(64 + 16),
    ),
];

/// An EFI_GUID in its wire form.
const fn guid(data1: u32, data2: u16, data3: u16, data4: [u8; 8]) -> [u8; 16] {
    let a = data1.to_le_bytes();
    let b = data2.to_le_bytes();
    let c = data3.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], data4[0], data4[1], data4[2], data4[3],
        data4[4], data4[5], data4[6], data4[7],
    ]
}

impl SignatureType {
    fn from_wire(bytes: [u8; 16]) -> Self {
        KNOWN
            .iter()
            .find(|(_, wire, _)| *wire == bytes)
            .map_or(SignatureType::Unknown(bytes), |(kind, _, _)| *kind)
    }

    /// The GUID in wire form.
    pub fn wire(self) -> [u8; 16] {
        match self {
            SignatureType::Unknown(bytes) => bytes,
            known => KNOWN
                .iter()
                .find(|(kind, _, _)| *kind == known)
                .map(|(_, wire, _)| *wire)
                .unwrap_or_default(),
        }
    }

    /// `Some(None)`: a known type of variable size; `None`: an unknown type.
    fn data_size(self) -> Option<Option<usize>> {
        KNOWN
            .iter()
            .find(|(kind, _, _)| *kind == self)
            .map(|(_, _, size)| *size)
    }
}

/// One EFI_SIGNATURE_DATA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signature<'a> {
    pub owner: [u8; 16],
    pub data: &'a [u8],
}

/// One EFI_SIGNATURE_LIST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureList<'a> {
    pub signature_type: SignatureType,
    /// Offset of the list in the variable's data.
    pub offset: usize,
    /// The vendor header (empty for every known type), skipped by its declared size.
    pub header: &'a [u8],
    pub signatures: Vec<Signature<'a>>,
}

/// Decodes a signature database (the value of PK, KEK, db or dbx): zero or more lists filling
/// `data` exactly. Any inconsistency refuses the whole database, with the offset at fault.
pub fn parse(data: &[u8]) -> Result<Vec<SignatureList<'_>>, ReadError> {
    let mut r = Reader::new(data);
    let mut lists = Vec::new();
    while !r.is_empty() {
        let offset = r.offset();
        let signature_type = SignatureType::from_wire(r.array::<16>("SignatureType")?);
        let list_size = as_usize(r.u32_le("SignatureListSize")?);
        let header_size = as_usize(r.u32_le("SignatureHeaderSize")?);
        let signature_size = as_usize(r.u32_le("SignatureSize")?);
        let invalid = |field, detail: String| {
            Err(ReadError {
                offset,
                problem: Problem::Invalid { field, detail },
            })
        };
        let Some(body) = list_size
            .checked_sub(LIST_HEADER)
            .and_then(|rest| rest.checked_sub(header_size))
        else {
            return invalid(
                "SignatureListSize",
                format!(
                    "{list_size} is less than the list header and its {header_size}-byte SignatureHeader"
                ),
            );
        };
        if signature_size < OWNER {
            return invalid(
                "SignatureSize",
                format!("{signature_size} cannot hold the 16-byte SignatureOwner"),
            );
        }
        if !body.is_multiple_of(signature_size) {
            return invalid(
                "SignatureListSize",
                format!(
                    "{body} bytes of signatures are not a whole number of {signature_size}-byte entries"
                ),
            );
        }
        match signature_type.data_size() {
            Some(_) if header_size != 0 => {
                return invalid(
                    "SignatureHeaderSize",
                    format!("{header_size}: the spec defines no header for this type"),
                );
            }
            Some(Some(size)) if signature_size != OWNER + size => {
                return invalid(
                    "SignatureSize",
                    format!(
                        "{signature_size} for a type whose entries are {} bytes",
                        OWNER + size
                    ),
                );
            }
            _ => {}
        }
        // Both lengths are checked against the bytes present before anything is read.
        let header = r.bytes("SignatureHeader", header_size)?;
        let mut entries = r.sub("Signatures", body)?;
        let mut signatures = Vec::new();
        while !entries.is_empty() {
            let owner = entries.array::<16>("SignatureOwner")?;
            let data = entries.bytes("SignatureData", signature_size - OWNER)?;
            signatures.push(Signature { owner, data });
        }
        lists.push(SignatureList {
            signature_type,
            offset,
            header,
            signatures,
        });
    }
    Ok(lists)
}

fn as_usize(value: u32) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

/// Every SHA-256 image hash (EFI_CERT_SHA256 entries) the database lists.
pub fn sha256_hashes<'l, 'a: 'l>(
    lists: &'l [SignatureList<'a>],
) -> impl Iterator<Item = &'a [u8]> + 'l {
    lists
        .iter()
        .filter(|list| list.signature_type == SignatureType::Sha256)
        .flat_map(|list| list.signatures.iter().map(|s| s.data))
}

/// Builds one list, for tests and the harness: `header` and `entries` as given, sizes computed.
pub fn encode_list(
    signature_type: [u8; 16],
    header: &[u8],
    entries: &[([u8; 16], &[u8])],
) -> Vec<u8> {
    let signature_size = entries
        .first()
        .map_or(OWNER, |(_, data)| OWNER + data.len());
    let list_size = LIST_HEADER + header.len() + entries.len() * signature_size;
    let mut out = signature_type.to_vec();
    for size in [list_size, header.len(), signature_size] {
        out.extend_from_slice(&u32::try_from(size).unwrap_or(u32::MAX).to_le_bytes());
    }
    out.extend_from_slice(header);
    for (owner, data) in entries {
        out.extend_from_slice(owner);
        out.extend_from_slice(data);
    }
    out
}

/// EFI_CERT_SHA256_GUID in wire form.
pub const EFI_CERT_SHA256: [u8; 16] = KNOWN[0].1;
/// EFI_CERT_X509_GUID in wire form.
pub const EFI_CERT_X509: [u8; 16] = KNOWN[8].1;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    const OWNER_A: [u8; 16] = [0xaa; 16];
    const REVOKED: [u8; 32] = [0x5a; 32];

    #[test]
    fn well_formed_lists_decode_exactly() {
        let mut db = encode_list(
            EFI_CERT_SHA256,
            &[],
            &[(OWNER_A, &[1; 32]), (OWNER_A, &[2; 32])],
        );
        db.extend(encode_list(
            EFI_CERT_X509,
            &[],
            &[(OWNER_A, b"\x30\x03\x02\x01\x01")],
        ));
        let lists = parse(&db).unwrap();
        assert_eq!(lists.len(), 2);
        assert_eq!(lists[0].signature_type, SignatureType::Sha256);
        assert_eq!(lists[0].signatures.len(), 2);
        assert_eq!(lists[1].signature_type, SignatureType::X509);
        assert_eq!(lists[1].offset, 28 + 2 * 48);
        assert_eq!(lists[1].signatures[0].data, b"\x30\x03\x02\x01\x01");
        let hashes: Vec<&[u8]> = sha256_hashes(&lists).collect();
        assert_eq!(hashes, vec![&[1u8; 32][..], &[2u8; 32][..]]);
        assert!(
            parse(&[]).unwrap().is_empty(),
            "an empty variable holds no list"
        );
    }

    /// GHSA-9r4w-jg96-92mv: a header that, read as signatures, would list a hash.
    #[test]
    fn a_header_is_skipped_and_never_read_as_signatures() {
        let mut injected = OWNER_A.to_vec();
        injected.extend_from_slice(&REVOKED);
        // A known type may not carry one at all...
        let crafted = encode_list(EFI_CERT_SHA256, &injected, &[(OWNER_A, &[1; 32])]);
        let error = parse(&crafted).unwrap_err().to_string();
        assert!(error.contains("SignatureHeaderSize"), "{error}");
        // ...and an unknown type's header is skipped by its declared size.
        let vendor = [0x11; 16];
        let crafted = encode_list(vendor, &injected, &[(OWNER_A, &[1; 32])]);
        let lists = parse(&crafted).unwrap();
        assert_eq!(lists[0].header, injected.as_slice());
        assert_eq!(lists[0].signatures.len(), 1);
        assert_eq!(lists[0].signatures[0].data, &[1; 32]);
        assert_eq!(sha256_hashes(&lists).count(), 0);
    }

    #[test]
    fn sizes_that_disagree_are_refused_with_their_field() {
        let good = encode_list(EFI_CERT_SHA256, &[], &[(OWNER_A, &REVOKED)]);
        let with = |at: usize, value: u32| {
            let mut bytes = good.clone();
            bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
            parse(&bytes).unwrap_err().to_string()
        };
        // SignatureListSize below the header, not a whole number of entries, past the data.
        assert!(with(16, 27).contains("SignatureListSize"));
        assert!(with(16, 28 + 47).contains("whole number"));
        assert!(with(16, 28 + 96).contains("Signatures"));
        assert!(
            with(16, u32::MAX).contains("whole number")
                || with(16, u32::MAX).contains("Signatures")
        );
        // A header larger than the list, or than the data.
        assert!(with(20, 1000).contains("SignatureListSize"));
        // SignatureSize: too small for the owner, zero, or not the type's.
        assert!(with(24, 15).contains("SignatureOwner"));
        assert!(with(24, 0).contains("SignatureOwner"));
        assert!(
            with(24, 16 + 31).contains("SignatureSize")
                || with(24, 16 + 31).contains("whole number")
        );
        let short = encode_list(EFI_CERT_SHA256, &[], &[(OWNER_A, &[1; 31])]);
        assert!(parse(&short).unwrap_err().to_string().contains("48 bytes"));
        // Trailing bytes that are not a list; a truncated list header.
        let mut trailing = good.clone();
        trailing.extend_from_slice(&[0; 5]);
        assert!(parse(&trailing).is_err());
        assert!(parse(&good[..20]).is_err());
    }

    #[test]
    fn guids_are_in_wire_form() {
        // EFI_CERT_SHA256_GUID {C1C41626-504C-4092-ACA9-41F936934328}.
        assert_eq!(
            EFI_CERT_SHA256,
            [
                0x26, 0x16, 0xc4, 0xc1, 0x4c, 0x50, 0x92, 0x40, 0xac, 0xa9, 0x41, 0xf9, 0x36, 0x93,
                0x43, 0x28
            ]
        );
        for (kind, wire, _) in KNOWN {
            assert_eq!(SignatureType::from_wire(wire), kind);
            assert_eq!(kind.wire(), wire);
        }
    }
}
