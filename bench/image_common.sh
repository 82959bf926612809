# Sourced by bench/pull.sh and bench/push.sh: the benchmark image of issue 3 (the busybox
# base plus three layers of 64 MiB random data, gzip -1, about 194 MB of blobs) as an OCI
# layout in $layout, and registry(), which starts Debian's docker-registry on loopback.
# With uncompressed=1 set before sourcing, the layers are plain tars instead.
# Sets: here, berth, work, layout; cleans up on exit.
set -euo pipefail
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
  local mt=application/vnd.oci.image.layer.v1.tar
  if [ "${uncompressed:-0}" = 1 ]; then mv "$work/layer.tar" "$work/layer.tgz"
  else gzip -1 -c "$work/layer.tar" > "$work/layer.tgz"; rm "$work/layer.tar"; mt=$mt+gzip; fi
  local size; size=$(stat -c %s "$work/layer.tgz")
  layers+=("{\"mediaType\":\"$mt\",\"digest\":\"sha256:$(put "$work/layer.tgz")\",\"size\":$size}")
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
echo "image: $(du -sh "$layout/blobs" | cut -f1) of blobs; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
