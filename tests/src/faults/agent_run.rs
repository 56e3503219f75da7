//! The agent-fault run: a real `trustchain-agent` process on a real swtpm, attesting to a real
//! verifier process through a loopback proxy, taken through network cuts, verifier outages and
//! TPM deaths, round after round, without ever being restarted. Its state is read from the
//! status file it keeps (`status.json`), the device's from the verifier, and its memory from
//! `/proc`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use trustchain_agent::status::{AgentState, Status};
use trustchain_proto::v1::TrustState;
use trustchain_swtpm::{BootProfile, SwtpmDevice};

use super::deployment::Deployment;
use super::proxy::{Proxy, pair_targets, tcti_port};
use super::rss_kib;

/// How long each fault lasts, and how many rounds of all three.
#[derive(Debug, Clone)]
pub struct Plan {
    pub rounds: u32,
    /// The network is down (connections cut, new ones refused) for this long.
    pub network_outage: Duration,
    /// The verifier process is dead for this long.
    pub verifier_outage: Duration,
    /// The TPM (swtpm) is dead for this long.
    pub tpm_outage: Duration,
    pub interval_seconds: u64,
    /// Keep the run's files (logs, status file, verifier state) here.
    pub keep: Option<PathBuf>,
}

/// What one fault did.
#[derive(Debug, Clone)]
pub struct FaultOutcome {
    pub round: u32,
    pub fault: &'static str,
    pub outage: Duration,
    /// The agent states seen in its status file during the outage.
    pub states_seen: Vec<String>,
    /// Largest `retry_in_ms` the agent announced during the outage.
    pub longest_retry_ms: u64,
    /// The device's state at the verifier when the fault ended (for a verifier outage: as the
    /// new verifier process started).
    pub verifier_state_at_recovery: String,
    /// From the fault's end to the agent's new stream.
    pub reconnected_after: Duration,
    /// From the fault's end to the device TRUSTED again at the verifier.
    pub trusted_after: Duration,
    pub rss_kib: u64,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub agent_pid: u32,
    pub rss_start_kib: u64,
    pub rss_end_kib: u64,
    pub faults: Vec<FaultOutcome>,
    /// True when the agent process was never restarted (same pid, still running at the end).
    pub same_process_throughout: bool,
    pub streams_opened: u64,
    pub challenges_answered: u64,
}

/// A `trustchain-agent run` process on its own config and state directory; killed when dropped.
#[derive(Debug)]
pub struct AgentProcess {
    pub child: Child,
    pub state_dir: PathBuf,
    /// Its stderr.
    pub log: PathBuf,
}

/// Where [`start_agent`] points the agent.
#[derive(Debug)]
pub struct AgentSetup<'a> {
    /// Its config, state directory and log go here.
    pub dir: &'a Path,
    /// The verifier (or a proxy to it).
    pub verifier: SocketAddr,
    pub root_pem: &'a Path,
    /// The swtpm's command port (or a proxy to it).
    pub tpm_port: u16,
    /// The device whose boot log and IMA log the agent reads.
    pub tpm: &'a SwtpmDevice,
    pub hostname: &'a str,
    /// Extra environment (e.g. `NOTIFY_SOCKET`).
    pub env: &'a [(&'a str, String)],
    /// Another `trustchain-agent` binary (e.g. a release build); default: the one built next
    /// to the running test.
    pub binary: Option<&'a Path>,
}

/// Writes an agent config for `setup` and starts `trustchain-agent run` on it.
pub fn start_agent(setup: &AgentSetup<'_>) -> anyhow::Result<AgentProcess> {
    start_agent_with_replicas(setup, &[])
}

