//! `berth registry ...`: run the registry server and collect its garbage. Flag parsing and
//! printing only; the server lives in `berth_registry::server`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_registry::server::{self, gc, Config};
use clap::{Args, Subcommand};

#[derive(Subcommand, Debug)]
// Each subcommand's arguments are built only when it is the one invoked: building
// the whole tree cost every command ~1 ms of start-up (page faults, allocations).
#[command(defer = true)]
pub enum RegistryCmd {
    /// Serve the OCI distribution API (push, pull, referrers, catalog) from a directory.
    Serve(ServeArgs),
    /// Delete blobs (and with --delete-untagged, manifests) nothing references.
    Gc(GcArgs),
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on, HOST:PORT [default: 0.0.0.0:5000].
    #[arg(long)]
    addr: Option<String>,
    /// Storage directory [default: <root>/registry].
    #[arg(long)]
    storage: Option<PathBuf>,
    /// htpasswd file with bcrypt entries: require basic auth for every request.
    #[arg(long)]
    htpasswd: Option<PathBuf>,
    /// Access file (JSON rules: user, repo, actions): switch to bearer tokens from the
    /// built-in /token endpoint, where users log in with the htpasswd credentials.
    #[arg(long)]
    access: Option<PathBuf>,
    /// Token realm URL sent to clients [default: http://<Host>/token].
    #[arg(long)]
    token_realm: Option<String>,
    /// PEM certificate chain: serve HTTPS (needs --tls-key); plain HTTP without it.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// JSON file with any of: addr, storage, htpasswd, access, tokenRealm, tlsCert, tlsKey,
    /// accessLog (flags win).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Do not write JSON access-log lines to stderr.
    #[arg(long)]
    no_access_log: bool,
}

#[derive(Args, Debug)]
pub struct GcArgs {
    /// Storage directory [default: <root>/registry].
    #[arg(long)]
    storage: Option<PathBuf>,
    /// Report what would be deleted; delete nothing.
    #[arg(long)]
    dry_run: bool,
    /// Also delete manifests that no tag reaches.
    #[arg(long)]
    delete_untagged: bool,
    /// Keep blobs written within this period (e.g. 10m, 1h), for uploads racing the
    /// collection.
    #[arg(long, default_value = "1h")]
    grace: humantime::Duration,
}

/// Runs a registry subcommand; returns the exit code.
pub fn main(root: &Path, cmd: RegistryCmd) -> i32 {
    let result = match cmd {
        RegistryCmd::Serve(a) => serve(root, a),
        RegistryCmd::Gc(a) => collect(root, a),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("berth registry: {e:#}");
            125
        }
    }
}

fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    let Some(path) = path else {
        return Ok(Config {
            access_log: true,
            ..Config::default()
        });
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    // accessLog defaults to on unless the file says otherwise.
    let mut v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if v.get("accessLog").is_none() {
        v["accessLog"] = true.into();
    }
    serde_json::from_value(v).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn serve(root: &Path, a: ServeArgs) -> anyhow::Result<()> {
    let mut config = load_config(a.config.as_deref())?;
    if let Some(addr) = a.addr {
        config.addr = addr;
    }
    if config.addr.is_empty() {
        config.addr = "0.0.0.0:5000".into();
    }
    if let Some(s) = a.storage {
        config.storage = s;
    }
    if config.storage.as_os_str().is_empty() {
        config.storage = root.join("registry");
    }
    if a.htpasswd.is_some() {
        config.htpasswd = a.htpasswd;
    }
    if a.access.is_some() {
        config.access = a.access;
    }
    if a.token_realm.is_some() {
        config.token_realm = a.token_realm;
    }
    if a.tls_cert.is_some() {
        config.tls_cert = a.tls_cert;
        config.tls_key = a.tls_key;
    }
    if a.no_access_log {
        config.access_log = false;
    }
    server::serve(&config)?;
    Ok(())
}

fn collect(root: &Path, a: GcArgs) -> anyhow::Result<()> {
    let dir = a.storage.unwrap_or_else(|| root.join("registry"));
    let st = server::storage::Storage::open(&dir)
        .map_err(|e| anyhow::anyhow!("storage {}: {e}", dir.display()))?;
    let opts = gc::Options {
        dry_run: a.dry_run,
        delete_untagged: a.delete_untagged,
        grace: Duration::from(a.grace),
    };
    let report = gc::collect(&st, &opts)?;
    let verb = if a.dry_run { "would delete" } else { "deleted" };
    for (repo, d) in &report.manifests {
        println!("{verb} manifest {repo}@{d}");
    }
    for d in &report.blobs {
        println!("{verb} blob {d}");
    }
    println!(
        "{verb} {} manifests, {} blobs, {} bytes",
        report.manifests.len(),
        report.blobs.len(),
        report.bytes
    );
    Ok(())
}
