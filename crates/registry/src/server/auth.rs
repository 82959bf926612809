//! htpasswd basic authentication (bcrypt entries, as `htpasswd -B` writes them).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;

use base64::Engine as _;
use berth_image::digest::Digest;

/// Why an htpasswd file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: only bcrypt entries ($2a$/$2b$/$2y$) are supported")]
    NotBcrypt { path: String, line: usize },
}

/// Users and their bcrypt hashes.
pub struct Htpasswd {
    users: HashMap<String, String>,
    /// Digests of `user:password` pairs already verified: bcrypt costs tens of
    /// milliseconds by design, and clients send credentials with every request.
    verified: Mutex<HashSet<Digest>>,
}

impl Htpasswd {
    /// Loads an htpasswd file.
    pub fn load(path: &Path) -> Result<Self, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    fn parse(text: &str, origin: &str) -> Result<Self, AuthError> {
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                continue;
            };
            if !hash.starts_with("$2") {
                return Err(AuthError::NotBcrypt {
                    path: origin.to_string(),
                    line: i + 1,
                });
            }
            users.insert(user.to_string(), hash.to_string());
        }
        Ok(Htpasswd {
            users,
            verified: Mutex::new(HashSet::new()),
        })
    }

    /// The user named by a valid `Authorization: Basic ...` header value.
    pub fn check(&self, header: Option<&str>) -> Option<String> {
        let encoded = header?.strip_prefix("Basic ")?.trim();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?;
        let pair = String::from_utf8(raw).ok()?;
        let (user, password) = pair.split_once(':')?;
        let hash = self.users.get(user)?;
        let key = Digest::sha256_of(format!("{hash}\n{pair}").as_bytes());
        if self.verified.lock().ok()?.contains(&key) {
            return Some(user.to_string());
        }
        if !bcrypt::verify(password, hash).unwrap_or(false) {
            return None;
        }
        self.verified.lock().ok()?.insert(key);
        Some(user.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(s: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(s)
        )
    }

    #[test]
    fn bcrypt_users() {
        let hash = bcrypt::hash("secret", 4).unwrap();
        let h = Htpasswd::parse(&format!("# comment\nalice:{hash}\n"), "t").unwrap();
        assert_eq!(
            h.check(Some(&basic("alice:secret"))).as_deref(),
            Some("alice")
        );
        // Second time through the cache.
        assert_eq!(
            h.check(Some(&basic("alice:secret"))).as_deref(),
            Some("alice")
        );
        assert_eq!(h.check(Some(&basic("alice:wrong"))), None);
        assert_eq!(h.check(Some(&basic("bob:secret"))), None);
        assert_eq!(h.check(Some("Basic !!!")), None);
        assert_eq!(h.check(None), None);
        assert!(Htpasswd::parse("bob:{SHA}abc", "t").is_err());
    }
}
