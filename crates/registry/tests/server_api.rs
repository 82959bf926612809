//! Spec-driven HTTP tests of the registry server: each endpoint and error path of the
//! distribution spec, through a plain HTTP client against a server on loopback.

use std::io::{Read, Write};
use std::path::PathBuf;

use berth_image::digest::{Algorithm, Digest};
use berth_registry::server::{Config, Server};
use serde_json::{json, Value};

struct TestServer {
    base: String,
    dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    auth: Option<String>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn start(htpasswd: Option<PathBuf>) -> TestServer {
    start_with(|c| c.htpasswd = htpasswd)
}

fn start_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        addr: "127.0.0.1:0".into(),
        storage: dir.path().join("store"),
        ..Config::default()
    };
    adjust(&mut config);
    let server = Server::bind(&config).unwrap();
    let addr = server.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(server.run(async {
            let _ = rx.await;
        }))
        .unwrap();
    });
    TestServer {
        base: format!("http://{addr}"),
        dir,
        stop: Some(tx),
        thread: Some(thread),
        auth: None,
    }
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    fn error_code(&self) -> String {
        self.json()["errors"][0]["code"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

impl TestServer {
    fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        }
    }

    fn req(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Resp {
        let mut r = ureq::request(method, &self.url(path));
        if let Some(a) = &self.auth {
            r = r.set("Authorization", a);
        }
        for (k, v) in headers {
            r = r.set(k, v);
        }
        let res = match body {
            Some(b) => r.send_bytes(b),
            None => r.call(),
        };
        into_resp(res)
    }

    /// A PATCH whose body goes out with chunked transfer encoding (no length known).
    fn stream_patch(&self, path: &str, data: &[u8]) -> Resp {
        let mut r =
            ureq::request("PATCH", &self.url(path)).set("Content-Type", "application/octet-stream");
        if let Some(a) = &self.auth {
            r = r.set("Authorization", a);
        }
        into_resp(r.send(std::io::Cursor::new(data.to_vec())))
    }

    fn get(&self, path: &str) -> Resp {
        self.req("GET", path, &[], None)
    }

    fn push_blob(&self, repo: &str, data: &[u8]) -> Digest {
        let d = Digest::sha256_of(data);
        let r = self.req(
            "POST",
            &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
            &[],
            Some(data),
        );
        assert_eq!(r.status, 201, "{r:?}");
        d
    }

    fn push_manifest(&self, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> Resp {
        self.req(
            "PUT",
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("Content-Type", media_type)],
            Some(body),
        )
    }

    fn blob_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for alg in ["sha256", "sha512"] {
            let dir = self.dir.path().join("store/blobs").join(alg);
            if let Ok(rd) = std::fs::read_dir(dir) {
                out.extend(rd.map(|e| e.unwrap().path()));
            }
        }
        out
    }
}

fn into_resp(res: Result<ureq::Response, ureq::Error>) -> Resp {
    let r = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport: {e}"),
    };
    let status = r.status();
    let headers = r
        .headers_names()
        .into_iter()
        .map(|n| {
            let v = r.header(&n).unwrap_or("").to_string();
            (n, v)
        })
        .collect();
    let mut body = Vec::new();
    r.into_reader().read_to_end(&mut body).unwrap();
    Resp {
        status,
        headers,
        body,
    }
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

fn image_manifest(config: &Digest, config_len: usize, layer: &Digest, layer_len: usize) -> Value {
    json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": config_len},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer.to_string(), "size": layer_len}],
    })
}

/// Pushes a config and a layer and a manifest tagged `tag`; returns the manifest digest.
fn push_image(s: &TestServer, repo: &str, tag: &str, seed: &str) -> (Digest, Vec<u8>) {
    let config = format!("{{\"seed\":\"{seed}\"}}");
    let layer = format!("layer of {seed}");
    let c = s.push_blob(repo, config.as_bytes());
    let l = s.push_blob(repo, layer.as_bytes());
    let m = serde_json::to_vec(&image_manifest(&c, config.len(), &l, layer.len())).unwrap();
    let r = s.push_manifest(repo, tag, OCI_MANIFEST, &m);
    assert_eq!(r.status, 201, "{r:?}");
    (Digest::sha256_of(&m), m)
}

#[test]
fn base_endpoint() {
    let s = start(None);
    let r = s.get("/v2/");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("Docker-Distribution-API-Version"),
        Some("registry/2.0")
    );
    assert_eq!(s.get("/v3/").status, 404);
}

