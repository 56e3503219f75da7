#!/usr/bin/env bash
# The main job: a verifier, the deployment CA and five agents on real swtpm devices, all separate
# processes over mutual TLS on loopback; one device is tampered with and caught.
# Options: --keep-running (leave it up), --state DIR (keep state in DIR instead of a temp dir).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export TSS2_LOG="${TSS2_LOG:-all+none}"
cargo build --quiet -p trustchain-verifier -p trustchain-agent -p trustchain-ca -p trustchain-tests --bins
exec target/debug/trustchain-demo "$@"
