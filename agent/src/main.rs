//! `trustchain-agent`: the device-side daemon.
//!
//! Thin by design: parse the command line, load the config, start tracing, and call the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use trustchain_agent::config::{AgentConfig, EkChoice};
use trustchain_agent::enroll::{enroll, enroll_until_done};
use trustchain_agent::identity::StateDir;
use trustchain_agent::retry::{Backoff, wait_for_tpm, with_tpm};
use trustchain_agent::status::{AgentState, Reporter};
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
    /// Override `verifier_url` (or `verifier_urls`) from the config file with this one address.
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
    /// Print the running agent's state (from `status.json` in the state directory) and exit:
    /// status 0 when it is attesting, 3 when it is waiting (backing off, TPM unavailable,
    /// enrolling), 4 when no status file can be read.
    Status,
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
        config.use_verifier_url(url)?;
    }
    if let Some(dir) = &cli.state_dir {
        config.state_dir = dir.clone();
    }
    Ok(config)
}

/// The TPM handle; does not connect yet.
fn tpm_for(config: &AgentConfig) -> anyhow::Result<Arc<Mutex<EsapiTpm>>> {
    let ak = match config.ek {
        EkChoice::Rsa2048 => AkAlgorithm::Rsa2048,
        EkChoice::EccP256 => AkAlgorithm::EccP256,
    };
    Ok(Arc::new(Mutex::new(EsapiTpm::new(
        &config.tcti,
        &config.state_dir,
        config.ek,
        ak,
    )?)))
}

async fn open_tpm(config: &AgentConfig) -> anyhow::Result<Arc<Mutex<EsapiTpm>>> {
    let tpm = tpm_for(config)?;
    first_contact(config, &tpm).await?;
    Ok(tpm)
}

/// Cleans up after a crashed predecessor and warns about software TPMs.
async fn first_contact(
    config: &AgentConfig,
    tpm: &Arc<Mutex<EsapiTpm>>,
) -> Result<(), trustchain_agent::tpm::TpmError> {
    let flushed = with_tpm(tpm, |t| t.flush_leftovers()).await?;
    if flushed > 0 {
        tracing::info!(flushed, "flushed objects and sessions left in the TPM");
    }
    if with_tpm(tpm, |t| t.is_software()).await? {
        tracing::warn!(
            tcti = %config.tcti,
            "THIS IS A SOFTWARE TPM: it proves nothing about hardware; the verifier admits it \
             only if its trust list explicitly trusts the software TPM's maker"
        );
    }
    Ok(())
}

/// The daemon: never gives up on a TPM or a verifier that is away; it reports what it waits
/// for (`trustchain_agent::status`) and carries on when they are back.
async fn run_daemon(config: &AgentConfig, state: &StateDir) -> anyhow::Result<()> {
    trustchain_agent::service_manager::spawn_watchdog();
    let mut status = Reporter::new(&config.state_dir);
    let tpm = tpm_for(config)?;
    let mut backoff = Backoff::new();
    let mut failures: u32 = 0;
    while let Err(error) = first_contact(config, &tpm).await {
        failures = failures.saturating_add(1);
        wait_for_tpm(
            &tpm,
            &mut backoff,
            &mut failures,
            &mut status,
            error.to_string(),
        )
        .await;
    }
    let enrollment = match state.load() {
        Some(enrollment) => enrollment,
        None => enroll_until_done(config, &tpm, state, &mut status).await,
    };
    trustchain_agent::attest::run_reporting(config, tpm, enrollment, &mut status).await?;
    Ok(())
}

/// `trustchain-agent status`: what the running agent last reported.
fn print_status(config: &AgentConfig) -> ExitCode {
    match trustchain_agent::status::read(&config.state_dir) {
        Ok(status) => {
            let text = serde_json::to_string_pretty(&status).unwrap_or_default();
            println!("{text}");
            if status.state == AgentState::Attesting {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            }
        }
        Err(error) => {
            eprintln!("trustchain-agent: {error}");
            ExitCode::from(4)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = load_config(&cli)?;
    let state = StateDir::open(&config.state_dir)?;
    if let Command::Run = cli.command {
        return run_daemon(&config, &state).await;
    }
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
        // Handled above, before the TPM is opened: neither needs it to answer first.
        Command::Run | Command::Status => {}
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Status = cli.command {
        return match load_config(&cli) {
            Ok(config) => print_status(&config),
            Err(error) => {
                eprintln!("trustchain-agent: {error:#}");
                ExitCode::from(4)
            }
        };
    }
    init_tracing(cli.json_logs);
    // One thread for the reactor: the agent runs one stream and one challenge at a time, and
    // a gateway pays for every thread's stack and allocator arena (docs/field.md). TPM work
    // leaves the reactor on the blocking pool (retry::with_tpm), which the TPM mutex
    // serialises anyway, so one or two blocking threads are enough.
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(2)
        .thread_keep_alive(std::time::Duration::from_secs(30))
        .build()
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
