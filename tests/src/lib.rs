//! Shared helpers for TrustChain's end-to-end tests: a real verifier (in-process, real TLS on a
//! loopback port, real sled on disk, real deployment CA) and agent configurations pointing at
//! real swtpm devices.

pub mod attest;
pub mod dashboard;
pub mod deployment;
pub mod faults;
pub mod hand_enroll;
pub mod postgres;
pub mod soft_tpm;
pub mod stream;
pub mod verifier_process;
pub mod webhook_receiver;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::oneshot;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
pub use trustchain_agent::bound_channel::{BoundChannel, ChannelBinding, ClientPem};
use trustchain_agent::config::{AgentConfig, EkChoice, FactsConfig};
use trustchain_agent::replicas::Replicas;
use trustchain_ca::Authority;
use trustchain_swtpm::{SwtpmDevice, TpmMaker};
use trustchain_verifier::config::VerifierConfig;
use trustchain_verifier::service::Service;

/// A verifier running in this process.
pub struct TestVerifier {
    pub dir: tempfile::TempDir,
    config: VerifierConfig,
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
        let operator = ca.issue_operator("test-operator", &trustchain_ca::OperatorRole::ALL)?;

        let mut config = VerifierConfig {
            listen: "127.0.0.1:0".parse()?,
            metrics_listen: None,
            dashboard_listen: None,
            state_dir: dir.path().join("state"),
            storage: Default::default(),
            postgres: None,
            cluster: Default::default(),
            ca_dir,
            tls_certificate: dir.path().join("verifier.pem"),
            tls_key: dir.path().join("verifier.key.pem"),
            signing_key: None,
            maker_anchors: vec![maker_root],
            maker_intermediates: vec![maker_intermediate],
            activation_timeout_seconds: 60,
            max_pending_enrollments: 1000,
            storage_cache_mib: 16,
            trust_list_authority: None,
            // The tests of other rules import unsigned policies; `signed_policies.rs` turns the
            // rule on (the verifier's own default) and attacks it.
            require_signed_policies: false,
            attestation: Default::default(),
            admin: Default::default(),
            webhooks: Vec::new(),
            limits: Default::default(),
            siem: Default::default(),
        };
        adjust(&mut config);
        let (service, address, shutdown, task) = Self::launch(&config).await?;
        Ok(Self {
            dir,
            config,
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

    #[allow(clippy::type_complexity)]
    async fn launch(
        config: &VerifierConfig,
    ) -> anyhow::Result<(
        Arc<Service>,
        SocketAddr,
        oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )> {
        let webhooks = trustchain_verifier::webhooks::Webhooks::new(&config.webhooks)?;
        let service = Service::start(config)?;
        tokio::spawn(webhooks.run(service.clone()));
        trustchain_verifier::siem::start(&service, &config.siem)?;
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
        Ok((service, address, shutdown, task))
    }

    /// Stops this verifier and starts a new one on the same state, CA and port, as after a crash
    /// or an upgrade. Agents must be stopped first: their streams hold the old process's state.
    pub async fn restart(self) -> anyhow::Result<Self> {
        self.restart_after(|_| Ok(())).await
    }

    /// Like [`TestVerifier::restart`], running `offline` on the stopped verifier's configuration
    /// (its state database released) before the new one starts: what an attacker or a fault does
    /// to the files of a stopped verifier.
    pub async fn restart_after(
        mut self,
        offline: impl FnOnce(&VerifierConfig) -> anyhow::Result<()>,
    ) -> anyhow::Result<Self> {
        self.stop().await;
        let TestVerifier {
            dir,
            mut config,
            address,
            service,
            root_pem_path,
            operator,
            ..
        } = self;
        // The state database is released when the last holder of the old service is gone.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while Arc::strong_count(&service) > 1 {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "the old verifier is still in use"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        drop(service);
        offline(&config)?;
        config.listen = address;
        let (service, address, shutdown, task) = Self::launch(&config).await?;
        Ok(Self {
            dir,
            config,
            address,
            service,
            root_pem_path,
            operator,
            shutdown: Some(shutdown),
            task: Some(task),
        })
    }

    /// Serves the metrics endpoint on a free loopback port; returns its address.
    pub async fn start_metrics(&self) -> anyhow::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        tokio::spawn(trustchain_verifier::metrics::serve(
            listener,
            self.service.clone(),
        ));
        Ok(address)
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
            verifiers: Replicas::at_address(self.address, "localhost"),
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

    /// An attestation channel as a device: one TLS 1.3 connection, with the exporter a
    /// device binds its quotes to (the agent's own connector).
    pub async fn bound_channel(&self, identity: &ClientPem) -> anyhow::Result<BoundChannel> {
        let root = std::fs::read_to_string(&self.root_pem_path)?;
        bound_channel(&self.url(), &root, identity, None).await
    }

    /// The operator's certificate chain and key, written as files (for the `trustchain` CLI).
    pub fn operator_files(&self) -> (PathBuf, PathBuf) {
        let cert = self.dir.path().join("operator.pem");
        let key = self.dir.path().join("operator.key.pem");
        if !cert.exists() {
            let _ = std::fs::write(&cert, &self.operator.0);
            let _ = trustchain_ca::files::write_secret(&key, self.operator.1.as_bytes());
        }
        (cert, key)
    }

    /// A channel authenticated as the test operator.
    pub async fn operator_channel(&self) -> anyhow::Result<Channel> {
        let (cert, key) = (self.operator.0.clone(), self.operator.1.clone());
        self.channel(Some((&cert, &key))).await
    }

    /// An Admin client for a new operator `name` whose certificate (from this verifier's CA)
    /// holds `roles`; its serial is the second value.
    pub async fn admin_as(
        &self,
        name: &str,
        roles: &[trustchain_ca::OperatorRole],
    ) -> anyhow::Result<(
        trustchain_proto::v1::admin_client::AdminClient<Channel>,
        String,
    )> {
        let (chain, key, serial) = self.issue_operator(name, roles)?;
        let channel = self.channel(Some((&chain, &key))).await?;
        Ok((
            trustchain_proto::v1::admin_client::AdminClient::new(channel),
            serial,
        ))
    }

    /// A new operator certificate from this deployment's CA: (chain PEM, key PEM, serial hex).
    pub fn issue_operator(
        &self,
        name: &str,
        roles: &[trustchain_ca::OperatorRole],
    ) -> anyhow::Result<(String, String, String)> {
        let ca = Authority::load(&self.config.ca_dir)?;
        let issued = ca.issue_operator(name, roles)?;
        let chain = format!("{}{}", issued.pem, ca.issuing_pem());
        Ok((chain, issued.key_pem.unwrap_or_default(), issued.serial_hex))
    }

    /// A certificate our CA signed as an operator's, with the `role` attribute set to `role`
    /// (`None`: none, as before roles existed), made by hand with the CA's issuing key.
    pub fn hand_made_operator(
        &self,
        name: &str,
        role: Option<&str>,
    ) -> anyhow::Result<(String, String)> {
        use rcgen::{
            CertificateParams, DnType, DnValue, ExtendedKeyUsagePurpose, Issuer, KeyPair,
            PKCS_ECDSA_P256_SHA256,
        };
        let ca_dir = self.dir.path().join("ca");
        let issuing_pem = std::fs::read_to_string(ca_dir.join("issuing.pem"))?;
        let issuing_key =
            KeyPair::from_pem(&std::fs::read_to_string(ca_dir.join("issuing.key.pem"))?)?;
        let issuer = Issuer::from_ca_cert_pem(&issuing_pem, issuing_key)?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "TrustChain");
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, "trustchain-operator");
        params.distinguished_name.push(DnType::CommonName, name);
        if let Some(role) = role {
            params.distinguished_name.push(
                DnType::CustomDnType(trustchain_ca::role::ROLE_ATTRIBUTE_OID.to_vec()),
                DnValue::Utf8String(role.into()),
            );
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = params.signed_by(&key, &issuer)?;
        Ok((format!("{}{issuing_pem}", cert.pem()), key.serialize_pem()))
    }

    /// Serves the read-only dashboard on a free loopback port (as `dashboard_listen` does).
    pub async fn start_dashboard(&self) -> anyhow::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        tokio::spawn(trustchain_verifier::dashboard::serve(
            listener,
            self.service.clone(),
        ));
        Ok(address)
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

/// A device with its swtpm, the agent's TPM access and state directory.
pub struct TestDevice {
    pub swtpm: SwtpmDevice,
    pub tpm: Arc<std::sync::Mutex<GuardedTpm>>,
    pub state: tempfile::TempDir,
    pub config: AgentConfig,
    pub enrollment: Option<trustchain_agent::identity::Enrollment>,
    agent: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for TestDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDevice")
            .field("label", &self.swtpm.label())
            .finish_non_exhaustive()
    }
}

impl TestDevice {
    /// Starts a device, boots it with `profile`, and enrolls it with `verifier`.
    pub async fn enrolled(
        verifier: &TestVerifier,
        maker: &TpmMaker,
        label: &str,
        profile: &trustchain_swtpm::BootProfile,
    ) -> anyhow::Result<Self> {
        let mut swtpm = SwtpmDevice::start(maker, label)?;
        swtpm.boot(profile)?;
        let state = tempfile::tempdir()?;
        let config = verifier.agent_config(&swtpm, state.path(), EkChoice::Rsa2048);
        let tpm = trustchain_agent::tpm::esapi::EsapiTpm::new(
            &swtpm.tcti(),
            state.path(),
            EkChoice::Rsa2048,
            trustchain_agent::tpm::esapi::AkAlgorithm::Rsa2048,
        )?;
        let tpm = Arc::new(std::sync::Mutex::new(GuardedTpm {
            inner: tpm,
            access: swtpm.access(),
        }));
        let dir = trustchain_agent::identity::StateDir::open(state.path())?;
        let enrollment = trustchain_agent::enroll::enroll(&config, &tpm, &dir).await?;
        Ok(Self {
            swtpm,
            tpm,
            state,
            config,
            enrollment: Some(enrollment),
            agent: None,
        })
    }

