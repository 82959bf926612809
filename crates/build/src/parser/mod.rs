//! The Dockerfile parser: physical lines to [`Dockerfile`].
//!
//! It follows BuildKit's line rules exactly, because the same file must
//! mean the same thing to both:
//!
//! * parser directives (`# syntax=`, `# escape=`, `# check=`) count only in
//!   the unbroken run of directive comments at the very top; the first line
//!   that is anything else (an empty line, another comment, an
//!   instruction) ends them;
//! * the escape character at the end of a line (blanks after it allowed)
//!   continues the instruction on the next line, unless it is itself
//!   escaped; comment lines and empty lines inside a continuation are
//!   skipped (empty ones give a warning);
//! * leading blanks of the first line are dropped, those of continuation
//!   lines are kept;
//! * after a RUN/COPY/ADD (also under ONBUILD) in shell form, each heredoc
//!   delimiter on the line takes the following lines as its body.
//!
//! [`parse_raw`] is this syntax-level parse (what BuildKit's `parser`
//! package does); [`parse`] also validates every instruction (keywords,
//! flags, argument counts), as BuildKit's `instructions` package does.

mod line;

use std::sync::OnceLock;

use regex::Regex;

pub use line::split_words;

use crate::ast::{Directive, Dockerfile, Instruction, Warning};
use crate::error::{Error, ErrorKind, Result};
use crate::heredoc;

/// Parses and validates a Dockerfile. `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Dockerfile> {
    let df = parse_raw(text, file)?;
    crate::instructions::validate(&df, file)?;
    Ok(df)
}

/// Parses a Dockerfile's syntax only: unknown instructions and flags are
/// kept, not refused (see [`parse`]).
pub fn parse_raw(text: &str, file: &str) -> Result<Dockerfile> {
    Parser::new(text, file).run()
}

fn directive_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"^#[\t\n\x0C\r ]*([a-zA-Z][a-zA-Z0-9]*)[\t\n\x0C\r ]*=[\t\n\x0C\r ]*(.+?)[\t\n\x0C\r ]*$")
            .expect("static regex")
    })
}

/// Drops a line's terminator (`\n` or `\r\n`).
fn trim_newline(line: &str) -> &str {
    line.trim_end_matches(['\r', '\n'])
}

fn is_comment(raw: &str) -> bool {
    trim_newline(raw).trim_start().starts_with('#')
}

