//! Loading: discovery, `.env`, per-file parse → merge keys → interpolation → include →
//! short-syntax normalisation → path resolution → `extends`, then the `-f` files merged
//! in order, profiles applied, `env_file`s read and the result typed and validated.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde_yaml::{Mapping, Value};

use crate::model::{FileModel, Project};
use crate::{interp, Error};

/// What the command line (and the environment) asked for.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `-f` files in order; empty means discovery from `workdir` upwards.
    pub files: Vec<PathBuf>,
    /// `-p`.
    pub project_name: Option<String>,
    /// `--project-directory`; defaults to the first file's directory.
    pub project_dir: Option<PathBuf>,
    /// `--env-file` (replaces `<project dir>/.env`).
    pub env_files: Vec<PathBuf>,
    /// `--profile`.
    pub profiles: Vec<String>,
    /// Where discovery starts (the current directory).
    pub workdir: PathBuf,
    /// The process environment; wins over `.env`.
    pub environ: IndexMap<String, String>,
}

const CANDIDATES: [&str; 4] = [
    "compose.yaml",
    "compose.yml",
    "docker-compose.yaml",
    "docker-compose.yml",
];

/// The files to load: `-f`, else `COMPOSE_FILE`, else the first candidate found in
/// `workdir` or a parent, plus its `compose.override.*` sibling.
pub fn discover(opts: &Options) -> Result<Vec<PathBuf>, Error> {
    if !opts.files.is_empty() {
        return Ok(opts.files.iter().map(|f| opts.workdir.join(f)).collect());
    }
    if let Some(list) = opts.environ.get("COMPOSE_FILE") {
        let sep = opts
            .environ
            .get("COMPOSE_PATH_SEPARATOR")
            .map_or(":", String::as_str);
        return Ok(list.split(sep).map(|f| opts.workdir.join(f)).collect());
    }
    let mut dir = Some(opts.workdir.as_path());
    while let Some(d) = dir {
        for c in CANDIDATES {
            let p = d.join(c);
            if p.is_file() {
                let mut out = vec![p];
                for o in ["compose.override.yaml", "compose.override.yml"] {
                    if d.join(o).is_file() && c.starts_with("compose") {
                        out.push(d.join(o));
                    }
                }
                for o in [
                    "docker-compose.override.yaml",
                    "docker-compose.override.yml",
                ] {
                    if d.join(o).is_file() && c.starts_with("docker-compose") {
                        out.push(d.join(o));
                    }
                }
                return Ok(out);
            }
        }
        dir = d.parent();
    }
    Err(Error::NotFound(opts.workdir.clone()))
}

/// Variables for interpolation: the `.env` file(s), overridden by the process environment.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    pub dotenv: IndexMap<String, String>,
    pub environ: IndexMap<String, String>,
}

impl Vars {
    pub fn get(&self, name: &str) -> Option<String> {
        self.environ
            .get(name)
            .or_else(|| self.dotenv.get(name))
            .cloned()
    }
}

/// Parses a `.env`/`env_file` file: `KEY=VALUE`, `export KEY=VALUE`, quotes, comments;
/// unquoted and double-quoted values are interpolated with what came before. A bare `KEY`
/// gives `None` (taken from the environment by the caller).
pub fn parse_env_file(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, Option<String>)>, String> {
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((k, v)) = line.split_once('=') else {
            out.push((line.to_string(), None));
            continue;
        };
        let key = k.trim().to_string();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(format!("line {}: invalid variable name {key:?}", n + 1));
        }
        let seen = |name: &str| {
            out.iter()
                .rev()
                .find(|(k, _)| k == name)
                .and_then(|(_, v)| v.clone())
                .or_else(|| lookup(name))
        };
        let v = v.trim_start();
        let value = if let Some(rest) = v.strip_prefix('\'') {
            rest.split_once('\'').map_or(rest, |(a, _)| a).to_string()
        } else if let Some(rest) = v.strip_prefix('"') {
            let body = unescape_double(rest);
            interp::expand(&body, &seen).map_err(|e| format!("line {}: {e}", n + 1))?
        } else {
            let body = match v.find(" #") {
                Some(i) => &v[..i],
                None => v,
            };
            interp::expand(body.trim_end(), &seen).map_err(|e| format!("line {}: {e}", n + 1))?
        };
        out.push((key, Some(value)));
    }
    Ok(out)
}

fn unescape_double(rest: &str) -> String {
    let mut s = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => break,
            '\\' => match chars.next() {
                Some('n') => s.push('\n'),
                Some('t') => s.push('\t'),
                Some(o) => s.push(o),
                None => {}
            },
            c => s.push(c),
        }
    }
    s
}

fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn read_dotenv(
    files: &[PathBuf],
    environ: &IndexMap<String, String>,
) -> Result<IndexMap<String, String>, Error> {
    let mut vars = IndexMap::new();
    for f in files {
        let text = read(f)?;
        let lookup = |n: &str| environ.get(n).cloned().or_else(|| vars.get(n).cloned());
        let parsed = parse_env_file(&text, &lookup).map_err(|msg| Error::Parse {
            file: f.display().to_string(),
            msg,
        })?;
        for (k, v) in parsed {
            if let Some(v) = v {
                vars.insert(k, v);
            }
        }
    }
    Ok(vars)
}

pub(crate) fn key_text(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        other => scalar(other).unwrap_or_else(|| format!("{other:?}")),
    }
}

