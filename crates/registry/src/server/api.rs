//! The distribution-spec endpoints: one function per endpoint and method.

use std::collections::HashMap;
use std::io::{Seek, SeekFrom};
use std::sync::Arc;

use berth_image::digest::Digest;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION, RANGE};
use hyper::http::response::Builder;
use hyper::{Method, Request, Response, StatusCode};
use tokio::io::AsyncWriteExt;

use super::body::{empty, full, FileBody, ResBody};
use super::error::{ApiError, Code};
use super::manifest::{self, MAX_MANIFEST, OCI_INDEX};
use super::route::{valid_name, valid_tag, Route};
use super::storage::{Storage, StoredManifest};
use super::State;

type Res = Result<Response<ResBody>, ApiError>;

const DIGEST_HEADER: &str = "Docker-Content-Digest";
const UPLOAD_UUID: &str = "Docker-Upload-UUID";

/// A response builder with the headers every answer carries.
pub fn respond(status: StatusCode) -> Builder {
    Response::builder()
        .status(status)
        .header("Docker-Distribution-API-Version", "registry/2.0")
}

/// Turns a builder into a response; a header we built that turns out unencodable becomes
/// a 500 rather than a panic.
pub fn finish(b: Builder, body: ResBody) -> Response<ResBody> {
    b.body(body).unwrap_or_else(|e| {
        let mut r = Response::new(full(ApiError::new(Code::Internal, e.to_string()).body()));
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
}

/// The JSON error answer.
pub fn error_response(e: &ApiError) -> Response<ResBody> {
    let b = respond(e.status).header(CONTENT_TYPE, "application/json");
    finish(b, full(e.body()))
}

/// Runs storage work on the blocking pool.
async fn blocking<T, E>(f: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, ApiError>
where
    T: Send + 'static,
    E: Into<ApiError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(Code::Internal, e.to_string()))?
        .map_err(Into::into)
}

/// Decodes `%XX` escapes (and `+` as space) in a query component.
pub fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (pct_decode(k), pct_decode(v))
        })
        .collect()
}

fn header(req: &Request<Incoming>, name: impl hyper::header::AsHeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

fn parse_digest(s: &str) -> Result<Digest, ApiError> {
    s.parse()
        .map_err(|e| ApiError::new(Code::DigestInvalid, format!("{s}: {e}")))
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(ApiError::new(
            Code::NameInvalid,
            format!("invalid repository name {name:?}"),
        ))
    }
}

/// Dispatches one API request.
pub async fn dispatch(state: Arc<State>, route: Route, req: Request<Incoming>) -> Res {
    let st = state.storage.clone();
    let method = req.method().clone();
    match route {
        Route::Base => Ok(finish(
            respond(StatusCode::OK).header(CONTENT_TYPE, "application/json"),
            full("{}"),
        )),
        Route::Catalog => catalog(st, &req).await,
        Route::Tags { name } => {
            check_name(&name)?;
            tags_list(st, &name, &req).await
        }
        Route::Manifest { name, reference } => {
            check_name(&name)?;
            match method {
                Method::GET | Method::HEAD => {
                    get_manifest(st, &name, &reference, method == Method::HEAD).await
                }
                Method::PUT => put_manifest(st, &name, &reference, req).await,
                Method::DELETE => delete_manifest(st, &name, &reference).await,
                _ => Err(unsupported()),
            }
        }
        Route::Blob { name, digest } => {
            check_name(&name)?;
            let digest = parse_digest(&digest)?;
            match method {
                Method::GET | Method::HEAD => get_blob(st, &name, &digest, &req).await,
                Method::DELETE => delete_blob(st, &name, &digest).await,
                _ => Err(unsupported()),
            }
        }
        Route::Upload { name, id } => {
            check_name(&name)?;
            // One request at a time per session: two interleaved PATCHes would both pass the
            // offset check and append in any order.
            let _guard = match &id {
                Some(id) => Some(state.lock_upload(id).await),
                None => None,
            };
            match (method, id) {
                (Method::POST, None) => start_upload(st, &name, req, state.tokens_enabled()).await,
                (Method::PATCH, Some(id)) => patch_upload(st, &name, &id, req).await,
                (Method::PUT, Some(id)) => put_upload(st, &name, &id, req).await,
                (Method::GET, Some(id)) => upload_status(st, &name, &id).await,
                (Method::DELETE, Some(id)) => cancel_upload(st, &name, &id).await,
                _ => Err(unsupported()),
            }
        }
        Route::Referrers { name, digest } => {
            check_name(&name)?;
            let digest = parse_digest(&digest)?;
            referrers(st, &name, &digest, &req).await
        }
    }
}

