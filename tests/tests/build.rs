//! End-to-end tests of `berth build`: every instruction's effect on the image config,
//! RUN in a real container, COPY/ADD semantics, multi-stage targets, the cache matrix,
//! reproducible digests, failures, Dockerfile errors and `--check`, and a handful of
//! buildah's conformance Dockerfiles (from `$BERTH_TESTDATA/buildah-conformance`).
//!
//! Each test has its own store (`--root`) holding a busybox image loaded with
//! `berth load`, so tests run in parallel without seeing each other.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use berth_tests::{bin_dir, busybox_oci_archive, mounts_containing, stderr, stdout};
use serde_json::Value;

/// The busybox archive, made once per test process.
fn archive() -> &'static Path {
    static ARCHIVE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, p) = ARCHIVE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("busybox.tar");
        busybox_oci_archive(&p, "busybox", &["sh"]);
        (dir, p)
    });
    p
}

/// A private store with `busybox` in it.
struct Berth {
    root: tempfile::TempDir,
}

impl Berth {
    fn new() -> Berth {
        let b = Berth {
            root: tempfile::tempdir().unwrap(),
        };
        b.ok(&["load", "-i", archive().to_str().unwrap()]);
        b
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin_dir().join("berth"));
        c.arg("--root").arg(self.root.path()).args(args);
        c.stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
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

    /// Builds `ctx` with extra flags; returns (image id, progress output).
    fn build(&self, ctx: &Path, flags: &[&str]) -> (String, String) {
        let iid = ctx.with_extension("iid");
        let mut args = vec!["build", "--iidfile", iid.to_str().unwrap()];
        args.extend_from_slice(flags);
        args.push(ctx.to_str().unwrap());
        let out = self.run(&args);
        assert!(
            out.status.success(),
            "berth {args:?} failed:\n{}",
            stderr(&out)
        );
        let id = std::fs::read_to_string(&iid).unwrap();
        let _ = std::fs::remove_file(&iid);
        (id, stderr(&out))
    }

    fn inspect(&self, name: &str) -> Value {
        let v: Value = serde_json::from_str(&self.ok(&["image", "inspect", name])).unwrap();
        v[0].clone()
    }

    /// The image's manifest, read from the store.
    fn manifest(&self, image: &str) -> Value {
        let digest = self.inspect(image)["Descriptor"]["digest"]
            .as_str()
            .unwrap()
            .to_string();
        let hex = digest.strip_prefix("sha256:").unwrap();
        let blob = self.root.path().join("blobs/sha256").join(hex);
        serde_json::from_slice(&std::fs::read(blob).unwrap()).unwrap()
    }

    /// The path of `file` in the topmost layer of `image` that has it.
    fn find_in_layers(&self, image: &str, file: &str) -> Option<PathBuf> {
        let v = self.inspect(image);
        let lower = v["GraphDriver"]["Data"]["LowerDir"]
            .as_str()
            .unwrap()
            .to_string();
        lower
            .split(':')
            .map(|d| Path::new(d).join(file.trim_start_matches('/')))
            .find(|p| p.symlink_metadata().is_ok())
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        // Nothing a build mounted may outlive it.
        let left = mounts_containing(self.root.path());
        if !std::thread::panicking() {
            assert!(left.is_empty(), "mounts left behind: {left:?}");
        }
    }
}

