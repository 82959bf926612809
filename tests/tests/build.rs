//! End-to-end tests of `berth build`: every instruction's effect on the image config,
//! RUN in a real container, COPY/ADD semantics, multi-stage targets, the cache matrix,
//! reproducible digests, failures, Dockerfile errors and `--check`. buildah's conformance
//! Dockerfiles are built and compared with podman's builds in `conformance.rs`.
//!
//! Each test has its own store (`--root`) holding a busybox image loaded with
//! `berth load`, so tests run in parallel without seeing each other.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use berth_tests::{bin_dir, busybox_oci_archive, mounts_containing, stderr, stdout, Dockerd};
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
        h.contains("EXPOSE [80/tcp 53/udp 8000/tcp 8001/tcp]"),
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

/// The history lines and config fields BuildKit composes itself, found different by
/// building the same Dockerfiles with Docker: COPY/ADD name only `--parents`,
/// `--chown` and `--chmod`; ARG shows the values taken; RUN lists every ARG in scope,
/// a parent stage's included; HEALTHCHECK is Go's `%q` of its struct; ONBUILD has no
/// history entry and fires in a stage built FROM the stage that declared it; CMD sets
/// ArgsEscaped; a scratch stage works in `/`.
#[test]
fn history_and_config_read_as_buildkits() {
    let b = Berth::new();
    let ctx = context(&[
        ("a.txt", "a\n"),
        (
            "Dockerfile",
            "ARG VER=1.0\n\
             FROM busybox AS base\n\
             ARG VER\n\
             ARG EMPTY\n\
             ONBUILD RUN echo triggered > /trig\n\
             HEALTHCHECK --interval=90s --retries=3 CMD true\n\
             FROM base AS child\n\
             RUN cat /trig && echo \"$VER\" > /ver\n\
             COPY --from=base --chmod=0644 --link --chown=1:2 /etc/group /etc/passwd /dst/\n\
             CMD [\"sh\"]\n\
             FROM scratch AS empty\n\
             COPY --from=child /ver /\n",
        ),
    ]);
    b.build(
        ctx.path(),
        &["-t", "child", "--target", "child", "--build-arg", "VER=2.0"],
    );
    let h = history(&b, "child");
    for line in [
        "ARG VER=2.0",
        "ARG EMPTY",
        r#"HEALTHCHECK &{["CMD-SHELL" "true"] "1m30s" "0s" "0s" "0s" '\x03'}"#,
        "RUN |2 VER=2.0 EMPTY= /bin/sh -c cat /trig && echo \"$VER\" > /ver # buildkit",
        "COPY --chown=1:2 --chmod=0644 /etc/group /etc/passwd /dst/ # buildkit",
    ] {
        assert!(h.contains(line), "{line:?} not in\n{h}");
    }
    assert!(!h.contains("ONBUILD"), "{h}");
    assert!(!h.contains("--from"), "{h}");
    let c = &b.inspect("child")["Config"];
    assert_eq!(c["ArgsEscaped"], true, "{c}");
    assert!(c["OnBuild"].is_null(), "{c}");
    let ver = b.find_in_layers("child", "/ver").expect("/ver");
    assert_eq!(std::fs::read_to_string(ver).unwrap(), "2.0\n");

    b.build(ctx.path(), &["-t", "empty", "--build-arg", "VER=2.0"]);
    assert_eq!(b.inspect("empty")["Config"]["WorkingDir"], "/");
}

/// BuildKit runs a RUN heredoc that starts with `#!` as a file under /dev/pipes, so
/// its interpreter line chooses the program; nothing of it lands in the layer.
#[test]
fn a_run_heredoc_with_an_interpreter_line_runs_as_a_file() {
    let b = Berth::new();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN <<EOF\n#!/bin/sh\necho \"$0\" > /script\nEOF\n",
    )]);
    b.build(ctx.path(), &["-t", "script", "--network", "none"]);
    let file = b.find_in_layers("script", "/script").expect("/script");
    assert_eq!(std::fs::read_to_string(file).unwrap(), "/dev/pipes/EOF\n");
    assert!(b.find_in_layers("script", "/dev/pipes").is_none());
    assert!(history(&b, "script").contains("/bin/sh -c /dev/pipes/EOF # buildkit"));
}

/// `COPY --link` copies onto an empty tree that becomes the layer (BuildKit's merge):
/// the directories on the way are made anew, 0755 and owned by `--chown`'s owner or
/// root, replacing the base's metadata, and a symlink of the base is not followed.
/// With `--chmod` BuildKit ignores `--link`.
#[test]
fn copy_link_makes_its_directories_anew() {
    let b = Berth::new();
    let ctx = context(&[
        ("a.txt", "a\n"),
        (
            "Dockerfile",
            "FROM busybox\n\
             RUN mkdir -p /app /kept /real && chmod 700 /app /kept && chown 1000:1000 /app /kept \\\n\
              && ln -s /real /lnk\n\
             COPY --link a.txt /app/\n\
             COPY --link a.txt /lnk/\n\
             COPY --link --chmod=644 a.txt /kept/\n\
             RUN stat -c '%n %a %u %F' /app /lnk /kept > /stat && ls /real > /real.txt\n",
        ),
    ]);
    b.build(ctx.path(), &["-t", "link", "--network", "none"]);
    let stat = b.find_in_layers("link", "/stat").expect("/stat");
    assert_eq!(
        std::fs::read_to_string(stat).unwrap(),
        "/app 755 0 directory\n/lnk 755 0 directory\n/kept 700 1000 directory\n"
    );
    let real = b.find_in_layers("link", "/real.txt").expect("/real.txt");
    assert_eq!(std::fs::read_to_string(real).unwrap(), "");
}

/// `FROM --platform=$BUILDPLATFORM img` and `FROM img` in one Dockerfile ask for the
/// same image on this host (a common cross-compiling layout); berth refused it as
/// two platforms of one name.
#[test]
fn build_platform_and_host_platform_are_one_platform() {
    let b = Berth::new();
    let ctx = context(&[(
        "Dockerfile",
        "FROM --platform=$BUILDPLATFORM busybox AS tools\n\
         ARG TARGETARCH\n\
         RUN echo $TARGETARCH > /arch\n\
         FROM busybox\n\
         COPY --from=tools /arch /arch\n",
    )]);
    b.build(ctx.path(), &["-t", "plat", "--network", "none"]);
    assert!(b.find_in_layers("plat", "/arch").is_some());
}

