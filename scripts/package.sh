#!/usr/bin/env bash
# Builds the Debian packages trustchain-agent and trustchain-verifier with cargo-deb, from the
# [package.metadata.deb] sections of agent/Cargo.toml and verifier/Cargo.toml (contents, install
# steps and the gateway figures: docs/field.md). Optimised builds; the .debs land in target/debian/.
#
#   scripts/package.sh                                        # amd64, both packages
#   scripts/package.sh --target aarch64-unknown-linux-gnu     # arm64 agent (see cross-aarch64.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked --version '^3'
export TSS2_LOG="${TSS2_LOG:-all+none}"
# The agent with the gateway profile (opt-level s, fat LTO: 4 MiB less resident than release,
# docs/field.md), the verifier with the release profile (appraisal speed matters more there).
packages=("trustchain-agent:gateway" "trustchain-verifier:release")
for arg in "$@"; do
    # A gateway gets the agent; the verifier runs in the SOC (amd64).
    [ "$arg" = "--target" ] && packages=("trustchain-agent:gateway")
done
# --strip: the profiles keep line tables for backtraces (Cargo.toml); a gateway's package goes
# without them (the arm64 agent: 61 MB with them, 8.6 MB without).
for entry in "${packages[@]}"; do
    cargo deb -p "${entry%%:*}" --profile "${entry##*:}" --strip --output target/debian "$@"
done
ls -l target/debian/*.deb
