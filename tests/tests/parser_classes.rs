//! The 2026 event-log parser classes (issue 17, item 6), end to end: a signed trust list, Acme's
//! manifest and a policy requiring a dbx entry (`boot.dbx_must_list`) imported into a real
//! verifier, real swtpm devices booted by the harness, the real agent.
//! - go-attestation GHSA-9r4w-jg96-92mv: a dbx whose EFI_SIGNATURE_LIST carries the required
//!   hash in a SignatureHeader (which a decoder not skipping the header reads as an entry) is
//!   refused; a db whose sizes disagree is refused; an honest dbx listing the hash passes.
//! - go-eventlog GO-2026-6893: an event typed EV_EFI_VARIABLE_DRIVER_CONFIG whose digest is not
//!   the hash of its data (a real extension of something else, so the log still replays) is
//!   refused, and its contents count for nothing.
//! - GHSA-q8r2-h7c5-29vp: an unknown event type is never interpreted (the parser has no
//!   recursion; the (PCR, type) table is default-deny) and fails the event rules.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use trustchain_swtpm::boot::{BootEvent, EFI_GLOBAL_VARIABLE, EFI_IMAGE_SECURITY_DATABASE};
use trustchain_swtpm::{Bank, BootProfile};
use trustchain_tests::deployment::{
    Deployment, acme_components, boot_applications, boot_manifest, gateway_policy,
};
use trustchain_verifier::device::DeviceState;
use trustchain_verifier::evidence::eventlog::signature_list::{
    EFI_CERT_SHA256, EFI_CERT_X509, encode_list,
};
use trustchain_verifier::verdict::Failure;

const EV_EFI_VARIABLE_DRIVER_CONFIG: u32 = 0x8000_0001;
const OWNER: [u8; 16] = [0x77; 16];
/// The hash the policy requires the dbx to revoke.
const REVOKED: [u8; 32] = [0x5a; 32];
/// A stand-in DER certificate for PK, KEK and db.
const CERTIFICATE: &[u8] = b"\x30\x0a\x02\x01\x01TrustChain";

/// A profile whose Secure Boot databases are real signature lists, with `db` and `dbx` given.
fn profile(db: &[u8], dbx: &[u8]) -> BootProfile {
    let certificate = encode_list(EFI_CERT_X509, &[], &[(OWNER, CERTIFICATE)]);
    BootProfile::default_linux().with_secure_boot_keys(&certificate, &certificate, db, dbx)
}

fn honest_db() -> Vec<u8> {
    encode_list(EFI_CERT_X509, &[], &[(OWNER, CERTIFICATE)])
}

fn honest_dbx() -> Vec<u8> {
    encode_list(
        EFI_CERT_SHA256,
        &[],
        &[(OWNER, &[1; 32]), (OWNER, &REVOKED)],
    )
}

/// Trust list v1, Acme's manifest for the default boot chain, and policy `gateways` v1 with
/// `boot.dbx_must_list = [REVOKED]`.
async fn deployment() -> Deployment {
    let apps = boot_applications(&BootProfile::default_linux());
    let policy = gateway_policy(1, 2, None, &acme_components(&["gateway"])).replace(
        "check_boot_applications = true\n",
        &format!(
            "check_boot_applications = true\ndbx_must_list = [\"{}\"]\n",
            hex::encode(REVOKED)
        ),
    );
    Deployment::builder()
        .interval(2)
        .manifest(boot_manifest("Acme", "gateway", "1", &apps))
        .policy(policy)
        .start()
        .await
        .unwrap()
}

