//! Word expansion as BuildKit's shell lexer does it.
//!
//! Dockerfile arguments are not run through a real shell: the front end
//! expands `$var`, `${var}` and a handful of `${var<op>word}` forms itself,
//! removes quotes and escapes, and (for instructions that take several
//! words) splits on unquoted whitespace *after* expansion. This module
//! reproduces that lexer, quirks included, because images must come out the
//! same as with `docker build`:
//!
//! * single quotes keep everything literal; the escape character cannot
//!   escape a `'` inside them;
//! * inside double quotes the escape character only escapes `"`, `$` and
//!   itself, and is kept before anything else;
//! * a trailing lone escape character is dropped;
//! * positional (`$1`) and special (`$@`, `$#`...) parameters are never set;
//! * `${v:-w}`/`${v-w}`, `${v:+w}`/`${v+w}`, `${v:?m}`/`${v?m}`, the pattern
//!   forms `${v#p}` `${v##p}` `${v%p}` `${v%%p}` and `${v/p/r}` `${v//p/r}`
//!   (patterns with `*` and `?` only, no bracket expressions);
//! * values coming from a variable are split into words, quoted text is not.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Expansion failure; displays like BuildKit: `failed to process "WORD": why`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to process {word:?}: {reason}")]
pub struct ShellError {
    /// The word being expanded.
    pub word: String,
    /// What went wrong.
    pub reason: String,
}

/// Somewhere to look variables up.
pub trait VarSource {
    /// The value of `name`, or `None` when it is not set at all (set but
    /// empty is `Some("")`: `${v-w}` and `${v:-w}` tell them apart).
    fn lookup(&self, name: &str) -> Option<String>;
}

