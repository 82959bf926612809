//! Bearer tokens (the Docker token-auth flow) from a built-in token endpoint.
//!
//! A client that gets `401` with `WWW-Authenticate: Bearer realm=...,service=...,scope=...`
//! asks `GET /token?service=..&scope=repository:NAME:pull,push` (with basic credentials, or
//! none for anonymous access) and retries with `Authorization: Bearer <token>`. What a user
//! may do comes from a small access file:
//! ```json
//! {"rules": [
//!   {"user": "alice", "repo": "*", "actions": ["pull", "push", "delete"]},
//!   {"user": "anonymous", "repo": "public/*", "actions": ["pull"]}
//! ]}
//! ```
//! `user` is a name from the htpasswd file, `*` for any authenticated user, or `anonymous`
//! for clients without credentials; `repo` is a name, `*`, or a prefix ending in `*`.
//! Tokens are `base64url(claims).base64url(HMAC-SHA256(key, claims))`. The key is made
//! once and kept in the storage directory (`token.key`, mode 0600), so tokens stay valid
//! across a restart of the server and among servers sharing one storage.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// How long an issued token is valid (seconds).
pub const TOKEN_TTL: u64 = 300;

/// The user name clients without credentials act as.
pub const ANONYMOUS: &str = "anonymous";

/// Why an access file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error("making a token key: {0}")]
    Key(std::io::Error),
}

#[derive(Debug, Clone, Deserialize)]
struct Rule {
    user: String,
    repo: String,
    actions: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct PolicyFile {
    rules: Vec<Rule>,
}

/// One granted or required access: `repository:NAME:ACTIONS` (or `registry:catalog:*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

impl Access {
    /// Parses a `scope` parameter: `type:name:action,action`. Names may hold `:` only in
    /// a registry port, which repository names cannot, so the last `:` splits actions off.
    pub fn parse(scope: &str) -> Option<Access> {
        let (kind, rest) = scope.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        Some(Access {
            kind: kind.to_string(),
            name: name.to_string(),
            actions: actions.split(',').map(str::to_string).collect(),
        })
    }

    /// The scope string of a challenge.
    pub fn scope(&self) -> String {
        format!("{}:{}:{}", self.kind, self.name, self.actions.join(","))
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    access: Vec<Access>,
}

/// The access file plus the signing key.
pub struct Policy {
    rules: Vec<Rule>,
    key: [u8; 32],
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn repo_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

fn hmac(key: &[u8; 32], msg: &[u8]) -> [u8; 32] {
    use hmac::Mac as _;
    // An HMAC takes a key of any length, so this cannot fail.
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

/// The signing key kept at `path`, made (random, written aside, fsynced, renamed) when
/// absent. Two servers starting at once on one storage may both write; the rename makes
/// one of the keys win whole, and both then read that one.
fn load_key(path: &Path) -> std::io::Result<[u8; 32]> {
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;
    if !path.exists() {
        let mut key = [0u8; 32];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&key)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
    }
    let bytes = std::fs::read(path)?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: not a 32-byte key", path.display()),
        )
    })
}

