#!/usr/bin/env bash
# Build speed: a 4-step Dockerfile (FROM a busybox base, COPY, RUN, RUN, CMD) built cold
# (--no-cache: every step runs) and fully cached (nothing changed since the last build),
# with `berth build` side by side with `podman build`, `buildah bud --layers` and `docker
# build` (Debian's dockerd, BuildKit and the legacy builder) when they are installed. Each builder gets a private store under a temp dir; RUN uses the host
# network everywhere, so the numbers compare the builders rather than network setup
# (bench/build-cache.sh measures RUN on each network). Everything is removed on exit.
# Usage: bench/build.sh [RUNS]   (as root; needs hyperfine and busybox-static;
#                                 podman, buildah, docker.io optional;
#                                 BENCH_DOCKER=0 skips docker)
set -euo pipefail
runs=${1:-10}
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/bench/common.sh"
berth=${BERTH_BIN:-$here/target/release/berth}
[ -x "$berth" ] || (cd "$here" && cargo build --release --bin berth)
work=$(mktemp -d /tmp/berth-bench-build.XXXXXX)
export BERTH_ROOT=$work/berth
podman_args "$work"
buildah=(buildah --root "$work/buildah" --runroot "$work/buildah-run" --storage-driver overlay)
have_podman=$(command -v podman >/dev/null && echo 1 || echo 0)
have_buildah=$(command -v buildah >/dev/null && echo 1 || echo 0)
dockerd_pid=
cleanup() {
  stop_dockerd
  [ "$have_podman" = 1 ] && "${podman[@]}" system reset -f >/dev/null 2>&1 || true
  [ "$have_buildah" = 1 ] && "${buildah[@]}" rm -a >/dev/null 2>&1 || true
  umount -R "$work"/* 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# The base image, in every store.
busybox_rootfs "$work"
"$berth" import "$work/rootfs.tar" bench/busybox:latest >/dev/null

ctx=$work/ctx; four_step_context "$ctx"

b="$berth build -q --network host"
cold=(-n "berth build (cold)" "$b --no-cache -t bench/out $ctx")
cached=(-n "berth build (cached)" "$b -t bench/out $ctx")
if [ "$have_podman" = 1 ]; then
  "${podman[@]}" import -q "$work/rootfs.tar" localhost/bench/busybox:latest >/dev/null
  p="${podman[*]} build -q --network host --build-arg BASE=localhost/bench/busybox"
  cold+=(-n "podman build (cold)" "$p --no-cache -t bench/out $ctx")
  cached+=(-n "podman build (cached)" "$p -t bench/out $ctx")
fi
if [ "$have_buildah" = 1 ]; then
  id=$("${buildah[@]}" from scratch)
  mnt=$("${buildah[@]}" mount "$id"); tar -C "$mnt" -xf "$work/rootfs.tar"; "${buildah[@]}" umount "$id" >/dev/null
  "${buildah[@]}" commit -q "$id" localhost/bench/busybox:latest >/dev/null
  "${buildah[@]}" rm "$id" >/dev/null
  q="${buildah[*]} bud --layers -q --network host --build-arg BASE=localhost/bench/busybox"
  cold+=(-n "buildah bud --layers (cold)" "$q --no-cache -t bench/out $ctx")
  cached+=(-n "buildah bud --layers (cached)" "$q -t bench/out $ctx")
else
  echo "buildah is not installed: skipped" >&2
fi
if [ "${BENCH_DOCKER:-1}" = 1 ] && command -v dockerd >/dev/null; then
  start_dockerd "$work"
  "${docker[@]}" import "$work/rootfs.tar" bench/busybox:latest >/dev/null
  for kit in 1 0; do
    name=$([ $kit = 1 ] && echo "docker build (BuildKit)" || echo "docker build (legacy)")
    d="env DOCKER_BUILDKIT=$kit ${docker[*]} build -q --network host"
    cold+=(-n "$name (cold)" "$d --no-cache -t bench/out $ctx")
    cached+=(-n "$name (cached)" "$d -t bench/out $ctx")
  done
fi
hyperfine -N --warmup 1 --runs "$runs" --export-json "$work/cold.json" "${cold[@]}"
hyperfine -N --warmup 2 --runs "$((runs * 3))" --export-json "$work/cached.json" "${cached[@]}"
for f in cold cached; do
  jq -r '.results[] | "\(.command): median \(.median*1000*100|floor/100) ms"' "$work/$f.json"
done
