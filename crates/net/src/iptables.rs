//! berth's iptables rules: its own chains, per-network and per-endpoint rule sets.
//!
//! Rules are applied with `iptables-restore --noflush`, one process per change whatever
//! the number of rules: it is one atomic transaction on the nf_tables backend, and it
//! costs one exec where `iptables -A` would cost one (plus a full ruleset fetch) per
//! rule. Every rule carries a comment marker naming its owner (`berth-net:<bridge>` for a
//! network, `berth-ep:<id>:<container>` for an endpoint), so an owner's rules can be
//! found and deleted exactly even when berth's own records are gone.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use ipnet::Ipv4Net;

use crate::{NetError, PortMapping, Proto, Result};

/// nat: DNAT for published ports, jumped to from PREROUTING and OUTPUT for local
/// destinations.
pub(crate) const DNAT: &str = "BERTH-DNAT";
/// nat: masquerading, jumped to from POSTROUTING.
pub(crate) const POSTROUTING: &str = "BERTH-POSTROUTING";
/// filter: forwarding verdicts for berth bridges, jumped to first from FORWARD.
pub(crate) const FORWARD: &str = "BERTH-FORWARD";

/// One rule: table, chain and the match/target part of its `-A` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    pub table: &'static str,
    pub chain: &'static str,
    pub spec: String,
}

fn rule(table: &'static str, chain: &'static str, spec: String) -> Rule {
    Rule { table, chain, spec }
}

/// Keyed by bridge name, not network id: the bridge is the kernel object the rules
/// serve, and the default bridge is one device whichever berth root set it up.
pub(crate) fn network_marker(bridge: &str) -> String {
    format!("berth-net:{bridge}")
}

pub(crate) fn endpoint_marker(net_id: &str, container_id: &str) -> String {
    format!(
        "berth-ep:{}:{}",
        &net_id[..12.min(net_id.len())],
        container_id
    )
}

/// The rules a network needs: NAT out of the host, hairpin and localhost NAT into it, and
/// forwarding verdicts (docker may have set FORWARD's policy to DROP).
pub(crate) fn network_rules(bridge: &str, subnet: Ipv4Net, internal: bool) -> Vec<Rule> {
    let m = format!("-m comment --comment {}", network_marker(bridge));
    if internal {
        return vec![
            rule(
                "filter",
                FORWARD,
                format!("-i {bridge} -o {bridge} {m} -j ACCEPT"),
            ),
            rule("filter", FORWARD, format!("-i {bridge} {m} -j DROP")),
            rule("filter", FORWARD, format!("-o {bridge} {m} -j DROP")),
        ];
    }
    vec![
        rule(
            "nat",
            POSTROUTING,
            format!("-s {subnet} ! -o {bridge} {m} -j MASQUERADE"),
        ),
        // Published ports reached through 127.0.0.1 (with route_localnet on the bridge):
        // a loopback source cannot leave the host, so it becomes the gateway address.
        rule(
            "nat",
            POSTROUTING,
            format!("-s 127.0.0.0/8 -o {bridge} {m} -j MASQUERADE"),
        ),
        // Hairpin: a container reaching a published port of its own bridge gets the
        // answer through the host (where the DNAT is undone), not straight from the peer.
        rule(
            "nat",
            POSTROUTING,
            format!("-s {subnet} -o {bridge} -m conntrack --ctstate DNAT {m} -j MASQUERADE"),
        ),
        rule("filter", FORWARD, format!("-i {bridge} {m} -j ACCEPT")),
        rule("filter", FORWARD, format!("-o {bridge} {m} -j ACCEPT")),
    ]
}

