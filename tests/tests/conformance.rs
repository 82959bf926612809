//! buildah's build conformance Dockerfiles (`$BERTH_TESTDATA/buildah-conformance`), each
//! built by berth and by podman (Debian's, buildah inside) from the same busybox base,
//! and compared the way upstream compares buildah with Docker: whether the build
//! succeeds, the image config (Env, Cmd, Entrypoint, WorkingDir, User, ExposedPorts,
//! Volumes, Labels, StopSignal, OnBuild, Shell, Healthcheck) and the file tree (type,
//! mode, owner, content digest, link target; not times).
//!
//! berth follows BuildKit. Where BuildKit and buildah part ways, [`EXPECTED`] names the
//! case, says why, and pins the exact difference: the test fails when a listed case
//! starts to agree as much as when another case stops agreeing.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use berth_tests::{bin_dir, busybox_rootfs_tar, stderr, stdout};
use serde_json::Value;

/// How a case differs from podman's build. Every case not listed is `Same`.
#[derive(Debug, PartialEq)]
enum Expect {
    /// Both fail, or both build the same image.
    Same,
    /// Only berth builds it: podman 4.3's buildah lacks the feature (or gets it wrong).
    OnlyBerth,
    /// Only podman builds it: BuildKit refuses what buildah allows.
    OnlyPodman,
    /// Both build; these paths differ (entries in one tree only, or with other
    /// metadata), nothing else.
    Paths(&'static [&'static str]),
    /// Both build the same tree; these config keys differ.
    Config(&'static [&'static str]),
}

/// (Dockerfile under the data folder, expected difference, why).
const EXPECTED: &[(&str, Expect, &str)] = &[
    (
        "own/config-instructions",
        Expect::Config(&["OnBuild", "Shell", "Healthcheck"]),
        "podman's inspect leaves out the HEALTHCHECK, ONBUILD and SHELL its docker-format \
         config holds",
    ),
    (
        "Dockerfile.edgecases",
        Expect::Config(&["OnBuild"]),
        "podman's inspect leaves out the ONBUILD triggers its docker-format config holds",
    ),
    (
        "Dockerfile.heredoc-quoting",
        Expect::OnlyBerth,
        "heredocs are newer than podman 4.3",
    ),
    (
        "heredoc/Dockerfile.heredoc_copy",
        Expect::OnlyBerth,
        "heredocs are newer than podman 4.3",
    ),
    (
        "copy-escape-glob/Dockerfile",
        Expect::OnlyBerth,
        "podman 4.3 does not take Go's `[[]` escape in COPY sources",
    ),
    (
        "dockerignore/integration1/Dockerfile",
        Expect::OnlyBerth,
        "`subdir` is excluded but `!*/sub1*` brings back subdir/sub1.txt, so \
         `COPY subdir ./` has a source (BuildKit walks excluded directories when an \
         exception has wildcards); podman skips the directory",
    ),
    (
        "dockerignore/exceptions-skip/Dockerfile",
        Expect::Paths(&["volume", "volume/data", "volume/data/oneline.txt"]),
        "`!**/oneline.txt` re-includes volume/data/oneline.txt under the excluded \
         `volume/` (BuildKit), podman skips the directory",
    ),
    (
        "dockerignore/exceptions-weirdness-1/Dockerfile",
        Expect::Paths(&["newdir/subdir", "newdir/subdir/sub1.txt"]),
        "as exceptions-skip: `!*/sub1*` re-includes subdir/sub1.txt",
    ),
    (
        "dockerignore/exceptions-weirdness-2/Dockerfile",
        Expect::Paths(&["newdir/subdir"]),
        "a directory brought back by an exception keeps its own mode in BuildKit \
         (0555 in the read-only test data); buildah makes it 0755",
    ),
    (
        "dockerignore/allowlist/alternating/Dockerfile",
        Expect::Paths(&[
            "subdir1",
            "subdir1/subdir2/subdir3",
            "subdir1/subdir2/subdir3/subdir4/subdir5",
            "subdir2/subdir3",
            "subdir2/subdir3/subdir4/subdir5",
            "subdir3",
            "subdir3/subdir4/subdir5",
            "subdir4/subdir5",
            "subdir5",
        ]),
        "as exceptions-weirdness-2: the directories' own mode",
    ),
    (
        "dockerignore/allowlist/subsubdir-file/Dockerfile",
        Expect::Paths(&["folder", "folder/subfolder"]),
        "as exceptions-weirdness-2: the directories' own mode",
    ),
    (
        "dockerignore/minimal_test/Dockerfile",
        Expect::Paths(&["tmp/stuff/huge/usr", "tmp/stuff/huge/usr/bin"]),
        "as exceptions-weirdness-2: the directories' own mode",
    ),
    (
        "overlapdirwithslash/Dockerfile",
        Expect::Paths(&["etc"]),
        "copying a directory onto an existing one leaves the existing one's mode \
         (BuildKit copies metadata only onto what it creates); buildah applies 0555",
    ),
    (
        "overlapdirwithoutslash/Dockerfile",
        Expect::Paths(&["etc"]),
        "as overlapdirwithslash",
    ),
    (
        "chown-volume/Dockerfile",
        Expect::Paths(&["volumea", "volumeb", "volumec"]),
        "BuildKit keeps what RUN does under a VOLUME path (the chown); buildah, like \
         Docker's legacy builder, throws it away",
    ),
    (
        "volumerun/Dockerfile",
        Expect::Paths(&["var/www/file3"]),
        "as chown-volume: the file RUN makes under the VOLUME stays",
    ),
    (
        "replace/symlink-with-directory/Dockerfile.2",
        Expect::OnlyPodman,
        "BuildKit refuses to replace a directory with a file (\"cannot replace to \
         directory ... with file\"); buildah replaces it",
    ),
    (
        "replace/symlink-with-directory/Dockerfile.3",
        Expect::OnlyPodman,
        "as Dockerfile.2",
    ),
];

