//! End-to-end container tests: the `berth` binary running real busybox containers in a
//! private `--root` per test, with `--network none` (bridge networking is berth-net's).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use berth_tests::{bin_dir, busybox_oci_archive_config, output, stderr, stdout, wait_for};
use serde_json::{json, Value};

const IMAGE: &str = "bbox:latest";

/// The test image, built once per test process: busybox with `sleep` as its command, a
/// VOLUME whose content seeds new volumes, and nothing else.
fn archive() -> &'static Path {
    static ARCHIVE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, p) = ARCHIVE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bbox.tar");
        busybox_oci_archive_config(
            &p,
            IMAGE,
            json!({"Env": ["PATH=/bin", "FROM_IMAGE=yes"], "Cmd": ["sleep", "30"], "Volumes": {"/etc/seeded": {}}}),
        );
        (dir, p)
    });
    p
}

/// A private berth root with the test image loaded; removes its containers on drop.
struct Berth {
    root: tempfile::TempDir,
}

impl Berth {
    fn new() -> Berth {
        let b = Berth {
            root: tempfile::tempdir().unwrap(),
        };
        let o = b.run(&["load", "-q", "-i", archive().to_str().unwrap()]);
        assert!(o.status.success(), "load: {}", stderr(&o));
        b
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(bin_dir().join("berth"));
        c.arg("--root").arg(self.root.path());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        output(self.cmd().args(args))
    }

    /// Runs and asserts success; returns trimmed stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "berth {args:?} failed ({:?}): {}{}",
            o.status.code(),
            stdout(&o),
            stderr(&o)
        );
        stdout(&o).trim().to_string()
    }

    fn inspect(&self, name: &str) -> Value {
        let v: Value = serde_json::from_str(&self.ok(&["inspect", name])).unwrap();
        v[0].clone()
    }

    /// The first subnet of a network (`10.89.1.0/24`).
    fn inspect_network(&self, name: &str) -> String {
        let v: Value = serde_json::from_str(&self.ok(&["network", "inspect", name])).unwrap();
        v[0]["IPAM"]["Config"][0]["Subnet"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The container's status, or `None` when there is no such container (yet).
    fn status_of(&self, name: &str) -> Option<String> {
        let o = self.run(&["inspect", "-f", "{{.State.Status}}", name]);
        o.status.success().then(|| stdout(&o).trim().to_string())
    }

    fn status(&self, name: &str) -> String {
        self.inspect(name)["State"]["Status"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        let ids = self.run(&["ps", "-aq", "--no-trunc"]);
        for id in stdout(&ids).split_whitespace() {
            let _ = self.run(&["rm", "-f", "-v", id]);
        }
        // User networks (and their bridges); the predefined ones refuse, harmlessly.
        let nets = self.run(&["network", "ls", "--format", "{{.Name}}"]);
        for n in stdout(&nets).split_whitespace() {
            if !matches!(n, "bridge" | "host" | "none") {
                let _ = self.run(&["network", "rm", n]);
            }
        }
        // A `run --rm`'s detached purger may still be deleting in the root.
        let trash = self.root.path().join("containers/.trash");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_dir(&trash).is_ok_and(|mut d| d.next().is_some())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Names in `dir` (none when it is missing).
fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir).map_or_else(
        |_| Vec::new(),
        |d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        },
    )
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// What `wget URL` prints in a new container on `net`, once it succeeds (a server may
/// still be starting).
fn wget_from_peer(b: &Berth, net: &str, url: &str) -> String {
    let mut got = String::new();
    wait_for(
        || {
            let o = b.run(&[
                "run",
                "--rm",
                "--network",
                net,
                IMAGE,
                "wget",
                "-q",
                "-O",
                "-",
                url,
            ]);
            got = stdout(&o);
            o.status.success()
        },
        &format!("wget {url} from a peer"),
    );
    got
}

/// Asserts that `run --rm FLAGS IMAGE true` is refused as Docker refuses bad flags (125).
fn assert_refused(b: &Berth, flags: &[&str]) {
    assert_refused_saying(b, flags, "");
}

/// `run --rm FLAGS IMAGE true` fails with 125 and a message containing `why`.
fn assert_refused_saying(b: &Berth, flags: &[&str], why: &str) {
    let mut full = vec!["run", "--rm"];
    full.extend_from_slice(flags);
    full.extend_from_slice(&[IMAGE, "true"]);
    let o = b.run(&full);
    assert_eq!(code(&o), 125, "{flags:?}: {}", stderr(&o));
    assert!(stderr(&o).contains(why), "{flags:?}: {}", stderr(&o));
}

#[test]
fn run_rm_leaves_no_directory_and_its_detached_purger_empties_the_trash() {
    let b = Berth::new();
    let dir = b.root.path().join("containers");
    // An image without VOLUME: the test image's seeds a mount point into the upper dir,
    // whose marks keep the directory from reuse.
    let scratch = tempfile::tempdir().unwrap();
    let tar = berth_tests::busybox_rootfs_tar(scratch.path(), "plain.tar");
    b.ok(&["import", tar.to_str().unwrap(), "plain:latest"]);
    let run = || b.ok(&["run", "--rm", "--network", "none", "plain", "echo", "hi"]);
    // Output through a pipe: `output` returns at its end, which a purger must not hold.
    assert_eq!(run(), "hi");
    let visible = || -> Vec<String> {
        entries(&dir)
            .into_iter()
            .filter(|n| !n.starts_with('.'))
            .collect()
    };
    assert_eq!(
        visible(),
        Vec::<String>::new(),
        "the directory left its key at once"
    );
    wait_for(
        || entries(&dir.join(".trash")).is_empty(),
        "the trash emptied",
    );
    // What is kept for reuse holds nothing of the container's: empty directories, and its
    // files emptied (written again in place by the next container).
    assert_eq!(entries(&dir.join(".spares")).len(), 1);
    for spare in entries(&dir.join(".spares")) {
        let spare = dir.join(".spares").join(spare);
        for sub in entries(&spare) {
            let m = std::fs::symlink_metadata(spare.join(&sub)).unwrap();
            if m.is_dir() {
                assert_eq!(entries(&spare.join(&sub)), Vec::<String>::new(), "{sub}");
            } else {
                assert!(m.is_file() && m.len() == 0, "{sub}: {m:?}");
            }
        }
    }

    // An entry nobody purges (its purger was killed) goes with the next purge's sweep.
    let abandoned = dir.join(".trash/abandoned");
    std::fs::create_dir_all(abandoned.join("upper/deep")).unwrap();
    std::fs::create_dir_all(abandoned.join("work/work")).unwrap();
    std::fs::write(abandoned.join("upper/deep/file"), b"x").unwrap();
    assert_eq!(run(), "hi");
    wait_for(
        || entries(&dir.join(".trash")).is_empty(),
        "the trash swept",
    );
    assert_eq!(visible(), Vec::<String>::new());

    // The container's cgroup, left to the purger too, goes with it in every hierarchy.
    let cid = scratch.path().join("cid");
    let cid_arg = cid.to_str().unwrap();
    let probe = "cat /proc/self/cgroup >/dev/null; echo hi";
    let args = ["run", "--rm", "--network", "none", "--cidfile", cid_arg];
    assert_eq!(
        b.ok(&[&args[..], &["plain", "sh", "-c", probe]].concat()),
        "hi"
    );
    let id = std::fs::read_to_string(&cid).unwrap();
    let hierarchies: Vec<std::path::PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .chain([std::path::PathBuf::from("/sys/fs/cgroup")])
        .filter(|h| h.join("berth").is_dir())
        .collect();
    assert!(!hierarchies.is_empty(), "berth made no cgroup parent");
    wait_for(
        || {
            hierarchies
                .iter()
                .all(|h| !h.join("berth").join(&id).exists())
        },
        "the container's cgroup removed",
    );
}

#[test]
fn exit_codes_are_dockers() {
    let b = Berth::new();
    let run = |args: &[&str]| {
        let mut full = vec!["run", "--rm", "--network", "none", IMAGE];
        full.extend_from_slice(args);
        b.run(&full)
    };
    assert_eq!(code(&run(&["true"])), 0);
    // The standard devices are usable (the device cgroup allows them).
    assert_eq!(
        code(&run(&[
            "sh",
            "-c",
            "echo x > /dev/null && head -c 1 /dev/urandom > /dev/null"
        ])),
        0
    );
    let o = run(&["sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(code(&o), 3);
    assert_eq!(stdout(&o), "out\n");
    assert_eq!(stderr(&o), "err\n");
    let o = run(&["/no/such/program"]);
    assert_eq!(code(&o), 127, "{}", stderr(&o));
    let o = run(&["/etc/passwd"]);
    assert_eq!(code(&o), 126, "{}", stderr(&o));
    // A program the kernel cannot run (another architecture, no emulator): runc's
    // message on the container's own stderr, and runc's code.
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus");
    std::fs::write(&bogus, b"\x00\x01 no format the kernel knows").unwrap();
    std::fs::set_permissions(&bogus, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let bind = format!("{}:/bogus:ro", bogus.display());
    let o = b.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &bind,
        IMAGE,
        "/bogus",
    ]);
    assert_eq!(code(&o), 255, "{}", stderr(&o));
    assert_eq!(stderr(&o), "exec /bogus: exec format error\n");
    // A missing working directory is made, as Docker does; a file there is an engine error.
    let o = b.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-w",
        "/made/here",
        IMAGE,
        "pwd",
    ]);
    assert_eq!(stdout(&o), "/made/here\n", "{}", stderr(&o));
    let o = b.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-w",
        "/etc/passwd",
        IMAGE,
        "true",
    ]);
    assert_eq!(code(&o), 125, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("/etc/passwd is not a directory"),
        "{}",
        stderr(&o)
    );
    // An engine error (unknown capability) is 125.
    let o = b.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--cap-add",
        "NOPE",
        IMAGE,
        "true",
    ]);
    assert_eq!(code(&o), 125, "{}", stderr(&o));
    // -t gives the container a terminal; -i feeds it our stdin.
    let o = b.run(&["run", "-t", "--rm", "--network", "none", IMAGE, "tty"]);
    assert!(stdout(&o).contains("/dev/pts/0"), "{}", stdout(&o));
    let mut c = b.cmd();
    c.args(["run", "-i", "--rm", "--network", "none", IMAGE, "cat"]);
    let piped = c
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    piped
        .stdin
        .as_ref()
        .unwrap()
        .write_all(b"fed through\n")
        .unwrap();
    let o = piped.wait_with_output().unwrap();
    assert_eq!(stdout(&o), "fed through\n");
    // --rm left nothing behind.
    assert_eq!(b.ok(&["ps", "-aq"]), "");
}

#[test]
fn detached_container_logs_and_ps() {
    let b = Berth::new();
    let id = b.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "chatty",
        IMAGE,
        "sh",
        "-c",
        "trap 'exit 143' TERM; echo one; echo two >&2; sleep 0.3; echo three; sleep 30 & wait",
    ]);
    assert_eq!(id.len(), 64, "{id}");
    // The monitor is the small loop binary, its private memory well under 1 MB.
    let mon = b.inspect("chatty")["State"]["MonitorPid"].as_i64().unwrap();
    let cmdline = std::fs::read(format!("/proc/{mon}/cmdline")).unwrap();
    assert!(String::from_utf8_lossy(&cmdline).contains("berth-monitor"));
    let status = std::fs::read_to_string(format!("/proc/{mon}/status")).unwrap();
    let anon: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(anon < 1024, "monitor RssAnon {anon} kB");
    let ps = b.ok(&["ps", "--format", "{{.Names}} {{.State}}"]);
    assert_eq!(ps, "chatty running");
    // A reader that goes away first ends a listing quietly (SIGPIPE, as Docker's CLI),
    // not with "Error: Broken pipe".
    let errs = tempfile::tempdir().unwrap();
    for list in ["ps -a", "images", "volume ls", "network ls"] {
        let err = errs.path().join("err");
        let sh = format!(
            "'{}' --root '{}' {list} 2>'{}' | true",
            bin_dir().join("berth").display(),
            b.root.path().display(),
            err.display()
        );
        let st = Command::new("sh").arg("-c").arg(sh).status().unwrap();
        assert!(st.success());
        assert_eq!(std::fs::read_to_string(&err).unwrap(), "", "{list}");
    }
    // before=/since= order by creation, as Docker's filters.
    b.ok(&[
        "create",
        "--name",
        "later",
        "--network",
        "none",
        IMAGE,
        "true",
    ]);
    let names = |f: &str| b.ok(&["ps", "-a", "--filter", f, "--format", "{{.Names}}"]);
    assert_eq!(names("before=later"), "chatty");
    assert_eq!(names("since=chatty"), "later");
    b.ok(&["rm", "later"]);
    // publish=/expose= match container ports (a range, tcp unless named), as dockerd.
    b.ok(&[
        "create", "--name", "ported", "-p", "18123:80", "--expose", "9000/udp", IMAGE, "true",
    ]);
    for (f, hit) in [
        ("publish=80", true),
        ("publish=79-81", true),
        ("publish=80/udp", false),
        ("publish=18123", false),
        ("expose=9000/udp", true),
        ("expose=80", true),
        ("expose=9000", false),
    ] {
        assert_eq!(names(f).lines().any(|n| n == "ported"), hit, "{f}");
    }
    assert_eq!(names("is-task=true"), "");
    b.ok(&["rm", "ported"]);
    // COMMAND as dockerd lists it: arguments with spaces in single quotes, cut at 20.
    let ps = b.ok(&["ps", "--format", "{{.Command}}"]);
    assert_eq!(ps, "\"sh -c 'trap 'exit 1…\"");
    // logs -f follows until the container stops.
    let follow = b
        .cmd()
        .args(["logs", "-f", "chatty"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(
        || b.ok(&["logs", "chatty"]).contains("three"),
        "third log line",
    );
    let o = b.run(&["logs", "chatty"]);
    assert_eq!(stdout(&o), "one\nthree\n");
    assert_eq!(stderr(&o), "two\n");
    assert_eq!(b.ok(&["logs", "--tail", "1", "chatty"]), "three");
    let with_ts = b.ok(&["logs", "-t", "chatty"]);
    assert!(
        with_ts.lines().all(|l| l.len() > 30 && l.contains("Z ")),
        "{with_ts}"
    );
    // The log is Docker's json-file format.
    let log = std::fs::read_to_string(b.inspect("chatty")["LogPath"].as_str().unwrap()).unwrap();
    let first: Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!(first["log"], "one\n");
    assert_eq!(first["stream"], "stdout");
    b.ok(&["stop", "-t", "1", "chatty"]);
    let out = follow.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one\nthree\n");
    // ps -a shows it after exit, ps does not.
    assert_eq!(b.ok(&["ps", "-q"]), "");
    let all = b.ok(&["ps", "-a", "--format", "{{.Names}}|{{.Status}}"]);
    assert!(all.starts_with("chatty|Exited (143)"), "{all}");
    let i = b.inspect("chatty");
    assert_eq!(i["State"]["ExitCode"], 143);
    assert_eq!(i["Name"], "/chatty");
    assert_eq!(i["Id"], id.as_str());
}

#[test]
fn stop_waits_the_timeout_then_kills() {
    let b = Berth::new();
    b.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "stubborn",
        IMAGE,
        "sh",
        "-c",
        "trap '' TERM; while true; do sleep 0.1; done",
    ]);
    let t = Instant::now();
    b.ok(&["stop", "-t", "2", "stubborn"]);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(8),
        "{took:?}"
    );
    assert_eq!(b.inspect("stubborn")["State"]["ExitCode"], 137);
    // And a cooperative one stops at once.
    b.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "polite",
        IMAGE,
        "sh",
        "-c",
        "trap 'exit 0' TERM; sleep 60 & wait",
    ]);
    let t = Instant::now();
    b.ok(&["stop", "polite"]);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(b.inspect("polite")["State"]["ExitCode"], 0);
    // With --init, PID 1 is berth's init, which forwards SIGTERM to `sleep`.
    b.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--init",
        "--name",
        "inited",
        IMAGE,
        "sleep",
        "60",
    ]);
    let t = Instant::now();
    b.ok(&["stop", "inited"]);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(b.inspect("inited")["State"]["ExitCode"], 143);
}

