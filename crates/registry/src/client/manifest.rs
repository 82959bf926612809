//! The four manifest kinds a registry serves (OCI image manifest and index, Docker schema 2
//! manifest and manifest list), read through one tolerant shape, and platform selection.
//!
//! The two families differ only in media types, so one struct with optional `config`,
//! `layers` and `manifests` covers all four; the kind is decided from the Content-Type the
//! registry sent, then the body's own `mediaType`, then which fields are present (OCI
//! allows an index or manifest without `mediaType`).

use std::fmt;

use berth_image::Digest;
use serde::{Deserialize, Serialize};

use super::error::{Error, Result};

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest v2 schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The Accept header for manifest requests: every kind berth understands.
pub const ACCEPT_ALL: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Registries (and Docker) refuse manifests above 4 MiB; so does berth, so a hostile
/// registry cannot make it buffer an unbounded body.
pub const MAX_MANIFEST_SIZE: usize = 4 * 1024 * 1024;

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced content.
    #[serde(default)]
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// For index entries: the platform the manifest is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<PlatformSpec>,
}

/// The platform object of an index entry or image config.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PlatformSpec {
    /// Operating system, e.g. `linux`.
    #[serde(default)]
    pub os: String,
    /// CPU architecture, e.g. `amd64`.
    #[serde(default)]
    pub architecture: String,
    /// Variant, e.g. `v8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<u32>,
    #[serde(default)]
    media_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
}

/// Which of the four kinds a manifest is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// OCI image manifest.
    OciManifest,
    /// OCI image index.
    OciIndex,
    /// Docker schema 2 manifest.
    DockerManifest,
    /// Docker manifest list.
    DockerList,
}

impl Kind {
    /// The media type of this kind.
    pub fn media_type(self) -> &'static str {
        match self {
            Kind::OciManifest => OCI_MANIFEST,
            Kind::OciIndex => OCI_INDEX,
            Kind::DockerManifest => DOCKER_MANIFEST,
            Kind::DockerList => DOCKER_LIST,
        }
    }

    fn from_media_type(mt: &str) -> Option<Kind> {
        // Content-Type may carry parameters (`; charset=utf-8`).
        match mt.split(';').next().unwrap_or("").trim() {
            OCI_MANIFEST => Some(Kind::OciManifest),
            OCI_INDEX => Some(Kind::OciIndex),
            DOCKER_MANIFEST => Some(Kind::DockerManifest),
            DOCKER_LIST => Some(Kind::DockerList),
            _ => None,
        }
    }

    /// Whether this kind lists manifests rather than layers.
    pub fn is_index(self) -> bool {
        matches!(self, Kind::OciIndex | Kind::DockerList)
    }
}

/// A parsed manifest of any kind.
#[derive(Debug, Clone)]
pub enum Manifest {
    /// A single-platform image.
    Image {
        /// OCI or Docker.
        kind: Kind,
        /// The config blob.
        config: Descriptor,
        /// Layer blobs, bottom first.
        layers: Vec<Descriptor>,
    },
    /// A multi-platform index or list.
    Index {
        /// OCI or Docker.
        kind: Kind,
        /// One entry per platform image.
        manifests: Vec<Descriptor>,
    },
}

impl Manifest {
    /// Parses manifest bytes; `content_type` is the registry's Content-Type, if any.
    /// `reference` only labels errors.
    pub fn parse(bytes: &[u8], content_type: Option<&str>, reference: &str) -> Result<Manifest> {
        let invalid = |reason: String| Error::InvalidManifest {
            reference: reference.to_string(),
            reason,
        };
        if bytes.len() > MAX_MANIFEST_SIZE {
            return Err(invalid(format!(
                "{} bytes is over the {MAX_MANIFEST_SIZE}-byte limit",
                bytes.len()
            )));
        }
        let raw: RawManifest =
            serde_json::from_slice(bytes).map_err(|e| invalid(format!("not valid JSON: {e}")))?;
        if raw.schema_version == Some(1) {
            return Err(invalid(
                "Docker schema 1 manifests are not supported".to_string(),
            ));
        }
        let kind = Self::kind_of(&raw, content_type)
            .ok_or_else(|| invalid(format!("unsupported media type {:?}", raw.media_type)))?;
        if kind.is_index() {
            let manifests = raw
                .manifests
                .ok_or_else(|| invalid("index without manifests".to_string()))?;
            return Ok(Manifest::Index { kind, manifests });
        }
        let config = raw
            .config
            .ok_or_else(|| invalid("manifest without config".to_string()))?;
        Ok(Manifest::Image {
            kind,
            config,
            layers: raw.layers.unwrap_or_default(),
        })
    }

