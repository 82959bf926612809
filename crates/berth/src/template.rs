//! Go's text/template, as much of it as `--format` strings use with Docker: actions with
//! fields (`.A.B`), variables (`$v`, `$`), literals, parenthesised pipelines with field
//! access on their result, pipes, `if`/`else if`/`else`, `range` (with `$i, $v :=` and
//! `else`), `with`, trim markers (`{{-`, `-}}`), Go's builtins (`and or not len index
//! slice eq ne lt le gt ge print printf println`) and Docker's (`json join split lower
//! upper title truncate pad`). The data is JSON, as the objects berth prints are.
//!
//! Written here because the Rust ports of text/template are unmaintained and work on
//! their own value types, while every object berth formats is already a
//! `serde_json::Value`; scripts depend on the Docker idioms above working exactly
//! (`{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}`,
//! `{{(index (index .NetworkSettings.Ports "80/tcp") 0).HostPort}}`).

use serde_json::Value;

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    nodes: Vec<Node>,
}

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Action(Pipeline),
    If {
        branches: Vec<(Pipeline, Vec<Node>)>,
        otherwise: Vec<Node>,
    },
    Range {
        pipe: Pipeline,
        body: Vec<Node>,
        otherwise: Vec<Node>,
    },
    With {
        pipe: Pipeline,
        body: Vec<Node>,
        otherwise: Vec<Node>,
    },
}

/// `[$a[, $b] :=] cmd | cmd …`
#[derive(Debug, Clone)]
struct Pipeline {
    vars: Vec<String>,
    cmds: Vec<Vec<Arg>>,
}

#[derive(Debug, Clone)]
enum Arg {
    /// `.` or `.A.B`: fields of the current value.
    Dot(Vec<String>),
    /// `$` or `$x`, then fields.
    Var(String, Vec<String>),
    Lit(Value),
    Func(String),
    /// `( pipeline )`, then fields.
    Sub(Box<Pipeline>, Vec<String>),
}

impl Template {
    pub fn parse(src: &str) -> Result<Template, String> {
        let pieces = split_actions(src)?;
        let mut p = Parser { pieces, at: 0 };
        let (nodes, end) = p.nodes()?;
        match end {
            None => Ok(Template { nodes }),
            Some(k) => Err(format!("unexpected {{{{{k}}}}}")),
        }
    }

    pub fn execute(&self, data: &Value) -> Result<String, String> {
        let mut out = String::new();
        let mut scope = Scope {
            vars: vec![("$".to_string(), data.clone())],
        };
        run(&self.nodes, data, &mut scope, &mut out)?;
        Ok(out)
    }
}

/// Text and action sources, with `{{-`/`-}}` trimming already applied to the text.
enum Piece {
    Text(String),
    Action(String),
}

fn split_actions(src: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut rest = src;
    let mut trim_next = false;
    while let Some(start) = rest.find("{{") {
        let mut text = &rest[..start];
        if trim_next {
            text = text.trim_start();
        }
        let after = &rest[start + 2..];
        let Some(end) = find_close(after) else {
            return Err("unclosed action".into());
        };
        let mut inner = &after[..end];
        if let Some(t) = inner.strip_prefix("- ") {
            text = text.trim_end();
            inner = t;
        }
        trim_next = false;
        if let Some(t) = inner.strip_suffix(" -") {
            trim_next = true;
            inner = t;
        }
        pieces.push(Piece::Text(text.to_string()));
        pieces.push(Piece::Action(inner.trim().to_string()));
        rest = &after[end + 2..];
    }
    let text = if trim_next { rest.trim_start() } else { rest };
    pieces.push(Piece::Text(text.to_string()));
    Ok(pieces)
}

