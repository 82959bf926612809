//! Writing tar entries with exact names.
//!
//! The `tar` crate's path setters normalise names (they drop a directory's
//! trailing `/` and refuse `..`). Layers need byte-exact names, and the
//! tests need to write hostile ones, so entries are written with the name
//! bytes placed in the header directly, and names too long for the 100-byte
//! field go in a PAX extended header, as Go's archive/tar does.

use std::io::{self, Read, Write};

/// Length of the ustar name and linkname fields.
const NAME_FIELD: usize = 100;

/// One PAX record (`key=value`).
pub(crate) type PaxRecord = (String, Vec<u8>);

/// Appends an entry whose name (and link name) are written verbatim.
/// `pax` records are emitted first, plus `path`/`linkpath` when needed.
pub(crate) fn append_raw<W: Write>(
    builder: &mut tar::Builder<W>,
    header: &mut tar::Header,
    name: &[u8],
    link: Option<&[u8]>,
    mut pax: Vec<PaxRecord>,
    data: impl Read,
) -> io::Result<()> {
    if name.len() > NAME_FIELD {
        pax.insert(0, ("path".into(), name.to_vec()));
    }
    if let Some(link) = link.filter(|l| l.len() > NAME_FIELD) {
        pax.insert(0, ("linkpath".into(), link.to_vec()));
    }
    if !pax.is_empty() {
        append_pax(builder, name, &pax)?;
    }
    let old = header.as_old_mut();
    fill(&mut old.name, name);
    if let Some(link) = link {
        fill(&mut old.linkname, link);
    }
    header.set_cksum();
    builder.append(header, data)
}

fn fill(field: &mut [u8; NAME_FIELD], value: &[u8]) {
    let n = value.len().min(NAME_FIELD);
    field.fill(0);
    field[..n].copy_from_slice(&value[..n]);
}

fn append_pax<W: Write>(
    builder: &mut tar::Builder<W>,
    name: &[u8],
    records: &[PaxRecord],
) -> io::Result<()> {
    let mut body = Vec::new();
    for (k, v) in records {
        body.extend_from_slice(&pax_record(k, v));
    }
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_size(body.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    let mut pax_name = b"PaxHeaders/".to_vec();
    let base = name
        .rsplit(|&b| b == b'/')
        .find(|s| !s.is_empty())
        .unwrap_or(b"x");
    pax_name.extend_from_slice(&base[..base.len().min(NAME_FIELD - pax_name.len())]);
    fill(&mut h.as_old_mut().name, &pax_name);
    h.set_cksum();
    builder.append(&h, &body[..])
}

/// `"<len> <key>=<value>\n"` where `<len>` counts the whole record,
/// including its own digits.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while rest + len.to_string().len() != len {
        len = rest + len.to_string().len();
    }
    let mut out = format!("{len} {key}=").into_bytes();
    out.extend_from_slice(value);
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_lengths() {
        assert_eq!(pax_record("path", b"a"), b"9 path=a\n");
        let long = vec![b'x'; 95];
        let r = pax_record("path", &long);
        assert_eq!(r.len().to_string(), String::from_utf8_lossy(&r[..3]));
    }
}
