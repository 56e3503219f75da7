//! The two IMA list formats. Both produce entries holding the bytes the kernel hashed into the
//! template hash, so replay treats them alike.

use crate::evidence::reader::{ReadError, Reader};

use super::{MAX_ENTRIES, MAX_LINE, MAX_LIST_SIZE, MAX_PATH, MAX_TEMPLATE_DATA};

/// Legacy `ima` template: the name is zero-padded to this length before hashing.
const IMA_NAME_PADDED: usize = 256;
const MAX_TEMPLATE_NAME: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ImaError {
    #[error("line {line}: {detail}")]
    Line { line: usize, detail: String },
    #[error("entry {index}: {source}")]
    Binary { index: usize, source: ReadError },
    #[error("the list is larger than {MAX_LIST_SIZE} bytes")]
    TooLarge,
    #[error("more than {MAX_ENTRIES} entries")]
    TooManyEntries,
}

/// The template an entry was logged with.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Template {
    Ima,
    ImaNg,
    ImaSig,
    ImaBuf,
}

impl Template {
    fn from_name(name: &str) -> Option<Self> {
        match name {
            "ima" => Some(Self::Ima),
            "ima-ng" => Some(Self::ImaNg),
            "ima-sig" => Some(Self::ImaSig),
            "ima-buf" => Some(Self::ImaBuf),
            _ => None,
        }
    }

    /// The optional last field is a signature for `ima-sig` and a buffer for `ima-buf`.
    fn split_extra(&self, extra: Option<Vec<u8>>) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
        match self {
            Self::ImaSig => (extra, None),
            Self::ImaBuf => (None, extra),
            _ => (None, None),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Ima => "ima",
            Self::ImaNg => "ima-ng",
            Self::ImaSig => "ima-sig",
            Self::ImaBuf => "ima-buf",
        }
    }
}

/// One measurement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImaEntry {
    /// Position in the whole list (the verifier's offset).
    pub index: u64,
    pub pcr: u32,
    pub template: Template,
    /// The template hash as logged (SHA-1 in binary lists; SHA-1 or SHA-256 in ASCII lists).
    pub logged_hash: Vec<u8>,
    /// The file digest's algorithm name as logged ("sha256", "sha1", ... ; "sha1" for `ima`).
    pub digest_algorithm: String,
    pub file_digest: Vec<u8>,
    pub path: String,
    pub signature: Option<Vec<u8>>,
    pub buffer: Option<Vec<u8>>,
    /// The bytes the template hash is computed over.
    pub hashed: Vec<u8>,
}

impl ImaEntry {
    /// A violation: the kernel could not measure the file reliably (open-writers, ToMToU).
    pub fn is_violation(&self) -> bool {
        self.logged_hash.iter().all(|b| *b == 0)
    }
}

/// A parsed batch of entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImaLog {
    pub entries: Vec<ImaEntry>,
    /// Bytes after the last complete entry (a list read while the kernel appended to it).
    pub trailing_bytes: usize,
}

fn field(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 4);
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
    out
}

/// The d-ng field: "<algorithm>:\0<digest>" (with "sha1"/"md5" digests the kernel omits the
/// prefix only in the legacy `ima` template, never in d-ng).
fn digest_ng(algorithm: &str, digest: &[u8]) -> Vec<u8> {
    let mut data = format!("{algorithm}:").into_bytes();
    data.push(0);
    data.extend_from_slice(digest);
    data
}

fn name_ng(path: &str) -> Vec<u8> {
    let mut data = path.as_bytes().to_vec();
    data.push(0);
    data
}

/// The legacy `ima` template's hash input: SHA-1 digest || name zero-padded to 256 bytes.
fn ima_hashed(digest: &[u8], path: &str) -> Vec<u8> {
    let mut data = digest.to_vec();
    let mut name = path.as_bytes().to_vec();
    name.resize(IMA_NAME_PADDED, 0);
    data.extend_from_slice(&name);
    data
}

