//! Enrollment, agent side: present the TPM's identity, prove the AK lives in it by activating the
//! verifier's credential, and receive certificates for a TLS key that never leaves the device.

use std::sync::{Arc, Mutex};

use trustchain_proto::v1::enrollment_client::EnrollmentClient;
use trustchain_proto::v1::{ActivationResponse, DeviceFacts, EnrollRequest};

use crate::client::{ClientError, connect};
use crate::config::AgentConfig;
use crate::identity::{Enrollment, IdentityError, StateDir};
use crate::replicas::{Replica, Rotation};
use crate::retry::{Backoff, wait_for_replica, wait_for_tpm, with_tpm};
use crate::status::{AgentState, Reporter};
use crate::tpm::{Tpm, TpmError};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnrollError {
    #[error(transparent)]
    Tpm(#[from] TpmError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("the verifier refused: {0}")]
    Refused(String),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("the TPM task failed")]
    Task,
}

impl EnrollError {
    /// A failure on the device itself, which another replica would not change.
    fn is_local(&self) -> bool {
        matches!(self, Self::Tpm(_) | Self::Identity(_) | Self::Task)
    }
}

/// Enrolls with the verifier and saves the identity in `state`: tries each configured replica
/// once, in order, until one enrolls the device. A TPM or state-directory failure ends it at
/// once (another replica would not help); otherwise the last replica's error is returned.
pub async fn enroll<T: Tpm + 'static>(
    config: &AgentConfig,
    tpm: &Arc<Mutex<T>>,
    state: &StateDir,
) -> Result<Enrollment, EnrollError> {
    let replicas = &config.verifiers;
    let mut position = 0;
    loop {
        let replica = replicas.at(position);
        match enroll_at(config, replica, tpm, state).await {
            Err(error) if position + 1 < replicas.count() && !error.is_local() => {
                tracing::warn!(verifier = replica.url(), %error, "enrollment failed at this replica");
                position += 1;
            }
            outcome => return outcome,
        }
    }
}

/// Enrolls at one replica.
async fn enroll_at<T: Tpm + 'static>(
    config: &AgentConfig,
    replica: &Replica,
    tpm: &Arc<Mutex<T>>,
    state: &StateDir,
) -> Result<Enrollment, EnrollError> {
    let ek = config.ek;
    let (ek_certificate, ek_public, ak_public) = with_tpm(tpm, move |t| {
        Ok((t.ek_certificate(ek)?, t.ek_public(ek)?, t.ak_public()?))
    })
    .await?;

    let channel = connect(config, replica, None).await?;
    tracing::info!(
        verifier = replica.url(),
        "enrolling with a verifier replica"
    );
    let mut client = EnrollmentClient::new(channel);
    let hostname = config.hostname();
    let challenge = client
        .begin(EnrollRequest {
            ek_certificate,
            ek_intermediates: Vec::new(),
            ek_public,
            ak_public,
            facts: Some(DeviceFacts {
                hostname: hostname.clone(),
                model: config.facts.model.clone(),
                firmware_version: config.facts.firmware_version.clone(),
                device_class: config.facts.device_class.clone(),
                agent_version: env!("CARGO_PKG_VERSION").into(),
            }),
        })
        .await
        .map_err(|status| EnrollError::Refused(status.message().to_string()))?
        .into_inner();
    tracing::info!(device = %challenge.device_id, "activating the verifier's credential");

    let (blob, encrypted) = (challenge.credential_blob, challenge.encrypted_secret);
    let secret = with_tpm(tpm, move |t| t.activate_credential(&blob, &encrypted)).await?;
    let (key, csr) = state.new_tls_key(&hostname)?;
    let result = client
        .complete(ActivationResponse {
            attempt_id: challenge.attempt_id,
            secret,
            client_csr: csr,
        })
        .await
        .map_err(|status| EnrollError::Refused(status.message().to_string()))?
        .into_inner();
    let enrollment = state.save(
        &result.device_id,
        &key,
        &result.client_certificate,
        &result.ca_chain,
        &result.ak_certificate,
    )?;
    tracing::info!(
        device = %result.device_id,
        ak_rotated = result.ak_rotated,
        verifier = replica.url(),
        "enrolled"
    );
    Ok(enrollment)
}

/// Enrolls, retrying until it succeeds: while the verifier is unreachable or refuses (an
/// operator may admit the device later) it moves through the configured replicas in turn, with
/// backoff and jitter once per full round of them (as attestation does, see
/// [`crate::replicas::Rotation`]), and it probes the TPM while it does not answer. Each wait is
/// reported through `status`.
pub async fn enroll_until_done<T: Tpm + 'static>(
    config: &AgentConfig,
    tpm: &Arc<Mutex<T>>,
    state: &StateDir,
    status: &mut Reporter,
) -> Enrollment {
    let replicas = &config.verifiers;
    let mut rotation = Rotation::new(replicas.count());
    let mut backoff = Backoff::new();
    let mut failures: u32 = 0;
    loop {
        status.set(AgentState::Enrolling);
        let replica = replicas.at(rotation.current());
        match enroll_at(config, replica, tpm, state).await {
            Ok(enrollment) => return enrollment,
            Err(EnrollError::Tpm(error)) => {
                failures = failures.saturating_add(1);
                wait_for_tpm(tpm, &mut backoff, &mut failures, status, error.to_string()).await;
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                let next = rotation.failed();
                let reason = format!("enrollment: {error}");
                wait_for_replica(
                    replicas,
                    replica,
                    next,
                    &mut backoff,
                    failures,
                    reason,
                    status,
                )
                .await;
            }
        }
    }
}