#[test]
fn restart_policy_counts_restarts() {
    let b = Berth::new();
    b.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "flaky",
        "--restart",
        "on-failure:2",
        IMAGE,
        "sh",
        "-c",
        "echo try; exit 4",
    ]);
    wait_for(
        || {
            let i = b.inspect("flaky");
            i["State"]["Status"] == "exited" && i["RestartCount"] == 2
        },
        "two restarts, then exited",
    );
    let i = b.inspect("flaky");
    assert_eq!(i["State"]["ExitCode"], 4);
    assert_eq!(i["HostConfig"]["RestartPolicy"]["Name"], "on-failure");
    assert_eq!(b.ok(&["logs", "flaky"]), "try\ntry\ntry");
    // "always" restarts even a clean exit, until stopped.
    b.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "again",
        "--restart",
        "always",
        IMAGE,
        "true",
    ]);
    wait_for(
        || b.inspect("again")["RestartCount"].as_u64() >= Some(2),
        "always restarts",
    );
    b.ok(&["stop", "again"]);
    let n = b.inspect("again")["RestartCount"].as_u64().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(b.status("again"), "exited");
    assert_eq!(
        b.inspect("again")["RestartCount"].as_u64().unwrap(),
        n,
        "no restart after stop"
    );
}

#[test]
fn health_goes_from_starting_to_healthy_and_unhealthy() {
    let b = Berth::new();
    b.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "doc",
        "--health-cmd",
        "test -e /tmp/ok",
        "--health-interval",
        "300ms",
        "--health-retries",
        "2",
        "--health-timeout",
        "5s",
        IMAGE,
        "sh",
        "-c",
        "sleep 1; touch /tmp/ok; sleep 2; rm /tmp/ok; exec sleep 30",
    ]);
    let health = || {
        b.inspect("doc")["State"]["Health"]["Status"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(health(), "starting");
    wait_for(|| health() == "healthy", "healthy");
    assert!(b.ok(&["ps"]).contains("(healthy)"));
    wait_for(|| health() == "unhealthy", "unhealthy");
    let h = &b.inspect("doc")["State"]["Health"];
    assert!(h["FailingStreak"].as_u64().unwrap() >= 2, "{h}");
    assert!(h["Log"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["ExitCode"] == 0));
    b.ok(&["rm", "-f", "doc"]);
}

#[test]
fn named_volume_survives_rm_and_is_seeded_from_the_image() {
    let b = Berth::new();
    b.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        "data:/data",
        IMAGE,
        "sh",
        "-c",
        "echo kept > /data/f",
    ]);
    assert_eq!(
        b.ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            "data:/data",
            IMAGE,
            "cat",
            "/data/f"
        ]),
        "kept"
    );
    assert!(b.ok(&["volume", "ls", "-q"]).lines().any(|l| l == "data"));
    let vi: Value = serde_json::from_str(&b.ok(&["volume", "inspect", "data"])).unwrap();
    assert!(vi[0]["Mountpoint"]
        .as_str()
        .unwrap()
        .ends_with("/volumes/data/_data"));
    // A new named volume on a path the image has content at starts with that content.
    // Mounts go parents first, so berth's /etc/hostname bind sits on the /etc volume.
    let seeded = b.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--hostname",
        "on-top",
        "-v",
        "etc:/etc",
        IMAGE,
        "cat",
        "/etc/passwd",
        "/etc/hostname",
    ]);
    assert!(seeded.contains("root:"), "{seeded}");
    assert!(seeded.ends_with("on-top"), "{seeded}");
    // volume ls filters as Docker's.
    b.ok(&["volume", "create", "--label", "team=a", "labelled"]);
    let ls = |f: &[&str]| {
        let mut args = vec!["volume", "ls", "-q"];
        for x in f {
            args.extend(["--filter", x]);
        }
        b.ok(&args)
    };
    assert_eq!(ls(&["label=team=a"]), "labelled");
    assert_eq!(ls(&["label=team", "name=lab"]), "labelled");
    assert_eq!(ls(&["label=team=b"]), "");
    assert!(ls(&["dangling=true"]).lines().any(|l| l == "labelled"));
    assert!(!ls(&["dangling=false"]).lines().any(|l| l == "labelled"));
    b.ok(&["volume", "rm", "labelled"]);
    // The image VOLUME makes an anonymous volume, removed by rm -v.
    b.ok(&["run", "--name", "anon", "--network", "none", IMAGE, "true"]);
    let anon = b.inspect("anon")["Mounts"][0]["Name"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(b.ok(&["volume", "ls", "-q"]).contains(&anon));
    let busy = b.run(&["volume", "rm", "data"]);
    assert!(
        busy.status.success(),
        "no container uses data now: {}",
        stderr(&busy)
    );
    b.ok(&["rm", "-v", "anon"]);
    assert!(!b.ok(&["volume", "ls", "-q"]).contains(&anon));
    // Bind mounts, read-only ones refuse writes.
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("in"), "from host").unwrap();
    let spec = format!("{}:/h:ro", host.path().display());
    assert_eq!(
        b.ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            &spec,
            IMAGE,
            "cat",
            "/h/in"
        ]),
        "from host"
    );
    let o = b.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &spec,
        IMAGE,
        "touch",
        "/h/x",
    ]);
    assert_ne!(code(&o), 0);
    let o = b.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--tmpfs",
        "/scratch:size=1m",
        IMAGE,
        "sh",
        "-c",
        "grep /scratch /proc/mounts",
    ]);
    assert!(
        stdout(&o).contains("tmpfs /scratch tmpfs"),
        "{}",
        stdout(&o)
    );
    // As runc: a tmpfs without mode= keeps the covered directory's mode (the image's /root
    // is 0755, its /tmp 1777); over a new path it has tmpfs' 1777; mode= wins.
    let o = b.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--tmpfs",
        "/root",
        "--tmpfs",
        "/tmp",
        "--tmpfs",
        "/fresh",
        "--tmpfs",
        "/bin2:mode=700",
        IMAGE,
        "sh",
        "-c",
        "stat -c '%n %a' /root /tmp /fresh /bin2",
    ]);
    assert_eq!(
        stdout(&o),
        "/root 755\n/tmp 1777\n/fresh 1777\n/bin2 700\n",
        "{}",
        stderr(&o)
    );
}

#[test]
fn security_and_resource_flags_take_effect() {
    let b = Berth::new();
    let run = |args: &[&str]| -> Output {
        let mut full = vec!["run", "--rm", "--network", "none"];
        full.extend_from_slice(args);
        b.run(&full)
    };
    let o = run(&["--read-only", IMAGE, "touch", "/x"]);
    assert_ne!(code(&o), 0);
    assert!(stderr(&o).contains("Read-only"), "{}", stderr(&o));
    // The primary group is a supplementary group too, as in Docker (the same `id` output
    // as Debian's dockerd 20.10.24 gives); a number without an entry takes root's group.
    assert_eq!(
        stdout(&run(&["--user", "1000:1000", IMAGE, "id"])).trim(),
        "uid=1000 gid=1000 groups=1000"
    );
    assert_eq!(
        stdout(&run(&["--user", "55", IMAGE, "id"])).trim(),
        "uid=55 gid=0(root) groups=0(root)"
    );
    // In its own network namespace a process needs no privilege for low ports or ICMP
    // sockets (Docker's sysctls); --sysctl still wins.
    let bind80 = "nc -l -p 80 & sleep 0.3; netstat -ltn | grep -c ':80 '; kill %1";
    assert_eq!(
        stdout(&run(&["--user", "65534", IMAGE, "sh", "-c", bind80])).trim(),
        "1"
    );
    let sysctls =
        "cat /proc/sys/net/ipv4/ip_unprivileged_port_start /proc/sys/net/ipv4/ping_group_range";
    assert_eq!(
        stdout(&run(&[IMAGE, "sh", "-c", sysctls])),
        "0\n0\t2147483647\n"
    );
    let o = run(&[
        "--sysctl",
        "net.ipv4.ip_unprivileged_port_start=80",
        IMAGE,
        "sh",
        "-c",
        sysctls,
    ]);
    assert_eq!(stdout(&o), "80\n0\t2147483647\n");
    // The host's network namespace keeps the host's values.
    let host = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap();
    let o = b.run(&[
        "run",
        "--rm",
        "--network",
        "host",
        IMAGE,
        "cat",
        "/proc/sys/net/ipv4/ip_unprivileged_port_start",
    ]);
    assert_eq!(stdout(&o), host);
    assert_eq!(
        stdout(&run(&["--user", "nobody", IMAGE, "id", "-un"])).trim(),
        "nobody"
    );
    // CAP_CHOWN is in Docker's default set; dropping it makes chown fail.
    assert_eq!(code(&run(&[IMAGE, "chown", "1:1", "/tmp"])), 0);
    assert_ne!(
        code(&run(&[
            "--cap-drop",
            "CHOWN",
            IMAGE,
            "chown",
            "1:1",
            "/tmp"
        ])),
        0
    );
    let env = stdout(&run(&[
        "-e",
        "A=1",
        "-w",
        "/tmp",
        "--hostname",
        "box",
        IMAGE,
        "sh",
        "-c",
        "echo $A $FROM_IMAGE $HOSTNAME $(pwd) $(hostname)",
    ]));
    assert_eq!(env.trim(), "1 yes box /tmp box");
    // Limits are visible in the container's cgroup.
    b.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "lim",
        "--memory",
        "64m",
        "--pids-limit",
        "50",
        IMAGE,
        "sleep",
        "30",
    ]);
    let pid = b.inspect("lim")["State"]["Pid"].as_i64().unwrap();
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let read = |ctrl: &str, file: &str| -> String {
        for l in cg.lines() {
            let f: Vec<&str> = l.splitn(3, ':').collect();
            let v1 = f[1].split(',').any(|c| c == ctrl);
            let base = if v1 {
                format!("/sys/fs/cgroup/{}", f[1].replace("name=", ""))
            } else if f[1].is_empty() && Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
                "/sys/fs/cgroup".into()
            } else {
                continue;
            };
            if let Ok(s) = std::fs::read_to_string(format!("{base}{}/{file}", f[2])) {
                return s.trim().to_string();
            }
        }
        panic!("no {ctrl} {file} for {pid}: {cg}");
    };
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let (mem, pids) = if v2 {
        (read("", "memory.max"), read("", "pids.max"))
    } else {
        (
            read("memory", "memory.limit_in_bytes"),
            read("pids", "pids.max"),
        )
    };
    assert_eq!(mem, (64u64 << 20).to_string());
    assert_eq!(pids, "50");
    b.ok(&["rm", "-f", "lim"]);
}

#[test]
fn exec_runs_in_the_container() {
    let b = Berth::new();
    b.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "host1",
        "-e",
        "X=base",
        IMAGE,
        "sleep",
        "30",
    ]);
    assert_eq!(
        b.ok(&["exec", "host1", "sh", "-c", "echo $X $HOSTNAME"]),
        format!("base {}", &b.inspect("host1")["Id"].as_str().unwrap()[..12])
    );
    assert_eq!(
        b.ok(&[
            "exec",
            "-e",
            "X=over",
            "-w",
            "/etc",
            "-u",
            "nobody",
            "host1",
            "sh",
            "-c",
            "echo $X $(pwd) $(id -un)"
        ]),
        "over /etc nobody"
    );
    assert_eq!(code(&b.run(&["exec", "host1", "sh", "-c", "exit 5"])), 5);
    let top = b.ok(&["top", "host1"]);
    assert!(top.contains("sleep 30"), "{top}");
    b.ok(&["pause", "host1"]);
    assert_eq!(b.status("host1"), "paused");
    b.ok(&["unpause", "host1"]);
    b.ok(&["rename", "host1", "host2"]);
    assert_eq!(b.status("host2"), "running");
    // update changes the live cgroup (read back through the runtime's stats) and the record.
    b.ok(&["update", "--memory", "48m", "host2"]);
    assert_eq!(b.inspect("host2")["HostConfig"]["Memory"], 48 << 20);
    let stats = b.ok(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}} {{.MemUsage}}",
    ]);
    assert!(
        stats.starts_with("host2 ") && stats.ends_with("/ 48.00MiB"),
        "{stats}"
    );
    assert_eq!(code(&b.run(&["exec", "nosuch", "true"])), 1);
}

