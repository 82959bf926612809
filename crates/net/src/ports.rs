//! Published ports: `-p` parsing and host port resolution.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};

use crate::{NetError, PortMapping, Proto, Result};

/// Parses Docker's `-p` syntax: `[ip:][hostPort:]containerPort[/proto]`, where either
/// port may be a range `a-b` (a host range must match the container range in length),
/// and an IPv6 host address is written in brackets.
pub fn parse_publish(spec: &str) -> Result<Vec<PortMapping>> {
    let bad = |why: &str| NetError::Invalid(format!("invalid publish spec {spec:?}: {why}"));
    let (rest, proto) = match spec.rsplit_once('/') {
        Some((r, "tcp")) => (r, Proto::Tcp),
        Some((r, "udp")) => (r, Proto::Udp),
        Some((_, p)) => return Err(bad(&format!("unsupported protocol {p:?}"))),
        None => (spec, Proto::Tcp),
    };
    let (host_ip, rest) = split_ip(rest).map_err(|e| bad(&e))?;
    let (host, container) = match rest.rsplit_once(':') {
        Some((h, c)) => (Some(h), c),
        None if host_ip.is_some() => return Err(bad("missing container port")),
        None => (None, rest),
    };
    let (c_lo, c_hi) = parse_range(container).map_err(|e| bad(&e))?;
    if c_lo == 0 {
        return Err(bad("container port 0"));
    }
    let host = match host {
        Some(h) if !h.is_empty() => Some(parse_range(h).map_err(|e| bad(&e))?),
        _ => None,
    };
    let count = c_hi - c_lo;
    let mut out = Vec::new();
    for i in 0..=count {
        let host_port = match host {
            None => 0,
            Some((lo, hi)) if hi - lo == count => lo + i,
            Some(_) => return Err(bad("host and container port ranges differ in length")),
        };
        out.push(PortMapping {
            host_ip,
            host_port,
            container_port: c_lo + i,
            proto,
        });
    }
    Ok(out)
}

/// Splits a leading host address (`1.2.3.4:` or `[::1]:`) off a publish spec.
fn split_ip(s: &str) -> std::result::Result<(Option<IpAddr>, &str), String> {
    if let Some(r) = s.strip_prefix('[') {
        let (ip, rest) = r.split_once("]:").ok_or("unclosed '['")?;
        let ip: IpAddr = ip.parse().map_err(|_| format!("bad address {ip:?}"))?;
        return Ok((Some(ip), rest));
    }
    let parts: Vec<&str> = s.split(':').collect();
    match parts.len() {
        1 | 2 => Ok((None, s)),
        3 => {
            let ip = if parts[0].is_empty() {
                None
            } else {
                Some(
                    parts[0]
                        .parse::<IpAddr>()
                        .map_err(|_| format!("bad address {:?}", parts[0]))?,
                )
            };
            Ok((ip, &s[parts[0].len() + 1..]))
        }
        _ => Err("too many ':'".into()),
    }
}

fn parse_range(s: &str) -> std::result::Result<(u16, u16), String> {
    let port = |p: &str| p.parse::<u16>().map_err(|_| format!("bad port {p:?}"));
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (port(a)?, port(b)?);
            if b < a {
                return Err(format!("bad range {s:?}"));
            }
            Ok((a, b))
        }
        None => {
            let p = port(s)?;
            Ok((p, p))
        }
    }
}

/// Whether two host bindings (address, protocol, port) would receive the same packets.
pub(crate) fn overlaps(a: &PortMapping, b: &PortMapping) -> bool {
    let any = |ip: Option<IpAddr>| !matches!(ip, Some(i) if !i.is_unspecified());
    a.proto == b.proto
        && a.host_port == b.host_port
        && (any(a.host_ip) || any(b.host_ip) || a.host_ip == b.host_ip)
}

/// Resolves host ports: checks requested ones against `taken` (berth's own bindings) and
/// the host's sockets, picks free ones for port 0.
pub(crate) fn resolve(wanted: &[PortMapping], taken: &[PortMapping]) -> Result<Vec<PortMapping>> {
    let mut done: Vec<PortMapping> = Vec::new();
    for p in wanted {
        if let Some(IpAddr::V6(_)) = p.host_ip {
            return Err(NetError::Invalid(format!(
                "publishing on IPv6 address {} is not supported",
                p.host_ip.map(|i| i.to_string()).unwrap_or_default()
            )));
        }
        let mut p = p.clone();
        if p.host_port == 0 {
            p.host_port = pick(&p, taken, &done)?;
        } else {
            let clash = taken.iter().chain(done.iter()).any(|t| overlaps(t, &p));
            if clash || !bind_test(&p, p.host_port) {
                return Err(NetError::PortInUse {
                    port: p.host_port,
                    proto: p.proto,
                    host_ip: p.host_ip,
                });
            }
        }
        done.push(p);
    }
    Ok(done)
}

