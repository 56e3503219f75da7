#!/usr/bin/env bash
# Runs every fuzz target (or the TARGETs named after N) for N seconds (default 10) on stable Rust (-s none: no sanitizer, panics
# still caught), seeded from ../shared/testdata. Installs cargo-fuzz if missing. Crashes are saved
# under fuzz/artifacts/TARGET/; the script exits non-zero if any target failed.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-10}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
testdata=../shared/testdata
all=(eventlog ima tpm_structures quote device_path signature_list)
targets=("${all[@]}")
if (($# > 1)); then targets=("${@:2}"); fi
for target in "${all[@]}"; do mkdir -p "fuzz/corpus/$target"; done
cp -f "$testdata"/eventlogs/*.bin fuzz/corpus/eventlog/
# Real logs carry real PK, KEK, db and dbx values; the target decodes them from the log.
cp -f "$testdata"/eventlogs/*.bin fuzz/corpus/signature_list/
cp -f "$testdata"/ima/* fuzz/corpus/ima/ && rm -f fuzz/corpus/ima/*.json
cp -f "$testdata"/quotes/gce-cos-85-no-nonce/*.bin fuzz/corpus/tpm_structures/
# The quote target reads [attest length (1 byte)] [TPMS_ATTEST] [TPMT_SIGNATURE].
for attest in "$testdata"/quotes/gce-cos-85-no-nonce/*.tpms_attest.bin; do
  signature="${attest%.tpms_attest.bin}.tpmt_signature.bin"
  seed="fuzz/corpus/quote/seed-$(basename "${attest%.tpms_attest.bin}")"
  { printf "\\x$(printf %02x "$(stat -c %s "$attest")")"; cat "$attest" "$signature"; } >"$seed"
done
failed=()
for target in "${targets[@]}"; do
  echo "== $target (${seconds}s)"
  log="fuzz/artifacts/$target.log"
  mkdir -p fuzz/artifacts
  if (cd fuzz && cargo fuzz run -s none "$target" "corpus/$target" -- \
      -max_total_time="$seconds" -rss_limit_mb=2048) >"$log" 2>&1; then
    grep -E "^(Done [0-9]+ runs|#[0-9]+ +DONE)" "$log" || tail -n 2 "$log"
  else
    failed+=("$target")
    grep -E "panicked|ERROR|Test unit written|Base64" "$log" || tail -n 20 "$log"
  fi
done
if ((${#failed[@]})); then
  echo "FAILED: ${failed[*]} (logs in fuzz/artifacts/)" >&2
  exit 1
fi
echo "all ${#targets[@]} targets ran ${seconds}s without a crash"
