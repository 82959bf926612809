//! Pull and push against a scripted registry on loopback, for the behaviours a real
//! registry will not produce on demand: token auth, 5xx/429 answers with Retry-After,
//! bodies cut off mid-way (resumed with Range), and content that does not match its
//! digest.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_image::layer::Compression;
use berth_image::{Digest, Reference};

use super::manifest::OCI_MANIFEST;
use super::{pull, Error, LocalStore, Options, PullOptions};

/// A request as the scripted server saw it.
#[derive(Debug, Clone)]
struct Req {
    method: String,
    path: String,
    headers: HashMap<String, String>,
}

/// A scripted answer; `cut_after` closes the connection after that many body bytes
/// while announcing the full length.
#[derive(Default)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    cut_after: Option<usize>,
}

fn resp(status: u16, body: &[u8]) -> Resp {
    Resp {
        status,
        body: body.to_vec(),
        ..Resp::default()
    }
}

type Handler = dyn Fn(&Req) -> Resp + Send + Sync;

/// Serves `handler` on 127.0.0.1 from a background thread; records every request.
fn serve(handler: Arc<Handler>) -> (String, Arc<Mutex<Vec<Req>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let log = Arc::new(Mutex::new(Vec::new()));
    let log2 = log.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (handler, log) = (handler.clone(), log2.clone());
            std::thread::spawn(move || answer(conn, &*handler, &log));
        }
    });
    (addr, log)
}

fn answer(conn: TcpStream, handler: &Handler, log: &Mutex<Vec<Req>>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    // A TLS hello (the client tries https first) is not a request line: drop it.
    if reader.read_line(&mut line).is_err() || !line.ends_with("HTTP/1.1\r\n") {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap().to_string(),
        parts.next().unwrap().to_string(),
    );
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.trim_end().split_once(':') {
            headers.insert(k.to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    let _ = reader.read_exact(&mut body);
    let req = Req {
        method,
        path,
        headers,
    };
    log.lock().unwrap().push(req.clone());
    let r = handler(&req);
    let mut out = conn;
    let mut head = format!(
        "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        r.status,
        r.body.len()
    );
    for (k, v) in &r.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = out.write_all(head.as_bytes());
    let body = &r.body[..r.cut_after.unwrap_or(r.body.len())];
    let _ = out.write_all(body);
    let _ = out.flush();
}

/// A one-layer image: (manifest, config, layer) bytes and the file it holds.
struct TestImage {
    manifest: Vec<u8>,
    manifest_digest: Digest,
    config: Vec<u8>,
    config_digest: Digest,
    layer: Vec<u8>,
    layer_digest: Digest,
}

fn test_image() -> TestImage {
    let dir = tempfile::tempdir().unwrap();
    // Incompressible content, so the compressed layer is large enough to cut in two.
    let data: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(dir.path().join("hello"), &data).unwrap();
    let mut layer = Vec::new();
    let diff = berth_image::layer::write_layer(dir.path(), &mut layer, Compression::Gzip).unwrap();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [diff.diff_id.to_string()]}
    }))
    .unwrap();
    let config_digest = Digest::sha256_of(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.to_string(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": diff.digest.to_string(), "size": layer.len()}]
    }))
    .unwrap();
    TestImage {
        manifest_digest: Digest::sha256_of(&manifest),
        manifest,
        config,
        config_digest,
        layer_digest: diff.digest,
        layer,
    }
}

fn fast_options() -> PullOptions {
    PullOptions {
        registry: Options {
            backoff: Duration::from_millis(10),
            ..Options::default()
        },
        platform: None,
    }
}

/// Counts calls per key, so a handler can fail the first few.
#[derive(Default)]
struct Counter(Mutex<HashMap<String, usize>>);

impl Counter {
    fn bump(&self, key: &str) -> usize {
        let mut m = self.0.lock().unwrap();
        let n = m.entry(key.to_string()).or_default();
        *n += 1;
        *n
    }
}

