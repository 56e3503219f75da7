//! A hand-driven attestation stream: the agent's side of `Attestation.Attest` played by a test,
//! for the answers a real agent would never send.

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use trustchain_proto::v1::attestation_client::AttestationClient;
use trustchain_proto::v1::{
    AgentMessage, Challenge, Evidence, Hello, VerdictNotice, VerifierMessage, agent_message,
    verifier_message,
};

use crate::deployment::WAIT;
use crate::{ChannelBinding, ClientPem, TestDevice, TestVerifier};

/// An open attestation stream, authenticated with a device's certificate.
#[derive(Debug)]
pub struct AttestStream {
    pub outbound: mpsc::Sender<AgentMessage>,
    pub inbound: tonic::Streaming<VerifierMessage>,
    /// The stream's connection, whose exporter an honest quote is bound to.
    pub binding: ChannelBinding,
}

impl AttestStream {
    /// Opens the stream as `device_id` with its TLS identity (PEM chain, PEM key) and says Hello.
    pub async fn open_as(
        verifier: &TestVerifier,
        device_id: &str,
        certificate_pem: &str,
        key_pem: &str,
    ) -> anyhow::Result<Self> {
        let bound = verifier
            .bound_channel(&ClientPem {
                certificate_pem: certificate_pem.into(),
                key_pem: key_pem.into(),
            })
            .await?;
        let (outbound, rx) = mpsc::channel(8);
        outbound
            .send(AgentMessage {
                body: Some(agent_message::Body::Hello(Hello {
                    device_id: device_id.into(),
                    agent_version: "hand-driven".into(),
                })),
            })
            .await?;
        let inbound = AttestationClient::new(bound.channel)
            .attest(ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(Self {
            outbound,
            inbound,
            binding: bound.binding,
        })
    }

    /// Opens the stream as an enrolled swtpm device.
    pub async fn open(verifier: &TestVerifier, device: &TestDevice) -> anyhow::Result<Self> {
        let enrollment = device
            .enrollment
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("the device is not enrolled"))?;
        Self::open_as(
            verifier,
            &enrollment.device_id,
            &enrollment.certificate_pem,
            &enrollment.key_pem,
        )
        .await
    }

    /// The qualifyingData an honest quote answering `challenge` on this stream carries.
    pub fn bound(&self, challenge: &Challenge) -> [u8; 32] {
        self.binding.qualifying_data(&challenge.nonce)
    }

    /// The next message from the verifier, within [`WAIT`].
    async fn next(&mut self, waiting_for: &str) -> anyhow::Result<verifier_message::Body> {
        let message = tokio::time::timeout(WAIT, self.inbound.message())
            .await
            .map_err(|_| anyhow::anyhow!("no {waiting_for} in time"))??
            .ok_or_else(|| anyhow::anyhow!("stream ended"))?;
        message
            .body
            .ok_or_else(|| anyhow::anyhow!("an empty verifier message"))
    }

    /// The next challenge (verdicts before it are skipped).
    pub async fn challenge(&mut self) -> anyhow::Result<Challenge> {
        loop {
            if let verifier_message::Body::Challenge(challenge) = self.next("challenge").await? {
                return Ok(challenge);
            }
        }
    }

    /// The next verdict (challenges before it are skipped).
    pub async fn verdict(&mut self) -> anyhow::Result<VerdictNotice> {
        loop {
            if let verifier_message::Body::Verdict(verdict) = self.next("verdict").await? {
                return Ok(verdict);
            }
        }
    }

    /// Sends `evidence` as one message, whatever its size.
    pub async fn answer(&self, evidence: Evidence) -> anyhow::Result<()> {
        self.outbound
            .send(AgentMessage {
                body: Some(agent_message::Body::Evidence(evidence)),
            })
            .await?;
        Ok(())
    }

    /// Sends `evidence` as the real agent does (in parts when large) and waits for the verdict.
    pub async fn send(&mut self, evidence: Evidence) -> anyhow::Result<VerdictNotice> {
        for message in trustchain_proto::evidence_messages(evidence) {
            self.outbound.send(message).await?;
        }
        self.verdict().await
    }
}
