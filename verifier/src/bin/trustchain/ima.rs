//! `trustchain ima FILE [--json]`: parse and replay a Linux IMA measurement list.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::{Value, json};
use trustchain_verifier::evidence::digest::HashAlgorithm;
use trustchain_verifier::evidence::ima::{self, ImaState};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The list (ascii_runtime_measurements or binary_runtime_measurements).
    file: PathBuf,
    /// Print JSON: {"pcrs": {"sha1": {"10": "<hex>"}, ...}, "entries": [...], "violations": N}.
    #[arg(long)]
    json: bool,
}

const BANKS: [HashAlgorithm; 2] = [HashAlgorithm::Sha1, HashAlgorithm::Sha256];

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let bytes =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let log = ima::parse(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", args.file.display()))?;
    let replayed = ima::replay(&ImaState::default(), &log, &BANKS);
    let mut pcrs = serde_json::Map::new();
    for (bank, values) in &replayed.state.pcrs {
        let values: serde_json::Map<String, Value> = values
            .iter()
            .map(|(i, v)| (i.to_string(), Value::String(hex::encode(v))))
            .collect();
        pcrs.insert(bank.name().to_string(), Value::Object(values));
    }
    if args.json {
        let entries: Vec<Value> = log
            .entries
            .iter()
            .map(|e| {
                json!({
                    "index": e.index,
                    "pcr": e.pcr,
                    "template": e.template.name(),
                    "template_hash": hex::encode(&e.logged_hash),
                    "digest": format!("{}:{}", e.digest_algorithm, hex::encode(&e.file_digest)),
                    "path": e.path,
                    "violation": e.is_violation(),
                    "template_hash_matches": !replayed.mismatches.contains(&e.index),
                })
            })
            .collect();
        let out = json!({
            "pcrs": pcrs,
            "entries": entries,
            "violations": replayed.violations.len(),
            "template_hash_mismatches": replayed.mismatches,
            "trailing_bytes": log.trailing_bytes,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    for e in &log.entries {
        let flag = if e.is_violation() {
            "  [violation]"
        } else if replayed.mismatches.contains(&e.index) {
            "  [template hash mismatch]"
        } else {
            ""
        };
        println!(
            "{:>6}  PCR{} {:<7} {}:{} {}{flag}",
            e.index,
            e.pcr,
            e.template.name(),
            e.digest_algorithm,
            hex::encode(&e.file_digest),
            e.path.escape_debug()
        );
    }
    println!(
        "\n{} entries, {} violations, {} template-hash mismatches",
        log.entries.len(),
        replayed.violations.len(),
        replayed.mismatches.len()
    );
    if log.trailing_bytes > 0 {
        println!(
            "{} trailing bytes after the last complete entry",
            log.trailing_bytes
        );
    }
    for (bank, values) in &replayed.state.pcrs {
        for (index, value) in values {
            println!("{}:{index} {}", bank.name(), hex::encode(value));
        }
    }
    Ok(ExitCode::SUCCESS)
}
