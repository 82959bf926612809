#!/usr/bin/env bash
# Pull and push speed: an image of the busybox base plus three layers of 64 MiB random
# data (gzip) in Debian's docker-registry on loopback. `berth pull` into an empty store
# against `podman pull` (unpacked into podman's own overlay store) and `skopeo copy
# docker://… dir:` (download and verify only, no unpacking), then a cold `berth push` to
# a new registry against `skopeo copy` doing the same; peak RSS of each.
# Usage: bench/pull.sh [RUNS]   (needs docker-registry, skopeo, podman, hyperfine, jq; as root)
set -euo pipefail
runs=${1:-5}
here=$(cd "$(dirname "$0")/.." && pwd)
berth=${BERTH_BIN:-$here/target/release/berth}
[ -x "$berth" ] || (cd "$here" && cargo build --release --bins)
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

registry() { # registry NAME PORT: start docker-registry with storage under $work/NAME
  mkdir -p "$work/$1"
  printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:%s\n' \
    "$work/$1/data" "$2" > "$work/$1/config.yml"
  /usr/bin/docker-registry serve "$work/$1/config.yml" >"$work/$1/log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$2/v2/" >/dev/null && return; sleep 0.1; done
  echo "registry $1 did not start" >&2; exit 1
}

# An OCI layout by hand: each layer is a gzip tar, its diff id the sha256 of the tar.
layout=$work/layout; mkdir -p "$layout/blobs/sha256"
put() { local d; d=$(sha256sum "$1" | cut -d' ' -f1); mv "$1" "$layout/blobs/sha256/$d"; echo "$d"; }
layers=(); diffs=()
add_layer() { # add_layer DIR
  tar -C "$1" -cf "$work/layer.tar" .
  diffs+=("sha256:$(sha256sum "$work/layer.tar" | cut -d' ' -f1)")
  gzip -1 -c "$work/layer.tar" > "$work/layer.tgz"; rm "$work/layer.tar"
  local size; size=$(stat -c %s "$work/layer.tgz")
  layers+=("{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$(put "$work/layer.tgz")\",\"size\":$size}")
}
mkdir -p "$work/base/bin" && cp /bin/busybox "$work/base/bin/" && add_layer "$work/base"
for i in 1 2 3; do
  rm -rf "$work/l"; mkdir -p "$work/l"; head -c 64M /dev/urandom > "$work/l/data$i"; add_layer "$work/l"
done
diff_json=$(printf '"%s",' "${diffs[@]}"); layer_json=$(IFS=,; echo "${layers[*]}")
echo "{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[${diff_json%,}]}}" > "$work/config"
csize=$(stat -c %s "$work/config"); cdigest=$(put "$work/config")
echo "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:$cdigest\",\"size\":$csize},\"layers\":[$layer_json]}" > "$work/manifest"
msize=$(stat -c %s "$work/manifest"); mdigest=$(put "$work/manifest")
echo "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:$mdigest\",\"size\":$msize,\"annotations\":{\"org.opencontainers.image.ref.name\":\"latest\"}}]}" > "$layout/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' > "$layout/oci-layout"

registry src 15101
src=127.0.0.1:15101/bench/image:latest
skopeo copy -q --dest-tls-verify=false "oci:$layout:latest" "docker://$src"
echo "image: $(du -sh "$layout/blobs" | cut -f1) of blobs"

# podman pull unpacks into its own overlay store (a private root, so the host's is untouched).
podman_pull="podman --root $work/podman --runroot $work/podman-run --storage-driver overlay pull -q --tls-verify=false $src"
hyperfine --runs "$runs" --export-json "$work/pull.json" \
  --prepare "rm -rf $work/store $work/dir; podman --root $work/podman --runroot $work/podman-run --storage-driver overlay system reset -f >/dev/null 2>&1 || true; rm -rf $work/podman $work/podman-run" \
  -n "berth pull" "$berth --root $work/store pull -q --tls-verify=false $src" \
  -n "podman pull" "$podman_pull" \
  -n "skopeo copy dir:" "skopeo copy -q --src-tls-verify=false docker://$src dir:$work/dir"

# Cold push: a fresh registry for every run, so nothing is skipped or mounted.
"$berth" --root "$work/store" pull -q --tls-verify=false "$src" >/dev/null
port=15200
push_run() { # push_run TOOL
  port=$((port + 1)); registry "push$port" "$port"
  if [ "$1" = berth ]; then
    "$berth" --root "$work/store" tag "$src" "127.0.0.1:$port/bench/image:latest"
    /usr/bin/time -f "%e s %M KiB" "$berth" --root "$work/store" push -q --tls-verify=false "127.0.0.1:$port/bench/image:latest" >/dev/null
  else
    /usr/bin/time -f "%e s %M KiB" skopeo copy -q --dest-tls-verify=false "oci:$layout:latest" "docker://127.0.0.1:$port/bench/image:latest"
  fi
}
for tool in berth skopeo; do
  # Not in a pipeline: push_run must run in this shell so cleanup knows its registries.
  for _ in $(seq "$runs"); do push_run $tool 2>"$work/time"; echo "cold push $tool: $(tail -1 "$work/time")"; done
done
echo -n "peak RSS berth pull: "; rm -rf "$work/store2"
/usr/bin/time -f "%M KiB" "$berth" --root "$work/store2" pull -q --tls-verify=false "$src" 2>&1 >/dev/null | tail -1
echo -n "peak RSS skopeo copy: "; rm -rf "$work/dir"
/usr/bin/time -f "%M KiB" skopeo copy -q --src-tls-verify=false "docker://$src" "dir:$work/dir" 2>&1 | tail -1
jq -r '.results[] | "\(.command): mean \(.mean*1000|floor) ms ± \(.stddev*1000|floor)"' "$work/pull.json"