/// The `}}` closing an action, past any string literal holding one.
fn find_close(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'`' => {
                i += 1;
                while i < b.len() && b[i] != b'`' {
                    i += 1;
                }
            }
            b'}' if b.get(i + 1) == Some(&b'}') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

struct Parser {
    pieces: Vec<Piece>,
    at: usize,
}

impl Parser {
    /// Nodes up to an `end`/`else…` action (returned) or the end of the template.
    fn nodes(&mut self) -> Result<(Vec<Node>, Option<String>), String> {
        let mut nodes = Vec::new();
        while self.at < self.pieces.len() {
            let i = self.at;
            self.at += 1;
            let action = match &self.pieces[i] {
                Piece::Text(t) => {
                    if !t.is_empty() {
                        nodes.push(Node::Text(t.clone()));
                    }
                    continue;
                }
                Piece::Action(a) => a.clone(),
            };
            let (word, rest) = split_keyword(&action);
            match word {
                "end" | "else" => return Ok((nodes, Some(action))),
                "if" => nodes.push(self.if_node(rest)?),
                "range" => {
                    let pipe = pipeline(rest)?;
                    let (body, otherwise) = self.block("range")?;
                    nodes.push(Node::Range {
                        pipe,
                        body,
                        otherwise,
                    });
                }
                "with" => {
                    let pipe = pipeline(rest)?;
                    let (body, otherwise) = self.block("with")?;
                    nodes.push(Node::With {
                        pipe,
                        body,
                        otherwise,
                    });
                }
                _ if action.starts_with("/*") => {}
                _ => nodes.push(Node::Action(pipeline(&action)?)),
            }
        }
        Ok((nodes, None))
    }

    /// A body, then an optional `{{else}}` body, closed by `{{end}}`.
    fn block(&mut self, what: &str) -> Result<(Vec<Node>, Vec<Node>), String> {
        let (body, end) = self.nodes()?;
        match end.as_deref() {
            Some("end") => Ok((body, Vec::new())),
            Some("else") => match self.nodes()? {
                (otherwise, Some(e)) if e == "end" => Ok((body, otherwise)),
                _ => Err(format!("unterminated {what}")),
            },
            _ => Err(format!("unterminated {what}")),
        }
    }

    fn if_node(&mut self, cond: &str) -> Result<Node, String> {
        let mut branches = vec![(pipeline(cond)?, Vec::new())];
        loop {
            let (body, end) = self.nodes()?;
            if let Some(last) = branches.last_mut() {
                last.1 = body;
            }
            let end = end.ok_or("unterminated if")?;
            if end == "end" {
                return Ok(Node::If {
                    branches,
                    otherwise: Vec::new(),
                });
            }
            let (_, rest) = split_keyword(&end);
            match split_keyword(rest) {
                ("if", cond) => branches.push((pipeline(cond)?, Vec::new())),
                ("", _) => {
                    return match self.nodes()? {
                        (otherwise, Some(e)) if e == "end" => Ok(Node::If {
                            branches,
                            otherwise,
                        }),
                        _ => Err("unterminated if".into()),
                    }
                }
                _ => return Err(format!("unexpected {{{{{end}}}}}")),
            }
        }
    }
}

/// `range.A` is `range .A` to Go's lexer: a keyword ends where a field begins.
fn split_keyword(action: &str) -> (&str, &str) {
    let end = action
        .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .unwrap_or(action.len());
    let word = &action[..end];
    match word {
        "if" | "else" | "end" | "range" | "with" => (word, action[end..].trim()),
        _ => ("", action),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// Identifiers, fields (`.A.B`), variables (`$x.A`).
    Word(String),
    /// A string literal, unquoted.
    Str(String),
    Num(f64),
    Open,
    Close,
    Pipe,
    Declare,
    Comma,
}

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let b = s.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'(' => {
                toks.push(Tok::Open);
                i += 1
            }
            b')' => {
                toks.push(Tok::Close);
                i += 1
            }
            b'|' => {
                toks.push(Tok::Pipe);
                i += 1
            }
            b',' => {
                toks.push(Tok::Comma);
                i += 1
            }
            b':' if b.get(i + 1) == Some(&b'=') => {
                toks.push(Tok::Declare);
                i += 2
            }
            b'=' => {
                toks.push(Tok::Declare);
                i += 1
            }
            b'"' => {
                let (text, next) = quoted(s, i)?;
                toks.push(Tok::Str(text));
                i = next;
            }
            b'`' => {
                let end = s[i + 1..].find('`').ok_or("unterminated raw string")?;
                toks.push(Tok::Str(s[i + 1..i + 1 + end].to_string()));
                i += end + 2;
            }
            _ => {
                let end = s[i..]
                    .find(|ch: char| " \t\n\r()|,\"`".contains(ch) || ch == ':')
                    .map_or(s.len(), |e| i + e);
                let word = &s[i..end.max(i + 1)];
                let number = word.starts_with(|ch: char| ch.is_ascii_digit() || ch == '-')
                    && word.len() > usize::from(word.starts_with('-'));
                match word.parse::<f64>() {
                    Ok(n) if number => toks.push(Tok::Num(n)),
                    _ => toks.push(Tok::Word(word.to_string())),
                }
                i = end.max(i + 1);
            }
        }
    }
    Ok(toks)
}