/// berth's own cases, for what buildah's leave out: (name, shell script that makes the
/// context's files in an empty directory, Dockerfile).
const OWN_CASES: &[(&str, &str, &str)] = &[
    (
        "copy-shapes",
        "mkdir -p src/sub; echo a > src/a; echo b > src/sub/b; ln -s a src/lnk",
        "FROM mirror.gcr.io/busybox\n\
         COPY src /dst\n\
         COPY src/ /dst2/\n\
         COPY src/a src/sub/b /multi/\n\
         COPY src/a /file-as-dest\n\
         COPY src/lnk /lnk-copied\n\
         COPY src/* /star/\n",
    ),
    (
        "relative-destinations",
        "echo x > x",
        "FROM mirror.gcr.io/busybox\n\
         WORKDIR /w\n\
         COPY x .\n\
         COPY x ./sub/\n\
         COPY x rel-file\n\
         WORKDIR sub2\n\
         COPY x .\n\
         RUN pwd > /pwd\n",
    ),
    (
        "arg-env-expansion",
        ":",
        "FROM mirror.gcr.io/busybox\n\
         ARG A=1\n\
         ENV B=$A C=${A:+set} D=${UNSET:-dflt}\n\
         ARG A=2\n\
         ENV E=$A\n\
         LABEL l1=$B l2=\"${C} ${D}\"\n\
         EXPOSE ${A}000/tcp\n\
         USER 1000:${A}\n\
         WORKDIR /x/$B\n\
         STOPSIGNAL SIGUSR${A}\n",
    ),
    (
        "from-stage-owners-and-links",
        ":",
        "FROM mirror.gcr.io/busybox AS a\n\
         RUN mkdir -p /o/deep && echo 1 > /o/deep/f && chmod 700 /o/deep && \\\n\
         chown 5:6 /o/deep/f && ln -s deep/f /o/l && ln /o/deep/f /o/hard\n\
         FROM scratch\n\
         COPY --from=a /o /o\n\
         COPY --from=a /o/ /o2/\n\
         COPY --from=a /o/l /resolved\n\
         COPY --chown=7:8 --from=a /o /o3\n",
    ),
    (
        "into-existing-and-through-links",
        "echo one > one; echo two > two",
        "FROM mirror.gcr.io/busybox\n\
         RUN mkdir /exists && echo old > /exists/one && ln -s /exists /linkdir\n\
         COPY one two /exists/\n\
         COPY one /linkdir/viaslink\n\
         RUN rm /exists/two\n\
         COPY two /exists/two\n",
    ),
    (
        "whiteouts-and-opaque-dirs",
        ":",
        "FROM mirror.gcr.io/busybox\n\
         RUN echo hi > /a && mkdir -p /d/e && touch /d/e/f\n\
         RUN rm -rf /d/e && rm /a && mkdir /a\n\
         RUN mkdir -p /d/e && touch /d/e/g\n",
    ),
    (
        "config-instructions",
        ":",
        "FROM mirror.gcr.io/busybox\n\
         SHELL [\"/bin/sh\", \"-c\"]\n\
         ENTRYPOINT echo hi\n\
         CMD [\"a\",\"b\"]\n\
         HEALTHCHECK --interval=5s --retries=2 CMD true\n\
         ONBUILD RUN echo child\n\
         VOLUME [\"/v1\", \"/v2\"]\n\
         ENV PATH=/custom:$PATH\n",
    ),
    (
        "stage-inheritance-and-users",
        ":",
        "ARG BASE=mirror.gcr.io/busybox\n\
         FROM $BASE AS one\n\
         ENV X=1\n\
         RUN chmod 1777 /tmp\n\
         WORKDIR /w1\n\
         USER 65534:65534\n\
         FROM one AS two\n\
         RUN id > /tmp/id && pwd > /tmp/pwd\n\
         USER 55\n\
         RUN id > /tmp/id55\n\
         FROM two\n\
         USER root\n\
         COPY --from=mirror.gcr.io/busybox /bin/busybox /bb\n\
         COPY --from=two /tmp/id /tmp/pwd /tmp/id55 /out/\n\
         RUN mkdir /empty && echo \"$X\" > /x\n",
    ),
    (
        "symlinked-sources",
        "mkdir d1 d2; echo 1 > d1/f; echo 2 > d2/g; echo 3 > dfile; ln -s d1 lnkdir; \
         ln -s dfile lnkfile",
        "FROM mirror.gcr.io/busybox\n\
         COPY d* /star/\n\
         COPY lnkdir /viadirlink/\n\
         COPY lnkfile /viafilelink\n\
         COPY d1 /dot/.\n\
         COPY . /all/\n",
    ),
    (
        "add-archives",
        "mkdir t; echo in > t/in.txt; tar -czf a.tar.gz t; rm -r t; echo notatar > fake.tar.gz",
        "FROM mirror.gcr.io/busybox\n\
         RUN mkdir -p /ex/t && echo old > /ex/t/old.txt\n\
         ADD a.tar.gz /ex/\n\
         ADD fake.tar.gz /fake/\n\
         ADD a.tar.gz /file-dest\n",
    ),
    (
        "dockerignore-reinclusions",
        "mkdir -p docs/sub; echo r > README.md; echo d > docs/a.md; echo s > docs/sub/b.md; \
         echo k > keep.txt; printf '**/*.md\\n!README.md\\n!docs/sub\\n' > .dockerignore",
        "FROM scratch\nCOPY . /\n",
    ),
    (
        "env-quoting",
        ":",
        "FROM mirror.gcr.io/busybox\n\
         ENV DIR=/srv/app Q=\"a \\\"quoted\\\" value\" S='single $NOEXPAND'\n\
         WORKDIR $DIR\n\
         RUN pwd > /pwd && echo \"$Q|$S\" > /env\n\
         LABEL multi=\"line one \\\nline two\" other=x\n",
    ),
    (
        "modes-and-chmod",
        "echo f > f; chmod 751 f; mkdir dd; echo g > dd/g; chmod 711 dd",
        "FROM mirror.gcr.io/busybox\n\
         COPY f dd /keep/\n\
         COPY --chmod=640 f /m/\n\
         COPY --chmod=750 dd /m2/\n\
         COPY --chown=1:1 dd /own/\n",
    ),
];

