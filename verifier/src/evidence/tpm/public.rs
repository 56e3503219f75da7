//! TPMT_PUBLIC for RSA and ECC keys (TPM 2.0 Part 2, §12.2), object attributes, and Names.

use crate::evidence::digest::HashAlgorithm;
use crate::evidence::reader::{ReadError, Reader};

use super::{ALG_NULL, MAX_DIGEST_SIZE, MAX_ECC_COORDINATE, MAX_RSA_BYTES};

const TPM_ALG_RSA: u16 = 0x0001;
const TPM_ALG_ECC: u16 = 0x0023;
const TPM_ALG_KEYEDHASH: u16 = 0x0008;
const TPM_ALG_SYMCIPHER: u16 = 0x0025;

/// TPMA_OBJECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectAttributes(pub u32);

impl ObjectAttributes {
    pub const FIXED_TPM: u32 = 1 << 1;
    pub const ST_CLEAR: u32 = 1 << 2;
    pub const FIXED_PARENT: u32 = 1 << 4;
    pub const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
    pub const USER_WITH_AUTH: u32 = 1 << 6;
    pub const ADMIN_WITH_POLICY: u32 = 1 << 7;
    pub const NO_DA: u32 = 1 << 10;
    pub const ENCRYPTED_DUPLICATION: u32 = 1 << 11;
    pub const RESTRICTED: u32 = 1 << 16;
    pub const DECRYPT: u32 = 1 << 17;
    pub const SIGN_ENCRYPT: u32 = 1 << 18;

    const NAMES: [(u32, &'static str); 11] = [
        (Self::FIXED_TPM, "fixedTPM"),
        (Self::ST_CLEAR, "stClear"),
        (Self::FIXED_PARENT, "fixedParent"),
        (Self::SENSITIVE_DATA_ORIGIN, "sensitiveDataOrigin"),
        (Self::USER_WITH_AUTH, "userWithAuth"),
        (Self::ADMIN_WITH_POLICY, "adminWithPolicy"),
        (Self::NO_DA, "noDA"),
        (Self::ENCRYPTED_DUPLICATION, "encryptedDuplication"),
        (Self::RESTRICTED, "restricted"),
        (Self::DECRYPT, "decrypt"),
        (Self::SIGN_ENCRYPT, "sign"),
    ];

    pub fn has(self, flag: u32) -> bool {
        self.0 & flag == flag
    }

    /// The name of a single flag constant, for error messages.
    pub fn flag_name(flag: u32) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(f, _)| *f == flag)
            .map_or("unknown", |(_, n)| n)
    }

    pub fn names(self) -> Vec<&'static str> {
        Self::NAMES
            .iter()
            .filter(|(f, _)| self.has(*f))
            .map(|(_, n)| *n)
            .collect()
    }
}

/// TPMT_SYM_DEF_OBJECT, as (algorithm, keyBits, mode), or `None` for TPM_ALG_NULL.
pub type Symmetric = Option<(u16, u16, u16)>;

/// ECC curves (TPM_ECC_CURVE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EccCurve {
    NistP256,
    NistP384,
    NistP521,
    Other(u16),
}

impl EccCurve {
    fn from_id(id: u16) -> Self {
        match id {
            0x0003 => Self::NistP256,
            0x0004 => Self::NistP384,
            0x0005 => Self::NistP521,
            other => Self::Other(other),
        }
    }

    pub fn coordinate_size(self) -> Option<usize> {
        match self {
            Self::NistP256 => Some(32),
            Self::NistP384 => Some(48),
            Self::NistP521 => Some(66),
            Self::Other(_) => None,
        }
    }
}

/// Algorithm-specific parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyParameters {
    Rsa {
        symmetric: Symmetric,
        /// (scheme, hash) or `None` for TPM_ALG_NULL.
        scheme: Option<(u16, Option<u16>)>,
        key_bits: u16,
        /// The public exponent (0 in the structure means 65537; stored here resolved).
        exponent: u32,
    },
    Ecc {
        symmetric: Symmetric,
        scheme: Option<(u16, Option<u16>)>,
        curve: EccCurve,
        kdf: Option<(u16, u16)>,
    },
}

/// The public key itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    Rsa {
        modulus: Vec<u8>,
        exponent: u32,
    },
    Ecc {
        curve: EccCurve,
        x: Vec<u8>,
        y: Vec<u8>,
    },
}

