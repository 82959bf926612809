//! End-to-end image tests: a real registry (Debian's `docker-registry`) on loopback, skopeo
//! as the independent client, and the `berth` binary pulling, pushing, listing, tagging
//! and removing images in a private store.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use berth_tests::{bin_dir, busybox_oci_archive, stderr, stdout, wait_for};
use serde_json::Value;

/// A `docker-registry serve` process with its own storage, killed on drop.
struct Registry {
    dir: tempfile::TempDir,
    addr: String,
    child: Child,
}

impl Registry {
    /// Starts a registry; with `users`, behind htpasswd basic auth.
    fn start(users: &[(&str, &str)]) -> Registry {
        Registry::start_with(users, false)
    }

    /// Starts a registry serving https with a certificate for 127.0.0.1 from a fresh
    /// test CA (`ca.pem` in its directory).
    fn start_tls() -> Registry {
        Registry::start_with(&[], true)
    }

    fn start_with(users: &[(&str, &str)], tls: bool) -> Registry {
        Registry::start_full(users, tls, None)
    }

    /// `token`: the realm URL and the certificate that signs the tokens.
    fn start_full(users: &[(&str, &str)], tls: bool, token: Option<(&str, &Path)>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = berth_tests::free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        if !users.is_empty() {
            let htpasswd = dir.path().join("htpasswd");
            for (i, (u, p)) in users.iter().enumerate() {
                let create = if i == 0 { "-cbB" } else { "-bB" };
                let st = Command::new("htpasswd")
                    .args([create, htpasswd.to_str().unwrap(), u, p])
                    .output()
                    .expect("htpasswd (apache2-utils) is needed");
                assert!(st.status.success(), "htpasswd: {}", stderr(&st));
            }
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        if let Some((realm, cert)) = token {
            config.push_str(&format!(
                "auth:\n  token:\n    realm: {realm}\n    service: berth-test\n    issuer: berth-test-issuer\n    rootcertbundle: {}\n",
                cert.display()
            ));
        }
        if tls {
            let (cert, key) = make_certificates(dir.path());
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ));
        }
        let cfg = dir.path().join("config.yml");
        std::fs::write(&cfg, config).unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("log")).unwrap())
            .spawn()
            .expect("docker-registry (Debian package docker-registry) is needed");
        wait_for(
            || std::net::TcpStream::connect(&addr).is_ok(),
            "docker-registry to listen",
        );
        Registry { dir, addr, child }
    }

    /// Pushes a fresh busybox image to `repo:tag` with skopeo.
    fn seed(&self, repo_tag: &str, creds: Option<&str>) {
        let archive = self.dir.path().join("busybox.tar");
        busybox_oci_archive(&archive, "busybox", &["sh"]);
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--dest-tls-verify=false"]);
        if let Some(c) = creds {
            cmd.args(["--dest-creds", c]);
        }
        let out = cmd
            .arg(format!("oci-archive:{}", archive.display()))
            .arg(format!("docker://{}/{repo_tag}", self.addr))
            .output()
            .expect("skopeo is needed");
        assert!(out.status.success(), "skopeo copy: {}", stderr(&out));
    }
}

/// A test CA (`ca.pem`) and a server certificate for 127.0.0.1 signed by it; returns
/// the server's certificate and key paths. (webpki refuses a CA certificate used as the
/// server's own, so the two are kept apart as in real deployments.)
fn make_certificates(dir: &Path) -> (PathBuf, PathBuf) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl is needed");
        assert!(out.status.success(), "openssl {args:?}: {}", stderr(&out));
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=berth-test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "key.pem",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "server.ext",
        "-out",
        "cert.pem",
    ]);
    (dir.join("cert.pem"), dir.join("key.pem"))
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private berth store and docker config dir.
struct Berth {
    root: tempfile::TempDir,
    config: tempfile::TempDir,
}

impl Berth {
    fn new() -> Berth {
        Berth {
            root: tempfile::tempdir().unwrap(),
            config: tempfile::tempdir().unwrap(),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        let bin = bin_dir().join("berth");
        assert!(
            bin.exists(),
            "{} is missing: run `cargo build --bins`",
            bin.display()
        );
        Command::new(bin)
            .arg("--root")
            .arg(self.root.path())
            .args(args)
            .env("DOCKER_CONFIG", self.config.path())
            // The host's own registries.conf never leaks into a test; a test may write one.
            .env(
                "CONTAINERS_REGISTRIES_CONF",
                self.config.path().join("registries.conf"),
            )
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "berth {args:?} failed: {}\n{}",
            stdout(&out),
            stderr(&out)
        );
        stdout(&out)
    }

