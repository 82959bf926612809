//! Functional tests of layer apply and diff on a real filesystem.

use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use tar::EntryType;

use super::*;
use crate::digest::Digest;
use crate::sys;
use crate::testutil::{gzip, is_root, zstd, Opts, TarBuilder};

fn store() -> (tempfile::TempDir, LayerStore) {
    let dir = tempfile::tempdir().unwrap();
    let s = LayerStore::open(dir.path().join("layers")).unwrap();
    (dir, s)
}

fn apply(s: &LayerStore, tar: &[u8]) -> Result<AppliedLayer, LayerError> {
    s.apply(None, tar, None, None, &ApplyOptions::default())
}

fn xattr(p: &Path, k: &str) -> Option<Vec<u8>> {
    sys::lgetxattr(p, OsStr::new(k)).unwrap()
}

/// A VFS_CAP_REVISION_2 capability with CAP_NET_BIND_SERVICE permitted and
/// effective.
fn cap_net_bind() -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&(0x0200_0000u32 | 1).to_le_bytes());
    v.extend_from_slice(&(1u32 << 10).to_le_bytes());
    v.extend_from_slice(&[0u8; 12]);
    v
}

fn everything_tar() -> Vec<u8> {
    let mut t = TarBuilder::new();
    t.dir("./", 0o755)
        .dir("etc/", 0o750)
        .file_with(
            "etc/app.conf",
            b"conf",
            Opts {
                mode: 0o4755,
                uid: 1000,
                gid: 1001,
                mtime: 1_500_000_000,
                pax: vec![
                    ("SCHILY.xattr.user.note".into(), b"hello".to_vec()),
                    ("SCHILY.xattr.security.capability".into(), cap_net_bind()),
                    (
                        "SCHILY.xattr.trusted.overlay.redirect".into(),
                        b"/x".to_vec(),
                    ),
                    ("mtime".into(), b"1500000000.25".to_vec()),
                ],
            },
        )
        .symlink("etc/link", "/etc/app.conf")
        .hardlink("etc/hard", "etc/app.conf")
        .device(EntryType::Char, "dev/null", 1, 3)
        .device(EntryType::Block, "dev/loop9", 7, 9)
        .device(EntryType::Fifo, "run/fifo", 0, 0)
        .file("deep/implicit/parents/file", b"x")
        .file(&format!("{}/long-name", "n".repeat(120)), b"long");
    t.finish()
}

