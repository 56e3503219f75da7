//! Document-signing keys: the trust-list authority's key (signs trust lists) and suppliers' keys
//! (sign reference manifests). ECDSA P-256; the private key is PKCS#8 DER (0600), the public key
//! the uncompressed point in hex beside it (`<name>.pub`), which is what a trust list names and
//! what the verifier's `trust_list_authority` setting points at.

use std::path::{Path, PathBuf};

use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};

use crate::CaError;
use crate::files::{write_public, write_secret};

/// A newly made key's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeyFiles {
    pub private_key: PathBuf,
    pub public_key: PathBuf,
    pub public_hex: String,
}

/// Makes a P-256 key pair at `<dir>/<name>.pk8` (0600) and `<dir>/<name>.pub`. Refuses to
/// overwrite an existing key: replacing a signing key is a decision, not a side effect.
pub fn create(dir: &Path, name: &str) -> Result<SigningKeyFiles, CaError> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(CaError::Invalid(format!(
            "key name {name:?}: letters, digits, '-', '_' and '.' only"
        )));
    }
    let private_key = dir.join(format!("{name}.pk8"));
    let public_key = dir.join(format!("{name}.pub"));
    if private_key.exists() {
        return Err(CaError::Invalid(format!(
            "{} exists; refusing to overwrite a signing key",
            private_key.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|source| CaError::Io {
        operation: "create directory",
        path: dir.to_path_buf(),
        source,
    })?;
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
        .map_err(|_| CaError::Invalid("key generation failed".into()))?;
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref())
        .map_err(|_| CaError::Invalid("key generation failed".into()))?;
    let public_hex = hex::encode(pair.public_key().as_ref());
    write_secret(&private_key, pkcs8.as_ref())?;
    write_public(&public_key, public_hex.as_bytes())?;
    Ok(SigningKeyFiles {
        private_key,
        public_key,
        public_hex,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_key_is_made_once_with_its_private_part_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let files = create(dir.path(), "acme").unwrap();
        let mode = std::fs::metadata(&files.private_key)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(files.public_hex.len(), 130);
        assert!(create(dir.path(), "acme").is_err());
        assert!(create(dir.path(), "../x").is_err());
    }
}
