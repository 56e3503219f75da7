//! The ASCII list (`ascii_runtime_measurements`): one entry per line,
//! "PCR template-hash template-name fields...". The template data the kernel hashed is rebuilt
//! from the text fields, so a line whose fields were edited no longer matches its template hash.

use super::template::{IMA_NAME_MAX, ImaEntry, ImaLog, Template, ima_hashed, ng_template_data};
use super::{ImaError, MAX_DIGEST, MAX_ENTRIES, MAX_LINE, MAX_LIST_SIZE, MAX_PATH};

/// Parses the ASCII list. `first_index` is the list position of the first line (for batches that
/// start at an offset); line numbers in errors count from 1 within `text`.
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
            if rest.len() > MAX_LINE {
                return Err(ImaError::Line {
                    line: line_number + 1,
                    detail: format!("longer than {MAX_LINE} bytes"),
                });
            }
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

fn hex_field(line: usize, what: &str, text: &str) -> Result<Vec<u8>, ImaError> {
    decode_hex(text).ok_or_else(|| ImaError::Line {
        line,
        detail: format!("{what} is not hex"),
    })
}

/// Hex decoding written out: the generic decoder was 40% of the parse (one Result per byte).
fn decode_hex(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 2);
    for pair in bytes.chunks_exact(2) {
        let [high, low] = pair else {
            return None;
        };
        out.push((nibble(*high)? << 4) | nibble(*low)?);
    }
    Some(out)
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
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
    let template = Template::from_name(template_name).ok_or_else(|| {
        bad(&format!(
            "unsupported template {:?}",
            template_name.escape_debug()
        ))
    })?;
    let digest_text = parts.next().ok_or_else(|| bad("no file digest"))?;
    let rest = parts.next().ok_or_else(|| bad("no file name"))?;
    let (digest_algorithm, file_digest) = match (template, digest_text.split_once(':')) {
        (Template::Ima, None) => (
            "sha1".to_string(),
            hex_field(line, "file digest", digest_text)?,
        ),
        (Template::Ima, Some(_)) => return Err(bad("the ima template has no algorithm prefix")),
        (_, Some((algorithm, hex))) => {
            if algorithm.len() > 16 {
                return Err(bad("file digest algorithm name too long"));
            }
            (algorithm.to_string(), hex_field(line, "file digest", hex)?)
        }
        (_, None) => return Err(bad("file digest has no algorithm prefix")),
    };
    if file_digest.len() > MAX_DIGEST {
        return Err(bad("file digest too long"));
    }
    let (path, extra) = match template {
        Template::ImaSig | Template::ImaBuf => split_extra(rest),
        Template::Ima | Template::ImaNg => (rest, None),
    };
    let extra = extra
        .map(|hex| hex_field(line, "signature or buffer", hex))
        .transpose()?;
    if path.len() > MAX_PATH {
        return Err(bad("file name too long"));
    }
    let hashed = match template {
        Template::Ima => {
            if file_digest.len() != 20 {
                return Err(bad("the ima template needs a SHA-1 digest"));
            }
            if path.len() > IMA_NAME_MAX {
                return Err(bad("the ima template's name is longer than 255 bytes"));
            }
            ima_hashed(&file_digest, path)
        }
        Template::ImaNg | Template::ImaSig | Template::ImaBuf => ng_template_data(
            template,
            &digest_algorithm,
            &file_digest,
            path,
            extra.as_deref(),
        ),
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

/// `ima-sig`/`ima-buf`: "path hex" or, with an empty last field, "path " (the kernel prints the
/// separator before every field, even an empty one). The path may contain spaces; a list whose
/// trailing space was stripped is read leniently: a last word that is not hex belongs to the path.
fn split_extra(rest: &str) -> (&str, Option<&str>) {
    if let Some(path) = rest.strip_suffix(' ') {
        return (path, None);
    }
    match rest.rsplit_once(' ') {
        Some((path, last))
            if !last.is_empty()
                && last.len() % 2 == 0
                && last.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            (path, Some(last))
        }
        _ => (rest, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::HashAlgorithm;

    #[test]
    fn hex_decoding_matches_the_hex_crate() {
        for text in ["", "00", "0aF9", "ff10", "0", "0g", "g0", "abc", " 0"] {
            assert_eq!(decode_hex(text), hex::decode(text).ok(), "{text:?}");
        }
    }

    fn line_for(template: Template, path: &str, extra: Option<&[u8]>) -> String {
        let digest = [0x11u8; 32];
        let data = ng_template_data(template, "sha256", &digest, path, extra);
        let hash = HashAlgorithm::Sha1.hash(&data);
        let tail = match extra {
            Some(e) => format!(" {}", hex::encode(e)),
            None => " ".to_string(),
        };
        format!(
            "10 {} {} sha256:{} {path}{tail}\n",
            hex::encode(hash),
            template.name(),
            hex::encode(digest)
        )
    }

    #[test]
    fn ima_sig_with_and_without_a_signature_rebuilds_the_hashed_data() {
        for (path, sig) in [
            ("/usr/bin/ls", None),
            ("/usr/bin/ls", Some(&[3u8, 2, 1][..])),
            ("/tmp/a b cafe", None),
            ("/tmp/a b", Some(&[0xca, 0xfe][..])),
        ] {
            let text = line_for(Template::ImaSig, path, sig);
            let log = parse_ascii(text.as_bytes(), 7).unwrap();
            let entry = &log.entries[0];
            assert_eq!(entry.index, 7);
            assert_eq!(entry.path, path);
            assert_eq!(entry.signature.as_deref(), sig);
            assert_eq!(HashAlgorithm::Sha1.hash(&entry.hashed), entry.logged_hash);
        }
    }

    #[test]
    fn ima_buf_keeps_its_buffer() {
        let text = line_for(Template::ImaBuf, "kexec-cmdline", Some(b"root=/dev/sda"));
        let entry = &parse_ascii(text.as_bytes(), 0).unwrap().entries[0];
        assert_eq!(entry.buffer.as_deref(), Some(&b"root=/dev/sda"[..]));
        assert_eq!(entry.signature, None);
        assert_eq!(HashAlgorithm::Sha1.hash(&entry.hashed), entry.logged_hash);
    }

    #[test]
    fn errors_name_the_line_and_partial_lines_are_left() {
        let err = parse_ascii(b"10 00 ima-ng sha1:00 /a\n", 0).unwrap_err();
        assert!(err.to_string().starts_with("line 1:"), "{err}");
        let ok = "10 0000000000000000000000000000000000000000 ima-ng sha1:00 /a\n";
        let text = format!("{ok}\n{ok}10 00");
        let log = parse_ascii(text.as_bytes(), 0).unwrap();
        assert_eq!(log.entries.len(), 2);
        assert_eq!(log.trailing_bytes, 5);
        let long = format!(
            "10 {} ima {} /{}\n",
            "00".repeat(20),
            "00".repeat(20),
            "a".repeat(300)
        );
        assert!(parse_ascii(long.as_bytes(), 0).is_err());
    }
}