#[test]
fn applies_every_entry_type_with_metadata() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let (_d, s) = store();
    let l = apply(&s, &everything_tar()).unwrap();
    let p = &l.path;
    let conf = fs::symlink_metadata(p.join("etc/app.conf")).unwrap();
    assert_eq!(conf.mode() & 0o7777, 0o4755, "set-uid survives chown");
    assert_eq!((conf.uid(), conf.gid()), (1000, 1001));
    assert_eq!(
        (conf.mtime(), conf.mtime_nsec()),
        (1_500_000_000, 250_000_000)
    );
    assert_eq!(conf.nlink(), 2);
    assert_eq!(fs::read(p.join("etc/hard")).unwrap(), b"conf");
    assert_eq!(
        xattr(&p.join("etc/app.conf"), "user.note").unwrap(),
        b"hello"
    );
    assert_eq!(
        xattr(&p.join("etc/app.conf"), "security.capability").unwrap(),
        cap_net_bind()
    );
    assert_eq!(
        xattr(&p.join("etc/app.conf"), "trusted.overlay.redirect"),
        None,
        "overlay xattrs from a layer are dropped"
    );
    let etc = fs::metadata(p.join("etc")).unwrap();
    assert_eq!(etc.mode() & 0o7777, 0o750);
    assert_eq!(etc.mtime(), 1_600_000_000, "dir mtime set after children");
    assert_eq!(
        fs::read_link(p.join("etc/link")).unwrap(),
        Path::new("/etc/app.conf")
    );
    let null = fs::symlink_metadata(p.join("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), libc::makedev(1, 3));
    assert_eq!(null.mode() & 0o7777, 0o644);
    let lp = fs::symlink_metadata(p.join("dev/loop9")).unwrap();
    assert!(lp.file_type().is_block_device());
    assert_eq!(lp.rdev(), libc::makedev(7, 9));
    assert!(fs::symlink_metadata(p.join("run/fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    assert_eq!(
        fs::read(p.join("deep/implicit/parents/file")).unwrap(),
        b"x"
    );
    let long = p.join("n".repeat(120)).join("long-name");
    assert_eq!(fs::read(long).unwrap(), b"long");
    assert_eq!(l.content_size, 4 + 1 + 4);
}

#[test]
fn compressions_give_the_same_diff_id() {
    let (_d, s) = store();
    let tar = TarBuilder::new().file("a", b"a").finish();
    let plain = Digest::sha256_of(&tar);
    let oci = "application/vnd.oci.image.layer.v1.tar";
    for (bytes, mt) in [
        (tar.clone(), None),
        (gzip(&tar), None),
        (zstd(&tar), None),
        (gzip(&tar), Some(oci)), // mislabelled: magic wins
        (
            zstd(&tar),
            Some("application/vnd.oci.image.layer.v1.tar+zstd"),
        ),
    ] {
        let l = s
            .apply(None, &bytes[..], mt, Some(&plain), &ApplyOptions::default())
            .unwrap();
        assert_eq!(l.diff_id, plain);
        assert_eq!(l.chain_id, plain, "bottom layer: chain id = diff id");
    }
}

#[test]
fn diff_id_mismatch_leaves_nothing() {
    let (d, s) = store();
    let tar = TarBuilder::new().file("a", b"a").finish();
    let wrong = Digest::sha256_of(b"nope");
    let e = s
        .apply(None, &tar[..], None, Some(&wrong), &ApplyOptions::default())
        .unwrap_err();
    assert!(matches!(e, LayerError::DiffIdMismatch { .. }), "{e}");
    assert_eq!(fs::read_dir(d.path().join("layers")).unwrap().count(), 0);
}

struct PanicReader;
impl Read for PanicReader {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        panic!("a present layer must not be read again");
    }
}

#[test]
fn unpacks_once_and_chains() {
    let (_d, s) = store();
    let base = TarBuilder::new().file("a", b"a").finish();
    let top = TarBuilder::new().file("b", b"b").finish();
    let l1 = apply(&s, &base).unwrap();
    let l2 = s
        .apply(
            Some(&l1.chain_id),
            &top[..],
            None,
            None,
            &ApplyOptions::default(),
        )
        .unwrap();
    assert_eq!(l2.chain_id, chain_id(Some(&l1.chain_id), &l2.diff_id));
    assert_eq!(l2.path, s.path(&l2.chain_id));
    assert!(
        !l2.path.join("a").exists(),
        "layer dirs hold only their diff"
    );
    let again = s
        .apply(
            Some(&l1.chain_id),
            PanicReader,
            None,
            Some(&l2.diff_id),
            &ApplyOptions::default(),
        )
        .unwrap();
    assert!(again.already_present);
    assert_eq!(again.chain_id, l2.chain_id);
    // Without a diff id the stream is read, and the existing dir wins.
    let dup = apply(&s, &base).unwrap();
    assert!(dup.already_present);
    assert!(s.remove(&l2.chain_id).unwrap());
    assert!(!s.contains(&l2.chain_id));
    assert!(!s.remove(&l2.chain_id).unwrap());
}

#[test]
fn whiteouts_become_overlay_markers() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let (_d, s) = store();
    let tar = TarBuilder::new()
        .file(".wh.gone", b"")
        .dir("d/", 0o755)
        .file("d/.wh..wh..opq", b"")
        .file("d/kept", b"k")
        .file("same", b"here")
        .file(".wh.same", b"")
        .file("e/.wh..wh.plnk", b"")
        .finish();
    let l = apply(&s, &tar).unwrap();
    let gone = fs::symlink_metadata(l.path.join("gone")).unwrap();
    assert!(gone.file_type().is_char_device());
    assert_eq!(gone.rdev(), 0);
    assert_eq!(
        xattr(&l.path.join("d"), "trusted.overlay.opaque").unwrap(),
        b"y"
    );
    assert_eq!(fs::read(l.path.join("d/kept")).unwrap(), b"k");
    assert_eq!(
        fs::read(l.path.join("same")).unwrap(),
        b"here",
        "a whiteout does not hide its own layer"
    );
    assert!(!l.path.join(".wh.gone").exists());
    assert!(!l.path.join("e/.wh..wh.plnk").exists());
}

#[test]
fn later_entries_replace_earlier_ones() {
    let (_d, s) = store();
    let tar = TarBuilder::new()
        .file("x", b"file")
        .dir("x/", 0o755)
        .file("x/inner", b"i")
        .file("x", b"file again")
        .symlink("y", "x")
        .file("y", b"not through the link")
        .finish();
    let l = apply(&s, &tar).unwrap();
    assert_eq!(fs::read(l.path.join("x")).unwrap(), b"file again");
    assert!(fs::symlink_metadata(l.path.join("y")).unwrap().is_file());
    assert_eq!(fs::read(l.path.join("y")).unwrap(), b"not through the link");
}

#[test]
fn devices_can_be_skipped() {
    let (_d, s) = store();
    let tar = TarBuilder::new()
        .device(EntryType::Char, "null", 1, 3)
        .file("f", b"")
        .finish();
    let opts = ApplyOptions {
        devices: DevicePolicy::Skip,
        ..ApplyOptions::default()
    };
    let l = s.apply(None, &tar[..], None, None, &opts).unwrap();
    assert!(!l.path.join("null").exists());
    assert!(l.path.join("f").exists());
}

/// Builds an overlay-style upper dir by hand, diffs it, and applies the
/// result: the tree must round-trip and the output must be deterministic.
#[test]
fn diff_round_trip_and_determinism() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let upper = d.path().join("upper");
    fs::create_dir_all(upper.join("opaque/sub")).unwrap();
    fs::write(upper.join("opaque/sub/f"), b"f").unwrap();
    sys::lsetxattr(
        &upper.join("opaque"),
        OsStr::new("trusted.overlay.opaque"),
        b"y",
    )
    .unwrap();
    fs::write(upper.join("file"), b"data").unwrap();
    fs::hard_link(upper.join("file"), upper.join("zlink")).unwrap();
    std::os::unix::fs::symlink("file", upper.join("sym")).unwrap();
    sys::mknod(&upper.join("deleted"), libc::S_IFCHR, 0).unwrap();
    sys::mknod(&upper.join("fifo"), libc::S_IFIFO | 0o600, 0).unwrap();
    sys::lsetxattr(&upper.join("file"), OsStr::new("user.k"), b"v").unwrap();

    let mut out1 = Vec::new();
    let r1 = write_layer(&upper, &mut out1, Compression::Gzip).unwrap();
    let mut out2 = Vec::new();
    let r2 = write_layer(&upper, &mut out2, Compression::Gzip).unwrap();
    assert_eq!(r1, r2);
    assert_eq!(out1, out2);
    assert_eq!(r1.digest, Digest::sha256_of(&out1));
    assert_eq!(r1.size, out1.len() as u64);

    let mut names = Vec::new();
    let tar = {
        let mut dec = flate2::read::GzDecoder::new(&out1[..]);
        let mut v = Vec::new();
        dec.read_to_end(&mut v).unwrap();
        v
    };
    assert_eq!(Digest::sha256_of(&tar), r1.diff_id);
    for e in tar::Archive::new(&tar[..]).entries().unwrap() {
        let e = e.unwrap();
        names.push(String::from_utf8(e.path_bytes().into_owned()).unwrap());
    }
    assert_eq!(
        names,
        [
            ".wh.deleted",
            "fifo",
            "file",
            "opaque/",
            "opaque/.wh..wh..opq",
            "opaque/sub/",
            "opaque/sub/f",
            "sym",
            "zlink"
        ]
    );

    let layers = LayerStore::open(d.path().join("layers")).unwrap();
    let l = layers
        .apply(
            None,
            &out1[..],
            None,
            Some(&r1.diff_id),
            &ApplyOptions::default(),
        )
        .unwrap();
    let p = &l.path;
    assert!(fs::symlink_metadata(p.join("deleted"))
        .unwrap()
        .file_type()
        .is_char_device());
    assert_eq!(
        xattr(&p.join("opaque"), "trusted.overlay.opaque").unwrap(),
        b"y"
    );
    assert_eq!(fs::read(p.join("opaque/sub/f")).unwrap(), b"f");
    assert_eq!(fs::metadata(p.join("file")).unwrap().nlink(), 2);
    assert_eq!(xattr(&p.join("file"), "user.k").unwrap(), b"v");
    assert_eq!(fs::read_link(p.join("sym")).unwrap(), Path::new("file"));
    assert!(fs::symlink_metadata(p.join("fifo"))
        .unwrap()
        .file_type()
        .is_fifo());

    // Other compressions carry the same tar.
    for c in [Compression::None, Compression::Zstd] {
        let r = write_layer(&upper, std::io::sink(), c).unwrap();
        assert_eq!(r.diff_id, r1.diff_id, "{c:?}");
    }
}

