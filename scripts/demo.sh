#!/usr/bin/env bash
# The main demo: what a Docker user does in a day, with berth and no daemon. An image from
# Debian's busybox-static, a Dockerfile build (cached rebuild), a web container with a
# published port, logs/exec/ps, two containers finding each other by name on a user
# network, berth's own registry with a push and a pull, and berth-runc under the hood.
# Run as root (make demo). Everything lives in a temp root and is removed at the end.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${BERTH_BIN_DIR:-$here/target/release}
work=$(mktemp -d /tmp/berth-demo.XXXXXX)
export BERTH_ROOT=$work/root
berth() { "$bin/berth" "$@"; }
regpid=
cleanup() {
  berth rm -f $(berth ps -aq) >/dev/null 2>&1 || true
  berth network rm demo-net >/dev/null 2>&1 || true
  if [ -n "$regpid" ]; then
    # SIGTERM lets the registry finish in-flight requests; give it two seconds.
    kill "$regpid" 2>/dev/null || true
    for _ in $(seq 20); do kill -0 "$regpid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$regpid" 2>/dev/null || true
  fi
  umount -R "$work"/root/containers/*/rootfs 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "berth sees this host as"
berth info

step "an image from busybox-static (berth import of a root filesystem tarball)"
rootfs=$work/rootfs; mkdir -p "$rootfs"/{bin,etc,tmp,www}
cp /bin/busybox "$rootfs/bin/"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$rootfs/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\nwww:x:1000:1000:www:/www:/bin/sh\n' > "$rootfs/etc/passwd"
printf 'root:x:0:\nwww:x:1000:\n' > "$rootfs/etc/group"
tar -C "$rootfs" -cf "$work/rootfs.tar" .
berth import -c 'CMD ["sh"]' "$work/rootfs.tar" demo/busybox:latest
berth images

step "berth build: a web image from a Dockerfile (then the same build again, all cached)"
mkdir -p "$work/site"
cat > "$work/site/Dockerfile" <<'EOF'
FROM demo/busybox:latest
COPY index.html /www/
RUN chown -R www:www /www && echo "built on $(uname -m)" > /www/about.txt
USER www
EXPOSE 8080
CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]
EOF
echo '<h1>hello from berth</h1>' > "$work/site/index.html"
berth build --progress plain -t demo/web:1 "$work/site"
time berth build -q -t demo/web:1 "$work/site"

step "berth run -d -p 18080:8080: a detached web container, reached from the host"
berth run -d --name web -p 18080:8080 demo/web:1
sleep 0.5
curl -fsS http://127.0.0.1:18080/ && curl -fsS http://127.0.0.1:18080/about.txt
berth ps
echo "exec: $(berth exec web sh -c 'echo "$(id -un) in $(hostname), pid 1 is $(cat /proc/1/comm)"')"
berth logs web | tail -2

step "a user network: containers reach each other by name"
berth network create demo-net >/dev/null
berth run -d --name api --network demo-net demo/web:1 >/dev/null
sleep 0.3
berth run --rm --network demo-net demo/busybox wget -qO- http://api:8080/

step "limits and exit codes as Docker: 64 MiB memory, read-only root, exit 3"
berth run --rm --memory 64m --read-only demo/busybox sh -c \
  'cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max; touch /x 2>&1; exit 3' || echo "exit code $?"

step "berth registry serve: push there, pull it back into a fresh store"
"$bin/berth" registry serve --addr 127.0.0.1:15999 --storage "$work/registry" >/dev/null 2>&1 &
regpid=$!
for _ in $(seq 50); do curl -fs http://127.0.0.1:15999/v2/ >/dev/null && break; sleep 0.1; done
berth tag demo/web:1 127.0.0.1:15999/demo/web:1
berth push 127.0.0.1:15999/demo/web:1
BERTH_ROOT=$work/root2 "$bin/berth" pull 127.0.0.1:15999/demo/web:1
BERTH_ROOT=$work/root2 "$bin/berth" images

step "stop, rm: nothing left behind"
berth stop -t 2 web api >/dev/null
berth rm web api >/dev/null
berth network rm demo-net >/dev/null
berth ps -a

step "under the hood: berth-runc is a runc-compatible runtime (containerd can drive it)"
"$bin/berth-runc" --version | head -1

step "compose: the URL shortener worked example (build, up --wait, shorten, follow, down)"
BERTH_BIN_DIR=$bin "$here/scripts/shortener.sh" demo

step "next: make bench (start latency against crun/runc), bench/*.sh, make test"
