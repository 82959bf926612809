//! Image references, parsed and normalised the way the Docker CLI does.
//!
//! Grammar (after Docker's distribution/reference):
//!
//! ```text
//! reference     := name [ ":" tag ] [ "@" digest ]
//! name          := [ domain "/" ] path-component ( "/" path-component )*
//! domain        := ( domain-name | "[" ipv6 "]" ) [ ":" port ]
//! domain-name   := label ( "." label )*          label: [A-Za-z0-9] or [A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9]
//! path-component:= [a-z0-9]+ ( separator [a-z0-9]+ )*   separator: "." | "_" | "__" | "-"+
//! tag           := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
//! ```
//!
//! Normalisation: the first `/`-separated part is a registry domain only when
//! it contains `.` or `:`, is `localhost`, or has an uppercase letter;
//! otherwise the domain is `docker.io`, and a single-component name on
//! `docker.io` gets the `library/` namespace. `index.docker.io` is an alias of
//! `docker.io`. The full name may be at most 255 characters.

use std::fmt;

use crate::digest::{Digest, DigestError};

/// The default registry domain.
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// The legacy alias of [`DEFAULT_DOMAIN`].
pub const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
/// Namespace for official images on the default domain.
pub const OFFICIAL_REPO_PREFIX: &str = "library/";
/// Tag added when a reference names neither a tag nor a digest.
pub const DEFAULT_TAG: &str = "latest";
/// Longest allowed full name (domain + "/" + path).
pub const NAME_TOTAL_LENGTH_MAX: usize = 255;

/// Why a string is not a valid reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// The name is empty.
    #[error("repository name must have at least one component")]
    Empty,
    /// The text does not follow the reference grammar.
    #[error("invalid reference format: {0:?}")]
    InvalidFormat(String),
    /// The repository path has uppercase letters.
    #[error("invalid reference format: repository name ({0}) must be lowercase")]
    Uppercase(String),
    /// The full name is longer than [`NAME_TOTAL_LENGTH_MAX`].
    #[error("repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters (got {0})")]
    NameTooLong(usize),
    /// The tag is malformed.
    #[error("invalid tag format: {0:?}")]
    InvalidTag(String),
    /// The digest after `@` is malformed.
    #[error("invalid digest in reference: {0}")]
    Digest(#[from] DigestError),
    /// A bare 64-hex string is an image id, never a repository name.
    #[error("invalid repository name ({0}), cannot specify 64-byte hexadecimal strings")]
    Identifier(String),
}

/// A normalised named reference: domain, path, optional tag and digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

/// Either a named reference or a bare content digest (image id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnyReference {
    /// `name[:tag][@digest]`.
    Named(Reference),
    /// `sha256:<hex>` or a bare 64-hex id.
    Digest(Digest),
}

