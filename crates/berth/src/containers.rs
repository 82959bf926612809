//! Docker's container commands: run, create, start, stop, restart, kill, rm, ps, logs,
//! exec, inspect, wait, top, pause/unpause, rename, port, update, prune, attach.
//! Flags and printing only; the work is berth-engine's.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::Path;
use std::time::{Duration, SystemTime};

use berth_engine::monitor::{self, PumpOptions};
use berth_engine::record::{HealthConfig, MountSpec, RestartPolicy, RunConfig};
use berth_engine::units::parse_bytes;
use berth_engine::{Container, CreateRequest, Engine, ImageInfo, Status};
use berth_image::meta::MetaStore;
use clap::{ArgAction, Args, Subcommand};
use serde_json::{json, Value};

use crate::format;

type CmdResult = Result<i32, Box<dyn std::error::Error>>;

/// `run` and `create` flags.
#[derive(Args, Debug, Clone, Default)]
pub struct RunArgs {
    /// Run in the background and print the container id.
    #[arg(short, long)]
    pub detach: bool,
    /// Keep STDIN open.
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY.
    #[arg(short, long)]
    pub tty: bool,
    /// Remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Assign a name to the container.
    #[arg(long)]
    pub name: Option<String>,
    /// Set environment variables.
    #[arg(short, long)]
    pub env: Vec<String>,
    /// Read in a file of environment variables.
    #[arg(long)]
    pub env_file: Vec<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>]).
    #[arg(short, long)]
    pub user: Option<String>,
    /// Overwrite the default ENTRYPOINT of the image.
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Container host name.
    #[arg(short = 'h', long)]
    pub hostname: Option<String>,
    /// Container NIS domain name.
    #[arg(long)]
    pub domainname: Option<String>,
    /// Add a custom host-to-IP mapping (host:ip).
    #[arg(long)]
    pub add_host: Vec<String>,
    /// Bind mount a volume.
    #[arg(short, long)]
    pub volume: Vec<String>,
    /// Attach a filesystem mount to the container.
    #[arg(long)]
    pub mount: Vec<String>,
    /// Mount a tmpfs directory.
    #[arg(long)]
    pub tmpfs: Vec<String>,
    /// Mount the container's root filesystem as read only.
    #[arg(long)]
    pub read_only: bool,
    /// Publish a container's port(s) to the host.
    #[arg(short, long)]
    pub publish: Vec<String>,
    /// Publish all exposed ports to random ports.
    #[arg(short = 'P', long)]
    pub publish_all: bool,
    /// Expose a port or a range of ports.
    #[arg(long)]
    pub expose: Vec<String>,
    /// Connect a container to a network.
    #[arg(long, alias = "net", default_value = "bridge")]
    pub network: String,
    /// Set custom DNS servers.
    #[arg(long)]
    pub dns: Vec<String>,
    /// Set custom DNS search domains.
    #[arg(long)]
    pub dns_search: Vec<String>,
    /// Set DNS options.
    #[arg(long, alias = "dns-opt")]
    pub dns_option: Vec<String>,
    /// Add Linux capabilities.
    #[arg(long)]
    pub cap_add: Vec<String>,
    /// Drop Linux capabilities.
    #[arg(long)]
    pub cap_drop: Vec<String>,
    /// Give extended privileges to this container.
    #[arg(long)]
    pub privileged: bool,
    /// Security options.
    #[arg(long)]
    pub security_opt: Vec<String>,
    /// Memory limit.
    #[arg(short, long)]
    pub memory: Option<String>,
    /// Swap limit equal to memory plus swap: -1 to enable unlimited swap.
    #[arg(long)]
    pub memory_swap: Option<String>,
    /// Number of CPUs.
    #[arg(long)]
    pub cpus: Option<f64>,
    /// CPU shares (relative weight).
    #[arg(short = 'c', long)]
    pub cpu_shares: Option<u64>,
    /// CPUs in which to allow execution (0-3, 0,1).
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    /// Tune container pids limit (-1 for unlimited).
    #[arg(long, allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// Ulimit options.
    #[arg(long)]
    pub ulimit: Vec<String>,
    /// Run an init inside the container that forwards signals and reaps processes.
    #[arg(long)]
    pub init: bool,
    /// Restart policy to apply when a container exits.
    #[arg(long, default_value = "no")]
    pub restart: String,
    /// Command to run to check health.
    #[arg(long)]
    pub health_cmd: Option<String>,
    /// Time between running the check (ms|s|m|h).
    #[arg(long)]
    pub health_interval: Option<String>,
    /// Maximum time to allow one check to run (ms|s|m|h).
    #[arg(long)]
    pub health_timeout: Option<String>,
    /// Consecutive failures needed to report unhealthy.
    #[arg(long)]
    pub health_retries: Option<u32>,
    /// Start period for the container to initialize before starting health-retries countdown.
    #[arg(long)]
    pub health_start_period: Option<String>,
    /// Time between running the check during the start period (ms|s|m|h).
    #[arg(long)]
    pub health_start_interval: Option<String>,
    /// Disable any container-specified HEALTHCHECK.
    #[arg(long)]
    pub no_healthcheck: bool,
    /// Signal to stop the container.
    #[arg(long)]
    pub stop_signal: Option<String>,
    /// Timeout (in seconds) to stop a container.
    #[arg(long, allow_hyphen_values = true)]
    pub stop_timeout: Option<i64>,
    /// Set meta data on a container.
    #[arg(short, long)]
    pub label: Vec<String>,
    /// Pull image before running ("always", "missing", "never").
    #[arg(long, default_value = "missing")]
    pub pull: String,
    /// Set platform if server is multi-platform capable.
    #[arg(long)]
    pub platform: Option<String>,
    /// The OCI runtime: berth's own (`berth`; `runc`, Docker's default name, means it).
    #[arg(long)]
    pub runtime: Option<String>,
    /// The driver of the container's volumes (only `local`).
    #[arg(long)]
    pub volume_driver: Option<String>,
    /// Skip image verification (berth verifies no signatures: accepted for Docker's sake).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub disable_content_trust: Option<bool>,
    /// Kernel memory limit: deprecated by Docker and ignored, with its warning.
    #[arg(long)]
    pub kernel_memory: Option<String>,
    /// Storage driver options (`size=`): refused as Docker's overlay2 refuses them where
    /// the backing filesystem has no project quotas.
    #[arg(long)]
    pub storage_opt: Vec<String>,
    /// Sysctl options.
    #[arg(long, value_parser = namespaced_sysctl)]
    pub sysctl: Vec<String>,
    /// Add a host device to the container.
    #[arg(long)]
    pub device: Vec<String>,
    /// Size of /dev/shm.
    #[arg(long)]
    pub shm_size: Option<String>,
    /// Add additional groups to join.
    #[arg(long)]
    pub group_add: Vec<String>,
    /// Mount volumes from the specified container(s) (NAME[:ro|:rw]).
    #[arg(long)]
    pub volumes_from: Vec<String>,
    /// Add network-scoped alias for the container.
    #[arg(long)]
    pub network_alias: Vec<String>,
    /// IPv4 address on a user-defined network (e.g., 172.30.100.104).
    #[arg(long)]
    pub ip: Option<String>,
    /// Container MAC address (e.g., 92:d0:c6:0a:29:33).
    #[arg(long)]
    pub mac_address: Option<String>,
    /// Add link to another container (NAME[:ALIAS]).
    #[arg(long)]
    pub link: Vec<String>,
    /// User namespace to use: host (berth does not remap users, so it is the only one).
    #[arg(long)]
    pub userns: Option<String>,
    /// PID namespace to use (host or container:NAME).
    #[arg(long)]
    pub pid: Option<String>,
    /// IPC mode to use (none, private, shareable, host or container:NAME).
    #[arg(long)]
    pub ipc: Option<String>,
    /// UTS namespace to use (host).
    #[arg(long)]
    pub uts: Option<String>,
    /// Cgroup namespace to use (host or private).
    #[arg(long)]
    pub cgroupns: Option<String>,
    /// Optional parent cgroup for the container.
    #[arg(long)]
    pub cgroup_parent: Option<String>,
    /// Limit CPU CFS (Completely Fair Scheduler) period.
    #[arg(long)]
    pub cpu_period: Option<u64>,
    /// Limit CPU CFS (Completely Fair Scheduler) quota.
    #[arg(long, allow_hyphen_values = true)]
    pub cpu_quota: Option<i64>,
    /// Limit CPU real-time period in microseconds.
    #[arg(long)]
    pub cpu_rt_period: Option<u64>,
    /// Limit CPU real-time runtime in microseconds.
    #[arg(long)]
    pub cpu_rt_runtime: Option<i64>,
    /// MEMs in which to allow execution (0-3, 0,1).
    #[arg(long)]
    pub cpuset_mems: Option<String>,
    /// Memory soft limit.
    #[arg(long)]
    pub memory_reservation: Option<String>,
    /// Tune container memory swappiness (0 to 100).
    #[arg(long, allow_hyphen_values = true)]
    pub memory_swappiness: Option<i64>,
    /// Disable OOM Killer.
    #[arg(long)]
    pub oom_kill_disable: bool,
    /// Tune host's OOM preferences (-1000 to 1000).
    #[arg(long, allow_hyphen_values = true)]
    pub oom_score_adj: Option<i32>,
    /// Block IO (relative weight), between 10 and 1000, or 0 to disable.
    #[arg(long)]
    pub blkio_weight: Option<u16>,
    /// Add a rule to the cgroup allowed devices list ('c 1:3 mr').
    #[arg(long)]
    pub device_cgroup_rule: Vec<String>,
    /// Block IO weight of a device (DEVICE:WEIGHT, 10 to 1000).
    #[arg(long)]
    pub blkio_weight_device: Vec<String>,
    /// Limit read rate from a device (DEVICE:RATE, e.g. /dev/sda:1mb).
    #[arg(long)]
    pub device_read_bps: Vec<String>,
    /// Limit write rate to a device (DEVICE:RATE).
    #[arg(long)]
    pub device_write_bps: Vec<String>,
    /// Limit read rate (IO per second) from a device (DEVICE:NUMBER).
    #[arg(long)]
    pub device_read_iops: Vec<String>,
    /// Limit write rate (IO per second) to a device (DEVICE:NUMBER).
    #[arg(long)]
    pub device_write_iops: Vec<String>,
    /// Add an annotation to the container (passed through to the OCI runtime).
    #[arg(long)]
    pub annotation: Vec<String>,
    /// Logging driver for the container (json-file, local, none).
    #[arg(long)]
    pub log_driver: Option<String>,
    /// Log driver options (max-size, max-file).
    #[arg(long)]
    pub log_opt: Vec<String>,
    /// Write the container ID to the file.
    #[arg(long)]
    pub cidfile: Option<String>,
    /// Read in a line delimited file of labels.
    #[arg(long)]
    pub label_file: Vec<String>,
    /// Suppress the pull output.
    #[arg(short, long)]
    pub quiet: bool,
    /// Attach to STDIN, STDOUT or STDERR (all of them when not given).
    #[arg(short = 'a', long = "attach")]
    pub attach: Vec<String>,
    /// Proxy received signals to the process (default true). With false, SIGINT and
    /// SIGTERM reach neither the container nor berth, which stays its monitor (berth has
    /// no daemon to hand the container to).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub sig_proxy: Option<bool>,
    /// Override the key sequence for detaching from a `-it` container (default
    /// ctrl-p,ctrl-q).
    #[arg(long)]
    pub detach_keys: Option<String>,
    /// Print help.
    #[arg(long, action = ArgAction::Help)]
    pub help: Option<bool>,
    /// The image.
    #[arg(skip)]
    pub image: String,
    /// The command and its arguments.
    #[arg(skip)]
    pub cmd: Vec<String>,
    /// The image, then the command and its arguments, as typed: one trailing list, so
    /// that everything after the image belongs to the command even when it looks like
    /// one of run's flags (`run --entrypoint ls IMG -d /`), as Docker stops parsing its
    /// flags at the image. Split into `image` and `cmd` by [`RunArgs::split_positional`].
    #[arg(
        value_name = "IMAGE [COMMAND] [ARG...]",
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub(crate) positional: Vec<String>,
}

