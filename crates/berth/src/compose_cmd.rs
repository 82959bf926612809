//! `berth compose`: loads the project with berth-compose and converges it through the
//! same functions the container commands use (`containers::create`/`start_detached`),
//! berth-net for the project's networks and the engine's volumes. What a project owns is
//! found by its labels (`com.docker.compose.*`), so `down` removes exactly that.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_compose::{
    config_hash, resource_name, service_labels, start_order, Project, Service, LABEL_HASH,
    LABEL_NETWORK, LABEL_NUMBER, LABEL_ONEOFF, LABEL_PROJECT, LABEL_SERVICE, LABEL_VOLUME,
};
use berth_engine::{Container, Engine, HealthConfig, Status};
use clap::{Args, Parser, Subcommand};

use crate::containers::{self, ContainerCmd, RunArgs};

mod watch;

type CmdResult = Result<i32, Box<dyn std::error::Error>>;

/// `berth compose` flags shared by every subcommand.
#[derive(Args, Debug)]
pub struct ComposeArgs {
    /// Compose configuration files (repeatable; later files override earlier ones).
    #[arg(short = 'f', long = "file")]
    files: Vec<PathBuf>,
    /// Project name.
    #[arg(short = 'p', long)]
    project_name: Option<String>,
    /// Alternate working directory (default: the first file's directory).
    #[arg(long)]
    project_directory: Option<PathBuf>,
    /// Alternate environment file(s) instead of `.env`.
    #[arg(long)]
    env_file: Vec<PathBuf>,
    /// Enable services of this profile (repeatable).
    #[arg(long)]
    profile: Vec<String>,
    #[command(subcommand)]
    cmd: ComposeCmd,
}

#[derive(Subcommand, Debug)]
// Each subcommand's arguments are built only when it is the one invoked: building
// the whole tree cost every command ~1 ms of start-up (page faults, allocations).
#[command(defer = true)]
enum ComposeCmd {
    /// Print the normalised model.
    Config {
        /// Print the service names, one per line.
        #[arg(long)]
        services: bool,
        /// Print the volume names, one per line.
        #[arg(long)]
        volumes: bool,
        /// Only validate the configuration.
        #[arg(short, long)]
        quiet: bool,
        /// `yaml` (default) or `json`.
        #[arg(long, default_value = "yaml")]
        format: String,
    },
    /// Create and start the project's containers.
    Up(UpArgs),
    /// Stop and remove containers and networks (and volumes with `-v`).
    Down {
        /// Remove named volumes and anonymous volumes of the containers.
        #[arg(short, long)]
        volumes: bool,
        /// Remove images used by services: `all` or `local` (built ones).
        #[arg(long)]
        rmi: Option<String>,
        /// Remove containers of services not in the file.
        #[arg(long)]
        remove_orphans: bool,
        /// Stop timeout in seconds.
        #[arg(short, long)]
        timeout: Option<i64>,
    },
    /// List the project's containers.
    Ps {
        /// Show stopped containers too.
        #[arg(short, long)]
        all: bool,
        /// Only ids.
        #[arg(short, long)]
        quiet: bool,
        /// Print the service names.
        #[arg(long)]
        services: bool,
        services_list: Vec<String>,
    },
    /// Output of the services, prefixed by container name.
    Logs {
        #[arg(short, long)]
        follow: bool,
        /// Do not colour the prefixes.
        #[arg(long)]
        no_color: bool,
        /// Do not print prefixes.
        #[arg(long)]
        no_log_prefix: bool,
        services: Vec<String>,
    },
    /// Start existing containers.
    Start { services: Vec<String> },
    /// Stop running containers.
    Stop {
        #[arg(short, long)]
        timeout: Option<i64>,
        services: Vec<String>,
    },
    /// Restart containers.
    Restart {
        #[arg(short, long)]
        timeout: Option<i64>,
        services: Vec<String>,
    },
    /// Remove stopped containers.
    Rm {
        /// Do not ask (berth never asks).
        #[arg(short, long)]
        force: bool,
        /// Stop the containers first.
        #[arg(short, long)]
        stop: bool,
        /// Remove anonymous volumes too.
        #[arg(short, long)]
        volumes: bool,
        services: Vec<String>,
    },
    /// Run a command in a running service container.
    Exec {
        #[arg(short, long)]
        detach: bool,
        /// Disable pseudo-TTY allocation (one is allocated when stdin is a terminal).
        #[arg(short = 'T', long = "no-TTY")]
        no_tty: bool,
        #[arg(short, long)]
        env: Vec<String>,
        #[arg(short, long)]
        user: Option<String>,
        #[arg(short, long)]
        workdir: Option<String>,
        /// Give extended privileges to the process.
        #[arg(long)]
        privileged: bool,
        /// Which replica.
        #[arg(long, default_value_t = 1)]
        index: u32,
        service: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        cmd: Vec<String>,
    },
    /// Run a one-off command for a service.
    Run {
        #[arg(long)]
        rm: bool,
        #[arg(short, long)]
        detach: bool,
        #[arg(short, long)]
        env: Vec<String>,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        no_deps: bool,
        #[arg(long)]
        entrypoint: Option<String>,
        #[arg(short = 'T', long = "no-TTY")]
        no_tty: bool,
        service: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        cmd: Vec<String>,
    },
    /// List projects that have containers.
    Ls {
        #[arg(short, long)]
        all: bool,
        #[arg(short, long)]
        quiet: bool,
    },
    /// Pull the services' images.
    Pull { services: Vec<String> },
    /// Push the images of services that have both `image` and `build`.
    Push { services: Vec<String> },
    /// Build the services that have a build section.
    Build {
        #[arg(long)]
        no_cache: bool,
        #[arg(long)]
        pull: bool,
        services: Vec<String>,
    },
    /// Images used by the project's containers.
    Images { services: Vec<String> },
    /// Processes of the project's containers.
    Top { services: Vec<String> },
    /// Watch the services' `develop.watch` paths and sync, restart or rebuild on changes.
    Watch {
        /// Do not bring the project up first.
        #[arg(long)]
        no_up: bool,
        services: Vec<String>,
    },
    /// Follow the project's container events.
    Events {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        services: Vec<String>,
    },
    /// Create the services' containers without starting them (`up --no-start`).
    Create {
        /// Build images before creating the containers.
        #[arg(long)]
        build: bool,
        /// Recreate containers even if their configuration did not change.
        #[arg(long)]
        force_recreate: bool,
        services: Vec<String>,
    },
    /// Send a signal to the services' running containers.
    Kill {
        /// Signal to send (name or number).
        #[arg(short, long, default_value = "SIGKILL")]
        signal: String,
        services: Vec<String>,
    },
    /// Pause the services' running containers.
    Pause { services: Vec<String> },
    /// Unpause the services' paused containers.
    Unpause { services: Vec<String> },
    /// Scale services (SERVICE=NUM ...), as `up -d --scale` does.
    Scale {
        /// Do not start the services they depend on.
        #[arg(long)]
        no_deps: bool,
        #[arg(required = true)]
        scales: Vec<String>,
    },
    /// Show the compose version (berth's).
    Version {
        /// Print only the version number.
        #[arg(long)]
        short: bool,
        /// Format: pretty or json.
        #[arg(short, long, default_value = "pretty")]
        format: String,
    },
    /// Copy files between a service container and the local filesystem
    /// (SERVICE:SRC DEST, SRC SERVICE:DEST; `-` for a tar stream).
    Cp {
        /// Index of the container if the service has several replicas.
        #[arg(long, default_value_t = 1)]
        index: u32,
        /// Archive mode (always on: owners and modes are kept).
        #[arg(short, long)]
        archive: bool,
        /// Always follow symbol links in SRC_PATH.
        #[arg(short = 'L', long)]
        follow_link: bool,
        src: String,
        dst: String,
    },
    /// Block until the services' containers stop; prints each exit code and exits with
    /// the first one's.
    Wait {
        /// Stop and remove the whole project once the first container stops.
        #[arg(long)]
        down_project: bool,
        #[arg(required = true)]
        services: Vec<String>,
    },
    /// The public port of a service's port binding.
    Port {
        #[arg(long, default_value_t = 1)]
        index: u32,
        service: String,
        private_port: String,
    },
}

#[derive(Args, Debug, Default)]
struct UpArgs {
    /// Run in the background.
    #[arg(short, long)]
    detach: bool,
    /// Build images before starting.
    #[arg(long)]
    build: bool,
    /// Wait for services to be running and healthy (implies -d).
    #[arg(long)]
    wait: bool,
    /// Seconds to wait with --wait.
    #[arg(long, default_value_t = 120)]
    wait_timeout: u64,
    /// Recreate containers even if their configuration did not change.
    #[arg(long)]
    force_recreate: bool,
    /// Do not start linked services.
    #[arg(long)]
    no_deps: bool,
    /// Remove containers of services not in the file.
    #[arg(long)]
    remove_orphans: bool,
    /// SERVICE=NUM replicas (repeatable).
    #[arg(long)]
    scale: Vec<String>,
    /// Create the containers (and networks, volumes, images) but do not start them.
    #[arg(long)]
    no_start: bool,
    services: Vec<String>,
}

pub fn main(root: &Path, args: ComposeArgs) -> i32 {
    match run(root, args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("berth compose: {e}");
            1
        }
    }
}