/// A context directory with the given files (`name`, `content`).
fn context(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in files {
        let p = dir.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    dir
}

fn history(b: &Berth, image: &str) -> String {
    b.ok(&["history", "--no-trunc", image])
}

#[test]
fn metadata_instructions_set_the_config() {
    let b = Berth::new();
    let ctx = context(&[(
        "Dockerfile",
        r#"FROM busybox
MAINTAINER someone <a@b.c>
ARG VERSION=1.2
ENV APP=/srv/app PATH=/bin:/usr/local/bin
ENV DERIVED=${APP}/v$VERSION
LABEL org.example.version=$VERSION "with space"="a b"
EXPOSE 80 53/udp 8000-8001
VOLUME ["/data", "/logs"]
USER nobody
WORKDIR /srv
WORKDIR app
SHELL ["/bin/sh", "-ec"]
STOPSIGNAL SIGQUIT
HEALTHCHECK --interval=5s --retries=2 CMD wget -q localhost || exit 1
ENTRYPOINT ["/bin/echo"]
CMD ignored with shell form
ONBUILD RUN echo triggered > /tmp/trig
"#,
    )]);
    b.build(ctx.path(), &["-t", "meta:1", "--label", "extra=yes"]);
    let v = b.inspect("meta:1");
    let c = &v["Config"];
    assert_eq!(v["Author"], "someone <a@b.c>");
    let env: Vec<&str> = c["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(env.contains(&"APP=/srv/app"), "{env:?}");
    assert!(env.contains(&"DERIVED=/srv/app/v1.2"), "{env:?}");
    assert!(env.contains(&"PATH=/bin:/usr/local/bin"), "{env:?}");
    assert!(
        !env.iter().any(|e| e.starts_with("VERSION=")),
        "ARG leaked: {env:?}"
    );
    assert_eq!(c["Labels"]["org.example.version"], "1.2");
    assert_eq!(c["Labels"]["with space"], "a b");
    assert_eq!(c["Labels"]["extra"], "yes");
    for p in ["80/tcp", "53/udp", "8000/tcp", "8001/tcp"] {
        assert!(c["ExposedPorts"][p].is_object(), "{p}: {c}");
    }
    assert!(c["Volumes"]["/data"].is_object() && c["Volumes"]["/logs"].is_object());
    assert_eq!(c["User"], "nobody");
    assert_eq!(c["WorkingDir"], "/srv/app");
    assert_eq!(c["Shell"], serde_json::json!(["/bin/sh", "-ec"]));
    assert_eq!(c["StopSignal"], "SIGQUIT");
    assert_eq!(
        c["Healthcheck"]["Test"],
        serde_json::json!(["CMD-SHELL", "wget -q localhost || exit 1"])
    );
    assert_eq!(c["Healthcheck"]["Interval"], 5_000_000_000u64);
    assert_eq!(c["Healthcheck"]["Retries"], 2);
    assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/echo"]));
    // Shell form runs under the SHELL in force.
    assert_eq!(
        c["Cmd"],
        serde_json::json!(["/bin/sh", "-ec", "ignored with shell form"])
    );
    assert_eq!(
        c["OnBuild"],
        serde_json::json!(["RUN echo triggered > /tmp/trig"])
    );
    let h = history(&b, "meta:1");
    assert!(
        h.contains("ENV APP=/srv/app PATH=/bin:/usr/local/bin"),
        "{h}"
    );
    assert!(
        h.contains("EXPOSE [53/udp 80/tcp 8000/tcp 8001/tcp]"),
        "{h}"
    );
    // Metadata steps add no layer; each WORKDIR made its directory (as the USER).
    assert_eq!(v["RootFS"]["Layers"].as_array().unwrap().len(), 3);
    let app = b
        .find_in_layers("meta:1", "/srv/app")
        .expect("WORKDIR's directory");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(app).unwrap().uid(), 65534);

    // The ONBUILD trigger fires in an image built on this one, once.
    let child = context(&[("Dockerfile", "FROM meta:1\nLABEL child=1\n")]);
    let (_, progress) = b.build(child.path(), &["-t", "child"]);
    assert!(
        progress.contains("[onbuild] RUN echo triggered"),
        "{progress}"
    );
    let trig = b
        .find_in_layers("child", "/tmp/trig")
        .expect("trigger's file");
    assert_eq!(std::fs::read_to_string(trig).unwrap(), "triggered\n");
    assert!(b.inspect("child")["Config"]["OnBuild"].is_null());

    // ENTRYPOINT resets a CMD inherited from the base, as Docker does.
    let ctx = context(&[("Dockerfile", "FROM busybox\nENTRYPOINT [\"/bin/ls\"]\n")]);
    b.build(ctx.path(), &["-t", "ep"]);
    assert!(b.inspect("ep")["Config"]["Cmd"].is_null());
}

#[test]
fn run_and_copy_build_real_layers() {
    let b = Berth::new();
    let tar_src = context(&[("inner/x.txt", "from the tarball")]);
    let ctx = context(&[
        ("dir/sub/f.txt", "f"),
        ("dir/top.txt", "top"),
        ("dir/skip.log", "s"),
        ("one.log", "1"),
        ("two.log", "2"),
        ("other.txt", "o"),
    ]);
    let st = Command::new("tar")
        .arg("-czf")
        .arg(ctx.path().join("bundle.tar.gz"))
        .arg("-C")
        .arg(tar_src.path())
        .arg("inner")
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::write(
        ctx.path().join("Dockerfile"),
        r#"FROM busybox AS build
RUN echo made-by-run > /made && mkdir -p /out && echo artifact > /out/art
FROM busybox
COPY dir /copied/
COPY *.log /logs/
COPY --chown=nobody:nogroup --chmod=640 other.txt /owned.txt
COPY --chown=1234 dir/top.txt /numeric
ADD bundle.tar.gz /unpacked/
COPY --from=build /out/art /made /from-stage/
COPY <<EOF /heredoc.txt
hello $HOSTNAME-literal
EOF
WORKDIR /work
COPY other.txt rel
COPY --exclude=*.log --exclude=sub dir /excl/
COPY --parents dir/sub/f.txt /par/
RUN <<EOF
set -ex
test "$(cat /copied/sub/f.txt)" = f
test "$(cat /copied/top.txt)" = top
test ! -e /copied/dir
test "$(cat /logs/one.log /logs/two.log)" = 12
test "$(stat -c %u:%g:%a /owned.txt)" = 65534:65534:640
test "$(stat -c %u:%g /numeric)" = 1234:1234
test "$(stat -c %u:%g /copied/top.txt)" = 0:0
test "$(cat /unpacked/inner/x.txt)" = "from the tarball"
test "$(cat /from-stage/art)" = artifact
test "$(cat /from-stage/made)" = made-by-run
test -f /work/rel
test -f /excl/top.txt && test ! -e /excl/skip.log && test ! -e /excl/sub
test -f /par/dir/sub/f.txt
grep -q hello /heredoc.txt
echo ok > /checked
EOF
RUN rm /numeric
"#,
    )
    .unwrap();
    b.build(ctx.path(), &["-t", "files"]);
    // The RUN's file is in a layer that `berth run` would mount.
    let checked = b
        .find_in_layers("files", "/checked")
        .expect("RUN's file in a layer");
    assert_eq!(std::fs::read_to_string(checked).unwrap(), "ok\n");
    // A deletion in a later RUN is a whiteout over the earlier COPY's file.
    let v = b.inspect("files");
    let lower = v["GraphDriver"]["Data"]["LowerDir"].as_str().unwrap();
    let top = lower.split(':').next().unwrap();
    let wh = std::fs::symlink_metadata(Path::new(top).join("numeric")).expect("whiteout");
    use std::os::unix::fs::FileTypeExt;
    assert!(wh.file_type().is_char_device(), "{wh:?}");
    // The built image is usable as a base, and its layers hold what RUN made.
    let ctx2 = context(&[(
        "Dockerfile",
        "FROM files\nRUN test ! -e /numeric && cat /checked /from-stage/art > /both\n",
    )]);
    b.build(ctx2.path(), &["-t", "derived"]);
    let both = b.find_in_layers("derived", "/both").unwrap();
    assert_eq!(std::fs::read_to_string(both).unwrap(), "ok\nartifact\n");
    // An exec-form RUN and --network none (only loopback).
    let ctx3 = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN [\"/bin/sh\", \"-c\", \"ls /sys/class/net > /nets\"]\n",
    )]);
    b.build(ctx3.path(), &["-t", "net", "--network", "none"]);
    let nets = b.find_in_layers("net", "/nets").unwrap();
    assert_eq!(std::fs::read_to_string(nets).unwrap(), "lo\n");
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            files_under(&e.path(), out);
        } else if ft.is_file() {
            out.push(e.path());
        }
    }
}