/// A parsed TPMT_PUBLIC, keeping the exact bytes it came from (the Name is computed over them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Public {
    pub name_alg: HashAlgorithm,
    pub attributes: ObjectAttributes,
    pub auth_policy: Vec<u8>,
    pub parameters: KeyParameters,
    pub key: PublicKey,
    /// The marshalled TPMT_PUBLIC (without any TPM2B size prefix).
    pub raw: Vec<u8>,
}

fn read_symmetric(r: &mut Reader<'_>) -> Result<Symmetric, ReadError> {
    let alg = r.u16_be("symmetric.algorithm")?;
    if alg == ALG_NULL {
        return Ok(None);
    }
    let bits = r.u16_be("symmetric.keyBits")?;
    let mode = r.u16_be("symmetric.mode")?;
    Ok(Some((alg, bits, mode)))
}

/// A TPMT_*_SCHEME: the scheme, and its hash for the schemes that carry one.
fn read_scheme(r: &mut Reader<'_>) -> Result<Option<(u16, Option<u16>)>, ReadError> {
    let scheme = r.u16_be("scheme")?;
    match scheme {
        ALG_NULL => Ok(None),
        // RSAES carries no details.
        0x0015 => Ok(Some((scheme, None))),
        // ECDAA: hash, then a count.
        0x001a => {
            let hash = r.u16_be("scheme.hashAlg")?;
            r.u16_be("scheme.count")?;
            Ok(Some((scheme, Some(hash))))
        }
        // RSASSA, RSAPSS, OAEP, ECDSA, ECDH, SM2, ECSCHNORR, ECMQV, HMAC, XOR: a hash.
        0x0014 | 0x0016 | 0x0017 | 0x0018 | 0x0019 | 0x001b | 0x001c | 0x001d | 0x0005 => {
            Ok(Some((scheme, Some(r.u16_be("scheme.hashAlg")?))))
        }
        other => Err(r.invalid("scheme", format!("unsupported scheme 0x{other:04x}"))),
    }
}

impl Public {
    /// Parses a TPMT_PUBLIC, or a TPM2B_PUBLIC (size-prefixed) holding one.
    pub fn parse(bytes: &[u8]) -> Result<Self, ReadError> {
        let body = strip_tpm2b(bytes);
        let mut r = Reader::new(body);
        let public = Self::read(&mut r)?;
        r.finish()?;
        Ok(public)
    }

    /// Reads one TPMT_PUBLIC from `r`.
    pub fn read(r: &mut Reader<'_>) -> Result<Self, ReadError> {
        let start = r.rest();
        let start_remaining = r.remaining();
        let key_type = r.u16_be("type")?;
        let name_alg_id = r.u16_be("nameAlg")?;
        let name_alg = HashAlgorithm::from_tpm_alg_id(name_alg_id)
            .ok_or_else(|| r.invalid("nameAlg", format!("unsupported hash 0x{name_alg_id:04x}")))?;
        let attributes = ObjectAttributes(r.u32_be("objectAttributes")?);
        let auth_policy = r.tpm2b("authPolicy", MAX_DIGEST_SIZE)?.to_vec();
        let (parameters, key) = match key_type {
            TPM_ALG_RSA => {
                let symmetric = read_symmetric(r)?;
                let scheme = read_scheme(r)?;
                let key_bits = r.u16_be("rsa.keyBits")?;
                let exponent = match r.u32_be("rsa.exponent")? {
                    0 => 65537,
                    e => e,
                };
                let modulus = r.tpm2b("unique.rsa", MAX_RSA_BYTES)?.to_vec();
                if modulus.len() * 8 != usize::from(key_bits) {
                    return Err(r.invalid(
                        "unique.rsa",
                        format!(
                            "modulus is {} bits, keyBits says {key_bits}",
                            modulus.len() * 8
                        ),
                    ));
                }
                (
                    KeyParameters::Rsa {
                        symmetric,
                        scheme,
                        key_bits,
                        exponent,
                    },
                    PublicKey::Rsa { modulus, exponent },
                )
            }
            TPM_ALG_ECC => {
                let symmetric = read_symmetric(r)?;
                let scheme = read_scheme(r)?;
                let curve = EccCurve::from_id(r.u16_be("ecc.curveID")?);
                let kdf = match r.u16_be("ecc.kdf")? {
                    ALG_NULL => None,
                    kdf => Some((kdf, r.u16_be("ecc.kdf.hashAlg")?)),
                };
                let x = r.tpm2b("unique.ecc.x", MAX_ECC_COORDINATE)?.to_vec();
                let y = r.tpm2b("unique.ecc.y", MAX_ECC_COORDINATE)?.to_vec();
                (
                    KeyParameters::Ecc {
                        symmetric,
                        scheme,
                        curve,
                        kdf,
                    },
                    PublicKey::Ecc { curve, x, y },
                )
            }
            TPM_ALG_KEYEDHASH | TPM_ALG_SYMCIPHER => {
                return Err(r.invalid("type", "symmetric objects are not keys we can use"));
            }
            other => {
                return Err(r.invalid("type", format!("unsupported object type 0x{other:04x}")));
            }
        };
        let consumed = start_remaining - r.remaining();
        let raw = start.get(..consumed).unwrap_or_default().to_vec();
        Ok(Self {
            name_alg,
            attributes,
            auth_policy,
            parameters,
            key,
            raw,
        })
    }

