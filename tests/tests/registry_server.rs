//! `berth registry serve` against real clients: skopeo pushes a locally made busybox image
//! and pulls it back (with auth on and off), deletes it, and `berth registry gc` collects
//! what nothing references any more.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

use berth_image::digest::Digest;
use berth_tests::*;
use serde_json::Value;

struct Registry {
    child: Option<Child>,
    dir: tempfile::TempDir,
    addr: String,
}

impl Registry {
    fn start(htpasswd: Option<(&str, &str)>) -> Registry {
        Self::start_with(htpasswd, None)
    }

    /// With `access`, clients get bearer tokens from the registry's token endpoint.
    fn start_with(htpasswd: Option<(&str, &str)>, access: Option<&str>) -> Registry {
        Self::start_full(htpasswd, access, &[])
    }

    fn start_full(
        htpasswd: Option<(&str, &str)>,
        access: Option<&str>,
        extra: &[&Path],
    ) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let addr = format!("127.0.0.1:{}", berth_tests::free_port());
        let mut cmd = Command::new(bin_dir().join("berth"));
        cmd.args(["registry", "serve", "--addr", &addr, "--storage"])
            .arg(dir.path().join("store"));
        if let Some((user, password)) = htpasswd {
            let file = dir.path().join("htpasswd");
            let hash = bcrypt::hash(password, 4).unwrap();
            std::fs::write(&file, format!("{user}:{hash}\n")).unwrap();
            cmd.arg("--htpasswd").arg(&file);
        }
        if let Some(rules) = access {
            let file = dir.path().join("access.json");
            std::fs::write(&file, rules).unwrap();
            cmd.arg("--access").arg(&file);
        }
        if let [cert, key] = extra {
            cmd.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
        }
        let log = std::fs::File::create(dir.path().join("access.log")).unwrap();
        let child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("berth binary: run `cargo build --bins` first");
        let r = Registry {
            child: Some(child),
            dir,
            addr,
        };
        wait_for(
            || TcpStream::connect(&r.addr).is_ok(),
            "the registry to listen",
        );
        r
    }

    fn storage(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// SIGTERM, then the exit status (graceful shutdown must exit 0).
    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

fn skopeo(args: &[&str]) -> Output {
    output(Command::new("skopeo").args(args))
}

fn ok(o: &Output, what: &str) {
    assert!(o.status.success(), "{what}: {}{}", stdout(o), stderr(o));
}

/// The manifest digest and layer digests an OCI layout's index points at.
fn layout_image(layout: &Path) -> (Digest, Vec<Digest>) {
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let d: Digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let blob = |d: &Digest| std::fs::read(layout.join("blobs/sha256").join(d.hex())).unwrap();
    let manifest = blob(&d);
    assert_eq!(
        Digest::sha256_of(&manifest),
        d,
        "manifest blob matches its digest"
    );
    let m: Value = serde_json::from_slice(&manifest).unwrap();
    let mut digests = vec![m["config"]["digest"].as_str().unwrap().parse().unwrap()];
    for l in m["layers"].as_array().unwrap() {
        digests.push(l["digest"].as_str().unwrap().parse().unwrap());
    }
    for b in &digests {
        assert_eq!(
            &Digest::sha256_of(&blob(b)),
            b,
            "blob {b} matches its digest"
        );
    }
    (d, digests)
}

/// Makes the busybox image as an OCI archive and as an unpacked layout (to read digests).
fn busybox_image(dir: &Path) -> (PathBuf, Digest, Vec<Digest>) {
    let archive = dir.join("busybox.tar");
    busybox_oci_archive(&archive, "busybox:latest", &["sh"]);
    let layout = dir.join("src-layout");
    std::fs::create_dir_all(&layout).unwrap();
    tar::Archive::new(std::fs::File::open(&archive).unwrap())
        .unpack(&layout)
        .unwrap();
    let (d, blobs) = layout_image(&layout);
    (archive, d, blobs)
}

/// Push with skopeo, read back the manifest digest, pull with skopeo, compare.
fn round_trip(reg: &Registry, creds: Option<&str>) {
    let work = tempfile::tempdir().unwrap();
    let (archive, digest, blobs) = busybox_image(work.path());
    let src = format!("oci-archive:{}", archive.display());
    let dest = format!("docker://{}/test/busybox:v1", reg.addr);
    let mut push = vec!["copy", "--dest-tls-verify=false"];
    let mut pull_flags = vec!["--src-tls-verify=false"];
    // `inspect` spells its flags without the src- prefix.
    let mut inspect = vec!["inspect", "--raw", "--tls-verify=false"];
    if let Some(c) = creds {
        push.extend(["--dest-creds", c]);
        pull_flags.extend(["--src-creds", c]);
        inspect.extend(["--creds", c]);
    }
    let mut args = push.clone();
    args.extend([src.as_str(), dest.as_str()]);
    ok(&skopeo(&args), "skopeo push");

    let mut args = inspect.clone();
    args.push(&dest);
    let raw = skopeo(&args);
    ok(&raw, "skopeo inspect");
    assert_eq!(
        Digest::sha256_of(&raw.stdout),
        digest,
        "registry serves the manifest unchanged"
    );

    let out = work.path().join("pulled");
    let oci_dest = format!("oci:{}:v1", out.display());
    let mut args = vec!["copy"];
    args.extend(&pull_flags);
    args.extend([dest.as_str(), oci_dest.as_str()]);
    ok(&skopeo(&args), "skopeo pull");
    let (pulled, pulled_blobs) = layout_image(&out);
    assert_eq!(pulled, digest);
    assert_eq!(pulled_blobs, blobs);

    // Pulling by digest gives the same image.
    let by_digest = format!("docker://{}/test/busybox@{digest}", reg.addr);
    let mut args = inspect.clone();
    args.push(&by_digest);
    let raw = skopeo(&args);
    ok(&raw, "skopeo inspect by digest");
    assert_eq!(Digest::sha256_of(&raw.stdout), digest);
}

#[test]
fn skopeo_push_pull_without_auth() {
    let mut reg = Registry::start(None);
    round_trip(&reg, None);
    // Tags listed by a real client.
    let tags = skopeo(&[
        "list-tags",
        "--tls-verify=false",
        &format!("docker://{}/test/busybox", reg.addr),
    ]);
    ok(&tags, "skopeo list-tags");
    let v: Value = serde_json::from_slice(&tags.stdout).unwrap();
    assert_eq!(v["Tags"], serde_json::json!(["v1"]));
    // One JSON access-log line per request.
    let log = reg.log();
    let first: Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert!(
        first["method"].is_string() && first["status"].is_u64(),
        "{log}"
    );
    // SIGTERM: a clean, prompt exit.
    let status = reg.stop().expect("registry exits after SIGTERM");
    assert!(status.success(), "{status:?}");
}

#[test]
fn skopeo_push_pull_with_basic_auth() {
    let reg = Registry::start(Some(("ci", "hunter2")));
    let work = tempfile::tempdir().unwrap();
    let (archive, _, _) = busybox_image(work.path());
    // Without (or with wrong) credentials the push is refused.
    for creds in [None, Some("ci:wrong")] {
        let src = format!("oci-archive:{}", archive.display());
        let dest = format!("docker://{}/test/busybox:v1", reg.addr);
        let mut args = vec!["copy", "--dest-tls-verify=false"];
        if let Some(c) = creds {
            args.extend(["--dest-creds", c]);
        }
        args.extend([src.as_str(), dest.as_str()]);
        let o = skopeo(&args);
        assert!(
            !o.status.success(),
            "push without valid credentials succeeded"
        );
    }
    assert!(
        !reg.storage().join("blobs/sha256").exists()
            || std::fs::read_dir(reg.storage().join("blobs/sha256"))
                .unwrap()
                .next()
                .is_none()
    );
    round_trip(&reg, Some("ci:hunter2"));
    // And pulling without credentials is refused too.
    let o = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}/test/busybox:v1", reg.addr),
    ]);
    assert!(!o.status.success());
}