impl RunArgs {
    /// Moves the parsed `IMAGE [COMMAND] [ARG...]` list into `image` and `cmd`
    /// (arguments built in code, as compose's, already have them and no list).
    fn split_positional(mut self) -> Self {
        let mut rest = std::mem::take(&mut self.positional).into_iter();
        if let Some(image) = rest.next() {
            self.image = image;
            self.cmd = rest.collect();
        }
        self
    }
}

#[derive(Args, Debug, Clone)]
pub struct PsArgs {
    /// Show all containers (default shows just running).
    #[arg(short, long)]
    all: bool,
    /// Only display container IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Filter output based on conditions provided.
    #[arg(short, long)]
    filter: Vec<String>,
    /// Format output: table, json or a Go-style template.
    #[arg(long)]
    format: Option<String>,
    /// Don't truncate output.
    #[arg(long)]
    no_trunc: bool,
    /// Show n last created containers (includes all states).
    #[arg(short = 'n', long, allow_hyphen_values = true)]
    last: Option<i64>,
    /// Show the latest created container (includes all states).
    #[arg(short, long)]
    latest: bool,
    /// Display total file sizes.
    #[arg(short, long)]
    size: bool,
}

/// The container commands at berth's top level.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
// Each subcommand's arguments are built only when it is the one invoked: building
// the whole tree cost every command ~1 ms of start-up (page faults, allocations).
#[command(defer = true)]
pub enum ContainerCmd {
    /// Create and run a new container from an image.
    #[command(disable_help_flag = true)]
    Run(RunArgs),
    /// Create a new container.
    #[command(disable_help_flag = true)]
    Create(RunArgs),
    /// Start one or more stopped containers.
    Start {
        /// Attach STDOUT/STDERR and forward signals.
        #[arg(short, long)]
        attach: bool,
        /// Attach container's STDIN.
        #[arg(short, long)]
        interactive: bool,
        /// Override the key sequence for detaching from a tty container.
        #[arg(long, default_value = "ctrl-p,ctrl-q")]
        detach_keys: String,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Stop one or more running containers.
    Stop {
        /// Seconds to wait before killing the container.
        #[arg(
            short = 't',
            long = "time",
            alias = "timeout",
            allow_hyphen_values = true
        )]
        time: Option<i64>,
        /// Signal to send to the container.
        #[arg(short, long)]
        signal: Option<String>,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Restart one or more containers.
    Restart {
        #[arg(
            short = 't',
            long = "time",
            alias = "timeout",
            allow_hyphen_values = true
        )]
        time: Option<i64>,
        #[arg(short, long)]
        signal: Option<String>,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Kill one or more running containers.
    Kill {
        /// Signal to send to the container.
        #[arg(short, long, default_value = "KILL")]
        signal: String,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Remove one or more containers.
    Rm {
        /// Force the removal of a running container (uses SIGKILL).
        #[arg(short, long)]
        force: bool,
        /// Remove anonymous volumes associated with the container.
        #[arg(short, long)]
        volumes: bool,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// List containers.
    Ps(PsArgs),
    /// Fetch the logs of a container.
    Logs {
        /// Follow log output.
        #[arg(short, long)]
        follow: bool,
        /// Number of lines to show from the end of the logs.
        #[arg(short = 'n', long, default_value = "all")]
        tail: String,
        /// Show logs since timestamp or relative (e.g. 42m).
        #[arg(long)]
        since: Option<String>,
        /// Show logs before a timestamp or relative (e.g. 42m).
        #[arg(long)]
        until: Option<String>,
        /// Show timestamps.
        #[arg(short, long)]
        timestamps: bool,
        /// Show extra details provided to logs: the labels and variables `--log-opt
        /// labels=/env=` name, which berth's json-file driver does not record, so there
        /// are none to show.
        #[arg(long)]
        details: bool,
        container: String,
    },
    /// Execute a command in a running container.
    Exec {
        /// Detached mode: run command in the background.
        #[arg(short, long)]
        detach: bool,
        /// Keep STDIN open.
        #[arg(short, long)]
        interactive: bool,
        /// Allocate a pseudo-TTY.
        #[arg(short, long)]
        tty: bool,
        /// Set environment variables.
        #[arg(short, long)]
        env: Vec<String>,
        /// Read in a file of environment variables.
        #[arg(long)]
        env_file: Vec<String>,
        /// Give extended privileges to the command (every capability).
        #[arg(long)]
        privileged: bool,
        /// Username or UID.
        #[arg(short, long)]
        user: Option<String>,
        /// Working directory inside the container.
        #[arg(short, long)]
        workdir: Option<String>,
        container: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        cmd: Vec<String>,
    },
    /// Display detailed information on one or more containers.
    Inspect {
        /// `json` or a Go-style template such as `{{.State.Status}}`.
        #[arg(short, long)]
        format: Option<String>,
        /// Only this kind of object: `container`, `image`, `volume` or `network`
        /// (`berth inspect`; `container inspect` looks at containers only).
        #[arg(long = "type")]
        kind: Option<String>,
        /// Display total file sizes (SizeRw, SizeRootFs).
        #[arg(short, long)]
        size: bool,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Block until one or more containers stop, then print their exit codes.
    Wait {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Display the running processes of a container.
    Top { container: String },
    /// Pause all processes within one or more containers.
    Pause {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Unpause all processes within one or more containers.
    Unpause {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Rename a container.
    Rename { container: String, new_name: String },
    /// List port mappings for the container.
    Port {
        container: String,
        private_port: Option<String>,
    },
    /// Update configuration of one or more containers.
    Update {
        #[arg(short, long)]
        memory: Option<String>,
        #[arg(long)]
        memory_swap: Option<String>,
        #[arg(long)]
        cpus: Option<f64>,
        #[arg(short = 'c', long)]
        cpu_shares: Option<u64>,
        #[arg(long)]
        cpuset_cpus: Option<String>,
        #[arg(long)]
        cpuset_mems: Option<String>,
        #[arg(long)]
        cpu_period: Option<u64>,
        #[arg(long, allow_hyphen_values = true)]
        cpu_quota: Option<i64>,
        #[arg(long)]
        cpu_rt_period: Option<u64>,
        #[arg(long)]
        cpu_rt_runtime: Option<i64>,
        #[arg(long)]
        memory_reservation: Option<String>,
        #[arg(long)]
        blkio_weight: Option<u16>,
        #[arg(long, allow_hyphen_values = true)]
        pids_limit: Option<i64>,
        #[arg(long)]
        restart: Option<String>,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Attach to a running container's output.
    Attach {
        /// Do not attach STDIN.
        #[arg(long)]
        no_stdin: bool,
        /// Override the key sequence for detaching a container (tty containers).
        #[arg(long, default_value = "ctrl-p,ctrl-q")]
        detach_keys: String,
        container: String,
    },
    /// Copy files between a container and the host (`-` for a tar stream).
    Cp {
        /// Archive mode (always on: owners and modes are kept).
        #[arg(short, long)]
        archive: bool,
        /// Always follow symbol links in SRC_PATH.
        #[arg(short = 'L', long)]
        follow_link: bool,
        src: String,
        dst: String,
    },
    /// Create a new image from a container's changes.
    Commit {
        /// Author (e.g., "John Hannibal Smith <hannibal@a-team.com>").
        #[arg(short, long)]
        author: Option<String>,
        /// Apply Dockerfile instruction to the created image.
        #[arg(short, long)]
        change: Vec<String>,
        /// Commit message.
        #[arg(short, long)]
        message: Option<String>,
        /// Pause container during commit.
        #[arg(short, long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
        pause: bool,
        container: String,
        /// REPOSITORY[:TAG] for the new image.
        repository: Option<String>,
    },
    /// Inspect changes to files on a container's filesystem.
    Diff { container: String },
    /// Export a container's filesystem as a tar archive.
    Export {
        /// Write to a file, instead of STDOUT.
        #[arg(short, long)]
        output: Option<std::path::PathBuf>,
        container: String,
    },
    /// Display a sample of containers' resource usage.
    Stats {
        /// Disable streaming stats and only pull the first result (the only mode).
        #[arg(long)]
        no_stream: bool,
        /// Show all containers (default shows just running).
        #[arg(short, long)]
        all: bool,
        #[arg(long)]
        format: Option<String>,
        containers: Vec<String>,
    },
    /// Runs a detached container's monitor (internal).
    #[command(hide = true)]
    ContainerMonitor { id: String },
    /// Runs one health probe and records it (internal; the monitor's timer starts it).
    #[command(hide = true)]
    ContainerHealth { id: String },
}

/// `berth container ...`.
// Parsed once per process: the size of the flag structs does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
// Each subcommand's arguments are built only when it is the one invoked: building
// the whole tree cost every command ~1 ms of start-up (page faults, allocations).
#[command(defer = true)]
pub enum ContainerSub {
    #[command(flatten)]
    Common(ContainerCmd),
    /// List containers.
    #[command(alias = "list")]
    Ls(PsArgs),
    /// Remove all stopped containers.
    Prune {
        /// Do not prompt for confirmation.
        #[arg(short, long)]
        force: bool,
        /// Provide filter values (`until=24h`, `label=KEY[=VALUE]`, `label!=KEY`).
        #[arg(long)]
        filter: Vec<String>,
    },
}

pub(crate) fn fail(e: impl std::fmt::Display) -> i32 {
    eprintln!("Error response from daemon: {e}");
    1
}

pub fn container_sub(root: &Path, cmd: ContainerSub) -> i32 {
    match cmd {
        ContainerSub::Common(c) => main(root, c),
        ContainerSub::Ls(a) => report(ps(root, &a)),
        ContainerSub::Prune { force, filter } => report(prune(root, force, &filter)),
    }
}

fn report(r: CmdResult) -> i32 {
    match r {
        Ok(c) => c,
        Err(e) => {
            eprintln!("Error: {e}");
            125
        }
    }
}

pub fn main(root: &Path, cmd: ContainerCmd) -> i32 {
    match cmd {
        ContainerCmd::Run(a) => run(root, a.split_positional()),
        ContainerCmd::Create(a) => create_cmd(root, a.split_positional()),
        ContainerCmd::Start {
            attach,
            interactive,
            detach_keys,
            containers,
        } => match crate::attach::parse_detach_keys(&detach_keys) {
            Ok(keys) => start(root, attach || interactive, interactive, &keys, &containers),
            Err(e) => {
                eprintln!("{e}");
                125
            }
        },
        ContainerCmd::Stop {
            time,
            signal,
            containers,
        } => each(root, &containers, |e, c| {
            e.stop(c, time, signal.as_deref()).map(|_| ())
        }),
        ContainerCmd::Restart {
            time,
            signal,
            containers,
        } => each(root, &containers, |e, c| {
            let c = e.stop(c, time, signal.as_deref())?;
            start_detached(e, &c.id)
        }),
        ContainerCmd::Kill { signal, containers } => {
            each(root, &containers, |e, c| e.kill(c, &signal).map(|_| ()))
        }
        ContainerCmd::Rm {
            force,
            volumes,
            containers,
        } => each(root, &containers, |e, c| {
            e.remove(c, force, volumes).map(|_| ())
        }),
        ContainerCmd::Ps(a) => report(ps(root, &a)),
        ContainerCmd::Logs {
            follow,
            tail,
            since,
            until,
            timestamps,
            container,
            ..
        } => report(logs(
            root,
            &container,
            follow,
            &tail,
            since.as_deref(),
            until.as_deref(),
            timestamps,
        )),
        ContainerCmd::Exec {
            detach,
            interactive,
            tty,
            env,
            env_file,
            privileged,
            user,
            workdir,
            container,
            cmd,
        } => {
            let mut all_env = Vec::new();
            for f in &env_file {
                match read_env_file(f) {
                    Ok(v) => all_env.extend(v),
                    Err(e) => {
                        eprintln!("berth: {e}");
                        return 125;
                    }
                }
            }
            all_env.extend(env.iter().filter_map(|e| expand_env(e)));
            let req = berth_engine::ExecRequest {
                args: cmd,
                env: all_env,
                user,
                workdir,
                tty,
                privileged,
            };
            exec(root, &container, &req, interactive, detach)
        }
        ContainerCmd::Inspect {
            format,
            containers,
            size,
            ..
        } => report(inspect(root, &containers, format.as_deref(), size)),
        ContainerCmd::Wait { containers } => wait(root, &containers),
        ContainerCmd::Top { container } => report(top(root, &container)),
        ContainerCmd::Pause { containers } => {
            each(root, &containers, |e, c| e.pause(c).map(|_| ()))
        }
        ContainerCmd::Unpause { containers } => {
            each(root, &containers, |e, c| e.unpause(c).map(|_| ()))
        }
        ContainerCmd::Rename {
            container,
            new_name,
        } => match Engine::open(root).and_then(|mut e| e.rename(&container, &new_name)) {
            Ok(()) => 0,
            Err(e) => fail(e),
        },
        ContainerCmd::Port {
            container,
            private_port,
        } => report(port(root, &container, private_port.as_deref())),
        ContainerCmd::Update {
            memory,
            memory_swap,
            cpus,
            cpu_shares,
            cpuset_cpus,
            cpuset_mems,
            cpu_period,
            cpu_quota,
            cpu_rt_period,
            cpu_rt_runtime,
            memory_reservation,
            blkio_weight,
            pids_limit,
            restart,
            containers,
        } => {
            let parsed = (|| -> Result<_, String> {
                check_realtime(cpu_rt_period, cpu_rt_runtime)?;
                Ok((
                    memory.as_deref().map(parse_bytes).transpose()?,
                    memory_swap.as_deref().map(parse_bytes).transpose()?,
                    memory_reservation.as_deref().map(parse_bytes).transpose()?,
                    restart.as_deref().map(RestartPolicy::parse).transpose()?,
                ))
            })();
            let (mem, swap, reservation, restart) = match parsed {
                Ok(v) => v,
                Err(e) => return fail(e),
            };
            each(root, &containers, |e, c| {
                e.update(c, |cfg| {
                    set(&mut cfg.memory, mem);
                    set(&mut cfg.memory_swap, swap);
                    set(&mut cfg.nano_cpus, cpus.map(|n| (n * 1e9) as i64));
                    set(&mut cfg.cpu_shares, cpu_shares);
                    set(&mut cfg.cpuset_cpus, cpuset_cpus.clone());
                    set(&mut cfg.cpuset_mems, cpuset_mems.clone());
                    set(&mut cfg.cpu_period, cpu_period);
                    set(&mut cfg.cpu_quota, cpu_quota);
                    set(&mut cfg.cpu_rt_period, cpu_rt_period);
                    set(&mut cfg.cpu_rt_runtime, cpu_rt_runtime);
                    set(&mut cfg.memory_reservation, reservation);
                    set(&mut cfg.blkio_weight, blkio_weight);
                    set(&mut cfg.pids_limit, pids_limit);
                    if let Some(r) = &restart {
                        cfg.restart = r.clone();
                    }
                })
                .map(|_| ())
            })
        }
        ContainerCmd::Attach {
            container,
            no_stdin,
            detach_keys,
        } => match crate::attach::parse_detach_keys(&detach_keys) {
            Ok(keys) => crate::attach::attach(root, &container, !no_stdin, &keys),
            Err(e) => {
                eprintln!("berth: {e}");
                1
            }
        },
        ContainerCmd::Cp { src, dst, .. } => report(crate::fs_cmds::cp(root, &src, &dst)),
        ContainerCmd::Commit {
            author,
            change,
            message,
            pause,
            container,
            repository,
        } => report(crate::fs_cmds::commit(
            root,
            &crate::fs_cmds::CommitArgs {
                container,
                repository,
                changes: change,
                message,
                author,
                pause,
            },
        )),
        ContainerCmd::Diff { container } => report(crate::fs_cmds::diff(root, &container)),
        ContainerCmd::Export { output, container } => {
            report(crate::fs_cmds::export(root, &container, output.as_deref()))
        }
        ContainerCmd::Stats {
            format, containers, ..
        } => report(crate::fs_cmds::stats(root, &containers, format.as_deref())),
        ContainerCmd::ContainerHealth { id } => {
            match Engine::open(root).and_then(|mut e| e.health_probe(&id)) {
                Ok(()) => 0,
                Err(e) => fail(e),
            }
        }
        ContainerCmd::ContainerMonitor { id } => {
            monitor::main(root, &id, monitor::report_fd(), None, None)
        }
    }
}

/// Runs `f` on each named container, printing the name on success (Docker's output).
fn each(
    root: &Path,
    names: &[String],
    mut f: impl FnMut(&mut Engine, &str) -> berth_engine::Result<()>,
) -> i32 {
    let mut engine = match Engine::open(root) {
        Ok(e) => e,
        Err(e) => return fail(e),
    };
    let mut code = 0;
    for n in names {
        match f(&mut engine, n) {
            Ok(()) => println!("{n}"),
            Err(e) => code = fail(e),
        }
    }
    code
}

fn parse_duration_ns(s: &str) -> Result<u64, String> {
    humantime::parse_duration(s)
        .map(|d| d.as_nanos() as u64)
        .map_err(|e| format!("invalid duration {s:?}: {e}"))
}

/// `update`: a limit given on the command line replaces the recorded one; one not given
/// leaves it as it is.
fn set<T>(slot: &mut Option<T>, given: Option<T>) {
    if given.is_some() {
        *slot = given;
    }
}

fn read_env_file(path: &str) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("open {path}: {e}"))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut out = Vec::new();
    for line in text.lines() {
        match env_file_line(line) {
            Ok(Some(v)) => out.push(v),
            Ok(None) => {}
            Err(e) => return Err(format!("invalid env file ({path}): {e}")),
        }
    }
    Ok(out)
}

/// One line of an env file, read as Docker's client reads it: leading blanks dropped, the
/// value kept as written (trailing blanks and quotes included), a name with blanks in it
/// refused (`A = 1` is an error, not `A =" 1"`), a bare name taking the caller's value or
/// nothing when unset.
fn env_file_line(line: &str) -> Result<Option<String>, String> {
    let line = line.trim_start();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let (name, value) = match line.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (line, None),
    };
    if name.contains(char::is_whitespace) {
        return Err(format!("variable '{name}' contains whitespaces"));
    }
    if name.is_empty() {
        return Err(format!("no variable name on line '{line}'"));
    }
    Ok(match value {
        Some(v) => Some(format!("{name}={v}")),
        None => std::env::var(name).ok().map(|v| format!("{name}={v}")),
    })
}

fn expand_env(e: &str) -> Option<String> {
    if e.contains('=') {
        Some(e.to_string())
    } else {
        std::env::var(e).ok().map(|v| format!("{e}={v}"))
    }
}

/// `-v src:dst[:opts]` or `-v /dst`.
fn parse_volume(v: &str) -> Result<MountSpec, String> {
    let parts: Vec<&str> = v.split(':').collect();
    let (src, dst, opts) = match parts.as_slice() {
        [d] => ("", *d, ""),
        [s, d] => (*s, *d, ""),
        [s, d, o] => (*s, *d, *o),
        _ => return Err(format!("invalid volume specification: '{v}'")),
    };
    if !dst.starts_with('/') {
        return Err(format!(
            "invalid volume specification: '{v}': the mount point must be absolute"
        ));
    }
    let read_only = opts.split(',').any(|o| o == "ro");
    let bind = src.starts_with('/') || src.starts_with('.');
    let source = if bind {
        std::path::absolute(src)
            .map_err(|e| format!("{src}: {e}"))?
            .display()
            .to_string()
    } else {
        src.to_string()
    };
    Ok(MountSpec {
        kind: if bind { "bind" } else { "volume" }.into(),
        source,
        destination: dst.into(),
        read_only,
        // Docker creates a missing bind source for -v (not for --mount).
        options: if bind { vec!["create".into()] } else { vec![] },
        anonymous: src.is_empty(),
    })
}

/// `--mount type=bind,source=..,target=..,readonly`.
fn parse_mount(s: &str) -> Result<MountSpec, String> {
    let mut m = MountSpec {
        kind: "volume".into(),
        source: String::new(),
        destination: String::new(),
        read_only: false,
        options: vec![],
        anonymous: false,
    };
    for kv in s.split(',') {
        let (k, v) = kv.split_once('=').unwrap_or((kv, "true"));
        match k {
            "type" => m.kind = v.into(),
            "source" | "src" => m.source = v.into(),
            "target" | "destination" | "dst" => m.destination = v.into(),
            "readonly" | "ro" => m.read_only = v != "false" && v != "0",
            "tmpfs-size" => m.options.push(format!("size={}", parse_bytes(v)?)),
            "tmpfs-mode" => m.options.push(format!("mode={v}")),
            "bind-propagation" | "volume-nocopy" | "consistency" => {}
            _ => return Err(format!("invalid field '{k}' in --mount {s}")),
        }
    }
    if m.destination.is_empty() {
        return Err("invalid mount config: target is required".into());
    }
    if !["bind", "volume", "tmpfs"].contains(&m.kind.as_str()) {
        return Err(format!("invalid mount type {:?}", m.kind));
    }
    if m.kind == "volume" && m.source.is_empty() {
        m.anonymous = true;
    }
    Ok(m)
}

/// `--tmpfs /path[:opts]`.
fn parse_tmpfs(s: &str) -> MountSpec {
    let (dst, opts) = s.split_once(':').unwrap_or((s, ""));
    MountSpec {
        kind: "tmpfs".into(),
        source: String::new(),
        destination: dst.into(),
        read_only: false,
        options: opts
            .split(',')
            .filter(|o| !o.is_empty())
            .map(str::to_owned)
            .collect(),
        anonymous: false,
    }
}

/// Docker's checks of the namespace modes and the resource flags that go with them.
fn check_modes(a: &RunArgs) -> Result<(), String> {
    let container_or = |v: &str, ok: &[&str]| {
        ok.contains(&v) || v.strip_prefix("container:").is_some_and(|n| !n.is_empty())
    };
    if let Some(p) = a.pid.as_deref().filter(|p| !container_or(p, &["", "host"])) {
        return Err(format!("invalid PID mode: {p}"));
    }
    let ipc = ["", "none", "private", "shareable", "host"];
    if let Some(m) = a.ipc.as_deref().filter(|m| !container_or(m, &ipc)) {
        return Err(format!("invalid IPC mode: {m}"));
    }
    match a.uts.as_deref() {
        None | Some("") => {}
        Some("host") if a.hostname.is_some() => {
            return Err("Conflicting options: hostname and the UTS mode".into())
        }
        Some("host") => {}
        Some(m) => return Err(format!("invalid UTS mode: {m}")),
    }
    if let Some(m) = a
        .cgroupns
        .as_deref()
        .filter(|m| !["", "host", "private"].contains(m))
    {
        return Err(format!("invalid cgroup namespace mode: {m}"));
    }
    if a.cgroup_parent
        .as_deref()
        .is_some_and(|p| p.split('/').any(|c| c == ".."))
    {
        return Err("invalid --cgroup-parent: .. is not allowed".into());
    }
    if a.cpus.is_some() && a.cpu_period.is_some() {
        return Err("Conflicting options: Nano CPUs and CPU Period cannot both be set".into());
    }
    if a.cpus.is_some() && a.cpu_quota.is_some() {
        return Err("Conflicting options: Nano CPUs and CPU Quota cannot both be set".into());
    }
    if a.cpu_period
        .is_some_and(|p| !(1000..=1_000_000).contains(&p))
    {
        return Err(
            "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)"
                .into(),
        );
    }
    if a.cpu_quota.is_some_and(|q| q != -1 && q < 1000) {
        return Err("CPU cfs quota can not be less than 1ms (i.e. 1000)".into());
    }
    check_realtime(a.cpu_rt_period, a.cpu_rt_runtime)?;
    if let Some(s) = a
        .memory_swappiness
        .filter(|s| *s != -1 && !(0..=100).contains(s))
    {
        return Err(format!(
            "Invalid value: {s}, valid memory swappiness range is 0-100"
        ));
    }
    if let Some(o) = a.oom_score_adj.filter(|o| !(-1000..=1000).contains(o)) {
        return Err(format!(
            "Invalid value {o}, range for oom score adj is [-1000, 1000]"
        ));
    }
    if a.blkio_weight
        .is_some_and(|w| w != 0 && !(10..=1000).contains(&w))
    {
        return Err("Range of blkio weight is from 10 to 1000".into());
    }
    let user_network = !matches!(a.network.as_str(), "bridge" | "default" | "host" | "none")
        && !a.network.starts_with("container:");
    if !a.network_alias.is_empty() && !user_network {
        return Err(
            "network-scoped alias is supported only for containers in user defined networks".into(),
        );
    }
    if let Some(ip) = &a.ip {
        if !user_network {
            return Err(
                "user specified IP address is supported on user defined networks only".into(),
            );
        }
        ip.parse::<std::net::Ipv4Addr>()
            .map_err(|_| format!("invalid IPv4 address: {ip}"))?;
    }
    if let Some(u) = a
        .userns
        .as_deref()
        .filter(|u| !u.is_empty() && *u != "host")
    {
        return Err(format!(
            "invalid USER mode {u:?}: berth runs containers without user namespace remapping, so only \"host\" is valid"
        ));
    }
    for l in &a.link {
        let parts: Vec<&str> = l.split(':').collect();
        if parts.len() > 2 || parts.iter().any(|p| p.is_empty()) {
            return Err(format!(
                "invalid argument {l:?} for \"--link\" flag: bad format for links: {l}"
            ));
        }
        match a.network.as_str() {
            "host" => return Err("conflicting options: host type networking can't be used with links. This would result in undefined behavior".into()),
            "none" => return Err("conflicting options: links need a network; --network none has none".into()),
            n if n.starts_with("container:") => return Err("conflicting options: container type network can't be used with links. This would result in undefined behavior".into()),
            _ => {}
        }
    }
    if let Some(mac) = &a.mac_address {
        berth_net::parse_mac(mac)
            .map_err(|e| format!("invalid argument {mac:?} for \"--mac-address\" flag: {e}"))?;
        if a.network == "host" || a.network.starts_with("container:") {
            return Err("conflicting options: mac-address and the network mode".into());
        }
    }
    Ok(())
}

/// The per-device blkio flags, checked as Docker checks them.
fn blkio_devices(a: &RunArgs) -> Result<berth_engine::record::BlkioDevices, String> {
    Ok(berth_engine::record::BlkioDevices {
        weight: blkio_list("blkio-weight-device", &a.blkio_weight_device, Blkio::Weight)?,
        read_bps: blkio_list("device-read-bps", &a.device_read_bps, Blkio::Bytes)?,
        write_bps: blkio_list("device-write-bps", &a.device_write_bps, Blkio::Bytes)?,
        read_iops: blkio_list("device-read-iops", &a.device_read_iops, Blkio::Count)?,
        write_iops: blkio_list("device-write-iops", &a.device_write_iops, Blkio::Count)?,
    })
}

#[derive(Clone, Copy)]
enum Blkio {
    Weight,
    Bytes,
    Count,
}

/// `DEVICE:VALUE` entries of one blkio flag.
fn blkio_list(flag: &str, list: &[String], kind: Blkio) -> Result<Vec<(String, u64)>, String> {
    list.iter()
        .map(|s| {
            let bad = |why: String| format!("invalid argument {s:?} for \"--{flag}\" flag: {why}");
            let (dev, v) = s
                .rsplit_once(':')
                .ok_or_else(|| bad(format!("bad format: {s}")))?;
            if !dev.starts_with("/dev/") {
                return Err(bad(format!("{dev} is not a device path")));
            }
            let n = match kind {
                Blkio::Bytes => parse_bytes(v).ok().filter(|n| *n >= 0).map(|n| n as u64),
                Blkio::Count | Blkio::Weight => v.parse::<u64>().ok(),
            };
            let n = n.ok_or_else(|| bad(format!("invalid value {v:?} for device {dev}")))?;
            if matches!(kind, Blkio::Weight) && !(10..=1000).contains(&n) {
                return Err(bad(format!(
                    "invalid weight for device: {s} (the weight is from 10 to 1000)"
                )));
            }
            Ok((dev.to_string(), n))
        })
        .collect()
}

/// `--sysctl KEY=VALUE` where KEY belongs to a namespace a container can have of its own
/// (Docker's client list: System V IPC, POSIX message queues, network), refused with
/// Docker's words otherwise; any other key would be the host's.
fn namespaced_sysctl(s: &str) -> Result<String, String> {
    let ok = s
        .split_once('=')
        .is_some_and(|(k, _)| berth_runtime::config::is_ipc_sysctl(k) || k.starts_with("net."));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!("sysctl '{s}' is not allowed"))
    }
}

/// Flags berth takes for Docker's sake: the one runtime and volume driver it has, and a
/// deprecated limit Docker ignores too.
fn check_compat(a: &RunArgs) -> Result<(), String> {
    if let Some(r) = a
        .runtime
        .as_deref()
        .filter(|r| !matches!(*r, "berth" | "runc"))
    {
        return Err(format!(
            "unknown or invalid runtime name: {r} (berth runs containers with its own runtime)"
        ));
    }
    if let Some(d) = a.volume_driver.as_deref().filter(|d| *d != "local") {
        return Err(format!(
            "volume driver {d:?} is not supported (only \"local\")"
        ));
    }
    if let Some(o) = a.storage_opt.iter().find(|o| !o.contains('=')) {
        return Err(format!("invalid storage option {o:?}: expected key=value"));
    }
    if !a.storage_opt.is_empty() {
        // berth's upper dirs are plain directories on the store's filesystem: a size
        // limit would need project quotas (xfs `pquota`), which berth does not set up.
        return Err(
            "--storage-opt is supported only for overlay over xfs with 'pquota' mount option"
                .into(),
        );
    }
    if a.kernel_memory.is_some() {
        eprintln!(
            "WARNING: Specifying a kernel memory limit is deprecated and will be removed in a future release."
        );
    }
    Ok(())
}

/// Docker's checks of `--cpu-rt-period`/`--cpu-rt-runtime` (what the kernel would refuse
/// less clearly): a period of 1 ms to 1 s, a runtime within the period.
fn check_realtime(period: Option<u64>, runtime: Option<i64>) -> Result<(), String> {
    if period.is_some_and(|p| !(1000..=1_000_000).contains(&p)) {
        return Err("CPU real-time period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)".into());
    }
    let within = period.unwrap_or(1_000_000) as i64;
    if runtime.is_some_and(|r| r < -1 || r > within) {
        return Err("cpu-rt-runtime cannot be higher than cpu-rt-period".into());
    }
    Ok(())
}

/// `--hostname`, else the host's name where the container shares the host's network
/// namespace (Docker names a `--network host` container after the host, whose addresses
/// it has), else none: the engine then takes the id's first 12 digits. `--uts host` alone
/// keeps that default, as Docker: the kernel's name is the host's, `/etc/hostname` and
/// `.Config.Hostname` say the id.
fn default_hostname(a: &RunArgs) -> Option<String> {
    if a.hostname.is_some() {
        return a.hostname.clone();
    }
    (a.network == "host")
        .then(nix::unistd::gethostname)
        .and_then(|h| h.ok())
        .map(|h| h.to_string_lossy().into_owned())
}

fn run_config(a: &RunArgs) -> Result<(RunConfig, CreateRequest), String> {
    let mut env = Vec::new();
    for f in &a.env_file {
        env.extend(read_env_file(f)?);
    }
    env.extend(a.env.iter().filter_map(|e| expand_env(e)));
    let mut mounts = Vec::new();
    for v in &a.volume {
        mounts.push(parse_volume(v)?);
    }
    for m in &a.mount {
        mounts.push(parse_mount(m)?);
    }
    mounts.extend(a.tmpfs.iter().map(|t| parse_tmpfs(t)));
    let kv = format::key_values;
    if a.rm && a.restart != "no" {
        return Err("conflicting options: cannot specify both --restart and --rm".into());
    }
    if a.detach && !a.attach.is_empty() {
        return Err("Conflicting options: -a and -d".into());
    }
    let streams = Streams::of(a)?;
    for h in &a.add_host {
        berth_engine::net::parse_add_host(h).map_err(|e| e.to_string())?;
    }
    check_modes(a)?;
    check_compat(a)?;
    let mut labels = BTreeMap::new();
    for f in &a.label_file {
        labels.extend(kv(&read_env_file(f)?));
    }
    labels.extend(kv(&a.label));
    let log_opts = kv(&a.log_opt);
    let log_driver = a.log_driver.clone().unwrap_or_default();
    berth_engine::logs::LogConfig::parse(&log_driver, &log_opts).map_err(|e| e.to_string())?;
    for rule in &a.device_cgroup_rule {
        berth_engine::spec::device_cgroup_rule(rule).map_err(|e| e.to_string())?;
    }
    let memory_reservation = a
        .memory_reservation
        .as_deref()
        .map(parse_bytes)
        .transpose()?;
    let memory = a.memory.as_deref().map(parse_bytes).transpose()?;
    if let (Some(m), Some(r)) = (memory, memory_reservation) {
        if m > 0 && r > m {
            return Err(
                "Minimum memory limit can not be less than memory reservation limit, see usage"
                    .into(),
            );
        }
    }
    let hostname = default_hostname(a);
    let cfg = RunConfig {
        env,
        workdir: a.workdir.clone().unwrap_or_default(),
        user: a.user.clone().unwrap_or_default(),
        group_add: a.group_add.clone(),
        hostname: hostname.unwrap_or_default(),
        domainname: a.domainname.clone().unwrap_or_default(),
        tty: a.tty,
        interactive: a.interactive,
        attached: if a.detach {
            [false; 3]
        } else {
            [streams.stdin, streams.stdout, streams.stderr]
        },
        network: a.network.clone(),
        dns: a.dns.clone(),
        dns_search: a.dns_search.clone(),
        dns_options: a.dns_option.clone(),
        add_hosts: a.add_host.clone(),
        publish: a.publish.clone(),
        publish_all: a.publish_all,
        mounts,
        read_only: a.read_only,
        cap_add: a.cap_add.clone(),
        cap_drop: a.cap_drop.clone(),
        privileged: a.privileged,
        security_opt: a.security_opt.clone(),
        memory,
        memory_swap: a.memory_swap.as_deref().map(parse_bytes).transpose()?,
        nano_cpus: a.cpus.map(|c| (c * 1e9) as i64),
        cpu_shares: a.cpu_shares,
        cpuset_cpus: a.cpuset_cpus.clone(),
        pids_limit: a.pids_limit,
        ulimits: a.ulimit.clone(),
        init: a.init,
        restart: RestartPolicy::parse(&a.restart)?,
        stop_signal: a.stop_signal.clone().unwrap_or_default(),
        stop_timeout: a.stop_timeout,
        labels,
        sysctls: kv(&a.sysctl),
        devices: a.device.clone(),
        shm_size: a.shm_size.as_deref().map(parse_bytes).transpose()?,
        auto_remove: a.rm,
        network_aliases: a.network_alias.clone(),
        ip: a.ip.clone(),
        mac_address: a.mac_address.clone(),
        links: a.link.clone(),
        pid_mode: a.pid.clone().unwrap_or_default(),
        ipc_mode: a.ipc.clone().unwrap_or_default(),
        uts_mode: a.uts.clone().unwrap_or_default(),
        cgroupns_mode: a.cgroupns.clone().unwrap_or_default(),
        cgroup_parent: a.cgroup_parent.clone().unwrap_or_default(),
        cpu_period: a.cpu_period,
        cpu_quota: a.cpu_quota,
        cpu_rt_period: a.cpu_rt_period,
        cpu_rt_runtime: a.cpu_rt_runtime,
        cpuset_mems: a.cpuset_mems.clone(),
        memory_reservation,
        memory_swappiness: a.memory_swappiness,
        oom_kill_disable: a.oom_kill_disable,
        oom_score_adj: a.oom_score_adj,
        blkio_weight: a.blkio_weight,
        device_cgroup_rules: a.device_cgroup_rule.clone(),
        blkio_devices: blkio_devices(a)?,
        annotations: kv(&a.annotation),
        log_driver,
        log_opts,
        ..Default::default()
    };
    let health = HealthConfig {
        test: a
            .health_cmd
            .as_ref()
            .map(|c| vec!["CMD-SHELL".to_string(), c.clone()])
            .unwrap_or_default(),
        interval: a
            .health_interval
            .as_deref()
            .map(parse_duration_ns)
            .transpose()?
            .unwrap_or(0),
        timeout: a
            .health_timeout
            .as_deref()
            .map(parse_duration_ns)
            .transpose()?
            .unwrap_or(0),
        start_period: a
            .health_start_period
            .as_deref()
            .map(parse_duration_ns)
            .transpose()?
            .unwrap_or(0),
        retries: a.health_retries.unwrap_or(0),
        start_interval: a
            .health_start_interval
            .as_deref()
            .map(parse_duration_ns)
            .transpose()?
            .unwrap_or(0),
    };
    let req = CreateRequest {
        name: a.name.clone(),
        entrypoint: a.entrypoint.clone(),
        cmd: a.cmd.clone(),
        no_healthcheck: a.no_healthcheck,
        health,
        expose: a.expose.clone(),
        volumes_from: a.volumes_from.clone(),
    };
    Ok((cfg, req))
}

/// Finds the image, pulling it (in a child `berth pull`, so this process stays
/// single-threaded for the runtime) as `--pull` says; with the image store's database
/// connection, for the engine to go on with.
fn resolve_image(
    root: &Path,
    name: &str,
    policy: &str,
    platform: Option<&str>,
    quiet: bool,
) -> Result<(ImageInfo, MetaStore), String> {
    use berth_registry::client::{store::LocalStore, Error as RegErr};
    let lookup = || -> Result<Option<(ImageInfo, MetaStore)>, String> {
        let store = LocalStore::open(root).map_err(|e| e.to_string())?;
        match store.find(name) {
            Ok(rec) => {
                if platform.is_none() {
                    warn_foreign_platform(&rec.platform);
                }
                let config = store.config_json(&rec).map_err(|e| e.to_string())?;
                let info = ImageInfo {
                    name: name.to_string(),
                    id: rec.config_digest.to_string(),
                    chain_ids: rec.layers.iter().map(|l| l.chain_id.to_string()).collect(),
                    config: config["config"].clone(),
                };
                Ok(Some((info, store.meta)))
            }
            Err(RegErr::ImageNotFound(_)) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    };
    let found = if policy == "always" { None } else { lookup()? };
    if let Some(i) = found {
        return Ok(i);
    }
    if policy == "never" {
        return Err(format!("No such image: {name}"));
    }
    if policy != "always" && !quiet {
        eprintln!("Unable to find image '{name}' locally");
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = std::process::Command::new(exe)
        .arg("--root")
        .arg(root)
        .arg("pull")
        .args(platform.map(|p| format!("--platform={p}")))
        .args(quiet.then_some("--quiet"))
        .arg(name)
        .stdout(if quiet {
            std::process::Stdio::null()
        } else {
            std::process::Stdio::from(std::io::stderr().as_fd_owned())
        })
        .status()
        .map_err(|e| e.to_string())?;
    if !out.success() {
        return Err(format!("pull access denied or not found for {name}"));
    }
    lookup()?.ok_or_else(|| format!("No such image: {name}"))
}

/// Docker's warning for an image built for another platform (it will need an emulator).
fn warn_foreign_platform(p: &berth_image::Platform) {
    let host = berth_registry::client::Platform::host();
    if p.architecture.is_empty() || (p.os == host.os && p.architecture == host.architecture) {
        return;
    }
    let fmt = |os: &str, arch: &str, variant: Option<&str>| match variant {
        Some(v) => format!("{os}/{arch}/{v}"),
        None => format!("{os}/{arch}"),
    };
    eprintln!(
        "WARNING: The requested image's platform ({}) does not match the detected host \
         platform ({}) and no specific platform was requested",
        fmt(&p.os, &p.architecture, p.variant.as_deref()),
        fmt(&host.os, &host.architecture, host.variant.as_deref())
    );
}

trait OwnedStderr {
    fn as_fd_owned(&self) -> std::os::fd::OwnedFd;
}

impl OwnedStderr for std::io::Stderr {
    fn as_fd_owned(&self) -> std::os::fd::OwnedFd {
        use std::os::fd::AsFd;
        self.as_fd().try_clone_to_owned().unwrap_or_else(|_| {
            std::fs::File::open("/dev/null")
                .map(Into::into)
                .unwrap_or_else(|_| std::process::exit(125))
        })
    }
}

pub(crate) fn create(root: &Path, a: &RunArgs) -> Result<(Engine, Container), String> {
    let (cfg, req) = run_config(a)?;
    if let Some(f) = a.cidfile.as_deref().filter(|f| Path::new(f).exists()) {
        return Err(format!(
            "Container ID file found, make sure the other container isn't running or delete {f}"
        ));
    }
    let (image, meta) = resolve_image(root, &a.image, &a.pull, a.platform.as_deref(), a.quiet)?;
    tracing::debug!("create: image resolved");
    let mut engine = Engine::open_sharing(root, meta).map_err(|e| e.to_string())?;
    tracing::debug!("create: engine open");
    let c = engine
        .create(&image, &req, cfg)
        .map_err(|e| e.to_string())?;
    if let Some(f) = &a.cidfile {
        if let Err(e) = std::fs::write(f, &c.id) {
            let _ = engine.remove(&c.id, true, false);
            return Err(format!("failed to write the container ID to the file: {e}"));
        }
    }
    Ok((engine, c))
}

fn create_cmd(root: &Path, a: RunArgs) -> i32 {
    match create(root, &a) {
        Ok((_, c)) => {
            println!("{}", c.id);
            0
        }
        Err(e) => {
            eprintln!("berth: Error response from daemon: {e}");
            125
        }
    }
}

pub(crate) fn start_detached(engine: &mut Engine, id: &str) -> berth_engine::Result<()> {
    let exe = std::env::current_exe().map_err(|e| berth_engine::Error::Io {
        context: "find the berth binary".into(),
        source: e,
    })?;
    let c = engine.find(id)?;
    if c.state.status.is_active() {
        return Ok(());
    }
    monitor::spawn_detached(&exe, &engine.root, &c.id, None)
}

fn run(root: &Path, a: RunArgs) -> i32 {
    tracing::debug!("run: parsed");
    let streams = match Streams::of(&a) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("berth: {e}");
            return 125;
        }
    };
    let keys = a.detach_keys.as_deref().unwrap_or("ctrl-p,ctrl-q");
    let detach_keys = match crate::attach::parse_detach_keys(keys) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("berth: {e}");
            return 125;
        }
    };
    let (mut engine, c) = match create(root, &a) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("berth: Error response from daemon: {e}");
            return 125;
        }
    };
    if a.detach {
        return match start_detached(&mut engine, &c.id) {
            Ok(()) => {
                println!("{}", c.id);
                0
            }
            Err(e) => {
                eprintln!("berth: Error response from daemon: {e}");
                berth_engine::exit_code_for(&e)
            }
        };
    }
    tracing::debug!("run: created");
    if a.tty && streams.stdin {
        // As Docker's: the container runs under its monitor and we attach, so that the
        // detach keys can leave it running.
        return crate::attach::start_attached(&mut engine, &c, &detach_keys);
    }
    foreground(&mut engine, &c, streams)
}

