//! `berth-runc`: runc's command line over berth-runtime, so containerd (and anything else
//! that drives runc) can use berth unchanged.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use berth_runtime::{CreateOptions, ExecOptions, Runtime};
use clap::{Parser, Subcommand};
use nix::sys::signal::Signal;
use oci_spec::runtime::{LinuxResources, Process, Spec};

use crate::log::Log;

#[derive(Parser, Debug)]
#[command(
    name = "berth-runc",
    version,
    about = "OCI runtime with runc's command line"
)]
pub struct Cli {
    /// Directory for container state (runc's --root).
    #[arg(
        long,
        global = true,
        env = "BERTH_RUNC_ROOT",
        default_value = "/run/berth-runc"
    )]
    root: PathBuf,
    /// Also write errors to this file.
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// Format of --log: text or json.
    #[arg(long = "log-format", global = true, default_value = "text")]
    log_format: String,
    #[arg(long, global = true)]
    debug: bool,
    /// Use systemd to manage cgroups (not supported: berth writes cgroupfs directly).
    #[arg(long = "systemd-cgroup", global = true)]
    systemd_cgroup: bool,
    /// Accepted for compatibility (true|false|auto).
    #[arg(long)]
    rootless: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Debug)]
struct CreateArgs {
    id: String,
    #[arg(short, long, default_value = ".")]
    bundle: PathBuf,
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    #[arg(long = "no-pivot")]
    no_pivot: bool,
    #[arg(long = "no-new-keyring")]
    no_new_keyring: bool,
    #[arg(long = "preserve-fds", default_value_t = 0)]
    preserve_fds: i32,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create a container; its process waits for `start`.
    Create(CreateArgs),
    /// Start the process of a created container.
    Start { id: String },
    /// Create and start a container, waiting for it unless --detach.
    Run {
        #[command(flatten)]
        create: CreateArgs,
        #[arg(short, long)]
        detach: bool,
        /// Keep the container's state after it exits.
        #[arg(long)]
        keep: bool,
    },
    /// Print a container's state as JSON.
    State { id: String },
    /// List containers.
    #[command(alias = "ls")]
    List {
        #[arg(short, long, default_value = "table")]
        format: String,
        #[arg(short, long)]
        quiet: bool,
    },
    /// Send a signal to the container's init (or, with --all, every process).
    Kill {
        id: String,
        #[arg(default_value = "SIGTERM")]
        signal: String,
        #[arg(short, long)]
        all: bool,
    },
    /// Delete a stopped (or, with --force, any) container.
    #[command(alias = "rm")]
    Delete {
        id: String,
        #[arg(short, long)]
        force: bool,
    },
    /// Run a new process in a running container.
    Exec {
        id: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
        #[arg(short, long)]
        process: Option<PathBuf>,
        #[arg(short, long)]
        detach: bool,
        #[arg(long = "pid-file")]
        pid_file: Option<PathBuf>,
        #[arg(long = "console-socket")]
        console_socket: Option<PathBuf>,
        #[arg(short, long)]
        tty: bool,
        #[arg(short, long)]
        env: Vec<String>,
        #[arg(long)]
        cwd: Option<PathBuf>,
        /// uid[:gid]
        #[arg(short, long)]
        user: Option<String>,
        #[arg(short = 'g', long = "additional-gids")]
        additional_gids: Vec<u32>,
        #[arg(short, long)]
        cap: Vec<String>,
        #[arg(long = "no-new-privs")]
        no_new_privs: bool,
        #[arg(long = "preserve-fds", default_value_t = 0)]
        preserve_fds: i32,
        #[arg(long = "apparmor")]
        apparmor: Option<String>,
        #[arg(long = "process-label")]
        process_label: Option<String>,
    },
    /// List the processes in a container.
    Ps {
        id: String,
        #[arg(short, long, default_value = "table")]
        format: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// Freeze every process of a container.
    Pause { id: String },
    /// Thaw a paused container.
    Resume { id: String },
    /// Change a running container's resource limits.
    Update {
        id: String,
        /// JSON file of linux.resources, or - for stdin.
        #[arg(short, long)]
        resources: Option<PathBuf>,
        #[arg(long)]
        memory: Option<i64>,
        #[arg(long = "memory-reservation")]
        memory_reservation: Option<i64>,
        #[arg(long = "memory-swap")]
        memory_swap: Option<i64>,
        #[arg(long = "cpu-shares")]
        cpu_shares: Option<u64>,
        #[arg(long = "cpu-quota")]
        cpu_quota: Option<i64>,
        #[arg(long = "cpu-period")]
        cpu_period: Option<u64>,
        #[arg(long = "cpuset-cpus")]
        cpuset_cpus: Option<String>,
        #[arg(long = "cpuset-mems")]
        cpuset_mems: Option<String>,
        #[arg(long = "pids-limit")]
        pids_limit: Option<i64>,
        #[arg(long = "blkio-weight")]
        blkio_weight: Option<u16>,
    },
    /// Print the features this runtime supports (runtime-spec features.md).
    Features,
    /// Write a starter config.json.
    Spec {
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
        #[arg(long)]
        rootless: bool,
    },
}

pub fn main(args: impl IntoIterator<Item = OsString>) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 1 } else { 0 };
        }
    };
    let log = Log {
        file: cli.log.clone(),
        json: cli.log_format == "json",
    };
    log.init(cli.debug);
    match dispatch(&cli) {
        Ok(code) => code,
        Err(e) => {
            log.error("berth-runc", &format!("{e:#}"));
            1
        }
    }
}

