//! [`Net`]: networks and endpoints, tying the database to the kernel.

use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use ipnet::Ipv4Net;
use rusqlite::{Connection, Transaction, TransactionBehavior};

use crate::files::{self, HostLine};
use crate::netlink::{self, Socket};
use crate::store::{self, EndpointRow};
use crate::{iptables, leases};
use crate::{
    Attach, Attached, Endpoint, NetError, Network, NetworkOptions, Result, DEFAULT_BRIDGE,
    DEFAULT_NETWORK,
};

/// Host-wide lock held while host-wide names (bridges, subnets) are chosen or changed:
/// two berth roots on one host share the kernel's network namespace.
const GLOBAL_LOCK: &str = "/run/berth-net.lock";
/// Preferred subnet of the default network.
const DEFAULT_SUBNET: Ipv4Net = match Ipv4Net::new(Ipv4Addr::new(10, 89, 0, 0), 24) {
    Ok(n) => n,
    Err(_) => panic!("bad default subnet"),
};

/// berth's networks on this host, for one berth root.
pub struct Net {
    root: PathBuf,
    conn: Mutex<Connection>,
}

/// Exclusive access to the state: this process's connection plus the root's flock.
struct Guard<'a> {
    conn: MutexGuard<'a, Connection>,
    _lock: File,
}

impl Net {
    /// Opens (creating if needed) the network state under `root`.
    pub fn open(root: &Path) -> Result<Net> {
        let dir = root.join("net");
        std::fs::create_dir_all(&dir)
            .map_err(|e| NetError::io(format!("creating {}", dir.display()), e))?;
        let conn = store::open(&root.join("berth.db"), seed)?;
        Ok(Net {
            root: root.to_path_buf(),
            conn: Mutex::new(conn),
        })
    }

