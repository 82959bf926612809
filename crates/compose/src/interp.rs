//! Variable interpolation as the compose specification defines it, applied to every
//! string value of the YAML tree before it is typed (so `ports: ${P}` can become a number
//! later).

use serde_yaml::Value;

/// What went wrong while expanding one string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterpError {
    /// `${V:?msg}` / `${V?msg}` with `V` unset (or empty for `:?`).
    #[error("required variable {name} is missing a value: {message}")]
    Required { name: String, message: String },
    #[error("invalid interpolation format in {0:?}")]
    Syntax(String),
}

/// Expands `$V ${V} ${V:-d} ${V-d} ${V:?e} ${V?e} ${V:+r} ${V+r} $$` in `s`; unset plain
/// variables expand to the empty string, as Compose does.
pub fn expand(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, InterpError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = closing_brace(body).ok_or_else(|| InterpError::Syntax(s.to_string()))?;
            out.push_str(&braced(&body[..end], s, lookup)?);
            rest = &body[end + 1..];
        } else {
            let n = name_len(after);
            if n == 0 {
                // A lone `$` before something that cannot start a name stays literal.
                out.push('$');
                rest = after;
            } else {
                out.push_str(&lookup(&after[..n]).unwrap_or_default());
                rest = &after[n..];
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn name_len(s: &str) -> usize {
    let mut n = 0;
    for (i, c) in s.char_indices() {
        let ok = c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit());
        if !ok {
            break;
        }
        n = i + c.len_utf8();
    }
    n
}

/// The index of the `}` closing a `${`, counting nested `${...}` in defaults.
fn closing_brace(body: &str) -> Option<usize> {
    let mut depth = 0usize;
    let bytes = body.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

fn braced(
    inner: &str,
    whole: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, InterpError> {
    let n = name_len(inner);
    if n == 0 {
        return Err(InterpError::Syntax(whole.to_string()));
    }
    let name = &inner[..n];
    let op = &inner[n..];
    let value = lookup(name);
    let set = value.is_some();
    let nonempty = value.as_deref().is_some_and(|v| !v.is_empty());
    let (colon, op) = match op.strip_prefix(':') {
        Some(o) => (true, o),
        None => (false, op),
    };
    let present = if colon { nonempty } else { set };
    let Some(kind) = op.chars().next() else {
        if colon {
            return Err(InterpError::Syntax(whole.to_string()));
        }
        return Ok(value.unwrap_or_default());
    };
    let arg = &op[1..];
    match kind {
        '-' if present => Ok(value.unwrap_or_default()),
        '-' => expand(arg, lookup),
        '+' if present => expand(arg, lookup),
        '+' => Ok(String::new()),
        '?' if present => Ok(value.unwrap_or_default()),
        '?' => Err(InterpError::Required {
            name: name.to_string(),
            message: expand(arg, lookup)?,
        }),
        _ => Err(InterpError::Syntax(whole.to_string())),
    }
}

/// Expands every string (not mapping keys) in the tree; `path` names where an error is.
pub fn tree(
    v: &mut Value,
    path: &mut Vec<String>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), (String, InterpError)> {
    match v {
        Value::String(s) => {
            *s = expand(s, lookup).map_err(|e| (path.join("."), e))?;
        }
        Value::Sequence(seq) => {
            for (i, item) in seq.iter_mut().enumerate() {
                path.push(format!("[{i}]"));
                let r = tree(item, path, lookup);
                path.pop();
                r?;
            }
        }
        Value::Mapping(m) => {
            for (k, item) in m.iter_mut() {
                path.push(crate::load::key_text(k));
                let r = tree(item, path, lookup);
                path.pop();
                r?;
            }
        }
        Value::Tagged(t) => tree(&mut t.value, path, lookup)?,
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "SET" => Some("val".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn x(s: &str) -> Result<String, InterpError> {
        expand(s, &env)
    }

    #[test]
    fn grammar() {
        assert_eq!(x("a $SET b ${SET}c").unwrap(), "a val b valc");
        assert_eq!(x("$UNSET|${UNSET}").unwrap(), "|");
        assert_eq!(
            x("${UNSET:-d} ${EMPTY:-d} ${EMPTY-d} ${UNSET-d}").unwrap(),
            "d d  d"
        );
        assert_eq!(
            x("${SET:+r} ${EMPTY:+r} ${EMPTY+r} ${UNSET+r}").unwrap(),
            "r  r "
        );
        assert_eq!(x("$$SET $$").unwrap(), "$SET $");
        assert_eq!(x("${UNSET:-${SET}x}").unwrap(), "valx");
        assert_eq!(x("${EMPTY?e}").unwrap(), "");
        assert_eq!(
            x("${EMPTY:?need it}").unwrap_err(),
            InterpError::Required {
                name: "EMPTY".into(),
                message: "need it".into()
            }
        );
        assert!(matches!(x("${UNSET?}"), Err(InterpError::Required { .. })));
        assert!(matches!(x("${SET"), Err(InterpError::Syntax(_))));
        assert!(matches!(x("${}"), Err(InterpError::Syntax(_))));
        assert_eq!(x("cost: $5").unwrap(), "cost: $5");
    }
}