struct Parser<'a> {
    file: &'a str,
    lines: Vec<&'a str>,
    /// Index of the next physical line to read; also the 1-based number of
    /// the last line read.
    next: usize,
    escape: char,
    directives: Vec<Directive>,
    directives_done: bool,
    warnings: Vec<Warning>,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str, file: &'a str) -> Self {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        Parser {
            file,
            lines: text.split_inclusive('\n').collect(),
            next: 0,
            escape: '\\',
            directives: Vec::new(),
            directives_done: false,
            warnings: Vec::new(),
        }
    }

    fn error(&self, line: usize, kind: ErrorKind) -> Error {
        Error::new(self.file, line, kind)
    }

    fn read(&mut self) -> Option<&'a str> {
        let line = self.lines.get(self.next).copied();
        if line.is_some() {
            self.next += 1;
        }
        line
    }

    fn run(mut self) -> Result<Dockerfile> {
        let mut instructions = Vec::new();
        while let Some(raw) = self.read() {
            let first = self.process_line(raw, true)?;
            let start = self.next;
            let (mut logical, mut done) = self.trim_continuation(&first);
            if done && logical.is_empty() {
                continue;
            }
            let mut empty_continuation = false;
            while !done {
                let Some(raw) = self.read() else { break };
                let text = self.process_line(raw, false)?;
                if is_comment(raw) {
                    continue;
                }
                if text.trim_start().is_empty() {
                    empty_continuation = true;
                    continue;
                }
                let (more, end) = self.trim_continuation(&text);
                logical.push_str(&more);
                done = end;
            }
            // BuildKit places the warning on the instruction's last line (the
            // line it had read when the continuation ended), not on the
            // empty line itself.
            if empty_continuation {
                self.warnings.push(Warning {
                    line: self.next,
                    message: "Empty continuation line".to_string(),
                });
            }
            let mut inst = line::parse_instruction(&logical, self.escape)
                .map_err(|m| self.error(start, ErrorKind::Args(m)))?;
            self.read_heredocs(&mut inst, &logical, start)?;
            set_lines(&mut inst, start, self.next);
            instructions.push(inst);
        }
        if instructions.is_empty() {
            return Err(self.error(self.next.max(1), ErrorKind::NoInstructions));
        }
        Ok(Dockerfile {
            directives: self.directives,
            escape: self.escape,
            instructions,
            warnings: self.warnings,
        })
    }

    /// Strips the terminator, (optionally) leading blanks and a comment;
    /// while still at the top, also looks for a parser directive.
    fn process_line(&mut self, raw: &str, strip_left: bool) -> Result<String> {
        let mut text = trim_newline(raw);
        if strip_left {
            text = text.trim_start();
        }
        self.possible_directive(text)?;
        Ok(if text.starts_with('#') {
            String::new()
        } else {
            text.to_string()
        })
    }

    fn possible_directive(&mut self, text: &str) -> Result<()> {
        if self.directives_done {
            return Ok(());
        }
        let Some(caps) = directive_re().captures(text) else {
            self.directives_done = true;
            return Ok(());
        };
        let name = caps[1].to_ascii_lowercase();
        if !matches!(name.as_str(), "syntax" | "escape" | "check") {
            self.directives_done = true;
            return Ok(());
        }
        let line = self.next;
        if self.directives.iter().any(|d| d.name == name) {
            return Err(self.error(
                line,
                ErrorKind::Directive(format!("only one {name} parser directive can be used")),
            ));
        }
        let value = caps[2].to_string();
        if name == "escape" {
            self.escape = match value.as_str() {
                "\\" => '\\',
                "`" => '`',
                _ => {
                    return Err(self.error(
                        line,
                        ErrorKind::Directive(format!(
                            "invalid escape token '{value}' does not match ` or \\"
                        )),
                    ))
                }
            };
        }
        self.directives.push(Directive { name, value, line });
        Ok(())
    }

    /// Removes a continuation escape (and the blanks after it) from the end
    /// of `text`; the boolean tells whether the instruction ends here. An
    /// escape preceded by another escape is literal, not a continuation.
    fn trim_continuation(&self, text: &str) -> (String, bool) {
        let body = text.trim_end_matches([' ', '\t']);
        let Some(before) = body.strip_suffix(self.escape) else {
            return (text.to_string(), true);
        };
        if before.is_empty() {
            return (String::new(), false);
        }
        if before.ends_with(self.escape) {
            return (text.to_string(), true);
        }
        (before.to_string(), false)
    }

    /// Reads the bodies of the heredocs the instruction announces.
    fn read_heredocs(&mut self, inst: &mut Instruction, logical: &str, start: usize) -> Result<()> {
        let target = inst.onbuild.as_deref().unwrap_or(inst);
        if !target.kind.takes_heredocs() || target.json {
            return Ok(());
        }
        let docs =
            heredoc::delimiters(logical).map_err(|m| self.error(start, ErrorKind::Args(m)))?;
        for mut doc in docs {
            let mut terminated = false;
            while let Some(raw) = self.read() {
                let mut candidate = trim_newline(raw);
                if doc.chomp {
                    candidate = candidate.trim_start_matches('\t');
                }
                if candidate == doc.name {
                    terminated = true;
                    break;
                }
                doc.content.push_str(raw);
            }
            if !terminated {
                return Err(self.error(start, ErrorKind::UnterminatedHeredoc));
            }
            if doc.chomp {
                doc.content = heredoc::chomp(&doc.content);
            }
            inst.heredocs.push(doc);
        }
        Ok(())
    }
}

