//! Content digests (`algorithm:hex`) as used by OCI descriptors.
//!
//! Only the algorithms registered by the OCI image spec are accepted, and the
//! hex part must be lowercase with the exact length of the algorithm's output,
//! so a digest has one canonical spelling and can be used as a file name.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use sha2::{Digest as _, Sha256, Sha384, Sha512};

/// Why a string is not a valid digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// No `:` separator, or an empty side.
    #[error("invalid digest format: {0:?}")]
    Format(String),
    /// The algorithm is syntactically fine but not one we can verify.
    #[error("unsupported digest algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// The hex part has the wrong length or characters for its algorithm.
    #[error("invalid {algorithm} digest hex {hex:?}: want {want} lowercase hex characters")]
    Hex {
        /// Algorithm name.
        algorithm: &'static str,
        /// The offending hex text.
        hex: String,
        /// Expected number of hex characters.
        want: usize,
    },
}

/// Hash algorithms accepted in digests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// `sha256`, the default and the only one used for chain ids and diff ids.
    Sha256,
    /// `sha384`.
    Sha384,
    /// `sha512`.
    Sha512,
}

impl Algorithm {
    /// The name as written before the `:`.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha384 => "sha384",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Number of hex characters in a digest of this algorithm.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha384 => 96,
            Algorithm::Sha512 => 128,
        }
    }

    /// A fresh streaming hasher for this algorithm.
    pub fn hasher(self) -> Hasher {
        let inner = match self {
            Algorithm::Sha256 => HasherInner::Sha256(Sha256::new()),
            Algorithm::Sha384 => HasherInner::Sha384(Sha384::new()),
            Algorithm::Sha512 => HasherInner::Sha512(Sha512::new()),
        };
        Hasher { inner }
    }
}

impl FromStr for Algorithm {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sha256" => Ok(Algorithm::Sha256),
            "sha384" => Ok(Algorithm::Sha384),
            "sha512" => Ok(Algorithm::Sha512),
            other => Err(DigestError::UnsupportedAlgorithm(other.to_string())),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated digest such as `sha256:e3b0c442…`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    /// Builds a digest from parts, validating the hex.
    pub fn new(algorithm: Algorithm, hex: &str) -> Result<Self, DigestError> {
        let valid = hex.len() == algorithm.hex_len()
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !valid {
            return Err(DigestError::Hex {
                algorithm: algorithm.as_str(),
                hex: hex.to_string(),
                want: algorithm.hex_len(),
            });
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_string(),
        })
    }

    /// The sha256 digest of `data`.
    pub fn sha256_of(data: &[u8]) -> Self {
        let mut h = Algorithm::Sha256.hasher();
        h.update(data);
        h.finish()
    }

    /// The algorithm part.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The hex part (lowercase, exact length).
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (alg, hex) = s
            .split_once(':')
            .filter(|(a, h)| !a.is_empty() && !h.is_empty())
            .ok_or_else(|| DigestError::Format(s.to_string()))?;
        Digest::new(alg.parse()?, hex)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.hex)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl TryFrom<&oci_spec::image::Digest> for Digest {
    type Error = DigestError;
    fn try_from(d: &oci_spec::image::Digest) -> Result<Self, Self::Error> {
        d.to_string().parse()
    }
}

impl TryFrom<&Digest> for oci_spec::image::Digest {
    type Error = oci_spec::OciSpecError;
    fn try_from(d: &Digest) -> Result<Self, Self::Error> {
        d.to_string().parse()
    }
}

#[derive(Clone)]
enum HasherInner {
    Sha256(Sha256),
    Sha384(Sha384),
    Sha512(Sha512),
}

/// A streaming hasher that yields a [`Digest`].
#[derive(Clone)]
pub struct Hasher {
    inner: HasherInner,
}