fn dispatch(cli: &Cli) -> Result<i32> {
    if cli.systemd_cgroup {
        bail!("--systemd-cgroup is not supported: berth manages cgroups through cgroupfs; drop the flag (containerd: SystemdCgroup = false)");
    }
    let rt = Runtime::new(&cli.root);
    match &cli.cmd {
        Cmd::Create(a) => {
            rt.create(&a.id, &a.bundle, &create_options(a))?;
        }
        Cmd::Start { id } => rt.start(id)?,
        Cmd::Run {
            create,
            detach,
            keep,
        } => {
            let opts = create_options(create);
            return Ok(rt.run(&create.id, &create.bundle, &opts, *detach, *keep)?);
        }
        Cmd::State { id } => println!("{}", serde_json::to_string_pretty(&rt.state(id)?)?),
        Cmd::List { format, quiet } => list(&rt, format, *quiet)?,
        Cmd::Kill { id, signal, all } => rt.kill(id, parse_signal(signal)?, *all)?,
        Cmd::Delete { id, force } => rt.delete(id, *force)?,
        Cmd::Exec { .. } => return exec(&rt, &cli.cmd),
        Cmd::Ps {
            id,
            format,
            ps_args,
        } => ps(&rt, id, format, ps_args)?,
        Cmd::Pause { id } => rt.pause(id)?,
        Cmd::Resume { id } => rt.resume(id)?,
        Cmd::Update { .. } => update(&rt, &cli.cmd)?,
        Cmd::Features => println!(
            "{}",
            serde_json::to_string_pretty(&berth_runtime::features::features())?
        ),
        Cmd::Spec { bundle, rootless } => write_spec(bundle, *rootless)?,
    }
    Ok(0)
}

fn create_options(a: &CreateArgs) -> CreateOptions {
    CreateOptions {
        console_socket: a.console_socket.clone(),
        pid_file: a.pid_file.clone(),
        no_pivot: a.no_pivot,
        no_new_keyring: a.no_new_keyring,
        preserve_fds: a.preserve_fds,
        spec: None,
    }
}

/// Accepts "TERM", "SIGTERM", "sigterm" and "15", as runc does.
pub fn parse_signal(s: &str) -> Result<Signal> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| anyhow!("unknown signal {s:?}"));
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>()
        .map_err(|_| anyhow!("unknown signal {s:?}"))
}

