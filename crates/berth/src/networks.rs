//! `berth network create|ls|inspect|rm|prune|connect|disconnect`, over berth-net.

use std::io::{BufRead, Write};
use std::path::Path;

use berth_engine::Engine;
use berth_net::{Net, NetworkOptions};
use clap::Subcommand;

type CmdResult = Result<i32, Box<dyn std::error::Error>>;

#[derive(Subcommand, Debug)]
// Each subcommand's arguments are built only when it is the one invoked: building
// the whole tree cost every command ~1 ms of start-up (page faults, allocations).
#[command(defer = true)]
pub enum NetworkCmd {
    /// Create a network.
    Create {
        /// Driver to manage the Network (only `bridge`).
        #[arg(short, long, default_value = "bridge")]
        driver: String,
        /// Subnet in CIDR format.
        #[arg(long)]
        subnet: Option<String>,
        /// IPv4 gateway for the subnet.
        #[arg(long)]
        gateway: Option<String>,
        /// Allocate container addresses from this part of the subnet (CIDR).
        #[arg(long)]
        ip_range: Option<String>,
        /// Restrict external access to the network.
        #[arg(long)]
        internal: bool,
        /// Set metadata on a network.
        #[arg(long)]
        label: Vec<String>,
        /// Set driver specific options (com.docker.network.bridge.name,
        /// com.docker.network.driver.mtu).
        #[arg(short, long)]
        opt: Vec<String>,
        /// Enable manual container attachment (always possible here).
        #[arg(long)]
        attachable: bool,
        /// Enable IPv6 networking (not supported: refused).
        #[arg(long)]
        ipv6: bool,
        name: String,
    },
    /// List networks.
    #[command(alias = "list")]
    Ls {
        #[arg(short, long)]
        quiet: bool,
        #[arg(long)]
        format: Option<String>,
        /// `name=PART`, `id=PREFIX`, `driver=D`, `label=KEY[=VALUE]`,
        /// `type=custom|builtin`, `dangling=true|false`; repeatable (all must hold).
        #[arg(short, long)]
        filter: Vec<String>,
    },
    /// Display detailed information on one or more networks.
    Inspect {
        #[arg(short, long)]
        format: Option<String>,
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Remove one or more networks.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Remove all unused networks.
    Prune {
        #[arg(short, long)]
        force: bool,
        /// Provide filter values (`until=24h`, `label=KEY[=VALUE]`, `label!=KEY`).
        #[arg(long)]
        filter: Vec<String>,
    },
    /// Connect a running container to a network.
    Connect {
        /// Add network-scoped alias for the container.
        #[arg(long)]
        alias: Vec<String>,
        network: String,
        container: String,
    },
    /// Disconnect a container from a network.
    Disconnect {
        #[arg(short, long)]
        force: bool,
        network: String,
        container: String,
    },
}

/// Whether network `n` passes every `--filter` (Docker's keys).
fn passes(n: &berth_net::Network, filters: &[String]) -> Result<bool, String> {
    for f in filters {
        let (key, want) = crate::format::filter_kv(f)?;
        let ok = match key {
            "name" => n.name.contains(want),
            "id" => n.id.starts_with(want),
            "driver" => n.driver == want,
            "label" => crate::format::label_matches(want, |k| n.labels.get(k).map(String::as_str)),
            "type" => match want {
                "custom" => !n.is_predefined(),
                "builtin" => n.is_predefined(),
                _ => return Err(format!("invalid filter: 'type'='{want}'")),
            },
            "dangling" => {
                (n.containers.is_empty() && !n.is_predefined())
                    == crate::format::filter_bool(key, want)?
            }
            _ => return Err(format!("invalid filter '{key}'")),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

pub fn main(root: &Path, cmd: NetworkCmd) -> i32 {
    match run(root, cmd) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("Error response from daemon: {e}");
            1
        }
    }
}

fn run(root: &Path, cmd: NetworkCmd) -> CmdResult {
    let net = Net::open(root)?;
    let mut out = std::io::stdout().lock();
    match cmd {
        NetworkCmd::Create {
            driver,
            subnet,
            gateway,
            ip_range,
            internal,
            label,
            opt,
            attachable: _,
            ipv6,
            name,
        } => {
            if driver != "bridge" {
                return Err(format!("plugin \"{driver}\" not found").into());
            }
            if ipv6 {
                return Err("IPv6 networks are not supported by berth's bridge driver".into());
            }
            let opts = NetworkOptions {
                subnet: subnet
                    .map(|s| s.parse())
                    .transpose()
                    .map_err(|e| format!("invalid subnet: {e}"))?,
                gateway: gateway
                    .map(|g| g.parse())
                    .transpose()
                    .map_err(|e| format!("invalid gateway: {e}"))?,
                ip_range: ip_range
                    .map(|r| r.parse())
                    .transpose()
                    .map_err(|e| format!("invalid ip-range: {e}"))?,
                internal,
                labels: crate::format::key_values(&label),
                options: crate::format::key_values(&opt),
            };
            for k in berth_net::unsupported_options(&opts) {
                eprintln!("WARNING: network option {k:?} is not supported by berth's bridge driver; ignored");
            }
            let created = net.create(&name, &opts)?;
            berth_engine::events::network(root, "create", &created.id, &name, None);
            writeln!(out, "{}", created.id)?;
        }
        NetworkCmd::Ls {
            quiet,
            format,
            filter,
        } => {
            let mut list = Vec::new();
            for n in net.list()? {
                if passes(&n, &filter)? {
                    list.push(n);
                }
            }
            if quiet {
                for n in &list {
                    writeln!(out, "{}", &n.id[..12.min(n.id.len())])?;
                }
                return Ok(0);
            }
            let rows: Vec<serde_json::Value> = list
                .iter()
                .map(|n| {
                    let created = crate::format::docker_time(&n.created_at());
                    let labels: Vec<String> =
                        n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    serde_json::json!({
                        "ID": &n.id[..12.min(n.id.len())], "Name": n.name, "Driver": n.driver,
                        "Scope": "local", "Internal": n.internal.to_string(), "IPv6": "false",
                        "CreatedAt": created, "Labels": labels.join(","),
                    })
                })
                .collect();
            match format.as_deref() {
                Some("json") => {
                    for r in &rows {
                        writeln!(out, "{r}")?;
                    }
                }
                Some(t) => crate::format::template_rows(&mut out, t, &rows)?,
                None => {
                    let mut t = vec![["NETWORK ID", "NAME", "DRIVER", "SCOPE"]
                        .map(String::from)
                        .to_vec()];
                    for r in &rows {
                        t.push(
                            ["ID", "Name", "Driver", "Scope"]
                                .iter()
                                .map(|k| r[k].as_str().unwrap_or("").to_string())
                                .collect(),
                        );
                    }
                    crate::format::table(&mut out, &t)?;
                }
            }
        }
        NetworkCmd::Inspect { format, networks } => {
            let mut code = 0;
            let mut list = Vec::new();
            for n in &networks {
                match net.get(n) {
                    Ok(n) => list.push(serde_json::to_value(&n)?),
                    Err(e) => {
                        eprintln!("Error: {e}");
                        code = 1;
                    }
                }
            }
            match format.as_deref() {
                None | Some("json") => writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?,
                Some(t) => crate::format::template_rows(&mut out, t, &list)?,
            }
            return Ok(code);
        }
        NetworkCmd::Rm { networks } => {
            let mut code = 0;
            for n in &networks {
                let id = net.get(n).map(|x| (x.id, x.name)).ok();
                match net.remove(n) {
                    Ok(()) => {
                        if let Some((id, name)) = id {
                            berth_engine::events::network(root, "destroy", &id, &name, None);
                        }
                        writeln!(out, "{n}")?
                    }
                    Err(e) => {
                        eprintln!("Error response from daemon: {e}");
                        code = 1;
                    }
                }
            }
            return Ok(code);
        }
        NetworkCmd::Prune { force, filter } => {
            let filter = crate::prune_filter::PruneFilter::parse(&filter, true)?;
            if !force {
                eprint!("WARNING! This will remove all custom networks not used by at least one container.\nAre you sure you want to continue? [y/N] ");
                let mut answer = String::new();
                std::io::stdin().lock().read_line(&mut answer)?;
                if !matches!(answer.trim(), "y" | "Y" | "yes") {
                    return Ok(0);
                }
            }
            let removed = net.prune_where(|n| network_prunable(n, &filter))?;
            if !removed.is_empty() {
                writeln!(out, "Deleted Networks:")?;
                for n in removed {
                    writeln!(out, "{n}")?;
                }
            }
        }
        NetworkCmd::Connect {
            alias,
            network,
            container,
        } => connect(root, &net, &container, &network, alias)?,
        NetworkCmd::Disconnect {
            network, container, ..
        } => disconnect(root, &net, &container, &network)?,
    }
    Ok(0)
}

/// Joins a network now if the container runs, and remembers it either way so every later
/// start (a restart by policy included) joins it again, as Docker does.
fn connect(
    root: &Path,
    net: &Net,
    container: &str,
    network: &str,
    aliases: Vec<String>,
) -> Result<(), Box<dyn std::error::Error>> {
    let network = net.get(network)?.name;
    let network = network.as_str();
    let mut engine = Engine::open(root)?;
    let c = engine.find(container)?;
    let known =
        c.config.network == network || c.config.extra_networks.iter().any(|l| l.network == network);
    if known {
        return Err(
            format!("container {container} is already connected to network {network}").into(),
        );
    }
    let link = berth_engine::NetworkLink {
        network: network.to_string(),
        aliases,
    };
    if c.state.status == berth_engine::Status::Running {
        berth_engine::net::join(net, &c, &link, c.state.pid, &engine.dir(&c.id))?;
    }
    engine.update(&c.id, |cfg| cfg.extra_networks.push(link))?;
    Ok(())
}

fn disconnect(
    root: &Path,
    net: &Net,
    container: &str,
    network: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut engine = Engine::open(root)?;
    let c = engine.find(container)?;
    let remembered = c.config.extra_networks.iter().any(|l| l.network == network);
    if c.state.status == berth_engine::Status::Running {
        net.disconnect(&c.id, network)?;
    } else if !remembered {
        return Err(format!("container {container} is not connected to network {network}").into());
    }
    if remembered {
        engine.update(&c.id, |cfg| {
            cfg.extra_networks.retain(|l| l.network != network)
        })?;
    }
    Ok(())
}

/// Whether `--filter` lets prune take network `n`.
pub(crate) fn network_prunable(
    n: &berth_net::Network,
    f: &crate::prune_filter::PruneFilter,
) -> bool {
    f.allows(crate::prune_filter::unix(n.created), &n.labels)
}