/// [`start_agent`] with several verifier replicas: `verifier_urls` lists `setup.verifier`
/// first, then `more` in order. Without `more`, the config has `verifier_url` alone.
pub fn start_agent_with_replicas(
    setup: &AgentSetup<'_>,
    more: &[SocketAddr],
) -> anyhow::Result<AgentProcess> {
    std::fs::create_dir_all(setup.dir)?;
    let state_dir = setup.dir.join("state");
    let config = setup.dir.join("agent.toml");
    let verifiers = if more.is_empty() {
        format!("verifier_url = \"https://{}\"", setup.verifier)
    } else {
        let urls: Vec<String> = std::iter::once(&setup.verifier)
            .chain(more)
            .map(|address| format!("\"https://{address}\""))
            .collect();
        format!("verifier_urls = [{}]", urls.join(", "))
    };
    std::fs::write(
        &config,
        format!(
            "{verifiers}\nverifier_name = \"localhost\"\nca_certificate = {:?}\n\
             state_dir = {:?}\ntcti = \"swtpm:host=127.0.0.1,port={}\"\nevent_log = {:?}\n\
             ima_log = {:?}\n\n[facts]\nhostname = {:?}\ndevice_class = \"gateway\"\n",
            setup.root_pem,
            state_dir,
            setup.tpm_port,
            setup.tpm.event_log_path(),
            setup.tpm.ima_log_path(),
            setup.hostname,
        ),
    )?;
    let log = setup.dir.join("agent.log");
    let binary = match setup.binary {
        Some(binary) => binary.to_path_buf(),
        None => super::sibling_binary("trustchain-agent")?,
    };
    let mut command = Command::new(binary);
    command
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .env("TSS2_LOG", "all+none")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?);
    for (key, value) in setup.env {
        command.env(key, value);
    }
    let child = command.spawn().context("starting trustchain-agent")?;
    Ok(AgentProcess {
        child,
        state_dir,
        log,
    })
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl AgentProcess {
    pub fn status(&self) -> Option<Status> {
        trustchain_agent::status::read(&self.state_dir).ok()
    }

    /// The device id once the agent has enrolled and is attesting, or `None` after `limit`.
    pub async fn attesting_device_id(&self, limit: Duration) -> Option<String> {
        wait_for(limit, || async {
            let status = self.status()?;
            (status.state == AgentState::Attesting)
                .then_some(status.device_id)
                .flatten()
        })
        .await
    }
}

