//! berth-runc against the real kernel: every test runs real containers from a busybox
//! bundle and checks the feature from inside the container.

use berth_tests::*;
use serde_json::json;

fn run_ok(id: &str, b: &Bundle) -> String {
    let rc = Runc::new();
    let out = rc.run_bundle(id, b);
    assert!(
        out.status.success(),
        "run {id}: {}\n{}",
        stderr(&out),
        stdout(&out)
    );
    stdout(&out)
}

#[test]
fn exit_code_and_stdio_pass_through() {
    let b = Bundle::new(&["sh", "-c", "echo out; echo err >&2; exit 3"]);
    let rc = Runc::new();
    let out = rc.run_bundle("exit3", &b);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(stdout(&out), "out\n");
    assert!(stderr(&out).contains("err"));
    assert!(
        rc.state("exit3").is_none(),
        "run must delete the container after it exits"
    );
}

/// A failure in the init's last steps (after start, when nobody reads its channel) is
/// said on the container's stderr rather than lost: here setgroups(2) refuses more
/// supplementary groups than NGROUPS_MAX.
#[test]
fn init_failure_after_start_is_reported_on_stderr() {
    let mut b = Bundle::new(&["true"]);
    let gids: Vec<u32> = (1..=70_000).collect();
    b.spec["process"]["user"]["additionalGids"] = json!(gids);
    let rc = Runc::new();
    let out = rc.run_bundle("latefail", &b);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("container init: "), "{err}");
}

#[test]
fn pid_namespace_makes_the_process_pid_1() {
    let b = Bundle::new(&["sh", "-c", "echo $$; ls /proc | grep -c '^[0-9]'"]);
    let out = run_ok("pid1", &b);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("1"));
}

#[test]
fn capabilities_all_five_sets() {
    let mut b = Bundle::new(&["grep", "^Cap", "/proc/self/status"]);
    let caps = json!(["CAP_CHOWN", "CAP_NET_RAW", "CAP_KILL"]);
    b.spec["process"]["capabilities"] = json!({
        "bounding": caps, "effective": caps, "permitted": caps, "inheritable": ["CAP_KILL"], "ambient": ["CAP_KILL"]
    });
    let out = run_ok("caps", &b);
    // CAP_CHOWN=0, CAP_KILL=5, CAP_NET_RAW=13
    let want = format!("{:016x}", (1u64 << 0) | (1 << 5) | (1 << 13));
    for set in ["CapPrm", "CapEff", "CapBnd"] {
        assert!(out.contains(&format!("{set}:\t{want}")), "{set} in {out}");
    }
    assert!(
        out.contains(&format!("CapInh:\t{:016x}", 1u64 << 5)),
        "{out}"
    );
    assert!(
        out.contains(&format!("CapAmb:\t{:016x}", 1u64 << 5)),
        "{out}"
    );
}

#[test]
fn user_namespace_maps_ids() {
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "cat /proc/self/uid_map /proc/self/gid_map; id -u",
    ]);
    b.spec["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "user"}));
    b.spec["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 200000, "size": 65536}]);
    b.spec["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 200000, "size": 65536}]);
    let out = run_ok("userns", &b);
    let fields: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(fields[0], ["0", "200000", "65536"]);
    assert_eq!(fields[1], ["0", "200000", "65536"]);
    assert_eq!(fields[2], ["0"]);
}

#[test]
fn hostname_and_domainname() {
    let mut b = Bundle::new(&["sh", "-c", "hostname; cat /proc/sys/kernel/domainname"]);
    b.spec["hostname"] = json!("box1");
    b.spec["domainname"] = json!("example.test");
    assert_eq!(run_ok("uts", &b), "box1\nexample.test\n");
}

#[test]
fn mounts_in_order_with_flags() {
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("hello"), "from host\n").unwrap();
    let mut b = Bundle::new(&["sh", "-c", "cat /mnt/ro/hello; touch /mnt/ro/x && echo WROTE; grep ' /data ' /proc/mounts; touch /data/y && echo tmpfs-ok"]);
    let mounts = b.spec["mounts"].as_array_mut().unwrap();
    mounts.push(json!({"destination": "/mnt/ro", "type": "bind", "source": host.path(), "options": ["rbind", "ro", "nosuid"]}));
    mounts.push(json!({"destination": "/data", "type": "tmpfs", "source": "tmpfs", "options": ["nodev", "size=1m", "mode=700"]}));
    let out = run_ok("mounts", &b);
    assert!(out.starts_with("from host\n"), "{out}");
    assert!(
        !out.contains("WROTE"),
        "a read-only bind must refuse writes: {out}"
    );
    assert!(
        out.contains("tmpfs /data tmpfs rw,nodev")
            && out.contains("size=1024k")
            && out.contains("mode=700"),
        "{out}"
    );
    assert!(out.contains("tmpfs-ok"));
    assert!(!host.path().join("x").exists());
}

#[test]
fn masked_and_readonly_paths() {
    let mut b = Bundle::new(&["sh", "-c", "wc -c < /proc/timer_list; ls /proc/irq | wc -l; echo 1 > /proc/sys/kernel/domainname && echo WROTE; echo done"]);
    b.spec["linux"]["maskedPaths"] = json!(["/proc/timer_list", "/proc/irq", "/does/not/exist"]);
    b.spec["linux"]["readonlyPaths"] = json!(["/proc/sys"]);
    let out = run_ok("masked", &b);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0].trim(),
        "0",
        "/proc/timer_list must read as empty: {out}"
    );
    assert_eq!(
        lines[1].trim(),
        "0",
        "/proc/irq must be an empty dir: {out}"
    );
    assert!(!out.contains("WROTE"), "{out}");
}

