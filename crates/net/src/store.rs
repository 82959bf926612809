//! berth-net's tables in `berth.db`.
//!
//! The schema version lives in our own `net_schema` table: SQLite's `user_version`
//! belongs to berth-image's MetaStore, which shares the file.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Row, Transaction, TransactionBehavior};

use crate::{Endpoint, Network, PortMapping, Result};

const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE networks (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    driver TEXT NOT NULL,
    bridge TEXT NOT NULL,
    subnet TEXT,
    gateway TEXT,
    internal INTEGER NOT NULL,
    labels TEXT NOT NULL,
    created INTEGER NOT NULL,
    last_ip TEXT
);
CREATE TABLE endpoints (
    network_id TEXT NOT NULL REFERENCES networks(id),
    container_id TEXT NOT NULL,
    name TEXT NOT NULL,
    ifname TEXT NOT NULL,
    ip TEXT NOT NULL,
    prefix INTEGER NOT NULL,
    gateway TEXT NOT NULL,
    mac TEXT NOT NULL,
    host_veth TEXT NOT NULL UNIQUE,
    ports TEXT NOT NULL,
    aliases TEXT NOT NULL,
    hosts_file TEXT,
    hostname TEXT NOT NULL,
    netns TEXT NOT NULL,
    PRIMARY KEY (network_id, container_id),
    UNIQUE (network_id, ip)
);
CREATE INDEX endpoints_container ON endpoints(container_id);
",
    "
ALTER TABLE endpoints ADD COLUMN extra_hosts TEXT NOT NULL DEFAULT '[]';
",
    "
ALTER TABLE networks ADD COLUMN options TEXT NOT NULL DEFAULT '{}';
",
    "
ALTER TABLE networks ADD COLUMN ip_range TEXT;
",
];

/// Opens the database (WAL, busy timeout first) and brings our tables up to date.
/// `seed` runs in the transaction that creates the schema (the predefined networks).
pub(crate) fn open(path: &Path, seed: impl Fn(&Transaction) -> Result<()>) -> Result<Connection> {
    // Switching a fresh database to WAL needs an exclusive lock and SQLite answers BUSY
    // without consulting the busy handler, so concurrent first opens retry here.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match open_once(path, &seed) {
            Err(crate::NetError::Db(rusqlite::Error::SqliteFailure(e, _)))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            r => return r,
        }
    }
}

fn open_once(path: &Path, seed: &impl Fn(&Transaction) -> Result<()>) -> Result<Connection> {
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // NORMAL (no fsync per commit; WAL still makes every commit atomic and survives a
    // crash of the process): what these tables describe — links, addresses, rules in
    // the running kernel — does not survive a power loss either, so an fsync per
    // connect and release (milliseconds on a busy disk) would buy nothing. The setting
    // is per connection; berth-image's keeps FULL.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS net_schema (version INTEGER NOT NULL)")?;
    let found: Option<i64> = tx
        .query_row("SELECT version FROM net_schema", [], |r| r.get(0))
        .optional()?;
    let found = found.unwrap_or(0) as usize;
    if found > MIGRATIONS.len() {
        return Err(crate::NetError::Invalid(format!(
            "network schema version {found} is newer than this berth ({})",
            MIGRATIONS.len()
        )));
    }
    for sql in &MIGRATIONS[found..] {
        tx.execute_batch(sql)?;
    }
    if found == 0 {
        tx.execute(
            "INSERT INTO net_schema (version) VALUES (?1)",
            [MIGRATIONS.len() as i64],
        )?;
        seed(&tx)?;
    } else if found < MIGRATIONS.len() {
        tx.execute(
            "UPDATE net_schema SET version = ?1",
            [MIGRATIONS.len() as i64],
        )?;
    }
    tx.commit()?;
    Ok(conn)
}

const NET_COLS: &str =
    "id, name, driver, bridge, subnet, gateway, internal, labels, created, options, ip_range";

