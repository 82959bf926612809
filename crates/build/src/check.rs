//! `docker build --check`: BuildKit's lint rules that can be decided from
//! the Dockerfile alone.
//!
//! Rule names, messages and documentation links are BuildKit's, so a
//! `# check=skip=RuleName` directive written for Docker works here too.
//! Rules that need the base image's configuration (UndefinedVar in stages
//! built on images, InvalidBaseImagePlatform) are only applied where it is
//! known without pulling: UndefinedVar runs for stages rooted in `scratch` or
//! in an image whose environment the caller can look up (the local store).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::OnceLock;

use regex::Regex;

use crate::ast::{Dockerfile, Instruction, Kind};
use crate::parser::parse_raw;
use crate::shell::{Lexer, VarSource};
use crate::stages::{BuildOptions, PROXY_ARGS};

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// BuildKit's rule name (`StageNameCasing`...), or `ParseError`.
    pub rule: &'static str,
    /// The message, as BuildKit words it.
    pub message: String,
    /// The file name the caller gave.
    pub file: String,
    /// 1-based line.
    pub line: usize,
}

impl Diagnostic {
    /// The rule's documentation page.
    pub fn url(&self) -> String {
        let mut slug = String::new();
        for (i, c) in self.rule.chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                slug.push('-');
            }
            slug.push(c.to_ascii_lowercase());
        }
        format!("https://docs.docker.com/go/dockerfile/rule/{slug}/")
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.file, self.line, self.rule, self.message
        )
    }
}

/// Lints a Dockerfile. A file that does not parse yields one `ParseError`.
pub fn check(text: &str, file: &str) -> Vec<Diagnostic> {
    check_with(text, file, None).0
}

/// [`check`], with the `check` directive's settings also taken from `setting` (the
/// `BUILDKIT_DOCKERFILE_CHECK` build argument, which wins over the file); and whether
/// they say findings fail the build (`error=true`).
pub fn check_with(text: &str, file: &str, setting: Option<&str>) -> (Vec<Diagnostic>, bool) {
    check_against(text, file, setting, &|_| None)
}

/// [`check_with`], knowing the environment variable names of the base images that
/// `base_env` finds (by the name FROM gives, global ARG defaults expanded): stages built
/// on them get UndefinedVar as BuildKit, which reads the image's config, gives it.
pub fn check_against(
    text: &str,
    file: &str,
    setting: Option<&str>,
    base_env: &dyn Fn(&str) -> Option<Vec<String>>,
) -> (Vec<Diagnostic>, bool) {
    let df = match parse_raw(text, file) {
        Ok(df) => df,
        Err(e) => {
            let d = Diagnostic {
                rule: "ParseError",
                message: e.kind.to_string(),
                file: file.to_string(),
                line: e.line,
            };
            return (vec![d], false);
        }
    };
    let mut lint = Linter {
        file,
        out: Vec::new(),
        defaults: BTreeMap::new(),
        base_env,
    };
    lint.casing(&df);
    lint.stages(&df);
    for w in &df.warnings {
        lint.push(
            "NoEmptyContinuation",
            w.line,
            "Empty continuation line".into(),
        );
    }
    if let Err(e) = crate::instructions::validate(&df, file) {
        lint.out.retain(|d| reached_before_error(d, e.line));
    }
    let settings = setting.or(df.directive("check")).unwrap_or("");
    let (skip, error) = check_settings(settings);
    let mut out: Vec<Diagnostic> = lint
        .out
        .into_iter()
        .filter(|d| !skip.contains("all") && !skip.contains(d.rule))
        .collect();
    out.sort_by_key(|d| d.line);
    (out, error)
}

