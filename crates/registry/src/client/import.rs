//! `berth import`: a root filesystem tarball becomes a one-layer image.
//!
//! The tarball is stored as the layer blob exactly as given (plain, gzip or zstd), so
//! nothing is recompressed and the blob digest is the digest of what the user handed
//! over. The config is built here: the platform (the host's unless given), the layer's diff id, one history
//! entry, and the `--change` instructions (the Dockerfile subset `docker import`
//! accepts: CMD, ENTRYPOINT, ENV, WORKDIR, USER, EXPOSE, LABEL).

use std::fs::File;
use std::io::{BufReader, Read, Write};

use berth_image::digest::HashingWriter;
use berth_image::layer::{ApplyOptions, Compression};
use berth_image::{Digest, ImageRecord, LayerRecord, Reference};
use serde_json::{json, Map, Value};

use super::archive::Scratch;
use super::error::{content_ctx, io_ctx, Error, Result};
use super::manifest::{Platform, OCI_MANIFEST};
use super::store::LocalStore;

/// What to import.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Dockerfile instructions applied to the config, in order.
    pub changes: Vec<String>,
    /// Tag to give the image, if any.
    pub reference: Option<Reference>,
    /// Where the tarball came from (`-` for stdin), for the history comment.
    pub source: String,
    /// The platform the files are for (`--platform`); the host's when `None`.
    pub platform: Option<Platform>,
}

/// Imports the tarball read from `input`; returns the image id (config digest).
pub fn import(store: &mut LocalStore, input: impl Read, opts: &ImportOptions) -> Result<Digest> {
    // Changes are checked before any bytes are stored, so a typo costs nothing.
    let mut container = Map::new();
    for c in &opts.changes {
        apply_change(&mut container, c)?;
    }
    let scratch = Scratch::new(store.root())?;
    let path = scratch.0.join("layer");
    let (blob, size, head) = copy_hashed(input, &path)?;
    let media_type = Compression::sniff(&head)
        .unwrap_or(Compression::None)
        .oci_media_type();

    let mut added_blobs = Vec::new();
    let mut added_layer = None;
    let result = (|| {
        let id = put(store, &mut open(&path)?, size, &blob, &mut added_blobs)?;
        let reader = BufReader::with_capacity(256 * 1024, store_blob(store, &id)?);
        let applied = store
            .layers
            .apply(
                None,
                reader,
                Some(media_type),
                None,
                &ApplyOptions::default(),
            )
            .map_err(|source| Error::Layer {
                context: format!("unpack imported layer {blob}"),
                source,
            })?;
        if !applied.already_present {
            added_layer = Some(applied.chain_id.clone());
        }
        let platform = opts.platform.clone().unwrap_or_else(Platform::host);
        let created = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let mut config = json!({
            "created": created,
            "architecture": platform.architecture,
            "os": platform.os,
            "config": container,
            "rootfs": {"type": "layers", "diff_ids": [applied.diff_id.to_string()]},
            "history": [{"created": created, "comment": format!("Imported from {}", opts.source)}],
        });
        if let Some(v) = &platform.variant {
            config["variant"] = json!(v);
        }
        let config_bytes = to_vec(&config)?;
        let config_digest = Digest::sha256_of(&config_bytes);
        put_bytes(store, &config_bytes, &config_digest, &mut added_blobs)?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest.to_string(),
                "size": config_bytes.len(),
            },
            "layers": [{"mediaType": media_type, "digest": blob.to_string(), "size": size}],
        });
        let manifest_bytes = to_vec(&manifest)?;
        let manifest_digest = Digest::sha256_of(&manifest_bytes);
        put_bytes(store, &manifest_bytes, &manifest_digest, &mut added_blobs)?;
        let rec = ImageRecord {
            manifest_digest: manifest_digest.clone(),
            config_digest: config_digest.clone(),
            media_type: OCI_MANIFEST.to_string(),
            platform: berth_image::Platform {
                os: platform.os,
                architecture: platform.architecture,
                variant: platform.variant,
            },
            layers: LayerRecord::stack(&[(applied.diff_id, applied.content_size)]),
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
        };
        store.meta.add_image(&rec)?;
        if let Some(r) = &opts.reference {
            store
                .meta
                .tag(&r.clone().with_default_tag(), &manifest_digest)?;
        }
        Ok(config_digest)
    })();
    if result.is_err() {
        // Only what this import committed and no image uses: another image may
        // share the layer or a blob.
        if let Ok((blobs, layers)) = store.referenced() {
            if let Some(c) = added_layer.filter(|c| !layers.contains(c)) {
                let _ = store.layers.remove(&c);
            }
            for b in added_blobs.iter().filter(|b| !blobs.contains(*b)) {
                let _ = store.content.delete(b);
            }
        }
    }
    result
}

