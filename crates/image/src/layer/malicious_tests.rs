//! A corpus of hostile layers. Each is applied next to a sentinel directory
//! that every attack aims at; afterwards the sentinel and everything else
//! outside the layer store must be byte-for-byte unchanged.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use tar::EntryType;

use super::*;
use crate::sys;
use crate::testutil::{Opts, TarBuilder};

/// How a hostile layer must end.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    /// apply fails and no layer directory appears.
    Rejected,
    /// apply succeeds; whatever it wrote stays inside the layer.
    Contained,
}

struct Case {
    name: &'static str,
    tar: Vec<u8>,
    opts: ApplyOptions,
    outcome: Outcome,
    /// Extra check on the layer dir for contained cases.
    check: Option<fn(&Path, &str)>,
}

/// Enough `../` to climb from any layer temp dir to `/`.
const UP: &str = "../../../../../../../../../../../../../../../../";

/// Everything observable about a tree, for before/after comparison.
fn snapshot(root: &Path, skip: &Path, out: &mut BTreeMap<PathBuf, String>) {
    let mut names: Vec<_> = fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for p in names {
        if p == skip {
            continue;
        }
        let md = fs::symlink_metadata(&p).unwrap();
        let ft = md.file_type();
        let mut desc = format!(
            "mode={:o} uid={} nlink={} xattrs={:?}",
            md.mode(),
            md.uid(),
            md.nlink(),
            sys::llistxattr(&p).unwrap()
        );
        if ft.is_file() {
            desc += &format!(" data={:?}", fs::read(&p).unwrap());
        } else if ft.is_symlink() {
            desc += &format!(" link={:?}", fs::read_link(&p).unwrap());
        } else if ft.is_char_device() || ft.is_block_device() {
            desc += &format!(" rdev={}", md.rdev());
        }
        out.insert(p.clone(), desc);
        if ft.is_dir() {
            snapshot(&p, skip, out);
        }
    }
}