impl Reference {
    /// Parses and normalises `s`, adding the `latest` tag when neither a tag
    /// nor a digest is given: `alpine` → `docker.io/library/alpine:latest`.
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        Ok(Self::parse_name(s)?.with_default_tag())
    }

    /// Parses and normalises `s` without adding a default tag.
    pub fn parse_name(s: &str) -> Result<Self, ReferenceError> {
        if is_identifier(s) {
            return Err(ReferenceError::Identifier(s.to_string()));
        }
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let (name_tag, digest) = split_digest(s)?;
        let (name, tag) = split_tag(name_tag);
        if let Some(tag) = tag {
            validate_tag(tag, s)?;
        }
        let (domain, path) = split_domain(name);
        if path.to_lowercase() != path {
            return Err(ReferenceError::Uppercase(path));
        }
        validate_domain(&domain).ok_or_else(|| ReferenceError::InvalidFormat(s.to_string()))?;
        validate_path(&path).ok_or_else(|| invalid_path_error(&path, s))?;
        let full_len = domain.len() + 1 + path.len();
        if full_len > NAME_TOTAL_LENGTH_MAX {
            return Err(ReferenceError::NameTooLong(full_len));
        }
        Ok(Reference {
            domain,
            path,
            tag: tag.map(str::to_string),
            digest,
        })
    }

    /// Parses an image id (64 hex), a digest, or a named reference (with the
    /// default tag added, as [`Reference::parse`]).
    pub fn parse_any(s: &str) -> Result<AnyReference, ReferenceError> {
        if is_identifier(s) {
            return Ok(AnyReference::Digest(format!("sha256:{s}").parse()?));
        }
        if let Ok(d) = s.parse::<Digest>() {
            return Ok(AnyReference::Digest(d));
        }
        Ok(AnyReference::Named(Self::parse(s)?))
    }

    /// Adds the `latest` tag if the reference has neither tag nor digest.
    pub fn with_default_tag(mut self) -> Self {
        if self.tag.is_none() && self.digest.is_none() {
            self.tag = Some(DEFAULT_TAG.to_string());
        }
        self
    }

    /// Replaces the tag.
    pub fn with_tag(mut self, tag: &str) -> Result<Self, ReferenceError> {
        validate_tag(tag, tag)?;
        self.tag = Some(tag.to_string());
        Ok(self)
    }

    /// Replaces the digest.
    pub fn with_digest(mut self, digest: Digest) -> Self {
        self.digest = Some(digest);
        self
    }

    /// Registry domain, e.g. `docker.io` or `localhost:5000`.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Repository path within the registry, e.g. `library/alpine`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Full repository name, e.g. `docker.io/library/alpine`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The short name Docker shows: `alpine`, `user/app`, `quay.io/x/y`.
    pub fn familiar_name(&self) -> String {
        if self.domain != DEFAULT_DOMAIN {
            return self.name();
        }
        match self.path.strip_prefix(OFFICIAL_REPO_PREFIX) {
            Some(rest) if !rest.contains('/') => rest.to_string(),
            _ => self.path.clone(),
        }
    }

    /// The short form with tag and digest, e.g. `alpine:latest`.
    pub fn familiar(&self) -> String {
        let mut s = self.familiar_name();
        self.push_tag_digest(&mut s);
        s
    }

    fn push_tag_digest(&self, s: &mut String) {
        if let Some(tag) = &self.tag {
            s.push(':');
            s.push_str(tag);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(&d.to_string());
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = self.name();
        self.push_tag_digest(&mut s);
        f.write_str(&s)
    }
}

impl std::str::FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

/// A bare 64-character lowercase hex string: an image id.
fn is_identifier(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Splits `name[:tag]@digest`. The digest part must look like
/// `alg:hex{32,}` to be a digest at all; then the algorithm and length are
/// validated precisely.
fn split_digest(s: &str) -> Result<(&str, Option<Digest>), ReferenceError> {
    let Some((name, digest)) = s.split_once('@') else {
        return Ok((s, None));
    };
    if !looks_like_digest(digest) {
        return Err(ReferenceError::InvalidFormat(s.to_string()));
    }
    Ok((name, Some(digest.parse()?)))
}

fn looks_like_digest(s: &str) -> bool {
    let Some((alg, hex)) = s.split_once(':') else {
        return false;
    };
    let alg_ok = alg.split(['-', '_', '+', '.']).all(|c| {
        let mut chars = c.chars();
        matches!(chars.next(), Some(ch) if ch.is_ascii_alphabetic())
            && chars.all(|ch| ch.is_ascii_alphanumeric())
    });
    alg_ok && hex.len() >= 32 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A `:` after the last `/` starts the tag; an earlier one is a port.
fn split_tag(s: &str) -> (&str, Option<&str>) {
    match s.rfind(':') {
        Some(i) if s[i..].find('/').is_none() => (&s[..i], Some(&s[i + 1..])),
        _ => (s, None),
    }
}

fn validate_tag(tag: &str, whole: &str) -> Result<(), ReferenceError> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= 128
        && word(bytes[0])
        && bytes[1..]
            .iter()
            .all(|&b| word(b) || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else if tag.is_empty() {
        Err(ReferenceError::InvalidFormat(whole.to_string()))
    } else {
        Err(ReferenceError::InvalidTag(tag.to_string()))
    }
}

/// Docker's rule for whether the first component is a registry domain.
fn split_domain(name: &str) -> (String, String) {
    let (mut domain, mut path) = match name.split_once('/') {
        Some((first, rest)) if is_domain_like(first) => (first.to_string(), rest.to_string()),
        _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
    };
    if domain == LEGACY_DEFAULT_DOMAIN {
        domain = DEFAULT_DOMAIN.to_string();
    }
    if domain == DEFAULT_DOMAIN && !path.contains('/') {
        path = format!("{OFFICIAL_REPO_PREFIX}{path}");
    }
    (domain, path)
}

fn is_domain_like(first: &str) -> bool {
    first.contains(['.', ':']) || first == "localhost" || first.to_lowercase() != first
}

fn validate_domain(domain: &str) -> Option<()> {
    let (host, port) = split_port(domain)?;
    if let Some(port) = port {
        (!port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())).then_some(())?;
    }
    if let Some(inner) = host.strip_prefix('[') {
        let addr = inner.strip_suffix(']')?;
        let ok = !addr.is_empty() && addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':');
        return ok.then_some(());
    }
    host.split('.').all(valid_label).then_some(())
}

