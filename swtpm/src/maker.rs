//! Test TPM manufacturers: a root CA and an intermediate CA that issue EK certificates, the way a
//! real TPM maker's PKI does. `TestMakers` gives a trusted maker and an untrusted "rogue" one.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SerialNumber, SubjectPublicKeyInfo,
};

use crate::HarnessError;

/// A TPM maker's CA hierarchy.
pub struct TpmMaker {
    name: String,
    root_params: CertificateParams,
    root_key: KeyPair,
    root_der: Vec<u8>,
    root_pem: String,
    intermediate_params: CertificateParams,
    intermediate_key: KeyPair,
    intermediate_der: Vec<u8>,
    intermediate_pem: String,
}

impl std::fmt::Debug for TpmMaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TpmMaker")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

fn generation(e: rcgen::Error) -> HarnessError {
    HarnessError::Certificate(e.to_string())
}

fn ca_params(common_name: &str, organization: &str, path_length: u8) -> CertificateParams {
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::OrganizationName, organization);
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_length));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.use_authority_key_identifier_extension = true;
    let now = time_now();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(3650);
    params
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

fn serial() -> SerialNumber {
    let mut bytes = [0u8; 12];
    bytes
        .iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = rand_byte(i));
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

fn rand_byte(salt: usize) -> u8 {
    let mut byte = [0u8; 1];
    if aws_lc_rs::rand::fill(&mut byte).is_err() {
        return salt as u8;
    }
    byte[0]
}

impl TpmMaker {
    /// A new maker with a fresh root and intermediate CA.
    pub fn generate(name: &str) -> Result<Self, HarnessError> {
        let root_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(generation)?;
        let mut root_params = ca_params(&format!("{name} EK Root CA"), name, 1);
        root_params.serial_number = Some(serial());
        let root = root_params.self_signed(&root_key).map_err(generation)?;

        let intermediate_key =
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(generation)?;
        let mut intermediate_params = ca_params(&format!("{name} EK Intermediate CA"), name, 0);
        intermediate_params.serial_number = Some(serial());
        let intermediate = intermediate_params
            .signed_by(
                &intermediate_key,
                &Issuer::from_params(&root_params, &root_key),
            )
            .map_err(generation)?;
        Ok(Self {
            name: name.to_string(),
            root_der: root.der().to_vec(),
            root_pem: root.pem(),
            root_params,
            root_key,
            intermediate_der: intermediate.der().to_vec(),
            intermediate_pem: intermediate.pem(),
            intermediate_params,
            intermediate_key,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn root_der(&self) -> &[u8] {
        &self.root_der
    }

    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    pub fn intermediate_der(&self) -> &[u8] {
        &self.intermediate_der
    }

    pub fn intermediate_pem(&self) -> &str {
        &self.intermediate_pem
    }

    /// Writes `DIR/<name>-root.pem` and `DIR/<name>-intermediate.pem`; returns their paths.
    pub fn write_pem(
        &self,
        dir: &Path,
    ) -> Result<(std::path::PathBuf, std::path::PathBuf), HarnessError> {
        let slug: String = self
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        let root = dir.join(format!("{slug}-root.pem"));
        let intermediate = dir.join(format!("{slug}-intermediate.pem"));
        std::fs::write(&root, &self.root_pem).map_err(|e| HarnessError::io("write", &root, e))?;
        std::fs::write(&intermediate, &self.intermediate_pem)
            .map_err(|e| HarnessError::io("write", &intermediate, e))?;
        Ok((root, intermediate))
    }

    /// Issues an EK certificate over `ek_spki_der` (the TPM's EK, as SubjectPublicKeyInfo DER),
    /// signed by the intermediate CA.
    pub fn issue_ek_certificate(
        &self,
        ek_spki_der: &[u8],
        device_label: &str,
        rsa: bool,
    ) -> Result<Vec<u8>, HarnessError> {
        let key = SubjectPublicKeyInfo::from_der(ek_spki_der).map_err(generation)?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::OrganizationName, self.name.as_str());
        params
            .distinguished_name
            .push(DnType::CommonName, format!("EK {device_label}"));
        params.serial_number = Some(serial());
        params.is_ca = IsCa::ExplicitNoCa;
        // An RSA EK decrypts (key encipherment); an ECC EK agrees keys.
        params.key_usages = vec![if rsa {
            KeyUsagePurpose::KeyEncipherment
        } else {
            KeyUsagePurpose::KeyAgreement
        }];
        // tcg-kp-EKCertificate (2.23.133.8.1).
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::Other(vec![2, 23, 133, 8, 1])];
        params.use_authority_key_identifier_extension = true;
        let now = time_now();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(3650);
        let issuer = Issuer::from_params(&self.intermediate_params, &self.intermediate_key);
        let cert = params.signed_by(&key, &issuer).map_err(generation)?;
        Ok(cert.der().to_vec())
    }

    /// Used only to keep the root signing key alive for the maker's lifetime (and in tests that
    /// need to sign something else with it).
    pub fn root_issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.root_params, &self.root_key)
    }
}

/// The trusted test maker and a rogue one the verifier must not trust.
#[derive(Debug)]
pub struct TestMakers {
    pub trusted: TpmMaker,
    pub rogue: TpmMaker,
}

impl TestMakers {
    pub fn generate() -> Result<Self, HarnessError> {
        Ok(Self {
            trusted: TpmMaker::generate("TrustChain Test TPM Maker")?,
            rogue: TpmMaker::generate("Rogue TPM Maker")?,
        })
    }
}