#[test]
fn monolithic_uploads() {
    let s = start(None);
    let data = b"hello registry";
    let d = Digest::sha256_of(data);
    // POST with ?digest=: one request.
    let r = s.req(
        "POST",
        &format!("/v2/a/b/blobs/uploads/?digest={d}"),
        &[],
        Some(data),
    );
    assert_eq!(r.status, 201);
    assert_eq!(
        r.header("Location"),
        Some(format!("/v2/a/b/blobs/{d}").as_str())
    );
    assert_eq!(
        r.header("Docker-Content-Digest"),
        Some(d.to_string().as_str())
    );
    let r = s.get(&format!("/v2/a/b/blobs/{d}"));
    assert_eq!((r.status, r.body.as_slice()), (200, &data[..]));
    assert_eq!(
        r.header("Docker-Content-Digest"),
        Some(d.to_string().as_str())
    );
    let r = s.req("HEAD", &format!("/v2/a/b/blobs/{d}"), &[], None);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("Content-Length"),
        Some(data.len().to_string().as_str())
    );
    assert!(r.body.is_empty());
    // POST then PUT with the whole body.
    let data2 = b"second blob";
    let d2 = Digest::sha256_of(data2);
    let r = s.req("POST", "/v2/a/b/blobs/uploads/", &[], None);
    assert_eq!(r.status, 202);
    let loc = r.header("Location").unwrap().to_string();
    assert!(r.header("Docker-Upload-UUID").is_some());
    let sep = if loc.contains('?') { '&' } else { '?' };
    let r = s.req(
        "PUT",
        &format!("{loc}{sep}digest={d2}"),
        &[("Content-Type", "application/octet-stream")],
        Some(data2),
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(s.get(&format!("/v2/a/b/blobs/{d2}")).body, data2);
    // Invalid digests are refused.
    let r = s.req(
        "POST",
        "/v2/a/b/blobs/uploads/?digest=sha256:nothex",
        &[],
        Some(data),
    );
    assert_eq!((r.status, r.error_code().as_str()), (400, "DIGEST_INVALID"));
    let r = s.get("/v2/a/b/blobs/md5:abc");
    assert_eq!((r.status, r.error_code().as_str()), (400, "DIGEST_INVALID"));
}

#[test]
fn chunked_upload_with_ordering() {
    let s = start(None);
    let data: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    let d = Digest::sha256_of(&data);
    let r = s.req(
        "POST",
        "/v2/repo/blobs/uploads/",
        &[("Content-Length", "0")],
        None,
    );
    assert_eq!(r.status, 202);
    let loc = r.header("Location").unwrap().to_string();
    let patch = |range: &str, chunk: &[u8]| {
        s.req(
            "PATCH",
            &loc,
            &[
                ("Content-Type", "application/octet-stream"),
                ("Content-Range", range),
            ],
            Some(chunk),
        )
    };
    let r = patch("0-999", &data[..1000]);
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(r.header("Range"), Some("0-999"));
    assert_eq!(r.header("Location"), Some(loc.as_str()));
    // Out of order: starts past the end, or repeats the first chunk.
    let r = patch("1500-1999", &data[1500..2000]);
    assert_eq!(r.status, 416);
    assert_eq!(r.header("Range"), Some("0-999"));
    assert_eq!(patch("0-999", &data[..1000]).status, 416);
    // A body shorter than its Content-Range is refused and not kept.
    assert_eq!(patch("1000-1999", &data[1000..1500]).status, 416);
    let r = s.get(&loc);
    assert_eq!((r.status, r.header("Range")), (204, Some("0-999")));
    assert_eq!(patch("1000-1999", &data[1000..2000]).status, 202);
    // The last chunk rides on the PUT.
    let r = s.req(
        "PUT",
        &format!("{loc}?digest={d}"),
        &[
            ("Content-Type", "application/octet-stream"),
            ("Content-Range", "2000-2999"),
        ],
        Some(&data[2000..]),
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(s.get(&format!("/v2/repo/blobs/{d}")).body, data);
    // The session is gone once finished.
    let r = s.get(&loc);
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (404, "BLOB_UPLOAD_UNKNOWN")
    );
}