    /// The object's Name: nameAlg || H_nameAlg(TPMT_PUBLIC).
    pub fn name(&self) -> Vec<u8> {
        let mut name = self.name_alg.tpm_alg_id().to_be_bytes().to_vec();
        name.extend_from_slice(&self.name_alg.hash(&self.raw));
        name
    }

    /// The object's Qualified Name under a parent whose Qualified Name is `parent`
    /// (TPM 2.0 Part 1, §16.6): nameAlg || H_nameAlg(QN(parent) || Name). For a primary key the
    /// parent's QN is the hierarchy handle (see [`hierarchy_qualified_name`]).
    /// TPMS_ATTEST.qualifiedSigner carries this, not the bare Name.
    pub fn qualified_name(&self, parent: &[u8]) -> Vec<u8> {
        let mut qn = self.name_alg.tpm_alg_id().to_be_bytes().to_vec();
        qn.extend_from_slice(&self.name_alg.hash_parts(&[parent, &self.name()]));
        qn
    }

    /// The RSA modulus without leading zeros, or the uncompressed EC point (0x04 || x || y),
    /// for comparison with a certificate's key.
    pub fn key_material(&self) -> Vec<u8> {
        match &self.key {
            PublicKey::Rsa { modulus, .. } => {
                modulus.iter().copied().skip_while(|b| *b == 0).collect()
            }
            PublicKey::Ecc { curve, x, y } => {
                let size = curve.coordinate_size().unwrap_or(x.len().max(y.len()));
                let mut point = vec![0x04];
                point.extend(left_pad(x, size));
                point.extend(left_pad(y, size));
                point
            }
        }
    }

    /// The key as an X.509 SubjectPublicKeyInfo (DER), or `None` for an unsupported curve.
    pub fn spki_der(&self) -> Option<Vec<u8>> {
        match &self.key {
            PublicKey::Rsa { modulus, exponent } => Some(der::rsa_spki(modulus, *exponent)),
            PublicKey::Ecc { curve, .. } => der::ec_spki(*curve, &self.key_material()),
        }
    }
}

/// TPM_RH_ENDORSEMENT, TPM_RH_OWNER, TPM_RH_PLATFORM: the hierarchies keys are made in.
pub const ENDORSEMENT_HIERARCHY: u32 = 0x4000_000b;
pub const OWNER_HIERARCHY: u32 = 0x4000_0001;

/// The Qualified Name of a hierarchy: its handle.
pub fn hierarchy_qualified_name(handle: u32) -> Vec<u8> {
    handle.to_be_bytes().to_vec()
}

fn left_pad(bytes: &[u8], size: usize) -> Vec<u8> {
    let mut out = vec![0u8; size.saturating_sub(bytes.len())];
    out.extend_from_slice(bytes);
    out
}

/// Strips a TPM2B size prefix when the first two bytes are exactly the length of the rest. A bare
/// TPMT_PUBLIC starts with its type (0x0001 or 0x0023), which can never equal its own length
/// minus two for a real key, so the two forms cannot be confused.
pub fn strip_tpm2b(bytes: &[u8]) -> &[u8] {
    match bytes {
        [hi, lo, rest @ ..] if usize::from(u16::from_be_bytes([*hi, *lo])) == rest.len() => rest,
        _ => bytes,
    }
}

/// Minimal DER for the two SubjectPublicKeyInfo shapes we produce. Hand-written because it is two
/// fixed structures; pulling a general ASN.1 encoder into the verifier for them is not worth it.
mod der {
    use super::EccCurve;