    /// Every file name under the store, except the database's own journal files.
    fn snapshot(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, base: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                let rel = p.strip_prefix(base).unwrap().to_path_buf();
                if rel.starts_with("berth.db-wal") || rel.starts_with("berth.db-shm") {
                    continue;
                }
                out.push(rel);
                // Unpacked layers are compared by their top-level entries only.
                if p.is_dir() && !p.parent().is_some_and(|d| d.ends_with("layers")) {
                    walk(&p, base, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(self.root.path(), self.root.path(), &mut out);
        out.sort();
        out
    }

    /// `images --format json` rows without "CreatedSince": that one is relative to now and
    /// changes from one call to the next on its own.
    fn images_json(&self) -> Vec<Value> {
        self.ok(&["images", "--format", "json"])
            .lines()
            .map(|l| {
                let mut row: Value = serde_json::from_str(l).unwrap();
                if let Some(map) = row.as_object_mut() {
                    map.remove("CreatedSince");
                }
                row
            })
            .collect()
    }
}

fn skopeo_inspect(reference: &str, extra: &[&str]) -> Value {
    let out = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .args(extra)
        .arg(format!("docker://{reference}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo inspect: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn pull_list_push_and_remove() {
    let reg = Registry::start(&[]);
    reg.seed("test/busybox:latest", None);
    let berth = Berth::new();
    let src = format!("{}/test/busybox:latest", reg.addr);

    let out = berth.ok(&["pull", "--tls-verify=false", &src]);
    assert!(out.contains("latest: Pulling from test/busybox"), "{out}");
    assert!(out.contains("Pull complete"), "{out}");
    assert!(out.contains("Status: Downloaded newer image for"), "{out}");

    // The unpacked layer holds the very busybox binary the image was made from.
    let inspect: Value = serde_json::from_str(&berth.ok(&["image", "inspect", &src])).unwrap();
    let img = &inspect[0];
    let lower = img["GraphDriver"]["Data"]["LowerDir"].as_str().unwrap();
    let unpacked = std::fs::read(Path::new(lower).join("bin/busybox")).unwrap();
    assert_eq!(unpacked, std::fs::read("/bin/busybox").unwrap());
    assert!(Path::new(lower).join("bin/sh").exists());
    assert_eq!(img["Os"], "linux");
    assert_eq!(img["Architecture"], "amd64");
    assert_eq!(img["RepoTags"][0], src.as_str());
    // Docker's empty strings, not nulls, where the config has nothing.
    for key in ["Author", "Comment", "Parent", "DockerVersion", "Variant"] {
        assert_eq!(img[key], "", "{key} in {img}");
    }
    // `images --format` and `image inspect -f` take Go templates, as Docker's.
    let listed = berth.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(listed.lines().any(|l| l == src), "{listed}");
    let f = "{{.Os}}/{{.Architecture}} {{len .RootFS.Layers}} {{.Id}}";
    let layers = img["RootFS"]["Layers"].as_array().unwrap().len();
    assert_eq!(
        berth.ok(&["image", "inspect", "-f", f, &src]).trim(),
        format!("linux/amd64 {layers} {}", img["Id"].as_str().unwrap())
    );
    let manifest_digest = img["Descriptor"]["digest"].as_str().unwrap().to_string();

    // skopeo sees the same manifest digest berth recorded.
    let theirs = skopeo_inspect(&src, &[]);
    assert_eq!(theirs["Digest"], manifest_digest.as_str());

    let rows = berth.images_json();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["Repository"], format!("{}/test/busybox", reg.addr));
    assert_eq!(rows[0]["Tag"], "latest");
    let id = rows[0]["ID"].as_str().unwrap().to_string();
    assert_eq!(berth.ok(&["images", "-q"]).trim(), id);
    let table = berth.ok(&["images"]);
    assert!(table.starts_with("REPOSITORY"), "{table}");
    assert!(table.contains(&id), "{table}");
    let only = |f: &str| berth.ok(&["images", "-q", "--filter", f]);
    assert_eq!(only("reference=*/test/busybox").trim(), id);
    assert_eq!(only("reference=*/test/busybox:latest").trim(), id);
    assert_eq!(only("reference=*/other/*").trim(), "");
    assert_eq!(only("dangling=true").trim(), "");
    assert_eq!(only("dangling=false").trim(), id);
    let history = berth.ok(&["history", &src]);
    assert!(
        history.starts_with("IMAGE") && history.contains(&id),
        "{history}"
    );

    // A second pull finds everything in place.
    let again = berth.ok(&["pull", "--tls-verify=false", &src]);
    assert!(again.contains("Image is up to date"), "{again}");

    // Tag into another repository of the same registry and push: the layer is mounted
    // across repositories or uploaded, and skopeo reads back identical digests.
    let dst = format!("{}/other/copy:v1", reg.addr);
    berth.ok(&["tag", &src, &dst]);
    let pushed = berth.ok(&["push", "--tls-verify=false", &dst]);
    assert!(pushed.contains(": Mounted from test/busybox"), "{pushed}");
    assert!(
        pushed.contains(&format!("v1: digest: {manifest_digest} size:")),
        "{pushed}"
    );
    let back = skopeo_inspect(&dst, &[]);
    assert_eq!(back["Digest"], manifest_digest.as_str());
    assert_eq!(back["Layers"], theirs["Layers"]);
    // Pushing again finds every blob present.
    let again = berth.ok(&["push", "--tls-verify=false", &dst]);
    assert!(again.contains("Layer already exists"), "{again}");

    // rmi by tag only untags while another tag is left; the last one deletes it all.
    let out = berth.ok(&["rmi", &dst]);
    assert!(
        out.contains("Untagged:") && !out.contains("Deleted:"),
        "{out}"
    );
    let out = berth.ok(&["rmi", &src]);
    assert!(out.contains("Deleted: sha256:"), "{out}");
    assert!(berth.images_json().is_empty());
    let left: Vec<_> = berth
        .snapshot()
        .into_iter()
        .filter(|p| {
            let depth = p.components().count();
            (p.starts_with("blobs") && depth > 2) || (p.starts_with("layers") && depth > 1)
        })
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn missing_tag_fails_and_leaves_the_store_unchanged() {
    let reg = Registry::start(&[]);
    reg.seed("test/busybox:latest", None);
    let berth = Berth::new();
    berth.ok(&[
        "pull",
        "--tls-verify=false",
        &format!("{}/test/busybox", reg.addr),
    ]);
    let before = berth.snapshot();
    let images_before = berth.images_json();

    for missing in ["test/busybox:nope", "test/absent:latest"] {
        let out = berth.run(&[
            "pull",
            "--tls-verify=false",
            &format!("{}/{missing}", reg.addr),
        ]);
        assert_eq!(out.status.code(), Some(125), "{}", stdout(&out));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "one clear line: {err}");
        assert!(
            err.contains("not found") && err.contains(&reg.addr),
            "{err}"
        );
        assert!(err.contains(missing.split(':').next().unwrap()), "{err}");
    }
    let digest_ref = format!("{}/test/busybox@sha256:{}", reg.addr, "0".repeat(64));
    let out = berth.run(&["pull", "--tls-verify=false", &digest_ref]);
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(berth.snapshot(), before);
    assert_eq!(berth.images_json(), images_before);

    // Unknown local images are errors too.
    let out = berth.run(&["rmi", "nosuchimage"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no such image"), "{}", stderr(&out));
}

#[test]
fn basic_auth_login_pull_logout() {
    let reg = Registry::start(&[("alice", "wonderland")]);
    reg.seed("private/busybox:1", Some("alice:wonderland"));
    let berth = Berth::new();
    let image = format!("{}/private/busybox:1", reg.addr);

    let out = berth.run(&["pull", "--tls-verify=false", &image]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("unauthorized"), "{}", stderr(&out));

    let out = berth.run(&[
        "login",
        "--tls-verify=false",
        "-u",
        "alice",
        "-p",
        "wrong",
        &reg.addr,
    ]);
    assert_eq!(out.status.code(), Some(125));
    assert!(!berth.config.path().join("config.json").exists());

    let out = berth.ok(&[
        "login",
        "--tls-verify=false",
        "-u",
        "alice",
        "-p",
        "wonderland",
        &reg.addr,
    ]);
    assert!(out.contains("Login Succeeded"), "{out}");
    let config: Value =
        serde_json::from_slice(&std::fs::read(berth.config.path().join("config.json")).unwrap())
            .unwrap();
    // base64("alice:wonderland"), as docker login writes it.
    assert_eq!(
        config["auths"][&reg.addr]["auth"],
        "YWxpY2U6d29uZGVybGFuZA=="
    );

    berth.ok(&["pull", "--tls-verify=false", &image]);
    let pushed = format!("{}/private/again:2", reg.addr);
    berth.ok(&["tag", &image, &pushed]);
    berth.ok(&["push", "--tls-verify=false", &pushed]);
    skopeo_inspect(&pushed, &["--creds", "alice:wonderland"]);

    let out = berth.ok(&["logout", &reg.addr]);
    assert!(out.contains("Removing login credentials"), "{out}");
    let out = berth.run(&["pull", "--tls-verify=false", &pushed]);
    assert_eq!(out.status.code(), Some(125));
}

#[test]
fn multi_platform_index_picks_the_platform() {
    let reg = Registry::start(&[]);
    let image = berth_tests::push_multi_platform_index(&reg.addr, reg.dir.path());
    let berth = Berth::new();

    let arch_of = |platform: Option<&str>| -> (String, String) {
        let mut args = vec!["pull", "--tls-verify=false"];
        if let Some(p) = platform {
            args.extend(["--platform", p]);
        }
        args.push(&image);
        berth.ok(&args);
        let v: Value = serde_json::from_str(&berth.ok(&["image", "inspect", &image])).unwrap();
        let lower = v[0]["GraphDriver"]["Data"]["LowerDir"]
            .as_str()
            .unwrap()
            .to_string();
        let file = std::fs::read_to_string(Path::new(&lower).join("arch")).unwrap();
        assert_eq!(
            v[0]["Architecture"],
            file.as_str(),
            "config and layer agree"
        );
        (file, v[0]["Id"].as_str().unwrap().to_string())
    };
    let (host, amd_id) = arch_of(None);
    assert_eq!(host, "amd64");
    let (arm, arm_id) = arch_of(Some("linux/arm64"));
    assert_eq!(arm, "arm64");
    assert_ne!(amd_id, arm_id);
    // The tag moved to the arm64 image; the amd64 one is left untagged.
    let rows = berth.images_json();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let dangling = berth.ok(&["images", "-q", "--filter", "dangling=true"]);
    assert_eq!(
        dangling.trim(),
        &amd_id["sha256:".len().."sha256:".len() + 12]
    );
    let out = berth.run(&[
        "pull",
        "--tls-verify=false",
        "--platform",
        "linux/s390x",
        &image,
    ]);
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    assert!(
        err.contains("no image for platform linux/s390x") && err.contains("linux/arm64/v8"),
        "{err}"
    );
}

#[test]
fn chunked_push_to_another_registry() {
    use berth_image::Reference;
    use berth_registry::client::{self, BlobStatus, LocalStore, Options, PullOptions};
    let (a, b) = (Registry::start(&[]), Registry::start(&[]));
    a.seed("test/busybox:latest", None);
    let dir = tempfile::tempdir().unwrap();
    let mut store = LocalStore::open(dir.path()).unwrap();
    let src = Reference::parse(&format!("{}/test/busybox:latest", a.addr)).unwrap();
    let opts = Options {
        tls_verify: false,
        ..Options::default()
    };
    let pulled = client::pull(
        &mut store,
        &src,
        &PullOptions {
            registry: opts.clone(),
            platform: None,
        },
    )
    .unwrap();
    let dst = Reference::parse(&format!("{}/chunked/busybox:c", b.addr)).unwrap();
    let chunked = Options {
        chunk_size: Some(64 * 1024),
        ..opts
    };
    let report = client::push(&store, &src.to_string(), &dst, &chunked).unwrap();
    assert!(
        report.blobs.iter().all(|(_, s)| *s == BlobStatus::Pushed),
        "{report:?}"
    );
    assert_eq!(report.manifest_digest, pulled.manifest_digest);
    // The registry checked every blob's digest when its upload closed; a fresh pull
    // from it verifies them again and unpacks the same layer.
    let back = skopeo_inspect(&dst.to_string(), &[]);
    assert_eq!(back["Digest"], pulled.manifest_digest.to_string().as_str());
    let berth = Berth::new();
    berth.ok(&["pull", "--tls-verify=false", &dst.to_string()]);
}

#[test]
fn save_and_load_round_trip_with_skopeo() {
    let reg = Registry::start(&[]);
    reg.seed("test/busybox:latest", None);
    let src = format!("{}/test/busybox:latest", reg.addr);
    let berth = Berth::new();
    berth.ok(&["pull", "--tls-verify=false", &src]);
    let digest = skopeo_inspect(&src, &[])["Digest"]
        .as_str()
        .unwrap()
        .to_string();
    let archive = reg.dir.path().join("saved.tar");
    berth.ok(&["image", "save", "-o", archive.to_str().unwrap(), &src]);

    // skopeo reads the archive both as docker-archive and as OCI archive; through the OCI
    // side the manifest is unchanged, so the digest is too.
    for (transport, repo) in [
        ("docker-archive", "fromsave/docker:1"),
        ("oci-archive", "fromsave/oci:1"),
    ] {
        let out = Command::new("skopeo")
            .args(["copy", "--dest-tls-verify=false"])
            .arg(format!("{transport}:{}", archive.display()))
            .arg(format!("docker://{}/{repo}", reg.addr))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo copy {transport}: {}",
            stderr(&out)
        );
    }
    let via_oci = skopeo_inspect(&format!("{}/fromsave/oci:1", reg.addr), &[]);
    assert_eq!(via_oci["Digest"], digest.as_str());

    // berth loads its own archive into a fresh store with the same digests.
    // (`image load` is `load`; `-q` quiets progress only: the names are still printed,
    // as Docker's CLI prints them.)
    let fresh = Berth::new();
    let out = fresh.ok(&["image", "load", "-q", "-i", archive.to_str().unwrap()]);
    assert!(out.contains(&format!("Loaded image: {src}")), "{out}");
    let v: Value = serde_json::from_str(&fresh.ok(&["image", "inspect", &src])).unwrap();
    assert_eq!(v[0]["Descriptor"]["digest"], digest.as_str());

    // A docker-archive written by skopeo loads too, under the name skopeo gave it.
    let theirs = reg.dir.path().join("skopeo.tar");
    let out = Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{src}"))
        .arg(format!("docker-archive:{}:other/name:v2", theirs.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo copy to docker-archive: {}",
        stderr(&out)
    );
    let third = Berth::new();
    let out = third.ok(&["load", "-i", theirs.to_str().unwrap()]);
    assert!(out.contains("Loaded image: other/name:v2"), "{out}");
    let v: Value = serde_json::from_str(&third.ok(&["image", "inspect", "other/name:v2"])).unwrap();
    let lower = v[0]["GraphDriver"]["Data"]["LowerDir"].as_str().unwrap();
    assert_eq!(
        std::fs::read(Path::new(lower).join("bin/busybox")).unwrap(),
        std::fs::read("/bin/busybox").unwrap()
    );
    // Not an archive at all: a clear error, nothing stored.
    let junk = reg.dir.path().join("junk.tar");
    std::fs::write(&junk, b"not a tar").unwrap();
    let out = third.run(&["load", "-i", junk.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(125));
}

/// Writes an OCI layout of a busybox layer plus a 16 MiB incompressible layer.
fn big_layout(dir: &Path) {
    use berth_image::layer::{write_layer, Compression};
    let put = berth_tests::layout_blob_writer(dir);
    let base = tempfile::tempdir().unwrap();
    berth_tests::busybox_rootfs(base.path());
    let big = tempfile::tempdir().unwrap();
    let mut random = vec![0u8; 16 << 20];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut random))
        .unwrap();
    std::fs::write(big.path().join("random.bin"), &random).unwrap();
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for (root, compression) in [
        (base.path(), Compression::Gzip),
        (big.path(), Compression::None),
    ] {
        let mut data = Vec::new();
        let diff = write_layer(root, &mut data, compression).unwrap();
        let (digest, size) = put(&data);
        layers.push(serde_json::json!({"mediaType": compression.oci_media_type(), "digest": digest, "size": size}));
        diff_ids.push(diff.diff_id.to_string());
    }
    let config = serde_json::json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids}});
    let (config_digest, config_size) = put(&serde_json::to_vec(&config).unwrap());
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": layers
    });
    let (digest, size) = put(&serde_json::to_vec(&manifest).unwrap());
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": size,
        "annotations": {"org.opencontainers.image.ref.name": "latest"}}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

