//! `cp`, `diff`, `export` and `stats`: commands that read a container's files or cgroup.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_engine::{Engine, Status};

type CmdResult = Result<i32, Box<dyn std::error::Error>>;

/// `CONTAINER:PATH` (a colon before any slash) or a host path.
fn split_spec(s: &str) -> Option<(&str, &str)> {
    if s.starts_with('/') || s.starts_with('.') {
        return None;
    }
    s.split_once(':')
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), String> {
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .map_err(|e| format!("run cp: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!(
            "copying {} to {} failed",
            from.display(),
            to.display()
        ))
    }
}

/// `docker cp`: either side may be `CONTAINER:PATH`; `-` streams a tar archive.
pub fn cp(root: &Path, src: &str, dst: &str) -> CmdResult {
    let mut engine = Engine::open(root)?;
    match (split_spec(src), split_spec(dst)) {
        (Some((c, path)), None) => {
            let (_, view) = engine.rootfs_view(c)?;
            let host = view.host_path(path);
            if host.symlink_metadata().is_err() {
                return Err(format!("Could not find the file {path} in container {c}").into());
            }
            let name = host
                .file_name()
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("."));
            if dst == "-" {
                let mut ar = tar::Builder::new(std::io::stdout().lock());
                ar.follow_symlinks(false);
                if host.is_dir() {
                    ar.append_dir_all(&name, &host)?;
                } else {
                    ar.append_path_with_name(&host, &name)?;
                }
                ar.finish()?;
            } else {
                copy_tree(&host, Path::new(dst))?;
            }
            Ok(0)
        }
        (None, Some((c, path))) => {
            let (_, view) = engine.rootfs_view(c)?;
            let host = view.host_path(path);
            if src == "-" {
                if !host.is_dir() {
                    return Err(format!("destination \"{c}:{path}\" must be a directory").into());
                }
                let mut ar = tar::Archive::new(std::io::stdin().lock());
                ar.set_preserve_permissions(true);
                ar.set_overwrite(true);
                ar.unpack(&host)?;
            } else {
                if !Path::new(src).exists() {
                    return Err(format!("lstat {src}: no such file or directory").into());
                }
                copy_tree(Path::new(src), &host)?;
            }
            Ok(0)
        }
        _ => Err("copying between containers or between host paths is not supported; one side must be CONTAINER:PATH".into()),
    }
}

pub fn diff(root: &Path, name: &str) -> CmdResult {
    let mut engine = Engine::open(root)?;
    let mut out = std::io::stdout().lock();
    for c in engine.diff(name)? {
        writeln!(out, "{}", c.line())?;
    }
    Ok(0)
}

/// `docker export`: the container's filesystem as a tar archive.
pub fn export(root: &Path, name: &str, output: Option<&Path>) -> CmdResult {
    let mut engine = Engine::open(root)?;
    let (_, view) = engine.rootfs_view(name)?;
    let sink: Box<dyn Write> = match output {
        Some(p) => Box::new(std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()))?),
        None => {
            if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                return Err(
                    "cowardly refusing to save to a terminal. Use the -o flag or redirect".into(),
                );
            }
            Box::new(std::io::stdout().lock())
        }
    };
    let mut ar = tar::Builder::new(sink);
    ar.follow_symlinks(false);
    ar.append_dir_all(".", &view.rootfs)?;
    ar.finish()?;
    Ok(0)
}

