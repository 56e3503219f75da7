//! The deployment CA: a self-signed root that stays on disk, and an issuing CA under it that signs
//! every end-entity certificate (verifier server, agents, operators, AK certificates).
//!
//! On-disk layout of a CA directory (keys 0600):
//! ```text
//! root.pem  root.key.pem  issuing.pem  issuing.key.pem
//! ```

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, SanType, SerialNumber, SubjectPublicKeyInfo,
};
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer};
use time::{Duration, OffsetDateTime};

use crate::CaError;
use crate::files::{read_public, read_secret, write_public, write_secret};
use crate::role::{OperatorRole, ROLE_ATTRIBUTE_OID, Role};

const ROOT_CERT: &str = "root.pem";
const ROOT_KEY: &str = "root.key.pem";
const ISSUING_CERT: &str = "issuing.pem";
const ISSUING_KEY: &str = "issuing.key.pem";

/// How long end-entity certificates live. Revocation (the CRL) is what ends them early.
const END_ENTITY_VALIDITY: Duration = Duration::days(365);
const CA_VALIDITY: Duration = Duration::days(3650);
/// Tolerated clock skew between the CA and the peers that check its certificates.
const BACKDATE: Duration = Duration::minutes(5);

/// A certificate the CA issued, with its private key when the CA generated the key.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    pub der: Vec<u8>,
    pub pem: String,
    /// PKCS#8 PEM private key, for certificates whose key the CA generated (server, operator).
    pub key_pem: Option<String>,
    /// Serial number, lowercase hex (as it appears in the CRL).
    pub serial_hex: String,
}

/// The deployment CA, loaded in memory.
pub struct Authority {
    dir: PathBuf,
    root_der: Vec<u8>,
    root_pem: String,
    issuing_der: Vec<u8>,
    issuing_pem: String,
    issuing_key: KeyPair,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("Authority")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn generate(operation: &'static str) -> impl FnOnce(rcgen::Error) -> CaError {
    move |source| CaError::Generate { operation, source }
}

fn new_key() -> Result<KeyPair, CaError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(generate("key generation"))
}

/// A random, positive 16-byte serial number.
fn random_serial() -> Result<SerialNumber, CaError> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| CaError::BadRequest("no randomness".into()))?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01; // never a leading zero byte, so the DER length is stable
    Ok(SerialNumber::from_slice(&bytes))
}

fn name(common_name: &str, unit: Option<&str>, organization: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, organization);
    if let Some(unit) = unit {
        dn.push(DnType::OrganizationalUnitName, unit);
    }
    dn.push(DnType::CommonName, common_name);
    dn
}