fn unsupported() -> ApiError {
    ApiError::new(Code::Unsupported, "method not supported on this endpoint")
}

// ---------------------------------------------------------------- listing

/// Applies `last` and `n` to a sorted list; the bool says whether more entries remain.
fn paginate(all: Vec<String>, q: &HashMap<String, String>) -> (Vec<String>, bool) {
    let mut items: Vec<String> = match q.get("last") {
        Some(last) if !last.is_empty() => all.into_iter().filter(|t| t > last).collect(),
        _ => all,
    };
    match q.get("n").and_then(|n| n.parse::<usize>().ok()) {
        Some(n) if items.len() > n => {
            items.truncate(n);
            (items, n > 0)
        }
        _ => (items, false),
    }
}

fn link_header(
    b: Builder,
    path: &str,
    n: Option<&String>,
    items: &[String],
    more: bool,
) -> Builder {
    match (more, items.last(), n) {
        (true, Some(last), Some(n)) => {
            b.header("Link", format!("<{path}?n={n}&last={last}>; rel=\"next\""))
        }
        _ => b,
    }
}

async fn tags_list(st: Storage, name: &str, req: &Request<Incoming>) -> Res {
    let q = query(req);
    let owned = name.to_string();
    let tags = blocking(move || st.tags(&owned))
        .await?
        .ok_or_else(|| ApiError::new(Code::NameUnknown, format!("repository {name} not known")))?;
    let (tags, more) = paginate(tags, &q);
    let body = serde_json::json!({"name": name, "tags": tags});
    let b = respond(StatusCode::OK).header(CONTENT_TYPE, "application/json");
    let b = link_header(b, &format!("/v2/{name}/tags/list"), q.get("n"), &tags, more);
    Ok(finish(b, full(body.to_string())))
}

async fn catalog(st: Storage, req: &Request<Incoming>) -> Res {
    let q = query(req);
    let repos = blocking(move || st.catalog()).await?;
    let (repos, more) = paginate(repos, &q);
    let body = serde_json::json!({"repositories": repos});
    let b = respond(StatusCode::OK).header(CONTENT_TYPE, "application/json");
    let b = link_header(b, "/v2/_catalog", q.get("n"), &repos, more);
    Ok(finish(b, full(body.to_string())))
}

// ---------------------------------------------------------------- manifests

/// A manifest reference: a tag or a digest.
enum Reference {
    Tag(String),
    Digest(Digest),
}

fn parse_reference(r: &str) -> Result<Reference, ApiError> {
    if r.contains(':') {
        return parse_digest(r).map(Reference::Digest);
    }
    if valid_tag(r) {
        Ok(Reference::Tag(r.to_string()))
    } else {
        Err(ApiError::new(
            Code::ManifestInvalid,
            format!("invalid tag {r:?}"),
        ))
    }
}

fn manifest_unknown(name: &str, reference: &str) -> ApiError {
    ApiError::new(
        Code::ManifestUnknown,
        format!("manifest {reference} unknown to {name}"),
    )
}

