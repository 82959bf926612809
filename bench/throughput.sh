#!/usr/bin/env bash
# The data paths of a pull against this machine's limits: berth's sha256, gzip and zstd
# decompression and layer unpacking (crates/image/examples/throughput.rs), beside
# `openssl speed sha256` (16 KiB blocks, one core) and `zstd -b3` decompression.
# Usage: bench/throughput.sh [MiB]   (needs openssl and zstd)
set -euo pipefail
mib=${1:-256}
here=$(cd "$(dirname "$0")/.." && pwd)
echo "== berth (release build, one thread)"
(cd "$here" && cargo run -q --release -p berth-image --example throughput -- "$mib")
echo "== openssl speed sha256 (16384-byte blocks)"
openssl speed -seconds 2 -bytes 16384 sha256 2>/dev/null | awk '/^sha256/ {printf "sha256 %.0f MB/s\n", $2 / 1000}'
echo "== zstd -b3 (decompression)"
tmp=$(mktemp); trap 'rm -f "$tmp"' EXIT
head -c $((mib << 20)) /dev/urandom | base64 > "$tmp"
zstd -b3 -i2 "$tmp" 2>&1 | tail -1
