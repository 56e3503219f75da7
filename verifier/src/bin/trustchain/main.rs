//! `trustchain`: the operator CLI.
//!
//! # Layout
//! - `main.rs`: argument parsing and dispatch.
//! - `eventlog.rs`, `ima.rs`, `quote.rs`: offline evidence tools (what tpm2_eventlog and
//!   tpm2_checkquote give people today).
//!
//! Exit status: 0 when the command succeeded and every check held, 1 otherwise.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod eventlog;
mod ima;
mod quote;

/// TrustChain operator CLI.
#[derive(Debug, Parser)]
#[command(name = "trustchain", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Parse and replay a TCG PC Client UEFI event log (binary_bios_measurements).
    Eventlog(eventlog::Args),
    /// Parse and replay a Linux IMA measurement list (ASCII or binary).
    Ima(ima::Args),
    /// Work with TPM 2.0 quotes.
    #[command(subcommand)]
    Quote(quote::Command),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Eventlog(args) => eventlog::run(args),
        Command::Ima(args) => ima::run(args),
        Command::Quote(command) => quote::run(command),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            // One line, naming the offset and the problem when a parser failed.
            eprintln!("error: {error:#}");
            ExitCode::from(1)
        }
    }
}
