//! `trustchain-fault-run`: the agent-fault run as a command, for the long outages CI cannot
//! afford (a ten-minute verifier outage). A real agent process on a real swtpm goes through
//! network cuts, verifier outages and TPM deaths; the timeline, the agent's states and its
//! memory are printed. `scripts/fault-run.sh` runs it and keeps the output.
//!
//! `trustchain-fault-run [--rounds N] [--network-outage S] [--verifier-outage S]
//! [--tpm-outage S] [--interval S] [--keep DIR]`

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use trustchain_tests::faults::agent_run::{Plan, run};
use trustchain_tests::faults::cli;

fn plan() -> anyhow::Result<Plan> {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| cli::value(&args, name);
    let seconds = |name: &str, default: u64| -> anyhow::Result<Duration> {
        Ok(Duration::from_secs(match value(name) {
            Some(v) => v.parse()?,
            None => default,
        }))
    };
    Ok(Plan {
        rounds: value("--rounds")
            .map(|v| v.parse())
            .transpose()?
            .unwrap_or(1),
        network_outage: seconds("--network-outage", 30)?,
        verifier_outage: seconds("--verifier-outage", 600)?,
        tpm_outage: seconds("--tpm-outage", 60)?,
        interval_seconds: value("--interval")
            .map(|v| v.parse())
            .transpose()?
            .unwrap_or(10),
        keep: value("--keep").map(PathBuf::from),
    })
}

fn main() -> ExitCode {
    let (plan, runtime) = match cli::start(
        "fault-run",
        "trustchain-fault-run [--rounds N] [--network-outage S] [--verifier-outage S] \
         [--tpm-outage S] [--interval S] [--keep DIR]\n\n\
         Runs a real agent on swtpm against a real verifier through network cuts, verifier \
         outages and TPM deaths; prints the timeline and the agent's memory.",
        plan,
    ) {
        Ok(started) => started,
        Err(code) => return code,
    };
    println!("plan: {plan:?}");
    let outcome = runtime.block_on(run(&plan, &mut |line| println!("{line}")));
    match outcome {
        Ok(report) => {
            println!("\nsummary:");
            for fault in &report.faults {
                println!(
                    "  round {} {:<14} outage {:>5}s  states {:?}  longest retry {:>6} ms  \
                     reconnected {:>5.1}s  trusted {:>5.1}s  RSS {} KiB",
                    fault.round,
                    fault.fault,
                    fault.outage.as_secs(),
                    fault.states_seen,
                    fault.longest_retry_ms,
                    fault.reconnected_after.as_secs_f64(),
                    fault.trusted_after.as_secs_f64(),
                    fault.rss_kib
                );
            }
            println!(
                "  agent pid {} never restarted: {}; RSS {} KiB at start, {} KiB at the end; \
                 status file (as last written, at most a minute old): {} streams opened, {} \
                 challenges answered",
                report.agent_pid,
                report.same_process_throughout,
                report.rss_start_kib,
                report.rss_end_kib,
                report.streams_opened,
                report.challenges_answered
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("fault-run failed: {error:#}");
            ExitCode::from(1)
        }
    }
}