/// A FIFO a RUN made is in the layer, and `berth export` of a container of the image
/// writes it under its name (the tar crate used the host path and failed).
#[test]
fn export_writes_fifos_a_run_made() {
    let b = Berth::new();
    let ctx = context(&[("Dockerfile", "FROM busybox\nRUN mkfifo /pipe\n")]);
    b.build(ctx.path(), &["-t", "fifo", "--network", "none"]);
    let id = b.ok(&["create", "fifo", "true"]);
    let out = b.root.path().join("export.tar");
    b.ok(&["export", "-o", out.to_str().unwrap(), id.trim()]);
    let mut ar = tar::Archive::new(std::fs::File::open(&out).unwrap());
    let fifo = ar
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| e.path().unwrap().ends_with("pipe"))
        .expect("./pipe in the export");
    assert_eq!(fifo.header().entry_type(), tar::EntryType::Fifo);
    b.ok(&["rm", id.trim()]);
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
ADD --unpack=false bundle.tar.gz /packed/
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
test -f /packed/bundle.tar.gz
test ! -e /packed/inner
test "$(cat /from-stage/art)" = artifact
test "$(cat /from-stage/made)" = made-by-run
test -f /work/rel
test -f /excl/top.txt
test ! -e /excl/skip.log
test ! -e /excl/sub
test -f /par/dir/sub/f.txt
grep -q hello /heredoc.txt
echo ok > /checked
EOF
RUN rm /numeric
"#,
    )
    .unwrap();
    b.build(ctx.path(), &["-t", "files"]);
    // Flags that change what a COPY writes are in its cache key: --parents after the
    // same COPY without it runs again.
    for (name, flag, path) in [
        ("flat", "", "/p/f.txt"),
        ("parents", "--parents", "/p/dir/sub/f.txt"),
    ] {
        let file = ctx.path().join(format!("Dockerfile.{name}"));
        let text = format!("FROM busybox\nCOPY {flag} dir/sub/f.txt /p/\nRUN test -f {path}\n");
        std::fs::write(&file, text).unwrap();
        b.build(ctx.path(), &["-f", file.to_str().unwrap()]);
    }
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
RUN --mount=type=secret,id=tok,env=TOK test "$(echo $TOK | tr a-z A-Z)" = S3CR3T && test ! -e /run/secrets/tok && echo env > /secret-env
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
    assert_eq!(
        read("/secret-env"),
        "env\n",
        "env= holds the secret, no file"
    );
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
    // The BUILDKIT_DOCKERFILE_CHECK build argument's skip= applies to --check as well.
    let skipped = b.run(&[
        "build",
        "--check",
        "--build-arg",
        "BUILDKIT_DOCKERFILE_CHECK=skip=StageNameCasing,ConsistentInstructionCasing",
        ctx.path().to_str().unwrap(),
    ]);
    assert!(skipped.status.success(), "{}", stderr(&skipped));
    let ctx = context(&[("Dockerfile", "FROM busybox\nRUN exit 1\n")]);
    let out = b.run(&["build", "--check", ctx.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    // UndefinedVar in a stage on a local image knows that image's ENV; on an image the
    // store lacks it says nothing (BuildKit would read its config; a check pulls nothing).
    let base = context(&[("Dockerfile", "FROM busybox\nENV GREETING=hi\n")]);
    b.build(base.path(), &["-t", "greeter"]);
    let ctx = context(&[(
        "Dockerfile",
        "FROM greeter\nCOPY $GREETING$ZZZ /\nFROM notlocal\nCOPY $YYY /\n",
    )]);
    let out = b.run(&["build", "--check", ctx.path().to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("Usage of undefined variable '$ZZZ'"), "{err}");
    assert!(!err.contains("$GREETING") && !err.contains("$YYY"), "{err}");

    // A build lints too: findings are listed after it; `# check=error=true` (or the
    // BUILDKIT_DOCKERFILE_CHECK build argument) makes them fail it before any step.
    let lint = context(&[("Dockerfile", "FROM busybox\nMAINTAINER me\n")]);
    let out = b.run(&["build", lint.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(" - MaintainerDeprecated: ") && stderr(&out).contains("(line 2)"),
        "{}",
        stderr(&out)
    );
    let strict = context(&[(
        "Dockerfile",
        "# check=error=true\nFROM busybox\nMAINTAINER me\nRUN touch /ran\n",
    )]);
    let out = b.run(&["build", strict.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("lint violation found for rules: MaintainerDeprecated"),
        "{}",
        stderr(&out)
    );
    assert!(
        !stderr(&out).contains("touch /ran"),
        "no step ran: {}",
        stderr(&out)
    );
    let skip = "BUILDKIT_DOCKERFILE_CHECK=skip=MaintainerDeprecated;error=true";
    let out = b.run(&[
        "build",
        "--build-arg",
        skip,
        strict.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("warning found"), "{}", stderr(&out));

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
    // Plain, and compressed as Docker's CLI takes it: gzip, bzip2, xz, zstd.
    for (tag, compress) in [
        ("plain", None),
        ("gzip", Some("--gzip")),
        ("bzip2", Some("--bzip2")),
        ("xz", Some("--xz")),
        ("zstd", Some("--zstd")),
    ] {
        let tarball = ctx.path().with_extension("tar");
        let st = Command::new("tar")
            .args(compress)
            .arg("-cf")
            .arg(&tarball)
            .arg("-C")
            .arg(ctx.path())
            .arg(".")
            .status()
            .unwrap();
        assert!(st.success());
        let name = format!("fromtar:{tag}");
        let out = b
            .cmd(&["build", "-q", "-t", &name, "-"])
            .stdin(std::fs::File::open(&tarball).unwrap())
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&tarball);
        assert!(out.status.success(), "{tag}: {}", stderr(&out));
        let data = b.find_in_layers(&name, "/data.txt").unwrap();
        assert_eq!(std::fs::read_to_string(data).unwrap(), "in the tarball");
    }
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

/// A server process the test started on `port`; killed on drop.
struct Server {
    child: std::process::Child,
    port: u16,
}

impl Server {
    /// Spawns `cmd` (told to listen on `port`) and waits until the port accepts.
    fn start(cmd: &mut Command, port: u16, what: &str) -> Server {
        let child = cmd.spawn().unwrap();
        berth_tests::wait_for(
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
            &format!("{what} to listen"),
        );
        Server { child, port }
    }

    /// `busybox httpd` serving `dir` on `ip` (127.0.0.1 or 0.0.0.0).
    fn httpd(dir: &Path, ip: &str) -> Server {
        let port = berth_tests::free_port();
        Server::start(
            Command::new("/bin/busybox")
                .args(["httpd", "-f", "-p"])
                .arg(format!("{ip}:{port}"))
                .arg("-h")
                .arg(dir),
            port,
            "httpd",
        )
    }

    /// `git-daemon` exporting every repository under `base` on loopback.
    fn git_daemon(base: &Path) -> Server {
        let port = berth_tests::free_port();
        // git-daemon itself, not `git daemon`: the wrapper's child would outlive a kill.
        let exec_path = Command::new("git").arg("--exec-path").output().unwrap();
        let exec_path = String::from_utf8(exec_path.stdout).unwrap();
        Server::start(
            Command::new(Path::new(exec_path.trim()).join("git-daemon"))
                .args(["--reuseaddr", "--export-all", "--listen=127.0.0.1"])
                .arg(format!("--port={port}"))
                .arg(format!("--base-path={}", base.display()))
                .arg(base),
            port,
            "git daemon",
        )
    }
}

impl Drop for Server {
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
    let httpd = Server::httpd(www.path(), "127.0.0.1");
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
    // A remote archive is added as it is, unless --unpack=true.
    let made = tempfile::tempdir().unwrap();
    std::fs::create_dir(made.path().join("inner")).unwrap();
    std::fs::write(made.path().join("inner/x.txt"), "packed").unwrap();
    let st = Command::new("tar")
        .arg("-czf")
        .arg(www.path().join("a.tar.gz"))
        .arg("-C")
        .arg(made.path())
        .arg("inner")
        .status()
        .unwrap();
    assert!(st.success());
    let tgz = format!("http://127.0.0.1:{}/a.tar.gz", httpd.port);
    let ctx = context(&[(
        "Dockerfile",
        &format!("FROM busybox\nADD {tgz} /as-is/\nADD --unpack=true {tgz} /unpacked/\n"),
    )]);
    b.build(ctx.path(), &["-t", "tgz"]);
    assert!(b.find_in_layers("tgz", "/as-is/a.tar.gz").is_some());
    let x = b.find_in_layers("tgz", "/unpacked/inner/x.txt").unwrap();
    assert_eq!(std::fs::read_to_string(x).unwrap(), "packed");
}

// ---------------------------------------------------------------------------
// Shared cache (--cache-to / --cache-from), --push, --output type=docker|registry.
// ---------------------------------------------------------------------------

/// A RUN whose output differs on every run: an image id that matches across
/// two stores proves the step did not run again.
const FRESH_RUN: &str = "cat /proc/sys/kernel/random/uuid";

/// `berth build` with the environment a registry test needs; returns (id, progress).
fn build_env(b: &Berth, ctx: &Path, flags: &[&str], env: &[(&str, &Path)]) -> (String, String) {
    let iid = ctx.with_extension("iid");
    let mut args = vec!["build", "--iidfile", iid.to_str().unwrap()];
    args.extend_from_slice(flags);
    args.push(ctx.to_str().unwrap());
    let mut cmd = b.cmd(&args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "berth {args:?} failed:\n{}",
        stderr(&out)
    );
    let id = std::fs::read_to_string(&iid).unwrap();
    let _ = std::fs::remove_file(&iid);
    (id, stderr(&out))
}

fn file_in(b: &Berth, image: &str, file: &str) -> String {
    let p = b
        .find_in_layers(image, file)
        .unwrap_or_else(|| panic!("{file} not in {image}"));
    std::fs::read_to_string(p).unwrap()
}

#[test]
fn cache_to_local_is_reused_by_an_empty_store() {
    let ctx = context(&[
        ("a.txt", "alpha"),
        (
            "Dockerfile",
            &format!("FROM busybox\nCOPY a.txt /a.txt\nRUN {FRESH_RUN} > /id\nWORKDIR /w\nRUN echo two > two\n"),
        ),
    ]);
    let cache = tempfile::tempdir().unwrap();
    let to = format!("type=local,dest={}", cache.path().display());
    let from = format!("type=local,src={}", cache.path().display());

    let a = Berth::new();
    let (id_a, _) = a.build(ctx.path(), &["-t", "out", "--cache-to", &to]);
    // An OCI image layout: index.json names the cache manifest by its tag.
    assert!(cache.path().join("oci-layout").is_file());
    let index: Value =
        serde_json::from_slice(&std::fs::read(cache.path().join("index.json")).unwrap()).unwrap();
    assert_eq!(
        index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        "latest"
    );

    // A fresh store (only busybox) with the cache: every step is a hit, the
    // RUN's output is the first build's, so the image is the same.
    let b = Berth::new();
    let (id_b, out) = b.build(ctx.path(), &["-t", "out", "--cache-from", &from]);
    assert_eq!(cached_steps(&out).len(), 4, "{out}");
    assert_eq!(id_b, id_a, "{out}");
    assert_eq!(file_in(&b, "out", "/id"), file_in(&a, "out", "/id"));
    assert_eq!(file_in(&b, "out", "/w/two"), "two\n");

    // Without it the RUN runs again and makes another image.
    let c = Berth::new();
    let (id_c, out) = c.build(ctx.path(), &[]);
    assert!(cached_steps(&out).is_empty(), "{out}");
    assert_ne!(id_c, id_a);

    // A cache that is not there is only a warning.
    let missing = format!("type=local,src={}", cache.path().join("none").display());
    let (_, out) = c.build(ctx.path(), &["--cache-from", &missing]);
    assert!(out.contains("WARNING: cache import"), "{out}");
}

#[test]
fn cache_mode_max_carries_every_stage_and_min_only_the_final_one() {
    let ctx = context(&[(
        "Dockerfile",
        &format!("FROM busybox AS builder\nRUN {FRESH_RUN} > /built\nFROM busybox\nCOPY --from=builder /built /built\nRUN {FRESH_RUN} > /final\n"),
    )]);
    let min = tempfile::tempdir().unwrap();
    let max = tempfile::tempdir().unwrap();
    let a = Berth::new();
    let (id_a, _) = a.build(
        ctx.path(),
        &[
            "--cache-to",
            &format!("type=local,dest={}", min.path().display()),
            "--cache-to",
            &format!("type=local,dest={},mode=max", max.path().display()),
        ],
    );

    let b = Berth::new();
    let from = format!("type=local,src={}", max.path().display());
    let (id_b, out) = b.build(ctx.path(), &["--cache-from", &from]);
    assert_eq!(cached_steps(&out).len(), 3, "{out}");
    assert_eq!(id_b, id_a);

    // mode=min has no record of the builder stage: its RUN runs, and so the
    // steps that depend on its result miss too.
    let c = Berth::new();
    let from = format!("type=local,src={}", min.path().display());
    let (id_c, out) = c.build(ctx.path(), &["--cache-from", &from]);
    assert!(
        !cached_steps(&out).iter().any(|s| s.contains("/built")),
        "{out}"
    );
    assert_ne!(id_c, id_a);
}

/// Debian's `docker-registry` on a loopback port, with its own storage; killed on drop.
struct LocalRegistry {
    dir: tempfile::TempDir,
    addr: String,
    child: std::process::Child,
}

impl LocalRegistry {
    fn start() -> LocalRegistry {
        let dir = tempfile::tempdir().unwrap();
        let port = berth_tests::free_port();
        let addr = format!("127.0.0.1:{port}");
        let cfg = dir.path().join("config.yml");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        // Plain http: berth allows it for registries listed as insecure.
        std::fs::write(
            dir.path().join("registries.conf"),
            format!("[[registry]]\nlocation = \"{addr}\"\ninsecure = true\n"),
        )
        .unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("log")).unwrap())
            .spawn()
            .expect("docker-registry (Debian package docker-registry) is needed");
        berth_tests::wait_for(
            || std::net::TcpStream::connect(&addr).is_ok(),
            "docker-registry to listen",
        );
        LocalRegistry { dir, addr, child }
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("registries.conf")
    }

    /// `skopeo inspect --raw` of `repo_tag`: the manifest the registry serves.
    fn manifest(&self, repo_tag: &str) -> Value {
        let out = Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{}/{repo_tag}", self.addr))
            .output()
            .expect("skopeo is needed");
        assert!(out.status.success(), "skopeo inspect: {}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn cache_and_image_go_through_a_registry() {
    let reg = LocalRegistry::start();
    let conf = reg.conf();
    let env = [("CONTAINERS_REGISTRIES_CONF", conf.as_path())];
    let ctx = context(&[(
        "Dockerfile",
        &format!(
            "FROM busybox\nRUN {FRESH_RUN} > /id\nRUN echo two > /two\nCMD [\"cat\", \"/id\"]\n"
        ),
    )]);
    let cache_ref = format!("{}/cache/app:main", reg.addr);
    let app = format!("{}/app:1", reg.addr);

    let a = Berth::new();
    let to = format!("type=registry,ref={cache_ref},mode=max");
    let (id_a, _) = build_env(
        &a,
        ctx.path(),
        &["-t", &app, "--push", "--cache-to", &to],
        &env,
    );
    // --push: the registry serves the image berth built (its config is the id).
    assert_eq!(reg.manifest("app:1")["config"]["digest"], id_a.as_str());
    // The cache is an OCI manifest whose config is berth's cache record list.
    let cache = reg.manifest("cache/app:main");
    assert_eq!(
        cache["config"]["mediaType"],
        "application/vnd.berth.build.cache.config.v1+json"
    );
    assert_eq!(cache["layers"].as_array().unwrap().len(), 2);
    // The push recorded nothing in the store.
    let images = a.ok(&["images", "-q"]);
    assert_eq!(images.lines().count(), 2, "{images}");

    let b = Berth::new();
    let from = format!("type=registry,ref={cache_ref}");
    let (id_b, out) = build_env(&b, ctx.path(), &["-t", "got", "--cache-from", &from], &env);
    assert_eq!(cached_steps(&out).len(), 2, "{out}");
    assert_eq!(id_b, id_a);

    // --output type=registry is --push.
    let app2 = format!("{}/app:2", reg.addr);
    build_env(
        &b,
        ctx.path(),
        &["-t", &app2, "--output", "type=registry"],
        &env,
    );
    assert_eq!(reg.manifest("app:2")["config"]["digest"], id_a.as_str());
    // --push without a tag is refused before anything is built.
    let out = b.run(&["build", "--push", ctx.path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("needs a tag"), "{}", stderr(&out));
}

#[test]
fn docker_output_is_an_archive_docker_load_reads() {
    let b = Berth::new();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN echo hi > /hi\nCMD [\"cat\", \"/hi\"]\n",
    )]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("img.tar");
    let dest = format!("type=docker,dest={}", file.display());
    let (id, _) = b.build(ctx.path(), &["-t", "dock:1", "--output", &dest]);
    // Docker's own layout: manifest.json with the tag and the config's file.
    let mut ar = tar::Archive::new(std::fs::File::open(&file).unwrap());
    let manifest: Value = ar
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| e.path().unwrap().to_str() == Some("manifest.json"))
        .map(|e| serde_json::from_reader(e).unwrap())
        .expect("manifest.json in the archive");
    assert_eq!(manifest[0]["RepoTags"][0], "dock:1");
    assert_eq!(manifest[0]["Layers"].as_array().unwrap().len(), 2);
    // skopeo reads it as a docker archive, and another store loads it as the same image.
    let out = Command::new("skopeo")
        .args(["inspect", "--config"])
        .arg(format!("docker-archive:{}", file.display()))
        .output()
        .expect("skopeo is needed");
    assert!(out.status.success(), "skopeo inspect: {}", stderr(&out));
    let config: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["cat", "/hi"]));
    let other = Berth::new();
    other.ok(&["load", "-i", file.to_str().unwrap()]);
    assert_eq!(other.inspect("dock:1")["Id"], id.as_str());
    // And Docker itself loads it as the same image.
    let dockerd = Dockerd::start();
    dockerd.ok(&["load", "-i", file.to_str().unwrap()]);
    let docker_id = dockerd.ok(&["image", "inspect", "--format", "{{.Id}}", "dock:1"]);
    assert_eq!(docker_id.trim(), id);
}

// ---------------------------------------------------------------------------
// RUN's networks: the default bridge (veth on berth0, NAT), host, none.
// ---------------------------------------------------------------------------

/// Whether dotted-quad `ip` is in `subnet` (`a.b.c.d/n`).
fn in_subnet(ip: &str, subnet: &str) -> bool {
    let (net, bits) = subnet.split_once('/').unwrap();
    let n = |s: &str| u32::from(s.parse::<std::net::Ipv4Addr>().unwrap());
    let bits: u32 = bits.parse().unwrap();
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits)
    };
    n(ip) & mask == n(net) & mask
}

