//! `.dockerignore` files, matched as moby/patternmatcher matches them.
//!
//! * Reading: lines starting with `#` are comments; blanks around a line
//!   are removed; each pattern is cleaned like Go's `filepath.Clean` and a
//!   leading `/` is dropped (patterns are relative to the context root);
//!   `!` marks an exception and is kept in front.
//! * Matching: `*` and `?` never cross a `/`; `**` crosses any number of
//!   directories; `[...]` classes and `\` escapes work; a pattern excludes a
//!   path when it matches the path *or any of its parent directories*; the
//!   last pattern that matches decides, and `!` patterns re-include.
//!
//! Patterns compile, like patternmatcher's, to the cheapest test that
//! decides them: equality, a prefix (`dir/**`), a suffix (`**/name`), or a
//! regular expression.

use std::path::{Path, PathBuf};

use regex::Regex;

/// A pattern that cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IgnoreError {
    /// A lone `!`.
    #[error("illegal exclusion pattern: \"!\"")]
    LoneExclamation,
    /// A syntax error (e.g. an unclosed `[`).
    #[error("syntax error in pattern {pattern:?}: {reason}")]
    Syntax {
        /// The pattern as cleaned.
        pattern: String,
        /// The compiler's complaint.
        reason: String,
    },
}

/// Reads a `.dockerignore` text into its patterns, in order.
pub fn read_patterns(text: &str) -> Vec<String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let mut pattern = line.trim();
        if pattern.is_empty() {
            continue;
        }
        let invert = pattern.starts_with('!');
        if invert {
            pattern = pattern[1..].trim();
        }
        let mut cleaned = String::new();
        if !pattern.is_empty() {
            cleaned = clean_path(pattern);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
        }
        out.push(if invert {
            format!("!{cleaned}")
        } else {
            cleaned
        });
    }
    out
}

/// The ignore file BuildKit uses for a build: `<Dockerfile>.dockerignore`
/// next to the Dockerfile when it exists, else `.dockerignore` at the root
/// of the context, else none.
pub fn pick_ignore_file(context_dir: &Path, dockerfile: &Path) -> Option<PathBuf> {
    let dockerfile = if dockerfile.is_absolute() {
        dockerfile.to_path_buf()
    } else {
        context_dir.join(dockerfile)
    };
    if let Some(name) = dockerfile.file_name() {
        let mut specific = name.to_os_string();
        specific.push(".dockerignore");
        let candidate = dockerfile.with_file_name(specific);
        if candidate.is_file() {
            return Some(candidate);
        }
    }
    let general = context_dir.join(".dockerignore");
    general.is_file().then_some(general)
}

#[derive(Debug, Clone)]
enum Test {
    Exact,
    Prefix(String),
    Suffix(String),
    Regex(Regex),
}

/// One compiled pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    /// The pattern, cleaned, without its `!`.
    pub text: String,
    /// Whether it is an exception (`!`).
    pub exclusion: bool,
    test: Test,
}

impl Pattern {
    /// Whether the pattern matches `path` itself.
    pub fn matches(&self, path: &str) -> bool {
        match &self.test {
            Test::Exact => path == self.text,
            Test::Prefix(p) => path.starts_with(p.as_str()),
            Test::Suffix(s) => {
                path.ends_with(s.as_str()) || s.strip_prefix('/').is_some_and(|rest| path == rest)
            }
            Test::Regex(re) => re.is_match(path),
        }
    }
}

/// An ordered list of patterns, as in one `.dockerignore`.
#[derive(Debug, Clone, Default)]
pub struct PatternMatcher {
    patterns: Vec<Pattern>,
}

impl PatternMatcher {
    /// Compiles patterns (as [`read_patterns`] returns them).
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, IgnoreError> {
        let mut compiled = Vec::new();
        for p in patterns {
            let p = p.as_ref().trim();
            if p.is_empty() {
                continue;
            }
            let mut p = clean_path(p);
            let exclusion = p.starts_with('!');
            if exclusion {
                if p.len() == 1 {
                    return Err(IgnoreError::LoneExclamation);
                }
                p.remove(0);
            }
            let test = compile(&p)?;
            compiled.push(Pattern {
                text: p,
                exclusion,
                test,
            });
        }
        Ok(PatternMatcher { patterns: compiled })
    }

    /// The compiled patterns.
    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// Whether an exception could bring back an entry inside directory `dir`:
    /// one whose components (up to a `**`, or all of them) match `dir`'s first ones.
    /// False means the excluded directory need not be walked; true may be wrong,
    /// which costs only the walk.
    pub fn may_reinclude_under(&self, dir: &str) -> bool {
        let dir: Vec<&str> = dir.split('/').collect();
        self.patterns.iter().filter(|p| p.exclusion).any(|p| {
            for (i, part) in p.text.split('/').enumerate() {
                if part.contains("**") {
                    return true;
                }
                let Some(name) = dir.get(i) else {
                    return true;
                };
                if !crate::copy::fnmatch(part.as_bytes(), name.as_bytes()) {
                    return false;
                }
            }
            true
        })
    }