#[test]
fn concurrent_chunks_for_one_offset() {
    let s = start(None);
    let loc = s
        .req("POST", "/v2/repo/blobs/uploads/", &[], None)
        .header("Location")
        .unwrap()
        .to_string();
    let chunk = vec![9u8; 4 << 20];
    let range = format!("0-{}", chunk.len() - 1);
    // Eight clients race to write the first chunk: exactly one wins, the rest see 416.
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    s.req(
                        "PATCH",
                        &loc,
                        &[("Content-Range", range.as_str())],
                        Some(&chunk),
                    )
                    .status
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        statuses.iter().filter(|&&c| c == 202).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&c| c == 416).count(),
        7,
        "{statuses:?}"
    );
    let r = s.get(&loc);
    assert_eq!(r.header("Range"), Some(range.as_str()));
}

#[test]
fn streamed_patch_then_put() {
    let s = start(None);
    let data = vec![7u8; 200_000];
    let d = Digest::sha256_of(&data);
    let loc = s
        .req("POST", "/v2/repo/blobs/uploads/", &[], None)
        .header("Location")
        .unwrap()
        .to_string();
    let r = s.stream_patch(&loc, &data[..150_000]);
    assert_eq!((r.status, r.header("Range")), (202, Some("0-149999")));
    let r = s.stream_patch(&loc, &data[150_000..]);
    assert_eq!((r.status, r.header("Range")), (202, Some("0-199999")));
    let r = s.req("PUT", &format!("{loc}?digest={d}"), &[], Some(b""));
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(s.get(&format!("/v2/repo/blobs/{d}")).body.len(), 200_000);
}

#[test]
fn wrong_digest_stores_nothing() {
    let s = start(None);
    let wrong = Digest::sha256_of(b"something else");
    let r = s.req(
        "POST",
        &format!("/v2/repo/blobs/uploads/?digest={wrong}"),
        &[],
        Some(b"actual"),
    );
    assert_eq!((r.status, r.error_code().as_str()), (400, "DIGEST_INVALID"));
    let loc = s
        .req("POST", "/v2/repo/blobs/uploads/", &[], None)
        .header("Location")
        .unwrap()
        .to_string();
    let r = s.req(
        "PUT",
        &format!("{loc}?digest={wrong}"),
        &[],
        Some(b"actual"),
    );
    assert_eq!((r.status, r.error_code().as_str()), (400, "DIGEST_INVALID"));
    assert!(s.blob_files().is_empty());
    assert_eq!(
        s.get(&format!("/v2/repo/blobs/{}", Digest::sha256_of(b"actual")))
            .status,
        404
    );
    let r = s.get(&format!("/v2/repo/blobs/{wrong}"));
    assert_eq!((r.status, r.error_code().as_str()), (404, "BLOB_UNKNOWN"));
    // PUT without ?digest.
    let loc = s
        .req("POST", "/v2/repo/blobs/uploads/", &[], None)
        .header("Location")
        .unwrap()
        .to_string();
    let r = s.req("PUT", &loc, &[], Some(b"x"));
    assert_eq!((r.status, r.error_code().as_str()), (400, "DIGEST_INVALID"));
}

#[test]
fn cancel_and_unknown_uploads() {
    let s = start(None);
    let loc = s
        .req("POST", "/v2/repo/blobs/uploads/", &[], None)
        .header("Location")
        .unwrap()
        .to_string();
    assert_eq!(s.req("DELETE", &loc, &[], None).status, 204);
    for method in ["GET", "DELETE", "PATCH"] {
        let r = s.req(
            method,
            &loc,
            &[],
            if method == "PATCH" { Some(b"x") } else { None },
        );
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (404, "BLOB_UPLOAD_UNKNOWN"),
            "{method}"
        );
    }
    // A session belongs to its repository.
    let loc = s
        .req("POST", "/v2/one/blobs/uploads/", &[], None)
        .header("Location")
        .unwrap()
        .to_string();
    let other = loc.replace("/v2/one/", "/v2/two/");
    assert_eq!(s.get(&other).status, 404);
    assert_eq!(s.get("/v2/one/blobs/uploads/../../etc").status, 404);
}

#[test]
fn blob_ranges() {
    let s = start(None);
    let d = s.push_blob("r", b"0123456789");
    let get = |range: &str| {
        s.req(
            "GET",
            &format!("/v2/r/blobs/{d}"),
            &[("Range", range)],
            None,
        )
    };
    let r = get("bytes=2-5");
    assert_eq!((r.status, r.body.as_slice()), (206, &b"2345"[..]));
    assert_eq!(r.header("Content-Range"), Some("bytes 2-5/10"));
    assert_eq!(r.header("Content-Length"), Some("4"));
    assert_eq!(get("bytes=7-").body, b"789");
    assert_eq!(get("bytes=-3").body, b"789");
    let r = get("bytes=10-");
    assert_eq!(r.status, 416);
    assert_eq!(r.header("Content-Range"), Some("bytes */10"));
    assert_eq!(get("bytes=5-2").status, 416);
}

