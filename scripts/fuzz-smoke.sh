#!/usr/bin/env bash
# Runs every fuzz target for N seconds (default 10) on stable Rust, seeded from ../shared/testdata.
# Installs cargo-fuzz if missing. Crashes are saved under fuzz/artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-10}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
testdata=../shared/testdata
mkdir -p fuzz/corpus/eventlog fuzz/corpus/ima fuzz/corpus/tpm_structures fuzz/corpus/device_path
cp -f "$testdata"/eventlogs/*.bin fuzz/corpus/eventlog/
cp -f "$testdata"/ima/* fuzz/corpus/ima/ && rm -f fuzz/corpus/ima/*.json
cp -f "$testdata"/quotes/gce-cos-85-no-nonce/*.bin fuzz/corpus/tpm_structures/
for target in eventlog ima tpm_structures device_path; do
  echo "== $target (${seconds}s)"
  (cd fuzz && cargo fuzz run -s none "$target" "corpus/$target" -- -max_total_time="$seconds" -rss_limit_mb=2048 2>&1 | grep -E "^#[0-9]+.*DONE|ERROR|panicked|Done [0-9]+ runs" || true)
done