fn count_leftovers(root: &Path) -> (usize, usize, usize) {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root_s = root.display().to_string();
    let m = mounts.lines().filter(|l| l.contains(&root_s)).count();
    let monitors = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| {
                    let s = String::from_utf8_lossy(&c);
                    (s.contains("container-monitor") || s.contains("berth-monitor"))
                        && s.contains(&root_s)
                })
                .unwrap_or(false)
        })
        .count();
    // Container state dirs only (the runtime also keeps a seccomp cache there).
    let state = std::fs::read_dir(root.join("run/runtime"))
        .map(|d| d.flatten().filter(|e| e.file_name().len() == 64).count())
        .unwrap_or(0);
    (m, monitors, state)
}

#[test]
fn twenty_concurrent_containers_leave_nothing_behind() {
    let b = Berth::new();
    let before = count_leftovers(b.root.path());
    let handles: Vec<_> = (0..20)
        .map(|i| {
            let mut c = b.cmd();
            // On the default bridge, half of them publishing a port.
            let mut args = vec![
                "run".to_string(),
                "-d".into(),
                "--name".into(),
                format!("c{i}"),
            ];
            if i % 2 == 0 {
                args.extend(["-p".to_string(), "127.0.0.1:0:80".into()]);
            }
            args.extend([IMAGE.to_string(), "sleep".into(), "60".into()]);
            c.args(&args);
            std::thread::spawn(move || output(&mut c))
        })
        .collect();
    for h in handles {
        let o = h.join().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }
    assert_eq!(b.ok(&["ps", "-q"]).lines().count(), 20);
    let (mounts, monitors, state) = count_leftovers(b.root.path());
    assert_eq!(monitors, before.1 + 20);
    assert!(
        mounts >= before.0 + 20 && state == before.2 + 20,
        "{mounts} {state}"
    );
    let names: Vec<String> = (0..20).map(|i| format!("c{i}")).collect();
    let ids: Vec<String> = names
        .iter()
        .map(|n| b.inspect(n)["Id"].as_str().unwrap().to_string())
        .collect();
    let veths: Vec<String> = names
        .iter()
        .map(|n| {
            let v = b.inspect(n)["NetworkSettings"]["Networks"]["bridge"]["HostVeth"].clone();
            v.as_str().unwrap().to_string()
        })
        .collect();
    for v in &veths {
        assert!(
            Path::new("/sys/class/net").join(v).exists(),
            "veth {v} missing"
        );
    }
    assert!(ids.iter().map(|id| firewall_rules_of(id)).sum::<usize>() >= 10);
    let mut args = vec!["rm", "-f"];
    args.extend(names.iter().map(String::as_str));
    b.ok(&args);
    assert_eq!(b.ok(&["ps", "-aq"]), "");
    wait_for(
        || count_leftovers(b.root.path()) == before,
        "no mount, monitor or runtime state left",
    );
    for id in &ids {
        let left = berth_tests::cgroup_leftovers(&format!("berth/{id}"));
        assert!(left.is_empty(), "{left:?}");
        assert_eq!(firewall_rules_of(id), 0, "firewall rule of {id} left");
    }
    // The kernel deletes a dead namespace's veth pairs in the background.
    wait_for(
        || {
            veths
                .iter()
                .all(|v| !Path::new("/sys/class/net").join(v).exists())
        },
        "no veth left",
    );
}

#[test]
fn stale_running_record_reads_as_exited() {
    let b = Berth::new();
    b.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "orphan",
        IMAGE,
        "sleep",
        "30",
    ]);
    let i = b.inspect("orphan");
    // Kill the monitor and the container behind berth's back, as a crash would.
    let monitor = std::fs::read_dir("/proc").unwrap().flatten().find_map(|e| {
        let c = std::fs::read(e.path().join("cmdline")).ok()?;
        let s = String::from_utf8_lossy(&c).to_string();
        ((s.contains("container-monitor") || s.contains("berth-monitor"))
            && s.contains(i["Id"].as_str().unwrap()))
        .then(|| e.file_name().to_string_lossy().parse::<i32>().ok())
        .flatten()
    });
    let monitor = monitor.expect("monitor process");
    unsafe { libc::kill(monitor, libc::SIGKILL) };
    unsafe { libc::kill(i["State"]["Pid"].as_i64().unwrap() as i32, libc::SIGKILL) };
    wait_for(|| b.status("orphan") == "exited", "stale record repaired");
    b.ok(&["rm", "orphan"]);
}

#[test]
fn oom_kill_exits_137_and_is_recorded() {
    let b = Berth::new();
    let o = b.run(&[
        "run",
        "--name",
        "hog",
        "--network",
        "none",
        "--memory",
        "16m",
        "--memory-swap",
        "16m",
        IMAGE,
        "sh",
        "-c",
        "head -c 200m /dev/zero | tail > /dev/null",
    ]);
    assert_eq!(code(&o), 137, "{}", stderr(&o));
    let s = &b.inspect("hog")["State"];
    assert_eq!(s["OOMKilled"], true, "{s}");
    assert_eq!(s["ExitCode"], 137);
}

#[test]
fn images_in_use_are_not_removed() {
    let b = Berth::new();
    b.ok(&[
        "create",
        "--network",
        "none",
        "--name",
        "user",
        IMAGE,
        "true",
    ]);
    let o = b.run(&["rmi", IMAGE]);
    assert_ne!(code(&o), 0);
    assert!(
        stderr(&o).contains("is using its referenced image"),
        "{}",
        stderr(&o)
    );
    b.ok(&["image", "prune", "-a", "-f"]);
    assert!(
        b.ok(&["images", "-q"]).lines().count() == 1,
        "prune kept the used image"
    );
    b.ok(&["rm", "user"]);
    b.ok(&["rmi", IMAGE]);
}

#[test]
fn cp_diff_and_export() {
    let b = Berth::new();
    let vol = tempfile::tempdir().unwrap();
    let bind = format!("{}:/mnt/vol/inner", vol.path().display());
    b.ok(&[
        "run",
        "--name",
        "files",
        "--network",
        "none",
        "-v",
        &bind,
        "--tmpfs",
        "/scratch",
        IMAGE,
        "sh",
        "-c",
        "echo made > /tmp/new; rm /bin/vi; echo x >> /etc/passwd",
    ]);
    let host = tempfile::tempdir().unwrap();
    let out = host.path().join("new");
    b.ok(&["cp", "files:/tmp/new", out.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "made\n");
    std::fs::write(host.path().join("up"), "uploaded").unwrap();
    b.ok(&[
        "cp",
        host.path().join("up").to_str().unwrap(),
        "files:/tmp/",
    ]);
    let diff = b.ok(&["diff", "files"]);
    for line in [
        "C /tmp",
        "A /tmp/new",
        "A /tmp/up",
        "D /bin/vi",
        "C /etc/passwd",
    ] {
        assert!(
            diff.lines().any(|l| l == line),
            "{line} missing from:\n{diff}"
        );
    }
    // The mount points the runtime made (/proc, /dev, /etc/hosts, the bind's and the
    // tmpfs's) are not the container's changes.
    let lines: Vec<&str> = diff.lines().collect();
    assert_eq!(
        lines,
        [
            "C /bin",
            "D /bin/vi",
            "C /etc",
            "C /etc/passwd",
            "C /tmp",
            "A /tmp/new",
            "A /tmp/up"
        ],
        "unexpected changes"
    );
    // A tar stream out, and the exported filesystem holds the container's changes.
    let o = b.run(&["cp", "files:/tmp/up", "-"]);
    let mut ar = tar::Archive::new(&o.stdout[..]);
    let names: Vec<String> = ar
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert_eq!(names, ["up"]);
    let tarball = host.path().join("fs.tar");
    b.ok(&["export", "-o", tarball.to_str().unwrap(), "files"]);
    let mut ar = tar::Archive::new(std::fs::File::open(&tarball).unwrap());
    let names: Vec<String> = ar
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(names.iter().any(|n| n.ends_with("tmp/new")), "{names:?}");
    assert!(
        !names.iter().any(|n| n.ends_with("bin/vi")),
        "deleted file exported"
    );
    // The rootfs is unmounted again after the copy from a stopped container.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&b.root.path().display().to_string()));
}

/// A tar archive holding `planted/x` and `rel/x`, for `cp -` into a container.
fn tar_through_planted_links() -> Vec<u8> {
    let mut ar = tar::Builder::new(Vec::new());
    for name in ["planted/x", "rel/x", "dangling/x"] {
        let mut h = tar::Header::new_gnu();
        h.set_size(7);
        h.set_mode(0o644);
        h.set_cksum();
        ar.append_data(&mut h, name, &b"escaped"[..]).unwrap();
    }
    ar.into_inner().unwrap()
}

#[test]
fn cp_into_a_container_never_follows_its_symlinks_out() {
    let b = Berth::new();
    // A host directory the container points symlinks at, absolutely and with `..`.
    let host = tempfile::tempdir().unwrap();
    let target = host.path().display().to_string();
    let dots = format!("../../../../../../../..{target}");
    b.ok(&[
        "run",
        "--name",
        "planter",
        "--network",
        "none",
        IMAGE,
        "sh",
        "-c",
        &format!("mkdir -p {target} && ln -s {target} /planted && ln -s {dots} /rel && mkdir /deep && ln -s {target}/y /deep/link && ln -s {target}/missing /dangling"),
    ]);
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("x");
    std::fs::write(&file, "escaped").unwrap();
    let file = file.to_str().unwrap();
    for dst in [
        "planter:/planted/x",
        "planter:/rel/x",
        "planter:/planted/",
        "planter:/deep/link",
    ] {
        let o = b.run(&["cp", file, dst]);
        // Contained: the links resolve inside the container's root.
        assert!(o.status.success(), "cp to {dst}: {}", stderr(&o));
        assert!(
            std::fs::read_dir(host.path()).unwrap().next().is_none(),
            "cp to {dst} wrote outside the container ({:?}: {})",
            o.status.code(),
            stderr(&o)
        );
    }
    // The dangling link /deep/link was replaced by the copied file, inside the container.
    let o = b.run(&["cp", "planter:/deep/link", "-"]);
    let mut ar = tar::Archive::new(&o.stdout[..]);
    let mut e = ar.entries().unwrap().next().unwrap().unwrap();
    assert_eq!(e.header().entry_type(), tar::EntryType::Regular);
    let mut body = String::new();
    std::io::Read::read_to_string(&mut e, &mut body).unwrap();
    assert_eq!(body, "escaped");

    let mut child = b
        .cmd()
        .args(["cp", "-", "planter:/"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), &tar_through_planted_links()).unwrap();
    drop(child.stdin.take());
    let o = child.wait_with_output().unwrap();
    // The dangling link's target is missing inside the root: refused, with the name.
    assert!(!o.status.success());
    assert!(stderr(&o).contains("dangling/x"), "{}", stderr(&o));
    assert!(
        std::fs::read_dir(host.path()).unwrap().next().is_none(),
        "cp - wrote outside the container"
    );
    // The writes landed inside the container's root, at the links' in-root targets.
    let inside = format!("planter:{target}/x");
    let o = b.run(&["cp", &inside, "-"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut ar = tar::Archive::new(&o.stdout[..]);
    let mut e = ar.entries().unwrap().next().unwrap().unwrap();
    let mut body = String::new();
    std::io::Read::read_to_string(&mut e, &mut body).unwrap();
    assert_eq!(body, "escaped");
}

#[test]
fn commit_makes_an_image_of_the_containers_changes() {
    let b = Berth::new();
    let vol = tempfile::tempdir().unwrap();
    let bind = format!("{}:/mnt/bound", vol.path().display());
    b.ok(&[
        "run",
        "--name",
        "writer",
        "--network",
        "none",
        "-v",
        &bind,
        IMAGE,
        "sh",
        "-c",
        "echo committed > /made && rm /bin/vi",
    ]);
    let id = b.ok(&[
        "commit",
        "-c",
        "ENV COMMITTED=1",
        "-c",
        "LABEL stage=two",
        "-m",
        "a message",
        "-a",
        "Tester <t@example.com>",
        "writer",
        "committed:v1",
    ]);
    assert!(id.starts_with("sha256:"), "{id}");
    let v: Value = serde_json::from_str(&b.ok(&["image", "inspect", "committed:v1"])).unwrap();
    let img = &v[0];
    assert_eq!(img["Id"], id.as_str());
    assert_eq!(img["Author"], "Tester <t@example.com>");
    assert_eq!(img["Config"]["Labels"]["stage"], "two");
    let env = img["Config"]["Env"].to_string();
    assert!(
        env.contains("COMMITTED=1") && env.contains("FROM_IMAGE=yes"),
        "{env}"
    );
    let history = b.ok(&["history", "--no-trunc", "committed:v1"]);
    assert!(history.contains("a message"), "{history}");
    // The new image holds the file and the deletion, and the changed environment.
    let out = b.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "committed:v1",
        "sh",
        "-c",
        "cat /made; test -e /bin/vi && echo vi-back; test -e /mnt && echo mount-point-kept; echo $COMMITTED",
    ]);
    assert_eq!(out, "committed\n1");
    // A repository without a tag is tagged :latest, and found by that name.
    b.ok(&["commit", "writer", "committed"]);
    let v: Value = serde_json::from_str(&b.ok(&["image", "inspect", "committed"])).unwrap();
    assert!(
        v[0]["RepoTags"].to_string().contains("committed:latest"),
        "{v}"
    );
}

#[test]
fn a_new_volume_is_seeded_from_the_image_never_through_a_symlink_to_the_host() {
    let b = Berth::new();
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("secret"), "host only").unwrap();
    let target = host.path().display().to_string();
    b.ok(&[
        "run",
        "--name",
        "linker",
        "--network",
        "none",
        IMAGE,
        "ln",
        "-s",
        &target,
        "/data",
    ]);
    b.ok(&["commit", "linker", "linked:v1"]);
    let name = format!("seedvol{}", std::process::id());
    let o = b.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &format!("{name}:/data"),
        "linked:v1",
        "ls",
        "/data",
    ]);
    let v: Value = serde_json::from_str(&b.ok(&["volume", "inspect", &name])).unwrap();
    let data = PathBuf::from(v[0]["Mountpoint"].as_str().unwrap());
    assert!(
        !data.join("secret").exists(),
        "the host directory was copied into the volume ({:?}: {}{})",
        o.status.code(),
        stdout(&o),
        stderr(&o)
    );
    assert!(!stdout(&o).contains("secret"));
    b.ok(&["volume", "rm", &name]);
}