#[test]
fn run_gets_a_veth_on_the_default_bridge_unless_none() {
    let b = Berth::new();
    let bridge: Value = serde_json::from_str(&b.ok(&["network", "inspect", "bridge"])).unwrap();
    let ipam = &bridge[0]["IPAM"]["Config"][0];
    let subnet = ipam["Subnet"].as_str().unwrap().to_string();
    let gateway = ipam["Gateway"].as_str().unwrap().to_string();
    // A server on the host, reached through the bridge's gateway address.
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("hello.txt"), "from the host").unwrap();
    let httpd = Server::httpd(www.path(), "0.0.0.0");
    let port = httpd.port;
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nARG GW PORT\n\
         RUN ip -4 -o addr show dev eth0 > /eth0 && wget -q -O /got http://$GW:$PORT/hello.txt\n\
         RUN --network=none ip -o link > /none-links\n\
         RUN --network=host ip -o link > /host-links\n",
    )]);
    let out = b.run(&[
        "build",
        "-t",
        "nets",
        "--build-arg",
        &format!("GW={gateway}"),
        "--build-arg",
        &format!("PORT={port}"),
        ctx.path().to_str().unwrap(),
    ]);
    drop(httpd);
    assert!(out.status.success(), "{}", stderr(&out));

    let eth0 = file_in(&b, "nets", "/eth0");
    let addr = eth0
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .unwrap_or_else(|| panic!("no address on eth0: {eth0}"))
        .to_string();
    assert!(in_subnet(&addr, &subnet), "{addr} not in {subnet}");
    assert_eq!(file_in(&b, "nets", "/got"), "from the host");
    let none = file_in(&b, "nets", "/none-links");
    assert_eq!(none.lines().count(), 1, "{none}");
    assert!(none.contains(": lo:"), "{none}");
    assert!(file_in(&b, "nets", "/host-links").contains("berth0"));
    // The step's endpoint is gone once it is over.
    let bridge: Value = serde_json::from_str(&b.ok(&["network", "inspect", "bridge"])).unwrap();
    assert_eq!(bridge[0]["Containers"], serde_json::json!({}), "{bridge}");
}