    /// Starts a device booted with the default profile, enrolls it, measures the `ima` files
    /// (path, content), runs the real agent and waits until `verifier` trusts it.
    pub async fn trusted(
        verifier: &TestVerifier,
        maker: &TpmMaker,
        label: &str,
        ima: &[(&str, &[u8])],
    ) -> anyhow::Result<Self> {
        let profile = trustchain_swtpm::BootProfile::default_linux();
        let mut device = Self::enrolled(verifier, maker, label, &profile).await?;
        for (path, content) in ima {
            device.swtpm.ima_measure(path, content)?;
        }
        device.start_agent();
        verifier
            .settle(
                &device.device_id(),
                trustchain_verifier::device::DeviceState::Trusted,
            )
            .await?;
        Ok(device)
    }

    pub fn device_id(&self) -> String {
        self.enrollment
            .as_ref()
            .map(|e| e.device_id.clone())
            .unwrap_or_default()
    }

    /// Runs the real agent's attestation loop in this process.
    pub fn start_agent(&mut self) {
        self.stop_agent();
        let (config, tpm) = (self.config.clone(), self.tpm.clone());
        let Some(enrollment) = self.enrollment.clone() else {
            return;
        };
        self.agent = Some(tokio::spawn(async move {
            let _ = trustchain_agent::attest::run(&config, tpm, enrollment).await;
        }));
    }