/// Runs `plan`, calling `say` with a timeline line at each step.
#[allow(clippy::too_many_lines)]
pub async fn run(plan: &Plan, say: &mut dyn FnMut(String)) -> anyhow::Result<Report> {
    let started = Instant::now();
    let mut line = |text: String| {
        say(format!(
            "[{:>7.1}s] {text}",
            started.elapsed().as_secs_f64()
        ))
    };
    let mut deployment = Deployment::create(plan.interval_seconds, 3, plan.keep.as_deref())?;
    deployment.start_verifier().await?;
    let network = Proxy::start("127.0.0.1:0".parse()?, Some(deployment.address())).await?;

    let profile = BootProfile::default_linux();
    let mut tpm = SwtpmDevice::start(&deployment.makers.trusted, "gw-faults")?;
    tpm.boot(&profile)?;
    let (tpm_proxy, tpm_ctrl_proxy) = Proxy::start_pair(tcti_port(&tpm.tcti())).await?;

    let agent = start_agent(&AgentSetup {
        dir: &deployment.dir.join("agent"),
        verifier: network.address,
        root_pem: &deployment.root_pem_path(),
        tpm_port: tpm_proxy.address.port(),
        tpm: &tpm,
        hostname: "gw-faults",
        env: &[],
        binary: None,
    })?;
    let pid = agent.child.id();
    line(format!(
        "verifier on {}, agent (pid {pid}) through proxy {}, swtpm through {}",
        deployment.address(),
        network.address,
        tpm_proxy.address
    ));

    let device_id = agent
        .attesting_device_id(Duration::from_secs(120))
        .await
        .context("the agent did not enroll and start attesting within 120 s")?;
    wait_trusted(&deployment, &device_id, Duration::from_secs(60)).await?;
    line(format!("{device_id} enrolled and TRUSTED"));
    // Let the allocator settle at its working size before the first figure.
    tokio::time::sleep(Duration::from_secs(plan.interval_seconds * 2)).await;
    let rss_start_kib = rss_kib(pid).context("agent RSS")?;
    line(format!("agent RSS at start: {rss_start_kib} KiB"));

    let mut faults = Vec::new();
    for round in 1..=plan.rounds {
        // 1. The network is cut mid-stream and stays down.
        let streams = agent.status().map(|s| s.streams_opened).unwrap_or(0);
        network.set_target(None);
        network.cut();
        line(format!(
            "round {round}: network cut for {:?}",
            plan.network_outage
        ));
        let seen = watch_states(&agent, plan.network_outage).await;
        let before = verifier_state(&deployment, &device_id).await;
        network.set_target(Some(deployment.address()));
        let restored = Instant::now();
        let outcome = recover(
            &agent,
            &deployment,
            &device_id,
            streams,
            restored,
            (round, "network cut", plan.network_outage, seen, before),
        )
        .await?;
        line(describe(&outcome));
        faults.push(outcome);

        // 2. The verifier dies and comes back after the outage.
        let streams = agent.status().map(|s| s.streams_opened).unwrap_or(0);
        deployment.kill_verifier();
        line(format!(
            "round {round}: verifier killed for {:?}",
            plan.verifier_outage
        ));
        let seen = watch_states(&agent, plan.verifier_outage).await;
        deployment.start_verifier().await?;
        let restored = Instant::now();
        let before = verifier_state(&deployment, &device_id).await;
        let outcome = recover(
            &agent,
            &deployment,
            &device_id,
            streams,
            restored,
            (round, "verifier gone", plan.verifier_outage, seen, before),
        )
        .await?;
        line(describe(&outcome));
        faults.push(outcome);

        // 3. The TPM dies; it comes back after the outage, power-cycled, and the platform boots
        //    again (the harness measures the boot into the fresh PCRs before the agent may
        //    reach the TPM: the proxy refuses it meanwhile).
        let streams = agent.status().map(|s| s.streams_opened).unwrap_or(0);
        tpm_proxy.set_target(None);
        tpm_ctrl_proxy.set_target(None);
        tpm_proxy.cut();
        tpm_ctrl_proxy.cut();
        tpm.kill_tpm();
        line(format!(
            "round {round}: TPM killed for {:?}",
            plan.tpm_outage
        ));
        let seen = watch_states(&agent, plan.tpm_outage).await;
        let before = verifier_state(&deployment, &device_id).await;
        tpm.restart_tpm()?;
        tpm.boot(&profile)?;
        let (main, ctrl) = pair_targets(tcti_port(&tpm.tcti()));
        tpm_proxy.set_target(main);
        tpm_ctrl_proxy.set_target(ctrl);
        let restored = Instant::now();
        let outcome = recover(
            &agent,
            &deployment,
            &device_id,
            streams,
            restored,
            (round, "TPM killed", plan.tpm_outage, seen, before),
        )
        .await?;
        line(describe(&outcome));
        faults.push(outcome);
    }

    tokio::time::sleep(Duration::from_secs(plan.interval_seconds * 2)).await;
    let rss_end_kib = rss_kib(pid).context("agent RSS at the end")?;
    let mut agent = agent;
    let same_process_throughout =
        matches!(agent.child.try_wait(), Ok(None)) && agent.status().map(|s| s.pid) == Some(pid);
    let status = agent.status().context("final status")?;
    line(format!(
        "agent RSS at the end: {rss_end_kib} KiB (start {rss_start_kib} KiB); same process: \
         {same_process_throughout}; status file (as last written): streams opened {}, \
         challenges answered {}",
        status.streams_opened, status.challenges_answered
    ));
    Ok(Report {
        agent_pid: pid,
        rss_start_kib,
        rss_end_kib,
        faults,
        same_process_throughout,
        streams_opened: status.streams_opened,
        challenges_answered: status.challenges_answered,
    })
}