/// A YAML scalar (string, number or bool) as the text compose reads it as.
pub fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

struct Ctx<'a> {
    vars: &'a Vars,
    /// Files being included, for cycle detection.
    including: Vec<PathBuf>,
}

fn at(file: &Path, key: impl Into<String>, msg: impl Into<String>) -> Error {
    Error::At {
        file: file.display().to_string(),
        key: key.into(),
        msg: msg.into(),
    }
}

/// Parse, apply `<<` merge keys and interpolate one file.
fn parse_file(file: &Path, vars: &Vars) -> Result<Mapping, Error> {
    let text = read(file)?;
    let mut v: Value = serde_yaml::from_str(&text).map_err(|e| Error::Parse {
        file: file.display().to_string(),
        msg: e.to_string(),
    })?;
    v.apply_merge().map_err(|e| Error::Parse {
        file: file.display().to_string(),
        msg: e.to_string(),
    })?;
    let mut m = match v {
        Value::Mapping(m) => m,
        Value::Null => Mapping::new(),
        _ => return Err(at(file, "(root)", "the top level must be a mapping")),
    };
    strip_extensions(&mut m);
    let mut path = Vec::new();
    let mut tree = Value::Mapping(m);
    interp::tree(&mut tree, &mut path, &|n| vars.get(n))
        .map_err(|(key, e)| at(file, key, e.to_string()))?;
    let Value::Mapping(m) = tree else {
        return Err(at(file, "(root)", "the top level must be a mapping"));
    };
    Ok(m)
}

/// `x-` keys are free for users (anchors' homes); they are dropped at the top level, in
/// services and in top-level resources.
fn strip_extensions(m: &mut Mapping) {
    let is_ext = |k: &Value| k.as_str().is_some_and(|s| s.starts_with("x-"));
    m.retain(|k, _| !is_ext(k));
    for section in ["services", "networks", "volumes", "secrets", "configs"] {
        if let Some(Value::Mapping(items)) = m.get_mut(section) {
            for (_, item) in items.iter_mut() {
                if let Value::Mapping(inner) = item {
                    inner.retain(|k, _| !is_ext(k));
                }
            }
        }
    }
}

/// Loads one file fully (include, normalisation, paths, extends) with relative paths
/// resolved against `base`.
fn load_file(file: &Path, base: &Path, ctx: &mut Ctx) -> Result<Mapping, Error> {
    let mut m = parse_file(file, ctx.vars)?;
    let includes = m.remove("include");
    normalize_file(&mut m, file, base)?;
    resolve_all_extends(&mut m, file, ctx)?;
    if let Some(inc) = includes {
        apply_includes(&mut m, inc, file, base, ctx)?;
    }
    check_types(&m, file)?;
    Ok(m)
}

/// Parse + normalise + paths only: the raw material `extends` reads from other files.
fn load_raw(file: &Path, ctx: &Ctx) -> Result<Mapping, Error> {
    let mut m = parse_file(file, ctx.vars)?;
    m.remove("include");
    let base = file.parent().unwrap_or(Path::new("/")).to_path_buf();
    normalize_file(&mut m, file, &base)?;
    Ok(m)
}

fn check_types(m: &Mapping, file: &Path) -> Result<(), Error> {
    let v = Value::Mapping(
        untag(Value::Mapping(m.clone()))
            .as_mapping()
            .cloned()
            .unwrap_or_default(),
    );
    let r: Result<FileModel, _> = serde_path_to_error::deserialize(v);
    r.map(|_| ()).map_err(|e| {
        let key = e.path().to_string();
        at(file, key, e.into_inner().to_string())
    })
}

fn normalize_file(m: &mut Mapping, file: &Path, base: &Path) -> Result<(), Error> {
    if let Some(services) = m.get_mut("services") {
        let Value::Mapping(services) = services else {
            return Err(at(file, "services", "must be a mapping"));
        };
        for (name, svc) in services.iter_mut() {
            let name = key_text(name);
            let path = format!("services.{name}");
            if svc.is_null() {
                *svc = Value::Mapping(Mapping::new());
            }
            let Value::Mapping(svc) = svc else {
                return Err(at(file, path, "must be a mapping"));
            };
            normalize_service(svc, base)
                .map_err(|(k, msg)| at(file, format!("{path}.{k}"), msg))?;
        }
    }
    for section in ["networks", "volumes", "secrets", "configs"] {
        if let Some(Value::Mapping(items)) = m.get_mut(section) {
            for (_, item) in items.iter_mut() {
                if item.is_null() {
                    *item = Value::Mapping(Mapping::new());
                }
                if let Value::Mapping(inner) = item {
                    // The old `external: {name: x}` form.
                    if let Some(Value::Mapping(ext)) = inner.get("external").cloned() {
                        if let Some(n) = ext.get("name") {
                            inner.insert("name".into(), n.clone());
                        }
                        inner.insert("external".into(), true.into());
                    }
                    to_map(inner, "labels")
                        .map_err(|(k, msg)| at(file, format!("{section}.{k}"), msg))?;
                    if let Some(Value::String(f)) = inner.get_mut("file") {
                        *f = absolute(base, f);
                    }
                }
            }
        }
    }
    Ok(())
}

type KeyErr = (String, String);

fn absolute(base: &Path, p: &str) -> String {
    if let Some(rest) = p.strip_prefix("~/") {
        if let Some(home) = std::env::var_os("HOME") {
            return Path::new(&home).join(rest).display().to_string();
        }
    }
    clean(&base.join(p)).display().to_string()
}

