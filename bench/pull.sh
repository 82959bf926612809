#!/usr/bin/env bash
# Pull speed (issue 3): the benchmark image (bench/image_common.sh) in Debian's
# docker-registry on loopback. `berth pull` into an empty store against `podman pull`
# (unpacked into podman's own overlay store under a private root) and `skopeo copy
# docker://… dir:` (download and verify only, no unpacking), interleaved by hyperfine in
# one run; then the peak RSS of berth and skopeo.
# Usage: bench/pull.sh [RUNS]   (needs docker-registry, skopeo, podman, hyperfine, jq; as root)
runs=${1:-5}
source "$(dirname "$0")/image_common.sh"

registry src 15101
src=127.0.0.1:15101/bench/image:latest
skopeo copy -q --dest-tls-verify=false "oci:$layout:latest" "docker://$src"

podman_pull="podman --root $work/podman --runroot $work/podman-run --storage-driver overlay pull -q --tls-verify=false $src"
hyperfine --runs "$runs" --export-json "$work/pull.json" \
  --prepare "rm -rf $work/store $work/dir; podman --root $work/podman --runroot $work/podman-run --storage-driver overlay system reset -f >/dev/null 2>&1 || true; rm -rf $work/podman $work/podman-run; sync" \
  -n "berth pull" "$berth --root $work/store pull -q --tls-verify=false $src" \
  -n "podman pull" "$podman_pull" \
  -n "skopeo copy dir:" "skopeo copy -q --src-tls-verify=false docker://$src dir:$work/dir"

echo -n "peak RSS berth pull: "; rm -rf "$work/store2"
/usr/bin/time -f "%M KiB" "$berth" --root "$work/store2" pull -q --tls-verify=false "$src" 2>&1 >/dev/null | tail -1
echo -n "peak RSS skopeo copy: "; rm -rf "$work/dir"
/usr/bin/time -f "%M KiB" skopeo copy -q --src-tls-verify=false "docker://$src" "dir:$work/dir" 2>&1 | tail -1
jq -r '.results[] | "\(.command): mean \(.mean*1000|floor) ms ± \(.stddev*1000|floor), median \(.median*1000|floor) ms"' "$work/pull.json"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