fn list(rt: &Runtime, format: &str, quiet: bool) -> Result<()> {
    let all = rt.list()?;
    if quiet {
        for s in &all {
            println!("{}", s.id);
        }
        return Ok(());
    }
    match format {
        "json" => println!("{}", serde_json::to_string(&all)?),
        "table" => {
            println!(
                "{:<20} {:<8} {:<10} {:<40} {:<32} OWNER",
                "ID", "PID", "STATUS", "BUNDLE", "CREATED"
            );
            for s in &all {
                let pid = if s.status == berth_runtime::Status::Stopped {
                    0
                } else {
                    s.pid
                };
                println!(
                    "{:<20} {:<8} {:<10} {:<40} {:<32} {}",
                    s.id,
                    pid,
                    s.status,
                    s.bundle.display(),
                    s.created,
                    s.owner
                );
            }
        }
        other => bail!("invalid format {other:?}: use table or json"),
    }
    Ok(())
}

fn ps(rt: &Runtime, id: &str, format: &str, ps_args: &[String]) -> Result<()> {
    let pids = rt.pids(id)?;
    if format == "json" {
        println!("{}", serde_json::to_string(&pids)?);
        return Ok(());
    }
    let args: Vec<String> = if ps_args.is_empty() {
        vec!["-ef".into()]
    } else {
        ps_args.to_vec()
    };
    let out = std::process::Command::new("ps")
        .args(&args)
        .output()
        .context("running ps")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let col = header
        .split_whitespace()
        .position(|h| h == "PID")
        .ok_or_else(|| anyhow!("ps output has no PID column"))?;
    println!("{header}");
    for line in lines {
        let pid = line
            .split_whitespace()
            .nth(col)
            .and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            println!("{line}");
        }
    }
    Ok(())
}

fn exec(rt: &Runtime, cmd: &Cmd) -> Result<i32> {
    let Cmd::Exec {
        id,
        command,
        process,
        detach,
        pid_file,
        console_socket,
        tty,
        env,
        cwd,
        user,
        additional_gids,
        cap,
        no_new_privs,
        preserve_fds,
        ..
    } = cmd
    else {
        unreachable!("exec called for another command")
    };
    let proc_spec: Process = match process {
        Some(path) => {
            let text = std::fs::read(path).with_context(|| format!("{}", path.display()))?;
            serde_json::from_slice(&text)
                .with_context(|| format!("{}: invalid process JSON", path.display()))?
        }
        None => {
            if command.is_empty() {
                bail!("exec needs a command or --process");
            }
            let rec = rt.record(id)?;
            let mut p = rec.config.process().clone().unwrap_or_default();
            p.set_args(Some(command.clone()));
            let mut envs = p.env().clone().unwrap_or_default();
            envs.extend(env.iter().cloned());
            p.set_env(Some(envs));
            p.set_terminal(Some(*tty));
            if let Some(c) = cwd {
                p.set_cwd(c.clone());
            }
            if let Some(u) = user {
                let (uid, gid) = u.split_once(':').unwrap_or((u, "0"));
                let mut usr = p.user().clone();
                usr.set_uid(
                    uid.parse()
                        .with_context(|| format!("--user {u}: uid must be numeric"))?,
                );
                usr.set_gid(
                    gid.parse()
                        .with_context(|| format!("--user {u}: gid must be numeric"))?,
                );
                if !additional_gids.is_empty() {
                    usr.set_additional_gids(Some(additional_gids.clone()));
                }
                p.set_user(usr);
            }
            if *no_new_privs {
                p.set_no_new_privileges(Some(true));
            }
            if !cap.is_empty() {
                add_caps(&mut p, cap)?;
            }
            p
        }
    };
    let opts = ExecOptions {
        detach: *detach,
        pid_file: pid_file.clone(),
        console_socket: console_socket.clone(),
        preserve_fds: *preserve_fds,
    };
    Ok(rt.exec(id, &proc_spec, &opts)?)
}