/// Whether BuildKit still reports `d` when instruction validation fails at
/// `error_line`: its parser's warnings come first, and the rules it checks
/// while parsing instructions (FROM's names, MAINTAINER) only for those before
/// the failing one; everything else runs after parsing succeeded.
fn reached_before_error(d: &Diagnostic, error_line: usize) -> bool {
    match d.rule {
        "NoEmptyContinuation" => true,
        "StageNameCasing" | "FromAsCasing" | "MaintainerDeprecated" => d.line < error_line,
        _ => false,
    }
}

/// `skip=A,B;error=true`: the rules switched off, and whether findings are errors.
fn check_settings(value: &str) -> (BTreeSet<&str>, bool) {
    let mut skip = BTreeSet::new();
    let mut error = false;
    for part in value.split(';').map(str::trim) {
        if let Some(list) = part.strip_prefix("skip=") {
            skip.extend(list.split(',').map(str::trim));
        } else if let Some(v) = part.strip_prefix("error=") {
            error = v.trim() == "true";
        }
    }
    (skip, error)
}

fn is_upper(s: &str) -> bool {
    s == s.to_uppercase()
}

fn is_lower(s: &str) -> bool {
    s == s.to_lowercase()
}

struct Linter<'a> {
    file: &'a str,
    out: Vec<Diagnostic>,
    /// Global ARGs' default values (and the platform ARGs'), for the base names.
    defaults: BTreeMap<String, String>,
    /// The environment variable names of a base image, when the caller knows them.
    base_env: &'a dyn Fn(&str) -> Option<Vec<String>>,
}

/// What the lint tracks through one stage.
#[derive(Default)]
struct StageState {
    name: Option<String>,
    /// Line and keyword (as written) of each CMD, ENTRYPOINT and HEALTHCHECK.
    singles: BTreeMap<&'static str, Vec<(usize, String)>>,
    /// A SHELL was set here or in the stage this one is built on (BuildKit
    /// looks at the image config's Shell, which stages inherit).
    has_shell: bool,
    /// A WORKDIR was set here or in the parent stage: BuildKit checks only
    /// the first one for a relative path.
    workdir_set: bool,
    /// ARG and ENV names declared so far (ENV ones are inherited).
    declared: BTreeSet<String>,
    env_names: BTreeSet<String>,
    /// Whether everything the stage inherits is known (rooted in scratch).
    known_base: bool,
}