#[test]
fn skopeo_push_pull_with_bearer_tokens() {
    let rules = r#"{"rules": [
        {"user": "ci", "repo": "*", "actions": ["pull", "push", "delete"]},
        {"user": "anonymous", "repo": "test/*", "actions": ["pull"]}]}"#;
    let reg = Registry::start_with(Some(("ci", "hunter2")), Some(rules));
    // skopeo follows the Bearer challenge to /token with the credentials.
    round_trip(&reg, Some("ci:hunter2"));
    // Anonymous pull of test/* is allowed by the rules; anonymous push is not.
    let dest = format!("docker://{}/test/busybox:v1", reg.addr);
    let o = skopeo(&["inspect", "--raw", "--tls-verify=false", &dest]);
    ok(&o, "anonymous pull");
    let work = tempfile::tempdir().unwrap();
    let (archive, _, _) = busybox_image(work.path());
    let src = format!("oci-archive:{}", archive.display());
    let o = skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &src,
        &format!("docker://{}/test/other:v1", reg.addr),
    ]);
    assert!(!o.status.success(), "anonymous push succeeded");
    let log = reg.log();
    assert!(log.contains("\"path\":\"/token\""), "{log}");
}

#[test]
fn skopeo_over_tls() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    let o = output(
        Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args([
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
    );
    ok(&o, "openssl req");
    // skopeo trusts the CA files (*.crt) of a certificate directory.
    let trust = certs.path().join("trust");
    std::fs::create_dir(&trust).unwrap();
    std::fs::copy(&cert, trust.join("ca.crt")).unwrap();
    let reg = Registry::start_full(Some(("ci", "pw")), None, &[&cert, &key]);
    let work = tempfile::tempdir().unwrap();
    let (archive, digest, _) = busybox_image(work.path());
    let src = format!("oci-archive:{}", archive.display());
    let dest = format!("docker://{}/tls/busybox:v1", reg.addr);
    let trust = trust.to_str().unwrap();
    // Verified TLS, no insecure flags.
    let o = skopeo(&[
        "copy",
        "--dest-cert-dir",
        trust,
        "--dest-creds",
        "ci:pw",
        &src,
        &dest,
    ]);
    ok(&o, "skopeo push over TLS");
    let o = skopeo(&[
        "inspect",
        "--raw",
        "--cert-dir",
        trust,
        "--creds",
        "ci:pw",
        &dest,
    ]);
    ok(&o, "skopeo inspect over TLS");
    assert_eq!(Digest::sha256_of(&o.stdout), digest);
    // Without trusting the certificate, the client refuses.
    let o = skopeo(&["inspect", "--raw", "--creds", "ci:pw", &dest]);
    assert!(!o.status.success());
}

#[test]
fn sigterm_finishes_in_flight_upload() {
    use std::io::{Read, Write};
    let mut reg = Registry::start(None);
    let blob = vec![5u8; 1 << 20];
    let d = Digest::sha256_of(&blob);
    let mut conn = TcpStream::connect(&reg.addr).unwrap();
    write!(
        conn,
        "POST /v2/r/blobs/uploads/?digest={d} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        blob.len()
    )
    .unwrap();
    conn.write_all(&blob[..1000]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    // Signal while the body is still arriving; the server must wait for it.
    let child = reg.child.as_ref().unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    // New connections are refused once shutdown began.
    assert!(TcpStream::connect(&reg.addr).is_err());
    conn.write_all(&blob[1000..]).unwrap();
    let mut resp = Vec::new();
    conn.read_to_end(&mut resp).unwrap();
    let text = String::from_utf8_lossy(&resp);
    assert!(text.starts_with("HTTP/1.1 201"), "{text}");
    let status = reg.stop().expect("exits after the in-flight request");
    assert!(status.success(), "{status:?}");
    let stored = reg.storage().join("blobs/sha256").join(d.hex());
    assert_eq!(std::fs::read(stored).unwrap(), blob);
}

#[test]
fn config_file() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", berth_tests::free_port());
    let users = dir.path().join("htpasswd");
    std::fs::write(&users, format!("u:{}\n", bcrypt::hash("p", 4).unwrap())).unwrap();
    let config = dir.path().join("registry.json");
    let v = serde_json::json!({
        "addr": addr, "storage": dir.path().join("store"), "htpasswd": users, "accessLog": false,
    });
    std::fs::write(&config, v.to_string()).unwrap();
    let log = dir.path().join("log");
    let mut child = Command::new(bin_dir().join("berth"))
        .args(["registry", "serve", "--config"])
        .arg(&config)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_for(
        || TcpStream::connect(&addr).is_ok(),
        "the registry to listen",
    );
    let mut conn = TcpStream::connect(&addr).unwrap();
    conn.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    conn.read_to_string(&mut resp).unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(child.wait().unwrap().success());
    assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");
    assert!(dir.path().join("store/blobs").is_dir());
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "",
        "access log is off"
    );
}