#[test]
fn cross_repository_mount() {
    let s = start(None);
    let d = s.push_blob("src/repo", b"shared layer");
    let r = s.req(
        "POST",
        &format!("/v2/dst/blobs/uploads/?mount={d}&from=src/repo"),
        &[],
        None,
    );
    assert_eq!(r.status, 201);
    assert_eq!(
        r.header("Location"),
        Some(format!("/v2/dst/blobs/{d}").as_str())
    );
    assert_eq!(s.get(&format!("/v2/dst/blobs/{d}")).body, b"shared layer");
    // Not in `from`: an upload session instead.
    let r = s.req(
        "POST",
        &format!("/v2/dst2/blobs/uploads/?mount={d}&from=nowhere"),
        &[],
        None,
    );
    assert_eq!(r.status, 202);
    assert!(r.header("Location").unwrap().contains("/blobs/uploads/"));
    // Without `from`: found wherever the registry has it.
    let r = s.req(
        "POST",
        &format!("/v2/dst3/blobs/uploads/?mount={d}"),
        &[],
        None,
    );
    assert_eq!(r.status, 201);
    let unknown = Digest::sha256_of(b"never pushed");
    assert_eq!(
        s.req(
            "POST",
            &format!("/v2/dst4/blobs/uploads/?mount={unknown}"),
            &[],
            None
        )
        .status,
        202
    );
    // One copy on disk for all repositories.
    assert_eq!(s.blob_files().len(), 1);
}

#[test]
fn blob_delete() {
    let s = start(None);
    let d = s.push_blob("r", b"to delete");
    s.push_blob("other", b"to delete");
    assert_eq!(
        s.req("DELETE", &format!("/v2/r/blobs/{d}"), &[], None)
            .status,
        202
    );
    let r = s.get(&format!("/v2/r/blobs/{d}"));
    assert_eq!((r.status, r.error_code().as_str()), (404, "BLOB_UNKNOWN"));
    let r = s.req("DELETE", &format!("/v2/r/blobs/{d}"), &[], None);
    assert_eq!((r.status, r.error_code().as_str()), (404, "BLOB_UNKNOWN"));
    // Another repository's link is untouched.
    assert_eq!(s.get(&format!("/v2/other/blobs/{d}")).status, 200);
}

#[test]
fn manifests_by_tag_and_digest() {
    let s = start(None);
    let (d, m) = push_image(&s, "img", "v1", "a");
    for reference in ["v1".to_string(), d.to_string()] {
        let r = s.get(&format!("/v2/img/manifests/{reference}"));
        assert_eq!(r.status, 200);
        assert_eq!(r.body, m);
        assert_eq!(r.header("Content-Type"), Some(OCI_MANIFEST));
        assert_eq!(
            r.header("Docker-Content-Digest"),
            Some(d.to_string().as_str())
        );
        let r = s.req("HEAD", &format!("/v2/img/manifests/{reference}"), &[], None);
        assert_eq!(
            (r.status, r.header("Content-Length")),
            (200, Some(m.len().to_string().as_str()))
        );
    }
    // Docker schema 2 keeps its media type.
    let c = s.push_blob("img", b"{}");
    let l = s.push_blob("img", b"docker layer");
    let mut dm = image_manifest(&c, 2, &l, 12);
    dm["mediaType"] = DOCKER_MANIFEST.into();
    let dm = serde_json::to_vec(&dm).unwrap();
    let r = s.push_manifest("img", "docker", DOCKER_MANIFEST, &dm);
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(
        s.get("/v2/img/manifests/docker").header("Content-Type"),
        Some(DOCKER_MANIFEST)
    );
    // An index of both, pushed by digest.
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": d.to_string(), "size": m.len()},
            {"mediaType": DOCKER_MANIFEST, "digest": Digest::sha256_of(&dm).to_string(), "size": dm.len()},
        ]
    }))
    .unwrap();
    let id = Digest::sha256_of(&index);
    let r = s.push_manifest("img", &id.to_string(), OCI_INDEX, &index);
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(
        r.header("Location"),
        Some(format!("/v2/img/manifests/{id}").as_str())
    );
    assert_eq!(
        s.get(&format!("/v2/img/manifests/{id}"))
            .header("Content-Type"),
        Some(OCI_INDEX)
    );
    // An index naming a manifest the repository lacks.
    let bad = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": Digest::sha256_of(b"no").to_string(), "size": 2}]})).unwrap();
    let r = s.push_manifest("img", "bad", OCI_INDEX, &bad);
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "MANIFEST_BLOB_UNKNOWN")
    );
}

