//! The executor: runs the stages a target needs, step by step, with the
//! cache in front of every step that makes a layer.
//!
//! Each stage starts from a `State`: an image config (Docker's JSON, as
//! it will be written), the layers under it and a cache key. Metadata
//! instructions (ENV, LABEL, CMD...) only edit the config and add an
//! `empty_layer` history entry. RUN, COPY and ADD compute a key from the
//! parent key and everything that decides their result (the expanded
//! command, environment, user, working directory and network for RUN; the
//! sources' content and metadata, destination and flags for COPY/ADD) and
//! look it up; on a hit the recorded layer is reused without mounting
//! anything, on a miss the step runs on an overlay of the current layers
//! and its upper directory becomes the new layer.
//!
//! ARG values enter keys only where they are used (expanded into words or
//! passed to RUN's environment), so changing one misses the cache from its
//! first use on, as in BuildKit.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use berth_image::{Digest, Snapshotter};
use berth_registry::client::manifest::Manifest;
use berth_registry::client::LocalStore;
use serde_json::{json, Map, Value};

use crate::ast::{Dockerfile, Instruction, Kind};
use crate::cache::{Cache, KeyHasher};
use crate::cache_io::StepRecord;
use crate::copy::{self, CopyOptions, SourceRoot};
use crate::dockerignore::{pick_ignore_file, read_patterns, PatternMatcher};
use crate::export::{self, Image, Layer};
use crate::fsutil;
use crate::history;
use crate::mounts::{self, MountKind, RunMount};
use crate::relink;
use crate::runner::{self, Network, RunSpec};
use crate::shell::{Lexer, VarSource};
use crate::stages::{context_key, Base, BuildOptions, Named, Stage, StageGraph, Step};

/// The PATH an image gets when its base sets none (BuildKit's default).
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Build failures. Those about a Dockerfile line display as
/// `Dockerfile:LINE: ...`.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Dockerfile(#[from] crate::Error),
    #[error("{file}:{line}: {message}")]
    Step {
        file: String,
        line: usize,
        message: String,
    },
    #[error("{0}")]
    Other(String),
}

fn other<E: std::fmt::Display>(context: impl Into<String>) -> impl FnOnce(E) -> BuildError {
    let context = context.into();
    move |e| BuildError::Other(format!("{context}: {e}"))
}

/// A RUN whose program the kernel cannot execute, in a stage for another architecture,
/// most likely lacks an emulator: say so, and what to install.
fn emulator_hint(msg: String, config: &Value) -> String {
    let arch = config["architecture"].as_str().unwrap_or("");
    let host = berth_registry::client::Platform::host().architecture;
    if !msg.ends_with("exec format error") || arch.is_empty() || arch == host {
        return msg;
    }
    format!(
        "{msg} (the stage is for {arch}, this host is {host}: RUN needs an emulator, \
         such as qemu-user-static with its binfmt_misc handlers registered)"
    )
}

/// Fetches an image that the store lacks (`FROM`, `COPY --from`).
/// Fetches a base image into the store, for a platform (`os/arch[/variant]`) if given.
pub type Puller<'a> = dyn FnMut(&mut LocalStore, &str, Option<&str>) -> Result<(), String> + 'a;

/// What to build.
pub struct BuildRequest {
    /// The Dockerfile's text.
    pub dockerfile: String,
    /// Its name in messages (`Dockerfile`).
    pub file_name: String,
    /// Its path, to find `<Dockerfile>.dockerignore`; `None` when read from stdin.
    pub dockerfile_path: Option<PathBuf>,
    /// The build context directory.
    pub context: PathBuf,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub no_cache: bool,
    /// `--pull`: fetch base images even when the store has them.
    pub pull: bool,
    /// `--no-cache-filter`: stages (names or indexes) whose steps never hit.
    pub no_cache_filter: Vec<String>,
    /// Layer compression (none by default: the local store keeps layers
    /// uncompressed, and `berth push` compresses).
    pub compression: berth_image::Compression,
    pub network: Network,
    /// `--label`s for the final image.
    pub labels: BTreeMap<String, String>,
    /// Timestamps in layers, config and history (SOURCE_DATE_EPOCH).
    pub epoch: i64,
    /// `--secret` contents by id, for `RUN --mount=type=secret`.
    pub secrets: BTreeMap<String, Vec<u8>>,
    /// `--ssh` agent sockets by id, for `RUN --mount=type=ssh`.
    pub ssh: BTreeMap<String, PathBuf>,
    /// `--platform`: the platform built for (`os/arch[/variant]`); the host's if `None`.
    pub platform: Option<String>,
    /// `--build-context NAME=...` by [`crate::stages::context_key`] of the name.
    pub named_contexts: BTreeMap<String, NamedContext>,
    /// What every RUN's container gets beside the Dockerfile's own settings
    /// (`--add-host`, `--shm-size`, `--ulimit`).
    pub run_options: runner::RunOptions,
}

/// What a `--build-context NAME=VALUE` gives NAME.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedContext {
    /// A local directory, read as the build context is (its own `.dockerignore` applies).
    Dir(PathBuf),
    /// `docker-image://REF`: that image instead of the stage or image NAME.
    Image(String),
}

/// The built image, with every layer already in the store.
pub struct Built {
    pub image: Image,
    pub config: Value,
    /// Every step that has a cache key, in build order (for `--cache-to`).
    pub steps: Vec<StepRecord>,
    /// The target stage and the stages it is built `FROM`, transitively
    /// (the steps `--cache-to mode=min` exports).
    pub final_stages: Vec<usize>,
}

/// An image config under construction and what it stands on.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct State {
    config: Value,
    layers: Vec<Layer>,
    key: String,
    cmd_set: bool,
}

impl State {
    fn cfg(&mut self) -> &mut Map<String, Value> {
        if !self.config["config"].is_object() {
            self.config["config"] = json!({});
        }
        self.config["config"]
            .as_object_mut()
            .expect("config was just made an object")
    }

    fn env(&self) -> Vec<(String, String)> {
        self.config["config"]["Env"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(|e| match e.split_once('=') {
                        Some((k, v)) => (k.to_string(), v.to_string()),
                        None => (e.to_string(), String::new()),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn set_env(&mut self, key: &str, value: &str) {
        let entry = format!("{key}={value}");
        let env = self.cfg().entry("Env").or_insert_with(|| json!([]));
        if !env.is_array() {
            *env = json!([]);
        }
        let list = env.as_array_mut().expect("Env is an array");
        match list
            .iter()
            .position(|e| e.as_str().and_then(|s| s.split_once('=')).map(|x| x.0) == Some(key))
        {
            Some(i) => list[i] = json!(entry),
            None => list.push(json!(entry)),
        }
    }

    fn str_field(&self, name: &str) -> String {
        self.config["config"][name]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    fn history(&mut self, created_by: String, empty: bool, epoch: &str) {
        let mut h = json!({
            "created": epoch,
            "created_by": created_by,
            "comment": "buildkit.dockerfile.v0",
        });
        if empty {
            h["empty_layer"] = json!(true);
        }
        match self.config["history"].as_array_mut() {
            Some(a) => a.push(h),
            None => self.config["history"] = json!([h]),
        }
    }

    fn chain_ids(&self) -> Vec<Digest> {
        self.layers.iter().map(|l| l.chain_id.clone()).collect()
    }

    fn top(&self) -> Option<&Digest> {
        self.layers.last().map(|l| &l.chain_id)
    }
}

/// Variables for expansion: the image's ENV first, then ARGs.
struct StepVars<'a> {
    env: &'a [(String, String)],
    args: &'a BTreeMap<String, String>,
}

impl VarSource for StepVars<'_> {
    fn lookup(&self, name: &str) -> Option<String> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .or_else(|| self.args.get(name).cloned())
    }
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A unique name for a build's scratch objects.
fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs a build.
pub struct Executor<'a> {
    store: &'a mut LocalStore,
    root: PathBuf,
    req: &'a BuildRequest,
    out: &'a mut dyn Write,
    cache: Cache,
    lexer: Lexer,
    ignore: PatternMatcher,
    snapshots: Snapshotter,
    created: String,
    step_no: usize,
    /// Name and index of the stage being built, for `--no-cache-filter`.
    stage: (Option<String>, usize),
    /// The keyed steps run or found so far.
    steps: Vec<StepRecord>,
    /// Image states read before stages fork (see [`Executor::run_level`]).
    images: HashMap<String, State>,
    /// Local named contexts with their `.dockerignore` matchers, by context key.
    named_dirs: HashMap<String, (PathBuf, PatternMatcher)>,
}

/// A step's scratch space: snapshot, mount and work directory, all undone on drop.
struct Workspace<'s> {
    snapshots: &'s Snapshotter,
    key: String,
    dir: PathBuf,
    mounted: Vec<PathBuf>,
}

impl<'s> Workspace<'s> {
    fn new(snapshots: &'s Snapshotter, root: &Path) -> Result<Workspace<'s>, BuildError> {
        let key = unique("build");
        let dir = root.join("build/work").join(&key);
        std::fs::create_dir_all(&dir).map_err(other(format!("create {}", dir.display())))?;
        Ok(Workspace {
            snapshots,
            key,
            dir,
            mounted: Vec::new(),
        })
    }

    fn mount(&mut self, mounts: &[berth_image::Mount], target: &Path) -> Result<(), BuildError> {
        std::fs::create_dir_all(target).map_err(other(format!("create {}", target.display())))?;
        for m in mounts {
            m.mount_at(target).map_err(other(format!(
                "mount {} on {}",
                m.fs_type,
                target.display()
            )))?;
            self.mounted.push(target.to_path_buf());
        }
        Ok(())
    }

    fn unmount_all(&mut self) -> Result<(), BuildError> {
        while let Some(t) = self.mounted.pop() {
            nix::mount::umount2(&t, nix::mount::MntFlags::MNT_DETACH)
                .map_err(other(format!("unmount {}", t.display())))?;
        }
        Ok(())
    }
}

impl Drop for Workspace<'_> {
    fn drop(&mut self) {
        let _ = self.unmount_all();
        let _ = self.snapshots.remove(&self.key);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl<'a> Executor<'a> {
    /// An executor on `store` (rooted at `root`) writing progress to `out`.
    pub fn new(
        store: &'a mut LocalStore,
        root: &Path,
        req: &'a BuildRequest,
        out: &'a mut dyn Write,
    ) -> Result<Executor<'a>, BuildError> {
        let cache = Cache::open(&root.join("berth.db")).map_err(other("open the build cache"))?;
        let ignore = load_ignore(req)?;
        let mut named_dirs = HashMap::new();
        for (name, ctx) in &req.named_contexts {
            if let NamedContext::Dir(dir) = ctx {
                let patterns = match std::fs::read_to_string(dir.join(".dockerignore")) {
                    Ok(text) => read_patterns(&text),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                    Err(e) => {
                        return Err(other(format!("read {}/.dockerignore", dir.display()))(e))
                    }
                };
                let m = PatternMatcher::new(&patterns)
                    .map_err(other(format!("parse {}/.dockerignore", dir.display())))?;
                named_dirs.insert(name.clone(), (dir.clone(), m));
            }
        }
        // Layers are diffs of the overlay upper dir; copy mode would turn
        // every step into a full copy without whiteouts.
        let snapshots = Snapshotter::new(
            root.join("build/snapshots"),
            store.layers.clone(),
            berth_image::SnapshotMode::Overlay,
        )
        .map_err(other("open the build snapshotter"))?;
        let created = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(req.epoch.max(0) as u64),
        )
        .to_string();
        Ok(Executor {
            store,
            root: root.to_path_buf(),
            req,
            out,
            cache,
            lexer: Lexer::new('\\'),
            ignore,
            snapshots,
            created,
            step_no: 0,
            stage: (None, 0),
            steps: Vec::new(),
            images: HashMap::new(),
            named_dirs,
        })
    }