fn set_lines(inst: &mut Instruction, start: usize, end: usize) {
    inst.start_line = start;
    inst.end_line = end;
    if let Some(child) = inst.onbuild.as_deref_mut() {
        set_lines(child, start, end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ast::Kind;

    fn p(text: &str) -> Dockerfile {
        parse_raw(text, "Dockerfile").unwrap()
    }

    #[test]
    fn directives_only_at_top() {
        let df =
            p("# syntax=docker/dockerfile:1\n# check=skip=all\n# escape=`\nFROM a\n# escape=\\\n");
        assert_eq!(df.directives.len(), 3);
        assert_eq!(df.escape, '`');
        assert_eq!(df.directive("check"), Some("skip=all"));
        let df = p("# hello\n# escape=`\nFROM a\n");
        assert!(df.directives.is_empty());
        assert_eq!(df.escape, '\\');
    }

    #[test]
    fn repeated_or_bad_directive_is_an_error() {
        let e = parse_raw("# escape=`\n# escape=`\nFROM a", "Dockerfile").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Dockerfile:2: only one escape parser directive can be used"
        );
        assert!(parse_raw("# escape=x\nFROM a", "D").is_err());
    }

    #[test]
    fn continuation_with_comments_and_empty_lines() {
        let df = p("FROM a\nRUN echo a \\\n# c\n\n  b\nRUN x\n");
        assert_eq!(df.instructions[1].args, vec!["echo a   b"]);
        assert_eq!(
            (df.instructions[1].start_line, df.instructions[1].end_line),
            (2, 5)
        );
        assert_eq!(
            df.warnings,
            vec![Warning {
                line: 5,
                message: "Empty continuation line".into()
            }]
        );
        assert_eq!(df.instructions[2].start_line, 6);
    }

    #[test]
    fn empty_continuation_warning_is_on_the_last_line() {
        // Two empty lines inside one RUN: one warning, on the line that ends it.
        let df = p("FROM a\nRUN one \\\n\n  two \\\n\n  three\nRUN x\n");
        assert_eq!(df.warnings.len(), 1);
        assert_eq!(df.warnings[0].line, 6);
    }

    #[test]
    fn backtick_continuation() {
        let df = p("# escape=`\nFROM a\nRUN dir c:\\ `\n  /b\n");
        assert_eq!(df.instructions[1].args, vec!["dir c:\\   /b"]);
    }

    #[test]
    fn heredocs_are_read() {
        let df = p("FROM a\nRUN <<EOF bash\necho $X\nEOF\nCOPY <<-A <<'B' /d/\n\t\tone\n\tA\ntwo\nB\nRUN [\"<<X\"]\n");
        let run = &df.instructions[1];
        assert_eq!(run.heredocs[0].content, "echo $X\n");
        assert!(run.heredocs[0].expand);
        assert_eq!((run.start_line, run.end_line), (2, 4));
        let copy = &df.instructions[2];
        assert_eq!(copy.heredocs.len(), 2);
        assert_eq!(copy.heredocs[0].content, "one\n");
        assert_eq!(copy.heredocs[1].content, "two\n");
        assert!(!copy.heredocs[1].expand);
        assert_eq!((copy.start_line, copy.end_line), (5, 9));
        assert!(df.instructions[3].heredocs.is_empty());
    }

    #[test]
    fn onbuild_heredoc() {
        let df = p("FROM a\nONBUILD RUN <<EOF\nx\nEOF\n");
        assert_eq!(df.instructions[1].heredocs[0].content, "x\n");
        assert_eq!(df.instructions[1].onbuild.as_ref().unwrap().kind, Kind::Run);
    }

    #[test]
    fn unterminated_heredoc() {
        let e = parse_raw("FROM a\nRUN <<EOF\nx\n", "Dockerfile").unwrap_err();
        assert_eq!(e.to_string(), "Dockerfile:2: unterminated heredoc");
    }

    #[test]
    fn empty_file_fails() {
        assert_eq!(
            parse_raw("# only\n\n", "Dockerfile").unwrap_err().kind,
            ErrorKind::NoInstructions
        );
    }
}
