//! `berth compose watch`: brings the project up, then follows the services' `develop.watch`
//! rules. Changed files are batched (a quiet period, so an editor's save or a `git
//! checkout` is one batch), matched to rules (`ignore`/`include` with .dockerignore
//! semantics, relative to the rule's path), then synced into the running containers
//! (`sync*`: copied, or removed when gone from the host), followed by a restart
//! (`sync+restart`, `restart`), a command (`sync+exec`), or a rebuild and recreate
//! (`rebuild`), as Docker Compose does.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use berth_build::dockerignore::PatternMatcher;
use berth_compose::{Project, WatchAction, WatchRule};
use berth_engine::Engine;
use notify::{EventKind, RecursiveMode, Watcher};

use super::{interrupt, project_containers, service_of, CmdResult, UpArgs};

/// Edits arriving closer together than this are one batch.
const QUIET: Duration = Duration::from_millis(300);
/// A batch is handled after this long even while edits keep coming.
const MAX_BATCH: Duration = Duration::from_secs(2);
/// Editors' scratch files and VCS metadata never trigger anything (as Compose).
const DEFAULT_IGNORES: &[&str] = &[
    ".git",
    "**/.git",
    "**/*~",
    "**/.*.swp",
    "**/.*.swx",
    "**/4913",
];

/// One service's rule, with its patterns compiled.
struct Rule<'a> {
    service: &'a str,
    rule: &'a WatchRule,
    ignore: PatternMatcher,
    include: Option<PatternMatcher>,
}

impl Rule<'_> {
    /// The path below the rule's own, `/`-separated, if `path` triggers this rule.
    fn triggered_by(&self, path: &Path) -> Option<String> {
        let base = Path::new(&self.rule.path);
        let rel = path.strip_prefix(base).ok()?.to_string_lossy().into_owned();
        if !rel.is_empty() && self.ignore.matches_or_parent_matches(&rel) {
            return None;
        }
        match &self.include {
            Some(inc) if !rel.is_empty() && !inc.matches_or_parent_matches(&rel) => None,
            _ => Some(rel),
        }
    }

    /// Where the host path `rel` (below the rule's path) lands in the container.
    fn target_of(&self, rel: &str) -> Option<String> {
        let target = self.rule.target.as_deref()?;
        Some(if rel.is_empty() {
            target.to_string()
        } else {
            format!("{}/{rel}", target.trim_end_matches('/'))
        })
    }
}

fn compile<'a>(service: &'a str, rule: &'a WatchRule) -> Result<Rule<'a>, String> {
    let bad = |e: berth_build::dockerignore::IgnoreError| {
        format!("service {service}: develop.watch {}: {e}", rule.path)
    };
    let mut ignore: Vec<&str> = DEFAULT_IGNORES.to_vec();
    ignore.extend(rule.ignore.iter().map(String::as_str));
    let include = if rule.include.is_empty() {
        None
    } else {
        Some(PatternMatcher::new(&rule.include).map_err(bad)?)
    };
    let needs_target = matches!(
        rule.action,
        WatchAction::Sync | WatchAction::SyncRestart | WatchAction::SyncExec
    );
    if needs_target && rule.target.is_none() {
        return Err(format!(
            "service {service}: develop.watch {}: a sync action needs a target",
            rule.path
        ));
    }
    Ok(Rule {
        service,
        rule,
        ignore: PatternMatcher::new(&ignore).map_err(bad)?,
        include,
    })
}

