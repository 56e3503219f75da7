//! `trustchain-verifier`: the SOC verifier service.
//!
//! Thin by design: parse the command line, load the config, start tracing, bind, and hand the
//! listener to `trustchain_verifier::server::serve`. `backup` and `restore` call
//! `trustchain_verifier::storage::backup`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use trustchain_verifier::config::VerifierConfig;
use trustchain_verifier::device::{EventKind, EventRecord};
use trustchain_verifier::server;
use trustchain_verifier::service::{Service, now_unix_millis};
use trustchain_verifier::storage::{SCHEMA_VERSION, backup};

/// mimalloc rather than glibc's malloc: an appraisal allocates and frees many small buffers
/// (TLS records, h2 frames, protobuf messages, parsed logs) across the runtime's threads, and
/// glibc's allocator was a fifth of the verifier's CPU under load (`docs/benchmarks.md`).
/// The `system-allocator` feature keeps glibc's, for heap profilers that hook malloc (heaptrack).
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Write a consistent backup of the verifier's state into DIR (trustchain-backup.jsonl).
    /// Asks the running verifier over its control socket (`<state_dir>.control`), or reads the
    /// state directory itself when no verifier runs.
    Backup {
        /// The verifier's configuration file (for its state directory).
        #[arg(long, short, env = "TRUSTCHAIN_VERIFIER_CONFIG")]
        config: PathBuf,
        /// Directory to write the backup into (created; must not hold a backup already).
        #[arg(long)]
        out: PathBuf,
    },
    /// Build a new state directory from a backup. Refuses a state directory that is not empty;
    /// checks the backup's digest and audit chain before anything is written.
    Restore {
        /// The backup directory (or the trustchain-backup.jsonl file).
        #[arg(long)]
        from: PathBuf,
        /// The state directory to create.
        #[arg(long)]
        state_dir: PathBuf,
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
    // Webhook files (CA, client certificate) are read first: a bad one stops the start before
    // the state database is touched.
    let webhooks = trustchain_verifier::webhooks::Webhooks::new(&config.webhooks)?;
    let service = Service::start(&config).context("starting the verifier")?;
    // Marks where this process's records begin in the audit chain (trust after a restart must
    // rest on appraisals recorded after this line).
    service
        .storage()
        .append_event(&EventRecord {
            at_unix_millis: now_unix_millis(),
            kind: EventKind::VerifierStarted,
            device_id: String::new(),
            detail: format!(
                "pid {} version {} layout v{SCHEMA_VERSION}",
                std::process::id(),
                env!("CARGO_PKG_VERSION")
            ),
        })
        .context("recording the start in the audit log")?;
    let control = backup::bind_control(&config.state_dir)?;
    tokio::spawn(backup::serve_control(control, service.storage().clone()));
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    tracing::info!(address = %listener.local_addr()?, "verifier listening");
    tokio::spawn(webhooks.run(service.clone()));
    trustchain_verifier::siem::start(&service, &config.siem).context("starting the SIEM export")?;
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
    if let Some(address) = config.dashboard_listen {
        let dashboard = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("binding the dashboard listener {address}"))?;
        tracing::info!(%address, "dashboard on https://{address}/");
        let service = service.clone();
        tokio::spawn(async move {
            if let Err(error) = trustchain_verifier::dashboard::serve(dashboard, service).await {
                tracing::error!(%error, "the dashboard stopped");
            }
        });
    }
    // Under systemd (`verifier/systemd/trustchain-verifier.service`, Type=notify): ready once
    // every listener is bound, watchdog pings from the runtime itself. No-ops without
    // NOTIFY_SOCKET; a failed notification never stops the verifier.
    notify(&[sd_notify::NotifyState::Ready]);
    if let Some(timeout) = sd_notify::watchdog_enabled().filter(|t| !t.is_zero()) {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(timeout / 2);
            loop {
                ticks.tick().await;
                notify(&[sd_notify::NotifyState::Watchdog]);
            }
        });
    }
    // systemd stops a service with SIGTERM; an operator at a terminal uses Ctrl-C.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("shutting down");
        notify(&[sd_notify::NotifyState::Stopping]);
    };
    server::serve(listener, service, shutdown).await?;
    Ok(())
}

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::debug!(%error, "service manager notification not sent");
    }
}

fn take_backup(config: &std::path::Path, out: &std::path::Path) -> anyhow::Result<()> {
    let config = VerifierConfig::load(config)?;
    let (bytes, source) = backup::take(&config.state_dir)
        .with_context(|| format!("backing up {}", config.state_dir.display()))?;
    let summary = backup::inspect(&bytes)?;
    let file = backup::write(out, &bytes)?;
    println!(
        "backup of {} ({}) written to {}: {} entries, {} devices, {} audit records",
        config.state_dir.display(),
        match source {
            backup::Source::Running => "taken by the running verifier",
            backup::Source::Offline => "no verifier running; read directly",
        },
        file.display(),
        summary.entries,
        summary.devices,
        summary.audit_records
    );
    Ok(())
}

fn restore(from: &std::path::Path, state_dir: &std::path::Path) -> anyhow::Result<()> {
    let summary = backup::restore(from, state_dir)
        .with_context(|| format!("restoring {} into {}", from.display(), state_dir.display()))?;
    println!(
        "restored {} into {}: {} entries, {} devices, {} audit records (chain verified)",
        from.display(),
        state_dir.display(),
        summary.entries,
        summary.devices,
        summary.audit_records
    );
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Serve { config, json_logs } => {
            init_tracing(json_logs);
            // The blocking pool runs CPU work (boot-log appraisals, enrollment crypto) and the
            // backup copy. Tokio's default of 512 threads let an enrollment burst (thousands
            // of first appraisals at once) start hundreds of threads, each with its own
            // allocator arena, that only competed for the same cores and kept their memory.
            let cores = std::thread::available_parallelism().map_or(2, usize::from);
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .max_blocking_threads((cores * 2).max(4))
                .build()
                .context("starting the async runtime")
                .and_then(|runtime| runtime.block_on(serve(config)))
        }
        Command::Backup { config, out } => take_backup(&config, &out),
        Command::Restore { from, state_dir } => restore(&from, &state_dir),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("trustchain-verifier: {error:#}");
            ExitCode::from(1)
        }
    }
}