// ---------------------------------------------------------------------------
// RUN --mount=type=ssh with --ssh.
// ---------------------------------------------------------------------------

/// `ssh-agent -D` on a socket in a temporary directory; killed on drop.
struct Agent {
    dir: tempfile::TempDir,
    child: std::process::Child,
}

impl Agent {
    fn start() -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&sock)
            .stdout(Stdio::null())
            .spawn()
            .expect("ssh-agent (Debian package openssh-client) is needed");
        berth_tests::wait_for(|| sock.exists(), "ssh-agent's socket");
        Agent { dir, child }
    }

    fn sock(&self) -> PathBuf {
        self.dir.path().join("agent.sock")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn ssh_mount_binds_the_agent_socket_as_buildkit_does() {
    use std::os::unix::fs::MetadataExt;
    let agent = Agent::start();
    let b = Berth::new();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\n\
         RUN --mount=type=ssh test -S \"$SSH_AUTH_SOCK\" && stat -c %i \"$SSH_AUTH_SOCK\" > /ino && echo \"$SSH_AUTH_SOCK\" > /sock\n\
         RUN --mount=type=ssh,id=other,target=/agent test ! -e /agent && echo \"${SSH_AUTH_SOCK:-unset}\" > /skipped\n",
    )]);
    // `--ssh default` takes the caller's SSH_AUTH_SOCK.
    let mut cmd = b.cmd(&[
        "build",
        "-t",
        "ssh",
        "--ssh",
        "default",
        ctx.path().to_str().unwrap(),
    ]);
    let out = cmd.env("SSH_AUTH_SOCK", agent.sock()).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(file_in(&b, "ssh", "/sock"), "/run/buildkit/ssh_agent.0\n");
    // The very socket the agent listens on (a bind keeps the inode).
    let ino = std::fs::metadata(agent.sock()).unwrap().ino();
    assert_eq!(file_in(&b, "ssh", "/ino").trim(), ino.to_string());
    // An id that was not given is skipped (not required), with no SSH_AUTH_SOCK.
    assert_eq!(file_in(&b, "ssh", "/skipped"), "unset\n");
    // The mount point is not left in a layer.
    assert!(b.find_in_layers("ssh", "/run/buildkit").is_none());

    // required=true without the socket fails the step.
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN --mount=type=ssh,required=true true\n",
    )]);
    let out = b.run(&["build", ctx.path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--ssh default"), "{}", stderr(&out));
    let sock = format!("default={}", agent.sock().display());
    b.build(ctx.path(), &["--ssh", &sock]);
}

// ---------------------------------------------------------------------------
// Independent stages run at the same time.
// ---------------------------------------------------------------------------

/// Stage `me` marks itself in a cache mount shared by both stages and waits
/// (up to a minute, for loaded machines) for `peer`'s mark: run one after the other, the first fails.
fn rendezvous(me: &str, peer: &str) -> String {
    format!(
        "FROM busybox AS {me}\nARG SYNC\n\
         RUN --mount=type=cache,id=$SYNC,target=/sync touch /sync/{me} && i=0; \
         while [ ! -e /sync/{peer} ]; do i=$((i+1)); [ $i -lt 1200 ] || exit 7; sleep 0.05; done; echo {me} > /{me}\n"
    )
}

#[test]
fn independent_stages_run_in_parallel() {
    let b = Berth::new();
    let df = format!(
        "{}{}FROM busybox\nCOPY --from=left /left /left\nCOPY --from=right /right /right\n",
        rendezvous("left", "right"),
        rendezvous("right", "left")
    );
    let ctx = context(&[("Dockerfile", &df)]);
    let sync = format!(
        "SYNC=par-{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
    )
    .replace(
        |c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '=',
        "",
    );
    let cache = tempfile::tempdir().unwrap();
    let to = format!("type=local,dest={},mode=max", cache.path().display());
    let (id, out) = b.build(
        ctx.path(),
        &["-t", "par", "--build-arg", &sync, "--cache-to", &to],
    );
    assert_eq!(file_in(&b, "par", "/left"), "left\n");
    assert_eq!(file_in(&b, "par", "/right"), "right\n");
    // Each stage's steps keep numbers of their own.
    let mut titles: Vec<&str> = out
        .lines()
        .filter(|l| l.contains(" [") && l.starts_with('#'))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    let n = titles.len();
    titles.sort();
    titles.dedup();
    assert_eq!(titles.len(), n, "{out}");

    // What the forked stages recorded is in the cache, here and exported.
    let (again, out) = b.build(ctx.path(), &["--build-arg", &sync]);
    assert_eq!(cached_steps(&out).len(), 4, "{out}");
    assert_eq!(again, id);
    let c = Berth::new();
    let from = format!("type=local,src={}", cache.path().display());
    let (other, out) = c.build(ctx.path(), &["--build-arg", &sync, "--cache-from", &from]);
    assert_eq!(cached_steps(&out).len(), 4, "{out}");
    assert_eq!(other, id);

    // A failing stage fails the build with its line and exit code; no image.
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox AS ok\nRUN echo fine > /ok\nFROM busybox AS bad\nRUN exit 3\nFROM busybox\nCOPY --from=ok /ok /ok\nCOPY --from=bad / /bad\n",
    )]);
    let out = b.run(&["build", "-t", "broken", ctx.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("Dockerfile:4") && err.contains("exit code: 3"),
        "{err}"
    );
    assert!(!b.run(&["image", "inspect", "broken"]).status.success());
}

