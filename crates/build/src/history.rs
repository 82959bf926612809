//! The `created_by` lines of an image's history whose text BuildKit's Dockerfile
//! frontend composes itself rather than copying the instruction: COPY/ADD (only some
//! flags are named), RUN (the build arguments in scope are listed before the command)
//! and HEALTHCHECK (Go's `%q` of the health-check struct). `docker history` shows these
//! lines, so they follow BuildKit character for character.

use serde_json::Value;

use crate::ast::{go_quote, is_go_printable};

/// What a COPY or ADD wrote, as its history line needs it.
pub struct CopyLine<'a> {
    /// `COPY` or `ADD`.
    pub keyword: &'a str,
    pub parents: bool,
    /// `--chown`'s value after expansion, as written (not resolved to ids).
    pub chown: Option<&'a str>,
    /// `--chmod`'s value after expansion, as written (`0755` stays `0755`).
    pub chmod: Option<&'a str>,
    /// The sources after expansion, in the Dockerfile's order (context paths, URLs
    /// and git repositories alike).
    pub sources: &'a [String],
    /// Names of the inline documents (`COPY <<EOF /x`), which BuildKit lists after
    /// the other sources.
    pub heredocs: &'a [String],
    pub dest: &'a str,
}

impl CopyLine<'_> {
    /// BuildKit's line: only `--parents`, `--chown` and `--chmod` are named, in that
    /// order whatever order the Dockerfile used; `--from`, `--link`, `--exclude`,
    /// `--checksum`, `--keep-git-dir` and `--unpack` are not.
    pub fn created_by(&self) -> String {
        let mut parts = vec![self.keyword.to_string()];
        if self.parents {
            parts.push("--parents".into());
        }
        if let Some(c) = self.chown.filter(|c| !c.is_empty()) {
            parts.push(format!("--chown={c}"));
        }
        if let Some(m) = self.chmod.filter(|m| !m.is_empty()) {
            parts.push(format!("--chmod={m}"));
        }
        parts.extend(self.sources.iter().cloned());
        parts.extend(self.heredocs.iter().map(|h| format!("<<{h}")));
        parts.push(self.dest.to_string());
        format!("{} # buildkit", parts.join(" "))
    }
}

/// A RUN's line: `RUN |N K=V… ARGS # buildkit` when build arguments are in scope
/// (`build_args` in declaration order, each with the value the step sees, `""` for
/// one declared without a value), else `RUN ARGS # buildkit`.
pub fn run_created_by(args: &[String], build_args: &[(String, String)]) -> String {
    let command = args.join(" ");
    if build_args.is_empty() {
        return format!("RUN {command} # buildkit");
    }
    let pairs: Vec<String> = build_args.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!(
        "RUN |{} {} {command} # buildkit",
        build_args.len(),
        pairs.join(" ")
    )
}

/// A HEALTHCHECK's line from the config's `Healthcheck` object: BuildKit formats the
/// struct with Go's `%q`, `&{["CMD-SHELL" "cmd"] "30s" "0s" "0s" "0s" '\x03'}` —
/// the test, interval, timeout, start period and start interval as Go durations,
/// and the retry count as a quoted rune.
pub fn healthcheck_created_by(hc: &Value) -> String {
    let test: Vec<String> = hc["Test"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).map(go_quote).collect())
        .unwrap_or_default();
    let durations: Vec<String> = ["Interval", "Timeout", "StartPeriod", "StartInterval"]
        .iter()
        .map(|f| format!("\"{}\"", go_duration(hc[*f].as_i64().unwrap_or(0))))
        .collect();
    format!(
        "HEALTHCHECK &{{[{}] {} {}}}",
        test.join(" "),
        durations.join(" "),
        go_quote_rune(hc["Retries"].as_i64().unwrap_or(0))
    )
}

/// Go's `time.Duration.String`: `0s`, `1.5s`, `1m30s`, `1h0m0s`, `500ms`, `1.2µs`.
pub fn go_duration(nanos: i64) -> String {
    let sign = if nanos < 0 { "-" } else { "" };
    let u = nanos.unsigned_abs();
    if u == 0 {
        return "0s".into();
    }
    if u < 1_000_000_000 {
        // Below a second Go switches to the largest unit that keeps an integer part.
        let (prec, unit) = match u {
            u if u < 1_000 => (0, "ns"),
            u if u < 1_000_000 => (3, "µs"),
            _ => (6, "ms"),
        };
        let (int, frac) = split_fraction(u, prec);
        return format!("{sign}{int}{frac}{unit}");
    }
    let (secs, frac) = split_fraction(u, 9);
    let (mins, secs) = (secs / 60, secs % 60);
    let (hours, mins) = (mins / 60, mins % 60);
    let mut out = sign.to_string();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if hours > 0 || mins > 0 {
        out.push_str(&format!("{mins}m"));
    }
    out.push_str(&format!("{secs}{frac}s"));
    out
}

/// `v` split at `prec` decimal digits: the integer part and `.fff` without trailing
/// zeros (empty when the fraction is zero), as Go's `fmtFrac`.
fn split_fraction(v: u64, prec: u32) -> (u64, String) {
    let scale = 10u64.pow(prec);
    let digits = format!("{:0width$}", v % scale, width = prec as usize);
    let digits = digits.trim_end_matches('0');
    let frac = if digits.is_empty() {
        String::new()
    } else {
        format!(".{digits}")
    };
    (v / scale, frac)
}

