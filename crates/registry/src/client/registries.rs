//! Which registries are insecure (plain http or unverified TLS allowed), read from the
//! files users of the peers already keep: containers' `registries.conf`
//! (`[[registry]] location = "host:port"`, `insecure = true`; the path from
//! `CONTAINERS_REGISTRIES_CONF` like podman, else `/etc/containers/registries.conf`) and
//! Docker's `/etc/docker/daemon.json` (`"insecure-registries": ["host:port", "10.0.0.0/8"]`).
//! An explicit `--tls-verify` on the command line wins over both.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::error::{Error, Result};

/// The registries that may be reached without verified TLS.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Insecure {
    /// `host[:port]` or `host[:port]/namespace` locations.
    locations: Vec<String>,
    /// CIDR ranges from daemon.json: (network, prefix length).
    networks: Vec<(IpAddr, u8)>,
}

#[derive(Deserialize)]
struct RegistriesConf {
    #[serde(default)]
    registry: Vec<RegistryEntry>,
}

#[derive(Deserialize)]
struct RegistryEntry {
    #[serde(default)]
    location: String,
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    insecure: bool,
}

#[derive(Deserialize)]
struct DaemonJson {
    #[serde(default, rename = "insecure-registries")]
    insecure_registries: Vec<String>,
}

impl Insecure {
    /// Reads the system files; missing files are empty, malformed ones an error naming
    /// the file (a silently ignored config would make TLS failures baffling).
    pub fn load() -> Result<Insecure> {
        let conf = std::env::var_os("CONTAINERS_REGISTRIES_CONF")
            .map(PathBuf::from)
            .unwrap_or_else(|| "/etc/containers/registries.conf".into());
        let mut out = Insecure::default();
        if let Some(text) = read_optional(&conf)? {
            out.add_registries_conf(&conf, &text)?;
        }
        let daemon = Path::new("/etc/docker/daemon.json");
        if let Some(text) = read_optional(daemon)? {
            out.add_daemon_json(daemon, &text)?;
        }
        Ok(out)
    }

    fn add_registries_conf(&mut self, path: &Path, text: &str) -> Result<()> {
        let conf: RegistriesConf = toml::from_str(text).map_err(|e| config_error(path, e))?;
        for r in conf.registry.into_iter().filter(|r| r.insecure) {
            let loc = if r.location.is_empty() {
                r.prefix
            } else {
                r.location
            };
            if !loc.is_empty() {
                self.locations.push(loc);
            }
        }
        Ok(())
    }

    fn add_daemon_json(&mut self, path: &Path, text: &str) -> Result<()> {
        let d: DaemonJson = serde_json::from_str(text).map_err(|e| config_error(path, e))?;
        for entry in d.insecure_registries {
            match parse_cidr(&entry) {
                Some(net) => self.networks.push(net),
                None => self.locations.push(entry),
            }
        }
        Ok(())
    }

    /// Whether `domain` (a reference's `host[:port]`) is listed.
    pub fn contains(&self, domain: &str) -> bool {
        let listed = self.locations.iter().any(|loc| {
            let host = loc.split('/').next().unwrap_or(loc);
            host == domain
        });
        listed || host_ip(domain).is_some_and(|ip| self.networks.iter().any(|n| in_net(ip, *n)))
    }
}

fn read_optional(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(config_error(path, e)),
    }
}

fn config_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Config(format!("{}: {e}", path.display()))
}

fn host_ip(domain: &str) -> Option<IpAddr> {
    let host = match domain.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => domain,
    };
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (ip, len) = s.split_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((ip, len))
}

fn in_net(ip: IpAddr, (net, len): (IpAddr, u8)) -> bool {
    // Both families as 128-bit numbers, IPv4 in the top 32 bits, so a prefix length
    // counts from the top bit for either.
    let bits = |a: IpAddr| -> u128 {
        match a {
            IpAddr::V4(v) => u128::from(u32::from(v)) << 96,
            IpAddr::V6(v) => u128::from(v),
        }
    };
    if ip.is_ipv4() != net.is_ipv4() {
        return false;
    }
    let len = u32::from(len);
    let mask = if len == 0 {
        0
    } else {
        u128::MAX << (128 - len)
    };
    (bits(ip) & mask) == (bits(net) & mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_conf_insecure_entries() {
        let mut i = Insecure::default();
        let conf = r#"
unqualified-search-registries = ["docker.io"]
[[registry]]
location = "build.local:5000"
insecure = true
[[registry]]
location = "secure.example"
[[registry]]
prefix = "mirror.local/team"
insecure = true
"#;
        i.add_registries_conf(Path::new("r.conf"), conf).unwrap();
        assert!(i.contains("build.local:5000"));
        assert!(!i.contains("build.local"));
        assert!(!i.contains("secure.example"));
        assert!(i.contains("mirror.local"));
    }

    #[test]
    fn daemon_json_hosts_and_cidrs() {
        let mut i = Insecure::default();
        let json = r#"{"insecure-registries": ["reg.lan:443", "10.20.0.0/16"], "debug": true}"#;
        i.add_daemon_json(Path::new("daemon.json"), json).unwrap();
        assert!(i.contains("reg.lan:443"));
        assert!(i.contains("10.20.3.4:5000"));
        assert!(i.contains("10.20.255.1"));
        assert!(!i.contains("10.21.0.1:5000"));
        assert!(!i.contains("reg.lan"));
    }

    #[test]
    fn malformed_files_name_the_file() {
        let mut i = Insecure::default();
        let err = i
            .add_registries_conf(Path::new("/etc/x.conf"), "[[registry]\n")
            .unwrap_err();
        assert!(err.to_string().contains("/etc/x.conf"), "{err}");
    }
}
