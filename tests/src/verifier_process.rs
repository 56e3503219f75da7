//! The verifier as a separate process, for fault tests (crash, full disk, clock, corruption):
//! a deployment on disk (CA, TLS identity, test TPM makers, config), the `trustchain-verifier`
//! binary started on it and killed at will, and simulated devices (the software TPM model of
//! [`crate::soft_tpm`]) that enroll and attest over their own mTLS connections.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use trustchain_ca::Authority;
use trustchain_proto::evidence_messages;
use trustchain_proto::v1::attestation_client::AttestationClient;
use trustchain_proto::v1::enrollment_client::EnrollmentClient;
use trustchain_proto::v1::{
    ActivationResponse, AgentMessage, Hello, agent_message, verifier_message,
};
use trustchain_swtpm::TestMakers;

use crate::soft_tpm::{SoftTpm, answer, enroll_request};
use crate::{BoundChannel, ClientPem};

/// Everything a verifier process needs on disk, and how to reach it.
pub struct Deployment {
    pub dir: PathBuf,
    pub ca: Authority,
    pub makers: TestMakers,
    pub config_path: PathBuf,
    pub state_dir: PathBuf,
    pub port: u16,
    pub metrics_port: u16,
    pub root_pem_path: PathBuf,
    pub operator_cert: PathBuf,
    pub operator_key: PathBuf,
    /// The configuration as [`Deployment::create`] wrote it.
    base_config: String,
}

