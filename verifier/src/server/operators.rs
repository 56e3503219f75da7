//! Revoked operators: an operator certificate revoked with `trustchain-ca revoke-operator` is on
//! the CRL the TLS layer checks at every handshake, and is refused here on every admin call, so
//! a connection opened before the revocation cannot go on using it.
//!
//! The revoked list is read from the CA directory on each call (admin calls are rare; the file
//! is small and bounded); a list that cannot be read refuses every admin call (fails closed).

use std::sync::Arc;

use tonic::{Request, Status};
use trustchain_ca::Role;

use super::auth;
use crate::service::Service;
use crate::untrusted_text::Escaped;

/// The admin services' gate, on the request's headers before its body is decoded: the caller
/// holds an operator certificate that is not revoked.
pub fn admit(request: Request<()>, service: &Arc<Service>) -> Result<Request<()>, Status> {
    let identity = auth::require(&request, Role::Operator)?;
    match service.ca().operator_revoked(&identity.serial_hex) {
        Ok(false) => Ok(request),
        Ok(true) => {
            tracing::warn!(
                operator = %Escaped(&identity.name),
                serial = %identity.serial_hex,
                "admin call refused: the operator certificate is revoked"
            );
            // Its next handshake fails too, whatever connection it is on now.
            if let Err(error) = service.refresh_crl() {
                tracing::error!(%error, "could not refresh the CRL");
            }
            Err(Status::permission_denied(
                "this operator certificate is revoked",
            ))
        }
        Err(error) => {
            tracing::error!(%error, "admin call refused: the revoked operators cannot be read");
            Err(Status::unavailable(
                "operator revocations cannot be read; admin calls are refused until they can",
            ))
        }
    }
}
