//! `berth volume create|ls|inspect|rm|prune`.

use std::io::{BufRead, Write};
use std::path::Path;

use berth_engine::{volumes, Engine};
use clap::Subcommand;

type CmdResult = Result<i32, Box<dyn std::error::Error>>;

#[derive(Subcommand, Debug)]
// Each subcommand's arguments are built only when it is the one invoked: building
// the whole tree cost every command ~1 ms of start-up (page faults, allocations).
#[command(defer = true)]
pub enum VolumeCmd {
    /// Create a volume.
    Create {
        /// Set metadata for a volume.
        #[arg(short, long)]
        label: Vec<String>,
        /// Driver name (only `local`).
        #[arg(short, long, default_value = "local")]
        driver: String,
        /// Set driver specific options (type, device, o: a mount(8) of the volume).
        #[arg(short, long)]
        opt: Vec<String>,
        name: Option<String>,
    },
    /// List volumes.
    #[command(alias = "list")]
    Ls {
        /// Only display volume names.
        #[arg(short, long)]
        quiet: bool,
        /// `json` or a Go-style template.
        #[arg(long)]
        format: Option<String>,
        /// `name=PART`, `label=KEY[=VALUE]`, `dangling=true|false`, `driver=local`;
        /// repeatable (all must hold).
        #[arg(short, long)]
        filter: Vec<String>,
    },
    /// Display detailed information on one or more volumes.
    Inspect {
        #[arg(short, long)]
        format: Option<String>,
        #[arg(required = true)]
        volumes: Vec<String>,
    },
    /// Remove one or more volumes.
    #[command(alias = "remove")]
    Rm {
        /// Force the removal of one or more volumes.
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        volumes: Vec<String>,
    },
    /// Remove unused volumes (anonymous ones; `-a` all).
    Prune {
        #[arg(short, long)]
        all: bool,
        #[arg(short, long)]
        force: bool,
        /// Provide filter values (`label=KEY[=VALUE]`, `label!=KEY`).
        #[arg(long)]
        filter: Vec<String>,
    },
}

/// Whether volume `name` passes every `--filter` (Docker's keys).
fn passes(
    engine: &berth_engine::Engine,
    name: &str,
    filters: &[String],
) -> Result<bool, Box<dyn std::error::Error>> {
    for f in filters {
        let (key, want) = crate::format::filter_kv(f)?;
        let ok = match key {
            "name" => name.contains(want),
            "driver" => want == "local",
            "dangling" => {
                engine.volume_users(name)?.is_empty() == crate::format::filter_bool(key, want)?
            }
            "label" => {
                let labels = volumes::inspect(&engine.db, &engine.root, name)?["Labels"].clone();
                crate::format::label_matches(want, |k| labels[k].as_str())
            }
            _ => return Err(format!("invalid filter '{key}'").into()),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Removes the volumes no container uses: anonymous ones, or with `all` named ones too.
/// Returns each removed volume with the bytes it held.
pub(crate) fn prune_unused(
    engine: &mut Engine,
    all: bool,
    filter: &crate::prune_filter::PruneFilter,
) -> Result<Vec<(String, u64)>, Box<dyn std::error::Error>> {
    let mut candidates = Vec::new();
    for (n, created, data) in engine.db.volumes()? {
        let anonymous = n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit());
        let labels: std::collections::BTreeMap<String, String> =
            serde_json::from_value(data["Labels"].clone()).unwrap_or_default();
        let created = crate::prune_filter::rfc3339(&created);
        if (all || anonymous) && filter.allows(created, &labels) {
            candidates.push(n);
        }
    }
    let mut removed = Vec::new();
    for n in candidates {
        if !engine.volume_users(&n)?.is_empty() {
            continue;
        }
        let size = crate::system::dir_size(&volumes::data_dir(&engine.root, &n));
        if volumes::remove(&mut engine.db, &engine.root, &n, &[]).is_ok() {
            removed.push((n, size));
        }
    }
    Ok(removed)
}

pub fn main(root: &Path, cmd: VolumeCmd) -> i32 {
    match run(root, cmd) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("Error response from daemon: {e}");
            1
        }
    }
}

