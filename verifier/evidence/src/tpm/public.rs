//! TPMT_PUBLIC for RSA and ECC keys (TPM 2.0 Part 2, §12.2) and its object attributes, with the
//! helpers enrollment needs: the key as modulus/exponent or EC point, as SPKI DER, and attribute
//! checks. Names live in `name`, the DER encoding in `spki`.

use crate::digest::HashAlgorithm;
use crate::reader::{ReadError, Reader};

use super::curve::EccCurve;
use super::spki;
use super::{ALG_NULL, MAX_DIGEST_SIZE, MAX_ECC_COORDINATE, MAX_RSA_BYTES};

const TPM_ALG_RSA: u16 = 0x0001;
const TPM_ALG_ECC: u16 = 0x0023;
const TPM_ALG_KEYEDHASH: u16 = 0x0008;
const TPM_ALG_SYMCIPHER: u16 = 0x0025;

/// TPMA_OBJECT. The flags are the `u32` constants below; the named methods read one each.
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

    /// What an attestation key must have: it never leaves this TPM, the TPM made its secret, and
    /// it only signs TPM-generated structures.
    pub const AK_REQUIRED: [u32; 5] = [
        Self::FIXED_TPM,
        Self::FIXED_PARENT,
        Self::SENSITIVE_DATA_ORIGIN,
        Self::RESTRICTED,
        Self::SIGN_ENCRYPT,
    ];

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

    /// True when every bit of `flag` (one constant or several or-ed) is set.
    pub fn has(self, flag: u32) -> bool {
        self.0 & flag == flag
    }

    pub fn fixed_tpm(self) -> bool {
        self.has(Self::FIXED_TPM)
    }

    pub fn st_clear(self) -> bool {
        self.has(Self::ST_CLEAR)
    }

    pub fn fixed_parent(self) -> bool {
        self.has(Self::FIXED_PARENT)
    }

    pub fn sensitive_data_origin(self) -> bool {
        self.has(Self::SENSITIVE_DATA_ORIGIN)
    }

    pub fn user_with_auth(self) -> bool {
        self.has(Self::USER_WITH_AUTH)
    }

    pub fn admin_with_policy(self) -> bool {
        self.has(Self::ADMIN_WITH_POLICY)
    }

    pub fn no_da(self) -> bool {
        self.has(Self::NO_DA)
    }

    pub fn encrypted_duplication(self) -> bool {
        self.has(Self::ENCRYPTED_DUPLICATION)
    }

    pub fn restricted(self) -> bool {
        self.has(Self::RESTRICTED)
    }

    pub fn decrypt(self) -> bool {
        self.has(Self::DECRYPT)
    }

    /// The `sign` (a.k.a. `sign/encrypt`) attribute.
    pub fn sign(self) -> bool {
        self.has(Self::SIGN_ENCRYPT)
    }

    /// The first flag of `required` that is not set, by its TPM name.
    pub fn first_missing(self, required: &[u32]) -> Option<&'static str> {
        required
            .iter()
            .find(|flag| !self.has(**flag))
            .map(|flag| Self::flag_name(*flag))
    }

    /// The first flag of `forbidden` that is set, by its TPM name.
    pub fn first_present(self, forbidden: &[u32]) -> Option<&'static str> {
        forbidden
            .iter()
            .find(|flag| self.has(**flag))
            .map(|flag| Self::flag_name(*flag))
    }

    /// The name of a single flag constant, for error messages.
    pub fn flag_name(flag: u32) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(f, _)| *f == flag)
            .map_or("unknown", |(_, n)| n)
    }

    /// The TPM names of the set flags, in bit order.
    pub fn names(self) -> Vec<&'static str> {
        Self::NAMES
            .iter()
            .filter(|(f, _)| self.has(*f))
            .map(|(_, n)| *n)
            .collect()
    }
}

impl std::fmt::Display for ObjectAttributes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "0x{:08x} ({})", self.0, self.names().join("|"))
    }
}

