//! Shared helpers for TrustChain's end-to-end tests: a real verifier (in-process, real TLS on a
//! loopback port, real sled on disk, real deployment CA) and agent configurations pointing at
//! real swtpm devices.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::oneshot;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use trustchain_agent::config::{AgentConfig, EkChoice, FactsConfig};
use trustchain_ca::Authority;
use trustchain_swtpm::{SwtpmDevice, TpmMaker};
use trustchain_verifier::config::VerifierConfig;
use trustchain_verifier::service::Service;

/// A verifier running in this process.
pub struct TestVerifier {
    pub dir: tempfile::TempDir,
    pub address: SocketAddr,
    pub service: Arc<Service>,
    pub root_pem_path: PathBuf,
    operator: (String, String),
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for TestVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestVerifier")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

fn write(path: &Path, contents: &str) -> anyhow::Result<()> {
    std::fs::write(path, contents)?;
    Ok(())
}

impl TestVerifier {
    /// Starts a verifier that trusts `maker`'s EK certificates.
    pub async fn start(maker: &TpmMaker) -> anyhow::Result<Self> {
        Self::start_with(maker, |_| {}).await
    }

    /// Starts a verifier, letting the test adjust its configuration first.
    pub async fn start_with(
        maker: &TpmMaker,
        adjust: impl FnOnce(&mut VerifierConfig),
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let ca_dir = dir.path().join("ca");
        let ca = Authority::create(&ca_dir, "TrustChain Test Deployment")?;
        let server = ca.issue_verifier(&["localhost".into()], &["127.0.0.1".parse()?])?;
        let chain = format!("{}{}", server.pem, ca.issuing_pem());
        write(&dir.path().join("verifier.pem"), &chain)?;
        trustchain_ca::files::write_secret(
            &dir.path().join("verifier.key.pem"),
            server.key_pem.unwrap_or_default().as_bytes(),
        )?;
        let (maker_root, maker_intermediate) = maker.write_pem(dir.path())?;
        let root_pem_path = dir.path().join("root.pem");
        write(&root_pem_path, ca.root_pem())?;
        let operator = ca.issue_operator("test-operator")?;

        let mut config = VerifierConfig {
            listen: "127.0.0.1:0".parse()?,
            state_dir: dir.path().join("state"),
            ca_dir,
            tls_certificate: dir.path().join("verifier.pem"),
            tls_key: dir.path().join("verifier.key.pem"),
            maker_anchors: vec![maker_root],
            maker_intermediates: vec![maker_intermediate],
            activation_timeout_seconds: 60,
            max_pending_enrollments: 1000,
            attestation: Default::default(),
        };
        adjust(&mut config);
        let service = Service::start(&config)?;
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let address = listener.local_addr()?;
        let (shutdown, signal) = oneshot::channel::<()>();
        let served = service.clone();
        let task = tokio::spawn(async move {
            let _ = trustchain_verifier::server::serve(listener, served, async {
                let _ = signal.await;
            })
            .await;
        });
        Ok(Self {
            dir,
            address,
            service,
            root_pem_path,
            operator: (
                format!("{}{}", operator.pem, ca.issuing_pem()),
                operator.key_pem.unwrap_or_default(),
            ),
            shutdown: Some(shutdown),
            task: Some(task),
        })
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.address)
    }

    /// An agent configuration for `device`, with its state in `state_dir`.
    pub fn agent_config(
        &self,
        device: &SwtpmDevice,
        state_dir: &Path,
        ek: EkChoice,
    ) -> AgentConfig {
        AgentConfig {
            verifier_url: self.url(),
            verifier_name: Some("localhost".into()),
            ca_certificate: self.root_pem_path.clone(),
            state_dir: state_dir.to_path_buf(),
            tcti: device.tcti(),
            ek,
            event_log: device.event_log_path(),
            ima_log: device.ima_log_path(),
            facts: FactsConfig {
                hostname: Some(device.label().to_string()),
                model: "swtpm test device".into(),
                firmware_version: "1.0".into(),
                device_class: "gateway".into(),
            },
        }
    }

    /// A TLS channel with an optional client identity (PEM certificate, PEM key).
    pub async fn channel(&self, identity: Option<(&str, &str)>) -> anyhow::Result<Channel> {
        let root = std::fs::read_to_string(&self.root_pem_path)?;
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(root))
            .domain_name("localhost");
        if let Some((cert, key)) = identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        Ok(Endpoint::from_shared(self.url())?
            .tls_config(tls)?
            .connect()
            .await?)
    }

    /// A channel authenticated as the test operator.
    pub async fn operator_channel(&self) -> anyhow::Result<Channel> {
        let (cert, key) = (self.operator.0.clone(), self.operator.1.clone());
        self.channel(Some((&cert, &key))).await
    }

    /// Stops the server task.
    pub async fn stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for TestVerifier {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
