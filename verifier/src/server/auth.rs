//! Who is calling: the role and name in the caller's (TLS-validated) client certificate.
//!
//! rustls has already checked the chain to the deployment CA and the CRL; here we only read the
//! role the CA wrote into the certificate and refuse callers without the one a service needs.

use tonic::{Request, Status};
use trustchain_ca::Role;
use trustchain_ca::role::PeerIdentity;

use super::connection::EdgeInfo;

/// The caller's identity, or `unauthenticated` when the connection carried no client certificate.
pub fn caller<T>(request: &Request<T>) -> Result<PeerIdentity, Status> {
    // Read from the certificate once per connection (`EdgeInfo`); a request without that info
    // did not come through the verifier's listener and gets nothing.
    let certificate = EdgeInfo::of_request(request)
        .and_then(EdgeInfo::identity)
        .ok_or_else(|| Status::unauthenticated("client certificate required"))?;
    certificate
        .cloned()
        .ok_or_else(|| Status::permission_denied("certificate carries no role"))
}

/// The caller's identity, if it holds `role`; `permission_denied` otherwise.
pub fn require<T>(request: &Request<T>, role: Role) -> Result<PeerIdentity, Status> {
    let identity = caller(request)?;
    if identity.role == role {
        Ok(identity)
    } else {
        tracing::warn!(caller_role = %identity.role, wanted = %role, "call refused: wrong role");
        Err(Status::permission_denied(
            "this certificate may not make this call",
        ))
    }
}
