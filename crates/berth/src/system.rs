//! `berth version`, `berth info` (`system info`), `system df`, `system prune` and
//! `system check`: the whole-store views and clean-up Docker scripts use.

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::path::Path;

use berth_engine::{Engine, Status};
use berth_image::Digest;
use berth_registry::client::store::LocalStore;
use clap::Subcommand;
use serde_json::{json, Value};

type CmdResult = Result<i32, Box<dyn std::error::Error>>;

/// The API version berth's output follows (Docker Engine API 1.41, Docker 20.10).
const API_VERSION: &str = "1.41";

/// `system` subcommands.
#[derive(Subcommand, Debug)]
// Each subcommand's arguments are built only when it is the one invoked: building
// the whole tree cost every command ~1 ms of start-up (page faults, allocations).
#[command(defer = true)]
pub enum SystemCmd {
    /// Verify the image store: blob digests, unpacked layers, database references.
    Check,
    /// Show disk usage of images, containers, volumes and the build cache.
    Df {
        /// Show detailed information on space usage.
        #[arg(short, long)]
        verbose: bool,
        /// Format output: table, json or a Go-style template.
        #[arg(long)]
        format: Option<String>,
    },
    /// Remove stopped containers, unused networks, dangling images and the build cache.
    Prune {
        /// Remove all unused images, not just dangling ones.
        #[arg(short, long)]
        all: bool,
        /// Prune anonymous volumes too.
        #[arg(long)]
        volumes: bool,
        /// Do not prompt for confirmation.
        #[arg(short, long)]
        force: bool,
        /// Provide filter values (`until=24h`, `label=KEY[=VALUE]`, `label!=KEY`).
        #[arg(long)]
        filter: Vec<String>,
    },
    /// Display system-wide information.
    Info {
        /// Format output: text, json or a Go-style template.
        #[arg(short, long)]
        format: Option<String>,
    },
    /// Get real time events from containers, images, networks and volumes.
    Events(EventsArgs),
}

/// `events` flags (Docker's).
#[derive(clap::Args, Debug, Default)]
pub struct EventsArgs {
    /// Show all events created since timestamp (RFC 3339, Unix seconds, or a duration ago).
    #[arg(long)]
    since: Option<String>,
    /// Stream events until this timestamp (without it, events are followed).
    #[arg(long)]
    until: Option<String>,
    /// Filter output based on conditions provided (type=, event=, container=, image=,
    /// label=, network=, volume=).
    #[arg(short, long)]
    filter: Vec<String>,
    /// Format output: json or a Go-style template.
    #[arg(long)]
    format: Option<String>,
}

/// Runs a `system` command; returns the exit status.
pub fn main(root: &Path, cmd: SystemCmd) -> i32 {
    let result = match cmd {
        SystemCmd::Check => return crate::images::check(root),
        SystemCmd::Df { verbose, format } => df(root, verbose, format.as_deref()),
        SystemCmd::Prune {
            all,
            volumes,
            force,
            filter,
        } => prune(root, all, volumes, force, &filter),
        SystemCmd::Info { format } => info(root, format.as_deref()),
        SystemCmd::Events(a) => events(root, &a),
    };
    result.unwrap_or_else(|e| {
        eprintln!("Error: {e}");
        125
    })
}

/// Bytes in the regular files under `dir`; 0 when it cannot be read (or does not exist).
pub fn dir_size(dir: &Path) -> u64 {
    berth_image::layer::content_size(dir).unwrap_or(0)
}

/// `berth version`: this binary is client and engine at once.
pub fn version(format: Option<&str>) -> i32 {
    let os = std::env::consts::OS;
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let v = env!("CARGO_PKG_VERSION");
    let value = json!({
        "Client": {
            "Platform": {"Name": "berth"},
            "Version": v,
            "ApiVersion": API_VERSION,
            "Os": os,
            "Arch": arch,
        },
        "Server": {
            "Platform": {"Name": "berth (daemonless)"},
            "Version": v,
            "ApiVersion": API_VERSION,
            "MinAPIVersion": API_VERSION,
            "Os": os,
            "Arch": arch,
            "KernelVersion": kernel(),
            "Components": [
                {"Name": "Engine", "Version": v},
                {"Name": "berth-runc", "Version": v},
            ],
        },
    });
    match format {
        Some("json") => println!("{value}"),
        Some(t) => match crate::format::render(t, &value) {
            Ok(line) => println!("{line}"),
            Err(e) => {
                eprintln!("{e}");
                return 1;
            }
        },
        None => println!(
            "Client:\n Version:           {v}\n API version:       {API_VERSION}\n \
             OS/Arch:           {os}/{arch}\n\nServer: berth (daemonless, the same binary)\n \
             Engine:\n  Version:          {v}\n  API version:      {API_VERSION}\n  \
             OS/Arch:          {os}/{arch}\n  Kernel Version:   {}\n berth-runc:\n  \
             Version:          {v}",
            kernel()
        ),
    }
    0
}

