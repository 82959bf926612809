#!/bin/sh
# The data role: /cgi-bin/kv?op=OP&k=KEY, values in the request body. Keys are files
# under /data/kv; the queue is a directory of files under /data/queue, oldest first.
# One lock (a directory: mkdir is atomic) serialises writers.
. /app/bin/lib.sh
op=$(param op)
key=$(param k)
case "$key" in
*[!A-Za-z0-9:_-]*) reply "400 Bad Request" "bad key" ;;
esac
body() { head -c "${CONTENT_LENGTH:-0}"; }
lock() {
	until mkdir /data/lock 2> /dev/null; do usleep 5000; done
	trap 'rmdir /data/lock' EXIT
}
case "$op" in
ping) reply "200 OK" pong ;;
get)
	[ -f "/data/kv/$key" ] && v=$(cat "/data/kv/$key") || v=
	reply "200 OK" "$v"
	;;
set)
	lock
	body > "/data/kv/$key.tmp" && mv "/data/kv/$key.tmp" "/data/kv/$key"
	reply "200 OK" stored
	;;
incr)
	lock
	n=$(cat "/data/kv/$key" 2>/dev/null || echo 0)
	n=$((n + 1))
	echo "$n" > "/data/kv/$key"
	reply "200 OK" "$n"
	;;
push)
	lock
	seq=$(cat /data/queue.seq 2>/dev/null || echo 0)
	seq=$((seq + 1))
	echo "$seq" > /data/queue.seq
	body > "/data/queue/$(printf '%012d' "$seq")"
	reply "200 OK" queued
	;;
pop)
	lock
	first=$(ls /data/queue | head -n 1)
	[ -n "$first" ] || reply "200 OK" ""
	v=$(cat "/data/queue/$first")
	rm -f "/data/queue/$first"
	reply "200 OK" "$v"
	;;
*) reply "400 Bad Request" "unknown op" ;;
esac
