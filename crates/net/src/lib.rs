//! berth-net: bridge networks for berth containers — bridges, veth pairs, IPAM, NAT,
//! published ports and container names.
//!
//! # Shape
//! [`Net::open`] keeps its state in the root's `berth.db` (tables `networks`,
//! `endpoints`, `net_schema`; SQLite WAL, busy timeout set first, every change in a
//! `BEGIN IMMEDIATE` transaction) and serialises state changes of concurrent berth
//! processes with an flock on `<root>/net/lock` (plus `/run/berth-net.lock` while host-wide
//! names such as bridges and subnets are chosen, since two roots share one kernel).
//! Every network is a Linux bridge (`berth0` for the default `bridge` network,
//! `berth-<9 hex of id>` for user networks) holding the gateway address. An endpoint is a
//! veth pair: the host end (`bv<12 hex>`, a hash of network and container, so a stale one
//! can always be found) is enslaved to the bridge, the peer is created directly inside the
//! container's network namespace as `eth0`, `eth1`, ... with a MAC derived from its
//! address (`02:42:` + IPv4, as Docker does), and gets its address, `lo` up and — on the
//! container's first network only — the default route. Links, addresses and routes are
//! made with rtnetlink requests on a raw socket (`netlink.rs`; the configuration inside
//! the container is done by briefly `setns`-ing the calling thread): a connect without
//! published ports costs about 2 ms (debug build, mostly the kernel making the veth pair),
//! with no process spawned; `ip` would cost a millisecond or more per invocation.
//! Addresses are allocated in the same transaction that records the endpoint, and a
//! `UNIQUE(network_id, ip)` constraint makes a double hand-out impossible even if the
//! locks were bypassed; the gateway, network and broadcast addresses are never handed out,
//! and addresses go round (the first free one after the last handed out), so a just
//! released address is not reused while its old veth may still be dying.
//!
//! # Names: hosts files
//! On user-defined networks containers find each other by name, alias and short id
//! through their `/etc/hosts`, which berth rewrites whenever an endpoint on one of the
//! container's networks comes or goes. This needs no server process (berth has no
//! daemon, and a per-network DNS server would be one more long-lived process to supervise
//! and to keep in step with the database), resolution works with any libc or busybox, and
//! it costs nothing at run time. The file is rewritten in place — same inode — because it
//! is bind-mounted into the container. The default `bridge` network gets no peer names,
//! like Docker's. The price: names of containers joining later appear only after the
//! rewrite (instantly, but a program that cached the file will not see them).
//!
//! # iptables chains
//! All rules live in berth's own chains, created once and jumped to once from the
//! built-ins ([`iptables`]): `nat BERTH-DNAT` (from PREROUTING and OUTPUT, for local
//! destinations only) holds one DNAT rule per published port; `nat BERTH-POSTROUTING`
//! (from POSTROUTING) masquerades each network's subnet leaving through other interfaces,
//! loopback sources entering a bridge (published ports reached on 127.0.0.1, with
//! `route_localnet` on the bridge) and hairpin traffic (a container reaching a published
//! port on its own bridge); `filter BERTH-FORWARD` (inserted first in FORWARD, so that a
//! DROP policy such as dockerd's does not block berth bridges) accepts forwarding to and
//! from each bridge, or for an `internal` network only within it. Rules are added and
//! removed with one `iptables-restore --noflush` transaction per change. An endpoint
//! without published ports touches no rule at all, so the common `run` path execs nothing.
//!
//! # Exact cleanup
//! Every rule carries a comment naming its owner: `berth-net:<bridge>` or
//! `berth-ep:<network id>:<container id>`. Removal first deletes exactly the rules that
//! were added (regenerated from the recorded endpoint; one transaction), and if any was
//! already gone falls back to deleting whatever still carries the owner's marker. The host
//! end of a veth is deleted by its recorded (and derivable) name, which takes the peer
//! with it — but only while the container's namespace lives. Each endpoint records the
//! identity (device and inode) of the namespace it was connected to; when the path no
//! longer names that namespace the container is gone, its namespace dies with it and the
//! kernel deletes the pair in its own background cleanup. Deleting a link waits for RCU
//! grace periods (20-30 ms here), so this keeps `run --rm` from paying for it: a release
//! after the container exited costs well under a millisecond. A failed connect undoes its
//! own link and rules before rolling back its transaction, so nothing is left behind;
//! release is idempotent. The network tables use `synchronous=NORMAL` (commits atomic,
//! not fsynced): the kernel state they describe does not survive a power loss either.
//!
//! # Limits
//! * The default network's bridge `berth0` is one device per host while each root has
//!   its own database, so its addresses are also leased host-wide (files under
//!   `/run/berth-net/leases`, see the `leases` module). User networks are safe across
//!   roots (subnets are picked under a host-wide lock, avoiding every existing route).
//! * `connect` trusts an existing bridge to have its rules; after a firewall flush call
//!   [`Net::repair`].
//! * IPv4 only; publishing on an IPv6 host address is refused. A host port range mapped
//!   to one container port (`8000-8010:80`) is refused rather than picked from.
//! * Needs root (CAP_NET_ADMIN), `iptables-restore`/`iptables-save` (either backend) and
//!   writes the sysctls `net.ipv4.ip_forward=1` and `net.ipv4.conf.<bridge>.route_localnet=1`.