/// Splits `host[:port]`, minding the colons inside `[ipv6]`.
fn split_port(domain: &str) -> Option<(&str, Option<&str>)> {
    if domain.starts_with('[') {
        let end = domain.find(']')?;
        let rest = &domain[end + 1..];
        return match rest.strip_prefix(':') {
            Some(port) => Some((&domain[..=end], Some(port))),
            None if rest.is_empty() => Some((domain, None)),
            None => None,
        };
    }
    Some(match domain.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (domain, None),
    })
}

fn valid_label(label: &str) -> bool {
    let b = label.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
}

fn validate_path(path: &str) -> Option<()> {
    path.split('/').all(valid_path_component).then_some(())
}

/// `[a-z0-9]+ (separator [a-z0-9]+)*` with separator `.`, `_`, `__` or `-+`: one
/// `/`-separated component of a repository name (shared with the registry server).
pub fn valid_path_component(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let b = c.as_bytes();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|s| s == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn invalid_path_error(path: &str, whole: &str) -> ReferenceError {
    if path.split('/').any(str::is_empty) && path.trim_matches('/').is_empty() {
        ReferenceError::Empty
    } else {
        ReferenceError::InvalidFormat(whole.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn normalises_table() {
        // (input, full normalised form, familiar form)
        let cases: Vec<(String, String, String)> = vec![
            ("alpine", "docker.io/library/alpine:latest", "alpine:latest"),
            (
                "alpine:3.19",
                "docker.io/library/alpine:3.19",
                "alpine:3.19",
            ),
            (
                "library/alpine",
                "docker.io/library/alpine:latest",
                "alpine:latest",
            ),
            (
                "docker.io/alpine",
                "docker.io/library/alpine:latest",
                "alpine:latest",
            ),
            (
                "index.docker.io/alpine:edge",
                "docker.io/library/alpine:edge",
                "alpine:edge",
            ),
            (
                "docker.io/library/alpine",
                "docker.io/library/alpine:latest",
                "alpine:latest",
            ),
            ("user/app", "docker.io/user/app:latest", "user/app:latest"),
            (
                "docker.io/library/a/b",
                "docker.io/library/a/b:latest",
                "library/a/b:latest",
            ),
            ("localhost/x", "localhost/x:latest", "localhost/x:latest"),
            (
                "localhost:5000/x:1",
                "localhost:5000/x:1",
                "localhost:5000/x:1",
            ),
            (
                "localhost:5000",
                "docker.io/library/localhost:5000",
                "localhost:5000",
            ),
            (
                "quay.io/org/sub/img:v1.2_3-x",
                "quay.io/org/sub/img:v1.2_3-x",
                "quay.io/org/sub/img:v1.2_3-x",
            ),
            ("Foo/bar", "Foo/bar:latest", "Foo/bar:latest"),
            (
                "[::1]:5000/foo",
                "[::1]:5000/foo:latest",
                "[::1]:5000/foo:latest",
            ),
            (
                "[fe80::1]/foo",
                "[fe80::1]/foo:latest",
                "[fe80::1]/foo:latest",
            ),
            (
                "my-host.local/ns/a.b_c__d-e---f",
                "my-host.local/ns/a.b_c__d-e---f:latest",
                "my-host.local/ns/a.b_c__d-e---f:latest",
            ),
            (
                "127.0.0.1:5000/a",
                "127.0.0.1:5000/a:latest",
                "127.0.0.1:5000/a:latest",
            ),
            ("busybox:_x", "docker.io/library/busybox:_x", "busybox:_x"),
        ]
        .into_iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .chain([
            (
                format!("alpine@sha256:{H}"),
                format!("docker.io/library/alpine@sha256:{H}"),
                format!("alpine@sha256:{H}"),
            ),
            (
                format!("host:5000/ns/name:tag@sha256:{H}"),
                format!("host:5000/ns/name:tag@sha256:{H}"),
                format!("host:5000/ns/name:tag@sha256:{H}"),
            ),
            (
                format!("a@sha512:{}", "0".repeat(128)),
                format!("docker.io/library/a@sha512:{}", "0".repeat(128)),
                format!("a@sha512:{}", "0".repeat(128)),
            ),
        ])
        .collect();
        for (input, full, familiar) in cases {
            let r = Reference::parse(&input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.to_string(), full, "{input}");
            assert_eq!(r.familiar(), familiar, "{input}");
            // Normalising is idempotent.
            assert_eq!(Reference::parse(&full).unwrap(), r, "{input}");
        }
    }

    #[test]
    fn parts() {
        let r = Reference::parse(&format!("host:5000/ns/name:tag@sha256:{H}")).unwrap();
        assert_eq!(r.domain(), "host:5000");
        assert_eq!(r.path(), "ns/name");
        assert_eq!(r.name(), "host:5000/ns/name");
        assert_eq!(r.tag(), Some("tag"));
        assert_eq!(r.digest().unwrap().hex(), H);
        let n = Reference::parse_name("alpine").unwrap();
        assert_eq!(n.tag(), None);
        assert_eq!(n.familiar(), "alpine");
        assert_eq!(
            n.with_tag("v2").unwrap().to_string(),
            "docker.io/library/alpine:v2"
        );
    }

    #[test]
    fn rejects_table() {
        use ReferenceError as E;
        let long = "a".repeat(250);
        type Check = fn(&E) -> bool;
        let cases: Vec<(String, Check)> = vec![
            ("".into(), |e| matches!(e, E::Empty)),
            (
                "Alpine".into(),
                |e| matches!(e, E::Uppercase(p) if p == "library/Alpine"),
            ),
            ("user/App".into(), |e| matches!(e, E::Uppercase(_))),
            ("quay.io/Org/x".into(), |e| matches!(e, E::Uppercase(_))),
            ("alpine:".into(), |e| matches!(e, E::InvalidFormat(_))),
            ("alpine:-x".into(), |e| matches!(e, E::InvalidTag(_))),
            (format!("alpine:{}", "t".repeat(129)), |e| {
                matches!(e, E::InvalidTag(_))
            }),
            (":tag".into(), |e| matches!(e, E::InvalidFormat(_))),
            ("a//b".into(), |e| matches!(e, E::InvalidFormat(_))),
            ("-a".into(), |e| matches!(e, E::InvalidFormat(_))),
            ("a-".into(), |e| matches!(e, E::InvalidFormat(_))),
            ("a___b".into(), |e| matches!(e, E::InvalidFormat(_))),
            ("a..b".into(), |e| matches!(e, E::InvalidFormat(_))),
            ("a/".into(), |e| matches!(e, E::InvalidFormat(_))),
            ("host:abc/x".into(), |e| matches!(e, E::InvalidFormat(_))),
            ("ho_st.io/x".into(), |e| matches!(e, E::InvalidFormat(_))),
            ("-host.io/x".into(), |e| matches!(e, E::InvalidFormat(_))),
            ("[::1/x".into(), |e| matches!(e, E::InvalidFormat(_))),
            ("alpine@sha256:abc".into(), |e| {
                matches!(e, E::InvalidFormat(_))
            }),
            (format!("alpine@sha256:{}", &H[..40]), |e| {
                matches!(e, E::Digest(_))
            }),
            (format!("alpine@md5:{}", &H[..32]), |e| {
                matches!(e, E::Digest(_))
            }),
            (H.to_string(), |e| matches!(e, E::Identifier(_))),
            (long.clone(), |e| matches!(e, E::NameTooLong(268))),
            ("x y".into(), |e| matches!(e, E::InvalidFormat(_))),
        ];
        for (input, check) in cases {
            match Reference::parse(&input) {
                Ok(r) => panic!("{input:?} parsed as {r}"),
                Err(e) => assert!(check(&e), "{input:?}: unexpected {e:?}"),
            }
        }
        // 255 characters in all is still fine.
        let ok = format!("docker.io/library/{}", "a".repeat(255 - 18));
        assert!(Reference::parse(&ok).is_ok());
    }

    #[test]
    fn any_reference() {
        let id = Reference::parse_any(H).unwrap();
        assert_eq!(
            id,
            AnyReference::Digest(format!("sha256:{H}").parse().unwrap())
        );
        let d = Reference::parse_any(&format!("sha256:{H}")).unwrap();
        assert!(matches!(d, AnyReference::Digest(_)));
        let n = Reference::parse_any("alpine").unwrap();
        assert!(
            matches!(n, AnyReference::Named(r) if r.to_string() == "docker.io/library/alpine:latest")
        );
    }

    #[test]
    fn error_messages_are_clear() {
        let e = Reference::parse("Alpine").unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid reference format: repository name (library/Alpine) must be lowercase"
        );
    }
}
