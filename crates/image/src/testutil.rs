//! Test helpers: building layer tars entry by entry with exact names.

use std::io::Write;

use crate::layer::tarutil::{append_raw, PaxRecord};

/// Builds a tar in memory. Names are written byte-for-byte, so hostile
/// names such as `../x` can be produced.
pub(crate) struct TarBuilder {
    b: tar::Builder<Vec<u8>>,
}

pub(crate) struct Opts {
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub pax: Vec<PaxRecord>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1_600_000_000,
            pax: Vec::new(),
        }
    }
}

impl TarBuilder {
    pub fn new() -> Self {
        TarBuilder {
            b: tar::Builder::new(Vec::new()),
        }
    }

    fn header(kind: tar::EntryType, o: &Opts, size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(o.mode);
        h.set_uid(o.uid);
        h.set_gid(o.gid);
        h.set_mtime(o.mtime);
        h.set_size(size);
        h
    }

    pub fn entry(
        &mut self,
        kind: tar::EntryType,
        name: &str,
        link: Option<&str>,
        data: &[u8],
        o: Opts,
    ) -> &mut Self {
        let mut h = Self::header(kind, &o, data.len() as u64);
        append_raw(
            &mut self.b,
            &mut h,
            name.as_bytes(),
            link.map(str::as_bytes),
            o.pax,
            data,
        )
        .unwrap();
        self
    }

    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.entry(tar::EntryType::Regular, name, None, data, Opts::default())
    }

    pub fn file_with(&mut self, name: &str, data: &[u8], o: Opts) -> &mut Self {
        self.entry(tar::EntryType::Regular, name, None, data, o)
    }

    pub fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        let o = Opts {
            mode,
            ..Opts::default()
        };
        self.entry(tar::EntryType::Directory, name, None, b"", o)
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        let o = Opts {
            mode: 0o777,
            ..Opts::default()
        };
        self.entry(tar::EntryType::Symlink, name, Some(target), b"", o)
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(
            tar::EntryType::Link,
            name,
            Some(target),
            b"",
            Opts::default(),
        )
    }

    pub fn device(
        &mut self,
        kind: tar::EntryType,
        name: &str,
        major: u32,
        minor: u32,
    ) -> &mut Self {
        let mut h = Self::header(kind, &Opts::default(), 0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        append_raw(
            &mut self.b,
            &mut h,
            name.as_bytes(),
            None,
            Vec::new(),
            &b""[..],
        )
        .unwrap();
        self
    }

    /// A GNU long-name entry followed by a file whose ustar name is benign.
    pub fn gnu_long_name_file(&mut self, long: &str, data: &[u8]) -> &mut Self {
        let mut body = long.as_bytes().to_vec();
        body.push(0);
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::GNULongName);
        h.set_mode(0o644);
        h.set_size(body.len() as u64);
        append_raw(
            &mut self.b,
            &mut h,
            b"././@LongLink",
            None,
            Vec::new(),
            &body[..],
        )
        .unwrap();
        self.file("benign", data)
    }

    pub fn finish(&mut self) -> Vec<u8> {
        let b = std::mem::replace(&mut self.b, tar::Builder::new(Vec::new()));
        b.into_inner().unwrap()
    }
}

pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub(crate) fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(data, 1).unwrap()
}

pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
