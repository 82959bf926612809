//! `ADD <url>`: downloads over HTTP(S) with a blocking client (no threads:
//! the process may still clone a RUN container after it).
//!
//! As in Docker, the file is named after the URL's last path segment when
//! the destination is a directory, gets mode 0600, and is not extracted.
//! `--checksum=sha256:<hex>` is verified before anything is written.

use std::io::Read;

use sha2::{Digest as _, Sha256};

/// The largest download accepted.
const MAX_SIZE: u64 = 8 << 30;

/// Downloads `url`; returns the file name it suggests and its bytes.
pub fn download(url: &str, checksum: Option<&str>) -> Result<(String, Vec<u8>), String> {
    let name = file_name(url)?;
    let resp = ureq::get(url)
        .call()
        .map_err(|e| format!("failed to download {url}: {e}"))?;
    let mut data = Vec::new();
    resp.into_reader()
        .take(MAX_SIZE)
        .read_to_end(&mut data)
        .map_err(|e| format!("failed to download {url}: {e}"))?;
    if let Some(want) = checksum {
        let hex = want
            .strip_prefix("sha256:")
            .ok_or_else(|| format!("unsupported checksum {want:?} (sha256:<hex> only)"))?;
        let got = hex::encode(Sha256::digest(&data));
        if !got.eq_ignore_ascii_case(hex) {
            return Err(format!(
                "digest mismatch for {url}: expected sha256:{hex}, got sha256:{got}"
            ));
        }
    }
    Ok((name, data))
}

/// The last non-empty path segment of a URL.
pub fn file_name(url: &str) -> Result<String, String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = rest.split(['?', '#']).next().unwrap_or("");
    let name = path
        .split_once('/')
        .map(|(_, p)| p)
        .unwrap_or("")
        .rsplit('/')
        .find(|s| !s.is_empty())
        .unwrap_or("");
    if name.is_empty() || name == ".." || name == "." {
        return Err(format!("cannot determine a file name from {url}"));
    }
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_come_from_the_path() {
        assert_eq!(
            super::file_name("http://h/a/b.tar.gz?x=1").unwrap(),
            "b.tar.gz"
        );
        assert_eq!(super::file_name("https://h:80/dir/").unwrap(), "dir");
        assert!(super::file_name("http://host").is_err());
    }
}