/// Lexical `.`/`..` removal, as compose-go prints paths.
fn clean(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

fn str_list(m: &mut Mapping, key: &str, shell: bool) -> Result<(), KeyErr> {
    let Some(v) = m.get_mut(key) else {
        return Ok(());
    };
    match v {
        Value::Null => {}
        Value::String(s) if shell => {
            let words = shell_words::split(s).map_err(|e| (key.to_string(), e.to_string()))?;
            *v = Value::Sequence(words.into_iter().map(Value::String).collect());
        }
        Value::String(_) | Value::Number(_) | Value::Bool(_) => {
            *v = Value::Sequence(vec![Value::String(scalar(v).unwrap_or_default())]);
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let s = scalar(item)
                    .ok_or_else(|| (format!("{key}[{i}]"), "must be a string".to_string()))?;
                *item = Value::String(s);
            }
        }
        _ => return Err((key.to_string(), "must be a string or a list".into())),
    }
    Ok(())
}

/// `[K=V, K]` or `{K: V}` → `{K: "V"}` (`K` alone maps to null).
fn to_map(m: &mut Mapping, key: &str) -> Result<(), KeyErr> {
    let Some(v) = m.get_mut(key) else {
        return Ok(());
    };
    let mut out = Mapping::new();
    match v {
        Value::Null => {}
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                let s = scalar(item)
                    .ok_or_else(|| (format!("{key}[{i}]"), "must be a string".to_string()))?;
                match s.split_once('=') {
                    Some((k, v)) => out.insert(k.into(), v.into()),
                    None => out.insert(s.into(), Value::Null),
                };
            }
        }
        Value::Mapping(items) => {
            for (k, item) in items.iter() {
                let val = match item {
                    Value::Null => Value::Null,
                    other => Value::String(scalar(other).ok_or_else(|| {
                        (
                            format!("{key}.{}", key_text(k)),
                            "must be a string".to_string(),
                        )
                    })?),
                };
                out.insert(Value::String(key_text(k)), val);
            }
        }
        _ => return Err((key.to_string(), "must be a list or a mapping".into())),
    }
    *v = Value::Mapping(out);
    Ok(())
}

fn scalar_to_string(m: &mut Mapping, key: &str) {
    if let Some(v) = m.get_mut(key) {
        if let (false, Some(s)) = (v.is_string(), scalar(v)) {
            *v = Value::String(s);
        }
    }
}

/// Normalises a service; `!reset`/`!override` tagged keys are normalised inside their
/// tag, which the merge reads later.
fn normalize_service(svc: &mut Mapping, base: &Path) -> Result<(), KeyErr> {
    let mut tags = Vec::new();
    for (k, v) in svc.iter_mut() {
        if let Value::Tagged(t) = v {
            let inner = std::mem::take(&mut t.value);
            tags.push((k.clone(), t.tag.clone()));
            *v = inner;
        }
    }
    normalize_untagged(svc, base)?;
    for (k, tag) in tags {
        let inner = svc.remove(&k).unwrap_or(Value::Null);
        let tagged = serde_yaml::value::TaggedValue { tag, value: inner };
        svc.insert(k, Value::Tagged(Box::new(tagged)));
    }
    Ok(())
}

/// `extra_hosts` as a mapping (`name: ip`) becomes the list form (`name:ip`).
fn hosts_to_list(m: &mut Mapping) {
    if let Some(Value::Mapping(h)) = m.get_mut("extra_hosts") {
        let list = h
            .iter()
            .map(|(k, v)| {
                Value::String(format!("{}:{}", key_text(k), scalar(v).unwrap_or_default()))
            })
            .collect();
        m.insert("extra_hosts".into(), Value::Sequence(list));
    }
}

/// `ulimits: {nofile: 1024}` is `{nofile: {soft: 1024, hard: 1024}}`.
fn ulimits_to_ranges(m: &mut Mapping) {
    if let Some(Value::Mapping(u)) = m.get_mut("ulimits") {
        for (_, v) in u.iter_mut() {
            if let Value::Number(n) = v {
                let mut m = Mapping::new();
                m.insert("soft".into(), Value::Number(n.clone()));
                m.insert("hard".into(), Value::Number(n.clone()));
                *v = Value::Mapping(m);
            }
        }
    }
}