/// Equality that takes the same time wherever the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Policy {
    /// Loads an access file; the signing key is kept in `key_file` (made when absent).
    pub fn load(path: &Path, key_file: &Path) -> Result<Self, PolicyError> {
        let p = path.display().to_string();
        let text = std::fs::read(path).map_err(|source| PolicyError::Read {
            path: p.clone(),
            source,
        })?;
        let file: PolicyFile = serde_json::from_slice(&text)
            .map_err(|source| PolicyError::Parse { path: p, source })?;
        let key = load_key(key_file).map_err(PolicyError::Key)?;
        Ok(Policy {
            rules: file.rules,
            key,
        })
    }

    /// What `user` may do of what it asks for.
    fn grant(&self, user: &str, wanted: &Access) -> Access {
        let applies = |r: &Rule| r.user == user || (r.user == "*" && user != ANONYMOUS);
        let full = |r: &Rule| r.repo == "*";
        let allowed = |action: &str| {
            self.rules
                .iter()
                .filter(|r| applies(r))
                .any(|r| match wanted.kind.as_str() {
                    "repository" => {
                        repo_matches(&r.repo, &wanted.name)
                            && r.actions.iter().any(|a| a == action || a == "*")
                    }
                    // The catalog lists every repository: only for users with access to all.
                    "registry" => wanted.name == "catalog" && full(r),
                    _ => false,
                })
        };
        Access {
            kind: wanted.kind.clone(),
            name: wanted.name.clone(),
            actions: wanted
                .actions
                .iter()
                .filter(|a| allowed(a))
                .cloned()
                .collect(),
        }
    }

    /// Issues a token for `user` with the granted part of `scopes`.
    pub fn issue(&self, user: &str, scopes: &[Access]) -> String {
        let access = scopes
            .iter()
            .map(|s| self.grant(user, s))
            .filter(|a| !a.actions.is_empty())
            .collect();
        let claims = Claims {
            sub: user.to_string(),
            exp: now() + TOKEN_TTL,
            access,
        };
        let payload = serde_json::to_vec(&claims).unwrap_or_default();
        let sig = hmac(&self.key, &payload);
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&payload),
            URL_SAFE_NO_PAD.encode(sig)
        )
    }

    /// The user of a valid, unexpired token that grants every `required` access.
    pub fn verify(&self, header: Option<&str>, required: &[Access]) -> Option<String> {
        let token = header?.strip_prefix("Bearer ")?.trim();
        let (payload, sig) = token.split_once('.')?;
        let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
        let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
        if !same(&sig, &hmac(&self.key, &payload)) {
            return None;
        }
        let claims: Claims = serde_json::from_slice(&payload).ok()?;
        if claims.exp < now() {
            return None;
        }
        let granted = |need: &Access| {
            need.actions.iter().all(|action| {
                claims.access.iter().any(|a| {
                    a.kind == need.kind && a.name == need.name && a.actions.contains(action)
                })
            })
        };
        required.iter().all(granted).then_some(claims.sub)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        let rules = serde_json::from_str(
            r#"[{"user":"alice","repo":"*","actions":["pull","push","delete"]},
                {"user":"*","repo":"team/*","actions":["pull"]},
                {"user":"anonymous","repo":"public","actions":["pull"]}]"#,
        )
        .unwrap();
        Policy {
            rules,
            key: [7; 32],
        }
    }

    fn repo(name: &str, actions: &[&str]) -> Access {
        Access {
            kind: "repository".into(),
            name: name.into(),
            actions: actions.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn grants_and_verifies() {
        let p = policy();
        let t = p.issue("alice", &[repo("x/y", &["pull", "push"])]);
        let h = format!("Bearer {t}");
        assert_eq!(
            p.verify(Some(&h), &[repo("x/y", &["push"])]).as_deref(),
            Some("alice")
        );
        assert_eq!(p.verify(Some(&h), &[repo("x/y", &["delete"])]), None);
        assert_eq!(p.verify(Some(&h), &[repo("other", &["pull"])]), None);
        let t = p.issue("bob", &[repo("team/a", &["pull", "push"])]);
        let h = format!("Bearer {t}");
        assert!(p.verify(Some(&h), &[repo("team/a", &["pull"])]).is_some());
        assert!(p.verify(Some(&h), &[repo("team/a", &["push"])]).is_none());
        let t = p.issue(
            ANONYMOUS,
            &[repo("public", &["pull"]), repo("team/a", &["pull"])],
        );
        let h = format!("Bearer {t}");
        assert!(p.verify(Some(&h), &[repo("public", &["pull"])]).is_some());
        assert!(p.verify(Some(&h), &[repo("team/a", &["pull"])]).is_none());
        // Tampering and foreign keys fail.
        let forged = h.replace('.', "x.");
        assert!(p.verify(Some(&forged), &[]).is_none());
        let foreign = Policy {
            rules: Vec::new(),
            key: [8; 32],
        };
        assert!(foreign.verify(Some(&h), &[]).is_none());
        assert_eq!(
            Access::parse("repository:a/b:pull,push"),
            Some(repo("a/b", &["pull", "push"]))
        );
    }

    #[test]
    fn the_key_outlives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let access = dir.path().join("access.json");
        std::fs::write(
            &access,
            r#"{"rules": [{"user": "alice", "repo": "*", "actions": ["pull"]}]}"#,
        )
        .unwrap();
        let key = dir.path().join("token.key");
        let first = Policy::load(&access, &key).unwrap();
        let token = format!("Bearer {}", first.issue("alice", &[repo("a", &["pull"])]));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A restarted server reads the same key: the token still holds.
        let restarted = Policy::load(&access, &key).unwrap();
        assert!(restarted
            .verify(Some(&token), &[repo("a", &["pull"])])
            .is_some());
        // Another storage, another key.
        let other = Policy::load(&access, &dir.path().join("other.key")).unwrap();
        assert!(other.verify(Some(&token), &[]).is_none());
        // A damaged key file is an error, not a silent new key.
        std::fs::write(&key, b"short").unwrap();
        assert!(Policy::load(&access, &key).is_err());
    }
}
