//! The stage graph: which stages a Dockerfile has, what each is built on,
//! which other stages it reads from, and the variables every instruction
//! sees.
//!
//! Variable scoping follows the Dockerfile reference as BuildKit applies it:
//!
//! * ARGs before the first FROM are *global*: usable in FROM lines only,
//!   unless a stage declares the same ARG again (`ARG NAME` without a value
//!   then takes the global value);
//! * `--build-arg` values replace ARG defaults, but only for declared ARGs;
//!   the rest are reported as unused;
//! * ENV wins over an ARG of the same name from its line on, and is
//!   inherited by stages built on this one (ARGs are not);
//! * the platform ARGs (`TARGETPLATFORM`, `TARGETOS`, `TARGETARCH`,
//!   `TARGETVARIANT`, `BUILDPLATFORM` and its parts) are set in the global
//!   scope automatically and in a stage once declared there; the proxy ARGs
//!   (`HTTP_PROXY`...) may be passed without being declared.
//!
//! Dependencies come from `FROM <stage>`, `COPY --from=<stage|index>` and
//! `RUN --mount=...,from=<stage>`. A `--from` naming no stage refers to an
//! image, as in BuildKit, if it is a valid image reference; otherwise (or
//! for an index out of range) it is an undefined stage. Loops between
//! stages are refused. [`StageGraph::plan`] returns only the stages a target
//! needs, in an order that respects dependencies and grouped into levels
//! whose stages can be built in parallel.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::OnceLock;

use regex::Regex;

use crate::ast::{Dockerfile, Instruction, Kind};
use crate::error::{Error, ErrorKind, Result};
use crate::shell::{Lexer, VarSource};

/// The proxy ARGs Docker passes through without an ARG line.
pub const PROXY_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// An OS/architecture/variant triple, as in `linux/arm/v7`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub arch: String,
    pub variant: String,
}

impl Platform {
    /// Parses `os/arch[/variant]`.
    pub fn parse(s: &str) -> Option<Platform> {
        let mut parts = s.split('/');
        let os = parts.next().filter(|p| !p.is_empty())?.to_string();
        let arch = parts.next().filter(|p| !p.is_empty())?.to_string();
        let variant = parts.next().unwrap_or("").to_string();
        parts
            .next()
            .is_none()
            .then_some(Platform { os, arch, variant })
    }

    /// The platform this program runs on, in OCI names.
    pub fn host() -> Platform {
        let (arch, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", ""),
            "x86" => ("386", ""),
            "aarch64" => ("arm64", ""),
            "arm" => ("arm", "v7"),
            "powerpc64" => ("ppc64le", ""),
            "s390x" => ("s390x", ""),
            "riscv64" => ("riscv64", ""),
            other => (other, ""),
        };
        Platform {
            os: std::env::consts::OS.to_string(),
            arch: arch.to_string(),
            variant: variant.to_string(),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

/// What the caller asks of a build.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// `--build-arg NAME=value`.
    pub build_args: BTreeMap<String, String>,
    /// Platform built for (`--platform`); the host's when `None`.
    pub target_platform: Option<Platform>,
    /// Platform building; the host's when `None`.
    pub build_platform: Option<Platform>,
    /// `--build-context NAME=...`, by [`context_key`] of the name: what a `FROM NAME`,
    /// `COPY --from=NAME` or `RUN --mount=from=NAME` reads instead of the stage or image
    /// of that name.
    pub named_contexts: BTreeMap<String, Named>,
}

/// What a named build context stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Named {
    /// `docker-image://REF`: that image.
    Image(String),
    /// A local directory (the executor knows where).
    Local,
}

/// The key a name is looked up by among named contexts: BuildKit's normalisation, the
/// familiar form of the reference without a `:latest` tag (`docker.io/library/alpine:latest`
/// and `alpine` are the same context); names that are not references are kept as given.
pub fn context_key(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    match berth_image::Reference::parse_name(&lower) {
        Ok(r) => {
            let f = r.familiar();
            f.strip_suffix(":latest").unwrap_or(&f).to_string()
        }
        Err(_) => lower,
    }
}

/// The automatic platform ARGs for a build.
pub fn platform_args(opts: &BuildOptions) -> BTreeMap<String, String> {
    let target = opts.target_platform.clone().unwrap_or_else(Platform::host);
    let build = opts.build_platform.clone().unwrap_or_else(Platform::host);
    let mut out = BTreeMap::new();
    for (prefix, p) in [("TARGET", &target), ("BUILD", &build)] {
        out.insert(format!("{prefix}PLATFORM"), p.to_string());
        out.insert(format!("{prefix}OS"), p.os.clone());
        out.insert(format!("{prefix}ARCH"), p.arch.clone());
        out.insert(format!("{prefix}VARIANT"), p.variant.clone());
    }
    out
}

/// Variables visible at one point: ENV values shadow ARG values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vars {
    /// ARGs in scope that have a value.
    pub args: BTreeMap<String, String>,
    /// ENV set by this Dockerfile (base-image ENV is the builder's to add).
    pub env: BTreeMap<String, String>,
    /// Every ARG name in scope, with or without a value, in the order first declared
    /// (a parent stage's first): the order BuildKit lists them in a RUN's history.
    pub declared: Vec<String>,
}

