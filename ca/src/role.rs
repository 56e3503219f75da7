//! Roles: what a certificate issued by this CA speaks for.
//!
//! The role is the subject's organizational unit, which only this CA sets (it never copies a subject
//! from a CSR). The verifier authorises by role after the TLS layer has validated the chain: an agent
//! certificate opens the attestation stream only, an operator certificate opens admin calls only.

use std::fmt;

use x509_parser::prelude::{FromDer, X509Certificate};

/// Who a certificate speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The verifier service (TLS server).
    Verifier,
    /// An enrolled device's agent (TLS client); the common name is the device id.
    Agent,
    /// A human or tool operating the verifier (TLS client).
    Operator,
}

impl Role {
    pub fn organizational_unit(self) -> &'static str {
        match self {
            Role::Verifier => "trustchain-verifier",
            Role::Agent => "trustchain-agent",
            Role::Operator => "trustchain-operator",
        }
    }

    fn from_organizational_unit(ou: &str) -> Option<Self> {
        [Role::Verifier, Role::Agent, Role::Operator]
            .into_iter()
            .find(|role| role.organizational_unit() == ou)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.organizational_unit())
    }
}

/// The identity a (chain-validated) peer certificate carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    pub role: Role,
    /// The subject common name: the device id for agents, the operator's name for operators.
    pub name: String,
    /// The certificate serial number, lowercase hex.
    pub serial_hex: String,
}

/// Reads the role and name from a DER certificate issued by this CA. Returns `None` for a
/// certificate without exactly one role OU and one common name: such a peer gets no access.
pub fn peer_identity(der: &[u8]) -> Option<PeerIdentity> {
    let (rest, cert) = X509Certificate::from_der(der).ok()?;
    if !rest.is_empty() {
        return None;
    }
    let subject = cert.subject();
    let mut units = subject.iter_organizational_unit();
    let role = Role::from_organizational_unit(units.next()?.as_str().ok()?)?;
    if units.next().is_some() {
        return None;
    }
    let mut names = subject.iter_common_name();
    let name = names.next()?.as_str().ok()?.to_owned();
    if names.next().is_some() {
        return None;
    }
    Some(PeerIdentity {
        role,
        name,
        serial_hex: hex::encode(cert.raw_serial()),
    })
}
