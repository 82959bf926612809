//! The engine's only door to networking. `--network none|host|container:<name>` are
//! handled here; bridge and user networks go to `berth-net` through [`attach`] (between
//! `Runtime::create` and `Runtime::start`, when the container's netns exists) and
//! [`release`] (on exit, stop and rm).

use std::path::Path;

use crate::record::{Container, NetworkLink};
use crate::{Error, Result};

/// How the container's network namespace is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// A new netns with only `lo` (the runtime brings it up).
    None,
    /// The host's netns.
    Host,
    /// Joins another container's netns, by its id.
    Container(String),
    /// A bridge or user network: a new netns that [`attach`] wires up.
    Network(String),
}

pub fn mode(network: &str) -> Mode {
    match network {
        "none" => Mode::None,
        "host" => Mode::Host,
        n if n.starts_with("container:") => Mode::Container(n["container:".len()..].into()),
        "" | "default" => Mode::Network("bridge".into()),
        n => Mode::Network(n.into()),
    }
}

/// What the container got from its network, for inspect and `port`.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Endpoint {
    pub network: String,
    /// The network's id (for events after the network record is gone).
    #[serde(default)]
    pub network_id: String,
    pub ip: String,
    pub prefix: u8,
    pub gateway: String,
    pub mac: String,
    /// `container_port/proto` → host `(ip, port)`.
    pub ports: Vec<(String, String, u16)>,
    /// Host end of the veth pair.
    #[serde(default)]
    pub host_veth: String,
}

/// Refuses what cannot work before anything is created: bad `-p` specs.
pub fn check(c: &Container) -> Result<()> {
    if matches!(mode(&c.config.network), Mode::Network(_)) {
        publish(c)?;
    }
    Ok(())
}

fn net_err(e: berth_net::NetError) -> Error {
    Error::Network(e.to_string())
}

/// `-p` specs, plus every exposed port on a random host port with `-P`.
fn publish(c: &Container) -> Result<Vec<berth_net::PortMapping>> {
    let mut out = Vec::new();
    for p in &c.config.publish {
        out.extend(berth_net::parse_publish(p).map_err(net_err)?);
    }
    if c.config.publish_all {
        for e in &c.config.exposed_ports {
            let (port, proto) = e.split_once('/').unwrap_or((e, "tcp"));
            let Ok(port) = port.parse::<u16>() else {
                continue;
            };
            let proto = if proto == "udp" {
                berth_net::Proto::Udp
            } else {
                berth_net::Proto::Tcp
            };
            if !out
                .iter()
                .any(|m| m.container_port == port && m.proto == proto)
            {
                out.push(berth_net::PortMapping {
                    host_ip: None,
                    host_port: 0,
                    container_port: port,
                    proto,
                });
            }
        }
    }
    Ok(out)
}

/// `--ip` as an address.
fn requested_ip(c: &Container) -> Result<Option<std::net::Ipv4Addr>> {
    c.config
        .ip
        .as_deref()
        .map(|ip| {
            ip.parse()
                .map_err(|_| Error::Invalid(format!("invalid IPv4 address: {ip}")))
        })
        .transpose()
}

fn requested_mac(c: &Container) -> Result<Option<[u8; 6]>> {
    c.config
        .mac_address
        .as_deref()
        .map(|m| berth_net::parse_mac(m).map_err(|e| Error::Invalid(e.to_string())))
        .transpose()
}

/// Wires the container (init `pid`, its netns at `/proc/<pid>/ns/net`) into its network
/// with berth-net, which also keeps its `hosts` file (in `dir`) up to date. A no-op for
/// none/host/container: modes.
pub fn attach(
    root: &Path,
    c: &Container,
    pid: i32,
    dir: &Path,
    extra_hosts: Vec<String>,
) -> Result<Option<Endpoint>> {
    let Mode::Network(network) = mode(&c.config.network) else {
        return Ok(None);
    };
    let net = berth_net::Net::open(root).map_err(net_err)?;
    tracing::debug!("net: opened");
    let ep = net
        .connect(&berth_net::Attach {
            container_id: c.id.clone(),
            name: c.name.clone(),
            network: network.clone(),
            netns: format!("/proc/{pid}/ns/net").into(),
            aliases: c.config.network_aliases.clone(),
            ports: publish(c)?,
            hosts_file: Some(dir.join("hosts")),
            hostname: c.config.hostname.clone(),
            ip: requested_ip(c)?,
            mac: requested_mac(c)?,
            extra_hosts,
        })
        .map_err(net_err)?;
    crate::events::network(root, "connect", &ep.network_id, &network, Some(&c.id));
    attach_extra(&net, c, pid, dir)?;
    Ok(Some(Endpoint {
        network_id: ep.network_id.clone(),
        network,
        ip: ep.ip.to_string(),
        prefix: ep.prefix,
        gateway: ep.gateway.to_string(),
        mac: ep.mac,
        host_veth: ep.host_veth,
        ports: ep
            .ports
            .iter()
            .map(|p| {
                let ip = p.host_ip.map_or("0.0.0.0".to_string(), |i| i.to_string());
                (format!("{}/{}", p.container_port, p.proto), ip, p.host_port)
            })
            .collect(),
    }))
}

/// Joins the container's further networks (those `network connect` or compose added).
fn attach_extra(net: &berth_net::Net, c: &Container, pid: i32, dir: &Path) -> Result<()> {
    for link in &c.config.extra_networks {
        join(net, c, link, pid, dir)?;
    }
    Ok(())
}

