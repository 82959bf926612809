//! `berth inspect`: any object by name or id, looked up as Docker does — a container,
//! then an image, a volume, a network — or only the kind `--type` names.

use std::io::Write;
use std::path::Path;

use serde_json::Value;

use crate::{containers, images};

const KINDS: [&str; 4] = ["container", "image", "volume", "network"];

pub fn any(
    root: &Path,
    names: &[String],
    format: Option<&str>,
    kind: Option<&str>,
    size: bool,
) -> i32 {
    if let Some(k) = kind.filter(|k| !KINDS.contains(k)) {
        eprintln!("Error: \"{k}\" is not a valid value for --type");
        return 1;
    }
    let mut found = Vec::new();
    let mut code = 0;
    let mut stores = Stores::new(root, size);
    for name in names {
        match stores.find(name, kind) {
            Some(v) => found.push(v),
            None => {
                eprintln!("Error: No such {}: {name}", kind.unwrap_or("object"));
                code = 1;
            }
        }
    }
    let mut out = std::io::stdout().lock();
    let printed = match format {
        None | Some("json") => serde_json::to_string_pretty(&found)
            .map_err(std::io::Error::from)
            .and_then(|j| writeln!(out, "{j}")),
        Some(t) => crate::format::template_rows(&mut out, t, &found),
    };
    if let Err(e) = printed {
        eprintln!("Error: {e}");
        return 1;
    }
    code
}

/// Each store opened on first use: most lookups end at the first kind.
struct Stores<'a> {
    root: &'a Path,
    size: bool,
    engine: Option<Option<berth_engine::Engine>>,
    images: Option<Option<berth_registry::client::store::LocalStore>>,
    net: Option<Option<berth_net::Net>>,
    image_sizes: Option<std::collections::HashMap<String, u64>>,
}

impl<'a> Stores<'a> {
    fn new(root: &'a Path, size: bool) -> Stores<'a> {
        Stores {
            root,
            size,
            engine: None,
            images: None,
            net: None,
            image_sizes: None,
        }
    }

    fn find(&mut self, name: &str, kind: Option<&str>) -> Option<Value> {
        let wants = |k: &str| kind.is_none_or(|x| x == k);
        let root = self.root;
        if wants("container") {
            if let Some(v) = self.container(name) {
                return Some(v);
            }
        }
        if wants("image") {
            let store = self.images.get_or_insert_with(|| images::open(root).ok());
            if let Some(v) = store
                .as_ref()
                .and_then(|s| images::inspect_one(s, name).ok())
            {
                return Some(v);
            }
        }
        if wants("volume") {
            let engine = self
                .engine
                .get_or_insert_with(|| berth_engine::Engine::open(root).ok());
            let v = engine
                .as_ref()
                .and_then(|e| berth_engine::volumes::inspect(&e.db, &e.root, name).ok());
            if v.is_some() {
                return v;
            }
        }
        if wants("network") {
            let net = self
                .net
                .get_or_insert_with(|| berth_net::Net::open(root).ok());
            if let Some(n) = net.as_ref().and_then(|n| n.get(name).ok()) {
                return serde_json::to_value(&n).ok();
            }
        }
        None
    }

    fn container(&mut self, name: &str) -> Option<Value> {
        let root = self.root;
        let engine = self
            .engine
            .get_or_insert_with(|| berth_engine::Engine::open(root).ok())
            .as_mut()?;
        let c = engine.find(name).ok()?;
        let sizes = self.size.then(|| {
            &*self
                .image_sizes
                .get_or_insert_with(|| containers::image_sizes(root))
        });
        Some(containers::inspect_value(engine, &c, sizes))
    }
}
