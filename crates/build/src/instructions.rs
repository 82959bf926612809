//! Instruction-level validation: known keywords, allowed `--flags` with
//! well-formed values, argument counts and shapes.
//!
//! The parser accepts anything that is syntactically a line; this pass is
//! where BuildKit's `instructions` package refuses what cannot be built, and
//! its messages are kept so users see the errors they know.

use crate::ast::{Dockerfile, Instruction, Kind};
use crate::error::{Error, ErrorKind, Result};

/// How a flag takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagType {
    /// `--link` or `--link=true|false`.
    Bool,
    /// `--from=x`, once.
    String,
    /// `--mount=...`, repeatable.
    Strings,
}

/// The flags an instruction accepts.
pub fn allowed_flags(kind: Kind) -> &'static [(&'static str, FlagType)] {
    use FlagType::*;
    match kind {
        Kind::From => &[("platform", String)],
        Kind::Run => &[
            ("mount", Strings),
            ("network", String),
            ("security", String),
            ("device", Strings),
        ],
        Kind::Copy => &[
            ("from", String),
            ("chown", String),
            ("chmod", String),
            ("link", Bool),
            ("parents", Bool),
            ("exclude", Strings),
        ],
        Kind::Add => &[
            ("chown", String),
            ("chmod", String),
            ("link", Bool),
            ("keep-git-dir", Bool),
            ("checksum", String),
            ("exclude", Strings),
            ("unpack", Bool),
        ],
        Kind::Healthcheck => &[
            ("interval", String),
            ("timeout", String),
            ("start-period", String),
            ("start-interval", String),
            ("retries", String),
        ],
        _ => &[],
    }
}

/// Validates every instruction of a parsed file, and that the file has a
/// stage and that nothing but ARG comes before the first FROM.
pub fn validate(df: &Dockerfile, file: &str) -> Result<()> {
    let mut seen_from = false;
    for inst in &df.instructions {
        check_instruction(inst).map_err(|k| Error::new(file, inst.start_line, k))?;
        match inst.kind {
            Kind::From => seen_from = true,
            Kind::Arg => {}
            _ if !seen_from => {
                return Err(Error::new(
                    file,
                    inst.start_line,
                    ErrorKind::MissingFrom(inst.keyword.to_uppercase()),
                ))
            }
            _ => {}
        }
    }
    if !seen_from {
        let line = df.instructions.last().map_or(1, |i| i.end_line);
        return Err(Error::new(file, line, ErrorKind::NoStages));
    }
    Ok(())
}

/// Validates one instruction.
pub fn check_instruction(inst: &Instruction) -> std::result::Result<(), ErrorKind> {
    if inst.kind == Kind::Unknown {
        return Err(unknown_instruction(&inst.keyword));
    }
    check_flags(inst)?;
    let args = |m: String| Err(ErrorKind::Args(m));
    let kw = inst.kind.name();
    let n = inst.args.len();
    match inst.kind {
        Kind::From => check_from(inst)?,
        Kind::Copy | Kind::Add if n == 0 => return args(format!("{kw} requires at least two arguments")),
        Kind::Copy | Kind::Add if n == 1 => {
            return args(format!(
                "{kw} requires at least two arguments, but only one was provided. Destination could not be determined."
            ))
        }
        Kind::Run if n == 0 => return args("RUN requires at least one argument".into()),
        Kind::Shell if n == 0 => return args("SHELL requires at least one argument".into()),
        Kind::Shell if !inst.json => {
            return args("SHELL requires the arguments to be in JSON form".into())
        }
        Kind::Env | Kind::Label | Kind::Arg | Kind::Expose | Kind::Volume if n == 0 => {
            return args(format!("{kw} requires at least one argument"))
        }
        Kind::Env | Kind::Arg => {
            let blank = match inst.kind {
                Kind::Env => inst.key_values().iter().any(|(k, _)| k.is_empty()),
                _ => inst.args.iter().any(|a| a.starts_with('=')),
            };
            if blank {
                return args(format!("{kw} names can not be blank"));
            }
        }
        Kind::Volume if inst.args.iter().any(|a| a.trim().is_empty()) => {
            return args("VOLUME specified can not be an empty string".into())
        }
        Kind::Maintainer | Kind::User | Kind::Workdir | Kind::StopSignal if n != 1 => {
            return args(format!("{kw} requires exactly one argument"))
        }
        Kind::Healthcheck => check_healthcheck(inst)?,
        Kind::Onbuild => check_onbuild(inst)?,
        _ => {}
    }
    Ok(())
}