#[test]
fn pull_killed_at_random_points_recovers() {
    let reg = Registry::start(&[]);
    let layout = reg.dir.path().join("big");
    big_layout(&layout);
    let image = format!("{}/big/image:latest", reg.addr);
    let out = Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:latest", layout.display()))
        .arg(format!("docker://{image}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo copy: {}", stderr(&out));

    // How long one whole pull takes here, to spread the kills over it.
    let probe = Berth::new();
    let started = std::time::Instant::now();
    probe.ok(&["pull", "--tls-verify=false", &image]);
    let full = started.elapsed().as_micros().max(1000) as u64;

    let berth = Berth::new();
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
        | 1;
    for _ in 0..20 {
        // xorshift: a cheap random delay in [0, full).
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = std::time::Duration::from_micros(seed % full);
        let mut child = Command::new(bin_dir().join("berth"))
            .arg("--root")
            .arg(berth.root.path())
            .args(["pull", "-q", "--tls-verify=false", &image])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
    }
    berth.ok(&["pull", "--tls-verify=false", &image]);

    // Consistent: every blob hashes to its name, no partial ingest or temp dir is left,
    // the image is recorded once and its layers are unpacked.
    let blobs = berth.root.path().join("blobs/sha256");
    for e in std::fs::read_dir(&blobs).unwrap().flatten() {
        let data = std::fs::read(e.path()).unwrap();
        let name = e.file_name().into_string().unwrap();
        assert_eq!(berth_image::digest::Digest::sha256_of(&data).hex(), name);
    }
    // A kill between a blob's rename and the removal of its ingest directory leaves an
    // empty remnant; partial data must not be left.
    let partial: Vec<_> = std::fs::read_dir(berth.root.path().join("ingest"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("data").exists())
        .collect();
    assert!(partial.is_empty(), "partial ingests left: {partial:?}");
    let temps: Vec<_> = std::fs::read_dir(berth.root.path().join("layers"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(temps.is_empty(), "temp layer dirs left: {temps:?}");
    assert_eq!(berth.images_json().len(), 1);
    // berth's own check agrees: every blob, layer and database reference is sound.
    let check = berth.ok(&["system", "check"]);
    assert!(check.starts_with("OK: "), "{check}");
    let v: Value = serde_json::from_str(&berth.ok(&["image", "inspect", &image])).unwrap();
    let lowers = v[0]["GraphDriver"]["Data"]["LowerDir"].as_str().unwrap();
    let top = lowers.split(':').next().unwrap();
    assert_eq!(
        std::fs::metadata(Path::new(top).join("random.bin"))
            .unwrap()
            .len(),
        16 << 20
    );
}

#[test]
fn https_registry_trusts_its_ca_from_certs_d() {
    let reg = Registry::start_tls();
    reg.seed("secure/busybox:latest", None);
    let image = format!("{}/secure/busybox:latest", reg.addr);
    let berth = Berth::new();

    // Verification is on by default: an unknown issuer is refused, with the reason.
    let out = berth.run(&["pull", &image]);
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    assert!(err.contains("certificate"), "{err}");
    // --tls-verify=false accepts it.
    berth.ok(&["pull", "--tls-verify=false", &image]);

    // The registry's CA where Docker keeps per-registry CAs makes it trusted.
    let certs_d = Path::new("/etc/docker/certs.d").join(&reg.addr);
    std::fs::create_dir_all(&certs_d).unwrap();
    std::fs::copy(reg.dir.path().join("ca.pem"), certs_d.join("ca.crt")).unwrap();
    let fresh = Berth::new();
    let out = fresh.run(&["pull", &image]);
    let _ = std::fs::remove_dir_all(&certs_d);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn registries_conf_marks_a_registry_insecure() {
    let reg = Registry::start_tls();
    reg.seed("lan/busybox:latest", None);
    let image = format!("{}/lan/busybox:latest", reg.addr);
    let berth = Berth::new();
    assert_eq!(berth.run(&["pull", &image]).status.code(), Some(125));

    // Listed as insecure in registries.conf (podman's file and env var): no flag needed,
    // and an explicit --tls-verify=true still wins.
    std::fs::write(
        berth.config.path().join("registries.conf"),
        format!(
            "[[registry]]\nlocation = \"{}\"\ninsecure = true\n",
            reg.addr
        ),
    )
    .unwrap();
    let out = berth.run(&["pull", "--tls-verify=true", &image]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    berth.ok(&["pull", &image]);

    // A broken file is named, not ignored.
    std::fs::write(berth.config.path().join("registries.conf"), "[[registry]\n").unwrap();
    let out = berth.run(&["pull", &image]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("registries.conf"), "{}", stderr(&out));
}

/// A token service for Docker's token auth: `alice:wonderland` gets what the scopes ask
/// for, anyone else nothing. Tokens are JWTs signed RS256 by openssl with a key whose
/// certificate travels in the `x5c` header, which the registry checks against its
/// `rootcertbundle`.
struct TokenService {
    dir: tempfile::TempDir,
    realm: String,
    issued: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl TokenService {
    fn start() -> TokenService {
        use base64::Engine as _;
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args([
                "-subj",
                "/CN=berth-token",
                "-keyout",
                "key.pem",
                "-out",
                "cert.pem",
            ])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl: {}", stderr(&out));
        let der = Command::new("openssl")
            .args(["x509", "-in", "cert.pem", "-outform", "DER"])
            .current_dir(dir.path())
            .output()
            .unwrap()
            .stdout;
        let x5c = base64::engine::general_purpose::STANDARD.encode(der);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let realm = format!("http://{}/token", listener.local_addr().unwrap());
        let key = dir.path().join("key.pem");
        let issued = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = issued.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let _ = answer_token(conn, &key, &x5c);
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        TokenService { dir, realm, issued }
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }
}

fn answer_token(conn: std::net::TcpStream, key: &Path, x5c: &str) -> std::io::Result<()> {
    use base64::Engine as _;
    use std::io::{BufRead, Write};
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut reader = std::io::BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut authorized = false;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        if h.to_ascii_lowercase().starts_with("authorization:") {
            authorized = h.trim_end().ends_with("Basic YWxpY2U6d29uZGVybGFuZA==");
        }
    }
    let mut conn = conn;
    if !authorized && target.contains("account=") {
        conn.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        return Ok(());
    }
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let mut access = Vec::new();
    for (k, v) in query.split('&').filter_map(|kv| kv.split_once('=')) {
        let v = percent_decode(v);
        if k != "scope" || !authorized {
            continue;
        }
        for scope in v.split(' ') {
            let mut parts = scope.splitn(3, ':');
            let (kind, name, actions) = (parts.next(), parts.next(), parts.next());
            if let (Some(kind), Some(name), Some(actions)) = (kind, name, actions) {
                access.push(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}));
            }
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [x5c]});
    let claims = serde_json::json!({
        "iss": "berth-test-issuer", "sub": "alice", "aud": "berth-test",
        "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}-{}", access.len()),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        b64.encode(header.to_string()),
        b64.encode(claims.to_string())
    );
    let mut sign = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    sign.stdin
        .take()
        .unwrap()
        .write_all(signing_input.as_bytes())?;
    let signature = sign.wait_with_output()?.stdout;
    let token = format!("{signing_input}.{}", b64.encode(signature));
    let body = serde_json::json!({"token": token, "expires_in": 300}).to_string();
    write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn bearer_token_auth_against_a_token_service() {
    let tokens = TokenService::start();
    let reg = Registry::start_full(&[], false, Some((&tokens.realm, &tokens.cert())));
    reg.seed("team/busybox:latest", Some("alice:wonderland"));
    let image = format!("{}/team/busybox:latest", reg.addr);
    let berth = Berth::new();

    let out = berth.run(&["pull", "--tls-verify=false", &image]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("unauthorized"), "{}", stderr(&out));

    let out = berth.run(&[
        "login",
        "--tls-verify=false",
        "-u",
        "alice",
        "-p",
        "nope",
        &reg.addr,
    ]);
    assert_eq!(out.status.code(), Some(125), "{}", stdout(&out));
    berth.ok(&[
        "login",
        "--tls-verify=false",
        "-u",
        "alice",
        "-p",
        "wonderland",
        &reg.addr,
    ]);

    let before = tokens.issued.load(std::sync::atomic::Ordering::SeqCst);
    berth.ok(&["pull", "--tls-verify=false", &image]);
    let used = tokens.issued.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert_eq!(used, 1, "one token (per scope) serves the whole pull");

    let pushed = format!("{}/team/copy:v2", reg.addr);
    berth.ok(&["tag", &image, &pushed]);
    // The mount needs pull on the source repository too: the registry's challenge says
    // so, and berth asks the token service for both scopes.
    let out = berth.ok(&["push", "--tls-verify=false", &pushed]);
    assert!(out.contains("Mounted from team/busybox"), "{out}");
    skopeo_inspect(&pushed, &["--creds", "alice:wonderland"]);
}

#[test]
fn system_check_names_corrupt_blobs_and_missing_layers() {
    let reg = Registry::start(&[]);
    reg.seed("check/busybox:latest", None);
    let src = format!("{}/check/busybox:latest", reg.addr);

    // A store after a pull is consistent.
    let berth = Berth::new();
    berth.ok(&["pull", "-q", "--tls-verify=false", &src]);
    let out = berth.ok(&["system", "check"]);
    assert!(out.starts_with("OK: "), "{out}");
    assert_eq!(out.lines().count(), 1, "{out}");

    // One flipped byte in the layer blob is caught and named.
    let inspect: Value = serde_json::from_str(&berth.ok(&["image", "inspect", &src])).unwrap();
    let manifest = inspect[0]["Descriptor"]["digest"].as_str().unwrap();
    let blobs = berth.root.path().join("blobs/sha256");
    let m: Value =
        serde_json::from_slice(&std::fs::read(blobs.join(&manifest["sha256:".len()..])).unwrap())
            .unwrap();
    let layer = m["layers"][0]["digest"].as_str().unwrap().to_string();
    let path = blobs.join(&layer["sha256:".len()..]);
    let mut data = std::fs::read(&path).unwrap();
    data[100] ^= 0xff;
    std::fs::write(&path, &data).unwrap();
    let out = berth.run(&["system", "check"]);
    assert!(!out.status.success());
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains(&layer), "{text}");

    // A deleted layer directory is caught and named, beside the corrupt blob.
    let lower = inspect[0]["GraphDriver"]["Data"]["LowerDir"]
        .as_str()
        .unwrap();
    std::fs::remove_dir_all(lower).unwrap();
    let chain = Path::new(lower).file_name().unwrap().to_str().unwrap();
    let out = berth.run(&["system", "check"]);
    assert!(!out.status.success());
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("layer") && l.contains(chain) && l.contains("missing")),
        "{text}"
    );

    // A missing blob an image needs is named too.
    std::fs::remove_file(&path).unwrap();
    let out = berth.run(&["system", "check"]);
    assert!(!out.status.success());
    let text = stdout(&out);
    assert!(
        text.lines()
            .any(|l| l.contains(&layer) && l.contains("missing")),
        "{text}"
    );
}

#[test]
fn concurrent_pulls_of_one_image_both_succeed() {
    let reg = Registry::start(&[]);
    let layout = reg.dir.path().join("big");
    big_layout(&layout);
    let image = format!("{}/big/concurrent:latest", reg.addr);
    let out = Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:latest", layout.display()))
        .arg(format!("docker://{image}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo copy: {}", stderr(&out));

    // Several rounds on fresh stores, three pulls each, so that the pulls overlap on
    // the same blobs' ingests, layer unpacking and the final record in every order.
    for round in 0..3 {
        let berth = Berth::new();
        let children: Vec<Child> = (0..3)
            .map(|_| {
                Command::new(bin_dir().join("berth"))
                    .arg("--root")
                    .arg(berth.root.path())
                    .args(["pull", "--tls-verify=false", &image])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}: a concurrent pull failed: {}\n{}",
                stdout(&out),
                stderr(&out)
            );
        }
        let check = berth.ok(&["system", "check"]);
        assert!(
            check.starts_with("OK: 4 blobs, 1 images, 2 layer"),
            "{check}"
        );
        assert_eq!(berth.images_json().len(), 1);
    }
}

/// Pushes a busybox image whose config runs `cmd` (so each `cmd` is a distinct image).
fn push_busybox(reg: &Registry, repo_tag: &str, cmd: &[&str]) {
    let archive = reg.dir.path().join(format!("{}.tar", cmd.join("_")));
    busybox_oci_archive(&archive, "busybox", cmd);
    let out = Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci-archive:{}", archive.display()))
        .arg(format!("docker://{}/{repo_tag}", reg.addr))
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo copy: {}", stderr(&out));
}

#[test]
fn image_prune_removes_dangling_then_all_unused() {
    let reg = Registry::start(&[]);
    let src = format!("{}/prune/app:latest", reg.addr);
    let berth = Berth::new();
    push_busybox(&reg, "prune/app:latest", &["sh"]);
    berth.ok(&["pull", "-q", "--tls-verify=false", &src]);
    let old_id = berth.images_json()[0]["ID"].as_str().unwrap().to_string();
    // The tag moves to a new image: the old one is left dangling.
    push_busybox(&reg, "prune/app:latest", &["echo", "new"]);
    berth.ok(&["pull", "-q", "--tls-verify=false", &src]);
    let dangling = berth.ok(&["images", "-q", "--filter", "dangling=true"]);
    assert_eq!(dangling.trim(), old_id);

    // Without -f it asks; no answer (stdin is empty) removes nothing.
    berth.ok(&["image", "prune"]);
    assert_eq!(berth.images_json().len(), 2);

    let out = berth.ok(&["image", "prune", "-f"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "Deleted Images:", "{out}");
    assert!(
        lines[1].starts_with(&format!("deleted: sha256:{old_id}")),
        "{out}"
    );
    assert_eq!(lines[2], "", "{out}");
    // Only the config and manifest blobs were the old image's own (the layer is shared).
    assert!(lines[3].starts_with("Total reclaimed space: "), "{out}");
    assert_ne!(lines[3], "Total reclaimed space: 0B", "{out}");
    assert_eq!(lines.len(), 4, "{out}");
    let rows = berth.images_json();
    assert_eq!(rows.len(), 1);
    assert_ne!(rows[0]["ID"], old_id.as_str());
    assert!(berth.ok(&["system", "check"]).starts_with("OK: "));

    // Nothing dangling is left.
    assert_eq!(
        berth.ok(&["image", "prune", "-f"]),
        "Total reclaimed space: 0B\n"
    );

    // -a removes the tagged image too, and with it every blob and layer.
    let out = berth.ok(&["image", "prune", "-a", "-f"]);
    assert!(out.starts_with("Deleted Images:\n"), "{out}");
    assert!(out.contains(&format!("untagged: {src}\n")), "{out}");
    assert!(out.contains("deleted: sha256:"), "{out}");
    let last = out.lines().last().unwrap();
    assert!(
        last.starts_with("Total reclaimed space: ") && last.ends_with("MB"),
        "the busybox layer is megabytes: {out}"
    );
    assert!(berth.images_json().is_empty());
    assert_eq!(
        std::fs::read_dir(berth.root.path().join("blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        berth.ok(&["system", "check"]).trim(),
        "OK: 0 blobs, 0 images, 0 layer references verified"
    );
}

#[test]
fn import_a_rootfs_tarball_with_changes_then_push() {
    let reg = Registry::start(&[]);
    let berth = Berth::new();
    let work = tempfile::tempdir().unwrap();
    let tgz = berth_tests::busybox_rootfs_tar(work.path(), "rootfs.tar.gz");

    let reference = format!("{}/imported/busybox:v1", reg.addr);
    let id = berth.ok(&[
        "import",
        "--change",
        r#"CMD ["echo", "hi"]"#,
        "-c",
        "ENTRYPOINT [\"/bin/sh\", \"-c\"]",
        "-c",
        "ENV GREETING=\"hello world\" MODE=test",
        "-c",
        "WORKDIR /srv",
        "-c",
        "USER 1000",
        "-c",
        "EXPOSE 8080 53/udp",
        "-c",
        "LABEL org.example.kind=imported",
        tgz.to_str().unwrap(),
        &reference,
    ]);
    let id = id.trim();
    assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");

    let v: Value = serde_json::from_str(&berth.ok(&["image", "inspect", &reference])).unwrap();
    let img = &v[0];
    assert_eq!(img["Id"], id);
    let c = &img["Config"];
    assert_eq!(c["Cmd"], serde_json::json!(["echo", "hi"]));
    assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/sh", "-c"]));
    assert_eq!(
        c["Env"],
        serde_json::json!(["GREETING=hello world", "MODE=test"])
    );
    assert_eq!(c["WorkingDir"], "/srv");
    assert_eq!(c["User"], "1000");
    assert_eq!(
        c["ExposedPorts"],
        serde_json::json!({"8080/tcp": {}, "53/udp": {}})
    );
    assert_eq!(c["Labels"]["org.example.kind"], "imported");
    assert_eq!(img["RootFS"]["Layers"].as_array().unwrap().len(), 1);
    let lower = img["GraphDriver"]["Data"]["LowerDir"].as_str().unwrap();
    assert_eq!(
        std::fs::read(Path::new(lower).join("bin/busybox")).unwrap(),
        std::fs::read("/bin/busybox").unwrap()
    );
    assert!(berth
        .ok(&["system", "check"])
        .starts_with("OK: 3 blobs, 1 images"));

    // Pushed, another client sees the same config and one gzip layer.
    berth.ok(&["push", "-q", "--tls-verify=false", &reference]);
    let theirs = skopeo_inspect(&reference, &[]);
    assert_eq!(theirs["Labels"]["org.example.kind"], "imported");
    assert_eq!(theirs["Layers"].as_array().unwrap().len(), 1);
    let manifest = skopeo_inspect(&reference, &["--raw"]);
    assert_eq!(manifest["config"]["digest"], id);
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let config = skopeo_inspect(&reference, &["--config"]);
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["echo", "hi"]));
    assert_eq!(config["config"]["WorkingDir"], "/srv");

    // A plain tar from stdin, no reference: a dangling image; a bad change is refused.
    let tar = berth_tests::busybox_rootfs_tar(work.path(), "rootfs.tar");
    let out = Command::new(bin_dir().join("berth"))
        .arg("--root")
        .arg(berth.root.path())
        .args(["import", "-"])
        .stdin(std::fs::File::open(&tar).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        berth
            .ok(&["images", "-q", "--filter", "dangling=true"])
            .trim(),
        &stdout(&out).trim()["sha256:".len()..][..12]
    );
    let out = berth.run(&["import", "-c", "RUN make", tar.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("RUN make"), "{}", stderr(&out));
}

#[test]
fn progress_is_plain_lines_on_a_non_terminal_and_quiet_with_q() {
    let reg = Registry::start(&[]);
    let layout = reg.dir.path().join("big");
    big_layout(&layout);
    let image = format!("{}/big/progress:latest", reg.addr);
    let out = Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:latest", layout.display()))
        .arg(format!("docker://{image}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo copy: {}", stderr(&out));
    let manifest = skopeo_inspect(&image, &["--raw"]);
    let layers: Vec<(String, u64)> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let d = l["digest"].as_str().unwrap();
            (
                d["sha256:".len()..][..12].to_string(),
                l["size"].as_u64().unwrap(),
            )
        })
        .collect();

    // stderr is a pipe here: one line when each layer starts, no terminal control
    // codes; the end of each layer is the "Pull complete" line on stdout, once.
    let berth = Berth::new();
    let out = berth.run(&["pull", "--tls-verify=false", &image]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(!err.contains('\x1b') && !err.contains('\r'), "{err:?}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), layers.len(), "{err}");
    let summary = stdout(&out);
    for (short, size) in &layers {
        let started = format!("{short}: Downloading ");
        let start = lines.iter().position(|l| l.starts_with(&started));
        let done = summary
            .lines()
            .filter(|l| *l == format!("{short}: Pull complete"))
            .count();
        assert!(start.is_some() && done == 1, "{err}\n{summary}");
        // The size, as `docker images` writes sizes (16 MiB of random data is ~16.8MB).
        let shown = &lines[start.unwrap()][started.len()..];
        assert!(shown.ends_with("MB") || shown.ends_with("kB"), "{shown}");
        if *size > 1_000_000 {
            assert!(
                shown.starts_with(&(size / 1_000_000).to_string()),
                "{shown} vs {size}"
            );
        }
    }

    // Pushing to a new repository: every layer is pushed, a start line on stderr and
    // its outcome once on stdout.
    let dest = format!("{}/big/progress-copy:latest", reg.addr);
    berth.ok(&["tag", &image, &dest]);
    let out = berth.run(&["push", "--tls-verify=false", &dest]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (err, summary) = (stderr(&out), stdout(&out));
    for (short, _) in &layers {
        assert!(err.contains(&format!("{short}: Pushing ")), "{err}");
        let done = summary
            .lines()
            .filter(|l| {
                *l == format!("{short}: Pushed") || l.starts_with(&format!("{short}: Mounted"))
            })
            .count();
        assert_eq!(done, 1, "{summary}");
    }

    // -q: nothing on stderr.
    let quiet = Berth::new();
    let out = quiet.run(&["pull", "-q", "--tls-verify=false", &image]);
    assert!(out.status.success());
    assert_eq!(stderr(&out), "");
    let out = quiet.run(&["push", "-q", "--tls-verify=false", &image]);
    assert!(out.status.success());
    assert_eq!(stderr(&out), "");
}

/// The blob of `reference`'s layer `i` as skopeo copies it, uncompressed by `tool`
/// (`gzip` or `zstd`), and its sha256: what the config's diff id must be.
fn skopeo_layer_diff_id(reference: &str, digest: &str, tool: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("image");
    let out = Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .arg(format!("dir:{}", dest.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo copy: {}", stderr(&out));
    let blob = dest.join(digest.trim_start_matches("sha256:"));
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("{tool} -dc < '{}' | sha256sum", blob.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{tool} -dc: {}", stderr(&out));
    format!("sha256:{}", stdout(&out).split_whitespace().next().unwrap())
}

#[test]
fn push_compresses_uncompressed_layers_gzip_or_zstd_once() {
    let reg = Registry::start(&[]);
    let berth = Berth::new();
    let work = tempfile::tempdir().unwrap();
    let tar = berth_tests::busybox_rootfs_tar(work.path(), "rootfs.tar");
    // A plain tar imports as an uncompressed layer, as a local store may keep them.
    let reference = format!("{}/plain/busybox:v1", reg.addr);
    let id = berth.ok(&["import", tar.to_str().unwrap(), &reference]);
    let id = id.trim().to_string();
    let local: Value = serde_json::from_str(&berth.ok(&["image", "inspect", &reference])).unwrap();
    let diff_id = local[0]["RootFS"]["Layers"][0]
        .as_str()
        .unwrap()
        .to_string();
    let tar_digest = format!(
        "sha256:{}",
        stdout(&Command::new("sha256sum").arg(&tar).output().unwrap())
            .split_whitespace()
            .next()
            .unwrap()
    );
    assert_eq!(diff_id, tar_digest, "import kept the tar as it was");

    // Default: gzip, the config (the image id) untouched, the blob a gzip of the tar.
    let out = berth.ok(&["push", "--tls-verify=false", &reference]);
    assert!(out.contains(": Pushed"), "{out}");
    let manifest = skopeo_inspect(&reference, &["--raw"]);
    assert_eq!(manifest["config"]["digest"], id.as_str());
    let layer = &manifest["layers"][0];
    assert_eq!(
        layer["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let gz_digest = layer["digest"].as_str().unwrap().to_string();
    assert_ne!(gz_digest, diff_id, "the layer went out uncompressed");
    assert_eq!(
        skopeo_layer_diff_id(&reference, &gz_digest, "gzip"),
        diff_id
    );
    let config = skopeo_inspect(&reference, &["--config"]);
    assert_eq!(config["rootfs"]["diff_ids"][0], diff_id.as_str());
    let blobs_after_first = berth.ok(&["system", "check"]);
    assert!(
        blobs_after_first.starts_with("OK: 4 blobs"),
        "{blobs_after_first}"
    );

    // Again: the same compressed blob, already in the registry, so nothing is uploaded
    // and no new blob is made; the local image is still the same one.
    let again = berth.ok(&["push", "--tls-verify=false", &reference]);
    assert!(again.contains(": Layer already exists"), "{again}");
    assert!(!again.contains("Pushed"), "{again}");
    let digest_of = |out: &str| out.split("digest: ").nth(1).map(|s| s[..71].to_string());
    assert_eq!(digest_of(&again), digest_of(&out));
    assert_eq!(berth.ok(&["system", "check"]), blobs_after_first);
    let local: Value = serde_json::from_str(&berth.ok(&["image", "inspect", &reference])).unwrap();
    assert_eq!(local[0]["Id"], id.as_str());

    // zstd: the zstd media type, and berth pulls it back into a fresh store.
    let zref = format!("{}/plain/busybox:zstd", reg.addr);
    berth.ok(&["tag", &reference, &zref]);
    berth.ok(&[
        "push",
        "-q",
        "--tls-verify=false",
        "--compression-format",
        "zstd",
        &zref,
    ]);
    let manifest = skopeo_inspect(&zref, &["--raw"]);
    assert_eq!(manifest["config"]["digest"], id.as_str());
    let layer = &manifest["layers"][0];
    assert_eq!(
        layer["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    let zst_digest = layer["digest"].as_str().unwrap().to_string();
    assert_eq!(skopeo_layer_diff_id(&zref, &zst_digest, "zstd"), diff_id);
    let other = Berth::new();
    other.ok(&["pull", "-q", "--tls-verify=false", &zref]);
    let theirs: Value = serde_json::from_str(&other.ok(&["image", "inspect", &zref])).unwrap();
    assert_eq!(theirs[0]["Id"], id.as_str());
    let lower = theirs[0]["GraphDriver"]["Data"]["LowerDir"]
        .as_str()
        .unwrap();
    assert_eq!(
        std::fs::read(Path::new(lower).join("bin/busybox")).unwrap(),
        std::fs::read("/bin/busybox").unwrap()
    );

    // --force-compression at another level makes another gzip blob of the same tar.
    let fref = format!("{}/plain/busybox:fast", reg.addr);
    berth.ok(&["tag", &reference, &fref]);
    berth.ok(&[
        "push",
        "-q",
        "--tls-verify=false",
        "--force-compression",
        "--compression-level",
        "9",
        &fref,
    ]);
    let manifest = skopeo_inspect(&fref, &["--raw"]);
    let fast = manifest["layers"][0]["digest"].as_str().unwrap();
    assert_ne!(fast, gz_digest);
    assert_eq!(skopeo_layer_diff_id(&fref, fast, "gzip"), diff_id);
    let out = berth.run(&["push", "--compression-level", "10", &fref]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));

    // Removing the image frees the compressed forms with it.
    for r in [&reference, &zref, &fref] {
        berth.ok(&["rmi", r]);
    }
    assert!(
        berth.ok(&["system", "check"]).starts_with("OK: 0 blobs"),
        "compressed blobs were left behind"
    );
}

#[test]
fn manifest_lists_are_made_from_pushed_images_and_pulled_by_platform() {
    let reg = Registry::start(&[]);
    let berth = Berth::new();
    let tar = berth_tests::busybox_rootfs_tar(reg.dir.path(), "rootfs.tar");
    let tar = tar.to_str().unwrap();
    let amd = format!("{}/app:amd64", reg.addr);
    // In another repository: the push mounts its blobs and manifest into app's.
    let arm = format!("{}/other:arm64", reg.addr);
    let list = format!("{}/app:multi", reg.addr);
    berth.ok(&["import", "--platform", "linux/amd64", tar, &amd]);
    berth.ok(&["import", "--platform", "linux/arm64", tar, &arm]);
    for i in [&amd, &arm] {
        berth.ok(&["push", "--tls-verify=false", i]);
    }
    let out = berth.ok(&[
        "manifest",
        "create",
        "--tls-verify=false",
        &list,
        &amd,
        &arm,
    ]);
    assert!(out.contains("Created manifest list"), "{out}");
    berth.ok(&["manifest", "annotate", "--variant", "v8", &list, &arm]);
    let local: Value = serde_json::from_str(&berth.ok(&["manifest", "inspect", &list])).unwrap();
    let archs: Vec<(&str, Option<&str>)> = local["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["platform"]["architecture"].as_str().unwrap(),
                m["platform"]["variant"].as_str(),
            )
        })
        .collect();
    assert_eq!(archs, [("amd64", None), ("arm64", Some("v8"))]);
    // A second create without --amend is refused; with it, the list is kept.
    let o = berth.run(&["manifest", "create", "--tls-verify=false", &list, &amd]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--amend"), "{}", stderr(&o));
    let digest = berth.ok(&["manifest", "push", "--purge", "--tls-verify=false", &list]);
    assert!(digest.trim().starts_with("sha256:"), "{digest}");
    assert!(
        berth.run(&["manifest", "rm", &list]).status.code() == Some(1),
        "--purge left it"
    );
    // The registry serves the list under that digest, and skopeo reads it as one.
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{list}"))
        .output()
        .unwrap();
    assert!(raw.status.success(), "{}", stderr(&raw));
    let index: Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2);
    assert_eq!(
        berth_image::Digest::sha256_of(&raw.stdout).to_string(),
        digest.trim()
    );
    // Another store pulls the arm64 entry by platform.
    let other = Berth::new();
    other.ok(&[
        "pull",
        "--tls-verify=false",
        "--platform",
        "linux/arm64",
        &list,
    ]);
    let v: Value = serde_json::from_str(&other.ok(&["image", "inspect", &list])).unwrap();
    assert_eq!(v[0]["Architecture"], "arm64");
    // inspect of the pushed list reads the registry's.
    let remote: Value =
        serde_json::from_str(&berth.ok(&["manifest", "inspect", "--tls-verify=false", &list]))
            .unwrap();
    assert_eq!(remote["manifests"], index["manifests"]);
}
