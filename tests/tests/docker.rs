//! berth and Docker exchanging images both ways, against a real dockerd (Debian's
//! docker.io) that each test starts with private data and exec roots, no bridge and no
//! iptables rules, so the host's own Docker (if any) is untouched.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use berth_tests::{bin_dir, output, stderr, stdout, wait_for, Dockerd};

struct Berth {
    root: tempfile::TempDir,
}

impl Berth {
    fn new() -> Berth {
        Berth {
            root: tempfile::tempdir().unwrap(),
        }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(bin_dir().join("berth"));
        c.arg("--root").arg(self.root.path());
        c
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = output(self.cmd().args(args));
        assert!(out.status.success(), "berth {args:?}: {}", stderr(&out));
        stdout(&out)
    }
}

/// A one-layer busybox image in berth's store, saying `msg` when run.
fn berth_image(berth: &Berth, name: &str, msg: &str) {
    let work = tempfile::tempdir().unwrap();
    let tar = berth_tests::busybox_rootfs_tar(work.path(), "fs.tar");
    let change = format!(r#"CMD ["echo", "{msg}"]"#);
    berth.ok(&["import", "-c", &change, tar.to_str().unwrap(), name]);
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn docker_loads_what_berth_saves_and_berth_loads_what_docker_saves() {
    let dockerd = Dockerd::start();
    let berth = Berth::new();
    berth_image(&berth, "demo/img:1", "hi from berth");
    let dir = tempfile::tempdir().unwrap();
    let saved: PathBuf = dir.path().join("berth.tar");
    berth.ok(&["save", "-o", path_str(&saved), "demo/img:1"]);

    assert!(dockerd
        .ok(&["load", "-i", path_str(&saved)])
        .contains("demo/img:1"));
    assert_eq!(
        dockerd.ok(&["run", "--rm", "--network", "none", "demo/img:1"]),
        "hi from berth\n"
    );
    // Same image id on both sides: the config blob travelled byte for byte.
    let docker_id = dockerd.ok(&["image", "inspect", "-f", "{{.Id}}", "demo/img:1"]);
    let inspect: serde_json::Value =
        serde_json::from_str(&berth.ok(&["image", "inspect", "demo/img:1"])).unwrap();
    assert_eq!(docker_id.trim(), inspect[0]["Id"].as_str().unwrap());

    // And back: what Docker saves (its own manifest.json layout), berth loads and runs.
    dockerd.ok(&["tag", "demo/img:1", "demo/img:from-docker"]);
    let from_docker = dir.path().join("docker.tar");
    dockerd.ok(&["save", "-o", path_str(&from_docker), "demo/img:from-docker"]);
    let fresh = Berth::new();
    fresh.ok(&["load", "-i", path_str(&from_docker)]);
    assert_eq!(
        fresh.ok(&["run", "--rm", "--network", "none", "demo/img:from-docker"]),
        "hi from berth\n"
    );
}

#[test]
fn docker_pushes_to_and_pulls_from_berth_registry() {
    let dockerd = Dockerd::start();
    let storage = tempfile::tempdir().unwrap();
    let port = berth_tests::free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut server = Command::new(bin_dir().join("berth"))
        .args(["registry", "serve", "--addr", &addr, "--storage"])
        .arg(storage.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(
        || std::net::TcpStream::connect(&addr).is_ok(),
        "registry listening",
    );

    // Docker treats 127.0.0.0/8 as an insecure registry: plain http, no flags needed.
    let berth = Berth::new();
    berth_image(&berth, "demo/img:1", "pushed by docker");
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("img.tar");
    berth.ok(&["save", "-o", path_str(&saved), "demo/img:1"]);
    dockerd.ok(&["load", "-i", path_str(&saved)]);
    let remote = format!("{addr}/team/img:1");
    dockerd.ok(&["tag", "demo/img:1", &remote]);
    let pushed = dockerd.ok(&["push", &remote]);
    let digest = pushed
        .split_whitespace()
        .find(|w| w.starts_with("sha256:"))
        .unwrap_or_else(|| panic!("no digest in {pushed}"))
        .to_string();

    // Docker pulls it back into an empty cache and runs it.
    dockerd.ok(&["rmi", &remote, "demo/img:1"]);
    dockerd.ok(&["pull", &remote]);
    assert_eq!(
        dockerd.ok(&["run", "--rm", "--network", "none", &remote]),
        "pushed by docker\n"
    );
    // berth pulls what Docker pushed: the same manifest digest.
    let fresh = Berth::new();
    let pulled = fresh.ok(&["pull", &remote]);
    assert!(pulled.contains(&format!("Digest: {digest}")), "{pulled}");

    let _ = server.kill();
    let _ = server.wait();
}