fn hex_field(line: usize, what: &str, text: &str) -> Result<Vec<u8>, ImaError> {
    hex::decode(text).map_err(|_| ImaError::Line {
        line,
        detail: format!("{what} is not hex"),
    })
}

/// Parses the ASCII list (`ascii_runtime_measurements`). `first_index` is the list position of
/// the first line (for batches that start at an offset).
pub fn parse_ascii(text: &[u8], first_index: u64) -> Result<ImaLog, ImaError> {
    if text.len() > MAX_LIST_SIZE {
        return Err(ImaError::TooLarge);
    }
    let mut log = ImaLog::default();
    let mut rest = text;
    let mut line_number = 0usize;
    while !rest.is_empty() {
        let Some(end) = rest.iter().position(|b| *b == b'\n') else {
            // A last line without its newline is still being written: leave it for next time.
            log.trailing_bytes = rest.len();
            break;
        };
        let (raw, after) = rest.split_at(end);
        rest = after.get(1..).unwrap_or_default();
        line_number += 1;
        if raw.is_empty() {
            continue;
        }
        if raw.len() > MAX_LINE {
            return Err(ImaError::Line {
                line: line_number,
                detail: format!("longer than {MAX_LINE} bytes"),
            });
        }
        if log.entries.len() >= MAX_ENTRIES {
            return Err(ImaError::TooManyEntries);
        }
        let index = first_index + log.entries.len() as u64;
        log.entries.push(parse_line(raw, line_number, index)?);
    }
    Ok(log)
}

fn parse_line(raw: &[u8], line: usize, index: u64) -> Result<ImaEntry, ImaError> {
    let bad = |detail: &str| ImaError::Line {
        line,
        detail: detail.to_string(),
    };
    let text = std::str::from_utf8(raw).map_err(|_| bad("not UTF-8"))?;
    let mut parts = text.splitn(5, ' ');
    let pcr = parts
        .next()
        .and_then(|p| p.parse::<u32>().ok())
        .ok_or_else(|| bad("PCR is not a number"))?;
    let logged_hash = hex_field(
        line,
        "template hash",
        parts.next().ok_or_else(|| bad("no template hash"))?,
    )?;
    if !matches!(logged_hash.len(), 20 | 32 | 48 | 64) {
        return Err(bad("template hash has an unexpected length"));
    }
    let template_name = parts.next().ok_or_else(|| bad("no template name"))?;
    let template = Template::from_name(template_name)
        .ok_or_else(|| bad(&format!("unsupported template {template_name:?}")))?;
    let digest_text = parts.next().ok_or_else(|| bad("no file digest"))?;
    let rest = parts.next().ok_or_else(|| bad("no file name"))?;
    let (digest_algorithm, file_digest) = match (&template, digest_text.split_once(':')) {
        (Template::Ima, None) => (
            "sha1".to_string(),
            hex_field(line, "file digest", digest_text)?,
        ),
        (Template::Ima, Some(_)) => return Err(bad("the ima template has no algorithm prefix")),
        (_, Some((algorithm, hex))) => {
            (algorithm.to_string(), hex_field(line, "file digest", hex)?)
        }
        (_, None) => return Err(bad("file digest has no algorithm prefix")),
    };
    if file_digest.len() > 64 {
        return Err(bad("file digest too long"));
    }
    // ima-sig and ima-buf end with an optional hex field; the path may contain spaces.
    let (path, extra) = match template {
        Template::ImaSig | Template::ImaBuf => match rest.rsplit_once(' ') {
            Some((path, last)) if !last.is_empty() && hex::decode(last).is_ok() => {
                (path, Some(hex_field(line, "signature", last)?))
            }
            _ => (rest, None),
        },
        _ => (rest, None),
    };
    if path.len() > MAX_PATH {
        return Err(bad("file name too long"));
    }
    let hashed = match template {
        Template::Ima => {
            if file_digest.len() != 20 {
                return Err(bad("the ima template needs a SHA-1 digest"));
            }
            ima_hashed(&file_digest, path)
        }
        Template::ImaNg => [
            field(&digest_ng(&digest_algorithm, &file_digest)),
            field(&name_ng(path)),
        ]
        .concat(),
        Template::ImaSig | Template::ImaBuf => [
            field(&digest_ng(&digest_algorithm, &file_digest)),
            field(&name_ng(path)),
            field(extra.as_deref().unwrap_or_default()),
        ]
        .concat(),
    };
    let (signature, buffer) = template.split_extra(extra);
    Ok(ImaEntry {
        index,
        pcr,
        template,
        logged_hash,
        digest_algorithm,
        file_digest,
        path: path.to_string(),
        signature,
        buffer,
        hashed,
    })
}