async fn lookup_manifest(
    st: Storage,
    name: &str,
    reference: &str,
) -> Result<StoredManifest, ApiError> {
    let r = match parse_reference(reference) {
        Ok(r) => r,
        // A reference that is neither tag nor digest names nothing.
        Err(e) if e.code == Code::ManifestInvalid => return Err(manifest_unknown(name, reference)),
        Err(e) => return Err(e),
    };
    // Three small reads (tag link, revision link, the manifest of at most 4 MiB), nearly
    // always from the page cache: done on the worker itself, since a hop to the blocking
    // pool costs more than the reads and manifest GETs are the hottest request.
    let d = match r {
        Reference::Digest(d) => Some(d),
        Reference::Tag(t) => st.resolve_tag(name, &t)?,
    };
    let found = match d {
        Some(d) => st.get_manifest(name, &d)?,
        None => None,
    };
    found.ok_or_else(|| manifest_unknown(name, reference))
}

async fn get_manifest(st: Storage, name: &str, reference: &str, head: bool) -> Res {
    let m = lookup_manifest(st, name, reference).await?;
    let b = respond(StatusCode::OK)
        .header(CONTENT_TYPE, &m.media_type)
        .header(DIGEST_HEADER, m.digest.to_string())
        .header(CONTENT_LENGTH, m.content.len());
    let body = if head { empty() } else { full(m.content) };
    Ok(finish(b, body))
}

fn too_big() -> ApiError {
    ApiError::new(
        Code::SizeInvalid,
        format!("manifest larger than {MAX_MANIFEST} bytes"),
    )
    .with_status(StatusCode::PAYLOAD_TOO_LARGE)
}

/// Reads a request body into memory, refusing more than `limit` bytes. An oversize body is
/// still read (up to a bound) and dropped, so the client gets to see the 413 instead of a
/// connection reset mid-send.
async fn read_limited(req: Request<Incoming>, limit: usize) -> Result<Vec<u8>, ApiError> {
    let declared = header(&req, CONTENT_LENGTH).and_then(|v| v.parse::<usize>().ok());
    let drain_limit = limit.saturating_mul(4);
    if declared.is_some_and(|n| n > drain_limit) {
        return Err(too_big());
    }
    let mut body = req.into_body();
    let mut out = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| ApiError::new(Code::ManifestInvalid, format!("reading body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen > drain_limit {
                break;
            }
            if seen <= limit {
                out.extend_from_slice(&data);
            }
        }
    }
    if seen > limit {
        return Err(too_big());
    }
    Ok(out)
}

async fn put_manifest(st: Storage, name: &str, reference: &str, req: Request<Incoming>) -> Res {
    let r = parse_reference(reference)?;
    let content_type = header(&req, CONTENT_TYPE).map(str::to_string);
    let content = read_limited(req, MAX_MANIFEST).await?;
    let info = manifest::inspect(&content, content_type.as_deref())?;
    let digest = match &r {
        Reference::Digest(d) => {
            let mut h = d.algorithm().hasher();
            h.update(&content);
            let actual = h.finish();
            if &actual != d {
                return Err(ApiError::new(
                    Code::DigestInvalid,
                    format!("content has digest {actual}, not {d}"),
                ));
            }
            actual
        }
        Reference::Tag(_) => Digest::sha256_of(&content),
    };
    let subject = info.subject.clone();
    let stored = StoredManifest {
        digest: digest.clone(),
        media_type: info.media_type.clone(),
        content,
    };
    let owned = name.to_string();
    blocking(move || -> Result<(), ApiError> {
        check_references(&st, &owned, &info)?;
        let tag = match &r {
            Reference::Tag(t) => Some(t.as_str()),
            Reference::Digest(_) => None,
        };
        st.put_manifest(&owned, &stored, tag)?;
        Ok(())
    })
    .await?;
    let mut b = respond(StatusCode::CREATED)
        .header(LOCATION, format!("/v2/{name}/manifests/{digest}"))
        .header(DIGEST_HEADER, digest.to_string())
        .header(CONTENT_LENGTH, 0);
    if let Some(s) = subject {
        b = b.header("OCI-Subject", s.to_string());
    }
    Ok(finish(b, empty()))
}