impl VarSource for Vars {
    fn lookup(&self, name: &str) -> Option<String> {
        self.env.get(name).or_else(|| self.args.get(name)).cloned()
    }
}

/// What a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// `FROM scratch`.
    Scratch,
    /// An earlier stage, by index.
    Stage(usize),
    /// An image reference.
    Image(String),
    /// A local named build context (by [`context_key`]): its files are the base.
    Context(String),
}

/// One instruction of a stage with the variables it sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub instruction: Instruction,
    /// Variables in scope *before* the instruction runs.
    pub vars: Vars,
    /// For an ARG: each name it declares with the value it took (`None`: declared
    /// without one), for its history line.
    pub declared_args: Vec<(String, Option<String>)>,
}

/// One build stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub index: usize,
    /// `AS name`, lower-cased as BuildKit does.
    pub name: Option<String>,
    /// The FROM argument after expansion.
    pub base_name: String,
    pub base: Base,
    /// `--platform` after expansion.
    pub platform: Option<String>,
    /// Line of the FROM.
    pub line: usize,
    /// The instructions after FROM.
    pub steps: Vec<Step>,
    /// Stages this one needs (base, `--from`, mounts), sorted, unique.
    pub deps: Vec<usize>,
    /// Images read by `--from`/mounts (not the base).
    pub images: Vec<String>,
    /// Variables at the end of the stage (ENV is inherited by children).
    pub final_vars: Vars,
}

impl Stage {
    /// The name used in messages: the stage name or its index.
    pub fn display_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.index.to_string())
    }
}

/// All stages of a Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageGraph {
    pub stages: Vec<Stage>,
    /// Global scope (what FROM lines see).
    pub global: Vars,
    /// `--build-arg`s that no ARG declared (BuildKit warns about these).
    pub unused_build_args: Vec<String>,
}

/// Stages a target needs, ready to schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The target stage.
    pub target: usize,
    /// Needed stages, every stage after those it depends on.
    pub order: Vec<usize>,
    /// `order` grouped: the stages of a level depend only on earlier levels.
    pub levels: Vec<Vec<usize>>,
}

fn reference_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        let component = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*";
        let host = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?";
        let re = format!(
            r"^(?:{host}/)?{component}(?:/{component})*(?::[A-Za-z0-9_][A-Za-z0-9_.-]*)?(?:@[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[0-9a-fA-F]{{32,}})?$"
        );
        Regex::new(&re).expect("static regex")
    })
}

/// Whether `s` is a syntactically valid image reference.
pub fn is_image_reference(s: &str) -> bool {
    // The tag's 128-character limit is checked here rather than as a
    // bounded repetition, which makes the compiled regex far larger and
    // its compilation a noticeable part of a cached build.
    let name = s.split('@').next().unwrap_or(s);
    let tag_ok = match name.rsplit_once(':') {
        Some((_, tag)) if !tag.contains('/') => tag.len() <= 128,
        _ => true,
    };
    tag_ok && reference_re().is_match(s)
}

struct Builder<'a> {
    file: &'a str,
    opts: &'a BuildOptions,
    lexer: Lexer,
    platform: BTreeMap<String, String>,
    consumed: BTreeSet<String>,
}