fn read_num(dir: &Path, file: &str) -> Option<u64> {
    std::fs::read_to_string(dir.join(file))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

struct Sample {
    cpu_ns: u64,
    mem: u64,
    limit: u64,
    pids: u64,
}

fn sample(engine: &Engine, id: &str) -> Option<Sample> {
    let cg = engine.runtime().record(id).ok()?.cgroup;
    let v1 = |ctrl: &str| -> Option<PathBuf> {
        cg.dirs
            .iter()
            .find(|(k, _)| k.split(',').any(|c| c == ctrl))
            .map(|(_, p)| p.clone())
    };
    let v2 = cg.dirs.get("").cloned();
    let cpu_ns = v1("cpuacct")
        .and_then(|d| read_num(&d, "cpuacct.usage"))
        .or_else(|| {
            let s = std::fs::read_to_string(v2.as_ref()?.join("cpu.stat")).ok()?;
            let us: u64 = s
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec "))?
                .trim()
                .parse()
                .ok()?;
            Some(us * 1000)
        })
        .unwrap_or(0);
    let (mem, limit) = match v1("memory") {
        Some(d) => (
            read_num(&d, "memory.usage_in_bytes").unwrap_or(0),
            read_num(&d, "memory.limit_in_bytes").unwrap_or(u64::MAX),
        ),
        None => {
            let d = v2.clone().unwrap_or_default();
            (
                read_num(&d, "memory.current").unwrap_or(0),
                read_num(&d, "memory.max").unwrap_or(u64::MAX),
            )
        }
    };
    let pids = v1("pids")
        .or(v2)
        .and_then(|d| read_num(&d, "pids.current"))
        .unwrap_or(0);
    Some(Sample {
        cpu_ns,
        mem,
        limit,
        pids,
    })
}

fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(u64::MAX)
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.2}{}", UNITS[u]).replace(".00B", "B")
}

/// `docker stats --no-stream`: one sample of CPU, memory and pids per running container.
pub fn stats(root: &Path, names: &[String], format: Option<&str>) -> CmdResult {
    let mut engine = Engine::open(root)?;
    let list: Vec<berth_engine::Container> = if names.is_empty() {
        engine
            .list()?
            .into_iter()
            .filter(|c| c.state.status == Status::Running)
            .collect()
    } else {
        names
            .iter()
            .map(|n| engine.find(n))
            .collect::<Result<_, _>>()?
    };
    let first: Vec<Option<Sample>> = list.iter().map(|c| sample(&engine, &c.id)).collect();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_millis(200));
    let wall = t0.elapsed().as_nanos() as f64;
    let host_mem = host_memory();
    let mut rows = Vec::new();
    for (c, a) in list.iter().zip(first) {
        let b = sample(&engine, &c.id);
        let (cpu, mem, limit, pids) = match (a, b) {
            (Some(a), Some(b)) => (
                (b.cpu_ns.saturating_sub(a.cpu_ns)) as f64 / wall * 100.0,
                b.mem,
                b.limit.min(host_mem),
                b.pids,
            ),
            _ => (0.0, 0, 0, 0),
        };
        let mem_pct = if limit > 0 {
            mem as f64 / limit as f64 * 100.0
        } else {
            0.0
        };
        rows.push(serde_json::json!({
            "Container": c.short_id(), "ID": c.short_id(), "Name": c.name,
            "CPUPerc": format!("{cpu:.2}%"),
            "MemUsage": format!("{} / {}", bytes(mem), bytes(limit)),
            "MemPerc": format!("{mem_pct:.2}%"),
            "NetIO": "0B / 0B", "BlockIO": "0B / 0B", "PIDs": pids.to_string(),
        }));
    }
    let mut out = std::io::stdout().lock();
    match format {
        Some("json") => {
            for r in &rows {
                writeln!(out, "{r}")?;
            }
        }
        Some(t) => crate::format::template_rows(&mut out, t, &rows)?,
        None => {
            let keys = [
                "Container",
                "Name",
                "CPUPerc",
                "MemUsage",
                "MemPerc",
                "NetIO",
                "BlockIO",
                "PIDs",
            ];
            let mut table = vec![[
                "CONTAINER ID",
                "NAME",
                "CPU %",
                "MEM USAGE / LIMIT",
                "MEM %",
                "NET I/O",
                "BLOCK I/O",
                "PIDS",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()];
            for r in &rows {
                table.push(
                    keys.iter()
                        .map(|k| r[k].as_str().unwrap_or("").to_string())
                        .collect(),
                );
            }
            crate::format::table(&mut out, &table)?;
        }
    }
    Ok(0)
}
