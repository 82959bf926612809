//! The files a container's resolver reads: resolv.conf and hosts.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use crate::{NetError, Result};

/// Docker's fallback when the host only knows loopback name servers (systemd-resolved's
/// 127.0.0.53 is unreachable from another network namespace).
const DEFAULT_DNS: [&str; 2] = ["8.8.8.8", "8.8.4.4"];

/// A container's resolv.conf: the host's, with loopback name servers dropped (public
/// defaults if none is left); non-empty `dns` / `search` replace the host's.
pub fn resolv_conf(dns: &[IpAddr], search: &[String]) -> String {
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    resolv_conf_from(&host, dns, search)
}

pub(crate) fn resolv_conf_from(host: &str, dns: &[IpAddr], search: &[String]) -> String {
    let mut servers: Vec<String> = Vec::new();
    let mut searches: Vec<String> = Vec::new();
    let mut other: Vec<String> = Vec::new();
    for line in host.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                if let Some(ip) = words.next().and_then(|w| w.parse::<IpAddr>().ok()) {
                    if !ip.is_loopback() {
                        servers.push(ip.to_string());
                    }
                }
            }
            Some("search") | Some("domain") => {
                searches = words.map(str::to_string).collect();
            }
            Some("options") => other.push(line.trim().to_string()),
            _ => {}
        }
    }
    if !dns.is_empty() {
        servers = dns.iter().map(IpAddr::to_string).collect();
    } else if servers.is_empty() {
        servers = DEFAULT_DNS.iter().map(|s| s.to_string()).collect();
    }
    if !search.is_empty() {
        searches = search.to_vec();
    }
    let mut out = String::new();
    for s in &servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !searches.is_empty() {
        out.push_str(&format!("search {}\n", searches.join(" ")));
    }
    for o in other {
        out.push_str(&o);
        out.push('\n');
    }
    out
}

/// One hosts line: an address and its names (duplicates dropped, order kept).
pub(crate) struct HostLine {
    pub ip: Ipv4Addr,
    pub names: Vec<String>,
}

/// A hosts file with no network's names yet (before a connect, or `--network none`): the
/// standard header and `extra` lines (`--add-host`, links).
pub fn hosts_file(extra: &[String]) -> String {
    render_hosts(extra, &[])
}

/// The hosts file: the standard header, `extra` lines as given, then `lines`.
pub(crate) fn render_hosts(extra: &[String], lines: &[HostLine]) -> String {
    let mut out = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n",
    );
    for l in extra {
        out.push_str(l);
        out.push('\n');
    }
    for l in lines {
        let mut names: Vec<&str> = Vec::new();
        for n in &l.names {
            if !n.is_empty() && !names.contains(&n.as_str()) {
                names.push(n);
            }
        }
        if !names.is_empty() {
            out.push_str(&format!("{}\t{}\n", l.ip, names.join(" ")));
        }
    }
    out
}

/// Rewrites a file in place (same inode, since it is bind-mounted into a container):
/// new bytes over the old, then cut to length, so a reader never sees an empty file.
pub(crate) fn write_in_place(path: &Path, content: &str) -> Result<()> {
    let ctx = || format!("writing hosts file {}", path.display());
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| NetError::io(ctx(), e))?;
    f.seek(SeekFrom::Start(0))
        .and_then(|_| f.write_all(content.as_bytes()))
        .and_then(|_| f.set_len(content.len() as u64))
        .map_err(|e| NetError::io(ctx(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_servers_replaced() {
        let host = "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n";
        assert_eq!(
            resolv_conf_from(host, &[], &[]),
            "nameserver 8.8.8.8\nnameserver 8.8.4.4\nsearch lan\noptions edns0 trust-ad\n"
        );
        let host = "nameserver 127.0.0.53\nnameserver 10.0.0.1\n";
        assert_eq!(resolv_conf_from(host, &[], &[]), "nameserver 10.0.0.1\n");
    }

    #[test]
    fn overrides_win() {
        let host = "nameserver 10.0.0.1\nsearch lan\n";
        let dns = ["1.1.1.1".parse().unwrap()];
        assert_eq!(
            resolv_conf_from(host, &dns, &["corp".into()]),
            "nameserver 1.1.1.1\nsearch corp\n"
        );
    }

    #[test]
    fn hosts_rendering_and_in_place() {
        let text = render_hosts(
            &["10.1.2.3\tdb".into()],
            &[HostLine {
                ip: Ipv4Addr::new(10, 1, 0, 2),
                names: vec!["web".into(), "web".into(), "w".into()],
            }],
        );
        assert!(text.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(
            text.ends_with("ff02::2\tip6-allrouters\n10.1.2.3\tdb\n10.1.0.2\tweb w\n"),
            "extra lines after the header, before the networks': {text}"
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hosts");
        std::fs::write(&p, "x".repeat(4000)).unwrap();
        use std::os::unix::fs::MetadataExt;
        let ino = std::fs::metadata(&p).unwrap().ino();
        write_in_place(&p, &text).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), text);
        assert_eq!(std::fs::metadata(&p).unwrap().ino(), ino);
    }
}
