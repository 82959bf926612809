#!/usr/bin/env bash
# What the shared cache and RUN's networks cost in `berth build`:
#  1. an empty store building with `--cache-from type=local` (a cache exported by another
#     store) against the same empty store building cold: the CI case the cache is for;
#  2. one cold RUN on each network: `--network host`, `none` and the default bridge (a
#     netns wired to berth0 with a veth, as Docker's default RUN network), side by side
#     with `podman build --network host|none` and podman's default (its podman0 bridge) when
#     podman is installed.
# Each store is private under a temp dir and removed on exit.
# Usage: bench/build-cache.sh [RUNS]   (as root; needs hyperfine and busybox-static)
set -euo pipefail
runs=${1:-10}
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/bench/common.sh"
berth=${BERTH_BIN:-$here/target/release/berth}
[ -x "$berth" ] || (cd "$here" && cargo build --release --bin berth)
work=$(mktemp -d /tmp/berth-bench-cache.XXXXXX)
podman_args "$work"
have_podman=$(command -v podman >/dev/null && echo 1 || echo 0)
cleanup() {
  [ "$have_podman" = 1 ] && "${podman[@]}" system reset -f >/dev/null 2>&1 || true
  umount -R "$work"/* 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

busybox_rootfs "$work"

ctx=$work/ctx; four_step_context "$ctx"

# 1. The cache, exported once by another store.
"$berth" --root "$work/exporter" import "$work/rootfs.tar" bench/busybox:latest >/dev/null
"$berth" --root "$work/exporter" build -q --cache-to "type=local,dest=$work/cache,mode=max" "$ctx" >/dev/null
fresh="rm -rf $work/fresh && $berth --root $work/fresh import $work/rootfs.tar bench/busybox:latest >/dev/null"
hyperfine --warmup 1 --runs "$runs" --prepare "$fresh" --export-json "$work/import.json" \
  -n "empty store, cold" "$berth --root $work/fresh build -q $ctx" \
  -n "empty store, --cache-from type=local" \
     "$berth --root $work/fresh build -q --cache-from type=local,src=$work/cache $ctx"

# 2. RUN's network, one RUN that runs every time.
net=$work/net; mkdir -p "$net"
printf 'ARG BASE=bench/busybox\nFROM $BASE\nRUN true\n' > "$net/Dockerfile"
"$berth" --root "$work/nets" import "$work/rootfs.tar" bench/busybox:latest >/dev/null
b="$berth --root $work/nets build -q --no-cache"
args=()
for n in host none default; do args+=(-n "berth RUN --network $n" "$b --network $n $net"); done
if [ "$have_podman" = 1 ]; then
  "${podman[@]}" import -q "$work/rootfs.tar" localhost/bench/busybox:latest >/dev/null
  p="${podman[*]} build -q --no-cache --build-arg BASE=localhost/bench/busybox"
  for n in host none; do args+=(-n "podman RUN --network $n" "$p --network $n $net"); done
  # podman's default RUN network is its own bridge (podman0, 10.88.0.0/16).
  args+=(-n "podman RUN, default bridge" "$p $net")
fi
hyperfine -N --warmup 1 --runs "$runs" --export-json "$work/net.json" "${args[@]}"
for f in import net; do
  jq -r '.results[] | "\(.command): median \(.median*1000*100|floor/100) ms"' "$work/$f.json"
done