impl StageGraph {
    /// Builds the graph; `file` names the Dockerfile in errors. The
    /// Dockerfile should have passed validation ([`crate::parse`]).
    pub fn new(df: &Dockerfile, opts: &BuildOptions, file: &str) -> Result<StageGraph> {
        let mut b = Builder {
            file,
            opts,
            lexer: Lexer::new(df.escape),
            platform: platform_args(opts),
            consumed: BTreeSet::new(),
        };
        let mut global = Vars {
            args: b.platform.clone(),
            ..Vars::default()
        };
        let mut stages: Vec<Stage> = Vec::new();
        for inst in &df.instructions {
            match inst.kind {
                Kind::From => {
                    let stage = b.open_stage(inst, &global, &stages)?;
                    stages.push(stage);
                }
                _ => match stages.last_mut() {
                    Some(stage) => b.add_step(stage, inst, &global)?,
                    None if inst.kind == Kind::Arg => {
                        b.declare_args(inst, &mut global, None)?;
                    }
                    None => {
                        return Err(b.err(
                            inst.start_line,
                            ErrorKind::MissingFrom(inst.keyword.to_uppercase()),
                        ))
                    }
                },
            }
        }
        if stages.is_empty() {
            let line = df.instructions.last().map_or(1, |i| i.end_line);
            return Err(b.err(line, ErrorKind::NoStages));
        }
        for i in 0..stages.len() {
            b.resolve_deps(&mut stages, i)?;
        }
        let graph = StageGraph {
            unused_build_args: b.unused(),
            stages,
            global,
        };
        graph.check_cycles(file)?;
        Ok(graph)
    }

    /// The index of a stage by name (case-insensitive) or number.
    pub fn find(&self, name: &str) -> Option<usize> {
        let lower = name.to_ascii_lowercase();
        self.stages
            .iter()
            .position(|s| s.name.as_deref() == Some(lower.as_str()))
            .or_else(|| {
                name.parse::<usize>()
                    .ok()
                    .filter(|i| *i < self.stages.len())
            })
    }

    /// The stages `target` (a stage name; the last stage when `None`) needs.
    pub fn plan(&self, target: Option<&str>) -> std::result::Result<Plan, ErrorKind> {
        let target = match target {
            None => self.stages.len() - 1,
            Some(t) => self
                .find(t)
                .ok_or_else(|| ErrorKind::UnknownTarget(t.to_string()))?,
        };
        let mut order = Vec::new();
        let mut seen = BTreeSet::new();
        self.post_order(target, &mut seen, &mut order);
        let mut depth: BTreeMap<usize, usize> = BTreeMap::new();
        for &s in &order {
            let d = self.stages[s]
                .deps
                .iter()
                .map(|dep| depth.get(dep).map_or(0, |x| x + 1))
                .max()
                .unwrap_or(0);
            depth.insert(s, d);
        }
        let mut levels: Vec<Vec<usize>> = Vec::new();
        for &s in &order {
            let d = depth[&s];
            if levels.len() <= d {
                levels.resize(d + 1, Vec::new());
            }
            levels[d].push(s);
        }
        levels.iter_mut().for_each(|l| l.sort_unstable());
        Ok(Plan {
            target,
            order,
            levels,
        })
    }

    fn post_order(&self, s: usize, seen: &mut BTreeSet<usize>, out: &mut Vec<usize>) {
        if !seen.insert(s) {
            return;
        }
        for &d in &self.stages[s].deps {
            self.post_order(d, seen, out);
        }
        out.push(s);
    }

    fn check_cycles(&self, file: &str) -> Result<()> {
        // 0 = unvisited, 1 = on the current path, 2 = done.
        let mut state = vec![0u8; self.stages.len()];
        for start in 0..self.stages.len() {
            if let Some(s) = self.find_cycle(start, &mut state) {
                let stage = &self.stages[s];
                return Err(Error::new(
                    file,
                    stage.line,
                    ErrorKind::CyclicStages(stage.display_name()),
                ));
            }
        }
        Ok(())
    }