/// Applies one hostile layer in `tmp` (holding `sentinel/` and
/// `store/layers/`) and checks its outcome.
fn run(tmp: &Path, case: Case) {
    let sentinel = tmp.join("sentinel");
    fs::create_dir_all(sentinel.join("dir")).unwrap();
    fs::write(sentinel.join("secret"), b"s3cret").unwrap();
    let layers_dir = tmp.join("store/layers");
    let store = LayerStore::open(&layers_dir).unwrap();
    let mut before = BTreeMap::new();
    snapshot(tmp, &layers_dir, &mut before);

    let result = store.apply(None, &case.tar[..], None, None, &case.opts);

    let mut after = BTreeMap::new();
    snapshot(tmp, &layers_dir, &mut after);
    assert_eq!(
        before, after,
        "{}: something outside the layer changed",
        case.name
    );
    let left: Vec<_> = fs::read_dir(&layers_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    match (case.outcome, result) {
        (Outcome::Rejected, Err(e)) => {
            assert!(left.is_empty(), "{}: leftovers {left:?}", case.name);
            eprintln!("{}: rejected: {e}", case.name);
        }
        (Outcome::Contained, Ok(l)) => {
            assert_eq!(left.len(), 1, "{}: {left:?}", case.name);
            let s = sentinel.strip_prefix("/").unwrap().to_str().unwrap();
            if let Some(check) = case.check {
                check(&l.path, s);
            }
        }
        (want, got) => panic!("{}: wanted {want:?}, got {got:?}", case.name),
    }
}

fn corpus(s: &str) -> Vec<Case> {
    let strict = ApplyOptions {
        devices: DevicePolicy::Reject,
        ..ApplyOptions::default()
    };
    let d = ApplyOptions::default;
    let case = |name, tar, outcome| Case {
        name,
        tar,
        opts: d(),
        outcome,
        check: None,
    };
    vec![
        case(
            "dotdot file",
            TarBuilder::new()
                .file(&format!("{UP}{s}/evil"), b"x")
                .finish(),
            Outcome::Rejected,
        ),
        case(
            "dotdot after a normal component",
            TarBuilder::new()
                .file(&format!("a/{UP}{s}/evil"), b"x")
                .finish(),
            Outcome::Rejected,
        ),
        case(
            "dotdot directory",
            TarBuilder::new()
                .dir(&format!("{UP}{s}/newdir/"), 0o777)
                .finish(),
            Outcome::Rejected,
        ),
        Case {
            check: Some(|layer, s| {
                assert_eq!(fs::read(layer.join(s).join("evil")).unwrap(), b"x");
            }),
            ..case(
                "absolute name lands inside the layer",
                TarBuilder::new().file(&format!("/{s}/evil"), b"x").finish(),
                Outcome::Contained,
            )
        },
        case(
            "write through an absolute symlink planted earlier",
            TarBuilder::new()
                .symlink("esc", &format!("/{s}"))
                .file("esc/evil", b"x")
                .finish(),
            Outcome::Rejected,
        ),
        Case {
            check: Some(|layer, s| {
                let inside = layer.join(s).join("secret");
                assert_eq!(fs::read(inside).unwrap(), b"pwned");
            }),
            ..case(
                "absolute symlink resolves to the layer's own copy of the path",
                TarBuilder::new()
                    .dir(&format!("{s}/"), 0o755)
                    .symlink("esc", &format!("/{s}"))
                    .file("esc/secret", b"pwned")
                    .finish(),
                Outcome::Contained,
            )
        },
        case(
            "write through a relative symlink climbing out",
            TarBuilder::new()
                .symlink("esc", &format!("{UP}{s}"))
                .file("esc/secret", b"pwned")
                .finish(),
            Outcome::Rejected,
        ),
        Case {
            check: Some(|layer, _| {
                assert_eq!(fs::read(layer.join("evil")).unwrap(), b"x");
            }),
            ..case(
                "symlink to / is the layer root",
                TarBuilder::new()
                    .symlink("rootlink", "/")
                    .file("rootlink/evil", b"x")
                    .finish(),
                Outcome::Contained,
            )
        },
        Case {
            check: Some(|layer, s| {
                assert_eq!(fs::read(layer.join(s).join("evil")).unwrap(), b"x");
            }),
            ..case(
                "symlink chain climbing out is clamped at the root",
                TarBuilder::new()
                    .symlink("a", "b")
                    .symlink("b", UP)
                    .file(&format!("a/{s}/evil"), b"x")
                    .finish(),
                Outcome::Contained,
            )
        },
        Case {
            check: Some(|layer, _| {
                assert!(fs::symlink_metadata(layer.join("s")).unwrap().is_file());
            }),
            ..case(
                "file replaces a symlink instead of writing through it",
                TarBuilder::new()
                    .symlink("s", &format!("/{s}/secret"))
                    .file("s", b"pwned")
                    .finish(),
                Outcome::Contained,
            )
        },
        case(
            "magic link through /proc",
            TarBuilder::new()
                .symlink("p", &format!("/proc/self/root/{s}"))
                .file("p/evil", b"x")
                .finish(),
            Outcome::Rejected,
        ),
        case(
            "hardlink target with dotdot",
            TarBuilder::new()
                .hardlink("h", &format!("{UP}{s}/secret"))
                .finish(),
            Outcome::Rejected,
        ),
        case(
            "hardlink to an absolute host path",
            TarBuilder::new()
                .hardlink("h", &format!("/{s}/secret"))
                .finish(),
            Outcome::Rejected,
        ),
        case(
            "hardlink through a symlink planted earlier",
            TarBuilder::new()
                .symlink("s", UP)
                .hardlink("h", &format!("s/{s}/secret"))
                .finish(),
            Outcome::Rejected,
        ),
        Case {
            check: Some(|layer, _| {
                let md = fs::symlink_metadata(layer.join("h")).unwrap();
                assert!(md.is_file(), "the later file replaced the link");
            }),
            ..case(
                "hardlink to a symlink links the symlink, then a write replaces it",
                TarBuilder::new()
                    .symlink("s", &format!("/{s}/secret"))
                    .hardlink("h", "s")
                    .file("h", b"pwned")
                    .finish(),
                Outcome::Contained,
            )
        },
        case(
            "hardlink named with dotdot",
            TarBuilder::new()
                .file("f", b"x")
                .hardlink(&format!("{UP}{s}/evil"), "f")
                .finish(),
            Outcome::Rejected,
        ),
        case(
            "whiteout of dotdot",
            TarBuilder::new().file(".wh...", b"").finish(),
            Outcome::Rejected,
        ),
        case(
            "whiteout with an empty name",
            TarBuilder::new().file("d/.wh.", b"").finish(),
            Outcome::Rejected,
        ),
        case(
            "whiteout path climbing out",
            TarBuilder::new()
                .file(&format!("{UP}{s}/.wh.secret"), b"")
                .finish(),
            Outcome::Rejected,
        ),
        case(
            "whiteout through a symlink",
            TarBuilder::new()
                .symlink("d", &format!("/{s}"))
                .file("d/.wh.secret", b"")
                .finish(),
            Outcome::Rejected,
        ),
        case(
            "opaque marker through a symlink",
            TarBuilder::new()
                .symlink("d", &format!("{UP}{s}"))
                .file("d/.wh..wh..opq", b"")
                .finish(),
            Outcome::Rejected,
        ),
        Case {
            opts: strict.clone(),
            ..case(
                "char device when devices are not allowed",
                TarBuilder::new()
                    .device(EntryType::Char, "mem", 1, 1)
                    .finish(),
                Outcome::Rejected,
            )
        },
        Case {
            opts: strict,
            ..case(
                "block device when devices are not allowed",
                TarBuilder::new()
                    .device(EntryType::Block, "sda", 8, 0)
                    .finish(),
                Outcome::Rejected,
            )
        },
        case(
            "PAX path record climbing out",
            TarBuilder::new()
                .file_with(
                    "benign",
                    b"x",
                    Opts {
                        pax: vec![("path".into(), format!("{UP}{s}/evil").into_bytes())],
                        ..Opts::default()
                    },
                )
                .finish(),
            Outcome::Rejected,
        ),
        case(
            "GNU long name climbing out",
            TarBuilder::new()
                .gnu_long_name_file(&format!("{UP}{UP}{s}/evil"), b"x")
                .finish(),
            Outcome::Rejected,
        ),
        case(
            "regular file named . (the layer root)",
            TarBuilder::new().file(".", b"x").finish(),
            Outcome::Rejected,
        ),
        case(
            "symlink named ..",
            TarBuilder::new().symlink("..", "/").finish(),
            Outcome::Rejected,
        ),
        case(
            "directory replaced by a symlink, then written through",
            TarBuilder::new()
                .dir("sub/", 0o755)
                .symlink("sub", &format!("/{s}"))
                .file("sub/evil", b"x")
                .finish(),
            Outcome::Rejected,
        ),
        case(
            "overlay redirect xattr smuggled in",
            TarBuilder::new()
                .file_with(
                    "f",
                    b"x",
                    Opts {
                        pax: vec![(
                            "SCHILY.xattr.trusted.overlay.redirect".into(),
                            format!("/{s}").into_bytes(),
                        )],
                        ..Opts::default()
                    },
                )
                .finish(),
            Outcome::Contained,
        ),
    ]
}

#[test]
fn malicious_layers_stay_inside() {
    if !crate::testutil::is_root() {
        eprintln!("skipped: needs root (devices, ownership)");
        return;
    }
    let count = corpus("x").len();
    assert!(count >= 15, "corpus has {count} layers");
    for i in 0..count {
        // Each case aims at the absolute path of its own sentinel.
        let tmp = tempfile::tempdir().unwrap();
        let s = tmp.path().join("sentinel");
        let s = s.strip_prefix("/").unwrap().to_str().unwrap().to_string();
        let case = corpus(&s).swap_remove(i);
        run(tmp.path(), case);
    }
}
