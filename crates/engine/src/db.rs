//! The engine's tables in `<root>/berth.db`, beside berth-image's. The image store owns
//! `PRAGMA user_version`; the engine keeps its own schema version in `engine_schema`.
//! Every write is one IMMEDIATE transaction so concurrent berth processes serialise.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::record::Container;
use crate::{Error, Result};

const SCHEMA_VERSION: i64 = 1;

/// An open state DB.
pub struct Db {
    conn: Connection,
}

fn busy(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
}

impl Db {
    pub fn open(path: &Path) -> Result<Db> {
        // Switching a new database to WAL answers BUSY without the busy handler; retry.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match Self::open_once(path) {
                Err(Error::Db(e)) if busy(&e) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                r => return r,
            }
        }
    }

    fn open_once(path: &Path) -> Result<Db> {
        Db::on(Connection::open(path)?)
    }

    /// The engine's database on a connection already open to the store's file (the image
    /// store's, see `MetaStore::into_connection`), set up as `open` does.
    pub fn on(conn: Connection) -> Result<Db> {
        conn.busy_timeout(Duration::from_secs(10))?;
        let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            conn.pragma_update(None, "journal_mode", "WAL")?;
        }
        // Container state is rebuilt from the kernel when stale, so a commit lost to a
        // power cut costs little; NORMAL keeps fsync off `berth run`'s path.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Closing the last connection would checkpoint the WAL with two fsyncs on every
        // CLI exit. Instead the WAL is folded back every 64 pages: often enough that the
        // next process's WAL-index recovery (a read of the whole WAL) stays short.
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
            true,
        )?;
        conn.pragma_update(None, "wal_autocheckpoint", 64)?;
        let mut db = Db { conn };
        db.migrate()?;
        Ok(db)
    }

    fn migrate(&mut self) -> Result<()> {
        let have: Option<i64> = self
            .conn
            .query_row("SELECT version FROM engine_schema", [], |r| r.get(0))
            .optional()
            .or_else(|e| match e {
                rusqlite::Error::SqliteFailure(_, Some(ref m)) if m.contains("no such table") => {
                    Ok(None)
                }
                e => Err(e),
            })?;
        if have == Some(SCHEMA_VERSION) {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS engine_schema (version INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS containers (
                 id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE,
                 created TEXT NOT NULL, data TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS volumes (
                 name TEXT PRIMARY KEY, created TEXT NOT NULL, data TEXT NOT NULL);",
        )?;
        let n: i64 = tx.query_row("SELECT count(*) FROM engine_schema", [], |r| r.get(0))?;
        if n == 0 {
            tx.execute("INSERT INTO engine_schema VALUES (?1)", [SCHEMA_VERSION])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Adds a container; its name must be free.
    pub fn insert(&mut self, c: &Container) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let holder: Option<String> = tx
            .query_row(
                "SELECT id FROM containers WHERE name = ?1",
                [&c.name],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(id) = holder {
            return Err(Error::NameInUse {
                name: c.name.clone(),
                id,
            });
        }
        tx.execute(
            "INSERT INTO containers (id, name, created, data) VALUES (?1, ?2, ?3, ?4)",
            params![c.id, c.name, c.created, serde_json::to_string(c)?],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn decode(data: String) -> Result<Container> {
        Ok(serde_json::from_str(&data)?)
    }

    /// The current name of container `id`, without decoding its record.
    pub fn name_of(&self, id: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT name FROM containers WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?)
    }

    pub fn get(&self, id: &str) -> Result<Option<Container>> {
        let data: Option<String> = self
            .conn
            .query_row("SELECT data FROM containers WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?;
        data.map(Self::decode).transpose()
    }

    /// Docker's lookup: full id, exact name, then a unique id prefix.
    pub fn find(&self, key: &str) -> Result<Container> {
        let key = key.strip_prefix('/').unwrap_or(key);
        if let Some(c) = self.get(key)? {
            return Ok(c);
        }
        let by_name: Option<String> = self
            .conn
            .query_row("SELECT data FROM containers WHERE name = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?;
        if let Some(d) = by_name {
            return Self::decode(d);
        }
        let is_hex = !key.is_empty() && key.bytes().all(|b| b.is_ascii_hexdigit());
        if is_hex {
            let mut stmt = self
                .conn
                .prepare("SELECT data FROM containers WHERE id LIKE ?1 || '%' LIMIT 2")?;
            let hits: Vec<String> = stmt
                .query_map([key], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            match hits.len() {
                1 => return Self::decode(hits.into_iter().next().unwrap_or_default()),
                0 => {}
                _ => return Err(Error::Ambiguous(key.into())),
            }
        }
        Err(Error::NoSuchContainer(key.into()))
    }

    pub fn list(&self) -> Result<Vec<Container>> {
        let mut stmt = self
            .conn
            .prepare("SELECT data FROM containers ORDER BY created DESC")?;
        let rows: Vec<String> = stmt
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        rows.into_iter().map(Self::decode).collect()
    }

    /// Reads, changes and writes one container in one transaction; returns the result.
    pub fn update(&mut self, id: &str, f: impl FnOnce(&mut Container)) -> Result<Container> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let data: Option<String> = tx
            .query_row("SELECT data FROM containers WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?;
        let mut c = Self::decode(data.ok_or_else(|| Error::NoSuchContainer(id.into()))?)?;
        f(&mut c);
        tx.execute(
            "UPDATE containers SET name = ?2, data = ?3 WHERE id = ?1",
            params![id, c.name, serde_json::to_string(&c)?],
        )?;
        tx.commit()?;
        Ok(c)
    }

    /// Renames; the new name must be free.
    pub fn rename(&mut self, id: &str, name: &str) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let holder: Option<String> = tx
            .query_row("SELECT id FROM containers WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?;
        if let Some(other) = holder {
            return Err(Error::NameInUse {
                name: name.into(),
                id: other,
            });
        }
        let data: String = tx
            .query_row("SELECT data FROM containers WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?
            .ok_or_else(|| Error::NoSuchContainer(id.into()))?;
        let mut c = Self::decode(data)?;
        c.name = name.into();
        tx.execute(
            "UPDATE containers SET name = ?2, data = ?3 WHERE id = ?1",
            params![id, name, serde_json::to_string(&c)?],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Deletes container `id`'s record; false when there was none (removed meanwhile).
    pub fn delete(&mut self, id: &str) -> Result<bool> {
        let n = self
            .conn
            .execute("DELETE FROM containers WHERE id = ?1", [id])?;
        Ok(n > 0)
    }

    /// Volume rows: (name, created, data JSON).
    pub fn volume(&self, name: &str) -> Result<Option<(String, serde_json::Value)>> {
        let row: Option<(String, String)> = self
            .conn
            .query_row(
                "SELECT created, data FROM volumes WHERE name = ?1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        row.map(|(c, d)| Ok((c, serde_json::from_str(&d)?)))
            .transpose()
    }

    /// Adds a volume row unless it exists; returns whether it was added.
    pub fn add_volume(
        &mut self,
        name: &str,
        created: &str,
        data: &serde_json::Value,
    ) -> Result<bool> {
        let n = self.conn.execute(
            "INSERT OR IGNORE INTO volumes (name, created, data) VALUES (?1, ?2, ?3)",
            params![name, created, data.to_string()],
        )?;
        Ok(n == 1)
    }

    pub fn volumes(&self) -> Result<Vec<(String, String, serde_json::Value)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, created, data FROM volumes ORDER BY name")?;
        let rows: Vec<(String, String, String)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        rows.into_iter()
            .map(|(n, c, d)| Ok((n, c, serde_json::from_str(&d)?)))
            .collect()
    }

    pub fn remove_volume(&mut self, name: &str) -> Result<bool> {
        Ok(self
            .conn
            .execute("DELETE FROM volumes WHERE name = ?1", [name])?
            == 1)
    }
}
