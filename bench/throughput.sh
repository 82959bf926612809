#!/usr/bin/env bash
# The data paths of a pull against this machine's limits: berth's sha256, gzip and zstd
# decompression and layer unpacking (crates/image/examples/throughput.rs), beside
# `openssl speed sha256` (16 KiB blocks, one core) and `zstd -b3` decompression.
# Usage: bench/throughput.sh [MiB]   (needs openssl and zstd)
set -euo pipefail
mib=${1:-256}
here=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp); trap 'rm -f "$tmp" "$tmp.gz"' EXIT
echo "== berth (release build, one thread)"
(cd "$here" && cargo run -q --release -p berth-image --example throughput -- "$mib" "$tmp")
echo "== openssl speed sha256 (16384-byte blocks)"
openssl speed -seconds 2 -bytes 16384 sha256 2>/dev/null | awk '/^sha256/ {printf "sha256 %.0f MB/s\n", $2 / 1000}'
echo "== zstd -b3 on the same sample (ratio, compression, decompression speed)"
zstd -b3 -i2 "$tmp" 2>&1 | tr '\r' '\n' | grep 'MB/s.*MB/s' | tail -1
echo "== gzip -d of the same sample compressed at level 1"
gzip -1 -c "$tmp" > "$tmp.gz"
s=$(date +%s.%N); gzip -dc "$tmp.gz" >/dev/null; e=$(date +%s.%N)
awk -v b="$(stat -c %s "$tmp")" -v s="$s" -v e="$e" 'BEGIN {printf "gzip -d %.0f MB/s\n", b / (e - s) / 1e6}'