    fn lock(&self) -> Result<Guard<'_>> {
        // The mutex first, so that only one thread per process waits on the flock (an
        // flock is per open file, so threads sharing one would not exclude each other).
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let lock = flock(&self.root.join("net/lock"))?;
        Ok(Guard { conn, _lock: lock })
    }

    fn reader(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates a user-defined bridge network and its bridge device.
    pub fn create(&self, name: &str, opts: &NetworkOptions) -> Result<Network> {
        check_name(name)?;
        let mut g = self.lock()?;
        let _global = flock(Path::new(GLOBAL_LOCK))?;
        let tx = g
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let existing = store::networks(&tx)?;
        if existing.iter().any(|n| n.name == name) {
            return Err(NetError::Exists(name.to_string()));
        }
        let subnet = match opts.subnet {
            Some(s) => {
                check_subnet(s, &existing)?;
                s.trunc()
            }
            None => pick_subnet(&existing, None)?,
        };
        let gateway = match opts.gateway {
            Some(g) => {
                check_gateway(subnet, g)?;
                g
            }
            None => first_host(subnet)?,
        };
        let ip_range = opts
            .ip_range
            .map(|r| check_ip_range(opts.subnet.map(|_| subnet), r))
            .transpose()?;
        let id = random_id()?;
        let (bridge, options) = driver_options(opts, &existing)?;
        let net = Network {
            bridge: bridge.unwrap_or_else(|| format!("berth-{}", &id[..9])),
            id,
            name: name.to_string(),
            driver: "bridge".into(),
            subnet: Some(subnet),
            gateway: Some(gateway),
            ip_range,
            internal: opts.internal,
            labels: opts.labels.clone(),
            options,
            created: now(),
            containers: BTreeMap::new(),
        };
        store::insert_network(&tx, &net)?;
        if let Err(e) = setup_infra(&net, true) {
            teardown_infra(&net);
            return Err(e);
        }
        if let Err(e) = tx.commit() {
            teardown_infra(&net);
            return Err(e.into());
        }
        Ok(net)
    }

    /// A network by name, full id or unique id prefix.
    pub fn get(&self, name_or_id_prefix: &str) -> Result<Network> {
        let conn = self.reader();
        let mut net = resolve(&conn, name_or_id_prefix)?;
        fill_containers(&conn, std::slice::from_mut(&mut net))?;
        Ok(net)
    }

    /// Every network, predefined ones first.
    pub fn list(&self) -> Result<Vec<Network>> {
        let conn = self.reader();
        let mut nets = store::networks(&conn)?;
        fill_containers(&conn, &mut nets)?;
        Ok(nets)
    }

    /// Removes a user network: its bridge, rules and record. Refuses while in use.
    pub fn remove(&self, name_or_id: &str) -> Result<()> {
        let mut g = self.lock()?;
        let tx = g
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let net = resolve(&tx, name_or_id)?;
        remove_locked(&tx, &net)?;
        tx.commit()?;
        Ok(())
    }

    /// Removes every user network no container is attached to; returns their names.
    pub fn prune(&self) -> Result<Vec<String>> {
        self.prune_where(|_| true)
    }

    /// [`prune`](Self::prune) of the networks `eligible` accepts only (`--filter`).
    pub fn prune_where(&self, eligible: impl Fn(&Network) -> bool) -> Result<Vec<String>> {
        let mut g = self.lock()?;
        let tx = g
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut removed = Vec::new();
        for net in store::networks(&tx)? {
            if net.is_predefined()
                || !eligible(&net)
                || !store::endpoints_of_network(&tx, &net.id)?.is_empty()
            {
                continue;
            }
            remove_locked(&tx, &net)?;
            removed.push(net.name);
        }
        tx.commit()?;
        Ok(removed)
    }

    /// Attaches a container (its network namespace) to a network.
    pub fn connect(&self, req: &Attach) -> Result<Endpoint> {
        check_container_id(&req.container_id)?;
        for n in std::iter::once(&req.name)
            .chain(std::iter::once(&req.hostname))
            .chain(&req.aliases)
        {
            check_host_name(n)?;
        }
        let mut g = self.lock()?;
        let tx = g
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let net = resolve(&tx, &req.network)?;
        if net.driver != "bridge" {
            return Err(NetError::Invalid(format!(
                "cannot connect a container to network {} (driver {})",
                net.name, net.driver
            )));
        }
        ensure_infra(&net)?;
        tracing::debug!("net: network resolved");
        let row = plan_endpoint(&tx, &net, req)?;
        tracing::debug!("net: address leased");
        let give_back = || {
            if net.name == DEFAULT_NETWORK {
                leases::give_back(&net.bridge, row.ep.ip, &req.container_id);
            }
        };
        let attached = (|| {
            let nets = store::networks(&tx)?;
            let mine = store::endpoints_of_container(&tx, &req.container_id)?;
            let routed = mine
                .iter()
                .any(|e| nets.iter().any(|n| n.id == e.ep.network_id && !n.internal));
            store::insert_endpoint(&tx, &row)?;
            attach_kernel(&net, &row.ep, &req.netns, !routed && !net.internal)
        })();
        if let Err(e) = attached {
            give_back();
            return Err(e);
        }
        tracing::debug!("net: links up");
        let done = write_hosts(&tx, &req.container_id).and_then(|()| {
            rewrite_peers(&tx, &net, &req.container_id);
            tx.commit().map_err(NetError::from)
        });
        if let Err(e) = done {
            if let Err(undo) = detach_kernel(&row.ep, true) {
                tracing::warn!("undoing a failed connect: {undo}");
            }
            give_back();
            return Err(e);
        }
        Ok(row.ep)
    }

    /// Detaches a container from one network.
    pub fn disconnect(&self, container_id: &str, network: &str) -> Result<()> {
        let mut g = self.lock()?;
        let tx = g
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let net = resolve(&tx, network)?;
        let row = store::endpoints_of_container(&tx, container_id)?
            .into_iter()
            .find(|e| e.ep.network_id == net.id)
            .ok_or_else(|| NetError::NotConnected {
                container: container_id.to_string(),
                network: net.name.clone(),
            })?;
        detach_kernel(&row.ep, netns_alive(&row.netns))?;
        store::delete_endpoint(&tx, &net.id, container_id)?;
        if net.name == DEFAULT_NETWORK {
            leases::give_back(&net.bridge, row.ep.ip, container_id);
        }
        if let Err(e) = write_hosts(&tx, container_id) {
            tracing::warn!("updating hosts file of {container_id}: {e}");
        }
        rewrite_peers(&tx, &net, container_id);
        tx.commit()?;
        Ok(())
    }

    /// Releases everything a container holds on every network. Idempotent; links that
    /// died with the container's namespace are not errors.
    pub fn release(&self, container_id: &str) -> Result<()> {
        let mut g = self.lock()?;
        let tx = g
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let rows = store::endpoints_of_container(&tx, container_id)?;
        if rows.is_empty() {
            return Ok(());
        }
        for row in &rows {
            detach_kernel(&row.ep, netns_alive(&row.netns))?;
            store::delete_endpoint(&tx, &row.ep.network_id, container_id)?;
        }
        let nets = store::networks(&tx)?;
        for row in &rows {
            if let Some(net) = nets.iter().find(|n| n.id == row.ep.network_id) {
                if net.name == DEFAULT_NETWORK {
                    leases::give_back(&net.bridge, row.ep.ip, container_id);
                }
                rewrite_peers(&tx, net, container_id);
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Re-creates every bridge network's missing bridge, chains and rules (present rules
    /// are left alone, so nothing doubles or blinks). [`Net::connect`] only
    /// checks that the bridge exists, so this is the way back after the host's rules were
    /// flushed behind berth's back (e.g. a firewall reload).
    pub fn repair(&self) -> Result<()> {
        let g = self.lock()?;
        let _global = flock(Path::new(GLOBAL_LOCK))?;
        for net in store::networks(&g.conn)? {
            if net.driver == "bridge" {
                setup_infra(&net, false)?;
            }
        }
        Ok(())
    }

    /// A container's endpoints, in interface order.
    pub fn endpoints(&self, container_id: &str) -> Result<Vec<Endpoint>> {
        let conn = self.reader();
        Ok(store::endpoints_of_container(&conn, container_id)?
            .into_iter()
            .map(|r| r.ep)
            .collect())
    }
}

/// Inserts the predefined networks into a fresh schema.
fn seed(tx: &Transaction) -> Result<()> {
    let subnet = pick_subnet(&[], Some(DEFAULT_BRIDGE))?;
    let predefined = [
        (DEFAULT_NETWORK, "bridge", DEFAULT_BRIDGE, Some(subnet)),
        ("host", "host", "", None),
        ("none", "null", "", None),
    ];
    for (name, driver, bridge, subnet) in predefined {
        let gateway = match subnet {
            Some(s) => Some(first_host(s)?),
            None => None,
        };
        store::insert_network(
            tx,
            &Network {
                id: random_id()?,
                name: name.into(),
                driver: driver.into(),
                bridge: bridge.into(),
                subnet,
                gateway,
                ip_range: None,
                internal: false,
                labels: BTreeMap::new(),
                options: BTreeMap::new(),
                created: now(),
                containers: BTreeMap::new(),
            },
        )?;
    }
    Ok(())
}

fn resolve(conn: &Connection, key: &str) -> Result<Network> {
    let nets = store::networks(conn)?;
    if let Some(n) = nets.iter().find(|n| n.name == key || n.id == key) {
        return Ok(n.clone());
    }
    let mut hits = nets
        .into_iter()
        .filter(|n| !key.is_empty() && n.id.starts_with(key));
    match (hits.next(), hits.next()) {
        (Some(n), None) => Ok(n),
        (Some(_), Some(_)) => Err(NetError::Ambiguous(key.to_string())),
        _ => Err(NetError::NotFound(key.to_string())),
    }
}

fn fill_containers(conn: &Connection, nets: &mut [Network]) -> Result<()> {
    for row in store::all_endpoints(conn)? {
        if let Some(n) = nets.iter_mut().find(|n| n.id == row.ep.network_id) {
            let e = &row.ep;
            n.containers.insert(
                e.container_id.clone(),
                Attached {
                    name: e.name.clone(),
                    endpoint_id: e.host_veth.clone(),
                    mac: e.mac.clone(),
                    ipv4: format!("{}/{}", e.ip, e.prefix),
                    ipv6: String::new(),
                },
            );
        }
    }
    Ok(())
}

fn remove_locked(tx: &Transaction, net: &Network) -> Result<()> {
    if net.is_predefined() {
        return Err(NetError::Predefined(net.name.clone()));
    }
    let eps = store::endpoints_of_network(tx, &net.id)?;
    if !eps.is_empty() {
        let names: Vec<String> = eps
            .iter()
            .map(|e| {
                if e.ep.name.is_empty() {
                    e.ep.container_id.clone()
                } else {
                    e.ep.name.clone()
                }
            })
            .collect();
        return Err(NetError::InUse {
            network: net.name.clone(),
            containers: names.join(", "),
        });
    }
    let _global = flock(Path::new(GLOBAL_LOCK))?;
    let mut sock = Socket::open().map_err(|e| NetError::io("opening rtnetlink", e))?;
    sock.del_link(&net.bridge)
        .map_err(|e| NetError::io(format!("deleting bridge {}", net.bridge), e))?;
    iptables::delete_marked(&iptables::network_marker(&net.bridge))?;
    store::delete_network(tx, &net.id)
}

/// Checks an address asked for with `--ip`: inside the subnet, not its network, broadcast
/// or gateway address, and free.
fn requested_ip(
    net: &Network,
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    ip: Ipv4Addr,
    used: &HashSet<Ipv4Addr>,
) -> Result<()> {
    if !subnet.contains(&ip) || ip == subnet.network() || ip == subnet.broadcast() {
        return Err(NetError::Invalid(format!(
            "no configured subnet contains IP address {ip} in network {}",
            net.name
        )));
    }
    if ip == gateway || used.contains(&ip) {
        return Err(NetError::Invalid(format!(
            "address {ip} is already in use in network {}",
            net.name
        )));
    }
    Ok(())
}

/// The next free address; on the shared default bridge also leased host-wide, since
/// another root may take the same address between our look and our take.
fn allocate_shared(
    net: &Network,
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    used: &mut HashSet<Ipv4Addr>,
    last: Option<Ipv4Addr>,
    req: &Attach,
    netns: &str,
) -> Result<Ipv4Addr> {
    let shared = net.name == DEFAULT_NETWORK;
    loop {
        let ip = allocate(subnet, net.ip_range, gateway, used, last)
            .ok_or_else(|| NetError::Exhausted(net.name.clone()))?;
        if !shared || leases::take(&net.bridge, ip, &req.container_id, netns)? {
            return Ok(ip);
        }
        used.insert(ip);
    }
}

/// Chooses address, interface name, ports and link names for a new endpoint.
fn plan_endpoint(tx: &Transaction, net: &Network, req: &Attach) -> Result<EndpointRow> {
    let (Some(subnet), Some(gateway)) = (net.subnet, net.gateway) else {
        return Err(NetError::Invalid(format!(
            "network {} has no subnet",
            net.name
        )));
    };
    let mine = store::endpoints_of_container(tx, &req.container_id)?;
    if mine.iter().any(|e| e.ep.network_id == net.id) {
        return Err(NetError::AlreadyConnected {
            container: req.container_id.clone(),
            network: net.name.clone(),
        });
    }
    let ifname = (0..)
        .map(|i| format!("eth{i}"))
        .find(|n| !mine.iter().any(|e| &e.ep.ifname == n))
        .unwrap_or_else(|| "eth0".into());
    // Docker ignores published ports on internal networks; so does berth.
    let ports = if net.internal {
        Vec::new()
    } else {
        crate::ports::resolve(&req.ports, &store::taken_ports(tx)?)?
    };
    let netns = netns_identity(&req.netns)
        .map(|id| format!("{id}:{}", req.netns.display()))
        .map_err(|e| NetError::io(format!("network namespace {}", req.netns.display()), e))?;
    // Nothing may fail between the lease below and the return: the caller gives the
    // lease back on its own failures, and only once it has the row.
    let mut used: HashSet<Ipv4Addr> = store::used_ips(tx, &net.id)?.into_iter().collect();
    let last = store::last_ip(tx, &net.id)?;
    let shared = net.name == DEFAULT_NETWORK;
    if shared {
        used.extend(leases::taken(&net.bridge, netns_alive)?);
    }
    let ip = match req.ip {
        Some(_) if shared => {
            return Err(NetError::Invalid(
                "user specified IP address is supported on user defined networks only".into(),
            ))
        }
        Some(ip) => {
            requested_ip(net, subnet, gateway, ip, &used)?;
            ip
        }
        None => allocate_shared(net, subnet, gateway, &mut used, last, req, &netns)?,
    };

    store::set_last_ip(tx, &net.id, ip)?;
    let o = ip.octets();
    let hosts_file = req
        .hosts_file
        .as_ref()
        .map(|p| p.to_string_lossy().into_owned())
        .or_else(|| mine.iter().find_map(|e| e.hosts_file.clone()));
    Ok(EndpointRow {
        ep: Endpoint {
            network: net.name.clone(),
            network_id: net.id.clone(),
            container_id: req.container_id.clone(),
            ifname,
            ip,
            prefix: subnet.prefix_len(),
            gateway,
            mac: format_mac(req.mac.unwrap_or([0x02, 0x42, o[0], o[1], o[2], o[3]])),
            ports,
            host_veth: veth_name(&net.id, &req.container_id),
            name: req.name.clone(),
            aliases: req.aliases.clone(),
        },
        hosts_file,
        hostname: req.hostname.clone(),
        netns,
        extra_hosts: req.extra_hosts.clone(),
    })
}

/// The first free host address after `last` (wrapping around), as Docker does: an
/// address just released is handed out again only when the rest are taken, so a veth
/// still dying with its namespace, or a peer's ARP cache, never meets its successor.
/// With an `--ip-range`, only its addresses (that are hosts of the subnet) are used.
fn allocate(
    subnet: Ipv4Net,
    range: Option<Ipv4Net>,
    gateway: Ipv4Addr,
    used: &HashSet<Ipv4Addr>,
    last: Option<Ipv4Addr>,
) -> Option<Ipv4Addr> {
    let pool = range.unwrap_or(subnet);
    let hosts = || {
        (u32::from(pool.network())..=u32::from(pool.broadcast()))
            .map(Ipv4Addr::from)
            .filter(|h| *h != subnet.network() && *h != subnet.broadcast())
    };
    let free = |h: &Ipv4Addr| *h != gateway && !used.contains(h);
    let after = hosts()
        .skip_while(|h| last.is_some_and(|l| *h <= l))
        .find(free);
    after.or_else(|| hosts().find(free))
}

/// `dev:ino` of a namespace file: what it names, whatever the path.
fn netns_identity(path: &Path) -> std::io::Result<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok(format!("{}:{}", m.dev(), m.ino()))
}

/// Whether the namespace recorded at connect is still the one its path names. When the
/// container's process is gone the namespace dies with it, and the kernel deletes the
/// veth pair in the background (its own batched cleanup): deleting it here would cost
/// the caller the ~20-30 ms of RCU grace periods a link deletion waits for.
fn netns_alive(recorded: &str) -> bool {
    let mut parts = recorded.splitn(3, ':');
    let (Some(dev), Some(ino), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
        return true;
    };
    netns_identity(Path::new(path)).is_ok_and(|id| id == format!("{dev}:{ino}"))
}

/// Creates the veth pair, configures the container end and publishes ports; undoes
/// its own work on failure.
fn attach_kernel(net: &Network, ep: &Endpoint, netns: &Path, default_route: bool) -> Result<()> {
    let r = attach_links(net, ep, netns, default_route).and_then(|()| {
        iptables::add(&iptables::endpoint_rules(
            &ep.network_id,
            &ep.container_id,
            ep.ip,
            &ep.ports,
        ))
    });
    if let Err(e) = r {
        if let Err(undo) = detach_kernel(ep, true) {
            tracing::warn!("undoing a failed connect: {undo}");
        }
        return Err(e);
    }
    Ok(())
}

fn attach_links(net: &Network, ep: &Endpoint, netns: &Path, default_route: bool) -> Result<()> {
    let ns = File::open(netns)
        .map_err(|e| NetError::io(format!("opening network namespace {}", netns.display()), e))?;
    let nl = |what: &str| {
        let what = what.to_string();
        move |e| NetError::io(what, e)
    };
    let mut sock = Socket::open().map_err(nl("opening rtnetlink"))?;
    // A leftover from a crash between link creation and commit would block the name.
    sock.del_link(&ep.host_veth)
        .map_err(nl("deleting stale veth"))?;
    let master = netlink::index(&net.bridge).map_err(nl(&format!("bridge {}", net.bridge)))?;
    let mac = parse_mac(&ep.mac)?;
    sock.add_veth(&ep.host_veth, master, &ep.ifname, &ns, mac, net.mtu())
        .map_err(nl(&format!("creating veth {}", ep.host_veth)))?;
    // Published ports reached from a container on the same bridge come back out of its
    // own bridge port.
    let hairpin = format!("/sys/class/net/{}/brport/hairpin_mode", ep.host_veth);
    netlink::write_knob(Path::new(&hairpin), "1").map_err(nl(&hairpin))?;
    netlink::in_netns(&ns, || {
        let mut s = Socket::open()?;
        let idx = netlink::index(&ep.ifname)?;
        s.add_addr(idx, ep.ip, ep.prefix)?;
        s.set_up(idx)?;
        s.set_up(netlink::index("lo")?)?;
        if default_route {
            s.add_default_route(idx, ep.gateway)?;
        }
        Ok(())
    })
    .map_err(nl(&format!(
        "configuring {} in {}",
        ep.ifname,
        netns.display()
    )))
}

/// Deletes an endpoint's rules and (with `links`) its veth pair; what is already gone
/// is fine.
fn detach_kernel(ep: &Endpoint, links: bool) -> Result<()> {
    if links {
        let mut sock = Socket::open().map_err(|e| NetError::io("opening rtnetlink", e))?;
        sock.del_link(&ep.host_veth)
            .map_err(|e| NetError::io(format!("deleting veth {}", ep.host_veth), e))?;
    }
    if !ep.ports.is_empty() {
        let rules = iptables::endpoint_rules(&ep.network_id, &ep.container_id, ep.ip, &ep.ports);
        iptables::delete(
            &rules,
            &iptables::endpoint_marker(&ep.network_id, &ep.container_id),
        )?;
    }
    Ok(())
}

/// Creates the network's bridge and rules if the bridge is missing (first use of the
/// default network, or after a reboot).
fn ensure_infra(net: &Network) -> Result<()> {
    if netlink::index(&net.bridge).is_ok() {
        return Ok(());
    }
    let _global = flock(Path::new(GLOBAL_LOCK))?;
    if netlink::index(&net.bridge).is_ok() {
        return Ok(());
    }
    if let Err(e) = setup_infra(net, true) {
        teardown_infra(net);
        return Err(e);
    }
    Ok(())
}

/// The bridge name (`com.docker.network.bridge.name`) and the options kept with the
/// network (the MTU), checked: a bridge name no other network has and no device takes.
/// Other options are left out (the CLI warns about them).
fn driver_options(
    opts: &NetworkOptions,
    existing: &[Network],
) -> Result<(Option<String>, BTreeMap<String, String>)> {
    let mut keep = BTreeMap::new();
    let mut bridge = None;
    for (k, v) in &opts.options {
        match k.as_str() {
            crate::OPT_BRIDGE_NAME => {
                let ok = !v.is_empty()
                    && v.len() <= 15
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
                if !ok {
                    return Err(NetError::Invalid(format!("invalid bridge name {v:?}")));
                }
                let taken = existing.iter().any(|n| &n.bridge == v)
                    || Path::new("/sys/class/net").join(v).exists();
                if taken {
                    return Err(NetError::Invalid(format!(
                        "bridge name {v:?} is already in use"
                    )));
                }
                bridge = Some(v.clone());
            }
            crate::OPT_MTU => {
                match v.parse::<u32>() {
                    Ok(m) if (68..=65535).contains(&m) => {}
                    _ => return Err(NetError::Invalid(format!("invalid MTU number: {v}"))),
                }
                keep.insert(k.clone(), v.clone());
            }
            // Docker's bridge driver skips options it does not know too; the others it
            // knows (ICC, masquerade, host binding) berth does not implement. The CLI
            // warns about them ([`crate::unsupported_options`]).
            _ => {}
        }
    }
    Ok((bridge, keep))
}

/// Creates the bridge (if missing) and its rules: all of them when `fresh`, else only
/// those missing (so that other processes never see a present rule vanish).
fn setup_infra(net: &Network, fresh: bool) -> Result<()> {
    let (Some(subnet), Some(gateway)) = (net.subnet, net.gateway) else {
        return Err(NetError::Invalid(format!(
            "network {} has no subnet",
            net.name
        )));
    };
    let ctx = |e| NetError::io(format!("creating bridge {}", net.bridge), e);
    let mut sock = Socket::open().map_err(ctx)?;
    // Derived from the gateway like the endpoints' MACs (02:42:<IPv4>), so it is stable
    // across re-creation and distinct from every endpoint of the subnet.
    let g = gateway.octets();
    let mac = [0x02, 0x42, g[0], g[1], g[2], g[3]];
    sock.add_bridge(&net.bridge, mac).map_err(ctx)?;
    let idx = netlink::index(&net.bridge).map_err(ctx)?;
    if let Some(mtu) = net.mtu() {
        sock.set_mtu(idx, mtu).map_err(ctx)?;
    }
    sock.add_addr(idx, gateway, subnet.prefix_len())
        .map_err(ctx)?;
    sock.set_up(idx).map_err(ctx)?;
    let knob = format!("/proc/sys/net/ipv4/conf/{}/route_localnet", net.bridge);
    netlink::write_knob(Path::new(&knob), "1").map_err(|e| NetError::io(knob.clone(), e))?;
    if !net.internal {
        enable_forwarding()?;
    }
    iptables::ensure_base()?;
    let rules = iptables::network_rules(&net.bridge, subnet, net.internal);
    if fresh {
        // Rules of an earlier life of this bridge (deleted behind berth's back) would
        // otherwise be doubled.
        iptables::delete_marked(&iptables::network_marker(&net.bridge))?;
        iptables::add(&rules)
    } else {
        iptables::add_missing(&rules)
    }
}

fn teardown_infra(net: &Network) {
    if let Ok(mut s) = Socket::open() {
        if let Err(e) = s.del_link(&net.bridge) {
            tracing::warn!("deleting bridge {}: {e}", net.bridge);
        }
    }
    if let Err(e) = iptables::delete_marked(&iptables::network_marker(&net.bridge)) {
        tracing::warn!("deleting rules of network {}: {e}", net.name);
    }
}

fn enable_forwarding() -> Result<()> {
    let path = "/proc/sys/net/ipv4/ip_forward";
    let cur = std::fs::read_to_string(path).unwrap_or_default();
    if cur.trim() != "1" {
        std::fs::write(path, "1").map_err(|e| NetError::io("enabling ip_forward", e))?;
    }
    Ok(())
}

/// Rewrites the hosts file of a container from the database (if it has one).
fn write_hosts(conn: &Connection, cid: &str) -> Result<()> {
    let mine = store::endpoints_of_container(conn, cid)?;
    let Some(file) = mine.iter().find_map(|e| e.hosts_file.clone()) else {
        return Ok(());
    };
    let mut lines = Vec::new();
    for e in &mine {
        let user = e.ep.network != DEFAULT_NETWORK;
        let mut names = vec![e.hostname.clone()];
        if user {
            names.push(e.ep.name.clone());
            names.extend(e.ep.aliases.iter().cloned());
        }
        lines.push(HostLine { ip: e.ep.ip, names });
    }
    for e in mine.iter().filter(|e| e.ep.network != DEFAULT_NETWORK) {
        for peer in store::endpoints_of_network(conn, &e.ep.network_id)? {
            if peer.ep.container_id == cid {
                continue;
            }
            let mut names = vec![peer.ep.name.clone()];
            names.extend(peer.ep.aliases.iter().cloned());
            names.push(short_id(&peer.ep.container_id).to_string());
            lines.push(HostLine {
                ip: peer.ep.ip,
                names,
            });
        }
    }
    let extra = mine
        .iter()
        .find(|e| !e.extra_hosts.is_empty())
        .map_or(&[][..], |e| &e.extra_hosts[..]);
    files::write_in_place(Path::new(&file), &files::render_hosts(extra, &lines))
}

/// Rewrites the hosts files of every other container on a user network.
fn rewrite_peers(conn: &Connection, net: &Network, except: &str) {
    if net.name == DEFAULT_NETWORK {
        return;
    }
    let peers = match store::endpoints_of_network(conn, &net.id) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!("listing peers on {}: {e}", net.name);
            return;
        }
    };
    for p in peers.iter().filter(|p| p.ep.container_id != except) {
        if let Err(e) = write_hosts(conn, &p.ep.container_id) {
            tracing::warn!("updating hosts file of {}: {e}", p.ep.container_id);
        }
    }
}

