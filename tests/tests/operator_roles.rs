//! Operator roles (issue 17, item 2): every admin RPC called by every role over the operator's
//! real mTLS against a real verifier. A role's own calls go through (or fail for a reason that
//! is not permission); every other call is PERMISSION_DENIED and an alert in the audit log. And
//! the two-person rule: an import waits for a second policy-admin, who approves it by digest;
//! the submitter's own approval, a wrong digest and a non-policy-admin are refused, and the
//! document is checked again at approval. A certificate with no valid role (issued before
//! roles, or naming an unknown one) gets nothing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use tonic::Code;
use tonic::transport::Channel;
use trustchain_ca::OperatorRole;
use trustchain_proto::v1::admin_client::AdminClient;
use trustchain_proto::v1::{
    ApproveImportRequest, DeviceRequest, ExportAuditRequest, ListDevicesRequest, SignedDocument,
    WatchRequest,
};
use trustchain_swtpm::TestMakers;
use trustchain_tests::TestVerifier;
use trustchain_verifier::device::EventKind;
use trustchain_verifier::server::permissions::AdminCall;
use trustchain_verifier::storage::DocumentKind;

/// Makes `call` as `admin`; only the status matters (the arguments are harmless: an unknown
/// device, a document that is not one, a digest nothing waits under).
async fn make(admin: &mut AdminClient<Channel>, call: AdminCall) -> Result<(), tonic::Status> {
    let device = || DeviceRequest {
        device_id: "no-such-device".into(),
        comment: "role test".into(),
    };
    let junk = || SignedDocument {
        document: b"not a document".to_vec(),
    };
    match call {
        AdminCall::ListDevices => admin.list_devices(ListDevicesRequest {}).await.map(drop),
        AdminCall::GetDevice => admin.get_device(device()).await.map(drop),
        AdminCall::ClearDevice => admin.clear_device(device()).await.map(drop),
        AdminCall::DecommissionDevice => admin.decommission_device(device()).await.map(drop),
        AdminCall::ImportTrustList => admin.import_trust_list(junk()).await.map(drop),
        AdminCall::ImportManifest => admin.import_manifest(junk()).await.map(drop),
        AdminCall::ImportPolicy => admin.import_policy(junk()).await.map(drop),
        AdminCall::ExportAudit => admin
            .export_audit(ExportAuditRequest { from_sequence: 1 })
            .await
            .map(drop),
        AdminCall::Watch => admin
            .watch(WatchRequest { from_sequence: 1 })
            .await
            .map(drop),
        AdminCall::ApproveImport => admin
            .approve_import(ApproveImportRequest {
                digest: "00".repeat(32),
                comment: String::new(),
            })
            .await
            .map(drop),
    }
}