mod files;
pub mod iptables;
mod leases;
mod net;
mod netlink;
mod ports;
mod store;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

pub use files::{hosts_file, resolv_conf};
pub use ipnet::Ipv4Net;
pub use net::{parse_mac, Net};
pub use ports::parse_publish;
use serde::{Deserialize, Serialize};

/// Name of the default network.
pub const DEFAULT_NETWORK: &str = "bridge";
/// Bridge device of the default network.
pub const DEFAULT_BRIDGE: &str = "berth0";

/// Errors of berth-net.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("network {0} not found")]
    NotFound(String),
    #[error("network name or id prefix {0:?} matches several networks")]
    Ambiguous(String),
    #[error("network {0} already exists")]
    Exists(String),
    #[error("network {0} is predefined and cannot be removed")]
    Predefined(String),
    #[error("network {network} has active endpoints: {containers}")]
    InUse { network: String, containers: String },
    #[error("container {container} is already connected to network {network}")]
    AlreadyConnected { container: String, network: String },
    #[error("container {container} is not connected to network {network}")]
    NotConnected { container: String, network: String },
    #[error("host port {port}/{proto} on {} is already in use", host_ip.map(|i| i.to_string()).unwrap_or_else(|| "0.0.0.0".into()))]
    PortInUse {
        port: u16,
        proto: Proto,
        host_ip: Option<IpAddr>,
    },
    #[error("no free address left in network {0}")]
    Exhausted(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("{command} failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("network database: {0}")]
    Db(#[from] rusqlite::Error),
}

impl NetError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> NetError {
        NetError::Io {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T> = std::result::Result<T, NetError>;

/// Transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    #[default]
    Tcp,
    Udp,
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// One published port (`-p`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PortMapping {
    /// Host address to publish on; None (or 0.0.0.0) means every host address.
    pub host_ip: Option<IpAddr>,
    /// Host port; 0 asks for a free one (resolved in [`Endpoint::ports`]).
    pub host_port: u16,
    pub container_port: u16,
    pub proto: Proto,
}

/// Options of [`Net::create`].
#[derive(Debug, Clone, Default)]
pub struct NetworkOptions {
    /// Subnet; a free /24 from 10.89.1.0/24 upwards when None.
    pub subnet: Option<Ipv4Net>,
    /// Gateway (bridge) address; the subnet's first host when None.
    pub gateway: Option<Ipv4Addr>,
    /// Addresses are handed out from this part of the subnet only (`--ip-range`); a
    /// static `--ip` may still be anywhere in the subnet, as Docker.
    pub ip_range: Option<Ipv4Net>,
    /// No NAT, no forwarding out of the bridge.
    pub internal: bool,
    pub labels: BTreeMap<String, String>,
    /// Driver options (`-o`): `com.docker.network.bridge.name` and
    /// `com.docker.network.driver.mtu`; others are ignored ([`unsupported_options`]).
    pub options: BTreeMap<String, String>,
}

/// The bridge device's name as a driver option.
pub const OPT_BRIDGE_NAME: &str = "com.docker.network.bridge.name";
/// The MTU of the bridge and its veths as a driver option.
pub const OPT_MTU: &str = "com.docker.network.driver.mtu";

/// The driver options of `opts` that berth's bridge driver ignores.
pub fn unsupported_options(opts: &NetworkOptions) -> Vec<&str> {
    opts.options
        .keys()
        .map(String::as_str)
        .filter(|k| *k != OPT_BRIDGE_NAME && *k != OPT_MTU)
        .collect()
}

/// A container's attachment as shown in a network's `Containers` map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attached {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(rename = "MacAddress")]
    pub mac: String,
    /// Address with prefix, e.g. `10.89.1.2/24`.
    #[serde(rename = "IPv4Address")]
    pub ipv4: String,
    #[serde(rename = "IPv6Address")]
    pub ipv6: String,
}

/// A network. Serialises in the shape of `docker network inspect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub id: String,
    pub name: String,
    /// "bridge", or "host" / "null" for the predefined host and none networks.
    pub driver: String,
    /// Bridge device (empty for host/none).
    pub bridge: String,
    pub subnet: Option<Ipv4Net>,
    pub gateway: Option<Ipv4Addr>,
    /// Where dynamic addresses come from, when narrower than the subnet.
    pub ip_range: Option<Ipv4Net>,
    pub internal: bool,
    pub labels: BTreeMap<String, String>,
    /// Driver options kept for later connects (the MTU); the bridge name is `bridge`.
    pub options: BTreeMap<String, String>,
    /// Creation time, seconds since the epoch.
    pub created: i64,
    /// Attached containers by container id.
    pub containers: BTreeMap<String, Attached>,
}

impl Network {
    /// Whether this is one of the predefined networks (bridge, host, none).
    pub fn is_predefined(&self) -> bool {
        matches!(self.name.as_str(), "bridge" | "host" | "none")
    }

    /// When it was created, in RFC 3339 (UTC).
    pub fn created_at(&self) -> String {
        rfc3339(self.created)
    }

    /// The MTU asked for at create, if any.
    pub fn mtu(&self) -> Option<u32> {
        self.options.get(OPT_MTU).and_then(|m| m.parse().ok())
    }
}

/// A container's attachment to one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub network: String,
    pub network_id: String,
    pub container_id: String,
    /// Interface name inside the container (eth0, eth1, ...).
    pub ifname: String,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub mac: String,
    /// Published ports with host ports resolved.
    pub ports: Vec<PortMapping>,
    /// Host end of the veth pair.
    pub host_veth: String,
    /// Container name and aliases this endpoint answers to on the network.
    pub name: String,
    pub aliases: Vec<String>,
}