#[test]
fn run_mounts_cache_tmpfs_bind_and_secret() {
    let b = Berth::new();
    let ctx = context(&[
        ("data/d", "bound"),
        (
            "Dockerfile",
            r#"FROM busybox AS tools
RUN mkdir /tools && echo tool > /tools/t
FROM busybox
RUN --mount=type=cache,target=/cache/deep,id=c1 echo $(( $(cat /cache/deep/n 2>/dev/null || echo 0) + 1 )) > /cache/deep/n && cp /cache/deep/n /count
RUN --mount=type=tmpfs,target=/scratch touch /scratch/x && test -f /scratch/x
RUN --mount=type=bind,source=data,target=/data cat /data/d > /from-bind
RUN --mount=type=bind,from=tools,source=/tools,target=/t cat /t/t > /from-tools
RUN --mount=type=secret,id=tok,required test "$(tr a-z A-Z < /run/secrets/tok)" = S3CR3T && echo used > /secret-used
"#,
        ),
    ]);
    let secret = ctx.path().with_extension("secret");
    std::fs::write(&secret, "s3cr3t").unwrap();
    let sflag = format!("id=tok,src={}", secret.display());
    b.build(ctx.path(), &["-t", "mounts", "--secret", &sflag]);
    let read = |f: &str| std::fs::read_to_string(b.find_in_layers("mounts", f).unwrap()).unwrap();
    assert_eq!(read("/count"), "1\n");
    assert_eq!(read("/from-bind"), "bound");
    assert_eq!(read("/from-tools"), "tool\n");
    assert_eq!(read("/secret-used"), "used\n");
    for gone in ["/cache", "/scratch", "/data", "/t", "/run"] {
        assert!(
            b.find_in_layers("mounts", gone).is_none(),
            "{gone} in a layer"
        );
    }
    // The secret is in no layer file, nor in the config or history.
    let v = b.inspect("mounts");
    let lower = v["GraphDriver"]["Data"]["LowerDir"]
        .as_str()
        .unwrap()
        .to_string();
    let mut files = Vec::new();
    for d in lower.split(':') {
        files_under(Path::new(d), &mut files);
    }
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !bytes.windows(6).any(|w| w == b"s3cr3t"),
            "secret in {}",
            f.display()
        );
    }
    assert!(!v.to_string().contains("s3cr3t"));
    assert!(!history(&b, "mounts").contains("s3cr3t"));
    // The cache mount persists across builds.
    b.build(
        ctx.path(),
        &["-t", "mounts", "--no-cache", "--secret", &sflag],
    );
    assert_eq!(read("/count"), "2\n");
    // A required secret that was not given fails the build.
    let out = b.run(&["build", "--no-cache", ctx.path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("secret tok not found"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn target_builds_only_the_stages_it_needs() {
    let b = Berth::new();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox AS broken\nRUN exit 7\nFROM busybox AS base\nRUN echo base > /base\nFROM base AS good\nRUN cat /base > /good\nFROM broken\n",
    )]);
    let (_, progress) = b.build(ctx.path(), &["--target", "good", "-t", "good"]);
    assert!(!progress.contains("exit 7"), "{progress}");
    assert!(b.find_in_layers("good", "/good").is_some());
    // Without --target the last stage needs the broken one.
    let out = b.run(&["build", ctx.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let out = b.run(&["build", "--target", "nope", ctx.path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("target stage \"nope\" could not be found"),
        "{}",
        stderr(&out)
    );
}

fn cached_steps(progress: &str) -> Vec<String> {
    // `#N [stage k/n] INSTR` then `#N CACHED`.
    let mut titles = std::collections::HashMap::new();
    let mut out = Vec::new();
    for l in progress.lines() {
        let Some((n, rest)) = l.split_once(' ') else {
            continue;
        };
        if rest.starts_with('[') {
            titles.insert(
                n.to_string(),
                rest.split_once("] ").map_or("", |x| x.1).to_string(),
            );
        } else if rest == "CACHED" {
            out.push(titles.get(n).cloned().unwrap_or_default());
        }
    }
    out
}

#[test]
fn cache_matrix() {
    let b = Berth::new();
    let ctx = context(&[
        ("app/main.txt", "v1"),
        ("app/ignored.tmp", "x"),
        (".dockerignore", "**/*.tmp\n"),
        (
            "Dockerfile",
            "FROM busybox\nARG V=1\nCOPY app /app\nRUN cat /app/main.txt > /copy && echo $V > /v\nRUN echo done\n",
        ),
    ]);
    let p = ctx.path();
    let (first, out) = b.build(p, &[]);
    assert!(cached_steps(&out).is_empty(), "{out}");

    let (again, out) = b.build(p, &[]);
    assert_eq!(cached_steps(&out).len(), 3, "{out}");
    assert_eq!(first, again);

    // mtime-only change: still a hit.
    let st = Command::new("touch")
        .args(["-d", "2001-01-01"])
        .arg(p.join("app/main.txt"))
        .status()
        .unwrap();
    assert!(st.success());
    let (id, out) = b.build(p, &[]);
    assert_eq!(cached_steps(&out).len(), 3, "{out}");
    assert_eq!(id, first);

    // A change to an ignored file: still a hit.
    std::fs::write(p.join("app/ignored.tmp"), "changed").unwrap();
    let (id, out) = b.build(p, &[]);
    assert_eq!(cached_steps(&out).len(), 3, "{out}");
    assert_eq!(id, first);

    // A mode change is a miss.
    std::fs::set_permissions(
        p.join("app/main.txt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let (_, out) = b.build(p, &[]);
    assert!(cached_steps(&out).is_empty(), "{out}");
    std::fs::set_permissions(
        p.join("app/main.txt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();

    // An ARG change misses from its first use (the RUN), not before.
    let (_, out) = b.build(p, &["--build-arg", "V=2"]);
    assert_eq!(cached_steps(&out), vec!["COPY app /app"], "{out}");

    // A content change misses the COPY and everything after it.
    std::fs::write(p.join("app/main.txt"), "v2").unwrap();
    let (changed, out) = b.build(p, &[]);
    assert!(cached_steps(&out).is_empty(), "{out}");
    assert_ne!(changed, first);

    // --no-cache runs everything, and gives the same image (reproducible).
    let (nocache, out) = b.build(p, &["--no-cache"]);
    assert!(cached_steps(&out).is_empty(), "{out}");
    assert_eq!(nocache, changed);

    // --no-cache-filter misses the named stage only (here the only one).
    let (_, out) = b.build(p, &["--no-cache-filter", "0"]);
    assert!(cached_steps(&out).is_empty(), "{out}");
    // The local store keeps layers uncompressed unless asked (as Docker's and
    // Podman's do); gzip and zstd layers are other blobs, so other cache
    // entries and manifests, with the same diff ids and so the same image id.
    let (plain, _) = b.build(p, &["-t", "plain"]);
    let (gz, out) = b.build(p, &["--compression", "gzip", "-t", "gz"]);
    assert!(cached_steps(&out).is_empty(), "{out}");
    let (zs, out) = b.build(p, &["--compression", "zstd", "-t", "zs"]);
    assert!(cached_steps(&out).is_empty(), "{out}");
    assert_eq!(gz, zs);
    assert_eq!(plain, gz);
    assert_ne!(
        b.inspect("gz")["Descriptor"]["digest"],
        b.inspect("zs")["Descriptor"]["digest"]
    );
    let diff_ids = b.inspect("plain")["RootFS"]["Layers"].clone();
    for (tag, media_type) in [
        ("plain", "application/vnd.oci.image.layer.v1.tar"),
        ("gz", "application/vnd.oci.image.layer.v1.tar+gzip"),
        ("zs", "application/vnd.oci.image.layer.v1.tar+zstd"),
    ] {
        let layers = b.manifest(tag)["layers"].as_array().unwrap().clone();
        assert_eq!(layers.len(), 3, "{tag}: busybox, COPY, RUN");
        for (i, l) in layers.iter().enumerate().skip(1) {
            assert_eq!(l["mediaType"], media_type, "{tag}");
            // An uncompressed blob is its own tar: digest == diff id.
            assert_eq!(l["digest"] == diff_ids[i], tag == "plain", "{tag}: {l}");
        }
    }

    // `builder prune` forgets the cache but keeps what images use.
    let out = b.ok(&["builder", "prune", "-f"]);
    assert!(out.contains("Deleted"), "{out}");
    let (again, out) = b.build(p, &[]);
    assert!(cached_steps(&out).is_empty(), "{out}");
    assert_eq!(again, changed);
    b.ok(&["image", "inspect", &first]);
}

/// Context files' content digests are remembered by path, inode, size, mtime
/// and ctime, so that a rebuild reads only changed files. An edit that keeps
/// the size and puts the mtime back, or a new file of the same size and mtime
/// renamed over the old one, must still miss the cache and give a new layer.
#[test]
fn edits_that_keep_size_and_mtime_still_miss_the_cache() {
    let b = Berth::new();
    let ctx = context(&[
        ("data/a.txt", "aaaa"),
        ("data/b.txt", "keep"),
        (
            "Dockerfile",
            "FROM busybox\nCOPY data /data/\nRUN cat /data/a.txt > /seen\n",
        ),
    ]);
    let p = ctx.path();
    let a = p.join("data/a.txt");
    let mtime = std::fs::metadata(&a).unwrap().modified().unwrap();
    let put_mtime_back = |path: &Path| {
        let f = std::fs::File::options().write(true).open(path).unwrap();
        f.set_modified(mtime).unwrap();
    };
    let seen =
        |tag: &str| std::fs::read_to_string(b.find_in_layers(tag, "/seen").unwrap()).unwrap();
    let copy_layer = |tag: &str| b.inspect(tag)["RootFS"]["Layers"][1].clone();
    // Files changed in the last second are read again on every build; wait
    // so that these digests are remembered and the next builds use them.
    let settle = || std::thread::sleep(std::time::Duration::from_millis(1100));
    settle();
    let (first, _) = b.build(p, &["-t", "v1"]);
    let (again, out) = b.build(p, &["-t", "v1"]);
    assert_eq!(again, first);
    assert_eq!(
        cached_steps(&out),
        vec!["COPY data /data/", "RUN cat /data/a.txt > /seen"]
    );

    // In place: same inode, same size, the mtime put back.
    std::fs::write(&a, "bbbb").unwrap();
    put_mtime_back(&a);
    let (second, out) = b.build(p, &["-t", "v2"]);
    assert!(cached_steps(&out).is_empty(), "{out}");
    assert_ne!(second, first);
    assert_ne!(copy_layer("v2"), copy_layer("v1"));
    assert_eq!(seen("v2"), "bbbb");
    assert_eq!(seen("v1"), "aaaa");

    // A new file (new inode) with the same size and mtime renamed over it.
    settle();
    let (_, out) = b.build(p, &["-t", "v2"]);
    assert_eq!(cached_steps(&out).len(), 2, "{out}");
    let tmp = p.join("data/.a.tmp");
    std::fs::write(&tmp, "cccc").unwrap();
    put_mtime_back(&tmp);
    std::fs::rename(&tmp, &a).unwrap();
    let (third, out) = b.build(p, &["-t", "v3"]);
    assert!(cached_steps(&out).is_empty(), "{out}");
    assert_ne!(third, second);
    assert_ne!(copy_layer("v3"), copy_layer("v2"));
    assert_eq!(seen("v3"), "cccc");
}

#[test]
fn same_content_gives_the_same_digest() {
    let files = [
        ("src/a.txt", "alpha"),
        ("src/deep/b.txt", "beta"),
        (
            "Dockerfile",
            "FROM busybox\nCOPY src /src\nRUN mkdir /gen && date > /dev/null && cp -r /src /gen/ && touch /gen/stamp\nCMD [\"ls\"]\n",
        ),
    ];
    let one = context(&files);
    let two = context(&files);
    for f in ["src/a.txt", "src/deep/b.txt", "src"] {
        let st = Command::new("touch")
            .args(["-d", "1999-09-09 09:09"])
            .arg(two.path().join(f))
            .status()
            .unwrap();
        assert!(st.success());
    }
    // Two stores: nothing is shared, both builds run every step.
    let (b1, b2) = (Berth::new(), Berth::new());
    let (id1, _) = b1.build(one.path(), &["-t", "r"]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (id2, _) = b2.build(two.path(), &["-t", "r"]);
    assert_eq!(id1, id2);
    let (d1, d2) = (b1.inspect("r"), b2.inspect("r"));
    assert_eq!(d1["Descriptor"]["digest"], d2["Descriptor"]["digest"]);
    assert_eq!(d1["Created"], "1970-01-01T00:00:00Z");

    // SOURCE_DATE_EPOCH sets the times (and so the digest).
    let out = b1
        .cmd(&["build", "-q", one.path().to_str().unwrap()])
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let id3 = stdout(&out).trim().to_string();
    assert_ne!(id3, id1);
    assert_eq!(b1.inspect(&id3)["Created"], "2023-11-14T22:13:20Z");
}

#[test]
fn a_failing_run_names_the_step_and_leaves_the_store_unchanged() {
    let b = Berth::new();
    let before = b.ok(&["images", "-a", "-q"]);
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN echo fine > /fine\nRUN echo about to fail; echo oops >&2; exit 3\nRUN echo never\n",
    )]);
    let out = b.run(&["build", "-t", "broken", ctx.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("Dockerfile:3"), "{err}");
    assert!(err.contains("exit code: 3"), "{err}");
    assert!(err.contains("oops"), "output tail: {err}");
    assert!(!err.contains("never"), "{err}");
    assert_eq!(b.ok(&["images", "-a", "-q"]), before);
    let work = b.root.path().join("build/work");
    let left: Vec<_> = std::fs::read_dir(&work)
        .map(|d| d.collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "scratch dirs left: {left:?}");
}

#[test]
fn dockerfile_errors_name_the_line_and_check_lints() {
    let b = Berth::new();
    let ctx = context(&[("Dockerfile", "FROM busybox\nRUN true\nFROOM x\n")]);
    let out = b.run(&["build", ctx.path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Dockerfile:3: unknown instruction: FROOM"),
        "{}",
        stderr(&out)
    );

    let ctx = context(&[("Dockerfile", "FROM busybox\nCOPY --from=nowhere_ / /\n")]);
    let out = b.run(&["build", ctx.path().to_str().unwrap()]);
    assert!(stderr(&out).contains("Dockerfile:2:"), "{}", stderr(&out));

    let ctx = context(&[("Dockerfile", "FROM busybox\nCOPY missing.txt /\n")]);
    let out = b.run(&["build", ctx.path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("Dockerfile:2:"), "{}", stderr(&out));
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));

    // --check: lint findings fail, a clean file passes; nothing is built.
    let ctx = context(&[("Dockerfile", "FROM busybox AS Base\nrun true\n")]);
    let out = b.run(&["build", "--check", ctx.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("StageNameCasing") && err.contains("Dockerfile:1"),
        "{err}"
    );
    let ctx = context(&[("Dockerfile", "FROM busybox\nRUN exit 1\n")]);
    let out = b.run(&["build", "--check", ctx.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));

    // -f - reads the Dockerfile from stdin.
    let mut child = b
        .cmd(&["build", "-q", "-f", "-", ctx.path().to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"FROM busybox\nLABEL from=stdin\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out).trim().to_string();
    assert_eq!(b.inspect(&id)["Config"]["Labels"]["from"], "stdin");

    // `-`: a tar archive of the context on stdin.
    let ctx = context(&[
        ("Dockerfile", "FROM busybox\nCOPY data.txt /\n"),
        ("data.txt", "in the tarball"),
    ]);
    let tarball = ctx.path().with_extension("tar");
    let st = Command::new("tar")
        .arg("-cf")
        .arg(&tarball)
        .arg("-C")
        .arg(ctx.path())
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    let out = b
        .cmd(&["build", "-q", "-t", "fromtar", "-"])
        .stdin(std::fs::File::open(&tarball).unwrap())
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&tarball);
    assert!(out.status.success(), "{}", stderr(&out));
    let data = b.find_in_layers("fromtar", "/data.txt").unwrap();
    assert_eq!(std::fs::read_to_string(data).unwrap(), "in the tarball");
}

/// buildah's conformance cases that only need busybox. Each builds, and the cases'
/// own `RUN ... && ! ls ...` lines check the file tree inside the build.
#[test]
fn buildah_conformance_cases() {
    let Ok(data) = std::env::var("BERTH_TESTDATA") else {
        println!("skipped: BERTH_TESTDATA is not set (see shared/testdata/README.md)");
        return;
    };
    let dir = Path::new(&data).join("buildah-conformance");
    if !dir.is_dir() {
        println!("skipped: {} does not exist", dir.display());
        return;
    }
    let b = Berth::new();
    b.ok(&["tag", "busybox", "mirror.gcr.io/busybox"]);
    let empty = tempfile::tempdir().unwrap();
    // (Dockerfile, context)
    let cases: &[(&str, Option<&str>)] = &[
        ("Dockerfile.run.args", None),
        ("Dockerfile.copyfrom_1", None),
        ("Dockerfile.copyfrom_2", None),
        ("Dockerfile.copyfrom_5", None),
        ("Dockerfile.copyfrom_6", None),
        ("Dockerfile.copyfrom_7", None),
        ("Dockerfile.heredoc-quoting", None),
        ("env/precedence/Dockerfile", Some("env/precedence")),
        ("dir/Dockerfile", Some("dir")),
        ("wildcard/Dockerfile", Some("wildcard")),
        ("copyblahblub/Dockerfile", Some("copyblahblub")),
        (
            "overlapdirwithslash/Dockerfile",
            Some("overlapdirwithslash"),
        ),
    ];
    for (file, ctx) in cases {
        let ctx = ctx.map_or(empty.path().to_path_buf(), |c| dir.join(c));
        let tag = format!("conf{}", file.len());
        let out = b.run(&[
            "build",
            "-t",
            &tag,
            "-f",
            dir.join(file).to_str().unwrap(),
            ctx.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{file}:\n{}", stderr(&out));
    }
    // The wildcard case put exactly the matching files under $DIR/test.
    let out = b.run(&[
        "build",
        "-t",
        "wild",
        "-f",
        dir.join("wildcard/Dockerfile").to_str().unwrap(),
        dir.join("wildcard").to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let test_dir = b.find_in_layers("wild", "/usr/test").unwrap();
    let mut names: Vec<String> = std::fs::read_dir(test_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut want: Vec<String> = std::fs::read_dir(dir.join("wildcard/dir2"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".b") || n.ends_with(".c"))
        .collect();
    want.sort();
    assert_eq!(names, want);
}

/// `--output type=oci` writes an archive other tools read: skopeo verifies every blob
/// while copying it and sees the config berth wrote.
#[test]
fn oci_output_is_valid_for_skopeo() {
    // skopeo comes with `make setup`; a missing one fails below rather than skipping.
    let b = Berth::new();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN echo hi > /hi\nCMD [\"cat\", \"/hi\"]\n",
    )]);
    let out_dir = tempfile::tempdir().unwrap();
    let archive = out_dir.path().join("img.tar");
    let dest = format!("type=oci,dest={}", archive.display());
    let (id, _) = b.build(ctx.path(), &["-t", "oci:1", "--output", &dest]);
    // An --output build does not touch the store's tags.
    assert!(!b.run(&["image", "inspect", "oci:1"]).status.success());
    let src = format!("oci-archive:{}", archive.display());
    let copy = out_dir.path().join("copy");
    let out = Command::new("skopeo")
        .args(["copy", &src])
        .arg(format!("dir:{}", copy.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo copy: {}", stderr(&out));
    let out = Command::new("skopeo")
        .args(["inspect", "--config", &src])
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo inspect: {}", stderr(&out));
    let config: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["cat", "/hi"]));
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);
    // The config skopeo read is the one whose digest is the image id.
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", &src])
        .output()
        .unwrap();
    let manifest: Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(manifest["config"]["digest"], id.as_str());

    // type=local writes the file tree, type=tar an archive of it.
    let local = out_dir.path().join("tree");
    let dest = format!("type=local,dest={}", local.display());
    b.build(ctx.path(), &["--output", &dest]);
    assert_eq!(std::fs::read_to_string(local.join("hi")).unwrap(), "hi\n");
    assert!(local.join("bin/busybox").is_file());
    let tar = out_dir.path().join("tree.tar");
    let dest = format!("type=tar,dest={}", tar.display());
    b.build(ctx.path(), &["--output", &dest]);
    let list = Command::new("tar").arg("-tf").arg(&tar).output().unwrap();
    let names = stdout(&list);
    assert!(
        names.lines().any(|l| l.trim_start_matches("./") == "hi"),
        "{names}"
    );
}

/// `busybox httpd` serving a directory on a loopback port; killed on drop.
struct Httpd {
    child: std::process::Child,
    port: u16,
}

impl Httpd {
    fn serve(dir: &Path) -> Httpd {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("/bin/busybox")
            .args(["httpd", "-f", "-p"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-h")
            .arg(dir)
            .spawn()
            .unwrap();
        berth_tests::wait_for(
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
            "httpd to listen",
        );
        Httpd { child, port }
    }
}

impl Drop for Httpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn add_downloads_urls() {
    let b = Berth::new();
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("file.txt"), "served").unwrap();
    let httpd = Httpd::serve(www.path());
    let url = format!("http://127.0.0.1:{}/file.txt", httpd.port);
    let sum = format!("sha256:{}", "0".repeat(64));
    let ctx = context(&[(
        "Dockerfile",
        &format!("FROM busybox\nADD {url} /dl/\nADD {url} /renamed\nRUN test \"$(stat -c %a /dl/file.txt)\" = 600\n"),
    )]);
    b.build(ctx.path(), &["-t", "dl"]);
    let f = b.find_in_layers("dl", "/dl/file.txt").unwrap();
    assert_eq!(std::fs::read_to_string(f).unwrap(), "served");
    assert!(b.find_in_layers("dl", "/renamed").is_some());
    // A wrong --checksum fails the build.
    let ctx = context(&[(
        "Dockerfile",
        &format!("FROM busybox\nADD --checksum={sum} {url} /x\n"),
    )]);
    let out = b.run(&["build", ctx.path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("digest mismatch"), "{}", stderr(&out));
    let good = berth_image::Digest::sha256_of(b"served").to_string();
    let ctx = context(&[(
        "Dockerfile",
        &format!("FROM busybox\nADD --checksum={good} {url} /x\n"),
    )]);
    b.build(ctx.path(), &["-t", "sum"]);
    assert!(b.find_in_layers("sum", "/x").is_some());
}