#[test]
fn readonly_rootfs() {
    let mut b = Bundle::new(&["sh", "-c", "touch /newfile && echo WROTE; echo end"]);
    b.spec["root"]["readonly"] = json!(true);
    let out = run_ok("rofs", &b);
    assert_eq!(out, "end\n");
    assert!(!b.path().join("rootfs/newfile").exists());
}

#[test]
fn process_user_groups_umask_cwd_env() {
    let mut b = Bundle::new(&["sh", "-c", "id; umask; pwd; echo $FOO; echo $HOME"]);
    b.spec["process"]["user"] =
        json!({"uid": 65534, "gid": 65534, "additionalGids": [5], "umask": 63});
    b.spec["process"]["cwd"] = json!("/tmp");
    b.spec["process"]["env"] = json!(["PATH=/bin", "FOO=bar"]);
    let out = run_ok("user", &b);
    assert!(
        out.starts_with("uid=65534(nobody) gid=65534(nogroup) groups=5(tty)"),
        "{out}"
    );
    assert!(out.contains("\n0077\n/tmp\nbar\n/nonexistent\n"), "{out}");
}

#[test]
fn rlimits_are_applied() {
    let mut b = Bundle::new(&["sh", "-c", "ulimit -n; ulimit -Hn; ulimit -c"]);
    b.spec["process"]["rlimits"] = json!([
        {"type": "RLIMIT_NOFILE", "soft": 512, "hard": 1024},
        {"type": "RLIMIT_CORE", "soft": 0, "hard": 0}
    ]);
    assert_eq!(run_ok("rlimits", &b), "512\n1024\n0\n");
}