fn failure<'f>(failures: &'f [Failure], rule: &str, detail: &str) -> &'f Failure {
    failures
        .iter()
        .find(|f| f.rule.name() == rule && f.detail.contains(detail))
        .unwrap_or_else(|| panic!("no {rule} failure with {detail:?}: {failures:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dbx_entry_hidden_in_a_signature_header_or_a_db_with_bad_sizes_is_refused() {
    let d = deployment().await;
    // The honest path: a dbx listing the hash passes.
    let honest = d
        .device("gw-dbx-honest", &profile(&honest_db(), &honest_dbx()))
        .await
        .unwrap();
    d.wait(&honest.device_id(), DeviceState::Trusted)
        .await
        .unwrap();

    // The hash only in the SignatureHeader of an EFI_CERT_SHA256 list.
    let mut header = OWNER.to_vec();
    header.extend_from_slice(&REVOKED);
    let crafted = encode_list(EFI_CERT_SHA256, &header, &[(OWNER, &[1; 32])]);
    let injected = d
        .device("gw-dbx-header", &profile(&honest_db(), &crafted))
        .await
        .unwrap();
    d.wait(&injected.device_id(), DeviceState::Untrusted)
        .await
        .unwrap();
    let failures = d.last_failures(&injected.device_id());
    let refused = failure(&failures, "boot_reference_values", "SignatureHeaderSize");
    assert!(refused.detail.starts_with("dbx is not"), "{refused:?}");
    failure(&failures, "boot_reference_values", "no dbx decodes");

    // A db whose SignatureListSize disagrees with its entries.
    let mut db = honest_db();
    let wrong = u32::try_from(db.len() + 1).unwrap();
    db[16..20].copy_from_slice(&wrong.to_le_bytes());
    let sizes = d
        .device("gw-db-sizes", &profile(&db, &honest_dbx()))
        .await
        .unwrap();
    d.wait(&sizes.device_id(), DeviceState::Untrusted)
        .await
        .unwrap();
    let failures = d.last_failures(&sizes.device_id());
    failure(
        &failures,
        "boot_reference_values",
        "db is not a well-formed",
    );
    // The log itself was honest: it replays, and its events are where the PFP puts them.
    assert!(
        failures
            .iter()
            .all(|f| !matches!(f.rule.name(), "boot_log_replay" | "boot_event_rules")),
        "{failures:?}"
    );
}

/// A trusted device that then extends `measured` into PCR 7 and logs `event` for it, so the log
/// still replays to the quoted PCRs; returns its failures once it is untrusted.
async fn logged_in_pcr_7(
    d: &Deployment,
    label: &str,
    measured: &[u8],
    event: BootEvent,
) -> Vec<Failure> {
    let device = d
        .forged_log(
            label,
            &profile(&honest_db(), &honest_dbx()),
            (7, measured),
            event,
        )
        .await
        .unwrap();
    let failures = d.last_failures(&device.device_id());
    assert!(
        failures.iter().all(|f| f.rule.name() != "boot_log_replay"),
        "the forged log should replay: {failures:?}"
    );
    failures
}

#[tokio::test(flavor = "multi_thread")]
async fn a_variable_typed_event_its_digest_does_not_cover_and_an_unknown_type_are_refused() {
    let d = deployment().await;
    // GO-2026-6893: the type says "dbx variable", the digest is of something else.
    let measured = b"an unrelated measurement";
    let empty_dbx = encode_list(EFI_CERT_SHA256, &[], &[(OWNER, &[2; 32])]);
    let data =
        trustchain_swtpm::boot::variable_data(&EFI_IMAGE_SECURITY_DATABASE, "dbx", &empty_dbx);
    let failures = logged_in_pcr_7(
        &d,
        "gw-type-unbound",
        measured,
        BootEvent {
            pcr: 7,
            event_type: EV_EFI_VARIABLE_DRIVER_CONFIG,
            digests: vec![(Bank::Sha256, Bank::Sha256.hash(measured))],
            data,
        },
    )
    .await;
    let caught = failure(
        &failures,
        "boot_event_rules",
        "digest is not the hash of the event data",
    );
    assert!(
        caught
            .subject
            .ends_with("(PCR 7, EV_EFI_VARIABLE_DRIVER_CONFIG)"),
        "{caught:?}"
    );
    failure(&failures, "boot_reference_values", "digest covers");

    // GHSA-q8r2-h7c5-29vp: an unknown type, its digest the hash of its data, is not allowed.
    let data = trustchain_swtpm::boot::variable_data(&EFI_GLOBAL_VARIABLE, "SecureBoot", &[1]);
    let failures = logged_in_pcr_7(
        &d,
        "gw-type-unknown",
        &data,
        BootEvent {
            pcr: 7,
            event_type: 0x8000_00ff,
            digests: vec![(Bank::Sha256, Bank::Sha256.hash(&data))],
            data: data.clone(),
        },
    )
    .await;
    let caught = failure(
        &failures,
        "boot_event_rules",
        "event type not allowed in this PCR",
    );
    assert!(caught.subject.contains("(PCR 7, "), "{caught:?}");
}
