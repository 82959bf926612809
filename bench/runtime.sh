#!/usr/bin/env bash
# Container start+stop latency: `run` of a busybox bundle executing /bin/true, berth-runc
# against crun and runc, side by side in one hyperfine run, plus peak RSS of each runtime.
# Usage: bench/runtime.sh [RUNS]   (needs root; `make bench` installs the peers and builds)
#
# crun refuses this project's hybrid cgroup layout unless the hugetlb controller is
# mounted as cgroup v1, so the script moves hugetlb to a v1 mount for the run and puts
# it back afterwards.
set -euo pipefail
runs=${1:-200}
here=$(cd "$(dirname "$0")/.." && pwd)
# `make bench` passes the static build (make build-static); plain release works too.
berth=${BERTH_RUNC_BIN:-$here/target/release/berth-runc}
[ -x "$berth" ] || (cd "$here" && cargo build --release --bins)
work=$(mktemp -d)
hugetlb_mounted=0
cleanup() {
  if [ $hugetlb_mounted = 1 ]; then
    # Remove the cgroups the runtimes left (e.g. /berth), or the v1 hierarchy outlives the
    # unmount and keeps hugetlb away from cgroup2.
    find /sys/fs/cgroup/hugetlb -mindepth 1 -depth -type d -exec rmdir {} \; 2>/dev/null || true
    umount /sys/fs/cgroup/hugetlb && rmdir /sys/fs/cgroup/hugetlb
  fi
  rm -rf "$work"
}
trap cleanup EXIT
BERTH_RUNC=$berth "$here/scripts/busybox-bundle.sh" "$work/bundle" /bin/true >/dev/null
if [ -d /sys/fs/cgroup/unified ] && [ ! -d /sys/fs/cgroup/hugetlb ] && grep -qw hugetlb /proc/cgroups; then
  mkdir /sys/fs/cgroup/hugetlb && mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb && hugetlb_mounted=1
fi
cd "$work/bundle"
hyperfine -N --warmup 20 --runs "$runs" --export-json "$work/result.json" \
  -n berth-runc "$berth --root $work/s-berth run b" \
  -n crun "crun --root $work/s-crun run c" \
  -n runc "runc --root $work/s-runc run r" >&2
python3 - "$work/result.json" <<'PY'
import json, statistics, sys
res = json.load(open(sys.argv[1]))["results"]
med = {r["command"]: statistics.median(r["times"]) * 1000 for r in res}
print("| runtime | median ms | mean ms | ratio to crun |")
print("|---|---|---|---|")
for r in res:
    name = r["command"]
    print(f"| {name} | {med[name]:.2f} | {r['mean']*1000:.2f} | {med[name]/med['crun']:.2f}x |")
PY
echo
echo "| runtime | peak RSS KiB (GNU time, max of 20 runs) |"
echo "|---|---|"
for rt in berth-runc crun runc; do
  case $rt in berth-runc) cmd="$berth --root $work/s-berth run b";; crun) cmd="crun --root $work/s-crun run c";; runc) cmd="runc --root $work/s-runc run r";; esac
  peak=0
  for _ in $(seq 20); do
    kb=$(/usr/bin/time -f %M $cmd 2>&1 >/dev/null | tail -1)
    [ "$kb" -gt "$peak" ] && peak=$kb
  done
  echo "| $rt | $peak |"
done