#[test]
fn oom_score_adj_and_no_new_privileges() {
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "cat /proc/self/oom_score_adj; grep NoNewPrivs /proc/self/status",
    ]);
    b.spec["process"]["oomScoreAdj"] = json!(500);
    b.spec["process"]["noNewPrivileges"] = json!(true);
    let out = run_ok("oomadj", &b);
    assert!(out.starts_with("500\n"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
}

#[test]
fn sysctl_is_written_in_the_container() {
    let mut b = Bundle::new(&["cat", "/proc/sys/net/ipv4/ip_forward"]);
    b.spec["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
    assert_eq!(run_ok("sysctl", &b), "1\n");
}

#[test]
fn memory_limit_kills_a_hog() {
    let mut b = Bundle::new(&["sh", "-c", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max; tail /dev/zero"]);
    b.spec["linux"]["resources"] = json!({"memory": {"limit": 33554432}});
    let rc = Runc::new();
    let out = rc.run_bundle("oom", &b);
    assert_eq!(
        out.status.code(),
        Some(137),
        "killed by SIGKILL: {}",
        stderr(&out)
    );
    assert_eq!(stdout(&out).trim(), "33554432");
}

#[test]
fn pids_limit_stops_a_fork_bomb() {
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "for i in $(seq 1 30); do sleep 3 & done; echo started $(ls /proc | grep -c '^[0-9]')",
    ]);
    b.spec["linux"]["resources"] = json!({"pids": {"limit": 10}});
    let out = Runc::new().run_bundle("pids", &b);
    assert!(stderr(&out).contains("can't fork"), "{}", stderr(&out));
    let n: usize = stdout(&out)
        .trim()
        .trim_start_matches("started ")
        .parse()
        .unwrap_or(0);
    assert!(n <= 10, "at most 10 tasks may exist, saw {n}");
}

#[test]
fn cgroup_resources_and_paths() {
    let mut b = Bundle::new(&["sleep", "30"]);
    b.spec["linux"]["cgroupsPath"] = json!("/berth-test/cgres");
    b.spec["linux"]["resources"] = json!({
        "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0"},
        "pids": {"limit": 42},
        "memory": {"limit": 67108864, "reservation": 33554432}
    });
    b.save();
    let rc = Runc::new();
    let out = rc.run_detached("cgres", &b);
    assert!(out.status.success(), "{}", stderr(&out));
    let v1 = std::path::Path::new("/sys/fs/cgroup/pids").exists();
    let read = |ctrl: &str, file: &str| {
        let p = if v1 {
            format!("/sys/fs/cgroup/{ctrl}/berth-test/cgres/{file}")
        } else {
            format!("/sys/fs/cgroup/berth-test/cgres/{file}")
        };
        std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("{p}: {e}"))
            .trim()
            .to_owned()
    };
    assert_eq!(read("pids", "pids.max"), "42");
    if v1 {
        assert_eq!(read("cpu", "cpu.shares"), "512");
        assert_eq!(read("cpu", "cpu.cfs_quota_us"), "50000");
        assert_eq!(read("cpuset", "cpuset.cpus"), "0");
        assert_eq!(read("memory", "memory.limit_in_bytes"), "67108864");
        assert_eq!(read("memory", "memory.soft_limit_in_bytes"), "33554432");
    } else {
        assert_eq!(read("cpu", "cpu.max"), "50000 100000");
        assert_eq!(read("memory", "memory.max"), "67108864");
        assert_eq!(read("memory", "memory.low"), "33554432");
    }
    let pid = rc.state("cgres").unwrap()["pid"].as_i64().unwrap();
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(own.contains("/berth-test/cgres"), "{own}");
    // update changes a live limit
    let out = rc.run(&["update", "--pids-limit", "77", "cgres"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(read("pids", "pids.max"), "77");
    let out = rc.run(&["delete", "--force", "cgres"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        cgroup_leftovers("berth-test/cgres").is_empty(),
        "{:?}",
        cgroup_leftovers("berth-test/cgres")
    );
}

#[test]
fn devices_are_created_and_the_allow_list_enforced() {
    let mut b = Bundle::new(&["sh", "-c", "stat -c '%t:%T %a' /dev/myfull; head -c1 /dev/myfull >/dev/null && echo READ-OK; head -c1 /dev/zero | wc -c"]);
    b.spec["linux"]["devices"] =
        json!([{"path": "/dev/myfull", "type": "c", "major": 1, "minor": 7, "fileMode": 0o640u32}]);
    b.spec["linux"]["resources"] = json!({"devices": [
        {"allow": false, "access": "rwm"},
        {"allow": true, "type": "c", "access": "m"},
        {"allow": true, "type": "c", "major": 1, "minor": 5, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}
    ]});
    let out = run_ok("devices", &b);
    assert!(out.starts_with("1:7 640\n"), "{out}");
    assert!(!out.contains("READ-OK"), "c 1:7 is not allowed: {out}");
    assert!(out.ends_with("1\n"), "c 1:5 is allowed: {out}");
}

#[test]
fn no_pivot_runs_with_move_and_chroot() {
    let b = Bundle::new(&["sh", "-c", "ls /bin/busybox"]);
    b.save();
    let rc = Runc::new();
    let out = output(
        rc.cmd()
            .args(["run", "--no-pivot", "--bundle"])
            .arg(b.path())
            .arg("nopivot"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "/bin/busybox\n");
}

#[test]
fn lifecycle_create_start_kill_delete() {
    let b = Bundle::new(&["sleep", "100"]);
    b.save();
    let rc = Runc::new();
    let pidfile = b.path().join("pid");
    let out = output(
        rc.cmd()
            .args(["create", "--pid-file"])
            .arg(&pidfile)
            .arg("--bundle")
            .arg(b.path())
            .arg("life"),
    );
    assert!(out.status.success(), "create: {}", stderr(&out));
    let st = rc.state("life").unwrap();
    assert_eq!(st["status"], "created");
    assert_eq!(st["id"], "life");
    assert_eq!(st["ociVersion"], b.spec["ociVersion"]);
    for field in ["pid", "bundle", "rootfs", "created", "owner"] {
        assert!(st.get(field).is_some(), "state lacks {field}: {st}");
    }
    let pid: i64 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(st["pid"].as_i64(), Some(pid));
    let list = rc.run(&["list", "--format", "json"]);
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(list[0]["id"], "life");
    assert!(rc.run(&["start", "life"]).status.success());
    assert_eq!(rc.status("life"), "running");
    assert!(
        !rc.run(&["start", "life"]).status.success(),
        "a running container cannot be started again"
    );
    assert!(
        !rc.run(&["delete", "life"]).status.success(),
        "a running container needs --force"
    );
    let out = rc.run(&["kill", "life", "KILL"]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for(|| rc.status("life") == "stopped", "stopped");
    assert!(rc.run(&["delete", "life"]).status.success());
    assert_eq!(rc.status("life"), "gone");
    assert!(cgroup_leftovers("berth/life").is_empty());
}

#[test]
fn kill_delivers_the_named_signal() {
    let b = Bundle::new(&[
        "sh",
        "-c",
        "trap 'echo got-usr1 > /tmp/sig; exit 0' USR1; while true; do sleep 0.05; done",
    ]);
    b.save();
    let rc = Runc::new();
    let out = rc.run_detached("sig", &b);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(rc.run(&["kill", "sig", "SIGUSR1"]).status.success());
    wait_for(|| rc.status("sig") == "stopped", "the trap to exit");
    assert_eq!(
        std::fs::read_to_string(b.path().join("rootfs/tmp/sig")).unwrap(),
        "got-usr1\n"
    );
    assert!(rc.run(&["delete", "sig"]).status.success());
}

#[test]
fn exec_joins_the_running_container() {
    let mut b = Bundle::new(&["sleep", "100"]);
    b.spec["hostname"] = json!("exechost");
    b.save();
    let rc = Runc::new();
    let out = rc.run_detached("ex", &b);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = rc.run(&[
        "exec",
        "ex",
        "sh",
        "-c",
        "hostname; cat /proc/1/cmdline | tr '\\0' ' '; echo; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert_eq!(stdout(&out), "exechost\nsleep 100 \n");
    let out = rc.run(&[
        "exec",
        "--user",
        "65534:65534",
        "--env",
        "X=y",
        "--cwd",
        "/tmp",
        "ex",
        "sh",
        "-c",
        "id -u; echo $X; pwd",
    ]);
    assert_eq!(stdout(&out), "65534\ny\n/tmp\n", "{}", stderr(&out));
    let out = rc.run(&["exec", "ex", "no-such-program"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no-such-program"), "{}", stderr(&out));
    // ps lists both the init and a detached exec
    let pidfile = b.path().join("exec.pid");
    let out = output(
        rc.cmd()
            .args(["exec", "-d", "--pid-file"])
            .arg(&pidfile)
            .args(["ex", "sleep", "50"]),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let exec_pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let ps = rc.run(&["ps", "--format", "json", "ex"]);
    let pids: Vec<i32> = serde_json::from_slice(&ps.stdout).unwrap();
    assert!(pids.contains(&exec_pid), "{pids:?} lacks {exec_pid}");
    assert_eq!(pids.len(), 2, "{pids:?}");
    // The exec'd process sits in the init's cgroup in every hierarchy (it moves itself
    // into the v1 ones, and is cloned into the cgroup2 one).
    let init_pid = rc.state("ex").unwrap()["pid"].as_i64().unwrap();
    let cgroups = |pid: i64| std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert_eq!(cgroups(exec_pid.into()), cgroups(init_pid));
    assert!(cgroups(init_pid).contains("/ex"), "{}", cgroups(init_pid));
    assert!(rc.run(&["delete", "-f", "ex"]).status.success());
}

#[test]
fn pause_and_resume() {
    let b = Bundle::new(&[
        "sh",
        "-c",
        "while true; do date +%s%N > /tmp/tick; sleep 0.02; done",
    ]);
    b.save();
    let rc = Runc::new();
    assert!(rc.run_detached("pz", &b).status.success());
    let tick = b.path().join("rootfs/tmp/tick");
    wait_for(|| tick.exists(), "first tick");
    assert!(rc.run(&["pause", "pz"]).status.success());
    assert_eq!(rc.status("pz"), "paused");
    std::thread::sleep(std::time::Duration::from_millis(100));
    let a = std::fs::read_to_string(&tick).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(
        a,
        std::fs::read_to_string(&tick).unwrap(),
        "a paused container must not run"
    );
    assert!(rc.run(&["resume", "pz"]).status.success());
    assert_eq!(rc.status("pz"), "running");
    wait_for(
        || std::fs::read_to_string(&tick).unwrap_or_default() != a,
        "ticks after resume",
    );
    assert!(rc.run(&["delete", "--force", "pz"]).status.success());
}

#[test]
fn hooks_run_in_order_with_state_on_stdin() {
    let log = tempfile::tempdir().unwrap();
    let logf = log.path().join("hooks.log");
    let mut b = Bundle::new(&["true"]);
    b.spec["mounts"].as_array_mut().unwrap().push(json!({"destination": "/hooklog", "type": "bind", "source": log.path(), "options": ["rbind"]}));
    let hook = |name: &str, file: &str| json!({"path": "/bin/sh", "args": ["sh", "-c", format!("read -r s; echo \"{name} $(echo \"$s\" | grep -o '\"id\":\"[a-z]*\"')\" >> {file}")]});
    let host_log = logf.to_string_lossy().to_string();
    b.spec["hooks"] = json!({
        "createRuntime": [hook("createRuntime", &host_log)],
        "createContainer": [hook("createContainer", &host_log)],
        "startContainer": [hook("startContainer", "/hooklog/hooks.log")],
        "poststart": [hook("poststart", &host_log)],
        "poststop": [hook("poststop", &host_log)]
    });
    run_ok("hooks", &b);
    let text = std::fs::read_to_string(&logf).unwrap();
    let names: Vec<&str> = text.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(
        names,
        [
            "createRuntime",
            "createContainer",
            "startContainer",
            "poststart",
            "poststop"
        ],
        "{text}"
    );
    assert!(
        text.lines().all(|l| l.ends_with("\"id\":\"hooks\"")),
        "{text}"
    );
}

#[test]
fn failing_hook_aborts_create_and_leaves_nothing() {
    let mut b = Bundle::new(&["true"]);
    b.spec["hooks"] = json!({"createRuntime": [{"path": "/bin/false"}]});
    let rc = Runc::new();
    let out = rc.run_bundle("badhook", &b);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("hook /bin/false"), "{}", stderr(&out));
    assert_eq!(rc.status("badhook"), "gone");
    assert!(cgroup_leftovers("berth/badhook").is_empty());
}

#[test]
fn hook_timeout_is_enforced() {
    let mut b = Bundle::new(&["true"]);
    b.spec["hooks"] =
        json!({"createRuntime": [{"path": "/bin/sleep", "args": ["sleep", "30"], "timeout": 1}]});
    let rc = Runc::new();
    let t = std::time::Instant::now();
    let out = rc.run_bundle("slowhook", &b);
    assert!(!out.status.success());
    assert!(t.elapsed().as_secs() < 10);
    assert!(stderr(&out).contains("timed out"), "{}", stderr(&out));
}

#[test]
fn terminal_through_console_socket() {
    use std::os::fd::AsRawFd;
    let sockdir = tempfile::tempdir().unwrap();
    let sock = sockdir.path().join("console.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    // The pty is also the container's /dev/console, as the runtime spec asks.
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "t=$(tty); [ /dev/console -ef \"$t\" ] && echo \"$t is the console\"; sleep 0.5",
    ]);
    b.spec["process"]["terminal"] = json!(true);
    b.save();
    let rc = Runc::new();
    let mut create = rc.cmd();
    create
        .args(["create", "--console-socket"])
        .arg(&sock)
        .arg("--bundle")
        .arg(b.path())
        .arg("tty1");
    let child = std::thread::spawn(move || output(&mut create));
    let (conn, _) = listener.accept().unwrap();
    let mut buf = [0u8; 256];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = nix::sys::socket::recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        nix::sys::socket::MsgFlags::empty(),
    )
    .unwrap();
    let fd = msg
        .cmsgs()
        .unwrap()
        .find_map(|c| match c {
            nix::sys::socket::ControlMessageOwned::ScmRights(f) => f.first().copied(),
            _ => None,
        })
        .expect("a pty master fd");
    let out = child.join().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(rc.run(&["start", "tty1"]).status.success());
    let mut master = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let mut got = Vec::new();
    let mut chunk = [0u8; 256];
    while let Ok(n) = std::io::Read::read(&mut master, &mut chunk) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&chunk[..n]);
        if got.windows(2).any(|w| w == b"\r\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("/dev/pts/"), "{text}");
    assert!(text.contains(" is the console"), "{text}");
    assert!(rc.run(&["delete", "--force", "tty1"]).status.success());
}

#[test]
fn bad_bundles_fail_with_one_line_naming_the_field_and_leave_nothing() {
    let rc = Runc::new();
    type Edit = Box<dyn Fn(&mut Bundle)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "norootfs",
            Box::new(|b: &mut Bundle| b.spec["root"]["path"] = json!("missing")),
            "root.path",
        ),
        (
            "badns",
            Box::new(|b: &mut Bundle| b.spec["linux"]["namespaces"][0]["type"] = json!("bogus")),
            "linux.namespaces[0].type",
        ),
        (
            "rlimit",
            Box::new(|b: &mut Bundle| {
                b.spec["process"]["rlimits"] =
                    json!([{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 100000000}])
            }),
            "process.rlimits[RLIMIT_NOFILE]",
        ),
        (
            "noargs",
            Box::new(|b: &mut Bundle| b.spec["process"]["args"] = json!([])),
            "process.args",
        ),
        (
            "notfound",
            Box::new(|b: &mut Bundle| b.spec["process"]["args"] = json!(["/no/such/binary"])),
            "executable file not found",
        ),
        (
            "badmount",
            Box::new(|b: &mut Bundle| {
                b.spec["mounts"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"destination": "/x", "type": "nosuchfs", "source": "none"}))
            }),
            "mounts[",
        ),
    ];
    for (id, edit, needle) in cases {
        let mut b = Bundle::new(&["true"]);
        edit(&mut b);
        let out = rc.run_bundle(id, &b);
        assert!(!out.status.success(), "{id} must fail");
        let err = stderr(&out);
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{id}: one line, got {err}"
        );
        assert!(err.contains(needle), "{id}: {err} lacks {needle}");
        assert_eq!(rc.status(id), "gone", "{id} left state behind");
        assert!(
            cgroup_leftovers(&format!("berth/{id}")).is_empty(),
            "{id} left a cgroup"
        );
        assert!(
            mounts_containing(b.path()).is_empty(),
            "{id} left mounts: {:?}",
            mounts_containing(b.path())
        );
    }
    let mut b = Bundle::new(&["true"]);
    b.save();
    std::fs::write(b.path().join("config.json"), "{ not json").unwrap();
    let out = output(
        rc.cmd()
            .args(["run", "--bundle"])
            .arg(b.path())
            .arg("badjson"),
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("config.json"), "{}", stderr(&out));
    b.spec = json!({});
    // Nothing but emptied directories kept for the next create.
    let left: Vec<_> = std::fs::read_dir(rc.root.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name() != "@spares")
        .collect();
    assert!(left.is_empty(), "no state may remain: {left:?}");
    for spare in std::fs::read_dir(rc.root.path().join("@spares"))
        .into_iter()
        .flatten()
    {
        let spare = spare.unwrap().path();
        assert_eq!(std::fs::read_dir(&spare).unwrap().count(), 0, "{spare:?}");
    }
}

#[test]
fn errors_go_to_the_log_file_as_json() {
    let rc = Runc::new();
    let logdir = tempfile::tempdir().unwrap();
    let log = logdir.path().join("log.json");
    let out =
        output(
            rc.cmd()
                .arg("--log")
                .arg(&log)
                .args(["--log-format", "json", "state", "nosuch"]),
        );
    assert!(!out.status.success());
    let line = std::fs::read_to_string(&log).unwrap();
    let v: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert_eq!(v["level"], "error");
    assert!(v["msg"].as_str().unwrap().contains("nosuch"));
}

#[test]
fn features_and_spec() {
    let rc = Runc::new();
    let out = rc.run(&["features"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ociVersionMax"], "1.2.0");
    assert!(v["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .contains(&json!("time")));
    let dir = tempfile::tempdir().unwrap();
    let out = output(
        rc.cmd()
            .args(["spec", "--rootless", "--bundle"])
            .arg(dir.path()),
    );
    assert!(out.status.success());
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
    assert!(spec["linux"]["uidMappings"].is_array());
    assert!(
        !output(rc.cmd().args(["spec", "--bundle"]).arg(dir.path()))
            .status
            .success(),
        "spec must not overwrite"
    );
}

#[test]
fn seccomp_denied_syscall_returns_the_configured_errno() {
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "mkdir /tmp/d; ls -d /tmp/d 2>/dev/null || echo absent; echo ok",
    ]);
    b.spec["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]
    });
    let rc = Runc::new();
    let out = rc.run_bundle("seccomp", &b);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "absent\nok\n");
    // busybox prints strerror(38)
    assert!(
        stderr(&out).contains("Function not implemented"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn seccomp_arg_conditions_and_kill() {
    // personality(0xffffffff) only queries; anything else is killed.
    let mut b = Bundle::new(&["sh", "-c", "echo before; kill -0 1 && echo alive"]);
    b.spec["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["kill"], "action": "SCMP_ACT_KILL_PROCESS", "args": [{"index": 1, "value": 0, "op": "SCMP_CMP_EQ"}]}]
    });
    let rc = Runc::new();
    let out = rc.run_bundle("seccompkill", &b);
    assert_eq!(
        out.status.code(),
        Some(128 + 31),
        "killed by SIGSYS: {}",
        stderr(&out)
    );
    assert_eq!(stdout(&out), "before\n");
}

#[test]
fn joins_existing_namespaces_by_path() {
    let mut a = Bundle::new(&["sleep", "100"]);
    a.spec["hostname"] = json!("shared-uts");
    a.save();
    let rc = Runc::new();
    let out = rc.run_detached("nsowner", &a);
    assert!(out.status.success(), "{}", stderr(&out));
    let pid = rc.state("nsowner").unwrap()["pid"].as_i64().unwrap();
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "hostname; readlink /proc/self/ns/net; readlink /proc/self/ns/uts",
    ]);
    b.spec["hostname"] = json!(null);
    for ns in b.spec["linux"]["namespaces"].as_array_mut().unwrap() {
        match ns["type"].as_str().unwrap() {
            "network" => ns["path"] = json!(format!("/proc/{pid}/ns/net")),
            "uts" => ns["path"] = json!(format!("/proc/{pid}/ns/uts")),
            _ => {}
        }
    }
    let out = run_ok("nsjoiner", &b);
    let net = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    let uts = std::fs::read_link(format!("/proc/{pid}/ns/uts")).unwrap();
    assert_eq!(
        out,
        format!("shared-uts\n{}\n{}\n", net.display(), uts.display())
    );
    assert!(rc.run(&["delete", "-f", "nsowner"]).status.success());
}

#[test]
fn time_namespace_offsets_the_boottime_clock() {
    let mut b = Bundle::new(&["cat", "/proc/uptime"]);
    b.spec["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "time"}));
    b.spec["linux"]["timeOffsets"] = json!({"boottime": {"secs": 1000000, "nanosecs": 0}});
    let out = run_ok("timens", &b);
    let up: f64 = out.split_whitespace().next().unwrap().parse().unwrap();
    let host: f64 = std::fs::read_to_string("/proc/uptime")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        up - host > 999_000.0,
        "container uptime {up} vs host {host}"
    );
}

#[test]
fn io_priority_is_applied() {
    let mut b = Bundle::new(&["ionice"]);
    b.spec["process"]["ioPriority"] = json!({"class": "IOPRIO_CLASS_IDLE", "priority": 0});
    assert_eq!(run_ok("ioprio", &b).trim(), "idle");
}

#[test]
fn kill_all_signals_every_process() {
    let b = Bundle::new(&["sh", "-c", "sleep 100 & sleep 100 & wait"]);
    b.save();
    let rc = Runc::new();
    let out = rc.run_detached("killall", &b);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for(
        || {
            serde_json::from_slice::<Vec<i32>>(&rc.run(&["ps", "-f", "json", "killall"]).stdout)
                .unwrap()
                .len()
                == 3
        },
        "three processes",
    );
    let pids: Vec<i32> =
        serde_json::from_slice(&rc.run(&["ps", "-f", "json", "killall"]).stdout).unwrap();
    assert!(rc
        .run(&["kill", "--all", "killall", "KILL"])
        .status
        .success());
    wait_for(
        || {
            pids.iter().all(|p| {
                !std::path::Path::new(&format!("/proc/{p}/cmdline")).exists()
                    || std::fs::read_to_string(format!("/proc/{p}/stat"))
                        .map(|s| s.contains(") Z"))
                        .unwrap_or(true)
            })
        },
        "all killed",
    );
    wait_for(|| rc.status("killall") == "stopped", "stopped");
    assert!(rc.run(&["delete", "killall"]).status.success());
}

#[test]
fn relative_cgroups_path_nests_under_the_callers_cgroup() {
    let mut b = Bundle::new(&["sleep", "100"]);
    b.spec["linux"]["cgroupsPath"] = json!("berth-rel/relcg");
    b.save();
    let rc = Runc::new();
    let out = rc.run_detached("relcg", &b);
    assert!(out.status.success(), "{}", stderr(&out));
    let pid = rc.state("relcg").unwrap()["pid"].as_i64().unwrap();
    let theirs = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    // Every hierarchy: the container sits at <our own cgroup there>/berth-rel/relcg.
    for line in std::fs::read_to_string("/proc/self/cgroup")
        .unwrap()
        .lines()
    {
        let (prefix, own) = line.rsplit_once(':').unwrap();
        if !mounted_hierarchy(prefix) {
            continue;
        }
        let want = format!("{prefix}:{}/berth-rel/relcg", own.trim_end_matches('/'));
        assert!(theirs.lines().any(|l| l == want), "{want} not in {theirs}");
    }
    assert!(rc.run(&["delete", "-f", "relcg"]).status.success());
}

/// Whether the hierarchy of a /proc/self/cgroup line prefix ("4:memory", "0:") is mounted;
/// a v1 hierarchy can outlive its mount (a benchmark that borrowed hugetlb, say).
fn mounted_hierarchy(prefix: &str) -> bool {
    let ctrls = prefix.split_once(':').map(|(_, c)| c).unwrap_or("");
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines().any(|l| match l.split_once(" - ") {
        Some((_, r)) if ctrls.is_empty() => r.starts_with("cgroup2 "),
        Some((_, r)) => {
            r.starts_with("cgroup ") && ctrls.split(',').all(|c| r.split(',').any(|o| o == c))
        }
        None => false,
    })
}

#[test]
fn scheduler_policy_and_nice() {
    // /proc/self/stat: field 19 is nice, field 41 the scheduling policy (3 = SCHED_BATCH).
    let mut b = Bundle::new(&["sh", "-c", "cut -d' ' -f19,41 /proc/self/stat"]);
    b.spec["process"]["scheduler"] = json!({"policy": "SCHED_BATCH", "nice": 5});
    assert_eq!(run_ok("sched", &b), "5 3\n");
}

#[test]
fn mount_propagation_flags() {
    let host = tempfile::tempdir().unwrap();
    let mut b = Bundle::new(&["sh", "-c", "grep -E ' /(sh|pr) ' /proc/self/mountinfo"]);
    let mounts = b.spec["mounts"].as_array_mut().unwrap();
    mounts.push(json!({"destination": "/sh", "type": "bind", "source": host.path(), "options": ["rbind", "rshared"]}));
    mounts.push(json!({"destination": "/pr", "type": "bind", "source": host.path(), "options": ["rbind", "rprivate"]}));
    let out = run_ok("propagation", &b);
    let line = |dest: &str| {
        out.lines()
            .find(|l| l.split(' ').nth(4) == Some(dest))
            .unwrap_or_else(|| panic!("{dest} in {out}"))
            .to_owned()
    };
    // Optional fields sit between the mount options and the " - " separator.
    let optional = |l: &str| {
        l.split(" - ")
            .next()
            .unwrap()
            .split(' ')
            .skip(6)
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert!(optional(&line("/sh")).contains("shared:"), "{out}");
    assert!(optional(&line("/pr")).is_empty(), "{out}");
}

/// pivot_root refuses a rootfs whose parent mount is shared: with a propagation that
/// leaves it shared (`slave` alone changes only "/", `rshared` shares everything) the
/// runtime must make that parent private first; the default rslave needs nothing.
#[test]
fn rootfs_under_a_shared_mount_starts_with_every_propagation() {
    for (i, prop) in [None, Some("slave"), Some("rshared"), Some("private")]
        .into_iter()
        .enumerate()
    {
        let mut b = Bundle::new(&["true"]);
        if let Some(p) = prop {
            b.spec["linux"]["rootfsPropagation"] = json!(p);
        }
        let dir = b.path().to_path_buf();
        let mount = |args: &[&str]| {
            let out = std::process::Command::new("mount")
                .args(args)
                .arg(&dir)
                .output()
                .unwrap();
            assert!(out.status.success(), "mount {args:?}: {}", stderr(&out));
        };
        // The bundle on a shared mount of its own: the rootfs' parent mount is shared.
        mount(&["--bind", dir.to_str().unwrap()]);
        mount(&["--make-shared"]);
        let out = Runc::new().run_bundle(&format!("sharedparent{i}"), &b);
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&dir)
            .status();
        assert!(
            out.status.success(),
            "rootfsPropagation {prop:?}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn preserve_fds_passes_extra_descriptors() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passed");
    std::fs::write(&file, "through fd 3\n").unwrap();
    let b = Bundle::new(&[
        "sh",
        "-c",
        "cat <&3; [ -e /proc/$$/fd/4 ] && echo fd4-leaked || echo no-fd4",
    ]);
    b.save();
    let rc = Runc::new();
    let f = std::fs::File::open(&file).unwrap();
    let raw = std::os::fd::AsRawFd::as_raw_fd(&f);
    let mut cmd = rc.cmd();
    cmd.args(["run", "--preserve-fds", "1", "--bundle"])
        .arg(b.path())
        .arg("fds");
    // SAFETY: only dup2/fcntl between fork and exec. Both 3 and 4 are open in berth-runc;
    // with --preserve-fds 1 only 3 may reach the container.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself keeps close-on-exec, so clear it explicitly.
            for fd in [3, 4] {
                if (raw != fd && libc::dup2(raw, fd) < 0) || libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let out = output(&mut cmd);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "through fd 3\nno-fd4\n",
        "fd 3 passes, fd 4 does not"
    );
}

#[test]
fn exec_with_a_process_file() {
    let b = Bundle::new(&["sleep", "100"]);
    let rc = Runc::new();
    assert!(rc.run_detached("exproc", &b).status.success());
    let process = json!({
        "args": ["sh", "-c", "echo $GREETING from $(pwd) as $(id -u); grep CapEff /proc/self/status"],
        "env": ["PATH=/bin", "GREETING=hi"],
        "cwd": "/tmp",
        "user": {"uid": 65534, "gid": 65534},
        "capabilities": {"bounding": ["CAP_KILL"], "effective": [], "permitted": []}
    });
    let pfile = b.path().join("process.json");
    std::fs::write(&pfile, serde_json::to_vec(&process).unwrap()).unwrap();
    let out = output(
        rc.cmd()
            .args(["exec", "--process"])
            .arg(&pfile)
            .arg("exproc"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "hi from /tmp as 65534\nCapEff:\t0000000000000000\n"
    );
    assert!(rc.run(&["delete", "-f", "exproc"]).status.success());
}

#[test]
fn blkio_throttle_on_the_root_disk() {
    // The device under / (e.g. 254:0 for /dev/vda) as the kernel numbers it.
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let dev = info
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/"))
        .unwrap()
        .split(' ')
        .nth(2)
        .unwrap()
        .to_owned();
    let (major, minor) = dev.split_once(':').unwrap();
    let (major, minor): (i64, i64) = (major.parse().unwrap(), minor.parse().unwrap());
    let mut b = Bundle::new(&["sleep", "30"]);
    b.spec["linux"]["cgroupsPath"] = json!("/berth-test/blkio");
    b.spec["linux"]["resources"] = json!({"blockIO": {
        "throttleReadBpsDevice": [{"major": major, "minor": minor, "rate": 1048576}],
        "throttleWriteIOPSDevice": [{"major": major, "minor": minor, "rate": 300}]
    }});
    let rc = Runc::new();
    let out = rc.run_detached("blkio", &b);
    assert!(out.status.success(), "{}", stderr(&out));
    let (read_bps, write_iops) = if std::path::Path::new("/sys/fs/cgroup/blkio").exists() {
        let d = "/sys/fs/cgroup/blkio/berth-test/blkio";
        (
            std::fs::read_to_string(format!("{d}/blkio.throttle.read_bps_device")).unwrap(),
            std::fs::read_to_string(format!("{d}/blkio.throttle.write_iops_device")).unwrap(),
        )
    } else {
        let io = std::fs::read_to_string("/sys/fs/cgroup/berth-test/blkio/io.max").unwrap();
        (io.clone(), io)
    };
    assert!(
        read_bps.contains(&format!("{dev} 1048576")) || read_bps.contains("rbps=1048576"),
        "{read_bps}"
    );
    assert!(
        write_iops.contains(&format!("{dev} 300")) || write_iops.contains("wiops=300"),
        "{write_iops}"
    );
    assert!(rc.run(&["delete", "-f", "blkio"]).status.success());
}

#[test]
fn run_keep_leaves_a_stopped_container() {
    let b = Bundle::new(&["true"]);
    b.save();
    let rc = Runc::new();
    let out = output(
        rc.cmd()
            .args(["run", "--keep", "--bundle"])
            .arg(b.path())
            .arg("kept"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(rc.status("kept"), "stopped");
    assert!(
        !cgroup_leftovers("berth/kept").is_empty(),
        "the cgroup stays until delete"
    );
    assert!(rc.run(&["delete", "kept"]).status.success());
    assert_eq!(rc.status("kept"), "gone");
    assert!(cgroup_leftovers("berth/kept").is_empty());
}

#[test]
fn lsm_labels_are_ignored_with_a_warning_when_the_host_has_none() {
    let mut b = Bundle::new(&["true"]);
    b.spec["process"]["apparmorProfile"] = json!("berth-default");
    b.spec["process"]["selinuxLabel"] = json!("system_u:system_r:container_t:s0");
    let rc = Runc::new();
    let out = rc.run_bundle("lsm", &b);
    let no_apparmor = !std::path::Path::new("/sys/kernel/security/apparmor").exists();
    let no_selinux = !std::path::Path::new("/sys/fs/selinux/enforce").exists();
    if no_apparmor && no_selinux {
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("apparmorProfile ignored"),
            "{}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains("selinuxLabel ignored"),
            "{}",
            stderr(&out)
        );
    } else {
        // With an LSM present the label is not ignored, so no warning may claim it is.
        assert!(!stderr(&out).contains("ignored"), "{}", stderr(&out));
    }
}

#[test]
fn update_from_a_resources_file() {
    let mut b = Bundle::new(&["sleep", "30"]);
    b.spec["linux"]["cgroupsPath"] = json!("/berth-test/upd");
    let rc = Runc::new();
    assert!(rc.run_detached("upd", &b).status.success());
    let res = b.path().join("resources.json");
    std::fs::write(
        &res,
        r#"{"memory": {"limit": 50331648}, "pids": {"limit": 55}}"#,
    )
    .unwrap();
    let out = output(
        rc.cmd()
            .args(["update", "--resources"])
            .arg(&res)
            .arg("upd"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v1 = std::path::Path::new("/sys/fs/cgroup/pids").exists();
    let (mem, pids) = if v1 {
        (
            "/sys/fs/cgroup/memory/berth-test/upd/memory.limit_in_bytes",
            "/sys/fs/cgroup/pids/berth-test/upd/pids.max",
        )
    } else {
        (
            "/sys/fs/cgroup/berth-test/upd/memory.max",
            "/sys/fs/cgroup/berth-test/upd/pids.max",
        )
    };
    assert_eq!(std::fs::read_to_string(mem).unwrap().trim(), "50331648");
    assert_eq!(std::fs::read_to_string(pids).unwrap().trim(), "55");
    assert!(rc.run(&["delete", "-f", "upd"]).status.success());
}

#[test]
fn init_annotation_keeps_a_reaping_pid1_that_forwards_signals() {
    let rc = Runc::new();
    // The program is PID 2 under the init, and its exit status comes through.
    let mut b = Bundle::new(&["sh", "-c", "echo pid=$$; cat /proc/1/comm; exit 3"]);
    b.spec["annotations"] = json!({"org.berth.init": "true"});
    let out = rc.run_bundle("initfg", &b);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(stdout(&out), "pid=2\ninit\n");

    // Orphans are reaped by PID 1, and SIGTERM to the container reaches the program
    // through it. The orphan's parent would otherwise be `sleep`, which never reaps;
    // and `sleep` has no handler, so as PID 1 itself it would ignore the SIGTERM.
    let mut b = Bundle::new(&["sh", "-c", "(sleep 0.1 &); exec sleep 100"]);
    b.spec["annotations"] = json!({"org.berth.init": "true"});
    let out = rc.run_detached("initsig", &b);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for(|| rc.status("initsig") == "running", "running");
    std::thread::sleep(std::time::Duration::from_millis(600));
    // Zombies leave their cgroup at exit, so look at PID 1's children on the host.
    let pid1 = rc.state("initsig").unwrap()["pid"].as_i64().unwrap();
    let children = std::fs::read_to_string(format!("/proc/{pid1}/task/{pid1}/children")).unwrap();
    let zombies: Vec<&str> = children
        .split_whitespace()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| {
                s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
        })
        .collect();
    assert!(zombies.is_empty(), "zombies {zombies:?} among {children}");
    assert!(rc.run(&["kill", "initsig", "TERM"]).status.success());
    wait_for(|| rc.status("initsig") == "stopped", "stopped after TERM");
    assert!(rc.run(&["delete", "initsig"]).status.success());
}