impl VarSource for HashMap<String, String> {
    fn lookup(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

impl VarSource for BTreeMap<String, String> {
    fn lookup(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// `KEY=value` pairs; the last pair with a name wins, as with `ENV`.
impl VarSource for [(String, String)] {
    fn lookup(&self, name: &str) -> Option<String> {
        self.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

impl VarSource for Vec<(String, String)> {
    fn lookup(&self, name: &str) -> Option<String> {
        self.as_slice().lookup(name)
    }
}

impl VarSource for [(&str, &str)] {
    fn lookup(&self, name: &str) -> Option<String> {
        self.iter()
            .rev()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }
}

/// The outcome of one expansion.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expansion {
    /// The whole word expanded, spaces kept.
    pub word: String,
    /// The word split into fields after expansion.
    pub words: Vec<String>,
    /// Variables that were looked up and found.
    pub matched: BTreeSet<String>,
    /// Variables that were looked up and not set (for the UndefinedVar lint).
    pub unmatched: BTreeSet<String>,
}

/// Lexer settings. The defaults are those of ordinary instruction arguments;
/// the `raw_*`/`skip_*` switches serve the parser's heredoc detection and
/// other places that must see the text before it is unquoted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lexer {
    /// The escape character: `\` or, with `# escape=\``, a backtick.
    pub escape: char,
    /// Keep quote characters in the output.
    pub raw_quotes: bool,
    /// Keep escape characters in the output.
    pub raw_escapes: bool,
    /// Leave references to unset variables as written.
    pub skip_unset_env: bool,
    /// Treat quotes as ordinary characters.
    pub skip_process_quotes: bool,
}

impl Default for Lexer {
    fn default() -> Self {
        Lexer::new('\\')
    }
}

impl Lexer {
    /// A lexer with the given escape character and default settings.
    pub fn new(escape: char) -> Self {
        Lexer {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_unset_env: false,
            skip_process_quotes: false,
        }
    }

    /// Expands `word`, returning the joined result, the split fields and the
    /// variables it referred to.
    pub fn process(&self, word: &str, env: &dyn VarSource) -> Result<Expansion, ShellError> {
        let mut walker = Walker {
            lexer: *self,
            chars: word.chars().collect(),
            pos: 0,
            env,
            raw_escapes: self.raw_escapes,
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
        };
        match walker.process_stop_on(None, self.raw_escapes) {
            Ok((joined, words)) => Ok(Expansion {
                word: joined,
                words,
                matched: walker.matched,
                unmatched: walker.unmatched,
            }),
            Err(reason) => Err(ShellError {
                word: word.to_string(),
                reason,
            }),
        }
    }

    /// Expands `word` into one string (spaces kept).
    pub fn expand_word(&self, word: &str, env: &dyn VarSource) -> Result<String, ShellError> {
        self.process(word, env).map(|e| e.word)
    }

    /// Expands `word` and splits it into fields.
    pub fn expand_words(&self, word: &str, env: &dyn VarSource) -> Result<Vec<String>, ShellError> {
        self.process(word, env).map(|e| e.words)
    }
}

/// Expands `word` with the default (`\`) escape character.
pub fn expand_word(word: &str, env: &dyn VarSource) -> Result<String, ShellError> {
    Lexer::default().expand_word(word, env)
}

/// Expands `word` with the default escape character and splits it into fields.
pub fn expand_words(word: &str, env: &dyn VarSource) -> Result<Vec<String>, ShellError> {
    Lexer::default().expand_words(word, env)
}

/// Collects fields while the word is scanned. Text from variables goes
/// through `add_char` (so its whitespace splits), quoted text and escaped
/// characters through the `raw` variants (so theirs does not).
#[derive(Default)]
struct Fields {
    buf: String,
    words: Vec<String>,
    in_word: bool,
}

impl Fields {
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() {
            // A whitespace only ends a field that has content; an empty
            // quoted string ("") alone never makes a field.
            if self.in_word && !self.buf.is_empty() {
                self.words.push(std::mem::take(&mut self.buf));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }

    fn add_raw_char(&mut self, ch: char) {
        self.buf.push(ch);
        self.in_word = true;
    }

    fn add_string(&mut self, s: &str) {
        s.chars().for_each(|c| self.add_char(c));
    }

    fn add_raw_string(&mut self, s: &str) {
        self.buf.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.buf.is_empty() {
            self.words.push(std::mem::take(&mut self.buf));
        }
        self.words
    }
}

struct Walker<'a> {
    lexer: Lexer,
    chars: Vec<char>,
    pos: usize,
    env: &'a dyn VarSource,
    raw_escapes: bool,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

type Step<T> = Result<T, String>;

impl Walker<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn get_env(&mut self, name: &str) -> Option<String> {
        let value = self.env.lookup(name);
        if value.is_some() {
            self.matched.insert(name.to_string());
        } else {
            self.unmatched.insert(name.to_string());
        }
        value
    }

    /// Scans until `stop` (or the end when `None`), with escapes kept raw
    /// or not for the duration (pattern operands keep them so that `\*`
    /// still means a literal star when the pattern is compiled).
    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Step<(String, Vec<String>)> {
        let saved = std::mem::replace(&mut self.raw_escapes, raw_escapes);
        let out = self.scan_until(stop);
        self.raw_escapes = saved;
        out
    }

    fn scan_until(&mut self, stop: Option<char>) -> Step<(String, Vec<String>)> {
        let mut result = String::new();
        let mut fields = Fields::default();
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.next();
                return Ok((result, fields.finish()));
            }
            let quotes = !self.lexer.skip_process_quotes;
            if ch == '$' {
                let value = self.dollar()?;
                result.push_str(&value);
                fields.add_string(&value);
            } else if quotes && ch == '\'' {
                let value = self.single_quoted()?;
                result.push_str(&value);
                fields.add_raw_string(&value);
            } else if quotes && ch == '"' {
                let value = self.double_quoted()?;
                result.push_str(&value);
                fields.add_raw_string(&value);
            } else {
                self.next();
                if ch == self.lexer.escape {
                    if self.raw_escapes {
                        fields.add_raw_char(ch);
                        result.push(ch);
                    }
                    // A lone escape at the very end is dropped.
                    let Some(escaped) = self.next() else { break };
                    fields.add_raw_char(escaped);
                    result.push(escaped);
                } else {
                    fields.add_char(ch);
                    result.push(ch);
                }
            }
        }
        match stop {
            Some(c) => Err(format!(
                "unexpected end of statement while looking for matching {c}"
            )),
            None => Ok((result, fields.finish())),
        }
    }

    fn single_quoted(&mut self) -> Step<String> {
        let mut out = String::new();
        let open = self.next();
        if self.lexer.raw_quotes {
            out.extend(open);
        }
        loop {
            match self.next() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .to_string(),
                    )
                }
                Some('\'') => {
                    if self.lexer.raw_quotes {
                        out.push('\'');
                    }
                    return Ok(out);
                }
                Some(c) => out.push(c),
            }
        }
    }

    fn double_quoted(&mut self) -> Step<String> {
        let mut out = String::new();
        let open = self.next();
        if self.lexer.raw_quotes {
            out.extend(open);
        }
        loop {
            match self.peek() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .to_string(),
                    )
                }
                Some('"') => {
                    self.next();
                    if self.lexer.raw_quotes {
                        out.push('"');
                    }
                    return Ok(out);
                }
                Some('$') => {
                    let value = self.dollar()?;
                    out.push_str(&value);
                }
                Some(_) => {
                    let Some(mut ch) = self.next() else { continue };
                    if ch == self.lexer.escape {
                        if self.raw_escapes {
                            out.push(ch);
                        }
                        match self.peek() {
                            // An escape just before the end is ignored; the
                            // missing quote is reported on the next turn.
                            None => continue,
                            Some(c) if c == '"' || c == '$' || c == self.lexer.escape => {
                                self.next();
                                ch = c;
                            }
                            // Before anything else the escape stays literal.
                            Some(_) => {}
                        }
                    }
                    out.push(ch);
                }
            }
        }
    }

    fn dollar(&mut self) -> Step<String> {
        self.next(); // the '$'
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lexer.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.next(); // the '{'
        match self.peek() {
            None => return Err("syntax error: missing '}'".to_string()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".to_string()),
            Some(_) => {}
        }
        let name = self.name();
        let op = self.next();
        match op {
            Some('}') => Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lexer.skip_unset_env => format!("${{{name}}}"),
                None => String::new(),
            }),
            Some(':' | '+' | '-' | '?' | '#' | '%') => self.modifier(&name, op),
            Some('/') => self.replace(&name),
            other => Err(format!(
                "unsupported modifier ({}) in substitution",
                other.map(String::from).unwrap_or_default()
            )),
        }
    }

    /// `${name<op>word}` for the `- + ? # %` operators, with or without `:`.
    fn modifier(&mut self, name: &str, first: Option<char>) -> Step<String> {
        let mut spelled = String::new();
        spelled.extend(first);
        let null_is_unset = first == Some(':');
        let op = if null_is_unset {
            let second = self.next();
            spelled.extend(second);
            second
        } else {
            first
        };
        let pattern_op = matches!(op, Some('#' | '%'));
        if null_is_unset && pattern_op {
            return Err(format!("unsupported modifier ({spelled}) in substitution"));
        }
        let word = self.operand('}', pattern_op, "syntax error: missing '}'")?;
        let value = self.get_env(name);
        if self.lexer.skip_unset_env && value.is_none() {
            return Ok(format!("${{{name}{spelled}{word}}}"));
        }
        let empty = match &value {
            None => true,
            Some(v) => null_is_unset && v.is_empty(),
        };
        match op {
            Some('-') => Ok(if empty {
                word
            } else {
                value.unwrap_or_default()
            }),
            Some('+') => Ok(if empty { String::new() } else { word }),
            Some('?') => match value {
                None => Err(required_message(name, &word, "is not allowed to be unset")),
                Some(v) if null_is_unset && v.is_empty() => {
                    Err(required_message(name, &word, "is not allowed to be empty"))
                }
                Some(v) => Ok(v),
            },
            Some(c @ ('#' | '%')) => {
                // A doubled operator (## or %%) asks for the longest match.
                let (greedy, pattern) = match word.strip_prefix(c) {
                    Some(rest) => (true, rest.to_string()),
                    None => (false, word),
                };
                let value = value.unwrap_or_default();
                if c == '#' {
                    trim_prefix(&pattern, &value, greedy)
                } else {
                    trim_suffix(&pattern, &value, greedy)
                }
            }
            _ => Err(format!("unsupported modifier ({spelled}) in substitution")),
        }
    }

    /// `${name/pattern/replacement}` and `${name//pattern/replacement}`.
    fn replace(&mut self, name: &str) -> Step<String> {
        let all = self.peek() == Some('/');
        if all {
            self.next();
        }
        let pattern = self.operand('/', true, "syntax error: missing '/' in ${}")?;
        let replacement = self.operand('}', true, "syntax error: missing '}'")?;
        let value = self.get_env(name);
        let Some(value) = value else {
            if self.lexer.skip_unset_env {
                return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
            }
            return Ok(String::new());
        };
        let tokens = pattern_tokens(&pattern)?;
        let re = compile_pattern(&tokens, true, false, &pattern)?;
        Ok(if all {
            re.replace_all(&value, replacement.as_str()).into_owned()
        } else {
            match re.find(&value) {
                Some(m) => format!(
                    "{}{}{}",
                    &value[..m.start()],
                    replacement,
                    &value[m.end()..]
                ),
                None => value,
            }
        })
    }

    /// Reads an operand up to `stop`; a missing `stop` at the end of input
    /// is reported as `eof_message`.
    fn operand(&mut self, stop: char, raw_escapes: bool, eof_message: &str) -> Step<String> {
        match self.process_stop_on(Some(stop), raw_escapes) {
            Ok((word, _)) => Ok(word),
            Err(_) if self.peek().is_none() => Err(eof_message.to_string()),
            Err(e) => Err(e),
        }
    }

    /// A variable name: letters, digits and `_`; or a run of digits
    /// (positional parameter); or one special-parameter character.
    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_numeric() {
                while let Some(d) = self.peek().filter(|c| c.is_numeric()) {
                    name.push(d);
                    self.next();
                }
                return name;
            }
            if name.is_empty() && is_special_param(ch) {
                self.next();
                return ch.to_string();
            }
            if !(ch.is_alphanumeric() || ch == '_') {
                break;
            }
            name.push(ch);
            self.next();
        }
        name
    }
}

