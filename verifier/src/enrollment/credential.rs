//! TPM2_MakeCredential in software (TPM 2.0 Part 1, "Credential Protection" and "Secret
//! Sharing"; Part 3, MakeCredential): the verifier wraps a fresh secret so that only the TPM
//! holding the EK private key, and only for an object with the AK's exact Name, can unwrap it with
//! TPM2_ActivateCredential.
//!
//! Written by hand because no maintained Rust crate implements MakeCredential without linking the
//! TSS (the verifier must not link libtss2). The primitives are aws-lc-rs (RSA-OAEP, ECDH) and
//! RustCrypto (HMAC, AES-CFB).
//!
//! Only the TCG default EK templates' parameters are supported: nameAlg SHA-256 and AES-128-CFB
//! (RSA-2048 template L-1, ECC NIST P-256 template L-2). Enrollment refuses other EKs first.

use aes::Aes128;
use aws_lc_rs::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::rsa::{OAEP_SHA256_MGF1SHA256, OaepPublicEncryptingKey, PublicEncryptingKey};
use cfb_mode::Encryptor;
use cfb_mode::cipher::{AsyncStreamCipher, KeyIvInit};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// The EK's public key, as taken from its (validated) certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EkKey {
    /// DER SubjectPublicKeyInfo of an RSA-2048 key.
    Rsa { spki_der: Vec<u8> },
    /// Uncompressed SEC1 point (0x04 || x || y) on NIST P-256.
    EccP256 { point: Vec<u8> },
}

/// What the agent passes to TPM2_ActivateCredential, plus the secret the verifier expects back.
#[derive(Clone, PartialEq, Eq)]
pub struct MadeCredential {
    /// TPM2B_ID_OBJECT contents (without its size field): integrity HMAC || encrypted credential.
    pub credential_blob: Vec<u8>,
    /// TPM2B_ENCRYPTED_SECRET contents (without its size field).
    pub encrypted_secret: Vec<u8>,
    /// The plain credential; compared in constant time with the agent's answer.
    pub secret: [u8; 32],
}

