//! The byte form of a filter, and the on-disk cache of compiled filters.
//!
//! Bytes: magic, format version, seccomp flags, instruction count, the
//! instructions (little-endian `code, jt, jf, k`), then a SHA-256 of all of
//! that. The checksum makes a torn or damaged cache file harmless: it fails
//! to load and is compiled and written again, so the cache does not fsync.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxSeccomp;
use sha2::{Digest, Sha256};

use crate::bpf::{self, Insn};
use crate::{Error, Filter};

const MAGIC: &[u8; 8] = b"BERTHBPF";
const FORMAT_VERSION: u32 = 1;
const HEADER_LEN: usize = 8 + 4 + 4 + 4;
const INSN_LEN: usize = 8;
const SUM_LEN: usize = 32;

pub fn to_bytes(filter: &Filter) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + filter.insns.len() * INSN_LEN + SUM_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&filter.flags.to_le_bytes());
    out.extend_from_slice(&(filter.insns.len() as u32).to_le_bytes());
    for insn in &filter.insns {
        out.extend_from_slice(&insn.code.to_le_bytes());
        out.push(insn.jt);
        out.push(insn.jf);
        out.extend_from_slice(&insn.k.to_le_bytes());
    }
    let sum = Sha256::digest(&out);
    out.extend_from_slice(&sum);
    out
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub fn from_bytes(b: &[u8]) -> Result<Filter, Error> {
    if b.len() < HEADER_LEN + SUM_LEN || &b[..8] != MAGIC {
        return Err(Error::Corrupt("not a berth seccomp filter"));
    }
    let (body, sum) = b.split_at(b.len() - SUM_LEN);
    if Sha256::digest(body).as_slice() != sum {
        return Err(Error::Corrupt("checksum mismatch"));
    }
    if u32_at(body, 8) != FORMAT_VERSION {
        return Err(Error::Corrupt("unsupported format version"));
    }
    let flags = u32_at(body, 12);
    let count = u32_at(body, 16) as usize;
    let insns_bytes = &body[HEADER_LEN..];
    if insns_bytes.len() != count.saturating_mul(INSN_LEN) {
        return Err(Error::Corrupt("instruction count does not match length"));
    }
    let insns: Vec<Insn> = insns_bytes
        .chunks_exact(INSN_LEN)
        .map(|c| Insn {
            code: u16::from_le_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32_at(c, 4),
        })
        .collect();
    bpf::validate(&insns).map_err(Error::Corrupt)?;
    Ok(Filter { insns, flags })
}

/// The cache file name: SHA-256 of everything the program depends on.
fn cache_key(spec: &LinuxSeccomp) -> Result<String, Error> {
    // serde_json writes struct fields in declaration order, so equal specs
    // give equal bytes.
    let json = serde_json::to_vec(spec).map_err(|e| Error::Invalid {
        field: "linux.seccomp".into(),
        reason: e.to_string(),
    })?;
    let mut h = Sha256::new();
    h.update(b"berth-seccomp\0");
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    h.update(b"\0");
    h.update(std::env::consts::ARCH.as_bytes());
    h.update(b"\0");
    h.update(FORMAT_VERSION.to_le_bytes());
    h.update(&json);
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

pub fn compile_cached(spec: &LinuxSeccomp, dir: &Path) -> Result<Filter, Error> {
    let path = dir.join(format!("{}.bpf", cache_key(spec)?));
    if let Ok(bytes) = fs::read(&path) {
        // A damaged file falls through to compiling and rewriting it.
        if let Ok(filter) = from_bytes(&bytes) {
            return Ok(filter);
        }
    }
    let filter = crate::compile(spec)?;
    // The cache only saves time: a container still starts when it cannot
    // be written (read-only or full disk).
    let _ = write_atomically(dir, &path, &to_bytes(&filter));
    Ok(filter)
}

/// Writes to a temporary file beside `path` and renames it into place, so
/// readers see the old file or the whole new one.
fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let cache_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Cache { path, source }
    };
    fs::create_dir_all(dir).map_err(cache_err(dir))?;
    let tmp = temp_name(path);
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes))
        .and_then(|()| fs::rename(&tmp, path));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.map_err(cache_err(path))
}

fn temp_name(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{}.{seq}.tmp", std::process::id()));
    PathBuf::from(name)
}
