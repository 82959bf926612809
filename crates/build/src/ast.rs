//! The parsed form of a Dockerfile.
//!
//! The tree is as flat as the language: a list of instructions, each with
//! its keyword, `--flags`, argument strings, heredoc bodies and source
//! lines. Arguments are kept *unexpanded* (variables are resolved later, per
//! stage, by [`crate::stages`] and the builder) and in the shape BuildKit's
//! parser gives them, so that [`Dockerfile::dump`] reproduces BuildKit's
//! parse dump exactly.

use std::fmt;

/// The eighteen Dockerfile instructions, plus anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Add,
    Arg,
    Cmd,
    Copy,
    Entrypoint,
    Env,
    Expose,
    From,
    Healthcheck,
    Label,
    Maintainer,
    Onbuild,
    Run,
    Shell,
    StopSignal,
    User,
    Volume,
    Workdir,
    /// A keyword Dockerfiles do not know. The parser keeps it (without
    /// arguments, as BuildKit does); validation rejects it.
    Unknown,
}

impl Kind {
    /// The kind of a keyword, in any case.
    pub fn from_keyword(word: &str) -> Kind {
        match word.to_ascii_lowercase().as_str() {
            "add" => Kind::Add,
            "arg" => Kind::Arg,
            "cmd" => Kind::Cmd,
            "copy" => Kind::Copy,
            "entrypoint" => Kind::Entrypoint,
            "env" => Kind::Env,
            "expose" => Kind::Expose,
            "from" => Kind::From,
            "healthcheck" => Kind::Healthcheck,
            "label" => Kind::Label,
            "maintainer" => Kind::Maintainer,
            "onbuild" => Kind::Onbuild,
            "run" => Kind::Run,
            "shell" => Kind::Shell,
            "stopsignal" => Kind::StopSignal,
            "user" => Kind::User,
            "volume" => Kind::Volume,
            "workdir" => Kind::Workdir,
            _ => Kind::Unknown,
        }
    }

    /// The canonical (upper-case) keyword.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Add => "ADD",
            Kind::Arg => "ARG",
            Kind::Cmd => "CMD",
            Kind::Copy => "COPY",
            Kind::Entrypoint => "ENTRYPOINT",
            Kind::Env => "ENV",
            Kind::Expose => "EXPOSE",
            Kind::From => "FROM",
            Kind::Healthcheck => "HEALTHCHECK",
            Kind::Label => "LABEL",
            Kind::Maintainer => "MAINTAINER",
            Kind::Onbuild => "ONBUILD",
            Kind::Run => "RUN",
            Kind::Shell => "SHELL",
            Kind::StopSignal => "STOPSIGNAL",
            Kind::User => "USER",
            Kind::Volume => "VOLUME",
            Kind::Workdir => "WORKDIR",
            Kind::Unknown => "UNKNOWN",
        }
    }

    /// Whether the instruction may carry heredocs (`<<EOF`).
    pub fn takes_heredocs(self) -> bool {
        matches!(self, Kind::Run | Kind::Copy | Kind::Add)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A parser directive from the top of the file (`# syntax=...`,
/// `# escape=...`, `# check=...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// Lower-cased name.
    pub name: String,
    /// Value, surrounding blanks removed.
    pub value: String,
    /// 1-based line.
    pub line: usize,
}

/// A heredoc body attached to an instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter word, quotes removed (`EOF` for `<<"EOF"`).
    pub name: String,
    /// File descriptor prefix (`3<<EOF`), 0 when none was written.
    pub fd: u32,
    /// False when any part of the delimiter was quoted: the body is then
    /// taken literally instead of being expanded.
    pub expand: bool,
    /// `<<-`: leading tabs are removed from the body and the delimiter line.
    pub chomp: bool,
    /// The body, line endings kept, leading tabs already removed when
    /// `chomp` is set.
    pub content: String,
}

/// One instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// What instruction this is.
    pub kind: Kind,
    /// The keyword as written (`RUN`, `run`, `Run`): lints check casing.
    pub keyword: String,
    /// `--name=value` flags, quotes and escapes removed, in order.
    pub flags: Vec<String>,
    /// The arguments, shaped per instruction as BuildKit's parser shapes
    /// them: one string for shell-form RUN/CMD/ENTRYPOINT/SHELL and
    /// MAINTAINER/USER/WORKDIR/STOPSIGNAL; the list for exec (JSON) form;
    /// whitespace-separated words for FROM/EXPOSE and non-JSON
    /// ADD/COPY/VOLUME; `key, value, separator` triples for ENV and LABEL
    /// (separator `=` or `""` for the old `ENV key value` form); words for
    /// ARG; `[type, command...]` for HEALTHCHECK.
    pub args: Vec<String>,
    /// The arguments were written in JSON (exec) form.
    pub json: bool,
    /// For ONBUILD, the trigger instruction.
    pub onbuild: Option<Box<Instruction>>,
    /// Heredoc bodies, in the order their delimiters appear.
    pub heredocs: Vec<Heredoc>,
    /// First source line (1-based).
    pub start_line: usize,
    /// Last source line, heredoc bodies included.
    pub end_line: usize,
    /// The logical line: continuation lines joined, comments dropped.
    pub original: String,
}

