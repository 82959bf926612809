//! Image metadata in SQLite (`berth.db`): images, tags and layers.
//!
//! The schema is deliberately small. An image row names its manifest, its
//! config, its platform and its top layer's chain id; the layers table is a
//! tree through `parent`, so an image's layers are the top layer and its
//! ancestors. Every image holds one reference on each layer of its chain, so
//! removing an image decrements exactly those and the layers that drop to
//! zero are the ones no image uses any more.
//!
//! `compressed_layers` remembers, per diff id and format (`gzip`, `zstd`), the blob
//! a push compressed a layer into, so a second push neither recompresses nor
//! uploads; its rows go when no layer with that diff id is left.
//!
//! The schema version lives in SQLite's `user_version`; [`MIGRATIONS`] lists
//! the steps, applied in order, each in its own transaction.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use crate::digest::Digest;
use crate::reference::Reference;

/// Schema steps; the database's `user_version` counts how many are applied.
pub const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE layers (
    chain_id  TEXT PRIMARY KEY,
    diff_id   TEXT NOT NULL,
    parent    TEXT REFERENCES layers(chain_id),
    size      INTEGER NOT NULL,
    refcount  INTEGER NOT NULL DEFAULT 0 CHECK (refcount >= 0)
);
CREATE TABLE images (
    manifest_digest TEXT PRIMARY KEY,
    config_digest   TEXT NOT NULL,
    media_type      TEXT NOT NULL,
    os              TEXT NOT NULL,
    architecture    TEXT NOT NULL,
    variant         TEXT,
    top_layer       TEXT REFERENCES layers(chain_id),
    created_unix    INTEGER NOT NULL
);
CREATE TABLE tags (
    reference       TEXT PRIMARY KEY,
    manifest_digest TEXT NOT NULL REFERENCES images(manifest_digest) ON DELETE CASCADE
);
CREATE INDEX tags_by_image ON tags(manifest_digest);
"#,
    // 2: the compressed forms push made of layers, so the next push reuses them.
    r#"
CREATE TABLE compressed_layers (
    diff_id TEXT NOT NULL,
    format  TEXT NOT NULL,
    digest  TEXT NOT NULL,
    size    INTEGER NOT NULL,
    PRIMARY KEY (diff_id, format)
);
"#,
];

/// Metadata store failures.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// SQLite reported an error.
    #[error("metadata database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database was written by a newer berth.
    #[error("database schema version {found} is newer than supported {supported}")]
    SchemaTooNew {
        /// Version found in the file.
        found: usize,
        /// Highest version this build knows.
        supported: usize,
    },
    /// A stored value does not parse (the file was edited or corrupted).
    #[error("corrupt metadata: {0}")]
    Corrupt(String),
    /// The layers of an image record do not form a chain.
    #[error("layer {0} does not continue the chain of the layers before it")]
    BrokenChain(Digest),
    /// The image is not known.
    #[error("image {0} not found")]
    ImageNotFound(Digest),
}

type Result<T> = std::result::Result<T, MetaError>;

/// The platform an image was built for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Platform {
    /// e.g. `linux`.
    pub os: String,
    /// e.g. `amd64`.
    pub architecture: String,
    /// e.g. `v8` for arm64.
    pub variant: Option<String>,
}

/// One layer of the layer tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRecord {
    /// Chain id: names the layer directory.
    pub chain_id: Digest,
    /// Digest of the uncompressed layer tar.
    pub diff_id: Digest,
    /// Chain id of the layer below, if any.
    pub parent: Option<Digest>,
    /// Uncompressed size in bytes.
    pub size: u64,
}

impl LayerRecord {
    /// Records for a stack of layers given bottom first as (diff id, size).
    pub fn stack(layers: &[(Digest, u64)]) -> Vec<LayerRecord> {
        let diff_ids: Vec<Digest> = layers.iter().map(|(d, _)| d.clone()).collect();
        let chains = crate::layer::chain_ids(&diff_ids);
        let mut parent = None;
        let mut out = Vec::with_capacity(layers.len());
        for ((diff_id, size), chain_id) in layers.iter().zip(chains) {
            out.push(LayerRecord {
                chain_id: chain_id.clone(),
                diff_id: diff_id.clone(),
                parent: parent.replace(chain_id),
                size: *size,
            });
        }
        out
    }
}