/// The DNAT rules publishing an endpoint's ports (host ports already resolved).
pub(crate) fn endpoint_rules(
    net_id: &str,
    container_id: &str,
    ip: Ipv4Addr,
    ports: &[PortMapping],
) -> Vec<Rule> {
    let m = format!(
        "-m comment --comment {}",
        endpoint_marker(net_id, container_id)
    );
    ports
        .iter()
        .map(|p| {
            let proto = match p.proto {
                Proto::Tcp => "tcp",
                Proto::Udp => "udp",
            };
            let dst = match p.host_ip {
                Some(h) if !h.is_unspecified() => format!("-d {h}/32 "),
                _ => String::new(),
            };
            rule(
                "nat",
                DNAT,
                format!(
                    "{dst}-p {proto} -m {proto} --dport {} {m} -j DNAT --to-destination {ip}:{}",
                    p.host_port, p.container_port
                ),
            )
        })
        .collect()
}

/// Makes sure berth's chains exist and are jumped to from the built-in chains once.
pub(crate) fn ensure_base() -> Result<()> {
    let saved = save()?;
    let mut nat = String::new();
    let mut filter = String::new();
    for (table, chain) in [("nat", DNAT), ("nat", POSTROUTING), ("filter", FORWARD)] {
        if !has_chain(&saved, table, chain) {
            let out = if table == "nat" {
                &mut nat
            } else {
                &mut filter
            };
            out.push_str(&format!(":{chain} - [0:0]\n"));
        }
    }
    let jumps = [
        (
            "nat",
            "PREROUTING",
            format!("-m addrtype --dst-type LOCAL -j {DNAT}"),
        ),
        (
            "nat",
            "OUTPUT",
            format!("-m addrtype --dst-type LOCAL -j {DNAT}"),
        ),
        ("nat", "POSTROUTING", format!("-j {POSTROUTING}")),
        ("filter", "FORWARD", format!("-j {FORWARD}")),
    ];
    for (table, chain, spec) in jumps {
        if !has_line(&saved, table, &format!("-A {chain} {spec}")) {
            let out = if table == "nat" {
                &mut nat
            } else {
                &mut filter
            };
            // First in FORWARD so that a DROP policy or docker's rules come after it.
            let op = if chain == "FORWARD" { "-I" } else { "-A" };
            out.push_str(&format!("{op} {chain} {spec}\n"));
        }
    }
    let mut input = String::new();
    for (table, body) in [("nat", nat), ("filter", filter)] {
        if !body.is_empty() {
            input.push_str(&format!("*{table}\n{body}COMMIT\n"));
        }
    }
    if input.is_empty() {
        return Ok(());
    }
    restore(&input)
}

fn table_section<'a>(saved: &'a str, table: &str) -> impl Iterator<Item = &'a str> {
    let header = format!("*{table}");
    saved
        .lines()
        .skip_while(move |l| *l != header)
        .take_while(|l| *l != "COMMIT")
}

fn has_chain(saved: &str, table: &str, chain: &str) -> bool {
    let decl = format!(":{chain} ");
    table_section(saved, table).any(|l| l.starts_with(&decl))
}

fn has_line(saved: &str, table: &str, line: &str) -> bool {
    table_section(saved, table).any(|l| l == line)
}

/// Appends rules in one transaction.
pub(crate) fn add(rules: &[Rule]) -> Result<()> {
    if rules.is_empty() {
        return Ok(());
    }
    restore(&script(rules, "-A"))
}

/// Appends those of `rules` not present yet.
pub(crate) fn add_missing(rules: &[Rule]) -> Result<()> {
    let saved = save()?.replace('"', "");
    let missing: Vec<Rule> = rules
        .iter()
        .filter(|r| !has_line(&saved, r.table, &format!("-A {} {}", r.chain, r.spec)))
        .cloned()
        .collect();
    add(&missing)
}

/// Deletes rules exactly as added. If some are already gone (the whole transaction then
/// fails), falls back to deleting whatever still carries `marker`.
pub(crate) fn delete(rules: &[Rule], marker: &str) -> Result<()> {
    if rules.is_empty() {
        return Ok(());
    }
    match restore(&script(rules, "-D")) {
        Ok(()) => Ok(()),
        Err(_) => delete_marked(marker),
    }
}

