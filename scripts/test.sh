#!/usr/bin/env bash
# Runs every test: unit tests, property tests, and end-to-end tests on real swtpm devices.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export TSS2_LOG="${TSS2_LOG:-all+none}"
# Tests run the workspace's binaries (trustchain, trustchain-ca, the agent): build them all first,
# since `cargo test` builds a package's binaries only for that package's own integration tests.
cargo build --workspace --bins
cargo test --workspace --all-targets "$@"
