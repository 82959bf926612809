//! Helpers shared by the end-to-end tests: locating the built binaries, making busybox
//! bundles from Debian's busybox-static, and checking that nothing is left behind.
//!
//! The tests run as root against the real kernel; they need `/bin/busybox` (Debian's
//! busybox-static), which `make test` installs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

/// The directory holding the binaries cargo built for this profile.
pub fn bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("BERTH_BIN_DIR") {
        return PathBuf::from(d);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join(if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    })
}

pub fn berth_runc() -> PathBuf {
    let p = bin_dir().join("berth-runc");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --bins` first (make test does)",
        p.display()
    );
    p
}

/// Makes a busybox root filesystem with the applet links, a passwd and group file.
pub fn busybox_rootfs(dir: &Path) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for d in ["proc", "sys", "dev", "etc", "tmp", "root"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", bin.join("busybox"))
        .expect("/bin/busybox (Debian busybox-static) is required");
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", bin.join(applet));
        }
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("etc/group"),
        "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n",
    )
    .unwrap();
    std::fs::set_permissions(
        dir.join("tmp"),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .unwrap();
}

/// A bundle in a temp dir with a runc-like default config (from `berth-runc spec`).
pub struct Bundle {
    pub dir: tempfile::TempDir,
    pub spec: Value,
}

impl Bundle {
    pub fn new(args: &[&str]) -> Bundle {
        let dir = tempfile::tempdir().unwrap();
        busybox_rootfs(&dir.path().join("rootfs"));
        let out = Command::new(berth_runc())
            .args(["spec", "--bundle"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "spec: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut spec: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap())
                .unwrap();
        spec["process"]["args"] = json!(args);
        spec["process"]["terminal"] = json!(false);
        spec["root"]["readonly"] = json!(false);
        Bundle { dir, spec }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn save(&self) {
        std::fs::write(
            self.dir.path().join("config.json"),
            serde_json::to_vec_pretty(&self.spec).unwrap(),
        )
        .unwrap();
    }
}

/// A runtime state root of its own, so tests never see each other's containers.
pub struct Runc {
    pub root: tempfile::TempDir,
}

impl Default for Runc {
    fn default() -> Self {
        Self::new()
    }
}

impl Runc {
    pub fn new() -> Runc {
        Runc {
            root: tempfile::tempdir().unwrap(),
        }
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(berth_runc());
        c.arg("--root").arg(self.root.path());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        output(self.cmd().args(args))
    }

    /// Saves the bundle and runs `run` in the foreground.
    pub fn run_bundle(&self, id: &str, b: &Bundle) -> Output {
        b.save();
        output(self.cmd().args(["run", "--bundle"]).arg(b.path()).arg(id))
    }

    /// Saves the bundle and runs `run --detach`.
    pub fn run_detached(&self, id: &str, b: &Bundle) -> Output {
        b.save();
        output(
            self.cmd()
                .args(["run", "-d", "--bundle"])
                .arg(b.path())
                .arg(id),
        )
    }

    pub fn state(&self, id: &str) -> Option<Value> {
        let out = self.run(&["state", id]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    pub fn status(&self, id: &str) -> String {
        self.state(id)
            .map(|s| s["status"].as_str().unwrap_or_default().to_owned())
            .unwrap_or_else(|| "gone".into())
    }
}

/// Runs a command collecting stdout/stderr through files rather than pipes: a created or
/// detached container inherits the runtime's stdio (as with runc), and would hold a pipe
/// open — and `Command::output` waiting — for as long as it lives.
pub fn output(cmd: &mut Command) -> Output {
    let mut out = tempfile::tempfile().unwrap();
    let mut err = tempfile::tempfile().unwrap();
    let status = cmd
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(err.try_clone().unwrap())
        .status()
        .unwrap();
    let read = |f: &mut std::fs::File| {
        use std::io::{Read, Seek};
        let mut v = Vec::new();
        f.seek(std::io::SeekFrom::Start(0)).unwrap();
        f.read_to_end(&mut v).unwrap();
        v
    };
    Output {
        status,
        stdout: read(&mut out),
        stderr: read(&mut err),
    }
}

/// `script` (util-linux) for a terminal: runs the shell command `inner` on a fresh pty,
/// stdin from `stdin`, and returns its output (what the terminal showed).
pub fn in_terminal(inner: &str, stdin: std::process::Stdio) -> std::process::Child {
    Command::new("script")
        .args(["-qec", inner, "/dev/null"])
        .stdin(stdin)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run script (util-linux)")
}

/// What `inner` printed on a terminal with nothing typed.
pub fn terminal_output(inner: &str) -> String {
    let out = in_terminal(inner, std::process::Stdio::null())
        .wait_with_output()
        .expect("wait for script");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every cgroup directory named `/berth/<id>` (the default path) on any hierarchy.
pub fn cgroup_leftovers(rel: &str) -> Vec<PathBuf> {
    let mut found = vec![];
    let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") else {
        return found;
    };
    let rel = rel.trim_start_matches('/');
    if Path::new("/sys/fs/cgroup").join(rel).exists() {
        found.push(Path::new("/sys/fs/cgroup").join(rel));
    }
    for e in entries.flatten() {
        let p = e.path().join(rel);
        if p.exists() {
            found.push(p);
        }
    }
    found
}

/// Mount points whose path contains `needle` (e.g. a bundle dir), from our mountinfo.
pub fn mounts_containing(needle: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let needle = needle.to_string_lossy();
    info.lines()
        .filter(|l| l.contains(needle.as_ref()))
        .map(str::to_owned)
        .collect()
}

pub fn wait_for(mut cond: impl FnMut() -> bool, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Writes an OCI image archive (oci-layout, index.json, blobs) of a busybox rootfs, the
/// form `ctr images import` and `skopeo copy oci-archive:` read. Uses berth-image to make
/// the layer, so the layer writer is exercised by a real peer too.
pub fn busybox_oci_archive(out: &Path, ref_name: &str, cmd: &[&str]) {
    busybox_oci_archive_config(out, ref_name, json!({"Env": ["PATH=/bin"], "Cmd": cmd}));
}

/// [`busybox_oci_archive`] with a whole image `config` object (Env, Cmd, Volumes,
/// Healthcheck, ...).
pub fn busybox_oci_archive_config(out: &Path, ref_name: &str, image_config: Value) {
    use berth_image::digest::Digest;
    use berth_image::layer::Compression;
    let work = tempfile::tempdir().unwrap();
    let rootfs = work.path().join("rootfs");
    busybox_rootfs(&rootfs);
    let blobs = work.path().join("layout/blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let mut layer = Vec::new();
    let diff = berth_image::layer::write_layer(&rootfs, &mut layer, Compression::Gzip).unwrap();
    let put = |data: &[u8]| -> Digest {
        let d = Digest::sha256_of(data);
        std::fs::write(
            blobs.join(d.to_string().trim_start_matches("sha256:")),
            data,
        )
        .unwrap();
        d
    };
    let layer_digest = put(&layer);
    let config = json!({
        "architecture": "amd64", "os": "linux",
        "config": image_config,
        "rootfs": {"type": "layers", "diff_ids": [diff.diff_id.to_string()]}
    });
    let config = serde_json::to_vec(&config).unwrap();
    let config_digest = put(&config);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.to_string(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest.to_string(), "size": layer.len()}]
    });
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let manifest_digest = put(&manifest);
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest.to_string(),
            "size": manifest.len(), "annotations": {"io.containerd.image.name": ref_name, "org.opencontainers.image.ref.name": "latest"},
            "platform": {"architecture": "amd64", "os": "linux"}
        }]
    });
    let layout = work.path().join("layout");
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let mut ar = tar::Builder::new(std::fs::File::create(out).unwrap());
    ar.append_dir_all(".", &layout).unwrap();
    ar.finish().unwrap();
}

/// A private dockerd (Debian's docker.io): own data and exec roots, no bridge, no
/// iptables rules, so the host's own Docker (if any) is untouched. Stopped on drop.
pub struct Dockerd {
    dir: tempfile::TempDir,
    child: std::process::Child,
}

impl Dockerd {
    pub fn start() -> Dockerd {
        let dir = tempfile::tempdir().unwrap();
        let p = |s: &str| dir.path().join(s);
        let log = std::fs::File::create(p("dockerd.log")).unwrap();
        let child = Command::new("dockerd")
            .arg("--data-root")
            .arg(p("data"))
            .arg("--exec-root")
            .arg(p("exec"))
            .arg("--pidfile")
            .arg(p("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", p("docker.sock").display()))
            .args(["--bridge", "none", "--iptables=false", "--ip6tables=false"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("dockerd (Debian's docker.io, installed by make setup)");
        let d = Dockerd { dir, child };
        wait_for(
            || d.docker(&["version"]).status.success(),
            "dockerd answering",
        );
        d
    }

    /// `docker -H <this daemon> ARGS`.
    pub fn docker(&self, args: &[&str]) -> Output {
        output(
            Command::new("docker")
                .arg("-H")
                .arg(format!(
                    "unix://{}",
                    self.dir.path().join("docker.sock").display()
                ))
                .args(args),
        )
    }

    /// Runs `docker ARGS`, asserts success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(out.status.success(), "docker {args:?}: {}", stderr(&out));
        stdout(&out)
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // SIGTERM lets dockerd unmount its overlays before the temp dir goes.
        // SAFETY: a signal to the child this test started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// Writes an OCI layout whose index holds two images, linux/amd64 and linux/arm64/v8,
/// each a one-layer image with a file `/arch` naming its platform.
pub fn multi_platform_layout(dir: &Path) {
    use berth_image::layer::{write_layer, Compression};
    let put = layout_blob_writer(dir);
    let mut entries = Vec::new();
    for (arch, variant) in [("amd64", None), ("arm64", Some("v8"))] {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("arch"), arch).unwrap();
        let mut layer = Vec::new();
        let diff = write_layer(root.path(), &mut layer, Compression::Gzip).unwrap();
        let (layer_digest, layer_size) = put(&layer);
        let mut config = serde_json::json!({
            "architecture": arch, "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [diff.diff_id.to_string()]}
        });
        let mut platform = serde_json::json!({"architecture": arch, "os": "linux"});
        if let Some(v) = variant {
            config["variant"] = v.into();
            platform["variant"] = v.into();
        }
        let (config_digest, config_size) = put(&serde_json::to_vec(&config).unwrap());
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer_size}]
        });
        let (digest, size) = put(&serde_json::to_vec(&manifest).unwrap());
        entries.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest, "size": size, "platform": platform
        }));
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries
    });
    let (digest, size) = put(&serde_json::to_vec(&index).unwrap());
    let top = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json", "digest": digest, "size": size,
            "annotations": {"org.opencontainers.image.ref.name": "latest"}
        }]
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// A writer of blobs into the OCI layout at `dir`: stores the bytes under their sha256
/// and returns (digest, size) for the descriptor.
pub fn layout_blob_writer(dir: &Path) -> impl Fn(&[u8]) -> (String, usize) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    move |data: &[u8]| {
        let d = berth_image::digest::Digest::sha256_of(data);
        std::fs::write(blobs.join(d.hex()), data).unwrap();
        (d.to_string(), data.len())
    }
}

/// Pushes [`multi_platform_layout`]'s two-platform index to the plain-http registry at
/// `addr` as `multi/arch:latest` with skopeo; returns that reference.
pub fn push_multi_platform_index(addr: &str, scratch: &Path) -> String {
    let layout = scratch.join("layout");
    multi_platform_layout(&layout);
    let image = format!("{addr}/multi/arch:latest");
    let out = Command::new("skopeo")
        .args(["copy", "--all", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:latest", layout.display()))
        .arg(format!("docker://{image}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo copy --all: {}", stderr(&out));
    image
}

/// A loopback TCP port nothing listens on right now, for a server a test starts.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A busybox rootfs (see [`busybox_rootfs`]) made under `dir` and packed as the tarball
/// `dir/<name>`, gzipped when the name ends in `.gz`; returns the tarball's path.
pub fn busybox_rootfs_tar(dir: &Path, name: &str) -> PathBuf {
    let rootfs = dir.join("rootfs");
    busybox_rootfs(&rootfs);
    let tar = dir.join(name);
    let flags = if name.ends_with(".gz") { "-czf" } else { "-cf" };
    let out = Command::new("tar")
        .arg(flags)
        .arg(&tar)
        .arg("-C")
        .arg(&rootfs)
        .arg(".")
        .output()
        .unwrap();
    assert!(out.status.success(), "tar: {}", stderr(&out));
    tar
}