impl Hasher {
    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        match &mut self.inner {
            HasherInner::Sha256(h) => h.update(data),
            HasherInner::Sha384(h) => h.update(data),
            HasherInner::Sha512(h) => h.update(data),
        }
    }

    /// The digest of everything fed so far.
    pub fn finish(self) -> Digest {
        let (algorithm, bytes) = match self.inner {
            HasherInner::Sha256(h) => (Algorithm::Sha256, h.finalize().to_vec()),
            HasherInner::Sha384(h) => (Algorithm::Sha384, h.finalize().to_vec()),
            HasherInner::Sha512(h) => (Algorithm::Sha512, h.finalize().to_vec()),
        };
        Digest {
            algorithm,
            hex: hex::encode(bytes),
        }
    }
}

/// A reader that hashes and counts everything read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`, hashing with `algorithm`.
    pub fn new(inner: R, algorithm: Algorithm) -> Self {
        HashingReader {
            inner,
            hasher: algorithm.hasher(),
            count: 0,
        }
    }

    /// Reads the rest of the stream so that the digest covers all of it.
    pub fn drain(&mut self) -> io::Result<()> {
        io::copy(self, &mut io::sink()).map(|_| ())
    }

    /// Bytes read so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Digest of the bytes read so far.
    pub fn digest(&self) -> Digest {
        self.hasher.clone().finish()
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// A [`HashingWriter`] (sha256) that moves the hashing to a second thread, in 1 MiB
/// chunks, once more than [`THREAD_AFTER`] bytes went through: for hundreds of megabytes
/// of layer tar the hash (the largest cost of an uncompressed layer that is only hashed)
/// then runs beside the reading and tar framing instead of after them, while the many
/// small layers of a build hash inline and start no thread. Stays inline if no thread
/// can be started.
pub struct ThreadedHashingWriter<W> {
    inner: W,
    count: u64,
    mode: HashMode,
}

enum HashMode {
    Inline {
        hasher: Hasher,
        /// Whether a thread was tried already (and could not be started).
        tried: bool,
    },
    Thread {
        chunk: Vec<u8>,
        to_hasher: std::sync::mpsc::SyncSender<Vec<u8>>,
        /// Chunks the hasher is done with, for reuse.
        spare: std::sync::mpsc::Receiver<Vec<u8>>,
        hasher: std::thread::JoinHandle<Hasher>,
    },
}

const HASH_CHUNK: usize = 1 << 20;

/// Bytes hashed inline before the hashing moves to a thread.
pub const THREAD_AFTER: u64 = 8 << 20;

impl HashMode {
    /// Continues `hasher` on a new thread; `None` if none can be started.
    fn thread(hasher: &Hasher) -> Option<HashMode> {
        use std::sync::mpsc::sync_channel;
        let (to_hasher, chunks) = sync_channel::<Vec<u8>>(4);
        let (give_back, spare) = sync_channel::<Vec<u8>>(4);
        let mut h = hasher.clone();
        let spawned = std::thread::Builder::new()
            .name("hash".into())
            .spawn(move || {
                for mut chunk in chunks {
                    h.update(&chunk);
                    chunk.clear();
                    let _ = give_back.try_send(chunk);
                }
                h
            });
        spawned.ok().map(|hasher| HashMode::Thread {
            chunk: Vec::with_capacity(HASH_CHUNK),
            to_hasher,
            spare,
            hasher,
        })
    }
}

impl<W: Write> ThreadedHashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        ThreadedHashingWriter {
            inner,
            count: 0,
            mode: HashMode::Inline {
                hasher: Algorithm::Sha256.hasher(),
                tried: false,
            },
        }
    }

    /// Returns the inner writer, the digest and the byte count; fails if the hashing
    /// thread died (it cannot, short of a panic in sha2), since then no digest is known.
    pub fn finish(self) -> io::Result<(W, Digest, u64)> {
        let digest = match self.mode {
            HashMode::Inline { hasher, .. } => hasher.finish(),
            HashMode::Thread {
                chunk,
                to_hasher,
                hasher,
                ..
            } => {
                let lost = !chunk.is_empty() && to_hasher.send(chunk).is_err();
                drop(to_hasher);
                match hasher.join() {
                    Ok(h) if !lost => h.finish(),
                    _ => return Err(io::Error::other("the hashing thread stopped")),
                }
            }
        };
        Ok((self.inner, digest, self.count))
    }
}

