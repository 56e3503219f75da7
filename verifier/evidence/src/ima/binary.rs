//! The binary list (`binary_runtime_measurements`, host-endian = little endian on the machines
//! we attest). Per entry: u32 PCR, template hash, u32 name length + name, then the template data:
//! u32 length + fields (each u32 length + bytes); the legacy `ima` template instead writes a bare
//! 20-byte digest and a u32-length name. The template hash is 20 bytes (SHA-1) in the classic list
//! and the bank's size in the per-bank lists of newer kernels (`..._sha256`, ...): the size is
//! detected from the first entry.

use crate::reader::{Problem, ReadError, Reader};

use super::template::{
    IMA_NAME_MAX, ImaEntry, ImaLog, Template, ima_hashed, split_digest_ng, text_field,
};
use super::{ImaError, MAX_DIGEST, MAX_ENTRIES, MAX_LIST_SIZE, MAX_TEMPLATE_DATA};

/// Template names are short ("ima-sig"); anything longer is not a list we understand.
const MAX_TEMPLATE_NAME: usize = 32;
/// Template hash sizes, most common first.
const HASH_SIZES: [usize; 4] = [20, 32, 48, 64];
/// Fields per template data; the templates we know have at most three.
const MAX_FIELDS: usize = 16;

/// Parses the binary list. `first_index` is the list position of the first entry. A last entry
/// cut short (a list read while the kernel appended to it) is reported in `trailing_bytes`; any
/// other malformation is an error naming the entry and the byte offset within `bytes`.
pub fn parse_binary(bytes: &[u8], first_index: u64) -> Result<ImaLog, ImaError> {
    parse_binary_with_hash_size(bytes, first_index, detect_hash_size(bytes))
}

/// As [`parse_binary`], with the template-hash size given (20 for the classic list, 32 for
/// `binary_runtime_measurements_sha256`, ...).
pub fn parse_binary_with_hash_size(
    bytes: &[u8],
    first_index: u64,
    hash_size: usize,
) -> Result<ImaLog, ImaError> {
    if bytes.len() > MAX_LIST_SIZE {
        return Err(ImaError::TooLarge);
    }
    if !HASH_SIZES.contains(&hash_size) {
        return Err(ImaError::Binary {
            index: first_index,
            source: Reader::new(bytes).invalid("templateHash", format!("size {hash_size}")),
        });
    }
    let mut log = ImaLog::default();
    let mut r = Reader::new(bytes);
    while !r.is_empty() {
        if log.entries.len() >= MAX_ENTRIES {
            return Err(ImaError::TooManyEntries);
        }
        let index = first_index + log.entries.len() as u64;
        let start = r.remaining();
        let mut attempt = r.clone();
        match read_entry(&mut attempt, index, hash_size) {
            Ok(entry) => {
                log.entries.push(entry);
                r = attempt;
            }
            // Only the entry's outer frame running past the end is a list still being written;
            // `read_entry` reports malformations inside a complete frame as `Invalid`.
            Err(error) if matches!(error.problem, Problem::Truncated { .. }) => {
                log.trailing_bytes = start;
                break;
            }
            Err(source) => return Err(ImaError::Binary { index, source }),
        }
    }
    Ok(log)
}

/// The template-hash size for which the first entry's name length and name make sense. Falls
/// back to 20 when no size fits (the error then comes from parsing).
fn detect_hash_size(bytes: &[u8]) -> usize {
    HASH_SIZES
        .into_iter()
        .find(|size| {
            let mut r = Reader::new(bytes);
            let name = r
                .bytes("header", 4 + size)
                .and_then(|_| r.u32_le("templateNameLength"))
                .and_then(|length| {
                    r.bytes_limited("templateName", length as usize, MAX_TEMPLATE_NAME)
                });
            name.ok()
                .and_then(|n| std::str::from_utf8(n).ok())
                .and_then(Template::from_name)
                .is_some()
        })
        .unwrap_or(20)
}

/// Turns a truncation inside a complete template-data frame into an `Invalid` error at the same
/// offset: the frame's own length said the bytes were there.
fn inside_frame(error: ReadError) -> ReadError {
    match error.problem {
        Problem::Truncated {
            field,
            needed,
            available,
        } => ReadError {
            offset: error.offset,
            problem: Problem::Invalid {
                field,
                detail: format!("needs {needed} bytes, the template data holds {available}"),
            },
        },
        _ => error,
    }
}

