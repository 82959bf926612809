//! The worked example (examples/shortener) end to end in a private `--root`: the base image
//! made by scripts/shortener.sh from busybox-static, `compose up --build --wait` on a free
//! host port, a short URL created and followed (302 to the original), the worker counting
//! the visit through the data role, health gating, `up` twice changing nothing, and
//! `down -v` leaving nothing behind.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use berth_tests::{bin_dir, output, stderr, stdout};
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A berth root with the example's project; `down -v` on drop, so a failing test leaves
/// no containers, network or volume behind.
struct Example {
    root: tempfile::TempDir,
    name: String,
    port: u16,
}

impl Example {
    fn new() -> Example {
        Example {
            root: tempfile::tempdir().unwrap(),
            name: format!("short{}", std::process::id()),
            port: berth_tests::free_port(),
        }
    }

    fn berth(&self, args: &[&str]) -> Output {
        let mut c = Command::new(bin_dir().join("berth"));
        c.arg("--root").arg(self.root.path()).current_dir(repo());
        c.env("SHORTENER_PORT", self.port.to_string())
            .env("SHORTENER_WARMUP", "1")
            .env_remove("COMPOSE_PROJECT_NAME")
            .env_remove("COMPOSE_FILE")
            .env_remove("COMPOSE_PROFILES");
        output(c.args(args))
    }

    fn compose(&self, args: &[&str]) -> String {
        let file = repo().join("examples/shortener/compose.yaml");
        let mut full = vec!["compose", "-f", file.to_str().unwrap(), "-p", &self.name];
        full.extend_from_slice(args);
        let o = self.berth(&full);
        assert!(
            o.status.success(),
            "compose {args:?} failed: {}{}",
            stdout(&o),
            stderr(&o)
        );
        stdout(&o)
    }

    fn inspect(&self, name: &str) -> Value {
        let o = self.berth(&["inspect", name]);
        assert!(o.status.success(), "inspect {name}: {}", stderr(&o));
        let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
        v[0].clone()
    }

    fn container(&self, service: &str) -> String {
        format!("{}-{service}-1", self.name)
    }

    fn ids(&self) -> Vec<String> {
        ["data", "web", "worker"]
            .iter()
            .map(|s| {
                self.inspect(&self.container(s))["Id"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    }

    /// One HTTP/1.0 request to the web role's published port: (status line, headers, body).
    fn http(&self, method: &str, path: &str) -> (String, String, String) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\n\r\n",
            self.port
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
        (status.to_string(), headers.to_string(), body.to_string())
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let file = repo().join("examples/shortener/compose.yaml");
        let _ = self.berth(&[
            "compose",
            "-f",
            file.to_str().unwrap(),
            "-p",
            &self.name,
            "down",
            "-v",
            "-t",
            "0",
        ]);
    }
}

fn header<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    headers.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Seconds since the epoch of an RFC 3339 UTC stamp, enough to compare two stamps of the
/// same day (the test runs well inside one).
fn day_secs(stamp: &str) -> f64 {
    let time = stamp.trim_end_matches('Z').split_once('T').unwrap().1;
    let t: Vec<f64> = time.split(':').map(|x| x.parse().unwrap()).collect();
    t[0] * 3600.0 + t[1] * 60.0 + t[2]
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn shortener_builds_runs_redirects_counts_and_goes_away() {
    let started = Instant::now();
    let ex = Example::new();
    let script = Command::new(repo().join("scripts/shortener.sh"))
        .arg("base")
        .env("BERTH_ROOT", ex.root.path())
        .env("BERTH_BIN_DIR", bin_dir())
        .output()
        .unwrap();
    assert!(
        script.status.success(),
        "shortener.sh base: {}",
        stderr(&script)
    );
    let base = ex.berth(&["image", "inspect", "shortener/base:latest"]);
    assert!(base.status.success(), "{}", stderr(&base));

    ex.compose(&["up", "-d", "--build", "--wait"]);

    // The image: multi-stage result run as the non-root user, with its own healthcheck.
    let web = ex.inspect(&ex.container("web"));
    assert_eq!(web["Config"]["User"], "app", "{}", web["Config"]);
    let uid = ex.compose(&["exec", "web", "id", "-u"]);
    assert_eq!(uid.trim(), "1000");
    let no_src = ex.compose(&["exec", "web", "sh", "-c", "test ! -e /src && echo clean"]);
    assert_eq!(
        no_src.trim(),
        "clean",
        "build-stage files leaked into the runtime stage"
    );

    // Health gating: web and worker started only once data served (after its warm-up).
    let data = ex.inspect(&ex.container("data"));
    assert_eq!(data["State"]["Health"]["Status"], "healthy");
    let data_start = day_secs(data["State"]["StartedAt"].as_str().unwrap());
    for s in ["web", "worker"] {
        let st = day_secs(
            ex.inspect(&ex.container(s))["State"]["StartedAt"]
                .as_str()
                .unwrap(),
        );
        assert!(
            st - data_start >= 0.9,
            "{s} started {:.2}s after data",
            st - data_start
        );
    }

    // Create a short URL, then follow it.
    let target = "https://example.com/some/long/path?q=1&r=two";
    let (status, _, body) = ex.http(
        "POST",
        &format!("/cgi-bin/shorten?url={}", percent_encode(target)),
    );
    assert!(status.contains(" 200 "), "{status}: {body}");
    let short = body.trim();
    let prefix = format!("http://127.0.0.1:{}/cgi-bin/s/", ex.port);
    assert!(short.starts_with(&prefix), "{short}");
    let code = &short[prefix.len()..];
    let path = format!("/cgi-bin/s/{code}");
    let (status, headers, _) = ex.http("GET", &path);
    assert!(status.contains(" 302 "), "{status}\n{headers}");
    assert_eq!(header(&headers, "Location"), Some(target), "{headers}");
    let (status, _, _) = ex.http("GET", "/cgi-bin/s/0000000");
    assert!(status.contains(" 404 "), "{status}");

    // The worker takes visits off the data role's queue and counts them.
    ex.http("GET", &path);
    let stats = format!("/cgi-bin/stats/{code}");
    berth_tests::wait_for(
        || ex.http("GET", &stats).2.trim() == "2",
        "two visits counted",
    );
    // The worker logs a visit after counting it, and its monitor writes the line to the
    // log a moment later: the count can be read before the line is there.
    let line = format!("visit of {code}, now 2");
    let mut logs = String::new();
    let seen = (0..500).any(|_| {
        logs = ex.compose(&["logs", "--no-color", "worker"]);
        let found = logs.contains(&line);
        if !found {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        found
    });
    assert!(seen, "{logs}");

    // A second up changes nothing.
    let ids = ex.ids();
    ex.compose(&["up", "-d", "--wait"]);
    assert_eq!(ex.ids(), ids, "up twice recreated a container");

    // down -v removes the containers, the network and the named volume.
    ex.compose(&["down", "-v"]);
    for s in ["data", "web", "worker"] {
        assert!(!ex.berth(&["inspect", &ex.container(s)]).status.success());
    }
    let net = format!("{}_default", ex.name);
    assert!(!ex.berth(&["network", "inspect", &net]).status.success());
    let vol = format!("{}_store", ex.name);
    assert!(!ex.berth(&["volume", "inspect", &vol]).status.success());
    assert_eq!(stdout(&ex.berth(&["ps", "-a", "-q"])), "");
    assert!(
        TcpStream::connect(("127.0.0.1", ex.port)).is_err(),
        "port still published"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
}
