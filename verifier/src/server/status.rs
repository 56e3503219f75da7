//! The one place domain errors become gRPC statuses, and so the one place that decides what
//! detail leaves the process: an internal failure is logged here and told as "internal error";
//! a refusal of an unauthenticated peer says no more than that it was refused.

use tonic::Status;

use crate::attestation::session::Refusal;
use crate::enrollment::enroller::EnrollError;
use crate::reference::trust::ImportError;
use crate::service::ActionError;

/// A failure inside the verifier during `call`: logged, never described to the peer.
pub fn internal(call: &'static str, error: impl std::fmt::Display) -> Status {
    tracing::error!(call, error = %crate::untrusted_text::Escaped(&error), "call failed inside the verifier");
    Status::internal("internal error")
}

/// An enrollment error (the peer has no certificate yet).
pub fn enrollment(error: &EnrollError) -> Status {
    match error {
        EnrollError::Busy => Status::resource_exhausted("try again later"),
        // Replicas: another replica holds the device; the agent retries, maybe elsewhere.
        EnrollError::Elsewhere { .. } => Status::unavailable("try again later"),
        e if e.is_internal() => internal("enrollment", e),
        EnrollError::TooLarge(_) => Status::invalid_argument("request too large"),
        // Everything else is a refusal of the device: say no more than that.
        _ => Status::permission_denied("enrollment refused"),
    }
}

/// An operator's action that failed (the operator is authenticated).
pub fn action(error: ActionError) -> Status {
    match error {
        ActionError::NotFound => Status::not_found("no such device"),
        other => internal("admin", other),
    }
}

/// A document an operator imported that was not taken: the operator hears why.
pub fn import(error: ImportError) -> Status {
    match error {
        ImportError::Storage(error) => internal("admin", error),
        error => Status::failed_precondition(error.to_string()),
    }
}

/// Why a session ended an agent's stream: the session's own words, nothing more.
pub fn refusal(refusal: Refusal) -> Status {
    match refusal {
        Refusal::Malformed(what) => Status::invalid_argument(what),
        Refusal::NotPermitted(what) => Status::permission_denied(what),
        Refusal::Elsewhere => Status::unavailable("attested by another replica"),
    }
}
