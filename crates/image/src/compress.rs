//! Compressing layer tars for distribution (push), deterministically: the same tar,
//! format and level give the same bytes every time, so a second push of a layer
//! produces the digest the registry already has and uploads nothing.
//!
//! gzip: flate2 with an empty header (no name, mtime 0, OS byte fixed), as Docker
//! and containers/image write it. zstd: one frame, single-threaded (multi-threaded
//! zstd output depends on the thread count), with the content checksum off as
//! containers/image does.

use std::io::{self, Read, Write};

use crate::digest::{Algorithm, Digest, Hasher};
use crate::layer::Compression;

/// The level each format uses when none is asked for. gzip: 1, as go-containerregistry
/// (crane) pushes: layers are mostly already-compressed or random-looking data, on which
/// level 6 costs several times the CPU for a few percent, and a push at level 6 was
/// three times slower than skopeo's parallel gzip. zstd: its own default, 3.
pub fn default_level(format: Compression) -> i32 {
    match format {
        Compression::None => 0,
        Compression::Gzip => 1,
        Compression::Zstd => 3,
    }
}

/// The levels `format` accepts.
pub fn level_range(format: Compression) -> std::ops::RangeInclusive<i32> {
    match format {
        Compression::None => 0..=0,
        Compression::Gzip => 0..=9,
        Compression::Zstd => 1..=22,
    }
}

/// What [`compress`] read: the uncompressed stream's digest (the layer's diff id)
/// and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compressed {
    /// sha256 of the uncompressed input.
    pub diff_id: Digest,
    /// Bytes of uncompressed input.
    pub size: u64,
}

/// Reads `input` (a layer tar: plain, or gzip or zstd, told by its magic bytes) to its
/// end and writes the tar to `output` in `format` at `level` (clamped to
/// [`level_range`]). The uncompressed tar is hashed on the way, so the caller can check
/// it is the layer it meant to compress.
pub fn compress(
    input: &mut dyn Read,
    output: &mut dyn Write,
    format: Compression,
    level: i32,
) -> io::Result<Compressed> {
    let range = level_range(format);
    let level = level.clamp(*range.start(), *range.end());
    let mut tar = crate::layer::decompress(io::BufReader::with_capacity(256 << 10, input), None)?;
    let mut hashed = HashingReader {
        inner: &mut tar,
        hasher: Algorithm::Sha256.hasher(),
        size: 0,
    };
    match format {
        Compression::None => {
            copy(&mut hashed, output)?;
        }
        Compression::Gzip => {
            let mut enc = flate2::GzBuilder::new()
                .mtime(0)
                .operating_system(255)
                .write(output, flate2::Compression::new(level as u32));
            copy(&mut hashed, &mut enc)?;
            enc.finish()?;
        }
        Compression::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(output, level)?;
            enc.include_checksum(false)?;
            copy(&mut hashed, &mut enc)?;
            enc.finish()?;
        }
    }
    Ok(Compressed {
        diff_id: hashed.hasher.finish(),
        size: hashed.size,
    })
}

/// Copies in large blocks: the encoders do their own buffering, and std's 8 KiB
/// copy buffer would mean many more calls into them.
fn copy(input: &mut dyn Read, output: &mut dyn Write) -> io::Result<()> {
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        output.write_all(&buf[..n])?;
    }
}

struct HashingReader<'a> {
    inner: &'a mut dyn Read,
    hasher: Hasher,
    size: u64,
}

impl Read for HashingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        // Half repetitive, half pseudo-random: both kinds of data a layer holds.
        let mut v: Vec<u8> = b"etc/passwd root:x:0:0 ".repeat(20_000);
        let mut x: u32 = 12345;
        v.extend((0..300_000).map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 16) as u8
        }));
        v
    }

    fn run(format: Compression, level: i32) -> (Vec<u8>, Compressed) {
        let data = sample();
        let mut out = Vec::new();
        let c = compress(&mut data.as_slice(), &mut out, format, level).unwrap();
        (out, c)
    }

    #[test]
    fn output_is_deterministic_and_decodes_back() {
        let data = sample();
        for format in [Compression::Gzip, Compression::Zstd] {
            let (a, ca) = run(format, default_level(format));
            let (b, _) = run(format, default_level(format));
            assert_eq!(a, b, "{format:?} output differs between runs");
            assert_eq!(Compression::sniff(&a), Some(format));
            assert!(a.len() < data.len(), "{format:?} did not compress");
            assert_eq!(ca.diff_id, Digest::sha256_of(&data));
            assert_eq!(ca.size, data.len() as u64);
            let mut back = Vec::new();
            crate::layer::decompress(io::BufReader::new(a.as_slice()), None)
                .unwrap()
                .read_to_end(&mut back)
                .unwrap();
            assert!(back == data, "{format:?} round trip changed the data");
        }
    }

    #[test]
    fn compressed_input_is_decoded_first() {
        let data = sample();
        let (gz, _) = run(Compression::Gzip, 1);
        let (zst, direct) = run(Compression::Zstd, 3);
        let mut out = Vec::new();
        let c = compress(&mut gz.as_slice(), &mut out, Compression::Zstd, 3).unwrap();
        assert_eq!(c, direct);
        assert_eq!(c.diff_id, Digest::sha256_of(&data));
        assert_eq!(out, zst);
    }

    #[test]
    fn level_changes_the_output_and_is_clamped() {
        let (fast, _) = run(Compression::Gzip, 1);
        let (best, _) = run(Compression::Gzip, 9);
        assert_ne!(fast, best);
        let (clamped, _) = run(Compression::Gzip, 42);
        assert_eq!(clamped, best);
        // gzip's header: no mtime, OS byte 255 ("unknown").
        assert_eq!(&fast[4..8], &[0, 0, 0, 0]);
        assert_eq!(fast[9], 255);
    }
}
