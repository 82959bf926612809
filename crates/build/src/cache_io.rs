//! `--cache-to` / `--cache-from`: the build cache carried between machines.
//!
//! A shared cache is one OCI image manifest (an "artifact"): its config blob,
//! of media type [`CACHE_CONFIG`], lists the cache records (step key → layer
//! index, or none for a step that changed nothing) and what each layer is
//! (diff id, content size); its layers are the step layers' blobs, unchanged.
//! `type=local` writes it into an OCI image layout directory (`oci-layout`,
//! `index.json` naming it by its `tag`, `blobs/sha256/…`); `type=registry`
//! pushes it as `HOST/REPO:TAG` with the registry client's own push (the
//! manifest is recorded in the store for the push only). Any OCI tool can copy
//! either form (`skopeo copy oci:DIR:TAG docker://…`).
//!
//! Importing puts the blobs in the content store and the records in the
//! `build_cache` table; nothing is unpacked until a step hits (see
//! [`crate::export::Layer::from_blob`]). Keys are berth's own (see
//! [`crate::cache::KeyHasher`]), so the cache is for berth builds only.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use berth_image::{Digest, ImageRecord, Reference};
use berth_registry::client::manifest::{Descriptor, Manifest};
use berth_registry::client::{self, LocalStore};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::cache::{Cache, CachedLayer};
use crate::export::{Layer, OCI_INDEX, OCI_MANIFEST};

/// The media type of the cache's config blob.
pub const CACHE_CONFIG: &str = "application/vnd.berth.build.cache.config.v1+json";

/// The annotation that names a manifest in an OCI layout's `index.json`.
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Import and export failures.
#[derive(Debug, thiserror::Error)]
pub enum CacheIoError {
    #[error("cache spec {spec:?}: {reason}")]
    Spec { spec: String, reason: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("{context}: {message}")]
    Other { context: String, message: String },
}

fn io_ctx(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> CacheIoError {
    let context = context.into();
    move |source| CacheIoError::Io { context, source }
}

fn ctx<E: std::fmt::Display>(context: impl Into<String>) -> impl FnOnce(E) -> CacheIoError {
    let context = context.into();
    move |e| CacheIoError::Other {
        context,
        message: e.to_string(),
    }
}

/// Which steps an export carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheMode {
    /// The steps of the final stage (and of the stages it is built `FROM`).
    #[default]
    Min,
    /// The steps of every stage built.
    Max,
}

/// Where a shared cache lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheLocation {
    /// An OCI image layout directory; the manifest is named `tag` in it.
    Local { dir: PathBuf, tag: String },
    /// A registry repository and tag.
    Registry(Reference),
}

/// One `--cache-to` or `--cache-from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSpec {
    pub location: CacheLocation,
    pub mode: CacheMode,
    /// `ignore-error=true`: a failed export is a warning.
    pub ignore_error: bool,
}

impl CacheSpec {
    /// Parses `type=local,dest=DIR` / `type=local,src=DIR` /
    /// `type=registry,ref=REF` (with `mode=min|max`, `tag=`, `ignore-error=`);
    /// a bare `REF` is a registry reference, as Docker takes it.
    pub fn parse(spec: &str, export: bool) -> Result<CacheSpec, CacheIoError> {
        let bad = |reason: &str| CacheIoError::Spec {
            spec: spec.to_string(),
            reason: reason.to_string(),
        };
        if !spec.contains('=') {
            return Ok(CacheSpec {
                location: CacheLocation::Registry(registry_ref(spec).map_err(|r| bad(&r))?),
                mode: CacheMode::Min,
                ignore_error: false,
            });
        }
        let (mut kind, mut path, mut reference, mut tag) = (None, None, None, None);
        let (mut mode, mut ignore_error) = (CacheMode::Min, false);
        for part in spec.split(',') {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| bad(&format!("{part:?} is not KEY=VALUE")))?;
            match (k, v) {
                ("type", v) => kind = Some(v.to_string()),
                ("dest", v) if export => path = Some(PathBuf::from(v)),
                ("src", v) if !export => path = Some(PathBuf::from(v)),
                ("ref", v) => reference = Some(v.to_string()),
                ("tag", v) => tag = Some(v.to_string()),
                ("mode", "min") => mode = CacheMode::Min,
                ("mode", "max") => mode = CacheMode::Max,
                ("mode", _) => return Err(bad("mode is min or max")),
                ("ignore-error", v) => ignore_error = v == "true",
                _ => return Err(bad(&format!("unsupported field {k:?}"))),
            }
        }
        let location = match kind.as_deref() {
            Some("local") => CacheLocation::Local {
                dir: path.ok_or_else(|| {
                    bad(if export {
                        "type=local needs dest=DIR"
                    } else {
                        "type=local needs src=DIR"
                    })
                })?,
                tag: tag.unwrap_or_else(|| "latest".into()),
            },
            Some("registry") => {
                let r = reference.ok_or_else(|| bad("type=registry needs ref=HOST/REPO:TAG"))?;
                CacheLocation::Registry(registry_ref(&r).map_err(|r| bad(&r))?)
            }
            _ => return Err(bad("type is local or registry")),
        };
        Ok(CacheSpec {
            location,
            mode,
            ignore_error,
        })
    }
}

