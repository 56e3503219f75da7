#!/usr/bin/env bash
# Installs what TrustChain needs on Debian 12 when it is missing: swtpm (real software TPMs for
# the demo and tests), libtss2-dev + pkg-config (tss-esapi), tpm2-tools (an independent event-log
# parser the tests compare against), faketime (libfaketime: tests/tests/clock_jump.rs moves the
# verifier's wall clock), systemd's tools and dpkg-dev (tests/tests/service_manager.rs and
# packages.rs verify the units and build the .debs with cargo-deb), chromium (headless:
# tests/tests/dashboard_browser.rs drives the dashboard in a real browser), postgresql (the tests
# start throwaway servers from its binaries: tests/src/postgres.rs) and a Rust toolchain check.
# Safe to run again.
set -euo pipefail

packages=(swtpm swtpm-tools libtss2-dev pkg-config tpm2-tools faketime systemd dpkg-dev chromium postgresql)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust (rustup) first" >&2; exit 1; }
# cargo-deb builds the .deb packages (scripts/package.sh, tests/tests/packages.rs).
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked --version '^3'