fn short_id(id: &str) -> &str {
    &id[..12.min(id.len())]
}

/// The host end's name: derived from network and container so a leftover can always be
/// found; 14 characters (IFNAMSIZ allows 15).
fn veth_name(net_id: &str, cid: &str) -> String {
    // FNV-1a: stable across releases (unlike std's hasher), and collisions only matter
    // within one host's live endpoints.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in net_id.bytes().chain([b'/']).chain(cid.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("bv{:012x}", h & 0xffff_ffff_ffff)
}

/// A MAC written as six two-digit hex octets separated by `:` or `-` (the forms of
/// `--mac-address`); a multicast address cannot be an interface's.
pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let bad = || NetError::Invalid(format!("{s} is not a valid mac address"));
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 || parts.iter().any(|p| p.len() != 2) {
        return Err(bad());
    }
    let mut out = [0u8; 6];
    for (o, p) in out.iter_mut().zip(parts) {
        *o = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if out[0] & 1 != 0 {
        return Err(NetError::Invalid(format!(
            "{s} is a multicast address, not an interface's"
        )));
    }
    Ok(out)
}

fn format_mac(m: [u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

fn flock(path: &Path) -> Result<File> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| NetError::io(format!("opening lock {}", path.display()), e))?;
    loop {
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(f);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(NetError::io(format!("locking {}", path.display()), e));
        }
    }
}