fn registry_ref(s: &str) -> Result<Reference, String> {
    Reference::parse_name(s)
        .map(Reference::with_default_tag)
        .map_err(|e| format!("invalid reference {s:?}: {e}"))
}

/// One step of a build as the cache knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The stage it belongs to.
    pub stage: usize,
    /// Its cache key.
    pub key: String,
    /// What it made; `None` when it changed nothing.
    pub layer: Option<Layer>,
}

/// The config blob's JSON.
#[derive(Debug, Serialize, Deserialize)]
struct CacheConfig {
    records: Vec<CacheRecord>,
    layers: Vec<CacheLayer>,
}

#[derive(Debug, Serialize, Deserialize)]
struct CacheRecord {
    key: String,
    /// Index into `layers`; absent for a step that made no layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    layer: Option<usize>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CacheLayer {
    digest: Digest,
    diff_id: Digest,
    size: u64,
    media_type: String,
    content_size: u64,
}

/// The cache manifest and config, serialised.
struct Artifact {
    config: Vec<u8>,
    config_digest: Digest,
    manifest: Vec<u8>,
    manifest_digest: Digest,
    layers: Vec<Layer>,
}

/// The steps `mode` keeps: all of them, or those of `final_stages`.
pub fn select(steps: &[StepRecord], mode: CacheMode, final_stages: &[usize]) -> Vec<StepRecord> {
    let mut seen = BTreeSet::new();
    steps
        .iter()
        .filter(|s| mode == CacheMode::Max || final_stages.contains(&s.stage))
        .filter(|s| seen.insert(s.key.clone()))
        .cloned()
        .collect()
}

fn artifact(steps: &[StepRecord]) -> Result<Artifact, CacheIoError> {
    let mut layers: Vec<Layer> = Vec::new();
    let mut records = Vec::new();
    for s in steps {
        let layer =
            s.layer
                .as_ref()
                .map(|l| match layers.iter().position(|k| k.digest == l.digest) {
                    Some(i) => i,
                    None => {
                        layers.push(l.clone());
                        layers.len() - 1
                    }
                });
        records.push(CacheRecord {
            key: s.key.clone(),
            layer,
        });
    }
    let config = CacheConfig {
        records,
        layers: layers
            .iter()
            .map(|l| CacheLayer {
                digest: l.digest.clone(),
                diff_id: l.diff_id.clone(),
                size: l.size,
                media_type: l.media_type.clone(),
                content_size: l.content_size,
            })
            .collect(),
    };
    let config = serde_json::to_vec(&config).map_err(ctx("serialise the cache config"))?;
    let config_digest = Digest::sha256_of(&config);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": CACHE_CONFIG, "digest": config_digest.to_string(), "size": config.len()},
        "layers": layers.iter().map(|l| json!({
            "mediaType": l.media_type, "digest": l.digest.to_string(), "size": l.size,
        })).collect::<Vec<_>>(),
    });
    let manifest = serde_json::to_vec(&manifest).map_err(ctx("serialise the cache manifest"))?;
    Ok(Artifact {
        manifest_digest: Digest::sha256_of(&manifest),
        config,
        config_digest,
        manifest,
        layers,
    })
}