fn quoted(s: &str, start: usize) -> Result<(String, usize), String> {
    let mut out = String::new();
    let mut chars = s[start + 1..].char_indices();
    while let Some((i, ch)) = chars.next() {
        match ch {
            '"' => return Ok((out, start + 1 + i + 1)),
            '\\' => match chars.next().map(|x| x.1) {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some('0') => out.push('\0'),
                Some(other) => out.push(other),
                None => break,
            },
            c => out.push(c),
        }
    }
    Err("unterminated quoted string".into())
}

fn pipeline(src: &str) -> Result<Pipeline, String> {
    let toks = lex(src)?;
    let mut at = 0;
    let p = parse_pipeline(&toks, &mut at)?;
    if at != toks.len() {
        return Err(format!("unexpected {:?} in {src:?}", toks[at]));
    }
    Ok(p)
}

fn parse_pipeline(toks: &[Tok], at: &mut usize) -> Result<Pipeline, String> {
    let mut vars = Vec::new();
    // `$a := …` or `$a, $b := …`
    let mut look = *at;
    let mut names = Vec::new();
    while let Some(Tok::Word(w)) = toks.get(look) {
        if !w.starts_with('$') || w.contains('.') {
            break;
        }
        names.push(w.clone());
        look += 1;
        match toks.get(look) {
            Some(Tok::Comma) => look += 1,
            Some(Tok::Declare) => {
                vars = std::mem::take(&mut names);
                *at = look + 1;
                break;
            }
            _ => break,
        }
    }
    let mut cmds = vec![Vec::new()];
    while let Some(t) = toks.get(*at) {
        match t {
            Tok::Close => break,
            Tok::Pipe => {
                *at += 1;
                cmds.push(Vec::new());
                continue;
            }
            _ => {}
        }
        let arg = operand(toks, at)?;
        if let Some(cmd) = cmds.last_mut() {
            cmd.push(arg);
        }
    }
    if cmds.iter().any(Vec::is_empty) {
        return Err("missing value for command".into());
    }
    Ok(Pipeline { vars, cmds })
}

fn operand(toks: &[Tok], at: &mut usize) -> Result<Arg, String> {
    let t = toks.get(*at).ok_or("unexpected end of action")?.clone();
    *at += 1;
    Ok(match t {
        Tok::Open => {
            let inner = parse_pipeline(toks, at)?;
            if toks.get(*at) != Some(&Tok::Close) {
                return Err("unclosed left paren".into());
            }
            *at += 1;
            // `(…).A.B`: the lexer leaves the chain as a word starting with '.'.
            let fields = match toks.get(*at) {
                Some(Tok::Word(w)) if w.starts_with('.') && w.len() > 1 && glued(toks, *at) => {
                    *at += 1;
                    fields_of(w)
                }
                _ => Vec::new(),
            };
            Arg::Sub(Box::new(inner), fields)
        }
        Tok::Str(s) => Arg::Lit(Value::String(s)),
        Tok::Num(n) => Arg::Lit(number(n)),
        Tok::Word(w) if w.starts_with('.') => Arg::Dot(fields_of(&w)),
        Tok::Word(w) if w.starts_with('$') => {
            let (name, rest) = w.split_at(w.find('.').unwrap_or(w.len()));
            Arg::Var(name.to_string(), fields_of(rest))
        }
        Tok::Word(w) => match w.as_str() {
            "true" => Arg::Lit(Value::Bool(true)),
            "false" => Arg::Lit(Value::Bool(false)),
            "nil" => Arg::Lit(Value::Null),
            _ => Arg::Func(w),
        },
        other => return Err(format!("unexpected {other:?}")),
    })
}