/// The refusal alerts the audit log holds for `operator`.
fn refusals(verifier: &TestVerifier, operator: &str) -> Vec<String> {
    verifier
        .service
        .storage()
        .events(0, 100_000)
        .unwrap()
        .into_iter()
        .filter(|(_, e)| {
            e.kind == EventKind::Alert && e.detail.contains(&format!("operator {operator:?}"))
        })
        .map(|(_, e)| e.detail)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_admin_rpc_is_refused_to_every_role_it_does_not_grant_and_audited() {
    let makers = TestMakers::generate().unwrap();
    let verifier = TestVerifier::start(&makers.trusted).await.unwrap();
    for role in OperatorRole::ALL {
        let name = format!("{role}-holder");
        let (mut admin, serial) = verifier.admin_as(&name, &[role]).await.unwrap();
        let mut refused = Vec::new();
        for call in AdminCall::ALL {
            let outcome = make(&mut admin, call).await;
            let allowed =
                call.required_role() == OperatorRole::Viewer || call.required_role() == role;
            match (&outcome, allowed) {
                (Err(status), true) => assert_ne!(
                    status.code(),
                    Code::PermissionDenied,
                    "{role} may call {call:?}: {status:?}"
                ),
                (Ok(()), true) => {}
                (Err(status), false) => {
                    assert_eq!(status.code(), Code::PermissionDenied, "{role} {call:?}");
                    assert!(
                        status.message().contains(call.name())
                            && status.message().contains(call.required_role().name()),
                        "{role} {call:?}: {}",
                        status.message()
                    );
                    refused.push(call);
                }
                (Ok(()), false) => panic!("{role} must not be able to call {call:?}"),
            }
        }
        // Every refusal is in the audit log, naming the call, the operator and the certificate.
        let alerts = refusals(&verifier, &name);
        assert_eq!(alerts.len(), refused.len(), "{role}: {alerts:#?}");
        for call in &refused {
            assert!(
                alerts.iter().any(
                    |a| a.contains(&format!("admin call {} refused", call.name()))
                        && a.contains(&serial)
                ),
                "{role} {call:?}: {alerts:#?}"
            );
        }
        match role {
            OperatorRole::Viewer => assert_eq!(refused.len(), 6),
            OperatorRole::Operator => assert_eq!(refused.len(), 4),
            OperatorRole::PolicyAdmin => assert_eq!(refused.len(), 2),
        }
    }
    // The honest path of each group, beyond "not refused": a viewer lists, an operator's
    // action reaches the device lookup, a policy-admin's import reaches the document check.
    let (mut viewer, _) = verifier
        .admin_as("viewer-2", &[OperatorRole::Viewer])
        .await
        .unwrap();
    assert!(make(&mut viewer, AdminCall::ListDevices).await.is_ok());
    let (mut operator, _) = verifier
        .admin_as("operator-2", &[OperatorRole::Operator])
        .await
        .unwrap();
    let status = make(&mut operator, AdminCall::DecommissionDevice)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let (mut policy_admin, _) = verifier
        .admin_as("policy-admin-2", &[OperatorRole::PolicyAdmin])
        .await
        .unwrap();
    let status = make(&mut policy_admin, AdminCall::ImportPolicy)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    // One certificate may hold both acting roles when the CA was asked for both.
    let (mut both, _) = verifier
        .admin_as("both", &[OperatorRole::Operator, OperatorRole::PolicyAdmin])
        .await
        .unwrap();
    for call in AdminCall::ALL {
        if let Err(status) = make(&mut both, call).await {
            assert_ne!(status.code(), Code::PermissionDenied, "{call:?}");
        }
    }
    assert!(refusals(&verifier, "both").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_certificate_without_a_valid_role_gets_nothing() {
    let makers = TestMakers::generate().unwrap();
    let verifier = TestVerifier::start(&makers.trusted).await.unwrap();
    // Attack: certificates our CA signed for operators, with no role (issued before roles), an
    // unknown role, a repeated one, an empty one: every call refused and audited.
    for (name, role) in [
        ("legacy", None),
        ("root", Some("superuser")),
        ("twice", Some("viewer,viewer")),
        ("empty", Some("")),
    ] {
        let (chain, key) = verifier.hand_made_operator(name, role).unwrap();
        let mut admin = AdminClient::new(verifier.channel(Some((&chain, &key))).await.unwrap());
        for call in AdminCall::ALL {
            let status = make(&mut admin, call).await.unwrap_err();
            assert_eq!(status.code(), Code::PermissionDenied, "{name} {call:?}");
            assert!(
                status.message().contains("names no operator role"),
                "{name}: {}",
                status.message()
            );
        }
        assert_eq!(
            refusals(&verifier, name).len(),
            AdminCall::ALL.len(),
            "{name}"
        );
    }
    // The honest path: the same hand-made certificate with a valid role reads.
    let (chain, key) = verifier
        .hand_made_operator("reader", Some("viewer"))
        .unwrap();
    let mut admin = AdminClient::new(verifier.channel(Some((&chain, &key))).await.unwrap());
    make(&mut admin, AdminCall::ListDevices).await.unwrap();
    assert_eq!(
        make(&mut admin, AdminCall::ClearDevice)
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
}

fn policy(version: u64) -> String {
    format!("name = \"gateways\"\nversion = {version}\n")
}

async fn import_policy(
    admin: &mut AdminClient<Channel>,
    version: u64,
) -> trustchain_proto::v1::ImportResult {
    admin
        .import_policy(SignedDocument {
            document: policy(version).into_bytes(),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn approve(
    admin: &mut AdminClient<Channel>,
    digest: &str,
) -> Result<trustchain_proto::v1::ImportResult, tonic::Status> {
    admin
        .approve_import(ApproveImportRequest {
            digest: digest.into(),
            comment: "reviewed".into(),
        })
        .await
        .map(|r| r.into_inner())
}

fn stored_policies(verifier: &TestVerifier) -> usize {
    verifier.stored_documents(DocumentKind::Policy).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_person_imports_wait_for_a_second_policy_admin() {
    let makers = TestMakers::generate().unwrap();
    let verifier = TestVerifier::start_with(&makers.trusted, |c| {
        c.admin.two_person_imports = true;
    })
    .await
    .unwrap();
    let (mut alice, _) = verifier
        .admin_as("alice", &[OperatorRole::PolicyAdmin])
        .await
        .unwrap();
    let (mut bob, _) = verifier
        .admin_as("bob", &[OperatorRole::PolicyAdmin])
        .await
        .unwrap();
    let (mut carol, _) = verifier
        .admin_as("carol", &[OperatorRole::Operator])
        .await
        .unwrap();

    // Alice's import waits: nothing is active yet.
    let submitted = import_policy(&mut alice, 1).await;
    assert!(submitted.pending, "{submitted:?}");
    assert!(
        submitted.note.contains(&submitted.digest),
        "{}",
        submitted.note
    );
    assert_eq!(stored_policies(&verifier), 0);

    // Attack: Alice approves her own import (with her certificate, or another one in her name).
    let status = approve(&mut alice, &submitted.digest).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let (mut alice_again, _) = verifier
        .admin_as("alice", &[OperatorRole::PolicyAdmin])
        .await
        .unwrap();
    let status = approve(&mut alice_again, &submitted.digest)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        refusals(&verifier, "alice").is_empty(),
        "self-approval is not a role refusal"
    );
    let self_approvals = verifier
        .service
        .storage()
        .events(0, 100_000)
        .unwrap()
        .into_iter()
        .filter(|(_, e)| e.kind == EventKind::Alert && e.detail.contains("refused self-approval"))
        .count();
    assert_eq!(self_approvals, 2);
    // Attack: an operator (not a policy-admin) approves.
    let status = approve(&mut carol, &submitted.digest).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    // Attack: Bob approves a digest nothing waits under (another document's).
    let other = trustchain_verifier::reference::pending::digest(&policy(9));
    let status = approve(&mut bob, &other).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert_eq!(stored_policies(&verifier), 0);

    // The honest path: Bob approves Alice's import by its digest; it is active now, once.
    let approved = approve(&mut bob, &submitted.digest).await.unwrap();
    assert!(!approved.pending && approved.note.contains("policy gateways v1 active"));
    assert_eq!(approved.digest, submitted.digest);
    assert_eq!(stored_policies(&verifier), 1);
    let status = approve(&mut bob, &submitted.digest).await.unwrap_err();
    assert_eq!(
        status.code(),
        Code::NotFound,
        "an approved import is no longer pending"
    );

    // The pending document is checked again at approval: v3 and v2 wait, v3 goes first, and v2
    // is then a rollback.
    let v3 = import_policy(&mut alice, 3).await;
    let v2 = import_policy(&mut alice, 2).await;
    assert!(v3.pending && v2.pending);
    approve(&mut bob, &v3.digest).await.unwrap();
    let status = approve(&mut bob, &v2.digest).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains("rollback"),
        "{}",
        status.message()
    );
    assert_eq!(stored_policies(&verifier), 2);

    // Every step is in the audit log with both names.
    let actions: Vec<String> = verifier
        .service
        .storage()
        .events(0, 100_000)
        .unwrap()
        .into_iter()
        .filter(|(_, e)| e.kind == EventKind::OperatorAction)
        .map(|(_, e)| e.detail)
        .collect();
    assert!(
        actions
            .iter()
            .any(|a| a.contains("submitted by alice approved by bob")),
        "{actions:#?}"
    );
    assert!(
        actions
            .iter()
            .any(|a| a.contains("refused at approval by bob")),
        "{actions:#?}"
    );
}
