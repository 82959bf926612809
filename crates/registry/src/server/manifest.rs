//! What the server needs to know about a manifest it is given: its media type, the blobs
//! and manifests it references, and its subject (for the referrers API).

use berth_image::digest::Digest;
use serde_json::Value;

use super::error::{ApiError, Code};

/// The spec lets registries cap manifest size; 4 MiB is what the common registries use,
/// and clients are told not to push larger manifests.
pub const MAX_MANIFEST: usize = 4 << 20;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// A parsed manifest's facts.
#[derive(Debug)]
pub struct Inspected {
    pub media_type: String,
    /// Config and layers: must be blobs of the repository.
    pub blobs: Vec<Digest>,
    /// Index entries: must be manifests of the repository.
    pub children: Vec<Digest>,
    pub subject: Option<Digest>,
}

fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError::new(Code::ManifestInvalid, msg)
}

fn descriptor_digest(v: &Value) -> Result<Digest, ApiError> {
    v.get("digest")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("descriptor without a digest"))?
        .parse()
        .map_err(|e| invalid(format!("descriptor digest: {e}")))
}

/// Layers that live outside registries (Windows foreign layers) are not uploaded.
fn is_foreign(layer: &Value) -> bool {
    let mt = layer.get("mediaType").and_then(Value::as_str).unwrap_or("");
    layer.get("urls").is_some() || mt.contains("foreign") || mt.contains("nondistributable")
}

/// The media type without parameters (`; charset=...`).
pub fn bare_media_type(ct: &str) -> &str {
    ct.split(';').next().unwrap_or("").trim()
}

/// Checks a pushed manifest and lists what it references. `content_type` is the request's
/// Content-Type, which the manifest's own `mediaType` must agree with when both are given.
pub fn inspect(content: &[u8], content_type: Option<&str>) -> Result<Inspected, ApiError> {
    let v: Value =
        serde_json::from_slice(content).map_err(|e| invalid(format!("not JSON: {e}")))?;
    if !v.is_object() {
        return Err(invalid("manifest is not a JSON object"));
    }
    let declared = v.get("mediaType").and_then(Value::as_str);
    let header = content_type.map(bare_media_type).filter(|s| !s.is_empty());
    if let (Some(d), Some(h)) = (declared, header) {
        if d != h {
            return Err(invalid(format!(
                "mediaType {d} does not match Content-Type {h}"
            )));
        }
    }
    let media_type = header
        .or(declared)
        .unwrap_or(if v.get("manifests").is_some() {
            OCI_INDEX
        } else {
            OCI_MANIFEST
        })
        .to_string();
    let mut out = Inspected {
        media_type,
        blobs: Vec::new(),
        children: Vec::new(),
        subject: v.get("subject").map(descriptor_digest).transpose()?,
    };
    if let Some(config) = v.get("config") {
        out.blobs.push(descriptor_digest(config)?);
    }
    for layer in v
        .get("layers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if !is_foreign(layer) {
            out.blobs.push(descriptor_digest(layer)?);
        }
    }
    for m in v
        .get("manifests")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        out.children.push(descriptor_digest(m)?);
    }
    let image_type = [OCI_MANIFEST, DOCKER_MANIFEST].contains(&out.media_type.as_str());
    if image_type && v.get("config").is_none() {
        return Err(invalid("image manifest without config"));
    }
    let index_type = [OCI_INDEX, DOCKER_LIST].contains(&out.media_type.as_str());
    if index_type && v.get("manifests").is_none() {
        return Err(invalid("index without manifests"));
    }
    Ok(out)
}

/// The descriptor of a stored manifest for a referrers list, when its subject is `subject`.
pub fn referrer(
    content: &[u8],
    media_type: &str,
    digest: &Digest,
    subject: &Digest,
) -> Option<Value> {
    let v: Value = serde_json::from_slice(content).ok()?;
    let s: Digest = v.get("subject")?.get("digest")?.as_str()?.parse().ok()?;
    if &s != subject {
        return None;
    }
    // The spec: artifactType, or for an image manifest without one, its config's type.
    let artifact_type = v
        .get("artifactType")
        .or_else(|| v.get("config").and_then(|c| c.get("mediaType")))
        .cloned();
    let mut d = serde_json::json!({
        "mediaType": media_type,
        "digest": digest.to_string(),
        "size": content.len(),
    });
    if let Some(at) = artifact_type {
        d["artifactType"] = at;
    }
    if let Some(a) = v.get("annotations") {
        d["annotations"] = a.clone();
    }
    Some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn inspects_image_and_index() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"digest":"{D}"}},
            "layers":[{{"digest":"{D}"}},{{"digest":"{D}","urls":["http://x"]}}],"subject":{{"digest":"{D}"}}}}"#
        );
        let i = inspect(m.as_bytes(), None).unwrap();
        assert_eq!(i.media_type, OCI_MANIFEST);
        assert_eq!(i.blobs.len(), 2);
        assert!(i.subject.is_some());
        assert!(inspect(m.as_bytes(), Some(OCI_INDEX)).is_err());
        let idx = format!(r#"{{"schemaVersion":2,"manifests":[{{"digest":"{D}"}}]}}"#);
        let i = inspect(idx.as_bytes(), Some(OCI_INDEX)).unwrap();
        assert_eq!(i.children.len(), 1);
        assert!(inspect(b"[]", None).is_err());
        assert!(inspect(b"{", None).is_err());
        assert!(inspect(br#"{"config":{"digest":"nope"}}"#, None).is_err());
    }

    #[test]
    fn referrer_descriptor() {
        let subject: Digest = D.parse().unwrap();
        let m = format!(
            r#"{{"config":{{"mediaType":"application/x-cfg","digest":"{D}"}},"subject":{{"digest":"{D}"}},"annotations":{{"a":"b"}}}}"#
        );
        let d = referrer(m.as_bytes(), OCI_MANIFEST, &subject, &subject).unwrap();
        assert_eq!(d["artifactType"], "application/x-cfg");
        assert_eq!(d["annotations"]["a"], "b");
        let other = Digest::sha256_of(b"x");
        assert!(referrer(m.as_bytes(), OCI_MANIFEST, &subject, &other).is_none());
    }
}