/// Whether the word at `i` follows a `)` with no space: the lexer drops spaces, so a
/// field chain right after a close paren is taken as applying to it, as Go writes it.
fn glued(toks: &[Tok], i: usize) -> bool {
    matches!(toks.get(i.wrapping_sub(1)), Some(Tok::Close))
}

fn fields_of(chain: &str) -> Vec<String> {
    chain
        .split('.')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

fn number(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9e15 {
        Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)
    }
}

struct Scope {
    vars: Vec<(String, Value)>,
}

impl Scope {
    fn get(&self, name: &str) -> Result<&Value, String> {
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            .ok_or_else(|| format!("undefined variable: {name}"))
    }
}

fn run(nodes: &[Node], dot: &Value, scope: &mut Scope, out: &mut String) -> Result<(), String> {
    let depth = scope.vars.len();
    for node in nodes {
        match node {
            Node::Text(t) => out.push_str(t),
            Node::Action(p) => {
                let v = pipe(p, dot, scope)?;
                if p.vars.is_empty() {
                    out.push_str(&plain(&v));
                }
            }
            Node::If {
                branches,
                otherwise,
            } => {
                let mut taken = false;
                for (cond, body) in branches {
                    if truthy(&pipe(cond, dot, scope)?) {
                        run(body, dot, scope, out)?;
                        taken = true;
                        break;
                    }
                }
                if !taken {
                    run(otherwise, dot, scope, out)?;
                }
            }
            Node::With {
                pipe: p,
                body,
                otherwise,
            } => {
                let v = pipe(p, dot, scope)?;
                if truthy(&v) {
                    run(body, &v, scope, out)?;
                } else {
                    run(otherwise, dot, scope, out)?;
                }
            }
            Node::Range {
                pipe: p,
                body,
                otherwise,
            } => {
                let v = eval_cmds(&p.cmds, dot, scope)?;
                let items: Vec<(Value, Value)> = match v {
                    Value::Array(a) => a
                        .into_iter()
                        .enumerate()
                        .map(|(i, x)| (Value::from(i), x))
                        .collect(),
                    // Go ranges over a map in key order.
                    Value::Object(m) => {
                        let mut kv: Vec<_> =
                            m.into_iter().map(|(k, x)| (Value::String(k), x)).collect();
                        kv.sort_by_key(|a| plain(&a.0));
                        kv
                    }
                    Value::Null => Vec::new(),
                    Value::Number(n) => (0..n.as_u64().unwrap_or(0))
                        .map(|i| (Value::from(i), Value::from(i)))
                        .collect(),
                    other => return Err(format!("range can't iterate over {}", plain(&other))),
                };
                if items.is_empty() {
                    run(otherwise, dot, scope, out)?;
                }
                for (k, x) in items {
                    let mark = scope.vars.len();
                    match p.vars.as_slice() {
                        [v] => scope.vars.push((v.clone(), x.clone())),
                        [kname, vname] => {
                            scope.vars.push((kname.clone(), k));
                            scope.vars.push((vname.clone(), x.clone()));
                        }
                        _ => {}
                    }
                    run(body, &x, scope, out)?;
                    scope.vars.truncate(mark);
                }
            }
        }
    }
    // Variables declared in this block end with it.
    scope.vars.truncate(depth.max(1));
    Ok(())
}

