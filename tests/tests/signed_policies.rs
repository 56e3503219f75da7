//! Signed policies (issue 17, item 7): with `require_signed_policies` (the verifier's default), a
//! policy is imported over the operator's mTLS only as a JWS signed by a policy signer the active
//! trust list admits. Attacks: an unsigned policy, a signed one whose payload was changed, one
//! signed by a key the trust list does not know, and one signed by a manifest signer (not a
//! policy signer). The honest path, signed with `trustchain policy sign`, is taken and governs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::process::Command;

use base64::Engine as _;
use tonic::Code;
use trustchain_tests::deployment::{Deployment, Document, POLICY_SIGNER, signing_key};
use trustchain_tests::workspace_binary;
use trustchain_verifier::reference::signed_policy;
use trustchain_verifier::storage::DocumentKind;

fn policy(version: u64) -> String {
    format!("name = \"gateways\"\nversion = {version}\n\n[match]\ndevice_classes = [\"gateway\"]\n")
}

async fn refused(d: &Deployment, document: &str) -> String {
    let status = d
        .try_import(Document::Policy, document)
        .await
        .expect_err("the policy must be refused");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    status.message().to_string()
}

fn stored_policies(d: &Deployment) -> usize {
    d.verifier.stored_documents(DocumentKind::Policy).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn only_policies_signed_by_an_admitted_policy_signer_are_imported() {
    let d = Deployment::builder()
        .signed_policies()
        .start()
        .await
        .unwrap();

    // Attack: the policy as plain TOML.
    let why = refused(&d, &policy(1)).await;
    assert!(
        why.contains("not signed") && why.contains("trustchain policy sign"),
        "{why}"
    );

    // Attack: signed by the policy office, then its payload swapped for another policy.
    let genuine = d.sign_policy(&policy(1)).unwrap();
    let other = d.sign_policy(&policy(7)).unwrap();
    let mut parts: Vec<&str> = genuine.split('.').collect();
    parts[1] = other.split('.').nth(1).unwrap();
    let forged = parts.join(".");
    let why = refused(&d, &forged).await;
    assert!(why.contains("signature does not verify"), "{why}");

    // Attack: a signature that is not a P-256 signature at all.
    let mut parts: Vec<&str> = genuine.split('.').collect();
    let garbage = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; 64]);
    parts[2] = &garbage;
    let why = refused(&d, &parts.join(".")).await;
    assert!(why.contains("signature does not verify"), "{why}");

    // Attack: signed by a key the trust list does not admit as a policy signer.
    let stranger = signing_key(d.keys.path(), "stranger").unwrap();
    let why = refused(&d, &signed_policy::sign(&policy(1), &stranger).unwrap()).await;
    assert!(why.contains("does not admit as a policy signer"), "{why}");

    // Attack: signed by Acme, whom the trust list admits for manifests only.
    let why = refused(&d, &signed_policy::sign(&policy(1), &d.acme).unwrap()).await;
    assert!(why.contains("does not admit as a policy signer"), "{why}");
    assert_eq!(stored_policies(&d), 0, "nothing refused was stored");

    // The honest path: the policy signed with the CLI by the policy office's key.
    let toml = d.keys.path().join("gateways.toml");
    let jws = d.keys.path().join("gateways.jws");
    std::fs::write(&toml, policy(1)).unwrap();
    let signed = Command::new(workspace_binary("trustchain"))
        .args(["policy", "sign", "--key"])
        .arg(d.keys.path().join(format!("{POLICY_SIGNER}.pk8")))
        .arg("--in")
        .arg(&toml)
        .arg("--out")
        .arg(&jws)
        .output()
        .unwrap();
    assert!(
        signed.status.success(),
        "{}",
        String::from_utf8_lossy(&signed.stderr)
    );
    let document = std::fs::read_to_string(&jws).unwrap();
    let note = d.import(Document::Policy, &document).await.unwrap();
    assert!(
        note.contains("policy gateways v1 active") && note.contains(POLICY_SIGNER),
        "{note}"
    );
    assert_eq!(stored_policies(&d), 1);

    // The signed policy is what governs after a restart too (read back from its payload).
    let Deployment { verifier, .. } = d;
    // (A stored policy that no longer opens stops the verifier at start.)
    let verifier = verifier.restart().await.unwrap();
    let stored = verifier
        .service
        .storage()
        .documents(DocumentKind::Policy)
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        signed_policy::stored_text(std::str::from_utf8(&stored[0].1).unwrap()).unwrap(),
        policy(1)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_signatures_not_required_unsigned_toml_is_taken_but_a_bad_signature_is_not() {
    let d = Deployment::builder().start().await.unwrap();
    let note = d.import(Document::Policy, &policy(1)).await.unwrap();
    assert!(note.contains("unsigned"), "{note}");
    let stranger = signing_key(d.keys.path(), "stranger").unwrap();
    let why = refused(&d, &signed_policy::sign(&policy(2), &stranger).unwrap()).await;
    assert!(why.contains("does not admit as a policy signer"), "{why}");
    let note = d
        .import(Document::Policy, &d.sign_policy(&policy(2)).unwrap())
        .await
        .unwrap();
    assert!(note.contains("v2 active"), "{note}");

    // A trust list naming a policy signer whose key is not a P-256 point is refused.
    let mut list = d.trust_list(2, Default::default());
    list.policy_signers[0].public_key = "04abcd".into();
    let status = d
        .try_import(Document::TrustList, &d.sign_trust_list(&list).unwrap())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status
            .message()
            .contains(&format!("signer {POLICY_SIGNER}")),
        "{}",
        status.message()
    );
}