    fn kind_of(raw: &RawManifest, content_type: Option<&str>) -> Option<Kind> {
        if let Some(k) = raw.media_type.as_deref().and_then(Kind::from_media_type) {
            return Some(k);
        }
        if let Some(k) = content_type.and_then(Kind::from_media_type) {
            return Some(k);
        }
        if raw.media_type.is_some() {
            return None;
        }
        // OCI makes mediaType optional: fall back on the shape.
        if raw.manifests.is_some() {
            Some(Kind::OciIndex)
        } else if raw.config.is_some() {
            Some(Kind::OciManifest)
        } else {
            None
        }
    }

    /// The kind of this manifest.
    pub fn kind(&self) -> Kind {
        match self {
            Manifest::Image { kind, .. } | Manifest::Index { kind, .. } => *kind,
        }
    }
}

/// The parts of an image config berth needs to store and run an image.
#[derive(Debug, Clone, Deserialize)]
pub struct ImageConfig {
    /// Operating system.
    #[serde(default)]
    pub os: String,
    /// Architecture.
    #[serde(default)]
    pub architecture: String,
    /// Variant.
    #[serde(default)]
    pub variant: Option<String>,
    /// Creation time (RFC 3339), if recorded.
    #[serde(default)]
    pub created: Option<String>,
    /// The layer diff ids.
    pub rootfs: RootFs,
}

/// `rootfs` of an image config.
#[derive(Debug, Clone, Deserialize)]
pub struct RootFs {
    /// Uncompressed layer digests, bottom first.
    #[serde(default)]
    pub diff_ids: Vec<Digest>,
}

impl ImageConfig {
    /// Parses config bytes; `reference` labels errors.
    pub fn parse(bytes: &[u8], reference: &str) -> Result<ImageConfig> {
        serde_json::from_slice(bytes).map_err(|e| Error::InvalidManifest {
            reference: reference.to_string(),
            reason: format!("image config is invalid: {e}"),
        })
    }
}

/// A platform to select from an index: `os/arch[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// Operating system.
    pub os: String,
    /// Architecture (normalised: `amd64`, `arm64`, ...).
    pub architecture: String,
    /// Variant, if one was asked for.
    pub variant: Option<String>,
}

impl Platform {
    /// The platform of this host (`linux/<arch>`).
    pub fn host() -> Platform {
        Platform {
            os: "linux".to_string(),
            architecture: normalize_arch(std::env::consts::ARCH).to_string(),
            variant: None,
        }
    }