fn network_row(r: &Row) -> rusqlite::Result<Network> {
    let subnet: Option<String> = r.get(4)?;
    let gateway: Option<String> = r.get(5)?;
    let labels: String = r.get(7)?;
    let options: String = r.get(9)?;
    let ip_range: Option<String> = r.get(10)?;
    Ok(Network {
        id: r.get(0)?,
        name: r.get(1)?,
        driver: r.get(2)?,
        bridge: r.get(3)?,
        subnet: subnet.and_then(|s| s.parse().ok()),
        gateway: gateway.and_then(|s| s.parse().ok()),
        ip_range: ip_range.and_then(|s| s.parse().ok()),
        internal: r.get(6)?,
        labels: serde_json::from_str(&labels).unwrap_or_default(),
        options: serde_json::from_str(&options).unwrap_or_default(),
        created: r.get(8)?,
        containers: BTreeMap::new(),
    })
}

pub(crate) fn networks(c: &Connection) -> Result<Vec<Network>> {
    let mut st = c.prepare_cached(&format!(
        "SELECT {NET_COLS} FROM networks ORDER BY created, name"
    ))?;
    let rows = st.query_map([], network_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(crate) fn insert_network(c: &Connection, n: &Network) -> Result<()> {
    c.execute(
        &format!(
            "INSERT INTO networks ({NET_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
        ),
        params![
            n.id,
            n.name,
            n.driver,
            n.bridge,
            n.subnet.map(|s| s.to_string()),
            n.gateway.map(|g| g.to_string()),
            n.internal,
            serde_json::to_string(&n.labels).unwrap_or_else(|_| "{}".into()),
            n.created,
            serde_json::to_string(&n.options).unwrap_or_else(|_| "{}".into()),
            n.ip_range.map(|r| r.to_string()),
        ],
    )?;
    Ok(())
}

pub(crate) fn delete_network(c: &Connection, id: &str) -> Result<()> {
    c.execute("DELETE FROM networks WHERE id = ?1", [id])?;
    Ok(())
}

/// An endpoint row with what only berth-net needs besides the public [`Endpoint`].
#[derive(Debug, Clone)]
pub(crate) struct EndpointRow {
    pub ep: Endpoint,
    pub hosts_file: Option<String>,
    pub hostname: String,
    /// The namespace path given at connect and the identity (`dev:ino`) it had then.
    pub netns: String,
    /// See [`crate::Attach::extra_hosts`].
    pub extra_hosts: Vec<String>,
}

const EP_COLS: &str = "e.network_id, n.name, e.container_id, e.name, e.ifname, e.ip, e.prefix, \
     e.gateway, e.mac, e.host_veth, e.ports, e.aliases, e.hosts_file, e.hostname, e.netns, \
     e.extra_hosts";

fn endpoint_row(r: &Row) -> rusqlite::Result<EndpointRow> {
    let ip: String = r.get(5)?;
    let gw: String = r.get(7)?;
    let ports: String = r.get(10)?;
    let aliases: String = r.get(11)?;
    let extra: String = r.get(15)?;
    Ok(EndpointRow {
        ep: Endpoint {
            network_id: r.get(0)?,
            network: r.get(1)?,
            container_id: r.get(2)?,
            name: r.get(3)?,
            ifname: r.get(4)?,
            ip: ip.parse().unwrap_or(Ipv4Addr::UNSPECIFIED),
            prefix: r.get(6)?,
            gateway: gw.parse().unwrap_or(Ipv4Addr::UNSPECIFIED),
            mac: r.get(8)?,
            host_veth: r.get(9)?,
            ports: serde_json::from_str(&ports).unwrap_or_default(),
            aliases: serde_json::from_str(&aliases).unwrap_or_default(),
        },
        hosts_file: r.get(12)?,
        hostname: r.get(13)?,
        netns: r.get(14)?,
        extra_hosts: serde_json::from_str(&extra).unwrap_or_default(),
    })
}

fn endpoints_where(c: &Connection, cond: &str, arg: &str) -> Result<Vec<EndpointRow>> {
    let sql = format!(
        "SELECT {EP_COLS} FROM endpoints e JOIN networks n ON n.id = e.network_id \
         WHERE {cond} ORDER BY e.container_id, e.ifname"
    );
    let mut st = c.prepare_cached(&sql)?;
    let rows = st.query_map([arg], endpoint_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(crate) fn endpoints_of_container(c: &Connection, cid: &str) -> Result<Vec<EndpointRow>> {
    endpoints_where(c, "e.container_id = ?1", cid)
}

pub(crate) fn endpoints_of_network(c: &Connection, net_id: &str) -> Result<Vec<EndpointRow>> {
    endpoints_where(c, "e.network_id = ?1", net_id)
}

pub(crate) fn all_endpoints(c: &Connection) -> Result<Vec<EndpointRow>> {
    endpoints_where(c, "?1 = ?1", "")
}

/// Addresses in use on a network.
pub(crate) fn used_ips(c: &Connection, net_id: &str) -> Result<Vec<Ipv4Addr>> {
    let mut st = c.prepare_cached("SELECT ip FROM endpoints WHERE network_id = ?1")?;
    let rows = st.query_map([net_id], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for ip in rows {
        if let Ok(ip) = ip?.parse() {
            out.push(ip);
        }
    }
    Ok(out)
}

/// The address a network handed out last.
pub(crate) fn last_ip(c: &Connection, net_id: &str) -> Result<Option<Ipv4Addr>> {
    let v: Option<Option<String>> = c
        .query_row(
            "SELECT last_ip FROM networks WHERE id = ?1",
            [net_id],
            |r| r.get(0),
        )
        .optional()?;
    Ok(v.flatten().and_then(|s| s.parse().ok()))
}

pub(crate) fn set_last_ip(c: &Connection, net_id: &str, ip: Ipv4Addr) -> Result<()> {
    c.execute(
        "UPDATE networks SET last_ip = ?2 WHERE id = ?1",
        [net_id, &ip.to_string()],
    )?;
    Ok(())
}

/// Host bindings of every endpoint (for port conflict checks).
pub(crate) fn taken_ports(c: &Connection) -> Result<Vec<PortMapping>> {
    let mut st = c.prepare_cached("SELECT ports FROM endpoints WHERE ports != '[]'")?;
    let rows = st.query_map([], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for p in rows {
        let v: Vec<PortMapping> = serde_json::from_str(&p?).unwrap_or_default();
        out.extend(v);
    }
    Ok(out)
}

pub(crate) fn insert_endpoint(c: &Connection, row: &EndpointRow) -> Result<()> {
    let e = &row.ep;
    c.execute(
        "INSERT INTO endpoints (network_id, container_id, name, ifname, ip, prefix, gateway, \
         mac, host_veth, ports, aliases, hosts_file, hostname, netns, extra_hosts) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
        params![
            e.network_id,
            e.container_id,
            e.name,
            e.ifname,
            e.ip.to_string(),
            e.prefix,
            e.gateway.to_string(),
            e.mac,
            e.host_veth,
            serde_json::to_string(&e.ports).unwrap_or_else(|_| "[]".into()),
            serde_json::to_string(&e.aliases).unwrap_or_else(|_| "[]".into()),
            row.hosts_file,
            row.hostname,
            row.netns,
            serde_json::to_string(&row.extra_hosts).unwrap_or_else(|_| "[]".into()),
        ],
    )?;
    Ok(())
}

pub(crate) fn delete_endpoint(c: &Connection, net_id: &str, cid: &str) -> Result<()> {
    c.execute(
        "DELETE FROM endpoints WHERE network_id = ?1 AND container_id = ?2",
        [net_id, cid],
    )?;
    Ok(())
}