/// Copies `input` to `path`, hashing it; returns digest, size and the first bytes
/// (to detect compression).
fn copy_hashed(mut input: impl Read, path: &std::path::Path) -> Result<(Digest, u64, Vec<u8>)> {
    let file = File::create(path).map_err(io_ctx(format!("create {}", path.display())))?;
    let mut out = HashingWriter::new(std::io::BufWriter::new(file));
    let mut head = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = input.read(&mut buf).map_err(io_ctx("read the tarball"))?;
        if n == 0 {
            break;
        }
        if head.len() < 512 {
            head.extend_from_slice(&buf[..n.min(512 - head.len())]);
        }
        out.write_all(&buf[..n])
            .map_err(io_ctx("write the tarball"))?;
    }
    let (mut w, digest, size) = out.finish();
    w.flush().map_err(io_ctx("write the tarball"))?;
    Ok((digest, size, head))
}

fn open(path: &std::path::Path) -> Result<File> {
    File::open(path).map_err(io_ctx(format!("open {}", path.display())))
}

fn store_blob(store: &LocalStore, d: &Digest) -> Result<File> {
    store
        .content
        .open_blob(d)
        .map_err(content_ctx(format!("open blob {d}")))
}

fn put(
    store: &LocalStore,
    r: &mut dyn Read,
    size: u64,
    d: &Digest,
    added: &mut Vec<Digest>,
) -> Result<Digest> {
    if !store.content.contains(d) {
        store
            .content
            .put(r, size, d)
            .map_err(content_ctx(format!("store blob {d}")))?;
        added.push(d.clone());
    }
    Ok(d.clone())
}

fn put_bytes(store: &LocalStore, bytes: &[u8], d: &Digest, added: &mut Vec<Digest>) -> Result<()> {
    put(store, &mut &bytes[..], bytes.len() as u64, d, added).map(|_| ())
}

fn to_vec(v: &Value) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::Internal(format!("serialize image JSON: {e}")))
}