/// Every blob a manifest uses must already be in the repository, and every manifest an
/// index lists must be too, so a pushed manifest is always pullable.
fn check_references(st: &Storage, name: &str, info: &manifest::Inspected) -> Result<(), ApiError> {
    for d in &info.blobs {
        if st.repo_blob_size(name, d)?.is_none() {
            return Err(ApiError::new(
                Code::ManifestBlobUnknown,
                format!("blob {d} unknown to {name}"),
            ));
        }
        st.touch_blob(d)?;
    }
    for d in &info.children {
        if !st.has_manifest(name, d) && st.repo_blob_size(name, d)?.is_none() {
            return Err(ApiError::new(
                Code::ManifestBlobUnknown,
                format!("manifest {d} unknown to {name}"),
            ));
        }
    }
    Ok(())
}

async fn delete_manifest(st: Storage, name: &str, reference: &str) -> Res {
    let r = match parse_reference(reference) {
        Ok(r) => r,
        Err(e) if e.code == Code::ManifestInvalid => return Err(manifest_unknown(name, reference)),
        Err(e) => return Err(e),
    };
    let owned = name.to_string();
    let deleted = blocking(move || match r {
        Reference::Digest(d) => st.delete_manifest(&owned, &d),
        Reference::Tag(t) => st.delete_tag(&owned, &t),
    })
    .await?;
    if !deleted {
        return Err(manifest_unknown(name, reference));
    }
    Ok(finish(
        respond(StatusCode::ACCEPTED).header(CONTENT_LENGTH, 0),
        empty(),
    ))
}

async fn referrers(st: Storage, name: &str, subject: &Digest, req: &Request<Incoming>) -> Res {
    let filter = query(req).remove("artifactType").filter(|s| !s.is_empty());
    let owned = name.to_string();
    let subject = subject.clone();
    let wanted = filter.clone();
    let list = blocking(move || -> Result<Vec<serde_json::Value>, ApiError> {
        let mut out = Vec::new();
        for d in st.revisions(&owned)? {
            let Some(m) = st.get_manifest(&owned, &d)? else {
                continue;
            };
            let Some(desc) = manifest::referrer(&m.content, &m.media_type, &d, &subject) else {
                continue;
            };
            let keep = match &wanted {
                Some(at) => desc.get("artifactType").and_then(|v| v.as_str()) == Some(at.as_str()),
                None => true,
            };
            if keep {
                out.push(desc);
            }
        }
        Ok(out)
    })
    .await?;
    let body = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": list});
    let mut b = respond(StatusCode::OK).header(CONTENT_TYPE, OCI_INDEX);
    if filter.is_some() {
        b = b.header("OCI-Filters-Applied", "artifactType");
    }
    Ok(finish(b, full(body.to_string())))
}

// ---------------------------------------------------------------- blobs

/// A single byte range `bytes=a-b`, `bytes=a-` or `bytes=-n` resolved against `size`:
/// `Ok(None)` means serve everything, `Err` means unsatisfiable.
fn parse_range(h: &str, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        // Multipart ranges are optional for servers; answering in full is allowed.
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().map_err(|_| ())?;
            if n == 0 {
                return Err(());
            }
            (size.saturating_sub(n), size.checked_sub(1).ok_or(())?)
        }
        (a, "") => (a.parse().map_err(|_| ())?, size.checked_sub(1).ok_or(())?),
        (a, b) => {
            let end: u64 = b.parse().map_err(|_| ())?;
            (a.parse().map_err(|_| ())?, end.min(size.saturating_sub(1)))
        }
    };
    if start >= size || start > end {
        return Err(());
    }
    Ok(Some((start, end)))
}

