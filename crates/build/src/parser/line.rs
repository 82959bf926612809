//! Turning one logical line into an [`Instruction`]: the keyword, the
//! `--flags`, then the arguments shaped the way each instruction wants.
//!
//! The shapes and their quirks are BuildKit's (see the `ast` docs): quotes
//! are kept in ENV/LABEL/ARG values (they are removed later, by expansion),
//! invalid JSON falls back to shell form, JSON holding anything but strings
//! is an error.

use crate::ast::{Instruction, Kind};

/// Whitespace as BuildKit's `[\t\v\f\r ]+` separator regex sees it.
fn is_sep(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

/// Parses a logical line into an instruction (lines are filled in by the
/// caller). Errors are messages; the caller adds the location.
pub fn parse_instruction(line: &str, escape: char) -> Result<Instruction, String> {
    let (keyword, flags, rest) = split_command(line);
    let kind = Kind::from_keyword(&keyword);
    let mut inst = Instruction {
        kind,
        keyword,
        flags,
        args: Vec::new(),
        json: false,
        onbuild: None,
        heredocs: Vec::new(),
        start_line: 0,
        end_line: 0,
        original: line.to_string(),
    };
    match kind {
        Kind::Add | Kind::Copy | Kind::Volume => {
            (inst.args, inst.json) = maybe_json_to_list(&rest)?
        }
        Kind::Cmd | Kind::Entrypoint | Kind::Run | Kind::Shell => {
            (inst.args, inst.json) = maybe_json(&rest)?
        }
        Kind::Arg => inst.args = split_words(&rest, escape),
        Kind::Env => inst.args = name_values(&rest, "ENV", escape)?,
        Kind::Label => inst.args = name_values(&rest, "LABEL", escape)?,
        Kind::Expose | Kind::From => inst.args = split_whitespace(&rest),
        Kind::Healthcheck => (inst.args, inst.json) = health_config(&rest)?,
        Kind::Maintainer | Kind::StopSignal | Kind::User | Kind::Workdir => {
            if !rest.is_empty() {
                inst.args = vec![rest];
            }
        }
        Kind::Onbuild => {
            if !rest.is_empty() {
                inst.onbuild = Some(Box::new(parse_instruction(&rest, escape)?));
            }
        }
        // BuildKit's parser keeps unknown instructions without arguments;
        // validation is where they are refused.
        Kind::Unknown => {}
    }
    Ok(inst)
}

/// Splits `KEYWORD [--flags] rest`.
fn split_command(line: &str) -> (String, Vec<String>, String) {
    let line = line.trim();
    match line.find(is_sep) {
        None => (line.to_string(), Vec::new(), String::new()),
        Some(i) => {
            let after = line[i..].trim_start_matches(is_sep);
            let (rest, flags) = extract_flags(after);
            (line[..i].to_string(), flags, rest.trim().to_string())
        }
    }
}

#[derive(PartialEq, Clone, Copy)]
enum Phase {
    Spaces,
    Word,
    Quote,
}

/// Takes the leading `--flag[=value]` words off `line`. A flag word may be
/// quoted (`--label="a b"`) and may use `\` escapes; quotes and escapes are
/// removed. A lone `--` ends the flags.
fn extract_flags(line: &str) -> (&str, Vec<String>) {
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let n = chars.len();
    let mut flags = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut pos = 0;
    while pos <= n {
        let at = chars.get(pos).copied();
        if phase == Phase::Spaces {
            let Some((idx, ch)) = at else { break };
            if ch.is_whitespace() {
                pos += 1;
                continue;
            }
            let next = chars.get(pos + 1).map(|c| c.1);
            if ch != '-' || next != Some('-') {
                return (&line[idx..], flags);
            }
            phase = Phase::Word;
        }
        let Some((idx, mut ch)) = at else {
            if word != "--" && (blank_ok || !word.is_empty()) {
                flags.push(word);
            }
            return ("", flags);
        };
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if word == "--" {
                    return (&line[idx..], flags);
                }
                if blank_ok || !word.is_empty() {
                    flags.push(std::mem::take(&mut word));
                }
                word.clear();
                blank_ok = false;
            } else if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            } else {
                if ch == '\\' {
                    if pos + 1 == n {
                        pos += 1;
                        continue;
                    }
                    pos += 1;
                    ch = chars[pos].1;
                }
                word.push(ch);
            }
        } else if ch == quote {
            phase = Phase::Word;
        } else {
            if ch == '\\' {
                if pos + 1 == n {
                    phase = Phase::Word;
                    pos += 1;
                    continue;
                }
                pos += 1;
                ch = chars[pos].1;
            }
            word.push(ch);
        }
        pos += 1;
    }
    ("", flags)
}