/// `run -d -i`, then `attach`: what the client types reaches the container's stdin, its
/// output comes back on stdout and stderr, and a second client after the first left
/// works too; the container's exit ends the attach with its code.
#[test]
fn attach_to_a_detached_interactive_container() {
    use std::io::{BufRead, Write as _};
    use std::process::Stdio;
    let b = Berth::new();
    b.ok(&[
        "run",
        "-d",
        "-i",
        "--name",
        "echoer",
        "--network",
        "none",
        IMAGE,
        "sh",
        "-c",
        "while read l; do [ \"$l\" = quit ] && exit 7; echo \"out:$l\"; echo \"err:$l\" >&2; done",
    ]);
    let attach = || {
        b.cmd()
            .args(["attach", "echoer"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut first = attach();
    let mut input = first.stdin.take().unwrap();
    let mut out = std::io::BufReader::new(first.stdout.take().unwrap());
    let mut line = String::new();
    // Written before or after the client connects, the line waits in its stdin pipe.
    writeln!(input, "hello").unwrap();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "out:hello\n");
    let mut err = std::io::BufReader::new(first.stderr.take().unwrap());
    let mut eline = String::new();
    err.read_line(&mut eline).unwrap();
    assert_eq!(eline, "err:hello\n");
    first.kill().unwrap();
    let _ = first.wait();
    // A second client; the container outlived the first one.
    let mut second = attach();
    let mut input = second.stdin.take().unwrap();
    let mut out = std::io::BufReader::new(second.stdout.take().unwrap());
    writeln!(input, "again").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "out:again\n");
    writeln!(input, "quit").unwrap();
    let status = second.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(7),
        "attach returns the container's exit code"
    );
    let logs = b.ok(&["logs", "echoer"]);
    assert!(
        logs.contains("out:hello") && logs.contains("out:again"),
        "{logs}"
    );
}

/// The detach sequence (Docker's ctrl-p ctrl-q, or `--detach-keys`) ends an attach to
/// a tty container with status 0 and leaves the container running.
#[test]
fn detach_keys_leave_a_tty_container_running() {
    use std::io::Write as _;
    use std::process::Stdio;
    let b = Berth::new();
    let id = b.ok(&["run", "-dit", "--network", "none", IMAGE, "sh"]);
    for (flags, keys) in [
        (vec![], &b"\x10\x11"[..]),
        (vec!["--detach-keys", "ctrl-x,y"], b"\x18y"),
    ] {
        let mut args = vec!["attach"];
        args.extend_from_slice(&flags);
        args.push(&id);
        let mut client = b
            .cmd()
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = client.stdin.take().unwrap();
        input.write_all(b"echo typed\n").unwrap();
        input.write_all(keys).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(s) = client.try_wait().unwrap() {
                break s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{flags:?}: attach did not detach"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        drop(input);
        assert_eq!(status.code(), Some(0), "{flags:?}");
        assert_eq!(b.inspect(&id)["State"]["Status"], "running", "{flags:?}");
    }
    let o = b.run(&["attach", "--detach-keys", "ctrl-", &id]);
    assert!(stderr(&o).contains("Invalid detach keys"), "{}", stderr(&o));
    assert!(b.ok(&["logs", &id]).contains("typed"));
    b.ok(&["rm", "-f", &id]);
}

/// `run -it` and `exec -it` on a terminal give the container's pty the terminal's
/// window size (util-linux `script` provides the terminal; `stty` sets its size first).
#[test]
fn run_it_gets_the_terminals_window_size() {
    let b = Berth::new();
    let berth = format!(
        "{} --root {}",
        berth_tests::bin_dir().join("berth").display(),
        b.root.path().display()
    );
    let text = berth_tests::terminal_output(&format!(
        "stty cols 123 rows 45; {berth} run --rm -it --network none {IMAGE} stty size"
    ));
    assert!(text.contains("45 123"), "{text:?}");
    // exec -it too (the runtime's terminal proxy).
    let id = b.ok(&["run", "-d", "--network", "none", IMAGE, "sleep", "60"]);
    let text = berth_tests::terminal_output(&format!(
        "stty cols 99 rows 33; {berth} exec -it {id} stty size"
    ));
    assert!(text.contains("33 99"), "{text:?}");
    // Typed input reaches an interactive shell and its exit code comes back (the exec
    // once panicked here: no thread may start after joining the PID namespace).
    let mut script = berth_tests::in_terminal(
        &format!("{berth} exec -it {id} sh; echo rc=$?"),
        std::process::Stdio::piped(),
    );
    let mut input = script.stdin.take().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    std::io::Write::write_all(&mut input, b"echo ty''ped\nexit 4\n").unwrap();
    drop(input);
    let out = script.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("typed") && text.contains("rc=4"), "{text:?}");
    b.ok(&["rm", "-f", &id]);
}

/// `start -ai` feeds stdin to a container created with `-i` and returns its exit code.
#[test]
fn start_ai_feeds_stdin() {
    use std::process::Stdio;
    let b = Berth::new();
    let id = b.ok(&[
        "create",
        "-i",
        "--network",
        "none",
        IMAGE,
        "sh",
        "-c",
        "cat; exit 6",
    ]);
    let mut start = b
        .cmd()
        .args(["start", "-ai", &id])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut start.stdin.take().unwrap(), b"fed\n").unwrap();
    let out = start.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "fed\n");
    assert_eq!(out.status.code(), Some(6));
    b.ok(&["rm", &id]);
}

#[test]
fn create_start_wait_and_detached_errors() {
    let b = Berth::new();
    let id = b.ok(&[
        "create",
        "--network",
        "none",
        "--name",
        "later",
        IMAGE,
        "sh",
        "-c",
        "echo hi; exit 7",
    ]);
    assert_eq!(b.status("later"), "created");
    // Docker's Attach* say which streams run/create attached: stdout and stderr by
    // default, stdin with -i, those of -a, none with -d.
    let attached = |name: &str| {
        let c = &b.inspect(name)["Config"];
        ["AttachStdin", "AttachStdout", "AttachStderr"].map(|k| c[k].as_bool().unwrap())
    };
    assert_eq!(attached("later"), [false, true, true]);
    b.ok(&["create", "-i", "-a", "stdin", "--name", "in", IMAGE, "cat"]);
    assert_eq!(attached("in"), [true, false, false]);
    assert!(b
        .ok(&["ps", "-a", "--filter", "status=created", "-q", "--no-trunc"])
        .contains(&id));
    let o = b.run(&["start", "-a", "later"]);
    assert_eq!(code(&o), 7);
    assert_eq!(stdout(&o), "hi\n");
    b.ok(&["start", "later"]);
    assert_eq!(b.ok(&["wait", "later"]), "7");
    assert_eq!(b.ok(&["logs", "later"]), "hi\nhi");
    // A detached start reports the monitor's verdict with Docker's codes.
    let o = b.run(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "missing",
        IMAGE,
        "/nope",
    ]);
    assert_eq!(code(&o), 127, "{}", stderr(&o));
    assert!(stderr(&o).contains("/nope"), "{}", stderr(&o));
    assert_eq!(b.inspect("missing")["State"]["ExitCode"], 127);
    assert_eq!(attached("missing"), [false; 3]);
    // Names are unique; --rm -d removes the container when it exits.
    let o = b.run(&["create", "--network", "none", "--name", "later", IMAGE]);
    assert_eq!(code(&o), 125);
    assert!(stderr(&o).contains("is already in use"), "{}", stderr(&o));
    let id = b.ok(&["run", "-d", "--rm", "--network", "none", IMAGE, "true"]);
    wait_for(
        || !b.ok(&["ps", "-aq", "--no-trunc"]).contains(&id),
        "--rm -d removal",
    );
    // A bad -p is an engine error before anything is created.
    let o = b.run(&["run", "--rm", "-p", "99999:80", IMAGE, "true"]);
    assert_eq!(code(&o), 125, "{}", stderr(&o));
}

/// iptables rules naming the container (berth-net tags each with its owner).
fn firewall_rules_of(id: &str) -> usize {
    let rules = Command::new("iptables-save").output().unwrap();
    String::from_utf8_lossy(&rules.stdout)
        .lines()
        .filter(|l| l.contains(id))
        .count()
}

#[test]
fn bridge_network_and_published_port() {
    use std::io::{Read, Write};
    let b = Berth::new();
    let id = b.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        "127.0.0.1:0:80",
        IMAGE,
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/etc",
    ]);
    let i = b.inspect("web");
    let ip = i["NetworkSettings"]["IPAddress"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(ip.starts_with("10."), "{ip}");
    let port = b.ok(&["port", "web", "80"]);
    let addr = port.trim().to_string();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    assert!(
        firewall_rules_of(&id) > 0,
        "a DNAT rule names the container"
    );
    // The published port answers from the host with the container's own files.
    let mut body = String::new();
    wait_for(
        || {
            let Ok(mut s) = std::net::TcpStream::connect(&addr) else {
                return false;
            };
            let _ = s.write_all(b"GET /hostname HTTP/1.0\r\n\r\n");
            body.clear();
            s.read_to_string(&mut body).is_ok() && body.contains("200 OK")
        },
        "httpd through the published port",
    );
    assert!(body.contains(&id[..12]), "{body}");
    // Containers on the default bridge get an address and a route out.
    let o = b.ok(&[
        "run",
        "--rm",
        IMAGE,
        "sh",
        "-c",
        "ip -4 -o addr show eth0; ip route",
    ]);
    assert!(o.contains("inet 10.") && o.contains("default via"), "{o}");
    b.ok(&["rm", "-f", "web"]);
    assert_eq!(firewall_rules_of(&id), 0, "rm -f left a firewall rule");
}

#[test]
fn containers_on_a_user_network_reach_each_other_by_name() {
    let b = Berth::new();
    let net = format!("tn{}", std::process::id());
    b.ok(&["network", "create", &net]);
    assert!(b
        .ok(&["network", "ls", "--format", "{{.Name}}"])
        .lines()
        .any(|l| l == net));
    // Docker's filters: the predefined networks are builtin, ours is custom and unused.
    let ls = |f: &str| b.ok(&["network", "ls", "--format", "{{.Name}}", "--filter", f]);
    assert_eq!(ls("type=builtin"), "bridge\nhost\nnone");
    // `--format json` rows carry Docker's keys.
    let rows = b.ok(&["network", "ls", "--format", "json"]);
    let row: Value = serde_json::from_str(rows.lines().next().unwrap()).unwrap();
    for key in [
        "ID",
        "Name",
        "Driver",
        "Scope",
        "Internal",
        "IPv6",
        "CreatedAt",
        "Labels",
    ] {
        assert!(row.get(key).is_some(), "{key}: {row}");
    }
    assert!(
        row["CreatedAt"].as_str().unwrap().ends_with(" +0000 UTC"),
        "{row}"
    );
    // The usual script idiom for a container's address.
    let probe = b.ok(&[
        "run",
        "-d",
        "--network",
        &net,
        "--label",
        "role=probe",
        IMAGE,
        "sleep",
        "30",
    ]);
    let f = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}} {{index .Config.Labels \"role\"}}";
    let shown = b.ok(&["inspect", "-f", f, &probe]);
    let ip = b.inspect(&probe)["NetworkSettings"]["Networks"][&net]["IPAddress"].clone();
    assert_eq!(shown, format!("{} probe", ip.as_str().unwrap()));
    b.ok(&["rm", "-f", &probe]);
    assert_eq!(ls(&format!("name={net}")), net);
    assert!(ls("dangling=true").lines().any(|l| l == net));
    let id = b.ok(&[
        "run",
        "-d",
        "--network",
        &net,
        "--name",
        "srv",
        IMAGE,
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/etc",
    ]);
    let got = wget_from_peer(&b, &net, "http://srv/hostname");
    assert_eq!(got.trim(), &id[..12]);
    let inspect: Value = serde_json::from_str(&b.ok(&["network", "inspect", &net])).unwrap();
    assert!(
        inspect[0]["Containers"]
            .as_object()
            .unwrap()
            .contains_key(&id),
        "{inspect}"
    );
    // `network connect` is remembered: a restart joins the second network again, until
    // `network disconnect`.
    let net2 = format!("{net}b");
    b.ok(&["network", "create", &net2]);
    b.ok(&["network", "connect", &net2, "srv"]);
    let has_eth1 = || {
        b.ok(&["exec", "srv", "cat", "/proc/net/dev"])
            .contains("eth1:")
    };
    assert!(has_eth1(), "connect did not add eth1");
    b.ok(&["restart", "-t", "0", "srv"]);
    assert!(
        has_eth1(),
        "the restarted container lost its second network"
    );
    b.ok(&["network", "disconnect", &net2, "srv"]);
    assert!(!has_eth1());
    b.ok(&["restart", "-t", "0", "srv"]);
    assert!(!has_eth1(), "a disconnected network came back on restart");
    b.ok(&["rm", "-f", "srv"]);
    b.ok(&["network", "rm", &net]);
    b.ok(&["network", "rm", &net2]);
}

#[test]
fn add_host_lines_and_host_gateway_reach_etc_hosts() {
    let b = Berth::new();
    let hosts = b.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--add-host",
        "db:10.1.2.3",
        "--add-host",
        "v6=[::1]",
        "--add-host",
        "gw:host-gateway",
        IMAGE,
        "cat",
        "/etc/hosts",
    ]);
    let lines: Vec<&str> = hosts.lines().collect();
    assert!(lines.contains(&"10.1.2.3\tdb"), "{hosts}");
    assert!(lines.contains(&"::1\tv6"), "{hosts}");
    // host-gateway is the default bridge's gateway address, as in Docker.
    let net: Value = serde_json::from_str(&b.ok(&["network", "inspect", "bridge"])).unwrap();
    let gateway = net[0]["IPAM"]["Config"][0]["Gateway"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        lines.contains(&format!("{gateway}\tgw").as_str()),
        "{hosts}"
    );
    for bad in ["db", "db:10.1.2", ":10.1.2.3"] {
        let o = b.run(&["run", "--rm", "--add-host", bad, IMAGE, "true"]);
        assert_eq!(code(&o), 125, "{bad}: {}", stderr(&o));
        assert!(stderr(&o).contains("add-host"), "{bad}: {}", stderr(&o));
    }
}

