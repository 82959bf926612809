//! containerd drives berth-runc: a real containerd (Debian's) with a temporary root and
//! socket imports a busybox image and runs it through `ctr ... --runc-binary berth-runc`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use berth_tests::*;

struct Containerd {
    child: Child,
    dir: tempfile::TempDir,
}

impl Containerd {
    fn start() -> Containerd {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let config = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n",
            root = d.join("root").display(),
            state = d.join("state").display(),
            sock = d.join("c.sock").display()
        );
        std::fs::write(d.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(d.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("containerd (Debian package containerd) is required");
        let c = Containerd { child, dir };
        wait_for(
            || c.sock().exists() && c.ctr(&["version"]).status.success(),
            "containerd to listen",
        );
        c
    }

    fn sock(&self) -> PathBuf {
        self.dir.path().join("c.sock")
    }

    fn ctr(&self, args: &[&str]) -> std::process::Output {
        output(
            Command::new("ctr")
                .arg("--address")
                .arg(self.sock())
                .args(["--namespace", "berthtest"])
                .args(args),
        )
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Shims outlive containerd; stop the ones serving our socket's namespace.
        let _ = Command::new("pkill")
            .args([
                "-f",
                &format!("containerd-shim.*-address {}", self.sock().display()),
            ])
            .status();
        let _ = Command::new("umount")
            .arg("-R")
            .arg(self.dir.path())
            .status();
    }
}

fn runc_path() -> String {
    berth_runc().to_string_lossy().into_owned()
}

#[test]
fn ctr_runs_exec_and_kills_through_berth_runc() {
    let c = Containerd::start();
    let archive = c.dir.path().join("busybox.tar");
    busybox_oci_archive(&archive, "docker.io/library/berthbox:latest", &["sh"]);
    let out = c.ctr(&["images", "import", archive.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "import: {}{}",
        stderr(&out),
        stdout(&out)
    );
    let image = "docker.io/library/berthbox:latest";
    let runc = runc_path();
    // Unique ids: an aborted earlier run may have left its shim's runtime state behind.
    let tag = std::process::id();
    let (c1, c0, c2) = (
        format!("c1-{tag}"),
        format!("c0-{tag}"),
        format!("c2-{tag}"),
    );

    // Foreground run with output checked and --rm.
    let out = c.ctr(&[
        "run",
        "--rm",
        "--runc-binary",
        &runc,
        image,
        &c1,
        "sh",
        "-c",
        "echo hello-from-ctr; echo $$",
    ]);
    assert!(out.status.success(), "run: {}\n{}", stderr(&out), c.log());
    assert_eq!(stdout(&out), "hello-from-ctr\n1\n");

    // Exit codes come through the shim.
    let out = c.ctr(&[
        "run",
        "--rm",
        "--runc-binary",
        &runc,
        image,
        &c0,
        "sh",
        "-c",
        "exit 5",
    ]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));

    // Detached task, exec into it, kill it.
    let out = c.ctr(&[
        "run",
        "-d",
        "--runc-binary",
        &runc,
        image,
        &c2,
        "sleep",
        "300",
    ]);
    assert!(
        out.status.success(),
        "run -d: {}\n{}",
        stderr(&out),
        c.log()
    );
    let out = c.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        &c2,
        "sh",
        "-c",
        "echo in-exec; tr '\\0' ' ' < /proc/1/cmdline",
    ]);
    assert!(out.status.success(), "exec: {}", stderr(&out));
    assert!(
        stdout(&out).starts_with("in-exec\nsleep 300 "),
        "{}",
        stdout(&out)
    );
    let tasks = stdout(&c.ctr(&["task", "ls"]));
    assert!(
        tasks
            .lines()
            .any(|l| l.starts_with(c2.as_str()) && l.contains("RUNNING")),
        "{tasks}"
    );
    let out = c.ctr(&["task", "kill", "-s", "SIGKILL", &c2]);
    assert!(out.status.success(), "kill: {}", stderr(&out));
    wait_for(
        || {
            stdout(&c.ctr(&["task", "ls"]))
                .lines()
                .any(|l| l.starts_with(c2.as_str()) && l.contains("STOPPED"))
        },
        "c2 to stop",
    );
    assert!(c.ctr(&["task", "rm", &c2]).status.success());
    assert!(c.ctr(&["container", "rm", &c2]).status.success());
    // The shim's berth-runc root and the task's cgroup are gone.
    assert!(!Path::new("/run/containerd/runc/berthtest")
        .join(&c2)
        .exists());
    let cg = format!("berthtest/{c2}");
    assert!(
        cgroup_leftovers(&cg).is_empty(),
        "{:?}",
        cgroup_leftovers(&cg)
    );
}
