//! Request paths and names: which distribution-spec endpoint a `/v2/...` path addresses,
//! and the spec's grammar for repository names and tags.
//!
//! Repository names contain `/`, so a path is matched from its end: the last one or two
//! segments name the endpoint, everything before them is the repository.

/// The endpoint a request path addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v2/` — the API version check.
    Base,
    /// `/v2/_catalog`.
    Catalog,
    /// `/v2/<name>/tags/list`.
    Tags { name: String },
    /// `/v2/<name>/manifests/<reference>`.
    Manifest { name: String, reference: String },
    /// `/v2/<name>/blobs/<digest>`.
    Blob { name: String, digest: String },
    /// `/v2/<name>/blobs/uploads/` (new upload) or `/v2/<name>/blobs/uploads/<id>`.
    Upload { name: String, id: Option<String> },
    /// `/v2/<name>/referrers/<digest>`.
    Referrers { name: String, digest: String },
}

/// Maps a request path (without query) to its endpoint; `None` for paths outside the API.
pub fn parse(path: &str) -> Option<Route> {
    let rest = path.strip_prefix("/v2")?;
    if rest.is_empty() || rest == "/" {
        return Some(Route::Base);
    }
    let rest = rest.strip_prefix('/')?;
    if rest == "_catalog" {
        return Some(Route::Catalog);
    }
    let segs: Vec<&str> = rest.split('/').collect();
    let n = segs.len();
    let name_of = |k: usize| -> Option<String> { (n > k).then(|| segs[..n - k].join("/")) };
    // Uploads first: `blobs/uploads/` would otherwise read as a blob named "uploads".
    if n >= 3 && segs[n - 3] == "blobs" && segs[n - 2] == "uploads" {
        let id = (!segs[n - 1].is_empty()).then(|| segs[n - 1].to_string());
        return Some(Route::Upload {
            name: name_of(3)?,
            id,
        });
    }
    if n >= 2 && segs[n - 2] == "blobs" && segs[n - 1] == "uploads" {
        return Some(Route::Upload {
            name: name_of(2)?,
            id: None,
        });
    }
    if n >= 3 && segs[n - 2] == "tags" && segs[n - 1] == "list" {
        return Some(Route::Tags { name: name_of(2)? });
    }
    if n < 3 {
        return None;
    }
    let last = segs[n - 1].to_string();
    let name = name_of(2)?;
    match segs[n - 2] {
        "manifests" => Some(Route::Manifest {
            name,
            reference: last,
        }),
        "blobs" => Some(Route::Blob { name, digest: last }),
        "referrers" => Some(Route::Referrers { name, digest: last }),
        _ => None,
    }
}

/// Longest repository name accepted (the spec lets registries cap it; clients are told to
/// stay within 255 characters including the host name).
const MAX_NAME: usize = 255;

/// Whether `name` matches the spec's repository name grammar:
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .split('/')
            .all(berth_image::reference::valid_path_component)
}

/// Whether `tag` matches `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    let head = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    !b.is_empty()
        && b.len() <= 128
        && head(b[0])
        && b[1..].iter().all(|&x| head(x) || x == b'.' || x == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(parse("/v2/"), Some(Route::Base));
        assert_eq!(parse("/v2"), Some(Route::Base));
        assert_eq!(parse("/v2/_catalog"), Some(Route::Catalog));
        assert_eq!(
            parse("/v2/a/b/tags/list"),
            Some(Route::Tags { name: "a/b".into() })
        );
        assert_eq!(
            parse("/v2/a/blobs/uploads/"),
            Some(Route::Upload {
                name: "a".into(),
                id: None
            })
        );
        assert_eq!(
            parse("/v2/a/blobs/uploads/xyz"),
            Some(Route::Upload {
                name: "a".into(),
                id: Some("xyz".into())
            })
        );
        assert_eq!(
            parse("/v2/x/blobs/y/manifests/latest"),
            Some(Route::Manifest {
                name: "x/blobs/y".into(),
                reference: "latest".into()
            })
        );
        assert_eq!(
            parse("/v2/a/referrers/sha256:00"),
            Some(Route::Referrers {
                name: "a".into(),
                digest: "sha256:00".into()
            })
        );
        assert_eq!(parse("/v2/manifests/x"), None);
        assert_eq!(parse("/v3/a/manifests/x"), None);
    }

    #[test]
    fn names_and_tags() {
        for ok in [
            "a",
            "library/busybox",
            "a-b",
            "a--b",
            "a.b",
            "a_b",
            "a__b",
            "0/1/2",
        ] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "", "A", "a/", "/a", "a//b", "-a", "a-", "a..b", "a___b", "a_.b", "a:b",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert!(!valid_name(&"a".repeat(256)));
        assert!(valid_tag("latest") && valid_tag("_x.Y-1") && valid_tag(&"a".repeat(128)));
        assert!(!valid_tag("") && !valid_tag(".x") && !valid_tag("-x") && !valid_tag("a:b"));
        assert!(!valid_tag(&"a".repeat(129)));
    }
}