/// podman with a private, throwaway store.
fn podman(store: &Path, args: &[&str]) -> Output {
    output(
        Command::new("podman")
            .arg("--root")
            .arg(store.join("root"))
            .arg("--runroot")
            .arg(store.join("run"))
            .args([
                "--storage-driver",
                "vfs",
                "--events-backend",
                "none",
                "--cgroup-manager",
                "cgroupfs",
            ])
            .args(args),
    )
}

fn podman_round_trip(creds: Option<&str>) {
    let reg = Registry::start(creds.map(|c| c.split_once(':').unwrap()));
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    let (archive, _, _) = busybox_image(work.path());
    let local = "localhost/berth-test/busybox:v1";
    ok(
        &podman(
            &store,
            &["pull", &format!("oci-archive:{}", archive.display())],
        ),
        "podman load",
    );
    let loaded = podman(&store, &["images", "--format", "{{.ID}}"]);
    let id = stdout(&loaded).trim().to_string();
    ok(&podman(&store, &["tag", &id, local]), "podman tag");
    let remote = format!("{}/pod/busybox:v1", reg.addr);
    let digest_file = work.path().join("digest");
    let digest_arg = digest_file.to_str().unwrap();
    let mut push = vec!["push", "--tls-verify=false", "--digestfile", digest_arg];
    let mut pull = vec!["pull", "--tls-verify=false"];
    if let Some(c) = creds {
        push.extend(["--creds", c]);
        pull.extend(["--creds", c]);
    }
    let dest = format!("docker://{remote}");
    let push_args = [push.as_slice(), &[local, dest.as_str()]].concat();
    ok(&podman(&store, &push_args), "podman push");
    let pushed = std::fs::read_to_string(&digest_file).unwrap();
    // What the registry serves is what podman pushed.
    let mut inspect = vec!["inspect", "--raw", "--tls-verify=false"];
    if let Some(c) = creds {
        inspect.extend(["--creds", c]);
    }
    inspect.push(&dest);
    let raw = skopeo(&inspect);
    ok(&raw, "skopeo inspect");
    assert_eq!(Digest::sha256_of(&raw.stdout).to_string(), pushed.trim());
    // Pull it back into an empty store.
    let store2 = work.path().join("store2");
    let pull_args = [pull.as_slice(), &[remote.as_str()]].concat();
    ok(&podman(&store2, &pull_args), "podman pull");
    let o = podman(
        &store2,
        &["image", "inspect", "--format", "{{.Digest}}", &remote],
    );
    ok(&o, "podman image inspect");
    assert_eq!(stdout(&o).trim(), pushed.trim());
    let o = podman(
        &store2,
        &["image", "inspect", "--format", "{{.ID}}", &remote],
    );
    // `images` shows the short id.
    let full = stdout(&o).trim().to_string();
    assert!(
        !id.is_empty() && full.starts_with(&id),
        "same image config after the round trip: {full} vs {id}"
    );
}