impl Instruction {
    /// BuildKit's s-expression for this instruction, without the outer
    /// parentheses: `copy ["--from=a"] "x" "/y"`.
    pub fn dump(&self) -> String {
        let mut out = self.keyword.to_lowercase();
        if !self.flags.is_empty() {
            let flags: Vec<String> = self.flags.iter().map(|f| go_quote(f)).collect();
            out.push_str(&format!(" [{}]", flags.join(" ")));
        }
        if let Some(child) = &self.onbuild {
            out.push_str(&format!(" ({})", child.dump()));
        }
        for arg in &self.args {
            out.push(' ');
            out.push_str(&go_quote(arg));
        }
        out.trim().to_string()
    }

    /// The value of flag `--name` (the last one when repeated): `Some("")`
    /// for a bare `--name`, `None` when absent.
    pub fn flag<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        self.flag_values(name).last()
    }

    /// All values of a repeatable flag such as `--mount`.
    pub fn flag_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.flags.iter().filter_map(move |f| {
            let body = f.strip_prefix("--")?;
            match body.split_once('=') {
                Some((n, v)) if n == name => Some(v),
                None if body == name => Some(""),
                _ => None,
            }
        })
    }

    /// For ENV and LABEL: the `(key, value)` pairs.
    pub fn key_values(&self) -> Vec<(&str, &str)> {
        self.args
            .chunks(3)
            .filter(|c| c.len() >= 2)
            .map(|c| (c[0].as_str(), c[1].as_str()))
            .collect()
    }

    /// For ENV and LABEL: whether the legacy `KEY value` form was used.
    pub fn is_legacy_key_value(&self) -> bool {
        self.args.len() == 3 && self.args[2].is_empty()
    }
}

/// A parse warning (BuildKit prints these; the `check` lint reports them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// 1-based line.
    pub line: usize,
    /// What is suspicious.
    pub message: String,
}

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// Parser directives found at the top.
    pub directives: Vec<Directive>,
    /// The escape character in force (`\` or a backtick).
    pub escape: char,
    /// The instructions, in order.
    pub instructions: Vec<Instruction>,
    /// Empty continuation lines and similar oddities.
    pub warnings: Vec<Warning>,
}

impl Dockerfile {
    /// BuildKit's parse dump: one `(instruction ...)` line per instruction.
    pub fn dump(&self) -> String {
        self.instructions
            .iter()
            .map(|i| format!("({})\n", i.dump()))
            .collect()
    }

    /// The value of a parser directive, if present.
    pub fn directive(&self, name: &str) -> Option<&str> {
        self.directives
            .iter()
            .find(|d| d.name == name)
            .map(|d| d.value.as_str())
    }
}

/// Quotes like Go's `strconv.Quote`, which BuildKit's dump uses: printable
/// characters as they are, the usual C escapes, `\xHH` for other ASCII
/// controls and `\uHHHH`/`\UHHHHHHHH` for other non-printable characters.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if is_go_printable(c) => out.push(c),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// An approximation of Go's `unicode.IsPrint`: graphic characters and the
/// ASCII space, but not other spaces, controls or format characters.
pub(crate) fn is_go_printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    !(c.is_control()
        || c.is_whitespace()
        || matches!(c as u32, 0xad | 0x200b..=0x200f | 0x2028..=0x202e | 0x2060..=0x206f | 0xfeff | 0xfff9..=0xfffb)
        || (0xe000..=0xf8ff).contains(&(c as u32))
        || (c as u32) >= 0xf0000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_quote_matches_go() {
        assert_eq!(go_quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(go_quote("\u{0}\t♥"), r#""\x00\t♥""#);
        assert_eq!(go_quote("\u{a0}"), r#""\u00a0""#);
    }

    #[test]
    fn flags_are_looked_up_by_name() {
        let i = Instruction {
            kind: Kind::Run,
            keyword: "RUN".into(),
            flags: vec![
                "--mount=type=cache".into(),
                "--mount=from=a".into(),
                "--link".into(),
            ],
            args: vec![],
            json: false,
            onbuild: None,
            heredocs: vec![],
            start_line: 1,
            end_line: 1,
            original: String::new(),
        };
        assert_eq!(i.flag("mount"), Some("from=a"));
        assert_eq!(i.flag_values("mount").count(), 2);
        assert_eq!(i.flag("link"), Some(""));
        assert_eq!(i.flag("network"), None);
    }
}
