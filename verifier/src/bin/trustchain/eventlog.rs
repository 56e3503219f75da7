//! `trustchain eventlog FILE [--json]`: parse and replay a UEFI measured-boot event log.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::{Value, json};
use trustchain_verifier::evidence::eventlog::{self, EventLog, PcrBanks, ReplayOptions};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The event log (e.g. /sys/kernel/security/tpm0/binary_bios_measurements).
    file: PathBuf,
    /// Print JSON: {"pcrs": {"sha256": {"0": "<hex>", ...}}, "events": [...]}.
    #[arg(long)]
    json: bool,
    /// Apply the HP workaround: extend the two unlogged ExitBootServices actions into PCR 5.
    #[arg(long)]
    hp_ebs_workaround: bool,
}

/// `{"sha256": {"0": "hex"}}`, the shape every `trustchain` command uses for PCRs.
pub fn pcrs_json(banks: &PcrBanks) -> Value {
    let mut out = serde_json::Map::new();
    for (bank, pcrs) in &banks.0 {
        if pcrs.is_empty() {
            continue;
        }
        let values: serde_json::Map<String, Value> = pcrs
            .iter()
            .map(|(index, value)| (index.to_string(), Value::String(hex::encode(value))))
            .collect();
        out.insert(bank.name().to_string(), Value::Object(values));
    }
    Value::Object(out)
}

fn events_json(log: &EventLog) -> Vec<Value> {
    log.events
        .iter()
        .map(|event| {
            let digests: BTreeMap<&str, String> = event
                .digests
                .iter()
                .map(|(alg, d)| (alg.name(), hex::encode(d)))
                .collect();
            let decoded = event.decoded();
            let check = event.digest_check();
            json!({
                "index": event.index,
                "offset": event.offset,
                "pcr": event.pcr,
                "type": eventlog::event_type_name(event.event_type),
                "digests": digests,
                "summary": summary(&decoded),
                "data": decoded,
                "digest_matches_data": check.as_ref().map(|c| c.holds()),
                "digest_quirk": check.and_then(|c| c.quirk),
            })
        })
        .collect()
}

fn summary(data: &eventlog::EventData) -> String {
    use eventlog::EventData as D;
    match data {
        D::SpecId => "Spec ID Event03".into(),
        D::StartupLocality { locality } => format!("StartupLocality {locality}"),
        D::NoAction { signature } => format!("no action: {signature}"),
        D::Separator { value, error } => format!(
            "separator {value}{}",
            if *error { " (firmware error)" } else { "" }
        ),
        D::EfiVariable {
            guid,
            name,
            data_size,
            ..
        } => format!("{name} ({guid}, {data_size} bytes)"),
        D::ImageLoad {
            device_path,
            length,
            ..
        } => format!("{device_path} ({length} bytes)"),
        D::Action { text } | D::PostCode { text } | D::Ipl { text } => {
            text.escape_debug().to_string()
        }
        D::FirmwareBlob { base, length } => format!("blob at 0x{base:x}, {length} bytes"),
        D::FirmwareBlob2 {
            description,
            base,
            length,
        } => format!("{description} at 0x{base:x}, {length} bytes"),
        D::Gpt {
            disk_guid,
            partitions,
        } => format!("GPT disk {disk_guid}, {partitions} partitions"),
        D::HandoffTables { tables } => format!("{tables} handoff tables"),
        D::CrtmVersion { version } => format!("CRTM version {}", version.escape_debug()),
        D::Raw { data_hex } => format!(
            "{}{}",
            data_hex.get(..data_hex.len().min(64)).unwrap_or_default(),
            if data_hex.len() > 64 { "..." } else { "" }
        ),
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let bytes =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let log =
        eventlog::parse(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", args.file.display()))?;
    let banks = eventlog::replay(
        &log,
        &ReplayOptions {
            hp_unlogged_exit_boot_services: args.hp_ebs_workaround,
        },
    );
    if args.json {
        let out = json!({ "pcrs": pcrs_json(&banks), "events": events_json(&log) });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    let format = match log.format {
        eventlog::LogFormat::CryptoAgile => "crypto-agile",
        eventlog::LogFormat::LegacySha1 => "legacy SHA-1",
    };
    let bank_names: Vec<&str> = log.banks.iter().map(|b| b.name()).collect();
    println!(
        "{} events, {format}, banks: {}",
        log.events.len(),
        bank_names.join(", ")
    );
    for event in &log.events {
        let check = match event.digest_check() {
            Some(check) if !check.holds() => "  [digest != hash(data)]",
            _ => "",
        };
        // EV_NO_ACTION events may name PCR 0xFFFFFFFF (Windows' trailing event).
        let pcr = if event.pcr < eventlog::PCR_COUNT {
            event.pcr.to_string()
        } else {
            "-".to_string()
        };
        println!(
            "{:>4}  PCR{pcr:<2} {:<34} {}{check}",
            event.index,
            eventlog::event_type_name(event.event_type),
            summary(&event.decoded()),
        );
    }
    println!();
    for (bank, pcrs) in &banks.0 {
        for (index, value) in pcrs {
            println!("{}:{index:<2} {}", bank.name(), hex::encode(value));
        }
    }
    Ok(ExitCode::SUCCESS)
}
