//! `ADD <git repository>`: a git URL as a source, as BuildKit reads it.
//!
//! A source is a git repository when it starts with `git://`, `git@` or `ssh://`, or is an
//! `http(s)://` URL whose path ends in `.git`. The fragment picks what to take:
//! `#<ref>` (branch, tag or commit; default the remote's HEAD) and `#<ref>:<subdir>`.
//!
//! The `git` program does the fetching: it already speaks every transport (smart HTTP,
//! the git protocol, ssh with the user's agent and known_hosts) and its pack handling is
//! what every server is tested against; re-implementing that would be a second git. The
//! ref is resolved to a commit first (`git ls-remote`), so the build cache is keyed by
//! the commit: a moved branch misses, an unchanged one hits without fetching.

use std::path::Path;
use std::process::{Command, Stdio};

/// One git source of an ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitSource {
    /// What `git` is given to fetch from (the source without its fragment).
    pub remote: String,
    /// Branch, tag or commit; `None` for the remote's HEAD.
    pub reference: Option<String>,
    /// The directory of the repository to take, relative to its root.
    pub subdir: Option<String>,
}

/// Reads `src` as a git source, or `None` when it is not one.
pub fn parse(src: &str) -> Option<GitSource> {
    let (remote, fragment) = match src.split_once('#') {
        Some((r, f)) => (r, Some(f)),
        None => (src, None),
    };
    if !is_git_remote(remote) {
        return None;
    }
    let (reference, subdir) = match fragment {
        Some(f) => match f.split_once(':') {
            Some((r, d)) => (r, Some(d)),
            None => (f, None),
        },
        None => ("", None),
    };
    let subdir = subdir
        .map(|d| d.trim_matches('/'))
        .filter(|d| !d.is_empty() && *d != ".")
        .map(str::to_owned);
    Some(GitSource {
        remote: remote.to_string(),
        reference: (!reference.is_empty()).then(|| reference.to_string()),
        subdir,
    })
}

fn is_git_remote(remote: &str) -> bool {
    if remote.starts_with("git://") || remote.starts_with("git@") || remote.starts_with("ssh://") {
        return true;
    }
    let Some(rest) = remote
        .strip_prefix("https://")
        .or_else(|| remote.strip_prefix("http://"))
    else {
        return false;
    };
    // An HTTP URL is a repository only when its path says so; any other URL is a file
    // download. The query is not part of the path.
    let path = rest.split_once('/').map_or("", |(_, p)| p);
    let path = path.split('?').next().unwrap_or("");
    path.trim_end_matches('/').ends_with(".git")
}