/// A request to attach a container to a network ([`Net::connect`]).
#[derive(Debug, Clone, Default)]
pub struct Attach {
    pub container_id: String,
    /// Container name.
    pub name: String,
    /// Network name or id (prefix).
    pub network: String,
    /// The container's network namespace, e.g. `/proc/<pid>/ns/net`.
    pub netns: PathBuf,
    pub aliases: Vec<String>,
    pub ports: Vec<PortMapping>,
    /// The container's hosts file (bind-mounted on its /etc/hosts), kept up to date.
    pub hosts_file: Option<PathBuf>,
    pub hostname: String,
    /// `--ip`: this address rather than the next free one (user-defined networks only).
    pub ip: Option<Ipv4Addr>,
    /// `--mac-address`: this MAC rather than the one derived from the address.
    pub mac: Option<[u8; 6]>,
    /// Lines the container's hosts file carries besides the networks' names
    /// (`--add-host`, `--link`), kept first as in Docker's: `IP<TAB>names`.
    pub extra_hosts: Vec<String>,
}

#[derive(Serialize)]
struct IpamConfig {
    #[serde(rename = "Subnet")]
    subnet: String,
    #[serde(rename = "Gateway")]
    gateway: String,
    #[serde(rename = "IPRange", skip_serializing_if = "Option::is_none")]
    ip_range: Option<String>,
}