#[test]
fn manifest_errors() {
    let s = start(None);
    let (_, m) = push_image(&s, "img", "v1", "b");
    let r = s.get("/v2/img/manifests/nope");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (404, "MANIFEST_UNKNOWN")
    );
    let r = s.get(&format!("/v2/img/manifests/{}", Digest::sha256_of(b"x")));
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (404, "MANIFEST_UNKNOWN")
    );
    // Missing blobs.
    let missing = Digest::sha256_of(b"missing");
    let mm = serde_json::to_vec(&image_manifest(&missing, 7, &missing, 7)).unwrap();
    let r = s.push_manifest("img", "v2", OCI_MANIFEST, &mm);
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "MANIFEST_BLOB_UNKNOWN")
    );
    assert_eq!(s.get("/v2/img/manifests/v2").status, 404);
    // Digest mismatch on PUT by digest: nothing stored.
    let wrong = Digest::sha256_of(b"other");
    let r = s.push_manifest("img", &wrong.to_string(), OCI_MANIFEST, &m);
    assert_eq!((r.status, r.error_code().as_str()), (400, "DIGEST_INVALID"));
    assert_eq!(s.get(&format!("/v2/img/manifests/{wrong}")).status, 404);
    // Invalid JSON, invalid tag, mismatched media type, invalid names.
    let r = s.push_manifest("img", "v3", OCI_MANIFEST, b"{not json");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "MANIFEST_INVALID")
    );
    let r = s.push_manifest("img", "-bad-tag", OCI_MANIFEST, &m);
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "MANIFEST_INVALID")
    );
    let r = s.push_manifest("img", "v4", OCI_INDEX, &m);
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "MANIFEST_INVALID")
    );
    let r = s.push_manifest("Bad/Name", "v1", OCI_MANIFEST, &m);
    assert_eq!((r.status, r.error_code().as_str()), (400, "NAME_INVALID"));
    let r = s.get("/v2/a..b/tags/list");
    assert_eq!((r.status, r.error_code().as_str()), (400, "NAME_INVALID"));
    // Over 4 MiB.
    let mut big = m.clone();
    big.pop();
    big.extend_from_slice(
        format!(",\"annotations\":{{\"x\":\"{}\"}}}}", "a".repeat(4 << 20)).as_bytes(),
    );
    let r = s.push_manifest("img", "big", OCI_MANIFEST, &big);
    assert_eq!((r.status, r.error_code().as_str()), (413, "SIZE_INVALID"));
}

#[test]
fn manifest_delete() {
    let s = start(None);
    let (d, _) = push_image(&s, "img", "v1", "c");
    let r = s.push_manifest(
        "img",
        "v2",
        OCI_MANIFEST,
        &s.get("/v2/img/manifests/v1").body,
    );
    assert_eq!(r.status, 201);
    // Deleting a tag leaves the manifest and other tags.
    assert_eq!(
        s.req("DELETE", "/v2/img/manifests/v1", &[], None).status,
        202
    );
    assert_eq!(s.get("/v2/img/manifests/v1").status, 404);
    assert_eq!(s.get(&format!("/v2/img/manifests/{d}")).status, 200);
    // Deleting by digest takes the tags pointing at it too.
    assert_eq!(
        s.req("DELETE", &format!("/v2/img/manifests/{d}"), &[], None)
            .status,
        202
    );
    assert_eq!(s.get(&format!("/v2/img/manifests/{d}")).status, 404);
    assert_eq!(s.get("/v2/img/manifests/v2").status, 404);
    let r = s.req("DELETE", &format!("/v2/img/manifests/{d}"), &[], None);
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (404, "MANIFEST_UNKNOWN")
    );
}

