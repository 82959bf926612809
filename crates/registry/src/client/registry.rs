//! One registry endpoint: scheme detection, authenticated requests, retries.
//!
//! Every request goes through [`Registry::send`], which adds the right `Authorization`
//! for the request's scope, answers a 401 challenge once (basic credentials or a token for
//! the scope, then the same request again), and retries 5xx, 429 and connection failures
//! with exponential backoff, waiting at least what `Retry-After` asks. Redirects (blob
//! downloads are often sent to object storage) are followed by reqwest, which drops the
//! `Authorization` header when a redirect leaves the original host.

use std::sync::Mutex;
use std::time::Duration;

use reqwest::header::{HeaderMap, AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, Response, StatusCode};

use super::auth::{AuthState, Challenge, Credentials, TokenResponse};
use super::error::{Error, Result};

/// How to reach a registry.
#[derive(Debug, Clone)]
pub struct Options {
    /// Verify TLS certificates. When false, plain http is also allowed (Docker's
    /// "insecure registry").
    pub tls_verify: bool,
    /// Credentials, if the user logged in.
    pub credentials: Option<Credentials>,
    /// Attempts per request for retryable failures (at least 1).
    pub attempts: u32,
    /// First backoff delay; doubles per attempt.
    pub backoff: Duration,
    /// Layers transferred at once.
    pub parallel: usize,
    /// Upload blobs larger than this in chunks of this size (PATCH per chunk, then a
    /// closing PUT); `None` uploads every blob in one PUT.
    pub chunk_size: Option<u64>,
    /// Per-blob transfer events (for progress bars).
    pub progress: super::progress::Progress,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tls_verify: true,
            credentials: None,
            attempts: 5,
            backoff: Duration::from_millis(200),
            parallel: 4,
            chunk_size: None,
            progress: super::progress::Progress::default(),
        }
    }
}

/// The scope a token must cover for pulling from `repo`.
pub fn pull_scope(repo: &str) -> String {
    format!("repository:{repo}:pull")
}

/// The scope for pushing to `repo`.
pub fn push_scope(repo: &str) -> String {
    format!("repository:{repo}:pull,push")
}

/// A connected registry.
#[derive(Debug)]
pub struct Registry {
    domain: String,
    base: String,
    http: reqwest::Client,
    opts: Options,
    auth: Mutex<AuthState>,
}

/// Docker Hub's API lives on another host than its reference domain.
fn api_host(domain: &str) -> &str {
    match domain {
        "docker.io" | "index.docker.io" => "registry-1.docker.io",
        d => d,
    }
}