/// The base images the cases name, all the same busybox here.
const BASES: &[&str] = &[
    "mirror.gcr.io/busybox",
    "mirror.gcr.io/alpine",
    "quay.io/libpod/centos:7",
    "quay.io/libpod/busybox",
];

/// Paths a container runtime makes or mounts, not the image's.
const NOT_THE_IMAGE: &[&str] = &[
    "proc",
    "sys",
    "dev",
    "run",
    "etc/hosts",
    "etc/hostname",
    "etc/resolv.conf",
    ".containerenv",
];

const CONFIG_KEYS: &[&str] = &[
    "Env",
    "Cmd",
    "Entrypoint",
    "WorkingDir",
    "User",
    "ExposedPorts",
    "Volumes",
    "Labels",
    "StopSignal",
    "OnBuild",
    "Shell",
    "Healthcheck",
];

/// One builder: berth with its own store, or podman with its own.
struct Builder {
    argv: Vec<String>,
}

impl Builder {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.argv[0]);
        c.args(&self.argv[1..]).args(args).stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{:?} {args:?}: {}",
            self.argv,
            stderr(&out)
        );
        stdout(&out)
    }

    fn load_bases(&self, rootfs_tar: &Path) {
        self.ok(&["import", rootfs_tar.to_str().unwrap(), "keep/busybox"]);
        self.tag_bases();
    }

    fn tag_bases(&self) {
        for b in BASES {
            self.ok(&["tag", "keep/busybox", b]);
        }
    }

    /// Builds `dockerfile` in `ctx` as `tag`; on success the image's config and tree.
    fn build(&self, dockerfile: &Path, ctx: &Path, tag: &str, extra: &[&str]) -> Option<Image> {
        let mut args = vec!["build", "-q", "-t", tag, "-f"];
        args.push(dockerfile.to_str().unwrap());
        args.extend_from_slice(extra);
        args.push(ctx.to_str().unwrap());
        if !self.run(&args).status.success() {
            return None;
        }
        let inspect: Value = serde_json::from_str(&self.ok(&["image", "inspect", tag])).unwrap();
        let id = self.ok(&["create", tag, "true"]).trim().to_string();
        let tar = self.cmd(&["export", &id]).output().unwrap();
        assert!(tar.status.success(), "export: {}", stderr(&tar));
        self.ok(&["rm", &id]);
        Some(Image {
            config: config_of(&inspect[0]["Config"]),
            tree: tree_of(&tar.stdout),
        })
    }
}