/// An image: manifest, config, platform and its layers (bottom first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecord {
    /// Digest of the manifest: the image's identity in the store.
    pub manifest_digest: Digest,
    /// Digest of the config blob (Docker's "image id").
    pub config_digest: Digest,
    /// Media type of the manifest.
    pub media_type: String,
    /// Platform of the image.
    pub platform: Platform,
    /// Layers, bottom first; each one's parent is the previous one.
    pub layers: Vec<LayerRecord>,
    /// Seconds since the epoch when the record was added.
    pub created_unix: i64,
}

/// The metadata database.
pub struct MetaStore {
    conn: Connection,
}

impl MetaStore {
    /// The open connection, for a caller that goes on with the same database file (the
    /// engine after an image lookup): a second connection would parse the schema again.
    pub fn into_connection(self) -> Connection {
        self.conn
    }

    /// Opens (creating and migrating if needed) the database at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        // Switching a brand-new database to WAL needs an exclusive lock, and SQLite
        // answers BUSY to that without consulting the busy handler; several berth
        // processes opening a fresh store at once retry here instead of failing.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match Self::open_once(path.as_ref()) {
                Err(MetaError::Sqlite(rusqlite::Error::SqliteFailure(e, _)))
                    if matches!(
                        e.code,
                        rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                    ) && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                r => return r,
            }
        }
    }

    fn open_once(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        // First, so that the statements below wait for a concurrent writer.
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // WAL lets readers run beside one writer; FULL makes each commit
        // durable before it returns, matching the crash rule of the store.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let mut store = MetaStore { conn };
        store.migrate()?;
        Ok(store)
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<usize> {
        let v: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?;
        Ok(v as usize)
    }

    fn migrate(&mut self) -> Result<()> {
        let found = self.schema_version()?;
        if found > MIGRATIONS.len() {
            return Err(MetaError::SchemaTooNew {
                found,
                supported: MIGRATIONS.len(),
            });
        }
        if found == MIGRATIONS.len() {
            return Ok(());
        }
        // Two processes may open a fresh store at once: the version is read again
        // under the write lock so that only one of them runs each migration.
        let tx = self.write()?;
        let found: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// A transaction that takes the write lock at once. A deferred one that reads
    /// first cannot wait for a concurrent writer (SQLite answers BUSY at the upgrade
    /// whatever the busy timeout), so concurrent pulls would fail instead of queueing.
    fn write(&mut self) -> Result<Transaction<'_>> {
        Ok(self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?)
    }

    /// Records an image and takes a reference on each of its layers.
    /// Returns false (and changes nothing) if the image is already known.
    pub fn add_image(&mut self, image: &ImageRecord) -> Result<bool> {
        check_chain(&image.layers)?;
        let tx = self.write()?;
        let exists: Option<i64> = tx
            .query_row(
                "SELECT 1 FROM images WHERE manifest_digest = ?1",
                [image.manifest_digest.to_string()],
                |r| r.get(0),
            )
            .optional()?;
        if exists.is_some() {
            return Ok(false);
        }
        for layer in &image.layers {
            insert_layer_ref(&tx, layer)?;
        }
        tx.execute(
            "INSERT INTO images (manifest_digest, config_digest, media_type, os, architecture,
                                 variant, top_layer, created_unix)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                image.manifest_digest.to_string(),
                image.config_digest.to_string(),
                image.media_type,
                image.platform.os,
                image.platform.architecture,
                image.platform.variant,
                image.layers.last().map(|l| l.chain_id.to_string()),
                image.created_unix,
            ],
        )?;
        tx.commit()?;
        Ok(true)
    }

    /// Looks up one image.
    pub fn image(&self, manifest: &Digest) -> Result<Option<ImageRecord>> {
        let row = self
            .conn
            .query_row(
                &format!("{IMAGE_SELECT} WHERE manifest_digest = ?1"),
                [manifest.to_string()],
                image_row,
            )
            .optional()?;
        row.map(|r| self.finish_image(r)).transpose()
    }

    /// All images, ordered by manifest digest.
    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        let mut stmt = self
            .conn
            .prepare(&format!("{IMAGE_SELECT} ORDER BY manifest_digest"))?;
        let rows = stmt.query_map([], image_row)?;
        let mut out = Vec::new();
        for r in rows {
            out.push(self.finish_image(r?)?);
        }
        Ok(out)
    }

    /// Points `reference` at an image; returns the image it pointed at before.
    pub fn tag(&mut self, reference: &Reference, manifest: &Digest) -> Result<Option<Digest>> {
        let tx = self.write()?;
        let prev = resolve_in(&tx, reference)?;
        let known: Option<i64> = tx
            .query_row(
                "SELECT 1 FROM images WHERE manifest_digest = ?1",
                [manifest.to_string()],
                |r| r.get(0),
            )
            .optional()?;
        if known.is_none() {
            return Err(MetaError::ImageNotFound(manifest.clone()));
        }
        tx.execute(
            "INSERT INTO tags (reference, manifest_digest) VALUES (?1, ?2)
             ON CONFLICT(reference) DO UPDATE SET manifest_digest = excluded.manifest_digest",
            params![reference.to_string(), manifest.to_string()],
        )?;
        tx.commit()?;
        Ok(prev)
    }

    /// Removes a tag; returns the image it pointed at.
    pub fn untag(&mut self, reference: &Reference) -> Result<Option<Digest>> {
        let tx = self.write()?;
        let prev = resolve_in(&tx, reference)?;
        tx.execute(
            "DELETE FROM tags WHERE reference = ?1",
            [reference.to_string()],
        )?;
        tx.commit()?;
        Ok(prev)
    }

    /// The image a reference points at.
    pub fn resolve(&self, reference: &Reference) -> Result<Option<Digest>> {
        resolve_in(&self.conn, reference)
    }

    /// The references pointing at an image, sorted.
    pub fn tags_of(&self, manifest: &Digest) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare("SELECT reference FROM tags WHERE manifest_digest = ?1 ORDER BY reference")?;
        let rows = stmt.query_map([manifest.to_string()], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// One layer and its reference count.
    pub fn layer(&self, chain_id: &Digest) -> Result<Option<(LayerRecord, u64)>> {
        let row = self
            .conn
            .query_row(
                "SELECT chain_id, diff_id, parent, size, refcount FROM layers WHERE chain_id = ?1",
                [chain_id.to_string()],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, i64>(4)?,
                    ))
                },
            )
            .optional()?;
        row.map(|(c, d, p, s, n)| Ok((layer_from(c, d, p, s)?, n as u64)))
            .transpose()
    }

    /// Removes an image and its tags and drops its layer references.
    /// Returns the layers no image uses any more (top first); their rows are
    /// gone and the caller deletes their directories.
    pub fn remove_image(&mut self, manifest: &Digest) -> Result<Vec<LayerRecord>> {
        let tx = self.write()?;
        let top: Option<Option<String>> = tx
            .query_row(
                "SELECT top_layer FROM images WHERE manifest_digest = ?1",
                [manifest.to_string()],
                |r| r.get(0),
            )
            .optional()?;
        let top = top.ok_or_else(|| MetaError::ImageNotFound(manifest.clone()))?;
        tx.execute(
            "DELETE FROM tags WHERE manifest_digest = ?1",
            [manifest.to_string()],
        )?;
        tx.execute(
            "DELETE FROM images WHERE manifest_digest = ?1",
            [manifest.to_string()],
        )?;
        let mut unused = Vec::new();
        let mut next = top;
        while let Some(chain) = next {
            let layer = load_layer(&tx, &chain)?;
            tx.execute(
                "UPDATE layers SET refcount = refcount - 1 WHERE chain_id = ?1",
                [&chain],
            )?;
            let left: i64 = tx.query_row(
                "SELECT refcount FROM layers WHERE chain_id = ?1",
                [&chain],
                |r| r.get(0),
            )?;
            if left == 0 {
                // Top-down order deletes children before their parent rows.
                tx.execute("DELETE FROM layers WHERE chain_id = ?1", [&chain])?;
                unused.push(layer.clone());
            }
            next = layer.parent.map(|p| p.to_string());
        }
        tx.commit()?;
        Ok(unused)
    }

    /// The blob (digest, size) a layer with `diff_id` was compressed into as `format`.
    pub fn compressed_layer(
        &self,
        diff_id: &Digest,
        format: &str,
    ) -> Result<Option<(Digest, u64)>> {
        let row: Option<(String, i64)> = self
            .conn
            .query_row(
                "SELECT digest, size FROM compressed_layers WHERE diff_id = ?1 AND format = ?2",
                params![diff_id.to_string(), format],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        row.map(|(d, s)| Ok((parse_digest(&d)?, s as u64)))
            .transpose()
    }

    /// Remembers that the layer `diff_id` compressed as `format` is the blob `digest`.
    /// Returns the blob it replaces (one made at another level), which is no longer
    /// remembered.
    pub fn record_compressed_layer(
        &self,
        diff_id: &Digest,
        format: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<Option<Digest>> {
        // No transaction, so that a push can record through a shared store: the write
        // is one atomic statement, and two pushes racing to record the same layer at
        // different levels can at worst leave one unremembered blob, which
        // `system check` still verifies and a later rmi of its image does not need.
        let old: Option<String> = self
            .conn
            .query_row(
                "SELECT digest FROM compressed_layers WHERE diff_id = ?1 AND format = ?2",
                params![diff_id.to_string(), format],
                |r| r.get(0),
            )
            .optional()?;
        self.conn.execute(
            "INSERT OR REPLACE INTO compressed_layers (diff_id, format, digest, size) \
             VALUES (?1, ?2, ?3, ?4)",
            params![diff_id.to_string(), format, digest.to_string(), size as i64],
        )?;
        let old = old.map(|d| parse_digest(&d)).transpose()?;
        Ok(old.filter(|d| d != digest))
    }

    /// Forgets the compressed forms of layers no layer row has any more and returns
    /// their blobs, for the caller to delete once nothing else uses them.
    pub fn drop_unused_compressed_layers(&mut self) -> Result<Vec<Digest>> {
        let tx = self.write()?;
        let gone: Vec<String> = {
            let mut st = tx.prepare(
                "SELECT digest FROM compressed_layers \
                 WHERE diff_id NOT IN (SELECT diff_id FROM layers)",
            )?;
            let rows = st.query_map([], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        tx.execute(
            "DELETE FROM compressed_layers WHERE diff_id NOT IN (SELECT diff_id FROM layers)",
            [],
        )?;
        tx.commit()?;
        gone.iter().map(|d| parse_digest(d)).collect()
    }

    fn finish_image(&self, row: ImageRow) -> Result<ImageRecord> {
        let mut layers = Vec::new();
        let mut next = row.top_layer;
        while let Some(chain) = next {
            let layer = load_layer(&self.conn, &chain)?;
            next = layer.parent.as_ref().map(ToString::to_string);
            layers.push(layer);
        }
        layers.reverse();
        Ok(ImageRecord {
            manifest_digest: parse_digest(&row.manifest)?,
            config_digest: parse_digest(&row.config)?,
            media_type: row.media_type,
            platform: Platform {
                os: row.os,
                architecture: row.architecture,
                variant: row.variant,
            },
            layers,
            created_unix: row.created_unix,
        })
    }
}

const IMAGE_SELECT: &str = "SELECT manifest_digest, config_digest, media_type, os, architecture,
    variant, top_layer, created_unix FROM images";

struct ImageRow {
    manifest: String,
    config: String,
    media_type: String,
    os: String,
    architecture: String,
    variant: Option<String>,
    top_layer: Option<String>,
    created_unix: i64,
}

fn image_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ImageRow> {
    Ok(ImageRow {
        manifest: r.get(0)?,
        config: r.get(1)?,
        media_type: r.get(2)?,
        os: r.get(3)?,
        architecture: r.get(4)?,
        variant: r.get(5)?,
        top_layer: r.get(6)?,
        created_unix: r.get(7)?,
    })
}

fn check_chain(layers: &[LayerRecord]) -> Result<()> {
    let mut parent: Option<&Digest> = None;
    for l in layers {
        let expected = match parent {
            None => l.diff_id.clone(),
            Some(p) => crate::layer::chain_id(Some(p), &l.diff_id),
        };
        if l.parent.as_ref() != parent || l.chain_id != expected {
            return Err(MetaError::BrokenChain(l.chain_id.clone()));
        }
        parent = Some(&l.chain_id);
    }
    Ok(())
}

fn insert_layer_ref(tx: &Transaction<'_>, layer: &LayerRecord) -> Result<()> {
    tx.execute(
        "INSERT INTO layers (chain_id, diff_id, parent, size, refcount) VALUES (?1, ?2, ?3, ?4, 1)
         ON CONFLICT(chain_id) DO UPDATE SET refcount = refcount + 1",
        params![
            layer.chain_id.to_string(),
            layer.diff_id.to_string(),
            layer.parent.as_ref().map(ToString::to_string),
            layer.size as i64,
        ],
    )?;
    Ok(())
}

fn load_layer(conn: &Connection, chain: &str) -> Result<LayerRecord> {
    let (c, d, p, s) = conn.query_row(
        "SELECT chain_id, diff_id, parent, size FROM layers WHERE chain_id = ?1",
        [chain],
        |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, i64>(3)?,
            ))
        },
    )?;
    layer_from(c, d, p, s)
}

