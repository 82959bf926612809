//! The typed, normalised compose model. Short syntaxes are rewritten to the long ones on
//! the YAML tree before typing (see `load::normalize_service`), so each key has one shape
//! here; `deny_unknown_fields` turns typos into errors that name the key.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_yaml::Value;

fn is_false(b: &bool) -> bool {
    !*b
}

/// A whole project after loading, merging, `extends`, `include` and profiles.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Project {
    pub name: String,
    #[serde(default)]
    pub services: IndexMap<String, Service>,
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub networks: IndexMap<String, Network>,
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub volumes: IndexMap<String, Volume>,
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub secrets: IndexMap<String, FileObject>,
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub configs: IndexMap<String, FileObject>,
    /// The values of the variables that secrets and configs name with `environment:`
    /// (from the process environment, then `.env`), resolved while loading; never printed.
    #[serde(skip)]
    pub secret_env: IndexMap<String, String>,
}

/// One file's top level, checked before files are merged so errors name their file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) struct FileModel {
    #[serde(default)]
    pub version: Option<Value>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub services: Option<IndexMap<String, Service>>,
    #[serde(default)]
    pub networks: Option<IndexMap<String, Option<Network>>>,
    #[serde(default)]
    pub volumes: Option<IndexMap<String, Option<Volume>>>,
    #[serde(default)]
    pub secrets: Option<IndexMap<String, FileObject>>,
    #[serde(default)]
    pub configs: Option<IndexMap<String, FileObject>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<Build>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub environment: IndexMap<String, Option<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_file: Vec<EnvFile>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<ServiceVolume>,
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub networks: IndexMap<String, Option<ServiceNetwork>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_mode: Option<String>,
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub depends_on: IndexMap<String, Dependency>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<Deploy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub read_only: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<bool>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub privileged: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_grace_period: Option<String>,
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub labels: IndexMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<FileRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub configs: Vec<FileRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<String>,
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub ulimits: IndexMap<String, Ulimit>,
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub sysctls: IndexMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domainname: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_opt: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub tty: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub stdin_open: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_limit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memswap_limit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_shares: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group_add: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_opt: Vec<String>,
    /// Keys kept as written. `compose_cmd` turns `logging`, `ipc`, `pid`, `uts`,
    /// `volumes_from`, `mem_reservation`, `mem_swappiness`, `cpu_quota`, `cpu_period`,
    /// `cpuset`, `oom_score_adj`, `oom_kill_disable`, `cgroup`, `cgroup_parent`,
    /// `blkio_config.weight` and `device_cgroup_rules` into `run` flags; the others are
    /// shown but not acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub develop: Option<Develop>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub links: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_links: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes_from: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_reservation: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_swappiness: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_quota: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_period: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_count: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_rt_runtime: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_rt_period: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpuset: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_score_adj: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_kill_disable: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userns_mode: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_parent: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_opt: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blkio_config: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_cgroup_rules: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uts: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_start: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_stop: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_spec: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_file: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_api_socket: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_opts: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_driver: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin_once: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_driver: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_opt: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Build {
    #[serde(default = "dot")]
    pub context: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dockerfile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dockerfile_inline: Option<String>,
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub args: IndexMap<String, Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<FileRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cache_from: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cache_to: Vec<String>,
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub labels: IndexMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub no_cache: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub pull: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_contexts: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_hosts: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privileged: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ulimits: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entitlements: Option<Value>,
}