#[derive(Debug)]
struct Image {
    config: BTreeMap<String, Value>,
    tree: BTreeMap<String, String>,
}

/// The compared config keys, empty values dropped (null, "", [] and {} all mean unset)
/// and buildah's own version label left out. A WorkingDir of `/` means unset too (a
/// process starts there either way): BuildKit's empty image, which a scratch stage
/// starts from, has `/` where buildah's has none.
fn config_of(c: &Value) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for k in CONFIG_KEYS {
        let mut v = c[*k].clone();
        if let Some(labels) = v.as_object_mut() {
            labels.remove("io.buildah.version");
        }
        let empty = match &v {
            Value::Null => true,
            Value::String(s) if *k == "WorkingDir" => s.is_empty() || s == "/",
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.is_empty(),
            _ => false,
        };
        if !empty {
            out.insert(k.to_string(), v);
        }
    }
    out
}

/// Each entry of an exported rootfs as "type mode uid gid digest-or-target".
fn tree_of(tar_bytes: &[u8]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut ar = tar::Archive::new(tar_bytes);
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let raw = e.path().unwrap().to_string_lossy().into_owned();
        let name = raw
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        if name.is_empty()
            || name == "."
            || NOT_THE_IMAGE
                .iter()
                .any(|p| name == *p || name.starts_with(&format!("{p}/")))
        {
            continue;
        }
        let h = e.header().clone();
        let kind = h.entry_type();
        let what = if kind.is_dir() {
            "d".to_string()
        } else if kind.is_symlink() {
            format!("l {}", h.link_name().unwrap().unwrap().display())
        } else if kind.is_hard_link() {
            // Both builders list the names of an inode in path order, so the link names
            // the same first path on both sides when the links were kept.
            let target = h
                .link_name()
                .unwrap()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            format!("h {}", target.trim_start_matches("./"))
        } else {
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            format!("f {}", fingerprint(&data))
        };
        let line = format!(
            "{what} {:o} {}:{}",
            h.mode().unwrap() & 0o7777,
            h.uid().unwrap(),
            h.gid().unwrap()
        );
        out.insert(name, line);
    }
    out
}