async fn get_blob(st: Storage, name: &str, d: &Digest, req: &Request<Incoming>) -> Res {
    let head = req.method() == Method::HEAD;
    let (owned, dd) = (name.to_string(), d.clone());
    let path = st.blob_path(d);
    let size = blocking(move || st.repo_blob_size(&owned, &dd))
        .await?
        .ok_or_else(|| ApiError::new(Code::BlobUnknown, format!("blob {d} unknown to {name}")))?;
    let range = match header(req, RANGE).map(|h| parse_range(h, size)) {
        None | Some(Ok(None)) => None,
        Some(Ok(Some(r))) => Some(r),
        Some(Err(())) => {
            let b = respond(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(CONTENT_RANGE, format!("bytes */{size}"))
                .header(CONTENT_TYPE, "application/json");
            let e = ApiError::new(Code::BlobUnknown, "range not satisfiable")
                .with_status(StatusCode::RANGE_NOT_SATISFIABLE);
            return Ok(finish(b, full(e.body())));
        }
    };
    let (status, start, len) = match range {
        Some((a, b)) => (StatusCode::PARTIAL_CONTENT, a, b - a + 1),
        None => (StatusCode::OK, 0, size),
    };
    let mut b = respond(status)
        .header(CONTENT_TYPE, "application/octet-stream")
        .header(CONTENT_LENGTH, len)
        .header(DIGEST_HEADER, d.to_string())
        .header("Accept-Ranges", "bytes")
        .header("ETag", format!("\"{d}\""));
    if range.is_some() {
        b = b.header(
            CONTENT_RANGE,
            format!("bytes {start}-{}/{size}", start + len - 1),
        );
    }
    if head {
        return Ok(finish(b, empty()));
    }
    let mut file = std::fs::File::open(&path)?;
    file.seek(SeekFrom::Start(start))?;
    Ok(finish(
        b,
        FileBody::boxed(tokio::fs::File::from_std(file), len),
    ))
}

async fn delete_blob(st: Storage, name: &str, d: &Digest) -> Res {
    let (owned, dd) = (name.to_string(), d.clone());
    if !blocking(move || st.unlink_blob(&owned, &dd)).await? {
        return Err(ApiError::new(
            Code::BlobUnknown,
            format!("blob {d} unknown to {name}"),
        ));
    }
    Ok(finish(
        respond(StatusCode::ACCEPTED).header(CONTENT_LENGTH, 0),
        empty(),
    ))
}

// ---------------------------------------------------------------- uploads

fn upload_location(name: &str, id: &str) -> String {
    format!("/v2/{name}/blobs/uploads/{id}")
}

/// The `Range` header of an upload's progress: the inclusive byte range received.
fn progress(size: u64) -> String {
    format!("0-{}", size.saturating_sub(1))
}

fn blob_created(name: &str, d: &Digest) -> Response<ResBody> {
    let b = respond(StatusCode::CREATED)
        .header(LOCATION, format!("/v2/{name}/blobs/{d}"))
        .header(DIGEST_HEADER, d.to_string())
        .header(CONTENT_LENGTH, 0);
    finish(b, empty())
}

fn upload_accepted(status: StatusCode, name: &str, id: &str, size: u64) -> Response<ResBody> {
    let b = respond(status)
        .header(LOCATION, upload_location(name, id))
        .header(RANGE, progress(size))
        .header(UPLOAD_UUID, id)
        .header(CONTENT_LENGTH, 0);
    finish(b, empty())
}

/// Tries a cross-repository mount: from `from` when given, else from any repository
/// (the spec's automatic content discovery). Returns whether the blob is now linked.
async fn try_mount(
    st: &Storage,
    name: &str,
    d: &Digest,
    from: Option<&str>,
) -> Result<bool, ApiError> {
    if from.is_some_and(|f| !valid_name(f)) {
        return Ok(false);
    }
    let (st, name, d, from) = (
        st.clone(),
        name.to_string(),
        d.clone(),
        from.map(str::to_string),
    );
    blocking(move || -> Result<bool, ApiError> {
        let present = match &from {
            Some(f) => st.repo_blob_size(f, &d)?.is_some(),
            None => st.blob_size(&d)?.is_some(),
        };
        if present {
            st.link_blob(&name, &d)?;
        }
        Ok(present)
    })
    .await
}

async fn start_upload(st: Storage, name: &str, req: Request<Incoming>, scoped: bool) -> Res {
    let q = query(&req);
    // With per-repository scopes, mounting from "anywhere" would let a client read blobs of
    // repositories it has no pull access to: only explicit `from` mounts then.
    let from = q.get("from").map(String::as_str);
    if let Some(m) = q.get("mount").filter(|_| !scoped || from.is_some()) {
        if let Ok(d) = m.parse::<Digest>() {
            if try_mount(&st, name, &d, from).await? {
                return Ok(blob_created(name, &d));
            }
        }
    }
    let owned = name.to_string();
    let st2 = st.clone();
    let id = blocking(move || st2.new_upload(&owned)).await?;
    match q.get("digest") {
        // Monolithic upload: the body is the whole blob.
        Some(d) => {
            let d = match parse_digest(d) {
                Ok(d) => d,
                Err(e) => {
                    let _ = st.cancel_upload(name, &id);
                    drain(&mut req.into_body()).await;
                    return Err(e);
                }
            };
            // Without a Content-Range there is no range to get wrong.
            if let Err(resp) = append_body(&st, name, &id, req.into_body(), None).await? {
                return Ok(resp);
            }
            commit(st, name, &id, &d).await
        }
        None => Ok(upload_accepted(StatusCode::ACCEPTED, name, &id, 0)),
    }
}

/// Parses `Content-Range: <start>-<end>` (also tolerating a `bytes ` prefix and `/total`).
fn parse_content_range(h: &str) -> Option<(u64, u64)> {
    let h = h.trim();
    let h = h.strip_prefix("bytes").map(str::trim_start).unwrap_or(h);
    let h = h.strip_prefix('=').unwrap_or(h);
    let h = h.split('/').next().unwrap_or(h);
    let (a, b) = h.split_once('-')?;
    let (a, b) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a <= b).then_some((a, b))
}