/// What a foreground container is attached to (`-a`, `-i`, `--sig-proxy`).
#[derive(Debug, Clone, Copy)]
struct Streams {
    stdin: bool,
    stdout: bool,
    stderr: bool,
    signals: bool,
}

impl Streams {
    /// Output only, signals forwarded (`start -a`).
    const OUTPUT: Streams = Streams {
        stdin: false,
        stdout: true,
        stderr: true,
        signals: true,
    };

    fn of(a: &RunArgs) -> Result<Streams, String> {
        let mut on = [a.attach.is_empty(); 3];
        for s in &a.attach {
            match s.to_ascii_lowercase().as_str() {
                "stdin" => on[0] = true,
                "stdout" => on[1] = true,
                "stderr" => on[2] = true,
                _ => {
                    return Err(format!(
                        "invalid argument {s:?} for \"-a, --attach\" flag: valid streams are STDIN, STDOUT and STDERR"
                    ))
                }
            }
        }
        Ok(Streams {
            stdin: a.interactive && on[0],
            stdout: on[1],
            stderr: on[2],
            signals: a.sig_proxy.unwrap_or(true),
        })
    }
}

/// This process is the container's monitor: output to our stdio and the log.
fn foreground(engine: &mut Engine, c: &Container, streams: Streams) -> i32 {
    let interactive = streams.stdin;
    let l = match engine.launch(&c.id, interactive) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("berth: Error response from daemon: {e}");
            if c.config.auto_remove {
                let _ = engine.discard_exited(&c.id, None);
            }
            return berth_engine::exit_code_for(&e);
        }
    };
    let raw = (c.config.tty && interactive)
        .then(|| format::RawTerminal::enter(0))
        .flatten();
    if !streams.signals {
        for sig in [
            nix::sys::signal::Signal::SIGINT,
            nix::sys::signal::Signal::SIGTERM,
        ] {
            // SAFETY: SIG_IGN installs no handler code.
            let _ = unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigIgn) };
        }
    }
    let opts = PumpOptions {
        echo: [streams.stdout, streams.stderr],
        stdin: interactive,
        signals: streams.signals,
        ..Default::default()
    };
    if c.config.auto_remove {
        engine.prepare_purger();
    }
    tracing::debug!("run: launched");
    let code = monitor::pump(engine, c, l, opts).unwrap_or(255);
    tracing::debug!("run: exited");
    drop(raw);
    let done = if c.config.auto_remove {
        engine.discard_exited(&c.id, Some(code))
    } else {
        engine
            .finish(&c.id, code)
            .and_then(|_| engine.detach_monitor(&c.id))
    };
    if let Err(e) = done {
        eprintln!("berth: after the container exited: {e}");
    }
    tracing::debug!("run: done");
    code
}

