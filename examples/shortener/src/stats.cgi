#!/bin/sh
# GET /cgi-bin/stats/<code> -> visits counted so far by the worker.
. /app/bin/lib.sh
code=${PATH_INFO#/}
case "$code" in
'' | *[!0-9a-f]*) reply "404 Not Found" "no such code" ;;
esac
n=$(kv get "visits:$code") || reply "503 Service Unavailable" "data store unreachable"
reply "200 OK" "${n:-0}"