fn normalize_untagged(svc: &mut Mapping, base: &Path) -> Result<(), KeyErr> {
    if let Some(b) = svc.get_mut("build") {
        if let Some(ctx) = b.as_str() {
            let mut m = Mapping::new();
            m.insert("context".into(), ctx.into());
            *b = Value::Mapping(m);
        }
        if let Value::Mapping(bm) = b {
            let ctx = bm
                .get("context")
                .and_then(Value::as_str)
                .unwrap_or(".")
                .to_string();
            if !ctx.contains("://") && !ctx.starts_with("git@") {
                bm.insert("context".into(), absolute(base, &ctx).into());
            }
            let pre = |(k, m): KeyErr| (format!("build.{k}"), m);
            to_map(bm, "args").map_err(pre)?;
            to_map(bm, "labels").map_err(pre)?;
            to_map(bm, "additional_contexts").map_err(pre)?;
            // Local named contexts are paths from the project directory (compose-go's rule).
            if let Some(Value::Mapping(ctxs)) = bm.get_mut("additional_contexts") {
                for (_, v) in ctxs.iter_mut() {
                    if let Value::String(path) = v {
                        if !path.contains("://") {
                            *path = absolute(base, path);
                        }
                    }
                }
            }
            str_list(bm, "cache_from", false).map_err(pre)?;
            ref_list(bm, "secrets").map_err(pre)?;
            scalar_to_string(bm, "shm_size");
            hosts_to_list(bm);
            ulimits_to_ranges(bm);
        }
    }
    str_list(svc, "command", true)?;
    str_list(svc, "entrypoint", true)?;
    to_map(svc, "environment")?;
    to_map(svc, "labels")?;
    to_map(svc, "sysctls")?;
    for k in [
        "expose",
        "dns",
        "dns_search",
        "tmpfs",
        "profiles",
        "cap_add",
        "cap_drop",
    ] {
        str_list(svc, k, false)?;
    }
    for k in [
        "cpus",
        "mem_limit",
        "memswap_limit",
        "shm_size",
        "stop_grace_period",
        "user",
    ] {
        scalar_to_string(svc, k);
    }
    hosts_to_list(svc);
    env_files(svc, base)?;
    label_files(svc, base)?;
    ports(svc)?;
    volumes(svc, base)?;
    if let Some(Value::Sequence(nets)) = svc.get("networks") {
        let m: Mapping = nets.iter().map(|n| (n.clone(), Value::Null)).collect();
        svc.insert("networks".into(), Value::Mapping(m));
    }
    depends_on(svc)?;
    links_depend(svc);
    healthcheck(svc)?;
    ref_list(svc, "secrets")?;
    ref_list(svc, "configs")?;
    ulimits_to_ranges(svc);
    if let Some(Value::Mapping(d)) = svc.get_mut("deploy") {
        if let Some(Value::Mapping(r)) = d.get_mut("resources") {
            for part in ["limits", "reservations"] {
                if let Some(Value::Mapping(l)) = r.get_mut(part) {
                    scalar_to_string(l, "cpus");
                    scalar_to_string(l, "memory");
                }
            }
        }
    }
    if let Some(Value::Mapping(e)) = svc.get_mut("extends") {
        if let Some(Value::String(f)) = e.get_mut("file") {
            *f = absolute(base, f);
        }
    }
    develop_paths(svc, base);
    Ok(())
}

/// `develop.watch[].path` is relative to the file that declares it, as compose-go prints.
fn develop_paths(svc: &mut Mapping, base: &Path) {
    let Some(Value::Mapping(d)) = svc.get_mut("develop") else {
        return;
    };
    let Some(Value::Sequence(rules)) = d.get_mut("watch") else {
        return;
    };
    for rule in rules {
        if let Some(Value::String(p)) = rule.get_mut("path") {
            *p = absolute(base, p);
        }
    }
}

fn ref_list(m: &mut Mapping, key: &str) -> Result<(), KeyErr> {
    if let Some(Value::Sequence(items)) = m.get_mut(key) {
        for item in items.iter_mut() {
            if let Some(s) = item.as_str() {
                let mut r = Mapping::new();
                r.insert("source".into(), s.into());
                *item = Value::Mapping(r);
            }
        }
    }
    Ok(())
}

/// `label_file: a.labels` or a list of them, made absolute like `env_file`'s paths.
fn label_files(svc: &mut Mapping, base: &Path) -> Result<(), KeyErr> {
    let Some(v) = svc.get_mut("label_file") else {
        return Ok(());
    };
    if v.is_string() {
        *v = Value::Sequence(vec![v.clone()]);
    }
    let Value::Sequence(items) = v else {
        return Err(("label_file".into(), "must be a string or a list".into()));
    };
    for (i, item) in items.iter_mut().enumerate() {
        let Value::String(p) = item else {
            return Err((format!("label_file[{i}]"), "must be a path".into()));
        };
        *p = absolute(base, p);
    }
    Ok(())
}

fn env_files(svc: &mut Mapping, base: &Path) -> Result<(), KeyErr> {
    let Some(v) = svc.get_mut("env_file") else {
        return Ok(());
    };
    if v.is_string() {
        *v = Value::Sequence(vec![v.clone()]);
    }
    let Value::Sequence(items) = v else {
        return Err(("env_file".into(), "must be a string or a list".into()));
    };
    for item in items.iter_mut() {
        if let Some(s) = item.as_str() {
            let mut m = Mapping::new();
            m.insert("path".into(), s.into());
            *item = Value::Mapping(m);
        }
        if let Value::Mapping(m) = item {
            if let Some(Value::String(p)) = m.get_mut("path") {
                *p = absolute(base, p);
            }
        }
    }
    Ok(())
}

/// Short port syntax `[[ip:]published:]target[/proto]`, ranges expanded.
fn ports(svc: &mut Mapping) -> Result<(), KeyErr> {
    let Some(Value::Sequence(items)) = svc.get_mut("ports") else {
        return Ok(());
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let key = format!("ports[{i}]");
        match item {
            Value::Mapping(m) => {
                let mut m = m.clone();
                scalar_to_string(&mut m, "published");
                if let Some(t) = m.get("target").and_then(Value::as_str) {
                    let n: u16 = t
                        .parse()
                        .map_err(|_| (format!("{key}.target"), format!("invalid port {t:?}")))?;
                    m.insert("target".into(), Value::Number(n.into()));
                }
                out.push(Value::Mapping(m));
            }
            other => {
                let s =
                    scalar(other).ok_or_else(|| (key.clone(), "must be a string".to_string()))?;
                out.extend(short_port(&s).map_err(|e| (key, e))?);
            }
        }
    }
    svc.insert("ports".into(), Value::Sequence(out));
    Ok(())
}