    fn find_cycle(&self, s: usize, state: &mut [u8]) -> Option<usize> {
        match state[s] {
            1 => return Some(s),
            2 => return None,
            _ => {}
        }
        state[s] = 1;
        for &d in &self.stages[s].deps {
            if let Some(c) = self.find_cycle(d, state) {
                return Some(c);
            }
        }
        state[s] = 2;
        None
    }
}

impl Builder<'_> {
    fn err(&self, line: usize, kind: ErrorKind) -> Error {
        Error::new(self.file, line, kind)
    }

    fn expand(&self, word: &str, vars: &dyn VarSource, line: usize) -> Result<String> {
        self.lexer
            .expand_word(word, vars)
            .map_err(|e| self.err(line, ErrorKind::Expansion(e.to_string())))
    }

    /// Expands FROM's `--platform` and refuses what BuildKit refuses before
    /// building: an empty result (an ARG not declared globally) or a value
    /// that is not a platform.
    fn stage_platform(&self, raw: &str, global: &Vars, line: usize) -> Result<String> {
        let platform = self.expand(raw, global, line)?;
        if platform.is_empty() {
            return Err(self.err(
                line,
                ErrorKind::Args(format!("empty platform value from expression {raw}")),
            ));
        }
        if let Err(e) = berth_registry::client::manifest::Platform::parse(&platform) {
            return Err(self.err(
                line,
                ErrorKind::Args(format!("failed to parse platform {raw}: {e}")),
            ));
        }
        Ok(platform)
    }

    fn open_stage(
        &mut self,
        inst: &Instruction,
        global: &Vars,
        earlier: &[Stage],
    ) -> Result<Stage> {
        let line = inst.start_line;
        let raw = inst.args.first().map(String::as_str).unwrap_or("");
        let base_name = self.expand(raw, global, line)?;
        if base_name.is_empty() {
            return Err(self.err(
                line,
                ErrorKind::Args(format!("base name ({raw}) should not be blank")),
            ));
        }
        let platform = match inst.flag("platform") {
            Some(p) => Some(self.stage_platform(p, global, line)?),
            None => None,
        };
        let lower = base_name.to_ascii_lowercase();
        let named = self.opts.named_contexts.get(&context_key(&base_name));
        let base = if lower == "scratch" {
            Base::Scratch
        } else if let Some(n) = named {
            // A named context replaces even a stage of the same name (BuildKit's rule).
            match n {
                Named::Image(r) => Base::Image(r.clone()),
                Named::Local => Base::Context(context_key(&base_name)),
            }
        } else if let Some(i) = earlier
            .iter()
            .position(|s| s.name.as_deref() == Some(lower.as_str()))
        {
            Base::Stage(i)
        } else if is_image_reference(&base_name) {
            Base::Image(base_name.clone())
        } else {
            return Err(self.err(
                line,
                ErrorKind::Args(format!(
                    "failed to parse stage name {base_name:?}: invalid reference format"
                )),
            ));
        };
        // A stage inherits the ENV of the stage it is built on, and its ARGs with
        // their values too: BuildKit keeps both in the state a child stage starts from.
        let vars = match base {
            Base::Stage(i) => earlier[i].final_vars.clone(),
            _ => Vars::default(),
        };
        Ok(Stage {
            index: earlier.len(),
            name: inst.args.get(2).map(|n| n.to_ascii_lowercase()),
            base_name,
            base,
            platform,
            line,
            steps: Vec::new(),
            deps: Vec::new(),
            images: Vec::new(),
            final_vars: vars,
        })
    }

    fn add_step(&mut self, stage: &mut Stage, inst: &Instruction, global: &Vars) -> Result<()> {
        let before = stage.final_vars.clone();
        let mut declared_args = Vec::new();
        match inst.kind {
            Kind::Arg => {
                declared_args = self.declare_args(inst, &mut stage.final_vars, Some(global))?;
            }
            Kind::Env => {
                for (k, v) in inst.key_values() {
                    let value = self.expand(v, &stage.final_vars, inst.start_line)?;
                    stage.final_vars.env.insert(k.to_string(), value);
                }
            }
            _ => {}
        }
        stage.steps.push(Step {
            instruction: inst.clone(),
            vars: before,
            declared_args,
        });
        Ok(())
    }

    /// Declares the ARGs of one ARG line into `scope`; returns each name with the
    /// value it took. In a stage, `global` provides the value of a redeclared global
    /// ARG. A default is expanded with the ENV in force too, as BuildKit does.
    fn declare_args(
        &mut self,
        inst: &Instruction,
        scope: &mut Vars,
        global: Option<&Vars>,
    ) -> Result<Vec<(String, Option<String>)>> {
        let mut declared = Vec::new();
        for word in &inst.args {
            let (name, default) = match word.split_once('=') {
                Some((n, d)) => (n.to_string(), Some(d)),
                None => (word.clone(), None),
            };
            self.consumed.insert(name.clone());
            let value = if let Some(v) = self.opts.build_args.get(&name) {
                Some(v.clone())
            } else if let Some(d) = default {
                Some(self.expand(d, &*scope, inst.start_line)?)
            } else if let Some(v) = global.and_then(|g| g.args.get(&name)) {
                Some(v.clone())
            } else {
                self.platform.get(&name).cloned()
            };
            match &value {
                Some(v) => scope.args.insert(name.clone(), v.clone()),
                None => scope.args.remove(&name),
            };
            if !scope.declared.contains(&name) {
                scope.declared.push(name.clone());
            }
            declared.push((name, value));
        }
        Ok(declared)
    }

    fn unused(&self) -> Vec<String> {
        self.opts
            .build_args
            .keys()
            .filter(|k| !self.consumed.contains(*k) && !PROXY_ARGS.contains(&k.as_str()))
            .cloned()
            .collect()
    }

    /// Collects the stages and images stage `i` reads.
    fn resolve_deps(&self, stages: &mut [Stage], i: usize) -> Result<()> {
        let mut deps = BTreeSet::new();
        let mut images = Vec::new();
        if let Base::Stage(b) = stages[i].base {
            deps.insert(b);
        }
        for step in &stages[i].steps {
            let inst = &step.instruction;
            for reference in references(inst) {
                let r = self.expand(&reference, &step.vars, inst.start_line)?;
                match self.opts.named_contexts.get(&context_key(&r)) {
                    Some(Named::Image(image)) => {
                        images.push(image.clone());
                        continue;
                    }
                    Some(Named::Local) => continue,
                    None => {}
                }
                match lookup_stage(stages, &r) {
                    Some(s) => {
                        deps.insert(s);
                    }
                    None if r.parse::<usize>().is_err() && is_image_reference(&r) => images.push(r),
                    None => return Err(self.err(inst.start_line, ErrorKind::UndefinedStage(r))),
                }
            }
        }
        stages[i].deps = deps.into_iter().collect();
        stages[i].images = images;
        Ok(())
    }
}

