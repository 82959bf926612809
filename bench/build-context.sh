#!/usr/bin/env bash
# Build speed with a large context: 10,000 files of random data (500 MiB) in 260
# directories, and a Dockerfile that copies all of it (FROM a local busybox base,
# COPY . /ctx/, a small RUN, CMD). Three cases, `berth build` side by side with
# `podman build` (private root, as in bench/build.sh):
#   (a) first build: a fresh store holding only the base image (hyperfine --prepare
#       recreates it), --no-cache, every step runs and every layer is new;
#   (b) rebuild after one file changed: hyperfine --prepare rewrites one file (same size,
#       new random bytes) before each run, so COPY misses and RUN runs again;
#   (c) fully cached rebuild: nothing changed.
# Each builder gets a private store under a temp dir; RUN uses the host network.
# Everything is removed on exit.
# Usage: bench/build-context.sh [RUNS]   (as root; needs hyperfine, jq, busybox-static;
#                                         podman optional)
set -euo pipefail
runs=${1:-5}
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/bench/common.sh"
berth=${BERTH_BIN:-$here/target/release/berth}
[ -x "$berth" ] || (cd "$here" && cargo build --release --bin berth)
work=$(mktemp -d /tmp/berth-bench-bigctx.XXXXXX)
export BERTH_ROOT=$work/berth
podman_args "$work"
have_podman=$(command -v podman >/dev/null && echo 1 || echo 0)
cleanup() {
  [ "$have_podman" = 1 ] && "${podman[@]}" system reset -f >/dev/null 2>&1 || true
  umount -R "$work"/* 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# The base image, in every store.
busybox_rootfs "$work"
"$berth" import "$work/rootfs.tar" bench/busybox:latest >/dev/null

# The context: 10 directories of 25 subdirectories, 40 files of ~51 KiB each in every
# subdirectory: 10,000 files, 500 MiB of incompressible data.
ctx=$work/ctx
for d in $(seq -w 0 9); do
  for s in $(seq -w 0 24); do
    mkdir -p "$ctx/d$d/s$s"
    head -c 2097152 /dev/urandom | split -b 52429 -a 2 -d - "$ctx/d$d/s$s/f"
  done
done
echo "context: $(find "$ctx" -type f | wc -l) files, $(du -sm "$ctx" | cut -f1) MiB" >&2
cat > "$ctx/Dockerfile" <<'DOCKERFILE'
ARG BASE=bench/busybox
FROM $BASE
COPY . /ctx/
RUN ls /ctx/d0 > /listing
CMD ["cat", "/listing"]
DOCKERFILE
# One file rewritten with new bytes of the same size (hyperfine --prepare).
cat > "$work/change-one.sh" <<SCRIPT
head -c 52429 /dev/urandom > "$ctx/d5/s12/f20"
SCRIPT
# A fresh store with only the base image, for the first build (hyperfine --prepare).
cat > "$work/fresh-berth.sh" <<SCRIPT
rm -rf "$BERTH_ROOT" && "$berth" import "$work/rootfs.tar" bench/busybox:latest >/dev/null && sync
SCRIPT
cat > "$work/fresh-podman.sh" <<SCRIPT
${podman[*]} rmi -a -f >/dev/null 2>&1
${podman[*]} import -q "$work/rootfs.tar" localhost/bench/busybox:latest >/dev/null && sync
SCRIPT

b="$berth build -q --network host"
cold=(-n "berth build (first, --no-cache)" "$b --no-cache -t bench/out $ctx")
one=(-n "berth build (one file changed)" "$b -t bench/out $ctx")
cached=(-n "berth build (cached)" "$b -t bench/out $ctx")
if [ "$have_podman" = 1 ]; then
  "${podman[@]}" import -q "$work/rootfs.tar" localhost/bench/busybox:latest >/dev/null
  p="${podman[*]} build -q --network host --build-arg BASE=localhost/bench/busybox"
  cold+=(-n "podman build (first, --no-cache)" "$p --no-cache -t bench/out $ctx")
  one+=(-n "podman build (one file changed)" "$p -t bench/out $ctx")
  cached+=(-n "podman build (cached)" "$p -t bench/out $ctx")
else
  echo "podman is not installed: skipped" >&2
fi
fresh=(--prepare "bash $work/fresh-berth.sh")
[ "$have_podman" = 1 ] && fresh+=(--prepare "bash $work/fresh-podman.sh")
hyperfine -N --runs "$runs" "${fresh[@]}" --export-json "$work/first.json" "${cold[@]}"
hyperfine -N --warmup 1 --runs "$runs" --prepare "bash $work/change-one.sh" \
  --export-json "$work/one.json" "${one[@]}"
hyperfine -N --warmup 2 --runs "$((runs * 3))" --export-json "$work/cached.json" "${cached[@]}"
for f in first one cached; do
  jq -r '.results[] | "\(.command): median \(.median*1000*100|floor/100) ms"' "$work/$f.json"
done