impl std::fmt::Debug for Deployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployment")
            .field("dir", &self.dir)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// A loopback port free at the time of the call.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Deployment {
    /// Writes a deployment into `dir`, with its state in `state_dir`, challenging every
    /// `interval_seconds` and timing devices out after `missed` silent intervals.
    pub fn create(
        dir: &Path,
        state_dir: &Path,
        interval_seconds: u64,
        missed: u32,
    ) -> anyhow::Result<Self> {
        let ca = Authority::create(&dir.join("ca"), "Fault Tests")?;
        let server = ca.issue_verifier(&["localhost".into()], &["127.0.0.1".parse()?])?;
        std::fs::write(
            dir.join("verifier.pem"),
            format!("{}{}", server.pem, ca.issuing_pem()),
        )?;
        trustchain_ca::files::write_secret(
            &dir.join("verifier.key.pem"),
            server.key_pem.unwrap_or_default().as_bytes(),
        )?;
        let root_pem_path = dir.join("root.pem");
        std::fs::write(&root_pem_path, ca.root_pem())?;
        let operator =
            ca.issue_operator("fault-test-operator", &trustchain_ca::OperatorRole::ALL)?;
        let operator_cert = dir.join("operator.pem");
        let operator_key = dir.join("operator.key.pem");
        std::fs::write(
            &operator_cert,
            format!("{}{}", operator.pem, ca.issuing_pem()),
        )?;
        trustchain_ca::files::write_secret(
            &operator_key,
            operator.key_pem.unwrap_or_default().as_bytes(),
        )?;
        let makers = TestMakers::generate()?;
        let (root, intermediate) = makers.trusted.write_pem(dir)?;
        let port = free_port()?;
        let metrics_port = free_port()?;
        let config_path = dir.join("verifier.toml");
        let base_config = format!(
            "listen = \"127.0.0.1:{port}\"\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n\
                 state_dir = {:?}\nca_dir = {:?}\ntls_certificate = {:?}\ntls_key = {:?}\n\
                 maker_anchors = [{root:?}]\nmaker_intermediates = [{intermediate:?}]\n\
                 activation_timeout_seconds = 30\n\
                 [attestation]\ndefault_interval_seconds = {interval_seconds}\n\
                 timeout_after_missed_intervals = {missed}\n",
            state_dir,
            dir.join("ca"),
            dir.join("verifier.pem"),
            dir.join("verifier.key.pem"),
        );
        std::fs::write(&config_path, &base_config)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            ca,
            makers,
            config_path,
            state_dir: state_dir.to_path_buf(),
            port,
            metrics_port,
            root_pem_path,
            operator_cert,
            operator_key,
            base_config,
        })
    }

    /// Rewrites the configuration file as created plus `extra` (TOML appended after its
    /// `[attestation]` table: `[limits]`, `[[webhooks]]`), for the next start.
    pub fn configure(&self, extra: &str) -> anyhow::Result<()> {
        std::fs::write(
            &self.config_path,
            format!(
                "{}
{extra}",
                self.base_config
            ),
        )?;
        Ok(())
    }

    /// Configures `extra` (as [`Deployment::configure`]) and starts the verifier expecting it to
    /// refuse: the error it stopped with, as text.
    pub async fn refused_start(&self, extra: &str, log: &Path) -> anyhow::Result<String> {
        self.configure(extra)?;
        match self.start(self.command(), log).await {
            Ok(process) => {
                process.stop();
                anyhow::bail!("the verifier started with {extra:?}")
            }
            Err(error) => Ok(error.to_string()),
        }
    }

    /// Configures `extra`, starts the verifier until it accepts connections and stops it.
    pub async fn starts(&self, extra: &str, log: &Path) -> anyhow::Result<()> {
        self.configure(extra)?;
        self.start(self.command(), log).await?.stop();
        Ok(())
    }

    /// `trustchain-verifier serve` on this deployment (not yet waited for).
    pub fn command(&self) -> Command {
        let mut command = Command::new(crate::workspace_binary("trustchain-verifier"));
        command
            .args(["serve", "--config"])
            .arg(&self.config_path)
            .env("RUST_LOG", "info");
        command
    }

    /// Starts `command` (from [`Deployment::command`], maybe wrapped), logging to `log`, and
    /// waits until it accepts connections.
    pub async fn start(&self, mut command: Command, log: &Path) -> anyhow::Result<VerifierProcess> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let child = command
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .context("starting trustchain-verifier")?;
        let mut process = VerifierProcess {
            child,
            log: log.to_path_buf(),
        };
        process
            .wait_ready(self.port, Duration::from_secs(60))
            .await?;
        Ok(process)
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// A TLS channel to the verifier, as a device (`identity`) or anonymous (enrollment).
    pub async fn channel(&self, identity: Option<ClientPem>) -> anyhow::Result<Channel> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.ca.root_pem()))
            .domain_name("localhost");
        if let Some(identity) = identity {
            tls = tls.identity(crate::tonic_identity(&identity));
        }
        Ok(Endpoint::from_shared(self.url())?
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(20))
            .connect()
            .await?)
    }

    /// An attestation channel as a device, bound as the agent binds it.
    pub async fn bound_channel(&self, identity: &ClientPem) -> anyhow::Result<BoundChannel> {
        crate::bound_channel(&self.url(), self.ca.root_pem(), identity, None).await
    }

    /// One metric from /metrics (None if the endpoint or the metric is absent).
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let text = self.metrics_text().await?;
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
    }

    pub async fn metrics_text(&self) -> Option<String> {
        let fetch = async {
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.metrics_port))
                .await
                .ok()?;
            stream
                .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
                .await
                .ok()?;
            let mut text = String::new();
            stream.read_to_string(&mut text).await.ok()?;
            Some(text)
        };
        tokio::time::timeout(Duration::from_secs(5), fetch)
            .await
            .ok()
            .flatten()
    }

    /// Runs the `trustchain` CLI with the operator's identity against this verifier:
    /// `audit export` into `out`, then `audit verify`; returns verify's output.
    pub fn export_and_verify_audit(&self, out: &Path) -> anyhow::Result<String> {
        let cli = crate::workspace_binary("trustchain");
        let export = Command::new(&cli)
            .args(["audit", "export", "--verifier", &self.url(), "--ca"])
            .arg(&self.root_pem_path)
            .arg("--cert")
            .arg(&self.operator_cert)
            .arg("--key")
            .arg(&self.operator_key)
            .output()?;
        anyhow::ensure!(
            export.status.success(),
            "audit export failed: {}",
            String::from_utf8_lossy(&export.stderr)
        );
        std::fs::write(out, &export.stdout)?;
        let verify = Command::new(&cli)
            .args(["audit", "verify", "--public-key"])
            .arg(self.dir.join("ca").join("verifier-signing.pub"))
            .arg(out)
            .output()?;
        let text = String::from_utf8_lossy(&verify.stdout).into_owned();
        anyhow::ensure!(
            verify.status.success() && text.starts_with("OK"),
            "audit verify failed: {text}{}",
            String::from_utf8_lossy(&verify.stderr)
        );
        Ok(text.trim().to_string())
    }
}

/// A running `trustchain-verifier` process; killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct VerifierProcess {
    child: Child,
    log: PathBuf,
}