/// Writes `steps` to `location`; returns the cache manifest's digest.
pub fn export(
    store: &mut LocalStore,
    steps: &[StepRecord],
    location: &CacheLocation,
    registry: &client::Options,
) -> Result<Digest, CacheIoError> {
    let art = artifact(steps)?;
    match location {
        CacheLocation::Local { dir, tag } => to_layout(store, &art, dir, tag)?,
        CacheLocation::Registry(r) => to_registry(store, &art, r, registry)?,
    }
    Ok(art.manifest_digest)
}

fn blob_path(dir: &Path, d: &Digest) -> PathBuf {
    dir.join("blobs")
        .join(d.algorithm().to_string())
        .join(d.hex())
}

/// Writes a blob into the layout unless it is there; a temporary name and a
/// rename keep a cut-off write from looking like the blob.
fn write_blob(dir: &Path, d: &Digest, mut data: impl std::io::Read) -> Result<(), CacheIoError> {
    let path = blob_path(dir, d);
    if path.is_file() {
        return Ok(());
    }
    let parent = path.parent().unwrap_or(dir);
    std::fs::create_dir_all(parent).map_err(io_ctx(format!("create {}", parent.display())))?;
    let tmp = parent.join(format!(".tmp-{}-{}", d.hex(), std::process::id()));
    let mut f = File::create(&tmp).map_err(io_ctx(format!("create {}", tmp.display())))?;
    std::io::copy(&mut data, &mut f).map_err(io_ctx(format!("write blob {d}")))?;
    f.flush().map_err(io_ctx(format!("write blob {d}")))?;
    std::fs::rename(&tmp, &path).map_err(io_ctx(format!("rename {}", tmp.display())))
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<(), CacheIoError> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, data).map_err(io_ctx(format!("write {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(io_ctx(format!("rename {}", tmp.display())))
}

fn to_layout(
    store: &LocalStore,
    art: &Artifact,
    dir: &Path,
    tag: &str,
) -> Result<(), CacheIoError> {
    std::fs::create_dir_all(dir).map_err(io_ctx(format!("create {}", dir.display())))?;
    for l in &art.layers {
        let f = store
            .content
            .open_blob(&l.digest)
            .map_err(ctx(format!("open blob {}", l.digest)))?;
        write_blob(dir, &l.digest, f)?;
    }
    write_blob(dir, &art.config_digest, &art.config[..])?;
    write_blob(dir, &art.manifest_digest, &art.manifest[..])?;
    write_atomic(
        &dir.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    // Other tags in the layout stay; this tag now names the new manifest.
    let index_path = dir.join("index.json");
    let mut manifests: Vec<serde_json::Value> = match std::fs::read(&index_path) {
        Ok(b) => serde_json::from_slice::<serde_json::Value>(&b)
            .map_err(ctx(format!("parse {}", index_path.display())))?["manifests"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io_ctx(format!("read {}", index_path.display()))(e)),
    };
    manifests.retain(|m| m["annotations"][REF_NAME].as_str() != Some(tag));
    manifests.push(json!({
        "mediaType": OCI_MANIFEST,
        "digest": art.manifest_digest.to_string(),
        "size": art.manifest.len(),
        "annotations": {REF_NAME: tag},
    }));
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
    let index = serde_json::to_vec(&index).map_err(ctx("serialise index.json"))?;
    write_atomic(&index_path, &index)
}

/// Pushes the cache with the registry client's image push: the manifest is
/// recorded as an image (no layers, no tag) for the push and forgotten after.
fn to_registry(
    store: &mut LocalStore,
    art: &Artifact,
    dest: &Reference,
    opts: &client::Options,
) -> Result<(), CacheIoError> {
    for (bytes, d) in [
        (&art.config, &art.config_digest),
        (&art.manifest, &art.manifest_digest),
    ] {
        store
            .content
            .put(&mut &bytes[..], bytes.len() as u64, d)
            .map_err(ctx(format!("store blob {d}")))?;
    }
    let host = client::Platform::host();
    let rec = ImageRecord {
        manifest_digest: art.manifest_digest.clone(),
        config_digest: art.config_digest.clone(),
        media_type: OCI_MANIFEST.to_string(),
        platform: berth_image::Platform {
            os: host.os,
            architecture: host.architecture,
            variant: host.variant,
        },
        layers: Vec::new(),
        created_unix: 0,
    };
    let added = store
        .meta
        .add_image(&rec)
        .map_err(ctx("record the cache manifest"))?;
    let pushed = client::push(store, &art.manifest_digest.to_string(), dest, opts)
        .map_err(ctx(format!("push the cache to {dest}")));
    if added {
        let _ = store.meta.remove_image(&art.manifest_digest);
    }
    pushed.map(|_| ())
}

/// Reads the cache at `location` into the store: blobs into the content
/// store, records into the build cache. Returns how many records came in.
pub fn import(
    store: &LocalStore,
    location: &CacheLocation,
    registry: &client::Options,
) -> Result<usize, CacheIoError> {
    let config = match location {
        CacheLocation::Local { dir, tag } => from_layout(store, dir, tag)?,
        CacheLocation::Registry(r) => from_registry(store, r, registry)?,
    };
    let cache = Cache::open(&store.root().join("berth.db")).map_err(ctx("open the build cache"))?;
    cache.begin().map_err(ctx("record the cache"))?;
    for r in &config.records {
        let rec = match r.layer {
            None => CachedLayer {
                diff_id: String::new(),
                digest: String::new(),
                size: 0,
                media_type: String::new(),
                content_size: 0,
            },
            Some(i) => {
                let l = config.layers.get(i).ok_or_else(|| CacheIoError::Other {
                    context: "read the cache config".into(),
                    message: format!("record {} names layer {i}, which is not there", r.key),
                })?;
                CachedLayer {
                    diff_id: l.diff_id.to_string(),
                    digest: l.digest.to_string(),
                    size: l.size,
                    media_type: l.media_type.clone(),
                    content_size: l.content_size,
                }
            }
        };
        cache
            .put(&r.key, &rec, None)
            .map_err(ctx("record the cache"))?;
    }
    cache.commit().map_err(ctx("record the cache"))?;
    Ok(config.records.len())
}

/// The manifest's config and layers, after checking that it is a cache.
fn parse_manifest(bytes: &[u8], name: &str) -> Result<(Descriptor, Vec<Descriptor>), CacheIoError> {
    match Manifest::parse(bytes, Some(OCI_MANIFEST), name).map_err(ctx(format!("read {name}")))? {
        Manifest::Image { config, layers, .. } if config.media_type == CACHE_CONFIG => {
            Ok((config, layers))
        }
        _ => Err(CacheIoError::Other {
            context: format!("read {name}"),
            message: format!("not a berth build cache (config media type {CACHE_CONFIG})"),
        }),
    }
}

fn parse_config(
    bytes: &[u8],
    layers: &[Descriptor],
    name: &str,
) -> Result<CacheConfig, CacheIoError> {
    let config: CacheConfig =
        serde_json::from_slice(bytes).map_err(ctx(format!("parse the cache config of {name}")))?;
    // Every layer a record may name must be a blob the manifest carries.
    for l in &config.layers {
        if !layers.iter().any(|d| d.digest == l.digest) {
            return Err(CacheIoError::Other {
                context: format!("read {name}"),
                message: format!("layer {} is not in the manifest", l.digest),
            });
        }
    }
    Ok(config)
}

fn read_verified(dir: &Path, d: &Digest) -> Result<Vec<u8>, CacheIoError> {
    let path = blob_path(dir, d);
    let bytes = std::fs::read(&path).map_err(io_ctx(format!("read {}", path.display())))?;
    let actual = Digest::sha256_of(&bytes);
    if &actual != d {
        return Err(CacheIoError::Other {
            context: format!("read {}", path.display()),
            message: format!("digest is {actual}, expected {d}"),
        });
    }
    Ok(bytes)
}

fn from_layout(store: &LocalStore, dir: &Path, tag: &str) -> Result<CacheConfig, CacheIoError> {
    let index_path = dir.join("index.json");
    let index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&index_path).map_err(io_ctx(format!("read {}", index_path.display())))?,
    )
    .map_err(ctx(format!("parse {}", index_path.display())))?;
    let name = format!("{}:{tag}", dir.display());
    let entry = index["manifests"]
        .as_array()
        .and_then(|m| {
            m.iter()
                .find(|e| e["annotations"][REF_NAME].as_str() == Some(tag))
        })
        .ok_or_else(|| CacheIoError::Other {
            context: format!("read {name}"),
            message: format!("no manifest named {tag:?} in index.json"),
        })?;
    let digest: Digest = entry["digest"]
        .as_str()
        .unwrap_or("")
        .parse()
        .map_err(ctx(format!("read {name}")))?;
    let manifest = read_verified(dir, &digest)?;
    let (config, layers) = parse_manifest(&manifest, &name)?;
    let config = parse_config(&read_verified(dir, &config.digest)?, &layers, &name)?;
    for l in &layers {
        let path = blob_path(dir, &l.digest);
        let mut f = File::open(&path).map_err(io_ctx(format!("open {}", path.display())))?;
        // The content store checks size and digest as it commits.
        store
            .content
            .put(&mut f, l.size, &l.digest)
            .map_err(ctx(format!("import blob {}", l.digest)))?;
    }
    Ok(config)
}

fn from_registry(
    store: &LocalStore,
    reference: &Reference,
    opts: &client::Options,
) -> Result<CacheConfig, CacheIoError> {
    let name = reference.to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io_ctx("start the async runtime"))?;
    rt.block_on(async {
        let fail = |e: client::Error| CacheIoError::Other {
            context: format!("import cache from {name}"),
            message: e.to_string(),
        };
        let reg = client::Registry::connect(reference.domain(), opts.clone())
            .await
            .map_err(fail)?;
        let repo = reference.path();
        let wanted = match (reference.digest(), reference.tag()) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.to_string(),
            (None, None) => "latest".to_string(),
        };
        let m = client::fetch::manifest(&reg, repo, &wanted)
            .await
            .map_err(fail)?;
        let (config, layers) = parse_manifest(&m.bytes, &name)?;
        let config_bytes = client::fetch::small_blob(&reg, repo, &config)
            .await
            .map_err(fail)?;
        let config = parse_config(&config_bytes, &layers, &name)?;
        for l in &layers {
            client::fetch::blob_to_store(&reg, repo, l, &store.content, None)
                .await
                .map_err(fail)?;
        }
        Ok(config)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_as_buildkit_writes_them() {
        let s = CacheSpec::parse("type=local,dest=/tmp/c,mode=max", true).unwrap();
        assert_eq!(
            s.location,
            CacheLocation::Local {
                dir: "/tmp/c".into(),
                tag: "latest".into()
            }
        );
        assert_eq!(s.mode, CacheMode::Max);
        let s = CacheSpec::parse("type=registry,ref=localhost:5000/c:main", false).unwrap();
        assert!(matches!(s.location, CacheLocation::Registry(ref r) if r.tag() == Some("main")));
        assert_eq!(s.mode, CacheMode::Min);
        let s = CacheSpec::parse("localhost:5000/c", false).unwrap();
        assert!(matches!(s.location, CacheLocation::Registry(ref r) if r.tag() == Some("latest")));
        assert!(CacheSpec::parse("type=local,src=/x", true).is_err());
        assert!(CacheSpec::parse("type=local", false).is_err());
        assert!(CacheSpec::parse("type=gha", false).is_err());
        assert!(CacheSpec::parse("type=local,dest=/x,mode=all", true).is_err());
    }

    #[test]
    fn min_keeps_the_final_stages_and_drops_repeats() {
        let step = |stage, key: &str| StepRecord {
            stage,
            key: key.into(),
            layer: None,
        };
        let steps = vec![step(0, "a"), step(1, "b"), step(2, "c"), step(2, "c")];
        let keys = |v: Vec<StepRecord>| v.into_iter().map(|s| s.key).collect::<Vec<_>>();
        assert_eq!(keys(select(&steps, CacheMode::Min, &[2, 1])), ["b", "c"]);
        assert_eq!(keys(select(&steps, CacheMode::Max, &[2])), ["a", "b", "c"]);
    }
}
