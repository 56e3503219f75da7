//! `trustchain audit`: export the verifier's hash-chained history, and check an export offline.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use trustchain_proto::v1::ExportAuditRequest;
use trustchain_proto::v1::admin_client::AdminClient;
use trustchain_verifier::audit::verify_export;

use crate::operator::OperatorArgs;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Check an export with only the verifier's public key: every record chains to the one before,
    /// every periodic checkpoint verifies, and the export ends with its final checkpoint, signed
    /// for it over exactly the range it holds. Prints the range it proves; names the first record
    /// altered, removed or reordered; refuses an export that was cut (final mark missing, or
    /// records that do not run from the stated first sequence to the stated last).
    Verify {
        /// The verifier's public key: a file holding it (as `<signing_key>.pub`) or the hex itself.
        #[arg(long)]
        public_key: String,
        /// The export (JSON Lines, from `trustchain audit export`).
        export: PathBuf,
    },
    /// Export the history (JSON Lines on stdout), ending with a final checkpoint the verifier signs
    /// now over the exported range (first and last sequence, anchor, head, time).
    Export {
        #[command(flatten)]
        operator: OperatorArgs,
        /// First sequence number to export.
        #[arg(long, default_value_t = 1)]
        from: u64,
    },
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Verify { public_key, export } => {
            let key = match std::fs::read_to_string(&public_key) {
                Ok(text) => text,
                Err(_) => public_key.clone(),
            };
            let text = std::fs::read_to_string(&export)
                .with_context(|| format!("reading {}", export.display()))?;
            match verify_export(&text, key.trim()) {
                Ok(summary) => {
                    println!(
                        "OK: proves records {}..{} ({} records, contiguous), chained from anchor {} \
                         to head {}, sealed by the export's final checkpoint at {} (Unix time); \
                         {} signed checkpoint(s) inside it verify",
                        summary.first_sequence,
                        summary.last_sequence,
                        summary.records,
                        summary.anchor,
                        summary.head,
                        summary.exported_at_unix,
                        summary.checkpoints
                    );
                    if !summary.from_chain_start() {
                        println!(
                            "NOTE: the export starts at record {}: records before it are not \
                             covered, and the anchor is the proof's only link to them",
                            summary.first_sequence
                        );
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(error) => {
                    println!("FAIL: {error}");
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Export { operator, from } => {
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(async {
                let mut client = AdminClient::new(operator.connect().await?);
                let mut stream = client
                    .export_audit(ExportAuditRequest {
                        from_sequence: from,
                    })
                    .await?
                    .into_inner();
                while let Some(record) = stream.message().await? {
                    println!("{}", String::from_utf8_lossy(&record.record));
                }
                Ok(ExitCode::SUCCESS)
            })
        }
    }
}
