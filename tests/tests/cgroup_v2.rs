//! The pure cgroup v2 code paths (CLONE_INTO_CGROUP, cgroup.freeze, the eBPF device
//! filter, cgroup2 resource files) exercised on any host: each berth-runc call runs in a
//! private mount namespace where /sys/fs/cgroup is replaced by a lone cgroup2 mount, which
//! is exactly what a pure v2 host looks like to the runtime. On a v1/hybrid host the v2
//! hierarchy carries few controllers, so limits are checked only for the controllers it
//! really has; the core v2 features need none.

use std::path::PathBuf;
use std::process::{Command, Output};

use berth_tests::*;
use serde_json::json;

const PURE_V2: &str =
    "umount -R /sys/fs/cgroup 2>/dev/null; mount -t cgroup2 cgroup2 /sys/fs/cgroup && exec \"$@\"";

fn v2(rc: &Runc, args: &[&str]) -> Output {
    let mut c = Command::new("unshare");
    c.args(["-m", "--propagation", "private", "sh", "-c", PURE_V2, "sh"])
        .arg(berth_runc())
        .arg("--root")
        .arg(rc.root.path())
        .args(args);
    output(&mut c)
}

/// Where the host has the cgroup2 hierarchy mounted (the test process's own view).
fn host_v2_root() -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .find(|l| l.contains(" - cgroup2 "))
        .map(|l| PathBuf::from(l.split(' ').nth(4).unwrap()))
        .expect("a cgroup2 mount")
}

fn controllers() -> String {
    std::fs::read_to_string(host_v2_root().join("cgroup.controllers")).unwrap_or_default()
}

#[test]
fn pure_v2_layout_is_detected_and_used() {
    let root = tempfile::tempdir().unwrap();
    let mut c = Command::new("unshare");
    c.args(["-m", "--propagation", "private", "sh", "-c", PURE_V2, "sh"])
        .arg(bin_dir().join("berth"))
        .arg("--root")
        .arg(root.path())
        .args(["info", "--format", "json"]);
    let out = output(&mut c);
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", stderr(&out)));
    assert_eq!(v["CgroupVersion"], "2");
}

#[test]
fn v2_clone_into_cgroup_devices_and_limits() {
    let rc = Runc::new();
    let mut b = Bundle::new(&["sh", "-c", "grep '^0::' /proc/self/cgroup; head -c1 /dev/full >/dev/null && echo FULL-READ; head -c1 /dev/zero | wc -c"]);
    // Without a cgroup namespace /proc/self/cgroup shows the real path.
    b.spec["linux"]["namespaces"] = json!(b.spec["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["type"] != "cgroup")
        .cloned()
        .collect::<Vec<_>>());
    b.spec["linux"]["cgroupsPath"] = json!("/berth-v2test/devs");
    let mut res = json!({"devices": [
        {"allow": false, "access": "rwm"},
        {"allow": true, "type": "c", "access": "m"},
        {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 5, "access": "rwm"}
    ]});
    let ctrls = controllers();
    if ctrls.split_whitespace().any(|c| c == "pids") {
        res["pids"] = json!({"limit": 33});
    }
    b.spec["linux"]["resources"] = res;
    b.save();
    let out = v2(
        &rc,
        &["run", "--bundle", b.path().to_str().unwrap(), "devs"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "0::/berth-v2test/devs\n1\n",
        "the device filter must deny c 1:7 and allow c 1:5"
    );
    assert!(
        stderr(&out).contains("Operation not permitted"),
        "{}",
        stderr(&out)
    );
    assert!(
        !host_v2_root().join("berth-v2test/devs").exists(),
        "run must remove its cgroup"
    );
}

#[test]
fn v2_freeze_pause_resume_and_delete() {
    let rc = Runc::new();
    let mut b = Bundle::new(&["sleep", "100"]);
    b.spec["linux"]["cgroupsPath"] = json!("/berth-v2test/frz");
    b.save();
    let out = v2(
        &rc,
        &["run", "-d", "--bundle", b.path().to_str().unwrap(), "frz"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let dir = host_v2_root().join("berth-v2test/frz");
    let pid = rc.state("frz").unwrap()["pid"].as_i64().unwrap();
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap();
    assert!(
        procs.lines().any(|l| l == pid.to_string()),
        "init {pid} not in {}: {procs}",
        dir.display()
    );
    assert!(v2(&rc, &["pause", "frz"]).status.success());
    assert_eq!(
        std::fs::read_to_string(dir.join("cgroup.freeze"))
            .unwrap()
            .trim(),
        "1"
    );
    assert!(std::fs::read_to_string(dir.join("cgroup.events"))
        .unwrap()
        .contains("frozen 1"));
    let st = v2(&rc, &["state", "frz"]);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&st.stdout).unwrap()["status"],
        "paused"
    );
    assert!(v2(&rc, &["resume", "frz"]).status.success());
    assert_eq!(
        std::fs::read_to_string(dir.join("cgroup.freeze"))
            .unwrap()
            .trim(),
        "0"
    );
    let out = v2(
        &rc,
        &["exec", "frz", "sh", "-c", "grep '^0::' /proc/self/cgroup"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("0::"), "{}", stdout(&out));
    let out = v2(&rc, &["delete", "--force", "frz"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!dir.exists());
}
