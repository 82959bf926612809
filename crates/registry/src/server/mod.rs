//! The registry server behind `berth registry serve`: the OCI distribution-spec 1.1 API
//! over HTTP/1.1 (hyper), on a filesystem store of its own ([`storage`]).
//!
//! A request goes: access check ([`auth`]) → route ([`route`]) → endpoint ([`api`]) →
//! access log line and metrics. Storage work runs on tokio's blocking pool; blob bodies
//! stream from and to disk, never whole in memory.

pub mod api;
pub mod auth;
pub mod body;
pub mod error;
pub mod gc;
pub mod manifest;
pub mod metrics;
pub mod route;
pub mod storage;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;

use self::body::{full, ResBody};
use self::error::{ApiError, Code};

/// How long in-flight requests may take to finish after a shutdown signal.
const DRAIN: Duration = Duration::from_secs(30);

/// What the server needs to start.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Config {
    /// `HOST:PORT` to listen on.
    pub addr: String,
    /// Storage directory.
    pub storage: PathBuf,
    /// htpasswd file (bcrypt); when set, every API request needs basic auth.
    pub htpasswd: Option<PathBuf>,
    /// Whether to write one JSON access-log line per request to stderr.
    pub access_log: bool,
}

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("listening on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("storage {path}: {source}")]
    Storage {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Shared by all connections.
pub struct State {
    pub storage: storage::Storage,
    auth: Option<auth::Htpasswd>,
    metrics: metrics::Metrics,
    access_log: bool,
}

/// A bound, not yet running server.
pub struct Server {
    listener: std::net::TcpListener,
    state: Arc<State>,
}

impl Server {
    /// Opens the storage and binds the address (so callers learn the port before serving).
    pub fn bind(config: &Config) -> Result<Self, ServerError> {
        let storage =
            storage::Storage::open(&config.storage).map_err(|source| ServerError::Storage {
                path: config.storage.clone(),
                source,
            })?;
        let auth = config
            .htpasswd
            .as_deref()
            .map(auth::Htpasswd::load)
            .transpose()?;
        let listener =
            std::net::TcpListener::bind(&config.addr).map_err(|source| ServerError::Bind {
                addr: config.addr.clone(),
                source,
            })?;
        listener.set_nonblocking(true)?;
        let state = State {
            storage,
            auth,
            metrics: metrics::Metrics::default(),
            access_log: config.access_log,
        };
        Ok(Server {
            listener,
            state: Arc::new(state),
        })
    }

    /// The address actually bound (port 0 resolved).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then stops accepting and lets in-flight requests
    /// finish (up to 30 s).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        let listener = tokio::net::TcpListener::from_std(self.listener)?;
        let graceful = GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                conn = listener.accept() => {
                    let Ok((stream, remote)) = conn else { continue };
                    let state = self.state.clone();
                    let svc = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(state, remote, req).await) }
                    });
                    let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
                    let watched = graceful.watch(conn);
                    tokio::spawn(async move {
                        let _ = watched.await;
                    });
                }
                () = &mut shutdown => break,
            }
        }
        drop(listener);
        let _ = tokio::time::timeout(DRAIN, graceful.shutdown()).await;
        Ok(())
    }
}

/// Runs a server on its own runtime until SIGTERM or SIGINT.
pub fn serve(config: &Config) -> Result<(), ServerError> {
    let server = Server::bind(config)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let stop = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        };
        server.run(stop).await
    })
}

fn unauthorized() -> Response<ResBody> {
    let e = ApiError::new(Code::Unauthorized, "authentication required");
    let b = api::respond(StatusCode::UNAUTHORIZED)
        .header(CONTENT_TYPE, "application/json")
        .header(WWW_AUTHENTICATE, "Basic realm=\"berth-registry\"");
    api::finish(b, full(e.body()))
}

/// One request: auth, routing, endpoint, then the access log and metrics.
async fn handle(
    state: Arc<State>,
    remote: SocketAddr,
    req: Request<Incoming>,
) -> Response<ResBody> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let mut user = None;
    let resp = if path == "/metrics" {
        state.metrics.response()
    } else if let Some(route) = route::parse(&path) {
        let authz = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if let Some(h) = &state.auth {
            user = h.check(authz);
        }
        if state.auth.is_some() && user.is_none() {
            unauthorized()
        } else {
            api::dispatch(state.clone(), route, req)
                .await
                .unwrap_or_else(|e| api::error_response(&e))
        }
    } else {
        api::error_response(
            &ApiError::new(Code::NameInvalid, "no such endpoint")
                .with_status(StatusCode::NOT_FOUND),
        )
    };
    let status = resp.status().as_u16();
    state
        .metrics
        .record(method.as_str(), status, started.elapsed());
    if state.access_log {
        access_log(
            &remote,
            method.as_str(),
            &path,
            status,
            started,
            user.as_deref(),
        );
    }
    resp
}

fn access_log(
    remote: &SocketAddr,
    method: &str,
    path: &str,
    status: u16,
    started: Instant,
    user: Option<&str>,
) {
    let ts = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let line = serde_json::json!({
        "ts": ts,
        "remote": remote.to_string(),
        "method": method,
        "path": path,
        "status": status,
        "durationMs": started.elapsed().as_secs_f64() * 1000.0,
        "user": user,
    });
    eprintln!("{line}");
}