fn lookup_stage(stages: &[Stage], r: &str) -> Option<usize> {
    if let Ok(n) = r.parse::<usize>() {
        return (n < stages.len()).then_some(n);
    }
    let lower = r.to_ascii_lowercase();
    stages
        .iter()
        .position(|s| s.name.as_deref() == Some(lower.as_str()))
}

/// The stage references of an instruction: `COPY --from=x` and every
/// `RUN --mount=...,from=x`.
fn references(inst: &Instruction) -> Vec<String> {
    let mut out = Vec::new();
    if inst.kind == Kind::Copy {
        out.extend(inst.flag("from").map(String::from));
    }
    if inst.kind == Kind::Run {
        for mount in inst.flag_values("mount") {
            out.extend(
                mount
                    .split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .filter(|(k, _)| k.trim().eq_ignore_ascii_case("from"))
                    .map(|(_, v)| v.trim().to_string()),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse;

    fn graph(text: &str, args: &[(&str, &str)]) -> Result<StageGraph> {
        let df = parse(text, "Dockerfile")?;
        let opts = BuildOptions {
            build_args: args
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            target_platform: Platform::parse("linux/arm64"),
            build_platform: Platform::parse("linux/amd64"),
            ..Default::default()
        };
        StageGraph::new(&df, &opts, "Dockerfile")
    }

    #[test]
    fn named_contexts_replace_stages_and_images() {
        assert_eq!(context_key("docker.io/library/alpine:latest"), "alpine");
        assert_eq!(context_key("Alpine:3.18"), "alpine:3.18");
        assert_eq!(context_key("quay.io/x/y"), "quay.io/x/y");
        let df = parse(
            "FROM scratch AS base\nFROM base\nCOPY --from=extra a b\n\
             FROM alpine:latest\nCOPY --from=docker.io/library/tool x y\nFROM extra\n",
            "Dockerfile",
        )
        .unwrap();
        let opts = BuildOptions {
            named_contexts: [
                ("base", Named::Image("busybox".into())),
                ("extra", Named::Local),
                ("alpine", Named::Image("bb".into())),
                ("tool", Named::Image("t2".into())),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
            ..Default::default()
        };
        let g = StageGraph::new(&df, &opts, "Dockerfile").unwrap();
        assert_eq!(g.stages[1].base, Base::Image("busybox".into()));
        assert!(
            g.stages[1].deps.is_empty(),
            "the named context replaces stage 0"
        );
        assert!(g.stages[1].images.is_empty());
        assert_eq!(g.stages[2].base, Base::Image("bb".into()));
        assert_eq!(g.stages[2].images, vec!["t2".to_string()]);
        assert_eq!(g.stages[3].base, Base::Context("extra".into()));
        assert_eq!(g.plan(None).unwrap().order, vec![3]);
    }

    #[test]
    fn global_args_only_in_from_unless_redeclared() {
        let g = graph(
            "ARG TAG=1.0\nARG OTHER=x\nFROM alpine:${TAG}\nRUN a\nARG TAG\nRUN b\n",
            &[],
        )
        .unwrap();
        let s = &g.stages[0];
        assert_eq!(s.base, Base::Image("alpine:1.0".into()));
        assert_eq!(s.steps[0].vars.lookup("TAG"), None);
        assert_eq!(s.steps[0].vars.lookup("OTHER"), None);
        assert_eq!(s.steps[2].vars.lookup("TAG").as_deref(), Some("1.0"));
    }

    #[test]
    fn a_child_stage_inherits_the_parents_args() {
        let g = graph(
            "ARG VER=1.0\nFROM img AS base\nARG VER\nARG ONLY\nFROM base\nARG MINE=m\nRUN x\n",
            &[("VER", "2.0")],
        )
        .unwrap();
        let child = &g.stages[1];
        assert_eq!(child.steps[1].vars.lookup("VER").as_deref(), Some("2.0"));
        assert_eq!(child.steps[1].vars.declared, ["VER", "ONLY", "MINE"]);
        // A stage on an image starts with no ARG in scope.
        let g = graph("FROM img AS a\nARG A=1\nFROM img\nRUN x\n", &[]).unwrap();
        assert_eq!(g.stages[1].steps[0].vars.lookup("A"), None);
        assert!(g.stages[1].steps[0].vars.declared.is_empty());
    }

    #[test]
    fn args_record_the_values_they_took_and_defaults_see_env() {
        let g = graph(
            "ARG G=glob\nFROM img\nENV E=env\nARG G D=${E}-x N L=def\nARG L=again\n",
            &[("L", "cli")],
        )
        .unwrap();
        let s = &g.stages[0];
        assert_eq!(
            s.steps[1].declared_args,
            [
                ("G".to_string(), Some("glob".to_string())),
                ("D".into(), Some("env-x".into())),
                ("N".into(), None),
                ("L".into(), Some("cli".into())),
            ]
        );
        // A name declared twice keeps its first place.
        assert_eq!(s.final_vars.declared, ["G", "D", "N", "L"]);
    }

    #[test]
    fn build_args_override_defaults_and_unused_are_reported() {
        let g = graph(
            "ARG V=1\nFROM img:$V\nARG W=2\nRUN x\n",
            &[("V", "9"), ("W", "8"), ("Z", "0"), ("http_proxy", "p")],
        )
        .unwrap();
        assert_eq!(g.stages[0].base_name, "img:9");
        assert_eq!(g.stages[0].steps[1].vars.lookup("W").as_deref(), Some("8"));
        assert_eq!(g.unused_build_args, vec!["Z"]);
    }

    #[test]
    fn env_overrides_arg_and_is_inherited() {
        let g = graph(
            "FROM a AS base\nENV X=env\nARG X=arg\nRUN x\nFROM base\nRUN y\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            g.stages[0].steps[2].vars.lookup("X").as_deref(),
            Some("env")
        );
        assert_eq!(g.stages[1].base, Base::Stage(0));
        assert_eq!(
            g.stages[1].steps[0].vars.lookup("X").as_deref(),
            Some("env")
        );
    }

    #[test]
    fn from_platform_must_expand_to_a_platform() {
        let opts = BuildOptions::default();
        let graph = |text: &str| {
            let df = crate::parser::parse(text, "Dockerfile").unwrap();
            StageGraph::new(&df, &opts, "Dockerfile").map(|_| ())
        };
        // An ARG declared inside a stage is not seen by a later FROM.
        let e = graph("FROM busybox\nARG P=linux/arm64\nFROM --platform=$P busybox\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Dockerfile:3: empty platform value from expression $P"
        );
        let e = graph("ARG P=linux/\nFROM --platform=$P busybox\n").unwrap_err();
        assert!(e
            .to_string()
            .starts_with("Dockerfile:2: failed to parse platform $P"));
        assert!(graph("ARG P=linux/arm64\nFROM --platform=$P busybox\n").is_ok());
    }

    #[test]
    fn platform_args() {
        let g = graph(
            "FROM --platform=$BUILDPLATFORM img:$TARGETARCH\nRUN a\nARG TARGETOS\nRUN b\n",
            &[],
        )
        .unwrap();
        let s = &g.stages[0];
        assert_eq!(s.platform.as_deref(), Some("linux/amd64"));
        assert_eq!(s.base_name, "img:arm64");
        assert_eq!(s.steps[0].vars.lookup("TARGETARCH"), None);
        assert_eq!(s.steps[2].vars.lookup("TARGETOS").as_deref(), Some("linux"));
    }

    #[test]
    fn dependencies_and_plan() {
        let text = "FROM scratch AS a\nFROM scratch AS b\nFROM a AS c\nCOPY --from=b / /\nFROM scratch AS unused\nFROM scratch\nRUN --mount=type=bind,from=c,target=/x true\nCOPY --from=0 / /\nCOPY --from=busybox:1 / /\n";
        let g = graph(text, &[]).unwrap();
        assert_eq!(g.stages[2].deps, vec![0, 1]);
        assert_eq!(g.stages[4].deps, vec![0, 2]);
        assert_eq!(g.stages[4].images, vec!["busybox:1"]);
        let plan = g.plan(None).unwrap();
        assert_eq!(plan.order, vec![0, 1, 2, 4]);
        assert_eq!(plan.levels, vec![vec![0, 1], vec![2], vec![4]]);
        let plan = g.plan(Some("C")).unwrap();
        assert_eq!(plan.order, vec![0, 1, 2]);
        assert_eq!(
            g.plan(Some("nope")).unwrap_err(),
            ErrorKind::UnknownTarget("nope".into())
        );
    }

    #[test]
    fn undefined_stage_and_cycles() {
        let e = graph("FROM scratch\nCOPY --from=5 / /\n", &[]).unwrap_err();
        assert_eq!(e.to_string(), "Dockerfile:2: undefined stage in --from: 5");
        let e = graph("FROM scratch\nCOPY --from=Not_An_Image! / /\n", &[]).unwrap_err();
        assert_eq!(e.line, 2);
        let e = graph(
            "FROM scratch AS a\nCOPY --from=b / /\nFROM scratch AS b\nCOPY --from=a / /\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "Dockerfile:1: circular dependency detected on stage: a"
        );
    }

    #[test]
    fn expansion_errors_are_located() {
        let e = graph("ARG X\nFROM img:${X:?must_set_X}\n", &[]).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.to_string().contains("X: must_set_X"), "{e}");
    }

    #[test]
    fn image_references() {
        assert!(is_image_reference("docker.io/library/alpine:3.19"));
        assert!(is_image_reference("localhost:5000/a/b@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"));
        assert!(!is_image_reference("Alpine"));
        assert!(!is_image_reference("a b"));
        assert!(is_image_reference(&format!("a:{}", "t".repeat(128))));
        assert!(!is_image_reference(&format!("a:{}", "t".repeat(129))));
    }
}
