//! `trustchain ima` (being written).

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Input file.
    file: std::path::PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet: {}", args.file.display())
}