#[test]
fn pull_with_token_auth_retries_and_resume() {
    let img = Arc::new(test_image());
    let calls = Arc::new(Counter::default());
    let addr_cell: Arc<Mutex<String>> = Arc::default();
    let (i, c, a) = (img.clone(), calls.clone(), addr_cell.clone());
    let handler: Arc<Handler> = Arc::new(move |r: &Req| {
        let authorized = r.headers.get("authorization").map(String::as_str) == Some("Bearer tok1");
        if r.path.starts_with("/token") {
            c.bump("token");
            assert!(
                r.path.contains("scope=repository%3At%2Fimg%3Apull"),
                "{}",
                r.path
            );
            return resp(200, br#"{"token":"tok1","expires_in":300}"#);
        }
        if !authorized {
            let realm = format!("http://{}/token", a.lock().unwrap());
            let mut out = resp(401, b"{}");
            out.headers.push((
                "WWW-Authenticate".into(),
                format!(r#"Bearer realm="{realm}",service="fake""#),
            ));
            return out;
        }
        let path = r.path.as_str();
        if path == "/v2/t/img/manifests/latest" {
            if c.bump("manifest") == 1 {
                return resp(503, b"busy");
            }
            let mut out = resp(200, &i.manifest);
            out.headers
                .push(("Content-Type".into(), OCI_MANIFEST.into()));
            out.headers.push((
                "Docker-Content-Digest".into(),
                i.manifest_digest.to_string(),
            ));
            return out;
        }
        if path == format!("/v2/t/img/blobs/{}", i.config_digest) {
            if c.bump("config") == 1 {
                let mut out = resp(429, b"slow down");
                out.headers.push(("Retry-After".into(), "1".into()));
                return out;
            }
            return resp(200, &i.config);
        }
        if path == format!("/v2/t/img/blobs/{}", i.layer_digest) {
            let half = i.layer.len() / 2;
            return match r.headers.get("range") {
                None => Resp {
                    cut_after: Some(half),
                    ..resp(200, &i.layer)
                },
                Some(range) => {
                    let from: usize = range
                        .trim_start_matches("bytes=")
                        .trim_end_matches('-')
                        .parse()
                        .unwrap();
                    let mut out = resp(206, &i.layer[from..]);
                    out.headers.push((
                        "Content-Range".into(),
                        format!("bytes {from}-{}/{}", i.layer.len() - 1, i.layer.len()),
                    ));
                    out
                }
            };
        }
        resp(404, b"")
    });
    let (addr, log) = serve(handler);
    *addr_cell.lock().unwrap() = addr.clone();

    let dir = tempfile::tempdir().unwrap();
    let mut store = LocalStore::open(dir.path()).unwrap();
    let reference = Reference::parse(&format!("{addr}/t/img")).unwrap();
    let started = std::time::Instant::now();
    let report = pull(&mut store, &reference, &fast_options()).unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was honoured"
    );
    assert_eq!(report.manifest_digest, img.manifest_digest);
    assert_eq!(calls.bump("token"), 2, "one token for the whole pull");
    let log = log.lock().unwrap();
    let ranged: Vec<_> = log
        .iter()
        .filter(|r| r.headers.contains_key("range"))
        .collect();
    assert_eq!(ranged.len(), 1, "the cut download resumed once: {log:?}");
    assert!(log.iter().all(|r| r.method == "GET"), "a pull only reads");
    let rec = store.find(&reference.to_string()).unwrap();
    let file = store.layers.path(&rec.layers[0].chain_id).join("hello");
    assert_eq!(std::fs::metadata(file).unwrap().len(), 300_000);
    assert!(store.content.ingests().unwrap().is_empty());
}

#[test]
fn corrupt_blob_or_manifest_leaves_the_store_unchanged() {
    let img = Arc::new(test_image());
    for case in ["layer", "manifest-digest", "missing"] {
        let i = img.clone();
        let handler: Arc<Handler> = Arc::new(move |r: &Req| {
            let path = r.path.as_str();
            if path == "/v2/t/img/manifests/latest" && case != "missing" {
                let mut out = resp(200, &i.manifest);
                let announced = if case == "manifest-digest" {
                    Digest::sha256_of(b"other")
                } else {
                    i.manifest_digest.clone()
                };
                out.headers
                    .push(("Docker-Content-Digest".into(), announced.to_string()));
                return out;
            }
            if path == format!("/v2/t/img/blobs/{}", i.config_digest) {
                return resp(200, &i.config);
            }
            if path == format!("/v2/t/img/blobs/{}", i.layer_digest) {
                let mut bad = i.layer.clone();
                let mid = bad.len() / 2;
                bad[mid] ^= 0xff;
                return resp(200, &bad);
            }
            resp(
                404,
                br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
            )
        });
        let (addr, _log) = serve(handler);
        let dir = tempfile::tempdir().unwrap();
        let mut store = LocalStore::open(dir.path()).unwrap();
        let reference = Reference::parse(&format!("{addr}/t/img")).unwrap();
        let err = pull(&mut store, &reference, &fast_options()).unwrap_err();
        let text = err.to_string();
        match case {
            "layer" => {
                assert!(matches!(err, Error::DigestMismatch { .. }), "{text}");
                assert!(text.contains(&img.layer_digest.to_string()), "{text}");
                assert!(text.contains(&addr) && text.contains("t/img"), "{text}");
            }
            "manifest-digest" => assert!(text.contains("digest mismatch for manifest"), "{text}"),
            _ => assert!(matches!(err, Error::ManifestNotFound { .. }), "{text}"),
        }
        assert!(
            store.content.list().unwrap().is_empty(),
            "{case}: no blob kept"
        );
        assert!(
            store.meta.images().unwrap().is_empty(),
            "{case}: no image recorded"
        );
        let layers: Vec<_> = std::fs::read_dir(dir.path().join("layers"))
            .unwrap()
            .collect();
        assert!(layers.is_empty(), "{case}: no layer kept");
    }
}

#[test]
fn redirected_blob_download_keeps_credentials_home() {
    // Blob storage on another host name (localhost vs 127.0.0.1 are different hosts to
    // the client): it must not see the registry's Authorization header.
    let img = Arc::new(test_image());
    let i = img.clone();
    let storage: Arc<Handler> = Arc::new(move |r: &Req| {
        if r.path.ends_with("layer") {
            resp(200, &i.layer)
        } else {
            resp(200, &i.config)
        }
    });
    let (storage_addr, storage_log) = serve(storage);
    let storage_port = storage_addr.rsplit(':').next().unwrap().to_string();
    let i = img.clone();
    let registry: Arc<Handler> = Arc::new(move |r: &Req| {
        if r.headers.get("authorization").map(String::as_str) != Some("Basic dTpw") {
            let mut out = resp(401, b"");
            out.headers
                .push(("WWW-Authenticate".into(), r#"Basic realm="x""#.into()));
            return out;
        }
        if r.path == "/v2/t/img/manifests/latest" {
            return resp(200, &i.manifest);
        }
        let target = if r.path.ends_with(&i.layer_digest.to_string()) {
            "layer"
        } else {
            "config"
        };
        let mut out = resp(307, b"");
        out.headers.push((
            "Location".into(),
            format!("http://localhost:{storage_port}/{target}"),
        ));
        out
    });
    let (addr, _log) = serve(registry);
    let dir = tempfile::tempdir().unwrap();
    let mut store = LocalStore::open(dir.path()).unwrap();
    let mut opts = fast_options();
    opts.registry.credentials = Some(super::Credentials {
        username: "u".into(),
        password: "p".into(),
    });
    let reference = Reference::parse(&format!("{addr}/t/img")).unwrap();
    pull(&mut store, &reference, &opts).unwrap();
    let seen = storage_log.lock().unwrap();
    assert_eq!(
        seen.len(),
        2,
        "config and layer came from storage: {seen:?}"
    );
    assert!(
        seen.iter()
            .all(|r| !r.headers.contains_key("authorization")),
        "credentials leaked to another host: {seen:?}"
    );
}

/// Serves `img` as `t/img:latest`; counts layer blob requests.
fn serve_image(img: Arc<TestImage>) -> (String, Arc<Mutex<Vec<Req>>>) {
    let handler: Arc<Handler> = Arc::new(move |r: &Req| {
        if r.path == "/v2/t/img/manifests/latest" {
            let mut out = resp(200, &img.manifest);
            out.headers
                .push(("Content-Type".into(), OCI_MANIFEST.into()));
            return out;
        }
        if r.path == format!("/v2/t/img/blobs/{}", img.config_digest) {
            return resp(200, &img.config);
        }
        if r.path == format!("/v2/t/img/blobs/{}", img.layer_digest) {
            return resp(200, &img.layer);
        }
        resp(404, b"{}")
    });
    serve(handler)
}

#[test]
fn pull_waits_for_a_concurrent_ingest_of_the_same_blob() {
    let img = Arc::new(test_image());
    let (addr, log) = serve_image(img.clone());
    let dir = tempfile::tempdir().unwrap();
    let mut store = LocalStore::open(dir.path()).unwrap();
    // Another pull holds the layer's ingest and commits it a moment later.
    let other = LocalStore::open(dir.path()).unwrap();
    let mut w = other
        .content
        .writer(&format!("pull-{}", img.layer_digest))
        .unwrap();
    w.write_all(&img.layer).unwrap();
    let (layer_len, layer_digest) = (img.layer.len() as u64, img.layer_digest.clone());
    let committer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        w.commit(layer_len, &layer_digest).unwrap();
    });
    let reference = Reference::parse(&format!("{addr}/t/img")).unwrap();
    let report = pull(&mut store, &reference, &fast_options()).unwrap();
    committer.join().unwrap();
    assert_eq!(report.layers.len(), 1);
    // It waited and used the other's blob rather than failing or fetching it again.
    let layer_gets = log
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.path.ends_with(&img.layer_digest.to_string()))
        .count();
    assert_eq!(layer_gets, 0);
    assert!(store.check().unwrap().problems.is_empty());
}

#[test]
fn failed_pull_keeps_what_a_concurrent_pull_may_use() {
    // The layer blob is valid but the config names another diff id: the blob is
    // committed, then the unpack check fails and the pull rolls back.
    let mut img = test_image();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [Digest::sha256_of(b"other").to_string()]}
    }))
    .unwrap();
    img.config_digest = Digest::sha256_of(&config);
    img.config = config;
    img.manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": img.config_digest.to_string(), "size": img.config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": img.layer_digest.to_string(), "size": img.layer.len()}]
    }))
    .unwrap();
    let img = Arc::new(img);
    let (addr, _log) = serve_image(img.clone());
    let reference = Reference::parse(&format!("{addr}/t/img")).unwrap();

    // Alone, the failed pull removes the blob it added.
    let dir = tempfile::tempdir().unwrap();
    let mut store = LocalStore::open(dir.path()).unwrap();
    pull(&mut store, &reference, &fast_options()).unwrap_err();
    assert!(!store.content.contains(&img.layer_digest));

    // With another pull running, it leaves the blob for that one.
    let running = store.pull_guard().unwrap();
    pull(&mut store, &reference, &fast_options()).unwrap_err();
    assert!(store.content.contains(&img.layer_digest));
    drop(running);
}