fn run(root: &Path, cmd: VolumeCmd) -> CmdResult {
    let mut engine = Engine::open(root)?;
    let mut out = std::io::stdout().lock();
    match cmd {
        VolumeCmd::Create {
            label,
            driver,
            opt,
            name,
        } => {
            if driver != "local" {
                return Err(format!("plugin \"{driver}\" not found").into());
            }
            let labels: Vec<(String, String)> =
                crate::format::key_values(&label).into_iter().collect();
            let opts = crate::format::key_values(&opt);
            let n = volumes::create_with(
                &mut engine.db,
                &engine.root,
                name.as_deref(),
                &labels,
                &opts,
            )?;
            writeln!(out, "{n}")?;
        }
        VolumeCmd::Ls {
            quiet,
            format,
            filter,
        } => {
            let mut names = Vec::new();
            for n in volumes::list(&engine.db)? {
                if passes(&engine, &n, &filter)? {
                    names.push(n);
                }
            }
            if quiet {
                for n in names {
                    writeln!(out, "{n}")?;
                }
                return Ok(0);
            }
            let rows: Vec<serde_json::Value> = names
                .iter()
                .map(|n| serde_json::json!({"Driver": "local", "Name": n, "Scope": "local", "Mountpoint": volumes::data_dir(&engine.root, n), "Labels": ""}))
                .collect();
            match format.as_deref() {
                Some("json") => {
                    for r in rows {
                        writeln!(out, "{r}")?;
                    }
                }
                Some(t) => crate::format::template_rows(&mut out, t, &rows)?,
                None => {
                    let mut t = vec![vec!["DRIVER".to_string(), "VOLUME NAME".to_string()]];
                    t.extend(names.iter().map(|n| vec!["local".to_string(), n.clone()]));
                    crate::format::table(&mut out, &t)?;
                }
            }
        }
        VolumeCmd::Inspect {
            format,
            volumes: names,
        } => {
            let mut code = 0;
            let mut list = Vec::new();
            for n in &names {
                match volumes::inspect(&engine.db, &engine.root, n) {
                    Ok(v) => list.push(v),
                    Err(e) => {
                        eprintln!("Error: {e}");
                        code = 1;
                    }
                }
            }
            match format.as_deref() {
                None | Some("json") => writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?,
                Some(t) => crate::format::template_rows(&mut out, t, &list)?,
            }
            return Ok(code);
        }
        VolumeCmd::Rm {
            force,
            volumes: names,
        } => {
            let mut code = 0;
            for n in &names {
                let users = engine.volume_users(n)?;
                match volumes::remove(&mut engine.db, &engine.root, n, &users) {
                    Ok(()) => writeln!(out, "{n}")?,
                    Err(berth_engine::Error::NoSuchVolume(_)) if force => {}
                    Err(e) => {
                        eprintln!("Error response from daemon: {e}");
                        code = 1;
                    }
                }
            }
            return Ok(code);
        }
        VolumeCmd::Prune { all, force, filter } => {
            let filter = crate::prune_filter::PruneFilter::parse(&filter, false)?;
            if !force {
                eprint!("WARNING! This will remove anonymous local volumes not used by at least one container.\nAre you sure you want to continue? [y/N] ");
                let mut answer = String::new();
                std::io::stdin().lock().read_line(&mut answer)?;
                if !matches!(answer.trim(), "y" | "Y" | "yes") {
                    return Ok(0);
                }
            }
            let removed = prune_unused(&mut engine, all, &filter)?;
            let reclaimed: u64 = removed.iter().map(|(_, size)| size).sum();
            if !removed.is_empty() {
                writeln!(out, "Deleted Volumes:")?;
                for (n, _) in &removed {
                    writeln!(out, "{n}")?;
                }
                writeln!(out)?;
            }
            writeln!(
                out,
                "Total reclaimed space: {}",
                crate::format::human_size(reclaimed)
            )?;
        }
    }
    Ok(0)
}
