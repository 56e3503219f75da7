//! Enrollment driven by hand: a real swtpm and the agent's own TPM code, but the test decides
//! what is sent (Begin, TPM2_ActivateCredential in the device's TPM, Complete), for the requests
//! a real agent would never make.

use std::sync::{Arc, Mutex};

use trustchain_agent::config::EkChoice;
use trustchain_agent::identity::StateDir;
use trustchain_agent::tpm::Tpm as _;
use trustchain_agent::tpm::esapi::{AkAlgorithm, EsapiTpm};
use trustchain_proto::v1::enrollment_client::EnrollmentClient;
use trustchain_proto::v1::{ActivationResponse, DeviceFacts, EnrollRequest};
use trustchain_swtpm::{SwtpmDevice, TpmMaker};

use crate::TestVerifier;

/// A swtpm device with the agent's TPM access and state directory, not enrolled.
#[derive(Debug)]
pub struct BareDevice {
    pub swtpm: SwtpmDevice,
    pub tpm: Arc<Mutex<EsapiTpm>>,
    pub state: tempfile::TempDir,
}

impl BareDevice {
    /// Starts a swtpm of `maker` and opens it with an `ek` and an RSA-2048 AK.
    pub fn start(maker: &TpmMaker, label: &str, ek: EkChoice) -> anyhow::Result<Self> {
        let swtpm = SwtpmDevice::start(maker, label)?;
        let state = tempfile::tempdir()?;
        let tpm = EsapiTpm::new(&swtpm.tcti(), state.path(), ek, AkAlgorithm::Rsa2048)?;
        Ok(Self {
            swtpm,
            tpm: Arc::new(Mutex::new(tpm)),
            state,
        })
    }

    /// What the real agent sends for this TPM with its `ek`, claiming `facts`.
    pub fn request(&self, ek: EkChoice, facts: DeviceFacts) -> anyhow::Result<EnrollRequest> {
        let mut tpm = self.tpm.lock().unwrap_or_else(|p| p.into_inner());
        Ok(EnrollRequest {
            ek_certificate: tpm.ek_certificate(ek)?,
            ek_intermediates: Vec::new(),
            ek_public: tpm.ek_public(ek)?,
            ak_public: tpm.ak_public()?,
            facts: Some(facts),
        })
    }

    /// A CSR for a new TLS key in the agent's state directory.
    pub fn csr(&self) -> anyhow::Result<Vec<u8>> {
        Ok(StateDir::open(&self.state.path().join("agent"))?
            .new_tls_key("x")?
            .1)
    }

    /// Begin, TPM2_ActivateCredential in this TPM, Complete: the device id, or the refusal (at
    /// Begin or at Complete).
    pub async fn enroll_by_hand(
        &self,
        verifier: &TestVerifier,
        request: EnrollRequest,
    ) -> Result<String, tonic::Status> {
        let unavailable = |e: anyhow::Error| tonic::Status::unavailable(format!("{e:#}"));
        let mut client = EnrollmentClient::new(verifier.channel(None).await.map_err(unavailable)?);
        let challenge = client.begin(request).await?.into_inner();
        let secret = self
            .tpm
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .activate_credential(&challenge.credential_blob, &challenge.encrypted_secret)
            .map_err(|e| tonic::Status::internal(format!("the TPM did not activate: {e}")))?;
        client
            .complete(ActivationResponse {
                attempt_id: challenge.attempt_id,
                secret,
                client_csr: self.csr().map_err(unavailable)?,
            })
            .await
            .map(|answer| answer.into_inner().device_id)
    }
}

/// Facts claiming only `hostname`.
pub fn facts(hostname: &str) -> DeviceFacts {
    DeviceFacts {
        hostname: hostname.into(),
        ..Default::default()
    }
}
