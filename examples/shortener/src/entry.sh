#!/bin/sh
# One image, three roles: `web` (httpd + CGI), `worker` (queue consumer), `data` (a tiny
# key-value store over HTTP, kept in /data). `health` is the image's HEALTHCHECK: it
# probes whichever role this container runs.
set -eu
role=${1:-web}

# As PID 1 the shell gets SIGTERM only if it handles it: serve in the background and
# stop the server on TERM, so `stop` and `down` take milliseconds, not the grace period.
serve() {
	httpd -f -p "$1" -h "$2" &
	pid=$!
	trap 'kill "$pid"; wait "$pid"; exit 0' TERM INT
	wait "$pid"
}

case "$role" in
web)
	echo web > /tmp/role
	echo "web: serving on :$PORT, data at $DATA_ADDR" >&2
	serve "$PORT" /app/web
	;;
data)
	echo data > /tmp/role
	mkdir -p /data/kv /data/queue
	# A lock left by a request killed with the previous container.
	rmdir /data/lock 2> /dev/null || true
	# Recovery before serving (here a fixed delay, DATA_WARMUP seconds): health must
	# stay "starting" until the store really answers.
	echo "data: recovering store ($(ls /data/kv | wc -l) keys)" >&2
	sleep "${DATA_WARMUP:-0}"
	echo "data: serving on :$DATA_PORT" >&2
	serve "$DATA_PORT" /app/data
	;;
worker)
	echo worker > /tmp/role
	exec /app/bin/worker
	;;
health)
	case "$(cat /tmp/role 2>/dev/null)" in
	web) timeout 3 wget -q -O /dev/null "http://127.0.0.1:$PORT/cgi-bin/ping" ;;
	data) test "$(timeout 3 wget -q -O - "http://127.0.0.1:$DATA_PORT/cgi-bin/kv?op=ping")" = pong ;;
	worker) test -n "$(find /tmp/worker.alive -mmin -1 2>/dev/null)" ;;
	*) exit 1 ;;
	esac
	;;
*)
	echo "usage: entry web|worker|data|health" >&2
	exit 2
	;;
esac