fn pipe(p: &Pipeline, dot: &Value, scope: &mut Scope) -> Result<Value, String> {
    let v = eval_cmds(&p.cmds, dot, scope)?;
    if let Some(name) = p.vars.first() {
        scope.vars.push((name.clone(), v.clone()));
    }
    Ok(v)
}

fn eval_cmds(cmds: &[Vec<Arg>], dot: &Value, scope: &Scope) -> Result<Value, String> {
    let mut piped: Option<Value> = None;
    for cmd in cmds {
        piped = Some(eval_cmd(cmd, dot, scope, piped)?);
    }
    Ok(piped.unwrap_or(Value::Null))
}

fn eval_cmd(
    cmd: &[Arg],
    dot: &Value,
    scope: &Scope,
    piped: Option<Value>,
) -> Result<Value, String> {
    let Some((first, rest)) = cmd.split_first() else {
        return Ok(Value::Null);
    };
    if let Arg::Func(name) = first {
        let mut args = rest
            .iter()
            .map(|a| eval_arg(a, dot, scope))
            .collect::<Result<Vec<_>, _>>()?;
        args.extend(piped);
        return call(name, &args);
    }
    // Docker's `ps`/`images` rows have a method `.Label "key"`: a label's value.
    if let (Arg::Dot(path), [key]) = (first, rest) {
        if path.last().is_some_and(|f| f == "Label") {
            let owner = walk(dot, &path[..path.len() - 1]);
            return Ok(label(&owner, &text(&eval_arg(key, dot, scope)?)));
        }
    }
    if !rest.is_empty() || piped.is_some() {
        return Err("can't give arguments to a non-function".into());
    }
    eval_arg(first, dot, scope)
}

fn eval_arg(a: &Arg, dot: &Value, scope: &Scope) -> Result<Value, String> {
    Ok(match a {
        Arg::Dot(fields) => walk(dot, fields),
        Arg::Var(name, fields) => walk(scope.get(name)?, fields),
        Arg::Lit(v) => v.clone(),
        Arg::Sub(p, fields) => walk(&eval_cmds(&p.cmds, dot, scope)?, fields),
        Arg::Func(name) => call(name, &[])?,
    })
}

/// A label of a row whose `Labels` is a map, or Docker's `k=v,k2=v2` text.
fn label(row: &Value, key: &str) -> Value {
    match &row["Labels"] {
        Value::Object(m) => m.get(key).cloned().unwrap_or(Value::String(String::new())),
        Value::String(s) => Value::String(
            s.split(',')
                .find_map(|kv| {
                    kv.split_once('=')
                        .filter(|(k, _)| *k == key)
                        .map(|(_, v)| v)
                })
                .unwrap_or("")
                .to_string(),
        ),
        _ => Value::String(String::new()),
    }
}

fn walk(v: &Value, fields: &[String]) -> Value {
    fields.iter().fold(v.clone(), |v, f| v[f.as_str()].clone())
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|x| x != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// How Go prints a value: strings bare, lists `[a b]`, maps `map[k:v]`, nothing as
/// `<no value>`.
pub fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "<no value>".into(),
        Value::Array(a) => format!("[{}]", a.iter().map(plain).collect::<Vec<_>>().join(" ")),
        Value::Object(o) => {
            let mut kv: Vec<_> = o.iter().collect();
            kv.sort_by(|a, b| a.0.cmp(b.0));
            let inner: Vec<String> = kv
                .iter()
                .map(|(k, v)| format!("{k}:{}", plain(v)))
                .collect();
            format!("map[{}]", inner.join(" "))
        }
        v => v.to_string(),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        v => plain(v),
    }
}

