#!/usr/bin/env bash
# The long agent-fault run of issue 9, item 3, which CI cannot afford: a real trustchain-agent
# process on a real swtpm, attesting to a real verifier process, through a network cut, a
# ten-minute verifier outage and a TPM death, never restarted; its states, reconnection times and
# memory are printed. CI runs the short version (tests/tests/agent_faults.rs).
#
#   scripts/fault-run.sh [trustchain-fault-run options]
#   (defaults: --rounds 1 --network-outage 60 --verifier-outage 600 --tpm-outage 120 --interval 10)
#
# The output is also written to target/fault-run-<UTC time>.log; the figures in
# docs/reliability.md come from such a run. Loopback only; every wait in the
# run is bounded, and it stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v swtpm >/dev/null || { echo "swtpm is missing: run scripts/setup.sh" >&2; exit 1; }
export TSS2_LOG="${TSS2_LOG:-all+none}"
cargo build -p trustchain-agent -p trustchain-verifier -p trustchain-tests --bin trustchain-fault-run
if [ "$#" -eq 0 ]; then
    set -- --rounds 1 --network-outage 60 --verifier-outage 600 --tpm-outage 120 --interval 10
fi
log="target/fault-run-$(date -u +%Y%m%dT%H%M%SZ).log"
echo "trustchain-fault-run $* ($(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(nproc) cores)" | tee "$log"
target/debug/trustchain-fault-run "$@" 2>&1 | tee -a "$log"
echo "output kept in $log"
