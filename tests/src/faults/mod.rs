//! The fault-injection kit behind `tests/tests/agent_faults.rs`, `tests/tests/hostile_load.rs`
//! and their long-run binaries (`trustchain-fault-run`, `trustchain-flood`).
//!
//! # Layout
//! - [`deployment`]: a deployment CA, test TPM makers and a `trustchain-verifier` process that
//!   can be killed and started again on the same state and port; an operator's view of it.
//! - [`proxy`]: a loopback TCP proxy that can cut every connection or refuse new ones.
//! - [`agent_run`]: the agent-fault run: a real `trustchain-agent` process on a real swtpm,
//!   through network cuts, verifier outages and TPM deaths, with its memory measured.
//! - [`cli`]: the start (help, plan, runtime) of `trustchain-fault-run` and
//!   `trustchain-footprint`.
//! - [`footprint`]: the agent's memory and CPU while it attests with a growing IMA log.
//! - [`sim`]: simulated honest devices (the load generator's software TPM model) that enroll and
//!   attest on their own mTLS streams and log every challenge and verdict.
//! - [`hostile`]: what a hostile client sends: raw gRPC frames (compressed, malformed,
//!   oversized) and a DEFLATE bomb.
//!
//! Every loop here is bounded in count and in time, and every address is on loopback.

pub mod agent_run;
pub mod cli;
pub mod deployment;
pub mod footprint;
pub mod hostile;
pub mod proxy;
pub mod sim;

/// Resident memory of a process in KiB (`VmRSS` from `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
}

/// A binary built next to the running one: beside it (a `[[bin]]` running another) or one
/// directory up (an integration test in `target/*/deps`). Fails loudly when it is missing.
pub fn sibling_binary(name: &str) -> anyhow::Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .ok_or_else(|| anyhow::anyhow!("no directory for {}", exe.display()))?;
    for candidate in [Some(dir), dir.parent()].into_iter().flatten() {
        let path = candidate.join(name);
        if path.exists() {
            return Ok(path);
        }
    }
    anyhow::bail!(
        "{name} is not built next to {}: run `cargo build -p trustchain-agent -p trustchain-verifier` \
         (scripts/test.sh builds every target)",
        exe.display()
    )
}