fn random_id() -> Result<String> {
    let mut b = [0u8; 32];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| NetError::io("reading /dev/urandom", e))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn check_name(name: &str) -> Result<()> {
    let ok = name.len() <= 128
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok {
        return Err(NetError::Invalid(format!(
            "invalid network name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )));
    }
    if matches!(name, "bridge" | "host" | "none") {
        return Err(NetError::Exists(name.to_string()));
    }
    Ok(())
}

fn check_container_id(id: &str) -> Result<()> {
    // It is embedded in iptables comments, so it must stay one plain word.
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(NetError::Invalid(format!("invalid container id {id:?}")))
    }
}

/// Names end up in hosts files: one word, no comment sign, nothing that could start a
/// line of its own.
fn check_host_name(name: &str) -> Result<()> {
    let ok = name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(NetError::Invalid(format!(
            "invalid container name, host name or alias {name:?}"
        )))
    }
}

fn overlap(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

fn check_subnet(s: Ipv4Net, existing: &[Network]) -> Result<()> {
    if s.prefix_len() > 30 {
        return Err(NetError::Invalid(format!("subnet {s} is too small")));
    }
    if let Some(n) = existing
        .iter()
        .find(|n| n.subnet.is_some_and(|o| overlap(o, s)))
    {
        return Err(NetError::Invalid(format!(
            "subnet {s} overlaps network {} ({})",
            n.name,
            n.subnet.map(|x| x.to_string()).unwrap_or_default()
        )));
    }
    Ok(())
}

fn check_gateway(s: Ipv4Net, g: Ipv4Addr) -> Result<()> {
    if !s.contains(&g) || g == s.network() || g == s.broadcast() {
        return Err(NetError::Invalid(format!(
            "gateway {g} is not a host address of {s}"
        )));
    }
    Ok(())
}

/// `--ip-range` must come with `--subnet` (Docker's rule) and lie inside it.
fn check_ip_range(subnet: Option<Ipv4Net>, range: Ipv4Net) -> Result<Ipv4Net> {
    let Some(s) = subnet else {
        return Err(NetError::Invalid(
            "--ip-range requires a subnet (--subnet)".into(),
        ));
    };
    let range = range.trunc();
    if !s.contains(&range.network()) || !s.contains(&range.broadcast()) {
        return Err(NetError::Invalid(format!(
            "no matching subnet for range {range}"
        )));
    }
    Ok(range)
}

fn first_host(s: Ipv4Net) -> Result<Ipv4Addr> {
    s.hosts()
        .next()
        .ok_or_else(|| NetError::Invalid(format!("subnet {s} has no host addresses")))
}

/// The first /24 of the pool (10.89.1.0/24 .. 10.99.255.0/24; the default network
/// prefers 10.89.0.0/24) overlapping neither a berth network nor a host route.
/// `own_bridge` is the device whose routes do not count (the default bridge may exist).
fn pick_subnet(existing: &[Network], own_bridge: Option<&str>) -> Result<Ipv4Net> {
    let routes = host_routes(own_bridge);
    let first = if own_bridge.is_some() { 0 } else { 1 };
    let pool = (89u8..=99)
        .flat_map(|b| (0u8..=255).map(move |c| (b, c)))
        .filter(|&(b, c)| b != 89 || c >= first);
    let mut cands = std::iter::once(DEFAULT_SUBNET)
        .filter(|_| own_bridge.is_some())
        .chain(pool.filter_map(|(b, c)| Ipv4Net::new(Ipv4Addr::new(10, b, c, 0), 24).ok()));
    cands
        .find(|c| {
            !routes.iter().any(|r| overlap(*r, *c))
                && !existing
                    .iter()
                    .any(|n| n.subnet.is_some_and(|s| overlap(s, *c)))
        })
        .ok_or_else(|| NetError::Invalid("no free subnet left in 10.89.0.0-10.99.255.0".into()))
}

/// IPv4 routes of the host's main table (default routes left out).
fn host_routes(skip_dev: Option<&str>) -> Vec<Ipv4Net> {
    let text = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    let hex = |s: &str| u32::from_str_radix(s, 16).ok();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 8 || Some(f[0]) == skip_dev {
                return None;
            }
            let dst = Ipv4Addr::from(hex(f[1])?.to_le_bytes());
            let mask = hex(f[7])?;
            if mask == 0 {
                return None;
            }
            Ipv4Net::new(dst, mask.count_ones() as u8).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_fit_and_differ() {
        let a = veth_name("n1", "c1");
        assert_eq!(a.len(), 14);
        assert_ne!(a, veth_name("n1", "c2"));
        assert_ne!(a, veth_name("n2", "c1"));
        assert_eq!(a, veth_name("n1", "c1"));
    }

    #[test]
    fn subnet_pick_skips_used() {
        let mut n = Network {
            id: "x".into(),
            name: "x".into(),
            driver: "bridge".into(),
            bridge: "b".into(),
            subnet: Some("10.89.1.0/24".parse().unwrap()),
            gateway: None,
            ip_range: None,
            internal: false,
            labels: BTreeMap::new(),
            options: BTreeMap::new(),
            created: 0,
            containers: BTreeMap::new(),
        };
        let got = pick_subnet(std::slice::from_ref(&n), None).unwrap();
        assert_ne!(got, "10.89.1.0/24".parse::<Ipv4Net>().unwrap());
        assert!(!overlap(got, "10.89.0.0/24".parse().unwrap()));
        n.subnet = Some("10.0.0.0/8".parse().unwrap());
        assert!(pick_subnet(&[n], None).is_err());
    }

    #[test]
    fn allocation_goes_round() {
        let s: Ipv4Net = "10.1.0.0/29".parse().unwrap();
        let gw = Ipv4Addr::new(10, 1, 0, 1);
        let ip = |d| Ipv4Addr::new(10, 1, 0, d);
        let mut used = HashSet::new();
        assert_eq!(allocate(s, None, gw, &used, None), Some(ip(2)));
        assert_eq!(allocate(s, None, gw, &used, Some(ip(2))), Some(ip(3)));
        // .6 is the last host: wrap to the lowest free one.
        used.insert(ip(2));
        assert_eq!(allocate(s, None, gw, &used, Some(ip(6))), Some(ip(3)));
        used.extend([ip(3), ip(4), ip(5), ip(6)]);
        assert_eq!(allocate(s, None, gw, &used, Some(ip(3))), None);
    }

    #[test]
    fn ip_range_bounds_allocation() {
        let s: Ipv4Net = "10.1.0.0/24".parse().unwrap();
        let gw = Ipv4Addr::new(10, 1, 0, 1);
        let ip = |d| Ipv4Addr::new(10, 1, 0, d);
        let range: Ipv4Net = "10.1.0.252/30".parse().unwrap();
        let mut used = HashSet::new();
        assert_eq!(allocate(s, Some(range), gw, &used, None), Some(ip(252)));
        // .255 is the subnet's broadcast: never handed out.
        used.extend([ip(252), ip(253), ip(254)]);
        assert_eq!(allocate(s, Some(range), gw, &used, Some(ip(254))), None);
        assert!(check_ip_range(None, range).is_err());
        assert!(check_ip_range(Some(s), "10.2.0.0/30".parse().unwrap()).is_err());
        assert!(check_ip_range(Some(s), "10.1.0.0/16".parse().unwrap()).is_err());
        let got = check_ip_range(Some(s), "10.1.0.130/25".parse().unwrap()).unwrap();
        assert_eq!(got, "10.1.0.128/25".parse::<Ipv4Net>().unwrap());
    }

    #[test]
    fn names_checked() {
        assert!(check_name("front-end_1.x").is_ok());
        for bad in ["", "-x", "a b", "bridge", "none", "a/b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_container_id("abc123").is_ok());
        assert!(check_container_id("a b").is_err());
        assert!(check_host_name("web-1.svc_x").is_ok());
        assert!(check_host_name("").is_ok());
        for bad in ["a b", "a\n10.0.0.1 evil", "a#b", "a\tb"] {
            assert!(check_host_name(bad).is_err(), "{bad:?}");
        }
    }
}
