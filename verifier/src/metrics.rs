//! Prometheus metrics on their own plain-HTTP listener (GET /metrics): devices per state, silent
//! devices,
//! appraisals by outcome, appraisal latency, the wait for durable writes before each verdict,
//! open streams, enrollment outcomes, audit-log size, webhook deliveries.
//! Read-only; it exposes counts, never device evidence.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use tokio::net::TcpListener;

use crate::device::{DeviceRecord, DeviceState};
use crate::storage::Storage;

/// Upper bounds (seconds) of the histograms' buckets.
const BUCKETS: [f64; 10] = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0];

/// A latency histogram (atomics only: no locks per observation).
#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    micros_sum: AtomicU64,
}

impl Histogram {
    fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        for (bucket, bound) in self.buckets.iter().zip(BUCKETS) {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.micros_sum
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bucket, bound) in self.buckets.iter().zip(BUCKETS) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", load(bucket));
        }
        let count = load(&self.count);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", load(&self.micros_sum) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Counters updated on the hot path (atomics only: no locks per appraisal).
#[derive(Debug, Default)]
pub struct Metrics {
    appraisals_passed: AtomicU64,
    appraisals_failed: AtomicU64,
    latency: Histogram,
    commit_wait: Histogram,
    streams: AtomicU64,
    enrollments_accepted: AtomicU64,
    enrollments_refused: AtomicU64,
    webhook_delivered: AtomicU64,
    webhook_failed_attempts: AtomicU64,
    leases_lost: AtomicU64,
}

impl Metrics {
    pub fn appraisal(&self, passed: bool, took: Duration) {
        if passed {
            self.appraisals_passed.fetch_add(1, Ordering::Relaxed);
        } else {
            self.appraisals_failed.fetch_add(1, Ordering::Relaxed);
        }
        self.latency.observe(took);
    }

    /// How long a verdict waited for its writes (nonce, state, result) to become durable: the
    /// group commit's gather and sled's flush, the largest part of a verdict's latency.
    pub fn commit_wait(&self, took: Duration) {
        self.commit_wait.observe(took);
    }

    pub fn stream_opened(&self) {
        self.streams.fetch_add(1, Ordering::Relaxed);
    }

