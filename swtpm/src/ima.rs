//! Simulated Linux IMA: `ima-ng` entries in the ASCII measurement-list format, each extended into
//! PCR 10 the way the kernel does (every bank gets its own hash of the same template data).

use sha2::{Digest as _, Sha256};

use crate::boot::Bank;

/// One IMA entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImaEntry {
    pub path: String,
    /// SHA-256 of the file contents.
    pub file_digest: Vec<u8>,
    /// The ima-ng template data: d-ng and n-ng fields, each u32 length (LE) + bytes.
    pub template_data: Vec<u8>,
}

impl ImaEntry {
    /// An entry for a file with `content`.
    pub fn for_file(path: &str, content: &[u8]) -> Self {
        Self::with_digest(path, Sha256::digest(content).to_vec())
    }

    /// An entry with a given SHA-256 file digest (e.g. the boot aggregate).
    pub fn with_digest(path: &str, file_digest: Vec<u8>) -> Self {
        let mut digest_field = b"sha256:\0".to_vec();
        digest_field.extend_from_slice(&file_digest);
        let mut name_field = path.as_bytes().to_vec();
        name_field.push(0);
        let mut template_data = Vec::new();
        for field in [&digest_field, &name_field] {
            template_data.extend_from_slice(&(field.len() as u32).to_le_bytes());
            template_data.extend_from_slice(field);
        }
        Self {
            path: path.to_string(),
            file_digest,
            template_data,
        }
    }

    /// The digest extended into PCR 10 of `bank`: H_bank(template data).
    pub fn template_hash(&self, bank: Bank) -> Vec<u8> {
        bank.hash(&self.template_data)
    }

    /// The ASCII list line: `10 <sha1 template hash> ima-ng sha256:<file digest> <path>`.
    pub fn ascii_line(&self) -> String {
        format!(
            "10 {} ima-ng sha256:{} {}\n",
            hex::encode(self.template_hash(Bank::Sha1)),
            hex::encode(&self.file_digest),
            self.path
        )
    }
}

/// The boot aggregate entry, as Linux 5.8 and later compute it for a SHA-256 bank: SHA-256 over
/// that bank's PCRs 0-9 in order (`ima_calc_boot_aggregate`; only a SHA-1 aggregate stops at
/// PCR 7). The verifier recomputes it from the quoted PCRs.
pub fn boot_aggregate(pcrs_0_to_9: &[Vec<u8>]) -> ImaEntry {
    let mut hasher = Sha256::new();
    for value in pcrs_0_to_9 {
        hasher.update(value);
    }
    ImaEntry::with_digest("boot_aggregate", hasher.finalize().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_line_carries_the_sha1_template_hash_and_file_digest() {
        let entry = ImaEntry::for_file("/usr/bin/bash", b"bash");
        let line = entry.ascii_line();
        let fields: Vec<&str> = line.trim_end().split(' ').collect();
        assert_eq!(fields.len(), 5);
        assert_eq!(fields[0], "10");
        assert_eq!(
            fields[1],
            hex::encode(Bank::Sha1.hash(&entry.template_data))
        );
        assert_eq!(fields[2], "ima-ng");
        assert_eq!(
            fields[3],
            format!("sha256:{}", hex::encode(Sha256::digest(b"bash")))
        );
        assert_eq!(fields[4], "/usr/bin/bash");
        // d-ng: u32 length, "sha256:\0", 32 bytes; n-ng: u32 length, path, NUL.
        assert_eq!(&entry.template_data[0..4], &40u32.to_le_bytes());
        assert_eq!(&entry.template_data[44..48], &14u32.to_le_bytes());
    }
}