/// Deletes every rule whose comment is exactly `marker`.
pub(crate) fn delete_marked(marker: &str) -> Result<()> {
    let saved = save()?;
    let mut input = String::new();
    let mut table = "";
    let mut body = String::new();
    for line in saved.lines() {
        if let Some(t) = line.strip_prefix('*') {
            table = t;
            body.clear();
        } else if line == "COMMIT" {
            if !body.is_empty() {
                input.push_str(&format!("*{table}\n{body}COMMIT\n"));
            }
            body.clear();
        } else if let Some(rest) = line.strip_prefix("-A ") {
            if comment_of(line) == Some(marker) {
                body.push_str(&format!("-D {rest}\n"));
            }
        }
    }
    if input.is_empty() {
        return Ok(());
    }
    restore(&input)
}

/// Counts rules whose comment starts with `prefix` (tests and diagnostics).
pub fn count_marked(prefix: &str) -> Result<usize> {
    let saved = save()?;
    Ok(saved
        .lines()
        .filter(|l| l.starts_with("-A ") && comment_of(l).is_some_and(|c| c.starts_with(prefix)))
        .count())
}

/// The comment of a saved rule; iptables-save quotes it (the nf_tables backend always
/// does), so both spellings are accepted.
fn comment_of(line: &str) -> Option<&str> {
    let rest = line.split_once("--comment ")?.1;
    match rest.strip_prefix('"') {
        Some(q) => q.split_once('"').map(|(c, _)| c),
        None => rest.split_whitespace().next(),
    }
}

fn script(rules: &[Rule], op: &str) -> String {
    let mut out = String::new();
    for table in ["nat", "filter"] {
        let lines: Vec<String> = rules
            .iter()
            .filter(|r| r.table == table)
            .map(|r| format!("{op} {} {}\n", r.chain, r.spec))
            .collect();
        if !lines.is_empty() {
            out.push_str(&format!("*{table}\n{}COMMIT\n", lines.concat()));
        }
    }
    out
}

fn save() -> Result<String> {
    let out = Command::new("iptables-save")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| NetError::io("running iptables-save", e))?;
    if !out.status.success() {
        return Err(NetError::Command {
            command: "iptables-save".into(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn restore(input: &str) -> Result<()> {
    let mut child = Command::new("iptables-restore")
        .args(["-w", "--noflush"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| NetError::io("running iptables-restore", e))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| NetError::io("writing to iptables-restore", e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| NetError::io("waiting for iptables-restore", e))?;
    if !out.status.success() {
        return Err(NetError::Command {
            command: format!("iptables-restore --noflush <<{}", input.trim_end()),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_quoted_or_not() {
        let q = r#"-A BERTH-DNAT -p tcp -m tcp --dport 80 -m comment --comment "berth-ep:ab:c1" -j DNAT"#;
        assert_eq!(comment_of(q), Some("berth-ep:ab:c1"));
        let u = "-A X -m comment --comment berth-net:b0 -j ACCEPT";
        assert_eq!(comment_of(u), Some("berth-net:b0"));
        assert_eq!(comment_of("-A X -j ACCEPT"), None);
    }

    #[test]
    fn endpoint_rule_text() {
        let p = PortMapping {
            host_ip: Some("127.0.0.1".parse().unwrap()),
            host_port: 8080,
            container_port: 80,
            proto: Proto::Udp,
        };
        let r = endpoint_rules("n123", "c1", Ipv4Addr::new(10, 89, 1, 2), &[p]);
        assert_eq!(r[0].table, "nat");
        assert_eq!(
            r[0].spec,
            "-d 127.0.0.1/32 -p udp -m udp --dport 8080 -m comment --comment berth-ep:n123:c1 \
             -j DNAT --to-destination 10.89.1.2:80"
        );
        assert_eq!(
            script(&r, "-D"),
            format!("*nat\n-D BERTH-DNAT {}\nCOMMIT\n", r[0].spec)
        );
    }
}
