//! Trust-document imports over the Admin service: taken at once, or, under the two-person rule
//! (`[admin] two_person_imports`), trust lists and policies held until a second policy-admin
//! approves them by digest. The refusal reason goes back to the (authenticated) operator and
//! every outcome into the audit log.

use tonic::Status;
use trustchain_ca::role::PeerIdentity;
use trustchain_proto::v1;

use crate::device::{EventKind, EventRecord};
use crate::reference::pending::{self, PendingError, PendingImport, PendingKind};
use crate::reference::trust::{ImportError, Imported};
use crate::service::Service;
use crate::untrusted_text::Escaped;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentImport {
    TrustList,
    Manifest,
    Policy,
}

impl DocumentImport {
    fn name(self) -> &'static str {
        match self {
            DocumentImport::TrustList => "trust list",
            DocumentImport::Manifest => "manifest",
            DocumentImport::Policy => "policy",
        }
    }

    /// The kinds the two-person rule holds (manifests are vouched for by their signer and only
    /// used when the trust list admits that signer).
    fn held(self) -> Option<PendingKind> {
        match self {
            DocumentImport::TrustList => Some(PendingKind::TrustList),
            DocumentImport::Policy => Some(PendingKind::Policy),
            DocumentImport::Manifest => None,
        }
    }
}

/// Appends an event to the audit log (and the log); a failure to record is logged, and the
/// caller's answer stands.
pub fn audit(service: &Service, kind: EventKind, detail: String) {
    tracing::info!(detail = %Escaped(&detail), ?kind, "admin call recorded");
    if let Err(error) = service.storage().append_event(&EventRecord {
        at_unix_millis: crate::service::now_unix_millis(),
        kind,
        device_id: String::new(),
        detail,
    }) {
        tracing::error!(%error, "cannot record an admin call");
    }
}

fn pending_status(error: PendingError) -> Status {
    match error {
        PendingError::Full => Status::resource_exhausted(error.to_string()),
        PendingError::AlreadyPending => Status::already_exists(error.to_string()),
        PendingError::NotFound => Status::not_found(error.to_string()),
        other => super::status::internal("admin", other),
    }
}

fn answer(result: Result<Imported, ImportError>) -> Result<v1::ImportResult, Status> {
    match result {
        Ok(imported) => Ok(v1::ImportResult {
            version: imported.version,
            digest: imported.digest,
            note: imported.note,
            pending: false,
        }),
        Err(error) => Err(super::status::import(error)),
    }
}

fn run(service: &Service, kind: DocumentImport, text: &str) -> Result<Imported, ImportError> {
    let trust = service.trust();
    match kind {
        DocumentImport::TrustList => trust.import_trust_list(text),
        DocumentImport::Manifest => trust.import_manifest(text),
        DocumentImport::Policy => trust.import_policy(text),
    }
}

/// Imports `bytes` as `kind` for `operator` (whose role was checked).
pub fn import(
    service: &Service,
    operator: &PeerIdentity,
    kind: DocumentImport,
    bytes: Vec<u8>,
) -> Result<v1::ImportResult, Status> {
    if bytes.len() > crate::reference::signed::MAX_DOCUMENT_SIZE {
        return Err(Status::invalid_argument("document too large"));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| Status::invalid_argument("document is not UTF-8 text"))?;
    let what = kind.name();
    if service.admin_config().two_person_imports
        && let Some(held) = kind.held()
    {
        return submit(service, operator, held, text);
    }
    let result = run(service, kind, &text);
    let detail = match &result {
        Ok(imported) => format!(
            "{what} imported by {}: {} (sha256 {})",
            operator.name, imported.note, imported.digest
        ),
        Err(error) => format!("{what} import by {} refused: {error}", operator.name),
    };
    audit(service, EventKind::OperatorAction, detail);
    answer(result)
}

/// Holds a trust list or policy for a second policy-admin, after checking the document itself.
fn submit(
    service: &Service,
    operator: &PeerIdentity,
    kind: PendingKind,
    text: String,
) -> Result<v1::ImportResult, Status> {
    let what = kind.name();
    let trust = service.trust();
    let checked = match kind {
        PendingKind::TrustList => trust.check_trust_list(&text).map(|l| l.version),
        PendingKind::Policy => trust.check_policy(&text).map(|p| p.version),
    };
    let version = match checked {
        Ok(version) => version,
        Err(error) => {
            audit(
                service,
                EventKind::OperatorAction,
                format!("{what} import by {} refused: {error}", operator.name),
            );
            return Err(super::status::import(error));
        }
    };
    let import = PendingImport {
        kind,
        document: text.trim().to_string(),
        submitted_by: operator.name.clone(),
        submitter_serial: operator.serial_hex.clone(),
        submitted_at_unix_millis: crate::service::now_unix_millis(),
    };
    let digest = pending::submit(service.storage().as_ref(), &import).map_err(pending_status)?;
    audit(
        service,
        EventKind::OperatorAction,
        format!(
            "{what} v{version} submitted by {} (sha256 {digest}): pending a second policy-admin's approval",
            operator.name
        ),
    );
    Ok(v1::ImportResult {
        version,
        note: format!(
            "{what} v{version} pending: a second policy-admin approves it with \
             `trustchain import approve --digest {digest}`"
        ),
        digest,
        pending: true,
    })
}

/// Approves the pending import under `digest` for `approver` (a policy-admin, whose role was
/// checked): refused for the operator who submitted it; otherwise imported now, with every check
/// of an import made again against what is active now.
pub fn approve(
    service: &Service,
    approver: &PeerIdentity,
    digest: &str,
    comment: &str,
) -> Result<v1::ImportResult, Status> {
    let storage = service.storage().as_ref();
    let import = pending::pending(storage, digest).map_err(pending_status)?;
    let what = import.kind.name();
    if import.submitted_by == approver.name || import.submitter_serial == approver.serial_hex {
        audit(
            service,
            EventKind::Alert,
            format!(
                "{what} import (sha256 {digest}) submitted by {} refused self-approval by {} \
                 (certificate serial {})",
                import.submitted_by, approver.name, approver.serial_hex
            ),
        );
        return Err(Status::permission_denied(
            "the operator who submitted an import cannot approve it",
        ));
    }
    let kind = match import.kind {
        PendingKind::TrustList => DocumentImport::TrustList,
        PendingKind::Policy => DocumentImport::Policy,
    };
    let result = run(service, kind, &import.document);
    // Decided either way: a refused document is submitted again once it can pass.
    if let Err(error) = pending::remove(storage, digest) {
        tracing::error!(%error, "cannot remove a decided pending import");
    }
    let detail = match &result {
        Ok(imported) => format!(
            "{what} submitted by {} approved by {} ({comment:?}): {} (sha256 {})",
            import.submitted_by, approver.name, imported.note, imported.digest
        ),
        Err(error) => format!(
            "{what} submitted by {} (sha256 {digest}) refused at approval by {}: {error}",
            import.submitted_by, approver.name
        ),
    };
    audit(service, EventKind::OperatorAction, detail);
    answer(result)
}
