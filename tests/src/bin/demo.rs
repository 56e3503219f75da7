//! The TrustChain demo: a real verifier, the deployment CA and five agents, each on its own real
//! swtpm device, all separate processes talking gRPC over mutual TLS on loopback. The trust
//! documents are made with the real commands: a supplier's reference manifest and a policy learned
//! from a known-good device (`trustchain policy learn`), signed (`trustchain manifest sign`,
//! `trustchain policy sign`), a trust list signed by the deployment's authority (`trustchain trust-list sign`), all imported
//! over the operator's mTLS (`trustchain import`). It enrolls the devices, shows their states
//! live, then attacks two devices: a boot-level implant on one (a digest extended into PCR 4
//! behind the event log's back) and an unknown program run on another (measured by IMA, not on
//! the allowlist), and shows the verifier catching both.
//!
//! Usage: `trustchain-demo [--keep-running] [--state DIR]` (scripts/demo.sh builds and runs it).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use trustchain_proto::v1::admin_client::AdminClient;
use trustchain_proto::v1::{
    DeviceRequest, DeviceSummary, ExportAuditRequest, ListDevicesRequest, TrustState,
};
use trustchain_swtpm::{BootProfile, SwtpmDevice, TestMakers};

const DEVICES: [&str; 5] = [
    "gateway-tokyo-01",
    "gateway-osaka-02",
    "plc-line-3",
    "server-mes-01",
    "gateway-nagoya-05",
];
/// The device that gets a boot-level implant.
const VICTIM: usize = 2;
/// The device that runs a program no manifest lists.
const SECOND_VICTIM: usize = 4;
const SUPPLIER: &str = "Demo OS Vendor";
const INTERVAL_SECONDS: u64 = 2;

/// The trust documents, made with the real commands.
#[path = "demo/documents.rs"]
mod documents;
use documents::trust_documents;

/// Child processes, killed when the demo ends.
struct Processes(Vec<(String, Child)>);

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let here = std::env::current_exe()?;
    let path = here.parent().context("executable directory")?.join(name);
    if !path.exists() {
        bail!(
            "{} not found: build it first (scripts/demo.sh does)",
            path.display()
        );
    }
    Ok(path)
}

