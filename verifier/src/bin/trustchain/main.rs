//! `trustchain`: the operator CLI.
//!
//! # Layout
//! - `main.rs`: argument parsing and dispatch.
//! - `eventlog.rs`, `ima.rs`, `quote.rs`: offline evidence tools (what tpm2_eventlog and
//!   tpm2_checkquote give people today).
//! - `device.rs`: operator commands on devices (list, show, clear, decommission, history).
//! - `audit.rs`: export the hash-chained history and verify an export offline.
//! - `policy.rs`, `manifest.rs`: learn and check policies offline, import Keylime policies;
//!   create, sign and inspect reference manifests.
//! - `trust_list.rs`: sign and inspect trust lists; import trust documents into a verifier.
//! - `operator.rs`: the operator's mTLS connection to the verifier.
//!
//! Exit status: 0 when the command succeeded and every check held, 1 otherwise.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod audit;
mod device;
mod eventlog;
mod ima;
mod manifest;
mod operator;
mod policy;
mod quote;
mod signing;
mod trust_list;

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
    /// Export the verifier's tamper-evident history, or verify an export offline.
    #[command(subcommand)]
    Audit(audit::Command),
    /// List devices, show why one is untrusted, clear or decommission it, read its history.
    Device(device::Args),
    /// Learn, check offline, and import (Keylime) policies and reference manifests.
    #[command(subcommand)]
    Policy(policy::Command),
    /// Create, sign and inspect reference manifests.
    #[command(subcommand)]
    Manifest(manifest::Command),
    /// Sign or inspect a trust list.
    #[command(subcommand)]
    TrustList(trust_list::Command),
    /// Hand a trust list, manifest or policy to a running verifier.
    Import(trust_list::ImportArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Eventlog(args) => eventlog::run(args),
        Command::Ima(args) => ima::run(args),
        Command::Quote(command) => quote::run(command),
        Command::Audit(command) => audit::run(command),
        Command::Device(args) => device::run(args),
        Command::Policy(command) => policy::run(command),
        Command::Manifest(command) => manifest::run(command),
        Command::TrustList(command) => trust_list::run(command),
        Command::Import(args) => trust_list::import(args),
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