/// Splits a d-ng field into (algorithm, digest).
fn split_digest_ng(data: &[u8]) -> Option<(String, Vec<u8>)> {
    let colon = data.iter().position(|b| *b == b':')?;
    let algorithm = std::str::from_utf8(data.get(..colon)?).ok()?.to_string();
    // "alg:" is followed by a NUL, then the digest.
    let digest = data.get(colon + 1..)?.strip_prefix(&[0])?.to_vec();
    Some((algorithm, digest))
}

fn text_field(data: &[u8]) -> String {
    String::from_utf8_lossy(data)
        .trim_end_matches('\0')
        .to_string()
}

/// Parses the binary list (`binary_runtime_measurements`, little-endian). A last entry that is
/// cut short is reported in `trailing_bytes`, not parsed.
pub fn parse_binary(bytes: &[u8], first_index: u64) -> Result<ImaLog, ImaError> {
    if bytes.len() > MAX_LIST_SIZE {
        return Err(ImaError::TooLarge);
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
        match read_binary_entry(&mut attempt, index) {
            Ok(entry) => {
                log.entries.push(entry);
                r = attempt;
            }
            Err(error) => {
                // Truncation at the end is a list being appended to; anything else is an error.
                if matches!(
                    error.problem,
                    crate::evidence::reader::Problem::Truncated { .. }
                ) {
                    log.trailing_bytes = start;
                    break;
                }
                return Err(ImaError::Binary {
                    index: log.entries.len(),
                    source: error,
                });
            }
        }
    }
    Ok(log)
}

fn read_binary_entry(r: &mut Reader<'_>, index: u64) -> Result<ImaEntry, ReadError> {
    let pcr = r.u32_le("pcr")?;
    let logged_hash = r.bytes("templateHash", 20)?.to_vec();
    let name_length = r.u32_le("templateNameLength")? as usize;
    let name_bytes = r.bytes_limited("templateName", name_length, MAX_TEMPLATE_NAME)?;
    let name = String::from_utf8_lossy(name_bytes).into_owned();
    let template = Template::from_name(&name)
        .ok_or_else(|| r.invalid("templateName", format!("unsupported template {name:?}")))?;
    if template == Template::Ima {
        // The legacy template has no data length: a SHA-1 digest, then the name.
        let digest = r.bytes("digest", 20)?.to_vec();
        let length = r.u32_le("nameLength")? as usize;
        let path = text_field(r.bytes_limited("name", length, MAX_PATH)?);
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
    let length = r.u32_le("templateDataLength")? as usize;
    let mut data = r.sub("templateData", length.min(MAX_TEMPLATE_DATA + 1))?;
    if length > MAX_TEMPLATE_DATA {
        return Err(data.invalid("templateDataLength", format!("{length} bytes")));
    }
    let hashed = data.rest().to_vec();
    let mut fields = Vec::new();
    while !data.is_empty() {
        let size = data.u32_le("fieldLength")? as usize;
        fields.push(data.bytes("field", size)?);
    }
    let (digest_algorithm, file_digest) = fields
        .first()
        .and_then(|f| split_digest_ng(f))
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

/// Parses either format: ASCII lists start with a decimal PCR number and a space.
pub fn parse(bytes: &[u8]) -> Result<ImaLog, ImaError> {
    let ascii = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    if ascii > 0 && bytes.get(ascii) == Some(&b' ') {
        parse_ascii(bytes, 0)
    } else {
        parse_binary(bytes, 0)
    }
}
