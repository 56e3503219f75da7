//! `trustchain-footprint`: what the agent costs a gateway. A real agent on a real swtpm attests
//! to a real verifier every `--interval` seconds while its IMA log grows; its resident memory
//! and CPU share are printed for each starting log size. Figures in `docs/field.md`.
//!
//! `trustchain-footprint [--entries 1000,50000] [--interval S] [--intervals N] [--grow N]
//! [--agent PATH]` (`--agent target/release/trustchain-agent` measures a release build)

use std::process::ExitCode;

use trustchain_tests::faults::cli;
use trustchain_tests::faults::footprint::{Plan, measure};

fn plans() -> anyhow::Result<Vec<Plan>> {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| cli::value(&args, name);
    let number = |name: &str, default: u64| -> anyhow::Result<u64> {
        Ok(value(name)
            .map(|v| v.parse())
            .transpose()?
            .unwrap_or(default))
    };
    let interval_seconds = number("--interval", 10)?;
    let intervals = u32::try_from(number("--intervals", 6)?)?;
    let grow_per_interval = usize::try_from(number("--grow", 20)?)?;
    value("--entries")
        .unwrap_or_else(|| "1000,50000".into())
        .split(',')
        .map(|entries| {
            Ok(Plan {
                entries: entries.trim().parse()?,
                grow_per_interval,
                interval_seconds,
                intervals,
                agent: value("--agent").map(std::path::PathBuf::from),
            })
        })
        .collect()
}

fn main() -> ExitCode {
    let (plans, runtime) = match cli::start(
        "footprint",
        "trustchain-footprint [--entries 1000,50000] [--interval S] [--intervals N] [--grow N] \
         [--agent PATH]\n\n\
         Runs a real agent on swtpm against a real verifier with an IMA log of each size, \
         growing by --grow entries per interval, and prints its RSS and CPU share.",
        plans,
    ) {
        Ok(started) => started,
        Err(code) => return code,
    };
    let mut rows = Vec::new();
    for plan in &plans {
        println!("plan: {plan:?}");
        match runtime.block_on(measure(plan, &mut |line| println!("{line}"))) {
            Ok(footprint) => rows.push((plan.clone(), footprint)),
            Err(error) => {
                eprintln!("footprint: {error:#}");
                return ExitCode::from(1);
            }
        }
    }
    println!(
        "\n| IMA entries (start -> end) | interval | RSS start / max / end (KiB) | anon / file at end (KiB) | \
         peak VmHWM (KiB) | threads | CPU (% of a core) | verdicts |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (plan, f) in rows {
        println!(
            "| {} -> {} | {} s | {} / {} / {} | {} / {} | {} | {} | {:.2} | {} over {:.0} s |",
            f.entries_at_start,
            f.entries_at_end,
            plan.interval_seconds,
            f.rss_start_kib,
            f.rss_max_kib,
            f.rss_end_kib,
            f.rss_anon_kib,
            f.rss_file_kib,
            f.rss_peak_kib,
            f.threads,
            f.cpu_percent,
            f.verdicts,
            f.measured_for.as_secs_f64()
        );
    }
    ExitCode::SUCCESS
}
