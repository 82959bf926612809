//! The loader on small projects in temporary directories (no containers).

use std::path::Path;

use berth_compose::{config_hash, load, start_order, Error, Options};

fn write(dir: &Path, name: &str, text: &str) {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn opts(dir: &Path) -> Options {
    Options {
        workdir: dir.to_path_buf(),
        ..Default::default()
    }
}

#[test]
fn discovery_prefers_compose_yaml_and_searches_parents() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("My App");
    write(&root, "docker-compose.yml", "services: {old: {image: a}}\n");
    write(&root, "compose.yaml", "services: {new: {image: a}}\n");
    write(
        &root,
        "compose.override.yaml",
        "services: {new: {image: b}}\n",
    );
    std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
    let p = load(&opts(&root.join("sub/deeper"))).unwrap();
    assert_eq!(
        p.name, "myapp",
        "directory name, lower-cased, spaces dropped"
    );
    assert_eq!(p.services.keys().collect::<Vec<_>>(), ["new"]);
    assert_eq!(p.services["new"].image.as_deref(), Some("b"));
    let mut o = opts(&root);
    o.project_name = Some("Explicit".into());
    assert_eq!(load(&o).unwrap().name, "explicit");
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(load(&opts(empty.path())), Err(Error::NotFound(_))));
}

#[test]
fn extends_include_and_their_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(
        d,
        "compose.yaml",
        "name: x\ninclude: [lib/inc.yaml]\nservices:\n  base: {image: a, environment: {A: '1'}, cap_add: [NET_ADMIN]}\n  child: {extends: base, environment: {B: '2'}}\n  far: {extends: {file: lib/other.yaml, service: o}}\n",
    );
    write(
        d,
        "lib/inc.yaml",
        "services:\n  inc: {build: ., volumes: ['./data:/data']}\n",
    );
    write(
        d,
        "lib/other.yaml",
        "services:\n  o: {image: o, env_file: [o.env]}\n",
    );
    write(d, "lib/o.env", "FROM_FILE=yes\n");
    let p = load(&opts(d)).unwrap();
    let child = &p.services["child"];
    assert_eq!(child.image.as_deref(), Some("a"));
    assert_eq!(child.environment["A"].as_deref(), Some("1"));
    assert_eq!(child.environment["B"].as_deref(), Some("2"));
    assert_eq!(child.cap_add, ["NET_ADMIN"]);
    assert_eq!(
        p.services["far"].environment["FROM_FILE"].as_deref(),
        Some("yes")
    );
    let inc = &p.services["inc"];
    let lib = d.join("lib");
    assert_eq!(inc.build.as_ref().unwrap().context, lib.to_str().unwrap());
    assert_eq!(inc.volumes[0].source.as_deref(), lib.join("data").to_str());

    write(
        d,
        "compose.yaml",
        "services:\n  a: {extends: b}\n  b: {extends: a}\n",
    );
    let e = load(&opts(d)).unwrap_err().to_string();
    assert!(
        e.contains("compose.yaml") && e.contains("circular extends"),
        "{e}"
    );
    write(
        d,
        "compose.yaml",
        "include: [lib/inc.yaml]\nservices:\n  inc: {image: a}\n",
    );
    let e = load(&opts(d)).unwrap_err().to_string();
    assert!(e.contains("services.inc") && e.contains("conflicts"), "{e}");
}

#[test]
fn profiles_order_and_hash() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(
        d,
        "compose.yaml",
        "services:\n  web: {image: a, depends_on: {db: {condition: service_healthy}, dbg: {condition: service_started, required: false}}}\n  db: {image: b, environment: [X=1]}\n  dbg: {image: c, profiles: [debug]}\nnetworks:\n  ext: {external: {name: real}}\n",
    );
    let p = load(&opts(d)).unwrap();
    assert_eq!(p.services.keys().collect::<Vec<_>>(), ["web", "db"]);
    assert_eq!(p.networks["ext"].name.as_deref(), Some("real"));
    assert!(p.networks["ext"].external);
    assert_eq!(start_order(&p, &["web".into()], false), ["db", "web"]);
    assert_eq!(start_order(&p, &["web".into()], true), ["web"]);
    let mut o = opts(d);
    o.profiles = vec!["debug".into()];
    let with = load(&o).unwrap();
    assert_eq!(with.services.len(), 3);
    assert_eq!(
        start_order(&with, &[], false).last().map(String::as_str),
        Some("web")
    );
    let h = config_hash(&p.services["db"]);
    assert_eq!(
        h,
        config_hash(&with.services["db"]),
        "profiles do not change db"
    );
    let mut changed = p.services["db"].clone();
    changed.environment.insert("X".into(), Some("2".into()));
    assert_ne!(h, config_hash(&changed));
}
