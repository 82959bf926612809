#!/usr/bin/env bash
# Compose speed on the worked example (examples/shortener): `up -d` until every service is
# healthy, and `down`, with berth side by side with docker-compose (Debian's 1.29, on a
# private dockerd) and podman-compose when their packages are installed. Each engine gets
# the same base image (busybox-static imported) and builds the app image before timing,
# so only up and down are measured. Everything runs in a temp dir and is removed on exit.
# Usage: bench/compose.sh [RUNS]   (as root; needs hyperfine, busybox-static; optional:
#                                   docker.io + docker-compose, podman + podman-compose)
set -euo pipefail
runs=${1:-10}
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/bench/common.sh"
bindir=${BERTH_BIN_DIR:-$here/target/release}
berth=$bindir/berth
[ -x "$berth" ] || (cd "$here" && cargo build --release --bins)
file=$here/examples/shortener/compose.yaml
work=$(mktemp -d /tmp/berth-bench-compose.XXXXXX)
export BERTH_ROOT=$work/berth SHORTENER_PORT=${SHORTENER_PORT:-18181} SHORTENER_WARMUP=0
proj=benchshort
dockerd_pid=
docker_sock=unix://$work/docker.sock
podman_args "$work"

cleanup() {
  "$berth" compose -f "$file" -p "$proj" down -v -t 0 >/dev/null 2>&1 || true
  if [ -n "$dockerd_pid" ]; then
    DOCKER_HOST=$docker_sock docker-compose -f "$file" -p "$proj" down -v -t 0 >/dev/null 2>&1 || true
    kill "$dockerd_pid" 2>/dev/null; wait "$dockerd_pid" 2>/dev/null || true
  fi
  if command -v podman-compose >/dev/null; then
    podman-compose --podman-args "${podman[*]:1}" -f "$file" -p "$proj" down -v >/dev/null 2>&1 || true
    "${podman[@]}" system reset -f >/dev/null 2>&1 || true
  fi
  umount -R "$work"/* 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# The base rootfs, as scripts/shortener.sh makes it, for the peers; berth gets it from
# the script itself.
BERTH_BIN_DIR=$bindir "$here/scripts/shortener.sh" base >/dev/null
rootfs=$work/rootfs; mkdir -p "$rootfs"/{bin,etc,proc,sys,dev,tmp,root,home/app}
cp /bin/busybox "$rootfs/bin/"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$rootfs/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n' > "$rootfs/etc/passwd"
printf 'root:x:0:\napp:x:1000:\n' > "$rootfs/etc/group"
chmod 1777 "$rootfs/tmp"; chown 1000:1000 "$rootfs/home/app"
tar -C "$rootfs" --numeric-owner -cf "$work/rootfs.tar" .

# `up -d` returns before the services are healthy with the peers (docker-compose 1.29 has
# no --wait): poll until ENGINE reports every container of the project healthy.
cat > "$work/wait-healthy" <<'SH'
#!/bin/sh
# wait-healthy [--run] LABEL ENGINE-ARGS...
# --run: probe with `ENGINE healthcheck run` (podman runs healthchecks from systemd
# timers, which a host without systemd does not have).
run=; [ "$1" = --run ] && { run=1; shift; }
label=$1; shift
healthy() {
  if [ -n "$run" ]; then
    for id in $ids; do "$@" healthcheck run "$id" >/dev/null 2>&1 || return 1; done
  else
    [ "$("$@" inspect -f '{{.State.Health.Status}}' $ids | sort -u)" = healthy ]
  fi
}
i=0
while [ $i -lt 600 ]; do
  ids=$("$@" ps -q --filter "label=$label")
  [ "$(echo "$ids" | grep -c .)" -ge 3 ] && healthy "$@" && exit 0
  i=$((i + 1)); sleep 0.05
done
echo "not healthy after 30 s" >&2; exit 1
SH
chmod +x "$work/wait-healthy"

bc=("$berth" compose -f "$file" -p "$proj")
"${bc[@]}" build >/dev/null
up=(-n "berth compose up -d --wait" "${bc[*]} up -d --wait")
down=(-n "berth compose down" "${bc[*]} down -v")
up_prep=("${bc[*]} down -v -t 0")
down_prep=("${bc[*]} up -d --wait")

if [ "${BENCH_DOCKER:-1}" = 1 ] && command -v dockerd >/dev/null && command -v docker-compose >/dev/null; then
  dockerd --data-root "$work/docker" --exec-root "$work/docker-run" -H "$docker_sock" \
    --pidfile "$work/docker.pid" --bridge none >"$work/dockerd.log" 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 100); do docker -H "$docker_sock" info >/dev/null 2>&1 && break; sleep 0.2; done
  docker -H "$docker_sock" import "$work/rootfs.tar" shortener/base:latest >/dev/null
  export DOCKER_HOST=$docker_sock
  dc="docker-compose -f $file -p $proj"
  $dc build -q >/dev/null
  up+=(-n "docker-compose up -d (+ wait healthy)"
       "sh -c '$dc up -d; $work/wait-healthy com.docker.compose.project=$proj docker'")
  down+=(-n "docker-compose down" "$dc down -v")
  up_prep+=("$dc down -v -t 0")
  down_prep+=("sh -c '$dc up -d && $work/wait-healthy com.docker.compose.project=$proj docker'")
else
  echo "docker-compose: skipped (apt-get install docker.io docker-compose)" >&2
fi

if command -v podman >/dev/null && command -v podman-compose >/dev/null; then
  "${podman[@]}" import -q "$work/rootfs.tar" localhost/shortener/base:latest >/dev/null
  # podman asks crun for RLIMIT_NOFILE/NPROC above this host's hard limits (as in
  # bench/run.sh); podman-compose 1.0.3 ignores depends_on conditions.
  pc="podman-compose --podman-args '${podman[*]:1}' --podman-run-args '--ulimit nofile=1024:1024 --ulimit nproc=1024:1024' -f $file -p $proj"
  (cd "$here" && eval "$pc build") >/dev/null 2>&1
  up+=(-n "podman-compose up -d (+ wait healthy)"
       "sh -c \"$pc up -d >/dev/null 2>&1; $work/wait-healthy --run io.podman.compose.project=$proj ${podman[*]}\"")
  down+=(-n "podman-compose down" "sh -c \"$pc down -v >/dev/null 2>&1\"")
  up_prep+=("sh -c \"$pc down -v >/dev/null 2>&1\"")
  down_prep+=("sh -c \"$pc up -d >/dev/null 2>&1; $work/wait-healthy --run io.podman.compose.project=$proj ${podman[*]}\"")
else
  echo "podman-compose: skipped (apt-get install podman podman-compose)" >&2
fi

# One hyperfine per command, so each gets its own --prepare (the opposite operation).
bench() { # NAME CMD PREP
  hyperfine --warmup 1 --runs "$runs" --prepare "$3" -n "$1" "$2" --export-json "$work/one.json" >&2
  jq -r '.results[] | "\(.command): median \(.median*1000|floor) ms"' "$work/one.json"
}
results=()
for i in $(seq 0 $(( ${#up_prep[@]} - 1 ))); do
  results+=("$(bench "${up[$((3*i+1))]}" "${up[$((3*i+2))]}" "${up_prep[$i]}")")
  results+=("$(bench "${down[$((3*i+1))]}" "${down[$((3*i+2))]}" "${down_prep[$i]}")")
done
printf '%s\n' "${results[@]}"