/// A file of a detached container's cgroup in hierarchy `controller` (v1) or the
/// unified one.
fn cgroup_file(parent: &str, id: &str, controller: &str, file: &str) -> String {
    let v1 = Path::new("/sys/fs/cgroup")
        .join(controller)
        .join(parent)
        .join(id)
        .join(file);
    let v2 = Path::new("/sys/fs/cgroup").join(parent).join(id).join(file);
    std::fs::read_to_string(&v1)
        .or_else(|_| std::fs::read_to_string(&v2))
        .unwrap_or_else(|e| panic!("{}: {e}", v1.display()))
        .trim()
        .to_string()
}

#[test]
fn namespace_modes_share_what_they_name() {
    let b = Berth::new();
    let run = |args: &[&str]| {
        let mut full = vec!["run", "--rm", "--network", "none"];
        full.extend_from_slice(args);
        b.ok(&full)
    };
    b.ok(&[
        "run",
        "-d",
        "--name",
        "donor",
        "--network",
        "none",
        "--ipc",
        "shareable",
        IMAGE,
        "sleep",
        "60",
    ]);
    b.ok(&[
        "run",
        "-d",
        "--name",
        "private",
        "--network",
        "none",
        IMAGE,
        "sleep",
        "60",
    ]);
    // --pid container: sees the donor's processes; --pid host sees this test.
    let ps = run(&["--pid", "container:donor", IMAGE, "ps", "-o", "args"]);
    assert!(ps.lines().any(|l| l == "sleep 60"), "{ps}");
    let me = std::process::id().to_string();
    let ps = run(&["--pid", "host", IMAGE, "ps", "-o", "pid"]);
    assert!(
        ps.lines().any(|l| l.trim() == me),
        "this test's pid {me} not in: {ps}"
    );
    // --ipc container: of a shareable donor shares its /dev/shm and IPC namespace.
    b.ok(&["exec", "donor", "sh", "-c", "echo shared > /dev/shm/x"]);
    assert_eq!(
        run(&["--ipc", "container:donor", IMAGE, "cat", "/dev/shm/x"]),
        "shared"
    );
    let ns = |args: &[&str]| run(&[args, &[IMAGE, "readlink", "/proc/self/ns/ipc"]].concat());
    let donor_ns = b.ok(&["exec", "donor", "readlink", "/proc/self/ns/ipc"]);
    assert_eq!(ns(&["--ipc", "container:donor"]), donor_ns);
    assert_ne!(ns(&[]), donor_ns);
    let o = b.run(&["run", "--rm", "--ipc", "container:private", IMAGE, "true"]);
    assert_eq!(code(&o), 125);
    assert!(stderr(&o).contains("non-shareable IPC"), "{}", stderr(&o));
    // --ipc none: no /dev/shm at all.
    let o = b.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--ipc",
        "none",
        IMAGE,
        "ls",
        "/dev/shm",
    ]);
    assert_ne!(code(&o), 0);
    // --uts host: the kernel says the host's name, /etc/hostname the id (as Docker writes
    // it), and --hostname with it is refused.
    let host = nix::unistd::gethostname()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let both = run(&[
        "--uts",
        "host",
        IMAGE,
        "sh",
        "-c",
        "hostname; cat /etc/hostname",
    ]);
    let (kernel, file) = both.split_once('\n').unwrap();
    assert_eq!(kernel, host);
    assert!(
        file.len() == 12 && file.bytes().all(|c| c.is_ascii_hexdigit()),
        "{both:?}"
    );
    let o = b.run(&["run", "--rm", "--uts", "host", "-h", "x", IMAGE, "true"]);
    assert_eq!(code(&o), 125);
    for (flag, value) in [
        ("--pid", "bogus"),
        ("--ipc", "bogus"),
        ("--uts", "bogus"),
        ("--cgroupns", "bogus"),
    ] {
        assert_refused(&b, &[flag, value]);
    }
    // The donor's host-side /dev/shm goes with it.
    let donor = b.inspect("donor")["Id"].as_str().unwrap().to_string();
    b.ok(&["rm", "-f", "donor"]);
    assert!(
        berth_tests::mounts_containing(&b.root.path().join("containers").join(&donor)).is_empty()
    );
}

/// The block device under `/` as `(major:minor, /dev path)`.
fn root_disk() -> (String, String) {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let numbers = info
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/"))
        .and_then(|l| l.split(' ').nth(2))
        .unwrap()
        .to_string();
    let uevent = std::fs::read_to_string(format!("/sys/dev/block/{numbers}/uevent")).unwrap();
    let name = uevent
        .lines()
        .find_map(|l| l.strip_prefix("DEVNAME="))
        .unwrap();
    (numbers, format!("/dev/{name}"))
}

/// `--cpu-rt-runtime`: a new cgroup has no real-time budget, so berth raises its parent's
/// as far as the container needs; the container's cgroup then holds what was asked and
/// `update` changes it. cgroup v2 has no real-time budget: there the start is refused.
#[test]
fn cpu_realtime_budget_is_granted_and_updated() {
    let b = Berth::new();
    let o = b.run(&[
        "run",
        "-d",
        "--network",
        "none",
        "--cpu-rt-period",
        "1000000",
        "--cpu-rt-runtime",
        "20000",
        IMAGE,
        "sleep",
        "60",
    ]);
    if !Path::new("/sys/fs/cgroup/cpu/cpu.rt_runtime_us").exists() {
        assert_ne!(code(&o), 0, "a v2 host has no real-time budget");
        assert!(stderr(&o).contains("real-time"), "{}", stderr(&o));
        return;
    }
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let id = stdout(&o).trim().to_string();
    assert_eq!(
        cgroup_file("berth", &id, "cpu", "cpu.rt_runtime_us"),
        "20000"
    );
    let hc = &b.inspect(&id)["HostConfig"];
    assert_eq!(hc["CpuRealtimeRuntime"], 20000);
    assert_eq!(hc["CpuRealtimePeriod"], 1000000);
    b.ok(&["update", "--cpu-rt-runtime", "30000", &id]);
    assert_eq!(
        cgroup_file("berth", &id, "cpu", "cpu.rt_runtime_us"),
        "30000"
    );
    b.ok(&["rm", "-f", &id]);
    assert_refused_saying(
        &b,
        &["--cpu-rt-period", "1000", "--cpu-rt-runtime", "2000"],
        "cannot be higher than cpu-rt-period",
    );
}

/// Per-device blkio limits land in the container's cgroup; annotations in its spec.
#[test]
fn blkio_device_limits_and_annotations() {
    let b = Berth::new();
    let (numbers, dev) = root_disk();
    let id = b.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--device-read-bps",
        &format!("{dev}:1mb"),
        "--device-write-iops",
        &format!("{dev}:300"),
        "--annotation",
        "org.example.team=infra",
        IMAGE,
        "sleep",
        "60",
    ]);
    if Path::new("/sys/fs/cgroup/blkio").exists() {
        let read = cgroup_file("berth", &id, "blkio", "blkio.throttle.read_bps_device");
        assert_eq!(read, format!("{numbers} 1048576"));
        let write = cgroup_file("berth", &id, "blkio", "blkio.throttle.write_iops_device");
        assert_eq!(write, format!("{numbers} 300"));
    } else {
        let io = cgroup_file("berth", &id, "", "io.max");
        assert!(
            io.contains("rbps=1048576") && io.contains("wiops=300"),
            "{io}"
        );
    }
    let hc = &b.inspect(&id)["HostConfig"];
    assert_eq!(hc["BlkioDeviceReadBps"][0]["Path"], dev.as_str());
    assert_eq!(hc["BlkioDeviceReadBps"][0]["Rate"], 1048576);
    assert_eq!(hc["Annotations"]["org.example.team"], "infra");
    let spec: Value = serde_json::from_slice(
        &std::fs::read(
            b.root
                .path()
                .join("containers")
                .join(&id)
                .join("config.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(spec["annotations"]["org.example.team"], "infra");
    b.ok(&["rm", "-f", &id]);
    for (flag, value, why) in [
        ("--device-read-bps", "nodevice".to_string(), "bad format"),
        ("--device-read-bps", format!("{dev}:fast"), "invalid value"),
        (
            "--blkio-weight-device",
            format!("{dev}:5"),
            "from 10 to 1000",
        ),
        (
            "--device-write-iops",
            "/tmp/x:10".to_string(),
            "not a device path",
        ),
    ] {
        assert_refused_saying(&b, &[flag, &value], why);
    }
}

#[test]
fn cgroup_and_process_resource_flags_reach_the_kernel() {
    let b = Berth::new();
    let parent = format!("berth-test-{}", std::process::id());
    let cg_parent = format!("/{parent}");
    let id = b.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--cgroup-parent",
        &cg_parent,
        "--cpu-period",
        "50000",
        "--cpu-quota",
        "25000",
        "--memory",
        "64m",
        "--memory-reservation",
        "32m",
        "--oom-score-adj",
        "300",
        IMAGE,
        "sleep",
        "60",
    ]);
    let v2 = !Path::new("/sys/fs/cgroup/memory").exists();
    if v2 {
        assert_eq!(cgroup_file(&parent, &id, "", "cpu.max"), "25000 50000");
        assert_eq!(
            cgroup_file(&parent, &id, "", "memory.low"),
            (32 << 20).to_string()
        );
    } else {
        assert_eq!(
            cgroup_file(&parent, &id, "cpu", "cpu.cfs_period_us"),
            "50000"
        );
        assert_eq!(
            cgroup_file(&parent, &id, "cpu", "cpu.cfs_quota_us"),
            "25000"
        );
        assert_eq!(
            cgroup_file(&parent, &id, "memory", "memory.soft_limit_in_bytes"),
            (32 << 20).to_string()
        );
    }
    assert_eq!(b.ok(&["exec", &id, "cat", "/proc/1/oom_score_adj"]), "300");
    let h = &b.inspect(&id)["HostConfig"];
    assert_eq!(h["CgroupParent"], cg_parent);
    assert_eq!(h["CpuQuota"], 25000);
    assert_eq!(h["MemoryReservation"], 32 << 20);
    b.ok(&["rm", "-f", &id]);
    for d in ["memory", "cpu", "pids", ""] {
        let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(d).join(&parent));
    }
    // A device rule opens a node the default rules keep shut (/dev/loop-control, 10:237).
    let o = b.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--cap-add",
        "MKNOD",
        "--device-cgroup-rule",
        "c 10:237 rwm",
        IMAGE,
        "sh",
        "-c",
        "mknod /tmp/lc c 10 237 && head -c 0 /tmp/lc",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = b.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        IMAGE,
        "sh",
        "-c",
        "mknod /tmp/lc c 10 237 && head -c 0 /tmp/lc",
    ]);
    assert_ne!(code(&o), 0, "the default rules must refuse 10:237");
    for args in [
        &["--cpus", "1", "--cpu-period", "50000"][..],
        &["--memory-swappiness", "101"],
        &["--oom-score-adj", "1001"],
        &["--blkio-weight", "5"],
        &["--memory", "32m", "--memory-reservation", "64m"],
        &["--device-cgroup-rule", "x 1:3 rwm"],
        &["--cgroup-parent", "../escape"],
    ] {
        assert_refused(&b, args);
    }
}

#[test]
fn log_options_rotate_and_none_keeps_nothing() {
    let b = Berth::new();
    let id = b.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--log-opt",
        "max-size=2k",
        "--log-opt",
        "max-file=3",
        IMAGE,
        "sh",
        "-c",
        "i=0; while [ $i -lt 300 ]; do echo line $i; i=$((i+1)); done",
    ]);
    b.ok(&["wait", &id]);
    let log = b
        .root
        .path()
        .join("containers")
        .join(&id)
        .join(format!("{id}-json.log"));
    let rotated = |n: u32| PathBuf::from(format!("{}.{n}", log.display()));
    assert!(rotated(1).exists() && rotated(2).exists() && !rotated(3).exists());
    for f in [log.clone(), rotated(1), rotated(2)] {
        assert!(
            std::fs::metadata(&f).unwrap().len() <= 2048,
            "{}",
            f.display()
        );
    }
    let logs = b.ok(&["logs", &id]);
    let lines: Vec<&str> = logs.lines().collect();
    assert_eq!(lines.last(), Some(&"line 299"));
    assert!(lines.len() < 300 && lines.len() > 50, "{}", lines.len());
    let n: Vec<u32> = lines.iter().map(|l| l[5..].parse().unwrap()).collect();
    assert!(n.windows(2).all(|w| w[1] == w[0] + 1), "logs out of order");
    assert_eq!(b.ok(&["logs", "--tail", "1", &id]), "line 299");
    assert_eq!(
        b.inspect(&id)["HostConfig"]["LogConfig"]["Config"]["max-file"],
        "3"
    );
    // --log-driver none: the output is not kept and `logs` says so.
    let id = b.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--log-driver",
        "none",
        IMAGE,
        "echo",
        "hi",
    ]);
    b.ok(&["wait", &id]);
    let o = b.run(&["logs", &id]);
    assert_eq!(code(&o), 1);
    assert!(
        stderr(&o).contains("does not support reading"),
        "{}",
        stderr(&o)
    );
    for bad in [
        &["--log-driver", "syslog"][..],
        &["--log-opt", "max-file=2"],
        &["--log-opt", "colour=red"],
    ] {
        assert_refused(&b, bad);
    }
}