fn required_message(name: &str, word: &str, default: &str) -> String {
    let message = if word.is_empty() { default } else { word };
    format!("{name}: {message}")
}

fn is_special_param(c: char) -> bool {
    matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

/// One element of a `${v#pattern}` pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PatTok {
    Lit(char),
    Any,
    Star,
}

/// Splits a shell pattern into tokens. `\*`, `\?` and `\\` are literal;
/// `\}` and `\/` are how `}` and `/` are written inside `${...}`, so the
/// backslash is dropped; any other escape is an error, as in BuildKit.
fn pattern_tokens(pattern: &str) -> Step<Vec<PatTok>> {
    let mut out = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => out.push(PatTok::Star),
            '?' => out.push(PatTok::Any),
            '\\' => match chars.peek().copied() {
                Some('}' | '/') => {}
                Some(e @ ('*' | '?' | '\\')) => {
                    chars.next();
                    out.push(PatTok::Lit(e));
                }
                other => {
                    let shown = other.map(String::from).unwrap_or_default();
                    return Err(format!(
                        "invalid pattern ({pattern}) in substitution: invalid escape '\\{shown}'"
                    ));
                }
            },
            c => out.push(PatTok::Lit(c)),
        }
    }
    Ok(out)
}

/// Builds the regular expression for a token list; stars are lazy unless
/// `greedy`, which with leftmost-first matching gives the shortest or the
/// longest match exactly as BuildKit's Go regexp does.
fn compile_pattern(
    tokens: &[PatTok],
    greedy: bool,
    anchored: bool,
    shown: &str,
) -> Step<regex::Regex> {
    let mut re = String::from(if anchored { "^" } else { "" });
    for t in tokens {
        match t {
            PatTok::Star if greedy => re.push_str(".*"),
            PatTok::Star => re.push_str(".*?"),
            PatTok::Any => re.push('.'),
            PatTok::Lit(c) => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    regex::Regex::new(&re).map_err(|e| format!("invalid pattern ({shown}) in substitution: {e}"))
}

fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> Step<String> {
    let tokens = pattern_tokens(pattern)?;
    let re = compile_pattern(&tokens, greedy, true, pattern)?;
    Ok(match re.find(value) {
        Some(m) => value[m.end()..].to_string(),
        None => value.to_string(),
    })
}

/// Regular expressions find leftmost matches only, so the shortest or
/// longest *suffix* is found by matching the reversed pattern against the
/// reversed value.
fn trim_suffix(pattern: &str, value: &str, greedy: bool) -> Step<String> {
    let mut tokens = pattern_tokens(pattern)?;
    tokens.reverse();
    let re = compile_pattern(&tokens, greedy, true, pattern)?;
    let reversed: String = value.chars().rev().collect();
    let kept = match re.find(&reversed) {
        Some(m) => &reversed[m.end()..],
        None => reversed.as_str(),
    };
    Ok(kept.chars().rev().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Vec<(String, String)> {
        [("PWD", "/home"), ("EMPTY", ""), ("P", "a/b/c.tar.gz")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn ex(word: &str) -> Result<String, ShellError> {
        expand_word(word, &env())
    }

    #[test]
    fn defaults_and_alternatives() {
        assert_eq!(ex("${X:-d}").unwrap(), "d");
        assert_eq!(ex("${EMPTY:-d}").unwrap(), "d");
        assert_eq!(ex("${EMPTY-d}").unwrap(), "");
        assert_eq!(ex("${X-d}").unwrap(), "d");
        assert_eq!(ex("${EMPTY+a}").unwrap(), "a");
        assert_eq!(ex("${EMPTY:+a}").unwrap(), "");
        assert_eq!(ex("${X+a}").unwrap(), "");
    }

    #[test]
    fn required_variables() {
        let e = ex("${X?need X}").unwrap_err();
        assert_eq!(e.reason, "X: need X");
        assert_eq!(
            ex("${EMPTY:?}").unwrap_err().reason,
            "EMPTY: is not allowed to be empty"
        );
        assert_eq!(
            ex("${X?}").unwrap_err().reason,
            "X: is not allowed to be unset"
        );
        assert_eq!(ex("${EMPTY?}").unwrap(), "");
    }

    #[test]
    fn pattern_removal() {
        assert_eq!(ex("${P#*/}").unwrap(), "b/c.tar.gz");
        assert_eq!(ex("${P##*/}").unwrap(), "c.tar.gz");
        assert_eq!(ex("${P%.*}").unwrap(), "a/b/c.tar");
        assert_eq!(ex("${P%%.*}").unwrap(), "a/b/c");
        assert_eq!(ex("${P#x}").unwrap(), "a/b/c.tar.gz");
        assert_eq!(ex("${P%\\*}").unwrap(), "a/b/c.tar.gz");
        assert!(ex("${P:#x}").is_err());
        assert!(ex("${P#\\x}").is_err());
    }

    #[test]
    fn replacement() {
        assert_eq!(ex("${P/\\//_}").unwrap(), "a_b/c.tar.gz");
        assert_eq!(ex("${P//\\//_}").unwrap(), "a_b_c.tar.gz");
        assert_eq!(ex("${P/?.tar/X}").unwrap(), "a/b/X.gz");
        assert_eq!(ex("${X/a/b}").unwrap(), "");
        assert!(ex("${P/a").is_err());
    }

    #[test]
    fn backtick_escape() {
        let lx = Lexer::new('`');
        assert_eq!(lx.expand_word("a`$PWD\\b", &env()).unwrap(), "a$PWD\\b");
    }

    #[test]
    fn unmatched_variables_are_reported() {
        let e = Lexer::default()
            .process("$A ${PWD} ${B:-x}", &env())
            .unwrap();
        assert!(e.unmatched.contains("A") && e.unmatched.contains("B"));
        assert!(e.matched.contains("PWD"));
    }

    #[test]
    fn skip_unset_keeps_references() {
        let lx = Lexer {
            skip_unset_env: true,
            ..Lexer::default()
        };
        assert_eq!(
            lx.expand_word("$A ${B} ${C:-x} $PWD", &env()).unwrap(),
            "$A ${B} ${C:-x} /home"
        );
    }
}
