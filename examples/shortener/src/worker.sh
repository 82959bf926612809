#!/bin/sh
# The worker role: takes visits off the data role's queue and counts them per code.
. /app/bin/lib.sh
echo "worker: consuming the visit queue at $DATA_ADDR" >&2
# As PID 1 a trapped TERM only runs between commands; blocking steps run in the
# background and are waited for, so a stop interrupts them at once.
trap 'echo "worker: stopping" >&2; exit 0' TERM INT
nap() {
	sleep "$1" &
	wait $!
}
while :; do
	touch /tmp/worker.alive
	kv pop queue > /tmp/popped &
	wait $! || { nap 1; continue; }
	code=$(cat /tmp/popped)
	case "$code" in
	'') nap 0.2 ;;
	*[!0-9a-f]*) echo "worker: dropped bad entry" >&2 ;;
	*) echo "worker: visit of $code, now $(kv incr "visits:$code")" >&2 ;;
	esac
done