/// Docker treats loopback registries as insecure: plain http is tried for them.
fn is_loopback(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Registry {
    /// Connects to the registry of `domain` (a reference's domain, e.g. `docker.io` or
    /// `127.0.0.1:5000`): finds a working scheme with `GET /v2/` and learns its challenge.
    pub async fn connect(domain: &str, opts: Options) -> Result<Registry> {
        let host = api_host(domain);
        let mut builder = reqwest::Client::builder();
        for cert in registry_cas(host) {
            builder = builder.add_root_certificate(cert);
        }
        let http = builder
            .danger_accept_invalid_certs(!opts.tls_verify)
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            .build()
            .map_err(|source| Error::Http {
                registry: domain.to_string(),
                context: "create HTTP client".to_string(),
                source,
            })?;
        let plain_ok = !opts.tls_verify || is_loopback(host);
        let mut reg = Registry {
            domain: domain.to_string(),
            base: format!("https://{host}"),
            http,
            opts,
            auth: Mutex::new(AuthState::default()),
        };
        match reg.ping().await {
            Ok(_) => Ok(reg),
            Err(e) if plain_ok && matches!(e, Error::Http { .. }) => {
                // An http server answers a TLS hello with garbage: try plain http. An
                // https server answers plain http with 400, and then the https error
                // (e.g. an unknown certificate) is the one worth reporting.
                reg.base = format!("http://{host}");
                match reg.ping().await {
                    Ok(s) if s != StatusCode::BAD_REQUEST => Ok(reg),
                    _ => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn ping(&self) -> Result<StatusCode> {
        let url = format!("{}/v2/", self.base);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|source| self.http_err("ping /v2/", source))?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            self.learn_challenge(resp.headers());
        }
        Ok(resp.status())
    }

    /// The reference domain this registry serves.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// `http(s)://host` of the API.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The options in force.
    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// The underlying HTTP client, for building requests passed to [`Registry::send`].
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `base/v2/<repo>/<rest>`.
    pub fn url(&self, repo: &str, rest: &str) -> String {
        format!("{}/v2/{repo}/{rest}", self.base)
    }

    /// Resolves a `Location` header against the registry (it may be relative).
    pub fn resolve_location(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            format!("{}/{location}", self.base)
        }
    }

    pub(crate) fn http_err(&self, context: &str, source: reqwest::Error) -> Error {
        Error::Http {
            registry: self.domain.clone(),
            context: context.to_string(),
            source,
        }
    }

    /// Sends the request `make` builds, with auth, one re-authentication on 401, and
    /// retries. Any final status is returned for the caller to judge.
    pub async fn send(
        &self,
        scope: &str,
        what: &str,
        make: &(dyn Fn() -> Result<RequestBuilder> + Sync),
    ) -> Result<Response> {
        let mut attempt = 0u32;
        let mut reauthenticated = false;
        let mut scope = scope.to_string();
        loop {
            let mut req = make()?;
            if let Some(h) = self.authorization(&scope).await? {
                req = req.header(AUTHORIZATION, h);
            }
            let last = attempt + 1 >= self.opts.attempts.max(1);
            match req.send().await {
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED && !reauthenticated => {
                    reauthenticated = true;
                    if let Ok(mut a) = self.auth.lock() {
                        a.forget(&scope);
                    }
                    // The registry may need more than we asked for (a cross-repository
                    // mount also needs pull on the source): ask for its scopes too.
                    if let Some(Challenge::Bearer {
                        scope: Some(wanted),
                        ..
                    }) = self.learn_challenge(resp.headers())
                    {
                        scope = merge_scopes(&scope, &wanted);
                    }
                }
                Ok(resp) if is_retryable(resp.status()) && !last => {
                    let wait = self.backoff(attempt, retry_after(resp.headers()));
                    tracing::debug!(registry = %self.domain, what, status = %resp.status(), ?wait, "retrying");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Ok(resp) => return Ok(resp),
                Err(e) if !last && (e.is_connect() || e.is_timeout() || e.is_request()) => {
                    tracing::debug!(registry = %self.domain, what, error = %e, "retrying");
                    tokio::time::sleep(self.backoff(attempt, None)).await;
                    attempt += 1;
                }
                Err(e) => return Err(self.http_err(what, e)),
            }
        }
    }

    pub(crate) fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self.opts.backoff * 2u32.saturating_pow(attempt.min(10));
        // A registry asking for a long pause is obeyed up to a minute, not forever.
        retry_after
            .map_or(exp, |r| r.max(exp))
            .min(Duration::from_secs(60))
    }

    fn learn_challenge(&self, headers: &HeaderMap) -> Option<Challenge> {
        let challenge = headers
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(Challenge::parse)
            // Prefer the token flow when a registry offers both.
            .max_by_key(|c| matches!(c, Challenge::Bearer { .. }));
        if let (Some(c), Ok(mut a)) = (challenge.clone(), self.auth.lock()) {
            a.challenge = Some(c);
        }
        challenge
    }

    async fn authorization(&self, scope: &str) -> Result<Option<String>> {
        let (challenge, cached) = {
            let a = self
                .auth
                .lock()
                .map_err(|_| Error::Internal("auth state poisoned".into()))?;
            (a.challenge.clone(), a.token(scope))
        };
        match challenge {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(self.opts.credentials.as_ref().map(|c| c.basic_header())),
            Some(Challenge::Bearer { .. }) if cached.is_some() => {
                Ok(cached.map(|t| format!("Bearer {t}")))
            }
            Some(Challenge::Bearer { realm, service, .. }) => {
                let token = self
                    .fetch_token(&realm, service.as_deref(), Some(scope))
                    .await?;
                Ok(Some(format!("Bearer {token}")))
            }
        }
    }

    /// Asks the token service for a token covering `scope` (none: just check the
    /// credentials, as `login` does), and caches it.
    pub(crate) async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: Option<&str>,
    ) -> Result<String> {
        let mut query: Vec<(&str, &str)> = Vec::new();
        if let Some(s) = service {
            query.push(("service", s));
        }
        // Several scopes travel as several `scope` parameters, as the token spec says.
        for s in scope
            .into_iter()
            .flat_map(|s| s.split(' '))
            .filter(|s| !s.is_empty())
        {
            query.push(("scope", s));
        }
        if let Some(c) = &self.opts.credentials {
            query.push(("account", &c.username));
        }
        let mut req = self.http.get(realm).query(&query);
        if let Some(c) = &self.opts.credentials {
            req = req.header(AUTHORIZATION, c.basic_header());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| self.http_err(&format!("token request to {realm}"), e))?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(Error::Unauthorized {
                registry: self.domain.clone(),
                repository: scope.unwrap_or("").to_string(),
                message: format!("token service {realm} refused the credentials ({status})"),
            });
        }
        if !status.is_success() {
            return Err(self.auth_err(format!("token service {realm} answered {status}")));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| self.http_err("read token", e))?;
        let (token, ttl) = serde_json::from_slice::<TokenResponse>(&body)
            .ok()
            .and_then(TokenResponse::into_token)
            .ok_or_else(|| self.auth_err(format!("token service {realm} sent no token")))?;
        if let (Some(scope), Ok(mut a)) = (scope, self.auth.lock()) {
            a.store(scope, token.clone(), ttl);
        }
        Ok(token)
    }

    fn auth_err(&self, reason: String) -> Error {
        Error::Auth {
            registry: self.domain.clone(),
            reason,
        }
    }

    /// Checks the credentials as `docker login` does: a token for no scope, or `/v2/`
    /// with basic auth.
    pub async fn login(&self) -> Result<()> {
        let challenge = self.auth.lock().ok().and_then(|a| a.challenge.clone());
        match challenge {
            Some(Challenge::Bearer { realm, service, .. }) => self
                .fetch_token(&realm, service.as_deref(), None)
                .await
                .map(|_| ()),
            _ => {
                let url = format!("{}/v2/", self.base);
                let resp = self.send("", "login", &|| Ok(self.http.get(&url))).await?;
                self.check(resp, "", "login").await.map(|_| ())
            }
        }
    }

    /// Turns a non-success response into an error carrying the registry's message.
    pub async fn check(&self, resp: Response, repository: &str, context: &str) -> Result<Response> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.bytes().await.unwrap_or_default();
        let message = error_message(&body);
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(Error::Unauthorized {
                registry: self.domain.clone(),
                repository: repository.to_string(),
                message: if message.is_empty() {
                    status.to_string()
                } else {
                    message
                },
            });
        }
        Err(Error::Status {
            registry: self.domain.clone(),
            context: context.to_string(),
            status: status.as_u16(),
            message,
        })
    }
}

