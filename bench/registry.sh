#!/usr/bin/env bash
# Side-by-side: `berth registry serve` and Debian's docker-registry (distribution 2.8) on the
# same machine and data. Prints a markdown table: manifest GETs by tag (wrk, 64
# connections), 64 MiB blob GET throughput (median of 5), 8 concurrent pushes of distinct
# 16 MiB images with skopeo (wall time, median of 3 rounds, new content each round), and
# peak RSS (VmHWM) at the end.
#
# Usage: bench/registry.sh [berth binary]   (default: target/release/berth)
# Needs: docker-registry, wrk, curl, sha256sum, skopeo, python3.
set -euo pipefail

BERTH=${1:-target/release/berth}
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_up() {
    for _ in $(seq 100); do
        curl -fsS -o /dev/null "http://$1/v2/" && return 0
        sleep 0.1
    done
    echo "registry at $1 did not come up" >&2
    return 1
}

# Test data: a 64 MiB layer, a small config, a manifest naming both.
head -c 64M /dev/urandom >"$WORK/layer"
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}' >"$WORK/config"
LAYER="sha256:$(sha256sum "$WORK/layer" | cut -d' ' -f1)"
CONFIG="sha256:$(sha256sum "$WORK/config" | cut -d' ' -f1)"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":%d}]}' \
    "$CONFIG" "$(stat -c %s "$WORK/config")" "$LAYER" "$(stat -c %s "$WORK/layer")" >"$WORK/manifest"

# One OCI layout per image: a layer (an uncompressed tar of 16 MiB of random data), a
# config naming it, a manifest. Distinct content everywhere, so no push finds a blob the
# registry already has.
make_layout() {
    local dir=$1 d
    mkdir -p "$dir/blobs/sha256" "$dir/src"
    head -c 16M /dev/urandom >"$dir/src/data"
    tar -C "$dir/src" -cf "$dir/layer.tar" data
    local ld ls cd cs md ms
    ld=$(sha256sum "$dir/layer.tar" | cut -d' ' -f1); ls=$(stat -c %s "$dir/layer.tar")
    mv "$dir/layer.tar" "$dir/blobs/sha256/$ld"
    printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$ld" >"$dir/c"
    cd=$(sha256sum "$dir/c" | cut -d' ' -f1); cs=$(stat -c %s "$dir/c"); mv "$dir/c" "$dir/blobs/sha256/$cd"
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%d}]}' \
        "$cd" "$cs" "$ld" "$ls" >"$dir/m"
    md=$(sha256sum "$dir/m" | cut -d' ' -f1); ms=$(stat -c %s "$dir/m"); mv "$dir/m" "$dir/blobs/sha256/$md"
    printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%d}]}' "$md" "$ms" >"$dir/index.json"
    printf '{"imageLayoutVersion":"1.0.0"}' >"$dir/oci-layout"
    rm -rf "$dir/src"
}

# Wall time of 8 concurrent `skopeo copy` pushes, median of 3 rounds (fresh layouts each).
concurrent_pushes() {
    local addr=$1 tag=$2 times=()
    for round in 1 2 3; do
        local layouts=()
        for i in 1 2 3 4 5 6 7 8; do
            make_layout "$WORK/push-$tag-$round-$i"
            layouts+=("$WORK/push-$tag-$round-$i")
        done
        sync
        local t0 t1 pids=()
        t0=$(date +%s.%N)
        for i in 1 2 3 4 5 6 7 8; do
            skopeo copy -q --dest-tls-verify=false "oci:${layouts[$((i - 1))]}" \
                "docker://$addr/push$round-$i:latest" &
            pids+=($!)
        done
        for p in "${pids[@]}"; do wait "$p"; done
        t1=$(date +%s.%N)
        times+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}')")
        rm -rf "${layouts[@]}"
    done
    printf '%s\n' "${times[@]}" | sort -n | sed -n 2p
}

populate() {
    local addr=$1
    for f in config layer; do
        local d
        d="sha256:$(sha256sum "$WORK/$f" | cut -d' ' -f1)"
        # Session then monolithic PUT: the flow both registries accept.
        local loc
        loc=$(curl -fsS -X POST -D - -o /dev/null "http://$addr/v2/bench/blobs/uploads/" |
            tr -d '\r' | awk -F': ' 'tolower($1)=="location"{print $2}')
        case "$loc" in http*) ;; *) loc="http://$addr$loc" ;; esac
        case "$loc" in *\?*) sep='&' ;; *) sep='?' ;; esac
        curl -fsS -X PUT -H 'Content-Type: application/octet-stream' --data-binary "@$WORK/$f" \
            "$loc${sep}digest=$d" -o /dev/null
    done
    curl -fsS -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
        --data-binary "@$WORK/manifest" "http://$addr/v2/bench/manifests/latest" -o /dev/null
}

measure() {
    local name=$1 addr=$2 pid=$3
    populate "$addr"
    local out rps p99
    out=$(wrk -t2 -c64 -d10s --latency \
        -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
        "http://$addr/v2/bench/manifests/latest")
    rps=$(awk '/Requests\/sec/{print $2}' <<<"$out")
    p99=$(awk '$1=="99%"{print $2}' <<<"$out")
    local speeds=()
    for _ in 1 2 3 4 5; do
        speeds+=("$(curl -fsS -o /dev/null -w '%{speed_download}' "http://$addr/v2/bench/blobs/$LAYER")")
    done
    local median
    median=$(printf '%s\n' "${speeds[@]}" | sort -n | sed -n 3p)
    local mib=$(awk -v s="$median" 'BEGIN{printf "%.0f", s/1048576}')
    local pushes
    pushes=$(concurrent_pushes "$addr" "${name%% *}")
    local rss=$(awk '/VmHWM/{printf "%.1f", $2/1024}' "/proc/$pid/status")
    echo "| $name | $rps | $p99 | $mib | $pushes s | $rss |"
}

echo "| registry | manifest GET req/s | p99 latency | blob GET MiB/s | 8 concurrent 16 MiB pushes | peak RSS MiB |"
echo "|---|---|---|---|---|---|"

port=$(free_port)
mkdir -p "$WORK/dist"
cat >"$WORK/dist.yml" <<YAML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $WORK/dist
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
YAML
docker-registry serve "$WORK/dist.yml" >/dev/null 2>&1 &
PIDS+=($!)
wait_up "127.0.0.1:$port"
measure "docker-registry 2.8" "127.0.0.1:$port" "${PIDS[-1]}"

port=$(free_port)
"$BERTH" registry serve --addr "127.0.0.1:$port" --storage "$WORK/berth" --no-access-log &
PIDS+=($!)
wait_up "127.0.0.1:$port"
measure "berth registry serve" "127.0.0.1:$port" "${PIDS[-1]}"
