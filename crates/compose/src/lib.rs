//! berth-compose: the compose model. [`load`] finds the files (`compose.yaml`,
//! `compose.yml`, `docker-compose.yaml|yml`, or `-f`), reads `.env`/`--env-file`,
//! interpolates the YAML tree ([`interp`]), applies merge keys, `include`, `extends`,
//! the `-f` override rules and profiles, normalises every short syntax to the long one
//! and types the result ([`Project`]). Errors name the file, the key path and the problem.
//!
//! The CLI (`berth compose`, in the `berth` crate) turns a [`Project`] into networks,
//! volumes and containers; what it needs from here besides the model is the dependency
//! order ([`start_order`]), the labels a project's containers carry and the per-service
//! [`config_hash`] that makes `up` idempotent.

pub mod interp;
mod load;
mod model;

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

pub use load::{discover, load, parse_env_file, scalar, Options, Vars};
pub use model::*;
/// The YAML value type of the keys the model keeps as they are written.
pub use serde_yaml::Value as YamlValue;

pub const LABEL_PROJECT: &str = "com.docker.compose.project";
pub const LABEL_SERVICE: &str = "com.docker.compose.service";
pub const LABEL_NUMBER: &str = "com.docker.compose.container-number";
pub const LABEL_HASH: &str = "com.docker.compose.config-hash";
pub const LABEL_ONEOFF: &str = "com.docker.compose.oneoff";
pub const LABEL_NETWORK: &str = "com.docker.compose.network";
pub const LABEL_VOLUME: &str = "com.docker.compose.volume";
pub const LABEL_WORKDIR: &str = "com.docker.compose.project.working_dir";
pub const LABEL_FILES: &str = "com.docker.compose.project.config_files";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: {msg}")]
    Parse { file: String, msg: String },
    #[error("{file}: {key}: {msg}")]
    At {
        file: String,
        key: String,
        msg: String,
    },
    #[error("no configuration file provided: not found in {} or its parents (looked for compose.yaml, compose.yml, docker-compose.yaml, docker-compose.yml)", .0.display())]
    NotFound(std::path::PathBuf),
    #[error("{0}")]
    Invalid(String),
}

/// `selected` (empty: every service) plus, transitively, the services that declare
/// `depends_on: {<one of them>: {restart: true}}`: restarting a dependency restarts them.
pub fn with_restart_dependents(p: &Project, selected: &[String]) -> Vec<String> {
    if selected.is_empty() {
        return Vec::new();
    }
    let mut out: Vec<String> = selected.to_vec();
    loop {
        let more: Vec<String> = p
            .services
            .iter()
            .filter(|(name, _)| !out.contains(name))
            .filter(|(_, s)| {
                s.depends_on
                    .iter()
                    .any(|(d, dep)| dep.restart && out.contains(d))
            })
            .map(|(name, _)| name.clone())
            .collect();
        if more.is_empty() {
            return out;
        }
        out.extend(more);
    }
}

/// Checks what typing cannot: every service has an image or a build, dependencies exist
/// and do not form a cycle. Returns the key path and the problem.
pub fn validate(p: &Project) -> Result<(), (String, String)> {
    for (name, s) in &p.services {
        if s.image.is_none() && s.build.is_none() {
            return Err((
                format!("services.{name}"),
                "has neither an image nor a build context specified".into(),
            ));
        }
        for dep in s.depends_on.keys() {
            if !p.services.contains_key(dep) {
                return Err((
                    format!("services.{name}.depends_on"),
                    format!("depends on undefined service {dep:?}"),
                ));
            }
        }
        for net in s.networks.keys() {
            if !p.networks.contains_key(net) {
                return Err((
                    format!("services.{name}.networks"),
                    format!("refers to undefined network {net:?}"),
                ));
            }
        }
    }
    find_cycle(p).map_or(Ok(()), |c| {
        Err((
            format!("services.{}.depends_on", c[0]),
            format!("dependency cycle detected: {}", c.join(" -> ")),
        ))
    })
}