/// Runs git in `dir` for a test, failing it on error.
fn git_in(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", stderr(&out));
}

/// A commit on `work` pushed to the bare repository `bare`, which is then also made
/// servable as static files (dumb HTTP).
fn git_commit_and_push(work: &Path, bare: &Path, files: &[(&str, &str)], msg: &str) {
    for (name, content) in files {
        let p = work.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    git_in(work, &["add", "-A"]);
    git_in(work, &["commit", "-q", "-m", msg]);
    git_in(
        work,
        &[
            "push",
            "-q",
            "--tags",
            bare.to_str().unwrap(),
            "HEAD:refs/heads/main",
        ],
    );
    git_in(bare, &["update-server-info"]);
}

/// A bare repository `www/NAME` (branch main) and a work tree pushing to it.
fn bare_and_work(www: &Path, name: &str) -> (PathBuf, PathBuf) {
    let bare = www.join(name);
    let work = www.join(format!("{name}-work"));
    std::fs::create_dir_all(&work).unwrap();
    git_in(
        www,
        &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()],
    );
    git_in(&work, &["init", "-q", "-b", "main"]);
    (bare, work)
}

#[test]
fn add_takes_git_repositories_by_ref_and_subdir() {
    let b = Berth::new();
    let www = tempfile::tempdir().unwrap();
    let (bare, work) = bare_and_work(www.path(), "repo.git");
    git_commit_and_push(
        &work,
        &bare,
        &[
            ("README", "v1\n"),
            ("sub/inner.txt", "inner\n"),
            ("run.sh", "echo hi\n"),
        ],
        "first",
    );
    git_in(&work, &["tag", "-a", "v1", "-m", "v1"]);
    git_in(
        &work,
        &["push", "-q", bare.to_str().unwrap(), "refs/tags/v1"],
    );
    git_in(&bare, &["update-server-info"]);
    let daemon = Server::git_daemon(www.path());
    let httpd = Server::httpd(www.path(), "127.0.0.1");
    let git_url = format!("git://127.0.0.1:{}/repo.git", daemon.port);
    let http_url = format!("http://127.0.0.1:{}/repo.git", httpd.port);
    let dockerfile = format!(
        "FROM busybox\n\
         ADD {git_url}#v1 /src\n\
         ADD {http_url}#main:sub /sub\n\
         ADD --keep-git-dir=true {git_url} /kept\n"
    );
    let ctx = context(&[("Dockerfile", &dockerfile)]);
    b.build(ctx.path(), &["-t", "fromgit"]);
    assert_eq!(file_in(&b, "fromgit", "/src/README"), "v1\n");
    assert_eq!(file_in(&b, "fromgit", "/src/sub/inner.txt"), "inner\n");
    assert!(
        b.find_in_layers("fromgit", "/src/.git").is_none(),
        ".git kept without the flag"
    );
    assert_eq!(file_in(&b, "fromgit", "/sub/inner.txt"), "inner\n");
    assert!(
        b.find_in_layers("fromgit", "/sub/README").is_none(),
        "subdir took the root"
    );
    assert!(b.find_in_layers("fromgit", "/kept/.git/HEAD").is_some());
    assert_eq!(file_in(&b, "fromgit", "/kept/README"), "v1\n");

    // main moves on: the tag's step is cached, the steps reading main run again.
    git_commit_and_push(&work, &bare, &[("README", "v2\n")], "second");
    let (_, progress) = b.build(ctx.path(), &["-t", "fromgit2"]);
    let cached = cached_steps(&progress);
    assert!(
        cached.iter().any(|t| t.contains("#v1")),
        "{cached:?}\n{progress}"
    );
    assert_eq!(cached.len(), 1, "{cached:?}\n{progress}");
    assert_eq!(file_in(&b, "fromgit2", "/src/README"), "v1\n");
    assert_eq!(file_in(&b, "fromgit2", "/kept/README"), "v2\n");

    // A reference the repository lacks fails the build, naming it; nothing is tagged.
    let ctx = context(&[(
        "Dockerfile",
        &format!("FROM busybox\nADD {git_url}#nope /x\n"),
    )]);
    let out = b.run(&["build", "-t", "bad", ctx.path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("\"nope\""), "{}", stderr(&out));
    assert!(!b.run(&["image", "inspect", "bad"]).status.success());
}

#[test]
fn platform_picks_the_base_images_platform() {
    let reg = LocalRegistry::start();
    let env = [("CONTAINERS_REGISTRIES_CONF", reg.conf())];
    let base = berth_tests::push_multi_platform_index(&reg.addr, reg.dir.path());
    let b = Berth::new();
    let build = |flags: &[&str], dockerfile: &str| {
        let ctx = context(&[("Dockerfile", dockerfile), ("f", "x")]);
        let env: Vec<(&str, &Path)> = env.iter().map(|(k, v)| (*k, v.as_path())).collect();
        build_env(&b, ctx.path(), flags, &env)
    };
    let arch = |image: &str| -> String {
        let v: Value = serde_json::from_str(&b.ok(&["image", "inspect", image])).unwrap();
        v[0]["Architecture"].as_str().unwrap().to_string()
    };
    // No platform: the host's image; --platform: that one's, also for scratch stages,
    // and TARGETARCH follows it.
    build(&["-t", "native"], &format!("FROM {base}\nCOPY f /f\n"));
    assert_eq!(arch("native"), "amd64");
    assert_eq!(file_in(&b, "native", "/arch"), "amd64");
    build(
        &["-t", "arm", "--platform", "linux/arm64"],
        &format!("FROM {base}\nARG TARGETARCH\nLABEL t=$TARGETARCH\nCOPY f /f\n"),
    );
    assert_eq!(arch("arm"), "arm64");
    assert_eq!(file_in(&b, "arm", "/arch"), "arm64");
    let v: Value = serde_json::from_str(&b.ok(&["image", "inspect", "arm"])).unwrap();
    assert_eq!(v[0]["Config"]["Labels"]["t"], "arm64");
    build(
        &["-t", "scr", "--platform", "linux/arm64"],
        "FROM scratch\nCOPY f /f\n",
    );
    assert_eq!(arch("scr"), "arm64");
    // FROM --platform wins over --platform for its stage.
    build(
        &["-t", "pinned", "--platform", "linux/arm64"],
        &format!("FROM --platform=linux/amd64 {base}\nCOPY f /f\n"),
    );
    assert_eq!(arch("pinned"), "amd64");
    // RUN on arm64 without an emulator says what is missing.
    if !Path::new("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists() {
        let ctx = context(&[("Dockerfile", &format!("FROM {base}\nRUN true\n"))]);
        let out = b
            .cmd(&[
                "build",
                "--platform",
                "linux/arm64",
                ctx.path().to_str().unwrap(),
            ])
            .env("CONTAINERS_REGISTRIES_CONF", reg.conf())
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("no emulator is registered"),
            "{}",
            stderr(&out)
        );
    }
}