#[test]
fn volumes_from_cidfile_and_label_file() {
    let b = Berth::new();
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("h"), "bound\n").unwrap();
    let bind = format!("{}:/host", host.path().display());
    b.ok(&[
        "run",
        "-d",
        "--name",
        "src",
        "--network",
        "none",
        "-v",
        "vdata:/data",
        "-v",
        &bind,
        IMAGE,
        "sleep",
        "60",
    ]);
    b.ok(&["exec", "src", "sh", "-c", "echo kept > /data/f"]);
    let run = |args: &[&str]| {
        let mut full = vec!["run", "--rm", "--network", "none"];
        full.extend_from_slice(args);
        b.run(&full)
    };
    let o = run(&[
        "--volumes-from",
        "src",
        IMAGE,
        "sh",
        "-c",
        "cat /data/f /host/h; echo more >> /data/f",
    ]);
    assert_eq!(stdout(&o), "kept\nbound\n", "{}", stderr(&o));
    let o = run(&["--volumes-from", "src:ro", IMAGE, "touch", "/data/g"]);
    assert_ne!(code(&o), 0, "a :ro volume was writable");
    // A mount of its own at the same place wins.
    let o = run(&[
        "--volumes-from",
        "src",
        "-v",
        "other:/data",
        IMAGE,
        "ls",
        "/data",
    ]);
    assert_eq!(stdout(&o), "", "{}", stderr(&o));
    assert_eq!(
        code(&run(&["--volumes-from", "nosuch", IMAGE, "true"])),
        125
    );
    b.ok(&["rm", "-f", "-v", "src"]);
    // The named volume outlived both containers with the second one's write.
    assert_eq!(
        stdout(&run(&["-v", "vdata:/data", IMAGE, "cat", "/data/f"])),
        "kept\nmore\n"
    );
    // --cidfile: written at create, and an existing file is refused.
    let dir = tempfile::tempdir().unwrap();
    let cid = dir.path().join("cid");
    let labels = dir.path().join("labels");
    std::fs::write(&labels, "a=1\n# a comment\nb=two\n").unwrap();
    let id = b.ok(&[
        "create",
        "--cidfile",
        cid.to_str().unwrap(),
        "--label-file",
        labels.to_str().unwrap(),
        "--label",
        "b=three",
        IMAGE,
        "true",
    ]);
    assert_eq!(std::fs::read_to_string(&cid).unwrap(), id);
    let l = &b.inspect(&id)["Config"]["Labels"];
    assert_eq!(
        (l["a"].as_str(), l["b"].as_str()),
        (Some("1"), Some("three"))
    );
    let o = b.run(&["create", "--cidfile", cid.to_str().unwrap(), IMAGE, "true"]);
    assert_eq!(code(&o), 125);
    assert!(
        stderr(&o).contains("Container ID file found"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn network_alias_and_static_ip_on_a_user_network() {
    let b = Berth::new();
    let net = format!("ta{}", std::process::id());
    b.ok(&["network", "create", &net]);
    let subnet = b.inspect_network(&net);
    let ip = subnet
        .rsplit_once('.')
        .map(|(a, _)| format!("{a}.77"))
        .unwrap();
    b.ok(&[
        "run",
        "-d",
        "--name",
        "srv",
        "--network",
        &net,
        "--ip",
        &ip,
        "--network-alias",
        "web",
        IMAGE,
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/etc",
    ]);
    let shown = b.inspect("srv")["NetworkSettings"]["Networks"][&net]["IPAddress"].clone();
    assert_eq!(shown, ip.as_str());
    let got = wget_from_peer(&b, &net, "http://web/passwd");
    assert!(got.starts_with("root:"), "{got}");
    // The address is taken; --ip and aliases need a user network.
    let o = b.run(&["run", "--rm", "--network", &net, "--ip", &ip, IMAGE, "true"]);
    assert_eq!(code(&o), 125);
    assert!(stderr(&o).contains("already in use"), "{}", stderr(&o));
    for args in [
        &["--network", "none", "--ip", "10.1.2.3"][..],
        &["--network", "none", "--network-alias", "x"],
    ] {
        assert_refused(&b, args);
    }
}

#[test]
fn mac_address_is_the_interfaces_and_inspect_shows_it() {
    let b = Berth::new();
    let mac = "92:d0:c6:0a:29:33";
    let seen = b.ok(&[
        "run",
        "--rm",
        "--mac-address",
        "92-D0-C6-0A-29-33",
        IMAGE,
        "cat",
        "/sys/class/net/eth0/address",
    ]);
    assert_eq!(seen, mac, "the kernel's address of eth0");
    let id = b.ok(&["run", "-d", "--mac-address", mac, IMAGE, "sleep", "60"]);
    let i = b.inspect(&id);
    assert_eq!(i["Config"]["MacAddress"], mac);
    assert_eq!(
        i["NetworkSettings"]["Networks"]["bridge"]["MacAddress"],
        mac
    );
    b.ok(&["rm", "-f", &id]);
    for (args, why) in [
        (
            &["--mac-address", "92:d0:c6:0a:29"][..],
            "not a valid mac address",
        ),
        (&["--mac-address", "01:00:5e:00:00:01"], "multicast"),
        (
            &["--network", "host", "--mac-address", mac],
            "conflicting options: mac-address and the network mode",
        ),
    ] {
        assert_refused_saying(&b, args, why);
    }
}

/// `--link` on the default bridge: the alias in /etc/hosts (beside `--add-host` lines,
/// which the network's hosts file keeps), Docker's link variables, a reachable peer.
#[test]
fn links_name_a_running_peer_with_hosts_lines_and_variables() {
    let b = Berth::new();
    let srv = format!("lsrv{}", std::process::id());
    b.ok(&[
        "run",
        "-d",
        "--name",
        &srv,
        "-e",
        "SECRET=s3",
        "--expose",
        "80",
        IMAGE,
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/etc",
    ]);
    let ip = b.inspect(&srv)["NetworkSettings"]["IPAddress"]
        .as_str()
        .unwrap()
        .to_string();
    let hostname = b.inspect(&srv)["Config"]["Hostname"]
        .as_str()
        .unwrap()
        .to_string();
    let out = b.ok(&[
        "run",
        "--rm",
        "--name",
        "linker",
        "--link",
        &format!("{srv}:web-1"),
        "--add-host",
        "db:10.1.2.3",
        IMAGE,
        "sh",
        "-c",
        "cat /etc/hosts; env; wget -q -O - http://web-1/passwd",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines.contains(&"10.1.2.3\tdb"),
        "--add-host kept on the bridge: {out}"
    );
    let link_line = format!("{ip}\tweb-1 {hostname} {srv}");
    assert!(
        lines.contains(&link_line.as_str()),
        "{link_line:?} in {out}"
    );
    for var in [
        "WEB_1_NAME=/linker/web-1".to_string(),
        format!("WEB_1_PORT=tcp://{ip}:80"),
        format!("WEB_1_PORT_80_TCP_ADDR={ip}"),
        "WEB_1_PORT_80_TCP_PORT=80".into(),
        "WEB_1_PORT_80_TCP_PROTO=tcp".into(),
        "WEB_1_ENV_SECRET=s3".into(),
    ] {
        assert!(lines.contains(&var.as_str()), "{var} in {out}");
    }
    assert!(!out.contains("WEB_1_ENV_PATH="), "{out}");
    assert!(
        out.contains("root:"),
        "the peer answers by its alias: {out}"
    );
    // A stopped peer, a missing one and a host network are refused.
    b.ok(&["kill", &srv]);
    // The monitor records the exit just after the kill returns.
    b.ok(&["wait", &srv]);
    for (args, why) in [
        (
            vec!["--link", srv.as_str()],
            "Cannot link to a non running container",
        ),
        (vec!["--link", "nosuch"], "No such container"),
        (
            vec!["--network", "host", "--link", srv.as_str()],
            "host type networking",
        ),
        (vec!["--link", "a:b:c"], "bad format for links"),
        (vec!["--userns", "remap"], "invalid USER mode"),
    ] {
        assert_refused_saying(&b, &args, why);
    }
}

/// `ps -s` and `inspect -s`: the writable layer and the whole root filesystem.
#[test]
fn ps_and_inspect_show_sizes_when_asked() {
    let b = Berth::new();
    let id = b.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        IMAGE,
        "sh",
        "-c",
        "head -c 300000 /dev/zero > /big; sleep 60",
    ]);
    wait_for(
        || b.ok(&["inspect", "-s", "-f", "{{.SizeRw}}", &id]) == "300000",
        "the 300 kB file in the writable layer",
    );
    let root_fs: u64 = b
        .ok(&["inspect", "--size", "-f", "{{.SizeRootFs}}", &id])
        .parse()
        .unwrap();
    assert!(root_fs > 300_000, "{root_fs}: the image's layers count too");
    assert_eq!(b.ok(&["inspect", "-f", "{{.SizeRw}}", &id]), "<no value>");
    let size = b.ok(&["ps", "-s", "--format", "{{.Size}}"]);
    assert!(size.starts_with("300kB (virtual "), "{size}");
    let table = b.ok(&["ps", "--size"]);
    assert!(table.lines().next().unwrap().ends_with("SIZE"), "{table}");
    b.ok(&["rm", "-f", &id]);
}

/// `exec --privileged` gets every capability, `exec --env-file` the file's variables.
#[test]
fn exec_privileged_and_env_file() {
    let b = Berth::new();
    let id = b.ok(&["run", "-d", "--network", "none", IMAGE, "sleep", "60"]);
    let cap_eff = |extra: &[&str]| {
        let mut args = vec!["exec"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[&id, "grep", "CapEff", "/proc/self/status"]);
        let line = b.ok(&args);
        u64::from_str_radix(line.split_whitespace().last().unwrap(), 16).unwrap()
    };
    let plain = cap_eff(&[]);
    let all = cap_eff(&["--privileged"]);
    // Every capability berth holds itself (a sandbox may withhold some from root).
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let bounding = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    assert_eq!(all, bounding, "every capability");
    let run_privileged = b.ok(&[
        "run",
        "--rm",
        "--privileged",
        "--network",
        "none",
        IMAGE,
        "grep",
        "CapEff",
        "/proc/self/status",
    ]);
    let eff = u64::from_str_radix(run_privileged.split_whitespace().last().unwrap(), 16);
    assert_eq!(eff.unwrap(), bounding, "run --privileged too");
    assert!(plain != all && plain & !all == 0, "{plain:x} is a subset");
    let file = b.root.path().join("exec.env");
    std::fs::write(&file, "A=1\n# a comment\nB=two words\n").unwrap();
    let env = b.ok(&[
        "exec",
        "--env-file",
        file.to_str().unwrap(),
        "-e",
        "B=flag wins",
        &id,
        "env",
    ]);
    let lines: Vec<&str> = env.lines().collect();
    assert!(
        lines.contains(&"A=1") && lines.contains(&"B=flag wins"),
        "{env}"
    );
    b.ok(&["rm", "-f", &id]);
}

/// The local driver's options: a tmpfs volume, and a volume that is a host directory
/// (whose files survive `volume rm`, which unmounts before deleting).
#[test]
fn volume_options_mount_tmpfs_and_host_directories() {
    let b = Berth::new();
    let tag = std::process::id();
    let (tv, bv) = (format!("tv{tag}"), format!("bv{tag}"));
    b.ok(&[
        "volume",
        "create",
        "--opt",
        "type=tmpfs",
        "--opt",
        "device=tmpfs",
        "-o",
        "o=size=2m,mode=1777",
        &tv,
    ]);
    let fs = b.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &format!("{tv}:/v"),
        IMAGE,
        "sh",
        "-c",
        "echo x > /v/f && grep ' /v ' /proc/mounts",
    ]);
    assert!(fs.contains("tmpfs") && fs.contains("size=2048k"), "{fs}");
    let opts =
        &serde_json::from_str::<Value>(&b.ok(&["volume", "inspect", &tv])).unwrap()[0]["Options"];
    assert_eq!(opts["type"], "tmpfs");
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("kept"), "host file").unwrap();
    let device = format!("device={}", host.path().display());
    b.ok(&[
        "volume",
        "create",
        "-o",
        "type=none",
        "-o",
        "o=bind",
        "-o",
        &device,
        &bv,
    ]);
    let seen = b.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &format!("{bv}:/v"),
        IMAGE,
        "sh",
        "-c",
        "cat /v/kept; echo new > /v/written",
    ]);
    assert_eq!(seen, "host file");
    assert_eq!(
        std::fs::read_to_string(host.path().join("written")).unwrap(),
        "new\n"
    );
    b.ok(&["volume", "rm", &tv, &bv]);
    assert!(
        host.path().join("kept").exists(),
        "volume rm deleted the host's files"
    );
    assert!(host.path().join("written").exists());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&format!("/volumes/{tv}/")),
        "tmpfs left mounted"
    );
    for bad in [&["-o", "colour=red"][..], &["-o", "type=tmpfs"]] {
        let mut args = vec!["volume", "create"];
        args.extend_from_slice(bad);
        args.push("badopts");
        let o = b.run(&args);
        assert!(!o.status.success(), "{bad:?}");
        assert!(stderr(&o).contains("option"), "{bad:?}: {}", stderr(&o));
    }
}

