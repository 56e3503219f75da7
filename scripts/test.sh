#!/usr/bin/env bash
# Runs every test: unit tests, property tests, and end-to-end tests on real swtpm devices.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export TSS2_LOG="${TSS2_LOG:-all+none}"
cargo test --workspace --all-targets "$@"
