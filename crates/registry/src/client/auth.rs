//! Registry authentication: the `WWW-Authenticate` challenge, basic credentials and the
//! Docker token flow.
//!
//! A registry answers an unauthenticated request with 401 and a challenge. `Basic` means
//! send the credentials on every request. `Bearer realm=…,service=…,scope=…` means ask the
//! token service at `realm` for a token covering the scope (with the credentials as basic
//! auth, or anonymously) and send that. Tokens are cached per scope string until shortly
//! before they expire, so a pull of many layers asks once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine as _;

/// A username and password (or identity token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or access token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    // Never print the password, even in debug logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({:?}, ****)", self.username)
    }
}

impl Credentials {
    /// The `Authorization` header value for basic auth.
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// HTTP basic auth.
    Basic,
    /// Docker token auth.
    Bearer {
        /// Token service URL.
        realm: String,
        /// `service` parameter to pass back.
        service: Option<String>,
        /// The scope the registry asked for, if it said.
        scope: Option<String>,
    },
}

impl Challenge {
    /// Parses a header value such as
    /// `Bearer realm="https://auth.example/token",service="registry",scope="repository:a:pull"`.
    pub fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => Some(Challenge::Basic),
            "bearer" => {
                let params = parse_params(rest);
                Some(Challenge::Bearer {
                    realm: params.get("realm")?.clone(),
                    service: params.get("service").cloned(),
                    scope: params.get("scope").cloned(),
                })
            }
            _ => None,
        }
    }
}

/// Parses `key="value", key2=value2` auth-params; quoted values may hold commas and
/// backslash escapes.
fn parse_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            return out;
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek().copied() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        out.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
}

/// What a token service returns (Docker's spec allows either field name).
#[derive(Debug, serde::Deserialize)]
pub(crate) struct TokenResponse {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub access_token: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
}

impl TokenResponse {
    pub(crate) fn into_token(self) -> Option<(String, Duration)> {
        // The spec's default lifetime is 60 seconds when none is given.
        let ttl = Duration::from_secs(self.expires_in.unwrap_or(60).max(10));
        let token = self.token.or(self.access_token)?;
        (!token.is_empty()).then_some((token, ttl))
    }
}

/// The authentication state of one registry: the challenge seen and tokens per scope.
#[derive(Debug, Default)]
pub(crate) struct AuthState {
    pub challenge: Option<Challenge>,
    tokens: HashMap<String, (String, Instant)>,
}

impl AuthState {
    /// A cached, unexpired token for `scope`.
    pub fn token(&self, scope: &str) -> Option<String> {
        let (tok, until) = self.tokens.get(scope)?;
        (Instant::now() < *until).then(|| tok.clone())
    }

    /// Caches a token, expiring it a little early so it is never sent stale.
    pub fn store(&mut self, scope: &str, token: String, ttl: Duration) {
        let margin = Duration::from_secs(5).min(ttl / 2);
        self.tokens
            .insert(scope.to_string(), (token, Instant::now() + ttl - margin));
    }

    /// Forgets a token the registry refused.
    pub fn forget(&mut self, scope: &str) {
        self.tokens.remove(scope);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenges() {
        assert_eq!(
            Challenge::parse(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:samalba/my-app:pull,push".into()),
            })
        );
        let c = Challenge::parse(r#"bearer realm=http://127.0.0.1:1/t, service = "a\"b""#);
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "http://127.0.0.1:1/t".into(),
                service: Some("a\"b".into()),
                scope: None,
            })
        );
        assert_eq!(
            Challenge::parse("Bearer service=x"),
            None,
            "realm is required"
        );
        assert_eq!(Challenge::parse("Negotiate abc"), None);
    }

    #[test]
    fn token_cache_expires() {
        let mut s = AuthState::default();
        s.store("a", "t".into(), Duration::from_secs(60));
        assert_eq!(s.token("a").as_deref(), Some("t"));
        assert_eq!(s.token("b"), None);
        s.store("c", "u".into(), Duration::from_millis(0));
        assert_eq!(s.token("c"), None);
        s.forget("a");
        assert_eq!(s.token("a"), None);
    }

    #[test]
    fn token_response_fields() {
        let r: TokenResponse =
            serde_json::from_str(r#"{"access_token":"x","expires_in":300}"#).unwrap();
        assert_eq!(r.into_token(), Some(("x".into(), Duration::from_secs(300))));
        let r: TokenResponse = serde_json::from_str(r#"{"token":""}"#).unwrap();
        assert_eq!(r.into_token(), None);
        let c = Credentials {
            username: "u".into(),
            password: "p".into(),
        };
        assert_eq!(c.basic_header(), "Basic dTpw");
        let secret = Credentials {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(
            !format!("{secret:?}").contains("hunter2"),
            "debug output hides the password"
        );
    }
}
