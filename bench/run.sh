#!/usr/bin/env bash
# Container start speed: `berth run --rm IMG true` without a network and on the default
# bridge, side by side with `podman run` (crun) and, when Debian's docker.io is installed,
# `docker run` (dockerd with runc) on the same one-layer busybox image; then the RSS of
# berth's per-container monitor against podman's conmon, and `berth ps -a` with 100
# containers. Each engine gets a private store under a temp dir; nothing of the host's is
# touched, and everything started here is removed on exit.
# Usage: bench/run.sh [RUNS]   (as root; needs hyperfine, podman, busybox-static;
#                               docker.io optional: BENCH_DOCKER=0 skips it; the static
#                               build's row only when `make build-static` has run)
set -euo pipefail
runs=${1:-30}
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/bench/common.sh"
berth=${BERTH_BIN:-$here/target/release/berth}
[ -x "$berth" ] || (cd "$here" && cargo build --release --bins)
work=$(mktemp -d /tmp/berth-bench-run.XXXXXX)
export BERTH_ROOT=$work/berth
podman_args "$work"
# podman asks crun for RLIMIT_NOFILE/NPROC of 1048576/4194304, above this host's hard
# limits (no CAP_SYS_RESOURCE here); berth keeps the caller's limits by default.
plimits="--ulimit nofile=1024:1024 --ulimit nproc=1024:1024"
dockerd_pid=
cleanup() {
  "$berth" rm -f $("$berth" ps -aq 2>/dev/null) >/dev/null 2>&1 || true
  "${podman[@]}" rm -af >/dev/null 2>&1 || true
  "${podman[@]}" system reset -f >/dev/null 2>&1 || true
  stop_dockerd
  umount -R "$work"/* 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# One image, three stores.
busybox_rootfs "$work"
"$berth" import "$work/rootfs.tar" bench/busybox:latest >/dev/null
"${podman[@]}" import -q "$work/rootfs.tar" localhost/bench/busybox:latest >/dev/null

# `make build-static`'s binary, when built, runs right after the dynamic one: the same
# code without the dynamic loader's work at each start (~0.7 ms of CPU here).
cmds=(-n "berth run --network none" "$berth run --rm --network none bench/busybox true")
static=$here/target/$(rustc -vV | sed -n 's/^host: //p')/release/berth
if [ -x "$static" ] && [ -z "${BERTH_BIN:-}" ]; then
  cmds+=(-n "berth run --network none (static build)" "$static run --rm --network none bench/busybox true")
fi
cmds+=(-n "podman run --network none" "${podman[*]} run --rm $plimits --network none localhost/bench/busybox true"
       -n "berth run (bridge)" "$berth run --rm bench/busybox true"
       -n "podman run (bridge)" "${podman[*]} run --rm $plimits localhost/bench/busybox true")
if [ "${BENCH_DOCKER:-1}" = 1 ] && command -v dockerd >/dev/null; then
  start_dockerd "$work"
  "${docker[@]}" import "$work/rootfs.tar" bench/busybox:latest >/dev/null
  cmds+=(-n "docker run --network none" "${docker[*]} run --rm --network none bench/busybox true")
fi
hyperfine -N --warmup 3 --runs "$runs" --export-json "$work/run.json" "${cmds[@]}"
jq -r '.results[] | "\(.command): median \(.median*1000*100|floor/100) ms"' "$work/run.json"

# The monitor of a detached container against conmon.
id=$("$berth" run -d --network none bench/busybox sleep 1000)
mon=$("$berth" inspect --format '{{.State.MonitorPid}}' "$id" 2>/dev/null || true)
[ -n "$mon" ] && echo "berth monitor RSS: $(awk '/VmRSS/ {print $2, $3}' "/proc/$mon/status")"
"${podman[@]}" run -d $plimits --network none localhost/bench/busybox sleep 1000 >/dev/null
conmon=$(pgrep -n conmon || true)
[ -n "$conmon" ] && echo "podman conmon RSS: $(awk '/VmRSS/ {print $2, $3}' "/proc/$conmon/status")"

# berth ps with 100 containers (created, not started: ps reads records, not processes).
for i in $(seq 100); do "$berth" create --network none --name "c$i" bench/busybox true >/dev/null; done
hyperfine -N --warmup 3 --runs "$runs" -n "berth ps -a (100 containers)" "$berth ps -a"