#[derive(Serialize)]
struct Ipam {
    #[serde(rename = "Driver")]
    driver: &'static str,
    #[serde(rename = "Options")]
    options: BTreeMap<String, String>,
    #[serde(rename = "Config")]
    config: Vec<IpamConfig>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct NetworkView<'a> {
    name: &'a str,
    id: &'a str,
    created: String,
    scope: &'static str,
    driver: &'a str,
    #[serde(rename = "EnableIPv6")]
    enable_ipv6: bool,
    #[serde(rename = "IPAM")]
    ipam: Ipam,
    internal: bool,
    attachable: bool,
    ingress: bool,
    containers: &'a BTreeMap<String, Attached>,
    options: BTreeMap<String, String>,
    labels: &'a BTreeMap<String, String>,
}

impl Serialize for Network {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let config = match (self.subnet, self.gateway) {
            (Some(n), Some(g)) => vec![IpamConfig {
                subnet: n.to_string(),
                gateway: g.to_string(),
                ip_range: self.ip_range.map(|r| r.to_string()),
            }],
            _ => Vec::new(),
        };
        let mut options = self.options.clone();
        if !self.bridge.is_empty() {
            options.insert(OPT_BRIDGE_NAME.to_string(), self.bridge.clone());
        }
        NetworkView {
            name: &self.name,
            id: &self.id,
            created: self.created_at(),
            scope: "local",
            driver: &self.driver,
            enable_ipv6: false,
            ipam: Ipam {
                driver: "default",
                options: BTreeMap::new(),
                config,
            },
            internal: self.internal,
            attachable: false,
            ingress: false,
            containers: &self.containers,
            options,
            labels: &self.labels,
        }
        .serialize(s)
    }
}

/// Seconds since the epoch as RFC 3339 UTC (civil-from-days, proleptic Gregorian).
fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_764_190_000), "2025-11-26T20:46:40Z");
    }

    #[test]
    fn network_json_has_docker_shape() {
        let mut containers = BTreeMap::new();
        containers.insert(
            "abc".to_string(),
            Attached {
                name: "web".into(),
                endpoint_id: "e".into(),
                mac: "02:42:0a:59:01:02".into(),
                ipv4: "10.89.1.2/24".into(),
                ipv6: String::new(),
            },
        );
        let n = Network {
            id: "f".repeat(64),
            name: "front".into(),
            driver: "bridge".into(),
            bridge: "berth-fffffffff".into(),
            subnet: Some("10.89.1.0/24".parse().unwrap()),
            gateway: Some(Ipv4Addr::new(10, 89, 1, 1)),
            ip_range: None,
            internal: false,
            labels: BTreeMap::new(),
            options: BTreeMap::new(),
            created: 0,
            containers,
        };
        let v = serde_json::to_value(&n).unwrap();
        assert_eq!(v["Name"], "front");
        assert_eq!(v["Driver"], "bridge");
        assert_eq!(v["IPAM"]["Config"][0]["Subnet"], "10.89.1.0/24");
        assert_eq!(v["IPAM"]["Config"][0]["Gateway"], "10.89.1.1");
        assert_eq!(v["Internal"], false);
        assert_eq!(v["Containers"]["abc"]["IPv4Address"], "10.89.1.2/24");
        assert_eq!(v["Containers"]["abc"]["Name"], "web");
    }
}
