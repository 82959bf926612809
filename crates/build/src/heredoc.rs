//! Heredoc delimiters (`<<EOF`, `<<-EOF`, `<<"EOF"`, `3<<EOF`).
//!
//! BuildKit finds them by splitting the whole logical line into shell words
//! (quotes and escapes kept, unset variables left alone) and testing every
//! word against `^(\d*)<<(-?)([^<]*)$`. A delimiter with any quoted part
//! disables expansion of the body; that is found by lexing the delimiter
//! with and without raw quotes and comparing how many quote characters
//! survive. Several heredocs on one line are read one after the other.

use std::sync::OnceLock;

use regex::Regex;

use crate::ast::Heredoc;
use crate::shell::Lexer;

fn heredoc_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"^([0-9]*)<<(-?)([^<]*)$").expect("static regex"))
}

/// Heredoc delimiters on a logical line, bodies still empty.
pub fn delimiters(line: &str) -> Result<Vec<Heredoc>, String> {
    let lexer = Lexer {
        raw_quotes: true,
        raw_escapes: true,
        skip_unset_env: true,
        ..Lexer::new('\\')
    };
    let empty: Vec<(String, String)> = Vec::new();
    // A line the lexer cannot split (an unbalanced quote) has no heredocs,
    // as in BuildKit; the instruction itself is judged later.
    let Ok(words) = lexer.expand_words(line, &empty) else {
        return Ok(Vec::new());
    };
    let mut docs = Vec::new();
    for word in words {
        if let Some(doc) = parse_delimiter(&word)? {
            docs.push(doc);
        }
    }
    Ok(docs)
}

/// Parses one word as a heredoc delimiter.
pub fn parse_delimiter(word: &str) -> Result<Option<Heredoc>, String> {
    let Some(caps) = heredoc_re().captures(word) else {
        return Ok(None);
    };
    let fd = caps[1].parse::<u32>().unwrap_or(0);
    let chomp = &caps[2] == "-";
    let rest = &caps[3];
    if rest.is_empty() {
        return Ok(None);
    }
    let empty: Vec<(String, String)> = Vec::new();
    let plain = Lexer {
        skip_unset_env: true,
        ..Lexer::new('\\')
    };
    let words = plain
        .expand_words(rest, &empty)
        .map_err(|e| e.to_string())?;
    if words.len() != 1 {
        return Ok(None);
    }
    let raw = Lexer {
        raw_quotes: true,
        ..plain
    };
    let raw_words = raw.expand_words(rest, &empty).map_err(|e| e.to_string())?;
    if raw_words.len() != 1 {
        return Err(format!(
            "internal lexing of heredoc produced inconsistent results: {rest}"
        ));
    }
    let quotes = |s: &str| s.chars().filter(|c| *c == '\'' || *c == '"').count();
    Ok(Some(Heredoc {
        name: words[0].clone(),
        fd,
        expand: quotes(&words[0]) == quotes(&raw_words[0]),
        chomp,
        content: String::new(),
    }))
}

/// Removes leading tabs from every line (`<<-`).
pub fn chomp(content: &str) -> String {
    content
        .split_inclusive('\n')
        .map(|l| l.trim_start_matches('\t'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_several_delimiters() {
        let docs = delimiters("COPY <<EOF1 <<-\"EOF2\" /dst/").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(
            (docs[0].name.as_str(), docs[0].expand, docs[0].chomp),
            ("EOF1", true, false)
        );
        assert_eq!(
            (docs[1].name.as_str(), docs[1].expand, docs[1].chomp),
            ("EOF2", false, true)
        );
    }

    #[test]
    fn fd_and_partial_quotes() {
        let doc = parse_delimiter("3<<E'O'F").unwrap().unwrap();
        assert_eq!((doc.fd, doc.name.as_str(), doc.expand), (3, "EOF", false));
        assert!(parse_delimiter("<<").unwrap().is_none());
        assert!(parse_delimiter("a<<EOF").unwrap().is_none());
    }

    #[test]
    fn chomp_strips_leading_tabs_only() {
        assert_eq!(chomp("\t\ta\n \tb\n\tc"), "a\n \tb\nc");
    }
}