fn inode(b: &Berth, image: &str, file: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let p = b
        .find_in_layers(image, file)
        .unwrap_or_else(|| panic!("{file} not in {image}"));
    std::fs::symlink_metadata(p).unwrap().ino()
}

#[test]
fn a_copy_that_misses_links_the_unchanged_files_of_its_last_layer() {
    let ctx = context(&[
        ("big/a.txt", "alpha"),
        ("big/b.txt", "beta"),
        ("big/sub/c.txt", "gamma"),
        ("big/sub2/deeper/d.txt", "delta"),
        ("big/tool.sh", "#!/bin/sh\necho tool\n"),
        ("over/a.txt", "alpha from over"),
        (
            "Dockerfile",
            "FROM busybox\nCOPY big /data/\nCOPY big over /both/\nCMD [\"ls\"]\n",
        ),
    ]);
    let tool = ctx.path().join("big/tool.sh");
    let chmod = |p: &Path, mode: u32| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    chmod(&tool, 0o755);
    let b = Berth::new();
    let (one, _) = b.build(ctx.path(), &["-t", "one"]);
    std::fs::write(ctx.path().join("big/b.txt"), "beta, changed").unwrap();
    let (two, progress) = b.build(ctx.path(), &["-t", "two", "--progress", "plain"]);
    assert_ne!(one, two);
    assert!(cached_steps(&progress).is_empty(), "{progress}");
    // Unchanged files share the earlier layer's inode; the changed one is new.
    for f in [
        "/data/a.txt",
        "/data/sub/c.txt",
        "/data/sub2/deeper/d.txt",
        "/data/tool.sh",
        "/both/sub/c.txt",
    ] {
        assert_eq!(
            inode(&b, "one", f),
            inode(&b, "two", f),
            "{f} was copied again"
        );
    }
    for f in ["/data/b.txt", "/both/b.txt"] {
        assert_ne!(inode(&b, "one", f), inode(&b, "two", f), "{f} was linked");
    }
    assert_eq!(file_in(&b, "two", "/data/b.txt"), "beta, changed");
    // A later source that writes the same path wins, linked or not.
    assert_eq!(file_in(&b, "two", "/both/a.txt"), "alpha from over");
    assert_eq!(
        file_in(&b, "two", "/both/tool.sh"),
        "#!/bin/sh\necho tool\n"
    );
    let out = b.ok(&[
        "run",
        "--rm",
        "two",
        "sh",
        "-c",
        "/data/tool.sh; cat /both/a.txt",
    ]);
    assert_eq!(out, "tool\nalpha from over");

    // The image is the one a full copy makes: a fresh store builds the same digest.
    let fresh = Berth::new();
    let (again, _) = fresh.build(ctx.path(), &["-t", "two"]);
    assert_eq!(again, two);

    // A mode change is not a content change: that file is copied, the rest linked.
    chmod(&tool, 0o700);
    b.build(ctx.path(), &["-t", "three"]);
    assert_ne!(
        inode(&b, "two", "/data/tool.sh"),
        inode(&b, "three", "/data/tool.sh")
    );
    assert_eq!(
        inode(&b, "two", "/data/a.txt"),
        inode(&b, "three", "/data/a.txt")
    );

    // Another SOURCE_DATE_EPOCH gives other timestamps: nothing is linked, and the
    // earlier layers keep theirs.
    std::fs::write(ctx.path().join("big/b.txt"), "beta, again").unwrap();
    let out = b
        .cmd(&["build", "-q", "-t", "four", ctx.path().to_str().unwrap()])
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_ne!(
        inode(&b, "three", "/data/a.txt"),
        inode(&b, "four", "/data/a.txt")
    );
    let p = b.find_in_layers("three", "/data/a.txt").unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::symlink_metadata(p).unwrap().mtime(), 0);
}