#[test]
fn pax_ids_and_blank_numeric_fields() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let (_d, s) = store();
    let mut t = TarBuilder::new();
    t.file_with(
        "big-ids",
        b"",
        Opts {
            pax: vec![
                ("uid".into(), b"3000000".to_vec()),
                ("gid".into(), b"3000001".to_vec()),
            ],
            ..Opts::default()
        },
    );
    let mut tar = t.finish();
    // Blank the ustar uid field of the entry: blank means zero.
    let pax_len = 512 + 512; // pax header + its one-block body
    tar[pax_len + 108..pax_len + 116].fill(0);
    let mut h = tar::Header::from_byte_slice(&tar[pax_len..pax_len + 512]).clone();
    h.set_cksum();
    tar[pax_len..pax_len + 512].copy_from_slice(h.as_bytes());
    let l = apply(&s, &tar).unwrap();
    let md = fs::symlink_metadata(l.path.join("big-ids")).unwrap();
    assert_eq!((md.uid(), md.gid()), (3_000_000, 3_000_001));
}

/// Everything overlayfs and the runtime see of a tree: per entry its name,
/// type, mode, owner, link count, mtime (seconds, as tar keeps them), size,
/// content or link target, device number and xattrs.
fn tree(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for name in names {
        let p = dir.join(&name);
        let rel = format!("{prefix}{}", name.to_string_lossy());
        let md = fs::symlink_metadata(&p).unwrap();
        let ft = md.file_type();
        let body = if ft.is_file() {
            format!("{:?}", fs::read(&p).unwrap())
        } else if ft.is_symlink() {
            format!("-> {:?}", fs::read_link(&p).unwrap())
        } else {
            String::new()
        };
        let mut xattrs: Vec<_> = sys::llistxattr(&p)
            .unwrap()
            .into_iter()
            .map(|k| {
                let v = sys::lgetxattr(&p, &k).unwrap();
                format!("{}={:?}", k.to_string_lossy(), v)
            })
            .collect();
        xattrs.sort();
        out.push(format!(
            "{rel} {:o} {}:{} n{} t{} s{} r{} {body} {xattrs:?}",
            md.mode(),
            md.uid(),
            md.gid(),
            md.nlink(),
            md.mtime(),
            if ft.is_dir() { 0 } else { md.len() },
            md.rdev(),
        ));
        if ft.is_dir() {
            tree(&p, &format!("{rel}/"), out);
        }
    }
}

