//! The public API end to end: blob in, layer unpacked, image recorded,
//! image removed, unused layers and blobs cleaned up.

use std::io::Write;

use berth_image::layer::{ApplyOptions, LayerStore};
use berth_image::{ContentStore, Digest, ImageRecord, LayerRecord, MetaStore, Platform, Reference};

fn layer_tar(name: &str, data: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(1);
    b.append_data(&mut h, name, data).unwrap();
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn pull_like_flow() {
    let root = tempfile::tempdir().unwrap();
    let content = ContentStore::open(root.path()).unwrap();
    let layers = LayerStore::open(root.path().join("layers")).unwrap();
    let mut meta = MetaStore::open(root.path().join("berth.db")).unwrap();
    let opts = ApplyOptions {
        same_owner: false,
        ..ApplyOptions::default()
    };

    // Two layers, stored compressed, exactly as a registry would serve them.
    let tars = [
        layer_tar("etc/os-release", b"ID=test\n"),
        layer_tar("bin/app", b"app"),
    ];
    let mut stack = Vec::new();
    let mut parent: Option<Digest> = None;
    for tar in &tars {
        let blob = gzip(tar);
        let blob_digest = Digest::sha256_of(&blob);
        let mut w = content.writer(&blob_digest.to_string()).unwrap();
        w.write_all(&blob).unwrap();
        w.commit(blob.len() as u64, &blob_digest).unwrap();

        let diff_id = Digest::sha256_of(tar);
        let applied = layers
            .apply(
                parent.as_ref(),
                content.open_blob(&blob_digest).unwrap(),
                Some("application/vnd.oci.image.layer.v1.tar+gzip"),
                Some(&diff_id),
                &opts,
            )
            .unwrap();
        parent = Some(applied.chain_id.clone());
        stack.push((applied.diff_id, applied.content_size));
    }

    let image = ImageRecord {
        manifest_digest: Digest::sha256_of(b"manifest"),
        config_digest: Digest::sha256_of(b"config"),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        platform: Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        },
        layers: LayerRecord::stack(&stack),
        created_unix: 0,
    };
    assert_eq!(
        image.layers.last().unwrap().chain_id,
        parent.clone().unwrap()
    );
    meta.add_image(&image).unwrap();
    let r = Reference::parse("localhost:5000/test/app").unwrap();
    meta.tag(&r, &image.manifest_digest).unwrap();
    assert_eq!(r.familiar(), "localhost:5000/test/app:latest");
    assert_eq!(
        meta.resolve(&r).unwrap(),
        Some(image.manifest_digest.clone())
    );

    for l in meta.remove_image(&image.manifest_digest).unwrap() {
        assert!(layers.remove(&l.chain_id).unwrap());
    }
    for l in &image.layers {
        assert!(!layers.contains(&l.chain_id));
    }
    assert!(meta.resolve(&r).unwrap().is_none());
}