fn call(name: &str, args: &[Value]) -> Result<Value, String> {
    let arg = |i: usize| args.get(i).cloned().unwrap_or(Value::Null);
    let want = |n: usize| {
        if args.len() == n {
            Ok(())
        } else {
            Err(format!(
                "wrong number of args for {name}: want {n} got {}",
                args.len()
            ))
        }
    };
    Ok(match name {
        "json" => {
            want(1)?;
            Value::String(serde_json::to_string(&arg(0)).map_err(|e| e.to_string())?)
        }
        "len" => {
            want(1)?;
            Value::from(match &arg(0) {
                Value::Array(a) => a.len(),
                Value::Object(o) => o.len(),
                Value::String(s) => s.len(),
                Value::Null => 0,
                other => return Err(format!("len of {}", plain(other))),
            })
        }
        "index" => args.iter().skip(1).fold(arg(0), |v, k| match (k, &v) {
            (Value::Number(n), Value::Array(a)) => a
                .get(n.as_u64().unwrap_or(u64::MAX) as usize)
                .cloned()
                .unwrap_or(Value::Null),
            _ => v[text(k).as_str()].clone(),
        }),
        "slice" => {
            let from = args.get(1).and_then(Value::as_u64).unwrap_or(0) as usize;
            match arg(0) {
                Value::String(s) => {
                    let to = args
                        .get(2)
                        .and_then(Value::as_u64)
                        .map_or(s.len(), |t| t as usize);
                    Value::String(s.get(from..to).ok_or("slice out of range")?.to_string())
                }
                Value::Array(a) => {
                    let to = args
                        .get(2)
                        .and_then(Value::as_u64)
                        .map_or(a.len(), |t| t as usize);
                    Value::Array(a.get(from..to).ok_or("slice out of range")?.to_vec())
                }
                other => return Err(format!("can't slice {}", plain(&other))),
            }
        }
        "not" => {
            want(1)?;
            Value::Bool(!truthy(&arg(0)))
        }
        "and" => args
            .iter()
            .find(|v| !truthy(v))
            .or(args.last())
            .cloned()
            .unwrap_or(Value::Null),
        "or" => args
            .iter()
            .find(|v| truthy(v))
            .or(args.last())
            .cloned()
            .unwrap_or(Value::Null),
        "eq" => {
            let first = arg(0);
            Value::Bool(args.len() > 1 && args[1..].iter().any(|b| same(&first, b)))
        }
        "ne" => {
            want(2)?;
            Value::Bool(!same(&arg(0), &arg(1)))
        }
        "lt" | "le" | "gt" | "ge" => {
            want(2)?;
            let ord = order(&arg(0), &arg(1))?;
            Value::Bool(match name {
                "lt" => ord.is_lt(),
                "le" => ord.is_le(),
                "gt" => ord.is_gt(),
                _ => ord.is_ge(),
            })
        }
        "print" => Value::String(go_print(args)),
        "println" => {
            let words: Vec<String> = args.iter().map(text).collect();
            Value::String(format!("{}\n", words.join(" ")))
        }
        "printf" => {
            let format = text(&arg(0));
            Value::String(printf(&format, args.get(1..).unwrap_or(&[])))
        }
        "join" => {
            want(2)?;
            let items = match arg(0) {
                Value::Array(a) => a.iter().map(text).collect::<Vec<_>>(),
                Value::Null => Vec::new(),
                other => vec![text(&other)],
            };
            Value::String(items.join(&text(&arg(1))))
        }
        "split" => {
            want(2)?;
            let s = text(&arg(0));
            let sep = text(&arg(1));
            Value::Array(
                s.split(sep.as_str())
                    .map(|p| Value::String(p.into()))
                    .collect(),
            )
        }
        "lower" => Value::String(text(&arg(0)).to_lowercase()),
        "upper" => Value::String(text(&arg(0)).to_uppercase()),
        "title" => Value::String(title(&text(&arg(0)))),
        "truncate" => {
            want(2)?;
            let n = arg(1).as_u64().unwrap_or(0) as usize;
            Value::String(text(&arg(0)).chars().take(n).collect())
        }
        "pad" => {
            want(3)?;
            let (before, after) = (arg(1).as_u64().unwrap_or(0), arg(2).as_u64().unwrap_or(0));
            Value::String(format!(
                "{}{}{}",
                " ".repeat(before as usize),
                text(&arg(0)),
                " ".repeat(after as usize)
            ))
        }
        _ => return Err(format!("function {name:?} not defined")),
    })
}

fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn order(a: &Value, b: &Value) -> Result<std::cmp::Ordering, String> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .zip(y.as_f64())
            .and_then(|(x, y)| x.partial_cmp(&y))
            .ok_or_else(|| "incomparable numbers".into()),
        (Value::String(x), Value::String(y)) => Ok(x.cmp(y)),
        _ => Err("incompatible types for comparison".into()),
    }
}

/// `print`: operands joined, with a space only between two non-strings (Go's rule).
fn go_print(args: &[Value]) -> String {
    let mut out = String::new();
    for (i, a) in args.iter().enumerate() {
        if i > 0 && !a.is_string() && !args[i - 1].is_string() {
            out.push(' ');
        }
        out.push_str(&text(a));
    }
    out
}

fn title(s: &str) -> String {
    let mut out = String::new();
    let mut start = true;
    for c in s.chars() {
        if start {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        start = c.is_whitespace();
    }
    out
}

/// `printf` for the verbs formats use: `%s %v %d %q %t %f %%`, with flags `-` and `0`,
/// a width and a precision.
fn printf(format: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let mut next = args.iter();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = String::new();
        while let Some(&f) = chars.peek() {
            if f.is_ascii_digit() || f == '-' || f == '.' || f == '+' || f == ' ' || f == '#' {
                spec.push(f);
                chars.next();
            } else {
                break;
            }
        }
        let Some(verb) = chars.next() else {
            out.push('%');
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let v = next.next().cloned().unwrap_or(Value::Null);
        let left = spec.starts_with('-');
        let zero = spec.trim_start_matches('-').starts_with('0');
        let (width, precision) = match spec
            .trim_start_matches(['-', '0', '+', ' ', '#'])
            .split_once('.')
        {
            Some((w, p)) => (w.parse::<usize>().unwrap_or(0), p.parse::<usize>().ok()),
            None => (
                spec.trim_start_matches(['-', '0', '+', ' ', '#'])
                    .parse::<usize>()
                    .unwrap_or(0),
                None,
            ),
        };
        let body = match verb {
            'd' => v
                .as_f64()
                .map_or_else(|| text(&v), |n| format!("{}", n as i64)),
            'f' => v
                .as_f64()
                .map_or_else(|| text(&v), |n| format!("{n:.*}", precision.unwrap_or(6))),
            'q' => serde_json::to_string(&text(&v)).unwrap_or_default(),
            's' => match precision {
                Some(p) => text(&v).chars().take(p).collect(),
                None => text(&v),
            },
            _ => text(&v),
        };
        let pad = width.saturating_sub(body.chars().count());
        if left {
            out.push_str(&body);
            out.push_str(&" ".repeat(pad));
        } else if zero && matches!(verb, 'd' | 'f') {
            out.push_str(&"0".repeat(pad));
            out.push_str(&body);
        } else {
            out.push_str(&" ".repeat(pad));
            out.push_str(&body);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(t: &str, v: &Value) -> String {
        Template::parse(t).and_then(|t| t.execute(v)).unwrap()
    }

    fn data() -> Value {
        json!({
            "Name": "/web",
            "State": {"Running": true, "Status": "running", "ExitCode": 0, "Pid": 42},
            "Config": {"Cmd": ["httpd", "-f"], "Labels": {"b": "2", "a": "1"}, "Env": []},
            "NetworkSettings": {
                "Networks": {"bridge": {"IPAddress": "10.89.0.2"}, "front": {"IPAddress": "10.89.1.3"}},
                "Ports": {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}
            }
        })
    }

    #[test]
    fn docker_idioms() {
        let d = data();
        assert_eq!(
            render(
                "{{range.NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
                &d
            ),
            "10.89.0.2 10.89.1.3 "
        );
        assert_eq!(
            render(
                r#"{{(index (index .NetworkSettings.Ports "80/tcp") 0).HostPort}}"#,
                &d
            ),
            "8080"
        );
        assert_eq!(
            render(
                "{{range $p, $conf := .NetworkSettings.Ports}}{{$p}} -> {{(index $conf 0).HostPort}}{{end}}",
                &d
            ),
            "80/tcp -> 8080"
        );
        assert_eq!(render("{{json .Config.Cmd}}", &d), r#"["httpd","-f"]"#);
        assert_eq!(
            render("{{.State.Pid}} {{.Config.Labels}}", &d),
            "42 map[a:1 b:2]"
        );
        assert_eq!(
            render("{{join .Config.Cmd \" \"}}|{{upper .Name}}", &d),
            "httpd -f|/WEB"
        );
        assert_eq!(render("{{.Missing}}", &d), "<no value>");
        assert_eq!(
            render("{{len .Config.Cmd}} {{index .Config.Labels \"a\"}}", &d),
            "2 1"
        );
    }

    #[test]
    fn control_flow_and_variables() {
        let d = data();
        let t = "{{if .State.Running}}up{{else if .State.ExitCode}}failed{{else}}done{{end}}";
        assert_eq!(render(t, &d), "up");
        let stopped = json!({"State": {"Running": false, "ExitCode": 3}});
        assert_eq!(render(t, &stopped), "failed");
        assert_eq!(
            render(
                r#"{{if eq .State.Status "running" "paused"}}live{{end}}"#,
                &d
            ),
            "live"
        );
        assert_eq!(
            render("{{if and .State.Running (not .Config.Env)}}y{{end}}", &d),
            "y"
        );
        assert_eq!(
            render("{{range .Config.Env}}x{{else}}none{{end}}", &d),
            "none"
        );
        assert_eq!(render("{{with .State}}{{.Status}}{{end}}", &d), "running");
        assert_eq!(
            render(
                "{{$n := .Name}}{{range .Config.Cmd}}{{$n}}:{{.}} {{end}}",
                &d
            ),
            "/web:httpd /web:-f "
        );
        assert_eq!(
            render("{{range $i, $c := .Config.Cmd}}{{$i}}={{$c}};{{end}}", &d),
            "0=httpd;1=-f;"
        );
        assert_eq!(
            render("{{range $k, $v := .Config.Labels}}{{$k}}{{$v}}{{end}}", &d),
            "a1b2"
        );
        assert_eq!(
            render("{{.Name | printf \"%-6s|\"}}{{printf \"%05d\" 42}}", &d),
            "/web  |00042"
        );
        assert_eq!(render("a  {{- .State.Pid -}}  b", &d), "a42b");
        assert_eq!(
            render("{{$.Name}}{{with .State}}{{$.Name}}{{end}}", &d),
            "/web/web"
        );
        assert_eq!(
            render("{{lt 1 2}} {{gt \"b\" \"a\"}} {{ne .State.Pid 42}}", &d),
            "true true false"
        );
        assert_eq!(
            render(
                "{{slice .Name 1}} {{truncate .Name 2}} {{title \"a b\"}}",
                &d
            ),
            "web /w A B"
        );
        assert_eq!(render("{{println .Name}}", &d), "/web\n");
        let row = json!({"Labels": "com.docker.compose.project=app,tier=web"});
        assert_eq!(
            render(r#"{{.Label "tier"}}|{{.Label "none"}}"#, &row),
            "web|"
        );
        assert_eq!(render(r#"{{.Config.Label "a"}}"#, &d), "1");
    }

    #[test]
    fn errors_are_reported() {
        for bad in [
            "{{.A",
            "{{if .A}}x",
            "{{range .A}}",
            "{{nosuch .A}}",
            "{{end}}",
            "{{(index .A 0}}",
        ] {
            let r = Template::parse(bad).and_then(|t| t.execute(&data()));
            assert!(r.is_err(), "{bad:?}: {r:?}");
        }
    }
}