fn options(a: &ComposeArgs) -> Result<berth_compose::Options, Box<dyn std::error::Error>> {
    Ok(berth_compose::Options {
        files: a.files.clone(),
        project_name: a.project_name.clone(),
        project_dir: a.project_directory.clone(),
        env_files: a.env_file.clone(),
        profiles: a.profile.clone(),
        workdir: std::env::current_dir()?,
        environ: std::env::vars().collect(),
    })
}

fn run(root: &Path, a: ComposeArgs) -> CmdResult {
    let opts = options(&a)?;
    // `ls` and `version` need no file; everything else works on the loaded project.
    match &a.cmd {
        ComposeCmd::Ls { all, quiet } => return ls(root, *all, *quiet),
        ComposeCmd::Version { short, format } => return version(*short, format),
        _ => {}
    }
    let by_labels = matches!(
        a.cmd,
        ComposeCmd::Down { .. }
            | ComposeCmd::Ps { .. }
            | ComposeCmd::Logs { .. }
            | ComposeCmd::Stop { .. }
            | ComposeCmd::Rm { .. }
            | ComposeCmd::Top { .. }
            | ComposeCmd::Images { .. }
            | ComposeCmd::Kill { .. }
            | ComposeCmd::Events { .. }
            | ComposeCmd::Pause { .. }
            | ComposeCmd::Unpause { .. }
            | ComposeCmd::Wait { .. }
    );
    let project = match berth_compose::load(&opts) {
        // `-p NAME down|ps|stop|...` works from the labels alone, as Compose does.
        Err(berth_compose::Error::NotFound(_)) if by_labels && a.project_name.is_some() => {
            Project {
                name: a.project_name.clone().unwrap_or_default(),
                ..Default::default()
            }
        }
        other => other?,
    };
    match a.cmd {
        ComposeCmd::Config {
            services,
            volumes,
            quiet,
            format,
        } => config(&project, services, volumes, quiet, &format),
        ComposeCmd::Up(u) => up(root, &project, &u),
        ComposeCmd::Down {
            volumes,
            rmi,
            remove_orphans,
            timeout,
        } => down(
            root,
            &project,
            volumes,
            rmi.as_deref(),
            remove_orphans,
            timeout,
        ),
        ComposeCmd::Ps {
            all,
            quiet,
            services,
            services_list,
        } => ps(root, &project, all, quiet, services, &services_list),
        ComposeCmd::Logs {
            follow,
            no_color,
            no_log_prefix,
            services,
        } => logs(root, &project, follow, !no_color, !no_log_prefix, &services),
        ComposeCmd::Start { services } => start(root, &project, &services),
        ComposeCmd::Create {
            build,
            force_recreate,
            services,
        } => {
            let u = UpArgs {
                detach: true,
                no_start: true,
                build,
                force_recreate,
                services,
                ..Default::default()
            };
            up(root, &project, &u)
        }
        ComposeCmd::Events { json, services } => {
            let mut labels = vec![format!("{LABEL_PROJECT}={}", project.name)];
            if let [one] = services.as_slice() {
                labels.push(format!("{LABEL_SERVICE}={one}"));
            } else if services.len() > 1 {
                return Err("compose events follows the whole project or one service".into());
            }
            let a = crate::system::EventsArgs::following(&labels, json);
            crate::system::events(root, &a)
        }
        ComposeCmd::Cp {
            index, src, dst, ..
        } => {
            let (src, dst) = match (src.split_once(':'), dst.split_once(':')) {
                (Some((svc, path)), None) => (in_service(root, &project, svc, index, path)?, dst),
                (None, Some((svc, path))) => (src, in_service(root, &project, svc, index, path)?),
                _ => return Err("copying needs one SERVICE:PATH and one local path".into()),
            };
            Ok(containers::main(
                root,
                ContainerCmd::Cp {
                    archive: true,
                    follow_link: false,
                    src,
                    dst,
                },
            ))
        }
        ComposeCmd::Wait {
            down_project,
            services,
        } => wait(root, &project, &services, down_project),
        ComposeCmd::Kill { signal, services } => {
            each_container(root, &project, &services, "Killed", |e, c| {
                if c.state.status.is_active() {
                    e.kill(&c.id, &signal).map(|_| true)
                } else {
                    Ok(false)
                }
            })
        }
        ComposeCmd::Pause { services } => {
            each_container(root, &project, &services, "Paused", |e, c| {
                if c.state.status == Status::Running {
                    e.pause(&c.id).map(|_| true)
                } else {
                    Ok(false)
                }
            })
        }
        ComposeCmd::Unpause { services } => {
            each_container(root, &project, &services, "Unpaused", |e, c| {
                if c.state.status == Status::Paused {
                    e.unpause(&c.id).map(|_| true)
                } else {
                    Ok(false)
                }
            })
        }
        ComposeCmd::Scale { no_deps, scales } => {
            let services = scales
                .iter()
                .map(|s| s.split_once('=').map(|(n, _)| n.to_string()))
                .collect::<Option<Vec<_>>>()
                .ok_or("scale takes SERVICE=NUM arguments")?;
            let u = UpArgs {
                detach: true,
                no_deps,
                scale: scales,
                services,
                ..Default::default()
            };
            up(root, &project, &u)
        }
        ComposeCmd::Ls { .. } | ComposeCmd::Version { .. } => Ok(0),
        ComposeCmd::Stop { timeout, services } => stop(root, &project, &services, timeout),
        ComposeCmd::Restart { timeout, services } => {
            let services = berth_compose::with_restart_dependents(&project, &services);
            stop(root, &project, &services, timeout)?;
            start(root, &project, &services)
        }
        ComposeCmd::Rm {
            stop: first_stop,
            volumes,
            services,
            ..
        } => rm(root, &project, &services, first_stop, volumes),
        ComposeCmd::Exec {
            detach,
            no_tty,
            env,
            user,
            workdir,
            privileged,
            index,
            service,
            cmd,
        } => {
            let c = container_of(root, &project, &service, index)?;
            // As Compose: stdin is attached, and a TTY allocated when it is a terminal.
            let terminal = std::io::IsTerminal::is_terminal(&std::io::stdin());
            Ok(containers::main(
                root,
                ContainerCmd::Exec {
                    detach,
                    interactive: !detach,
                    tty: !detach && !no_tty && terminal,
                    env,
                    env_file: Vec::new(),
                    privileged,
                    user,
                    workdir,
                    container: c.id,
                    cmd,
                },
            ))
        }
        ComposeCmd::Run {
            rm,
            detach,
            env,
            name,
            no_deps,
            entrypoint,
            no_tty,
            service,
            cmd,
        } => {
            let terminal = std::io::IsTerminal::is_terminal(&std::io::stdin());
            let oneoff = OneOff {
                rm,
                detach,
                env,
                name,
                entrypoint,
                cmd,
                tty: !detach && !no_tty && terminal,
            };
            run_oneoff(root, &project, &service, no_deps, oneoff)
        }
        ComposeCmd::Pull { services } => pull(root, &project, &services),
        ComposeCmd::Push { services } => push(root, &project, &services),
        ComposeCmd::Build {
            no_cache,
            pull,
            services,
        } => {
            for name in selected(&project, &services)? {
                build_service(root, &project, &name, no_cache, pull)?;
            }
            Ok(0)
        }
        ComposeCmd::Images { services } => images(root, &project, &services),
        ComposeCmd::Top { services } => {
            let mut code = 0;
            for c in project_containers(root, &project.name, false)? {
                if wanted(&c, &services) && c.state.status == Status::Running {
                    println!("{}", c.name);
                    let args = ContainerCmd::Top { container: c.id };
                    code = code.max(containers::main(root, args));
                }
            }
            Ok(code)
        }
        ComposeCmd::Watch { no_up, services } => watch::watch(root, &project, &services, no_up),
        ComposeCmd::Port {
            index,
            service,
            private_port,
        } => {
            let c = container_of(root, &project, &service, index)?;
            let port = if private_port.contains('/') {
                private_port
            } else {
                format!("{private_port}/tcp")
            };
            let ep = c.state.endpoint.as_ref();
            let found = ep.and_then(|e| e.ports.iter().find(|(p, _, _)| *p == port));
            match found {
                Some((_, ip, host)) => {
                    println!("{ip}:{host}");
                    Ok(0)
                }
                None => Err(format!("no port {port} published for service {service}").into()),
            }
        }
    }
}

fn config(p: &Project, services: bool, volumes: bool, quiet: bool, format: &str) -> CmdResult {
    if quiet {
        return Ok(0);
    }
    if services {
        for s in p.services.keys() {
            println!("{s}");
        }
        return Ok(0);
    }
    if volumes {
        for v in p.volumes.keys() {
            println!("{v}");
        }
        return Ok(0);
    }
    if format == "json" {
        println!(
            "{}",
            serde_json::to_string_pretty(&berth_compose::escaped(p)?)?
        );
    } else {
        print!("{}", berth_compose::to_yaml(p)?);
    }
    Ok(0)
}

fn selected(p: &Project, names: &[String]) -> Result<Vec<String>, String> {
    for n in names {
        if !p.services.contains_key(n) {
            return Err(format!("no such service: {n}"));
        }
    }
    Ok(if names.is_empty() {
        p.services.keys().cloned().collect()
    } else {
        names.to_vec()
    })
}