fn find_cycle(p: &Project) -> Option<Vec<String>> {
    fn visit(
        p: &Project,
        n: &str,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == n) {
            let mut c = stack[i..].to_vec();
            c.push(n.to_string());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.to_string());
        for dep in p
            .services
            .get(n)
            .map(|s| s.depends_on.keys())
            .into_iter()
            .flatten()
        {
            if let Some(c) = visit(p, dep, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    p.services
        .keys()
        .find_map(|n| visit(p, n, &mut Vec::new(), &mut done))
}

/// `selected` (all services when empty) and, unless `no_deps`, what they depend on, in
/// an order where every service comes after its dependencies.
pub fn start_order(p: &Project, selected: &[String], no_deps: bool) -> Vec<String> {
    let mut want: BTreeSet<String> = if selected.is_empty() {
        p.services.keys().cloned().collect()
    } else {
        selected.iter().cloned().collect()
    };
    if !no_deps {
        let mut todo: Vec<String> = want.iter().cloned().collect();
        while let Some(n) = todo.pop() {
            for d in p
                .services
                .get(&n)
                .map(|s| s.depends_on.keys())
                .into_iter()
                .flatten()
            {
                if want.insert(d.clone()) {
                    todo.push(d.clone());
                }
            }
        }
    }
    let mut out: Vec<String> = Vec::new();
    while out.len() < want.len() {
        let before = out.len();
        for (name, s) in &p.services {
            let ready = s
                .depends_on
                .keys()
                .all(|d| out.contains(d) || !want.contains(d));
            if want.contains(name) && !out.contains(name) && ready {
                out.push(name.clone());
            }
        }
        if out.len() == before {
            // A cycle (validation rejects them); keep the rest in file order.
            out.extend(
                want.iter()
                    .filter(|n| !out.contains(n))
                    .cloned()
                    .collect::<Vec<_>>(),
            );
        }
    }
    out.retain(|n| p.services.contains_key(n));
    out
}

/// The hash `up` stores in [`LABEL_HASH`]: the service's normalised definition, minus
/// what does not change a container (replica count, profiles, dependencies).
pub fn config_hash(s: &Service) -> String {
    let mut s = s.clone();
    s.scale = None;
    if let Some(d) = s.deploy.as_mut() {
        d.replicas = None;
    }
    s.profiles.clear();
    s.depends_on.clear();
    let json = serde_json::to_vec(&s).unwrap_or_default();
    let digest = Sha256::digest(&json);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The name a project's network or volume gets on the host.
pub fn resource_name(project: &str, key: &str, explicit: Option<&str>) -> String {
    explicit.map_or_else(|| format!("{project}_{key}"), String::from)
}

/// Labels every container of a service carries.
pub fn service_labels(p: &Project, service: &str, number: u32) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    if let Some(s) = p.services.get(service) {
        l.extend(s.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        l.insert(LABEL_HASH.into(), config_hash(s));
    }
    l.insert(LABEL_PROJECT.into(), p.name.clone());
    l.insert(LABEL_SERVICE.into(), service.into());
    l.insert(LABEL_NUMBER.into(), number.to_string());
    l.insert(LABEL_ONEOFF.into(), "False".into());
    l
}

/// The normalised model as `docker compose config` prints it: literal `$` written as
/// `$$`, so the output loads back to the same model.
pub fn to_yaml(p: &Project) -> Result<String, Error> {
    serde_yaml::to_string(&escaped(p)?).map_err(|e| Error::Invalid(e.to_string()))
}

/// The model as a YAML tree with `$` escaped (what `config` prints, in any format).
pub fn escaped(p: &Project) -> Result<serde_yaml::Value, Error> {
    fn walk(v: &mut serde_yaml::Value) {
        match v {
            serde_yaml::Value::String(s) if s.contains('$') => *s = s.replace('$', "$$"),
            serde_yaml::Value::Sequence(items) => items.iter_mut().for_each(walk),
            serde_yaml::Value::Mapping(m) => m.iter_mut().for_each(|(_, v)| walk(v)),
            _ => {}
        }
    }
    let mut v = serde_yaml::to_value(p).map_err(|e| Error::Invalid(e.to_string()))?;
    walk(&mut v);
    Ok(v)
}