#[test]
fn copy_into_a_base_directory_keeps_its_entries_mode_and_deletions() {
    // Files written straight into the step's upper dir must merge with the base's
    // directory exactly as writes through the overlay do.
    let ctx = context(&[
        ("data/a.txt", "a"),
        ("data/old.txt", "new old"),
        ("data/sub/s.txt", "s"),
        (
            "Dockerfile",
            "FROM busybox\n\
             RUN mkdir -p /data/sub && echo base > /data/base.txt && echo gone > /data/old.txt \
             && echo deleted > /data/sub/deleted.txt && chmod 700 /data\n\
             RUN rm /data/old.txt /data/sub/deleted.txt\n\
             COPY data/ /data/\n",
        ),
    ]);
    let b = Berth::new();
    b.build(ctx.path(), &["-t", "merged"]);
    let out = b.ok(&[
        "run",
        "--rm",
        "merged",
        "sh",
        "-c",
        "cat /data/base.txt /data/a.txt /data/old.txt /data/sub/s.txt; echo; \
         stat -c %a /data; ls /data/sub",
    ]);
    assert_eq!(out, "base\nanew olds\n700\ns.txt\n");
}

/// An arm64 busybox image (`armbox`) in `b`'s store, from Debian's busybox-static for
/// arm64 that `make setup` downloads (scripts/emulation-setup.sh).
fn load_arm64_busybox(b: &Berth) {
    let deb =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/testdeps/busybox-static_arm64.deb");
    assert!(
        deb.is_file(),
        "{} is missing: run `make setup`",
        deb.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let x = dir.path().join("x");
    let out = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&x)
        .output()
        .unwrap();
    assert!(out.status.success(), "dpkg-deb: {}", stderr(&out));
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::copy(x.join("bin/busybox"), root.join("bin/busybox")).unwrap();
    for applet in ["sh", "uname", "cat", "echo"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    let tar = dir.path().join("rootfs.tar");
    let out = Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(&root)
        .arg(".")
        .output()
        .unwrap();
    assert!(out.status.success(), "tar: {}", stderr(&out));
    b.ok(&[
        "import",
        "--platform",
        "linux/arm64",
        tar.to_str().unwrap(),
        "armbox",
    ]);
}

/// `--platform linux/arm64` on an amd64 host: RUN steps of the arm64 stage run under
/// qemu-user through binfmt_misc, a `--platform=$BUILDPLATFORM` stage runs natively,
/// the platform ARGs say which is which, and the image is arm64.
#[test]
fn run_steps_for_another_platform_run_under_the_emulator() {
    let b = Berth::new();
    load_arm64_busybox(&b);
    let ctx = context(&[(
        "Dockerfile",
        "FROM --platform=$BUILDPLATFORM busybox AS tools\n\
         ARG BUILDARCH\n\
         RUN echo \"$(uname -m) $BUILDARCH\" > /built-on\n\
         FROM armbox\n\
         ARG TARGETARCH TARGETPLATFORM\n\
         COPY --from=tools /built-on /\n\
         RUN echo \"$(uname -m) $TARGETARCH $TARGETPLATFORM\" > /runs-on\n\
         CMD [\"cat\", \"/built-on\", \"/runs-on\"]\n",
    )]);
    b.build(ctx.path(), &["--platform", "linux/arm64", "-t", "cross"]);
    let v = b.inspect("cross");
    assert_eq!(v["Architecture"], "arm64");
    assert_eq!(v["Os"], "linux");
    let o = b.run(&["run", "--rm", "--network", "none", "cross"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    // As Docker: running it without --platform warns that it is not the host's.
    assert!(
        stderr(&o).contains("platform (linux/arm64) does not match the detected host platform"),
        "{}",
        stderr(&o)
    );
    let host = std::env::consts::ARCH;
    let goarch = match host {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    assert_eq!(out, format!("{host} {goarch}\naarch64 arm64 linux/arm64\n"));
}

/// `RUN --security=sandbox` is the default and runs; `insecure` needs an entitlement
/// berth does not grant, and says so instead of running the step unconfined.
#[test]
fn run_security_modes() {
    let b = Berth::new();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN --security=sandbox echo sandboxed > /mode\n",
    )]);
    b.build(ctx.path(), &["-t", "sandboxed"]);
    let mode = b.find_in_layers("sandboxed", "/mode").unwrap();
    assert_eq!(std::fs::read_to_string(mode).unwrap(), "sandboxed\n");
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN --security=insecure touch /x\n",
    )]);
    let out = b.run(&["build", ctx.path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Dockerfile:2") && stderr(&out).contains("security.insecure"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn named_build_contexts_replace_stages_and_images() {
    let b = Berth::new();
    b.ok(&["tag", "busybox", "base-image"]);
    let extra = context(&[
        ("a.txt", "from extra\n"),
        ("sub/b.txt", "bound\n"),
        ("secret.txt", "not for the image\n"),
        (".dockerignore", "secret.txt\n"),
    ]);
    let ctx = context(&[(
        "Dockerfile",
        r#"FROM scratch AS base
FROM base
COPY --from=extra a.txt /from-extra.txt
COPY --from=extra . /all/
RUN --mount=type=bind,from=extra,source=sub,target=/mnt cat /mnt/b.txt > /bound.txt
FROM extra AS files
FROM busybox
COPY --from=files / /files/
COPY --from=1 /bound.txt /from-stage-1.txt
"#,
    )]);
    let extra_flag = format!("extra={}", extra.path().display());
    let flags = [
        "-t",
        "named",
        "--build-context",
        &extra_flag,
        // A stage of the same name is replaced too (BuildKit's rule): `FROM base` is
        // busybox, not scratch, so its RUN has a shell.
        "--build-context",
        "base=docker-image://base-image",
    ];
    let (_, progress) = b.build(ctx.path(), &flags);
    let read = |f: &str| {
        std::fs::read_to_string(
            b.find_in_layers("named", f)
                .unwrap_or_else(|| panic!("{f}")),
        )
        .unwrap()
    };
    assert_eq!(read("/from-stage-1.txt"), "bound\n");
    assert_eq!(read("/files/a.txt"), "from extra\n");
    assert_eq!(read("/files/sub/b.txt"), "bound\n");
    // The named context's own .dockerignore applies.
    assert!(b.find_in_layers("named", "/files/secret.txt").is_none());
    // Unchanged: every step is cached; a changed file in the named context misses.
    let (_, again) = b.build(ctx.path(), &flags);
    let cached = cached_steps(&again);
    for step in [
        "COPY --from=extra a.txt /from-extra.txt",
        "COPY --from=extra . /all/",
        "COPY --from=files / /files/",
    ] {
        assert!(
            cached.iter().any(|c| c == step),
            "{step} not cached:\n{again}\nfirst:\n{progress}"
        );
    }
    std::fs::write(extra.path().join("sub/b.txt"), "changed\n").unwrap();
    b.build(ctx.path(), &flags);
    assert_eq!(read("/from-stage-1.txt"), "changed\n");
    assert_eq!(read("/files/sub/b.txt"), "changed\n");
    // Bad values are refused before anything is built.
    for (flag, want) in [
        ("Bad Name=/tmp", "invalid context name"),
        ("x=ftp://example.com/ctx.tar", "unsupported source"),
        ("x=/no/such/dir", "/no/such/dir"),
    ] {
        let out = b.run(&[
            "build",
            "--build-context",
            flag,
            ctx.path().to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(1), "{flag}");
        assert!(stderr(&out).contains(want), "{flag}: {}", stderr(&out));
    }
}

#[test]
fn add_host_ulimit_and_shm_size_reach_run() {
    let b = Berth::new();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN grep db /etc/hosts > /hosts; ulimit -Sn > /nofile; ulimit -Hn >> /nofile; \
         df -k /dev/shm | tail -1 | awk '{print $2}' > /shm\n",
    )]);
    let flags = [
        "-t",
        "opts",
        "--network",
        "none",
        "--add-host",
        "db:10.9.8.7",
        "--ulimit",
        "nofile=123:456",
        "--shm-size",
        "32m",
        "--rm",
        "--force-rm",
        "--load",
        "--provenance=false",
    ];
    b.build(ctx.path(), &flags);
    let read = |f: &str| std::fs::read_to_string(b.find_in_layers("opts", f).unwrap()).unwrap();
    assert_eq!(read("/hosts"), "10.9.8.7\tdb\n");
    assert_eq!(read("/nofile"), "123\n456\n");
    assert_eq!(read("/shm"), "32768\n");
    // The hosts file the RUN saw is not left in the layer (busybox has no /etc/hosts).
    assert!(b.find_in_layers("opts", "/etc/hosts").is_none());
    // The options are part of the RUN's key, as in BuildKit: another value runs again.
    let (_, progress) = b.build(ctx.path(), &["-t", "opts", "--network", "none"]);
    assert!(cached_steps(&progress).is_empty(), "{progress}");
    for (flag, value, want) in [
        ("--add-host", "db", "bad format for add-host"),
        ("--add-host", "db:not-an-ip", "invalid IP address"),
        ("--ulimit", "bogus=1", "invalid ulimit type"),
        ("--shm-size", "0", "greater than 0"),
    ] {
        let out = b.run(&["build", flag, value, ctx.path().to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{flag} {value}");
        assert!(
            stderr(&out).contains(want),
            "{flag} {value}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn metadata_file_names_the_digests() {
    let b = Berth::new();
    let ctx = context(&[("Dockerfile", "FROM busybox\nLABEL a=b\n")]);
    let meta = ctx.path().with_extension("meta.json");
    let (id, _) = b.build(
        ctx.path(),
        &["-t", "meta:1", "--metadata-file", meta.to_str().unwrap()],
    );
    let v: Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    assert_eq!(v["containerimage.config.digest"], id.trim());
    let digest = b.inspect("meta:1")["Descriptor"]["digest"].clone();
    assert_eq!(v["containerimage.digest"], digest);
    assert_eq!(v["containerimage.descriptor"]["digest"], digest);
    assert_eq!(v["image.name"], "docker.io/library/meta:1");
}

#[test]
fn remote_contexts_from_git_and_archive_urls() {
    let b = Berth::new();
    let www = tempfile::tempdir().unwrap();
    // A repository whose `app` directory is the context.
    let (bare, work) = bare_and_work(www.path(), "ctx.git");
    git_commit_and_push(
        &work,
        &bare,
        &[
            ("app/Dockerfile", "FROM busybox\nCOPY hello.txt /hello\n"),
            ("app/alt.Dockerfile", "FROM busybox\nCOPY hello.txt /alt\n"),
            ("app/hello.txt", "from git\n"),
            ("README", "not in the context\n"),
        ],
        "first",
    );
    let daemon = Server::git_daemon(www.path());
    let repo = format!("git://127.0.0.1:{}/ctx.git#main:app", daemon.port);
    b.ok(&["build", "-t", "fromgit", &repo]);
    assert_eq!(file_in(&b, "fromgit", "/hello"), "from git\n");
    // -f names a file of the remote context.
    b.ok(&["build", "-t", "alt", "-f", "alt.Dockerfile", &repo]);
    assert_eq!(file_in(&b, "alt", "/alt"), "from git\n");
    // A tar.gz behind a URL is the context; a plain file behind one is the Dockerfile.
    let src = www.path().join("tarsrc");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("Dockerfile"), "FROM busybox\nCOPY data /data\n").unwrap();
    std::fs::write(src.join("data"), "from the archive\n").unwrap();
    let st = Command::new("tar")
        .args([
            "-czf",
            www.path().join("ctx.tar.gz").to_str().unwrap(),
            "-C",
        ])
        .arg(&src)
        .args(["Dockerfile", "data"])
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::write(
        www.path().join("Dockerfile.txt"),
        "FROM busybox\nRUN echo lone > /lone\n",
    )
    .unwrap();
    let httpd = Server::httpd(www.path(), "127.0.0.1");
    let url = |f: &str| format!("http://127.0.0.1:{}/{f}", httpd.port);
    b.ok(&["build", "-t", "fromtar", &url("ctx.tar.gz")]);
    assert_eq!(file_in(&b, "fromtar", "/data"), "from the archive\n");
    b.ok(&["build", "-t", "lone", &url("Dockerfile.txt")]);
    assert_eq!(file_in(&b, "lone", "/lone"), "lone\n");
    // The same sources as named contexts.
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nCOPY --from=g hello.txt /g\nCOPY --from=t data /t\n",
    )]);
    let g = format!("g={repo}");
    let t = format!("t={}", url("ctx.tar.gz"));
    b.build(
        ctx.path(),
        &[
            "-t",
            "named-remote",
            "--build-context",
            &g,
            "--build-context",
            &t,
        ],
    );
    assert_eq!(file_in(&b, "named-remote", "/g"), "from git\n");
    assert_eq!(file_in(&b, "named-remote", "/t"), "from the archive\n");
    // Nothing fetched is left in the store's work area.
    let left: Vec<_> = std::fs::read_dir(b.root.path().join("build/work"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    // A repository without the reference fails naming it.
    let bad = format!("git://127.0.0.1:{}/ctx.git#nosuch", daemon.port);
    let out = b.run(&["build", &bad]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("nosuch"), "{}", stderr(&out));
}

/// `builder prune --filter until=…` forgets only the older records and `--keep-storage`
/// the oldest beyond its budget; the records kept still hit, with their layers.
#[test]
fn builder_prune_filters_keep_the_recent_cache() {
    let b = Berth::new();
    let old = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN head -c 4000 /dev/zero > /old\n",
    )]);
    let new = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN head -c 9000 /dev/zero > /new\n",
    )]);
    b.build(old.path(), &[]);
    // Records are stamped in seconds: leave a clear gap.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    b.build(new.path(), &[]);
    b.ok(&["builder", "prune", "-f", "--filter", "until=1s"]);
    let (_, out) = b.build(new.path(), &[]);
    assert_eq!(
        cached_steps(&out).len(),
        1,
        "the recent step still hits: {out}"
    );
    let (_, out) = b.build(old.path(), &[]);
    assert!(
        cached_steps(&out).is_empty(),
        "the old one was forgotten: {out}"
    );
    // Now `old` is the newest record: a budget that holds it alone drops `new`.
    b.ok(&["builder", "prune", "-f", "--keep-storage", "5000"]);
    let (_, out) = b.build(old.path(), &[]);
    assert_eq!(cached_steps(&out).len(), 1, "{out}");
    let (_, out) = b.build(new.path(), &[]);
    assert!(cached_steps(&out).is_empty(), "{out}");
    let o = b.run(&["builder", "prune", "-f", "--filter", "color=red"]);
    assert!(
        !o.status.success() && stderr(&o).contains("invalid filter"),
        "{}",
        stderr(&o)
    );
}