fn kernel() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `berth info`: Docker's fields for what berth has (`--format '{{.ServerVersion}}'`).
pub fn info(root: &Path, format: Option<&str>) -> CmdResult {
    let layout = berth_runtime::cgroups::Layout::get();
    let cgroup_version = if layout.is_pure_v2() { "2" } else { "1" };
    let mut engine = Engine::open(root)?;
    let containers = engine.list()?;
    let count = |s: &[Status]| {
        containers
            .iter()
            .filter(|c| s.contains(&c.state.status))
            .count()
    };
    let images = LocalStore::open(root)?.meta.images()?.len();
    let mem_total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024);
    let name = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let v = json!({
        "Containers": containers.len(),
        "ContainersRunning": count(&[Status::Running, Status::Restarting]),
        "ContainersPaused": count(&[Status::Paused]),
        "ContainersStopped": count(&[Status::Exited, Status::Created, Status::Dead]),
        "Images": images,
        "Driver": "overlay2",
        "LoggingDriver": "json-file",
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": cgroup_version,
        "KernelVersion": kernel(),
        "OperatingSystem": os_name(),
        "OSType": std::env::consts::OS,
        "Architecture": std::env::consts::ARCH,
        "NCPU": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "MemTotal": mem_total,
        "DockerRootDir": root,
        "Name": name,
        "ServerVersion": env!("CARGO_PKG_VERSION"),
        "DefaultRuntime": "berth-runc",
        "Runtimes": {"berth-runc": {"path": "berth-runc"}},
        "SecurityOptions": ["name=seccomp,profile=builtin", "name=cgroupns"],
    });
    match format {
        Some("json") => println!("{v}"),
        Some("text") | None => {
            println!(
                "Server:\n Containers: {}\n  Running: {}\n  Paused: {}\n  Stopped: {}\n \
                 Images: {}\n Server Version: {}\n Storage Driver: overlay2\n \
                 Logging Driver: json-file\n Cgroup Driver: cgroupfs\n Cgroup Version: {}\n \
                 Default Runtime: berth-runc\n Kernel Version: {}\n Operating System: {}\n \
                 Architecture: {}\n CPUs: {}\n Total Memory: {}\n Name: {}\n \
                 Docker Root Dir: {}",
                v["Containers"],
                v["ContainersRunning"],
                v["ContainersPaused"],
                v["ContainersStopped"],
                images,
                env!("CARGO_PKG_VERSION"),
                cgroup_version,
                kernel(),
                os_name(),
                std::env::consts::ARCH,
                v["NCPU"],
                crate::format::human_size(mem_total),
                v["Name"].as_str().unwrap_or(""),
                root.display()
            );
        }
        Some(t) => println!("{}", crate::format::render(t, &v)?),
    }
    Ok(0)
}

/// PRETTY_NAME of /etc/os-release.
fn os_name() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "Linux".into())
}

/// One row of `system df`: what there is, in use, its size and what pruning would free.
struct Usage {
    kind: &'static str,
    total: usize,
    active: usize,
    size: u64,
    reclaimable: u64,
}

