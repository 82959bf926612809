# Sourced by the bench scripts that compare against podman on a busybox base.
# podman_args WORK: sets the array `podman` to a podman with a private store under WORK
#   (--tmpdir too, so that resetting it leaves the host's /run/libpod alone).
# four_step_context DIR: the build benchmarks' context: ~135 kB of text and a Dockerfile
#   FROM $BASE (default bench/busybox), COPY, RUN, RUN, CMD.
# busybox_rootfs WORK: makes WORK/rootfs (busybox-static and its applet links, root in
#   /etc/passwd and /etc/group) and its tar WORK/rootfs.tar.
# start_dockerd WORK: a private dockerd (data, exec root and socket under WORK, no bridge,
#   no iptables rules) in the background; sets `dockerd_pid` and the array `docker` to a
#   client of it, and returns once it answers. stop_dockerd: removes its containers, stops it.
podman_args() {
  podman=(podman --root "$1/podman" --runroot "$1/podman-run" --tmpdir "$1/podman-tmp"
          --storage-driver overlay --cgroup-manager cgroupfs --events-backend none)
}

busybox_rootfs() {
  local rootfs=$1/rootfs
  mkdir -p "$rootfs"/{bin,etc,proc,sys,dev,tmp}
  cp /bin/busybox "$rootfs/bin/"
  for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$rootfs/bin/$a"; done
  printf 'root:x:0:0:root:/root:/bin/sh\n' > "$rootfs/etc/passwd"
  printf 'root:x:0:\n' > "$rootfs/etc/group"
  tar -C "$rootfs" -cf "$1/rootfs.tar" .
}

four_step_context() {
  mkdir -p "$1"
  head -c 100000 /dev/urandom | base64 > "$1/app.txt"
  cat > "$1/Dockerfile" <<'DOCKERFILE'
ARG BASE=bench/busybox
FROM $BASE
COPY app.txt /app/
RUN cp /app/app.txt /app/copy
RUN wc -c /app/copy > /app/size
CMD ["cat", "/app/size"]
DOCKERFILE
}

start_dockerd() {
  # Debian's client, of the daemon's version: it builds with BuildKit itself, where a newer
  # docker on PATH would want the buildx plugin.
  local cli=docker; [ -x /usr/bin/docker ] && cli=/usr/bin/docker
  docker=("$cli" -H "unix://$1/docker.sock")
  dockerd --data-root "$1/docker" --exec-root "$1/docker-run" -H "unix://$1/docker.sock" \
    --pidfile "$1/docker.pid" --bridge none --iptables=false >"$1/dockerd.log" 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 100); do "${docker[@]}" info >/dev/null 2>&1 && break; sleep 0.2; done
}

stop_dockerd() {
  [ -n "${dockerd_pid:-}" ] || return 0
  "${docker[@]}" rm -f $("${docker[@]}" ps -aq) >/dev/null 2>&1 || true
  kill "$dockerd_pid" 2>/dev/null; wait "$dockerd_pid" 2>/dev/null || true
}