#[test]
fn tags_and_catalog_pagination() {
    let s = start(None);
    let (_, m) = push_image(&s, "lib/app", "t1", "d");
    for t in ["t2", "t3", "t4", "t5"] {
        assert_eq!(s.push_manifest("lib/app", t, OCI_MANIFEST, &m).status, 201);
    }
    let r = s.get("/v2/lib/app/tags/list");
    assert_eq!(
        r.json(),
        json!({"name": "lib/app", "tags": ["t1", "t2", "t3", "t4", "t5"]})
    );
    assert!(r.header("Link").is_none());
    let r = s.get("/v2/lib/app/tags/list?n=2");
    assert_eq!(r.json()["tags"], json!(["t1", "t2"]));
    assert_eq!(
        r.header("Link"),
        Some("</v2/lib/app/tags/list?n=2&last=t2>; rel=\"next\"")
    );
    let r = s.get("/v2/lib/app/tags/list?n=2&last=t2");
    assert_eq!(r.json()["tags"], json!(["t3", "t4"]));
    let r = s.get("/v2/lib/app/tags/list?n=2&last=t4");
    assert_eq!(r.json()["tags"], json!(["t5"]));
    assert!(r.header("Link").is_none());
    assert_eq!(s.get("/v2/lib/app/tags/list?n=0").json()["tags"], json!([]));
    let r = s.get("/v2/unknown/tags/list");
    assert_eq!((r.status, r.error_code().as_str()), (404, "NAME_UNKNOWN"));
    push_image(&s, "lib/base", "x", "e");
    push_image(&s, "zed", "x", "f");
    assert_eq!(
        s.get("/v2/_catalog").json(),
        json!({"repositories": ["lib/app", "lib/base", "zed"]})
    );
    let r = s.get("/v2/_catalog?n=1&last=lib/app");
    assert_eq!(r.json(), json!({"repositories": ["lib/base"]}));
    assert_eq!(
        r.header("Link"),
        Some("</v2/_catalog?n=1&last=lib/base>; rel=\"next\"")
    );
}

#[test]
fn referrers_api() {
    let s = start(None);
    let (subject, m) = push_image(&s, "img", "v1", "g");
    let empty = s.push_blob("img", b"{}");
    let artifact = |at: &str, note: &str| {
        serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": at,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty.to_string(), "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty.to_string(), "size": 2}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject.to_string(), "size": m.len()},
            "annotations": {"note": note},
        }))
        .unwrap()
    };
    let sig = artifact("application/x-signature", "sig");
    let sbom = artifact("application/x-sbom", "sbom");
    for a in [&sig, &sbom] {
        let d = Digest::sha256_of(a);
        let r = s.push_manifest("img", &d.to_string(), OCI_MANIFEST, a);
        assert_eq!(r.status, 201);
        assert_eq!(r.header("OCI-Subject"), Some(subject.to_string().as_str()));
    }
    let r = s.get(&format!("/v2/img/referrers/{subject}"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some(OCI_INDEX));
    let list = r.json();
    let mut found: Vec<&str> = list["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["artifactType"].as_str().unwrap())
        .collect();
    found.sort();
    assert_eq!(found, ["application/x-sbom", "application/x-signature"]);
    assert_eq!(list["manifests"][0]["mediaType"], OCI_MANIFEST);
    let r = s.get(&format!(
        "/v2/img/referrers/{subject}?artifactType=application/x-sbom"
    ));
    assert_eq!(r.header("OCI-Filters-Applied"), Some("artifactType"));
    let list = r.json();
    assert_eq!(list["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(
        list["manifests"][0]["digest"],
        Digest::sha256_of(&sbom).to_string()
    );
    assert_eq!(list["manifests"][0]["annotations"]["note"], "sbom");
    // No referrers: an empty index, not 404.
    let r = s.get(&format!("/v2/img/referrers/{}", Digest::sha256_of(b"none")));
    assert_eq!((r.status, r.json()["manifests"].clone()), (200, json!([])));
    assert_eq!(s.get("/v2/img/referrers/sha256:zz").status, 400);
}

#[test]
fn sha512_blobs_and_manifests() {
    let s = start(None);
    let sha512 = |data: &[u8]| {
        let mut h = Algorithm::Sha512.hasher();
        h.update(data);
        h.finish()
    };
    let config = b"{\"512\":true}";
    let layer = b"sha512 layer";
    let (c, l) = (sha512(config), sha512(layer));
    for (d, data) in [(&c, &config[..]), (&l, &layer[..])] {
        let r = s.req(
            "POST",
            &format!("/v2/r512/blobs/uploads/?digest={d}"),
            &[],
            Some(data),
        );
        assert_eq!(r.status, 201, "{r:?}");
        assert_eq!(s.get(&format!("/v2/r512/blobs/{d}")).body, data);
    }
    let m = serde_json::to_vec(&image_manifest(&c, config.len(), &l, layer.len())).unwrap();
    let md = sha512(&m);
    let r = s.push_manifest("r512", &md.to_string(), OCI_MANIFEST, &m);
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(
        r.header("Docker-Content-Digest"),
        Some(md.to_string().as_str())
    );
    let r = s.get(&format!("/v2/r512/manifests/{md}"));
    assert_eq!((r.status, r.body), (200, m));
}

#[test]
fn client_disconnect_mid_upload_exposes_nothing() {
    let s = start(None);
    let addr = s.base.trim_start_matches("http://").to_string();
    let d = Digest::sha256_of(&vec![1u8; 100_000]);
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        conn,
        "POST /v2/r/blobs/uploads/?digest={d} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
    )
    .unwrap();
    conn.write_all(&[1u8; 40_000]).unwrap();
    drop(conn);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(s.get(&format!("/v2/r/blobs/{d}")).status, 404);
    assert!(s.blob_files().is_empty());
    // The server is fine afterwards.
    assert_eq!(s.get("/v2/").status, 200);
}

#[test]
fn basic_auth() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("htpasswd");
    std::fs::write(
        &file,
        format!("alice:{}\n", bcrypt::hash("s3cret", 4).unwrap()),
    )
    .unwrap();
    let mut s = start(Some(file));
    let r = s.get("/v2/");
    assert_eq!((r.status, r.error_code().as_str()), (401, "UNAUTHORIZED"));
    assert!(r
        .header("WWW-Authenticate")
        .unwrap()
        .starts_with("Basic realm="));
    let r = s.req("POST", "/v2/r/blobs/uploads/", &[], None);
    assert_eq!(r.status, 401);
    use base64::Engine as _;
    let enc = |s: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(s)
        )
    };
    s.auth = Some(enc("alice:wrong"));
    assert_eq!(s.get("/v2/").status, 401);
    s.auth = Some(enc("alice:s3cret"));
    assert_eq!(s.get("/v2/").status, 200);
    push_image(&s, "private", "v1", "h");
    assert_eq!(s.get("/v2/private/manifests/v1").status, 200);
}

