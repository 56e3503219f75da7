//! `trustchain quote` (being written).

use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Verify a quote against an AK public key.
    Verify,
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet: {command:?}")
}
