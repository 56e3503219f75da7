//! A deployment for fault runs: the deployment CA, test TPM makers, and `trustchain-verifier` as
//! its own process (so it can die, and so its memory is its own), with an operator's view.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use trustchain_ca::Authority;
use trustchain_proto::v1::admin_client::AdminClient;
use trustchain_proto::v1::{ExportAuditRequest, ListDevicesRequest};
use trustchain_swtpm::TestMakers;

use crate::{BoundChannel, ClientPem};

/// One audit record, as the export names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub sequence: u64,
    pub kind: String,
    pub device_id: String,
    pub detail: String,
}

/// A CA, the test makers, and a verifier process.
pub struct Deployment {
    pub dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    pub port: u16,
    pub makers: TestMakers,
    root_pem: String,
    issuing_pem: String,
    operator: ClientPem,
    verifier: Option<Child>,
    /// Extra environment for the verifier process (e.g. `NOTIFY_SOCKET`).
    pub verifier_env: Vec<(String, String)>,
}

impl std::fmt::Debug for Deployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployment")
            .field("dir", &self.dir)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        self.kill_verifier();
    }
}

impl Deployment {
    /// A deployment whose verifier challenges every `interval_seconds` and times a device out
    /// after `missed` silent intervals. With `keep`, its files stay in that directory.
    pub fn create(interval_seconds: u64, missed: u32, keep: Option<&Path>) -> anyhow::Result<Self> {
        let (temp, dir) = match keep {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                (None, dir.to_path_buf())
            }
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("trustchain-faults-")
                    .tempdir()?;
                let dir = temp.path().to_path_buf();
                (Some(temp), dir)
            }
        };
        let ca_dir = dir.join("ca");
        let ca = Authority::create(&ca_dir, "TrustChain Fault Runs")?;
        let server = ca.issue_verifier(&["localhost".into()], &["127.0.0.1".parse()?])?;
        std::fs::write(
            dir.join("verifier.pem"),
            format!("{}{}", server.pem, ca.issuing_pem()),
        )?;
        trustchain_ca::files::write_secret(
            &dir.join("verifier.key.pem"),
            server.key_pem.unwrap_or_default().as_bytes(),
        )?;
        std::fs::write(dir.join("root.pem"), ca.root_pem())?;
        let operator =
            ca.issue_operator("fault-run-operator", &trustchain_ca::OperatorRole::ALL)?;
        let operator = ClientPem {
            certificate_pem: format!("{}{}", operator.pem, ca.issuing_pem()),
            key_pem: operator.key_pem.unwrap_or_default(),
        };
        let makers = TestMakers::generate()?;
        let (maker_root, maker_intermediate) = makers.trusted.write_pem(&dir)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        std::fs::write(
            dir.join("verifier.toml"),
            format!(
                "listen = \"127.0.0.1:{port}\"\nstate_dir = {:?}\nca_dir = {:?}\n\
                 tls_certificate = {:?}\ntls_key = {:?}\nmaker_anchors = [{maker_root:?}]\n\
                 maker_intermediates = [{maker_intermediate:?}]\n\n[attestation]\n\
                 default_interval_seconds = {interval_seconds}\n\
                 timeout_after_missed_intervals = {missed}\n",
                dir.join("verifier-state"),
                ca_dir,
                dir.join("verifier.pem"),
                dir.join("verifier.key.pem"),
            ),
        )?;
        Ok(Self {
            dir,
            _temp: temp,
            port,
            makers,
            root_pem: ca.root_pem().to_string(),
            issuing_pem: ca.issuing_pem().to_string(),
            operator,
            verifier: None,
            verifier_env: Vec::new(),
        })
    }

    pub fn address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn root_pem_path(&self) -> PathBuf {
        self.dir.join("root.pem")
    }

    /// The issuing CA's certificate (PEM), which clients send after their own.
    pub fn issuing_pem(&self) -> &str {
        &self.issuing_pem
    }

    /// Starts (or starts again) the verifier on the same state and port; returns once it serves.
    pub async fn start_verifier(&mut self) -> anyhow::Result<()> {
        self.kill_verifier();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("verifier.log"))?;
        let child = Command::new(super::sibling_binary("trustchain-verifier")?)
            .args(["serve", "--config"])
            .arg(self.dir.join("verifier.toml"))
            .env("RUST_LOG", "info")
            .envs(self.verifier_env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting trustchain-verifier")?;
        self.verifier = Some(child);
        for _ in 0..150 {
            if let Ok(mut admin) = self.admin().await
                && admin.list_devices(ListDevicesRequest {}).await.is_ok()
            {
                return Ok(());
            }
            if let Some(child) = self.verifier.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                anyhow::bail!(
                    "the verifier exited ({status}); see {}",
                    self.dir.join("verifier.log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!(
            "the verifier did not serve within 15 s; see {}",
            self.dir.join("verifier.log").display()
        )
    }

    /// Kills the verifier process (SIGKILL: it is gone, not shut down politely).
    pub fn kill_verifier(&mut self) {
        if let Some(mut child) = self.verifier.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn verifier_pid(&self) -> Option<u32> {
        self.verifier.as_ref().map(Child::id)
    }

    /// A TLS channel to the verifier (to `address` when given, e.g. a proxy), optionally with a
    /// client identity and from a chosen loopback source address.
    pub async fn channel_to(
        &self,
        address: SocketAddr,
        identity: Option<ClientPem>,
        source: Option<IpAddr>,
    ) -> anyhow::Result<Channel> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.root_pem))
            .domain_name("localhost");
        if let Some(identity) = identity {
            tls = tls.identity(crate::tonic_identity(&identity));
        }
        Ok(Endpoint::from_shared(format!("https://{address}"))?
            .tls_config(tls)?
            .local_address(source)
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await?)
    }

    pub async fn channel(
        &self,
        identity: Option<ClientPem>,
        source: Option<IpAddr>,
    ) -> anyhow::Result<Channel> {
        self.channel_to(self.address(), identity, source).await
    }

    /// An attestation channel as a device (to `address`, e.g. a proxy), bound as the agent
    /// binds it.
    pub async fn bound_channel_to(
        &self,
        address: SocketAddr,
        identity: &ClientPem,
        source: Option<IpAddr>,
    ) -> anyhow::Result<BoundChannel> {
        crate::bound_channel(
            &format!("https://{address}"),
            &self.root_pem,
            identity,
            source,
        )
        .await
    }

    pub async fn bound_channel(
        &self,
        identity: &ClientPem,
        source: Option<IpAddr>,
    ) -> anyhow::Result<BoundChannel> {
        self.bound_channel_to(self.address(), identity, source)
            .await
    }

    pub async fn admin(&self) -> anyhow::Result<AdminClient<Channel>> {
        Ok(AdminClient::new(
            self.channel(Some(self.operator.clone()), None).await?,
        ))
    }

    /// Every device's state (`trustchain.v1.TrustState` as i32), by device id.
    pub async fn device_states(&self) -> anyhow::Result<BTreeMap<String, i32>> {
        let devices = self
            .admin()
            .await?
            .list_devices(ListDevicesRequest {})
            .await?
            .into_inner()
            .devices;
        Ok(devices
            .into_iter()
            .map(|device| (device.device_id, device.state))
            .collect())
    }

    /// The whole audit log (records only; checkpoints left out).
    pub async fn audit(&self) -> anyhow::Result<Vec<AuditEntry>> {
        let mut stream = self
            .admin()
            .await?
            .export_audit(ExportAuditRequest { from_sequence: 0 })
            .await?
            .into_inner();
        let mut entries = Vec::new();
        // Bounded: the export ends; the cap only guards against a verifier gone wrong.
        while entries.len() < 1_000_000
            && let Some(line) = stream.message().await?
        {
            let Ok(trustchain_verifier::audit::AuditLine::Record {
                sequence, record, ..
            }) = serde_json::from_slice(&line.record)
            else {
                continue;
            };
            let value: serde_json::Value = serde_json::from_str(&record).unwrap_or_default();
            let text = |key: &str| {
                value
                    .get(key)
                    .map(|v| {
                        v.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| v.to_string())
                    })
                    .unwrap_or_default()
            };
            entries.push(AuditEntry {
                sequence,
                kind: text("kind"),
                device_id: text("device_id"),
                detail: text("detail"),
            });
        }
        Ok(entries)
    }
}