fn end_entity_params(
    common_name: &str,
    role: Role,
    usage: ExtendedKeyUsagePurpose,
) -> Result<CertificateParams, CaError> {
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    params.distinguished_name = name(common_name, Some(role.organizational_unit()), "TrustChain");
    params.not_before = now - BACKDATE;
    params.not_after = now + END_ENTITY_VALIDITY;
    params.serial_number = Some(random_serial()?);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn serial_hex(params: &CertificateParams) -> String {
    params
        .serial_number
        .as_ref()
        .map(|s| hex::encode(s.to_bytes()))
        .unwrap_or_default()
}

impl Authority {
    /// Creates a new CA in `dir` (created if missing). Refuses to overwrite an existing CA.
    pub fn create(dir: &Path, organization: &str) -> Result<Self, CaError> {
        if dir.join(ISSUING_KEY).exists() || dir.join(ROOT_KEY).exists() {
            return Err(CaError::AlreadyExists(dir.to_path_buf()));
        }
        std::fs::create_dir_all(dir).map_err(|source| CaError::Io {
            operation: "create directory",
            path: dir.to_path_buf(),
            source,
        })?;
        let now = OffsetDateTime::now_utc();

        let root_key = new_key()?;
        let mut root = CertificateParams::default();
        root.distinguished_name = name(&format!("{organization} Root CA"), None, organization);
        root.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
        root.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        root.not_before = now - BACKDATE;
        root.not_after = now + CA_VALIDITY;
        root.serial_number = Some(random_serial()?);
        let root_cert = root
            .self_signed(&root_key)
            .map_err(generate("root certificate"))?;
        let root_issuer = Issuer::new(root, &root_key);

        let issuing_key = new_key()?;
        let mut issuing = CertificateParams::default();
        issuing.distinguished_name =
            name(&format!("{organization} Issuing CA"), None, organization);
        issuing.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        issuing.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        issuing.not_before = now - BACKDATE;
        issuing.not_after = now + CA_VALIDITY;
        issuing.serial_number = Some(random_serial()?);
        issuing.use_authority_key_identifier_extension = true;
        let issuing_cert = issuing
            .signed_by(&issuing_key, &root_issuer)
            .map_err(generate("issuing certificate"))?;

        write_secret(&dir.join(ROOT_KEY), root_key.serialize_pem().as_bytes())?;
        write_public(&dir.join(ROOT_CERT), root_cert.pem().as_bytes())?;
        write_secret(
            &dir.join(ISSUING_KEY),
            issuing_key.serialize_pem().as_bytes(),
        )?;
        write_public(&dir.join(ISSUING_CERT), issuing_cert.pem().as_bytes())?;
        Self::load(dir)
    }

    /// Loads the CA from `dir`. The root key is not loaded: day-to-day issuance needs only the
    /// issuing key.
    pub fn load(dir: &Path) -> Result<Self, CaError> {
        let issuing_key_pem = read_secret(&dir.join(ISSUING_KEY))?;
        let issuing_key = KeyPair::from_pem(&issuing_key_pem).map_err(|e| CaError::Corrupt {
            path: dir.join(ISSUING_KEY),
            detail: e.to_string(),
        })?;
        let root_pem = read_public(&dir.join(ROOT_CERT))?;
        let issuing_pem = read_public(&dir.join(ISSUING_CERT))?;
        let root_der = pem_to_der(&root_pem, &dir.join(ROOT_CERT))?;
        let issuing_der = pem_to_der(&issuing_pem, &dir.join(ISSUING_CERT))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            root_der,
            root_pem,
            issuing_der,
            issuing_pem,
            issuing_key,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn root_der(&self) -> &[u8] {
        &self.root_der
    }

    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    pub fn issuing_der(&self) -> &[u8] {
        &self.issuing_der
    }

    pub fn issuing_pem(&self) -> &str {
        &self.issuing_pem
    }

    /// The chain a peer presents after its own certificate: issuing CA, then root.
    pub fn chain_der(&self) -> Vec<Vec<u8>> {
        vec![self.issuing_der.clone(), self.root_der.clone()]
    }

    pub(crate) fn issuer(&self) -> Result<Issuer<'_, &KeyPair>, CaError> {
        Issuer::from_ca_cert_der(
            &CertificateDer::from(self.issuing_der.as_slice()),
            &self.issuing_key,
        )
        .map_err(generate("load issuing certificate"))
    }

    /// The verifier's TLS server certificate, for the given DNS names and IP addresses.
    pub fn issue_verifier(
        &self,
        dns_names: &[String],
        ips: &[IpAddr],
    ) -> Result<IssuedCertificate, CaError> {
        let common = dns_names
            .first()
            .cloned()
            .unwrap_or_else(|| "trustchain-verifier".into());
        let mut params =
            end_entity_params(&common, Role::Verifier, ExtendedKeyUsagePurpose::ServerAuth)?;
        for dns in dns_names {
            let name = dns.clone().try_into().map_err(generate("dns name"))?;
            params.subject_alt_names.push(SanType::DnsName(name));
        }
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        self.issue_with_new_key(params)
    }

    /// An operator's TLS client certificate, allowing `roles` (at least one) on the admin calls.
    pub fn issue_operator(
        &self,
        operator: &str,
        roles: &[OperatorRole],
    ) -> Result<IssuedCertificate, CaError> {
        if roles.is_empty() {
            return Err(CaError::Invalid(
                "an operator certificate needs at least one role".into(),
            ));
        }
        let mut params = end_entity_params(
            operator,
            Role::Operator,
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        params.distinguished_name.push(
            DnType::CustomDnType(ROLE_ATTRIBUTE_OID.to_vec()),
            DnValue::Utf8String(OperatorRole::attribute_value(roles)),
        );
        self.issue_with_new_key(params)
    }

    fn issue_with_new_key(&self, params: CertificateParams) -> Result<IssuedCertificate, CaError> {
        let key = new_key()?;
        let cert = params
            .signed_by(&key, &self.issuer()?)
            .map_err(generate("sign"))?;
        Ok(IssuedCertificate {
            der: cert.der().to_vec(),
            pem: cert.pem(),
            key_pem: Some(key.serialize_pem()),
            serial_hex: serial_hex(&params),
        })
    }

    /// An agent's mTLS client certificate from its CSR. Only the CSR's public key (and proof of
    /// possession, its signature) is used; the subject is the device id the verifier derived.
    pub fn issue_agent(
        &self,
        csr_der: &[u8],
        device_id: &str,
    ) -> Result<IssuedCertificate, CaError> {
        let csr =
            CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
                .map_err(|e| CaError::BadRequest(e.to_string()))?;
        let params =
            end_entity_params(device_id, Role::Agent, ExtendedKeyUsagePurpose::ClientAuth)?;
        let cert = params
            .signed_by(&csr.public_key, &self.issuer()?)
            .map_err(generate("sign"))?;
        Ok(IssuedCertificate {
            der: cert.der().to_vec(),
            pem: cert.pem(),
            key_pem: None,
            serial_hex: serial_hex(&params),
        })
    }

    /// An AK certificate: binds the attestation key (SubjectPublicKeyInfo DER) to the device id and
    /// the serial of the EK certificate it was activated against.
    pub fn issue_ak(
        &self,
        ak_spki_der: &[u8],
        device_id: &str,
        ek_certificate_serial_hex: &str,
    ) -> Result<IssuedCertificate, CaError> {
        let ak = SubjectPublicKeyInfo::from_der(ak_spki_der)
            .map_err(|e| CaError::BadRequest(format!("AK public key: {e}")))?;
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        let mut dn = name(device_id, Some("trustchain-attestation-key"), "TrustChain");
        dn.push(
            DnType::CustomDnType(vec![2, 5, 4, 5]),
            ek_certificate_serial_hex,
        ); // serialNumber
        params.distinguished_name = dn;
        params.not_before = now - BACKDATE;
        params.not_after = now + END_ENTITY_VALIDITY;
        params.serial_number = Some(random_serial()?);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&ak, &self.issuer()?)
            .map_err(generate("sign"))?;
        Ok(IssuedCertificate {
            der: cert.der().to_vec(),
            pem: cert.pem(),
            key_pem: None,
            serial_hex: serial_hex(&params),
        })
    }
}

fn pem_to_der(pem: &str, path: &Path) -> Result<Vec<u8>, CaError> {
    use rustls_pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map(|der| der.to_vec())
        .map_err(|e| CaError::Corrupt {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::role::peer_identity;
    use x509_parser::prelude::{FromDer, X509Certificate};

    fn verify_signed_by(child: &[u8], parent: &[u8]) -> bool {
        let (_, child) = X509Certificate::from_der(child).unwrap();
        let (_, parent) = X509Certificate::from_der(parent).unwrap();
        child.verify_signature(Some(parent.public_key())).is_ok()
    }

    #[test]
    fn create_load_and_issue_every_role() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::create(dir.path(), "Test Org").unwrap();
        assert!(matches!(
            Authority::create(dir.path(), "x"),
            Err(CaError::AlreadyExists(_))
        ));
        let ca2 = Authority::load(dir.path()).unwrap();
        assert_eq!(ca.root_der(), ca2.root_der());
        assert!(verify_signed_by(ca.issuing_der(), ca.root_der()));

        let server = ca
            .issue_verifier(&["localhost".into()], &["127.0.0.1".parse().unwrap()])
            .unwrap();
        assert!(verify_signed_by(&server.der, ca.issuing_der()));
        assert_eq!(peer_identity(&server.der).unwrap().role, Role::Verifier);

        let operator = ca.issue_operator("alice", &[OperatorRole::Viewer]).unwrap();
        let id = peer_identity(&operator.der).unwrap();
        assert_eq!((id.role, id.name.as_str()), (Role::Operator, "alice"));
        assert_eq!(id.operator_roles, vec![OperatorRole::Viewer]);
        assert_eq!(id.serial_hex, operator.serial_hex);
        let both = [OperatorRole::PolicyAdmin, OperatorRole::Operator];
        let id = peer_identity(&ca.issue_operator("bob", &both).unwrap().der).unwrap();
        assert_eq!(
            id.operator_roles,
            vec![OperatorRole::Operator, OperatorRole::PolicyAdmin]
        );
        assert!(matches!(
            ca.issue_operator("carol", &[]),
            Err(CaError::Invalid(_))
        ));
        // A certificate from before roles (no role attribute) holds none.
        let old =
            end_entity_params("dave", Role::Operator, ExtendedKeyUsagePurpose::ClientAuth).unwrap();
        let id = peer_identity(&ca.issue_with_new_key(old).unwrap().der).unwrap();
        assert_eq!((id.role, id.operator_roles.len()), (Role::Operator, 0));

        // An agent asks for "operator" in its CSR; the CA ignores the requested subject.
        let agent_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut request = CertificateParams::default();
        request.distinguished_name = name("admin", Some("trustchain-operator"), "Evil");
        let csr = request.serialize_request(&agent_key).unwrap();
        let agent = ca.issue_agent(csr.der(), "dev-1234").unwrap();
        assert!(agent.key_pem.is_none());
        let id = peer_identity(&agent.der).unwrap();
        assert_eq!((id.role, id.name.as_str()), (Role::Agent, "dev-1234"));
        assert!(id.operator_roles.is_empty());
        assert!(verify_signed_by(&agent.der, ca.issuing_der()));

        // A CSR whose signature does not hold is refused.
        let mut bad = csr.der().to_vec();
        let last = bad.len() - 3;
        bad[last] ^= 1;
        assert!(matches!(
            ca.issue_agent(&bad, "dev"),
            Err(CaError::BadRequest(_))
        ));

        // AK certificate over an arbitrary SPKI.
        let ak_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let spki = rcgen::PublicKeyData::subject_public_key_info(&ak_key);
        let ak = ca.issue_ak(&spki, "dev-1234", "0a0b").unwrap();
        let (_, parsed) = X509Certificate::from_der(&ak.der).unwrap();
        assert_eq!(parsed.public_key().raw, spki.as_slice());
        assert!(verify_signed_by(&ak.der, ca.issuing_der()));
        assert!(
            peer_identity(&ak.der).is_none(),
            "an AK certificate is no TLS identity"
        );
    }
}
