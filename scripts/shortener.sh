#!/bin/sh
# The worked example: a URL shortener (examples/shortener) run with `berth compose`.
#
#   scripts/shortener.sh base    make the local base image shortener/base:latest
#   scripts/shortener.sh up      base image, then build and start (waits until healthy)
#   scripts/shortener.sh demo    up, shorten a URL, follow it, show ps and logs, down -v
#   scripts/shortener.sh down    stop and remove containers, network and volume
#
# Offline: the base image is Debian's busybox-static imported with `berth import`.
# Environment: BERTH_BIN_DIR (default <repo>/target/release), BERTH_ROOT (berth's
# default store when unset), SHORTENER_PORT (host port, default 8080).
set -eu

repo=$(cd "$(dirname "$0")/.." && pwd)
berth="${BERTH_BIN_DIR:-$repo/target/release}/berth"
file="$repo/examples/shortener/compose.yaml"
port=${SHORTENER_PORT:-8080}
export SHORTENER_PORT=$port
BASE=shortener/base:latest

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
run() { say "$*"; "$@"; }
compose() { "$berth" compose -f "$file" "$@"; }
# Shows the command as a reader would type it from the repository root.
show_compose() {
	say "berth compose -f examples/shortener/compose.yaml $*"
	compose "$@"
}

[ -x "$berth" ] || { echo "no berth binary at $berth (cargo build --release, or set BERTH_BIN_DIR)" >&2; exit 1; }
[ -x /bin/busybox ] || { echo "/bin/busybox is missing: apt-get install busybox-static" >&2; exit 1; }

# The base image: /bin/busybox with its applet links, a non-root user `app` (uid 1000),
# /tmp and /etc/hosts-ready /etc. Rebuilt only when missing.
make_base() {
	if "$berth" image inspect "$BASE" > /dev/null 2>&1; then
		return 0
	fi
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	r=$tmp/rootfs
	mkdir -p "$r/bin" "$r/etc" "$r/tmp" "$r/proc" "$r/sys" "$r/dev" "$r/root" "$r/home/app"
	cp /bin/busybox "$r/bin/busybox"
	for a in $(/bin/busybox --list); do
		[ "$a" = busybox ] || ln -s busybox "$r/bin/$a"
	done
	printf 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$r/etc/passwd"
	printf 'root:x:0:\napp:x:1000:\nnogroup:x:65534:\n' > "$r/etc/group"
	chmod 1777 "$r/tmp"
	chown 1000:1000 "$r/home/app"
	tar -C "$r" --numeric-owner -cf "$tmp/rootfs.tar" .
	"$berth" import -c 'ENV PATH=/bin' -c 'CMD ["sh"]' "$tmp/rootfs.tar" "$BASE" > /dev/null
	rm -rf "$tmp"
	trap - EXIT
	echo "made $BASE from /bin/busybox"
}

up() {
	make_base
	show_compose up -d --build --wait
}

down() {
	show_compose down -v -t 1
}

demo() {
	up
	trap 'compose down -v -t 1 > /dev/null 2>&1 || true' EXIT
	target="https://example.com/a/rather/long/path?with=query"
	say "curl -s -X POST 'http://127.0.0.1:$port/cgi-bin/shorten?url=$target'"
	short=$(curl -fsS -X POST --get --data-urlencode "url=$target" "http://127.0.0.1:$port/cgi-bin/shorten")
	echo "$short"
	run curl -sI "$short"
	# The worker counts the visit from the queue, asynchronously.
	code=${short##*/}
	sleep 1
	say "curl -s http://127.0.0.1:$port/cgi-bin/stats/$code"
	curl -fsS "http://127.0.0.1:$port/cgi-bin/stats/$code"
	show_compose ps
	show_compose logs --no-color
	trap - EXIT
	down
}

case "${1:-demo}" in
base) make_base ;;
up) up ;;
down) down ;;
demo) demo ;;
*)
	echo "usage: $0 [base|up|demo|down]" >&2
	exit 2
	;;
esac