/// `network create -o`: the bridge's device name and an MTU that the bridge and every
/// container's interface get; bad values and IPv6 are refused, unknown options ignored.
#[test]
fn network_driver_options_name_the_bridge_and_set_the_mtu() {
    let b = Berth::new();
    let tag = std::process::id();
    let (net, bridge) = (format!("mtu{tag}"), format!("bt{tag}"));
    let out = b.run(&[
        "network",
        "create",
        "-o",
        &format!("com.docker.network.bridge.name={bridge}"),
        "--opt",
        "com.docker.network.driver.mtu=1400",
        "-o",
        "com.docker.network.bridge.enable_icc=true",
        &net,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("enable_icc"),
        "unknown option warned: {}",
        stderr(&out)
    );
    let sys = Path::new("/sys/class/net").join(&bridge);
    assert_eq!(
        std::fs::read_to_string(sys.join("mtu")).unwrap().trim(),
        "1400"
    );
    let mtu = b.ok(&[
        "run",
        "--rm",
        "--network",
        &net,
        IMAGE,
        "cat",
        "/sys/class/net/eth0/mtu",
    ]);
    assert_eq!(mtu, "1400");
    let inspect: Value = serde_json::from_str(&b.ok(&["network", "inspect", &net])).unwrap();
    let opts = &inspect[0]["Options"];
    assert_eq!(opts["com.docker.network.bridge.name"], bridge.as_str());
    assert_eq!(opts["com.docker.network.driver.mtu"], "1400");
    for (args, why) in [
        (
            vec![
                "-o",
                &format!("com.docker.network.bridge.name={bridge}")[..],
            ],
            "already in use",
        ),
        (vec!["-o", "com.docker.network.driver.mtu=9"], "invalid MTU"),
        (vec!["--ipv6"], "IPv6"),
    ] {
        let mut all = vec!["network", "create"];
        all.extend_from_slice(&args);
        all.push("refused");
        let o = b.run(&all);
        assert!(!o.status.success(), "{args:?}");
        assert!(stderr(&o).contains(why), "{args:?}: {}", stderr(&o));
    }
    b.ok(&["network", "rm", &net]);
    assert!(!sys.exists(), "the bridge went with the network");
}

/// `--filter` on the prune commands: `until` and `label`/`label!` take only what they
/// name, for containers, volumes, networks and images.
#[test]
fn prune_filters_take_only_what_they_name() {
    let b = Berth::new();
    let tag = std::process::id();
    let keep = b.ok(&[
        "create",
        "--network",
        "none",
        "--label",
        "keep=1",
        IMAGE,
        "true",
    ]);
    let gone = b.ok(&["create", "--network", "none", IMAGE, "true"]);
    b.ok(&["container", "prune", "-f", "--filter", "until=1h"]);
    assert!(
        b.run(&["inspect", &gone]).status.success(),
        "until=1h spared a new one"
    );
    b.ok(&["container", "prune", "-f", "--filter", "label!=keep"]);
    assert!(!b.run(&["inspect", &gone]).status.success());
    assert!(b.run(&["inspect", &keep]).status.success());
    let (v1, v2) = (format!("pv1{tag}"), format!("pv2{tag}"));
    b.ok(&["volume", "create", "--label", "tmp=yes", &v1]);
    b.ok(&["volume", "create", &v2]);
    b.ok(&["volume", "prune", "-a", "-f", "--filter", "label=tmp=yes"]);
    let vols = b.ok(&["volume", "ls", "-q"]);
    assert!(!vols.contains(&v1) && vols.contains(&v2), "{vols}");
    let o = b.run(&["volume", "prune", "-f", "--filter", "until=1h"]);
    assert!(
        !o.status.success() && stderr(&o).contains("invalid filter"),
        "{}",
        stderr(&o)
    );
    let (n1, n2) = (format!("pn1{tag}"), format!("pn2{tag}"));
    b.ok(&["network", "create", "--label", "tmp", &n1]);
    b.ok(&["network", "create", &n2]);
    b.ok(&["network", "prune", "-f", "--filter", "label=tmp"]);
    let nets = b.ok(&["network", "ls", "--format", "{{.Name}}"]);
    assert!(!nets.contains(&n1) && nets.contains(&n2), "{nets}");
    b.ok(&["network", "rm", &n2]);
    b.ok(&["commit", "--change", "LABEL tier=temp", &keep, "lbl:temp"]);
    b.ok(&["commit", &keep, "nolbl:x"]);
    b.ok(&["image", "prune", "-a", "-f", "--filter", "label=tier=temp"]);
    let images = b.ok(&["images", "--format", "{{.Repository}}"]);
    assert!(!images.lines().any(|l| l == "lbl"), "{images}");
    assert!(images.lines().any(|l| l == "nolbl"), "{images}");
    let o = b.run(&["system", "prune", "-f", "--volumes", "--filter", "until=1h"]);
    assert!(!o.status.success(), "until with --volumes is refused");
    b.ok(&["rm", &keep]);
}

#[test]
fn system_df_prune_info_and_version() {
    let b = Berth::new();
    let v: Value = serde_json::from_str(&b.ok(&["version", "--format", "json"])).unwrap();
    assert_eq!(v["Client"]["Version"], v["Server"]["Version"]);
    assert_eq!(b.ok(&["version", "-f", "{{.Client.ApiVersion}}"]), "1.41");
    // A running container with 1 MB in its writable layer and 500 kB in a volume, a
    // stopped one, an unused anonymous volume and an unused network.
    let running = b.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "-v",
        "used:/d",
        IMAGE,
        "sh",
        "-c",
        "head -c 1000000 /dev/zero > /big; head -c 500000 /dev/zero > /d/x; sleep 60",
    ]);
    wait_for(
        || b.ok(&["exec", &running, "ls", "/d"]).contains('x'),
        "the volume's file",
    );
    b.ok(&[
        "run",
        "--network",
        "none",
        "-v",
        "/anon",
        IMAGE,
        "sh",
        "-c",
        "echo hi > /anon/f",
    ]);
    let net = format!("tp{}", std::process::id());
    b.ok(&["network", "create", &net]);
    let info: Value = serde_json::from_str(&b.ok(&["info", "--format", "json"])).unwrap();
    assert_eq!(info["Containers"], 2);
    assert_eq!(info["ContainersRunning"], 1);
    assert_eq!(info["ContainersStopped"], 1);
    assert_eq!(info["Images"], 1);
    assert_eq!(b.ok(&["info", "-f", "{{.Driver}}"]), "overlay2");
    let df: Vec<Value> = b
        .ok(&["system", "df", "--format", "json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let row = |t: &str| df.iter().find(|r| r["Type"] == t).unwrap().clone();
    assert_eq!(
        (
            row("Images")["TotalCount"].clone(),
            row("Images")["Active"].clone()
        ),
        (json!(1), json!(1))
    );
    assert_eq!(row("Containers")["TotalCount"], 2);
    assert_eq!(row("Containers")["Active"], 1);
    assert_eq!(row("Containers")["Size"], "1MB");
    // used, /anon, and the image's VOLUME for each container; every one is linked to a
    // container, stopped or not (Docker's count).
    assert_eq!(row("Local Volumes")["TotalCount"], 4);
    assert_eq!(row("Local Volumes")["Active"], 4);
    assert_eq!(row("Local Volumes")["Size"], "500kB");
    let table = b.ok(&["system", "df"]);
    assert!(table.starts_with("TYPE"), "{table}");
    // Prune: the stopped container, the network and (with --volumes) the anonymous
    // volume go; the running container, its volume and its image stay.
    let out = b.ok(&["system", "prune", "-f", "--volumes"]);
    assert!(out.contains("Deleted Containers:"), "{out}");
    assert!(out.contains(&format!("Deleted Networks:\n{net}")), "{out}");
    assert!(out.contains("Deleted Volumes:"), "{out}");
    assert!(out.contains("Total reclaimed space:"), "{out}");
    assert_eq!(b.ok(&["ps", "-aq", "--no-trunc"]), running);
    // What the running container uses stays: `used` and its own VOLUME.
    let vols = b.ok(&["volume", "ls", "-q"]);
    assert_eq!(vols.lines().count(), 2, "{vols}");
    assert!(vols.lines().any(|v| v == "used"), "{vols}");
    assert_eq!(b.ok(&["images", "-q"]).lines().count(), 1);
    // Without -f it asks, and "n" keeps everything.
    let mut c = b.cmd();
    c.args(["system", "prune", "-a"])
        .stdin(std::process::Stdio::piped());
    let mut child = c
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"n\n").unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("Are you sure"));
    b.ok(&["rm", "-f", &running]);
}

#[test]
fn attach_picks_streams_and_sig_proxy_false_keeps_signals_away() {
    let b = Berth::new();
    let o = b.run(&[
        "run",
        "--name",
        "att",
        "--network",
        "none",
        "-a",
        "STDERR",
        IMAGE,
        "sh",
        "-c",
        "echo out; echo err >&2",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!((stdout(&o).as_str(), stderr(&o).as_str()), ("", "err\n"));
    // What was not attached is still logged.
    assert_eq!(b.ok(&["logs", "att"]), "out");
    for bad in [&["-d", "-a", "stdout"][..], &["-a", "stdbogus"]] {
        assert_refused(&b, bad);
    }
    // --sig-proxy=false: a SIGTERM to berth neither stops the container nor berth.
    let child = b
        .cmd()
        .args([
            "run",
            "--rm",
            "--network",
            "none",
            "--sig-proxy=false",
            "--name",
            "sp",
            IMAGE,
        ])
        .args(["sh", "-c", "sleep 2; echo done"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(|| b.status_of("sp") == Some("running".into()), "sp running");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "done\n");
}

#[test]
fn health_start_interval_probes_often_during_the_start_period() {
    let b = Berth::new();
    // With an hour between checks, only the start interval can make it healthy soon.
    let id = b.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--health-cmd",
        "true",
        "--health-interval",
        "1h",
        "--health-start-period",
        "60s",
        "--health-start-interval",
        "200ms",
        IMAGE,
        "sleep",
        "60",
    ]);
    wait_for(
        || b.inspect(&id)["State"]["Health"]["Status"] == "healthy",
        "healthy within the start period",
    );
    let hc = &b.inspect(&id)["Config"]["Healthcheck"];
    assert_eq!(hc["StartInterval"], 200_000_000u64);
    b.ok(&["rm", "-f", &id]);
}

/// A child process killed (SIGTERM) and reaped when dropped, even by a failing test.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.0.wait();
    }
}

