//! `trustchain device`: what the SOC operator does with devices.

use std::process::ExitCode;

use trustchain_proto::v1::admin_client::AdminClient;
use trustchain_proto::v1::{DeviceRequest, ExportAuditRequest, ListDevicesRequest, TrustState};
use trustchain_verifier::audit::AuditLine;

use crate::operator::OperatorArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    operator: OperatorArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Every device with its state, tier, last appraisal and reason.
    List,
    /// One device, and why it is untrusted: each failed rule with the event or file, measured
    /// and expected values.
    Show { device_id: String },
    /// Clear a device after investigation (recorded with your operator identity); it must pass a
    /// fresh appraisal to be trusted again.
    Clear {
        device_id: String,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Decommission a device for good: its EK can never enroll or attest again, its certificate
    /// is revoked.
    Decommission {
        device_id: String,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// The device's history from the audit log.
    History { device_id: String },
}

fn state_name(state: i32) -> &'static str {
    match TrustState::try_from(state).unwrap_or(TrustState::Unspecified) {
        TrustState::Enrolled => "enrolled",
        TrustState::Trusted => "trusted",
        TrustState::Untrusted => "UNTRUSTED",
        TrustState::TimedOut => "timed-out",
        TrustState::Quarantined => "QUARANTINED",
        TrustState::Decommissioned => "decommissioned",
        TrustState::Unspecified => "?",
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let mut admin = AdminClient::new(args.operator.connect().await?);
        match args.command {
            Command::List => {
                let devices = admin
                    .list_devices(ListDevicesRequest {})
                    .await?
                    .into_inner()
                    .devices;
                println!(
                    "{:<38} {:<20} {:<10} {:<15} {:<11} REASON",
                    "DEVICE", "HOST", "TIER", "STATE", "CHANGED"
                );
                for d in devices {
                    println!(
                        "{:<38} {:<20} {:<10} {:<15} {:<11} {}",
                        d.device_id,
                        d.hostname.escape_debug(),
                        d.tier.escape_debug(),
                        state_name(d.state),
                        d.last_appraisal_unix,
                        d.reason.escape_debug()
                    );
                }
            }
            Command::Show { device_id } => {
                let detail = admin
                    .get_device(DeviceRequest {
                        device_id,
                        comment: String::new(),
                    })
                    .await?
                    .into_inner();
                if let Some(s) = &detail.summary {
                    println!(
                        "device   {}\nhost     {}\ntier     {}\nstate    {}\nreason   {}",
                        s.device_id,
                        s.hostname,
                        s.tier,
                        state_name(s.state),
                        s.reason
                    );
                }
                for rule in &detail.failed_rules {
                    println!("failed   {} [{}]: {}", rule.rule, rule.subject, rule.detail);
                    if !rule.measured.is_empty() || !rule.expected.is_empty() {
                        println!(
                            "           measured {}\n           expected {}",
                            rule.measured, rule.expected
                        );
                    }
                }
            }
            Command::Clear { device_id, comment } => {
                let detail = admin
                    .clear_device(DeviceRequest { device_id, comment })
                    .await?
                    .into_inner();
                println!(
                    "cleared: now {}",
                    detail.summary.map(|s| state_name(s.state)).unwrap_or("?")
                );
            }
            Command::Decommission { device_id, comment } => {
                let detail = admin
                    .decommission_device(DeviceRequest { device_id, comment })
                    .await?
                    .into_inner();
                println!(
                    "now {}",
                    detail.summary.map(|s| state_name(s.state)).unwrap_or("?")
                );
            }
            Command::History { device_id } => {
                let mut stream = admin
                    .export_audit(ExportAuditRequest { from_sequence: 1 })
                    .await?
                    .into_inner();
                while let Some(record) = stream.message().await? {
                    if let Ok(AuditLine::Record {
                        sequence, record, ..
                    }) = serde_json::from_slice(&record.record)
                        && record.contains(&format!("\"device_id\":\"{device_id}\""))
                    {
                        println!("{sequence:>6}  {record}");
                    }
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