fn range(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("invalid port {s:?}");
    match s.split_once('-') {
        Some((a, b)) => Ok((a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?)),
        None => {
            let p = s.parse().map_err(|_| bad())?;
            Ok((p, p))
        }
    }
}

fn short_port(s: &str) -> Result<Vec<Value>, String> {
    let (spec, proto) = s.rsplit_once('/').unwrap_or((s, "tcp"));
    let (rest, target) = spec
        .rsplit_once(':')
        .map_or((None, spec), |(a, b)| (Some(a), b));
    let (ip, published) = match rest {
        None => (None, None),
        Some(r) => match r.rsplit_once(':') {
            Some((ip, p)) => (Some(ip.trim_matches(['[', ']'])), Some(p)),
            None => (None, Some(r)),
        },
    };
    let (t0, t1) = range(target)?;
    let pub_range = published.filter(|p| !p.is_empty()).map(range).transpose()?;
    let mut out = Vec::new();
    for (i, t) in (t0..=t1).enumerate() {
        let mut m = Mapping::new();
        m.insert("target".into(), Value::Number(t.into()));
        if let Some((p0, p1)) = pub_range {
            let p = if p0 == p1 && t0 != t1 {
                format!("{p0}")
            } else if p1 - p0 == t1 - t0 {
                (p0 + i as u16).to_string()
            } else {
                format!("{p0}-{p1}")
            };
            m.insert("published".into(), p.into());
        }
        if let Some(ip) = ip.filter(|i| !i.is_empty()) {
            m.insert("host_ip".into(), ip.into());
        }
        m.insert("protocol".into(), proto.into());
        m.insert("mode".into(), "ingress".into());
        out.push(Value::Mapping(m));
    }
    Ok(out)
}

/// Short volume syntax `[source:]target[:mode]` to the long one; relative bind sources
/// become absolute.
fn volumes(svc: &mut Mapping, base: &Path) -> Result<(), KeyErr> {
    let Some(Value::Sequence(items)) = svc.get_mut("volumes") else {
        return Ok(());
    };
    for (i, item) in items.iter_mut().enumerate() {
        if let Some(s) = item.as_str() {
            *item = Value::Mapping(short_volume(s).map_err(|e| (format!("volumes[{i}]"), e))?);
        }
        if let Value::Mapping(m) = item {
            let bind = m.get("type").and_then(Value::as_str) == Some("bind");
            if let (true, Some(Value::String(src))) = (bind, m.get_mut("source")) {
                *src = absolute(base, src);
            }
        }
    }
    Ok(())
}

fn short_volume(s: &str) -> Result<Mapping, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [t] => (None, *t, None),
        [s, t] => (Some(*s), *t, None),
        [s, t, m] => (Some(*s), *t, Some(*m)),
        _ => return Err(format!("invalid volume specification {s:?}")),
    };
    if target.is_empty() {
        return Err(format!("invalid volume specification {s:?}: no target"));
    }
    let mut m = Mapping::new();
    let kind = match source {
        None => "volume",
        Some(src) if src.starts_with(['/', '.', '~']) => "bind",
        Some(_) => "volume",
    };
    m.insert("type".into(), kind.into());
    if let Some(src) = source {
        m.insert("source".into(), src.into());
    }
    m.insert("target".into(), target.into());
    let opts: Vec<&str> = mode.map(|m| m.split(',').collect()).unwrap_or_default();
    if opts.contains(&"ro") {
        m.insert("read_only".into(), true.into());
    }
    if kind == "bind" {
        let mut b = Mapping::new();
        b.insert("create_host_path".into(), true.into());
        m.insert("bind".into(), Value::Mapping(b));
    }
    if opts.contains(&"nocopy") {
        let mut v = Mapping::new();
        v.insert("nocopy".into(), true.into());
        m.insert("volume".into(), Value::Mapping(v));
    }
    Ok(m)
}

fn depends_on(svc: &mut Mapping) -> Result<(), KeyErr> {
    let Some(v) = svc.get_mut("depends_on") else {
        return Ok(());
    };
    let mut out = Mapping::new();
    match v {
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                let s = item.as_str().ok_or_else(|| {
                    (
                        format!("depends_on[{i}]"),
                        "must be a service name".to_string(),
                    )
                })?;
                let mut d = Mapping::new();
                d.insert("condition".into(), "service_started".into());
                d.insert("required".into(), true.into());
                out.insert(s.into(), Value::Mapping(d));
            }
        }
        Value::Mapping(m) => {
            for (k, d) in m.iter() {
                let mut d = match d {
                    Value::Mapping(d) => d.clone(),
                    Value::Null => Mapping::new(),
                    _ => {
                        return Err((
                            format!("depends_on.{}", key_text(k)),
                            "must be a mapping".into(),
                        ))
                    }
                };
                if !d.contains_key("condition") {
                    d.insert("condition".into(), "service_started".into());
                }
                if !d.contains_key("required") {
                    d.insert("required".into(), true.into());
                }
                out.insert(k.clone(), Value::Mapping(d));
            }
        }
        Value::Null => {}
        _ => return Err(("depends_on".into(), "must be a list or a mapping".into())),
    }
    *v = Value::Mapping(out);
    Ok(())
}