fn add_caps(p: &mut Process, caps: &[String]) -> Result<()> {
    let mut c = p.capabilities().clone().unwrap_or_default();
    let parsed: Vec<oci_spec::runtime::Capability> = caps
        .iter()
        .map(|s| {
            serde_json::from_value(serde_json::Value::String(s.clone()))
                .map_err(|_| anyhow!("unknown capability {s}"))
        })
        .collect::<Result<_>>()?;
    let add = |set: &Option<oci_spec::runtime::Capabilities>| {
        let mut s = set.clone().unwrap_or_default();
        s.extend(parsed.iter().cloned());
        Some(s)
    };
    c.set_bounding(add(c.bounding()));
    c.set_effective(add(c.effective()));
    c.set_permitted(add(c.permitted()));
    c.set_inheritable(add(c.inheritable()));
    p.set_capabilities(Some(c));
    Ok(())
}

fn update(rt: &Runtime, cmd: &Cmd) -> Result<()> {
    let Cmd::Update {
        id,
        resources,
        memory,
        memory_reservation,
        memory_swap,
        cpu_shares,
        cpu_quota,
        cpu_period,
        cpuset_cpus,
        cpuset_mems,
        pids_limit,
        blkio_weight,
    } = cmd
    else {
        unreachable!("update called for another command")
    };
    let mut res: LinuxResources = match resources {
        Some(p) if p == Path::new("-") => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            serde_json::from_str(&s).context("--resources: invalid JSON")?
        }
        Some(p) => {
            serde_json::from_slice(&std::fs::read(p).with_context(|| format!("{}", p.display()))?)
                .with_context(|| format!("{}: invalid JSON", p.display()))?
        }
        None => LinuxResources::default(),
    };
    if memory.is_some() || memory_reservation.is_some() || memory_swap.is_some() {
        let mut m = (*res.memory()).unwrap_or_default();
        if let Some(v) = memory {
            m.set_limit(Some(*v));
        }
        if let Some(v) = memory_reservation {
            m.set_reservation(Some(*v));
        }
        if let Some(v) = memory_swap {
            m.set_swap(Some(*v));
        }
        res.set_memory(Some(m));
    }
    if cpu_shares.is_some()
        || cpu_quota.is_some()
        || cpu_period.is_some()
        || cpuset_cpus.is_some()
        || cpuset_mems.is_some()
    {
        let mut c = res.cpu().clone().unwrap_or_default();
        if let Some(v) = cpu_shares {
            c.set_shares(Some(*v));
        }
        if let Some(v) = cpu_quota {
            c.set_quota(Some(*v));
        }
        if let Some(v) = cpu_period {
            c.set_period(Some(*v));
        }
        if let Some(v) = cpuset_cpus {
            c.set_cpus(Some(v.clone()));
        }
        if let Some(v) = cpuset_mems {
            c.set_mems(Some(v.clone()));
        }
        res.set_cpu(Some(c));
    }
    if let Some(v) = pids_limit {
        let mut p = oci_spec::runtime::LinuxPids::default();
        p.set_limit(*v);
        res.set_pids(Some(p));
    }
    if let Some(v) = blkio_weight {
        let mut b = res.block_io().clone().unwrap_or_default();
        b.set_weight(Some(*v));
        res.set_block_io(Some(b));
    }
    rt.update(id, &res)?;
    Ok(())
}

fn write_spec(bundle: &Path, rootless: bool) -> Result<()> {
    let path = bundle.join("config.json");
    if path.exists() {
        bail!("{}: file already exists", path.display());
    }
    let spec = if rootless {
        Spec::rootless(
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        )
    } else {
        Spec::default()
    };
    let mut spec = spec;
    spec.set_hostname(Some("berth".into()));
    let text = serde_json::to_string_pretty(&spec)?;
    std::fs::write(&path, text).with_context(|| format!("{}", path.display()))?;
    Ok(())
}
