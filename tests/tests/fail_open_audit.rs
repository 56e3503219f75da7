//! Fail-open review (issue 20), group "audit, trust store, operators": each test performs the
//! attack against a real verifier (real TLS, real sled, real CA, real swtpm devices run by the
//! real agent, the real operator CLIs) and sees it refused.
//! - item 6: an audit export cut after an earlier checkpoint, or with its first records cut, is
//!   refused by `trustchain audit verify`; a partial export proves only the range it states;
//! - item 8: a verifier whose newest stored trust list no longer verifies, or whose newest stored
//!   policy no longer parses, refuses to start, naming it, instead of using an older one;
//! - item 12: a revoked operator certificate is refused on its open connection and at its next
//!   handshake.
//!
//! Needs the workspace binaries built: `cargo build -p trustchain-verifier -p trustchain-ca --bins`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};
use trustchain_proto::v1::ListDevicesRequest;
use trustchain_proto::v1::admin_client::AdminClient;
use trustchain_swtpm::{TestMakers, TpmMaker};
use trustchain_tests::deployment::{Document, maker_cas, signing_key, try_import};
use trustchain_tests::{TestDevice, TestVerifier};
use trustchain_verifier::audit::SigningKey;
use trustchain_verifier::device::DeviceState;
use trustchain_verifier::reference::documents::{MakerCa, Revocations, TRUST_LIST_KIND, TrustList};
use trustchain_verifier::reference::signed::{self, TRUST_LIST_TYPE};
use trustchain_verifier::storage::{DocumentKind, SledStorage, Storage};

fn trustchain(args: &[&str]) -> Command {
    let mut command = Command::new(trustchain_tests::workspace_binary("trustchain"));
    command.args(args);
    command
}