/// A linked service (`links: [db, "db:database"]`) must run first, so it is a dependency
/// unless already one (compose's own normalisation does the same).
fn links_depend(svc: &mut Mapping) {
    let Some(Value::Sequence(links)) = svc.get("links") else {
        return;
    };
    let targets: Vec<String> = links
        .iter()
        .filter_map(Value::as_str)
        .map(|l| l.split(':').next().unwrap_or(l).to_string())
        .collect();
    let deps = svc
        .entry("depends_on".into())
        .or_insert_with(|| Value::Mapping(Mapping::new()));
    let Value::Mapping(deps) = deps else {
        return;
    };
    for t in targets {
        let key = Value::String(t);
        if !deps.contains_key(&key) {
            let mut d = Mapping::new();
            d.insert("condition".into(), "service_started".into());
            d.insert("restart".into(), true.into());
            d.insert("required".into(), true.into());
            deps.insert(key, Value::Mapping(d));
        }
    }
}

fn healthcheck(svc: &mut Mapping) -> Result<(), KeyErr> {
    let Some(Value::Mapping(h)) = svc.get_mut("healthcheck") else {
        return Ok(());
    };
    if let Some(s) = h.get("test").and_then(scalar) {
        let t = vec!["CMD-SHELL".into(), Value::String(s)];
        h.insert("test".into(), Value::Sequence(t));
    }
    for k in ["interval", "timeout", "start_period", "start_interval"] {
        scalar_to_string(h, k);
    }
    Ok(())
}

fn untag(v: Value) -> Value {
    match v {
        Value::Tagged(t) => untag(t.value),
        Value::Sequence(s) => Value::Sequence(s.into_iter().map(untag).collect()),
        Value::Mapping(m) => Value::Mapping(m.into_iter().map(|(k, v)| (k, untag(v))).collect()),
        v => v,
    }
}

fn tag_is(v: &Value, tag: &str) -> bool {
    matches!(v, Value::Tagged(t) if t.tag == tag)
}

/// compose-go's override rules: mappings merge key by key, `command`/`entrypoint`/
/// `healthcheck.test` are replaced, `volumes` merge by target, other lists append new
/// items; `!reset` removes a key and `!override` replaces it whole.
pub(crate) fn merge(base: Value, over: Value, key: &str) -> Value {
    if tag_is(&over, "override") {
        return untag(over);
    }
    match (base, untag_top(over)) {
        (Value::Mapping(mut b), Value::Mapping(o)) => {
            for (k, v) in o {
                if tag_is(&v, "reset") {
                    b.remove(&k);
                    continue;
                }
                let kt = key_text(&k);
                match b.get_mut(&k) {
                    Some(slot) => {
                        let old = std::mem::take(slot);
                        *slot = merge(old, v, &kt);
                    }
                    None => {
                        b.insert(k, untag(v));
                    }
                }
            }
            Value::Mapping(b)
        }
        (Value::Sequence(b), Value::Sequence(o))
            if !matches!(key, "command" | "entrypoint" | "test") =>
        {
            let o: Vec<Value> = o.into_iter().map(untag).collect();
            if key == "volumes" {
                let target = |v: &Value| v.get("target").cloned();
                let mut out: Vec<Value> = b
                    .into_iter()
                    .filter(|bv| {
                        !o.iter()
                            .any(|ov| target(ov).is_some() && target(ov) == target(bv))
                    })
                    .collect();
                out.extend(o);
                return Value::Sequence(out);
            }
            let mut out = b;
            for v in o {
                if !out.contains(&v) {
                    out.push(v);
                }
            }
            Value::Sequence(out)
        }
        (_, o) => untag(o),
    }
}

fn untag_top(v: Value) -> Value {
    match v {
        Value::Tagged(t) => t.value,
        v => v,
    }
}

fn resolve_all_extends(m: &mut Mapping, file: &Path, ctx: &mut Ctx) -> Result<(), Error> {
    let Some(Value::Mapping(services)) = m.get("services") else {
        return Ok(());
    };
    let raw = services.clone();
    let mut done = Mapping::new();
    for (name, _) in raw.iter() {
        let mut stack = Vec::new();
        let svc = resolve_service(&key_text(name), &raw, file, ctx, &mut stack)?;
        done.insert(name.clone(), svc);
    }
    m.insert("services".into(), Value::Mapping(done));
    Ok(())
}