fn start(root: &Path, attach_out: bool, stdin: bool, detach_keys: &[u8], names: &[String]) -> i32 {
    let mut engine = match Engine::open(root) {
        Ok(e) => e,
        Err(e) => return fail(e),
    };
    if attach_out {
        let Some(name) = names.first() else { return 1 };
        let c = match engine.find(name) {
            Ok(c) => c,
            Err(e) => return fail(e),
        };
        if stdin && c.config.interactive && c.config.tty {
            // Under its monitor with us attached, as `run -it`: the keys detach.
            return crate::attach::start_attached(&mut engine, &c, detach_keys);
        }
        // `-i` feeds our stdin to a container created with `-i`, as Docker.
        let streams = Streams {
            stdin: stdin && c.config.interactive,
            ..Streams::OUTPUT
        };
        return foreground(&mut engine, &c, streams);
    }
    let mut code = 0;
    for n in names {
        match start_detached(&mut engine, n) {
            Ok(()) => println!("{n}"),
            Err(e) => {
                eprintln!("Error response from daemon: {e}");
                code = 1;
            }
        }
    }
    if code != 0 {
        eprintln!("Error: failed to start containers: {}", names.join(", "));
    }
    code
}

fn wait(root: &Path, names: &[String]) -> i32 {
    let mut engine = match Engine::open(root) {
        Ok(e) => e,
        Err(e) => return fail(e),
    };
    let mut code = 0;
    for n in names {
        let r = engine.find(n).and_then(|c| {
            engine.wait_inactive(&c.id, None)?;
            Ok(engine
                .db
                .get(&c.id)?
                .map(|c| c.state.exit_code)
                .unwrap_or(c.state.exit_code))
        });
        match r {
            Ok(c) => println!("{c}"),
            Err(e) => code = fail(e),
        }
    }
    code
}

