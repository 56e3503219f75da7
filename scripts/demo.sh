#!/usr/bin/env bash
# The main job: boots simulated devices on real swtpm processes and shows them.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export TSS2_LOG="${TSS2_LOG:-all+none}"
cargo run --quiet -p trustchain-tests --bin demo_devices -- "$@"