/// A content fingerprint for comparing two trees (not a security digest): FNV-1a and
/// the length.
fn fingerprint(data: &[u8]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}:{}", data.len())
}

/// The paths whose entries differ between two trees.
fn differing_paths(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<String> {
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}

/// Every Dockerfile of the data folder, relative to it, sorted.
fn dockerfiles(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("Dockerfile"))
            {
                out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

/// What a case's two builds came to.
#[derive(Debug)]
enum Outcome {
    BothFail,
    Same,
    OnlyBerth,
    OnlyPodman,
    Paths(Vec<String>),
    /// The config keys that differ, and both configs.
    Config(Vec<String>, String),
}

fn outcome(berth: &Option<Image>, podman: &Option<Image>) -> Outcome {
    match (berth, podman) {
        (None, None) => Outcome::BothFail,
        (Some(_), None) => Outcome::OnlyBerth,
        (None, Some(_)) => Outcome::OnlyPodman,
        (Some(b), Some(p)) if b.config != p.config => {
            let keys = CONFIG_KEYS
                .iter()
                .filter(|k| b.config.get(**k) != p.config.get(**k))
                .map(|k| k.to_string())
                .collect();
            let both = format!("berth {:?}, podman {:?}", b.config, p.config);
            if b.tree == p.tree {
                Outcome::Config(keys, both)
            } else {
                Outcome::Config(keys, format!("{both}; the trees differ too"))
            }
        }
        (Some(b), Some(p)) => {
            let paths = differing_paths(&b.tree, &p.tree);
            if paths.is_empty() {
                Outcome::Same
            } else {
                Outcome::Paths(paths)
            }
        }
    }
}

fn agrees(want: &Expect, got: &Outcome) -> bool {
    match (want, got) {
        (Expect::Same, Outcome::Same | Outcome::BothFail) => true,
        (Expect::OnlyBerth, Outcome::OnlyBerth) => true,
        (Expect::OnlyPodman, Outcome::OnlyPodman) => true,
        (Expect::Paths(w), Outcome::Paths(g)) => w.iter().eq(g.iter()),
        (Expect::Config(w), Outcome::Config(g, detail)) => {
            w.iter().eq(g.iter()) && !detail.ends_with("too")
        }
        _ => false,
    }
}

#[test]
fn buildah_conformance_cases_build_as_buildkit_would() {
    let Ok(data) = std::env::var("BERTH_TESTDATA") else {
        println!("skipped: BERTH_TESTDATA is not set (see shared/testdata/README.md)");
        return;
    };
    let dir = Path::new(&data).join("buildah-conformance");
    assert!(dir.is_dir(), "{} is missing", dir.display());
    let work = tempfile::tempdir().unwrap();
    let rootfs_tar = busybox_rootfs_tar(work.path(), "rootfs.tar");
    let w = |s: &str| work.path().join(s).to_string_lossy().into_owned();
    let berth = Builder {
        argv: vec![
            bin_dir().join("berth").to_string_lossy().into_owned(),
            "--root".into(),
            w("berth"),
        ],
    };
    let podman = Builder {
        argv: [
            "podman",
            "--root",
            &w("podman"),
            "--runroot",
            &w("podman-run"),
            "--tmpdir",
            &w("podman-tmp"),
            "--storage-driver",
            "overlay",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "none",
        ]
        .map(String::from)
        .to_vec(),
    };
    berth.load_bases(&rootfs_tar);
    podman.load_bases(&rootfs_tar);
    let cases = dockerfiles(&dir);
    assert!(cases.len() >= 90, "only {} Dockerfiles", cases.len());
    // (name, Dockerfile, context) for buildah's cases, then berth's own.
    let mut all: Vec<(String, PathBuf, PathBuf)> = cases
        .iter()
        .map(|rel| {
            let ctx = match Path::new(rel).parent() {
                Some(p) if !p.as_os_str().is_empty() => dir.join(p),
                _ => dir.clone(),
            };
            (rel.clone(), dir.join(rel), ctx)
        })
        .collect();
    let own = tempfile::tempdir().unwrap();
    for (name, setup, dockerfile) in OWN_CASES {
        let ctx = own.path().join(name);
        std::fs::create_dir(&ctx).unwrap();
        let st = Command::new("sh")
            .arg("-ec")
            .arg(setup)
            .current_dir(&ctx)
            .status()
            .unwrap();
        assert!(st.success(), "setting up {name}");
        std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
        all.push((format!("own/{name}"), ctx.join("Dockerfile"), ctx));
    }
    let mut wrong = Vec::new();
    let mut identical = 0;
    for (n, (rel, file, ctx)) in all.iter().enumerate() {
        let tag = format!("case{n}");
        let (b, p) = std::thread::scope(|s| {
            let b = s.spawn(|| berth.build(file, ctx, &tag, &[]));
            // Docker's format keeps SHELL and ONBUILD, which the OCI config cannot.
            let p = podman.build(file, ctx, &tag, &["--format", "docker", "--layers=false"]);
            (b.join().unwrap(), p)
        });
        if p.is_none()
            && !podman
                .run(&["image", "exists", "keep/busybox"])
                .status
                .success()
        {
            // A failed podman build can take its base images with it.
            podman.load_bases(&rootfs_tar);
        } else if p.is_none() {
            podman.tag_bases();
        }
        let (want, why) = EXPECTED
            .iter()
            .find(|(f, _, _)| f == rel)
            .map_or((&Expect::Same, ""), |(_, e, why)| (e, *why));
        let got = outcome(&b, &p);
        if matches!(got, Outcome::Same) {
            identical += 1;
        }
        if !agrees(want, &got) {
            let detail = match (&got, &b, &p) {
                (Outcome::Paths(paths), Some(b), Some(p)) => paths
                    .iter()
                    .map(|k| {
                        format!(
                            "\n  {k}: berth {:?}, podman {:?}",
                            b.tree.get(k),
                            p.tree.get(k)
                        )
                    })
                    .collect(),
                (Outcome::Config(_, c), _, _) => format!("\n  {c}"),
                _ => String::new(),
            };
            wrong.push(format!(
                "{rel}: expected {want:?} ({why}), got {got:?}{detail}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
    // Most cases must really build on both sides, or the comparison says little (45 of
    // the 91 do: the rest fail on both, lacking archives, network or other base images).
    assert!(
        identical >= 45,
        "only {identical} cases built the same image on both sides"
    );
    let unknown: Vec<&&str> = EXPECTED
        .iter()
        .map(|(f, _, _)| f)
        .filter(|f| !all.iter().any(|(c, _, _)| c == *f))
        .collect();
    assert!(
        unknown.is_empty(),
        "expectations for missing cases: {unknown:?}"
    );
}