/// The instruction keywords, as BuildKit lists them for its suggestions.
const KEYWORDS: [&str; 18] = [
    "add",
    "arg",
    "cmd",
    "copy",
    "entrypoint",
    "env",
    "expose",
    "from",
    "healthcheck",
    "label",
    "maintainer",
    "onbuild",
    "run",
    "shell",
    "stopsignal",
    "user",
    "volume",
    "workdir",
];

/// BuildKit's error for an unknown keyword: named as written, with the
/// closest known keyword suggested (`unknown instruction: copyy (did you
/// mean copy?)`).
fn unknown_instruction(keyword: &str) -> ErrorKind {
    let known: Vec<String> = KEYWORDS.iter().map(|k| k.to_string()).collect();
    let text = match crate::check::suggest(keyword, &known, false) {
        Some(m) => format!("{keyword} (did you mean {m}?)"),
        None => keyword.to_string(),
    };
    ErrorKind::UnknownInstruction(text)
}

fn check_flags(inst: &Instruction) -> std::result::Result<(), ErrorKind> {
    let allowed = allowed_flags(inst.kind);
    let mut used: Vec<&str> = Vec::new();
    for flag in &inst.flags {
        let Some(body) = flag.strip_prefix("--") else {
            return Err(ErrorKind::BadFlag(format!(
                "arg should start with -- : {flag}"
            )));
        };
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        let Some(&(_, ty)) = allowed.iter().find(|(n, _)| *n == name) else {
            return Err(ErrorKind::UnknownFlag(name.to_string()));
        };
        if ty != FlagType::Strings && used.contains(&name) {
            return Err(ErrorKind::BadFlag(format!(
                "duplicate flag specified: {name}"
            )));
        }
        used.push(name);
        match (ty, value) {
            (FlagType::Bool, Some("")) | (FlagType::String | FlagType::Strings, None) => {
                return Err(ErrorKind::BadFlag(format!(
                    "missing a value on flag: {name}"
                )))
            }
            (FlagType::Bool, Some(v))
                if !v.eq_ignore_ascii_case("true") && !v.eq_ignore_ascii_case("false") =>
            {
                return Err(ErrorKind::BadFlag(format!(
                    "expecting boolean value for flag {name}, not: {v}"
                )))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Whether `name` is a valid stage name (BuildKit: `^[a-z][a-z0-9-_.]*$`
/// after lower-casing).
pub fn valid_stage_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let mut chars = lower.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

fn check_from(inst: &Instruction) -> std::result::Result<(), ErrorKind> {
    let a = &inst.args;
    if !(a.len() == 1 || a.len() == 3) || (a.len() == 3 && !a[1].eq_ignore_ascii_case("as")) {
        return Err(ErrorKind::Args(
            "FROM requires either one or three arguments".into(),
        ));
    }
    if a.len() == 3 && !valid_stage_name(&a[2]) {
        return Err(ErrorKind::Args(format!(
            "invalid name for build stage: {}, name can't start with a number or contain symbols",
            crate::ast::go_quote(&a[2])
        )));
    }
    Ok(())
}

fn check_healthcheck(inst: &Instruction) -> std::result::Result<(), ErrorKind> {
    let args = |m: String| Err(ErrorKind::Args(m));
    let Some(kind) = inst.args.first() else {
        return args("HEALTHCHECK requires at least one argument".into());
    };
    match kind.to_ascii_uppercase().as_str() {
        "NONE" if inst.args.len() > 1 => return args("HEALTHCHECK NONE takes no arguments".into()),
        "NONE" => {}
        "CMD" if inst.args.len() < 2 => {
            return args("Missing command after HEALTHCHECK CMD".into())
        }
        "CMD" => {}
        other => return args(format!("Unknown type \"{other}\" in HEALTHCHECK (try CMD)")),
    }
    for name in ["interval", "timeout", "start-period", "start-interval"] {
        if let Some(v) = inst.flag(name) {
            check_interval(name, v)?;
        }
    }
    if let Some(v) = inst.flag("retries") {
        match v.parse::<i64>() {
            Ok(r) if r < 0 => return args(format!("--retries cannot be negative ({r})")),
            Ok(_) => {}
            Err(_) => return args(format!("invalid value for --retries: {v}")),
        }
    }
    Ok(())
}

fn check_interval(name: &str, value: &str) -> std::result::Result<(), ErrorKind> {
    if value.is_empty() {
        return Ok(());
    }
    let Some(nanos) = parse_go_duration(value) else {
        return Err(ErrorKind::BadFlag(format!(
            "time: invalid duration \"{value}\""
        )));
    };
    if nanos < 0.0 {
        return Err(ErrorKind::BadFlag(format!("--{name} cannot be negative")));
    }
    if nanos != 0.0 && nanos < 1e6 {
        return Err(ErrorKind::BadFlag(format!(
            "Interval \"{name}\" cannot be less than 1ms"
        )));
    }
    Ok(())
}

/// Parses a Go duration (`1m30s`, `0.5h`, `100ms`, `0`) into nanoseconds.
pub fn parse_go_duration(s: &str) -> Option<f64> {
    let (sign, mut rest) = match s.strip_prefix('-') {
        Some(r) => (-1.0, r),
        None => (1.0, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(0.0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += number * scale;
        rest = &rest[unit_len..];
    }
    Some(sign * total)
}

fn check_onbuild(inst: &Instruction) -> std::result::Result<(), ErrorKind> {
    let Some(trigger) = inst.onbuild.as_deref() else {
        return Err(ErrorKind::Args(
            "ONBUILD requires at least one argument".into(),
        ));
    };
    match trigger.kind {
        Kind::Onbuild => Err(ErrorKind::Args(
            "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".into(),
        )),
        Kind::From | Kind::Maintainer => Err(ErrorKind::Args(format!(
            "{} isn't allowed as an ONBUILD trigger",
            trigger.kind
        ))),
        _ => check_instruction(trigger),
    }
}

#[cfg(test)]
mod tests {
    use crate::parser::parse;

    fn err(text: &str) -> String {
        parse(text, "Dockerfile").unwrap_err().to_string()
    }

    #[test]
    fn unknown_instruction_and_flags() {
        assert_eq!(
            err("FROM a\nFOO bar\n"),
            "Dockerfile:2: unknown instruction: FOO (did you mean FROM?)"
        );
        assert_eq!(
            err("FROM a\nBOGUS bar\n"),
            "Dockerfile:2: unknown instruction: BOGUS"
        );
        // Named as written, with BuildKit's suggestion.
        assert_eq!(
            err("FROM a\ncopyy a b\n"),
            "Dockerfile:2: unknown instruction: copyy (did you mean copy?)"
        );
        assert_eq!(
            err("FROM a\nWORKDIRR /x\n"),
            "Dockerfile:2: unknown instruction: WORKDIRR (did you mean WORKDIR?)"
        );
        assert_eq!(
            err("FROM a\nCOPY --doit=1 a b\n"),
            "Dockerfile:2: unknown flag: doit"
        );
        assert_eq!(
            err("FROM a\nCOPY --from a b\n"),
            "Dockerfile:2: missing a value on flag: from"
        );
        assert_eq!(
            err("FROM a\nCOPY --link=maybe a b\n"),
            "Dockerfile:2: expecting boolean value for flag link, not: maybe"
        );
        assert_eq!(
            err("FROM a\nCOPY --from=a --from=b a b\n"),
            "Dockerfile:2: duplicate flag specified: from"
        );
        assert!(parse(
            "FROM a\nRUN --mount=type=cache,target=/c --mount=type=tmpfs,target=/t x\n",
            "D"
        )
        .is_ok());
    }

    #[test]
    fn argument_errors_carry_the_start_line() {
        assert_eq!(
            err("FROM a\n\nCOPY \\\n  onlyone\n"),
            "Dockerfile:3: COPY requires at least two arguments, but only one was provided. Destination could not be determined."
        );
        assert_eq!(
            err("FROM a b\n"),
            "Dockerfile:1: FROM requires either one or three arguments"
        );
        assert!(err("FROM a AS 1x\n").contains("invalid name for build stage"));
        assert_eq!(
            err("FROM a\nSHELL sh -c\n"),
            "Dockerfile:2: SHELL requires the arguments to be in JSON form"
        );
        assert_eq!(
            err("FROM a\nHEALTHCHECK CONNECT TCP 7000\n"),
            "Dockerfile:2: Unknown type \"CONNECT\" in HEALTHCHECK (try CMD)"
        );
        assert!(err("FROM a\nHEALTHCHECK --interval=5x CMD true\n").contains("invalid duration"));
        assert!(err("FROM a\nONBUILD ONBUILD RUN x\n").contains("Chaining ONBUILD"));
        assert!(err("FROM a\nONBUILD FROM b\n").contains("isn't allowed as an ONBUILD trigger"));
        assert!(err("FROM a\nWORKDIR\n").contains("WORKDIR requires exactly one argument"));
    }

    #[test]
    fn missing_from() {
        assert_eq!(
            err("ARG X\nRUN x\nFROM a\n"),
            "Dockerfile:2: no build stage in current context (instruction RUN needs a FROM before it)"
        );
        assert_eq!(
            err("ARG X\n"),
            "Dockerfile:1: dockerfile contains no stages to build"
        );
    }

    #[test]
    fn go_durations() {
        assert_eq!(super::parse_go_duration("1m30s"), Some(90e9));
        assert_eq!(super::parse_go_duration("0"), Some(0.0));
        assert_eq!(super::parse_go_duration("5"), None);
    }
}