fn resolve_service(
    name: &str,
    services: &Mapping,
    file: &Path,
    ctx: &mut Ctx,
    stack: &mut Vec<String>,
) -> Result<Value, Error> {
    let path = format!("services.{name}.extends");
    let Some(Value::Mapping(svc)) = services.get(name) else {
        return Err(at(file, path, format!("service {name:?} not found")));
    };
    let mut svc = svc.clone();
    let Some(ext) = svc.remove("extends") else {
        return Ok(Value::Mapping(svc));
    };
    let (other, base_name) = match &ext {
        Value::String(s) => (None, s.clone()),
        Value::Mapping(e) => (
            e.get("file").and_then(Value::as_str).map(PathBuf::from),
            e.get("service")
                .and_then(Value::as_str)
                .ok_or_else(|| at(file, &path, "extends needs a service"))?
                .to_string(),
        ),
        _ => return Err(at(file, path, "must be a service name or a mapping")),
    };
    let base_file = other.unwrap_or_else(|| file.to_path_buf());
    let id = format!("{}#{base_name}", base_file.display());
    if stack.contains(&id) {
        stack.push(id);
        return Err(at(
            file,
            path,
            format!("circular extends: {}", stack.join(" -> ")),
        ));
    }
    stack.push(id);
    let base = if base_file == file {
        resolve_service(&base_name, services, file, ctx, stack)?
    } else {
        let raw = load_raw(&base_file, ctx)?;
        let Some(Value::Mapping(other)) = raw.get("services") else {
            return Err(at(
                &base_file,
                "services",
                format!("no service {base_name:?} to extend"),
            ));
        };
        let other = other.clone();
        resolve_service(&base_name, &other, &base_file, ctx, stack)?
    };
    stack.pop();
    Ok(merge(base, Value::Mapping(svc), ""))
}

