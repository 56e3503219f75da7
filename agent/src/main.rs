//! `trustchain-agent`: the device-side daemon.
//!
//! Thin by design: parse the command line, load the config, start tracing, and call the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use trustchain_agent::config::{AgentConfig, EkChoice};
use trustchain_agent::enroll::{enroll, with_tpm};
use trustchain_agent::identity::StateDir;
use trustchain_agent::tpm::Tpm;
use trustchain_agent::tpm::esapi::{AkAlgorithm, EsapiTpm};

/// TrustChain agent: proves this device's state to the verifier with its TPM.
#[derive(Debug, Parser)]
#[command(name = "trustchain-agent", version, about)]
struct Cli {
    /// Configuration file (see docs/agent.example.toml).
    #[arg(long, short, env = "TRUSTCHAIN_AGENT_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Override `tcti` from the config file.
    #[arg(long, global = true)]
    tcti: Option<String>,
    /// Override `verifier_url` from the config file.
    #[arg(long, global = true)]
    verifier_url: Option<String>,
    /// Override `state_dir` from the config file.
    #[arg(long, global = true)]
    state_dir: Option<PathBuf>,
    /// Log as JSON lines.
    #[arg(long, global = true)]
    json_logs: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Enroll (if not enrolled yet) and attest continuously.
    Run,
    /// Enroll with the verifier and exit. With --force, enroll again even if already enrolled.
    Enroll {
        #[arg(long)]
        force: bool,
        /// Create a new AK first (AK rotation).
        #[arg(long)]
        rotate_ak: bool,
    },
    /// Print what the TPM holds (EK certificate size, software TPM or not) and exit.
    Probe,
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn load_config(cli: &Cli) -> anyhow::Result<AgentConfig> {
    let path = cli
        .config
        .as_ref()
        .context("--config (or TRUSTCHAIN_AGENT_CONFIG) is required")?;
    let mut config = AgentConfig::load(path)?;
    if let Some(tcti) = &cli.tcti {
        config.tcti = tcti.clone();
    }
    if let Some(url) = &cli.verifier_url {
        config.verifier_url = url.clone();
    }
    if let Some(dir) = &cli.state_dir {
        config.state_dir = dir.clone();
    }
    Ok(config)
}

async fn open_tpm(config: &AgentConfig) -> anyhow::Result<Arc<Mutex<EsapiTpm>>> {
    let ak = match config.ek {
        EkChoice::Rsa2048 => AkAlgorithm::Rsa2048,
        EkChoice::EccP256 => AkAlgorithm::EccP256,
    };
    let tpm = Arc::new(Mutex::new(EsapiTpm::new(
        &config.tcti,
        &config.state_dir,
        config.ek,
        ak,
    )?));
    let flushed = with_tpm(&tpm, |t| t.flush_leftovers()).await?;
    if flushed > 0 {
        tracing::info!(flushed, "flushed objects and sessions left in the TPM");
    }
    if with_tpm(&tpm, |t| t.is_software()).await? {
        tracing::warn!(
            tcti = %config.tcti,
            "THIS IS A SOFTWARE TPM: it proves nothing about hardware; the verifier admits it \
             only if its trust list explicitly trusts the software TPM's maker"
        );
    }
    Ok(tpm)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = load_config(&cli)?;
    let state = StateDir::open(&config.state_dir)?;
    let tpm = open_tpm(&config).await?;
    match cli.command {
        Command::Probe => {
            let ek = config.ek;
            let (cert, software) =
                with_tpm(&tpm, move |t| Ok((t.ek_certificate(ek)?, t.is_software()?))).await?;
            println!(
                "EK certificate: {} bytes; software TPM: {software}",
                cert.len()
            );
        }
        Command::Enroll { force, rotate_ak } => {
            if rotate_ak {
                with_tpm(&tpm, |t| t.rotate_ak()).await?;
            }
            if force || rotate_ak || state.load().is_none() {
                let enrolled = enroll(&config, &tpm, &state).await?;
                println!("enrolled as {}", enrolled.device_id);
            } else if let Some(enrolled) = state.load() {
                println!(
                    "already enrolled as {} (use --force to enroll again)",
                    enrolled.device_id
                );
            }
        }
        Command::Run => {
            let enrollment = match state.load() {
                Some(enrollment) => enrollment,
                None => enroll(&config, &tpm, &state).await?,
            };
            trustchain_agent::attest::run(&config, tpm, enrollment).await?;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.json_logs);
    let outcome = tokio::runtime::Runtime::new()
        .context("starting the async runtime")
        .and_then(|runtime| runtime.block_on(run(cli)));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("trustchain-agent: {error:#}");
            ExitCode::from(1)
        }
    }
}
