//! Load generator: many simulated devices in one process, each with a software TPM model and its
//! own mTLS attestation stream, against a real `trustchain-verifier` process on loopback.
//!
//! `trustchain-loadgen --devices 1000 --interval 10 --ima 10 --tampered 0.01 --seconds 60
//! [--boot-log-kib 64]`
//! prints appraisals per second, appraisal latency (verifier histogram and client round trip),
//! the verifier's CPU and resident memory per connected device, and whether every tampered device
//! was caught and no honest one flagged. Loopback only; every loop is bounded by --seconds.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{Mutex, Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use trustchain_ca::Authority;
use trustchain_proto::evidence_messages;
use trustchain_proto::v1::attestation_client::AttestationClient;
use trustchain_proto::v1::enrollment_client::EnrollmentClient;
use trustchain_proto::v1::{
    ActivationResponse, AgentMessage, Hello, TrustState, agent_message, verifier_message,
};
use trustchain_swtpm::{BootProfile, TestMakers};
use trustchain_tests::ClientPem;
use trustchain_tests::soft_tpm::{MeasuredFile, SoftTpm, answer, enroll_request};

/// The same allocator as the verifier's: the load generator shares the machine's two cores with
/// the verifier it measures, so its own allocation cost is taken off the verifier's share.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Options {
    devices: usize,
    interval: u64,
    ima: usize,
    /// Boot log size in KiB (0: the simulated firmware's own, about 3 KiB).
    boot_log_kib: usize,
    /// Send large evidence whole instead of in parts, as agents before `EvidencePart` did (to
    /// measure what the parts save).
    whole_evidence: bool,
    tampered: f64,
    seconds: u64,
}

fn options() -> anyhow::Result<Options> {
    let args: Vec<String> = std::env::args().collect();
    let get = |name: &str, default: &str| -> String {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_else(|| default.into())
    };
    Ok(Options {
        devices: get("--devices", "200").parse()?,
        interval: get("--interval", "10").parse()?,
        ima: get("--ima", "10").parse()?,
        tampered: get("--tampered", "0.02").parse()?,
        boot_log_kib: get("--boot-log-kib", "0").parse()?,
        whole_evidence: args.iter().any(|a| a == "--whole-evidence"),
        seconds: get("--seconds", "60").parse()?,
    })
}

#[derive(Default)]
struct Stats {
    answers: AtomicU64,
    /// Round trips of answers without the boot log (a quote and new IMA entries: the issue's
    /// workload), with when their evidence was sent.
    round_trips_micros: Mutex<Vec<(Instant, u64)>>,
    /// Round trips of answers that carried the boot log (each device's first, at enrollment).
    first_round_trips_micros: Mutex<Vec<u64>>,
}

fn proc_figures(pid: u32) -> (u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    (rss_kib, ticks as f64 / 100.0)
}

/// A point of the run: when, verdicts so far, the verifier's and the load generator's CPU
/// seconds so far.
fn mark(stats: &Stats, verifier: u32) -> (Instant, u64, f64, f64) {
    let (_, cpu) = proc_figures(verifier);
    let (_, own_cpu) = proc_figures(std::process::id());
    (
        Instant::now(),
        stats.answers.load(Ordering::Relaxed),
        cpu,
        own_cpu,
    )
}

