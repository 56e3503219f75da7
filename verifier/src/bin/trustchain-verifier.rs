//! `trustchain-verifier`: the SOC verifier service.
//!
//! Thin by design: parse the command line, load the config, start tracing, bind, and hand the
//! listener to `trustchain_verifier::server::serve`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use trustchain_verifier::config::VerifierConfig;
use trustchain_verifier::server;
use trustchain_verifier::service::Service;

/// TrustChain verifier: enrolls devices, challenges them continuously, appraises their evidence.
#[derive(Debug, Parser)]
#[command(name = "trustchain-verifier", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the verifier service.
    Serve {
        /// Configuration file (see docs/verifier.example.toml).
        #[arg(long, short, env = "TRUSTCHAIN_VERIFIER_CONFIG")]
        config: PathBuf,
        /// Log as JSON lines instead of text.
        #[arg(long)]
        json_logs: bool,
    },
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

async fn serve(config: PathBuf) -> anyhow::Result<()> {
    let config = VerifierConfig::load(&config)?;
    let service = Service::start(&config).context("starting the verifier")?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    tracing::info!(address = %listener.local_addr()?, "verifier listening");
    tokio::spawn(trustchain_verifier::webhooks::run(
        service.clone(),
        config.webhooks.clone(),
    ));
    if let Some(address) = config.metrics_listen {
        let metrics = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("binding the metrics listener {address}"))?;
        tracing::info!(%address, "metrics on http://{address}/metrics");
        tokio::spawn(trustchain_verifier::metrics::serve(
            metrics,
            service.clone(),
        ));
    }
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
    };
    server::serve(listener, service, shutdown).await?;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Serve { config, json_logs } => {
            init_tracing(json_logs);
            tokio::runtime::Runtime::new()
                .context("starting the async runtime")
                .and_then(|runtime| runtime.block_on(serve(config)))
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("trustchain-verifier: {error:#}");
            ExitCode::from(1)
        }
    }
}