fn read_entry(r: &mut Reader<'_>, index: u64, hash_size: usize) -> Result<ImaEntry, ReadError> {
    let pcr = r.u32_le("pcr")?;
    let logged_hash = r.bytes("templateHash", hash_size)?.to_vec();
    let name_length = r.u32_le("templateNameLength")? as usize;
    let name_bytes = r.bytes_limited("templateName", name_length, MAX_TEMPLATE_NAME)?;
    let template = std::str::from_utf8(name_bytes)
        .ok()
        .and_then(Template::from_name)
        .ok_or_else(|| {
            r.invalid(
                "templateName",
                format!(
                    "unsupported template {:?}",
                    String::from_utf8_lossy(name_bytes)
                        .escape_debug()
                        .to_string()
                ),
            )
        })?;
    if template == Template::Ima {
        // The legacy template has no data length: a SHA-1 digest, then the name.
        let digest = r.bytes("digest", 20)?.to_vec();
        let length = r.u32_le("nameLength")? as usize;
        let path = text_field(r.bytes_limited("name", length, IMA_NAME_MAX)?);
        return Ok(ImaEntry {
            index,
            pcr,
            template,
            logged_hash,
            digest_algorithm: "sha1".into(),
            hashed: ima_hashed(&digest, &path),
            file_digest: digest,
            path,
            signature: None,
            buffer: None,
        });
    }
    // The length is checked before the frame is taken, so a hostile length at the end of the
    // input is an error, not a "partial entry".
    let length = r.u32_le("templateDataLength")? as usize;
    if length > MAX_TEMPLATE_DATA {
        return Err(r.error(Problem::TooLarge {
            field: "templateDataLength",
            declared: length,
            limit: MAX_TEMPLATE_DATA,
        }));
    }
    let mut data = r.sub("templateData", length)?;
    let hashed = data.rest().to_vec();
    let mut fields = Vec::new();
    while !data.is_empty() {
        if fields.len() >= MAX_FIELDS {
            return Err(data.invalid("templateData", format!("more than {MAX_FIELDS} fields")));
        }
        let size = data.u32_le("fieldLength").map_err(inside_frame)? as usize;
        fields.push(data.bytes("field", size).map_err(inside_frame)?);
    }
    let d_ng = fields.first().copied().unwrap_or_default();
    let (digest_algorithm, file_digest) = split_digest_ng(d_ng)
        .filter(|(algorithm, digest)| algorithm.len() <= 16 && digest.len() <= MAX_DIGEST)
        .ok_or_else(|| r.invalid("d-ng", "not an algorithm-prefixed digest"))?;
    let path = fields.get(1).map(|f| text_field(f)).unwrap_or_default();
    let extra = fields.get(2).map(|f| f.to_vec());
    let (signature, buffer) = template.split_extra(extra);
    Ok(ImaEntry {
        index,
        pcr,
        template,
        logged_hash,
        digest_algorithm,
        file_digest,
        path,
        signature,
        buffer,
        hashed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ima::template::ng_template_data;

    fn entry(hash_size: usize, data: &[u8]) -> Vec<u8> {
        let mut out = 10u32.to_le_bytes().to_vec();
        out.extend(vec![0x42; hash_size]);
        out.extend(6u32.to_le_bytes());
        out.extend(b"ima-ng");
        out.extend((data.len() as u32).to_le_bytes());
        out.extend(data);
        out
    }

    #[test]
    fn per_bank_lists_are_detected_by_their_hash_size() {
        let data = ng_template_data(Template::ImaNg, "sha256", &[7; 32], "/bin/true", None);
        for size in HASH_SIZES {
            let list = [entry(size, &data), entry(size, &data)].concat();
            let log = parse_binary(&list, 3).unwrap();
            assert_eq!(log.entries.len(), 2, "size {size}");
            assert_eq!(log.entries[1].index, 4);
            assert_eq!(log.entries[0].logged_hash.len(), size);
            assert_eq!(log.entries[0].path, "/bin/true");
            assert_eq!(log.entries[0].hashed, data);
        }
    }

    #[test]
    fn a_bad_field_length_inside_a_complete_entry_is_an_error_not_a_tail() {
        let mut data = ng_template_data(Template::ImaNg, "sha256", &[7; 32], "/a", None);
        data[0] = 0xff; // d-ng claims more bytes than the template data holds
        let good = ng_template_data(Template::ImaNg, "sha256", &[7; 32], "/b", None);
        let list = [entry(20, &good), entry(20, &data), entry(20, &good)].concat();
        let err = parse_binary(&list, 0).unwrap_err();
        assert!(matches!(err, ImaError::Binary { index: 1, .. }), "{err}");
    }

    #[test]
    fn a_hostile_data_length_at_the_end_is_an_error() {
        let mut list = entry(20, &[]);
        let at = list.len() - 4;
        list[at..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_binary(&list, 0).is_err());
        // An honest length whose bytes have not all arrived is a tail.
        let data = ng_template_data(Template::ImaNg, "sha1", &[7; 20], "/a", None);
        let list = entry(20, &data);
        let log = parse_binary(&list[..list.len() - 3], 0).unwrap();
        assert_eq!((log.entries.len(), log.trailing_bytes), (0, list.len() - 3));
    }
}