#[test]
fn podman_push_pull_without_auth() {
    podman_round_trip(None);
}

#[test]
fn podman_push_pull_with_basic_auth() {
    podman_round_trip(Some("ci:pw"));
}

#[test]
fn skopeo_delete_then_gc() {
    let reg = Registry::start(None);
    round_trip(&reg, None);
    let blobs_dir = reg.storage().join("blobs/sha256");
    let count = || std::fs::read_dir(&blobs_dir).unwrap().count();
    assert_eq!(count(), 3, "config, layer, manifest");
    let gc = |args: &[&str]| {
        let mut cmd = Command::new(bin_dir().join("berth"));
        cmd.args(["registry", "gc", "--grace", "0s", "--storage"])
            .arg(reg.storage())
            .args(args);
        let o = output(&mut cmd);
        ok(&o, "berth registry gc");
        stdout(&o)
    };
    // Everything is referenced: nothing goes.
    assert!(gc(&[]).contains("deleted 0 manifests, 0 blobs"));
    ok(
        &skopeo(&[
            "delete",
            "--tls-verify=false",
            &format!("docker://{}/test/busybox:v1", reg.addr),
        ]),
        "skopeo delete",
    );
    let dry = gc(&["--dry-run"]);
    assert!(dry.contains("would delete 0 manifests, 3 blobs"), "{dry}");
    assert_eq!(count(), 3);
    let out = gc(&[]);
    assert!(out.contains("deleted 0 manifests, 3 blobs"), "{out}");
    assert_eq!(count(), 0);
}