fn pick(p: &PortMapping, taken: &[PortMapping], done: &[PortMapping]) -> Result<u16> {
    // The kernel's ephemeral pick is free on the host; retry if berth already maps it.
    for _ in 0..64 {
        let port = ephemeral(p)?;
        let mut cand = p.clone();
        cand.host_port = port;
        if !taken.iter().chain(done.iter()).any(|t| overlaps(t, &cand)) {
            return Ok(port);
        }
    }
    Err(NetError::Invalid("no free host port found".into()))
}

fn bind_addr(p: &PortMapping, port: u16) -> SocketAddr {
    let ip = p.host_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    SocketAddr::new(ip, port)
}

/// Whether a host socket could bind the port (nothing on the host listens there).
fn bind_test(p: &PortMapping, port: u16) -> bool {
    let addr = bind_addr(p, port);
    match p.proto {
        Proto::Tcp => TcpListener::bind(addr).is_ok(),
        Proto::Udp => UdpSocket::bind(addr).is_ok(),
    }
}

fn ephemeral(p: &PortMapping) -> Result<u16> {
    let addr = bind_addr(p, 0);
    let port = match p.proto {
        Proto::Tcp => TcpListener::bind(addr).and_then(|l| l.local_addr()),
        Proto::Udp => UdpSocket::bind(addr).and_then(|s| s.local_addr()),
    }
    .map_err(|e| NetError::io("picking a free host port", e))?
    .port();
    Ok(port)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pm(ip: Option<&str>, h: u16, c: u16, proto: Proto) -> PortMapping {
        PortMapping {
            host_ip: ip.map(|i| i.parse().unwrap()),
            host_port: h,
            container_port: c,
            proto,
        }
    }

    #[test]
    fn publish_forms() {
        assert_eq!(
            parse_publish("80").unwrap(),
            vec![pm(None, 0, 80, Proto::Tcp)]
        );
        assert_eq!(
            parse_publish("8080:80").unwrap(),
            vec![pm(None, 8080, 80, Proto::Tcp)]
        );
        assert_eq!(
            parse_publish("127.0.0.1:8080:80/udp").unwrap(),
            vec![pm(Some("127.0.0.1"), 8080, 80, Proto::Udp)]
        );
        assert_eq!(
            parse_publish("127.0.0.1::80").unwrap(),
            vec![pm(Some("127.0.0.1"), 0, 80, Proto::Tcp)]
        );
        assert_eq!(
            parse_publish("[::1]:8080:80").unwrap(),
            vec![pm(Some("::1"), 8080, 80, Proto::Tcp)]
        );
        assert_eq!(
            parse_publish("8000-8001:80-81").unwrap(),
            vec![
                pm(None, 8000, 80, Proto::Tcp),
                pm(None, 8001, 81, Proto::Tcp)
            ]
        );
        assert_eq!(
            parse_publish("80-81").unwrap(),
            vec![pm(None, 0, 80, Proto::Tcp), pm(None, 0, 81, Proto::Tcp)]
        );
    }

    #[test]
    fn publish_errors() {
        for bad in [
            "",
            "x",
            "80/sctp",
            "8000-8002:80-81",
            "1.2.3.4:80",
            "a:b:c:d",
            "0",
            "90-80",
        ] {
            assert!(parse_publish(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn overlap_rules() {
        let any = pm(None, 80, 1, Proto::Tcp);
        let lo = pm(Some("127.0.0.1"), 80, 1, Proto::Tcp);
        let other = pm(Some("127.0.0.2"), 80, 1, Proto::Tcp);
        assert!(overlaps(&any, &lo));
        assert!(!overlaps(&lo, &other));
        assert!(!overlaps(&any, &pm(None, 80, 1, Proto::Udp)));
        assert!(!overlaps(&any, &pm(None, 81, 1, Proto::Tcp)));
    }

    #[test]
    fn resolve_picks_and_refuses() {
        let got = resolve(&[pm(None, 0, 80, Proto::Tcp)], &[]).unwrap();
        assert_ne!(got[0].host_port, 0);
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let err = resolve(&[pm(None, port, 80, Proto::Tcp)], &[]).unwrap_err();
        assert!(matches!(err, NetError::PortInUse { .. }), "{err}");
        let taken = [pm(None, 45123, 80, Proto::Tcp)];
        assert!(resolve(&[pm(Some("127.0.0.1"), 45123, 80, Proto::Tcp)], &taken).is_err());
    }
}
