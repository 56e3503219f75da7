//! Minimal DER for the two SubjectPublicKeyInfo shapes a TPM key turns into (RSA, and EC on a
//! NIST curve), so a TPM key can be compared with an X.509 certificate's key and handed to
//! aws-lc-rs. Hand-written because it is two fixed structures; a general ASN.1 encoder is not
//! worth pulling into the verifier for them.

use super::curve::EccCurve;

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
    let mut out = Vec::with_capacity(content.len() + 4);
    out.push(tag);
    length(content.len(), &mut out);
    out.extend_from_slice(content);
    out
}

/// A DER INTEGER holding a non-negative big-endian number (minimal: no redundant zeros, a zero
/// byte added when the top bit is set).
fn unsigned_integer(bytes: &[u8]) -> Vec<u8> {
    let trimmed: Vec<u8> = bytes.iter().copied().skip_while(|b| *b == 0).collect();
    let mut content = Vec::with_capacity(trimmed.len() + 1);
    if trimmed.first().is_none_or(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend(trimmed);
    tlv(0x02, &content)
}

/// AlgorithmIdentifier { rsaEncryption, NULL }.
const RSA_ALGORITHM: [u8; 15] = [
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
];
const EC_PUBLIC_KEY_OID: [u8; 9] = [0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const P256_OID: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384_OID: [u8; 7] = [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
const P521_OID: [u8; 7] = [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23];

/// SubjectPublicKeyInfo for an RSA key (RFC 8017 RSAPublicKey inside a BIT STRING).
pub fn rsa_spki(modulus: &[u8], exponent: u32) -> Vec<u8> {
    let mut key = unsigned_integer(modulus);
    key.extend(unsigned_integer(&exponent.to_be_bytes()));
    let key = tlv(0x30, &key);
    let mut bits = Vec::with_capacity(key.len() + 1);
    bits.push(0); // no unused bits
    bits.extend(key);
    let mut body = RSA_ALGORITHM.to_vec();
    body.extend(tlv(0x03, &bits));
    tlv(0x30, &body)
}

/// SubjectPublicKeyInfo for an uncompressed EC point (RFC 5480), or `None` for a curve without
/// an OID here.
pub fn ec_spki(curve: EccCurve, point: &[u8]) -> Option<Vec<u8>> {
    let curve_oid: &[u8] = match curve {
        EccCurve::NistP256 => &P256_OID,
        EccCurve::NistP384 => &P384_OID,
        EccCurve::NistP521 => &P521_OID,
        EccCurve::Other(_) => return None,
    };
    let mut algorithm = EC_PUBLIC_KEY_OID.to_vec();
    algorithm.extend_from_slice(curve_oid);
    let mut bits = Vec::with_capacity(point.len() + 1);
    bits.push(0);
    bits.extend_from_slice(point);
    let mut body = tlv(0x30, &algorithm);
    body.extend(tlv(0x03, &bits));
    Some(tlv(0x30, &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_minimal_and_positive() {
        assert_eq!(unsigned_integer(&[0, 0, 1]), [0x02, 0x01, 0x01]);
        assert_eq!(unsigned_integer(&[0x80]), [0x02, 0x02, 0x00, 0x80]);
        assert_eq!(unsigned_integer(&[]), [0x02, 0x01, 0x00]);
        // Long form lengths for a 2048-bit modulus.
        let spki = rsa_spki(&[0xff; 256], 65537);
        assert_eq!(&spki[..4], &[0x30, 0x82, 0x01, 0x22]);
    }
}