impl std::fmt::Debug for MadeCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MadeCredential").finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    #[error("the EK public key is not usable: {0}")]
    BadEkKey(&'static str),
    #[error("the system random generator failed")]
    Random,
    #[error("{0} failed")]
    Crypto(&'static str),
}

const SHA256_SIZE: usize = 32;
const AES128_KEY_SIZE: usize = 16;

/// KDFa (SP 800-108 counter mode with HMAC, as TPM 2.0 Part 1 §11.4.10.2 profiles it) with
/// SHA-256: `HMAC(key, [i]32 || label || 0x00 || context_u || context_v || [bits]32)`.
pub fn kdf_a(key: &[u8], label: &str, context_u: &[u8], context_v: &[u8], bits: u32) -> Vec<u8> {
    let bytes = bits.div_ceil(8) as usize;
    let mut out = Vec::with_capacity(bytes + SHA256_SIZE);
    let mut counter: u32 = 1;
    while out.len() < bytes {
        // HMAC accepts keys of any length, so new_from_slice cannot fail here; an empty output
        // would only make the result unusable, never weaker.
        let Ok(mut mac) = HmacSha256::new_from_slice(key) else {
            break;
        };
        mac.update(&counter.to_be_bytes());
        mac.update(label.as_bytes());
        mac.update(&[0]);
        mac.update(context_u);
        mac.update(context_v);
        mac.update(&bits.to_be_bytes());
        out.extend_from_slice(&mac.finalize().into_bytes());
        counter += 1;
    }
    out.truncate(bytes);
    out
}

/// KDFe (TPM 2.0 Part 1 §11.4.10.3, the SP 800-56A concatenation KDF) with SHA-256:
/// `H([i]32 || Z || label || 0x00 || party_u || party_v)`.
pub fn kdf_e(z: &[u8], label: &str, party_u: &[u8], party_v: &[u8], bits: u32) -> Vec<u8> {
    let bytes = bits.div_ceil(8) as usize;
    let mut out = Vec::with_capacity(bytes + SHA256_SIZE);
    let mut counter: u32 = 1;
    while out.len() < bytes {
        let mut hasher = Sha256::new();
        hasher.update(counter.to_be_bytes());
        hasher.update(z);
        hasher.update(label.as_bytes());
        hasher.update([0]);
        hasher.update(party_u);
        hasher.update(party_v);
        out.extend_from_slice(&hasher.finalize());
        counter += 1;
    }
    out.truncate(bytes);
    out
}

fn tpm2b(bytes: &[u8]) -> Result<Vec<u8>, CredentialError> {
    let size = u16::try_from(bytes.len()).map_err(|_| CredentialError::Crypto("TPM2B size"))?;
    let mut out = Vec::with_capacity(bytes.len() + 2);
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(out)
}

/// Makes a credential holding a fresh random 32-byte secret, for the object named `ak_name`
/// (nameAlg || digest, as the TPM computes it), protected to `ek`.
pub fn make_credential(ek: &EkKey, ak_name: &[u8]) -> Result<MadeCredential, CredentialError> {
    let rng = SystemRandom::new();
    let mut secret = [0u8; 32];
    rng.fill(&mut secret).map_err(|_| CredentialError::Random)?;
    make_credential_with(ek, ak_name, secret, &rng)
}

fn make_credential_with(
    ek: &EkKey,
    ak_name: &[u8],
    secret: [u8; 32],
    rng: &SystemRandom,
) -> Result<MadeCredential, CredentialError> {
    // 1. A seed shared with the EK, and its encrypted form (the "secret" parameter).
    let (seed, encrypted_secret) = match ek {
        EkKey::Rsa { spki_der } => {
            let key = PublicEncryptingKey::from_der(spki_der)
                .map_err(|_| CredentialError::BadEkKey("not an RSA public key"))?;
            if key.key_size_bits() != 2048 {
                return Err(CredentialError::BadEkKey("RSA EK must be 2048 bits"));
            }
            let key = OaepPublicEncryptingKey::new(key)
                .map_err(|_| CredentialError::BadEkKey("RSA key refused for OAEP"))?;
            let mut seed = vec![0u8; SHA256_SIZE];
            rng.fill(&mut seed).map_err(|_| CredentialError::Random)?;
            let mut ciphertext = vec![0u8; key.ciphertext_size()];
            let written = key
                .encrypt(
                    &OAEP_SHA256_MGF1SHA256,
                    &seed,
                    &mut ciphertext,
                    Some(b"IDENTITY\0"),
                )
                .map_err(|_| CredentialError::Crypto("RSA-OAEP"))?
                .len();
            ciphertext.truncate(written);
            (seed, ciphertext)
        }
        EkKey::EccP256 { point } => {
            let (ek_x, _) = split_point(point)?;
            let ephemeral = EphemeralPrivateKey::generate(&agreement::ECDH_P256, rng)
                .map_err(|_| CredentialError::Random)?;
            let ephemeral_public = ephemeral
                .compute_public_key()
                .map_err(|_| CredentialError::Crypto("ECDH"))?;
            let (e_x, e_y) = split_point(ephemeral_public.as_ref())?;
            let (e_x, e_y) = (e_x.to_vec(), e_y.to_vec());
            let peer = UnparsedPublicKey::new(&agreement::ECDH_P256, point.as_slice());
            let seed = agreement::agree_ephemeral(
                ephemeral,
                peer,
                CredentialError::BadEkKey("EK point is not on P-256"),
                |z| Ok(kdf_e(z, "IDENTITY", &e_x, ek_x, (SHA256_SIZE * 8) as u32)),
            )?;
            // TPMS_ECC_POINT: TPM2B x || TPM2B y.
            let mut encrypted = tpm2b(&e_x)?;
            encrypted.extend_from_slice(&tpm2b(&e_y)?);
            (seed, encrypted)
        }
    };

    // 2. Encrypt the credential (as a TPM2B_DIGEST) with a key bound to the AK's Name.
    let symmetric_key = kdf_a(&seed, "STORAGE", ak_name, &[], (AES128_KEY_SIZE * 8) as u32);
    let mut encrypted_identity = tpm2b(&secret)?;
    let encryptor = Encryptor::<Aes128>::new_from_slices(&symmetric_key, &[0u8; 16])
        .map_err(|_| CredentialError::Crypto("AES-128-CFB key setup"))?;
    encryptor.encrypt(&mut encrypted_identity);

    // 3. Outer integrity: HMAC over the encrypted credential and the Name.
    let hmac_key = kdf_a(&seed, "INTEGRITY", &[], &[], (SHA256_SIZE * 8) as u32);
    let mut mac =
        HmacSha256::new_from_slice(&hmac_key).map_err(|_| CredentialError::Crypto("HMAC key"))?;
    mac.update(&encrypted_identity);
    mac.update(ak_name);
    let integrity = mac.finalize().into_bytes();

    let mut credential_blob = tpm2b(&integrity)?;
    credential_blob.extend_from_slice(&encrypted_identity);
    Ok(MadeCredential {
        credential_blob,
        encrypted_secret,
        secret,
    })
}

/// Splits an uncompressed P-256 point into (x, y).
fn split_point(point: &[u8]) -> Result<(&[u8], &[u8]), CredentialError> {
    match point {
        [0x04, rest @ ..] if rest.len() == 64 => Ok(rest.split_at(32)),
        _ => Err(CredentialError::BadEkKey(
            "EK point is not an uncompressed P-256 point",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// KDFa test vector: the TPM 2.0 reference implementation's self-test values are not
    /// reproduced here; instead check structural properties and determinism.
    #[test]
    fn kdfs_are_deterministic_and_sized() {
        let a = kdf_a(b"key", "STORAGE", b"name", b"", 128);
        assert_eq!(a.len(), 16);
        assert_eq!(a, kdf_a(b"key", "STORAGE", b"name", b"", 128));
        assert_ne!(a, kdf_a(b"key", "STORAGE", b"namf", b"", 128));
        // A longer output starts differently only through [bits]: it is not a prefix extension.
        assert_eq!(kdf_a(b"k", "INTEGRITY", b"", b"", 512).len(), 64);
        assert_eq!(kdf_e(b"z", "IDENTITY", b"u", b"v", 256).len(), 32);
    }

    #[test]
    fn rsa_credential_decrypts_with_the_private_key() {
        use aws_lc_rs::encoding::AsDer;
        use aws_lc_rs::rsa::{KeySize, OaepPrivateDecryptingKey, PrivateDecryptingKey};
        let private = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
        let spki_der = private.public_key().as_der().unwrap().as_ref().to_vec();
        let name = [0x00, 0x0b, 1, 2, 3];
        let made = make_credential(&EkKey::Rsa { spki_der }, &name).unwrap();

        // Play the TPM: recover the seed, check the HMAC, decrypt the credential.
        let private = OaepPrivateDecryptingKey::new(private).unwrap();
        let mut seed = vec![0u8; 256];
        let seed = private
            .decrypt(
                &OAEP_SHA256_MGF1SHA256,
                &made.encrypted_secret,
                &mut seed,
                Some(b"IDENTITY\0"),
            )
            .unwrap()
            .to_vec();
        let (hmac_part, encrypted) = made.credential_blob.split_at(34);
        assert_eq!(&hmac_part[..2], &[0, 32]);
        let mut mac =
            HmacSha256::new_from_slice(&kdf_a(&seed, "INTEGRITY", &[], &[], 256)).unwrap();
        mac.update(encrypted);
        mac.update(&name);
        mac.verify_slice(&hmac_part[2..]).unwrap();
        let key = kdf_a(&seed, "STORAGE", &name, &[], 128);
        let mut plain = encrypted.to_vec();
        cfb_mode::Decryptor::<Aes128>::new_from_slices(&key, &[0u8; 16])
            .unwrap()
            .decrypt(&mut plain);
        assert_eq!(&plain[..2], &[0, 32]);
        assert_eq!(&plain[2..], &made.secret);
    }

    #[test]
    fn ecc_credential_has_an_ephemeral_point() {
        let ek =
            EphemeralPrivateKey::generate(&agreement::ECDH_P256, &SystemRandom::new()).unwrap();
        let point = ek.compute_public_key().unwrap().as_ref().to_vec();
        let made = make_credential(&EkKey::EccP256 { point }, &[0, 0x0b, 9]).unwrap();
        assert_eq!(made.encrypted_secret.len(), 2 + 32 + 2 + 32);
        assert!(make_credential(&EkKey::EccP256 { point: vec![4; 65] }, &[0]).is_err());
    }
}