fn basic(creds: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(creds)
    )
}

#[test]
fn bearer_tokens_with_scopes() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("htpasswd");
    std::fs::write(
        &users,
        format!("alice:{}\n", bcrypt::hash("pw", 4).unwrap()),
    )
    .unwrap();
    let access = dir.path().join("access.json");
    std::fs::write(
        &access,
        r#"{"rules": [{"user": "alice", "repo": "*", "actions": ["pull", "push", "delete"]},
                      {"user": "anonymous", "repo": "public/*", "actions": ["pull"]}]}"#,
    )
    .unwrap();
    let mut s = start_with(|c| {
        c.htpasswd = Some(users);
        c.access = Some(access);
    });
    let r = s.get("/v2/");
    assert_eq!(r.status, 401);
    let challenge = r.header("WWW-Authenticate").unwrap().to_string();
    assert!(
        challenge.starts_with(&format!(
            "Bearer realm=\"{}/token\",service=\"berth-registry\"",
            s.base
        )),
        "{challenge}"
    );
    let r = s.req("POST", "/v2/public/app/blobs/uploads/", &[], None);
    assert_eq!(r.status, 401);
    assert!(r
        .header("WWW-Authenticate")
        .unwrap()
        .contains("scope=\"repository:public/app:pull,push\""));
    // Log in at the token endpoint.
    let token = |s: &TestServer, creds: Option<&str>, scope: &str| -> Option<String> {
        let mut r = ureq::get(&format!(
            "{}/token?service=berth-registry&scope={scope}",
            s.base
        ));
        if let Some(c) = creds {
            r = r.set("Authorization", &basic(c));
        }
        let r = into_resp(r.call());
        (r.status == 200).then(|| format!("Bearer {}", r.json()["token"].as_str().unwrap()))
    };
    assert!(token(&s, Some("alice:nope"), "repository:public/app:pull").is_none());
    s.auth = token(&s, Some("alice:pw"), "repository:public/app:pull,push");
    assert_eq!(s.get("/v2/").status, 200);
    let (d, _) = push_image(&s, "public/app", "v1", "t");
    // The token is for public/app only.
    assert_eq!(
        s.req("POST", "/v2/private/blobs/uploads/", &[], None)
            .status,
        401
    );
    assert_eq!(
        s.req(
            "DELETE",
            &format!("/v2/public/app/manifests/{d}"),
            &[],
            None
        )
        .status,
        401
    );
    // Anonymous clients may pull public/* and nothing else.
    s.auth = token(&s, None, "repository:public/app:pull,push");
    assert_eq!(s.get("/v2/public/app/manifests/v1").status, 200);
    assert_eq!(
        s.req("POST", "/v2/public/app/blobs/uploads/", &[], None)
            .status,
        401
    );
    s.auth = token(&s, None, "repository:private:pull");
    assert_eq!(s.get("/v2/private/tags/list").status, 401);
    // The catalog needs access to every repository.
    s.auth = token(&s, None, "registry:catalog:*");
    assert_eq!(s.get("/v2/_catalog").status, 401);
    s.auth = token(&s, Some("alice:pw"), "registry:catalog:*");
    assert_eq!(
        s.get("/v2/_catalog").json()["repositories"],
        json!(["public/app"])
    );
    // No mounting from repositories the token cannot read, and no automatic mounts.
    s.auth = token(&s, Some("alice:pw"), "repository:other:pull,push");
    let cfg = Digest::sha256_of(b"{\"seed\":\"t\"}");
    assert_eq!(
        s.req(
            "POST",
            &format!("/v2/other/blobs/uploads/?mount={cfg}"),
            &[],
            None
        )
        .status,
        202
    );
    let r = s.req(
        "POST",
        &format!("/v2/other/blobs/uploads/?mount={cfg}&from=public/app"),
        &[],
        None,
    );
    assert_eq!(r.status, 401);
    s.auth = token(
        &s,
        Some("alice:pw"),
        "repository:other:pull,push repository:public/app:pull",
    );
    let r = s.req(
        "POST",
        &format!("/v2/other/blobs/uploads/?mount={cfg}&from=public/app"),
        &[],
        None,
    );
    assert_eq!(r.status, 201);
    // Forged tokens fail.
    s.auth = Some("Bearer e30.AAAA".into());
    assert_eq!(s.get("/v2/").status, 401);
}

