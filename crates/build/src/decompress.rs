//! Decompression of ADD's local archives by their magic number, as BuildKit's
//! `archiveutil.DecompressStream`: gzip, bzip2, xz and zstd; anything else is read as
//! it is. The name of the file plays no part (`ADD rootfs.tar.xz /` and a gzip file
//! called `data.bin` are both unpacked when they hold a tar).

use std::io::{self, Chain, Cursor, Read};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

/// The compressions BuildKit recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

impl Compression {
    /// The compression whose magic number `head` starts with.
    pub fn detect(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b, 0x08]) {
            Compression::Gzip
        } else if head.starts_with(b"BZh") {
            Compression::Bzip2
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Compression::Xz
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// The longest magic number [`Compression::detect`] looks at.
const MAGIC_LEN: usize = 6;

/// `input` decompressed according to its first bytes.
pub fn decompressed<R: Read + Send + 'static>(mut input: R) -> io::Result<Box<dyn Read + Send>> {
    let mut head = Vec::with_capacity(MAGIC_LEN);
    (&mut input).take(MAGIC_LEN as u64).read_to_end(&mut head)?;
    let kind = Compression::detect(&head);
    let whole = Cursor::new(head).chain(input);
    Ok(match kind {
        Compression::None => Box::new(whole),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(whole)),
        Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(whole)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(whole)?),
        Compression::Xz => Box::new(XzReader::new(whole)),
    })
}

/// Chunks in flight between the xz decoder's thread and the reader.
const XZ_QUEUE: usize = 4;

/// An xz stream read as it is decoded: `lzma-rs` decodes xz only into a writer, so
/// it runs on a thread of its own feeding a bounded queue. The thread ends when the
/// stream does or when the reader is dropped (its next write fails), and the drop
/// waits for it, so no thread outlives the ADD (RUN later clones the process).
struct XzReader {
    chunks: Option<Receiver<io::Result<Vec<u8>>>>,
    current: Cursor<Vec<u8>>,
    decoder: Option<JoinHandle<()>>,
}

impl XzReader {
    fn new(input: Chain<Cursor<Vec<u8>>, impl Read + Send + 'static>) -> XzReader {
        let (tx, rx) = sync_channel(XZ_QUEUE);
        let decoder = std::thread::spawn(move || {
            let mut input = io::BufReader::new(input);
            let mut out = ChunkWriter { tx: tx.clone() };
            if let Err(e) = lzma_rs::xz_decompress(&mut input, &mut out) {
                // The reader may be gone already; then nobody needs the error.
                let _ = tx.send(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
            }
        });
        XzReader {
            chunks: Some(rx),
            current: Cursor::new(Vec::new()),
            decoder: Some(decoder),
        }
    }
}

impl Read for XzReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let n = self.current.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            let Some(chunks) = &self.chunks else {
                return Ok(0);
            };
            match chunks.recv() {
                Ok(chunk) => self.current = Cursor::new(chunk?),
                // The decoder finished: end of stream.
                Err(_) => return Ok(0),
            }
        }
    }
}

impl Drop for XzReader {
    fn drop(&mut self) {
        // Closing the queue makes the decoder's next write fail, so it stops.
        self.chunks = None;
        if let Some(d) = self.decoder.take() {
            let _ = d.join();
        }
    }
}

/// The decoder's output, in chunks onto the queue.
struct ChunkWriter {
    tx: SyncSender<io::Result<Vec<u8>>>,
}

impl io::Write for ChunkWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tx
            .send(Ok(buf.to_vec()))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "xz reader closed"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const TEXT: &[u8] = b"the same bytes, whatever the compression\n";

    fn roundtrip(compressed: Vec<u8>, kind: Compression) {
        assert_eq!(Compression::detect(&compressed), kind);
        let mut out = Vec::new();
        decompressed(Cursor::new(compressed))
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, TEXT, "{kind:?}");
    }

    #[test]
    fn every_compression_buildkit_knows_is_undone() {
        roundtrip(TEXT.to_vec(), Compression::None);

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(TEXT).unwrap();
        roundtrip(gz.finish().unwrap(), Compression::Gzip);

        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        bz.write_all(TEXT).unwrap();
        roundtrip(bz.finish().unwrap(), Compression::Bzip2);

        let mut xz = Vec::new();
        lzma_rs::xz_compress(&mut io::BufReader::new(TEXT), &mut xz).unwrap();
        roundtrip(xz, Compression::Xz);

        roundtrip(zstd::encode_all(TEXT, 1).unwrap(), Compression::Zstd);
    }

    #[test]
    fn a_reader_dropped_early_stops_the_xz_decoder() {
        let big = vec![b'x'; 1 << 20];
        let mut xz = Vec::new();
        lzma_rs::xz_compress(&mut io::BufReader::new(&big[..]), &mut xz).unwrap();
        let mut r = decompressed(Cursor::new(xz)).unwrap();
        let mut head = [0u8; 512];
        r.read_exact(&mut head).unwrap();
        assert_eq!(head, [b'x'; 512]);
        drop(r); // joins the decoder thread; hangs here if it did not stop
    }

    #[test]
    fn a_corrupt_xz_stream_is_an_error() {
        let mut bad = vec![0xfd, b'7', b'z', b'X', b'Z', 0x00];
        bad.extend_from_slice(b"not really xz");
        let mut out = Vec::new();
        let err = decompressed(Cursor::new(bad))
            .unwrap()
            .read_to_end(&mut out)
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
