//! The container record kept in the state DB: what was asked for (`RunConfig`, fixed at
//! create) and what happened since (`State`, updated by the monitor and the CLI).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Docker's container states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Restarting => "restarting",
            Status::Removing => "removing",
            Status::Exited => "exited",
            Status::Dead => "dead",
        }
    }

    /// Whether a process of the container may be alive.
    pub fn is_active(self) -> bool {
        matches!(self, Status::Running | Status::Paused | Status::Restarting)
    }
}

/// `--restart`: Docker's policies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RestartPolicy {
    /// `no`, `on-failure`, `always` or `unless-stopped`.
    pub name: String,
    /// `on-failure:N`: the most restarts; 0 = unlimited.
    pub max_retries: u32,
}

impl RestartPolicy {
    pub fn parse(s: &str) -> Result<RestartPolicy, String> {
        let (name, n) = match s.split_once(':') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let max_retries = match n {
            Some(n) => n
                .parse()
                .map_err(|_| format!("invalid restart policy count {n:?}"))?,
            None => 0,
        };
        match name {
            "" | "no" if n.is_none() => Ok(RestartPolicy::default()),
            "always" | "unless-stopped" if n.is_none() => Ok(RestartPolicy {
                name: name.into(),
                max_retries: 0,
            }),
            "on-failure" => Ok(RestartPolicy {
                name: name.into(),
                max_retries,
            }),
            _ => Err(format!("invalid restart policy {s:?}")),
        }
    }

    pub fn display_name(&self) -> &str {
        if self.name.is_empty() {
            "no"
        } else {
            &self.name
        }
    }
}

/// A health check: Docker's `Healthcheck` in an image config, or `--health-*` flags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct HealthConfig {
    /// `["CMD", args..]`, `["CMD-SHELL", cmd]` or `["NONE"]`.
    pub test: Vec<String>,
    /// Nanoseconds, as Docker stores them; 0 = default.
    pub interval: u64,
    pub timeout: u64,
    pub start_period: u64,
    pub retries: u32,
    /// Time between checks during the start period (Docker 25's `--health-start-interval`);
    /// 0: the interval's.
    pub start_interval: u64,
}

impl HealthConfig {
    const SECOND: u64 = 1_000_000_000;

    pub fn interval_ns(&self) -> u64 {
        if self.interval == 0 {
            30 * Self::SECOND
        } else {
            self.interval
        }
    }

    /// Time between checks while in the start period.
    pub fn start_interval_ns(&self) -> u64 {
        if self.start_interval == 0 {
            self.interval_ns()
        } else {
            self.start_interval
        }
    }

    pub fn timeout_ns(&self) -> u64 {
        if self.timeout == 0 {
            30 * Self::SECOND
        } else {
            self.timeout
        }
    }

    pub fn retries_or_default(&self) -> u32 {
        if self.retries == 0 {
            3
        } else {
            self.retries
        }
    }

    /// Whether this config runs anything (`NONE` or empty turns checks off).
    pub fn enabled(&self) -> bool {
        matches!(
            self.test.first().map(String::as_str),
            Some("CMD" | "CMD-SHELL")
        )
    }

    /// The argv to run in the container.
    pub fn argv(&self) -> Vec<String> {
        match self.test.first().map(String::as_str) {
            Some("CMD") => self.test[1..].to_vec(),
            Some("CMD-SHELL") => {
                vec!["/bin/sh".into(), "-c".into(), self.test[1..].join(" ")]
            }
            _ => Vec::new(),
        }
    }
}

/// One probe's outcome, as in `docker inspect`'s `State.Health.Log`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthResult {
    pub start: String,
    pub end: String,
    pub exit_code: i32,
    pub output: String,
}

/// `State.Health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct Health {
    /// `starting`, `healthy` or `unhealthy`.
    pub status: String,
    pub failing_streak: u32,
    pub log: Vec<HealthResult>,
}

/// A mount asked for with `-v`, `--mount` or `--tmpfs`, or an image VOLUME.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    /// `bind`, `volume` or `tmpfs`.
    pub kind: String,
    /// Host path (bind), volume name (volume; empty = anonymous until create names it).
    pub source: String,
    pub destination: String,
    pub read_only: bool,
    /// tmpfs options (size=…, mode=…) or bind propagation.
    pub options: Vec<String>,
    /// An anonymous volume (removed by `rm -v`).
    #[serde(default)]
    pub anonymous: bool,
}

/// Per-device block I/O settings as (device path, value); the path is resolved to its
/// numbers at each start, as Docker does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct BlkioDevices {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weight: Vec<(String, u64)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read_bps: Vec<(String, u64)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub write_bps: Vec<(String, u64)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read_iops: Vec<(String, u64)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub write_iops: Vec<(String, u64)>,
}

impl BlkioDevices {
    pub fn is_empty(&self) -> bool {
        self.weight.is_empty()
            && self.read_bps.is_empty()
            && self.write_bps.is_empty()
            && self.read_iops.is_empty()
            && self.write_iops.is_empty()
    }
}

