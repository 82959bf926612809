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

/// Docker's human sizes: decimal units, three significant digits (`1.98MB`).
pub fn human_size(size: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut v = size as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    let decimals = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    let mut s = format!("{v:.decimals$}");
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{s}{}", UNITS[unit])
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

/// `KEY=VALUE` flags (`--label`, `--opt`, `--sysctl`, …) as a map; a bare key has an
/// empty value.
pub fn key_values(list: &[String]) -> std::collections::BTreeMap<String, String> {
    list.iter()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or((l, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// A `--filter KEY=VALUE` split in two, with Docker's error when there is no `=`.
pub fn filter_kv(f: &str) -> Result<(&str, &str), String> {
    f.split_once('=')
        .ok_or_else(|| format!("bad format of filter (expected name=value): {f}"))
}

/// A boolean filter's value (`true|1|false|0`), as Docker reads `dangling=`.
pub fn filter_bool(key: &str, v: &str) -> Result<bool, String> {
    match v {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!("invalid filter '{key}={v}'")),
    }
}

/// Docker's `label=KEY` (present) or `label=KEY=VALUE` (equal) against `get`'s labels.
pub fn label_matches<'a>(want: &str, get: impl Fn(&str) -> Option<&'a str>) -> bool {
    match want.split_once('=') {
        Some((k, v)) => get(k) == Some(v),
        None => get(want).is_some(),
    }
}

/// Expands a `--format` Go template (see [`crate::template`]) over `row`; `\t` and `\n`
/// written literally (as shells pass them) are a tab and a newline, as in Docker.
pub fn render(template: &str, row: &Value) -> Result<String, String> {
    parse(template)?
        .execute(row)
        .map_err(|e| format!("template: {e}"))
}

fn parse(template: &str) -> Result<crate::template::Template, String> {
    let t = template.replace("\\t", "\t").replace("\\n", "\n");
    crate::template::Template::parse(&t).map_err(|e| format!("template: {e}"))
}

/// One line per row; a `table ` prefix prints a header of the field names first.
pub fn template_rows(out: &mut impl Write, template: &str, rows: &[Value]) -> std::io::Result<()> {
    let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
    let (table_format, body) = match template.strip_prefix("table") {
        Some(t) => (true, t.trim_start()),
        None => (false, template),
    };
    // Parsed once for all the rows.
    let parsed = parse(body).map_err(invalid)?;
    let lines = rows.iter().map(|r| {
        parsed
            .execute(r)
            .map_err(|e| invalid(format!("template: {e}")))
    });
    if table_format {
        let mut table_rows = vec![header_names(body, rows.first())];
        for line in lines {
            table_rows.push(line?.split('\t').map(str::to_owned).collect());
        }
        return table(out, &table_rows);
    }
    for line in lines {
        writeln!(out, "{}", line?)?;
    }
    Ok(())
}

/// The column titles Docker prints for a table format's fields. `ID` is the id of what
/// the rows are (an image row has a Repository, a network row a Scope).
fn header_names(t: &str, sample: Option<&Value>) -> Vec<String> {
    let t = t.replace("\\t", "\t");
    let has = |k: &str| sample.is_some_and(|r| r.get(k).is_some());
    t.split('\t')
        .map(|cell| {
            let name = cell
                .split("{{")
                .nth(1)
                .and_then(|s| s.split("}}").next())
                .map(|s| s.trim().trim_start_matches('.'))
                .unwrap_or(cell);
            let title = match name {
                "ID" if has("Repository") => "IMAGE ID",
                "ID" if has("Scope") => "NETWORK ID",
                "ID" => "CONTAINER ID",
                "RunningFor" | "CreatedSince" => "CREATED",
                "CreatedAt" => "CREATED AT",
                "LocalVolumes" => "LOCAL VOLUMES",
                "CPUPerc" => "CPU %",
                "MemUsage" => "MEM USAGE / LIMIT",
                "MemPerc" => "MEM %",
                "NetIO" => "NET I/O",
                "BlockIO" => "BLOCK I/O",
                "Name" if has("Mountpoint") => "VOLUME NAME",
                n => return n.to_ascii_uppercase(),
            };
            title.to_string()
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
    fn table_headers_are_dockers_titles() {
        let image = json!({"Repository": "r", "ID": "i"});
        assert_eq!(
            header_names("{{.ID}}\\t{{.Repository}}", Some(&image)),
            ["IMAGE ID", "REPOSITORY"]
        );
        let stats = json!({"Name": "n", "ID": "c"});
        assert_eq!(
            header_names(
                "{{.ID}}\\t{{.CPUPerc}}\\t{{.MemUsage}}\\t{{.NetIO}}",
                Some(&stats)
            ),
            ["CONTAINER ID", "CPU %", "MEM USAGE / LIMIT", "NET I/O"]
        );
        let volume = json!({"Name": "v", "Mountpoint": "/m"});
        assert_eq!(header_names("{{.Name}}", Some(&volume)), ["VOLUME NAME"]);
        assert_eq!(header_names("{{.Name}}", None), ["NAME"]);
    }

    #[test]
    fn templates_expand_fields_and_json() {
        let render = |t: &str, v: &Value| render(t, v).unwrap();
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
        let c = json!({"Nets": {"a": {"IP": "10.0.0.2"}, "b": {"IP": "10.0.1.2"}},
                       "Labels": {"k": "v"}, "Args": ["x", "y"]});
        assert_eq!(
            render(
                "{{range .Nets}}{{.IP}} {{end}}|{{index .Labels \"k\"}}|{{index .Args 1}}",
                &c
            ),
            "10.0.0.2 10.0.1.2 |v|y"
        );
        assert_eq!(render("{{range .Args}}[{{.}}]{{end}}", &c), "[x][y]");
        assert_eq!(render("{{range .Missing}}x{{end}}done", &c), "done");
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
