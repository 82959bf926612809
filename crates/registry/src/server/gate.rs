//! Who may do what: basic auth against the htpasswd file, or bearer tokens checked against
//! the scopes each endpoint needs, and the `/token` endpoint that issues them.

use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Request, Response, StatusCode};

use super::body::{full, ResBody};
use super::error::{ApiError, Code};
use super::{api, route, token, State};

pub(super) fn unauthorized(challenge: String) -> Response<ResBody> {
    let e = ApiError::new(Code::Unauthorized, "authentication required");
    let b = api::respond(StatusCode::UNAUTHORIZED)
        .header(CONTENT_TYPE, "application/json")
        .header(WWW_AUTHENTICATE, challenge);
    api::finish(b, full(e.body()))
}

const BASIC_CHALLENGE: &str = "Basic realm=\"berth-registry\"";
const SERVICE: &str = "berth-registry";

/// The bearer challenge naming what the request needs.
fn bearer_challenge(state: &State, req: &Request<Incoming>, required: &[token::Access]) -> String {
    let realm = state.token_realm.clone().unwrap_or_else(|| {
        let host = req
            .headers()
            .get(hyper::header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("localhost");
        format!("{}://{host}/token", state.scheme)
    });
    let mut c = format!("Bearer realm=\"{realm}\",service=\"{SERVICE}\"");
    if !required.is_empty() {
        let scopes: Vec<String> = required.iter().map(token::Access::scope).collect();
        c.push_str(&format!(",scope=\"{}\"", scopes.join(" ")));
    }
    c
}

/// Query parameters named `key`, in order (the token endpoint takes several `scope`s).
fn query_all(req: &Request<Incoming>, key: &str) -> Vec<String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| api::pct_decode(v))
        .collect()
}

/// What a request must be granted under bearer auth.
fn required_access(route: &route::Route, req: &Request<Incoming>) -> Vec<token::Access> {
    use hyper::Method;
    use route::Route;
    let repo = |name: &str, actions: &[&str]| token::Access {
        kind: "repository".into(),
        name: name.into(),
        actions: actions.iter().map(|a| a.to_string()).collect(),
    };
    let read = matches!(*req.method(), Method::GET | Method::HEAD);
    let delete = *req.method() == Method::DELETE;
    match route {
        Route::Base => vec![],
        Route::Catalog => vec![token::Access {
            kind: "registry".into(),
            name: "catalog".into(),
            actions: vec!["*".into()],
        }],
        Route::Tags { name } | Route::Referrers { name, .. } => vec![repo(name, &["pull"])],
        Route::Manifest { name, .. } | Route::Blob { name, .. } if read => {
            vec![repo(name, &["pull"])]
        }
        Route::Manifest { name, .. } | Route::Blob { name, .. } if delete => {
            vec![repo(name, &["delete"])]
        }
        Route::Manifest { name, .. } | Route::Blob { name, .. } => {
            vec![repo(name, &["pull", "push"])]
        }
        Route::Upload { name, .. } => {
            let mut need = vec![repo(name, &["pull", "push"])];
            // Mounting reads the source repository.
            if let Some(from) = query_all(req, "from").pop() {
                if query_all(req, "mount").pop().is_some() {
                    need.push(repo(&from, &["pull"]));
                }
            }
            need
        }
    }
}

/// `GET /token`: log in (basic credentials, or none for anonymous) and get a bearer token
/// for the granted part of the requested scopes.
pub(super) fn token_endpoint(
    state: &State,
    policy: &token::Policy,
    req: &Request<Incoming>,
) -> (Response<ResBody>, Option<String>) {
    let authz = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let user = match (authz, &state.auth) {
        (None, _) => token::ANONYMOUS.to_string(),
        (Some(h), Some(users)) => match users.check(Some(h)) {
            Some(u) => u,
            None => return (unauthorized(BASIC_CHALLENGE.into()), None),
        },
        (Some(_), None) => return (unauthorized(BASIC_CHALLENGE.into()), None),
    };
    let scopes: Vec<token::Access> = query_all(req, "scope")
        .iter()
        .flat_map(|s| s.split(' ').map(str::to_string).collect::<Vec<_>>())
        .filter_map(|s| token::Access::parse(&s))
        .collect();
    let t = policy.issue(&user, &scopes);
    let body = serde_json::json!({"token": t, "access_token": t, "expires_in": token::TOKEN_TTL});
    let b = api::respond(StatusCode::OK).header(CONTENT_TYPE, "application/json");
    (api::finish(b, full(body.to_string())), Some(user))
}

/// The authenticated user for an API request, or the challenge of the 401 to send.
pub(super) fn authenticate(
    state: &State,
    route: &route::Route,
    req: &Request<Incoming>,
) -> Result<Option<String>, String> {
    let authz = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if let Some(policy) = &state.tokens {
        let required = required_access(route, req);
        return match policy.verify(authz, &required) {
            Some(user) => Ok(Some(user)),
            None => Err(bearer_challenge(state, req, &required)),
        };
    }
    match &state.auth {
        Some(users) => match users.check(authz) {
            Some(user) => Ok(Some(user)),
            None => Err(BASIC_CHALLENGE.into()),
        },
        None => Ok(None),
    }
}