    /// Parses, plans and runs the build; returns the image (not yet tagged).
    pub fn build(&mut self, pull: &mut Puller) -> Result<Built, BuildError> {
        let df = crate::parse(&self.req.dockerfile, &self.req.file_name)?;
        self.lexer = Lexer::new(df.escape);
        let target_platform = match &self.req.platform {
            Some(p) => Some(crate::stages::Platform::parse(p).ok_or_else(|| {
                BuildError::Other(format!("invalid --platform {p:?} (os/arch[/variant])"))
            })?),
            None => None,
        };
        let named_contexts = self
            .req
            .named_contexts
            .iter()
            .map(|(k, v)| {
                let n = match v {
                    NamedContext::Dir(_) => Named::Local,
                    NamedContext::Image(r) => Named::Image(r.clone()),
                };
                (k.clone(), n)
            })
            .collect();
        let opts = BuildOptions {
            build_args: self.req.build_args.clone(),
            target_platform,
            named_contexts,
            ..Default::default()
        };
        let graph = StageGraph::new(&df, &opts, &self.req.file_name)?;
        let plan = graph
            .plan(self.req.target.as_deref())
            .map_err(|k| BuildError::Other(format!("failed to solve: {k}")))?;
        // Images are fetched before any RUN: the runtime must clone from a
        // process without the registry client's threads.
        let mut wanted: HashMap<&str, Option<&str>> = HashMap::new();
        for &s in &plan.order {
            let stage = &graph.stages[s];
            let target = self.req.platform.as_deref();
            let base = match &stage.base {
                Base::Image(name) => Some((name, stage.platform.as_deref().or(target))),
                _ => None,
            };
            for (name, platform) in base
                .into_iter()
                .chain(stage.images.iter().map(|n| (n, target)))
            {
                // The store keeps one image per name, so one build cannot use a name at
                // two platforms.
                match wanted.insert(name, platform) {
                    Some(other) if !same_platform(other, platform) => {
                        return Err(BuildError::Step {
                            file: self.req.file_name.clone(),
                            line: stage.line,
                            message: format!(
                                "{name} is used for platforms {} and {} in one build",
                                other.unwrap_or("(host)"),
                                platform.unwrap_or("(host)")
                            ),
                        })
                    }
                    _ => self.ensure_image(name, stage.line, platform, pull)?,
                }
            }
        }
        let mut done: Vec<Option<State>> = vec![None; graph.stages.len()];
        if plan.levels.iter().any(|l| l.len() > 1) {
            // Forked stages must not use the store's database connection.
            for &s in &plan.order {
                let stage = &graph.stages[s];
                let names = match &stage.base {
                    Base::Image(name) => std::slice::from_ref(name),
                    _ => &[],
                };
                for name in names.iter().chain(&stage.images) {
                    if !self.images.contains_key(name) {
                        let state = self.image_state(name)?;
                        self.images.insert(name.clone(), state);
                    }
                }
            }
            for level in &plan.levels {
                self.run_level(&df, &graph, level, &mut done)?;
            }
        } else {
            for &s in &plan.order {
                let state = self.run_stage(&df, &graph, &graph.stages[s], &done)?;
                done[s] = Some(state);
            }
        }
        let mut state = done[plan.target]
            .take()
            .ok_or_else(|| BuildError::Other("target stage was not built".into()))?;
        for (k, v) in &self.req.labels {
            let labels = state.cfg().entry("Labels").or_insert_with(|| json!({}));
            if let Some(l) = labels.as_object_mut() {
                l.insert(k.clone(), json!(v));
            }
        }
        let config = self.finish_config(state.config, &state.layers);
        let image = export::assemble(&config, &state.layers).map_err(other("assemble image"))?;
        let mut final_stages = vec![plan.target];
        while let Base::Stage(i) = graph.stages[final_stages[final_stages.len() - 1]].base {
            if final_stages.contains(&i) {
                break;
            }
            final_stages.push(i);
        }
        Ok(Built {
            image,
            config,
            steps: std::mem::take(&mut self.steps),
            final_stages,
        })
    }

    fn ensure_image(
        &mut self,
        name: &str,
        line: usize,
        platform: Option<&str>,
        pull: &mut Puller,
    ) -> Result<(), BuildError> {
        if !self.req.pull && self.stored_for(name, platform) {
            return Ok(());
        }
        self.step_no += 1;
        let _ = writeln!(
            self.out,
            "#{} [internal] load metadata for {name}",
            self.step_no
        );
        pull(self.store, name, platform).map_err(|e| BuildError::Step {
            file: self.req.file_name.clone(),
            line,
            message: format!("failed to resolve source metadata for {name}: {e}"),
        })?;
        let _ = writeln!(self.out, "#{} DONE", self.step_no);
        Ok(())
    }

    /// Whether the store has `name`, and for `platform` when one is asked for.
    fn stored_for(&self, name: &str, platform: Option<&str>) -> bool {
        let Ok(rec) = self.store.find(name) else {
            return false;
        };
        let Some(wanted) = platform else {
            return true;
        };
        let Ok(wanted) = berth_registry::client::Platform::parse(wanted) else {
            return false;
        };
        let Ok(config) = self.store.config_json(&rec) else {
            return false;
        };
        let have: berth_registry::client::manifest::PlatformSpec =
            serde_json::from_value(config).unwrap_or_default();
        wanted.matches(&have)
    }

