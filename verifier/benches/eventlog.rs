//! Event log parse + replay for each real log in ../shared/testdata/eventlogs.
//! Target: a ~120-event log in <= 30 us on one core.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use trustchain_verifier::evidence::digest::HashAlgorithm;
use trustchain_verifier::evidence::eventlog::{ReplayOptions, parse, replay};

/// The real logs with at least 20 events: (bench name with the event count, bytes).
fn real_logs() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/testdata/eventlogs"
    ));
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("testdata {} missing: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for path in paths {
        let bytes = std::fs::read(&path).unwrap();
        // The malformed logs fail to parse; tiny synthetic ones say nothing about speed.
        let Ok(log) = parse(&bytes) else { continue };
        if log.events.len() < 20 {
            continue;
        }
        let name = format!(
            "{}_{}events",
            path.file_stem()
                .unwrap()
                .to_string_lossy()
                .split("__")
                .nth(1)
                .unwrap_or_default(),
            log.events.len()
        );
        out.push((name, bytes));
    }
    assert!(
        out.len() >= 20,
        "expected the real logs, found {}",
        out.len()
    );
    out
}

fn logs(c: &mut Criterion) {
    let mut group = c.benchmark_group("eventlog_parse_replay");
    for (name, bytes) in real_logs() {
        group.bench_function(name, |b| {
            b.iter(|| {
                let log = parse(black_box(&bytes)).unwrap();
                replay(&log, &ReplayOptions::default())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, logs);
criterion_main!(benches, split_group, cpu_group);

/// Parse and replay separately, on the 121-event two-bank log, to see where the time goes.
fn split(c: &mut Criterion) {
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/testdata/eventlogs/keylime__binary_bios_measurements.bin"
    ));
    let bytes = std::fs::read(&path).unwrap();
    let log = parse(&bytes).unwrap();
    c.bench_function("eventlog_split/parse_only_121events", |b| {
        b.iter(|| parse(black_box(&bytes)).unwrap())
    });
    c.bench_function("eventlog_split/replay_only_121events", |b| {
        b.iter(|| replay(black_box(&log), &ReplayOptions::default()))
    });
    // The floor under replay: the same 121 SHA-1 and 121 SHA-256 extends, with nothing else.
    c.bench_function("eventlog_split/hash_floor_242extends", |b| {
        let mut sha1 = [0u8; 20];
        let mut sha256 = [0u8; 32];
        b.iter(|| {
            for _ in 0..121 {
                HashAlgorithm::Sha1.extend_in_place(&mut sha1, black_box(&[1u8; 20]));
                HashAlgorithm::Sha256.extend_in_place(&mut sha256, black_box(&[1u8; 32]));
            }
            (sha1, sha256)
        })
    });
}

criterion_group!(split_group, split);

/// This thread's on-CPU time (Linux schedstat, ns). The CI machine is shared: wall time counts the
/// time neighbours hold the core, CPU time does not.
fn cpu_time() -> std::time::Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat")
        .expect("/proc/thread-self/schedstat (Linux) is needed for the CPU-time benchmarks");
    let nanos: u64 = stat
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("schedstat starts with the on-CPU time in ns");
    std::time::Duration::from_nanos(nanos)
}

/// Parse + replay of every real log, then parse, replay and the hashing alone for the 121-event
/// two-bank log, timed in CPU time (long samples, so schedstat's scheduler-tick granularity stays
/// a few per cent).
fn cpu(c: &mut Criterion) {
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/testdata/eventlogs/keylime__binary_bios_measurements.bin"
    ));
    let bytes = std::fs::read(&path).unwrap();
    let log = parse(&bytes).unwrap();
    let mut group = c.benchmark_group("eventlog_cpu_time");
    group
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(4));
    let mut timed = |name: &str, work: &mut dyn FnMut()| {
        group.bench_function(name, |b| {
            b.iter_custom(|iterations| {
                let start = cpu_time();
                for _ in 0..iterations {
                    work();
                }
                cpu_time().saturating_sub(start)
            })
        });
    };
    for (name, log_bytes) in real_logs() {
        timed(&format!("parse_replay/{name}"), &mut || {
            black_box(replay(
                &parse(black_box(&log_bytes)).unwrap(),
                &ReplayOptions::default(),
            ));
        });
    }
    timed("parse_only_121events", &mut || {
        black_box(parse(black_box(&bytes)).unwrap());
    });
    timed("replay_only_121events", &mut || {
        black_box(replay(black_box(&log), &ReplayOptions::default()));
    });
    timed("hash_floor_242extends", &mut || {
        let mut sha1 = [0u8; 20];
        let mut sha256 = [0u8; 32];
        for _ in 0..121 {
            HashAlgorithm::Sha1.extend_in_place(&mut sha1, black_box(&[1u8; 20]));
            HashAlgorithm::Sha256.extend_in_place(&mut sha256, black_box(&[1u8; 32]));
        }
        black_box((sha1, sha256));
    });
    group.finish();
}

criterion_group!(cpu_group, cpu);
