#!/bin/sh
# GET /cgi-bin/s/<code> -> 302 to the URL; the visit goes on the queue for the worker.
. /app/bin/lib.sh
code=${PATH_INFO#/}
case "$code" in
'' | *[!0-9a-f]*) reply "404 Not Found" "no such code" ;;
esac
url=$(kv get "url:$code") || reply "503 Service Unavailable" "data store unreachable"
[ -n "$url" ] || reply "404 Not Found" "no such code: $code"
if kv push queue "$code" > /dev/null; then
	echo "web: visit of $code queued" >&2
else
	echo "web: visit of $code not queued" >&2
fi
printf 'Status: 302 Found\r\nLocation: %s\r\nContent-Type: text/plain\r\n\r\n%s\n' "$url" "$url"