    pub fn stream_closed(&self) {
        self.streams.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn enrollment(&self, accepted: bool) {
        if accepted {
            self.enrollments_accepted.fetch_add(1, Ordering::Relaxed);
        } else {
            self.enrollments_refused.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A device's lease found lost at renewal (another replica took it, or it ran out).
    pub fn lease_lost(&self) {
        self.leases_lost.fetch_add(1, Ordering::Relaxed);
    }

    /// A webhook attempt: delivered (2xx), or failed (the alert stays in the outbox).
    pub fn webhook_attempt(&self, delivered: bool) {
        if delivered {
            self.webhook_delivered.fetch_add(1, Ordering::Relaxed);
        } else {
            self.webhook_failed_attempts.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The Prometheus text exposition; `silent` says whether a device has gone silent.
    pub fn render(&self, storage: &dyn Storage, silent: &dyn Fn(&DeviceRecord) -> bool) -> String {
        let mut out = String::new();
        let devices = storage.devices().unwrap_or_default();
        let _ = writeln!(
            out,
            "# HELP trustchain_devices Devices by trust state.\n# TYPE trustchain_devices gauge"
        );
        for state in DeviceState::ALL {
            let count = devices.iter().filter(|d| d.state == state).count();
            let _ = writeln!(
                out,
                "trustchain_devices{{state=\"{}\"}} {count}",
                state.name()
            );
        }
        // Operators alert on this: a timed-out device, or one (untrusted ones included, which
        // stay untrusted through silence) not heard from within its timeout window.
        let _ = writeln!(
            out,
            "# HELP trustchain_devices_silent Devices timed out or not heard from within their timeout window.\n# TYPE trustchain_devices_silent gauge\ntrustchain_devices_silent {}",
            devices.iter().filter(|d| silent(d)).count()
        );
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP trustchain_appraisals_total Appraisals by outcome.\n# TYPE trustchain_appraisals_total counter"
        );
        let _ = writeln!(
            out,
            "trustchain_appraisals_total{{outcome=\"pass\"}} {}",
            load(&self.appraisals_passed)
        );
        let _ = writeln!(
            out,
            "trustchain_appraisals_total{{outcome=\"fail\"}} {}",
            load(&self.appraisals_failed)
        );
        self.latency.render(
            &mut out,
            "trustchain_appraisal_duration_seconds",
            "Time to appraise one answer.",
        );
        self.commit_wait.render(
            &mut out,
            "trustchain_commit_wait_seconds",
            "Time a verdict waited for its writes to become durable (group commit and flush).",
        );
        let _ = writeln!(
            out,
            "# HELP trustchain_attestation_streams Open agent streams.\n# TYPE trustchain_attestation_streams gauge"
        );
        let _ = writeln!(
            out,
            "trustchain_attestation_streams {}",
            load(&self.streams)
        );
        let _ = writeln!(
            out,
            "# HELP trustchain_enrollments_total Enrollment outcomes.\n# TYPE trustchain_enrollments_total counter"
        );
        let _ = writeln!(
            out,
            "trustchain_enrollments_total{{outcome=\"accepted\"}} {}",
            load(&self.enrollments_accepted)
        );
        let _ = writeln!(
            out,
            "trustchain_enrollments_total{{outcome=\"refused\"}} {}",
            load(&self.enrollments_refused)
        );
        // Failed attempts rising while delivered stays still: a receiver is down or refused
        // (its alerts wait in the outbox).
        let _ = writeln!(
            out,
            "# HELP trustchain_webhook_attempts_total Webhook delivery attempts by outcome.\n# TYPE trustchain_webhook_attempts_total counter\ntrustchain_webhook_attempts_total{{outcome=\"delivered\"}} {}\ntrustchain_webhook_attempts_total{{outcome=\"failed\"}} {}",
            load(&self.webhook_delivered),
            load(&self.webhook_failed_attempts)
        );
        let _ = writeln!(
            out,
            "# HELP trustchain_audit_records Records in the hash-chained audit log.\n# TYPE trustchain_audit_records gauge"
        );
        let _ = writeln!(out, "trustchain_audit_records {}", storage.audit_head().0);
        // While the state database refuses writes no verdict is issued: operators alert on this.
        let health = storage.health();
        let _ = writeln!(
            out,
            "# HELP trustchain_storage_writable 1 when the state database takes writes; 0 while verdicts are withheld.\n# TYPE trustchain_storage_writable gauge\ntrustchain_storage_writable {}",
            u8::from(health.writable)
        );
        let _ = writeln!(
            out,
            "# HELP trustchain_storage_write_failures_total Times the state database closed after a failed write.\n# TYPE trustchain_storage_write_failures_total counter\ntrustchain_storage_write_failures_total {}",
            health.write_failures_total
        );
        // Per replica (the device gauges above are the fleet's, from the shared database).
        let _ = writeln!(
            out,
            "# HELP trustchain_replica_leases Device leases this replica holds (devices it attests), by replica.\n# TYPE trustchain_replica_leases gauge\ntrustchain_replica_leases{{replica=\"{}\"}} {}",
            storage.replica_id(),
            storage.leases_held()
        );
        let _ = writeln!(
            out,
            "# HELP trustchain_leases_lost_total Leases this replica found taken over or run out at renewal.\n# TYPE trustchain_leases_lost_total counter\ntrustchain_leases_lost_total {}",
            load(&self.leases_lost)
        );
        out
    }
}

/// What the metrics listener serves: the text exposition, rendered per scrape.
pub trait Scrape: Send + Sync + 'static {
    fn scrape(&self) -> String;
}

/// Serves GET /metrics on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, service: Arc<dyn Scrape>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let service = service.clone();
        tokio::spawn(async move {
            let handler =
                hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                    let service = service.clone();
                    async move {
                        let response = if request.method() == hyper::Method::GET
                            && request.uri().path() == "/metrics"
                        {
                            let body = service.scrape();
                            Response::builder()
                                .header("content-type", "text/plain; version=0.0.4")
                                .body(Full::new(Bytes::from(body)))
                        } else {
                            Response::builder()
                                .status(StatusCode::NOT_FOUND)
                                .body(Full::new(Bytes::from_static(b"not found\n")))
                        };
                        response.map_err(|e| e.to_string())
                    }
                });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .serve_connection(hyper_util::rt::TokioIo::new(stream), handler);
            let _ = tokio::time::timeout(Duration::from_secs(30), connection).await;
        });
    }
}