impl Linter<'_> {
    fn push(&mut self, rule: &'static str, line: usize, message: String) {
        self.out.push(Diagnostic {
            rule,
            message,
            file: self.file.to_string(),
            line,
        });
    }

    /// ConsistentInstructionCasing: keywords should share the majority case.
    /// BuildKit counts and checks the stages' instructions only, so the
    /// global ARGs before the first FROM take no part.
    fn casing(&mut self, df: &Dockerfile) {
        let first_from = df
            .instructions
            .iter()
            .position(|i| i.kind == Kind::From)
            .unwrap_or(df.instructions.len());
        let staged = &df.instructions[first_from..];
        let upper = staged.iter().filter(|i| is_upper(&i.keyword)).count();
        let lower = staged.iter().filter(|i| is_lower(&i.keyword)).count();
        let (want_upper, name) = if upper >= lower {
            (true, "uppercase")
        } else {
            (false, "lowercase")
        };
        for i in staged {
            let ok = if want_upper {
                is_upper(&i.keyword)
            } else {
                is_lower(&i.keyword)
            };
            if !ok {
                let msg = format!(
                    "Command '{}' should match the case of the command majority ({name})",
                    i.keyword
                );
                self.push("ConsistentInstructionCasing", i.start_line, msg);
            }
        }
    }

    fn stages(&mut self, df: &Dockerfile) {
        let platform: BTreeMap<String, String> =
            crate::stages::platform_args(&BuildOptions::default());
        let mut global: BTreeSet<String> = platform.keys().cloned().collect();
        self.defaults = platform.clone();
        let mut names: BTreeSet<String> = BTreeSet::new();
        let mut finished: BTreeMap<String, StageState> = BTreeMap::new();
        let mut stage: Option<StageState> = None;
        for inst in &df.instructions {
            if inst.kind == Kind::From {
                if let Some(done) = stage.take() {
                    self.end_stage(&done);
                    if let Some(n) = &done.name {
                        finished.insert(n.clone(), done);
                    }
                }
                stage = Some(self.from(inst, &global, &mut names, &finished));
                continue;
            }
            match stage.as_mut() {
                None => {
                    if inst.kind == Kind::Arg {
                        // No SecretsUsedInArgOrEnv here: BuildKit runs it when
                        // a stage declares the ARG, not for global ones.
                        global.extend(arg_names(inst));
                        for a in &inst.args {
                            let (k, v) = a.split_once('=').unwrap_or((a, ""));
                            let v = crate::shell::expand_word(v, &self.defaults)
                                .unwrap_or_else(|_| v.to_string());
                            self.defaults.insert(k.to_string(), v);
                        }
                    }
                }
                Some(st) => self.instruction(inst, st),
            }
        }
        if let Some(done) = stage {
            self.end_stage(&done);
        }
    }

    fn from(
        &mut self,
        inst: &Instruction,
        global: &BTreeSet<String>,
        names: &mut BTreeSet<String>,
        finished: &BTreeMap<String, StageState>,
    ) -> StageState {
        let line = inst.start_line;
        let mut st = StageState::default();
        if inst.args.len() == 3 {
            let (from, as_kw, name) = (&inst.keyword, &inst.args[1], &inst.args[2]);
            if (is_upper(from) && !is_upper(as_kw)) || (is_lower(from) && !is_lower(as_kw)) {
                self.push(
                    "FromAsCasing",
                    line,
                    format!("'{as_kw}' and '{from}' keywords' casing do not match"),
                );
            }
            if !is_lower(name) {
                self.push(
                    "StageNameCasing",
                    line,
                    format!("Stage name '{name}' should be lowercase"),
                );
            }
            let lower = name.to_lowercase();
            if !names.insert(lower.clone()) {
                self.push(
                    "DuplicateStageName",
                    line,
                    format!("Duplicate stage name \"{lower}\", stage names should be unique"),
                );
            }
            if lower == "scratch" || lower == "context" {
                self.push(
                    "ReservedStageName",
                    line,
                    format!(
                        "Stage name should not use the same name as reserved stage \"{lower}\""
                    ),
                );
            }
            st.name = Some(lower);
        }
        let base = inst.args.first().map(String::as_str).unwrap_or("");
        let mut words = vec![base];
        if let Some(p) = inst.flag("platform") {
            words.push(p);
            self.platform_flag(inst, p);
        }
        let missing = undefined(&words, global);
        for var in &missing {
            let hint = did_you_mean(suggest(var, global, true), "");
            self.push(
                "UndefinedArgInFrom",
                line,
                format!("FROM argument '{var}' is not declared{hint}"),
            );
        }
        if missing.is_empty() && base.contains('$') {
            let named = crate::shell::expand_word(base, &self.defaults)
                .ok()
                .filter(|b| berth_image::Reference::parse(b).is_ok());
            if named.is_none() {
                self.push(
                    "InvalidDefaultArgInFrom",
                    line,
                    format!(
                        "Default value for ARG {base} results in empty or invalid base image name"
                    ),
                );
            }
        }
        let lower_base = base.to_lowercase();
        if lower_base == "scratch" {
            st.known_base = true;
            // BuildKit's empty image still sets PATH in its config.
            st.env_names.insert("PATH".to_string());
            st.declared.insert("PATH".to_string());
        } else if let Some(parent) = finished.get(&lower_base) {
            st.known_base = parent.known_base;
            st.workdir_set = parent.workdir_set;
            st.has_shell = parent.has_shell;
            st.env_names = parent.env_names.clone();
            st.declared = parent.env_names.clone();
        } else if let Some(env) = crate::shell::expand_word(base, &self.defaults)
            .ok()
            .and_then(|name| (self.base_env)(&name))
        {
            st.known_base = true;
            st.env_names = env.into_iter().collect();
            st.declared = st.env_names.clone();
        }
        st
    }

    fn platform_flag(&mut self, inst: &Instruction, platform: &str) {
        let line = inst.start_line;
        if platform == "$TARGETPLATFORM" || platform == "${TARGETPLATFORM}" {
            self.push(
                "RedundantTargetPlatform",
                line,
                format!("Setting platform to predefined {platform} in FROM is redundant as this is the default behavior"),
            );
        } else if !platform.contains('$') {
            // As BuildKit: a value that does not parse is left to fail later,
            // and a stage whose name holds the OS or the architecture
            // (build-arm64, linux) is deliberate.
            let Ok(parsed) = berth_registry::client::manifest::Platform::parse(platform) else {
                return;
            };
            let name = inst
                .args
                .get(2)
                .map(|n| n.to_lowercase())
                .unwrap_or_default();
            let named_for_it = name.contains(&parsed.os) || name.contains(&parsed.architecture);
            if !named_for_it {
                self.push(
                    "FromPlatformFlagConstDisallowed",
                    line,
                    format!("FROM --platform flag should not use constant value \"{platform}\""),
                );
            }
        }
    }

    fn instruction(&mut self, inst: &Instruction, st: &mut StageState) {
        let line = inst.start_line;
        if st.known_base {
            self.undefined_vars(inst, st);
        }
        match inst.kind {
            Kind::Cmd | Kind::Entrypoint | Kind::Healthcheck => {
                st.singles
                    .entry(inst.kind.name())
                    .or_default()
                    .push((line, inst.keyword.clone()));
                if inst.kind != Kind::Healthcheck
                    && !inst.json
                    && !inst.args.is_empty()
                    && !st.has_shell
                {
                    // BuildKit names the instruction as it is written (`cmd`).
                    let msg = format!(
                        "JSON arguments recommended for {} to prevent unintended behavior related to OS signals",
                        inst.keyword
                    );
                    self.push("JSONArgsRecommended", line, msg);
                }
            }
            Kind::Shell => st.has_shell = true,
            Kind::Maintainer => self.push(
                "MaintainerDeprecated",
                line,
                "Maintainer instruction is deprecated in favor of using label".into(),
            ),
            Kind::Env | Kind::Label => {
                if inst.is_legacy_key_value() {
                    let kw = &inst.keyword;
                    let msg = format!("\"{kw} key=value\" should be used instead of legacy \"{kw} key value\" format");
                    self.push("LegacyKeyValueFormat", line, msg);
                }
                if inst.kind == Kind::Env {
                    self.secrets(inst);
                    for (k, _) in inst.key_values() {
                        st.declared.insert(k.to_string());
                        st.env_names.insert(k.to_string());
                    }
                }
            }
            Kind::Arg => {
                self.secrets(inst);
                st.declared.extend(arg_names(inst));
            }
            Kind::Workdir => {
                // Only the stage's first WORKDIR is checked: fixing it fixes
                // the relative ones after it. A path starting with a variable
                // is taken as absolute (its value may come from the image).
                let dir = inst.args.first().map(String::as_str).unwrap_or("");
                let absolute = dir.starts_with('/') || dir.starts_with('$');
                if !st.workdir_set && !absolute {
                    self.push(
                        "WorkdirRelativePath",
                        line,
                        format!("Relative workdir \"{dir}\" can have unexpected results if the base image changes"),
                    );
                }
                st.workdir_set = true;
            }
            Kind::Expose => {
                for port in inst.args.iter().filter(|p| p.contains(':')) {
                    let msg = format!("EXPOSE instruction should not define an IP address or host-port mapping, found '{port}'");
                    self.push("ExposeInvalidFormat", line, msg);
                }
                for port in &inst.args {
                    if let Some((_, proto)) = port.split_once('/') {
                        if !is_lower(proto) {
                            let msg = format!("Defined protocol '{port}' in EXPOSE instruction should be lowercase");
                            self.push("ExposeProtoCasing", line, msg);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// UndefinedVar, for instructions the front end expands itself.
    fn undefined_vars(&mut self, inst: &Instruction, st: &StageState) {
        let expanded = matches!(
            inst.kind,
            Kind::Add
                | Kind::Copy
                | Kind::Env
                | Kind::Expose
                | Kind::Label
                | Kind::StopSignal
                | Kind::User
                | Kind::Volume
                | Kind::Workdir
        ) || (inst.kind == Kind::Arg);
        if !expanded || inst.json && inst.kind != Kind::Copy && inst.kind != Kind::Add {
            return;
        }
        let words: Vec<&str> = match inst.kind {
            Kind::Env | Kind::Label => inst.key_values().into_iter().map(|(_, v)| v).collect(),
            Kind::Arg => inst
                .args
                .iter()
                .filter_map(|a| a.split_once('=').map(|(_, d)| d))
                .collect(),
            _ => inst.args.iter().map(String::as_str).collect(),
        };
        let mut known = st.declared.clone();
        known.extend(PROXY_ARGS.iter().map(|s| s.to_string()));
        for var in undefined(&words, &known) {
            let hint = did_you_mean(suggest(&var, &st.declared, true), "$");
            self.push(
                "UndefinedVar",
                inst.start_line,
                format!("Usage of undefined variable '${var}'{hint}"),
            );
        }
    }

    fn end_stage(&mut self, st: &StageState) {
        // BuildKit reports the earlier instruction's line, named as the
        // later one is written.
        for seen in st.singles.values() {
            for pair in seen.windows(2) {
                let (line, later) = (pair[0].0, &pair[1].1);
                let msg = format!(
                    "Multiple {later} instructions should not be used in the same stage because only the last one will be used"
                );
                self.push("MultipleInstructionsDisallowed", line, msg);
            }
        }
    }

    /// SecretsUsedInArgOrEnv.
    fn secrets(&mut self, inst: &Instruction) {
        let names: Vec<String> = match inst.kind {
            Kind::Env => inst
                .key_values()
                .iter()
                .map(|(k, _)| k.to_string())
                .collect(),
            _ => arg_names(inst),
        };
        for name in names {
            if looks_secret(&name) {
                let msg = format!(
                    "Do not use ARG or ENV instructions for sensitive data ({} \"{name}\")",
                    inst.kind
                );
                self.push("SecretsUsedInArgOrEnv", inst.start_line, msg);
            }
        }
    }
}

fn arg_names(inst: &Instruction) -> Vec<String> {
    inst.args
        .iter()
        .map(|a| a.split('=').next().unwrap_or_default().to_string())
        .collect()
}

/// Whether a variable name suggests a secret (a `_`-separated part such as
/// `PASSWORD`, `TOKEN`, `KEY`), unless it says it is public.
fn looks_secret(name: &str) -> bool {
    static DENY: OnceLock<Regex> = OnceLock::new();
    static ALLOW: OnceLock<Regex> = OnceLock::new();
    let deny = DENY.get_or_init(|| {
        Regex::new(r"(?i)(?:_|^)(?:apikey|auth|credential|credentials|key|password|pword|passwd|secret|token)(?:_|$)")
            .expect("static regex")
    });
    let allow =
        ALLOW.get_or_init(|| Regex::new(r"(?i)(?:_|^)public(?:_|$)").expect("static regex"));
    deny.is_match(name) && !allow.is_match(name)
}

/// BuildKit's `suggest.Search`: the closest option within an edit distance
/// of 2, none for an exact match; without `case_sensitive` the match takes
/// the casing of `val` when that is all upper or all lower.
pub fn suggest<'a>(
    val: &str,
    options: impl IntoIterator<Item = &'a String>,
    case_sensitive: bool,
) -> Option<String> {
    let fold = |s: &str| {
        if case_sensitive {
            s.to_string()
        } else {
            s.to_lowercase()
        }
    };
    let wanted = fold(val);
    let mut best: Option<String> = None;
    let mut min = 3;
    for opt in options {
        let opt = fold(opt);
        if opt == wanted {
            return None;
        }
        let dist = strsim::levenshtein(&wanted, &opt);
        if dist < min {
            min = dist;
            best = Some(if case_sensitive {
                opt
            } else {
                match_case(&opt, val)
            });
        }
    }
    best
}

fn match_case(found: &str, original: &str) -> String {
    if is_lower(original) {
        found.to_lowercase()
    } else if is_upper(original) {
        found.to_uppercase()
    } else {
        found.to_string()
    }
}

/// ` (did you mean PREFIXmatch?)`, or nothing.
fn did_you_mean(found: Option<String>, prefix: &str) -> String {
    found
        .map(|m| format!(" (did you mean {prefix}{m}?)"))
        .unwrap_or_default()
}

/// Variables the words use that are not in `known`, in first-use order.
fn undefined(words: &[&str], known: &BTreeSet<String>) -> Vec<String> {
    struct Known<'a>(&'a BTreeSet<String>);
    impl VarSource for Known<'_> {
        fn lookup(&self, name: &str) -> Option<String> {
            self.0.contains(name).then(String::new)
        }
    }
    let mut out: Vec<String> = Vec::new();
    for word in words {
        if let Ok(e) = Lexer::default().process(word, &Known(known)) {
            for v in e.unmatched {
                if !out.contains(&v) {
                    out.push(v);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> Vec<(&'static str, usize)> {
        check(text, "Dockerfile")
            .into_iter()
            .map(|d| (d.rule, d.line))
            .collect()
    }

    #[test]
    fn stage_names_and_from_casing() {
        let d = check(
            "FROM alpine as Build\nFROM scratch AS build\n",
            "Dockerfile",
        );
        let got: Vec<String> = d.iter().map(|d| d.to_string()).collect();
        assert_eq!(
            got,
            vec![
                "Dockerfile:1: FromAsCasing: 'as' and 'FROM' keywords' casing do not match",
                "Dockerfile:1: StageNameCasing: Stage name 'Build' should be lowercase",
                "Dockerfile:2: DuplicateStageName: Duplicate stage name \"build\", stage names should be unique",
            ]
        );
    }

    #[test]
    fn json_args_maintainer_and_multiples() {
        let r = rules("FROM a\nMAINTAINER me\nCMD echo hi\nCMD [\"x\"]\nENTRYPOINT [\"y\"]\nHEALTHCHECK NONE\nHEALTHCHECK NONE\n");
        assert_eq!(
            r,
            vec![
                ("MaintainerDeprecated", 2),
                ("JSONArgsRecommended", 3),
                ("MultipleInstructionsDisallowed", 3),
                ("MultipleInstructionsDisallowed", 6),
            ]
        );
        assert_eq!(
            d_url("MultipleInstructionsDisallowed"),
            "https://docs.docker.com/go/dockerfile/rule/multiple-instructions-disallowed/"
        );
    }

    fn d_url(rule: &'static str) -> String {
        Diagnostic {
            rule,
            message: String::new(),
            file: String::new(),
            line: 1,
        }
        .url()
    }

    #[test]
    fn undefined_args_in_from_and_vars() {
        let r = rules(
            "ARG TAG\nFROM alpine:$TAG\nFROM img:$NOPE AS x\nFROM scratch\nARG A\nCOPY $A $B /\n",
        );
        // `alpine:` (TAG has no default) is BuildKit's InvalidDefaultArgInFrom.
        assert_eq!(
            r,
            vec![
                ("InvalidDefaultArgInFrom", 2),
                ("UndefinedArgInFrom", 3),
                ("UndefinedVar", 6)
            ]
        );
        assert!(rules("FROM --platform=$BUILDPLATFORM a:$TARGETARCH\n").is_empty());
    }

    #[test]
    fn other_rules() {
        let r =
            rules("FROM scratch\nENV A b\nWORKDIR rel\nEXPOSE 80/TCP\nARG GITHUB_TOKEN\nrun x\n\n");
        assert_eq!(
            r,
            vec![
                ("LegacyKeyValueFormat", 2),
                ("WorkdirRelativePath", 3),
                ("ExposeProtoCasing", 4),
                ("SecretsUsedInArgOrEnv", 5),
                ("ConsistentInstructionCasing", 6),
            ]
        );
        assert_eq!(
            rules("FROM --platform=$TARGETPLATFORM a\n"),
            vec![("RedundantTargetPlatform", 1)]
        );
        assert_eq!(
            rules("FROM --platform=linux/amd64 a\n"),
            vec![("FromPlatformFlagConstDisallowed", 1)]
        );
        assert_eq!(
            rules("FROM a\nRUN a \\\n\n  b\n"),
            vec![("NoEmptyContinuation", 4)]
        );
        assert_eq!(
            rules("FROM a\nEXPOSE 80 127.0.0.1:8080:80 9090:90/udp\n"),
            vec![("ExposeInvalidFormat", 2), ("ExposeInvalidFormat", 2)]
        );
        // A global ARG without a default leaves `alpine:` (no tag); one with, or one
        // given a value by an earlier ARG, is fine.
        assert_eq!(
            rules("ARG TAG\nFROM alpine:${TAG}\n"),
            vec![("InvalidDefaultArgInFrom", 2)]
        );
        assert!(rules("ARG TAG=3.19\nFROM alpine:${TAG}\n").is_empty());
        assert!(rules("ARG V=3\nARG TAG=$V.19\nFROM alpine:$TAG\n").is_empty());
        assert!(rules("ARG IMG\nFROM ${IMG:-busybox}\n").is_empty());
    }

    fn messages(text: &str) -> Vec<String> {
        check(text, "Dockerfile")
            .into_iter()
            .map(|d| format!("{}:{}:{}", d.rule, d.line, d.message))
            .collect()
    }

    #[test]
    fn platform_constant_allowed_when_stage_names_os_or_arch() {
        assert!(rules("FROM --platform=linux/arm64 busybox AS linux-tools\n").is_empty());
        assert!(rules("FROM --platform=linux/x86_64 busybox AS amd64-tools\n").is_empty());
        assert_eq!(
            rules("FROM --platform=linux/arm64 busybox AS tools\n"),
            vec![("FromPlatformFlagConstDisallowed", 1)]
        );
        // Not a platform at all: BuildKit leaves it to fail later.
        assert!(rules("FROM --platform=a/b/c/d busybox\n").is_empty());
    }

    #[test]
    fn only_the_first_workdir_of_a_stage_is_checked() {
        assert_eq!(
            rules("FROM busybox\nWORKDIR src\nWORKDIR out\n"),
            vec![("WorkdirRelativePath", 2)]
        );
        assert!(
            rules("FROM busybox AS a\nWORKDIR src\nFROM a\nWORKDIR out\n")
                .iter()
                .all(|r| r.1 == 2)
        );
    }

    #[test]
    fn shell_of_the_parent_stage_counts_for_json_args() {
        assert!(
            rules("FROM busybox AS a\nSHELL [\"/bin/ash\", \"-c\"]\nFROM a\nCMD run-it\n")
                .is_empty()
        );
    }

    #[test]
    fn global_args_are_not_linted_as_stage_instructions() {
        // A lowercase global ARG neither counts for the casing majority nor
        // is checked; a secret-looking global ARG is not reported.
        assert!(rules("arg base=busybox\nARG API_TOKEN\nFROM $base\nRUN x\n").is_empty());
    }

    #[test]
    fn keywords_are_named_as_written() {
        let got = messages("from busybox\ncmd one\nenv k v\ncmd [\"two\"]\n");
        assert_eq!(
            got,
            vec![
                "JSONArgsRecommended:2:JSON arguments recommended for cmd to prevent unintended behavior related to OS signals",
                "MultipleInstructionsDisallowed:2:Multiple cmd instructions should not be used in the same stage because only the last one will be used",
                "LegacyKeyValueFormat:3:\"env key=value\" should be used instead of legacy \"env key value\" format",
            ]
        );
    }

    #[test]
    fn undefined_names_get_a_suggestion() {
        assert_eq!(
            messages("ARG VERSION=1\nFROM busybox:$VERSON\n"),
            vec!["UndefinedArgInFrom:2:FROM argument 'VERSON' is not declared (did you mean VERSION?)"]
        );
        assert_eq!(
            messages("FROM scratch\nARG DIR_FILES=f\nCOPY $DIR_FILE /\nCOPY $ZZZ /\n"),
            vec![
                "UndefinedVar:3:Usage of undefined variable '$DIR_FILE' (did you mean $DIR_FILES?)",
                "UndefinedVar:4:Usage of undefined variable '$ZZZ'",
            ]
        );
        assert_eq!(
            suggest("copyy", &["copy".to_string()], false).as_deref(),
            Some("copy")
        );
        assert_eq!(
            suggest("COPYY", &["copy".to_string()], false).as_deref(),
            Some("COPY")
        );
        assert_eq!(suggest("copy", &["copy".to_string()], false), None);
    }

    #[test]
    fn undefined_vars_in_stages_on_images_whose_environment_is_known() {
        let text = "ARG TAG=1\nFROM app:$TAG AS a\nCOPY $HOME$ZZZ /\nFROM other\nCOPY $ZZZ /\nFROM a\nENV X=$HOMEE\n";
        let known = |name: &str| (name == "app:1").then(|| vec!["PATH".into(), "HOME".into()]);
        let found: Vec<String> = check_against(text, "Dockerfile", None, &known)
            .0
            .into_iter()
            .map(|d| format!("{}:{}:{}", d.rule, d.line, d.message))
            .collect();
        assert_eq!(
            found,
            [
                "UndefinedVar:3:Usage of undefined variable '$ZZZ'",
                "UndefinedVar:7:Usage of undefined variable '$HOMEE' (did you mean $HOME?)",
            ],
            "`other` is not known: nothing is said of its stage"
        );
        assert!(check(text, "Dockerfile").is_empty());
    }

    #[test]
    fn scratch_has_path_in_its_environment() {
        assert_eq!(
            rules("FROM scratch AS a\nENV PATH=$PATH:/app\nFROM a\nCOPY $PATH$HOME /\n"),
            vec![("UndefinedVar", 4)]
        );
    }

    #[test]
    fn lints_stop_where_instruction_parsing_fails() {
        // BuildKit parses instructions before most rules run: an unknown
        // instruction leaves only the parser's warnings and the FROM and
        // MAINTAINER rules of the lines before it.
        assert_eq!(
            rules("FROM busybox AS Base\nMAINTAINER me\nbogus x\nMAINTAINER you\ncmd y\n"),
            vec![("StageNameCasing", 1), ("MaintainerDeprecated", 2)]
        );
    }

    #[test]
    fn skip_directive_and_parse_errors() {
        assert!(rules("# check=skip=MaintainerDeprecated\nFROM a\nMAINTAINER x\n").is_empty());
        assert!(rules("# check=skip=all\nFROM a AS B\n").is_empty());
        assert_eq!(rules("FROM a\nRUN <<EOF\n"), vec![("ParseError", 2)]);
    }
}