/// Extra CA certificates for one registry, where Docker and Podman keep them:
/// `/etc/docker/certs.d/<host>/*.crt` and `/etc/containers/certs.d/<host>/*.crt`.
/// Unreadable or malformed files are skipped with a warning: the system roots still apply.
fn registry_cas(host: &str) -> Vec<reqwest::Certificate> {
    let mut out = Vec::new();
    for base in ["/etc/docker/certs.d", "/etc/containers/certs.d"] {
        let Ok(dir) = std::fs::read_dir(std::path::Path::new(base).join(host)) else {
            continue;
        };
        for entry in dir.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "crt") {
                continue;
            }
            match std::fs::read(&path).map(|pem| reqwest::Certificate::from_pem(&pem)) {
                Ok(Ok(cert)) => out.push(cert),
                _ => tracing::warn!(path = %path.display(), "skipping unreadable CA certificate"),
            }
        }
    }
    out
}

/// `ours` plus the scopes of `theirs` it lacks, space-separated (the cache key and, split,
/// the token request's `scope` parameters).
fn merge_scopes(ours: &str, theirs: &str) -> String {
    let mut out: Vec<&str> = ours.split(' ').filter(|s| !s.is_empty()).collect();
    for s in theirs.split(' ') {
        if !s.is_empty() && !out.contains(&s) {
            out.push(s);
        }
    }
    out.join(" ")
}

fn is_retryable(s: StatusCode) -> bool {
    s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS
}

/// `Retry-After` in seconds (the HTTP-date form is rare for registries and ignored).
fn retry_after(h: &HeaderMap) -> Option<Duration> {
    h.get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// The distribution spec's error body: `{"errors":[{"code":..,"message":..}]}`.
fn error_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(default)]
        errors: Vec<Item>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_slice::<Body>(body) {
        Ok(b) if !b.errors.is_empty() => b
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.code, e.message))
            .collect::<Vec<_>>()
            .join("; "),
        _ => String::from_utf8_lossy(&body[..body.len().min(200)])
            .trim()
            .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_hub() {
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("example.com:5000"));
        assert_eq!(api_host("docker.io"), "registry-1.docker.io");
        assert_eq!(api_host("quay.io"), "quay.io");
    }

    #[test]
    fn scopes_merge() {
        assert_eq!(
            merge_scopes(
                "repository:a:pull,push",
                "repository:b:pull repository:a:pull,push"
            ),
            "repository:a:pull,push repository:b:pull"
        );
    }

    #[test]
    fn registry_error_bodies() {
        let b =
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#;
        assert_eq!(error_message(b), "MANIFEST_UNKNOWN: manifest unknown");
        assert_eq!(error_message(b"plain text\n"), "plain text");
    }

    #[test]
    fn retry_after_header() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None);
    }
}