    fn length(len: usize, out: &mut Vec<u8>) {
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes: Vec<u8> = len
                .to_be_bytes()
                .into_iter()
                .skip_while(|b| *b == 0)
                .collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend(bytes);
        }
    }

    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        length(content.len(), &mut out);
        out.extend_from_slice(content);
        out
    }

    fn unsigned_integer(bytes: &[u8]) -> Vec<u8> {
        let trimmed: Vec<u8> = bytes.iter().copied().skip_while(|b| *b == 0).collect();
        let mut content = Vec::with_capacity(trimmed.len() + 1);
        if trimmed.first().is_none_or(|b| b & 0x80 != 0) {
            content.push(0);
        }
        content.extend(trimmed);
        tlv(0x02, &content)
    }

    const RSA_ALGORITHM: [u8; 15] = [
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    const EC_PUBLIC_KEY_OID: [u8; 9] = [0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    const P256_OID: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    const P384_OID: [u8; 7] = [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
    const P521_OID: [u8; 7] = [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23];

    pub fn rsa_spki(modulus: &[u8], exponent: u32) -> Vec<u8> {
        let mut key = unsigned_integer(modulus);
        key.extend(unsigned_integer(&exponent.to_be_bytes()));
        let key = tlv(0x30, &key);
        let mut bits = vec![0u8];
        bits.extend(key);
        let mut body = RSA_ALGORITHM.to_vec();
        body.extend(tlv(0x03, &bits));
        tlv(0x30, &body)
    }

    pub fn ec_spki(curve: EccCurve, point: &[u8]) -> Option<Vec<u8>> {
        let curve_oid: &[u8] = match curve {
            EccCurve::NistP256 => &P256_OID,
            EccCurve::NistP384 => &P384_OID,
            EccCurve::NistP521 => &P521_OID,
            EccCurve::Other(_) => return None,
        };
        let mut algorithm = EC_PUBLIC_KEY_OID.to_vec();
        algorithm.extend_from_slice(curve_oid);
        let mut bits = vec![0u8];
        bits.extend_from_slice(point);
        let mut body = tlv(0x30, &algorithm);
        body.extend(tlv(0x03, &bits));
        Some(tlv(0x30, &body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn testdata(path: &str) -> Vec<u8> {
        let full = format!(
            "{}/../../shared/testdata/{path}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&full).unwrap_or_else(|e| panic!("testdata {full} missing: {e}"))
    }

    #[test]
    fn gce_ak_parses_with_expected_name() {
        let bytes = testdata("quotes/gce-cos-85-no-nonce/ak_pub.tpmt_public.bin");
        let ak = Public::parse(&bytes).unwrap();
        assert_eq!(ak.name_alg, HashAlgorithm::Sha256);
        assert!(
            ak.attributes
                .has(ObjectAttributes::RESTRICTED | ObjectAttributes::SIGN_ENCRYPT)
        );
        assert!(
            matches!(ak.key, PublicKey::Rsa { ref modulus, exponent: 65537 } if modulus.len() == 256)
        );
        assert_eq!(
            hex::encode(ak.name()),
            "000bf175bdb57297b2b289973f819863d6c9d09c236725676914f4248c9a2404c2a4"
        );
        // This AK is a primary key in the endorsement hierarchy: its quotes name it by its
        // Qualified Name.
        assert_eq!(
            hex::encode(ak.qualified_name(&hierarchy_qualified_name(ENDORSEMENT_HIERARCHY))),
            "000bde01fe4b4ade2f8b7ae19b8a8897e0cb77ae417731d8ce38697ec4f6c095030a"
        );
        // The same key with a TPM2B prefix parses to the same Name.
        let mut prefixed = (bytes.len() as u16).to_be_bytes().to_vec();
        prefixed.extend_from_slice(&bytes);
        assert_eq!(Public::parse(&prefixed).unwrap().name(), ak.name());
        // Its SPKI is what x509-parser reads back.
        let spki = ak.spki_der().unwrap();
        use x509_parser::prelude::FromDer;
        let (rest, parsed) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&spki).unwrap();
        assert!(rest.is_empty());
        assert_eq!(parsed.raw, spki.as_slice());
    }

    #[test]
    fn truncations_never_panic() {
        let bytes = testdata("quotes/gce-cos-85-no-nonce/ak_pub.tpmt_public.bin");
        for len in 0..bytes.len() {
            assert!(Public::parse(&bytes[..len]).is_err());
        }
    }
}