/// Every container (one-offs included when `oneoff`) of the project, by container number.
fn project_containers(
    root: &Path,
    project: &str,
    oneoff: bool,
) -> Result<Vec<Container>, berth_engine::Error> {
    let mut engine = Engine::open(root)?;
    let mut list: Vec<Container> = engine
        .list()?
        .into_iter()
        .filter(|c| c.config.labels.get(LABEL_PROJECT).map(String::as_str) == Some(project))
        .filter(|c| oneoff || c.config.labels.get(LABEL_ONEOFF).map(String::as_str) != Some("True"))
        .collect();
    list.sort_by_key(|c| (service_of(c).to_string(), number_of(c)));
    Ok(list)
}

fn service_of(c: &Container) -> &str {
    c.config
        .labels
        .get(LABEL_SERVICE)
        .map_or("", String::as_str)
}

fn number_of(c: &Container) -> u32 {
    c.config
        .labels
        .get(LABEL_NUMBER)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn wanted(c: &Container, services: &[String]) -> bool {
    services.is_empty() || services.iter().any(|s| s == service_of(c))
}

fn container_of(root: &Path, p: &Project, service: &str, index: u32) -> Result<Container, String> {
    if !p.services.contains_key(service) {
        return Err(format!("no such service: {service}"));
    }
    project_containers(root, &p.name, false)
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|c| service_of(c) == service && number_of(c) == index)
        .ok_or_else(|| format!("service {service:?} is not running"))
}

/// `SERVICE:PATH` as `CONTAINER:PATH` for `cp`.
fn in_service(
    root: &Path,
    p: &Project,
    service: &str,
    index: u32,
    path: &str,
) -> Result<String, String> {
    Ok(format!(
        "{}:{path}",
        container_of(root, p, service, index)?.id
    ))
}