    fn finish_config(&self, mut config: Value, layers: &[Layer]) -> Value {
        let mut out = Map::new();
        for field in ["architecture", "os", "variant", "author"] {
            if let Some(v) = config.get(field).filter(|v| !v.is_null()) {
                out.insert(field.into(), v.clone());
            }
        }
        out.insert("created".into(), json!(self.created));
        out.insert("config".into(), config["config"].take());
        out.insert(
            "rootfs".into(),
            json!({"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>()}),
        );
        out.insert("history".into(), config["history"].take());
        Value::Object(out)
    }

    fn base_state(
        &mut self,
        graph: &StageGraph,
        stage: &Stage,
        done: &[Option<State>],
    ) -> Result<State, BuildError> {
        match &stage.base {
            Base::Stage(i) => {
                let mut s = done[*i]
                    .clone()
                    .ok_or_else(|| BuildError::Other(format!("stage {i} was not built")))?;
                s.cmd_set = false;
                Ok(s)
            }
            Base::Scratch => {
                let p = match stage.platform.as_deref().or(self.req.platform.as_deref()) {
                    Some(p) => berth_registry::client::Platform::parse(p)
                        .map_err(|e| BuildError::Other(e.to_string()))?,
                    None => berth_registry::client::Platform::host(),
                };
                Ok(State {
                    config: json!({
                        "architecture": p.architecture, "os": p.os,
                        // BuildKit's empty image: PATH and a working directory of /.
                        "config": {"Env": [DEFAULT_PATH], "WorkingDir": "/"},
                        "history": [],
                    }),
                    layers: Vec::new(),
                    key: "scratch".into(),
                    cmd_set: false,
                })
            }
            Base::Image(name) => self.image_state(name),
            Base::Context(name) => {
                // BuildKit's local source as a base: an empty image whose one layer
                // holds the directory's files, made as `COPY --from=NAME . /` would.
                let scratch = Stage {
                    base: Base::Scratch,
                    ..stage.clone()
                };
                let mut state = self.base_state(graph, &scratch, done)?;
                let df = crate::parse(&format!("FROM scratch\nCOPY --from={name} . /\n"), name)?;
                let step = Step {
                    instruction: df.instructions[1].clone(),
                    vars: Default::default(),
                    declared_args: Vec::new(),
                };
                self.copy(graph, &mut state, &step, &[], done)?;
                Ok(state)
            }
        }
    }

    fn image_state(&self, name: &str) -> Result<State, BuildError> {
        if let Some(s) = self.images.get(name) {
            return Ok(s.clone());
        }
        let rec = self
            .store
            .find(name)
            .map_err(other(format!("find image {name}")))?;
        let mut config = self
            .store
            .config_json(&rec)
            .map_err(other(format!("read config of {name}")))?;
        let descs = match self
            .store
            .manifest(&rec.manifest_digest)
            .map_err(other(format!("read manifest of {name}")))?
        {
            Manifest::Image { layers, .. } => layers,
            Manifest::Index { .. } => {
                return Err(BuildError::Other(format!(
                    "{name} is an index, not an image"
                )))
            }
        };
        if descs.len() != rec.layers.len() {
            return Err(BuildError::Other(format!(
                "{name}: manifest and store disagree on the layers"
            )));
        }
        let layers: Vec<Layer> = rec
            .layers
            .iter()
            .zip(descs)
            .map(|(l, d)| Layer {
                diff_id: l.diff_id.clone(),
                chain_id: l.chain_id.clone(),
                digest: d.digest,
                size: d.size,
                media_type: d.media_type,
                content_size: l.size,
            })
            .collect();
        let mut state = State {
            key: format!(
                "image:{}",
                layers
                    .last()
                    .map_or("none".to_string(), |l| l.chain_id.to_string())
            ),
            config: json!({}),
            layers,
            cmd_set: false,
        };
        if !config["config"].is_object() {
            config["config"] = json!({});
        }
        state.config = config;
        if !state.env().iter().any(|(k, _)| k == "PATH") {
            state.set_env("PATH", DEFAULT_PATH.trim_start_matches("PATH="));
        }
        Ok(state)
    }

    /// Runs one level of the plan: its stages depend only on earlier
    /// levels, so with several each runs in a forked child process (a RUN
    /// redirects the process's stdio and the runtime clones from it, which
    /// rules out threads). A child reopens the cache database, reads images
    /// only from [`Executor::images`], writes its stage's state to a file and
    /// exits; its step numbers follow the previous stage's.
    fn run_level(
        &mut self,
        df: &Dockerfile,
        graph: &StageGraph,
        level: &[usize],
        done: &mut [Option<State>],
    ) -> Result<(), BuildError> {
        if let [s] = level {
            done[*s] = Some(self.run_stage(df, graph, &graph.stages[*s], done)?);
            return Ok(());
        }
        let _ = self.out.flush();
        let work = self.root.join("build/work");
        std::fs::create_dir_all(&work).map_err(other(format!("create {}", work.display())))?;
        let mut children = Vec::new();
        let mut fork_error = None;
        let mut next_step = self.step_no;
        for &s in level {
            let result = work.join(unique("stage") + ".json");
            // SAFETY: the build is single-threaded here (pulls and cache
            // imports are over); the child leaves with _exit.
            let pid = unsafe { libc::fork() };
            if pid < 0 {
                fork_error = Some(std::io::Error::last_os_error());
                break;
            }
            if pid == 0 {
                self.step_no = next_step;
                let code = self.stage_in_child(df, graph, s, done, &result);
                let _ = self.out.flush();
                // SAFETY: ends the child without running the parent's destructors.
                unsafe { libc::_exit(code) };
            }
            children.push((s, pid, result));
            next_step += graph.stages[s].steps.len() + 1;
        }
        self.step_no = next_step;
        let mut first_error = fork_error.map(|e| BuildError::Other(format!("fork a stage: {e}")));
        for (s, pid, result) in children {
            let status = runner::wait_child(pid);
            let outcome = std::fs::read(&result).ok().and_then(|b| {
                serde_json::from_slice::<Result<(State, Vec<StepRecord>), String>>(&b).ok()
            });
            let _ = std::fs::remove_file(&result);
            match outcome {
                Some(Ok((state, steps))) => {
                    done[s] = Some(state);
                    self.steps.extend(steps);
                }
                Some(Err(message)) => {
                    first_error.get_or_insert(BuildError::Other(message));
                }
                None => {
                    first_error.get_or_insert(BuildError::Other(format!(
                        "stage {s} ended without a result (wait status {status:?})"
                    )));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The child's side of [`Executor::run_level`]; returns its exit code.
    fn stage_in_child(
        &mut self,
        df: &Dockerfile,
        graph: &StageGraph,
        s: usize,
        done: &[Option<State>],
        result: &Path,
    ) -> i32 {
        let reopened = LocalStore::open(&self.root)
            .map_err(|e| format!("open the image store: {e}"))
            .map(|store| {
                // SQLite connections must not cross a fork: the child uses its own
                // for the layers and blobs it records. The inherited one belongs to
                // the parent; closing it here could disturb the parent's locks.
                std::mem::forget(std::mem::replace(self.store, store));
            });
        let outcome = reopened
            .and_then(|()| {
                Cache::open(&self.root.join("berth.db"))
                    .map_err(|e| format!("open the build cache: {e}"))
            })
            .and_then(|cache| {
                std::mem::forget(std::mem::replace(&mut self.cache, cache));
                self.steps.clear();
                self.run_stage(df, graph, &graph.stages[s], done)
                    .map(|state| (state, std::mem::take(&mut self.steps)))
                    .map_err(|e| e.to_string())
            });
        let code = i32::from(outcome.is_err());
        match serde_json::to_vec(&outcome) {
            Ok(bytes) if std::fs::write(result, &bytes).is_ok() => code,
            _ => 2,
        }
    }

    fn run_stage(
        &mut self,
        df: &Dockerfile,
        graph: &StageGraph,
        stage: &Stage,
        done: &[Option<State>],
    ) -> Result<State, BuildError> {
        self.stage = (stage.name.clone(), stage.index);
        let mut state = self.base_state(graph, stage, done)?;
        let total = stage.steps.len() + 1;
        let label = stage
            .name
            .clone()
            .unwrap_or_else(|| format!("stage-{}", stage.index));
        self.step_no += 1;
        let _ = writeln!(
            self.out,
            "#{} [{label} 1/{total}] FROM {}",
            self.step_no, stage.base_name
        );
        let _ = writeln!(self.out, "#{} DONE 0.0s", self.step_no);
        let _ = df;
        // ONBUILD fires in a stage built FROM an image or FROM an earlier stage that
        // declared it, as in BuildKit.
        if matches!(stage.base, Base::Image(_) | Base::Stage(_)) {
            self.run_triggers(graph, &mut state, stage, done)?;
        }
        for (i, step) in stage.steps.iter().enumerate() {
            self.step_no += 1;
            let title = format!(
                "#{} [{label} {}/{total}] {}",
                self.step_no,
                i + 2,
                one_line(&step.instruction.original)
            );
            let _ = writeln!(self.out, "{title}");
            let started = Instant::now();
            let before = (state.key.clone(), state.layers.len());
            let cached = self
                .run_step(graph, &mut state, step, done)
                .map_err(|e| match e {
                    BuildError::Other(message) => BuildError::Step {
                        file: self.req.file_name.clone(),
                        line: step.instruction.start_line,
                        message: format!("{}: {message}", one_line(&step.instruction.original)),
                    },
                    e => e,
                })?;
            self.note_step(stage.index, before, &state);
            if cached {
                let _ = writeln!(self.out, "#{} CACHED", self.step_no);
            } else {
                let _ = writeln!(
                    self.out,
                    "#{} DONE {:.1}s",
                    self.step_no,
                    started.elapsed().as_secs_f64()
                );
            }
        }
        Ok(state)
    }

    /// Remembers a step that moved the cache key (RUN, COPY, ADD, WORKDIR),
    /// with the layer it added if any.
    fn note_step(&mut self, stage: usize, before: (String, usize), state: &State) {
        if state.key == before.0 {
            return;
        }
        let layer = (state.layers.len() > before.1)
            .then(|| state.layers.last().cloned())
            .flatten();
        self.steps.push(StepRecord {
            stage,
            key: state.key.clone(),
            layer,
        });
    }

    /// Runs the base image's ONBUILD triggers, then drops them from the
    /// config (they fire once, in the image built directly on the base).
    fn run_triggers(
        &mut self,
        graph: &StageGraph,
        state: &mut State,
        stage: &Stage,
        done: &[Option<State>],
    ) -> Result<(), BuildError> {
        let triggers: Vec<String> = state.config["config"]["OnBuild"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        state.cfg().remove("OnBuild");
        for trigger in triggers {
            let located = |message: String| BuildError::Step {
                file: self.req.file_name.clone(),
                line: stage.line,
                message: format!("ONBUILD {trigger}: {message}"),
            };
            let df = crate::parse(&format!("FROM scratch\n{trigger}\n"), "ONBUILD")
                .map_err(|e| located(e.kind.to_string()))?;
            let Some(mut inst) = df.instructions.get(1).cloned() else {
                continue;
            };
            inst.start_line = stage.line;
            let step = Step {
                instruction: inst,
                vars: stage
                    .steps
                    .first()
                    .map(|s| s.vars.clone())
                    .unwrap_or_default(),
                declared_args: Vec::new(),
            };
            self.step_no += 1;
            let _ = writeln!(self.out, "#{} [onbuild] {trigger}", self.step_no);
            let before = (state.key.clone(), state.layers.len());
            let cached = self
                .run_step(graph, state, &step, done)
                .map_err(|e| match e {
                    BuildError::Other(m) => located(m),
                    e => e,
                })?;
            self.note_step(stage.index, before, state);
            let word = if cached { "CACHED" } else { "DONE" };
            let _ = writeln!(self.out, "#{} {word}", self.step_no);
        }
        Ok(())
    }

    /// Runs one step; returns whether it was a cache hit.
    fn run_step(
        &mut self,
        graph: &StageGraph,
        state: &mut State,
        step: &Step,
        done: &[Option<State>],
    ) -> Result<bool, BuildError> {
        let inst = &step.instruction;
        let env = state.env();
        let vars = StepVars {
            env: &env,
            args: &step.vars.args,
        };
        let created = self.created.clone();
        let word = |w: &str| -> Result<String, BuildError> {
            self.lexer
                .expand_word(w, &vars)
                .map_err(|e| BuildError::Other(e.to_string()))
        };
        match inst.kind {
            Kind::Env => {
                let mut parts = Vec::new();
                let mut values = Vec::new();
                for (k, v) in inst.key_values() {
                    let v = word(v)?;
                    parts.push(format!("{k}={v}"));
                    values.push((k.to_string(), v));
                }
                for (k, v) in values {
                    state.set_env(&k, &v);
                }
                state.history(format!("ENV {}", parts.join(" ")), true, &created);
            }
            Kind::Label => {
                let mut parts = Vec::new();
                for (k, v) in inst.key_values() {
                    let (k, v) = (word(k)?, word(v)?);
                    parts.push(format!("{k}={v}"));
                    let labels = state.cfg().entry("Labels").or_insert_with(|| json!({}));
                    if !labels.is_object() {
                        *labels = json!({});
                    }
                    if let Some(l) = labels.as_object_mut() {
                        l.insert(k, json!(v));
                    }
                }
                state.history(format!("LABEL {}", parts.join(" ")), true, &created);
            }
            Kind::Arg => {
                // BuildKit shows the values the ARGs took, not the defaults written.
                let shown: Vec<String> = step
                    .declared_args
                    .iter()
                    .map(|(k, v)| match v {
                        Some(v) => format!("{k}={v}"),
                        None => k.clone(),
                    })
                    .collect();
                state.history(format!("ARG {}", shown.join(" ")), true, &created);
            }
            Kind::Workdir => {
                let w = word(&inst.args[0])?;
                let cur = state.str_field("WorkingDir");
                let joined = if w.starts_with('/') {
                    w
                } else {
                    format!("{}/{w}", if cur.is_empty() { "/" } else { &cur })
                };
                let wd = fsutil::clean_abs(&joined);
                state.cfg().insert("WorkingDir".into(), json!(wd));
                if wd == "/" {
                    state.history(format!("WORKDIR {wd}"), true, &created);
                } else {
                    // As BuildKit, the directory is made now (owned by the
                    // USER in force), so it exists in the image even when no
                    // RUN or COPY follows.
                    return self.workdir(state, &wd);
                }
            }
            Kind::User => {
                let u = word(&inst.args[0])?;
                state.cfg().insert("User".into(), json!(u));
                state.history(format!("USER {u}"), true, &created);
            }
            Kind::Expose => {
                let mut ports = Vec::new();
                for a in &inst.args {
                    let words = self
                        .lexer
                        .expand_words(a, &vars)
                        .map_err(|e| BuildError::Other(e.to_string()))?;
                    for w in words {
                        ports.extend(expose_ports(&w)?);
                    }
                }
                let map = state
                    .cfg()
                    .entry("ExposedPorts")
                    .or_insert_with(|| json!({}));
                if !map.is_object() {
                    *map = json!({});
                }
                for p in &ports {
                    if let Some(m) = map.as_object_mut() {
                        m.insert(p.clone(), json!({}));
                    }
                }
                // BuildKit lists the ports as written (ranges expanded, duplicates
                // kept); only the config's map makes them unique.
                state.history(format!("EXPOSE [{}]", ports.join(" ")), true, &created);
            }
            Kind::Volume => {
                let mut vols = Vec::new();
                for a in &inst.args {
                    let v = word(a)?;
                    if v.trim().is_empty() {
                        return Err(BuildError::Other(
                            "VOLUME specified can not be an empty string".into(),
                        ));
                    }
                    vols.push(v);
                }
                let map = state.cfg().entry("Volumes").or_insert_with(|| json!({}));
                if !map.is_object() {
                    *map = json!({});
                }
                for v in &vols {
                    if let Some(m) = map.as_object_mut() {
                        m.insert(v.clone(), json!({}));
                    }
                }
                state.history(format!("VOLUME [{}]", vols.join(" ")), true, &created);
            }
            Kind::Shell => {
                state.cfg().insert("Shell".into(), json!(inst.args));
                state.history(format!("SHELL [{}]", inst.args.join(" ")), true, &created);
            }
            Kind::StopSignal => {
                let s = word(&inst.args[0])?;
                state.cfg().insert("StopSignal".into(), json!(s));
                state.history(format!("STOPSIGNAL {s}"), true, &created);
            }
            Kind::Healthcheck => {
                let hc = healthcheck(inst);
                state.history(history::healthcheck_created_by(&hc), true, &created);
                state.cfg().insert("Healthcheck".into(), hc);
            }
            Kind::Cmd => {
                let cmd = command(state, inst);
                state.history(format!("CMD {}", go_list(&cmd)), true, &created);
                state.cfg().insert("Cmd".into(), json!(cmd));
                // BuildKit marks every CMD, either form, as already escaped (a
                // Windows notion that Linux images carry all the same).
                state.cfg().insert("ArgsEscaped".into(), json!(true));
                state.cmd_set = true;
            }
            Kind::Entrypoint => {
                let ep = command(state, inst);
                state.history(format!("ENTRYPOINT {}", go_list(&ep)), true, &created);
                state.cfg().insert("Entrypoint".into(), json!(ep));
                if !state.cmd_set {
                    state.cfg().insert("Cmd".into(), Value::Null);
                }
            }
            Kind::Onbuild => {
                let trigger = onbuild_text(inst);
                let list = state.cfg().entry("OnBuild").or_insert_with(|| json!([]));
                if !list.is_array() {
                    *list = json!([]);
                }
                if let Some(l) = list.as_array_mut() {
                    l.push(json!(trigger));
                }
                // No history entry: BuildKit records ONBUILD in the config only.
            }
            Kind::Maintainer => {
                state.config["author"] = json!(inst.args[0]);
                state.history(format!("MAINTAINER {}", inst.args[0]), true, &created);
            }
            Kind::Run => return self.run(graph, state, step, &env, done),
            Kind::Copy | Kind::Add => return self.copy(graph, state, step, &env, done),
            Kind::From | Kind::Unknown => {}
        }
        Ok(false)
    }

    fn lookup_cache(&self, state: &State, key: &str) -> Option<Option<Layer>> {
        let filtered = self.req.no_cache_filter.iter().any(|f| {
            self.stage.0.as_deref() == Some(f.to_ascii_lowercase().as_str())
                || f.parse::<usize>().ok() == Some(self.stage.1)
        });
        if self.req.no_cache || filtered {
            return None;
        }
        let rec = self.cache.get(key).ok()??;
        if rec.is_empty() {
            return Some(None);
        }
        // A record imported with --cache-from has only its blob here; one
        // that cannot be unpacked is a miss, and the step runs.
        Layer::from_record(self.store, state.top(), &rec)
            .or_else(|| {
                Layer::from_blob(self.store, state.top(), &rec)
                    .ok()
                    .flatten()
            })
            .map(Some)
    }

    fn record(&self, key: &str, layer: Option<&Layer>) -> Result<(), BuildError> {
        let rec = layer
            .map(Layer::record)
            .unwrap_or(crate::cache::CachedLayer {
                diff_id: String::new(),
                digest: String::new(),
                size: 0,
                media_type: String::new(),
                content_size: 0,
            });
        let chain = layer.map(|l| l.chain_id.to_string());
        self.cache
            .put(key, &rec, chain.as_deref())
            .map_err(other("record cache"))
    }

    fn run(
        &mut self,
        graph: &StageGraph,
        state: &mut State,
        step: &Step,
        env: &[(String, String)],
        done: &[Option<State>],
    ) -> Result<bool, BuildError> {
        let inst = &step.instruction;
        let RunCommand { args, script } = run_args(state, inst)?;
        let network = match inst.flag("network") {
            Some(n) => n.parse::<Network>().map_err(BuildError::Other)?,
            None => self.req.network,
        };
        match inst.flag("security") {
            // The default: the step runs in the usual sandbox.
            None | Some("sandbox") => {}
            Some("insecure") => {
                return Err(BuildError::Other(
                    "RUN --security=insecure is not supported: berth has no `--allow \
                     security.insecure` entitlement to run build steps privileged"
                        .into(),
                ))
            }
            Some(other) => {
                return Err(BuildError::Other(format!(
                    "unsupported security mode {other:?} (sandbox or insecure)"
                )))
            }
        }
        if inst.flag("device").is_some() {
            return Err(BuildError::Other(
                "RUN --device is not supported yet".into(),
            ));
        }
        let vars = StepVars {
            env,
            args: &step.vars.args,
        };
        let mut run_mounts = Vec::new();
        for spec in inst.flag_values("mount") {
            let spec = self
                .lexer
                .expand_word(spec, &vars)
                .map_err(|e| BuildError::Other(e.to_string()))?;
            run_mounts.push(RunMount::parse(&spec).map_err(BuildError::Other)?);
        }
        let mut run_env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        for (k, v) in &step.vars.args {
            if !env.iter().any(|(e, _)| e == k) {
                run_env.push(format!("{k}={v}"));
            }
        }
        let build_args = history_build_args(&step.vars, env);
        let user = state.str_field("User");
        let cwd = match state.str_field("WorkingDir") {
            w if w.is_empty() => "/".to_string(),
            w => w,
        };
        let mut key = KeyHasher::new(&state.key);
        key.str(&format!("{:?}", self.req.compression));
        key.str("RUN")
            .str(&args.join("\0"))
            .str(&run_env.join("\0"));
        if let Some(s) = &script {
            key.str("script").str(&s.name).str(&s.content);
        }
        key.str(&user).str(&cwd).str(&format!("{network:?}"));
        let options = &self.req.run_options;
        if !options.key().is_empty() {
            key.str(&options.key());
        }
        let mut bind_sources = Vec::new();
        for m in &run_mounts {
            key.str(&m.key());
            let named = m
                .from
                .as_deref()
                .and_then(|f| self.named_dirs.get(&context_key(f)));
            bind_sources.push(match (m.kind, &m.from) {
                (MountKind::Bind, Some(f)) if named.is_none() => {
                    let s = self.source_state(graph, f, done)?;
                    key.str(&s.key);
                    BindFrom::Layers(s)
                }
                (MountKind::Bind, _) => {
                    let root = self.named_or_context_root(named, None);
                    let src = if m.source.is_empty() { "." } else { &m.source };
                    let sources = copy::expand_sources(&root, &[src.to_string()])
                        .map_err(|e| BuildError::Other(e.to_string()))?;
                    self.hash_context(&root, &sources, &mut key)
                        .map_err(|e| BuildError::Other(e.to_string()))?;
                    BindFrom::Dir(root.dir.to_path_buf())
                }
                _ => BindFrom::Nothing,
            });
        }
        let key = key.finish();
        let created_by = history::run_created_by(&args, &build_args);
        if let Some(hit) = self.lookup_cache(state, &key) {
            push_layer(state, hit, created_by, &self.created, key);
            return Ok(true);
        }
        check_runnable(state)?;
        let mut ws = Workspace::new(&self.snapshots, &self.root)?;
        let mounts = self
            .snapshots
            .prepare(&ws.key, &state.chain_ids())
            .map_err(other("prepare the rootfs"))?;
        let upper = self
            .snapshots
            .upper_dir(&ws.key)
            .map_err(other("find the upper dir"))?;
        let rootfs = ws.dir.join("rootfs");
        ws.mount(&mounts, &rootfs)?;
        make_workdir(&rootfs, &cwd)?;
        let (ids, extra) = if user.is_empty() {
            (fsutil::Ids::default(), Vec::new())
        } else {
            fsutil::lookup_user(&rootfs, &user).map_err(BuildError::Other)?
        };
        // Views of the stages and images bind mounts read from; they stay
        // mounted until the RUN is over.
        let mut views = Vec::new();
        let mut spec_mounts = Vec::new();
        let mut stubs = Vec::new();
        let mut ssh_sock = None;
        let mut secret_env = Vec::new();
        for (i, (m, from)) in run_mounts.iter().zip(&bind_sources).enumerate() {
            let missing = mounts::first_missing(&rootfs, &m.target);
            let mount = match m.kind {
                MountKind::Cache => {
                    let dir = mounts::cache_dir(&self.root, m);
                    std::fs::create_dir_all(&dir).map_err(other("create cache mount"))?;
                    std::os::unix::fs::chown(
                        &dir,
                        Some(m.uid.unwrap_or(0)),
                        Some(m.gid.unwrap_or(0)),
                    )
                    .map_err(other("chown cache mount"))?;
                    set_mode(&dir, m.mode.unwrap_or(0o755))?;
                    mounts::spec_mount(&m.target, "bind", &dir, &["rbind", "rw"])
                }
                MountKind::Tmpfs => {
                    let size = m.size.as_ref().map(|s| format!("size={s}"));
                    let mut opts = vec!["nosuid", "nodev"];
                    opts.extend(size.as_deref());
                    mounts::spec_mount(&m.target, "tmpfs", Path::new("tmpfs"), &opts)
                }
                MountKind::Bind => {
                    let src = match from {
                        BindFrom::Layers(s) => {
                            let mut view = Workspace::new(&self.snapshots, &self.root)?;
                            let vm = self
                                .snapshots
                                .view(&view.key, &s.chain_ids())
                                .map_err(other("prepare the bind source"))?;
                            let dir = view.dir.join("fs");
                            view.mount(&vm, &dir)?;
                            let src = fsutil::resolve_in_root(&dir, &m.source, true)
                                .map_err(other("resolve bind source"))?;
                            views.push(view);
                            src
                        }
                        BindFrom::Dir(dir) => fsutil::resolve_in_root(dir, &m.source, true)
                            .map_err(other("resolve bind source"))?,
                        BindFrom::Nothing => continue,
                    };
                    mounts::spec_mount(&m.target, "bind", &src, &["rbind", "ro"])
                }
                MountKind::Secret => {
                    let Some(bytes) = self.req.secrets.get(&m.id) else {
                        if m.required {
                            return Err(BuildError::Other(format!(
                                "secret {} not found (pass it with --secret id={},src=FILE)",
                                m.id, m.id
                            )));
                        }
                        continue;
                    };
                    if let Some(name) = &m.env {
                        secret_env.push(format!("{name}={}", String::from_utf8_lossy(bytes)));
                    }
                    if m.target.is_empty() {
                        continue;
                    }
                    let file = ws.dir.join(format!("secret-{i}"));
                    std::fs::write(&file, bytes).map_err(other("write secret"))?;
                    std::os::unix::fs::chown(
                        &file,
                        Some(m.uid.unwrap_or(0)),
                        Some(m.gid.unwrap_or(0)),
                    )
                    .map_err(other("chown secret"))?;
                    set_mode(&file, m.mode.unwrap_or(0o400))?;
                    mounts::spec_mount(&m.target, "bind", &file, &["rbind", "ro"])
                }
                MountKind::Ssh => {
                    let Some(socket) = self.req.ssh.get(&m.id) else {
                        if m.required {
                            return Err(BuildError::Other(format!(
                                "no SSH agent socket {} (pass it with --ssh {}[=SOCKET])",
                                m.id, m.id
                            )));
                        }
                        continue;
                    };
                    ssh_sock.get_or_insert_with(|| m.target.clone());
                    mounts::spec_mount(&m.target, "bind", socket, &["rbind"])
                }
            };
            if let Some(missing) = missing {
                stubs.push((missing, m.target.clone()));
            }
            spec_mounts.push(mount);
        }
        if let Some(s) = &script {
            spec_mounts.push(s.mount(&ws.dir)?);
        }
        let mut binds = host_binds(&rootfs, network, &ws.dir);
        if !options.extra_hosts.is_empty() {
            // `--add-host`: the hosts file the RUN would see, with the extra lines.
            let base = binds
                .iter()
                .position(|(_, dst)| dst == "/etc/hosts")
                .map(|i| binds.remove(i))
                .and_then(|(src, _)| std::fs::read_to_string(src).ok());
            let file = ws.dir.join("hosts");
            std::fs::write(&file, options.hosts_file(base.as_deref()))
                .map_err(other("write the hosts file"))?;
            if let Some(missing) = mounts::first_missing(&rootfs, "/etc/hosts") {
                stubs.push((missing, "/etc/hosts".to_string()));
            }
            spec_mounts.push(mounts::spec_mount(
                "/etc/hosts",
                "bind",
                &file,
                &["rbind", "ro"],
            ));
        }
        let bridge = match network {
            Network::Bridge => Some(
                runner::BridgeNetns::new(&self.root, &ws.key, &ws.dir)
                    .map_err(other("attach the RUN to the default bridge"))?,
            ),
            _ => None,
        };
        // Not part of the key: the mount (in the key) decides it, and a
        // socket that was not given must not change the step.
        if let Some(target) = ssh_sock {
            if !run_env.iter().any(|e| e.starts_with("SSH_AUTH_SOCK=")) {
                run_env.push(format!("SSH_AUTH_SOCK={target}"));
            }
        }
        // Secrets asked for as variables: in the process only, never in the key.
        run_env.extend(secret_env);
        let spec = RunSpec {
            args: args.clone(),
            env: run_env,
            cwd,
            uid: ids.uid,
            gid: ids.gid,
            additional_gids: extra,
            network,
            netns: bridge.as_ref().map(|b| b.path().to_path_buf()),
            hostname: "berth-build".into(),
            binds,
            mounts: spec_mounts,
            options: options.clone(),
        };
        let log = ws.dir.join("output.log");
        let code = runner::run(
            &self.root.join("run/build"),
            &ws.key,
            &ws.dir,
            &spec,
            &rootfs,
            &log,
        )
        .map_err(|e| {
            BuildError::Other(emulator_hint(
                format!("run the container: {e}"),
                &state.config,
            ))
        })?;
        drop(bridge);
        let output = std::fs::read_to_string(&log).unwrap_or_default();
        drop(views);
        ws.unmount_all()?;
        if code != 0 {
            let lines: Vec<&str> = output.lines().collect();
            let tail = &lines[lines.len().saturating_sub(20)..];
            for l in tail {
                let _ = writeln!(self.out, "#{} {l}", self.step_no);
            }
            return Err(BuildError::Other(format!(
                "process \"{}\" did not complete successfully: exit code: {code}",
                args.join(" ")
            )));
        }
        for l in output.lines() {
            let _ = writeln!(self.out, "#{} {l}", self.step_no);
        }
        for (missing, target) in &stubs {
            mounts::remove_stubs(&upper, missing, target);
        }
        self.commit_step(&upper, state, key, created_by)
    }

    /// WORKDIR's directory as a layer (none when it already exists).
    fn workdir(&mut self, state: &mut State, wd: &str) -> Result<bool, BuildError> {
        let user = state.str_field("User");
        let mut key = KeyHasher::new(&state.key);
        key.str(&format!("{:?}", self.req.compression));
        key.str("WORKDIR").str(wd).str(&user);
        let key = key.finish();
        let created_by = format!("WORKDIR {wd}");
        if let Some(hit) = self.lookup_cache(state, &key) {
            push_layer(state, hit, created_by, &self.created, key);
            return Ok(true);
        }
        let mut ws = Workspace::new(&self.snapshots, &self.root)?;
        let mounts = self
            .snapshots
            .prepare(&ws.key, &state.chain_ids())
            .map_err(other("prepare the rootfs"))?;
        let rootfs = ws.dir.join("rootfs");
        ws.mount(&mounts, &rootfs)?;
        make_dirs_owned(&rootfs, wd, fsutil::file_owner(&rootfs, &user))?;
        ws.unmount_all()?;
        let upper = self
            .snapshots
            .upper_dir(&ws.key)
            .map_err(other("find the upper dir"))?;
        self.commit_step(&upper, state, key, created_by)
    }

    /// Makes a step's upper directory its layer (none when it changed nothing), records
    /// it in the cache under `key` and adds it, with its history entry, to `state`. The
    /// end of every RUN, COPY/ADD and WORKDIR that ran.
    fn commit_step(
        &self,
        upper: &Path,
        state: &mut State,
        key: String,
        created_by: String,
    ) -> Result<bool, BuildError> {
        tracing::debug!("layer: writing");
        let layer = export::commit_layer(
            self.store,
            upper,
            state.top(),
            self.req.epoch,
            self.req.compression,
        )
        .map_err(other("commit layer"))?;
        tracing::debug!("layer: committed");
        self.record(&key, layer.as_ref())?;
        push_layer(state, layer, created_by, &self.created, key);
        Ok(false)
    }

    /// The state a `--from` names: a stage built earlier, or an image.
    fn source_state(
        &self,
        graph: &StageGraph,
        from: &str,
        done: &[Option<State>],
    ) -> Result<State, BuildError> {
        if let Some(NamedContext::Image(r)) = self.req.named_contexts.get(&context_key(from)) {
            return self.image_state(r);
        }
        match graph.find(from) {
            Some(i) => done[i]
                .clone()
                .ok_or_else(|| BuildError::Other(format!("stage {from} was not built"))),
            None => self.image_state(from),
        }
    }

    fn copy(
        &mut self,
        graph: &StageGraph,
        state: &mut State,
        step: &Step,
        env: &[(String, String)],
        done: &[Option<State>],
    ) -> Result<bool, BuildError> {
        let inst = &step.instruction;
        let vars = StepVars {
            env,
            args: &step.vars.args,
        };
        let expand = |w: &str| -> Result<String, BuildError> {
            self.lexer
                .expand_word(w, &vars)
                .map_err(|e| BuildError::Other(e.to_string()))
        };
        let keep_git_dir = inst
            .flag("keep-git-dir")
            .is_some_and(|v| v.is_empty() || v.eq_ignore_ascii_case("true"));
        let from = inst.flag("from").map(&expand).transpose()?;
        let mut excludes = Vec::new();
        for e in inst.flag_values("exclude") {
            excludes.push(expand(e)?);
        }
        let exclude = PatternMatcher::new(&read_patterns(&excludes.join("\n")))
            .map_err(|e| BuildError::Other(format!("--exclude: {e}")))?;
        let exclude = (!excludes.is_empty()).then_some(&exclude);
        let parents = inst
            .flag("parents")
            .is_some_and(|v| v.is_empty() || v.eq_ignore_ascii_case("true"));
        // --link copies onto an empty tree that becomes the layer, so directories on
        // the way are made anew (0755, --chown's owner) and replace the base's, and
        // symlinks of the base are not followed. BuildKit ignores it with --chmod.
        let link = inst
            .flag("link")
            .is_some_and(|v| v.is_empty() || v.eq_ignore_ascii_case("true"))
            && inst.flag("chmod").is_none();
        // ADD --unpack: local archives are unpacked unless false, remote ones only if true.
        let unpack = inst
            .flag("unpack")
            .map(|v| v.is_empty() || v.eq_ignore_ascii_case("true"));
        let chown = inst.flag("chown").map(&expand).transpose()?;
        let chmod_text = inst.flag("chmod").map(&expand).transpose()?;
        let chmod = match &chmod_text {
            Some(m) => Some(u32::from_str_radix(m, 8).map_err(|_| {
                BuildError::Other(format!("invalid chmod parameter: {m:?} (octal modes only)"))
            })?),
            None => None,
        };
        let n = inst.args.len();
        // Every non-inline source as expanded, in the Dockerfile's order (for history).
        let mut sources = Vec::new();
        let mut patterns = Vec::new();
        let mut heredocs = Vec::new();
        let mut urls = Vec::new();
        let mut repos = Vec::new();
        for a in &inst.args[..n - 1] {
            match crate::heredoc::parse_delimiter(a).ok().flatten() {
                Some(h) if inst.heredocs.iter().any(|d| d.name == h.name) => {
                    let doc = inst
                        .heredocs
                        .iter()
                        .find(|d| d.name == h.name)
                        .expect("checked above");
                    let content = if doc.expand {
                        expand(&doc.content)?
                    } else {
                        doc.content.clone()
                    };
                    heredocs.push((doc.name.clone(), content));
                }
                _ => {
                    let p = expand(a)?;
                    sources.push(p.clone());
                    let http = p.starts_with("http://") || p.starts_with("https://");
                    let repo = (inst.kind == Kind::Add)
                        .then(|| crate::git::parse(&p))
                        .flatten();
                    if let Some(repo) = repo {
                        repos.push(repo);
                    } else if inst.kind == Kind::Add && http {
                        urls.push(p);
                    } else {
                        patterns.push(p);
                    }
                }
            }
        }
        let raw_dest = expand(&inst.args[n - 1])?;
        let wd = match state.str_field("WorkingDir") {
            w if w.is_empty() => "/".to_string(),
            w => w,
        };
        let dest = if raw_dest.starts_with('/') {
            raw_dest.clone()
        } else {
            let slash = raw_dest.ends_with('/') || raw_dest == "." || raw_dest.is_empty();
            let mut d = fsutil::clean_abs(&format!("{wd}/{raw_dest}"));
            if slash && !d.ends_with('/') {
                d.push('/');
            }
            d
        };
        let keyword = inst.kind.name();
        let mut context_digests = HashMap::new();
        let mut key = KeyHasher::new(&state.key);
        key.str(&format!("{:?}", self.req.compression));
        key.str(keyword)
            .str(&dest)
            .str(&format!("{chown:?}{chmod:?}{parents:?}{unpack:?}{link:?}"));
        // Where the sources come from: another stage or image (keyed by its
        // layers, which are content-addressed), or the context (keyed by
        // the files' content and metadata).
        // A local named context is read as the build context is, from its own directory.
        let named_dir = from
            .as_deref()
            .and_then(|f| self.named_dirs.get(&context_key(f)));
        let from_state = match &from {
            Some(f) if named_dir.is_none() => Some(self.source_state(graph, f, done)?),
            _ => None,
        };
        let scratch = self.root.join("build/work").join(unique("heredoc"));
        let _cleanup = RemoveOnDrop(scratch.clone());
        let downloads_dir = scratch.join("urls");
        if !heredocs.is_empty() || !urls.is_empty() {
            std::fs::create_dir_all(&downloads_dir).map_err(other("create scratch dir"))?;
            for (name, content) in &heredocs {
                std::fs::write(scratch.join(name), content).map_err(other("write heredoc"))?;
                key.str("heredoc").str(name).str(content);
            }
        }
        // Downloads are keyed by their content, as context files are.
        let checksum = inst.flag("checksum").map(&expand).transpose()?;
        let mut downloaded = Vec::new();
        for url in &urls {
            let (name, data) =
                crate::fetch::download(url, checksum.as_deref()).map_err(BuildError::Other)?;
            std::fs::write(downloads_dir.join(&name), &data).map_err(other("write download"))?;
            key.str("url").str(url).str(&name).part(&data);
            downloaded.push(name);
        }
        // Repositories are keyed by the commit their reference names now.
        let mut commits = Vec::new();
        for repo in &repos {
            let commit = repo.resolve().map_err(BuildError::Other)?;
            key.str("git")
                .str(&repo.remote)
                .str(&commit)
                .str(repo.subdir.as_deref().unwrap_or(""))
                .str(&keep_git_dir.to_string());
            commits.push(commit);
        }
        match &from_state {
            Some(s) => {
                key.str(&s.key);
                for l in &s.layers {
                    key.str(&l.chain_id.to_string());
                }
                for p in &patterns {
                    key.str(p);
                }
            }
            None => {
                let root = self.named_or_context_root(named_dir, exclude);
                let sources = copy::expand_sources(&root, &patterns)
                    .map_err(|e| BuildError::Other(e.to_string()))?;
                context_digests = self
                    .hash_context(&root, &sources, &mut key)
                    .map_err(|e| BuildError::Other(e.to_string()))?;
            }
        }
        let key = key.finish();
        tracing::debug!("copy: sources hashed");
        let heredoc_names: Vec<String> = heredocs.iter().map(|(n, _)| n.clone()).collect();
        let created_by = history::CopyLine {
            keyword,
            parents,
            chown: chown.as_deref(),
            chmod: chmod_text.as_deref(),
            sources: &sources,
            heredocs: &heredoc_names,
            dest: &raw_dest,
        }
        .created_by();
        if let Some(hit) = self.lookup_cache(state, &key) {
            push_layer(state, hit, created_by, &self.created, key);
            return Ok(true);
        }
        let mut ws = Workspace::new(&self.snapshots, &self.root)?;
        let mounts = self
            .snapshots
            .prepare(&ws.key, &state.chain_ids())
            .map_err(other("prepare the rootfs"))?;
        let rootfs = ws.dir.join("rootfs");
        ws.mount(&mounts, &rootfs)?;
        let upper = self
            .snapshots
            .upper_dir(&ws.key)
            .map_err(other("find the upper dir"))?;
        // Owner names still resolve in the stage's files, --link or not.
        let chown_ids = chown.as_deref().map(|c| fsutil::file_owner(&rootfs, c));
        let into = if link {
            let tree = ws.dir.join("link");
            std::fs::create_dir(&tree).map_err(other("create the --link tree"))?;
            tree
        } else {
            make_workdir(&rootfs, &wd)?;
            rootfs.clone()
        };
        let opts = CopyOptions {
            chown: chown_ids,
            chmod,
            extract: inst.kind == Kind::Add && unpack != Some(false),
            parents,
        };
        let fail = |e: copy::CopyError| BuildError::Other(e.to_string());
        if !heredocs.is_empty() {
            let root = SourceRoot {
                dir: &scratch,
                ignore: None,
                keep_owner: false,
                rootfs: false,
                exclude: None,
            };
            let names: Vec<String> = heredocs.iter().map(|(n, _)| n.clone()).collect();
            let sources = copy::expand_sources(&root, &names).map_err(fail)?;
            let hopts = CopyOptions {
                chmod: Some(chmod.unwrap_or(0o644)),
                extract: false,
                ..opts.clone()
            };
            copy::copy_into(&root, &sources, &into, &dest, &hopts).map_err(fail)?;
        }
        if !downloaded.is_empty() {
            let root = SourceRoot {
                dir: &downloads_dir,
                ignore: None,
                keep_owner: false,
                rootfs: false,
                exclude: None,
            };
            let sources = copy::expand_sources(&root, &downloaded).map_err(fail)?;
            let dopts = CopyOptions {
                chmod: Some(chmod.unwrap_or(0o600)),
                extract: unpack == Some(true),
                ..opts.clone()
            };
            copy::copy_into(&root, &sources, &into, &dest, &dopts).map_err(fail)?;
        }
        for (i, (repo, commit)) in repos.iter().zip(&commits).enumerate() {
            let checkout = scratch.join(format!("git{i}"));
            std::fs::create_dir_all(&checkout).map_err(other("create scratch dir"))?;
            repo.checkout(commit, &checkout, keep_git_dir)
                .map_err(BuildError::Other)?;
            let dir = match &repo.subdir {
                Some(sub) => {
                    // A symlink in the repository must not lead the copy out of it.
                    let d = fsutil::resolve_in_root(&checkout, sub, true)
                        .map_err(other("find the repository's subdirectory"))?;
                    if !d.is_dir() {
                        return Err(BuildError::Other(format!(
                            "{}: no directory {sub:?} at {commit}",
                            repo.remote
                        )));
                    }
                    d
                }
                None => checkout.clone(),
            };
            let root = SourceRoot {
                dir: &dir,
                ignore: None,
                keep_owner: false,
                rootfs: false,
                exclude,
            };
            let sources = copy::expand_sources(&root, &[".".to_string()]).map_err(fail)?;
            let gopts = CopyOptions {
                extract: false,
                ..opts.clone()
            };
            let into_dir = if dest.ends_with('/') {
                dest.clone()
            } else {
                format!("{dest}/")
            };
            copy::copy_into(&root, &sources, &into, &into_dir, &gopts).map_err(fail)?;
        }
        let mut relink = None;
        if !patterns.is_empty() {
            match &from_state {
                Some(s) => {
                    let view_key = format!("{}-from", ws.key);
                    let view = self
                        .snapshots
                        .view(&view_key, &s.chain_ids())
                        .map_err(other("prepare the source stage"))?;
                    let src_dir = ws.dir.join("from");
                    let mut src_ws = Workspace {
                        snapshots: &self.snapshots,
                        key: view_key,
                        dir: src_dir.clone(),
                        mounted: Vec::new(),
                    };
                    src_ws.mount(&view, &src_dir)?;
                    let root = SourceRoot {
                        dir: &src_dir,
                        ignore: None,
                        keep_owner: true,
                        rootfs: true,
                        exclude,
                    };
                    let sources = copy::expand_sources(&root, &patterns).map_err(fail)?;
                    copy::copy_into(&root, &sources, &into, &dest, &opts).map_err(fail)?;
                }
                None => {
                    let root = self.named_or_context_root(named_dir, exclude);
                    let sources = copy::expand_sources(&root, &patterns).map_err(fail)?;
                    // The links of an earlier copy are remembered for the build context only.
                    if inst.kind == Kind::Copy && named_dir.is_none() && !link {
                        // Not ADD: an archive it extracts could overwrite a file after
                        // the record of what the layer holds was taken.
                        // The history line leaves most flags out; the shape keeps them.
                        let shape =
                            self.copy_shape(&format!("{created_by} {:?}", inst.flags), &wd, &dest);
                        let earlier = self.earlier_copy(&shape);
                        let mut reuse = relink::Relink::new(
                            &rootfs,
                            &upper,
                            earlier,
                            &context_digests,
                            self.req.epoch,
                        );
                        tracing::debug!("copy: into the overlay");
                        copy::copy_into_reusing(&root, &sources, &rootfs, &dest, &opts, &mut reuse)
                            .map_err(fail)?;
                        relink = Some((reuse, shape));
                    } else {
                        copy::copy_into(&root, &sources, &into, &dest, &opts).map_err(fail)?;
                    }
                }
            }
        }
        ws.unmount_all()?;
        if link {
            return self.commit_step(&into, state, key, created_by);
        }
        let Some((reuse, shape)) = relink else {
            return self.commit_step(&upper, state, key, created_by);
        };
        let (planned, links) = reuse.planned();
        tracing::debug!("copy: {planned} files to write in the upper dir, {links} as links");
        let files = reuse.finish().map_err(fail)?;
        tracing::debug!("copy: written");
        let before = state.layers.len();
        self.commit_step(&upper, state, key, created_by)?;
        // A record that fails to be written only costs the next build its links.
        if let Some(layer) = state.layers.get(before) {
            let _ = self.cache.put_copy_layer(
                &shape,
                &layer.chain_id.to_string(),
                &relink::encode(&files),
            );
        }
        Ok(false)
    }

    /// What identifies "the same COPY" across builds for [`Executor::earlier_copy`].
    fn copy_shape(&self, created_by: &str, wd: &str, dest: &str) -> String {
        let mut k = KeyHasher::new("copy-shape");
        k.str(&self.req.context.to_string_lossy())
            .str(created_by)
            .str(wd)
            .str(dest);
        k.finish()
    }

    /// Hashes context sources into `key`, reading only files whose digest is not
    /// remembered (one transaction for all lookups and records; the others are read on
    /// several threads). Returns each file's digest by path.
    fn hash_context(
        &self,
        root: &SourceRoot,
        sources: &[copy::Source],
        key: &mut KeyHasher,
    ) -> Result<HashMap<PathBuf, [u8; 32]>, copy::CopyError> {
        let in_tx = self.cache.begin().is_ok();
        let result = copy::hash_sources(root, sources, key, &mut |files| {
            self.cache.file_digests(files)
        });
        if in_tx {
            let _ = self.cache.commit();
        }
        Ok(result?.into_iter().collect())
    }

    /// Where a context COPY can take unchanged files from: the layer the same
    /// instruction (same context, destination and options, whatever the parent) made
    /// last time, if it is still stored. Any layer would be safe, since each file
    /// is checked, but only this one is likely to share files.
    fn earlier_copy(&self, shape: &str) -> Option<relink::Earlier> {
        let (chain, files) = self.cache.copy_layer(shape).ok().flatten()?;
        let dir = self.store.layers.path(&chain.parse().ok()?);
        let files = relink::decode(&files)?;
        dir.is_dir().then_some(relink::Earlier { dir, files })
    }

    fn named_or_context_root<'s>(
        &'s self,
        named: Option<&'s (PathBuf, PatternMatcher)>,
        exclude: Option<&'s PatternMatcher>,
    ) -> SourceRoot<'s> {
        match named {
            Some((dir, ignore)) => SourceRoot {
                dir,
                ignore: Some(ignore),
                keep_owner: false,
                rootfs: false,
                exclude,
            },
            None => self.context_root(exclude),
        }
    }

    fn context_root<'s>(&'s self, exclude: Option<&'s PatternMatcher>) -> SourceRoot<'s> {
        SourceRoot {
            dir: &self.req.context,
            ignore: Some(&self.ignore),
            keep_owner: false,
            rootfs: false,
            exclude,
        }
    }
}

/// Where a `RUN --mount=type=bind` reads from.
enum BindFrom {
    /// A stage or image, mounted as a view of its layers.
    Layers(State),
    /// The build context or a local named context.
    Dir(PathBuf),
    /// Not a bind mount.
    Nothing,
}

fn set_mode(path: &Path, mode: u32) -> Result<(), BuildError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(other(format!("chmod {}", path.display())))
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn push_layer(
    state: &mut State,
    layer: Option<Layer>,
    created_by: String,
    created: &str,
    key: String,
) {
    let empty = layer.is_none();
    if let Some(l) = layer {
        state.layers.push(l);
    }
    state.history(created_by, empty, created);
    state.key = key;
}

fn load_ignore(req: &BuildRequest) -> Result<PatternMatcher, BuildError> {
    let file = match &req.dockerfile_path {
        Some(p) => pick_ignore_file(&req.context, p),
        None => {
            let p = req.context.join(".dockerignore");
            p.is_file().then_some(p)
        }
    };
    let patterns = match file {
        Some(f) => read_patterns(
            &std::fs::read_to_string(&f).map_err(other(format!("read {}", f.display())))?,
        ),
        None => Vec::new(),
    };
    PatternMatcher::new(&patterns).map_err(other("parse .dockerignore"))
}

/// Creates the working directory when the image lacks it (as Docker does
/// before RUN and COPY).
fn make_workdir(rootfs: &Path, wd: &str) -> Result<(), BuildError> {
    let path = fsutil::resolve_in_root(rootfs, wd, true).map_err(other(format!("resolve {wd}")))?;
    if !path.is_dir() {
        std::fs::create_dir_all(&path).map_err(other(format!("create working directory {wd}")))?;
    }
    Ok(())
}

/// Creates `wd` and its missing parents in `rootfs` (0755, owned by `ids`).
fn make_dirs_owned(rootfs: &Path, wd: &str, ids: fsutil::Ids) -> Result<(), BuildError> {
    let mut path = String::new();
    for part in wd.split('/').filter(|p| !p.is_empty()) {
        path.push('/');
        path.push_str(part);
        let host = fsutil::resolve_in_root(rootfs, &path, true)
            .map_err(other(format!("resolve {path}")))?;
        if host.is_dir() {
            continue;
        }
        std::fs::create_dir(&host).map_err(other(format!("create working directory {wd}")))?;
        set_mode(&host, 0o755)?;
        std::os::unix::fs::chown(&host, Some(ids.uid), Some(ids.gid))
            .map_err(other(format!("chown {path}")))?;
    }
    Ok(())
}

/// Host files a RUN sees, bound only over files the image already has so
/// that no empty mount point lands in the layer. On the bridge the host's
/// loopback name servers are unreachable, so resolv.conf is berth-net's
/// rewrite of the host's (written in `scratch`), as `berth run` gives.
fn host_binds(rootfs: &Path, network: Network, scratch: &Path) -> Vec<(PathBuf, String)> {
    if network == Network::None {
        return Vec::new();
    }
    let resolv = scratch.join("resolv.conf");
    let bridge_resolv = network == Network::Bridge
        && std::fs::write(&resolv, berth_net::resolv_conf(&[], &[])).is_ok();
    ["/etc/resolv.conf", "/etc/hosts"]
        .iter()
        .filter(|f| Path::new(f).is_file())
        .filter(|f| {
            fsutil::resolve_in_root(rootfs, f, false)
                .map(|p| p.is_file())
                .unwrap_or(false)
        })
        .map(|f| match *f {
            "/etc/resolv.conf" if bridge_resolv => (resolv.clone(), f.to_string()),
            _ => (PathBuf::from(f), f.to_string()),
        })
        .collect()
}

/// Whether two stages ask for one platform: no platform means the host's, so
/// `FROM --platform=$BUILDPLATFORM img` and `FROM img` agree on this host.
fn same_platform(a: Option<&str>, b: Option<&str>) -> bool {
    use berth_registry::client::Platform;
    let concrete = |p: Option<&str>| match p {
        None => Ok(Platform::host()),
        Some(p) => Platform::parse(p),
    };
    match (concrete(a), concrete(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Where BuildKit mounts a RUN's script heredoc (read-only, one file per script).
const PIPES_DIR: &str = "/dev/pipes";

/// A RUN's process arguments, and the script file it executes when its only
/// heredoc starts with `#!`.
struct RunCommand {
    args: Vec<String>,
    script: Option<Script>,
}

/// A heredoc BuildKit runs as a program (`RUN <<EOF` whose body starts with `#!`):
/// written to `/dev/pipes/NAME` with mode 0755, so its interpreter line is honoured
/// (`#!/usr/bin/env python3` runs Python, not the shell).
struct Script {
    name: String,
    content: String,
}

impl Script {
    fn path(&self) -> String {
        format!("{PIPES_DIR}/{}", self.name)
    }

    /// Writes the script under `scratch` and returns its read-only mount.
    fn mount(&self, scratch: &Path) -> Result<Value, BuildError> {
        let dir = scratch.join("pipes");
        std::fs::create_dir_all(&dir).map_err(other("create the script directory"))?;
        let file = dir.join(&self.name);
        std::fs::write(&file, &self.content).map_err(other("write the heredoc script"))?;
        set_mode(&file, 0o755)?;
        Ok(mounts::spec_mount(
            PIPES_DIR,
            "bind",
            &dir,
            &["rbind", "ro"],
        ))
    }
}

/// The process arguments of a RUN, heredocs included (BuildKit's rules).
fn run_args(state: &State, inst: &Instruction) -> Result<RunCommand, BuildError> {
    if inst.json {
        return Ok(RunCommand {
            args: inst.args.clone(),
            script: None,
        });
    }
    let shell = shell_of(state);
    let cmd = inst.args.join(" ");
    let only_heredoc = inst.heredocs.len() == 1
        && crate::heredoc::parse_delimiter(cmd.trim())
            .ok()
            .flatten()
            .is_some();
    let mut script = None;
    let body = if inst.heredocs.is_empty() {
        cmd
    } else if only_heredoc
        && inst.heredocs[0].content.starts_with("#!")
        && !inst.heredocs[0].name.contains('/')
    {
        // The script is named after the heredoc (quotes already removed by the
        // parser); a name with a slash could not be one file, so it runs as text.
        let s = Script {
            name: inst.heredocs[0].name.clone(),
            content: inst.heredocs[0].content.clone(),
        };
        let path = s.path();
        script = Some(s);
        path
    } else if only_heredoc {
        inst.heredocs[0].content.clone()
    } else {
        let mut full = cmd;
        for h in &inst.heredocs {
            full.push('\n');
            full.push_str(&h.content);
            full.push_str(&h.name);
        }
        full
    };
    let mut args = shell;
    args.push(body);
    Ok(RunCommand { args, script })
}

fn shell_of(state: &State) -> Vec<String> {
    state.config["config"]["Shell"]
        .as_array()
        .filter(|a| !a.is_empty())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()])
}

/// CMD/ENTRYPOINT arguments: exec form as is, shell form under the shell.
fn command(state: &State, inst: &Instruction) -> Vec<String> {
    if inst.json {
        return inst.args.clone();
    }
    let mut args = shell_of(state);
    args.push(inst.args.join(" "));
    args
}

/// Go's `%q` of a string list: `["a" "b"]`.
fn go_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| crate::ast::go_quote(s)).collect();
    format!("[{}]", quoted.join(" "))
}

fn one_line(s: &str) -> String {
    let first = s.lines().next().unwrap_or("");
    if s.lines().nth(1).is_some() {
        format!("{first} ...")
    } else {
        first.to_string()
    }
}

fn onbuild_text(inst: &Instruction) -> String {
    let orig = inst.original.trim_start();
    match orig.get(..7) {
        Some(kw) if kw.eq_ignore_ascii_case("onbuild") => orig[7..].trim().to_string(),
        _ => orig.to_string(),
    }
}

/// The build arguments a RUN's history lists, as BuildKit's `runCommandString`: every
/// ARG declared in the stage (with or without a value), in declaration order, each with
/// the value the step sees (an ENV of the same name wins; none at all is `""`).
fn history_build_args(
    vars: &crate::stages::Vars,
    env: &[(String, String)],
) -> Vec<(String, String)> {
    vars.declared
        .iter()
        .map(|k| {
            let from_env = env.iter().rev().find(|(e, _)| e == k).map(|(_, v)| v);
            let v = from_env.or_else(|| vars.args.get(k)).cloned();
            (k.clone(), v.unwrap_or_default())
        })
        .collect()
}

/// `80`, `80/udp`, `8000-8002/tcp` → `80/tcp`...
fn expose_ports(word: &str) -> Result<Vec<String>, BuildError> {
    let (ports, proto) = match word.split_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (word, "tcp".to_string()),
    };
    let bad = || BuildError::Other(format!("invalid containerPort: {word}"));
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(BuildError::Other(format!("invalid proto: {proto}")));
    }
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (
            a.parse::<u16>().map_err(|_| bad())?,
            b.parse::<u16>().map_err(|_| bad())?,
        ),
        None => {
            let p = ports.parse::<u16>().map_err(|_| bad())?;
            (p, p)
        }
    };
    if hi < lo {
        return Err(bad());
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

fn healthcheck(inst: &Instruction) -> Value {
    let kind = inst
        .args
        .first()
        .map(|s| s.to_ascii_uppercase())
        .unwrap_or_default();
    if kind == "NONE" {
        return json!({"Test": ["NONE"]});
    }
    let test: Vec<String> = if inst.json {
        std::iter::once("CMD".to_string())
            .chain(inst.args[1..].iter().cloned())
            .collect()
    } else {
        vec!["CMD-SHELL".into(), inst.args[1..].join(" ")]
    };
    let mut hc = json!({"Test": test});
    for (flag, field) in [
        ("interval", "Interval"),
        ("timeout", "Timeout"),
        ("start-period", "StartPeriod"),
        ("start-interval", "StartInterval"),
    ] {
        if let Some(ns) = inst
            .flag(flag)
            .and_then(crate::instructions::parse_go_duration)
            .filter(|n| *n > 0.0)
        {
            hc[field] = json!(ns as i64);
        }
    }
    if let Some(r) = inst.flag("retries").and_then(|r| r.parse::<i64>().ok()) {
        if r > 0 {
            hc["Retries"] = json!(r);
        }
    }
    hc
}

/// A RUN on an image of another architecture needs the kernel to hand its programs to
/// an emulator (binfmt_misc, as qemu-user-static registers); without one the step would
/// fail with a bare "exec format error", so say what is missing instead.
fn check_runnable(state: &State) -> Result<(), BuildError> {
    let arch = state.config["architecture"].as_str().unwrap_or("");
    let host = berth_registry::client::Platform::host();
    if arch.is_empty() || arch == host.architecture {
        return Ok(());
    }
    let qemu = match arch {
        "arm64" => "aarch64",
        "amd64" => "x86_64",
        "386" => "i386",
        "ppc64le" => "ppc64le",
        other => other,
    };
    let registered = std::path::Path::new("/proc/sys/fs/binfmt_misc").join(format!("qemu-{qemu}"));
    if registered.exists() {
        return Ok(());
    }
    Err(BuildError::Other(format!(
        "cannot RUN on linux/{arch} on this linux/{} host: no emulator is registered \
         ({} is missing; install qemu-user-static and binfmt-support)",
        host.architecture,
        registered.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exec_format_error_in_a_foreign_stage_names_the_emulator() {
        let host = berth_registry::client::Platform::host().architecture;
        let foreign = if host == "s390x" { "arm64" } else { "s390x" };
        let failed = "run the container: runtime: exec /bin/sh: exec format error";
        let hinted = emulator_hint(failed.into(), &json!({ "architecture": foreign }));
        assert!(
            hinted.starts_with(failed) && hinted.contains("qemu-user-static"),
            "{hinted}"
        );
        // The host's own architecture, or another error: the message as it was.
        assert_eq!(
            emulator_hint(failed.into(), &json!({ "architecture": host })),
            failed
        );
        let other = "run the container: runtime: no space left on device";
        assert_eq!(
            emulator_hint(other.into(), &json!({ "architecture": foreign })),
            other
        );
    }

    #[test]
    fn run_history_lists_every_declared_arg_with_the_value_seen() {
        let vars = crate::stages::Vars {
            args: [
                ("B".to_string(), "argb".to_string()),
                ("C".into(), "argc".into()),
            ]
            .into(),
            env: Default::default(),
            declared: vec!["C".into(), "A".into(), "B".into()],
        };
        let env = [
            ("PATH".to_string(), "/bin".to_string()),
            ("B".into(), "envb".into()),
        ];
        assert_eq!(
            history_build_args(&vars, &env),
            [
                ("C".to_string(), "argc".to_string()),
                ("A".into(), "".into()),
                ("B".into(), "envb".into()),
            ]
        );
    }

    fn run_of(dockerfile: &str) -> RunCommand {
        let df = crate::parse(dockerfile, "Dockerfile").expect("valid Dockerfile");
        let state = State {
            config: json!({}),
            layers: Vec::new(),
            key: String::new(),
            cmd_set: false,
        };
        run_args(&state, &df.instructions[1]).expect("run arguments")
    }

    #[test]
    fn a_heredoc_with_an_interpreter_line_runs_as_a_file() {
        let run = run_of("FROM x\nRUN <<EOF\n#!/usr/bin/env python3\nprint(1)\nEOF\n");
        assert_eq!(run.args, ["/bin/sh", "-c", "/dev/pipes/EOF"]);
        let script = run.script.expect("a script");
        assert_eq!(script.content, "#!/usr/bin/env python3\nprint(1)\n");
        // Without `#!` the body is the shell's command, as before.
        let run = run_of("FROM x\nRUN <<EOF\necho hi\nEOF\n");
        assert_eq!(run.args, ["/bin/sh", "-c", "echo hi\n"]);
        assert!(run.script.is_none());
        // A heredoc fed to a command is the shell's to read.
        let run = run_of("FROM x\nRUN python3 <<EOF\n#!/x\nEOF\n");
        assert!(run.script.is_none());
    }

    #[test]
    fn the_hosts_platform_written_out_is_the_host_platform() {
        let host = berth_registry::client::Platform::host();
        let written = format!("{}/{}", host.os, host.architecture);
        assert!(same_platform(None, Some(&written)));
        assert!(same_platform(Some(&written), None));
        assert!(same_platform(None, None));
        let other = if host.architecture == "arm64" {
            "linux/amd64"
        } else {
            "linux/arm64"
        };
        assert!(!same_platform(None, Some(other)));
    }

    #[test]
    fn expose_forms() {
        assert_eq!(expose_ports("80").unwrap(), vec!["80/tcp"]);
        assert_eq!(expose_ports("53/UDP").unwrap(), vec!["53/udp"]);
        assert_eq!(expose_ports("8000-8002").unwrap().len(), 3);
        assert!(expose_ports("x").is_err());
    }

    #[test]
    fn go_list_quotes() {
        assert_eq!(go_list(&["a b".into(), "c".into()]), r#"["a b" "c"]"#);
    }
}