/// TPMT_SYM_DEF_OBJECT, as (algorithm, keyBits, mode), or `None` for TPM_ALG_NULL.
pub type Symmetric = Option<(u16, u16, u16)>;

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
    /// Parses a TPMT_PUBLIC, or a TPM2B_PUBLIC (size-prefixed) holding one; see [`Encoding`].
    pub fn parse(bytes: &[u8]) -> Result<Self, ReadError> {
        Self::parse_encoding(bytes).map(|(public, _)| public)
    }

    /// Parses either form and says which one it was.
    ///
    /// The size prefix is taken off only when it equals the length of the rest *and* the rest
    /// parses as a TPMT_PUBLIC; otherwise the input is read as a bare TPMT_PUBLIC. The two
    /// readings cannot both succeed: read as prefixed, a bare TPMT_PUBLIC's nameAlg lands in the
    /// type field, and no hash algorithm id is a key type (RSA 0x0001, ECC 0x0023).
    pub fn parse_encoding(bytes: &[u8]) -> Result<(Self, Encoding), ReadError> {
        if let [hi, lo, rest @ ..] = bytes
            && usize::from(u16::from_be_bytes([*hi, *lo])) == rest.len()
        {
            // Offsets stay relative to the whole input: the body starts at byte 2.
            let mut outer = Reader::new(bytes);
            outer.u16_be("size")?;
            let mut r = outer.sub("publicArea", rest.len())?;
            let prefixed = Self::read(&mut r).and_then(|public| r.finish().map(|()| public));
            return match prefixed {
                Ok(public) => Ok((public, Encoding::Tpm2bPublic)),
                // Report the prefixed reading's error: the length said it was prefixed.
                Err(prefixed_error) => Self::parse_bare(bytes)
                    .map(|public| (public, Encoding::TpmtPublic))
                    .map_err(|_| prefixed_error),
            };
        }
        Self::parse_bare(bytes).map(|public| (public, Encoding::TpmtPublic))
    }

    fn parse_bare(bytes: &[u8]) -> Result<Self, ReadError> {
        let mut r = Reader::new(bytes);
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
                let limit = curve.coordinate_size().unwrap_or(MAX_ECC_COORDINATE);
                let x = r.tpm2b("unique.ecc.x", limit)?.to_vec();
                let y = r.tpm2b("unique.ecc.y", limit)?.to_vec();
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

    /// The RSA modulus without leading zeros, or the uncompressed EC point (0x04 || x || y),
    /// for comparison with a certificate's key.
    pub fn key_material(&self) -> Vec<u8> {
        match &self.key {
            PublicKey::Rsa { modulus, .. } => {
                modulus.iter().copied().skip_while(|b| *b == 0).collect()
            }
            PublicKey::Ecc { curve, x, y } => {
                let size = curve.coordinate_size().unwrap_or(x.len().max(y.len()));
                let mut point = Vec::with_capacity(1 + 2 * size);
                point.push(0x04);
                point.extend(left_pad(x, size));
                point.extend(left_pad(y, size));
                point
            }
        }
    }

    /// The RSA modulus (as received, big-endian) and public exponent, for an RSA key.
    pub fn rsa_public(&self) -> Option<(&[u8], u32)> {
        match &self.key {
            PublicKey::Rsa { modulus, exponent } => Some((modulus, *exponent)),
            PublicKey::Ecc { .. } => None,
        }
    }

    /// The curve and uncompressed point (0x04 || x || y, each left-padded to the coordinate
    /// size), for an ECC key.
    pub fn ec_point(&self) -> Option<(EccCurve, Vec<u8>)> {
        match &self.key {
            PublicKey::Ecc { curve, .. } => Some((*curve, self.key_material())),
            PublicKey::Rsa { .. } => None,
        }
    }

    /// The key as an X.509 SubjectPublicKeyInfo (DER), or `None` for an unsupported curve.
    pub fn spki_der(&self) -> Option<Vec<u8>> {
        match &self.key {
            PublicKey::Rsa { modulus, exponent } => Some(spki::rsa_spki(modulus, *exponent)),
            PublicKey::Ecc { curve, .. } => spki::ec_spki(*curve, &self.key_material()),
        }
    }

    /// Whether this key is shaped like an attestation key: every flag of
    /// [`ObjectAttributes::AK_REQUIRED`] set and `decrypt` clear. The error names the attribute.
    pub fn check_ak_attributes(&self) -> Result<(), AttributeError> {
        if let Some(flag) = self
            .attributes
            .first_missing(&ObjectAttributes::AK_REQUIRED)
        {
            return Err(AttributeError::Missing(flag));
        }
        if let Some(flag) = self.attributes.first_present(&[ObjectAttributes::DECRYPT]) {
            return Err(AttributeError::Forbidden(flag));
        }
        Ok(())
    }
}

/// How a TPMT_PUBLIC arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// A bare TPMT_PUBLIC (what tpm2-tools writes with `-f tpmt`, go-attestation's dumps).
    TpmtPublic,
    /// A TPM2B_PUBLIC: u16 size, then the TPMT_PUBLIC (what TPM2_ReadPublic returns).
    Tpm2bPublic,
}