/// `compose wait`: every container of `services` until it stops, in the order they stop.
fn wait(root: &Path, p: &Project, services: &[String], down_project: bool) -> CmdResult {
    // Without the file (`-p NAME wait`), the containers' labels name the services.
    for s in services.iter().filter(|_| !p.services.is_empty()) {
        if !p.services.contains_key(s) {
            return Err(format!("no such service: {s}").into());
        }
    }
    let mut waiting: Vec<String> = project_containers(root, &p.name, false)?
        .into_iter()
        .filter(|c| wanted(c, services))
        .map(|c| c.id)
        .collect();
    if waiting.is_empty() {
        return Err("no containers for the given services".into());
    }
    let mut engine = Engine::open(root)?;
    let mut first = None;
    while !waiting.is_empty() {
        let mut still = Vec::new();
        for id in waiting {
            let c = engine.find(&id)?;
            if c.state.status.is_active() {
                still.push(id);
                continue;
            }
            println!("{}", c.state.exit_code);
            first.get_or_insert(c.state.exit_code);
            if down_project {
                drop(engine);
                down(root, p, false, None, false, None)?;
                return Ok(c.state.exit_code);
            }
        }
        waiting = still;
        if !waiting.is_empty() {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    Ok(first.unwrap_or(0))
}

fn network_name(p: &Project, key: &str) -> String {
    let explicit = p.networks.get(key).and_then(|n| n.name.as_deref());
    resource_name(&p.name, key, explicit)
}

fn volume_name(p: &Project, key: &str) -> String {
    let explicit = p.volumes.get(key).and_then(|v| v.name.as_deref());
    resource_name(&p.name, key, explicit)
}

/// One `ipam.config[0]` address field (`subnet`, `gateway`, `ip_range`), parsed.
fn parse_ipam<T: std::str::FromStr>(
    network: &str,
    field: &str,
    value: Option<&str>,
) -> Result<Option<T>, String> {
    value
        .map(|v| {
            v.parse()
                .map_err(|_| format!("network {network}: invalid {field} {v:?}"))
        })
        .transpose()
}

/// Creates the project's networks and named volumes that are missing; external ones
/// must exist.
fn ensure_resources(root: &Path, p: &Project) -> CmdResult {
    let net = berth_net::Net::open(root)?;
    for (key, n) in &p.networks {
        let name = network_name(p, key);
        if net.get(&name).is_ok() {
            continue;
        }
        if n.external {
            return Err(
                format!("network {name} declared as external, but could not be found").into(),
            );
        }
        let mut labels = BTreeMap::new();
        labels.insert(LABEL_PROJECT.to_string(), p.name.clone());
        labels.insert(LABEL_NETWORK.to_string(), key.clone());
        labels.extend(n.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        // `ipam.config[0]`: the subnet (and gateway) asked for, IPv4 only.
        let ipam = n
            .ipam
            .as_ref()
            .and_then(|i| i.get("config"))
            .and_then(|c| c.get(0));
        let field = |k: &str| ipam.and_then(|c| c.get(k)).and_then(|v| v.as_str());
        let subnet = parse_ipam(key, "subnet", field("subnet"))?;
        let gateway = parse_ipam(key, "gateway", field("gateway"))?;
        let ip_range = parse_ipam(key, "ip_range", field("ip_range"))?;
        let options = string_map(&n.driver_opts);
        let opts = berth_net::NetworkOptions {
            internal: n.internal,
            labels,
            subnet,
            gateway,
            ip_range,
            options,
        };
        for k in berth_net::unsupported_options(&opts) {
            eprintln!("WARNING: network {key}: option {k:?} is not supported by berth's bridge driver; ignored");
        }
        net.create(&name, &opts)?;
        eprintln!(" Network {name}  Created");
    }
    let mut engine = Engine::open(root)?;
    let existing = berth_engine::volumes::list(&engine.db)?;
    for (key, v) in &p.volumes {
        let name = volume_name(p, key);
        if existing.contains(&name) {
            continue;
        }
        if v.external {
            return Err(format!("external volume {name:?} not found").into());
        }
        let mut labels = vec![
            (LABEL_PROJECT.to_string(), p.name.clone()),
            (LABEL_VOLUME.to_string(), key.clone()),
        ];
        labels.extend(v.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        if v.driver.as_deref().is_some_and(|d| d != "local") {
            return Err(format!("volume {key}: driver {:?} not found", v.driver).into());
        }
        let opts = string_map(&v.driver_opts);
        berth_engine::volumes::create_with(
            &mut engine.db,
            &engine.root,
            Some(&name),
            &labels,
            &opts,
        )?;
        eprintln!(" Volume {name}  Created");
    }
    Ok(0)
}

fn image_name(p: &Project, service: &str, s: &Service) -> String {
    s.image
        .clone()
        .unwrap_or_else(|| format!("{}-{service}", p.name))
}

fn image_present(root: &Path, name: &str) -> bool {
    image_id(root, name).is_some()
}

/// The image's id (config digest) in the local store, if it is there.
fn image_id(root: &Path, name: &str) -> Option<String> {
    let store = berth_registry::client::store::LocalStore::open(root).ok()?;
    let rec = store.find(name).ok()?;
    Some(rec.config_digest.to_string())
}

#[derive(Parser)]
#[command(no_binary_name = true)]
struct BuildCli {
    #[command(flatten)]
    args: crate::build_cmd::BuildArgs,
}

fn build_service(root: &Path, p: &Project, service: &str, no_cache: bool, pull: bool) -> CmdResult {
    let Some(s) = p.services.get(service) else {
        return Err(format!("no such service: {service}").into());
    };
    let Some(b) = &s.build else {
        return Ok(0);
    };
    let mut argv: Vec<String> = vec!["-t".into(), image_name(p, service, s)];
    if let Some(f) = b.dockerfile.as_deref() {
        argv.push("-f".into());
        argv.push(Path::new(&b.context).join(f).display().to_string());
    }
    for (k, v) in &b.args {
        argv.push("--build-arg".into());
        argv.push(v.as_ref().map_or(k.clone(), |v| format!("{k}={v}")));
    }
    if let Some(t) = &b.target {
        argv.push("--target".into());
        argv.push(t.clone());
    }
    for (k, v) in &b.labels {
        argv.push("--label".into());
        argv.push(format!("{k}={v}"));
    }
    for sec in &b.secrets {
        let def = p
            .secrets
            .get(&sec.source)
            .ok_or_else(|| format!("secret {:?} is not defined", sec.source))?;
        let file = match def.file.as_deref() {
            Some(file) => PathBuf::from(file),
            None => write_file_object(root, p, service, "build-secret", sec, def)?,
        };
        argv.push("--secret".into());
        argv.push(format!("id={},src={}", sec.source, file.display()));
    }
    for t in &b.tags {
        argv.push("-t".into());
        argv.push(t.clone());
    }
    for (flag, list) in [("--cache-from", &b.cache_from), ("--cache-to", &b.cache_to)] {
        for spec in list {
            argv.push(flag.into());
            argv.push(spec.clone());
        }
    }
    if let Some(n) = &b.network {
        argv.push("--network".into());
        argv.push(n.clone());
    }
    for spec in b.ssh_specs() {
        argv.push("--ssh".into());
        argv.push(spec);
    }
    for (flag, value) in b.build_context_flags() {
        argv.push(flag.into());
        argv.push(value);
    }
    if no_cache || b.no_cache {
        argv.push("--no-cache".into());
    }
    if pull || b.pull {
        argv.push("--pull".into());
    }
    argv.push(b.context.clone());
    let cli = BuildCli::try_parse_from(&argv).map_err(|e| e.to_string())?;
    eprintln!(" Service {service}  Building");
    match crate::build_cmd::run(root, cli.args) {
        0 => Ok(0),
        c => Err(format!("building service {service} failed (exit {c})").into()),
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

/// A compose duration given as microseconds (`95000`) or with a unit (`400ms`), as
/// `cpu_rt_runtime`/`cpu_rt_period` take it; in microseconds.
fn micros(v: &Option<berth_compose::YamlValue>, key: &str) -> Result<Option<i64>, String> {
    let Some(t) = scalar_text(v) else {
        return Ok(None);
    };
    if let Ok(n) = t.parse::<i64>() {
        return Ok(Some(n));
    }
    let d = parse_duration(&t).map_err(|e| format!("{key}: {e}"))?;
    Ok(Some(d.as_micros() as i64))
}

fn ns(s: &Option<String>) -> Result<u64, String> {
    s.as_deref()
        .map(|d| parse_duration(d).map(|d| d.as_nanos() as u64))
        .transpose()
        .map(Option::unwrap_or_default)
}

/// The `run` flags a service's container is created with.
fn run_args(
    root: &Path,
    p: &Project,
    service: &str,
    s: &Service,
    number: u32,
) -> Result<RunArgs, String> {
    let mut a = RunArgs {
        detach: true,
        name: Some(
            s.container_name
                .clone()
                .unwrap_or_else(|| format!("{}-{service}-{number}", p.name)),
        ),
        image: image_name(p, service, s),
        restart: s.restart.clone().unwrap_or_else(|| "no".into()),
        pull: match s.pull_policy.as_deref() {
            Some("always") => "always".into(),
            Some("never") | Some("build") => "never".into(),
            _ if s.build.is_some() => "never".into(),
            _ => "missing".into(),
        },
        ..Default::default()
    };
    a.env = s
        .environment
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
        .collect();
    a.workdir = s.working_dir.clone();
    a.user = s.user.clone();
    a.hostname = s.hostname.clone();
    a.domainname = s.domainname.clone();
    a.add_host = s.extra_hosts.clone();
    a.read_only = s.read_only;
    a.privileged = s.privileged;
    a.tty = s.tty;
    a.interactive = s.stdin_open;
    a.cap_add = s.cap_add.clone();
    a.cap_drop = s.cap_drop.clone();
    a.security_opt = s.security_opt.clone();
    a.dns = s.dns.clone();
    a.dns_search = s.dns_search.clone();
    a.dns_option = s.dns_opt.clone();
    a.device = s.devices.clone();
    a.group_add = s.group_add.clone();
    a.init = s.init.unwrap_or(false);
    a.stop_signal = s.stop_signal.clone();
    a.stop_timeout = s
        .stop_grace_period
        .as_deref()
        .map(parse_duration)
        .transpose()?
        .map(|d| d.as_secs() as i64);
    a.platform = s.platform.clone();
    a.sysctl = s.sysctls.iter().map(|(k, v)| format!("{k}={v}")).collect();
    a.ulimit = s
        .ulimits
        .iter()
        .map(|(k, u)| format!("{k}={}:{}", u.soft, u.hard))
        .collect();
    a.shm_size = s.shm_size.clone();
    let limits = s
        .deploy
        .as_ref()
        .and_then(|d| d.resources.as_ref())
        .and_then(|r| r.limits.as_ref());
    a.memory = limits
        .and_then(|l| l.memory.clone())
        .or(s.mem_limit.clone());
    a.memory_swap = s.memswap_limit.clone();
    let cpus = limits.and_then(|l| l.cpus.clone()).or(s.cpus.clone());
    a.cpus = cpus
        .map(|c| c.parse::<f64>().map_err(|_| format!("invalid cpus {c:?}")))
        .transpose()?;
    a.cpu_shares = s.cpu_shares;
    a.pids_limit = limits.and_then(|l| l.pids).or(s.pids_limit);
    a.tmpfs = s.tmpfs.clone();
    a.expose = s.expose.clone();
    a.publish = s.ports.iter().map(publish_spec).collect();
    for v in &s.volumes {
        mount_args(&mut a, p, v);
    }
    file_mounts(&mut a, root, p, service, s)?;
    a.network = match (&s.network_mode, s.networks.keys().next()) {
        (Some(m), _) => m.clone(),
        (None, Some(n)) => network_name(p, n),
        (None, None) => "none".into(),
    };
    let mut labels = service_labels(p, service, number);
    for (k, v) in label_files(s)? {
        labels.entry(k).or_insert(v);
    }
    a.annotation = match &s.annotations {
        Some(berth_compose::YamlValue::Sequence(l)) => {
            l.iter().filter_map(berth_compose::scalar).collect()
        }
        m => string_map(m)
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
    };
    labels.insert(
        berth_compose::LABEL_WORKDIR.into(),
        std::env::current_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_default(),
    );
    a.label = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if let Some(ep) = &s.entrypoint {
        a.entrypoint = Some(ep.first().cloned().unwrap_or_default());
        a.cmd = ep.iter().skip(1).cloned().collect();
    }
    if let Some(cmd) = &s.command {
        a.cmd.extend(cmd.iter().cloned());
    }
    if s.healthcheck.as_ref().is_some_and(|h| h.disable) {
        a.no_healthcheck = true;
    }
    kernel_args(&mut a, p, s)?;
    if s.network_mode.is_none() {
        let first = s.networks.values().next().and_then(|n| n.as_ref());
        a.ip = first.and_then(|n| n.ipv4_address.clone());
        a.mac_address = first.and_then(|n| n.mac_address.clone());
    }
    if let Some(mac) = scalar_text(&s.mac_address) {
        a.mac_address = Some(mac);
    }
    a.link = links(p, s)?;
    a.userns = scalar_text(&s.userns_mode);
    Ok(a)
}

/// A mapping of scalars (`driver_opts`, `annotations`) as strings; anything else is
/// empty.
fn string_map(v: &Option<berth_compose::YamlValue>) -> BTreeMap<String, String> {
    match v {
        Some(berth_compose::YamlValue::Mapping(m)) => m
            .iter()
            .filter_map(|(k, v)| Some((berth_compose::scalar(k)?, berth_compose::scalar(v)?)))
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// A scalar of a compose file (a number or a string) as text.
fn scalar_text(v: &Option<berth_compose::YamlValue>) -> Option<String> {
    v.as_ref().and_then(berth_compose::scalar)
}

/// A scalar of a compose file as a number, naming the key when it is not one.
fn scalar_num<T: std::str::FromStr>(
    v: &Option<berth_compose::YamlValue>,
    key: &str,
) -> Result<Option<T>, String> {
    scalar_text(v)
        .map(|t| {
            t.parse()
                .map_err(|_| format!("{key}: invalid number {t:?}"))
        })
        .transpose()
}

/// `links` (services, by their first container) and `external_links` (containers) as
/// `--link NAME:ALIAS`; the alias defaults to the service's or container's name.
fn links(p: &Project, s: &Service) -> Result<Vec<String>, String> {
    let list = |v: &Option<berth_compose::YamlValue>, key: &str| -> Result<Vec<String>, String> {
        match v {
            None => Ok(Vec::new()),
            Some(berth_compose::YamlValue::Sequence(items)) => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| format!("{key}: entries must be strings"))
                })
                .collect(),
            Some(_) => Err(format!("{key} must be a list")),
        }
    };
    let mut out = Vec::new();
    for l in list(&s.links, "links")? {
        let (svc, alias) = l.split_once(':').unwrap_or((&l, &l));
        out.push(format!("{}:{alias}", service_container(p, svc)));
    }
    for l in list(&s.external_links, "external_links")? {
        out.push(l);
    }
    Ok(out)
}

/// The labels of a service's `label_file`s (`KEY=VALUE` lines; `labels:` wins).
fn label_files(s: &Service) -> Result<Vec<(String, String)>, String> {
    let Some(berth_compose::YamlValue::Sequence(files)) = &s.label_file else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for f in files.iter().filter_map(berth_compose::YamlValue::as_str) {
        let text = std::fs::read_to_string(f).map_err(|e| format!("label_file {f}: {e}"))?;
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line.split_once('=').unwrap_or((line, ""));
            out.push((k.trim().to_string(), v.to_string()));
        }
    }
    Ok(out)
}

/// The name of a service's first container.
fn service_container(p: &Project, svc: &str) -> String {
    p.services
        .get(svc)
        .and_then(|s| s.container_name.clone())
        .unwrap_or_else(|| format!("{}-{svc}-1", p.name))
}

/// `service:NAME` (compose's form) as the `container:` mode of that service's first
/// container; other values as they are.
fn service_mode(p: &Project, mode: &str) -> String {
    match mode.strip_prefix("service:") {
        Some(svc) => format!("container:{}", service_container(p, svc)),
        None => mode.to_string(),
    }
}

/// The namespace, cgroup and logging keys of a service (`pid`, `ipc`, `uts`, `cgroup`,
/// `cgroup_parent`, `volumes_from`, `mem_reservation`, `mem_swappiness`, `cpu_period`,
/// `cpu_quota`, `cpuset`, `oom_score_adj`, `oom_kill_disable`, `blkio_config.weight`,
/// `device_cgroup_rules`, `logging`) as `run` flags.
fn kernel_args(a: &mut RunArgs, p: &Project, s: &Service) -> Result<(), String> {
    // Checked as `run --runtime/--volume-driver` are: berth's own, or refused.
    a.runtime = scalar_text(&s.runtime);
    a.volume_driver = scalar_text(&s.volume_driver);
    a.pid = s.pid.as_deref().map(|m| service_mode(p, m));
    a.ipc = s.ipc.as_deref().map(|m| service_mode(p, m));
    a.uts = scalar_text(&s.uts);
    a.cgroupns = scalar_text(&s.cgroup);
    a.cgroup_parent = scalar_text(&s.cgroup_parent);
    if let Some(berth_compose::YamlValue::Sequence(list)) = &s.volumes_from {
        for v in list.iter().filter_map(|v| v.as_str()) {
            // `container:NAME[:mode]` names a container, `SERVICE[:mode]` a service.
            let from = match v.strip_prefix("container:") {
                Some(c) => c.to_string(),
                None => match v.split_once(':') {
                    Some((svc, mode)) => format!("{}:{mode}", service_container(p, svc)),
                    None => service_container(p, v),
                },
            };
            a.volumes_from.push(from);
        }
    }
    a.memory_reservation = scalar_text(&s.mem_reservation);
    a.memory_swappiness = scalar_num(&s.mem_swappiness, "mem_swappiness")?;
    a.cpu_period = scalar_num(&s.cpu_period, "cpu_period")?;
    a.cpu_quota = scalar_num(&s.cpu_quota, "cpu_quota")?;
    a.cpu_rt_period = micros(&s.cpu_rt_period, "cpu_rt_period")?.map(|v| v as u64);
    a.cpu_rt_runtime = micros(&s.cpu_rt_runtime, "cpu_rt_runtime")?;
    a.cpuset_cpus = a.cpuset_cpus.take().or_else(|| scalar_text(&s.cpuset));
    a.oom_score_adj = scalar_num(&s.oom_score_adj, "oom_score_adj")?;
    a.oom_kill_disable = scalar_text(&s.oom_kill_disable).is_some_and(|v| v == "true");
    if let Some(w) = s.blkio_config.as_ref().and_then(|b| b.get("weight")) {
        a.blkio_weight = scalar_num(&Some(w.clone()), "blkio_config.weight")?;
    }
    for (key, value, flag) in [
        ("weight_device", "weight", &mut a.blkio_weight_device),
        ("device_read_bps", "rate", &mut a.device_read_bps),
        ("device_write_bps", "rate", &mut a.device_write_bps),
        ("device_read_iops", "rate", &mut a.device_read_iops),
        ("device_write_iops", "rate", &mut a.device_write_iops),
    ] {
        let Some(list) = s.blkio_config.as_ref().and_then(|b| b.get(key)) else {
            continue;
        };
        let berth_compose::YamlValue::Sequence(items) = list else {
            return Err(format!("blkio_config.{key} must be a list"));
        };
        for item in items {
            let path = item.get("path").and_then(berth_compose::scalar);
            let v = item.get(value).and_then(berth_compose::scalar);
            let (Some(path), Some(v)) = (path, v) else {
                return Err(format!("blkio_config.{key}: entries need path and {value}"));
            };
            flag.push(format!("{path}:{v}"));
        }
    }
    if let Some(berth_compose::YamlValue::Sequence(rules)) = &s.device_cgroup_rules {
        a.device_cgroup_rule = rules
            .iter()
            .filter_map(|r| r.as_str().map(String::from))
            .collect();
    }
    if let Some(log) = &s.logging {
        a.log_driver = log.get("driver").and_then(|d| d.as_str()).map(String::from);
        if let Some(berth_compose::YamlValue::Mapping(opts)) = log.get("options") {
            for (k, v) in opts {
                if let (Some(k), Some(v)) = (k.as_str(), berth_compose::scalar(v)) {
                    a.log_opt.push(format!("{k}={v}"));
                }
            }
        }
    }
    Ok(())
}

fn publish_spec(port: &berth_compose::Port) -> String {
    let mut s = String::new();
    if let Some(ip) = &port.host_ip {
        s.push_str(ip);
        s.push(':');
    }
    if let Some(p) = &port.published {
        s.push_str(p);
        s.push(':');
    } else if port.host_ip.is_some() {
        s.push(':');
    }
    format!("{s}{}/{}", port.target, port.protocol)
}

fn mount_args(a: &mut RunArgs, p: &Project, v: &berth_compose::ServiceVolume) {
    let ro = if v.read_only { ":ro" } else { "" };
    match (v.kind.as_str(), v.source.as_deref()) {
        ("bind", Some(src)) => a.volume.push(format!("{src}:{}{ro}", v.target)),
        ("volume", Some(src)) => {
            let name = if p.volumes.contains_key(src) {
                volume_name(p, src)
            } else {
                src.to_string()
            };
            a.volume.push(format!("{name}:{}{ro}", v.target));
        }
        ("volume", None) => a.volume.push(v.target.clone()),
        ("tmpfs", _) => a.tmpfs.push(v.target.clone()),
        _ => a.volume.push(format!(
            "{}:{}{ro}",
            v.source.clone().unwrap_or_default(),
            v.target
        )),
    }
}

/// Secrets at `/run/secrets/<name>` and configs at `/<name>` (or their `target`), as
/// read-only binds: of the declared file, or of a file written under the project's state
/// dir for those given by `environment:` or inline `content:`.
fn file_mounts(
    a: &mut RunArgs,
    root: &Path,
    p: &Project,
    service: &str,
    s: &Service,
) -> Result<(), String> {
    let sets = [
        (&s.secrets, &p.secrets, "/run/secrets/", "secret"),
        (&s.configs, &p.configs, "/", "config"),
    ];
    for (refs, defs, dir, what) in sets {
        for r in refs {
            let def = defs
                .get(&r.source)
                .ok_or_else(|| format!("{what} {:?} is not defined", r.source))?;
            let source = match def.file.as_deref() {
                Some(file) => PathBuf::from(file),
                None => write_file_object(root, p, service, what, r, def)?,
            };
            let target = match r.target.as_deref() {
                Some(t) if t.starts_with('/') => t.to_string(),
                Some(t) => format!("{dir}{t}"),
                None => format!("{dir}{}", r.source),
            };
            a.mount.push(format!(
                "type=bind,source={},target={target},readonly",
                source.display()
            ));
        }
    }
    Ok(())
}

/// Where a project keeps what it materialises (secrets and configs with no file).
fn project_state_dir(root: &Path, p: &Project) -> PathBuf {
    root.join("compose").join(&p.name)
}

/// Writes an `environment:` or `content:` secret/config for one service, with the mode,
/// uid and gid the service asks for (default 0444, root), as Docker Compose does.
fn write_file_object(
    root: &Path,
    p: &Project,
    service: &str,
    what: &str,
    r: &berth_compose::FileRef,
    def: &berth_compose::FileObject,
) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let body = if let Some(var) = def.environment.as_deref() {
        p.secret_env.get(var).cloned().ok_or_else(|| {
            format!(
                "{what} {:?}: environment variable {var} is not set",
                r.source
            )
        })?
    } else if let Some(text) = def.content.as_deref() {
        text.to_string()
    } else if def.external {
        return Err(format!(
            "{what} {:?}: external {what}s need a swarm; use `file:`",
            r.source
        ));
    } else {
        return Err(format!(
            "{what} {:?}: needs one of file, environment or content",
            r.source
        ));
    };
    let dir = project_state_dir(root, p).join(service).join(what);
    let path = dir.join(&r.source);
    let fail = |e: std::io::Error| format!("{what} {:?}: {}: {e}", r.source, path.display());
    std::fs::create_dir_all(&dir).map_err(fail)?;
    std::fs::write(&path, body).map_err(fail)?;
    let mode = r
        .file_mode()
        .map_err(|e| format!("{what} {:?}: {e}", r.source))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(fail)?;
    let id = |v: &Option<String>| -> Result<Option<u32>, String> {
        v.as_deref()
            .map(|x| x.parse().map_err(|_| format!("bad uid/gid {x:?}")))
            .transpose()
    };
    std::os::unix::fs::chown(&path, id(&r.uid)?, id(&r.gid)?).map_err(fail)?;
    Ok(path)
}

fn health_config(s: &Service) -> Result<Option<HealthConfig>, String> {
    let Some(h) = &s.healthcheck else {
        return Ok(None);
    };
    if h.disable || h.test.is_none() {
        return Ok(None);
    }
    Ok(Some(HealthConfig {
        test: h.test.clone().unwrap_or_default(),
        interval: ns(&h.interval)?,
        timeout: ns(&h.timeout)?,
        start_period: ns(&h.start_period)?,
        retries: h.retries.unwrap_or(0),
        start_interval: ns(&h.start_interval)?,
    }))
}

/// Creates (and with `start`, starts) one container of a service.
fn create_container(
    root: &Path,
    p: &Project,
    service: &str,
    number: u32,
    start: bool,
) -> Result<Container, String> {
    let s = &p.services[service];
    let a = run_args(root, p, service, s, number)?;
    let (mut engine, c) = containers::create(root, &a)?;
    let aliases: Vec<String> = {
        let first = s.networks.iter().next();
        let mut list = vec![service.to_string()];
        if let Some((_, Some(n))) = first {
            list.extend(n.aliases.iter().cloned());
        }
        list
    };
    let health = health_config(s)?;
    let extra = extra_networks(p, s, service);
    let c = engine
        .update(&c.id, |cfg| {
            if s.network_mode.is_none() {
                cfg.network_aliases = aliases;
                cfg.extra_networks = extra;
            }
            if let Some(h) = health {
                cfg.healthcheck = Some(h);
            }
        })
        .map_err(|e| e.to_string())?;
    eprintln!(" Container {}  Created", c.name);
    if start {
        containers::start_detached(&mut engine, &c.id).map_err(|e| e.to_string())?;
        eprintln!(" Container {}  Started", c.name);
        drop(engine);
        run_hooks(root, p, &c, Hook::PostStart)?;
    }
    Ok(c)
}

/// Runs one command spec (a `develop.watch` exec, a lifecycle hook) in a running
/// container as `berth exec` would; its exit code.
pub(crate) fn exec_spec(
    root: &Path,
    id: &str,
    x: &berth_compose::WatchExec,
    cmd: Vec<String>,
) -> i32 {
    containers::main(
        root,
        containers::ContainerCmd::Exec {
            detach: false,
            interactive: false,
            tty: false,
            env: x
                .environment
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
            env_file: Vec::new(),
            privileged: x.privileged,
            user: x.user.clone(),
            workdir: x.working_dir.clone(),
            container: id.to_string(),
            cmd,
        },
    )
}

/// Which lifecycle hooks of a service to run.
#[derive(Clone, Copy, PartialEq)]
enum Hook {
    PostStart,
    PreStop,
}

/// Runs the service's `post_start` or `pre_stop` hooks in its running container `c`, in
/// order; the first that fails ends them with an error naming it.
fn run_hooks(root: &Path, p: &Project, c: &Container, which: Hook) -> Result<(), String> {
    let service = service_of(c);
    let Some(s) = p.services.get(service) else {
        return Ok(());
    };
    let (key, spec) = match which {
        Hook::PostStart => ("post_start", &s.post_start),
        Hook::PreStop => ("pre_stop", &s.pre_stop),
    };
    let hooks = berth_compose::hooks(spec).map_err(|e| format!("service {service}: {key}: {e}"))?;
    for h in &hooks {
        let cmd = h
            .argv()
            .map_err(|e| format!("service {service}: {key}: {e}"))?;
        let code = exec_spec(root, &c.id, h, cmd);
        if code != 0 {
            return Err(format!(
                "container {}: {key} hook exited with {code}",
                c.name
            ));
        }
    }
    Ok(())
}

/// `pre_stop` hooks before a stop: a failing one is reported, and the stop goes on.
fn pre_stop(root: &Path, p: &Project, c: &Container) {
    if let Err(e) = run_hooks(root, p, c, Hook::PreStop) {
        eprintln!("WARNING: {e}");
    }
}

/// A service's networks after the first, with the service name (and aliases) on each;
/// the engine joins them on every start, restarts by policy included.
fn extra_networks(p: &Project, s: &Service, service: &str) -> Vec<berth_engine::NetworkLink> {
    s.networks
        .iter()
        .skip(1)
        .map(|(key, cfg)| {
            let mut aliases = vec![service.to_string()];
            if let Some(cfg) = cfg {
                aliases.extend(cfg.aliases.iter().cloned());
            }
            berth_engine::NetworkLink {
                network: network_name(p, key),
                aliases,
            }
        })
        .collect()
}

fn scale_overrides(list: &[String]) -> Result<BTreeMap<String, u32>, String> {
    list.iter()
        .map(|s| {
            let (k, v) = s
                .split_once('=')
                .ok_or_else(|| format!("--scale {s}: expected SERVICE=NUM"))?;
            let n = v
                .parse()
                .map_err(|_| format!("--scale {s}: not a number"))?;
            Ok((k.to_string(), n))
        })
        .collect()
}

/// Service keys berth reads but cannot apply on this kind of host (Windows-only ones,
/// GPUs, storage quotas, the API socket).
fn ignored_keys(s: &Service) -> Vec<&'static str> {
    [
        ("cpu_count", s.cpu_count.is_some()),
        ("cpu_percent", s.cpu_percent.is_some()),
        ("storage_opt", s.storage_opt.is_some()),
        ("isolation", s.isolation.is_some()),
        ("gpus", s.gpus.is_some()),
        ("credential_spec", s.credential_spec.is_some()),
        ("use_api_socket", s.use_api_socket.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, set)| set.then_some(k))
    .collect()
}

fn up(root: &Path, p: &Project, u: &UpArgs) -> CmdResult {
    let order = start_order(p, &selected(p, &u.services)?, u.no_deps);
    let scale = scale_overrides(&u.scale)?;
    for name in &order {
        for key in ignored_keys(&p.services[name]) {
            eprintln!("WARN service {name}: `{key}` is not supported by berth; ignored");
        }
    }
    ensure_resources(root, p)?;
    for name in &order {
        let s = &p.services[name];
        if s.build.is_some() && (u.build || !image_present(root, &image_name(p, name, s))) {
            build_service(root, p, name, false, false)?;
        }
    }
    let mut existing = project_containers(root, &p.name, false)?;
    let orphans: Vec<Container> = existing
        .iter()
        .filter(|c| !p.services.contains_key(service_of(c)))
        .cloned()
        .collect();
    if !orphans.is_empty() {
        if u.remove_orphans {
            let mut engine = Engine::open(root)?;
            for c in &orphans {
                engine.remove(&c.id, true, false)?;
                eprintln!(" Container {}  Removed", c.name);
            }
        } else {
            let names: Vec<&str> = orphans.iter().map(|c| c.name.as_str()).collect();
            eprintln!(
                "WARN Found orphan containers ({}) for this project; run with --remove-orphans to clean them up.",
                names.join(", ")
            );
        }
    }
    existing.retain(|c| p.services.contains_key(service_of(c)));
    let mut changed: BTreeSet<String> = BTreeSet::new();
    for name in &order {
        // Created but not started, dependencies have nothing to wait for.
        if !u.no_start {
            wait_for_dependencies(root, p, name, &order)?;
        }
        let n = scale
            .get(name)
            .copied()
            .unwrap_or_else(|| p.services[name].replicas());
        if converge(root, p, name, n, u.force_recreate, !u.no_start, &existing)? {
            changed.insert(name.clone());
        } else if restarts_with(p, name, &changed) {
            restart_running(root, p, name)?;
            changed.insert(name.clone());
        }
    }
    if u.no_start {
        return Ok(0);
    }
    if u.wait {
        wait_all(root, p, &order, Duration::from_secs(u.wait_timeout))?;
    } else if !u.detach {
        interrupt::install();
        logs(root, p, true, std::io::stdout().is_terminal(), true, &order)?;
        if interrupt::pending() {
            eprintln!("Gracefully stopping... (press Ctrl+C again to force)");
            interrupt::restore();
            stop(root, p, &order, None)?;
            return Ok(130);
        }
    }
    Ok(0)
}

/// Ctrl-C during a foreground `up` stops the project, as Compose does.
mod interrupt {
    use std::sync::atomic::{AtomicBool, Ordering};

    use nix::sys::signal::{signal, SigHandler, Signal};

    static HIT: AtomicBool = AtomicBool::new(false);

    extern "C" fn on_signal(_: i32) {
        HIT.store(true, Ordering::SeqCst);
    }

    pub fn install() {
        for sig in [Signal::SIGINT, Signal::SIGTERM] {
            // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
            if let Err(e) = unsafe { signal(sig, SigHandler::Handler(on_signal)) } {
                eprintln!("warning: cannot catch {sig}: {e}");
            }
        }
    }

    pub fn restore() {
        for sig in [Signal::SIGINT, Signal::SIGTERM] {
            // SAFETY: restoring the default disposition.
            let _ = unsafe { signal(sig, SigHandler::SigDfl) };
        }
    }

    pub fn pending() -> bool {
        HIT.load(Ordering::SeqCst)
    }
}

/// Whether `name` declares `depends_on: {<dep>: {restart: true}}` on a service in `changed`.
fn restarts_with(p: &Project, name: &str, changed: &BTreeSet<String>) -> bool {
    p.services[name]
        .depends_on
        .iter()
        .any(|(dep, d)| d.restart && changed.contains(dep))
}

/// Restarts a service's running containers (a dependency with `restart: true` changed).
fn restart_running(root: &Path, p: &Project, name: &str) -> CmdResult {
    let list = project_containers(root, &p.name, false)?;
    let mut engine = Engine::open(root)?;
    for c in list.iter().filter(|c| service_of(c) == name) {
        if engine.find(&c.id)?.state.status.is_active() {
            eprintln!(" Container {}  Restarting", c.name);
            pre_stop(root, p, c);
            engine.stop(&c.id, None, None)?;
            containers::start_detached(&mut engine, &c.id)?;
            eprintln!(" Container {}  Started", c.name);
            run_hooks(root, p, c, Hook::PostStart)?;
        }
    }
    Ok(0)
}

/// Brings one service to `n` containers of its current configuration: unchanged running
/// ones are left alone, stopped ones started, changed ones (config hash) recreated.
/// Returns whether any container was created or recreated.
fn converge(
    root: &Path,
    p: &Project,
    name: &str,
    n: u32,
    force: bool,
    start: bool,
    existing: &[Container],
) -> Result<bool, Box<dyn std::error::Error>> {
    let hash = config_hash(&p.services[name]);
    let image = image_id(root, &image_name(p, name, &p.services[name]));
    let current = |c: &Container| {
        c.config.labels.get(LABEL_HASH) == Some(&hash) && image.iter().all(|id| *id == c.image_id)
    };
    let mut engine = Engine::open(root)?;
    let mine: Vec<&Container> = existing.iter().filter(|c| service_of(c) == name).collect();
    for c in &mine {
        let num = number_of(c);
        let same = current(c);
        if num > n || !same || force {
            if c.state.status.is_active() {
                pre_stop(root, p, c);
            }
            engine.stop(&c.id, None, None)?;
            engine.remove(&c.id, true, false)?;
            eprintln!(" Container {}  Removed", c.name);
        } else if !engine.find(&c.id)?.state.status.is_active() {
            if start {
                containers::start_detached(&mut engine, &c.id)?;
                eprintln!(" Container {}  Started", c.name);
                run_hooks(root, p, c, Hook::PostStart)?;
            } else {
                eprintln!(" Container {}  Created", c.name);
            }
        } else {
            eprintln!(" Container {}  Running", c.name);
        }
    }
    drop(engine);
    let mut created = false;
    for num in 1..=n {
        let keep = mine
            .iter()
            .any(|c| number_of(c) == num && current(c) && !force);
        if !keep {
            create_container(root, p, name, num, start)?;
            created = true;
        }
    }
    Ok(created)
}

fn health_of(c: &Container) -> Option<&str> {
    c.state.health.as_ref().map(|h| h.status.as_str())
}

/// Waits for what `depends_on` asks of each dependency that is part of this `up`.
fn wait_for_dependencies(root: &Path, p: &Project, name: &str, order: &[String]) -> CmdResult {
    for (dep, d) in &p.services[name].depends_on {
        if !order.contains(dep) {
            continue;
        }
        let cond = d.condition.as_str();
        if cond == "service_started" {
            continue;
        }
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let list: Vec<Container> = project_containers(root, &p.name, false)?
                .into_iter()
                .filter(|c| service_of(c) == dep)
                .collect();
            let done = match cond {
                "service_healthy" => {
                    if let Some(c) = list.iter().find(|c| health_of(c) == Some("unhealthy")) {
                        return Err(format!(
                            "dependency failed to start: container {} is unhealthy",
                            c.name
                        )
                        .into());
                    }
                    if list
                        .iter()
                        .any(|c| c.config.healthcheck.is_none() && c.state.health.is_none())
                    {
                        return Err(format!(
                            "dependency {dep} has no healthcheck: it cannot become healthy"
                        )
                        .into());
                    }
                    !list.is_empty() && list.iter().all(|c| health_of(c) == Some("healthy"))
                }
                "service_completed_successfully" => {
                    if let Some(c) = list
                        .iter()
                        .find(|c| c.state.status == Status::Exited && c.state.exit_code != 0)
                    {
                        return Err(format!(
                            "service {dep:?} didn't complete successfully: exit {}",
                            c.state.exit_code
                        )
                        .into());
                    }
                    !list.is_empty() && list.iter().all(|c| c.state.status == Status::Exited)
                }
                other => return Err(format!("unknown depends_on condition {other:?}").into()),
            };
            if done {
                eprintln!(
                    " Container {}  {}",
                    list.first().map_or("", |c| c.name.as_str()),
                    if cond == "service_healthy" {
                        "Healthy"
                    } else {
                        "Exited"
                    }
                );
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("timed out waiting for {dep} ({cond})").into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(0)
}

fn wait_all(root: &Path, p: &Project, order: &[String], timeout: Duration) -> CmdResult {
    let deadline = Instant::now() + timeout;
    loop {
        let list = project_containers(root, &p.name, false)?;
        let mut ready = true;
        for c in list
            .iter()
            .filter(|c| order.iter().any(|s| s == service_of(c)))
        {
            match (c.state.status, health_of(c)) {
                (_, Some("unhealthy")) => {
                    return Err(format!("container {} is unhealthy", c.name).into())
                }
                (Status::Running, None | Some("healthy")) => {}
                (Status::Exited, _) if c.state.exit_code == 0 => {}
                (Status::Exited | Status::Dead, _) => {
                    return Err(
                        format!("container {} exited ({})", c.name, c.state.exit_code).into(),
                    )
                }
                _ => ready = false,
            }
        }
        if ready {
            return Ok(0);
        }
        if Instant::now() > deadline {
            return Err("timed out waiting for the services to be running and healthy".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn down(
    root: &Path,
    p: &Project,
    volumes: bool,
    rmi: Option<&str>,
    _remove_orphans: bool,
    timeout: Option<i64>,
) -> CmdResult {
    let mut list = project_containers(root, &p.name, true)?;
    // Dependants stop before what they depend on (the reverse of `up`'s order), so a
    // web service never outlives its database; containers of services no longer in the
    // file (orphans) go first.
    let order = berth_compose::start_order(p, &[], false);
    let rank = |c: &Container| {
        order
            .iter()
            .position(|s| s == service_of(c))
            .unwrap_or(usize::MAX)
    };
    list.sort_by_key(|c| std::cmp::Reverse(rank(c)));
    let mut engine = Engine::open(root)?;
    for c in list.iter().filter(|c| c.state.status.is_active()) {
        pre_stop(root, p, c);
        engine.stop(&c.id, timeout, None)?;
        eprintln!(" Container {}  Stopped", c.name);
    }
    for c in &list {
        engine.remove(&c.id, true, volumes)?;
        eprintln!(" Container {}  Removed", c.name);
    }
    let net = berth_net::Net::open(root)?;
    for n in net.list()? {
        if n.labels.get(LABEL_PROJECT) == Some(&p.name) {
            net.remove(&n.name)?;
            eprintln!(" Network {}  Removed", n.name);
        }
    }
    if let Err(e) = std::fs::remove_dir_all(project_state_dir(root, p)) {
        if e.kind() != std::io::ErrorKind::NotFound {
            eprintln!("warning: removing the project's secrets and configs: {e}");
        }
    }
    if volumes {
        // Only volumes this project created carry its label (external ones never do).
        for name in berth_engine::volumes::list(&engine.db)? {
            let info = berth_engine::volumes::inspect(&engine.db, &engine.root, &name)?;
            if info["Labels"][LABEL_PROJECT].as_str() == Some(p.name.as_str()) {
                let users = engine.volume_users(&name)?;
                berth_engine::volumes::remove(&mut engine.db, &engine.root, &name, &users)?;
                eprintln!(" Volume {name}  Removed");
            }
        }
    }
    if let Some(which) = rmi {
        drop(engine);
        for (name, s) in &p.services {
            if which == "local" && s.image.is_some() {
                continue;
            }
            let image = image_name(p, name, s);
            let mut store = berth_registry::client::store::LocalStore::open(root)?;
            if store.find(&image).is_ok() {
                store.remove(&image, false)?;
                eprintln!(" Image {image}  Removed");
            }
        }
    }
    Ok(0)
}

fn ps(
    root: &Path,
    p: &Project,
    all: bool,
    quiet: bool,
    services: bool,
    only: &[String],
) -> CmdResult {
    let list: Vec<Container> = project_containers(root, &p.name, false)?
        .into_iter()
        .filter(|c| all || c.state.status.is_active())
        .filter(|c| wanted(c, only))
        .collect();
    let mut out = std::io::stdout().lock();
    if quiet || services {
        for c in &list {
            writeln!(out, "{}", if quiet { &c.id } else { service_of(c) })?;
        }
        return Ok(0);
    }
    let mut rows = vec![["NAME", "IMAGE", "SERVICE", "STATUS", "PORTS"]
        .map(String::from)
        .to_vec()];
    for c in &list {
        let ports = c
            .state
            .endpoint
            .as_ref()
            .map(|e| {
                e.ports
                    .iter()
                    .map(|(cp, ip, hp)| format!("{ip}:{hp}->{cp}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        rows.push(vec![
            c.name.clone(),
            c.image.clone(),
            service_of(c).to_string(),
            containers::status_text(c),
            ports,
        ]);
    }
    crate::format::table(&mut out, &rows)?;
    Ok(0)
}

const COLOURS: [u8; 6] = [36, 33, 32, 35, 34, 31];

/// Prints the containers' logs prefixed by their names; with `follow`, until every
/// container has stopped (or forever while one runs).
fn logs(
    root: &Path,
    p: &Project,
    follow: bool,
    colour: bool,
    prefix: bool,
    services: &[String],
) -> CmdResult {
    let list: Vec<Container> = project_containers(root, &p.name, false)?
        .into_iter()
        .filter(|c| wanted(c, services))
        .collect();
    let width = list.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let engine = Engine::open(root)?;
    let mut offsets: Vec<u64> = vec![0; list.len()];
    let mut out = std::io::stdout().lock();
    loop {
        for (i, c) in list.iter().enumerate() {
            let (entries, next) =
                berth_engine::logs::read_from(&engine.log_path(&c.id), offsets[i])?;
            offsets[i] = next;
            for e in entries {
                if prefix {
                    let tag = format!("{:<width$} | ", c.name);
                    if colour {
                        let code = COLOURS[i % COLOURS.len()];
                        write!(out, "\x1b[{code}m{tag}\x1b[0m")?;
                    } else {
                        write!(out, "{tag}")?;
                    }
                }
                write!(out, "{}", e.log)?;
                if !e.log.ends_with('\n') {
                    writeln!(out)?;
                }
            }
        }
        out.flush()?;
        if !follow || interrupt::pending() {
            return Ok(0);
        }
        let mut engine = Engine::open(root)?;
        let active = list
            .iter()
            .any(|c| engine.find(&c.id).is_ok_and(|c| c.state.status.is_active()));
        if !active {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn start(root: &Path, p: &Project, services: &[String]) -> CmdResult {
    let order = start_order(p, &selected(p, services)?, true);
    let list = project_containers(root, &p.name, false)?;
    let mut engine = Engine::open(root)?;
    for name in &order {
        wait_for_dependencies(root, p, name, &order)?;
        for c in list.iter().filter(|c| service_of(c) == name) {
            if !engine.find(&c.id)?.state.status.is_active() {
                containers::start_detached(&mut engine, &c.id)?;
                eprintln!(" Container {}  Started", c.name);
                run_hooks(root, p, c, Hook::PostStart)?;
            }
        }
    }
    Ok(0)
}

/// Applies `act` to the selected services' containers, printing `done` for each one it
/// acted on (`act` returns whether it did).
fn each_container(
    root: &Path,
    p: &Project,
    services: &[String],
    done: &str,
    mut act: impl FnMut(&mut Engine, &Container) -> berth_engine::Result<bool>,
) -> CmdResult {
    let mut engine = Engine::open(root)?;
    for c in project_containers(root, &p.name, false)? {
        if wanted(&c, services) && act(&mut engine, &c)? {
            eprintln!(" Container {}  {done}", c.name);
        }
    }
    Ok(0)
}

/// `compose version`: berth's own version (compose is built in).
fn version(short: bool, format: &str) -> CmdResult {
    let v = env!("CARGO_PKG_VERSION");
    match (short, format) {
        (true, _) => println!("{v}"),
        (false, "json") => println!("{}", serde_json::json!({ "version": v })),
        _ => println!("berth compose version v{v}"),
    }
    Ok(0)
}

fn stop(root: &Path, p: &Project, services: &[String], timeout: Option<i64>) -> CmdResult {
    // Dependants stop before what they depend on.
    let mut order = start_order(p, &selected(p, services)?, true);
    order.reverse();
    let list = project_containers(root, &p.name, false)?;
    let mut engine = Engine::open(root)?;
    for name in &order {
        for c in list.iter().filter(|c| service_of(c) == name) {
            if c.state.status.is_active() {
                pre_stop(root, p, c);
                engine.stop(&c.id, timeout, None)?;
                eprintln!(" Container {}  Stopped", c.name);
            }
        }
    }
    Ok(0)
}

fn rm(root: &Path, p: &Project, services: &[String], first_stop: bool, volumes: bool) -> CmdResult {
    if first_stop {
        stop(root, p, services, None)?;
    }
    let list = project_containers(root, &p.name, true)?;
    let mut engine = Engine::open(root)?;
    for c in list.iter().filter(|c| wanted(c, services)) {
        if engine.find(&c.id)?.state.status.is_active() {
            continue;
        }
        engine.remove(&c.id, false, volumes)?;
        eprintln!(" Container {}  Removed", c.name);
    }
    Ok(0)
}

struct OneOff {
    rm: bool,
    detach: bool,
    env: Vec<String>,
    name: Option<String>,
    entrypoint: Option<String>,
    cmd: Vec<String>,
    /// A TTY for the one-off (Compose's default when stdin is a terminal).
    tty: bool,
}

fn run_oneoff(root: &Path, p: &Project, service: &str, no_deps: bool, o: OneOff) -> CmdResult {
    let Some(s) = p.services.get(service) else {
        return Err(format!("no such service: {service}").into());
    };
    if !no_deps && !s.depends_on.is_empty() {
        let deps: Vec<String> = s.depends_on.keys().cloned().collect();
        let u = UpArgs {
            detach: true,
            services: deps,
            ..Default::default()
        };
        up(root, p, &u)?;
    } else {
        ensure_resources(root, p)?;
    }
    let number = project_containers(root, &p.name, true)?
        .iter()
        .filter(|c| service_of(c) == service)
        .map(number_of)
        .max()
        .unwrap_or(0)
        + 1;
    let mut a = run_args(root, p, service, s, number)?;
    let suffix: u32 = std::process::id();
    a.name = Some(
        o.name
            .unwrap_or_else(|| format!("{}-{service}-run-{suffix:x}", p.name)),
    );
    a.label.retain(|l| !l.starts_with(LABEL_ONEOFF));
    a.label.push(format!("{LABEL_ONEOFF}=True"));
    a.rm = o.rm;
    if o.rm {
        a.restart = "no".into();
    }
    a.detach = o.detach;
    // As Compose: a foreground one-off reads our stdin, on a TTY when we have one.
    a.interactive |= !o.detach;
    a.tty |= o.tty;
    a.env.extend(o.env);
    if let Some(ep) = o.entrypoint {
        a.entrypoint = Some(ep);
        a.cmd.clear();
    }
    if !o.cmd.is_empty() {
        a.cmd = match &s.entrypoint {
            Some(ep) if a.entrypoint.as_deref() == ep.first().map(String::as_str) => {
                ep.iter().skip(1).cloned().chain(o.cmd).collect()
            }
            _ => o.cmd,
        };
    }
    Ok(containers::main(root, ContainerCmd::Run(a)))
}

fn ls(root: &Path, all: bool, quiet: bool) -> CmdResult {
    let mut engine = Engine::open(root)?;
    let mut projects: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for c in engine.list()? {
        if let Some(name) = c.config.labels.get(LABEL_PROJECT) {
            let e = projects.entry(name.clone()).or_default();
            e.0 += 1;
            if c.state.status == Status::Running {
                e.1 += 1;
            }
        }
    }
    let mut out = std::io::stdout().lock();
    let mut rows = vec![vec!["NAME".to_string(), "STATUS".to_string()]];
    for (name, (total, running)) in projects {
        if running == 0 && !all {
            continue;
        }
        if quiet {
            writeln!(out, "{name}")?;
            continue;
        }
        let status = if running == total {
            format!("running({running})")
        } else {
            format!("running({running}), exited({})", total - running)
        };
        rows.push(vec![name, status]);
    }
    if !quiet {
        crate::format::table(&mut out, &rows)?;
    }
    Ok(0)
}

fn pull(root: &Path, p: &Project, services: &[String]) -> CmdResult {
    let exe = std::env::current_exe()?;
    let mut code = 0;
    for name in selected(p, services)? {
        let s = &p.services[&name];
        let Some(image) = &s.image else { continue };
        if s.build.is_some() && image_present(root, image) {
            continue;
        }
        eprintln!(" Service {name}  Pulling");
        let st = std::process::Command::new(&exe)
            .arg("--root")
            .arg(root)
            .arg("pull")
            .args(s.platform.as_ref().map(|p| format!("--platform={p}")))
            .arg(image)
            .status()?;
        if !st.success() {
            code = 1;
        }
    }
    Ok(code)
}

fn push(root: &Path, p: &Project, services: &[String]) -> CmdResult {
    let exe = std::env::current_exe()?;
    for name in selected(p, services)? {
        let s = &p.services[&name];
        let (Some(image), Some(_)) = (&s.image, &s.build) else {
            continue;
        };
        eprintln!(" Service {name}  Pushing");
        let st = std::process::Command::new(&exe)
            .arg("--root")
            .arg(root)
            .arg("push")
            .arg(image)
            .status()?;
        if !st.success() {
            return Err(format!("pushing {image} for service {name} failed").into());
        }
    }
    Ok(0)
}

fn images(root: &Path, p: &Project, services: &[String]) -> CmdResult {
    let mut rows = vec![["CONTAINER", "IMAGE", "IMAGE ID"]
        .map(String::from)
        .to_vec()];
    for c in project_containers(root, &p.name, false)? {
        if wanted(&c, services) {
            let id = c.image_id.trim_start_matches("sha256:");
            rows.push(vec![
                c.name.clone(),
                c.image.clone(),
                id.chars().take(12).collect(),
            ]);
        }
    }
    crate::format::table(&mut std::io::stdout().lock(), &rows)?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_compose::YamlValue;

    #[test]
    fn realtime_durations_read_as_microseconds() {
        let v = |y: YamlValue| micros(&Some(y), "cpu_rt_runtime");
        assert_eq!(v(YamlValue::from(95000)), Ok(Some(95000)));
        assert_eq!(v(YamlValue::from("400ms")), Ok(Some(400_000)));
        assert_eq!(v(YamlValue::from("1s")), Ok(Some(1_000_000)));
        assert!(v(YamlValue::from("soon"))
            .unwrap_err()
            .starts_with("cpu_rt_runtime: invalid duration"));
        assert_eq!(micros(&None, "cpu_rt_period"), Ok(None));
    }
}
