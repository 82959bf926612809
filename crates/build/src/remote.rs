//! Build contexts that are not local directories, as `docker build URL` takes them: a git
//! repository (`git://…`, `git@…`, `ssh://…`, or an HTTP(S) URL whose path ends in `.git`,
//! with an optional `#ref:subdir`), or an HTTP(S) URL of a tar archive (plain or gzip) or of
//! a lone Dockerfile. The same forms serve `--build-context NAME=URL`.

use std::path::{Path, PathBuf};

/// What a remote context turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// The context directory (a repository's subdirectory when one was asked for).
    Dir(PathBuf),
    /// A URL that gave neither an archive nor a repository: its text is the Dockerfile and
    /// the context is empty.
    Dockerfile(String),
}

/// Whether `src` names a remote context rather than a local path.
pub fn is_remote(src: &str) -> bool {
    crate::git::parse(src).is_some() || src.starts_with("http://") || src.starts_with("https://")
}

/// Fetches `src` into the empty directory `dir`.
pub fn fetch(src: &str, dir: &Path) -> Result<Fetched, String> {
    if let Some(repo) = crate::git::parse(src) {
        let commit = repo.resolve()?;
        repo.checkout(&commit, dir, false)?;
        return match &repo.subdir {
            Some(sub) => {
                // A symlink in the repository must not lead the context out of it.
                let d = crate::fsutil::resolve_in_root(dir, sub, true)
                    .map_err(|e| format!("{src}: subdirectory {sub:?}: {e}"))?;
                if !d.is_dir() {
                    return Err(format!("{src}: no directory {sub:?} at {commit}"));
                }
                Ok(Fetched::Dir(d))
            }
            None => Ok(Fetched::Dir(dir.to_path_buf())),
        };
    }
    let (_, data) = crate::fetch::download(src, None)?;
    match crate::copy::read_stdin_context(&data[..], dir)
        .map_err(|e| format!("unpack the context from {src}: {e}"))?
    {
        crate::copy::StdinContext::Archive => Ok(Fetched::Dir(dir.to_path_buf())),
        crate::copy::StdinContext::Dockerfile(text) => Ok(Fetched::Dockerfile(text)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_forms() {
        for r in [
            "git://h/repo.git",
            "git@github.com:u/r.git#main:dir",
            "https://h/u/r.git#v1",
            "https://h/ctx.tar.gz",
            "http://h/Dockerfile",
        ] {
            assert!(is_remote(r), "{r}");
        }
        for l in [".", "/tmp/ctx", "ctx", "-", "file.tar"] {
            assert!(!is_remote(l), "{l}");
        }
    }
}