/// `compose watch [--no-up] [SERVICE...]`.
pub(super) fn watch(root: &Path, p: &Project, services: &[String], no_up: bool) -> CmdResult {
    let selected = super::selected(p, services)?;
    let mut rules = Vec::new();
    for name in &selected {
        let Some(dev) = &p.services[name].develop else {
            continue;
        };
        for r in &dev.watch {
            rules.push(compile(name, r)?);
        }
    }
    if rules.is_empty() {
        return Err("none of the selected services is configured for watch, consider setting a 'develop' section".into());
    }
    if !no_up {
        let up = UpArgs {
            detach: true,
            services: selected.clone(),
            ..Default::default()
        };
        super::up(root, p, &up)?;
    }
    for r in rules.iter().filter(|r| r.rule.initial_sync) {
        initial_sync(root, p, r)?;
    }
    let (tx, rx) = mpsc::channel();
    let mut watcher = notify::recommended_watcher(tx)?;
    for r in &rules {
        watcher
            .watch(Path::new(&r.rule.path), RecursiveMode::Recursive)
            .map_err(|e| format!("watching {}: {e}", r.rule.path))?;
    }
    interrupt::install();
    eprintln!("Watch enabled");
    while !interrupt::pending() {
        let batch = next_batch(&rx);
        if !batch.is_empty() {
            if let Err(e) = handle(root, p, &rules, &batch) {
                // One failed sync (a container restarting, say) must not end the watch.
                eprintln!("watch: {e}");
            }
        }
    }
    interrupt::restore();
    Ok(0)
}

/// Waits up to a second for a change, then gathers more until a quiet period.
fn next_batch(rx: &mpsc::Receiver<notify::Result<notify::Event>>) -> BTreeSet<PathBuf> {
    let mut paths = BTreeSet::new();
    let mut deadline = Instant::now() + Duration::from_secs(1);
    let mut started: Option<Instant> = None;
    loop {
        let wait = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(Ok(ev)) => {
                if matches!(ev.kind, EventKind::Access(_)) {
                    continue;
                }
                paths.extend(ev.paths);
                let first = *started.get_or_insert_with(Instant::now);
                deadline = (Instant::now() + QUIET).min(first + MAX_BATCH);
            }
            Ok(Err(e)) => eprintln!("watch: {e}"),
            Err(mpsc::RecvTimeoutError::Timeout) => return paths,
            Err(mpsc::RecvTimeoutError::Disconnected) => return paths,
        }
    }
}

/// Applies one batch: per (service, rule), the changed paths below it.
fn handle(root: &Path, p: &Project, rules: &[Rule], batch: &BTreeSet<PathBuf>) -> CmdResult {
    let mut hits: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    for path in batch {
        for (i, r) in rules.iter().enumerate() {
            if let Some(rel) = r.triggered_by(path) {
                hits.entry(i).or_default().insert(rel);
            }
        }
    }
    let mut rebuilt = BTreeSet::new();
    for (i, rels) in hits {
        let r = &rules[i];
        match r.rule.action {
            WatchAction::Rebuild => {
                if rebuilt.insert(r.service) {
                    eprintln!(
                        " Rebuilding service {:?} after changes were detected",
                        r.service
                    );
                    rebuild(root, p, r.service)?;
                }
            }
            WatchAction::Restart => {
                eprintln!(
                    " Restarting service {:?} after changes were detected",
                    r.service
                );
                super::restart_running(root, p, r.service)?;
            }
            WatchAction::Sync | WatchAction::SyncRestart | WatchAction::SyncExec => {
                eprintln!(
                    " Syncing service {:?} after {} changes were detected",
                    r.service,
                    rels.len()
                );
                sync(root, p, r, &rels)?;
                if r.rule.action == WatchAction::SyncRestart {
                    super::restart_running(root, p, r.service)?;
                }
                if r.rule.action == WatchAction::SyncExec {
                    exec_after_sync(root, p, r)?;
                }
            }
        }
    }
    Ok(0)
}

/// Copies (or removes) each changed path into every running container of the service.
fn sync(root: &Path, p: &Project, r: &Rule, rels: &BTreeSet<String>) -> CmdResult {
    let base = Path::new(&r.rule.path);
    let target = r.target_of("").unwrap_or_default();
    // A new directory's files may predate the watch on it: take them all now.
    let mut rels = rels.clone();
    for rel in rels.clone() {
        let host = base.join(&rel);
        if host.is_dir() && !host.is_symlink() {
            rels.extend(files_below(r, &host)?);
        }
    }
    let mut engine = Engine::open(root)?;
    for c in running(root, p, r.service)? {
        let (_, view) = engine.rootfs_view(&c)?;
        for rel in &rels {
            let host = if rel.is_empty() {
                base.to_path_buf()
            } else {
                base.join(rel)
            };
            let Some(dest) = r.target_of(rel) else {
                continue;
            };
            match std::fs::symlink_metadata(&host) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    crate::fs_cmds::remove_in(&view, &dest)?
                }
                Err(e) => return Err(format!("{}: {e}", host.display()).into()),
                Ok(m) if m.is_dir() => {}
                Ok(_) => crate::fs_cmds::sync_into(&view, &host, &dest, base, &target)?,
            }
        }
    }
    Ok(0)
}

