#!/usr/bin/env bash
# Cross-builds trustchain-agent for aarch64-unknown-linux-gnu (arm64 gateways) with Debian's
# cross toolchain and the arm64 libtss2 (multiarch), and checks the result is an arm64 ELF that
# links only the libraries an arm64 Debian provides. docs/field.md records a run.
#
#   scripts/cross-aarch64.sh [--package]   # --package: also the arm64 .deb (cargo-deb)
#   (CI runs it without --package: the check is that the agent builds and runs for arm64)
#
# Needs (the script installs them when missing, as root or with sudo):
#   dpkg --add-architecture arm64; apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross
#   libtss2-dev:arm64; rustup target add aarch64-unknown-linux-gnu
set -euo pipefail
cd "$(dirname "$0")/.."
target=aarch64-unknown-linux-gnu
sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    "${sudo_cmd[@]}" dpkg --add-architecture arm64
    "${sudo_cmd[@]}" apt-get update -qq
fi
missing=()
# `file` checks the result is an arm64 ELF (not on every minimal Debian).
for p in gcc-aarch64-linux-gnu libc6-dev-arm64-cross libtss2-dev:arm64 file; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi
rustup target list --installed | grep -qx "$target" || rustup target add "$target"

# The linker for the target, and pkg-config looking only at arm64 .pc files (tss-esapi's
# build script finds libtss2 through pkg-config; without this it would find the amd64 one).
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export PKG_CONFIG_ALLOW_CROSS=1
export PKG_CONFIG_LIBDIR=/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig
export PKG_CONFIG_SYSROOT_DIR=/
export TSS2_LOG="${TSS2_LOG:-all+none}"

cargo build --release -p trustchain-agent --target "$target"
binary="target/$target/release/trustchain-agent"
file "$binary"
file "$binary" | grep -q "ARM aarch64" || { echo "cross-aarch64: $binary is not an arm64 ELF" >&2; exit 1; }
echo "dynamic dependencies:"
aarch64-linux-gnu-readelf -d "$binary" | awk '/NEEDED/ {print "  " $5}'
ls -l "$binary"
# It runs: under qemu-user when this machine has it (Debian's qemu-user), on arm64 libraries.
if command -v qemu-aarch64 >/dev/null; then
    qemu-aarch64 "$binary" --version
fi
if [ "${1:-}" = "--package" ]; then
    # From this release build (scripts/package.sh --target builds the smaller gateway profile).
    command -v cargo-deb >/dev/null || cargo install cargo-deb --locked --version '^3'
    cargo deb -p trustchain-agent --target "$target" --profile release --no-build --strip \
        --output target/debian
fi