/// `Up 3 seconds`, `Exited (0) 2 minutes ago`: Docker's status column.
pub fn status_text(c: &Container) -> String {
    let s = &c.state;
    match s.status {
        Status::Created => "Created".into(),
        Status::Running | Status::Paused => {
            let mut t = format!("Up {}", format::human_duration(format::age(&s.started_at)));
            if s.status == Status::Paused {
                t.push_str(" (Paused)");
            } else if let Some(h) = &s.health {
                let hs = if h.status == "starting" {
                    "health: starting"
                } else {
                    &h.status
                };
                t.push_str(&format!(" ({hs})"));
            }
            t
        }
        Status::Restarting => format!(
            "Restarting ({}) {} ago",
            s.exit_code,
            format::human_duration(format::age(&s.finished_at))
        ),
        Status::Removing => "Removal In Progress".into(),
        Status::Exited => format!(
            "Exited ({}) {} ago",
            s.exit_code,
            format::human_duration(format::age(&s.finished_at))
        ),
        Status::Dead => "Dead".into(),
    }
}

/// `docker ps`'s COMMAND: the arguments joined by spaces, those with whitespace in
/// single quotes (as dockerd lists them), quoted, truncated to 20 characters unless
/// `--no-trunc`.
fn command_text(c: &Container, trunc: bool) -> String {
    let cmd = c
        .config
        .args
        .iter()
        .map(|a| {
            if a.contains(char::is_whitespace) {
                format!("'{a}'")
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    if trunc && cmd.chars().count() > 20 {
        let t: String = cmd.chars().take(19).collect();
        format!("\"{t}…\"")
    } else {
        format!("\"{cmd}\"")
    }
}

fn ps_row(c: &Container, trunc: bool) -> Value {
    let labels: Vec<String> = c
        .config
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let mounts: Vec<&str> = c
        .config
        .mounts
        .iter()
        .filter(|m| m.kind == "volume")
        .map(|m| m.source.as_str())
        .collect();
    json!({
        "Command": command_text(c, trunc),
        "CreatedAt": format::docker_time(&c.created),
        "ID": if trunc { c.short_id().to_string() } else { c.id.clone() },
        "Image": c.image,
        "Labels": labels.join(","),
        "LocalVolumes": mounts.len().to_string(),
        "Mounts": mounts.join(","),
        "Names": c.name,
        "Networks": c.config.network,
        "Ports": c.state.endpoint.as_ref().map(|e| {
            e.ports.iter().map(|(inside, ip, port)| format!("{ip}:{port}->{inside}")).collect::<Vec<_>>().join(", ")
        }).unwrap_or_default(),
        "RunningFor": format!("{} ago", format::human_duration(format::age(&c.created))),
        "Size": "0B",
        "State": c.state.status.as_str(),
        "Status": status_text(c),
    })
}

fn matches_filter(c: &Container, f: &str) -> Result<bool, String> {
    let (k, v) = format::filter_kv(f)?;
    Ok(match k {
        "status" => c.state.status.as_str() == v,
        "name" => c.name.contains(v.trim_start_matches('/')),
        "id" => c.id.starts_with(v),
        "label" => format::label_matches(v, |k| c.config.labels.get(k).map(String::as_str)),
        "exited" => c.state.status == Status::Exited && c.state.exit_code.to_string() == v,
        "ancestor" => {
            c.image == v || c.image_id.contains(v) || c.image.split(':').next() == Some(v)
        }
        "health" => {
            let h = c
                .state
                .health
                .as_ref()
                .map(|h| h.status.as_str())
                .unwrap_or("none");
            h == v
        }
        "network" => c.config.network == v,
        "volume" => c
            .config
            .mounts
            .iter()
            .any(|m| m.source == v || m.destination == v),
        "publish" | "expose" => {
            let want = port_range(v)?;
            // Published ports are the container side of `-p` (all exposed ones with -P);
            // exposed ones are those plus the image's and `--expose`'s.
            let published = c
                .config
                .publish
                .iter()
                .filter_map(|spec| spec.rsplit(':').next().and_then(|p| port_range(p).ok()));
            let exposed = c
                .config
                .exposed_ports
                .iter()
                .filter_map(|p| port_range(p).ok());
            let mut ports: Vec<PortRange> = published.collect();
            if k == "expose" || c.config.publish_all {
                ports.extend(exposed);
            }
            ports
                .iter()
                .any(|p| p.2 == want.2 && p.0 <= want.1 && want.0 <= p.1)
        }
        // Swarm tasks: berth runs none.
        "is-task" => v != "true",
        _ => return Err(format!("invalid filter '{k}'")),
    })
}

/// `PORT[-END][/PROTO]` (tcp when no protocol is named).
type PortRange = (u16, u16, String);

fn port_range(s: &str) -> Result<PortRange, String> {
    let (ports, proto) = s.split_once('/').unwrap_or((s, "tcp"));
    let num = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("invalid port filter {s:?}"))
    };
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => (num(ports)?, num(ports)?),
    };
    Ok((lo, hi, proto.to_ascii_lowercase()))
}

