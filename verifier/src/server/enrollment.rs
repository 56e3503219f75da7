//! The Enrollment gRPC service: converts messages into domain types once, calls the enroller, and
//! decides what an (unauthenticated) agent learns: only "refused", never why. The reason is in the
//! verifier's log and event record.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use trustchain_proto::v1::{self, enrollment_server::Enrollment};

use crate::enrollment::ek_chain::{MAX_CERTIFICATE_SIZE, MAX_SUPPLIED_INTERMEDIATES};
use crate::enrollment::enroller::{EnrollError, EnrollmentRequest};
use crate::service::Service;
use crate::storage::Facts;

#[derive(Debug)]
pub struct EnrollmentApi {
    service: Arc<Service>,
}

impl EnrollmentApi {
    pub fn new(service: Arc<Service>) -> Self {
        Self { service }
    }
}

/// The one place enrollment errors become gRPC statuses.
fn to_status(error: &EnrollError) -> Status {
    match error {
        EnrollError::Busy => Status::resource_exhausted("try again later"),
        e if e.is_internal() => {
            tracing::error!(error = %e, "enrollment failed inside the verifier");
            Status::internal("internal error")
        }
        EnrollError::TooLarge(_) => Status::invalid_argument("request too large"),
        // Everything else is a refusal of the device: say no more than that.
        _ => Status::permission_denied("enrollment refused"),
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, EnrollError> + Send + 'static,
) -> Result<T, Status> {
    // Chain validation, RSA-OAEP and certificate signing are CPU work; keep them off the reactor.
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(|e| to_status(&e)),
        Err(_) => Err(Status::internal("internal error")),
    }
}

#[tonic::async_trait]
impl Enrollment for EnrollmentApi {
    async fn begin(
        &self,
        request: Request<v1::EnrollRequest>,
    ) -> Result<Response<v1::ActivationChallenge>, Status> {
        let message = request.into_inner();
        if message.ek_certificate.len() > MAX_CERTIFICATE_SIZE
            || message.ek_intermediates.len() > MAX_SUPPLIED_INTERMEDIATES
        {
            return Err(Status::invalid_argument("request too large"));
        }
        let facts = message.facts.unwrap_or_default();
        let domain = EnrollmentRequest {
            ek_certificate: message.ek_certificate,
            ek_intermediates: message.ek_intermediates,
            ek_public: message.ek_public,
            ak_public: message.ak_public,
            facts: Facts {
                hostname: facts.hostname,
                model: facts.model,
                firmware_version: facts.firmware_version,
                device_class: facts.device_class,
                agent_version: facts.agent_version,
            },
        };
        let service = self.service.clone();
        let challenge = blocking(move || service.enroller().begin(domain))
            .await
            .inspect_err(|status| {
                if status.code() == tonic::Code::PermissionDenied {
                    self.service.metrics().enrollment(false);
                }
            })?;
        Ok(Response::new(v1::ActivationChallenge {
            attempt_id: challenge.attempt_id.to_vec(),
            credential_blob: challenge.credential_blob,
            encrypted_secret: challenge.encrypted_secret,
            expires_in_seconds: u32::try_from(challenge.expires_in.as_secs()).unwrap_or(u32::MAX),
            device_id: challenge.device_id,
        }))
    }

    async fn complete(
        &self,
        request: Request<v1::ActivationResponse>,
    ) -> Result<Response<v1::EnrollmentResult>, Status> {
        let message = request.into_inner();
        let service = self.service.clone();
        let counted = self.service.clone();
        let enrolled = blocking(move || {
            service
                .enroller()
                .complete(&message.attempt_id, &message.secret, &message.client_csr)
        })
        .await
        .inspect_err(|status| {
            if status.code() == tonic::Code::PermissionDenied {
                counted.metrics().enrollment(false);
            }
        })?;
        counted.metrics().enrollment(true);
        Ok(Response::new(v1::EnrollmentResult {
            device_id: enrolled.device_id,
            ak_certificate: enrolled.ak_certificate,
            client_certificate: enrolled.client_certificate,
            ca_chain: enrolled.ca_chain,
            ak_rotated: enrolled.ak_rotated,
        }))
    }
}
