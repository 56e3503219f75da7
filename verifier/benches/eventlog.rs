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
use trustchain_verifier::evidence::eventlog::{ReplayOptions, parse, replay};

fn logs(c: &mut Criterion) {
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
    let mut group = c.benchmark_group("eventlog_parse_replay");
    for path in paths {
        let bytes = std::fs::read(&path).unwrap();
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
criterion_main!(benches, split_group);

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
}

criterion_group!(split_group, split);
