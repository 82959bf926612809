#!/usr/bin/env bash
# The main demo: an OCI bundle from Debian's busybox-static, run by berth-runc through its
# whole lifecycle, with the isolation visible from inside. Run as root (make demo).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
runc=$here/target/release/berth-runc
work=$(mktemp -d)
root=$work/state
trap '"$runc" --root "$root" delete -f demo >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "berth sees this host as"
"$here/target/release/berth" info

step "a bundle from busybox-static"
BERTH_RUNC=$runc "$here/scripts/busybox-bundle.sh" "$work/bundle" sh -c \
  'echo "pid $$ on $(hostname)"; grep -E "^Cap(Eff|Bnd)" /proc/self/status; ulimit -n; cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max' >/dev/null
python3 - "$work/bundle/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["hostname"] = "demo"
c["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 1024}]
c["linux"]["resources"] = {"memory": {"limit": 64 << 20}, "pids": {"limit": 64}}
json.dump(c, open(sys.argv[1], "w"), indent=2)
PY
cd "$work/bundle"

step "berth-runc run: pid 1, own hostname, 3 capabilities, rlimit, 64 MiB memory limit"
"$runc" --root "$root" run demo

step "create → start → exec → pause/resume → kill → delete"
python3 - config.json <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); c["process"]["args"] = ["sleep", "60"]
json.dump(c, open(sys.argv[1], "w"), indent=2)
PY
"$runc" --root "$root" create demo </dev/null >/dev/null 2>&1
echo "state: $("$runc" --root "$root" state demo | jq -r .status)"
"$runc" --root "$root" start demo
echo "state: $("$runc" --root "$root" state demo | jq -r .status)"
echo "exec:  $("$runc" --root "$root" exec demo sh -c 'echo in the container: $(hostname), pid 1 is $(cat /proc/1/comm)')"
"$runc" --root "$root" pause demo
echo "state: $("$runc" --root "$root" state demo | jq -r .status)"
"$runc" --root "$root" resume demo
"$runc" --root "$root" list
"$runc" --root "$root" kill demo KILL
sleep 0.2
echo "state: $("$runc" --root "$root" state demo | jq -r .status)"
"$runc" --root "$root" delete demo
echo "deleted; list is now empty:"
"$runc" --root "$root" list -q

step "next: make bench (start latency and RSS against crun and runc), make test"