fn dot() -> String {
    ".".into()
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvFile {
    pub path: String,
    #[serde(default = "yes")]
    pub required: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Port {
    pub target: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
    #[serde(default = "tcp")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
}

fn tcp() -> String {
    "tcp".into()
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceVolume {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub target: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub read_only: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmpfs: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceNetwork {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_address: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub link_local_ips: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_opts: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw_priority: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dependency {
    #[serde(default = "started")]
    pub condition: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub restart: bool,
    #[serde(default = "yes")]
    pub required: bool,
}

fn started() -> String {
    "service_started".into()
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Healthcheck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_interval: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub disable: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deploy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_config: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_config: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_mode: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservations: Option<Limits>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generic_resources: Option<Value>,
}

/// `develop`: what `compose watch` does when files change.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Develop {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub watch: Vec<WatchRule>,
}

/// One `develop.watch` rule: files under `path` (minus `ignore`) trigger `action`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchRule {
    pub path: String,
    pub action: WatchAction,
    /// Where `path` lands in the container (the sync actions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// .dockerignore-style patterns, relative to `path`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore: Vec<String>,
    /// Only these patterns (relative to `path`) trigger, when given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub initial_sync: bool,
    /// `sync+exec`: the command run in the container after syncing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<WatchExec>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum WatchAction {
    #[default]
    #[serde(rename = "sync")]
    Sync,
    #[serde(rename = "rebuild")]
    Rebuild,
    #[serde(rename = "restart")]
    Restart,
    #[serde(rename = "sync+restart")]
    SyncRestart,
    #[serde(rename = "sync+exec")]
    SyncExec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchExec {
    pub command: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub environment: IndexMap<String, String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub privileged: bool,
}

impl Build {
    /// `build.ssh` as `--ssh` values: a list (`[default, "id=/path"]`) or a mapping
    /// (`{default: /path}`), as the compose spec allows.
    /// `berth build` flags for `additional_contexts`, `extra_hosts`, `shm_size` and
    /// `ulimits` (as the loader normalised them: a mapping, a list, a string and
    /// `{soft, hard}` mappings).
    pub fn build_context_flags(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(Value::Mapping(m)) = &self.additional_contexts {
            for (k, v) in m {
                if let (Some(k), Some(v)) = (k.as_str(), v.as_str()) {
                    out.push(("--build-context", format!("{k}={v}")));
                }
            }
        }
        if let Some(Value::Sequence(hosts)) = &self.extra_hosts {
            for h in hosts.iter().filter_map(Value::as_str) {
                out.push(("--add-host", h.to_string()));
            }
        }
        if let Some(size) = &self.shm_size {
            out.push(("--shm-size", size.clone()));
        }
        if let Some(Value::Mapping(u)) = &self.ulimits {
            for (k, v) in u {
                let (Some(name), Some(soft), Some(hard)) = (
                    k.as_str(),
                    v.get("soft").and_then(Value::as_i64),
                    v.get("hard").and_then(Value::as_i64),
                ) else {
                    continue;
                };
                out.push(("--ulimit", format!("{name}={soft}:{hard}")));
            }
        }
        out
    }

    pub fn ssh_specs(&self) -> Vec<String> {
        match &self.ssh {
            Some(Value::Sequence(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            Some(Value::Mapping(m)) => m
                .iter()
                .filter_map(|(k, v)| {
                    let k = k.as_str()?;
                    Some(match v.as_str() {
                        Some(path) if !path.is_empty() => format!("{k}={path}"),
                        _ => k.to_string(),
                    })
                })
                .collect(),
            Some(Value::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        }
    }
}

/// A service's lifecycle hooks (`post_start`, `pre_stop`): each is a command run in the
/// container as `exec` runs one, so they read as [`WatchExec`]s; `environment` may be a
/// list of `KEY=VALUE` as in a service.
pub fn hooks(v: &Option<Value>) -> Result<Vec<WatchExec>, String> {
    let Some(v) = v else { return Ok(Vec::new()) };
    let Value::Sequence(items) = v else {
        return Err("must be a list of hooks".into());
    };
    items
        .iter()
        .map(|item| {
            let mut item = item.clone();
            if let Some(Value::Sequence(env)) = item.get("environment").cloned() {
                let mut map = serde_yaml::Mapping::new();
                for e in env.iter().filter_map(Value::as_str) {
                    let (k, val) = e.split_once('=').unwrap_or((e, ""));
                    map.insert(Value::from(k), Value::from(val));
                }
                item["environment"] = Value::Mapping(map);
            }
            serde_yaml::from_value::<WatchExec>(item).map_err(|e| e.to_string())
        })
        .collect()
}

impl WatchExec {
    /// The command as argv: a list as is, a string split as a shell would.
    pub fn argv(&self) -> Result<Vec<String>, String> {
        match &self.command {
            Value::String(s) => shell_words::split(s).map_err(|e| e.to_string()),
            Value::Sequence(items) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| "command: a list of strings".to_string())
                })
                .collect(),
            _ => Err("command must be a string or a list".into()),
        }
    }
}

/// A service's use of a secret or config (`- name` becomes `{source: name}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRef {
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Value>,
}

impl FileRef {
    /// The file's `mode`: a YAML integer (0440 is octal in YAML 1.1; 288 the same in
    /// decimal) or a string of octal digits; 0444 when not given, as Compose's default.
    pub fn file_mode(&self) -> Result<u32, String> {
        match &self.mode {
            None => Ok(0o444),
            Some(Value::Number(n)) => n
                .as_u64()
                .filter(|m| *m <= 0o7777)
                .map(|m| m as u32)
                .ok_or_else(|| format!("bad mode {n}")),
            Some(Value::String(t)) => u32::from_str_radix(t.trim_start_matches("0o"), 8)
                .map_err(|_| format!("bad mode {t:?}")),
            Some(other) => Err(format!("bad mode {other:?}")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ulimit {
    pub soft: i64,
    pub hard: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_opts: Option<Value>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub external: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub internal: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_ipv6: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam: Option<Value>,
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub labels: IndexMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Volume {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_opts: Option<Value>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub external: bool,
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub labels: IndexMap<String, String>,
}

/// A top-level secret or config: file-based (`file`), from the environment or inline.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileObject {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub external: bool,
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub labels: IndexMap<String, String>,
}

impl Service {
    /// How many containers `up` runs: `scale`, else `deploy.replicas`, else 1.
    pub fn replicas(&self) -> u32 {
        self.scale
            .or(self.deploy.as_ref().and_then(|d| d.replicas))
            .unwrap_or(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_modes_read_as_compose_writes_them() {
        let r: FileRef = serde_yaml::from_str("{source: s, mode: 0440}").unwrap();
        assert_eq!(r.file_mode(), Ok(0o440));
        let r: FileRef = serde_yaml::from_str("{source: s, mode: 288}").unwrap();
        assert_eq!(r.file_mode(), Ok(0o440));
        let r: FileRef = serde_yaml::from_str("{source: s, mode: \"0400\"}").unwrap();
        assert_eq!(r.file_mode(), Ok(0o400));
        let r: FileRef = serde_yaml::from_str("{source: s}").unwrap();
        assert_eq!(r.file_mode(), Ok(0o444));
        let r: FileRef = serde_yaml::from_str("{source: s, mode: 99999}").unwrap();
        assert!(r.file_mode().is_err());
    }
}
