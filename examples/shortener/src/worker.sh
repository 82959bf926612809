#!/bin/sh
# The worker role: takes visits off the data role's queue and counts them per code.
. /app/bin/lib.sh
echo "worker: consuming the visit queue at $DATA_ADDR" >&2
trap 'echo "worker: stopping" >&2; exit 0' TERM INT
while :; do
	touch /tmp/worker.alive
	code=$(kv pop queue) || { sleep 1; continue; }
	case "$code" in
	'') sleep 0.2 ;;
	*[!0-9a-f]*) echo "worker: dropped bad entry" >&2 ;;
	*) echo "worker: visit of $code, now $(kv incr "visits:$code")" >&2 ;;
	esac
done