#[test]
fn metrics_endpoint() {
    let s = start(None);
    s.get("/v2/");
    s.get("/v2/x/manifests/none");
    let text = String::from_utf8(s.get("/metrics").body).unwrap();
    assert!(
        text.contains("berth_registry_http_requests_total{method=\"GET\",code=\"200\"} 1"),
        "{text}"
    );
    assert!(text.contains("code=\"404\"} 1"), "{text}");
}

#[test]
fn garbage_collection() {
    use berth_registry::server::gc;
    use berth_registry::server::storage::Storage;
    let s = start(None);
    let (keep, _) = push_image(&s, "app", "keep", "k");
    let (drop, _) = push_image(&s, "app", "drop", "d");
    // A blob with no manifest, and an upload in progress.
    let loose = s.push_blob("app", b"loose blob");
    let loc = s
        .req("POST", "/v2/app/blobs/uploads/", &[], None)
        .header("Location")
        .unwrap()
        .to_string();
    assert_eq!(s.stream_patch(&loc, b"in progress").status, 202);
    assert_eq!(
        s.req("DELETE", "/v2/app/manifests/drop", &[], None).status,
        202
    );
    let st = Storage::open(&s.dir.path().join("store")).unwrap();
    let run = |dry_run, delete_untagged, grace| {
        gc::collect(
            &st,
            &gc::Options {
                dry_run,
                delete_untagged,
                grace,
            },
        )
        .unwrap()
    };
    let hour = std::time::Duration::from_secs(3600);
    let zero = std::time::Duration::ZERO;
    // Within the grace period nothing unreferenced goes.
    assert!(run(false, false, hour).blobs.is_empty());
    // Untagged manifests stay unless asked; the loose blob goes.
    let r = run(true, false, zero);
    assert!(r.manifests.is_empty());
    assert_eq!(r.blobs, vec![loose.clone()]);
    let r = run(false, true, zero);
    assert_eq!(r.manifests, vec![("app".to_string(), drop.clone())]);
    // The dropped image's manifest, config and layer, plus the loose blob.
    assert_eq!(r.blobs.len(), 4, "{:?}", r.blobs);
    assert!(r.blobs.contains(&drop) && r.blobs.contains(&loose));
    assert_eq!(s.get(&format!("/v2/app/manifests/{drop}")).status, 404);
    assert_eq!(s.get(&format!("/v2/app/blobs/{loose}")).status, 404);
    assert_eq!(s.get("/v2/app/manifests/keep").status, 200);
    assert_eq!(s.get(&format!("/v2/app/manifests/{keep}")).status, 200);
    // The upload in progress is untouched and can finish.
    let d = Digest::sha256_of(b"in progress");
    assert_eq!(
        s.req("PUT", &format!("{loc}?digest={d}"), &[], Some(b""))
            .status,
        201
    );
}
