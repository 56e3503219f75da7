//! The agent's footprint on a gateway (issue 18, item 4): a real `trustchain-agent` process on
//! a real swtpm, attesting to a real verifier process every `interval` seconds while its IMA
//! log grows, with its resident memory (`VmRSS`, `VmHWM`) and CPU time (`utime + stime`) read
//! from `/proc`. A measurement: it prints figures and asserts nothing about them
//! (`trustchain-footprint`, figures in `docs/field.md`).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use trustchain_agent::status::AgentState;
use trustchain_swtpm::{BootProfile, SwtpmDevice};

use super::agent_run::{AgentSetup, start_agent, wait_for};
use super::deployment::Deployment;
use super::rss_kib;

/// One measurement.
#[derive(Debug, Clone)]
pub struct Plan {
    /// IMA entries in the log before the agent starts.
    pub entries: usize,
    /// Entries the kernel adds per interval while measured.
    pub grow_per_interval: usize,
    pub interval_seconds: u64,
    /// Intervals measured (after the verifier has caught up with the log).
    pub intervals: u32,
    /// The agent binary to measure (e.g. `target/release/trustchain-agent`); default: the one
    /// built next to this tool.
    pub agent: Option<std::path::PathBuf>,
}

/// What the agent cost over the measured intervals.
#[derive(Debug, Clone)]
pub struct Footprint {
    pub entries_at_start: usize,
    pub entries_at_end: usize,
    pub rss_start_kib: u64,
    pub rss_end_kib: u64,
    pub rss_max_kib: u64,
    /// Peak resident memory over the whole run, catch-up included (`VmHWM`).
    pub rss_peak_kib: u64,
    /// At the end: what the agent allocated (`RssAnon`) and its mapped code and libraries
    /// (`RssFile`, shared with other processes and much smaller in a release build).
    pub rss_anon_kib: u64,
    pub rss_file_kib: u64,
    pub threads: u64,
    /// CPU time over wall time, in percent of one core.
    pub cpu_percent: f64,
    pub measured_for: Duration,
    /// Verdicts the agent logged over the measured intervals (one per answered challenge).
    pub verdicts: usize,
}

/// The verdict lines in the agent's log (`attest.rs` logs one per appraised answer; the status
/// file's counter is written only once a minute).
fn verdicts_logged(log: &std::path::Path) -> usize {
    std::fs::read_to_string(log)
        .map(|text| {
            text.lines()
                .filter(|l| l.contains(": verdict challenge="))
                .count()
        })
        .unwrap_or(0)
}

/// `utime + stime` of a process in clock ticks (`/proc/PID/stat` fields 14 and 15).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after it follow its closing ')'.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn status_field(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux when it cannot be asked).
fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

fn files(from: usize, count: usize) -> Vec<(String, Vec<u8>)> {
    (from..from + count)
        .map(|i| {
            (
                format!("/usr/lib/gateway/module-{i:06}.so"),
                format!("module {i}").into_bytes(),
            )
        })
        .collect()
}

/// Runs `plan`, calling `say` with a line at each step.
pub async fn measure(plan: &Plan, say: &mut dyn FnMut(String)) -> anyhow::Result<Footprint> {
    let started = Instant::now();
    let mut line = |text: String| {
        say(format!(
            "[{:>6.1}s] {text}",
            started.elapsed().as_secs_f64()
        ))
    };
    let mut deployment = Deployment::create(plan.interval_seconds, 3, None)?;
    deployment.start_verifier().await?;
    let mut tpm = SwtpmDevice::start(&deployment.makers.trusted, "gw-footprint")?;
    tpm.boot(&BootProfile::default_linux())?;
    // In chunks: each entry extends PCR 10 in the swtpm.
    let mut entries = 0;
    while entries < plan.entries {
        let chunk = (plan.entries - entries).min(5_000);
        tpm.ima_measure_many(&files(entries, chunk))?;
        entries += chunk;
    }
    let log_bytes = std::fs::metadata(tpm.ima_log_path())?.len();
    line(format!("IMA log: {entries} entries, {log_bytes} bytes"));
    let port = super::proxy::tcti_port(&tpm.tcti()).context("the swtpm's port")?;
    let agent = start_agent(&AgentSetup {
        dir: &deployment.dir.join("agent"),
        verifier: deployment.address(),
        root_pem: &deployment.root_pem_path(),
        tpm_port: port,
        tpm: &tpm,
        hostname: "gw-footprint",
        env: &[],
        binary: plan.agent.as_deref(),
    })?;
    let pid = agent.child.id();
    wait_for(Duration::from_secs(120), || async {
        let status = agent.status()?;
        (status.state == AgentState::Attesting).then_some(())
    })
    .await
    .with_context(|| format!("the agent did not attest; see {}", agent.log.display()))?;
    // The verifier catches up with the log in batches of at most 2 MiB, one per interval;
    // give it those intervals and one more so the allocator settles.
    let catch_up = log_bytes.div_ceil(2 * 1024 * 1024) + 1;
    line(format!(
        "agent (pid {pid}) attesting; letting the verifier catch up for {catch_up} intervals"
    ));
    for _ in 0..catch_up {
        tpm.ima_measure_many(&files(entries, plan.grow_per_interval))?;
        entries += plan.grow_per_interval;
        tokio::time::sleep(Duration::from_secs(plan.interval_seconds)).await;
    }

    let ticks_per_second = clock_ticks_per_second();
    let verdicts_before = verdicts_logged(&agent.log);
    let entries_at_start = entries;
    let rss_start_kib = rss_kib(pid).context("agent RSS")?;
    let ticks_start = cpu_ticks(pid).context("agent CPU time")?;
    let clock_start = Instant::now();
    let mut rss_max_kib = rss_start_kib;
    for interval in 1..=plan.intervals {
        tpm.ima_measure_many(&files(entries, plan.grow_per_interval))?;
        entries += plan.grow_per_interval;
        // Sampled every second: RSS between challenges and during them.
        for _ in 0..plan.interval_seconds {
            tokio::time::sleep(Duration::from_secs(1)).await;
            rss_max_kib = rss_max_kib.max(rss_kib(pid).unwrap_or(0));
        }
        line(format!(
            "interval {interval}: {entries} entries, RSS {} KiB",
            rss_kib(pid).unwrap_or(0)
        ));
    }
    let measured_for = clock_start.elapsed();
    let ticks = cpu_ticks(pid).context("agent CPU time")? - ticks_start;
    let footprint = Footprint {
        entries_at_start,
        entries_at_end: entries,
        rss_start_kib,
        rss_end_kib: rss_kib(pid).unwrap_or(0),
        rss_max_kib,
        rss_peak_kib: status_field(pid, "VmHWM:").unwrap_or(0),
        rss_anon_kib: status_field(pid, "RssAnon:").unwrap_or(0),
        rss_file_kib: status_field(pid, "RssFile:").unwrap_or(0),
        threads: status_field(pid, "Threads:").unwrap_or(0),
        cpu_percent: ticks as f64 / ticks_per_second as f64 / measured_for.as_secs_f64() * 100.0,
        measured_for,
        verdicts: verdicts_logged(&agent.log).saturating_sub(verdicts_before),
    };
    line(format!("{footprint:?}"));
    Ok(footprint)
}