/// Go's `%q` of an integer: the character with that code, single-quoted and escaped
/// as `strconv.QuoteRune` does (`'\x03'`, `'\n'`, `'A'`); out-of-range codes are
/// U+FFFD.
pub fn go_quote_rune(code: i64) -> String {
    let c = u32::try_from(code)
        .ok()
        .and_then(char::from_u32)
        .unwrap_or('\u{fffd}');
    let body = match c {
        '\'' => "\\'".to_string(),
        '\\' => "\\\\".to_string(),
        '\u{7}' => "\\a".to_string(),
        '\u{8}' => "\\b".to_string(),
        '\u{c}' => "\\f".to_string(),
        '\n' => "\\n".to_string(),
        '\r' => "\\r".to_string(),
        '\t' => "\\t".to_string(),
        '\u{b}' => "\\v".to_string(),
        c if (c as u32) < 0x20 || c as u32 == 0x7f => format!("\\x{:02x}", c as u32),
        c if is_go_printable(c) => c.to_string(),
        c if (c as u32) < 0x10000 => format!("\\u{:04x}", c as u32),
        c => format!("\\U{:08x}", c as u32),
    };
    format!("'{body}'")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn copy_line<'a>(
        chown: Option<&'a str>,
        chmod: Option<&'a str>,
        sources: &'a [String],
        heredocs: &'a [String],
    ) -> CopyLine<'a> {
        CopyLine {
            keyword: "COPY",
            parents: false,
            chown,
            chmod,
            sources,
            heredocs,
            dest: "/dst/",
        }
    }

    #[test]
    fn copy_names_only_parents_chown_and_chmod() {
        // `COPY --chmod=755 --from=build --link --chown=app a b /dst/`
        let sources = ["a".to_string(), "b".to_string()];
        let line = copy_line(Some("app"), Some("755"), &sources, &[]);
        assert_eq!(
            line.created_by(),
            "COPY --chown=app --chmod=755 a b /dst/ # buildkit"
        );
        let parents = CopyLine {
            parents: true,
            keyword: "ADD",
            ..copy_line(None, None, &sources, &[])
        };
        assert_eq!(parents.created_by(), "ADD --parents a b /dst/ # buildkit");
        assert_eq!(
            copy_line(Some(""), None, &sources, &[]).created_by(),
            "COPY a b /dst/ # buildkit"
        );
    }

    #[test]
    fn copy_lists_inline_documents_after_the_sources() {
        let sources = ["a".to_string()];
        let docs = ["EOF".to_string()];
        assert_eq!(
            copy_line(None, None, &sources, &docs).created_by(),
            "COPY a <<EOF /dst/ # buildkit"
        );
    }

    #[test]
    fn run_lists_the_build_arguments_first() {
        let args = ["/bin/sh".to_string(), "-c".into(), "echo".into()];
        assert_eq!(run_created_by(&args, &[]), "RUN /bin/sh -c echo # buildkit");
        let build_args = [("Z".to_string(), "1".to_string()), ("A".into(), "".into())];
        assert_eq!(
            run_created_by(&args, &build_args),
            "RUN |2 Z=1 A= /bin/sh -c echo # buildkit"
        );
    }

    #[test]
    fn healthcheck_is_gos_quoted_struct() {
        let hc = json!({
            "Test": ["CMD-SHELL", "wget -q localhost || exit 1"],
            "Interval": 5_000_000_000i64, "Timeout": 3_000_000_000i64,
            "StartPeriod": 10_000_000_000i64, "Retries": 4,
        });
        assert_eq!(
            healthcheck_created_by(&hc),
            r#"HEALTHCHECK &{["CMD-SHELL" "wget -q localhost || exit 1"] "5s" "3s" "10s" "0s" '\x04'}"#
        );
        assert_eq!(
            healthcheck_created_by(&json!({"Test": ["NONE"]})),
            r#"HEALTHCHECK &{["NONE"] "0s" "0s" "0s" "0s" '\x00'}"#
        );
    }

    #[test]
    fn durations_print_as_go_does() {
        for (nanos, want) in [
            (0, "0s"),
            (1, "1ns"),
            (1_500, "1.5µs"),
            (500_000_000, "500ms"),
            (1_500_000_000, "1.5s"),
            (90_000_000_000, "1m30s"),
            (3_600_000_000_000, "1h0m0s"),
            (3_725_000_000_000, "1h2m5s"),
            (-2_000_000_000, "-2s"),
        ] {
            assert_eq!(go_duration(nanos), want, "{nanos}");
        }
    }

    #[test]
    fn retries_quote_as_go_runes() {
        for (code, want) in [
            (0, r"'\x00'"),
            (3, r"'\x03'"),
            (10, r"'\n'"),
            (39, r"'\''"),
            (65, "'A'"),
            (-1, "'\u{fffd}'"),
        ] {
            assert_eq!(go_quote_rune(code), want, "{code}");
        }
    }
}
