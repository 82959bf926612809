//! Shared fixtures: "containers" are busybox processes in their own network namespace.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use berth_net::{Attach, Net, NetworkOptions};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A name unique to this test process and call.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}x{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// A process in a fresh network namespace, killed on drop.
pub struct Sandbox {
    child: Child,
    pub id: String,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let child = Command::new("unshare")
            .args(["--net", "busybox", "sleep", "1000"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let s = Sandbox {
            child,
            id: unique("c"),
        };
        // unshare execs busybox once the namespace exists.
        let deadline = Instant::now() + Duration::from_secs(5);
        let me = std::fs::read_link("/proc/self/ns/net").unwrap();
        while std::fs::read_link(s.netns()).ok().as_ref() == Some(&me)
            || std::fs::read_link(format!("/proc/{}/exe", s.pid()))
                .map(|p| !p.to_string_lossy().contains("busybox"))
                .unwrap_or(true)
        {
            assert!(Instant::now() < deadline, "sandbox did not start");
            std::thread::sleep(Duration::from_millis(2));
        }
        s
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn netns(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.pid()))
    }

    /// Runs a command inside the sandbox's network namespace.
    pub fn sh(&self, script: &str) -> Output {
        Command::new("nsenter")
            .arg(format!("--net={}", self.netns().display()))
            .args(["busybox", "sh", "-c", script])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    pub fn sh_ok(&self, script: &str) -> String {
        let o = self.sh(script);
        assert!(
            o.status.success(),
            "{script}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Starts a background busybox httpd on port 80 serving `body` as index.html.
    pub fn serve(&self, dir: &Path, body: &str) -> Proc {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("index.html"), body).unwrap();
        let c = Command::new("nsenter")
            .arg(format!("--net={}", self.netns().display()))
            .args(["busybox", "httpd", "-f", "-p", "80", "-h"])
            .arg(dir)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let c = Proc(c);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self
            .sh("busybox netstat -ltn | grep -q ':80 '")
            .status
            .success()
        {
            assert!(Instant::now() < deadline, "httpd did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        c
    }

    pub fn attach(&self, network: &str) -> Attach {
        Attach {
            container_id: self.id.clone(),
            name: format!("n{}", self.id),
            network: network.to_string(),
            netns: self.netns(),
            hostname: self.id.chars().take(12).collect(),
            ..Default::default()
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A berth root in a temp dir with networks removed on drop.
pub struct Root {
    pub dir: tempfile::TempDir,
    pub net: Net,
    pub networks: Vec<String>,
}

impl Root {
    pub fn new() -> Root {
        let dir = tempfile::tempdir().unwrap();
        let net = Net::open(dir.path()).unwrap();
        Root {
            dir,
            net,
            networks: Vec::new(),
        }
    }

    /// Creates a user network with a unique name.
    pub fn network(&mut self, opts: &NetworkOptions) -> berth_net::Network {
        let name = unique("t");
        let n = self.net.create(&name, opts).unwrap();
        self.networks.push(name);
        n
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let ids: Vec<String> = self
            .net
            .list()
            .map(|l| {
                l.into_iter()
                    .flat_map(|n| n.containers.into_keys())
                    .collect()
            })
            .unwrap_or_default();
        for c in ids {
            let _ = self.net.release(&c);
        }
        for n in &self.networks {
            let _ = self.net.remove(n);
        }
    }
}

/// A child process killed and reaped on drop (also when a test fails half-way).
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Kills and reaps a child.
pub fn stop(c: Proc) {
    drop(c);
}

pub fn run(cmd: &str, args: &[&str]) -> String {
    let o = Command::new(cmd).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Whether a host link exists.
pub fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// The host's primary IPv4 address (source of its default route).
pub fn host_ip() -> String {
    let out = run("ip", &["-4", "-o", "route", "get", "1.0.0.1"]);
    let words: Vec<&str> = out.split_whitespace().collect();
    let i = words.iter().position(|w| *w == "src").unwrap();
    words[i + 1].to_string()
}

/// iptables rules carrying a marker that starts with `prefix`.
pub fn rules_with(prefix: &str) -> usize {
    berth_net::iptables::count_marked(prefix).unwrap()
}

/// Fetches a URL from the host (with retries for servers still starting).
pub fn wget(url: &str) -> String {
    let o = Command::new("timeout")
        .args(["5", "busybox", "wget", "-qO-", url])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "wget {url}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}