/// `initial_sync`: every file below the rule's path, once, before watching.
fn initial_sync(root: &Path, p: &Project, r: &Rule) -> CmdResult {
    let base = PathBuf::from(&r.rule.path);
    let rels = if base.is_dir() {
        files_below(r, &base)?
    } else {
        BTreeSet::from([String::new()])
    };
    sync(root, p, r, &rels)
}

/// The files (not directories) below `dir` that trigger `r`, relative to its path.
fn files_below(r: &Rule, dir: &Path) -> Result<BTreeSet<String>, std::io::Error> {
    let mut rels = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir)? {
            let path = e?.path();
            let Some(rel) = r.triggered_by(&path) else {
                continue;
            };
            if path.is_dir() && !path.is_symlink() {
                stack.push(path);
            } else {
                rels.insert(rel);
            }
        }
    }
    Ok(rels)
}

fn running(root: &Path, p: &Project, service: &str) -> Result<Vec<String>, String> {
    Ok(project_containers(root, &p.name, false)
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|c| service_of(c) == service && c.state.status.is_active())
        .map(|c| c.id)
        .collect())
}

/// `rebuild`: the service's image again, then `up` recreates what the new image changed.
fn rebuild(root: &Path, p: &Project, service: &str) -> CmdResult {
    super::build_service(root, p, service, false, false)?;
    let up = UpArgs {
        detach: true,
        no_deps: true,
        services: vec![service.to_string()],
        ..Default::default()
    };
    super::up(root, p, &up)
}

fn exec_after_sync(root: &Path, p: &Project, r: &Rule) -> CmdResult {
    let Some(x) = &r.rule.exec else {
        return Err(format!("service {}: sync+exec needs an exec section", r.service).into());
    };
    let cmd = x
        .argv()
        .map_err(|e| format!("service {}: develop.watch exec: {e}", r.service))?;
    for id in running(root, p, r.service)? {
        let code = super::exec_spec(root, &id, x, cmd.clone());
        if code != 0 {
            eprintln!("watch: exec in {} exited with {code}", r.service);
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(ignore: &[&str], include: &[&str]) -> WatchRule {
        WatchRule {
            path: "/src/app".into(),
            action: WatchAction::Sync,
            target: Some("/app/".into()),
            ignore: ignore.iter().map(|s| s.to_string()).collect(),
            include: include.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn rules_match_below_their_path_minus_ignores() {
        let w = rule(&["node_modules/", "*.log"], &[]);
        let r = compile("web", &w).unwrap();
        let t = |p: &str| r.triggered_by(Path::new(p));
        assert_eq!(t("/src/app/index.js").as_deref(), Some("index.js"));
        assert_eq!(t("/src/app/lib/a.js").as_deref(), Some("lib/a.js"));
        assert_eq!(
            t("/src/application/x"),
            None,
            "a sibling with a common prefix"
        );
        assert_eq!(t("/src/app/node_modules/x/y.js"), None);
        assert_eq!(t("/src/app/debug.log"), None);
        assert_eq!(t("/src/app/.git/HEAD"), None);
        assert_eq!(t("/src/app/lib/.a.js.swp"), None);
        assert_eq!(r.target_of("lib/a.js").as_deref(), Some("/app/lib/a.js"));
        let w = rule(&[], &["*.js"]);
        let r = compile("web", &w).unwrap();
        assert!(r.triggered_by(Path::new("/src/app/a.js")).is_some());
        assert!(r.triggered_by(Path::new("/src/app/a.css")).is_none());
    }

    #[test]
    fn sync_rules_need_a_target() {
        let mut w = rule(&[], &[]);
        w.target = None;
        let err = compile("web", &w).err().unwrap_or_default();
        assert!(err.contains("needs a target"), "{err}");
        w.action = WatchAction::Rebuild;
        assert!(compile("web", &w).is_ok());
    }
}
