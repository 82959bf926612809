#!/usr/bin/env bash
# The floor of a cold push to Debian's docker-registry (issue 3): every blob of the
# benchmark image (bench/image_common.sh) uploaded at once by parallel curl processes,
# each a POST (session) and one monolithic PUT ?digest=, no manifest, to a fresh registry
# per run. No client can push the image faster than the registry ingests these uploads;
# compare with bench/push.sh's numbers.
# Usage: bench/push-floor.sh [RUNS]   (needs docker-registry, curl; as root)
runs=${1:-5}
source "$(dirname "$0")/image_common.sh"

upload() { # upload PORT BLOB_FILE
  local d loc sep
  d=sha256:$(basename "$2")
  loc=$(curl -fsS -X POST -D - -o /dev/null "http://127.0.0.1:$1/v2/bench/image/blobs/uploads/" |
    tr -d '\r' | awk -F': ' 'tolower($1)=="location"{print $2}')
  case "$loc" in http*) ;; *) loc="http://127.0.0.1:$1$loc" ;; esac
  case "$loc" in *\?*) sep='&' ;; *) sep='?' ;; esac
  curl -fsS -o /dev/null -X PUT -H 'Content-Type: application/octet-stream' \
    --data-binary "@$2" "$loc${sep}digest=$d"
}

port=15400
for r in $(seq "$runs"); do
  port=$((port + 1)); registry "floor$port" "$port"; sync
  t0=$(date +%s.%N)
  ups=()
  for b in "$layout"/blobs/sha256/*; do upload "$port" "$b" & ups+=($!); done
  # Only the uploads: a bare `wait` would also wait for the registries.
  for u in "${ups[@]}"; do wait "$u"; done
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" -v r="$r" 'BEGIN{printf "run %d: all blobs uploaded in %.2f s\n", r, b-a}'
done
