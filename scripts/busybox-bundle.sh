#!/usr/bin/env bash
# Makes an OCI bundle from Debian's busybox-static: scripts/busybox-bundle.sh DIR [ARGS...]
# The config comes from `berth-runc spec`; ARGS (default: sh) become process.args.
set -euo pipefail
dir=$1; shift
runc=${BERTH_RUNC:-$(dirname "$0")/../target/release/berth-runc}
[ -x /bin/busybox ] || { echo "busybox-static is not installed (make setup)" >&2; exit 1; }
rm -rf "$dir"; mkdir -p "$dir/rootfs/bin" "$dir/rootfs"/{proc,sys,dev,etc,tmp,root}
cp /bin/busybox "$dir/rootfs/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$dir/rootfs/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n' > "$dir/rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$dir/rootfs/etc/group"
"$runc" spec --bundle "$dir"
args=$(python3 -c 'import json,sys; print(json.dumps(sys.argv[1:] or ["sh"]))' "$@")
python3 - "$dir/config.json" "$args" <<'PY'
import json, sys
path, args = sys.argv[1], json.loads(sys.argv[2])
c = json.load(open(path))
c["process"]["args"] = args
c["process"]["terminal"] = False
json.dump(c, open(path, "w"), indent=2)
PY