fn describe(outcome: &FaultOutcome) -> String {
    format!(
        "round {}: {} over after {:?}: agent states seen {:?}, longest announced retry {} ms; \
         device {} at the verifier; new stream {:.1}s after recovery, TRUSTED again {:.1}s \
         after; agent RSS {} KiB",
        outcome.round,
        outcome.fault,
        outcome.outage,
        outcome.states_seen,
        outcome.longest_retry_ms,
        outcome.verifier_state_at_recovery,
        outcome.reconnected_after.as_secs_f64(),
        outcome.trusted_after.as_secs_f64(),
        outcome.rss_kib
    )
}

/// Polls `check` every 100 ms until it yields, or `limit` passes.
pub async fn wait_for<T, F, Fut>(limit: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(value) = check().await {
            return Some(value);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

pub async fn wait_trusted(
    deployment: &Deployment,
    device_id: &str,
    limit: Duration,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    wait_for(limit, || async {
        let states = deployment.device_states().await.ok()?;
        (states.get(device_id) == Some(&(TrustState::Trusted as i32))).then_some(())
    })
    .await
    .with_context(|| {
        format!(
            "{device_id} was not TRUSTED again within {limit:?}; see {}",
            deployment.dir.display()
        )
    })?;
    Ok(started.elapsed())
}

/// The device's state at the verifier, by its protobuf name.
async fn verifier_state(deployment: &Deployment, device_id: &str) -> String {
    match deployment.device_states().await {
        Ok(states) => states
            .get(device_id)
            .and_then(|state| TrustState::try_from(*state).ok())
            .map(|state| state.as_str_name().to_string())
            .unwrap_or_else(|| "unknown".into()),
        Err(error) => format!("unreachable ({error})"),
    }
}

/// The distinct states in the status file during `outage`, and the longest retry announced.
async fn watch_states(agent: &AgentProcess, outage: Duration) -> (Vec<String>, u64) {
    let deadline = Instant::now() + outage;
    let mut seen: Vec<String> = Vec::new();
    let mut longest_retry = 0;
    while Instant::now() < deadline {
        if let Some(status) = agent.status() {
            let name = status.state.name().to_string();
            if seen.last() != Some(&name) {
                seen.push(name);
            }
            if let AgentState::BackingOff { retry_in_ms, .. }
            | AgentState::TpmUnavailable { retry_in_ms, .. } = status.state
            {
                longest_retry = longest_retry.max(retry_in_ms);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (seen, longest_retry)
}

/// Waits for the agent's next stream and for the device to be TRUSTED again.
async fn recover(
    agent: &AgentProcess,
    deployment: &Deployment,
    device_id: &str,
    streams_before: u64,
    restored: Instant,
    (round, fault, outage, (states_seen, longest_retry_ms), verifier_state_at_recovery): (
        u32,
        &'static str,
        Duration,
        (Vec<String>, u64),
        String,
    ),
) -> anyhow::Result<FaultOutcome> {
    // The agent's backoff is capped at a minute (plus jitter within it): allow two.
    wait_for(Duration::from_secs(150), || async {
        let status = agent.status()?;
        (status.state == AgentState::Attesting && status.streams_opened > streams_before)
            .then_some(())
    })
    .await
    .with_context(|| {
        format!(
            "round {round}: no new attestation stream after the {fault}; status {:?}",
            agent.status()
        )
    })?;
    let reconnected_after = restored.elapsed();
    wait_trusted(deployment, device_id, Duration::from_secs(60)).await?;
    Ok(FaultOutcome {
        round,
        fault,
        outage,
        states_seen,
        longest_retry_ms,
        verifier_state_at_recovery,
        reconnected_after,
        trusted_after: restored.elapsed(),
        rss_kib: rss_kib(agent.child.id()).unwrap_or(0),
    })
}