#[test]
fn events_follow_and_filter_what_changed() {
    let b = Berth::new();
    let out = tempfile::NamedTempFile::new().unwrap();
    let follower = Killed(
        b.cmd()
            .args(["events", "--format", "json", "--filter", "type=container"])
            .stdout(out.reopen().unwrap())
            .spawn()
            .unwrap(),
    );
    // The follower starts from the end: nothing recorded before it shows.
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..2 {
        let o = b.run(&[
            "run",
            "--rm",
            "--network",
            "none",
            "--name",
            "ev1",
            "--label",
            "team=a",
            IMAGE,
            "sh",
            "-c",
            "exit 3",
        ]);
        assert_eq!(code(&o), 3, "{}", stderr(&o));
    }
    b.ok(&["volume", "create", "evvol"]);
    let id = b.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "ev2",
        IMAGE,
        "sleep",
        "30",
    ]);
    b.ok(&["kill", &id]);
    b.ok(&["wait", &id]);
    std::thread::sleep(Duration::from_millis(400));
    drop(follower);
    let text = std::fs::read_to_string(out.path()).unwrap();
    let evs: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let seq = |name: &str| -> Vec<String> {
        evs.iter()
            .filter(|e| e["Actor"]["Attributes"]["name"] == name)
            .map(|e| e["Action"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        seq("ev1"),
        ["create", "start", "die", "destroy", "create", "start", "die", "destroy"]
    );
    assert!(
        evs.iter().all(|e| e["Type"] == "container"),
        "type filter: {text}"
    );
    let die = evs.iter().find(|e| e["Action"] == "die").unwrap();
    assert_eq!(die["Actor"]["Attributes"]["exitCode"], "3");
    assert_eq!(die["Actor"]["Attributes"]["team"], "a");
    assert_eq!(die["status"], "die");
    assert_eq!(die["from"], IMAGE);
    let kill = evs.iter().find(|e| e["Action"] == "kill").unwrap();
    assert_eq!(kill["Actor"]["Attributes"]["signal"], "9");
    assert_eq!(seq("ev2"), ["create", "start", "kill", "die"]);
    // The past, bounded by --until, with filters on event and volume.
    let past = b.ok(&[
        "events",
        "--since",
        "5m",
        "--until",
        "0s",
        "--filter",
        "event=die",
        "--format",
        "{{.Actor.Attributes.name}}",
    ]);
    assert_eq!(past, "ev1\nev1\nev2");
    let vols = b.ok(&[
        "events",
        "--since",
        "5m",
        "--until",
        "0s",
        "--filter",
        "volume=evvol",
    ]);
    assert!(vols.contains("volume create evvol"), "{vols}");
    let o = b.run(&["events", "--filter", "colour=red", "--until", "0s"]);
    assert_ne!(code(&o), 0);
}

/// A foreground `run --rm` removes its container with the record it wrote at launch, but
/// under the name it has then: renamed while it ran, it dies and goes under the new one;
/// removed meanwhile by `rm -f`, its death and removal are announced once.
#[test]
fn run_rm_renamed_while_running_dies_under_its_new_name() {
    let b = Berth::new();
    // A foreground `run --rm` of `sleep secs`, once its container runs.
    let running = |name: &str, secs: &str| {
        let fg = b
            .cmd()
            .args(["run", "--rm", "--network", "none", "--name", name])
            .args([IMAGE, "sleep", secs])
            .spawn()
            .unwrap();
        wait_for(
            || b.status_of(name).as_deref() == Some("running"),
            "the container running",
        );
        fg
    };
    let names = |event: &str| {
        let filter = format!("event={event}");
        let args = ["events", "--since", "5m", "--until", "0s", "--filter"];
        let format = [
            "--filter",
            "type=container",
            "--format",
            "{{.Type}} {{.Actor.Attributes.name}}",
        ];
        b.ok(&[&args[..], &[filter.as_str()], &format[..]].concat())
    };
    let mut fg = running("before", "2");
    b.ok(&["rename", "before", "after"]);
    assert!(fg.wait().unwrap().success());
    assert_eq!(b.ok(&["ps", "-aq"]), "");
    assert_eq!(names("die"), "container after");
    assert_eq!(names("destroy"), "container after");

    let mut fg = running("gone", "30");
    b.ok(&["rm", "-f", "gone"]);
    let _ = fg.wait().unwrap();
    assert_eq!(names("die"), "container after\ncontainer gone");
    assert_eq!(names("destroy"), "container after\ncontainer gone");
}

/// `berth inspect` finds any kind of object as Docker's does (container, image, volume,
/// network, or the `--type` named); `container inspect` only containers.
#[test]
fn inspect_finds_images_volumes_and_networks_too() {
    let b = Berth::new();
    b.ok(&[
        "create",
        "--name",
        "box",
        "--network",
        "none",
        IMAGE,
        "true",
    ]);
    b.ok(&["volume", "create", "vol"]);
    b.ok(&["network", "create", "netw"]);
    let image_id = b.ok(&["image", "inspect", "-f", "{{.Id}}", IMAGE]);
    assert_eq!(b.ok(&["inspect", "-f", "{{.Id}}", IMAGE]), image_id);
    assert_eq!(b.ok(&["inspect", "-f", "{{.Name}}", "box"]), "/box");
    assert!(b
        .ok(&["inspect", "-f", "{{.Mountpoint}}", "vol"])
        .ends_with("/vol/_data"));
    assert_eq!(b.ok(&["inspect", "-f", "{{.Driver}}", "netw"]), "bridge");
    let both = b.ok(&["inspect", "-f", "{{.Name}}", "box", "vol"]);
    assert_eq!(both, "/box\nvol");
    let o = b.run(&["inspect", "nothing-here"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("No such object: nothing-here"),
        "{}",
        stderr(&o)
    );
    let o = b.run(&["inspect", "--type", "volume", IMAGE]);
    assert!(stderr(&o).contains("No such volume"), "{}", stderr(&o));
    let o = b.run(&["container", "inspect", IMAGE]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "container inspect looks at containers only"
    );
    let o = b.run(&["inspect", "--type", "thing", "box"]);
    assert!(
        stderr(&o).contains("not a valid value for --type"),
        "{}",
        stderr(&o)
    );
}

/// `network create --ip-range`: containers get addresses from the range only, a static
/// `--ip` may be elsewhere in the subnet, and inspect shows the range.
#[test]
fn ip_range_bounds_the_addresses_handed_out() {
    let b = Berth::new();
    let net = format!("tr{}", std::process::id());
    let third = std::process::id() % 250;
    let subnet = format!("10.201.{third}.0/24");
    let range = format!("10.201.{third}.240/29");
    let o = b.run(&["network", "create", "--ip-range", &range, "lonely"]);
    assert!(stderr(&o).contains("requires a subnet"), "{}", stderr(&o));
    let o = b.run(&[
        "network",
        "create",
        "--subnet",
        &subnet,
        "--ip-range",
        "10.9.9.0/29",
        "off",
    ]);
    assert!(stderr(&o).contains("no matching subnet"), "{}", stderr(&o));
    b.ok(&[
        "network",
        "create",
        "--subnet",
        &subnet,
        "--ip-range",
        &range,
        &net,
    ]);
    let config = b.ok(&["network", "inspect", "-f", "{{json .IPAM.Config}}", &net]);
    let config: Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config[0]["IPRange"], range.as_str());
    let in_range = |ip: &str| {
        let last: u32 = ip.rsplit('.').next().unwrap().parse().unwrap();
        ip.starts_with(&format!("10.201.{third}.")) && (240..=247).contains(&last)
    };
    for name in ["r1", "r2", "r3"] {
        b.ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            &net,
            IMAGE,
            "sleep",
            "60",
        ]);
        let ip = b.inspect(name)["NetworkSettings"]["Networks"][&net]["IPAddress"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(in_range(&ip), "{name}: {ip} is outside {range}");
    }
    let fixed = format!("10.201.{third}.9");
    b.ok(&[
        "run",
        "-d",
        "--name",
        "r4",
        "--network",
        &net,
        "--ip",
        &fixed,
        IMAGE,
        "sleep",
        "60",
    ]);
    let ip = b.inspect("r4")["NetworkSettings"]["Networks"][&net]["IPAddress"].clone();
    assert_eq!(ip, fixed.as_str());
}

/// Types `keys` into `command` run on a terminal (util-linux `script`), a step at a time;
/// returns what the terminal showed.
fn typed_on_terminal(command: &str, steps: &[&[u8]]) -> String {
    let mut script = berth_tests::in_terminal(command, std::process::Stdio::piped());
    let mut input = script.stdin.take().unwrap();
    for step in steps {
        std::thread::sleep(Duration::from_millis(700));
        std::io::Write::write_all(&mut input, step).unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    drop(input);
    let out = script.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `run -it` runs under the container's monitor with the CLI attached, as Docker's: the
/// detach keys leave it running, `attach` gets the pty master and gives it its own
/// terminal's size, the exit code comes back, and `--rm` takes it away on `stop`.
#[test]
fn run_it_detaches_and_attach_takes_the_window_size() {
    let b = Berth::new();
    let berth = format!(
        "{} --root {}",
        berth_tests::bin_dir().join("berth").display(),
        b.root.path().display()
    );
    let shown = typed_on_terminal(
        &format!("{berth} run -it --name det --network none {IMAGE} sh; echo rc=$?"),
        &[b"echo ty''ped\n", b"\x10\x11"],
    );
    assert!(
        shown.contains("typed") && shown.contains("rc=0"),
        "{shown:?}"
    );
    assert_eq!(b.status("det"), "running");
    let shown = typed_on_terminal(
        &format!("stty cols 77 rows 22; {berth} attach det; echo rc=$?"),
        &[b"stty size\n", b"exit 5\n"],
    );
    assert!(
        shown.contains("22 77") && shown.contains("rc=5"),
        "{shown:?}"
    );
    assert_eq!(b.inspect("det")["State"]["ExitCode"], 5);
    // Other keys; `--rm` then removes it when stopped (and stop says so, exit 0).
    let shown = typed_on_terminal(
        &format!(
            "{berth} run --rm -it --detach-keys ctrl-x,y --name gone --network none {IMAGE} sh; echo rc=$?"
        ),
        &[b"\x18y"],
    );
    assert!(shown.contains("rc=0"), "{shown:?}");
    assert_eq!(b.status("gone"), "running");
    assert_eq!(b.ok(&["stop", "-t", "1", "gone"]), "gone");
    assert_eq!(b.status_of("gone"), None, "--rm removed it");
    // A pipe instead of a terminal: the input still arrives and the exit code returns.
    let mut child = b
        .cmd()
        .args(["run", "--rm", "-i", "-t", "--network", "none", IMAGE, "sh"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut input, b"echo pi''ped; exit 7\n").unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(7));
    assert!(stdout(&out).contains("piped"), "{}", stdout(&out));
    let o = b.run(&["run", "-it", "--detach-keys", "ctrl-", IMAGE, "true"]);
    assert_eq!(code(&o), 125);
    assert!(stderr(&o).contains("Invalid detach keys"), "{}", stderr(&o));
}

/// `start -ai` of a tty container is attached through its monitor too: the detach keys
/// leave it running, and `start -ai` of the running container attaches to it.
#[test]
fn start_ai_of_a_tty_container_detaches_and_reattaches() {
    let b = Berth::new();
    let berth = format!(
        "{} --root {}",
        berth_tests::bin_dir().join("berth").display(),
        b.root.path().display()
    );
    b.ok(&[
        "create",
        "-it",
        "--name",
        "sai",
        "--network",
        "none",
        IMAGE,
        "sh",
    ]);
    let shown = typed_on_terminal(
        &format!("{berth} start -ai sai; echo rc=$?"),
        &[b"echo in''side\n", b"\x10\x11"],
    );
    assert!(
        shown.contains("inside") && shown.contains("rc=0"),
        "{shown:?}"
    );
    assert_eq!(b.status("sai"), "running");
    let shown = typed_on_terminal(
        &format!("{berth} start -ai sai; echo rc=$?"),
        &[b"exit 4\n"],
    );
    assert!(shown.contains("rc=4"), "{shown:?}");
    assert_eq!(b.status("sai"), "exited");
}

/// Flags berth takes for Docker's sake: its one runtime (also by Docker's default name),
/// the local volume driver, content trust, and the deprecated kernel memory limit
/// (ignored with Docker's warning); other runtimes and drivers, and storage options
/// (no project quotas under berth's upper dirs), are refused.
#[test]
fn docker_compat_flags_are_taken_or_refused_plainly() {
    let b = Berth::new();
    let o = b.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--runtime",
        "runc",
        "--volume-driver",
        "local",
        "--disable-content-trust",
        "--kernel-memory",
        "10m",
        IMAGE,
        "echo",
        "ran",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "ran");
    assert!(
        stderr(&o).contains("kernel memory limit is deprecated"),
        "{}",
        stderr(&o)
    );
    assert_refused_saying(
        &b,
        &["--runtime", "crun"],
        "unknown or invalid runtime name",
    );
    assert_refused_saying(&b, &["--volume-driver", "nfs"], "not supported");
    assert_refused_saying(
        &b,
        &["--storage-opt", "size=1G"],
        "--storage-opt is supported only for overlay over xfs with 'pquota' mount option",
    );
}

/// Everything after the image is the command's, even words that look like run's own flags:
/// `-d` right after the image went to `--detach` and the container ran in the background.
#[test]
fn args_after_the_image_belong_to_the_command() {
    let b = Berth::new();
    let out = b.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "ls",
        IMAGE,
        "-d",
        "/",
    ]);
    assert_eq!(out, "/");
    let id = b.ok(&["create", "--network", "none", IMAGE, "-t", "x"]);
    let args = b.ok(&["inspect", "-f", "{{.Path}} {{json .Args}}", &id]);
    assert_eq!(args, r#"-t ["x"]"#);
}

/// `--read-only` covers the engine's /etc/hosts, /etc/hostname and /etc/resolv.conf
/// binds too, as Docker's: they were left writable.
#[test]
fn read_only_root_makes_the_network_files_read_only() {
    let b = Berth::new();
    let script = "for f in hosts hostname resolv.conf; do \
                  grep \" /etc/$f \" /proc/self/mountinfo | cut -d' ' -f6 | cut -d, -f1; done";
    let ro = b.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--read-only",
        IMAGE,
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(ro, "ro\nro\nro");
    let rw = b.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        IMAGE,
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(rw, "rw\nrw\nrw");
}

/// On the host's network a container is named after the host and starts from the host's
/// /etc/hosts (without `--add-host` lines), as Docker's: it got its id and berth's own file.
#[test]
fn host_network_takes_the_hosts_name_and_hosts_file() {
    let b = Berth::new();
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    let host_hosts = std::fs::read_to_string("/etc/hosts").unwrap();
    let script = "hostname; echo $HOSTNAME; cat /etc/hostname; cat /etc/hosts";
    let out = b.ok(&[
        "run",
        "--rm",
        "--network",
        "host",
        IMAGE,
        "sh",
        "-c",
        script,
    ]);
    let expected = format!("{host}\n{host}\n{host}\n{}", host_hosts.trim_end());
    assert_eq!(out, expected);
    // An --add-host gets the standard file, where it can override the host's names.
    let out = b.ok(&[
        "run",
        "--rm",
        "--network",
        "host",
        "--add-host",
        "extra.test:10.1.2.3",
        IMAGE,
        "cat",
        "/etc/hosts",
    ]);
    assert!(out.starts_with("127.0.0.1\tlocalhost\n::1\t"), "{out}");
    assert!(out.ends_with("\n10.1.2.3\textra.test"), "{out}");
}

/// A sysctl outside the container's own namespaces would be the host's: Docker's client
/// refuses other keys (exit 125), and a `net.` key on the host's network is refused
/// rather than written to the host, as runc refuses it.
#[test]
fn sysctls_of_the_hosts_namespaces_are_refused() {
    let b = Berth::new();
    assert_refused_saying(
        &b,
        &["--network", "none", "--sysctl", "kernel.foo=1"],
        "sysctl 'kernel.foo=1' is not allowed",
    );
    let key = "/proc/sys/net/ipv4/conf/lo/accept_local";
    let before = std::fs::read_to_string(key).unwrap();
    let flip = if before.trim() == "0" { "1" } else { "0" };
    let sysctl = format!("net.ipv4.conf.lo.accept_local={flip}");
    assert_refused_saying(
        &b,
        &["--network", "host", "--sysctl", &sysctl],
        "not allowed in host network namespace",
    );
    assert_eq!(
        std::fs::read_to_string(key).unwrap(),
        before,
        "the host's sysctl changed"
    );
}

/// Refusals in Docker's words: an unknown capability names its list, an unknown
/// `--group-add` group says "Unable", a relative working directory is refused at create.
#[test]
fn refusals_say_what_docker_says() {
    let b = Berth::new();
    let refused = |args: &[&str], cmd: &str, msg: &str| {
        let mut full = vec![cmd, "--network", "none"];
        full.extend_from_slice(args);
        full.extend([IMAGE, "true"]);
        let o = b.run(&full);
        assert_ne!(code(&o), 0, "{args:?} was accepted");
        assert!(stderr(&o).contains(msg), "{args:?}: {}", stderr(&o));
    };
    refused(
        &["--cap-add", "FOO"],
        "run",
        r#"invalid CapAdd: unknown capability: "CAP_FOO""#,
    );
    refused(
        &["--cap-drop", "BAR"],
        "run",
        r#"invalid CapDrop: unknown capability: "CAP_BAR""#,
    );
    let msg = "Unable to find group nogrp: no matching entries in group file";
    refused(&["--group-add", "nogrp"], "run", msg);
    let msg = "the working directory 'rel' is invalid, it needs to be an absolute path";
    refused(&["-w", "rel"], "create", msg);
    let env = b.root.path().join("env");
    std::fs::write(&env, "A=1\nB = 2\n").unwrap();
    let msg = format!(
        "invalid env file ({}): variable 'B ' contains whitespaces",
        env.display()
    );
    refused(&["--env-file", env.to_str().unwrap()], "run", &msg);
}
