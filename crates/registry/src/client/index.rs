//! Manifest lists made by hand (`berth manifest create/annotate/push`, as `docker
//! manifest`): each entry is a single-platform image already in a registry, described by
//! its manifest's descriptor and the platform its config names. The list is pushed as a
//! Docker manifest list when every entry is a Docker manifest, else as an OCI index.
//! Entries from other repositories of the same registry are mounted into the list's
//! repository first (their blobs, then their manifest by digest), since a registry only
//! accepts a list whose manifests it holds in that repository.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::error::{Error, Result};
use super::fetch::{self, FetchedManifest};
use super::manifest::{Descriptor, Kind, Manifest, PlatformSpec};
use super::registry::{pull_scope, push_scope, Options, Registry};
use super::{block_on, push};
use berth_image::{Digest, Reference};

/// One image of a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListEntry {
    /// The image as given to `create`, normalised.
    pub image: String,
    /// Its manifest's descriptor, with the platform.
    pub descriptor: Descriptor,
}

/// A list being made, kept by the CLI until it is pushed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestList {
    pub entries: Vec<ListEntry>,
}

impl ManifestList {
    /// The list's media type and bytes: a Docker manifest list when every entry is a
    /// Docker manifest (what `docker manifest push` writes), else an OCI index.
    pub fn render(&self) -> (&'static str, Vec<u8>) {
        let docker = !self.entries.is_empty()
            && self
                .entries
                .iter()
                .all(|e| e.descriptor.media_type == Kind::DockerManifest.media_type());
        let kind = if docker {
            Kind::DockerList
        } else {
            Kind::OciIndex
        };
        let manifests: Vec<&Descriptor> = self.entries.iter().map(|e| &e.descriptor).collect();
        let v = json!({
            "schemaVersion": 2,
            "mediaType": kind.media_type(),
            "manifests": manifests,
        });
        let bytes = serde_json::to_vec_pretty(&v).unwrap_or_default();
        (kind.media_type(), bytes)
    }
}

/// The manifest `reference` names, as the registry serves it.
pub fn inspect(reference: &Reference, opts: &Options) -> Result<FetchedManifest> {
    block_on(async {
        let reg = Registry::connect(reference.domain(), opts.clone()).await?;
        fetch::manifest(&reg, reference.path(), &target(reference)).await
    })
}

/// The list entry for a single-platform image in a registry: its manifest's descriptor
/// and the platform of its config.
pub fn describe(reference: &Reference, opts: &Options) -> Result<ListEntry> {
    block_on(async {
        let reg = Registry::connect(reference.domain(), opts.clone()).await?;
        let repo = reference.path();
        let fetched = fetch::manifest(&reg, repo, &target(reference)).await?;
        let name = reference.to_string();
        let parsed = Manifest::parse(&fetched.bytes, fetched.content_type.as_deref(), &name)?;
        let Manifest::Image { kind, config, .. } = parsed else {
            return Err(Error::InvalidManifest {
                reference: name,
                reason: "is a manifest list; a list can only hold single-platform images".into(),
            });
        };
        let config_bytes = fetch::small_blob(&reg, repo, &config).await?;
        let platform: PlatformSpec =
            serde_json::from_slice(&config_bytes).map_err(|e| Error::InvalidManifest {
                reference: name.clone(),
                reason: format!("config is not valid JSON: {e}"),
            })?;
        Ok(ListEntry {
            image: name,
            descriptor: Descriptor {
                media_type: kind.media_type().to_string(),
                digest: fetched.digest,
                size: fetched.bytes.len() as u64,
                platform: Some(platform),
            },
        })
    })
}