fn ps(root: &Path, a: &PsArgs) -> CmdResult {
    let mut engine = Engine::open(root)?;
    let mut list = engine.list()?;
    let explicit_all = a.all || a.latest || a.last.is_some_and(|n| n > 0);
    let status_filter = a
        .filter
        .iter()
        .any(|f| f.starts_with("status=") || f.starts_with("exited="));
    if !explicit_all && !status_filter {
        list.retain(|c| {
            matches!(
                c.state.status,
                Status::Running | Status::Paused | Status::Restarting
            )
        });
    }
    for f in &a.filter {
        // before=/since= compare creation times with another container's.
        let relative = match f.split_once('=') {
            Some(("before", r)) => Some((true, engine.find(r)?.created)),
            Some(("since", r)) => Some((false, engine.find(r)?.created)),
            _ => None,
        };
        let mut keep = Vec::new();
        for c in list {
            let ok = match &relative {
                Some((true, t)) => c.created < *t,
                Some((false, t)) => c.created > *t,
                None => matches_filter(&c, f)?,
            };
            if ok {
                keep.push(c);
            }
        }
        list = keep;
    }
    if a.latest {
        list.truncate(1);
    } else if let Some(n) = a.last.filter(|n| *n > 0) {
        list.truncate(n as usize);
    }
    let mut out = std::io::stdout().lock();
    if a.quiet {
        for c in &list {
            let id = if a.no_trunc { &c.id[..] } else { c.short_id() };
            writeln!(out, "{id}")?;
        }
        return Ok(0);
    }
    let mut rows: Vec<Value> = list.iter().map(|c| ps_row(c, !a.no_trunc)).collect();
    if a.size {
        let images = image_sizes(root);
        for (r, c) in rows.iter_mut().zip(&list) {
            let (rw, total) = container_sizes(&engine, c, &images);
            r["Size"] = json!(format!(
                "{} (virtual {})",
                format::human_size(rw),
                format::human_size(total)
            ));
        }
    }
    match a.format.as_deref() {
        Some("json") => {
            for r in &rows {
                writeln!(out, "{r}")?;
            }
        }
        Some(t) if t != "table" => format::template_rows(&mut out, t, &rows)?,
        _ => {
            let mut head = vec![
                "CONTAINER ID",
                "IMAGE",
                "COMMAND",
                "CREATED",
                "STATUS",
                "PORTS",
                "NAMES",
            ];
            let mut keys = vec![
                "ID",
                "Image",
                "Command",
                "RunningFor",
                "Status",
                "Ports",
                "Names",
            ];
            if a.size {
                head.push("SIZE");
                keys.push("Size");
            }
            let mut table = vec![head.iter().map(|s| s.to_string()).collect::<Vec<_>>()];
            for r in &rows {
                table.push(
                    keys.iter()
                        .map(|k| r[k].as_str().unwrap_or("").to_string())
                        .collect(),
                );
            }
            format::table(&mut out, &table)?;
        }
    }
    Ok(0)
}

