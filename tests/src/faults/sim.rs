//! Simulated honest devices: the load generator's software TPM model, enrolled honestly (real
//! credential activation) and attesting on its own mTLS stream, logging when each challenge and
//! verdict arrived so a test can tell whether a device missed an interval.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::BoundChannel;
use crate::ClientPem;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use trustchain_proto::evidence_messages;
use trustchain_proto::v1::attestation_client::AttestationClient;
use trustchain_proto::v1::enrollment_client::EnrollmentClient;
use trustchain_proto::v1::{
    ActivationResponse, AgentMessage, Hello, agent_message, verifier_message,
};
use trustchain_swtpm::BootProfile;

use super::deployment::Deployment;
use crate::soft_tpm::{SoftTpm, answer, enroll_request};

/// An enrolled simulated device.
pub struct SimDevice {
    pub label: String,
    pub device_id: String,
    pub tpm: SoftTpm,
    pub identity: ClientPem,
}

impl std::fmt::Debug for SimDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimDevice")
            .field("device_id", &self.device_id)
            .finish_non_exhaustive()
    }
}

/// Creates a device and enrolls it, connecting from `source` (a loopback address).
pub async fn enroll(
    deployment: &Deployment,
    label: &str,
    source: Option<IpAddr>,
) -> anyhow::Result<SimDevice> {
    let tpm = SoftTpm::new(
        &deployment.makers.trusted,
        label,
        &BootProfile::default_linux(),
    )?;
    let channel = deployment.channel(None, source).await?;
    let mut client = EnrollmentClient::new(channel);
    let challenge = client
        .begin(enroll_request(&tpm, label))
        .await?
        .into_inner();
    let secret =
        tpm.activate_credential(&challenge.credential_blob, &challenge.encrypted_secret)?;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let csr = rcgen::CertificateParams::default().serialize_request(&key)?;
    let result = client
        .complete(ActivationResponse {
            attempt_id: challenge.attempt_id,
            secret,
            client_csr: csr.der().to_vec(),
        })
        .await?
        .into_inner();
    let certificate = pem::encode(&pem::Pem::new("CERTIFICATE", result.client_certificate))
        + deployment.issuing_pem();
    Ok(SimDevice {
        label: label.into(),
        device_id: result.device_id,
        tpm,
        identity: ClientPem {
            certificate_pem: certificate,
            key_pem: key.serialize_pem(),
        },
    })
}

/// What one device saw while attesting.
#[derive(Debug, Clone, Default)]
pub struct AttestLog {
    pub device_id: String,
    /// When each challenge arrived.
    pub challenges: Vec<Instant>,
    /// When each verdict arrived, and its `TrustState`.
    pub verdicts: Vec<(Instant, i32)>,
    /// Why the stream ended before the deadline, if it did.
    pub ended_early: Option<String>,
}

impl AttestLog {
    /// The longest wait between two challenges, and from the last one to `until`.
    pub fn longest_gap(&self, until: Instant) -> Duration {
        let mut longest = Duration::ZERO;
        let mut previous: Option<Instant> = None;
        for at in self
            .challenges
            .iter()
            .copied()
            .chain(std::iter::once(until))
        {
            if let Some(before) = previous {
                longest = longest.max(at.saturating_duration_since(before));
            }
            previous = Some(at);
        }
        longest
    }

    /// Verdicts that arrived within `[from, to)`.
    pub fn verdicts_between(&self, from: Instant, to: Instant) -> Vec<i32> {
        self.verdicts
            .iter()
            .filter(|(at, _)| *at >= from && *at < to)
            .map(|(_, state)| *state)
            .collect()
    }
}

/// Answers every challenge honestly on one stream until `deadline`.
pub async fn attest(channel: BoundChannel, mut device: SimDevice, deadline: Instant) -> AttestLog {
    let mut log = AttestLog {
        device_id: device.device_id.clone(),
        ..AttestLog::default()
    };
    if let Err(error) = attest_inner(channel, &mut device, deadline, &mut log).await {
        log.ended_early = Some(error.to_string());
    }
    log
}

async fn attest_inner(
    channel: BoundChannel,
    device: &mut SimDevice,
    deadline: Instant,
    log: &mut AttestLog,
) -> anyhow::Result<()> {
    let (outbound, rx) = mpsc::channel(4);
    outbound
        .send(AgentMessage {
            body: Some(agent_message::Body::Hello(Hello {
                device_id: device.device_id.clone(),
                agent_version: "sim".into(),
            })),
        })
        .await?;
    let binding = channel.binding;
    let mut inbound = AttestationClient::new(channel.channel)
        .attest(ReceiverStream::new(rx))
        .await?
        .into_inner();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        let message = match tokio::time::timeout(left, inbound.message()).await {
            Err(_) => return Ok(()),
            Ok(Ok(Some(message))) => message,
            Ok(Ok(None)) => anyhow::bail!("the verifier ended the stream"),
            Ok(Err(status)) => anyhow::bail!("stream error: {status}"),
        };
        match message.body {
            Some(verifier_message::Body::Challenge(challenge)) => {
                log.challenges.push(Instant::now());
                let evidence = answer(
                    &mut device.tpm,
                    &challenge,
                    &binding.qualifying_data(&challenge.nonce),
                )?;
                for message in evidence_messages(evidence) {
                    outbound.send(message).await?;
                }
            }
            Some(verifier_message::Body::Verdict(verdict)) => {
                log.verdicts.push((Instant::now(), verdict.state));
            }
            None => {}
        }
    }
}
