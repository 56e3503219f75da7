//! IMA: parse + template hash check + replay (sha1 and sha256 banks), per entry, on a real
//! 826-entry ASCII list. Target: <= 1 us per entry on one core.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use trustchain_verifier::evidence::digest::HashAlgorithm;
use trustchain_verifier::evidence::ima::{ImaState, parse_ascii, replay};

fn ima(c: &mut Criterion) {
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/testdata/ima/keylime__archive_ima__ascii_runtime_measurements"
    ));
    let bytes =
        std::fs::read(&path).unwrap_or_else(|e| panic!("testdata {} missing: {e}", path.display()));
    let entries = parse_ascii(&bytes, 0).unwrap().entries.len() as u64;
    let mut group = c.benchmark_group("ima");
    group.throughput(Throughput::Elements(entries));
    group.bench_function(
        format!("ascii_parse_check_replay_sha1_sha256_{entries}entries"),
        |b| {
            b.iter(|| {
                let log = parse_ascii(black_box(&bytes), 0).unwrap();
                replay(
                    &ImaState::default(),
                    &log,
                    &[HashAlgorithm::Sha1, HashAlgorithm::Sha256],
                )
            })
        },
    );
    // The two halves on their own, to show where the time goes.
    group.bench_function(format!("ascii_parse_only_{entries}entries"), |b| {
        b.iter(|| parse_ascii(black_box(&bytes), 0).unwrap())
    });
    let log = parse_ascii(&bytes, 0).unwrap();
    group.bench_function(
        format!("check_replay_only_sha1_sha256_{entries}entries"),
        |b| {
            b.iter(|| {
                replay(
                    &ImaState::default(),
                    black_box(&log),
                    &[HashAlgorithm::Sha1, HashAlgorithm::Sha256],
                )
            })
        },
    );
    group.finish();
}

criterion_group!(benches, ima);
criterion_main!(benches);