impl VerifierProcess {
    async fn wait_ready(&mut self, port: u16, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!(
                    "trustchain-verifier exited during start ({status}):\n{}",
                    self.log_tail()
                );
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "trustchain-verifier did not listen within {timeout:?}:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM-free stop for the end of a test: the same as a crash, which the state survives.
    pub fn stop(mut self) {
        self.kill();
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines
            .iter()
            .skip(lines.len().saturating_sub(40))
            .copied()
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for VerifierProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An enrollment's outcome as the device saw it.
#[derive(Debug)]
pub enum Enrollment {
    Accepted {
        device_id: String,
        identity: ClientPem,
        /// The client certificate (DER).
        certificate: Vec<u8>,
    },
    /// The verifier answered and said no.
    Refused(tonic::Status),
}

/// Enrolls a simulated device: Begin, ActivateCredential in the software TPM, Complete.
/// `Err` is a transport failure (outcome unknown to the device); `Refused` is an answer.
pub async fn enroll(
    deployment: &Deployment,
    tpm: &SoftTpm,
    label: &str,
) -> anyhow::Result<Enrollment> {
    let mut client = EnrollmentClient::new(deployment.channel(None).await?);
    let challenge = match client.begin(enroll_request(tpm, label)).await {
        Ok(response) => response.into_inner(),
        Err(status) if is_answer(&status) => return Ok(Enrollment::Refused(status)),
        Err(status) => anyhow::bail!("begin: {status}"),
    };
    complete(deployment, tpm, &challenge).await
}

/// Step two of [`enroll`], separately callable (an enrollment left in progress).
pub async fn complete(
    deployment: &Deployment,
    tpm: &SoftTpm,
    challenge: &trustchain_proto::v1::ActivationChallenge,
) -> anyhow::Result<Enrollment> {
    let mut client = EnrollmentClient::new(deployment.channel(None).await?);
    let secret =
        tpm.activate_credential(&challenge.credential_blob, &challenge.encrypted_secret)?;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let csr = rcgen::CertificateParams::default().serialize_request(&key)?;
    match client
        .complete(ActivationResponse {
            attempt_id: challenge.attempt_id.clone(),
            secret,
            client_csr: csr.der().to_vec(),
        })
        .await
    {
        Ok(result) => {
            let result = result.into_inner();
            let cert = pem::encode(&pem::Pem::new(
                "CERTIFICATE",
                result.client_certificate.clone(),
            )) + deployment.ca.issuing_pem();
            Ok(Enrollment::Accepted {
                device_id: result.device_id,
                identity: ClientPem {
                    certificate_pem: cert,
                    key_pem: key.serialize_pem(),
                },
                certificate: result.client_certificate,
            })
        }
        Err(status) if is_answer(&status) => Ok(Enrollment::Refused(status)),
        Err(status) => anyhow::bail!("complete: {status}"),
    }
}

/// Begin only: an enrollment left in progress.
pub async fn begin(
    deployment: &Deployment,
    tpm: &SoftTpm,
    label: &str,
) -> anyhow::Result<trustchain_proto::v1::ActivationChallenge> {
    let mut client = EnrollmentClient::new(deployment.channel(None).await?);
    Ok(client.begin(enroll_request(tpm, label)).await?.into_inner())
}

/// A status that is the verifier's decision rather than a broken connection.
fn is_answer(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::PermissionDenied | tonic::Code::InvalidArgument
    )
}

/// A verdict a device received.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub nonce: Vec<u8>,
    /// `TrustState` as sent.
    pub state: i32,
    pub at: Instant,
    /// Which verifier process the stream was with (the test's restart counter).
    pub incarnation: u64,
}

/// How a simulated device answers.
#[derive(Debug, Default)]
pub struct Behaviour {
    /// Milliseconds to wait before answering a challenge (a slow or late device).
    pub answer_delay_millis: AtomicU64,
    /// Stop attesting.
    pub stop: AtomicBool,
}

/// Runs one attestation stream until it ends, the verifier goes away, or `behaviour.stop`;
/// appends every verdict to `verdicts`. Measures two files per round (IMA grows).
pub async fn attest_stream(
    deployment: &Deployment,
    identity: ClientPem,
    tpm: &mut SoftTpm,
    device_id: &str,
    behaviour: &Behaviour,
    incarnation: u64,
    verdicts: &mut Vec<Verdict>,
) -> anyhow::Result<()> {
    let bound = deployment.bound_channel(&identity).await?;
    let (tx, rx) = mpsc::channel(4);
    tx.send(AgentMessage {
        body: Some(agent_message::Body::Hello(Hello {
            device_id: device_id.to_string(),
            agent_version: "fault-test".into(),
        })),
    })
    .await?;
    let mut inbound = AttestationClient::new(bound.channel)
        .attest(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut nonces: std::collections::HashMap<u64, Vec<u8>> = std::collections::HashMap::new();
    let mut round = 0u64;
    while !behaviour.stop.load(Ordering::SeqCst) {
        let message =
            match tokio::time::timeout(Duration::from_millis(300), inbound.message()).await {
                Err(_) => continue,
                Ok(Ok(Some(message))) => message,
                Ok(Ok(None)) => return Ok(()),
                Ok(Err(status)) => anyhow::bail!("stream: {status}"),
            };
        match message.body {
            Some(verifier_message::Body::Challenge(challenge)) => {
                round += 1;
                tpm.measure_file(
                    &format!("/opt/app/{incarnation}/{round}"),
                    format!("{device_id}{incarnation}{round}").as_bytes(),
                );
                let delay = behaviour.answer_delay_millis.load(Ordering::SeqCst);
                if delay > 0 {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                }
                let evidence = answer(
                    tpm,
                    &challenge,
                    &bound.binding.qualifying_data(&challenge.nonce),
                )?;
                nonces.insert(challenge.challenge_id, challenge.nonce.clone());
                for message in evidence_messages(evidence) {
                    tx.send(message).await?;
                }
            }
            Some(verifier_message::Body::Verdict(verdict)) => {
                verdicts.push(Verdict {
                    nonce: nonces.remove(&verdict.challenge_id).unwrap_or_default(),
                    state: verdict.state,
                    at: Instant::now(),
                    incarnation,
                });
            }
            None => {}
        }
    }
    Ok(())
}

/// A simulated device's life in a fault test: enroll (retrying through outages), then attest,
/// reconnecting whenever the stream ends, until `behaviour.stop`.
#[derive(Debug)]
pub struct DeviceLog {
    pub label: String,
    pub device_id: Option<String>,
    /// Enrollments the verifier answered "accepted" (device ids).
    pub accepted: Vec<String>,
    /// Enrollment refusals the verifier answered.
    pub refused: Vec<String>,
    pub verdicts: Vec<Verdict>,
    pub stream_errors: u64,
    /// The client certificate of the last accepted enrollment, and the TPM (to attest again).
    pub identity: Option<ClientPem>,
    pub tpm: Option<SoftTpm>,
}

/// Runs a device: see [`DeviceLog`]. `incarnation` is read when each stream opens.
pub async fn run_device(
    deployment: Arc<Deployment>,
    mut tpm: SoftTpm,
    label: String,
    behaviour: Arc<Behaviour>,
    incarnation: Arc<AtomicU64>,
) -> DeviceLog {
    let mut log = DeviceLog {
        label: label.clone(),
        device_id: None,
        accepted: Vec::new(),
        refused: Vec::new(),
        verdicts: Vec::new(),
        stream_errors: 0,
        identity: None,
        tpm: None,
    };
    let mut identity = None;
    while !behaviour.stop.load(Ordering::SeqCst) {
        let Some(current) = identity.clone() else {
            match enroll(&deployment, &tpm, &label).await {
                Ok(Enrollment::Accepted {
                    device_id,
                    identity: issued,
                    ..
                }) => {
                    log.accepted.push(device_id.clone());
                    log.device_id = Some(device_id);
                    identity = Some(issued);
                }
                Ok(Enrollment::Refused(status)) => {
                    log.refused.push(status.message().to_string());
                    log.tpm = Some(tpm);
                    return log;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
            continue;
        };
        let device_id = log.device_id.clone().unwrap_or_default();
        let generation = incarnation.load(Ordering::SeqCst);
        if attest_stream(
            &deployment,
            current,
            &mut tpm,
            &device_id,
            &behaviour,
            generation,
            &mut log.verdicts,
        )
        .await
        .is_err()
        {
            log.stream_errors += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    log.identity = identity;
    log.tpm = Some(tpm);
    log
}

/// SHA-256 of every file under `dir`, by relative path.
pub fn hash_tree(dir: &Path) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    use sha2::Digest as _;
    let mut out = std::collections::BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                pending.push(entry.path());
            } else {
                let bytes = std::fs::read(entry.path())?;
                out.insert(
                    entry
                        .path()
                        .strip_prefix(dir)?
                        .to_string_lossy()
                        .into_owned(),
                    hex::encode(sha2::Sha256::digest(&bytes)),
                );
            }
        }
    }
    Ok(out)
}
