//! Garbage collection (`berth registry gc`): mark every blob reachable from a repository's
//! manifests, then delete unmarked blobs.
//!
//! Safe beside a running server: upload sessions live apart (uploads/) and are never
//! looked at, and a blob is only deleted when its file is older than the grace period, so a
//! blob just uploaded (or just referenced: manifest pushes refresh the time of the blobs
//! they name) survives even though no manifest referenced it when marking began.

use std::collections::HashSet;
use std::io;
use std::time::{Duration, SystemTime};

use berth_image::digest::Digest;

use super::manifest;
use super::storage::Storage;

/// How a collection runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Report what would go, delete nothing.
    pub dry_run: bool,
    /// Also delete manifests no tag reaches (directly or through an index or as a
    /// referrer of a reachable manifest).
    pub delete_untagged: bool,
    /// Blobs modified within this period are kept regardless.
    pub grace: Duration,
}

/// What a collection removed (or would remove, in a dry run).
#[derive(Debug, Default)]
pub struct Report {
    pub manifests: Vec<(String, Digest)>,
    pub blobs: Vec<Digest>,
    pub bytes: u64,
}

/// Runs one collection.
pub fn collect(st: &Storage, opts: &Options) -> io::Result<Report> {
    let started = SystemTime::now();
    let mut report = Report::default();
    let mut marked = HashSet::new();
    for repo in st.catalog()? {
        let live = live_manifests(st, &repo, opts.delete_untagged)?;
        for d in st.revisions(&repo)? {
            if !live.contains(&d) {
                if !opts.dry_run {
                    st.delete_manifest(&repo, &d)?;
                }
                report.manifests.push((repo.clone(), d));
            }
        }
        for d in &live {
            mark_manifest(st, &repo, d, &mut marked)?;
        }
    }
    let cutoff = started
        .checked_sub(opts.grace)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    for d in st.all_blobs()? {
        if marked.contains(&d) {
            continue;
        }
        let path = st.blob_path(&d);
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.modified()? > cutoff {
            continue;
        }
        if !opts.dry_run {
            std::fs::remove_file(&path)?;
        }
        report.bytes += meta.len();
        report.blobs.push(d);
    }
    if !opts.dry_run {
        unlink_deleted(st, &report.blobs)?;
    }
    Ok(report)
}

/// The manifests of `repo` that stay: all of them, or with `untagged_go` those reachable
/// from tags through index entries and referrers.
fn live_manifests(st: &Storage, repo: &str, untagged_go: bool) -> io::Result<HashSet<Digest>> {
    let all = st.revisions(repo)?;
    if !untagged_go {
        return Ok(all.into_iter().collect());
    }
    let mut live = HashSet::new();
    let mut todo = Vec::new();
    for tag in st.tags(repo)?.unwrap_or_default() {
        todo.extend(st.resolve_tag(repo, &tag)?);
    }
    // Fixpoint: children of live indexes, and manifests whose subject is live.
    loop {
        while let Some(d) = todo.pop() {
            if !live.insert(d.clone()) {
                continue;
            }
            if let Some(m) = st.get_manifest(repo, &d)? {
                if let Ok(info) = manifest::inspect(&m.content, Some(&m.media_type)) {
                    todo.extend(info.children);
                }
            }
        }
        for d in &all {
            if live.contains(d) {
                continue;
            }
            let Some(m) = st.get_manifest(repo, d)? else {
                continue;
            };
            let subject = manifest::inspect(&m.content, Some(&m.media_type))
                .ok()
                .and_then(|i| i.subject);
            if subject.is_some_and(|s| live.contains(&s)) {
                todo.push(d.clone());
            }
        }
        if todo.is_empty() {
            return Ok(live);
        }
    }
}

fn mark_manifest(
    st: &Storage,
    repo: &str,
    d: &Digest,
    marked: &mut HashSet<Digest>,
) -> io::Result<()> {
    marked.insert(d.clone());
    let Some(m) = st.get_manifest(repo, d)? else {
        return Ok(());
    };
    if let Ok(info) = manifest::inspect(&m.content, Some(&m.media_type)) {
        marked.extend(info.blobs);
        marked.extend(info.children);
    }
    Ok(())
}

/// Drops repository links to deleted blobs, so a later upload of the same content is not
/// readable from repositories that never pushed it again.
fn unlink_deleted(st: &Storage, deleted: &[Digest]) -> io::Result<()> {
    let gone: HashSet<&Digest> = deleted.iter().collect();
    for repo in st.catalog()? {
        for d in st.linked_blobs(&repo)? {
            if gone.contains(&d) {
                st.unlink_blob(&repo, &d)?;
            }
        }
    }
    Ok(())
}