fn layer_from(c: String, d: String, p: Option<String>, s: i64) -> Result<LayerRecord> {
    Ok(LayerRecord {
        chain_id: parse_digest(&c)?,
        diff_id: parse_digest(&d)?,
        parent: p.as_deref().map(parse_digest).transpose()?,
        size: s as u64,
    })
}

fn resolve_in(conn: &Connection, reference: &Reference) -> Result<Option<Digest>> {
    let d: Option<String> = conn
        .query_row(
            "SELECT manifest_digest FROM tags WHERE reference = ?1",
            [reference.to_string()],
            |r| r.get(0),
        )
        .optional()?;
    d.as_deref().map(parse_digest).transpose()
}

fn parse_digest(s: &str) -> Result<Digest> {
    s.parse()
        .map_err(|e| MetaError::Corrupt(format!("bad digest {s:?} in database: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Digest {
        Digest::sha256_of(s.as_bytes())
    }

    fn image(name: &str, layers: &[&str]) -> ImageRecord {
        let stack: Vec<(Digest, u64)> = layers.iter().map(|l| (d(l), 100)).collect();
        ImageRecord {
            manifest_digest: d(&format!("manifest-{name}")),
            config_digest: d(&format!("config-{name}")),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            platform: Platform {
                os: "linux".into(),
                architecture: "arm64".into(),
                variant: Some("v8".into()),
            },
            layers: LayerRecord::stack(&stack),
            created_unix: 1_700_000_000,
        }
    }

    fn open() -> (tempfile::TempDir, MetaStore) {
        let dir = tempfile::tempdir().unwrap();
        let m = MetaStore::open(dir.path().join("berth.db")).unwrap();
        (dir, m)
    }

    #[test]
    fn schema_is_versioned_and_wal() {
        let (dir, m) = open();
        assert_eq!(m.schema_version().unwrap(), MIGRATIONS.len());
        let mode: String = m
            .conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        drop(m);
        // Reopening does not re-run migrations.
        let m = MetaStore::open(dir.path().join("berth.db")).unwrap();
        assert_eq!(m.schema_version().unwrap(), MIGRATIONS.len());
        m.conn.pragma_update(None, "user_version", 99).unwrap();
        drop(m);
        let err = MetaStore::open(dir.path().join("berth.db")).err().unwrap();
        assert!(matches!(err, MetaError::SchemaTooNew { found: 99, .. }));
    }

    #[test]
    fn images_tags_round_trip() {
        let (_dir, mut m) = open();
        let img = image("a", &["l1", "l2"]);
        assert!(m.add_image(&img).unwrap());
        assert!(!m.add_image(&img).unwrap(), "second add is a no-op");
        assert_eq!(m.image(&img.manifest_digest).unwrap().unwrap(), img);
        let r = Reference::parse("alpine").unwrap();
        assert_eq!(m.tag(&r, &img.manifest_digest).unwrap(), None);
        assert_eq!(m.resolve(&r).unwrap(), Some(img.manifest_digest.clone()));
        assert_eq!(
            m.tags_of(&img.manifest_digest).unwrap(),
            vec!["docker.io/library/alpine:latest".to_string()]
        );
        let (_, refs) = m.layer(&img.layers[0].chain_id).unwrap().unwrap();
        assert_eq!(refs, 1, "add_image twice took one reference");
        assert!(matches!(
            m.tag(&r, &d("nope")),
            Err(MetaError::ImageNotFound(_))
        ));
        assert_eq!(m.untag(&r).unwrap(), Some(img.manifest_digest.clone()));
        assert_eq!(m.resolve(&r).unwrap(), None);
        assert_eq!(m.images().unwrap().len(), 1);
    }

    #[test]
    fn removal_returns_exactly_unused_layers() {
        let (_dir, mut m) = open();
        let a = image("a", &["base", "mid", "a-top"]);
        let b = image("b", &["base", "mid", "b-top"]);
        let c = image("c", &["other"]);
        for i in [&a, &b, &c] {
            m.add_image(i).unwrap();
        }
        m.tag(&Reference::parse("a").unwrap(), &a.manifest_digest)
            .unwrap();
        assert_eq!(m.layer(&a.layers[0].chain_id).unwrap().unwrap().1, 2);

        let gone = m.remove_image(&a.manifest_digest).unwrap();
        assert_eq!(
            gone,
            vec![a.layers[2].clone()],
            "base and mid still used by b"
        );
        assert!(m.image(&a.manifest_digest).unwrap().is_none());
        assert!(m.tags_of(&a.manifest_digest).unwrap().is_empty());
        assert_eq!(m.layer(&a.layers[1].chain_id).unwrap().unwrap().1, 1);

        let gone = m.remove_image(&b.manifest_digest).unwrap();
        let want: Vec<_> = b.layers.iter().rev().cloned().collect();
        assert_eq!(gone, want, "top first");
        assert!(m.layer(&b.layers[0].chain_id).unwrap().is_none());
        assert_eq!(
            m.images().unwrap(),
            vec![m.image(&c.manifest_digest).unwrap().unwrap()]
        );
        assert!(matches!(
            m.remove_image(&a.manifest_digest),
            Err(MetaError::ImageNotFound(_))
        ));
    }

    #[test]
    fn broken_chain_is_rejected() {
        let (_dir, mut m) = open();
        let mut img = image("x", &["l1", "l2"]);
        img.layers[1].parent = None;
        assert!(matches!(m.add_image(&img), Err(MetaError::BrokenChain(_))));
        assert!(m.images().unwrap().is_empty());
    }

    #[test]
    fn compressed_layers_are_remembered_until_their_layer_goes() {
        let (_t, mut m) = open();
        let img = image("m1", &["l1"]);
        m.add_image(&img).unwrap();
        let diff = img.layers[0].diff_id.clone();
        assert_eq!(m.compressed_layer(&diff, "gzip").unwrap(), None);
        assert_eq!(
            m.record_compressed_layer(&diff, "gzip", &d("gz1"), 5)
                .unwrap(),
            None
        );
        assert_eq!(
            m.record_compressed_layer(&diff, "gzip", &d("gz1"), 5)
                .unwrap(),
            None
        );
        assert_eq!(
            m.record_compressed_layer(&diff, "gzip", &d("gz"), 7)
                .unwrap(),
            Some(d("gz1"))
        );
        assert_eq!(
            m.compressed_layer(&diff, "gzip").unwrap(),
            Some((d("gz"), 7))
        );
        assert_eq!(m.compressed_layer(&diff, "zstd").unwrap(), None);
        // Still used: nothing is dropped.
        assert!(m.drop_unused_compressed_layers().unwrap().is_empty());
        m.remove_image(&img.manifest_digest).unwrap();
        assert_eq!(m.drop_unused_compressed_layers().unwrap(), vec![d("gz")]);
        assert_eq!(m.compressed_layer(&diff, "gzip").unwrap(), None);
    }

    #[test]
    fn version_one_database_migrates_keeping_its_images() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("berth.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
        }
        {
            let mut m = MetaStore::open(&path).unwrap();
            assert_eq!(m.schema_version().unwrap(), 1 + 1);
            m.add_image(&image("m1", &["l1"])).unwrap();
        }
        let m = MetaStore::open(&path).unwrap();
        assert_eq!(m.images().unwrap().len(), 1);
        let diff = m.images().unwrap()[0].layers[0].diff_id.clone();
        assert_eq!(m.compressed_layer(&diff, "gzip").unwrap(), None);
    }

    #[test]
    fn image_without_layers() {
        let (_dir, mut m) = open();
        let img = image("empty", &[]);
        m.add_image(&img).unwrap();
        assert_eq!(m.image(&img.manifest_digest).unwrap().unwrap(), img);
        assert!(m.remove_image(&img.manifest_digest).unwrap().is_empty());
    }
}