fn df(root: &Path, verbose: bool, format: Option<&str>) -> CmdResult {
    let mut engine = Engine::open(root)?;
    let store = LocalStore::open(root)?;
    let in_use: HashSet<String> = engine.in_use_images()?.into_keys().collect();
    // Images: layers counted once however many images share them.
    let records = store.meta.images()?;
    let mut all_layers = std::collections::HashMap::new();
    let mut used_layers = HashSet::new();
    let mut active = 0;
    for rec in &records {
        let used = in_use.contains(&rec.config_digest.to_string());
        active += usize::from(used);
        for l in &rec.layers {
            all_layers.insert(l.chain_id.clone(), l.size);
            if used {
                used_layers.insert(l.chain_id.clone());
            }
        }
    }
    let image_size: u64 = all_layers.values().sum();
    let used_size: u64 = used_layers.iter().filter_map(|c| all_layers.get(c)).sum();
    let containers = engine.list()?;
    let sizes: Vec<(u64, bool)> = containers
        .iter()
        .map(|c| {
            let running = c.state.status.is_active();
            (crate::containers::writable_size(&engine, &c.id), running)
        })
        .collect();
    let volumes = berth_engine::volumes::list(&engine.db)?;
    let mut vol_rows = Vec::new();
    for n in &volumes {
        let size = dir_size(&berth_engine::volumes::data_dir(root, n));
        let users = engine.volume_users(n)?.len();
        vol_rows.push((n.clone(), size, users));
    }
    let cache = build_cache_usage(root, &store, &all_layers)?;
    let rows = [
        Usage {
            kind: "Images",
            total: records.len(),
            active,
            size: image_size,
            reclaimable: image_size - used_size,
        },
        Usage {
            kind: "Containers",
            total: containers.len(),
            active: sizes.iter().filter(|(_, r)| *r).count(),
            size: sizes.iter().map(|(s, _)| s).sum(),
            reclaimable: sizes.iter().filter(|(_, r)| !r).map(|(s, _)| s).sum(),
        },
        Usage {
            kind: "Local Volumes",
            total: vol_rows.len(),
            active: vol_rows.iter().filter(|(_, _, u)| *u > 0).count(),
            size: vol_rows.iter().map(|(_, s, _)| s).sum(),
            reclaimable: vol_rows
                .iter()
                .filter(|(_, _, u)| *u == 0)
                .map(|(_, s, _)| s)
                .sum(),
        },
        Usage {
            kind: "Build Cache",
            total: cache.0,
            active: 0,
            size: cache.1,
            reclaimable: cache.1,
        },
    ];
    let mut out = std::io::stdout().lock();
    let json_row = |u: &Usage| {
        let pct = (u.reclaimable * 100).checked_div(u.size).unwrap_or(0);
        json!({
            "Type": u.kind, "TotalCount": u.total, "Active": u.active,
            "Size": crate::format::human_size(u.size),
            "Reclaimable": if u.reclaimable > 0 { format!("{} ({pct}%)", crate::format::human_size(u.reclaimable)) } else { crate::format::human_size(0) },
        })
    };
    match format {
        Some("json") => {
            for u in &rows {
                writeln!(out, "{}", json_row(u))?;
            }
            return Ok(0);
        }
        Some(t) if t != "table" => {
            let json: Vec<Value> = rows.iter().map(json_row).collect();
            crate::format::template_rows(&mut out, t, &json)?;
            return Ok(0);
        }
        _ => {}
    }
    if verbose {
        writeln!(out, "Images space usage:\n")?;
        let mut t = vec![vec!["IMAGE ID".into(), "SIZE".into(), "CONTAINERS".into()]];
        for rec in &records {
            let users = usize::from(in_use.contains(&rec.config_digest.to_string()));
            let size: u64 = rec.layers.iter().map(|l| l.size).sum();
            t.push(vec![
                berth_registry::client::store::short_id(&rec.config_digest),
                crate::format::human_size(size),
                users.to_string(),
            ]);
        }
        crate::format::table(&mut out, &t)?;
        writeln!(out, "\nContainers space usage:\n")?;
        let mut t = vec![vec![
            "CONTAINER ID".into(),
            "IMAGE".into(),
            "SIZE".into(),
            "STATUS".into(),
            "NAMES".into(),
        ]];
        for (c, (size, _)) in containers.iter().zip(&sizes) {
            t.push(vec![
                c.id[..12].to_string(),
                c.image.clone(),
                crate::format::human_size(*size),
                format!("{:?}", c.state.status).to_lowercase(),
                c.name.clone(),
            ]);
        }
        crate::format::table(&mut out, &t)?;
        writeln!(out, "\nLocal Volumes space usage:\n")?;
        let mut t = vec![vec!["VOLUME NAME".into(), "LINKS".into(), "SIZE".into()]];
        for (n, size, users) in &vol_rows {
            t.push(vec![
                n.clone(),
                users.to_string(),
                crate::format::human_size(*size),
            ]);
        }
        crate::format::table(&mut out, &t)?;
        writeln!(
            out,
            "\nBuild cache usage: {}",
            crate::format::human_size(cache.1)
        )?;
        return Ok(0);
    }
    let mut t = vec![vec![
        "TYPE".into(),
        "TOTAL".into(),
        "ACTIVE".into(),
        "SIZE".into(),
        "RECLAIMABLE".into(),
    ]];
    for u in &rows {
        let r = json_row(u);
        t.push(vec![
            u.kind.to_string(),
            u.total.to_string(),
            u.active.to_string(),
            crate::format::human_size(u.size),
            r["Reclaimable"].as_str().unwrap_or("").to_string(),
        ]);
    }
    crate::format::table(&mut out, &t)?;
    Ok(0)
}

