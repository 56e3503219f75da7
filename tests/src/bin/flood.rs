//! `trustchain-flood`: unknown clients flooding a verifier, on loopback only.
//!
//! At `--rate` connection attempts per second for `--seconds`, from the loopback source
//! addresses in `--sources`: half the connections stall mid-TLS-handshake (a ClientHello record
//! header announcing 512 bytes, 40 of them sent, then silence); of the other half, three in five
//! send bytes that are not TLS at all, and two in five complete the handshake without a client
//! certificate and send one hostile call: a well-formed enrollment with a bogus EK, an oversized
//! one, bytes that are not protobuf, a gzip-compressed one, an Admin or Attestation call without
//! a certificate, and now and then a 5 MiB Admin message. Attempts are paced by the clock (a
//! late tick catches up), so the rate holds on a busy machine.
//! Every attempt has a time limit, in-flight attempts are capped, and the whole run stops by
//! itself; a JSON summary goes to stdout.
//!
//! `trustchain-flood --target 127.0.0.1:PORT --root-pem ROOT.pem [--rate 1000] [--seconds 25]
//! [--sources 127.0.0.2,127.0.0.3]`

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{Mutex, Semaphore};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use trustchain_proto::v1::admin_client::AdminClient;
use trustchain_proto::v1::enrollment_client::EnrollmentClient;
use trustchain_proto::v1::{EnrollRequest, ListDevicesRequest};
use trustchain_tests::faults::hostile::{grpc_frame, gzip_bomb, raw_call};

/// In-flight TLS attempts at most; beyond it an attempt is skipped (and counted), not queued.
const MAX_IN_FLIGHT: usize = 256;
/// Time limit of one attempt (connect, handshake, call).
const ATTEMPT_LIMIT: Duration = Duration::from_secs(3);
/// Longest a stalled connection is held open by the flood itself.
const STALL_LIMIT: Duration = Duration::from_secs(15);

struct Options {
    target: SocketAddr,
    root_pem: String,
    rate: u64,
    seconds: u64,
    sources: Vec<IpAddr>,
}

fn options() -> anyhow::Result<Options> {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let target: SocketAddr = value("--target").context("--target")?.parse()?;
    let sources: Vec<IpAddr> = value("--sources")
        .unwrap_or_else(|| "127.0.0.2".into())
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    // Loopback only: this tool must never be pointed at someone else's network.
    anyhow::ensure!(
        target.ip().is_loopback() && sources.iter().all(IpAddr::is_loopback),
        "the flood runs on loopback only"
    );
    let seconds: u64 = value("--seconds")
        .map(|v| v.parse())
        .transpose()?
        .unwrap_or(25);
    anyhow::ensure!(seconds <= 3600, "--seconds is at most 3600");
    let rate: u64 = value("--rate")
        .map(|v| v.parse())
        .transpose()?
        .unwrap_or(1000);
    anyhow::ensure!(rate <= 5000, "--rate is at most 5000");
    Ok(Options {
        target,
        root_pem: std::fs::read_to_string(value("--root-pem").context("--root-pem")?)?,
        rate,
        seconds,
        sources,
    })
}

#[derive(Default)]
struct Counters {
    attempts: AtomicU64,
    not_tls: AtomicU64,
    not_tls_closed: AtomicU64,
    stalls: AtomicU64,
    stall_closed_within_1s: AtomicU64,
    stall_closed_later: AtomicU64,
    stall_open_at_limit: AtomicU64,
    tls_attempts: AtomicU64,
    skipped: AtomicU64,
    connect_failed: AtomicU64,
    accepted_calls: AtomicU64,
    outcomes: Mutex<BTreeMap<String, u64>>,
}

