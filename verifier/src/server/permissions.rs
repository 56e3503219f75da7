//! Who may make which admin call: the one table of admin RPC to the operator role it needs.
//!
//! Roles come from the operator certificate (`trustchain_ca::role`): `viewer` reads, `operator`
//! acts on devices, `policy-admin` changes what is trusted. Every role includes the viewer's
//! calls; `operator` and `policy-admin` are disjoint. A certificate with no valid role gets
//! nothing. A refusal is PERMISSION_DENIED and an alert in the audit log (see `admin.rs`).

use trustchain_ca::OperatorRole;
use trustchain_ca::role::PeerIdentity;

/// Every RPC of the Admin service (`proto/proto/trustchain.proto`; a unit test keeps the two
/// in step).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminCall {
    ListDevices,
    GetDevice,
    ClearDevice,
    DecommissionDevice,
    ImportTrustList,
    ImportManifest,
    ImportPolicy,
    ExportAudit,
    Watch,
    ApproveImport,
}

impl AdminCall {
    pub const ALL: [AdminCall; 10] = [
        AdminCall::ListDevices,
        AdminCall::GetDevice,
        AdminCall::ClearDevice,
        AdminCall::DecommissionDevice,
        AdminCall::ImportTrustList,
        AdminCall::ImportManifest,
        AdminCall::ImportPolicy,
        AdminCall::ExportAudit,
        AdminCall::Watch,
        AdminCall::ApproveImport,
    ];

    /// The RPC's name in the proto file.
    pub fn name(self) -> &'static str {
        match self {
            AdminCall::ListDevices => "ListDevices",
            AdminCall::GetDevice => "GetDevice",
            AdminCall::ClearDevice => "ClearDevice",
            AdminCall::DecommissionDevice => "DecommissionDevice",
            AdminCall::ImportTrustList => "ImportTrustList",
            AdminCall::ImportManifest => "ImportManifest",
            AdminCall::ImportPolicy => "ImportPolicy",
            AdminCall::ExportAudit => "ExportAudit",
            AdminCall::Watch => "Watch",
            AdminCall::ApproveImport => "ApproveImport",
        }
    }

    /// The role this call needs (the table `docs/operations.md` shows).
    pub fn required_role(self) -> OperatorRole {
        match self {
            AdminCall::ListDevices
            | AdminCall::GetDevice
            | AdminCall::ExportAudit
            | AdminCall::Watch => OperatorRole::Viewer,
            // Clearing is also how a quarantined device is released.
            AdminCall::ClearDevice | AdminCall::DecommissionDevice => OperatorRole::Operator,
            AdminCall::ImportTrustList
            | AdminCall::ImportManifest
            | AdminCall::ImportPolicy
            | AdminCall::ApproveImport => OperatorRole::PolicyAdmin,
        }
    }
}

/// Why a caller may not make a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// The certificate names no valid role (issued before roles, or a malformed role).
    NoRole,
    /// The certificate's roles do not include the one the call needs.
    Lacks(OperatorRole),
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Denied::NoRole => f.write_str("the certificate names no operator role"),
            Denied::Lacks(role) => write!(f, "the call needs the {role} role"),
        }
    }
}

/// Whether `caller` may make `call`.
pub fn check(caller: &PeerIdentity, call: AdminCall) -> Result<(), Denied> {
    let needed = call.required_role();
    if caller.operator_roles.is_empty() {
        Err(Denied::NoRole)
    } else if caller.operator_roles.iter().any(|held| held.grants(needed)) {
        Ok(())
    } else {
        Err(Denied::Lacks(needed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trustchain_ca::Role;

    /// The RPC names of `service Admin` in the proto file.
    fn proto_admin_rpcs() -> Vec<String> {
        let proto = include_str!("../../../proto/proto/trustchain.proto");
        let start = proto.find("service Admin {").unwrap();
        let body = &proto[start..];
        let body = &body[..body.find('}').unwrap()];
        body.lines()
            .filter_map(|line| line.trim().strip_prefix("rpc "))
            .map(|rest| rest.split('(').next().unwrap().trim().to_string())
            .collect()
    }

    #[test]
    fn every_admin_rpc_has_exactly_one_entry() {
        let mut in_proto = proto_admin_rpcs();
        in_proto.sort();
        let mut in_table: Vec<String> = AdminCall::ALL.iter().map(|c| c.name().into()).collect();
        in_table.sort();
        assert_eq!(in_proto, in_table);
    }

    fn caller(roles: &[OperatorRole]) -> PeerIdentity {
        PeerIdentity {
            role: Role::Operator,
            operator_roles: roles.to_vec(),
            name: "alice".into(),
            serial_hex: "01".into(),
        }
    }

    #[test]
    fn roles_grant_their_calls_and_nothing_else() {
        use OperatorRole::*;
        for call in AdminCall::ALL {
            assert_eq!(check(&caller(&[]), call), Err(Denied::NoRole));
            let needed = call.required_role();
            for role in OperatorRole::ALL {
                let allowed = needed == Viewer || role == needed;
                assert_eq!(
                    check(&caller(&[role]), call).is_ok(),
                    allowed,
                    "{role} {call:?}"
                );
            }
            assert!(check(&caller(&[Operator, PolicyAdmin]), call).is_ok());
        }
    }
}