fn apply_includes(
    m: &mut Mapping,
    inc: Value,
    file: &Path,
    base: &Path,
    ctx: &mut Ctx,
) -> Result<(), Error> {
    let Value::Sequence(items) = inc else {
        return Err(at(file, "include", "must be a list"));
    };
    for (i, item) in items.into_iter().enumerate() {
        let key = format!("include[{i}]");
        let (paths, dir) = match item {
            Value::String(s) => (vec![s], None),
            Value::Mapping(im) => {
                let paths = match im.get("path") {
                    Some(Value::String(s)) => vec![s.clone()],
                    Some(Value::Sequence(s)) => s
                        .iter()
                        .filter_map(|p| p.as_str().map(String::from))
                        .collect(),
                    _ => return Err(at(file, key, "needs a path")),
                };
                let dir = im
                    .get("project_directory")
                    .and_then(Value::as_str)
                    .map(|d| absolute(base, d));
                (paths, dir)
            }
            _ => return Err(at(file, key, "must be a path or a mapping")),
        };
        let files: Vec<PathBuf> = paths
            .iter()
            .map(|p| PathBuf::from(absolute(base, p)))
            .collect();
        let Some(first) = files.first() else {
            continue;
        };
        let canon = first.canonicalize().unwrap_or_else(|_| first.clone());
        if ctx.including.contains(&canon) {
            return Err(at(
                file,
                key,
                format!(
                    "include cycle: {} is already being included",
                    first.display()
                ),
            ));
        }
        ctx.including.push(canon);
        let dir = dir
            .map(PathBuf::from)
            .unwrap_or_else(|| first.parent().unwrap_or(Path::new("/")).to_path_buf());
        let mut merged = Value::Mapping(Mapping::new());
        for f in &files {
            let loaded = load_file(f, &dir, ctx)?;
            merged = merge(merged, Value::Mapping(loaded), "");
        }
        ctx.including.pop();
        let Value::Mapping(merged) = merged else {
            continue;
        };
        for section in ["services", "networks", "volumes", "secrets", "configs"] {
            let Some(Value::Mapping(theirs)) = merged.get(section) else {
                continue;
            };
            let mine = m
                .entry(section.into())
                .or_insert_with(|| Value::Mapping(Mapping::new()));
            let Value::Mapping(mine) = mine else {
                return Err(at(file, section, "must be a mapping"));
            };
            for (k, v) in theirs {
                if mine.contains_key(k) && section == "services" {
                    return Err(at(
                        file,
                        format!("{section}.{}", key_text(k)),
                        format!("conflicts with the one imported from {}", first.display()),
                    ));
                }
                mine.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }
    Ok(())
}

fn project_name(opts: &Options, vars: &Vars, m: &Mapping, dir: &Path) -> String {
    let raw = opts
        .project_name
        .clone()
        .or_else(|| vars.environ.get("COMPOSE_PROJECT_NAME").cloned())
        .or_else(|| m.get("name").and_then(Value::as_str).map(String::from))
        .or_else(|| vars.dotenv.get("COMPOSE_PROJECT_NAME").cloned())
        .unwrap_or_else(|| {
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
    raw.to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect()
}

/// Loads, merges and validates the project the options point at.
/// Looks up the variables `environment:` secrets and configs name, so the CLI can write
/// their content without a second pass over `.env`.
fn secret_env(p: &Project, vars: &Vars) -> IndexMap<String, String> {
    p.secrets
        .values()
        .chain(p.configs.values())
        .filter_map(|o| o.environment.as_ref())
        .filter_map(|v| Some((v.clone(), vars.get(v)?)))
        .collect()
}

pub fn load(opts: &Options) -> Result<Project, Error> {
    let files = discover(opts)?;
    let first = files
        .first()
        .ok_or_else(|| Error::NotFound(opts.workdir.clone()))?;
    let dir = match &opts.project_dir {
        Some(d) => opts.workdir.join(d),
        None => first.parent().unwrap_or(Path::new("/")).to_path_buf(),
    };
    let env_files: Vec<PathBuf> = if opts.env_files.is_empty() {
        let default = dir.join(".env");
        if default.is_file() {
            vec![default]
        } else {
            vec![]
        }
    } else {
        opts.env_files
            .iter()
            .map(|f| opts.workdir.join(f))
            .collect()
    };
    let vars = Vars {
        dotenv: read_dotenv(&env_files, &opts.environ)?,
        environ: opts.environ.clone(),
    };
    let mut ctx = Ctx {
        vars: &vars,
        including: Vec::new(),
    };
    let mut merged = Value::Mapping(Mapping::new());
    for f in &files {
        ctx.including = vec![f.canonicalize().unwrap_or_else(|_| f.clone())];
        let m = load_file(f, &dir, &mut ctx)?;
        merged = merge(merged, Value::Mapping(m), "");
    }
    let Value::Mapping(mut m) = untag(merged) else {
        return Err(at(first, "(root)", "the top level must be a mapping"));
    };
    let name = project_name(opts, &vars, &m, &dir);
    if name.is_empty() {
        return Err(Error::Invalid(
            "project name must not be empty: use -p or `name:`".into(),
        ));
    }
    m.insert("name".into(), name.clone().into());
    m.remove("version");
    apply_profiles(&mut m, opts, &vars);
    finish_services(&mut m, &vars, first)?;
    let file = files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let r: Result<Project, _> = serde_path_to_error::deserialize(Value::Mapping(m));
    let mut project: Project = r.map_err(|e| Error::At {
        file: file.clone(),
        key: e.path().to_string(),
        msg: e.into_inner().to_string(),
    })?;
    project.secret_env = secret_env(&project, &vars);
    crate::validate(&project).map_err(|(key, msg)| Error::At { file, key, msg })?;
    Ok(project)
}

fn apply_profiles(m: &mut Mapping, opts: &Options, vars: &Vars) {
    let mut active: BTreeSet<String> = opts.profiles.iter().cloned().collect();
    if let Some(p) = vars.get("COMPOSE_PROFILES") {
        active.extend(p.split(',').filter(|s| !s.is_empty()).map(String::from));
    }
    let Some(Value::Mapping(services)) = m.get_mut("services") else {
        return;
    };
    services.retain(|_, svc| {
        let profiles: Vec<&str> = svc
            .get("profiles")
            .and_then(Value::as_sequence)
            .map(|s| s.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        profiles.is_empty() || active.contains("*") || profiles.iter().any(|p| active.contains(*p))
    });
    let enabled: BTreeSet<String> = services.keys().map(key_text).collect();
    // A dependency on a service left out by the profiles is dropped, as compose-go does
    // for optional ones; required ones are reported by validation as undefined.
    for (_, svc) in services.iter_mut() {
        if let Some(Value::Mapping(deps)) = svc.get_mut("depends_on") {
            deps.retain(|k, d| {
                enabled.contains(&key_text(k)) || d.get("required") != Some(&Value::Bool(false))
            });
        }
    }
}

/// Reads `env_file`s under `environment`, fills bare `KEY`s from the variables and adds
/// the implicit `default` network.
fn finish_services(m: &mut Mapping, vars: &Vars, first: &Path) -> Result<(), Error> {
    let mut need_default = false;
    if let Some(Value::Mapping(services)) = m.get_mut("services") {
        for (name, svc) in services.iter_mut() {
            let name = key_text(name);
            let Value::Mapping(svc) = svc else { continue };
            let mut env = Mapping::new();
            if let Some(Value::Sequence(files)) = svc.get("env_file") {
                for (i, f) in files.iter().enumerate() {
                    let path = f.get("path").and_then(Value::as_str).unwrap_or_default();
                    let required = f.get("required") != Some(&Value::Bool(false));
                    let text = match std::fs::read_to_string(path) {
                        Ok(t) => t,
                        Err(_) if !required => continue,
                        Err(e) => {
                            return Err(at(
                                first,
                                format!("services.{name}.env_file[{i}]"),
                                format!("{path}: {e}"),
                            ))
                        }
                    };
                    let parsed = parse_env_file(&text, &|n| vars.get(n))
                        .map_err(|e| at(Path::new(path), "", e))?;
                    for (k, v) in parsed {
                        let v = v.or_else(|| vars.get(&k));
                        env.insert(k.into(), v.map_or(Value::Null, Value::String));
                    }
                }
            }
            if let Some(Value::Mapping(own)) = svc.get("environment") {
                for (k, v) in own {
                    let v = match v {
                        Value::Null => vars.get(&key_text(k)).map_or(Value::Null, Value::String),
                        v => v.clone(),
                    };
                    env.insert(k.clone(), v);
                }
            }
            if !env.is_empty() {
                svc.insert("environment".into(), Value::Mapping(env));
            }
            let has_nets = svc
                .get("networks")
                .is_some_and(|n| n.as_mapping().is_some_and(|n| !n.is_empty()));
            if !has_nets && !svc.contains_key("network_mode") {
                let mut n = Mapping::new();
                n.insert("default".into(), Value::Null);
                svc.insert("networks".into(), Value::Mapping(n));
                need_default = true;
            }
        }
    }
    let nets = m
        .entry("networks".into())
        .or_insert_with(|| Value::Mapping(Mapping::new()));
    if let Value::Mapping(nets) = nets {
        if need_default && !nets.contains_key("default") {
            nets.insert("default".into(), Value::Mapping(Mapping::new()));
        }
        for (_, n) in nets.iter_mut() {
            if n.is_null() {
                *n = Value::Mapping(Mapping::new());
            }
        }
    }
    if let Some(Value::Mapping(vols)) = m.get_mut("volumes") {
        for (_, v) in vols.iter_mut() {
            if v.is_null() {
                *v = Value::Mapping(Mapping::new());
            }
        }
    }
    Ok(())
}