pub(crate) fn parse_since(s: &str) -> Result<SystemTime, String> {
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(SystemTime::now() - d);
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(t);
    }
    if let Ok(secs) = s.parse::<f64>() {
        return Ok(SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs));
    }
    Err(format!("invalid value for \"since\": {s:?}"))
}

#[allow(clippy::too_many_arguments)]
fn logs(
    root: &Path,
    name: &str,
    follow: bool,
    tail: &str,
    since: Option<&str>,
    until: Option<&str>,
    timestamps: bool,
) -> CmdResult {
    let mut engine = Engine::open(root)?;
    let c = match engine.find(name) {
        Ok(c) => c,
        Err(e) => return Ok(fail(e)),
    };
    if berth_engine::monitor::log_config(&c) == berth_engine::logs::LogConfig::None {
        eprintln!("Error response from daemon: configured logging driver does not support reading");
        return Ok(1);
    }
    let path = engine.log_path(&c.id);
    let since = since.map(parse_since).transpose()?;
    let until = until.map(parse_since).transpose()?;
    let (mut entries, mut offset) = berth_engine::logs::read_all(&path)?;
    let keep = |e: &berth_engine::logs::Entry| {
        let t = humantime::parse_rfc3339_weak(&e.time).ok();
        since.is_none_or(|s| t.is_some_and(|t| t >= s))
            && until.is_none_or(|u| t.is_some_and(|t| t <= u))
    };
    entries.retain(|e| keep(e));
    if tail != "all" {
        let n: usize = tail.parse().map_err(|_| format!("invalid tail {tail:?}"))?;
        let skip = entries.len().saturating_sub(n);
        entries.drain(..skip);
    }
    print_entries(&entries, timestamps);
    if !follow {
        return Ok(0);
    }
    loop {
        let running = engine
            .db
            .get(&c.id)?
            .is_some_and(|c| c.state.status.is_active());
        let (more, next) = berth_engine::logs::read_from(&path, offset)?;
        offset = next;
        let more: Vec<_> = more.into_iter().filter(|e| keep(e)).collect();
        print_entries(&more, timestamps);
        if !running {
            // One more read catches what the monitor wrote as the container ended.
            let (last, _) = berth_engine::logs::read_from(&path, offset)?;
            print_entries(&last, timestamps);
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(50));
        let _ = engine.find(&c.id);
    }
}

pub(crate) fn print_entries(entries: &[berth_engine::logs::Entry], timestamps: bool) {
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    for e in entries {
        let w: &mut dyn Write = if e.stream == "stderr" {
            &mut err
        } else {
            &mut out
        };
        if timestamps {
            let _ = write!(w, "{} ", e.time);
        }
        let _ = w.write_all(e.log.as_bytes());
    }
    let _ = out.flush();
}