fn run(binary_path: &Path, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(binary_path).args(args).output()?;
    if !output.status.success() {
        bail!(
            "{} {:?} failed: {}{}",
            binary_path.display(),
            args,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// The class the operator gives a demo device (and which its agent also claims).
fn device_class(label: &str) -> &'static str {
    if label.starts_with("plc") {
        "plc"
    } else if label.starts_with("server") {
        "server"
    } else {
        "gateway"
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn state_name(state: i32) -> &'static str {
    match TrustState::try_from(state).unwrap_or(TrustState::Unspecified) {
        TrustState::Enrolled => "enrolled",
        TrustState::Trusted => "TRUSTED",
        TrustState::Untrusted => "UNTRUSTED",
        TrustState::TimedOut => "timed out",
        TrustState::Quarantined => "quarantined",
        TrustState::Decommissioned => "decommissioned",
        TrustState::Unspecified => "?",
    }
}

fn table(devices: &[DeviceSummary], started: Instant, headline: &str) -> String {
    let mut out = format!(
        "TrustChain demo — {headline} — t+{:.1}s\n",
        started.elapsed().as_secs_f64()
    );
    out.push_str(&format!(
        "{:<20} {:<38} {:<8} {:<10} {:<9} {}\n",
        "HOST", "DEVICE", "TIER", "STATE", "LAST", "REASON"
    ));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    for d in devices {
        let mut reason = d.reason.clone();
        if reason.len() > 70 {
            reason.truncate(70);
            reason.push_str("...");
        }
        out.push_str(&format!(
            "{:<20} {:<38} {:<8} {:<10} {:<9} {}\n",
            d.hostname,
            d.device_id,
            d.tier,
            state_name(d.state),
            format!("{}s ago", (now - d.last_appraisal_unix).max(0)),
            reason
        ));
    }
    out
}

async fn operator(dir: &Path, port: u16) -> anyhow::Result<AdminClient<Channel>> {
    let root = std::fs::read_to_string(dir.join("ca/root.pem"))?;
    let cert = std::fs::read_to_string(dir.join("operator.pem"))?
        + &std::fs::read_to_string(dir.join("ca/issuing.pem"))?;
    let key = std::fs::read_to_string(dir.join("operator.key.pem"))?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(root))
        .identity(Identity::from_pem(cert, key))
        .domain_name("localhost");
    let channel = Endpoint::from_shared(format!("https://127.0.0.1:{port}"))?
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(AdminClient::new(channel))
}

async fn list(admin: &mut AdminClient<Channel>) -> anyhow::Result<Vec<DeviceSummary>> {
    let mut devices = admin
        .list_devices(ListDevicesRequest {})
        .await?
        .into_inner()
        .devices;
    devices.sort_by(|a, b| a.hostname.cmp(&b.hostname));
    Ok(devices)
}

async fn demo(keep_running: bool, state_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let started = Instant::now();
    let (_temp, dir) = match state_dir {
        Some(dir) => {
            if dir.exists() {
                std::fs::remove_dir_all(&dir)?;
            }
            std::fs::create_dir_all(&dir)?;
            (None, dir)
        }
        None => {
            let temp = tempfile::Builder::new()
                .prefix("trustchain-demo-")
                .tempdir()?;
            let path = temp.path().to_path_buf();
            (Some(temp), path)
        }
    };
    let interactive = std::io::stdout().is_terminal();
    println!("state and logs in {}", dir.display());

    // The deployment PKI, with the real CA command.
    let ca = binary("trustchain-ca")?;
    let ca_dir = dir.join("ca");
    run(
        &ca,
        &[
            "init",
            "--dir",
            &ca_dir.to_string_lossy(),
            "--organization",
            "TrustChain Demo",
        ],
    )?;
    run(
        &ca,
        &[
            "issue-verifier",
            "--dir",
            &ca_dir.to_string_lossy(),
            "--out",
            &dir.join("verifier").to_string_lossy(),
        ],
    )?;
    run(
        &ca,
        &[
            "issue-operator",
            "--dir",
            &ca_dir.to_string_lossy(),
            "--out",
            &dir.join("operator").to_string_lossy(),
            "--name",
            "soc-analyst",
            // One person in the demo acts on devices and changes what is trusted.
            "--role",
            "operator",
            "--role",
            "policy-admin",
        ],
    )?;
    let chain = std::fs::read_to_string(dir.join("verifier.pem"))?
        + &std::fs::read_to_string(ca_dir.join("issuing.pem"))?;
    std::fs::write(dir.join("verifier-chain.pem"), chain)?;
    println!(
        "[{:>5.1}s] deployment CA created; verifier and operator certificates issued",
        started.elapsed().as_secs_f64()
    );

    // Five devices on real swtpm, EK certificates from a test TPM maker.
    let makers = TestMakers::generate()?;
    let (maker_root, maker_intermediate) = makers.trusted.write_pem(&dir)?;
    let mut devices = Vec::new();
    for label in DEVICES {
        let mut device = SwtpmDevice::start(&makers.trusted, label)?;
        device.boot(&BootProfile::default_linux())?;
        device.ima_measure("/usr/bin/systemd", b"systemd")?;
        device.ima_measure("/usr/sbin/sshd", b"sshd")?;
        devices.push(device);
    }
    println!(
        "[{:>5.1}s] {} swtpm devices booted (UEFI event log + IMA written, PCRs extended)",
        started.elapsed().as_secs_f64(),
        devices.len()
    );
    let first = devices.first().context("a device")?;
    let mut classes = Vec::new();
    for (device, label) in devices.iter().zip(DEVICES) {
        use sha2::Digest as _;
        use tss_esapi::traits::Marshall as _;
        let ek = device
            .ek_public(trustchain_swtpm::EkKind::Rsa2048)?
            .marshall()?;
        classes.push((hex::encode(sha2::Sha256::digest(ek)), device_class(label)));
    }
    let (trust_list, manifest, policy) = trust_documents(
        &dir,
        first,
        &[
            ("Test TPM maker root", maker_root.as_path()),
            ("Test TPM maker intermediate", maker_intermediate.as_path()),
        ],
        &classes,
    )?;
    println!(
        "[{:>5.1}s] trust documents: manifest gateway-os 1.0 and policy \"fleet\" learned from {}, checked offline, signed by the supplier and the policy office; trust list v1 signed by the authority",
        started.elapsed().as_secs_f64(),
        DEVICES[0]
    );

    // The verifier, as its own process.
    let port = free_port()?;
    let dashboard_port = free_port()?;
    let config = format!(
        "listen = \"127.0.0.1:{port}\"\ndashboard_listen = \"127.0.0.1:{dashboard_port}\"\nstate_dir = {:?}\nca_dir = {:?}\ntls_certificate = {:?}\ntls_key = {:?}\nmaker_anchors = [{:?}]\nmaker_intermediates = [{:?}]\ntrust_list_authority = {:?}\n\n[attestation]\ndefault_interval_seconds = {INTERVAL_SECONDS}\ntimeout_after_missed_intervals = 3\n",
        dir.join("verifier-state"),
        ca_dir,
        dir.join("verifier-chain.pem"),
        dir.join("verifier.key.pem"),
        maker_root,
        maker_intermediate,
        dir.join("keys/trust-list-authority.pub"),
    );
    std::fs::write(dir.join("verifier.toml"), config)?;
    let mut processes = Processes(Vec::new());
    let log = std::fs::File::create(dir.join("verifier.log"))?;
    processes.0.push((
        "verifier".into(),
        Command::new(binary("trustchain-verifier")?)
            .args(["serve", "--config"])
            .arg(dir.join("verifier.toml"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?,
    ));
    let mut admin = None;
    for _ in 0..100 {
        if let Ok(client) = operator(&dir, port).await {
            admin = Some(client);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut admin = admin.context("the verifier did not come up; see verifier.log")?;
    println!(
        "[{:>5.1}s] verifier listening on 127.0.0.1:{port} (mTLS)",
        started.elapsed().as_secs_f64()
    );
    let cli = binary("trustchain")?;
    let operator_cert = dir.join("operator-chain.pem");
    std::fs::write(
        &operator_cert,
        std::fs::read_to_string(dir.join("operator.pem"))?
            + &std::fs::read_to_string(ca_dir.join("issuing.pem"))?,
    )?;
    for (what, file) in [
        ("trust-list", &trust_list),
        ("manifest", &manifest),
        ("policy", &policy),
    ] {
        let said = run(
            &cli,
            &[
                "import",
                "--verifier",
                &format!("https://127.0.0.1:{port}"),
                "--ca",
                &path(&ca_dir.join("root.pem")),
                "--cert",
                &path(&operator_cert),
                "--key",
                &path(&dir.join("operator.key.pem")),
                what,
                &path(file),
            ],
        )?;
        println!("          {}", said.trim());
    }

    // Five agents, each its own process with its own TPM.
    let agent = binary("trustchain-agent")?;
    for (device, label) in devices.iter().zip(DEVICES) {
        let agent_dir = dir.join(format!("agent-{label}"));
        std::fs::create_dir_all(&agent_dir)?;
        let config = format!(
            "verifier_url = \"https://127.0.0.1:{port}\"\nverifier_name = \"localhost\"\nca_certificate = {:?}\nstate_dir = {:?}\ntcti = {:?}\nevent_log = {:?}\nima_log = {:?}\n\n[facts]\nhostname = {label:?}\nmodel = \"swtpm demo device\"\ndevice_class = {:?}\n",
            ca_dir.join("root.pem"),
            agent_dir.join("state"),
            device.tcti(),
            device.event_log_path(),
            device.ima_log_path(),
            device_class(label),
        );
        std::fs::write(agent_dir.join("agent.toml"), config)?;
        let log = std::fs::File::create(agent_dir.join("agent.log"))?;
        processes.0.push((
            label.into(),
            Command::new(&agent)
                .args(["run", "--config"])
                .arg(agent_dir.join("agent.toml"))
                .env("TSS2_LOG", "all+none")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()?,
        ));
    }
    println!(
        "[{:>5.1}s] {} agents started; enrolling (EK chain + credential activation)...",
        started.elapsed().as_secs_f64(),
        DEVICES.len()
    );

    let show = |devices: &[DeviceSummary], headline: &str, last: &mut String| {
        let text = table(devices, started, headline);
        let body: String = text.lines().skip(1).collect::<Vec<_>>().join("\n");
        if interactive {
            print!("\x1b[2J\x1b[H{text}");
            let _ = std::io::stdout().flush();
        } else if body != *last {
            print!("{text}");
        }
        *last = body;
    };
    let mut last = String::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let listed = list(&mut admin).await?;
        show(&listed, "enrolling and attesting", &mut last);
        if listed.len() == DEVICES.len()
            && listed.iter().all(|d| d.state == TrustState::Trusted as i32)
        {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "not every device became trusted in time; see {}/*/agent.log and verifier.log",
                dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "[{:>5.1}s] all {} devices TRUSTED",
        started.elapsed().as_secs_f64(),
        DEVICES.len()
    );
    tokio::time::sleep(Duration::from_secs(INTERVAL_SECONDS * 2)).await;

    // The attacks: a boot-level implant extends PCR 4 with the event log left as it was; and on
    // another device an unknown program runs (IMA measures it; no manifest lists it).
    let victim = devices.get(VICTIM).context("the victim device")?;
    let tampered_at = Instant::now();
    let mut planted = false;
    for _ in 0..5 {
        if victim
            .extend_unlisted(4, b"implant: pre-OS backdoor v2")
            .is_ok()
        {
            planted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if !planted {
        bail!("could not tamper with {}", DEVICES[VICTIM]);
    }
    println!(
        "[{:>5.1}s] TAMPER 1: implant measured into PCR 4 of {} behind the event log's back",
        started.elapsed().as_secs_f64(),
        DEVICES[VICTIM]
    );
    let second = devices
        .get_mut(SECOND_VICTIM)
        .context("the second victim device")?;
    second.ima_measure("/tmp/.cache/xmrig", b"cryptominer dropped by an attacker")?;
    println!(
        "[{:>5.1}s] TAMPER 2: unknown program /tmp/.cache/xmrig runs on {} (IMA measures it)",
        started.elapsed().as_secs_f64(),
        DEVICES[SECOND_VICTIM]
    );

    let mut caught: Vec<(usize, String, Duration)> = Vec::new();
    loop {
        let listed = list(&mut admin).await?;
        show(&listed, "two devices attacked", &mut last);
        for index in [VICTIM, SECOND_VICTIM] {
            if caught.iter().any(|(i, _, _)| *i == index) {
                continue;
            }
            if let Some(d) = listed.iter().find(|d| {
                Some(&d.hostname.as_str()) == DEVICES.get(index)
                    && d.state == TrustState::Untrusted as i32
            }) {
                caught.push((index, d.device_id.clone(), tampered_at.elapsed()));
            }
        }
        if caught.len() == 2 {
            break;
        }
        if tampered_at.elapsed() > Duration::from_secs(60) {
            bail!("the attacked devices were not both caught in 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut victim_ids = Vec::new();
    for (index, device_id, detection) in &caught {
        let detail = admin
            .get_device(DeviceRequest {
                device_id: device_id.clone(),
                comment: String::new(),
            })
            .await?
            .into_inner();
        println!(
            "\n=== CAUGHT: {} ({device_id}) is UNTRUSTED after {:.2}s (interval {INTERVAL_SECONDS}s) ===",
            DEVICES.get(*index).unwrap_or(&"?"),
            detection.as_secs_f64()
        );
        for rule in &detail.failed_rules {
            println!("  rule {}: {} [{}]", rule.rule, rule.detail, rule.subject);
            if !rule.measured.is_empty() {
                println!(
                    "      measured {}\n      expected {}",
                    rule.measured, rule.expected
                );
            }
        }
        victim_ids.push(device_id.clone());
    }
    let detection = caught.iter().map(|(_, _, d)| *d).max().unwrap_or_default();
    let others_trusted = list(&mut admin)
        .await?
        .iter()
        .filter(|d| d.state == TrustState::Trusted as i32)
        .count();
    println!("  the other {others_trusted} devices stay TRUSTED");
    if let Some(result) = list(&mut admin)
        .await?
        .iter()
        .find(|d| d.state == TrustState::Trusted as i32)
    {
        let detail = admin
            .get_device(DeviceRequest {
                device_id: result.device_id.clone(),
                comment: String::new(),
            })
            .await?
            .into_inner();
        if let Some(claims) = detail
            .last_result_jwt
            .split('.')
            .nth(1)
            .and_then(|p| {
                use base64::Engine as _;
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(p)
                    .ok()
            })
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        {
            println!(
                "  a trusted device's signed result rests on trust list v{}, {}, manifests {}",
                claims
                    .get("trustchain.trust-list-version")
                    .and_then(|v| v.as_str())
                    .unwrap_or("?"),
                claims
                    .get("trustchain.policy-version")
                    .and_then(|v| v.as_str())
                    .unwrap_or("?"),
                claims
                    .get("trustchain.manifests")
                    .cloned()
                    .unwrap_or_default()
            );
        }
    }

    // The record: every enrollment, appraisal failure and state change, exported.
    let mut stream = admin
        .export_audit(ExportAuditRequest { from_sequence: 0 })
        .await?
        .into_inner();
    let mut exported = String::new();
    let mut alerts = Vec::new();
    while let Some(record) = stream.message().await? {
        let line = String::from_utf8_lossy(&record.record).into_owned();
        if let Ok(trustchain_verifier::audit::AuditLine::Record { record, .. }) =
            serde_json::from_str(&line)
            && victim_ids.iter().any(|id| record.contains(id.as_str()))
            && (record.contains("appraisal_failed") || record.contains("-> untrusted"))
        {
            alerts.push(record);
        }
        exported.push_str(&line);
        exported.push('\n');
    }
    std::fs::write(dir.join("audit-export.jsonl"), &exported)?;
    let public_key = std::fs::read_to_string(ca_dir.join("verifier-signing.pub"))?;
    let audit = trustchain_verifier::audit::verify_export(&exported, &public_key)
        .map_err(|e| anyhow::anyhow!("the exported audit log does not verify: {e}"))?;
    println!("\nalert records for the attacked devices:");
    for alert in alerts.iter().take(4) {
        println!("  {alert}");
    }
    println!("\nsummary:");
    println!(
        "  devices: {} enrolled, {} trusted, 2 caught",
        DEVICES.len(),
        others_trusted
    );
    println!(
        "  detection time: {:.2}s from tamper to UNTRUSTED, slowest of the two (challenge interval {INTERVAL_SECONDS}s)",
        detection.as_secs_f64()
    );
    println!(
        "  audit log: {} records, hash-chained, checkpoint signed by the verifier; verified offline: {}",
        audit.records,
        dir.join("audit-export.jsonl").display()
    );
    println!(
        "  check it yourself: trustchain audit verify --public-key {} {}",
        ca_dir.join("verifier-signing.pub").display(),
        dir.join("audit-export.jsonl").display()
    );
    println!(
        "  verifier state (sled): {}",
        dir.join("verifier-state").display()
    );
    println!(
        "  logs: {}/verifier.log, {}/agent-*/agent.log",
        dir.display(),
        dir.display()
    );
    if keep_running {
        println!("\n--keep-running: verifier and agents stay up; Ctrl-C to stop.");
        println!(
            "  dashboard (read-only): https://127.0.0.1:{dashboard_port}/ with an operator client \
             certificate (the demo's: {} and {}; a browser imports them as PKCS#12, e.g. \
             `openssl pkcs12 -export -in ... -inkey ... -out operator.p12`), trusting {}",
            operator_cert.display(),
            dir.join("operator.key.pem").display(),
            ca_dir.join("root.pem").display()
        );
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = tokio::time::sleep(Duration::from_secs(2)) => {
                    let listed = list(&mut admin).await?;
                    show(&listed, "running (Ctrl-C to stop)", &mut last);
                }
            }
        }
    } else if let Some(temp) = _temp {
        // Keep the state directory for inspection.
        let kept = temp.keep();
        println!("  (kept {})", kept.display());
    }
    drop(processes);
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let keep_running = args.iter().any(|a| a == "--keep-running");
    let state = args
        .iter()
        .position(|a| a == "--state")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from);
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "trustchain-demo [--keep-running] [--state DIR]\n\nRuns a verifier, the CA and five swtpm-backed agents, tampers with one device and shows it caught."
        );
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("demo: {error}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(demo(keep_running, state)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("demo failed: {error:#}");
            ExitCode::from(1)
        }
    }
}