    /// What this device's TPM honestly says for `challenge`: a quote of `nonce` over the
    /// challenge's PCRs in `bank` (a TPM_ALG_ID), the boot log when asked, the IMA entries from
    /// the challenge's offset.
    pub fn evidence(
        &self,
        challenge: &trustchain_proto::v1::Challenge,
        nonce: &[u8],
        bank: u16,
    ) -> anyhow::Result<trustchain_proto::v1::Evidence> {
        use trustchain_agent::tpm::Tpm as _;
        let selection: Vec<(u16, Vec<u32>)> = challenge
            .pcr_selection
            .iter()
            .map(|b| (bank, b.pcrs.clone()))
            .collect();
        let quote = self
            .tpm
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .quote(nonce, &selection)?;
        let ima: String = std::fs::read_to_string(self.swtpm.ima_log_path())?
            .lines()
            .skip(usize::try_from(challenge.ima_offset)?)
            .map(|l| format!("{l}\n"))
            .collect();
        let boot_log = if challenge.want_boot_log {
            Some(std::fs::read(self.swtpm.event_log_path())?)
        } else {
            None
        };
        Ok(trustchain_agent::attest::evidence(
            challenge,
            quote,
            boot_log,
            ima.into_bytes(),
        ))
    }

    pub fn stop_agent(&mut self) {
        if let Some(agent) = self.agent.take() {
            agent.abort();
        }
    }
}

impl Drop for TestDevice {
    fn drop(&mut self) {
        self.stop_agent();
    }
}

impl TestVerifier {
    /// Waits until `device_id` is in `state`; returns how long it took.
    pub async fn wait_for_state(
        &self,
        device_id: &str,
        state: trustchain_verifier::device::DeviceState,
        timeout: std::time::Duration,
    ) -> anyhow::Result<std::time::Duration> {
        let start = std::time::Instant::now();
        loop {
            let current = self.service.storage().device(device_id)?.map(|d| d.state);
            if current == Some(state) {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                anyhow::bail!(
                    "{device_id} did not reach {state:?} within {timeout:?} (now {current:?})"
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// The rules the device's last failed verdict names.
    pub fn failed_rules(&self, device_id: &str) -> Vec<String> {
        self.service
            .last_failed_verdict(device_id)
            .map(|v| {
                v.failures()
                    .iter()
                    .map(|f| f.rule.name().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits up to [`deployment::WAIT`] until `device_id` is in `state`; the error names the
    /// device's last failure.
    pub async fn settle(
        &self,
        device_id: &str,
        state: trustchain_verifier::device::DeviceState,
    ) -> anyhow::Result<()> {
        match self
            .wait_for_state(device_id, state, deployment::WAIT)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => anyhow::bail!("{e}; last failure: {}", self.failure_summary(device_id)),
        }
    }

    /// The failures of the device's last failed verdict.
    pub fn last_failures(&self, device_id: &str) -> Vec<trustchain_verifier::verdict::Failure> {
        self.service
            .last_failed_verdict(device_id)
            .map(|v| v.failures().to_vec())
            .unwrap_or_default()
    }

    /// The details of the audit events of `kind` about `device_id`.
    pub fn events_of(
        &self,
        device_id: &str,
        kind: trustchain_verifier::device::EventKind,
    ) -> anyhow::Result<Vec<String>> {
        Ok(self
            .service
            .storage()
            .events(0, 10_000)?
            .into_iter()
            .filter(|(_, e)| e.kind == kind && e.device_id == device_id)
            .map(|(_, e)| e.detail)
            .collect())
    }

    /// How many documents of `kind` (policies, manifests, ...) the verifier stores.
    pub fn stored_documents(
        &self,
        kind: trustchain_verifier::storage::DocumentKind,
    ) -> anyhow::Result<usize> {
        Ok(self.service.storage().documents(kind)?.len())
    }

    /// An Admin client authenticated as the test operator.
    pub async fn admin(
        &self,
    ) -> anyhow::Result<trustchain_proto::v1::admin_client::AdminClient<Channel>> {
        Ok(trustchain_proto::v1::admin_client::AdminClient::new(
            self.operator_channel().await?,
        ))
    }

    /// The last failed verdict as text.
    pub fn failure_summary(&self, device_id: &str) -> String {
        self.service
            .last_failed_verdict(device_id)
            .map(|v| v.summary())
            .unwrap_or_default()
    }
}

/// The agent's TPM, taking the harness's per-device lock around each operation so the agent and
/// the test (which extends PCRs behind the agent's back) never talk to swtpm at the same time.
#[derive(Debug)]
pub struct GuardedTpm {
    pub inner: trustchain_agent::tpm::esapi::EsapiTpm,
    access: Arc<std::sync::Mutex<()>>,
}

macro_rules! guarded {
    ($self:ident, $call:expr) => {{
        let access = $self.access.clone();
        let _guard = access.lock().unwrap_or_else(|p| p.into_inner());
        $call
    }};
}

impl trustchain_agent::tpm::Tpm for GuardedTpm {
    fn is_software(&mut self) -> Result<bool, trustchain_agent::tpm::TpmError> {
        guarded!(self, self.inner.is_software())
    }
    fn flush_leftovers(&mut self) -> Result<usize, trustchain_agent::tpm::TpmError> {
        guarded!(self, self.inner.flush_leftovers())
    }
    fn ek_certificate(&mut self, ek: EkChoice) -> Result<Vec<u8>, trustchain_agent::tpm::TpmError> {
        guarded!(self, self.inner.ek_certificate(ek))
    }
    fn ek_public(&mut self, ek: EkChoice) -> Result<Vec<u8>, trustchain_agent::tpm::TpmError> {
        guarded!(self, self.inner.ek_public(ek))
    }
    fn ak_public(&mut self) -> Result<Vec<u8>, trustchain_agent::tpm::TpmError> {
        guarded!(self, self.inner.ak_public())
    }
    fn rotate_ak(&mut self) -> Result<Vec<u8>, trustchain_agent::tpm::TpmError> {
        guarded!(self, self.inner.rotate_ak())
    }
    fn activate_credential(
        &mut self,
        blob: &[u8],
        secret: &[u8],
    ) -> Result<Vec<u8>, trustchain_agent::tpm::TpmError> {
        guarded!(self, self.inner.activate_credential(blob, secret))
    }
    fn quote(
        &mut self,
        nonce: &[u8],
        selection: &[trustchain_agent::tpm::BankSelection],
    ) -> Result<trustchain_agent::tpm::Quote, trustchain_agent::tpm::TpmError> {
        guarded!(self, self.inner.quote(nonce, selection))
    }
}

/// A binary of another workspace member (e.g. `trustchain`), built next to this test binary by
/// `cargo test --workspace`. Fails loudly when it is missing rather than skipping.
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/debug/deps/<test> -> target/debug/<name>
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join(name))
        .unwrap_or_default();
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace --all-targets` (scripts/test.sh)",
        path.display()
    );
    path
}

/// The issuer of `maker`'s EK certificates, as the verifier names it: what a trust list's
/// `devices[].ek_issuer` assigns a class by (the class is never the agent's claim).
pub fn maker_issuer(maker: &TpmMaker) -> String {
    use x509_parser::prelude::FromDer;
    match x509_parser::certificate::X509Certificate::from_der(maker.intermediate_der()) {
        Ok((_, certificate)) => certificate.subject().to_string(),
        Err(_) => String::new(),
    }
}

/// A trust-list entry that assigns every TPM of `maker` the class `class`.
pub fn maker_class(
    maker: &TpmMaker,
    class: &str,
) -> trustchain_verifier::reference::documents::DeviceMatch {
    trustchain_verifier::reference::documents::DeviceMatch {
        ek_issuer: Some(maker_issuer(maker)),
        device_class: Some(class.into()),
        ..Default::default()
    }
}

/// The claims of a signed attestation result (a JWT), its payload decoded.
pub fn jwt_claims(jwt: &str) -> anyhow::Result<serde_json::Value> {
    use base64::Engine as _;
    let payload = jwt
        .split('.')
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("not a JWT: {jwt}"))?;
    Ok(serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload)?,
    )?)
}

/// `trustchain audit verify` on `export` (written into `dir`): whether it passed, and what it
/// printed.
pub fn audit_verify(export: &str, public_key: &str, dir: &Path) -> anyhow::Result<(bool, String)> {
    let path = dir.join("export.jsonl");
    std::fs::write(&path, export)?;
    let output = std::process::Command::new(workspace_binary("trustchain"))
        .args(["audit", "verify", "--public-key", public_key])
        .arg(&path)
        .output()?;
    Ok((
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    ))
}

/// An audit log worth exporting: a verifier challenging every 2 s; device `label` enrolled and
/// trusted; a periodic checkpoint (the verifier signs one every minute; here, now); then the
/// device's secure boot state (PCR 7) tampered with and the appraisal failure recorded. The
/// agent is stopped, so nothing more is written.
pub async fn audit_history(
    label: &str,
) -> anyhow::Result<(trustchain_swtpm::TestMakers, TestVerifier, TestDevice)> {
    let makers = trustchain_swtpm::TestMakers::generate()?;
    let verifier = TestVerifier::start_with(&makers.trusted, |c| {
        c.attestation.default_interval_seconds = 2;
    })
    .await?;
    let mut device = TestDevice::trusted(&verifier, &makers.trusted, label, &[]).await?;
    verifier.service.checkpoint()?;
    device
        .swtpm
        .extend_unlisted(7, b"tampered secure boot state")?;
    verifier
        .settle(
            &device.device_id(),
            trustchain_verifier::device::DeviceState::Untrusted,
        )
        .await?;
    device.stop_agent();
    Ok((makers, verifier, device))
}

/// A client identity as tonic takes it.
pub fn tonic_identity(pem: &ClientPem) -> Identity {
    Identity::from_pem(&pem.certificate_pem, &pem.key_pem)
}

/// Connects as a device the way the agent does (`trustchain_agent::bound_channel`), to the
/// verifier at `url` (`https://`, certificate name "localhost"), from `source` when given.
pub async fn bound_channel(
    url: &str,
    root_pem: &str,
    identity: &ClientPem,
    source: Option<std::net::IpAddr>,
) -> anyhow::Result<BoundChannel> {
    let target = trustchain_agent::bound_channel::Target {
        url,
        server_name: "localhost",
        ca_pem: root_pem,
        connect_timeout: std::time::Duration::from_secs(5),
        local_address: source,
    };
    Ok(trustchain_agent::bound_channel::connect(&target, Some(identity)).await?)
}
