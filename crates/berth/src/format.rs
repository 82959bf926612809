//! Output helpers shared by the container and volume commands: Docker's human durations,
//! aligned tables, `--format` Go-style templates over JSON rows, raw terminal mode.

use std::io::Write;
use std::time::{Duration, SystemTime};

use serde_json::Value;

/// Time since an RFC 3339 instant (zero when unparsable).
pub fn age(t: &str) -> Duration {
    humantime::parse_rfc3339_weak(t)
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .unwrap_or_default()
}

/// Docker's `units.HumanDuration`.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let mins = secs / 60;
    let hours = mins / 60;
    match () {
        _ if secs < 1 => "Less than a second".into(),
        _ if secs == 1 => "1 second".into(),
        _ if secs < 60 => format!("{secs} seconds"),
        _ if mins == 1 => "About a minute".into(),
        _ if mins < 60 => format!("{mins} minutes"),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", hours / 24 / 365),
    }
}

/// `2024-01-02 03:04:05 +0000 UTC`, as `docker ps` prints CreatedAt.
pub fn docker_time(t: &str) -> String {
    let s: String = t.chars().take(19).collect();
    format!("{} +0000 UTC", s.replace('T', " "))
}

/// Docker's tabwriter layout (`tabwriter.NewWriter(out, 10, 1, 3, ' ', 0)`): each column
/// as wide as its widest cell plus three spaces, and at least ten.
pub fn table(out: &mut impl Write, rows: &[Vec<String>]) -> std::io::Result<()> {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .map_or(0, |w| (w + 3).max(10))
        })
        .collect();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(widths[c] - cell.chars().count()));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

fn field<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.trim_start_matches('.')
        .split('.')
        .filter(|p| !p.is_empty())
        .fold(v, |v, k| &v[k])
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "<no value>".into(),
        Value::Array(a) => format!("[{}]", a.iter().map(plain).collect::<Vec<_>>().join(" ")),
        Value::Object(o) => format!(
            "map[{}]",
            o.iter()
                .map(|(k, v)| format!("{k}:{}", plain(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        v => v.to_string(),
    }
}

/// Expands `{{.A.B}}`, `{{json .A}}` and `{{.Label "k"}}`-free Go templates for a row.
pub fn render(template: &str, row: &Value) -> String {
    let t = template.replace("\\t", "\t").replace("\\n", "\n");
    let mut out = String::new();
    let mut rest = t.as_str();
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let expr = rest[start + 2..start + end].trim();
        let text = if let Some(p) = expr.strip_prefix("json ") {
            let p = p.trim();
            if p == "." {
                row.to_string()
            } else {
                field(row, p).to_string()
            }
        } else if let Some(p) = expr.strip_prefix("len ") {
            let v = field(row, p.trim());
            let n = match v {
                Value::Array(a) => a.len(),
                Value::Object(o) => o.len(),
                Value::String(s) => s.chars().count(),
                _ => 0,
            };
            n.to_string()
        } else if expr == "." {
            plain(row)
        } else if expr.starts_with('.') {
            plain(field(row, expr))
        } else {
            String::new()
        };
        out.push_str(&text);
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    out
}

/// One line per row; a `table ` prefix prints a header of the field names first.
pub fn template_rows(out: &mut impl Write, template: &str, rows: &[Value]) -> std::io::Result<()> {
    if let Some(t) = template.strip_prefix("table") {
        let t = t.trim_start();
        let header = render(t, &Value::Null);
        let names = header_names(t);
        let _ = header;
        let mut table_rows = vec![names];
        for r in rows {
            table_rows.push(render(t, r).split('\t').map(str::to_owned).collect());
        }
        return table(out, &table_rows);
    }
    for r in rows {
        writeln!(out, "{}", render(template, r))?;
    }
    Ok(())
}

fn header_names(t: &str) -> Vec<String> {
    let t = t.replace("\\t", "\t");
    t.split('\t')
        .map(|cell| {
            let name = cell
                .split("{{")
                .nth(1)
                .and_then(|s| s.split("}}").next())
                .map(|s| s.trim().trim_start_matches('.'))
                .unwrap_or(cell);
            match name {
                "ID" => "CONTAINER ID".to_string(),
                "RunningFor" => "CREATED".to_string(),
                n => n.to_ascii_uppercase(),
            }
        })
        .collect()
}

/// Puts a terminal in raw mode until dropped (`-it`).
pub struct RawTerminal {
    fd: i32,
    saved: nix::sys::termios::Termios,
}

impl RawTerminal {
    pub fn enter(fd: i32) -> Option<RawTerminal> {
        use nix::sys::termios;
        // SAFETY: fd 0 stays open for the life of the process.
        let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let saved = termios::tcgetattr(b).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(b, termios::SetArg::TCSANOW, &raw).ok()?;
        Some(RawTerminal { fd, saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // SAFETY: as in `enter`.
        let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.fd) };
        let _ = nix::sys::termios::tcsetattr(b, nix::sys::termios::SetArg::TCSANOW, &self.saved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_are_laid_out_as_dockers_tabwriter() {
        let rows = [
            vec![
                "CONTAINER ID".to_string(),
                "IMAGE".into(),
                "PORTS".into(),
                "NAMES".into(),
            ],
            vec![
                "0123456789ab".into(),
                "bb".into(),
                String::new(),
                "web".into(),
            ],
        ];
        let mut out = Vec::new();
        table(&mut out, &rows).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "CONTAINER ID   IMAGE     PORTS     NAMES\n0123456789ab   bb                  web\n"
        );
    }

    #[test]
    fn templates_expand_fields_and_json() {
        let row = json!({"Names": "web", "State": {"Status": "running", "Pid": 7}});
        assert_eq!(
            render("{{.Names}}\\t{{.State.Status}}", &row),
            "web\trunning"
        );
        assert_eq!(
            render("{{json .State}}", &row),
            r#"{"Pid":7,"Status":"running"}"#
        );
        assert_eq!(render("{{.State.Pid}}", &row), "7");
        let img = json!({"RootFS": {"Layers": ["a", "b"]}, "Config": {"Cmd": null}});
        assert_eq!(
            render("{{len .RootFS.Layers}} {{json .Config.Cmd}}", &img),
            "2 null"
        );
    }

    #[test]
    fn durations_read_like_docker() {
        assert_eq!(human_duration(Duration::from_secs(0)), "Less than a second");
        assert_eq!(human_duration(Duration::from_secs(5)), "5 seconds");
        assert_eq!(human_duration(Duration::from_secs(65)), "About a minute");
        assert_eq!(human_duration(Duration::from_secs(3 * 3600)), "3 hours");
    }
}
