//! Test TPM manufacturers: a root CA and an intermediate CA that issue EK certificates, the way a
//! real TPM maker's PKI does. `TestMakers` gives a trusted maker and an untrusted "rogue" one.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SerialNumber, SubjectPublicKeyInfo,
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

fn generation(source: rcgen::Error) -> HarnessError {
    HarnessError::Certificate {
        operation: "generation",
        source,
    }
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
        // Non-critical: the subject is not empty (TCG makes it critical only when it is).
        params.custom_extensions = vec![CustomExtension::from_oid_content(
            &[2, 5, 29, 17],
            tpm_manufacturer_san(&self.name),
        )];
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

/// DER tag-length-value (lengths in short or long form; everything here is far below 64 KiB).
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let length = content.len();
    if length < 0x80 {
        out.push(length as u8);
    } else if length < 0x100 {
        out.extend_from_slice(&[0x81, length as u8]);
    } else {
        out.push(0x82);
        out.extend_from_slice(&(length as u16).to_be_bytes());
    }
    out.extend_from_slice(content);
    out
}

/// The TPM Vendor ID a maker's certificates name: its first four letters, as TCG vendor IDs are
/// four ASCII characters (e.g. "IFX", "STM ").
pub fn vendor_id(maker_name: &str) -> [u8; 4] {
    let mut id = *b"    ";
    for (slot, c) in id.iter_mut().zip(
        maker_name
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_uppercase()),
    ) {
        *slot = c as u8;
    }
    id
}

/// The SubjectAltName value of a TCG EK certificate (EK Credential Profile §3.2.9): one
/// directoryName with TPMManufacturer "id:<vendor hex>", TPMModel and TPMVersion, one RDN each.
fn tpm_manufacturer_san(maker_name: &str) -> Vec<u8> {
    // 2.23.133.2.1 tcg-at-tpmManufacturer, .2 tcg-at-tpmModel, .3 tcg-at-tpmVersion.
    let attributes: [(u8, String); 3] = [
        (
            1,
            format!("id:{}", hex::encode_upper(vendor_id(maker_name))),
        ),
        (2, "swtpm".to_string()),
        (3, "id:00010000".to_string()),
    ];
    let mut rdns = Vec::new();
    for (arc, value) in attributes {
        let oid = der(0x06, &[0x67, 0x81, 0x05, 0x02, arc]);
        let mut pair = oid;
        pair.extend(der(0x0c, value.as_bytes()));
        rdns.extend(der(0x31, &der(0x30, &pair)));
    }
    // GeneralNames ::= SEQUENCE { [4] EXPLICIT Name } (Name is a CHOICE, so explicit).
    der(0x30, &der(0xa4, &der(0x30, &rdns)))
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

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::PublicKeyData;
    use x509_parser::extensions::GeneralName;
    use x509_parser::prelude::{FromDer, X509Certificate};

    #[test]
    fn ek_certificate_chains_to_its_maker_with_ca_extensions_and_tcg_san() {
        let started = std::time::Instant::now();
        let makers = TestMakers::generate().unwrap();
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        let maker = &makers.trusted;
        let ek = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let der = maker
            .issue_ek_certificate(&ek.subject_public_key_info(), "unit", false)
            .unwrap();
        let (_, root) = X509Certificate::from_der(maker.root_der()).unwrap();
        let (_, intermediate) = X509Certificate::from_der(maker.intermediate_der()).unwrap();
        let (_, leaf) = X509Certificate::from_der(&der).unwrap();
        assert!(root.verify_signature(None).is_ok());
        assert!(
            intermediate
                .verify_signature(Some(root.public_key()))
                .is_ok()
        );
        assert!(
            leaf.verify_signature(Some(intermediate.public_key()))
                .is_ok()
        );
        let (_, rogue) = X509Certificate::from_der(makers.rogue.intermediate_der()).unwrap();
        assert!(leaf.verify_signature(Some(rogue.public_key())).is_err());
        for ca in [&root, &intermediate] {
            assert!(ca.basic_constraints().unwrap().unwrap().value.ca);
            let usage = ca.key_usage().unwrap().unwrap().value;
            assert!(usage.key_cert_sign() && usage.crl_sign());
            assert!(
                ca.get_extension_unique(
                    &x509_parser::oid_registry::OID_X509_EXT_SUBJECT_KEY_IDENTIFIER
                )
                .unwrap()
                .is_some()
            );
        }
        assert!(
            intermediate
                .get_extension_unique(
                    &x509_parser::oid_registry::OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER
                )
                .unwrap()
                .is_some()
        );
        assert_eq!(
            leaf.public_key().raw,
            ek.subject_public_key_info().as_slice()
        );
        assert!(leaf.key_usage().unwrap().unwrap().value.key_agreement());
        let san = leaf.subject_alternative_name().unwrap().unwrap();
        let GeneralName::DirectoryName(name) = &san.value.general_names[0] else {
            panic!("directoryName expected");
        };
        let values: Vec<(String, String)> = name
            .iter_attributes()
            .map(|a| {
                (
                    a.attr_type().to_id_string(),
                    a.as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            values[0],
            ("2.23.133.2.1".to_string(), "id:54525553".to_string())
        );
        assert_eq!(values.len(), 3);
    }

    #[test]
    fn vendor_ids_are_four_characters() {
        assert_eq!(&vendor_id("TrustChain Test"), b"TRUS");
        assert_eq!(&vendor_id("a-b"), b"AB  ");
    }

    #[test]
    fn pem_files_are_written() {
        let maker = TpmMaker::generate("Pem Maker").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (root, intermediate) = maker.write_pem(dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(root).unwrap(), maker.root_pem());
        assert!(
            std::fs::read_to_string(intermediate)
                .unwrap()
                .starts_with("-----BEGIN CERTIFICATE-----")
        );
    }
}