/// Applies one Dockerfile instruction to the config's `config` object.
pub fn apply_change(config: &mut Map<String, Value>, change: &str) -> Result<()> {
    let bad = |reason: &str| Error::InvalidChange {
        change: change.to_string(),
        reason: reason.to_string(),
    };
    let trimmed = change.trim();
    let (keyword, rest) = trimmed
        .split_once(char::is_whitespace)
        .map_or((trimmed, ""), |(k, r)| (k, r.trim()));
    if rest.is_empty() {
        return Err(bad("no argument"));
    }
    match keyword.to_ascii_uppercase().as_str() {
        "CMD" => {
            config.insert("Cmd".into(), json!(command(rest)));
        }
        "ENTRYPOINT" => {
            config.insert("Entrypoint".into(), json!(command(rest)));
        }
        "WORKDIR" => {
            config.insert("WorkingDir".into(), json!(rest));
        }
        "USER" => {
            config.insert("User".into(), json!(rest));
        }
        "ENV" => {
            let pairs = pairs(rest).ok_or_else(|| bad("unbalanced quotes"))?;
            let env = config
                .entry("Env")
                .or_insert_with(|| json!([]))
                .as_array_mut()
                .ok_or_else(|| bad("Env is not a list"))?;
            for (k, v) in pairs {
                // A later value for the same name replaces the earlier one.
                env.retain(|e| e.as_str().and_then(|e| e.split_once('=')).map(|x| x.0) != Some(&k));
                env.push(json!(format!("{k}={v}")));
            }
        }
        "LABEL" => {
            let pairs = pairs(rest).ok_or_else(|| bad("unbalanced quotes"))?;
            let labels = config
                .entry("Labels")
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .ok_or_else(|| bad("Labels is not an object"))?;
            for (k, v) in pairs {
                labels.insert(k, json!(v));
            }
        }
        "EXPOSE" => {
            let ports = config
                .entry("ExposedPorts")
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .ok_or_else(|| bad("ExposedPorts is not an object"))?;
            for p in rest.split_whitespace() {
                let (port, proto) = p.split_once('/').unwrap_or((p, "tcp"));
                if port.parse::<u16>().is_err() || !matches!(proto, "tcp" | "udp" | "sctp") {
                    return Err(bad("ports are PORT or PORT/tcp|udp|sctp"));
                }
                ports.insert(format!("{port}/{proto}"), json!({}));
            }
        }
        _ => {
            return Err(bad(
                "only CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER and WORKDIR are supported",
            ))
        }
    }
    Ok(())
}

/// Exec form (`["a", "b"]`) as is; shell form runs under `/bin/sh -c`.
fn command(rest: &str) -> Vec<String> {
    if rest.starts_with('[') {
        if let Ok(v) = serde_json::from_str::<Vec<String>>(rest) {
            return v;
        }
    }
    vec!["/bin/sh".into(), "-c".into(), rest.into()]
}

/// `k=v k2="v 2"` pairs; the legacy `KEY value with spaces` form when the first word
/// has no `=`. `None` on an unclosed quote.
fn pairs(rest: &str) -> Option<Vec<(String, String)>> {
    let first = rest.split_whitespace().next().unwrap_or("");
    if !first.contains('=') {
        let (k, v) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        return Some(vec![(k.to_string(), v.trim().to_string())]);
    }
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    let mut escaped = false;
    let mut words = Vec::new();
    for c in rest.chars() {
        match (quote, c) {
            _ if escaped => {
                word.push(c);
                escaped = false;
            }
            (_, '\\') => escaped = true,
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, c) if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            _ => word.push(c),
        }
    }
    if quote.is_some() {
        return None;
    }
    if !word.is_empty() {
        words.push(word);
    }
    for w in words {
        let (k, v) = w.split_once('=')?;
        out.push((k.to_string(), v.to_string()));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_build_the_container_config() {
        let mut c = Map::new();
        for change in [
            r#"CMD ["/bin/sh", "-c", "echo hi"]"#,
            "ENTRYPOINT /init --flag",
            "ENV A=1 B=\"two words\"",
            "ENV A 3",
            "WORKDIR /srv",
            "USER 1000:1000",
            "EXPOSE 80 53/udp",
            "LABEL org.example=yes \"quoted key\"=x",
        ] {
            apply_change(&mut c, change).unwrap();
        }
        assert_eq!(
            Value::Object(c),
            json!({
                "Cmd": ["/bin/sh", "-c", "echo hi"],
                "Entrypoint": ["/bin/sh", "-c", "/init --flag"],
                "Env": ["B=two words", "A=3"],
                "WorkingDir": "/srv",
                "User": "1000:1000",
                "ExposedPorts": {"80/tcp": {}, "53/udp": {}},
                "Labels": {"org.example": "yes", "quoted key": "x"},
            })
        );
    }

    #[test]
    fn bad_changes_are_refused() {
        for change in [
            "RUN make",
            "CMD",
            "EXPOSE http",
            "ENV A=\"open",
            "EXPOSE 80/xyz",
        ] {
            let err = apply_change(&mut Map::new(), change).unwrap_err();
            assert!(
                matches!(err, Error::InvalidChange { .. }),
                "{change}: {err}"
            );
        }
    }
}