/// Joins one further network: no published ports (Docker publishes on the first network
/// only); names answered there are the container's and `link`'s aliases, kept in the
/// hosts file in `dir`. `pid` is the container's init.
pub fn join(
    net: &berth_net::Net,
    c: &Container,
    link: &NetworkLink,
    pid: i32,
    dir: &Path,
) -> Result<berth_net::Endpoint> {
    net.connect(&berth_net::Attach {
        container_id: c.id.clone(),
        name: c.name.clone(),
        network: link.network.clone(),
        netns: format!("/proc/{pid}/ns/net").into(),
        aliases: link.aliases.clone(),
        ports: Vec::new(),
        hosts_file: Some(dir.join("hosts")),
        hostname: c.config.hostname.clone(),
        ip: None,
        mac: None,
        extra_hosts: Vec::new(),
    })
    .map_err(|e| Error::Network(format!("network {}: {e}", link.network)))
}

/// Gives back the address, veth and firewall rules of a container; idempotent, and free
/// for containers that never had a network of their own.
pub fn release(root: &Path, c: &Container) -> Result<()> {
    if !matches!(mode(&c.config.network), Mode::Network(_)) {
        return Ok(());
    }
    if let Some(ep) = &c.state.endpoint {
        crate::events::network(root, "disconnect", &ep.network_id, &ep.network, Some(&c.id));
    }
    berth_net::Net::open(root)
        .and_then(|n| n.release(&c.id))
        .map_err(net_err)
}

/// The hosts file the container starts with; `extra` are its `--add-host` and link lines.
/// In the host's network namespace without `extra` it is a copy of the host's own
/// `/etc/hosts`, as Docker makes it: the host's names and addresses are the container's
/// there. With `extra` it is the standard file, as Docker's, so that an `--add-host` can
/// override a name the host's file has.
pub fn hosts_text(c: &Container, extra: &[String]) -> String {
    if mode(&c.config.network) == Mode::Host && extra.is_empty() {
        if let Ok(host) = std::fs::read_to_string("/etc/hosts") {
            return host;
        }
    }
    berth_net::hosts_file(extra)
}

/// The resolv.conf text for the container: `--dns`/`--dns-search`, else the host's
/// (minus loopback name servers, which do not answer inside another netns).
pub fn resolv_conf(c: &Container) -> String {
    let cfg = &c.config;
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let mut out = String::new();
    let own_ns = !matches!(mode(&cfg.network), Mode::Host);
    if cfg.dns.is_empty() {
        let mut servers = 0;
        for l in host.lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.first() == Some(&"nameserver") {
                let loopback = f
                    .get(1)
                    .is_some_and(|a| a.starts_with("127.") || *a == "::1");
                if own_ns && loopback {
                    continue;
                }
                servers += 1;
            } else if !cfg.dns_search.is_empty() && f.first() == Some(&"search") {
                continue;
            }
            out.push_str(l);
            out.push('\n');
        }
        if servers == 0 && own_ns {
            out.push_str("nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
        }
    } else {
        for d in &cfg.dns {
            out.push_str(&format!("nameserver {d}\n"));
        }
    }
    if !cfg.dns_search.is_empty() {
        out.push_str(&format!("search {}\n", cfg.dns_search.join(" ")));
    }
    if !cfg.dns_options.is_empty() {
        out.push_str(&format!("options {}\n", cfg.dns_options.join(" ")));
    }
    out
}

/// The special `--add-host` address that stands for the host as containers on the
/// default bridge reach it (Docker's `host-gateway`).
pub const HOST_GATEWAY: &str = "host-gateway";

/// One `--add-host` value, `NAME:IP` or `NAME=IP` (IPv6 addresses may be bracketed), as
/// (name, address); the address may be [`HOST_GATEWAY`].
pub fn parse_add_host(h: &str) -> Result<(String, String)> {
    let (name, ip) = match h.split_once('=') {
        Some(kv) => kv,
        None => h
            .split_once(':')
            .ok_or_else(|| Error::Invalid(format!("bad format for add-host: {h:?}")))?,
    };
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    if name.is_empty() || (ip != HOST_GATEWAY && ip.parse::<std::net::IpAddr>().is_err()) {
        return Err(Error::Invalid(format!(
            "invalid argument {h:?} for \"--add-host\" flag: invalid IP address in add-host: {ip:?}"
        )));
    }
    Ok((name.to_string(), ip.to_string()))
}

/// The address `host-gateway` stands for: the default bridge's gateway.
pub fn host_gateway(root: &Path) -> Result<String> {
    let net = berth_net::Net::open(root).map_err(net_err)?;
    net.get(berth_net::DEFAULT_NETWORK)
        .map_err(net_err)?
        .gateway
        .map(|g| g.to_string())
        .ok_or_else(|| {
            Error::Invalid(
                "unable to resolve host-gateway: the default bridge has no gateway".into(),
            )
        })
}

/// `--add-host` entries as hosts lines; `host-gateway` is `gateway`.
pub fn add_host_lines(c: &Container, gateway: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    for h in &c.config.add_hosts {
        if let Ok((name, ip)) = parse_add_host(h) {
            let ip = match (ip.as_str(), gateway) {
                (HOST_GATEWAY, Some(g)) => g,
                (HOST_GATEWAY, None) => continue,
                _ => ip.as_str(),
            };
            out.push(format!("{ip}\t{name}"));
        }
    }
    out
}