impl GitSource {
    /// The commit the reference names on the remote now.
    pub fn resolve(&self) -> Result<String, String> {
        if let Some(r) = &self.reference {
            if is_full_commit(r) {
                return Ok(r.to_ascii_lowercase());
            }
        }
        let wanted = self.reference.as_deref().unwrap_or("HEAD");
        let out = git()
            // An annotated tag's commit is listed as `<tag>^{}`, which only a pattern
            // of its own matches.
            .args([
                "ls-remote",
                "--",
                &self.remote,
                wanted,
                &format!("{wanted}^{{}}"),
            ])
            .output()
            .map_err(|e| format!("running git ls-remote: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "failed to read git repository {}: {}",
                self.remote,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        pick_ref(&String::from_utf8_lossy(&out.stdout), wanted).ok_or_else(|| {
            format!(
                "git repository {} has no branch, tag or ref {wanted:?}",
                self.remote
            )
        })
    }

    /// Checks `commit` out into the empty directory `dir`, keeping `.git` only when asked.
    pub fn checkout(&self, commit: &str, dir: &Path, keep_git_dir: bool) -> Result<(), String> {
        let d = dir.to_string_lossy();
        run(git().args(["init", "-q", &d]), "git init")?;
        // Fetch by name where there is one: servers need not allow fetching an arbitrary
        // commit; the commit is then checked to be the one resolved.
        let what = match self.reference.as_deref() {
            None => "HEAD",
            Some(r) if is_full_commit(r) => commit,
            Some(r) => r,
        };
        let fetch = |depth: &[&str]| {
            let mut c = git();
            c.args(["-C", &d, "fetch", "-q", "--no-tags"])
                .args(depth)
                .args(["--", &self.remote, what]);
            run(&mut c, "git fetch")
        };
        // Dumb HTTP servers (static files) cannot serve a shallow fetch.
        if fetch(&["--depth", "1"]).is_err() {
            fetch(&[])?;
        }
        let head = run(
            git().args(["-C", &d, "rev-parse", "FETCH_HEAD^{commit}"]),
            "git rev-parse",
        )?;
        if head.trim() != commit {
            return Err(format!(
                "git repository {} moved while it was read ({what} is {} now, was {commit})",
                self.remote,
                head.trim()
            ));
        }
        run(
            git().args([
                "-C",
                &d,
                "-c",
                "advice.detachedHead=false",
                "checkout",
                "-q",
                commit,
            ]),
            "git checkout",
        )?;
        if !keep_git_dir {
            std::fs::remove_dir_all(dir.join(".git"))
                .map_err(|e| format!("removing {}/.git: {e}", dir.display()))?;
        }
        Ok(())
    }
}

/// `git` with no prompts: a build never waits for a password on a terminal.
fn git() -> Command {
    let mut c = Command::new("git");
    c.env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "true")
        .stdin(Stdio::null());
    c
}

fn run(cmd: &mut Command, what: &str) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("running {what}: {e} (is git installed?)"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn is_full_commit(r: &str) -> bool {
    (r.len() == 40 || r.len() == 64) && r.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The commit for `wanted` in `git ls-remote` output: an annotated tag's peeled commit
/// (`^{}`) over the tag object, and an exact ref name over a shorter match.
fn pick_ref(listing: &str, wanted: &str) -> Option<String> {
    let mut best: Option<(u8, String)> = None;
    for line in listing.lines() {
        let Some((sha, name)) = line.split_once('\t') else {
            continue;
        };
        let (name, peeled) = match name.strip_suffix("^{}") {
            Some(n) => (n, true),
            None => (name, false),
        };
        let exact = name == wanted;
        let short = name
            .strip_prefix("refs/heads/")
            .or_else(|| name.strip_prefix("refs/tags/"))
            == Some(wanted);
        if !exact && !short {
            continue;
        }
        let rank = u8::from(exact) * 2 + u8::from(peeled);
        if best.as_ref().is_none_or(|(r, _)| rank > *r) {
            best = Some((rank, sha.to_string()));
        }
    }
    best.map(|(_, sha)| sha)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_sources_are_repositories() {
        let g = parse("git://example.com/r.git#v1.2:docs/").unwrap();
        assert_eq!(g.remote, "git://example.com/r.git");
        assert_eq!(g.reference.as_deref(), Some("v1.2"));
        assert_eq!(g.subdir.as_deref(), Some("docs"));
        let g = parse("https://example.com/a/b.git").unwrap();
        assert_eq!((g.reference, g.subdir), (None, None));
        assert!(parse("git@github.com:o/r.git#main").is_some());
        assert!(parse("ssh://git@host/r").is_some());
        assert_eq!(
            parse("https://example.com/r.git#:sub")
                .unwrap()
                .subdir
                .as_deref(),
            Some("sub")
        );
        // Plain downloads and local paths are not repositories.
        assert!(parse("https://example.com/file.tar.gz").is_none());
        assert!(parse("https://example.com/x.git/file.txt").is_none());
        assert!(parse("https://example.com/a?x=.git").is_none());
        assert!(parse("src/").is_none());
        assert!(parse("vendor.git").is_none());
    }

    #[test]
    fn refs_prefer_exact_names_and_peeled_tags() {
        let listing = "1111111111111111111111111111111111111111\trefs/heads/main\n\
                       2222222222222222222222222222222222222222\trefs/tags/v1\n\
                       3333333333333333333333333333333333333333\trefs/tags/v1^{}\n\
                       4444444444444444444444444444444444444444\tHEAD\n";
        assert_eq!(pick_ref(listing, "main").unwrap(), "1".repeat(40));
        assert_eq!(pick_ref(listing, "v1").unwrap(), "3".repeat(40));
        assert_eq!(pick_ref(listing, "HEAD").unwrap(), "4".repeat(40));
        assert_eq!(
            pick_ref(listing, "refs/heads/main").unwrap(),
            "1".repeat(40)
        );
        assert!(pick_ref(listing, "nope").is_none());
        assert!(is_full_commit(&"a".repeat(40)));
        assert!(!is_full_commit("abc123"));
    }
}