impl<W: Write> Write for ThreadedHashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        match &mut self.mode {
            HashMode::Inline { hasher, tried } => {
                hasher.update(&buf[..n]);
                if !*tried && self.count > THREAD_AFTER {
                    *tried = true;
                    if let Some(thread) = HashMode::thread(hasher) {
                        self.mode = thread;
                    }
                }
            }
            HashMode::Thread {
                chunk,
                to_hasher,
                spare,
                ..
            } => {
                chunk.extend_from_slice(&buf[..n]);
                if chunk.len() >= HASH_CHUNK {
                    let next = spare
                        .try_recv()
                        .unwrap_or_else(|_| Vec::with_capacity(HASH_CHUNK));
                    let full = std::mem::replace(chunk, next);
                    to_hasher
                        .send(full)
                        .map_err(|_| io::Error::other("the hashing thread stopped"))?;
                }
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A writer that hashes and counts everything written through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`, hashing with sha256.
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Algorithm::Sha256.hasher(),
            count: 0,
        }
    }

    /// Bytes written so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Returns the inner writer, the digest and the byte count.
    pub fn finish(self) -> (W, Digest, u64) {
        (self.inner, self.hasher.finish(), self.count)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn threaded_hashing_matches_inline() {
        // Past THREAD_AFTER, so the hashing moves to a thread midway.
        let data: Vec<u8> = (0..THREAD_AFTER as usize + 3 * HASH_CHUNK + 12345)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let mut w = ThreadedHashingWriter::new(Vec::new());
        for part in data.chunks(8000) {
            w.write_all(part).unwrap();
        }
        assert!(matches!(w.mode, HashMode::Thread { .. }));
        let (out, digest, count) = w.finish().unwrap();
        assert_eq!(out, data);
        assert_eq!(count, data.len() as u64);
        assert_eq!(digest, Digest::sha256_of(&data));
        let small = ThreadedHashingWriter::new(io::sink());
        assert!(matches!(small.mode, HashMode::Inline { .. }));
        let (_, empty, _) = small.finish().unwrap();
        assert_eq!(empty.hex(), EMPTY);
    }

    #[test]
    fn sha256_of_empty() {
        assert_eq!(Digest::sha256_of(b"").hex(), EMPTY);
    }

    #[test]
    fn parse_table() {
        let sha512 = format!("sha512:{}", "ab".repeat(64));
        let ok = [
            format!("sha256:{EMPTY}"),
            sha512,
            format!("sha384:{}", "0".repeat(96)),
        ];
        for s in &ok {
            let d: Digest = s.parse().unwrap();
            assert_eq!(&d.to_string(), s);
        }
        let bad = [
            ("", "format"),
            ("sha256", "format"),
            ("sha256:", "format"),
            (":abc", "format"),
            ("md5:d41d8cd98f00b204e9800998ecf8427e", "unsupported"),
            ("sha256:abc", "hex"),
            (&format!("sha256:{}", EMPTY.to_uppercase()), "hex"),
            (&format!("sha512:{EMPTY}"), "hex"),
            (&format!("sha256:{}g", &EMPTY[..63]), "hex"),
        ];
        for (s, kind) in bad {
            let err = s.parse::<Digest>().unwrap_err();
            let got = match err {
                DigestError::Format(_) => "format",
                DigestError::UnsupportedAlgorithm(_) => "unsupported",
                DigestError::Hex { .. } => "hex",
            };
            assert_eq!(got, kind, "{s:?}");
        }
    }

    #[test]
    fn oci_spec_round_trip() {
        let d: Digest = format!("sha256:{EMPTY}").parse().unwrap();
        let o = oci_spec::image::Digest::try_from(&d).unwrap();
        assert_eq!(Digest::try_from(&o).unwrap(), d);
    }

    #[test]
    fn hashing_reader_counts() {
        let mut r = HashingReader::new(&b"hello"[..], Algorithm::Sha256);
        r.drain().unwrap();
        assert_eq!(r.count(), 5);
        assert_eq!(r.digest(), Digest::sha256_of(b"hello"));
    }
}
