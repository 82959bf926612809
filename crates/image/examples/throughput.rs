//! Throughput of the data paths a pull runs through, on this machine: sha256 (berth's
//! hasher), gzip and zstd decompression, and unpacking a layer into a directory.
//! `cargo run --release -p berth-image --example throughput [MiB [SAMPLE_FILE]]` (default
//! 256 MiB; the sample is written to SAMPLE_FILE when given);
//! bench/throughput.sh puts the numbers beside `openssl speed` and `zstd -b`.

use std::io::{Read, Write};
use std::time::Instant;

use berth_image::digest::Algorithm;
use berth_image::layer::apply::unpack;
use berth_image::layer::ApplyOptions;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mib: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(256);
    let data = sample(mib << 20);
    // The sample for peers' own benchmarks (`zstd -b`), so both see the same bytes.
    if let Some(path) = std::env::args().nth(2) {
        std::fs::write(path, &data)?;
    }

    let t = Instant::now();
    let mut h = Algorithm::Sha256.hasher();
    h.update(&data);
    let _ = h.finish();
    report("sha256", data.len(), t);

    let gz = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&data)?;
        e.finish()?
    };
    let t = Instant::now();
    drain(flate2::read::GzDecoder::new(&gz[..]))?;
    report("gzip -1 decompress (output)", data.len(), t);

    let zst = zstd::encode_all(&data[..], 3)?;
    let t = Instant::now();
    drain(zstd::Decoder::new(&zst[..])?)?;
    report("zstd -3 decompress (output)", data.len(), t);

    // A layer of 16 files of the sample, unpacked as a pull does (no fsync here).
    let mut tar = tar::Builder::new(Vec::new());
    for (i, chunk) in data.chunks(data.len() / 16).enumerate() {
        let mut hdr = tar::Header::new_gnu();
        hdr.set_size(chunk.len() as u64);
        hdr.set_mode(0o644);
        hdr.set_cksum();
        tar.append_data(&mut hdr, format!("f{i}"), chunk)?;
    }
    let tar = tar.into_inner()?;
    let dir = tempfile::tempdir()?;
    let t = Instant::now();
    unpack(dir.path(), &tar[..], None, &ApplyOptions::default())?;
    report("unpack tar into a directory", tar.len(), t);
    Ok(())
}

/// Half random, half repetitive text: compressible like real layers, not trivially so.
fn sample(len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while v.len() < len {
        for _ in 0..512 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.extend_from_slice(&x.to_le_bytes());
        }
        v.extend_from_slice(&b"usr/lib/x86_64-linux-gnu/libexample.so.1 "[..].repeat(100));
    }
    v.truncate(len);
    v
}

fn drain(mut r: impl Read) -> std::io::Result<u64> {
    std::io::copy(&mut r, &mut std::io::sink())
}

fn report(what: &str, bytes: usize, t: Instant) {
    let s = t.elapsed().as_secs_f64();
    println!("{what:32} {:7.0} MB/s", bytes as f64 / s / 1e6);
}