/// `trustchain audit export [--from N]` over the operator's mTLS.
fn export(verifier: &TestVerifier, from: Option<u64>) -> String {
    let operator = verifier.operator_files();
    let mut command = trustchain(&["audit", "export", "--verifier", &verifier.url(), "--ca"]);
    command
        .arg(&verifier.root_pem_path)
        .arg("--cert")
        .arg(&operator.0)
        .arg("--key")
        .arg(&operator.1);
    if let Some(from) = from {
        command.args(["--from", &from.to_string()]);
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// `trustchain audit verify`: whether it passed, and what it printed.
fn verify(export: &str, public_key: &str, dir: &Path) -> (bool, String) {
    trustchain_tests::audit_verify(export, public_key, dir).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_audit_export_cut_after_an_earlier_checkpoint_or_at_its_start_is_refused() {
    // A periodic checkpoint over the records so far, then the records an attacker wants gone:
    // the device's boot state is tampered with and the verifier records the failure.
    let (_makers, verifier, _device) = trustchain_tests::audit_history("gw-export-cut")
        .await
        .unwrap();

    let dir = verifier.dir.path();
    let public_key = verifier.service.signing_public_hex();
    let whole = export(&verifier, None);
    let lines: Vec<&str> = whole.lines().collect();
    let (ok, text) = verify(&whole, &public_key, dir);
    assert!(ok, "{text}\n{whole}");
    let records = lines
        .iter()
        .filter(|l| l.starts_with("{\"record\""))
        .count();
    assert!(records >= 4, "{whole}");
    assert!(
        text.contains(&format!("proves records 1..{records} ({records} records")),
        "{text}"
    );
    assert!(
        lines.last().unwrap().starts_with("{\"export_end\""),
        "{whole}"
    );

    // The attacker cuts the export after the earlier periodic checkpoint, dropping the records
    // after it (the appraisal failure). Every line left still chains and the checkpoint's
    // signature is genuine, but the export's own final checkpoint is gone.
    let checkpoint = lines
        .iter()
        .position(|l| l.starts_with("{\"checkpoint\""))
        .unwrap();
    assert!(
        lines[checkpoint + 1..]
            .iter()
            .any(|l| l.contains("appraisal_failed")),
        "the failure after the periodic checkpoint: {whole}"
    );
    let cut = lines[..=checkpoint].join("\n");
    let (ok, text) = verify(&cut, &public_key, dir);
    assert!(!ok && text.contains("final mark missing"), "{text}");
    // Keeping the final checkpoint does not help: it names the records that were dropped.
    let mut kept_end: Vec<&str> = lines[..=checkpoint].to_vec();
    kept_end.push(lines[lines.len() - 1]);
    let (ok, text) = verify(&kept_end.join("\n"), &public_key, dir);
    assert!(
        !ok && text.contains("records were removed or added"),
        "{text}"
    );

    // The attacker cuts the first records (say, the enrollment) instead.
    let headless = lines[1..].join("\n");
    let (ok, text) = verify(&headless, &public_key, dir);
    assert!(
        !ok && text.contains("starts at record 1") && text.contains("cut from its start"),
        "{text}"
    );

    // An export asked from a later record proves that range and says so; cut at its start, it
    // is refused like any other.
    let partial = export(&verifier, Some(3));
    let (ok, text) = verify(&partial, &public_key, dir);
    assert!(
        ok && text.contains(&format!("proves records 3..{records}"))
            && text.contains("NOTE: the export starts at record 3"),
        "{text}\n{partial}"
    );
    let partial_lines: Vec<&str> = partial.lines().collect();
    let (ok, text) = verify(&partial_lines[1..].join("\n"), &public_key, dir);
    assert!(!ok && text.contains("starts at record 3"), "{text}");
}

/// A trust-list authority, the makers' CAs as a trust list lists them, and a verifier that
/// takes trust lists from that authority.
struct TrustAuthority {
    key: SigningKey,
    maker_cas: Vec<MakerCa>,
    keys: tempfile::TempDir,
}

impl TrustAuthority {
    fn new(maker: &TpmMaker) -> Self {
        let keys = tempfile::tempdir().unwrap();
        let key = signing_key(keys.path(), "trust-list-authority").unwrap();
        let maker_cas = maker_cas(maker, keys.path()).unwrap();
        Self {
            key,
            maker_cas,
            keys,
        }
    }

    fn public_key_path(&self) -> std::path::PathBuf {
        self.keys.path().join("trust-list-authority.pub")
    }

    fn trust_list(&self, version: u64, revoked: Revocations, key: &SigningKey) -> String {
        let list = TrustList {
            kind: TRUST_LIST_KIND.into(),
            version,
            issued_at: "2026-12-04T00:00:00Z".into(),
            maker_cas: self.maker_cas.clone(),
            devices: Vec::new(),
            manifest_signers: Vec::new(),
            policy_signers: Vec::new(),
            revoked,
        };
        signed::sign(&list, TRUST_LIST_TYPE, key).unwrap()
    }
}

/// Writes one document into the stopped verifier's database, as someone with access to its
/// files (or a fault) would.
fn overwrite_document(
    state_dir: &Path,
    kind: DocumentKind,
    key: &[u8],
    document: &[u8],
) -> anyhow::Result<()> {
    let storage = SledStorage::open(state_dir)?;
    storage.put_document(kind, key, document)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_newest_trust_list_that_no_longer_verifies_stops_the_verifier_instead_of_rolling_back() {
    let makers = TestMakers::generate().unwrap();
    let authority = TrustAuthority::new(&makers.trusted);
    let verifier = TestVerifier::start_with(&makers.trusted, |c| {
        c.trust_list_authority = Some(authority.public_key_path());
        c.attestation.default_interval_seconds = 2;
    })
    .await
    .unwrap();
    let v1 = authority.trust_list(1, Revocations::default(), &authority.key);
    try_import(&verifier, Document::TrustList, &v1)
        .await
        .unwrap();
    let mut device = TestDevice::trusted(&verifier, &makers.trusted, "gw-rollback", &[])
        .await
        .unwrap();

    // v2 revokes the maker's intermediate CA, which issued the device's EK certificate.
    let intermediate = pem_der(&authority.maker_cas[1].certificate_pem);
    let revoked = Revocations {
        maker_cas: vec![hex::encode(Sha256::digest(intermediate))],
        ..Revocations::default()
    };
    let v2 = authority.trust_list(2, revoked, &authority.key);
    try_import(&verifier, Document::TrustList, &v2)
        .await
        .unwrap();
    verifier
        .settle(&device.device_id(), DeviceState::Untrusted)
        .await
        .unwrap();
    assert!(
        verifier
            .failed_rules(&device.device_id())
            .contains(&"trust_list".to_string()),
        "{}",
        verifier.failure_summary(&device.device_id())
    );
    device.stop_agent();

    // While the verifier is stopped, v2 in its database is replaced by a v2 without the
    // revocation, signed by another key. Skipping it would make v1 active again and take the
    // revocation back; the verifier refuses to start instead, naming the list.
    let attacker = signing_key(authority.keys.path(), "attacker").unwrap();
    let forged = authority.trust_list(2, Revocations::default(), &attacker);
    let refused = verifier
        .restart_after(|config| {
            overwrite_document(
                &config.state_dir,
                DocumentKind::TrustList,
                &2u64.to_be_bytes(),
                forged.as_bytes(),
            )
        })
        .await;
    let error = format!("{:#}", refused.expect_err("the verifier must not start"));
    assert!(
        error.contains("trust list v2")
            && error.contains("does not verify with the configured authority")
            && error.contains("refusing to fall back to an older version"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_newest_policy_that_no_longer_parses_stops_the_verifier_instead_of_using_an_older_one() {
    let makers = TestMakers::generate().unwrap();
    let verifier = TestVerifier::start(&makers.trusted).await.unwrap();
    for version in [1, 2] {
        let policy = format!("name = \"gateways\"\nversion = {version}\n");
        try_import(&verifier, Document::Policy, &policy)
            .await
            .unwrap();
    }
    // v2 damaged on disk: skipping it would govern the devices by v1.
    let mut key = b"gateways".to_vec();
    key.push(0);
    key.extend_from_slice(&2u64.to_be_bytes());
    let refused = verifier
        .restart_after(|config| {
            overwrite_document(
                &config.state_dir,
                DocumentKind::Policy,
                &key,
                b"name = \"gateways\"\nversion = 2\n[tier\n",
            )
        })
        .await;
    let error = format!("{:#}", refused.expect_err("the verifier must not start"));
    assert!(
        error.contains("policy gateways v2") && error.contains("no longer parses"),
        "{error}"
    );
}

fn pem_der(pem: &str) -> Vec<u8> {
    pem::parse(pem).unwrap().into_contents()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_operator_certificate_is_refused_on_its_open_connection_and_at_its_next_handshake()
 {
    let makers = TestMakers::generate().unwrap();
    let verifier = TestVerifier::start(&makers.trusted).await.unwrap();
    let mut open = verifier.admin().await.unwrap();
    open.list_devices(ListDevicesRequest::default())
        .await
        .unwrap();

    // The CA's operator revokes the certificate with the CA's own CLI.
    let (certificate, _) = verifier.operator_files();
    let output = Command::new(trustchain_tests::workspace_binary("trustchain-ca"))
        .args(["revoke-operator", "--dir"])
        .arg(verifier.dir.path().join("ca"))
        .arg("--cert")
        .arg(&certificate)
        .output()
        .unwrap();
    assert!(
        output.status.success() && String::from_utf8_lossy(&output.stdout).contains("revoked"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // The connection opened before the revocation: refused at its next call.
    let status = open
        .list_devices(ListDevicesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("revoked"), "{status:?}");

    // A new connection: the CRL now carries it, the handshake (or the call) fails.
    assert!(admin_call_refused(&verifier).await);
    // And a restarted verifier refuses it from the start (its CRL is built from the CA directory).
    let verifier = verifier.restart().await.unwrap();
    assert!(admin_call_refused(&verifier).await);
}

/// Whether a new operator connection fails to list the devices.
async fn admin_call_refused(verifier: &TestVerifier) -> bool {
    match verifier.operator_channel().await {
        Ok(channel) => AdminClient::new(channel)
            .list_devices(ListDevicesRequest::default())
            .await
            .is_err(),
        Err(_) => true,
    }
}
