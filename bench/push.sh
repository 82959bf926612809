#!/usr/bin/env bash
# Cold push speed (issue 3): the benchmark image (bench/image_common.sh) pushed to a
# fresh Debian docker-registry on loopback for every run, so nothing is skipped or
# mounted: `berth push` from its store (the layout loaded into it first) against
# `skopeo copy oci:… docker://…` from the OCI layout, runs interleaved (berth, skopeo,
# berth, …) so that load from elsewhere hits both alike; wall time and peak RSS of each.
# With --uncompressed, the layers are plain tars (as `berth build` may keep them): berth
# push and skopeo copy to a registry both gzip them while pushing.
# Usage: bench/push.sh [RUNS] [--uncompressed]
#   (needs docker-registry, skopeo; as root)
runs=${1:-5}
uncompressed=0; [ "${2:-}" = --uncompressed ] && uncompressed=1
source "$(dirname "$0")/image_common.sh"

# berth's store gets the layers as they are in the layout (gzip, or plain tars).
tar -C "$layout" -cf "$work/layout.tar" .
"$berth" --root "$work/store" load -q -i "$work/layout.tar" >/dev/null
image=sha256:$cdigest

port=15200
push_run() { # push_run TOOL: one cold push; prints "SECONDS KIB"
  port=$((port + 1)); registry "push$port" "$port"
  sync
  if [ "$1" = berth ]; then
    "$berth" --root "$work/store" tag "$image" "127.0.0.1:$port/bench/image:latest"
    /usr/bin/time -o "$work/time" -f "%e %M" "$berth" --root "$work/store" push -q --tls-verify=false "127.0.0.1:$port/bench/image:latest" >/dev/null
  else
    /usr/bin/time -o "$work/time" -f "%e %M" skopeo copy -q --dest-tls-verify=false "oci:$layout:latest" "docker://127.0.0.1:$port/bench/image:latest"
  fi
  cat "$work/time"
}
: > "$work/berth.txt"; : > "$work/skopeo.txt"
for i in $(seq "$runs"); do
  # Not in a pipeline: push_run must run in this shell so cleanup knows its registries.
  push_run berth > "$work/one"; cat "$work/one" >> "$work/berth.txt"
  push_run skopeo > "$work/one"; cat "$work/one" >> "$work/skopeo.txt"
  echo "run $i: berth $(cat "$work/berth.txt" | tail -1), skopeo $(tail -1 "$work/skopeo.txt") (s, KiB)"
done
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
for t in berth skopeo; do
  echo "cold push $t: median $(cut -d' ' -f1 "$work/$t.txt" | median) s, peak RSS median $(cut -d' ' -f2 "$work/$t.txt" | median) KiB"
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