fn range_error(name: &str, id: &str, size: u64, msg: &str) -> Response<ResBody> {
    let e =
        ApiError::new(Code::BlobUploadInvalid, msg).with_status(StatusCode::RANGE_NOT_SATISFIABLE);
    let b = respond(StatusCode::RANGE_NOT_SATISFIABLE)
        .header(CONTENT_TYPE, "application/json")
        .header(LOCATION, upload_location(name, id))
        .header(RANGE, progress(size));
    finish(b, full(e.body()))
}

/// The most of a refused request body read and dropped before answering.
const DRAIN_LIMIT: u64 = 64 << 20;

/// Reads and drops what is left of a refused request body (up to a bound), so the client
/// gets to read the error instead of a reset while it is still sending.
async fn drain(body: &mut Incoming) {
    let mut seen = 0u64;
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            seen += data.len() as u64;
            if seen > DRAIN_LIMIT {
                return;
            }
        }
    }
}

/// Appends a request body to an upload. With `range`, the body must be exactly that range
/// of the blob, starting where the upload stands; otherwise the upload is left as it was.
/// Returns the upload's new size, or the response to send when the range is wrong.
async fn append_body(
    st: &Storage,
    name: &str,
    id: &str,
    mut body: Incoming,
    range: Option<(u64, u64)>,
) -> Result<Result<u64, Response<ResBody>>, ApiError> {
    let (st2, owned, oid) = (st.clone(), name.to_string(), id.to_string());
    let opened = blocking(move || -> Result<_, ApiError> {
        let f = st2.open_upload_append(&owned, &oid)?;
        let size = f.metadata()?.len();
        Ok((f, size))
    })
    .await;
    let (file, size) = match opened {
        Ok(x) => x,
        Err(e) => {
            drain(&mut body).await;
            return Err(e);
        }
    };
    if let Some((start, _)) = range {
        if start != size {
            drain(&mut body).await;
            return Ok(Err(range_error(
                name,
                id,
                size,
                "chunk does not start where the upload stands",
            )));
        }
    }
    let mut file = tokio::fs::File::from_std(file);
    // tokio buffers up to 2 MiB per write in flight; with many concurrent uploads that
    // buffer is most of the server's memory, and 256 KiB writes are as fast.
    file.set_max_buf_size(UPLOAD_WRITE_BUF);
    let mut written = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                // The client went away: drop the partial chunk so a resumed upload sees
                // the last complete one.
                let _ = file.set_len(size).await;
                return Err(ApiError::new(
                    Code::BlobUploadInvalid,
                    format!("reading body: {e}"),
                ));
            }
        };
        if let Ok(data) = frame.into_data() {
            file.write_all(&data).await?;
            written += data.len() as u64;
        }
    }
    file.flush().await?;
    if let Some((start, end)) = range {
        if written != end - start + 1 {
            file.set_len(size).await?;
            return Ok(Err(range_error(
                name,
                id,
                size,
                "chunk length does not match Content-Range",
            )));
        }
    }
    Ok(Ok(size + written))
}