/// The build cache: its records, and the bytes of the layers only it keeps (no image
/// uses them) plus the cache mounts.
fn build_cache_usage(
    root: &Path,
    store: &LocalStore,
    image_layers: &std::collections::HashMap<Digest, u64>,
) -> Result<(usize, u64), Box<dyn std::error::Error>> {
    let records = berth_build::cache::Cache::open(&root.join("berth.db"))?.count()?;
    let mut size = dir_size(&root.join("build/cache-mounts"));
    if let Ok(entries) = std::fs::read_dir(root.join("layers")) {
        for e in entries.flatten() {
            let name = e.file_name();
            let Ok(chain) = format!("sha256:{}", name.to_string_lossy()).parse::<Digest>() else {
                continue;
            };
            if !image_layers.contains_key(&chain) {
                size += dir_size(&store.layers.path(&chain));
            }
        }
    }
    Ok((records, size))
}

fn prune(root: &Path, all: bool, volumes: bool, force: bool, filter: &[String]) -> CmdResult {
    let filter = crate::prune_filter::PruneFilter::parse(filter, true)?;
    if volumes && filter.has_until() {
        return Err("The \"until\" filter is not supported with \"--volumes\"".into());
    }
    if !force {
        let images = if all {
            "all images without at least one container associated to them"
        } else {
            "all dangling images"
        };
        let vols = if volumes {
            "\n  - all anonymous volumes not used by at least one container"
        } else {
            ""
        };
        eprint!(
            "WARNING! This will remove:\n  - all stopped containers\n  - all networks not used \
             by at least one container{vols}\n  - {images}\n  - all build cache\n\n\
             Are you sure you want to continue? [y/N] "
        );
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Ok(0);
        }
    }
    let mut out = std::io::stdout().lock();
    let mut reclaimed = 0;
    let mut engine = Engine::open(root)?;
    let section = |out: &mut dyn Write, title: &str, items: &[String]| -> std::io::Result<()> {
        if !items.is_empty() {
            writeln!(out, "{title}:")?;
            for i in items {
                writeln!(out, "{i}")?;
            }
            writeln!(out)?;
        }
        Ok(())
    };
    let removed = crate::containers::prune_stopped(&mut engine, &filter)?;
    reclaimed += removed.iter().map(|(_, s)| s).sum::<u64>();
    let ids: Vec<String> = removed.into_iter().map(|(id, _)| id).collect();
    section(&mut out, "Deleted Containers", &ids)?;
    let nets = berth_net::Net::open(root)?
        .prune_where(|n| crate::networks::network_prunable(n, &filter))?;
    section(&mut out, "Deleted Networks", &nets)?;
    if volumes {
        let removed = crate::volumes::prune_unused(&mut engine, false, &filter)?;
        reclaimed += removed.iter().map(|(_, s)| s).sum::<u64>();
        let names: Vec<String> = removed.into_iter().map(|(n, _)| n).collect();
        section(&mut out, "Deleted Volumes", &names)?;
    }
    let in_use: HashSet<Digest> = engine
        .in_use_images()?
        .into_keys()
        .filter_map(|d| d.parse().ok())
        .collect();
    drop(engine);
    let mut store = LocalStore::open(root)?;
    let eligible = crate::images::prunable_images(&store, &filter)?;
    let report = store.prune_where(all, &in_use, |r| eligible.contains(&r.manifest_digest))?;
    crate::images::removal_events(root, &report.removed);
    reclaimed += report.reclaimed;
    let images: Vec<String> = report
        .removed
        .iter()
        .map(|r| match r {
            berth_registry::client::store::Removal::Untagged(t) => format!("untagged: {t}"),
            berth_registry::client::store::Removal::Deleted(d) => format!("deleted: {d}"),
        })
        .collect();
    section(&mut out, "Deleted Images", &images)?;
    let stats = berth_build::prune::prune(&store)?;
    reclaimed += stats.bytes;
    if stats.cache_records > 0 {
        writeln!(
            out,
            "Deleted build cache objects: {} records, {} layers\n",
            stats.cache_records, stats.layers
        )?;
    }
    writeln!(
        out,
        "Total reclaimed space: {}",
        crate::format::human_size(reclaimed)
    )?;
    Ok(0)
}

impl EventsArgs {
    /// Following the events whose attributes carry all `labels` (`compose events`).
    pub fn following(labels: &[String], json: bool) -> EventsArgs {
        EventsArgs {
            filter: labels.iter().map(|l| format!("label={l}")).collect(),
            format: json.then(|| "json".to_string()),
            ..Default::default()
        }
    }
}