/// Everything `run`/`create` asked for, resolved against the image at create time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RunConfig {
    /// The program and its arguments (Entrypoint + Cmd, resolved).
    pub args: Vec<String>,
    /// As given/inherited, for `inspect`'s Config.Entrypoint / Config.Cmd.
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub workdir: String,
    pub user: String,
    pub group_add: Vec<String>,
    pub hostname: String,
    pub domainname: String,
    pub tty: bool,
    pub interactive: bool,
    /// The streams `run`/`create` attached (`-a`, or stdout and stderr by default; none
    /// with `-d`): stdin, stdout, stderr, shown by inspect as Docker's `Attach*`.
    #[serde(default)]
    pub attached: [bool; 3],
    pub network: String,
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    pub dns_options: Vec<String>,
    pub add_hosts: Vec<String>,
    pub publish: Vec<String>,
    pub publish_all: bool,
    pub exposed_ports: Vec<String>,
    pub mounts: Vec<MountSpec>,
    pub read_only: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub privileged: bool,
    pub security_opt: Vec<String>,
    pub memory: Option<i64>,
    pub memory_swap: Option<i64>,
    pub nano_cpus: Option<i64>,
    pub cpu_shares: Option<u64>,
    pub cpuset_cpus: Option<String>,
    pub pids_limit: Option<i64>,
    pub ulimits: Vec<String>,
    pub init: bool,
    pub restart: RestartPolicy,
    pub healthcheck: Option<HealthConfig>,
    pub stop_signal: String,
    pub stop_timeout: Option<i64>,
    pub labels: BTreeMap<String, String>,
    pub sysctls: BTreeMap<String, String>,
    pub devices: Vec<String>,
    pub shm_size: Option<i64>,
    pub auto_remove: bool,
    /// The image's layers (chain ids), bottom first.
    pub chain_ids: Vec<String>,
    /// Extra names peers on its network resolve it by (compose's service name).
    #[serde(default)]
    pub network_aliases: Vec<String>,
    /// Networks beyond the first (`network connect`, compose's further networks): kept
    /// here so every start, including a restart by policy, attaches them again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_networks: Vec<NetworkLink>,
    /// `--ip`: the address asked for on the first network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// `--mac-address`: the MAC of the interface on the first network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
    /// `--link NAME[:ALIAS]` as given (the alias is the name when not given), resolved at
    /// each start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<String>,
    /// `--pid`, `--ipc`, `--uts`, `--cgroupns`: empty (a namespace of its own), `host`,
    /// `container:NAME` (pid, ipc), or Docker's other ipc modes (`private`, `shareable`,
    /// `none`) and cgroupns `private`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pid_mode: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ipc_mode: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uts_mode: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cgroupns_mode: String,
    /// `--cgroup-parent`: the cgroup the container's own is made under (`/berth` if empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cgroup_parent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_period: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_quota: Option<i64>,
    /// `--cpu-rt-period` (µs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_rt_period: Option<u64>,
    /// `--cpu-rt-runtime` (µs of real-time scheduling per period).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_rt_runtime: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpuset_mems: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_reservation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_swappiness: Option<i64>,
    #[serde(default)]
    pub oom_kill_disable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_score_adj: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blkio_weight: Option<u16>,
    /// `--device-cgroup-rule 'c 1:3 mr'`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_cgroup_rules: Vec<String>,
    /// `--blkio-weight-device` and `--device-{read,write}-{bps,iops}`.
    #[serde(default, skip_serializing_if = "BlkioDevices::is_empty")]
    pub blkio_devices: BlkioDevices,
    /// `--annotation KEY=VALUE`: OCI annotations of the container's spec.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// `--log-driver`: `json-file` (also when empty) or `none`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub log_driver: String,
    /// `--log-opt`: json-file's `max-size` and `max-file`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub log_opts: BTreeMap<String, String>,
}

/// A further network a container joins, with the names it answers to there.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkLink {
    pub network: String,
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// What happened to the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct State {
    pub status: Status,
    pub pid: i32,
    /// Start time of `pid` (clock ticks since boot), to tell a reused pid apart.
    pub pid_start: u64,
    pub exit_code: i32,
    pub started_at: String,
    pub finished_at: String,
    pub oom_killed: bool,
    pub restart_count: u32,
    pub monitor_pid: i32,
    pub health: Option<Health>,
    pub error: String,
    /// Set by stop/kill/rm: the policy must not restart it.
    pub manual_stop: bool,
    /// The boot the pids belong to.
    pub boot_id: String,
    /// What the network gave the running container (bridge and user networks).
    #[serde(default)]
    pub endpoint: Option<crate::net::Endpoint>,
}

/// One container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    pub id: String,
    pub name: String,
    /// The image as the user named it, and its id (`sha256:` config digest).
    pub image: String,
    pub image_id: String,
    pub created: String,
    pub config: RunConfig,
    pub state: State,
}

impl Container {
    pub fn short_id(&self) -> &str {
        &self.id[..12.min(self.id.len())]
    }
}

/// The image a container is made from, as the CLI resolved it.
#[derive(Debug, Clone, Default)]
pub struct ImageInfo {
    /// As the user named it (`busybox`, `busybox:latest`).
    pub name: String,
    /// `sha256:<hex>` of the config.
    pub id: String,
    /// Layer chain ids, bottom first.
    pub chain_ids: Vec<String>,
    /// The config's `config` object (Env, Cmd, Entrypoint, ...), possibly null.
    pub config: serde_json::Value,
}