async fn metric(port: u16, name: &str) -> f64 {
    let output = Command::new("curl")
        .args(["-s", &format!("http://127.0.0.1:{port}/metrics")])
        .output();
    let text = output
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

#[allow(clippy::too_many_lines)]
async fn run() -> anyhow::Result<()> {
    let opts = options()?;
    let dir = tempfile::Builder::new()
        .prefix("trustchain-loadgen-")
        .tempdir()?;
    let ca = Authority::create(&dir.path().join("ca"), "Loadgen")?;
    let server = ca.issue_verifier(&["localhost".into()], &["127.0.0.1".parse()?])?;
    std::fs::write(
        dir.path().join("verifier.pem"),
        format!("{}{}", server.pem, ca.issuing_pem()),
    )?;
    trustchain_ca::files::write_secret(
        &dir.path().join("verifier.key.pem"),
        server.key_pem.unwrap_or_default().as_bytes(),
    )?;
    let makers = TestMakers::generate()?;
    let (root, intermediate) = makers.trusted.write_pem(dir.path())?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    std::fs::write(
        dir.path().join("verifier.toml"),
        format!(
            "listen = \"127.0.0.1:{port}\"\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\nstate_dir = {:?}\nca_dir = {:?}\ntls_certificate = {:?}\ntls_key = {:?}\nmaker_anchors = [{root:?}]\nmaker_intermediates = [{intermediate:?}]\nmax_pending_enrollments = 100000\n[attestation]\ndefault_interval_seconds = {}\n",
            dir.path().join("state"),
            dir.path().join("ca"),
            dir.path().join("verifier.pem"),
            dir.path().join("verifier.key.pem"),
            opts.interval
        ),
    )?;
    let binary = std::env::current_exe()?
        .parent()
        .context("dir")?
        .join("trustchain-verifier");
    let mut verifier = Command::new(&binary)
        .args(["serve", "--config"])
        .arg(dir.path().join("verifier.toml"))
        // The load generator's own runtime may be sized with it; the verifier keeps its own.
        .env_remove("TOKIO_WORKER_THREADS")
        .env(
            "RUST_LOG",
            std::env::var("LOADGEN_VERIFIER_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(
            std::env::var_os("LOADGEN_VERIFIER_LOG_FILE")
                .map_or_else(|| dir.path().join("verifier.log"), std::path::PathBuf::from),
        )?)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let pid = verifier.id();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss_baseline, _) = proc_figures(pid);
    let root_pem = ca.root_pem().to_string();
    let root_pem_bound = root_pem.clone();
    let issuing_pem = ca.issuing_pem().to_string();
    let url = format!("https://127.0.0.1:{port}");
    let connect_from = move |identity: Option<Identity>, source: Option<std::net::IpAddr>| {
        let url = url.clone();
        let root_pem = root_pem.clone();
        async move {
            let mut tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(root_pem))
                .domain_name("localhost");
            if let Some(identity) = identity {
                tls = tls.identity(identity);
            }
            Ok::<Channel, anyhow::Error>(
                Endpoint::from_shared(url)?
                    .tls_config(tls)?
                    .local_address(source)
                    .connect()
                    .await?,
            )
        }
    };
    let connect = {
        let connect_from = connect_from.clone();
        move |identity: Option<Identity>| connect_from(identity, None)
    };
    let mut started_up = false;
    for _ in 0..100 {
        if connect(None).await.is_ok() {
            started_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::ensure!(started_up, "verifier did not start");
    // The verifier rate-limits enrollment per source address (as it must, facing the internet),
    // so the simulated fleet enrolls as a real one does: from many addresses, here 25 devices
    // per loopback address (50 calls, within one source's burst).
    // Each device later attests from the same address, so no address holds more than 25 of the
    // concurrent handshakes the verifier allows one source.
    let source_for = |device: usize| -> anyhow::Result<std::net::IpAddr> {
        let group = device / 25;
        Ok(std::net::IpAddr::from([
            127,
            1,
            u8::try_from(group / 250).context("at most 62,500 devices")?,
            u8::try_from(group % 250 + 1).unwrap_or(1),
        ]))
    };
    let mut enrollment_channels = Vec::new();
    for group in 0..opts.devices.div_ceil(25) {
        enrollment_channels.push(connect_from(None, Some(source_for(group * 25)?)).await?);
    }

    // Build and enroll the fleet.
    let started = Instant::now();
    let tampered_count = ((opts.devices as f64) * opts.tampered).ceil() as usize;
    // Real boot logs are 15-75 KiB (`../shared/testdata/eventlogs`), most of it Secure Boot
    // variables holding certificates: --boot-log-kib grows the db variable to reach that size.
    let mut profile = BootProfile::default_linux();
    let log_len = |profile: &BootProfile| profile.encode_log(&profile.events()).len();
    let natural = log_len(&profile);
    let wanted = opts.boot_log_kib * 1024;
    if wanted > natural {
        // The db variable is logged more than once: grow it once, see how much the log grew
        // per byte, and size it from that.
        let base = profile.db.len();
        profile.db.resize(base + 1024, 0x5a);
        let per_byte = (log_len(&profile).saturating_sub(natural) as f64 / 1024.0).max(1.0);
        profile
            .db
            .resize(base + ((wanted - natural) as f64 / per_byte) as usize, 0x5a);
    }
    let boot_log_bytes = log_len(&profile);
    let gate = Arc::new(Semaphore::new(32));
    let mut enrolls = Vec::new();
    for i in 0..opts.devices {
        let label = format!("sim-{i:06}");
        let tpm = SoftTpm::new(&makers.trusted, &label, &profile)?;
        let mut client = EnrollmentClient::new(
            enrollment_channels
                .get(i / 25)
                .context("enrollment channel")?
                .clone(),
        );
        let gate = gate.clone();
        let issuing_pem = issuing_pem.clone();
        enrolls.push(tokio::spawn(async move {
            let _permit = gate.acquire().await?;
            let challenge = client
                .begin(enroll_request(&tpm, &label))
                .await?
                .into_inner();
            let secret =
                tpm.activate_credential(&challenge.credential_blob, &challenge.encrypted_secret)?;
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            let csr = rcgen::CertificateParams::default().serialize_request(&key)?;
            let result = client
                .complete(ActivationResponse {
                    attempt_id: challenge.attempt_id,
                    secret,
                    client_csr: csr.der().to_vec(),
                })
                .await?
                .into_inner();
            let cert = pem::encode(&pem::Pem::new("CERTIFICATE", result.client_certificate))
                + &issuing_pem;
            Ok::<_, anyhow::Error>((
                tpm,
                result.device_id,
                ClientPem {
                    certificate_pem: cert,
                    key_pem: key.serialize_pem(),
                },
            ))
        }));
    }
    let mut fleet = Vec::new();
    for handle in enrolls {
        fleet.push(handle.await??);
    }
    let enrolled_in = started.elapsed();
    println!(
        "enrolled {} devices in {:.1}s ({:.0}/s)",
        fleet.len(),
        enrolled_in.as_secs_f64(),
        fleet.len() as f64 / enrolled_in.as_secs_f64()
    );

    // Connect every device's own mTLS channel first (handshakes are not appraisals), as the
    // agent does: one TLS 1.3 connection each, whose exporter the device binds its quotes to.
    let connect_started = Instant::now();
    let (bound_url, bound_root) = (format!("https://127.0.0.1:{port}"), root_pem_bound.clone());
    let mut connecting = Vec::new();
    let gate = Arc::new(Semaphore::new(64));
    for (index, (tpm, device_id, identity)) in fleet.into_iter().enumerate() {
        let (url, root) = (bound_url.clone(), bound_root.clone());
        let gate = gate.clone();
        let source = source_for(index)?;
        connecting.push(tokio::spawn(async move {
            let _permit = gate.acquire().await?;
            let channel =
                trustchain_tests::bound_channel(&url, &root, &identity, Some(source)).await?;
            Ok::<_, anyhow::Error>((tpm, device_id, channel))
        }));
    }
    let mut fleet = Vec::new();
    for handle in connecting {
        fleet.push(handle.await??);
    }
    println!(
        "connected {} mTLS channels in {:.1}s",
        fleet.len(),
        connect_started.elapsed().as_secs_f64()
    );

    // The files each round measures, the same on every device (a fleet runs the same
    // software): computed once here, not once per device and round.
    let measured: Arc<Vec<Vec<MeasuredFile>>> = Arc::new(
        (0..opts.seconds / opts.interval.max(1) + 4)
            .map(|round| {
                (0..opts.ima as u64)
                    .map(|k| measured_file(round, k))
                    .collect::<Vec<_>>()
            })
            .collect(),
    );

    // Attest.
    let stats = Arc::new(Stats::default());
    let deadline = Instant::now() + Duration::from_secs(opts.seconds);
    let tamper_at = Instant::now() + Duration::from_secs(opts.seconds / 2);
    let attest_clock = Instant::now();
    let caught = Arc::new(AtomicU64::new(0));
    let false_alarms = Arc::new(AtomicU64::new(0));
    let detection_micros = Arc::new(Mutex::new(Vec::new()));
    let connected = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (index, (mut tpm, device_id, channel)) in fleet.into_iter().enumerate() {
        let tampered = index < tampered_count;
        let (stats, caught, false_alarms, detection_micros, connected) = (
            stats.clone(),
            caught.clone(),
            false_alarms.clone(),
            detection_micros.clone(),
            connected.clone(),
        );
        let ima_per_interval = opts.ima;
        let measured = measured.clone();
        let whole_evidence = opts.whole_evidence;
        // A fleet's devices do not all connect in the same instant: each stream opens at its
        // own phase within the first interval, so challenges arrive spread as in the field.
        let phase = Duration::from_secs(opts.interval).mul_f64(index as f64 / opts.devices as f64);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(phase).await;
            let (tx, rx) = mpsc::channel(4);
            tx.send(AgentMessage {
                body: Some(agent_message::Body::Hello(Hello {
                    device_id: device_id.clone(),
                    agent_version: "loadgen".into(),
                })),
            })
            .await?;
            let binding = channel.binding;
            let mut inbound = AttestationClient::new(channel.channel)
                .attest(ReceiverStream::new(rx))
                .await?
                .into_inner();
            connected.fetch_add(1, Ordering::Relaxed);
            let mut sent_at = Instant::now();
            let mut sent_boot_log = false;
            let mut tampered_at: Option<Instant> = None;
            let mut round = 0u64;
            while Instant::now() < deadline {
                let Ok(Ok(Some(message))) =
                    tokio::time::timeout(deadline - Instant::now(), inbound.message()).await
                else {
                    break;
                };
                match message.body {
                    Some(verifier_message::Body::Challenge(challenge)) => {
                        match usize::try_from(round).ok().and_then(|r| measured.get(r)) {
                            Some(files) => files.iter().for_each(|file| tpm.measure_shared(file)),
                            // More rounds than foreseen (re-challenges): measured here.
                            None => (0..ima_per_interval as u64)
                                .for_each(|k| tpm.measure_shared(&measured_file(round, k))),
                        }
                        round += 1;
                        let evidence = answer(
                            &mut tpm,
                            &challenge,
                            &binding.qualifying_data(&challenge.nonce),
                        )?;
                        sent_at = Instant::now();
                        sent_boot_log = challenge.want_boot_log;
                        let messages = if whole_evidence {
                            vec![AgentMessage {
                                body: Some(agent_message::Body::Evidence(evidence)),
                            }]
                        } else {
                            evidence_messages(evidence)
                        };
                        for message in messages {
                            tx.send(message).await?;
                        }
                    }
                    Some(verifier_message::Body::Verdict(verdict)) => {
                        stats.answers.fetch_add(1, Ordering::Relaxed);
                        // Tamper right after a verdict, so detection waits for the next challenge
                        // as it would for an implant landing at any moment between two.
                        if tampered && tampered_at.is_none() && Instant::now() >= tamper_at {
                            tpm.extend_unlisted(4, b"implant");
                            tampered_at = Some(Instant::now());
                        }
                        let micros = sent_at.elapsed().as_micros() as u64;
                        if sent_boot_log {
                            stats.first_round_trips_micros.lock().await.push(micros);
                        } else {
                            stats
                                .round_trips_micros
                                .lock()
                                .await
                                .push((sent_at, micros));
                        }
                        if verdict.state == TrustState::Untrusted as i32 {
                            match tampered_at {
                                Some(at) => {
                                    caught.fetch_add(1, Ordering::Relaxed);
                                    detection_micros
                                        .lock()
                                        .await
                                        .push(at.elapsed().as_micros() as u64);
                                }
                                None => {
                                    false_alarms.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            break;
                        }
                    }
                    None => {}
                }
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    let attest_started = Instant::now();
    let (rss_start, cpu_start) = proc_figures(pid);
    let answers_start = stats.answers.load(Ordering::Relaxed);
    let (_, own_cpu_start) = proc_figures(std::process::id());
    // The steady state starts one interval after every device's first (full) appraisal: the
    // enrollment-time burst of boot logs is reported on its own.
    let steady_from = {
        let stats = stats.clone();
        let (devices, interval) = (opts.devices, Duration::from_secs(opts.interval));
        tokio::spawn(async move {
            while stats.first_round_trips_micros.lock().await.len() < devices
                && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            tokio::time::sleep(interval).await;
            mark(&stats, pid)
        })
    };
    // The steady state ends at the deadline, before devices stop (each stops at its own pace).
    let steady_until = {
        let stats = stats.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(deadline.into()).await;
            mark(&stats, pid)
        })
    };
    // Resident memory once a second through the steady state (while every stream is open): one
    // reading moves by several KiB per device with the allocator's timing of returning pages.
    let rss_samples = {
        let stats = stats.clone();
        let devices = opts.devices;
        tokio::spawn(async move {
            let mut samples = Vec::new();
            while stats.first_round_trips_micros.lock().await.len() < devices
                && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            while Instant::now() + Duration::from_secs(2) < deadline {
                tokio::time::sleep(Duration::from_secs(1)).await;
                samples.push(proc_figures(pid).0);
            }
            samples.sort_unstable();
            samples
        })
    };
    let mut failures = 0;
    for task in tasks {
        if !matches!(task.await, Ok(Ok(()))) {
            failures += 1;
        }
    }
    let elapsed = attest_started.elapsed().as_secs_f64();
    let (rss_end, cpu_end) = proc_figures(pid);
    let (_, own_cpu_end) = proc_figures(std::process::id());
    let answers_end = stats.answers.load(Ordering::Relaxed);
    let answers = answers_end - answers_start;
    let (steady_at, steady_answers, steady_cpu, steady_own_cpu) = steady_from.await?;
    let (steady_end, steady_end_answers, steady_end_cpu, steady_end_own_cpu) = steady_until.await?;
    let steady_seconds = steady_end
        .saturating_duration_since(steady_at)
        .as_secs_f64();
    let pass = metric(
        metrics_port,
        "trustchain_appraisals_total{outcome=\"pass\"}",
    )
    .await;
    let fail = metric(
        metrics_port,
        "trustchain_appraisals_total{outcome=\"fail\"}",
    )
    .await;
    let latency_sum = metric(metrics_port, "trustchain_appraisal_duration_seconds_sum").await;
    let latency_count = metric(metrics_port, "trustchain_appraisal_duration_seconds_count").await;
    let commit_sum = metric(metrics_port, "trustchain_commit_wait_seconds_sum").await;
    let commit_count = metric(metrics_port, "trustchain_commit_wait_seconds_count").await;
    let commit_within_10ms = metric(
        metrics_port,
        "trustchain_commit_wait_seconds_bucket{le=\"0.01\"}",
    )
    .await;
    // The steady round trips, and where their tail comes from: the p99 of each second (a
    // periodic stall, e.g. a flush or a timer, shows as regular spikes; CPU contention as noise).
    let steady: Vec<(Instant, u64)> = stats
        .round_trips_micros
        .lock()
        .await
        .iter()
        .filter(|(sent, _)| *sent >= steady_at && *sent < steady_end)
        .copied()
        .collect();
    let mut round_trips: Vec<u64> = steady.iter().map(|(_, micros)| *micros).collect();
    round_trips.sort_unstable();
    let per_second_p99: Vec<f64> = {
        let mut seconds: std::collections::BTreeMap<u64, Vec<u64>> = Default::default();
        for (sent, micros) in &steady {
            seconds
                .entry(sent.duration_since(steady_at).as_secs())
                .or_default()
                .push(*micros);
        }
        seconds
            .into_values()
            .map(|mut v| {
                v.sort_unstable();
                percentile_ms(&v, 0.99)
            })
            .collect()
    };
    let mut first_round_trips = stats.first_round_trips_micros.lock().await.clone();
    first_round_trips.sort_unstable();
    let pct = percentile_ms;
    let mut detections = detection_micros.lock().await.clone();
    detections.sort_unstable();
    println!(
        "devices {}  connected {}  interval {}s  IMA entries per answer {}  boot log {:.1} KiB  run {:.0}s",
        opts.devices,
        connected.load(Ordering::Relaxed),
        opts.interval,
        opts.ima,
        boot_log_bytes as f64 / 1024.0,
        elapsed
    );
    println!(
        "appraisals: {:.0}/s end to end ({} verdicts; verifier counted {pass:.0} pass, {fail:.0} fail)",
        answers as f64 / elapsed,
        answers
    );
    println!(
        "appraisal time in the verifier: mean {:.2} ms; wait for the durable commit: mean {:.2} ms, {:.2} % over 10 ms (whole run)",
        ratio(latency_sum, latency_count) * 1000.0,
        ratio(commit_sum, commit_count) * 1000.0,
        ratio(commit_count - commit_within_10ms, commit_count) * 100.0
    );
    let steady_count = steady_end_answers.saturating_sub(steady_answers);
    if steady_seconds < 1.0 {
        println!(
            "steady state not reached: the first appraisals ended less than one interval before the run did; run longer"
        );
    } else {
        println!(
            "steady state (from {:.0}s, one interval after the last first appraisal, to the end, {:.0}s): {:.0} appraisals/s; verifier CPU {:.0}% of one core = {:.0} us per appraisal; load generator CPU {:.0}%",
            steady_at.duration_since(attest_clock).as_secs_f64(),
            steady_seconds,
            steady_count as f64 / steady_seconds.max(f64::EPSILON),
            (steady_end_cpu - steady_cpu) / steady_seconds.max(f64::EPSILON) * 100.0,
            (steady_end_cpu - steady_cpu) * 1e6 / (steady_count.max(1) as f64),
            (steady_end_own_cpu - steady_own_cpu) / steady_seconds.max(f64::EPSILON) * 100.0
        );
    }
    println!(
        "round trip in the steady state, quote + IMA, boot log unchanged (evidence sent -> verdict, {} answers): p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        round_trips.len(),
        pct(&round_trips, 0.5),
        pct(&round_trips, 0.99),
        pct(&round_trips, 1.0)
    );
    println!(
        "  steady round trip p90 {:.1} ms  p95 {:.1} ms  p99.9 {:.1} ms; p99 second by second (ms): {}",
        pct(&round_trips, 0.9),
        pct(&round_trips, 0.95),
        pct(&round_trips, 0.999),
        per_second_p99
            .iter()
            .map(|v| format!("{v:.0}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "round trip, first appraisal with the boot log ({} answers): p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        first_round_trips.len(),
        pct(&first_round_trips, 0.5),
        pct(&first_round_trips, 0.99),
        pct(&first_round_trips, 1.0)
    );
    println!(
        "verifier CPU {:.0}% of one core (load generator {:.0}%); RSS {} MiB idle, {} MiB with the fleet connected, {} MiB at the end = {:.1} KiB per connected device above idle",
        (cpu_end - cpu_start) / elapsed * 100.0,
        (own_cpu_end - own_cpu_start) / elapsed * 100.0,
        rss_baseline / 1024,
        rss_start / 1024,
        rss_end / 1024,
        rss_end.saturating_sub(rss_baseline) as f64 / opts.devices.max(1) as f64
    );
    let rss_samples = rss_samples.await?;
    if let (Some(low), Some(high)) = (rss_samples.first(), rss_samples.last()) {
        let median = rss_samples.get(rss_samples.len() / 2).unwrap_or(high);
        let per_device =
            |kib: u64| kib.saturating_sub(rss_baseline) as f64 / opts.devices.max(1) as f64;
        println!(
            "verifier RSS once a second after every first appraisal ({} readings): min {} / median {} / max {} MiB = {:.1} / {:.1} / {:.1} KiB per connected device above idle",
            rss_samples.len(),
            low / 1024,
            median / 1024,
            high / 1024,
            per_device(*low),
            per_device(*median),
            per_device(*high)
        );
    }
    println!(
        "tampered {tampered_count}: caught {} (detection p50 {:.1} s, max {:.1} s); honest devices flagged: {}; stream failures {failures}",
        caught.load(Ordering::Relaxed),
        pct(&detections, 0.5) / 1000.0,
        pct(&detections, 1.0) / 1000.0,
        false_alarms.load(Ordering::Relaxed)
    );
    let _ = verifier.kill();
    let _ = verifier.wait();
    Ok(())
}

/// The `p` percentile of sorted microseconds, in milliseconds (0 when there are none).
fn percentile_ms(sorted_micros: &[u64], p: f64) -> f64 {
    sorted_micros
        .get(((sorted_micros.len() as f64 - 1.0) * p).round() as usize)
        .copied()
        .unwrap_or(0) as f64
        / 1000.0
}

/// `part / whole`, or 0 when there is no whole.
fn ratio(part: f64, whole: f64) -> f64 {
    if whole > 0.0 { part / whole } else { 0.0 }
}

/// The `k`th file measured in round `round` (the same on every device).
fn measured_file(round: u64, k: u64) -> MeasuredFile {
    MeasuredFile::new(
        &format!("/opt/app/{round}/{k}"),
        format!("application {round} file {k}").as_bytes(),
    )
}

fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("loadgen: {error}");
            return std::process::ExitCode::from(1);
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("loadgen failed: {error:#}");
            std::process::ExitCode::from(1)
        }
    }
}
