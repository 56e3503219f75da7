//! IMA templates and the typed entry both list formats produce.
//!
//! An entry keeps the exact bytes the kernel hashed into its template hash (`hashed`), rebuilt
//! from the text fields for ASCII input, so replay treats both formats alike.

use crate::digest::HashAlgorithm;

/// Legacy `ima` template: the name is zero-padded to this length before hashing.
const IMA_NAME_PADDED: usize = 256;
/// Legacy `ima` template: the longest name the kernel logs (one byte short of the padding).
pub const IMA_NAME_MAX: usize = IMA_NAME_PADDED - 1;

/// The template an entry was logged with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Template {
    /// Legacy: SHA-1 file digest and a name of at most 255 bytes.
    Ima,
    /// `d-ng|n-ng`: algorithm-prefixed digest and a NUL-terminated name.
    ImaNg,
    /// `d-ng|n-ng|sig`.
    ImaSig,
    /// `d-ng|n-ng|buf` (measured buffers: keys, kexec command lines, dm tables).
    ImaBuf,
}

impl Template {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "ima" => Some(Self::Ima),
            "ima-ng" => Some(Self::ImaNg),
            "ima-sig" => Some(Self::ImaSig),
            "ima-buf" => Some(Self::ImaBuf),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Ima => "ima",
            Self::ImaNg => "ima-ng",
            Self::ImaSig => "ima-sig",
            Self::ImaBuf => "ima-buf",
        }
    }

    /// The optional third field is a signature for `ima-sig` and a buffer for `ima-buf`.
    pub(super) fn split_extra(self, extra: Option<Vec<u8>>) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
        match self {
            Self::ImaSig => (extra, None),
            Self::ImaBuf => (None, extra),
            Self::Ima | Self::ImaNg => (None, None),
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
    /// The template hash as logged: SHA-1 in the classic lists, the bank's algorithm in the
    /// per-bank lists of newer kernels (`*_runtime_measurements_sha256`, ...).
    pub logged_hash: Vec<u8>,
    /// The file digest's algorithm name as logged ("sha256", "sm3", ...; "sha1" for `ima`).
    /// Kept as text: an unknown name is still hashed faithfully; see [`Self::file_digest_hash`].
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

    /// The file digest's algorithm, when it is one we know and the digest has its size.
    pub fn file_digest_hash(&self) -> Option<HashAlgorithm> {
        HashAlgorithm::from_name(&self.digest_algorithm)
            .filter(|alg| alg.size() == self.file_digest.len())
    }
}

/// A parsed batch of entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImaLog {
    pub entries: Vec<ImaEntry>,
    /// Bytes after the last complete entry (a list read while the kernel appended to it).
    pub trailing_bytes: usize,
}

/// Appends a template-data field length: u32, little endian. Callers bound every field far
/// below 4 GiB, so the length always fits.
fn push_length(out: &mut Vec<u8>, length: usize) {
    let length = u32::try_from(length).unwrap_or(u32::MAX);
    out.extend_from_slice(&length.to_le_bytes());
}

/// The template data of `ima-ng` (and, with `extra`, of `ima-sig`/`ima-buf`), as the kernel
/// lays it out: d-ng = "<algorithm>:\0<digest>", n-ng = "<path>\0", then the extra field (present
/// with length 0 when there is no signature or buffer).
pub(super) fn ng_template_data(
    template: Template,
    algorithm: &str,
    digest: &[u8],
    path: &str,
    extra: Option<&[u8]>,
) -> Vec<u8> {
    let extra = extra.unwrap_or_default();
    let d_ng = algorithm.len() + 2 + digest.len();
    let n_ng = path.len() + 1;
    // One allocation: this runs once per entry of every list the verifier reads.
    let mut out = Vec::with_capacity(d_ng + n_ng + extra.len() + 12);
    push_length(&mut out, d_ng);
    out.extend_from_slice(algorithm.as_bytes());
    out.extend_from_slice(b":\0");
    out.extend_from_slice(digest);
    push_length(&mut out, n_ng);
    out.extend_from_slice(path.as_bytes());
    out.push(0);
    if matches!(template, Template::ImaSig | Template::ImaBuf) {
        push_length(&mut out, extra.len());
        out.extend_from_slice(extra);
    }
    out
}

/// The legacy `ima` template's hash input: SHA-1 digest || name zero-padded to 256 bytes. The
/// parsers refuse names over [`IMA_NAME_MAX`] bytes, which the kernel never logs.
pub(super) fn ima_hashed(digest: &[u8], path: &str) -> Vec<u8> {
    let mut data = Vec::with_capacity(digest.len() + IMA_NAME_PADDED);
    data.extend_from_slice(digest);
    data.extend_from_slice(path.as_bytes());
    data.resize(digest.len() + IMA_NAME_PADDED.max(path.len()), 0);
    data
}

/// Splits a d-ng field into (algorithm, digest): "alg:" then a NUL, then the digest.
pub(super) fn split_digest_ng(data: &[u8]) -> Option<(String, Vec<u8>)> {
    let colon = data.iter().position(|b| *b == b':')?;
    let algorithm = std::str::from_utf8(data.get(..colon)?).ok()?.to_string();
    let digest = data.get(colon + 1..)?.strip_prefix(&[0])?.to_vec();
    Some((algorithm, digest))
}

/// A name field as text: NUL terminator dropped, invalid UTF-8 replaced (display only; the
/// hash is over the raw bytes).
pub(super) fn text_field(data: &[u8]) -> String {
    String::from_utf8_lossy(data)
        .trim_end_matches('\0')
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ng_layout_matches_the_kernel() {
        let data = ng_template_data(Template::ImaNg, "sha1", &[0xaa; 2], "/a", None);
        assert_eq!(
            data,
            [
                &[8, 0, 0, 0][..],
                b"sha1:\0",
                &[0xaa, 0xaa],
                &[3, 0, 0, 0],
                b"/a\0"
            ]
            .concat()
        );
        let sig = ng_template_data(Template::ImaSig, "sha1", &[0xaa; 2], "/a", None);
        assert_eq!(
            sig.len(),
            data.len() + 4,
            "an empty sig field is still present"
        );
    }

    #[test]
    fn legacy_name_is_padded_to_256() {
        let data = ima_hashed(&[1; 20], "/bin/sh");
        assert_eq!(data.len(), 276);
        assert_eq!(&data[20..27], b"/bin/sh");
        assert!(data[27..].iter().all(|b| *b == 0));
    }

    #[test]
    fn digest_algorithm_is_typed_only_when_sizes_agree() {
        let mut entry = ImaEntry {
            index: 0,
            pcr: 10,
            template: Template::ImaNg,
            logged_hash: vec![1; 20],
            digest_algorithm: "sm3".into(),
            file_digest: vec![0; 32],
            path: String::new(),
            signature: None,
            buffer: None,
            hashed: Vec::new(),
        };
        assert_eq!(entry.file_digest_hash(), Some(HashAlgorithm::Sm3_256));
        entry.file_digest.pop();
        assert_eq!(entry.file_digest_hash(), None);
    }
}