/// Splits on blanks, keeping quotes and escapes in the words (they are
/// removed when the word is expanded). Used for ARG and to tell the ENV and
/// LABEL forms apart.
pub fn split_words(rest: &str, escape: char) -> Vec<String> {
    let chars: Vec<char> = rest.chars().collect();
    let n = chars.len();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut pos = 0;
    while pos <= n {
        let at = chars.get(pos).copied();
        if phase == Phase::Spaces {
            match at {
                None => break,
                Some(c) if c.is_whitespace() => {
                    pos += 1;
                    continue;
                }
                Some(_) => phase = Phase::Word,
            }
        }
        let Some(mut ch) = at else {
            if blank_ok || !word.is_empty() {
                words.push(word);
            }
            break;
        };
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            }
            if ch == escape {
                if pos + 1 == n {
                    pos += 1;
                    continue; // a trailing escape is dropped
                }
                // Outside quotes an escape and the character after it are
                // kept together, even when that character is a quote.
                word.push(ch);
                pos += 1;
                ch = chars[pos];
            }
            word.push(ch);
        } else {
            if ch == quote {
                phase = Phase::Word;
            }
            // Nothing escapes inside single quotes.
            if ch == escape && quote != '\'' {
                if pos + 1 == n {
                    phase = Phase::Word;
                    pos += 1;
                    continue;
                }
                word.push(ch);
                pos += 1;
                ch = chars[pos];
            }
            word.push(ch);
        }
        pos += 1;
    }
    words
}

/// ENV and LABEL: `key=value ...`, or the legacy `key value` when the first
/// word has no `=`. Returns `key, value, separator` triples.
fn name_values(rest: &str, keyword: &str, escape: char) -> Result<Vec<String>, String> {
    let words = split_words(rest, escape);
    let Some(first) = words.first() else {
        return Ok(Vec::new());
    };
    if !first.contains('=') {
        let Some(i) = rest.find(is_sep) else {
            return Err(format!("{keyword} must have two arguments"));
        };
        let value = rest[i..].trim_start_matches(is_sep);
        return Ok(vec![
            rest[..i].to_string(),
            value.to_string(),
            String::new(),
        ]);
    }
    let mut out = Vec::with_capacity(words.len() * 3);
    for word in &words {
        let Some((k, v)) = word.split_once('=') else {
            return Err(format!(
                "Syntax error - can't find = in {}. Must be of the form: name=value",
                crate::ast::go_quote(word)
            ));
        };
        out.extend([k.to_string(), v.to_string(), "=".to_string()]);
    }
    Ok(out)
}

fn split_whitespace(rest: &str) -> Vec<String> {
    if rest.is_empty() {
        return Vec::new();
    }
    rest.split(is_sep)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

const NOT_STRINGS: &str = "when using JSON array syntax, arrays must be comprised of strings only";

/// `Ok(None)` when `rest` is not a JSON array (the caller falls back to
/// shell form); an error when it is one but holds something else than
/// strings.
fn json_array(rest: &str) -> Result<Option<Vec<String>>, String> {
    let rest = rest.trim_start();
    if !rest.starts_with('[') {
        return Ok(None);
    }
    let Ok(values) = serde_json::from_str::<Vec<serde_json::Value>>(rest) else {
        return Ok(None);
    };
    values
        .into_iter()
        .map(|v| match v {
            serde_json::Value::String(s) => Ok(s),
            _ => Err(NOT_STRINGS.to_string()),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// RUN/CMD/ENTRYPOINT/SHELL: JSON list, else the whole text as one string.
fn maybe_json(rest: &str) -> Result<(Vec<String>, bool), String> {
    if rest.is_empty() {
        return Ok((Vec::new(), false));
    }
    Ok(match json_array(rest)? {
        Some(list) => (list, true),
        None => (vec![rest.to_string()], false),
    })
}

/// ADD/COPY/VOLUME: JSON list, else blank-separated words.
fn maybe_json_to_list(rest: &str) -> Result<(Vec<String>, bool), String> {
    Ok(match json_array(rest)? {
        Some(list) => (list, true),
        None => (split_whitespace(rest), false),
    })
}

/// HEALTHCHECK: a type word (`CMD`, `NONE`...) then a RUN-like command.
fn health_config(rest: &str) -> Result<(Vec<String>, bool), String> {
    let sep = rest.find(char::is_whitespace).unwrap_or(rest.len());
    if sep == 0 {
        return Ok((Vec::new(), false));
    }
    let command = rest[sep..].trim_start_matches(char::is_whitespace);
    let (mut args, json) = maybe_json(command)?;
    args.insert(0, rest[..sep].to_string());
    Ok((args, json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_stop_at_first_non_flag_or_double_dash() {
        assert_eq!(
            extract_flags("--a=1 --b x y"),
            ("x y", vec!["--a=1".into(), "--b".into()])
        );
        assert_eq!(extract_flags("--a -- --b"), (" --b", vec!["--a".into()]));
        assert_eq!(
            extract_flags("--l=\"a b\" c"),
            ("c", vec!["--l=a b".into()])
        );
        assert_eq!(extract_flags("-x"), ("-x", vec![]));
        assert_eq!(extract_flags("--"), ("", vec![]));
    }

    #[test]
    fn words_keep_quotes_and_escapes() {
        assert_eq!(
            split_words(r#"a="b c" d\ e"#, '\\'),
            vec![r#"a="b c""#, r"d\ e"]
        );
        assert_eq!(split_words("x='a\\'", '\\'), vec!["x='a\\'"]);
    }

    #[test]
    fn nested_json_is_an_error_and_bad_json_falls_back() {
        assert!(maybe_json(r#"[ "a", [ "b" ] ]"#).is_err());
        assert_eq!(maybe_json("['a']").unwrap(), (vec!["['a']".into()], false));
        assert_eq!(maybe_json(r#"["a"]"#).unwrap(), (vec!["a".into()], true));
    }
}