/// `events`: the kept events since `--since`, then (without `--until`) the new ones as
/// they are recorded, until interrupted.
pub fn events(root: &Path, a: &EventsArgs) -> CmdResult {
    use berth_engine::events;
    let since = a
        .since
        .as_deref()
        .map(crate::containers::parse_since)
        .transpose()?;
    let until = a
        .until
        .as_deref()
        .map(crate::containers::parse_since)
        .transpose()?;
    let nanos = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64)
    };
    let (since, until) = (since.map(nanos), until.map(nanos));
    let filters = EventFilters::parse(&a.filter)?;
    let (past, mut offset) = events::read_all(root);
    let mut out = std::io::stdout().lock();
    let show = |e: &events::Event, out: &mut dyn Write| -> std::io::Result<()> {
        if filters.keep(e) {
            let line = render_event(e, a.format.as_deref())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            writeln!(out, "{line}")?;
        }
        Ok(())
    };
    // Without --since (or --until) only new events are shown, as Docker does.
    if since.is_some() || until.is_some() {
        for e in &past {
            if since.is_some_and(|s| e.time_nano < s) || until.is_some_and(|u| e.time_nano > u) {
                continue;
            }
            show(e, &mut out)?;
        }
    }
    if let Some(u) = until {
        if u <= nanos(std::time::SystemTime::now()) {
            return Ok(0);
        }
    }
    out.flush()?;
    loop {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let (new, next) = events::read_from(root, offset);
        offset = next;
        for e in &new {
            if until.is_some_and(|u| e.time_nano > u) {
                return Ok(0);
            }
            show(e, &mut out)?;
        }
        out.flush()?;
        if until.is_some_and(|u| nanos(std::time::SystemTime::now()) > u) {
            return Ok(0);
        }
    }
}

/// Docker's text line (`TIME TYPE ACTION ID (k=v, …)`), its JSON, or a template.
fn render_event(e: &berth_engine::events::Event, format: Option<&str>) -> Result<String, String> {
    let v = serde_json::to_value(e).unwrap_or(Value::Null);
    Ok(match format {
        Some("json") | Some("{{json .}}") => v.to_string(),
        Some(t) => crate::format::render(t, &v)?,
        None => {
            let secs = e.time_nano.div_euclid(1_000_000_000);
            let ns = e.time_nano.rem_euclid(1_000_000_000);
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64);
            let stamp = humantime::format_rfc3339_seconds(t).to_string();
            let stamp = format!("{}.{ns:09}Z", stamp.trim_end_matches('Z'));
            let attrs: Vec<String> = e
                .actor
                .attributes
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            format!(
                "{stamp} {} {} {} ({})",
                e.kind,
                e.action,
                e.actor.id,
                attrs.join(", ")
            )
        }
    })
}

/// `--filter` for events: values of one key are alternatives, keys must all match.
struct EventFilters(std::collections::BTreeMap<String, Vec<String>>);

impl EventFilters {
    fn parse(list: &[String]) -> Result<EventFilters, String> {
        let mut m: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for f in list {
            let (k, v) = crate::format::filter_kv(f)?;
            if !matches!(
                k,
                "type" | "event" | "container" | "image" | "label" | "network" | "volume"
            ) {
                return Err(format!("invalid filter '{k}'"));
            }
            m.entry(k.to_string()).or_default().push(v.to_string());
        }
        Ok(EventFilters(m))
    }

    fn keep(&self, e: &berth_engine::events::Event) -> bool {
        let attr = |k: &str| e.actor.attributes.get(k).map(String::as_str);
        // A container filter matches its id (or a prefix) or its name.
        let names =
            |v: &String| e.actor.id.starts_with(v.as_str()) || attr("name") == Some(v.as_str());
        self.0.iter().all(|(k, values)| match k.as_str() {
            "type" => values.contains(&e.kind),
            "event" => values
                .iter()
                .any(|v| *v == e.action || e.action.starts_with(&format!("{v}:"))),
            "container" => {
                (e.kind == "container" && values.iter().any(names))
                    || values
                        .iter()
                        .any(|v| attr("container").is_some_and(|c| c.starts_with(v.as_str())))
            }
            "image" => values.iter().any(|v| {
                attr("image") == Some(v.as_str())
                    || (e.kind == "image" && (names(v) || attr("name") == Some(v.as_str())))
            }),
            "network" => e.kind == "network" && values.iter().any(names),
            "volume" => e.kind == "volume" && values.contains(&e.actor.id),
            "label" => values.iter().all(|v| {
                crate::format::label_matches(v, |k| e.actor.attributes.get(k).map(String::as_str))
            }),
            _ => false,
        })
    }
}