async fn stall(target: SocketAddr, source: IpAddr, counters: Arc<Counters>, end: Instant) {
    counters.stalls.fetch_add(1, Ordering::Relaxed);
    let connect = async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(source, 0))?;
        socket.connect(target).await
    };
    let Ok(Ok(mut stream)) = tokio::time::timeout(ATTEMPT_LIMIT, connect).await else {
        counters.connect_failed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    // A TLS handshake record announcing 512 bytes, of which 40 arrive.
    let mut partial = vec![
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    partial.resize(45, 0x42);
    let _ = stream.write_all(&partial).await;
    let sent = Instant::now();
    let limit = STALL_LIMIT.min(end.saturating_duration_since(sent) + Duration::from_secs(1));
    let mut buffer = [0u8; 1024];
    // Holds until the verifier closes the connection or the limit passes; whatever it sends
    // (nothing, or an alert) is read and dropped.
    let closed = tokio::time::timeout(limit, async {
        for _ in 0..64 {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
        true
    })
    .await
    .is_ok();
    let counter = if !closed {
        &counters.stall_open_at_limit
    } else if sent.elapsed() < Duration::from_secs(1) {
        &counters.stall_closed_within_1s
    } else {
        &counters.stall_closed_later
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A connection that sends bytes that are not TLS (an HTTP/1 request line), then waits for the
/// verifier to close it.
async fn not_tls(target: SocketAddr, source: IpAddr, counters: Arc<Counters>) {
    counters.not_tls.fetch_add(1, Ordering::Relaxed);
    let exchange = async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(source, 0))?;
        let mut stream = socket.connect(target).await?;
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: verifier\r\n\r\n")
            .await?;
        let mut buffer = [0u8; 512];
        for _ in 0..16 {
            if stream.read(&mut buffer).await? == 0 {
                break;
            }
        }
        Ok::<_, std::io::Error>(())
    };
    match tokio::time::timeout(ATTEMPT_LIMIT, exchange).await {
        Ok(Ok(())) => {
            counters.not_tls_closed.fetch_add(1, Ordering::Relaxed);
        }
        _ => {
            counters.connect_failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn hostile_call(
    kind: usize,
    options: &Options,
    source: IpAddr,
    counters: &Counters,
) -> anyhow::Result<(&'static str, i32)> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&options.root_pem))
        .domain_name("localhost");
    let channel: Channel = Endpoint::from_shared(format!("https://{}", options.target))?
        .tls_config(tls)?
        .local_address(Some(source))
        .connect_timeout(ATTEMPT_LIMIT)
        .connect()
        .await
        .inspect_err(|_| {
            counters.connect_failed.fetch_add(1, Ordering::Relaxed);
        })?;
    let bogus = |size: usize| EnrollRequest {
        ek_certificate: vec![0x30; size],
        ek_intermediates: Vec::new(),
        ek_public: vec![0x00, 0x01, 0x00, 0x0b],
        ak_public: vec![0x00, 0x01],
        facts: None,
    };
    fn code<T>(result: Result<tonic::Response<T>, tonic::Status>) -> i32 {
        match result {
            Ok(_) => 0,
            Err(status) => status.code() as i32,
        }
    }
    let limit = ATTEMPT_LIMIT;
    Ok(match kind % 8 {
        0 => (
            "bogus_enrollment",
            code(EnrollmentClient::new(channel).begin(bogus(600)).await),
        ),
        1 => (
            "oversized_enrollment",
            code(
                EnrollmentClient::new(channel)
                    .begin(bogus(200 * 1024))
                    .await,
            ),
        ),
        2 => {
            let outcome = raw_call(
                channel,
                "/trustchain.v1.Enrollment/Begin",
                grpc_frame(false, &[0xff; 64]),
                None,
                limit,
            )
            .await?;
            ("malformed_enrollment", outcome.code.unwrap_or(-1))
        }
        3 => {
            let outcome = raw_call(
                channel,
                "/trustchain.v1.Enrollment/Begin",
                grpc_frame(true, &gzip_bomb(4 * 1024 * 1024)),
                Some("gzip"),
                limit,
            )
            .await?;
            ("compressed_enrollment", outcome.code.unwrap_or(-1))
        }
        4 => (
            "admin_without_certificate",
            code(
                AdminClient::new(channel)
                    .list_devices(ListDevicesRequest {})
                    .await,
            ),
        ),
        5 => {
            let outcome = raw_call(
                channel,
                "/trustchain.v1.Attestation/Attest",
                grpc_frame(false, &[0x0a, 0x02, 0x0a, 0x00]),
                None,
                limit,
            )
            .await?;
            ("attest_without_certificate", outcome.code.unwrap_or(-1))
        }
        6 if counters.tls_attempts.load(Ordering::Relaxed) % 50 < 8 => {
            let outcome = raw_call(
                channel,
                "/trustchain.v1.Admin/ImportTrustList",
                grpc_frame(false, &vec![0x0a; 5 * 1024 * 1024]),
                None,
                limit,
            )
            .await?;
            (
                "oversized_admin_without_certificate",
                outcome.code.unwrap_or(-1),
            )
        }
        _ => {
            let outcome = raw_call(
                channel,
                "/trustchain.v1.Enrollment/Complete",
                grpc_frame(false, &[0x0a, 0x10, 0x01, 0x02, 0x03]),
                None,
                limit,
            )
            .await?;
            ("truncated_completion", outcome.code.unwrap_or(-1))
        }
    })
}

async fn flood(options: Options) -> anyhow::Result<serde_json::Value> {
    let options = Arc::new(options);
    let counters = Arc::new(Counters::default());
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let started = Instant::now();
    let end = started + Duration::from_secs(options.seconds);
    let mut ticker = tokio::time::interval(Duration::from_millis(10));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tasks = tokio::task::JoinSet::new();
    let mut index: u64 = 0;
    let total = options.rate.saturating_mul(options.seconds);
    while Instant::now() < end && index < total {
        ticker.tick().await;
        // Paced by the clock: the attempts due by now, whatever the ticks managed.
        let due = ((started.elapsed().as_secs_f64() * options.rate as f64) as u64).min(total);
        while index < due {
            index += 1;
            counters.attempts.fetch_add(1, Ordering::Relaxed);
            let source = options
                .sources
                .get(usize::try_from(index).unwrap_or(0) % options.sources.len().max(1))
                .copied()
                .unwrap_or(IpAddr::from([127, 0, 0, 2]));
            let counters = counters.clone();
            if index.is_multiple_of(2) {
                tasks.spawn(stall(options.target, source, counters, end));
                continue;
            }
            if (index / 2) % 5 >= 2 {
                tasks.spawn(not_tls(options.target, source, counters));
                continue;
            }
            let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                counters.skipped.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let options = options.clone();
            let kind = usize::try_from(index / 10).unwrap_or(0);
            tasks.spawn(async move {
                counters.tls_attempts.fetch_add(1, Ordering::Relaxed);
                let outcome = tokio::time::timeout(
                    ATTEMPT_LIMIT * 2,
                    hostile_call(kind, &options, source, &counters),
                )
                .await;
                drop(permit);
                let key = match outcome {
                    Ok(Ok((name, code))) => {
                        if code == 0 {
                            counters.accepted_calls.fetch_add(1, Ordering::Relaxed);
                        }
                        format!("{name}:{}", tonic::Code::from(code).description())
                    }
                    Ok(Err(_)) => "connection_or_transport_error".into(),
                    Err(_) => "attempt_timed_out".into(),
                };
                *counters.outcomes.lock().await.entry(key).or_insert(0) += 1;
            });
        }
        // Reap finished tasks as we go so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    let flood_seconds = started.elapsed().as_secs_f64();
    // Every task has its own limit; this bound only guards against a bug in them.
    let _ = tokio::time::timeout(STALL_LIMIT + Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let attempts = load(&counters.attempts);
    Ok(serde_json::json!({
        "seconds": flood_seconds,
        "attempts": attempts,
        "attempts_per_second": attempts as f64 / flood_seconds.max(0.001),
        "stalls": load(&counters.stalls),
        "not_tls": load(&counters.not_tls),
        "not_tls_closed_by_verifier": load(&counters.not_tls_closed),
        "stall_closed_within_1s": load(&counters.stall_closed_within_1s),
        "stall_closed_later": load(&counters.stall_closed_later),
        "stall_open_at_limit": load(&counters.stall_open_at_limit),
        "tls_attempts": load(&counters.tls_attempts),
        "skipped_at_in_flight_cap": load(&counters.skipped),
        "connect_failed": load(&counters.connect_failed),
        "accepted_calls": load(&counters.accepted_calls),
        "outcomes": counters.outcomes.lock().await.clone(),
    }))
}

fn main() -> ExitCode {
    if std::env::args().any(|a| a == "--help" || a == "-h") {
        println!(
            "trustchain-flood --target 127.0.0.1:PORT --root-pem ROOT.pem [--rate 1000] \
             [--seconds 25] [--sources 127.0.0.2,127.0.0.3]\n\n\
             Floods a verifier on loopback with unknown clients; prints a JSON summary."
        );
        return ExitCode::SUCCESS;
    }
    let options = match options() {
        Ok(options) => options,
        Err(error) => {
            eprintln!("flood: {error:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("flood: {error}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(flood(options)) {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("flood failed: {error:#}");
            ExitCode::from(1)
        }
    }
}