/// An upper directory moved into the store with `adopt` must be exactly
/// what unpacking its tar gives, with overlayfs' bookkeeping and sockets
/// gone; the tar is the same as `write_layer`'s, hashed once.
#[test]
fn adopting_an_upper_dir_matches_unpacking_its_tar() {
    // The project's tests run as root (ownership, trusted.overlay xattrs); say so rather
    // than pass without having checked anything.
    assert!(is_root(), "this test needs root");
    let d = tempfile::tempdir().unwrap();
    let upper = d.path().join("upper");
    fs::create_dir_all(upper.join("opaque/sub")).unwrap();
    fs::create_dir_all(upper.join("copied-up")).unwrap();
    fs::write(upper.join("opaque/sub/f"), b"f").unwrap();
    let set = |p: &str, k: &str, v: &[u8]| sys::lsetxattr(&upper.join(p), OsStr::new(k), v);
    set("opaque", "trusted.overlay.opaque", b"y").unwrap();
    fs::write(upper.join("copied-up/file"), b"data").unwrap();
    set("copied-up/file", "trusted.overlay.origin", b"\x00\xfb").unwrap();
    set("copied-up/file", "user.keep", b"v").unwrap();
    set("copied-up", "trusted.overlay.impure", b"y").unwrap();
    set("", "trusted.overlay.impure", b"y").unwrap();
    fs::hard_link(upper.join("copied-up/file"), upper.join("zlink")).unwrap();
    std::os::unix::fs::symlink("copied-up/file", upper.join("sym")).unwrap();
    sys::mknod(&upper.join("deleted"), libc::S_IFCHR, 0).unwrap();
    let sock = std::os::unix::net::UnixListener::bind(upper.join("copied-up/sock")).unwrap();
    drop(sock);
    let old = fs::FileTimes::new().set_modified(std::time::UNIX_EPOCH);
    fs::File::open(upper.join("copied-up"))
        .unwrap()
        .set_times(old)
        .unwrap();

    let mut plain = Vec::new();
    let before = write_layer(&upper, &mut plain, Compression::None).unwrap();
    let mut out = Vec::new();
    let r = write_layer_and_adopt(&upper, &mut out, Compression::None).unwrap();
    assert_eq!(out, plain, "adopting changes nothing in the tar");
    assert_eq!(r, before);
    // Uncompressed: the blob is the tar.
    assert_eq!(r.digest, r.diff_id);
    assert_eq!(r.diff_id, Digest::sha256_of(&out));
    assert_eq!(r.size, out.len() as u64);
    assert_eq!(r.content_size, 5, "file (4) + opaque/sub/f (1), link once");

    let unpacked = LayerStore::open(d.path().join("unpacked")).unwrap();
    let a = unpacked
        .apply(
            None,
            &out[..],
            None,
            Some(&r.diff_id),
            &ApplyOptions::default(),
        )
        .unwrap();
    let adopted = LayerStore::open(d.path().join("adopted")).unwrap();
    let b = adopted
        .adopt(None, &upper, &r.diff_id, r.content_size)
        .unwrap();
    assert!(!upper.exists(), "the upper dir moved into the store");
    assert!(!b.already_present);
    assert_eq!((b.chain_id, b.content_size), (a.chain_id, a.content_size));
    let (mut want, mut got) = (Vec::new(), Vec::new());
    tree(&a.path, "", &mut want);
    tree(&b.path, "", &mut got);
    assert_eq!(got, want);
    assert!(got.iter().any(|l| l.contains("trusted.overlay.opaque")));
    assert!(!got
        .iter()
        .any(|l| l.contains("origin") || l.contains("impure")));
    assert!(!got.iter().any(|l| l.contains("sock")));
    assert_eq!(
        sys::llistxattr(&b.path).unwrap(),
        Vec::<std::ffi::OsString>::new()
    );

    // A second adopt of the same layer leaves its directory alone.
    let again = d.path().join("again");
    fs::create_dir(&again).unwrap();
    let c = adopted.adopt(None, &again, &r.diff_id, 5).unwrap();
    assert!(c.already_present);
    assert!(again.is_dir());
}