/// Pushes `list` as `dest`; returns the list's digest.
pub fn push_list(list: &ManifestList, dest: &Reference, opts: &Options) -> Result<Digest> {
    block_on(async {
        let reg = Registry::connect(dest.domain(), opts.clone()).await?;
        for e in &list.entries {
            let from = Reference::parse(&e.image)?;
            if from.domain() != dest.domain() {
                return Err(Error::InvalidManifest {
                    reference: e.image.clone(),
                    reason: format!(
                        "is in another registry than {}: push it there first",
                        dest.domain()
                    ),
                });
            }
            if from.path() != dest.path() {
                copy_into(&reg, &from, dest.path(), &e.descriptor).await?;
            }
        }
        let (media_type, bytes) = list.render();
        let digest = Digest::sha256_of(&bytes);
        push::put_manifest(&reg, dest, media_type, &bytes, &digest).await?;
        Ok(digest)
    })
}

/// Makes the image `from` (its manifest `desc`) available in repository `repo` of the
/// same registry: its blobs mounted, its manifest put by digest.
async fn copy_into(reg: &Registry, from: &Reference, repo: &str, desc: &Descriptor) -> Result<()> {
    let src = from.path();
    let fetched = fetch::manifest(reg, src, &desc.digest.to_string()).await?;
    let name = from.to_string();
    if let Manifest::Image { config, layers, .. } =
        Manifest::parse(&fetched.bytes, fetched.content_type.as_deref(), &name)?
    {
        for blob in std::iter::once(&config).chain(&layers) {
            mount(reg, src, repo, &blob.digest).await?;
        }
    }
    let at = Reference::parse_name(&format!("{}/{repo}", reg.domain()))?
        .with_digest(desc.digest.clone());
    push::put_manifest(reg, &at, &desc.media_type, &fetched.bytes, &desc.digest).await
}

/// Asks the registry to mount blob `digest` of repository `from` into `repo`.
async fn mount(reg: &Registry, from: &str, repo: &str, digest: &Digest) -> Result<()> {
    let url = reg.url(repo, "blobs/uploads/");
    let what = format!("mount {digest} from {from} into {repo}");
    let d = digest.to_string();
    let make = || {
        Ok(reg
            .http()
            .post(&url)
            .query(&[("mount", d.as_str()), ("from", from)]))
    };
    let scope = format!("{} {}", push_scope(repo), pull_scope(from));
    let resp = reg.send(&scope, &what, &make).await?;
    if resp.status() == reqwest::StatusCode::CREATED {
        return Ok(());
    }
    Err(Error::InvalidManifest {
        reference: format!("{}/{from}", reg.domain()),
        reason: format!(
            "the registry would not mount blob {digest} into {repo} (status {}): push the \
             image to {repo} first",
            resp.status()
        ),
    })
}

/// The tag or digest a reference asks for.
fn target(r: &Reference) -> String {
    match (r.digest(), r.tag()) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.to_string(),
        (None, None) => "latest".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(media_type: &str, arch: &str) -> ListEntry {
        ListEntry {
            image: format!("r/x:{arch}"),
            descriptor: Descriptor {
                media_type: media_type.into(),
                digest: Digest::sha256_of(arch.as_bytes()),
                size: 10,
                platform: Some(PlatformSpec {
                    os: "linux".into(),
                    architecture: arch.into(),
                    variant: None,
                }),
            },
        }
    }

    #[test]
    fn docker_entries_make_a_docker_list_and_others_an_oci_index() {
        let docker = Kind::DockerManifest.media_type();
        let list = ManifestList {
            entries: vec![entry(docker, "amd64"), entry(docker, "arm64")],
        };
        let (mt, bytes) = list.render();
        assert_eq!(mt, Kind::DockerList.media_type());
        let parsed = Manifest::parse(&bytes, Some(mt), "l").unwrap();
        let Manifest::Index { manifests, .. } = parsed else {
            panic!("not an index")
        };
        assert_eq!(manifests.len(), 2);
        assert_eq!(
            manifests[1].platform.as_ref().unwrap().architecture,
            "arm64"
        );
        let mixed = ManifestList {
            entries: vec![
                entry(docker, "amd64"),
                entry(Kind::OciManifest.media_type(), "arm64"),
            ],
        };
        assert_eq!(mixed.render().0, Kind::OciIndex.media_type());
    }
}