/// An object attribute a key must have, or must not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttributeError {
    #[error("attribute {0} must be set")]
    Missing(&'static str),
    #[error("attribute {0} must not be set")]
    Forbidden(&'static str),
}

fn left_pad(bytes: &[u8], size: usize) -> Vec<u8> {
    let mut out = vec![0u8; size.saturating_sub(bytes.len())];
    out.extend_from_slice(bytes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tpm::name::{ENDORSEMENT_HIERARCHY, hierarchy_qualified_name};

    fn testdata(path: &str) -> Vec<u8> {
        let full = format!(
            "{}/../../../shared/testdata/{path}",
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
    fn attribute_checks_and_key_helpers() {
        let bytes = testdata("quotes/gce-cos-85-no-nonce/ak_pub.tpmt_public.bin");
        let ak = Public::parse(&bytes).unwrap();
        let attributes = ak.attributes;
        assert!(attributes.fixed_tpm() && attributes.fixed_parent() && attributes.restricted());
        assert!(attributes.sign() && attributes.sensitive_data_origin() && !attributes.decrypt());
        assert_eq!(ak.check_ak_attributes(), Ok(()));
        let (modulus, exponent) = ak.rsa_public().unwrap();
        assert_eq!((modulus.len(), exponent), (256, 65537));
        assert!(ak.ec_point().is_none());

        // objectAttributes sit at bytes 4..8 of a TPMT_PUBLIC.
        let mut not_fixed = bytes.clone();
        not_fixed[7] &= !(ObjectAttributes::FIXED_TPM as u8);
        let public = Public::parse(&not_fixed).unwrap();
        assert_eq!(
            public.check_ak_attributes(),
            Err(AttributeError::Missing("fixedTPM"))
        );
        // A changed attribute is a different object: its Name changes too.
        assert_ne!(public.name(), ak.name());
        let mut decrypt = bytes.clone();
        decrypt[5] |= (ObjectAttributes::DECRYPT >> 16) as u8;
        assert_eq!(
            Public::parse(&decrypt).unwrap().check_ak_attributes(),
            Err(AttributeError::Forbidden("decrypt"))
        );
    }

    /// A hand-made ECC TPMT_PUBLIC with coordinates of `coordinate` bytes.
    fn ecc_public(coordinate: usize, x_len: usize, y_len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for word in [0x0023u16, 0x000b] {
            out.extend_from_slice(&word.to_be_bytes());
        }
        out.extend_from_slice(&0x0005_0072u32.to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes());
        let curve = if coordinate == 32 { 0x0003u16 } else { 0x0004 };
        for word in [0x0010u16, 0x0018, 0x000b, curve, 0x0010] {
            out.extend_from_slice(&word.to_be_bytes());
        }
        for len in [x_len, y_len] {
            out.extend_from_slice(&(len as u16).to_be_bytes());
            out.extend(std::iter::repeat_n(0x11, len));
        }
        out
    }

    #[test]
    fn both_encodings_are_told_apart() {
        let bare = ecc_public(32, 32, 32);
        let (public, encoding) = Public::parse_encoding(&bare).unwrap();
        assert_eq!(encoding, Encoding::TpmtPublic);
        let mut prefixed = (bare.len() as u16).to_be_bytes().to_vec();
        prefixed.extend_from_slice(&bare);
        let (again, encoding) = Public::parse_encoding(&prefixed).unwrap();
        assert_eq!(encoding, Encoding::Tpm2bPublic);
        assert_eq!(again.raw, bare);
        assert_eq!(again.name(), public.name());
        let (curve, point) = public.ec_point().unwrap();
        assert_eq!((curve, point.len(), point[0]), (EccCurve::NistP256, 65, 4));

        // A bare TPMT_PUBLIC of 37 bytes starts with 0x0023 = its length minus two: it looks
        // prefixed, does not parse that way, and is read as what it is.
        let ambiguous = ecc_public(32, 6, 7);
        assert_eq!(ambiguous.len(), 37);
        let (public, encoding) = Public::parse_encoding(&ambiguous).unwrap();
        assert_eq!(encoding, Encoding::TpmtPublic);
        assert_eq!(public.raw, ambiguous);

        // A prefixed body that fails reports the offset inside the whole input.
        let mut broken = prefixed.clone();
        broken[2 + 2] = 0x77; // nameAlg
        let error = Public::parse(&broken).unwrap_err();
        assert_eq!(error.offset, 6);

        // Coordinates longer than the curve's are refused.
        assert!(Public::parse(&ecc_public(32, 33, 32)).is_err());
    }

    #[test]
    fn truncations_never_panic() {
        let bytes = testdata("quotes/gce-cos-85-no-nonce/ak_pub.tpmt_public.bin");
        for len in 0..bytes.len() {
            assert!(Public::parse(&bytes[..len]).is_err());
        }
    }
}