    /// Parses `os[/arch[/variant]]` (Docker's `--platform`); a missing arch is the host's.
    pub fn parse(s: &str) -> Result<Platform> {
        let parts: Vec<&str> = s.split('/').collect();
        if parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
            return Err(Error::InvalidPlatform(s.to_string()));
        }
        let arch = parts
            .get(1)
            .copied()
            .unwrap_or(std::env::consts::ARCH)
            .to_lowercase();
        Ok(Platform {
            os: parts[0].to_lowercase(),
            architecture: normalize_arch(&arch).to_string(),
            variant: parts.get(2).map(|v| v.to_lowercase()),
        })
    }

    /// Whether an index entry's platform is this one. Without a requested variant any
    /// variant matches, except that arm64 prefers `v8` or none (as containerd does).
    pub fn matches(&self, p: &PlatformSpec) -> bool {
        if p.os != self.os || normalize_arch(&p.architecture) != self.architecture {
            return false;
        }
        match (&self.variant, &p.variant) {
            (Some(want), Some(have)) => want == have,
            (Some(want), None) => self.architecture == "arm64" && want == "v8",
            (None, _) => true,
        }
    }

    /// Picks the entry of an index for this platform.
    pub fn select<'a>(&self, entries: &'a [Descriptor], reference: &str) -> Result<&'a Descriptor> {
        entries
            .iter()
            .find(|d| d.platform.as_ref().is_some_and(|p| self.matches(p)))
            .ok_or_else(|| Error::NoMatchingPlatform {
                reference: reference.to_string(),
                wanted: self.to_string(),
                available: entries
                    .iter()
                    .filter_map(|d| d.platform.as_ref())
                    .map(spec_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

fn spec_string(p: &PlatformSpec) -> String {
    match &p.variant {
        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
        None => format!("{}/{}", p.os, p.architecture),
    }
}

/// Go's GOARCH names, which image platforms use, for the names Rust and uname use.
pub fn normalize_arch(arch: &str) -> &str {
    match arch {
        "x86_64" | "x86-64" => "amd64",
        "aarch64" => "arm64",
        "x86" | "i386" | "i686" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> String {
        Digest::sha256_of(&[n]).to_string()
    }

    #[test]
    fn four_kinds() {
        let oci = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"x","digest":"{}","size":1}},"layers":[]}}"#,
            d(1)
        );
        let m = Manifest::parse(oci.as_bytes(), None, "r").unwrap();
        assert_eq!(
            m.kind(),
            Kind::OciManifest,
            "shape decides without a media type"
        );
        let m = Manifest::parse(oci.as_bytes(), Some(DOCKER_MANIFEST), "r").unwrap();
        assert_eq!(m.kind(), Kind::DockerManifest);
        let list = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_LIST}","manifests":[{{"mediaType":"{DOCKER_MANIFEST}","digest":"{}","size":5,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}}]}}"#,
            d(2)
        );
        let m = Manifest::parse(list.as_bytes(), Some("application/json"), "r").unwrap();
        assert_eq!(m.kind(), Kind::DockerList);
        let idx = r#"{"schemaVersion":2,"manifests":[]}"#;
        let m = Manifest::parse(idx.as_bytes(), Some(OCI_INDEX), "r").unwrap();
        assert_eq!(m.kind(), Kind::OciIndex);
    }

    #[test]
    fn rejects_schema1_unknown_and_huge() {
        let e = Manifest::parse(br#"{"schemaVersion":1,"fsLayers":[]}"#, None, "x:1").unwrap_err();
        assert!(e.to_string().contains("schema 1"), "{e}");
        let e = Manifest::parse(br#"{"mediaType":"text/plain"}"#, None, "x:1").unwrap_err();
        assert!(e.to_string().contains("unsupported media type"), "{e}");
        let big = vec![b' '; MAX_MANIFEST_SIZE + 1];
        let e = Manifest::parse(&big, None, "x:1").unwrap_err();
        assert!(e.to_string().contains("limit"), "{e}");
    }

    #[test]
    fn platform_selection() {
        let entry = |arch: &str, variant: Option<&str>, n| Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: Digest::sha256_of(&[n]),
            size: 1,
            platform: Some(PlatformSpec {
                os: "linux".into(),
                architecture: arch.into(),
                variant: variant.map(Into::into),
            }),
        };
        let entries = vec![
            entry("arm", Some("v7"), 1),
            entry("arm64", Some("v8"), 2),
            entry("amd64", None, 3),
        ];
        let pick = |s: &str| {
            Platform::parse(s)
                .unwrap()
                .select(&entries, "r")
                .map(|d| d.digest.clone())
        };
        assert_eq!(pick("linux/amd64").unwrap(), Digest::sha256_of(&[3]));
        assert_eq!(pick("linux/arm64").unwrap(), Digest::sha256_of(&[2]));
        assert_eq!(pick("linux/arm/v7").unwrap(), Digest::sha256_of(&[1]));
        assert_eq!(pick("linux/x86_64").unwrap(), Digest::sha256_of(&[3]));
        let e = pick("linux/s390x").unwrap_err();
        assert!(
            e.to_string()
                .contains("linux/arm/v7, linux/arm64/v8, linux/amd64"),
            "{e}"
        );
        assert!(Platform::parse("linux//x").is_err());
        assert_eq!(Platform::host().os, "linux");
    }
}