/// Largest write an upload hands to the blocking pool at once.
const UPLOAD_WRITE_BUF: usize = 256 * 1024;

async fn commit(st: Storage, name: &str, id: &str, d: &Digest) -> Res {
    let (owned, oid, dd) = (name.to_string(), id.to_string(), d.clone());
    blocking(move || st.commit_upload(&owned, &oid, &dd)).await?;
    Ok(blob_created(name, d))
}

fn content_range(req: &Request<Incoming>) -> Result<Option<(u64, u64)>, ApiError> {
    match header(req, CONTENT_RANGE) {
        None => Ok(None),
        Some(h) => parse_content_range(h).map(Some).ok_or_else(|| {
            ApiError::new(Code::BlobUploadInvalid, format!("bad Content-Range {h:?}"))
        }),
    }
}

async fn patch_upload(st: Storage, name: &str, id: &str, req: Request<Incoming>) -> Res {
    let range = match content_range(&req) {
        Ok(r) => r,
        Err(_) => {
            drain(&mut req.into_body()).await;
            let size = st.upload_size(name, id)?;
            return Ok(range_error(name, id, size, "bad Content-Range"));
        }
    };
    match append_body(&st, name, id, req.into_body(), range).await? {
        Ok(size) => Ok(upload_accepted(StatusCode::ACCEPTED, name, id, size)),
        Err(resp) => Ok(resp),
    }
}

async fn put_upload(st: Storage, name: &str, id: &str, req: Request<Incoming>) -> Res {
    let q = query(&req);
    let checked = match q.get("digest") {
        None => Err(ApiError::new(
            Code::DigestInvalid,
            "digest query parameter missing",
        )),
        Some(d) => parse_digest(d).and_then(|d| Ok((d, content_range(&req)?))),
    };
    let (d, range) = match checked {
        Ok(x) => x,
        Err(e) => {
            drain(&mut req.into_body()).await;
            return Err(e);
        }
    };
    if let Err(resp) = append_body(&st, name, id, req.into_body(), range).await? {
        return Ok(resp);
    }
    commit(st, name, id, &d).await
}

async fn upload_status(st: Storage, name: &str, id: &str) -> Res {
    let (owned, oid) = (name.to_string(), id.to_string());
    let size = blocking(move || st.upload_size(&owned, &oid)).await?;
    Ok(upload_accepted(StatusCode::NO_CONTENT, name, id, size))
}

async fn cancel_upload(st: Storage, name: &str, id: &str) -> Res {
    let (owned, oid) = (name.to_string(), id.to_string());
    blocking(move || st.cancel_upload(&owned, &oid)).await?;
    Ok(finish(respond(StatusCode::NO_CONTENT), empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Ok(Some((0, 9))));
        assert_eq!(parse_range("bytes=90-", 100), Ok(Some((90, 99))));
        assert_eq!(parse_range("bytes=-10", 100), Ok(Some((90, 99))));
        assert_eq!(parse_range("bytes=50-500", 100), Ok(Some((50, 99))));
        assert_eq!(parse_range("bytes=100-", 100), Err(()));
        assert_eq!(parse_range("bytes=5-1", 100), Err(()));
        assert_eq!(parse_range("bytes=x-1", 100), Err(()));
        assert_eq!(parse_range("items=0-1", 100), Ok(None));
        assert_eq!(parse_content_range("0-1023"), Some((0, 1023)));
        assert_eq!(parse_content_range("bytes 10-19/*"), Some((10, 19)));
        assert_eq!(parse_content_range("9-1"), None);
        assert_eq!(pct_decode("sha256%3Aab+c%zz"), "sha256:ab c%zz");
    }
}