    /// Whether `path` (relative to the context, `/`-separated) is excluded:
    /// the last pattern matching it or one of its parent directories wins.
    pub fn matches_or_parent_matches(&self, path: &str) -> bool {
        let parent = go_dir(path);
        let parents: Vec<&str> = parent.split('/').collect();
        let mut matched = false;
        for pattern in &self.patterns {
            // Only a pattern that could change the verdict is tried.
            if pattern.exclusion != matched {
                continue;
            }
            let mut hit = pattern.matches(path);
            if !hit && parent != "." {
                hit = (1..=parents.len()).any(|i| pattern.matches(&parents[..i].join("/")));
            }
            if hit {
                matched = !pattern.exclusion;
            }
        }
        matched
    }
}

#[derive(PartialEq)]
enum Kind {
    Exact,
    Prefix,
    Suffix,
    Regex,
}

/// Chooses the cheapest test for a cleaned pattern (see the module docs).
fn compile(pattern: &str) -> Result<Test, IgnoreError> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut re = String::from("^");
    let mut kind = Kind::Exact;
    let mut i = 0;
    let mut token = 0;
    // Inside `[...]` characters go to the regex as they are, so that
    // ranges and negations keep their meaning.
    let mut in_class = false;
    while i < chars.len() {
        let ch = chars[i];
        i += 1;
        match ch {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                // `**/` is `**`: the slash is part of "any directories".
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i == chars.len() {
                    if kind == Kind::Exact {
                        kind = Kind::Prefix;
                    } else {
                        re.push_str(".*");
                        kind = Kind::Regex;
                    }
                } else {
                    re.push_str("(.*/)?");
                    kind = Kind::Regex;
                }
                if token == 0 {
                    kind = Kind::Suffix;
                }
            }
            '*' => {
                re.push_str("[^/]*");
                kind = Kind::Regex;
            }
            '?' => {
                re.push_str("[^/]");
                kind = Kind::Regex;
            }
            '.' | '+' | '(' | ')' | '|' | '{' | '}' | '$' => {
                re.push('\\');
                re.push(ch);
            }
            '\\' => match chars.get(i) {
                Some(next) => {
                    re.push_str(&regex::escape(&next.to_string()));
                    i += 1;
                    kind = Kind::Regex;
                }
                None => re.push_str("\\\\"),
            },
            '[' | ']' => {
                in_class = ch == '[';
                re.push(ch);
                kind = Kind::Regex;
            }
            _ if in_class => re.push(ch),
            _ => re.push_str(&regex::escape(&ch.to_string())),
        }
        token += 1;
    }
    Ok(match kind {
        Kind::Exact => Test::Exact,
        Kind::Prefix => Test::Prefix(pattern[..pattern.len() - 2].to_string()),
        Kind::Suffix => {
            let suffix = pattern[2..].to_string();
            Test::Suffix(suffix)
        }
        Kind::Regex => {
            re.push('$');
            let compiled = Regex::new(&re).map_err(|e| IgnoreError::Syntax {
                pattern: pattern.to_string(),
                reason: e.to_string(),
            })?;
            Test::Regex(compiled)
        }
    })
}

/// Go's `filepath.Clean` for `/`-separated paths.
pub fn clean_path(path: &str) -> String {
    if path.is_empty() {
        return ".".to_string();
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
                _ if rooted => {}
                _ => parts.push(".."),
            },
            p => parts.push(p),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// Go's `filepath.Dir`: everything before the last `/`, cleaned.
fn go_dir(path: &str) -> String {
    match path.rfind('/') {
        Some(i) => clean_path(&path[..=i]),
        None => ".".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn excluded(patterns: &[&str], path: &str) -> bool {
        PatternMatcher::new(patterns)
            .unwrap()
            .matches_or_parent_matches(path)
    }

    #[test]
    fn reading_cleans_and_keeps_exceptions() {
        let text = "# comment\n\n /abs/./x/ \n!  /keep/../kept\n*.md\n";
        assert_eq!(read_patterns(text), vec!["abs/x", "!kept", "*.md"]);
    }

    #[test]
    fn parent_directories_and_last_match() {
        assert!(excluded(&["node_modules"], "node_modules/a/b.js"));
        assert!(!excluded(&["*.md", "!README.md"], "README.md"));
        assert!(excluded(&["*.md", "!README.md", "README*"], "README.md"));
        assert!(!excluded(&["a/*.txt"], "a/b/c.txt"));
    }

    #[test]
    fn lone_bang_is_refused() {
        assert_eq!(
            PatternMatcher::new(&["!"]).unwrap_err(),
            IgnoreError::LoneExclamation
        );
        assert!(PatternMatcher::new(&["a[b"]).is_err());
    }

    #[test]
    fn clean_like_go() {
        assert_eq!(clean_path("a//b/./../c/"), "a/c");
        assert_eq!(clean_path("/../x"), "/x");
        assert_eq!(clean_path("../../x"), "../../x");
        assert_eq!(clean_path("./"), ".");
    }

    #[test]
    fn picks_dockerfile_specific_ignore_first() {
        let dir = std::env::temp_dir().join(format!("berth-ignore-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        assert_eq!(
            pick_ignore_file(&dir, Path::new("sub/app.Dockerfile")),
            None
        );
        std::fs::write(dir.join(".dockerignore"), "x").unwrap();
        assert_eq!(
            pick_ignore_file(&dir, Path::new("sub/app.Dockerfile")),
            Some(dir.join(".dockerignore"))
        );
        std::fs::write(dir.join("sub/app.Dockerfile.dockerignore"), "y").unwrap();
        assert_eq!(
            pick_ignore_file(&dir, Path::new("sub/app.Dockerfile")),
            Some(dir.join("sub/app.Dockerfile.dockerignore"))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
