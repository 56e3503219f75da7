//! Roles: what a certificate issued by this CA speaks for.
//!
//! The role is the subject's organizational unit, which only this CA sets (it never copies a subject
//! from a CSR). The verifier authorises by role after the TLS layer has validated the chain: an agent
//! certificate opens the attestation stream only, an operator certificate opens admin calls only.
//!
//! An operator certificate also names what its holder may do: its subject carries the X.520
//! `role` attribute (OID 2.5.4.72, a UTF8String here, not RFC 5755's `RoleSyntax`) listing one or
//! more [`OperatorRole`]s separated by commas. A certificate without that attribute (issued before
//! roles existed), or naming an unknown, empty or repeated role, holds no role at all and opens
//! no admin call: such certificates must be reissued.

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

/// The subject attribute that carries an operator's roles: X.520 `role` (2.5.4.72).
pub const ROLE_ATTRIBUTE_OID: [u64; 4] = [2, 5, 4, 72];

/// What an operator certificate allows. Every role may read (the viewer's calls); `operator`
/// acts on devices and `policy-admin` changes what is trusted, and neither includes the other:
/// a certificate holds both only when the CA was asked for both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OperatorRole {
    /// Reads: devices, their detail and history, the watch stream, the audit export.
    Viewer,
    /// Acts on devices: clears (releases from quarantine) and decommissions.
    Operator,
    /// Changes what is trusted: imports trust lists, manifests and policies, approves imports.
    PolicyAdmin,
}

impl OperatorRole {
    pub const ALL: [OperatorRole; 3] = [
        OperatorRole::Viewer,
        OperatorRole::Operator,
        OperatorRole::PolicyAdmin,
    ];

    /// The name in certificates, on the command line and in the docs.
    pub fn name(self) -> &'static str {
        match self {
            OperatorRole::Viewer => "viewer",
            OperatorRole::Operator => "operator",
            OperatorRole::PolicyAdmin => "policy-admin",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|role| role.name() == name)
    }

    /// Whether holding `self` grants what `needed` grants (every role includes the viewer's).
    pub fn grants(self, needed: OperatorRole) -> bool {
        self == needed || needed == OperatorRole::Viewer
    }

    /// The `role` attribute value for `roles` (sorted, without repeats).
    pub fn attribute_value(roles: &[OperatorRole]) -> String {
        let mut roles = roles.to_vec();
        roles.sort();
        roles.dedup();
        roles
            .iter()
            .map(|role| role.name())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Parses a `role` attribute value; `None` (no role at all) for anything but a list of
    /// distinct known roles.
    pub fn parse_attribute(value: &str) -> Option<Vec<OperatorRole>> {
        let mut roles = Vec::new();
        for name in value.split(',') {
            let role = Self::from_name(name)?;
            if roles.contains(&role) {
                return None;
            }
            roles.push(role);
        }
        Some(roles)
    }
}

impl fmt::Display for OperatorRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The identity a (chain-validated) peer certificate carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    pub role: Role,
    /// For an operator certificate, what it allows; empty (nothing) when the certificate names
    /// no valid role, and always empty for agents and the verifier.
    pub operator_roles: Vec<OperatorRole>,
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
    let operator_roles = match role {
        Role::Operator => operator_roles(subject).unwrap_or_default(),
        Role::Agent | Role::Verifier => Vec::new(),
    };
    Some(PeerIdentity {
        role,
        operator_roles,
        name,
        serial_hex: hex::encode(cert.raw_serial()),
    })
}

/// The roles in exactly one `role` attribute, or `None`.
fn operator_roles(subject: &x509_parser::x509::X509Name<'_>) -> Option<Vec<OperatorRole>> {
    let oid = x509_parser::der_parser::oid::Oid::from(&ROLE_ATTRIBUTE_OID).ok()?;
    let mut values = subject.iter_by_oid(&oid);
    let value = values.next()?.as_str().ok()?;
    if values.next().is_some() {
        return None;
    }
    OperatorRole::parse_attribute(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_attribute_values_are_strict() {
        use OperatorRole::*;
        assert_eq!(
            OperatorRole::attribute_value(&[PolicyAdmin, Viewer]),
            "viewer,policy-admin"
        );
        assert_eq!(
            OperatorRole::parse_attribute("viewer,policy-admin"),
            Some(vec![Viewer, PolicyAdmin])
        );
        for bad in ["", "admin", "viewer,", "viewer,viewer", "Viewer", " viewer"] {
            assert_eq!(OperatorRole::parse_attribute(bad), None, "{bad:?}");
        }
        assert!(PolicyAdmin.grants(Viewer) && Operator.grants(Viewer));
        assert!(!PolicyAdmin.grants(Operator) && !Operator.grants(PolicyAdmin));
        assert!(!Viewer.grants(Operator) && !Viewer.grants(PolicyAdmin));
    }
}
