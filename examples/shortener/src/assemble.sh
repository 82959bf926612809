#!/bin/sh
# Assembles the app tree into $1 (build stage only): role entry point, CGI scripts for
# the web and data roles, the worker, a generated static page, and the data directory
# owned by the runtime user.
set -eu
out=$1
version=$2
src=$(dirname "$0")
app=$out/app

mkdir -p "$app/web/cgi-bin/s" "$app/web/cgi-bin/stats" "$app/data/cgi-bin" "$app/bin" "$out/data"
# /cgi-bin/s/<code> and /cgi-bin/stats/<code>: httpd finds the script `s` (or `stats`) and
# passes the code as PATH_INFO, so the scripts sit one level up.
rmdir "$app/web/cgi-bin/s" "$app/web/cgi-bin/stats"
cp "$src/entry.sh" "$app/entry"
cp "$src/lib.sh" "$app/bin/lib.sh"
cp "$src/shorten.cgi" "$app/web/cgi-bin/shorten"
cp "$src/follow.cgi" "$app/web/cgi-bin/s"
cp "$src/stats.cgi" "$app/web/cgi-bin/stats"
cp "$src/ping.cgi" "$app/web/cgi-bin/ping"
cp "$src/kv.cgi" "$app/data/cgi-bin/kv"
cp "$src/worker.sh" "$app/bin/worker"

sed "s/@VERSION@/$version/g" "$src/index.html.in" > "$app/web/index.html"
echo "$version" > "$app/VERSION"

chmod 0755 "$app/entry" "$app/bin/worker" "$app"/web/cgi-bin/* "$app"/data/cgi-bin/*
chmod 0644 "$app/bin/lib.sh" "$app/web/index.html" "$app/VERSION"
# The data role writes here; a fresh named volume takes this owner from the image.
chown app:app "$out/data"
chmod 0750 "$out/data"