#[allow(clippy::too_many_arguments)]
fn exec(
    root: &Path,
    name: &str,
    req: &berth_engine::ExecRequest,
    interactive: bool,
    detach: bool,
) -> i32 {
    let tty = req.tty;
    let mut engine = match Engine::open(root) {
        Ok(e) => e,
        Err(e) => return fail(e),
    };
    let (c, process) = match engine.exec_process(name, req) {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    if !interactive {
        if let Ok(null) = std::fs::File::open("/dev/null") {
            use std::os::fd::AsRawFd;
            let _ = nix::unistd::dup2(null.as_raw_fd(), 0);
        }
    }
    let raw = (tty && interactive)
        .then(|| format::RawTerminal::enter(0))
        .flatten();
    let opts = berth_runtime::ExecOptions {
        detach,
        ..Default::default()
    };
    let r = engine.runtime().exec(&c.id, &process, &opts);
    drop(raw);
    match r {
        Ok(code) => code,
        Err(e) => {
            let code = match e {
                berth_runtime::Error::ExecNotFound(_) => 127,
                berth_runtime::Error::ExecPermission(_) => 126,
                _ => 126,
            };
            eprintln!("OCI runtime exec failed: {e}");
            code
        }
    }
}

/// `docker inspect`'s object for a container.
pub fn inspect_json(engine: &Engine, c: &Container) -> Value {
    let s = &c.state;
    let cfg = &c.config;
    let zero = "0001-01-01T00:00:00Z";
    let or_zero = |t: &str| {
        if t.is_empty() {
            zero.to_string()
        } else {
            t.to_string()
        }
    };
    let health = s.health.as_ref().map(|h| {
        json!({
            "Status": h.status, "FailingStreak": h.failing_streak, "Log": h.log,
        })
    });
    let mut state = json!({
        "Status": s.status.as_str(),
        "Running": matches!(s.status, Status::Running | Status::Paused),
        "Paused": s.status == Status::Paused,
        "Restarting": s.status == Status::Restarting,
        "OOMKilled": s.oom_killed,
        "Dead": s.status == Status::Dead,
        "Pid": s.pid,
        "MonitorPid": s.monitor_pid,
        "ExitCode": s.exit_code,
        "Error": s.error,
        "StartedAt": or_zero(&s.started_at),
        "FinishedAt": or_zero(&s.finished_at),
    });
    if let Some(h) = health {
        state["Health"] = h;
    }
    let exposed: serde_json::Map<String, Value> = cfg
        .exposed_ports
        .iter()
        .map(|p| (p.clone(), json!({})))
        .collect();
    let vols: serde_json::Map<String, Value> = cfg
        .mounts
        .iter()
        .filter(|m| m.kind == "volume")
        .map(|m| (m.destination.clone(), json!({})))
        .collect();
    let mounts: Vec<Value> = cfg
        .mounts
        .iter()
        .filter(|m| m.kind != "tmpfs")
        .map(|m| {
            let src = if m.kind == "volume" {
                berth_engine::volumes::data_dir(&engine.root, &m.source).display().to_string()
            } else {
                m.source.clone()
            };
            let mut v = json!({"Type": m.kind, "Source": src, "Destination": m.destination,
                "Mode": if m.read_only { "ro" } else { "" }, "RW": !m.read_only, "Propagation": ""});
            if m.kind == "volume" {
                v["Name"] = json!(m.source);
                v["Driver"] = json!("local");
                v["Propagation"] = json!("");
            } else {
                v["Propagation"] = json!("rprivate");
            }
            v
        })
        .collect();
    let binds: Vec<String> = cfg
        .mounts
        .iter()
        .filter(|m| m.kind != "tmpfs" && !m.anonymous)
        .map(|m| {
            format!(
                "{}:{}{}",
                m.source,
                m.destination,
                if m.read_only { ":ro" } else { "" }
            )
        })
        .collect();
    let tmpfs: serde_json::Map<String, Value> = cfg
        .mounts
        .iter()
        .filter(|m| m.kind == "tmpfs")
        .map(|m| (m.destination.clone(), json!(m.options.join(","))))
        .collect();
    let health_cfg = cfg
        .healthcheck
        .as_ref()
        .map(|h| serde_json::to_value(h).unwrap_or(Value::Null));
    let dir = engine.dir(&c.id);
    json!({
        "Id": c.id,
        "Created": c.created,
        "Path": cfg.args.first().cloned().unwrap_or_default(),
        "Args": cfg.args.iter().skip(1).collect::<Vec<_>>(),
        "State": state,
        "Image": c.image_id,
        "ResolvConfPath": dir.join("resolv.conf"),
        "HostnamePath": dir.join("hostname"),
        "HostsPath": dir.join("hosts"),
        "LogPath": engine.log_path(&c.id),
        "Name": format!("/{}", c.name),
        "RestartCount": s.restart_count,
        "Driver": "overlay",
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "HostConfig": {
            "Binds": binds,
            "NetworkMode": cfg.network,
            "PortBindings": cfg.publish,
            "RestartPolicy": {"Name": cfg.restart.display_name(), "MaximumRetryCount": cfg.restart.max_retries},
            "AutoRemove": cfg.auto_remove,
            "CapAdd": cfg.cap_add,
            "CapDrop": cfg.cap_drop,
            "Dns": cfg.dns,
            "DnsOptions": cfg.dns_options,
            "DnsSearch": cfg.dns_search,
            "ExtraHosts": cfg.add_hosts,
            "GroupAdd": cfg.group_add,
            "Privileged": cfg.privileged,
            "PublishAllPorts": cfg.publish_all,
            "ReadonlyRootfs": cfg.read_only,
            "SecurityOpt": cfg.security_opt,
            "Tmpfs": tmpfs,
            "ShmSize": cfg.shm_size.unwrap_or(64 << 20),
            "Memory": cfg.memory.unwrap_or(0),
            "MemorySwap": cfg.memory_swap.unwrap_or(0),
            "NanoCpus": cfg.nano_cpus.unwrap_or(0),
            "CpuShares": cfg.cpu_shares.unwrap_or(0),
            "CpusetCpus": cfg.cpuset_cpus.clone().unwrap_or_default(),
            "PidsLimit": cfg.pids_limit,
            "Ulimits": cfg.ulimits,
            "Sysctls": cfg.sysctls,
            "Init": cfg.init,
            "Devices": cfg.devices,
            "PidMode": cfg.pid_mode,
            "IpcMode": if cfg.ipc_mode.is_empty() { "private" } else { &cfg.ipc_mode },
            "UTSMode": cfg.uts_mode,
            "CgroupnsMode": if cfg.cgroupns_mode.is_empty() { "private" } else { &cfg.cgroupns_mode },
            "CgroupParent": cfg.cgroup_parent,
            "CpuPeriod": cfg.cpu_period.unwrap_or(0),
            "CpuQuota": cfg.cpu_quota.unwrap_or(0),
            "CpuRealtimePeriod": cfg.cpu_rt_period.unwrap_or(0),
            "CpuRealtimeRuntime": cfg.cpu_rt_runtime.unwrap_or(0),
            "CpusetMems": cfg.cpuset_mems.clone().unwrap_or_default(),
            "MemoryReservation": cfg.memory_reservation.unwrap_or(0),
            "MemorySwappiness": cfg.memory_swappiness,
            "OomKillDisable": cfg.oom_kill_disable,
            "OomScoreAdj": cfg.oom_score_adj.unwrap_or(0),
            "BlkioWeight": cfg.blkio_weight.unwrap_or(0),
            "DeviceCgroupRules": cfg.device_cgroup_rules,
            "BlkioWeightDevice": blkio_json(&cfg.blkio_devices.weight, "Weight"),
            "BlkioDeviceReadBps": blkio_json(&cfg.blkio_devices.read_bps, "Rate"),
            "BlkioDeviceWriteBps": blkio_json(&cfg.blkio_devices.write_bps, "Rate"),
            "BlkioDeviceReadIOps": blkio_json(&cfg.blkio_devices.read_iops, "Rate"),
            "BlkioDeviceWriteIOps": blkio_json(&cfg.blkio_devices.write_iops, "Rate"),
            "Annotations": cfg.annotations,
            "LogConfig": {
                "Type": if cfg.log_driver.is_empty() { "json-file" } else { &cfg.log_driver },
                "Config": cfg.log_opts,
            },
        },
        "Mounts": mounts,
        "Config": {
            "Hostname": cfg.hostname,
            "Domainname": cfg.domainname,
            "User": cfg.user,
            "AttachStdin": cfg.attached[0],
            "AttachStdout": cfg.attached[1],
            "AttachStderr": cfg.attached[2],
            "Tty": cfg.tty,
            "OpenStdin": cfg.interactive,
            "Env": cfg.env,
            "Cmd": cfg.cmd,
            "Entrypoint": if cfg.entrypoint.is_empty() { Value::Null } else { json!(cfg.entrypoint) },
            "Image": c.image,
            "Volumes": if vols.is_empty() { Value::Null } else { Value::Object(vols) },
            "WorkingDir": cfg.workdir,
            "Labels": cfg.labels,
            "ExposedPorts": exposed,
            "StopSignal": if cfg.stop_signal.is_empty() { "SIGTERM" } else { &cfg.stop_signal },
            "StopTimeout": cfg.stop_timeout,
            "Healthcheck": health_cfg,
            "MacAddress": cfg.mac_address.as_deref().unwrap_or_default(),
        },
        "NetworkSettings": network_settings(&engine.root, c),
    })
}

/// `NetworkSettings`, from the endpoint the network gave the running container.
fn network_settings(root: &Path, c: &Container) -> Value {
    let ep = c.state.endpoint.clone().unwrap_or_default();
    let mut ports = serde_json::Map::new();
    for (inside, ip, port) in &ep.ports {
        let entry = ports.entry(inside.clone()).or_insert_with(|| json!([]));
        if let Some(list) = entry.as_array_mut() {
            list.push(json!({"HostIp": ip, "HostPort": port.to_string()}));
        }
    }
    let net = json!({
        "IPAddress": ep.ip, "IPPrefixLen": ep.prefix, "Gateway": ep.gateway, "MacAddress": ep.mac,
        "HostVeth": ep.host_veth,
    });
    let mut networks = serde_json::Map::new();
    networks.insert(c.config.network.clone(), net);
    extra_network_settings(root, c, &mut networks);
    json!({
        "Networks": networks,
        "Ports": ports,
        "SandboxKey": if c.state.pid > 0 { format!("/proc/{}/ns/net", c.state.pid) } else { String::new() },
        "IPAddress": ep.ip,
        "IPPrefixLen": ep.prefix,
        "Gateway": ep.gateway,
        "MacAddress": ep.mac,
    })
}

/// The further networks a container joins on start, with what each gave it while it runs.
fn extra_network_settings(root: &Path, c: &Container, out: &mut serde_json::Map<String, Value>) {
    let live = if c.state.status.is_active() {
        berth_net::Net::open(root)
            .and_then(|n| n.endpoints(&c.id))
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    for link in &c.config.extra_networks {
        let ep = live.iter().find(|e| e.network == link.network);
        out.insert(
            link.network.clone(),
            json!({
                "Aliases": link.aliases,
                "IPAddress": ep.map(|e| e.ip.to_string()).unwrap_or_default(),
                "IPPrefixLen": ep.map_or(0, |e| e.prefix),
                "Gateway": ep.map(|e| e.gateway.to_string()).unwrap_or_default(),
                "MacAddress": ep.map(|e| e.mac.clone()).unwrap_or_default(),
            }),
        );
    }
}

/// A blkio device list as inspect shows it: `[{"Path": …, "Rate"|"Weight": …}]`.
fn blkio_json(list: &[(String, u64)], key: &str) -> Value {
    list.iter()
        .map(|(p, v)| {
            let mut o = serde_json::Map::new();
            o.insert("Path".into(), json!(p));
            o.insert(key.into(), json!(v));
            Value::Object(o)
        })
        .collect()
}

fn inspect(root: &Path, names: &[String], format_arg: Option<&str>, size: bool) -> CmdResult {
    let mut engine = Engine::open(root)?;
    let mut out = Vec::new();
    let mut code = 0;
    let images = if size {
        image_sizes(root)
    } else {
        Default::default()
    };
    for n in names {
        match engine.find(n) {
            Ok(c) => out.push(inspect_value(&engine, &c, size.then_some(&images))),
            Err(e) => {
                eprintln!("Error: {e}");
                code = 1;
            }
        }
    }
    let mut stdout = std::io::stdout().lock();
    match format_arg {
        None | Some("json") => writeln!(stdout, "{}", serde_json::to_string_pretty(&out)?)?,
        Some(t) => format::template_rows(&mut stdout, t, &out)?,
    }
    Ok(code)
}

fn top(root: &Path, name: &str) -> CmdResult {
    let mut engine = Engine::open(root)?;
    let pids = match engine.pids(name) {
        Ok(p) => p,
        Err(e) => return Ok(fail(e)),
    };
    let list: Vec<String> = pids.iter().map(|p| p.to_string()).collect();
    let st = std::process::Command::new("ps")
        .args(["-f", "-p", &list.join(",")])
        .status()?;
    Ok(if st.success() { 0 } else { 1 })
}

fn port(root: &Path, name: &str, private: Option<&str>) -> CmdResult {
    let mut engine = Engine::open(root)?;
    let c = match engine.find(name) {
        Ok(c) => c,
        Err(e) => return Ok(fail(e)),
    };
    let ports = c.state.endpoint.map(|e| e.ports).unwrap_or_default();
    let want = private.map(|p| {
        if p.contains('/') {
            p.to_string()
        } else {
            format!("{p}/tcp")
        }
    });
    let mut out = std::io::stdout().lock();
    let mut found = false;
    for (inside, ip, port) in ports {
        match &want {
            Some(w) if *w != inside => continue,
            Some(_) => writeln!(out, "{ip}:{port}")?,
            None => writeln!(out, "{inside} -> {ip}:{port}")?,
        }
        found = true;
    }
    if let (Some(p), false) = (private, found) {
        eprintln!("Error: No public port '{p}' published for {name}");
        return Ok(1);
    }
    Ok(0)
}

fn prune(root: &Path, force: bool, filter: &[String]) -> CmdResult {
    let filter = crate::prune_filter::PruneFilter::parse(filter, true)?;
    if !force {
        eprint!("WARNING! This will remove all stopped containers.\nAre you sure you want to continue? [y/N] ");
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Ok(0);
        }
    }
    let mut engine = Engine::open(root)?;
    let removed = prune_stopped(&mut engine, &filter)?;
    let reclaimed: u64 = removed.iter().map(|(_, size)| size).sum();
    let mut out = std::io::stdout().lock();
    if !removed.is_empty() {
        writeln!(out, "Deleted Containers:")?;
        for (id, _) in &removed {
            writeln!(out, "{id}")?;
        }
        writeln!(out)?;
    }
    writeln!(
        out,
        "Total reclaimed space: {}",
        crate::format::human_size(reclaimed)
    )?;
    Ok(0)
}

/// Removes every container that is not running; returns each one's id with the bytes
/// its writable layer held.
pub(crate) fn prune_stopped(
    engine: &mut Engine,
    filter: &crate::prune_filter::PruneFilter,
) -> berth_engine::Result<Vec<(String, u64)>> {
    let mut removed = Vec::new();
    for c in engine.list()? {
        let stopped = matches!(
            c.state.status,
            Status::Exited | Status::Created | Status::Dead
        );
        let created = crate::prune_filter::rfc3339(&c.created);
        if !stopped || !filter.allows(created, &c.config.labels) {
            continue;
        }
        let size = writable_size(engine, &c.id);
        if engine.remove(&c.id, false, false).is_ok() {
            removed.push((c.id, size));
        }
    }
    Ok(removed)
}

/// A container's inspect object, with SizeRw and SizeRootFs when `images` (their sizes
/// by id) is given (`inspect -s`).
pub(crate) fn inspect_value(
    engine: &Engine,
    c: &Container,
    images: Option<&std::collections::HashMap<String, u64>>,
) -> Value {
    let mut j = inspect_json(engine, c);
    if let Some(images) = images {
        let (rw, total) = container_sizes(engine, c, images);
        j["SizeRw"] = json!(rw);
        j["SizeRootFs"] = json!(total);
    }
    j
}

/// Bytes of each image's layers, by image id (`ps -s`, `inspect -s`).
pub(crate) fn image_sizes(root: &Path) -> std::collections::HashMap<String, u64> {
    berth_registry::client::store::LocalStore::open(root)
        .and_then(|s| Ok(s.meta.images()?))
        .map(|recs| {
            recs.iter()
                .map(|r| {
                    let size = r.layers.iter().map(|l| l.size).sum();
                    (r.config_digest.to_string(), size)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A container's writable layer and, with its image, its whole root filesystem, in
/// bytes (Docker's SizeRw and SizeRootFs).
fn container_sizes(
    engine: &Engine,
    c: &Container,
    images: &std::collections::HashMap<String, u64>,
) -> (u64, u64) {
    let rw = writable_size(engine, &c.id);
    (rw, rw + images.get(&c.image_id).copied().unwrap_or(0))
}

/// Bytes in a container's writable layer (its overlay upper directory).
pub(crate) fn writable_size(engine: &Engine, id: &str) -> u64 {
    engine
        .upper_dir(id)
        .map(|d| crate::system::dir_size(&d))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_file_lines_read_as_dockers_client_reads_them() {
        assert_eq!(env_file_line("  A=1 ").unwrap(), Some("A=1 ".into()));
        assert_eq!(env_file_line("C=\"q\"").unwrap(), Some("C=\"q\"".into()));
        assert_eq!(env_file_line("D=a=b").unwrap(), Some("D=a=b".into()));
        assert_eq!(env_file_line("  # note").unwrap(), None);
        assert_eq!(env_file_line("").unwrap(), None);
        assert_eq!(env_file_line("BERTH_SURELY_UNSET_VAR").unwrap(), None);
        assert_eq!(
            env_file_line("B = 2").unwrap_err(),
            "variable 'B ' contains whitespaces"
        );
        assert_eq!(
            env_file_line("=x").unwrap_err(),
            "no variable name on line '=x'"
        );
    }
}
