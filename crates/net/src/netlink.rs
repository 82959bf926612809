//! A minimal rtnetlink client: just the link, address and route requests berth needs.
//!
//! Hand-rolled over a raw `NETLINK_ROUTE` socket because every request is a few dozen
//! bytes and one round trip (microseconds), where spawning `ip` costs a millisecond or
//! more per call and the async `rtnetlink` crate would need a runtime (berth's runtime
//! paths must stay thread-free).

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

const NLMSG_HDRLEN: usize = 16;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;

/// One rtnetlink socket, bound to the network namespace it was created in.
pub(crate) struct Socket {
    fd: OwnedFd,
    seq: u32,
}

/// A request under construction: header, fixed struct, then attributes.
struct Msg {
    buf: Vec<u8>,
}

impl Msg {
    fn new(kind: u16, flags: u16) -> Msg {
        let mut buf = vec![0u8; NLMSG_HDRLEN];
        buf[4..6].copy_from_slice(&kind.to_ne_bytes());
        let flags = flags | (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
        buf[6..8].copy_from_slice(&flags.to_ne_bytes());
        Msg { buf }
    }

    fn align(&mut self) {
        while self.buf.len() & 3 != 0 {
            self.buf.push(0);
        }
    }

    fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
        self.align();
    }

    fn attr(&mut self, kind: u16, data: &[u8]) {
        let len = (4 + data.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.bytes(data);
    }

    fn attr_str(&mut self, kind: u16, s: &str) {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.attr(kind, &v);
    }

    fn attr_u32(&mut self, kind: u16, v: u32) {
        self.attr(kind, &v.to_ne_bytes());
    }

    /// Opens a nested attribute; returns its offset for [`Msg::end_nest`].
    fn nest(&mut self, kind: u16) -> usize {
        let at = self.buf.len();
        self.attr(kind, &[]);
        at
    }

    fn end_nest(&mut self, at: usize) {
        let len = (self.buf.len() - at) as u16;
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

/// `struct ifinfomsg` bytes.
fn ifinfomsg(index: i32, flags: u32, change: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0] = libc::AF_UNSPEC as u8;
    b[4..8].copy_from_slice(&index.to_ne_bytes());
    b[8..12].copy_from_slice(&flags.to_ne_bytes());
    b[12..16].copy_from_slice(&change.to_ne_bytes());
    b
}

impl Socket {
    pub(crate) fn open() -> io::Result<Socket> {
        // SAFETY: plain socket(2); the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: an all-zero sockaddr_nl asks the kernel to assign the port id.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: sa is a valid sockaddr_nl of the given size.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sa as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Socket { fd, seq: 1 })
    }

    /// Sends one request and waits for its acknowledgement.
    fn request(&mut self, msg: Msg) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let buf = msg.finish(seq);
        // SAFETY: buf is a valid, initialised buffer of buf.len() bytes.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut rbuf = vec![0u8; 8192];
        loop {
            // SAFETY: rbuf is writable for rbuf.len() bytes.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), rbuf.as_mut_ptr().cast(), rbuf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if let Some(r) = find_ack(&rbuf[..n as usize], seq) {
                return r;
            }
        }
    }

    /// Creates a bridge with a fixed MAC (an existing bridge is fine). Without one the
    /// kernel gives the bridge the lowest MAC among its ports, so the gateway's address
    /// would change under the containers' ARP caches as endpoints come and go.
    pub(crate) fn add_bridge(&mut self, name: &str, mac: [u8; 6]) -> io::Result<()> {
        let mut m = Msg::new(
            libc::RTM_NEWLINK,
            (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16,
        );
        m.bytes(&ifinfomsg(0, 0, 0));
        m.attr_str(libc::IFLA_IFNAME, name);
        m.attr(libc::IFLA_ADDRESS, &mac);
        let li = m.nest(libc::IFLA_LINKINFO);
        m.attr_str(IFLA_INFO_KIND, "bridge");
        m.end_nest(li);
        ignore(self.request(m), libc::EEXIST)
    }

    /// Creates a veth pair: `host` in this namespace (enslaved to `master`), `peer`
    /// created directly inside the namespace `netns` with the MAC `mac`.
    pub(crate) fn add_veth(
        &mut self,
        host: &str,
        master: u32,
        peer: &str,
        netns: &File,
        mac: [u8; 6],
        mtu: Option<u32>,
    ) -> io::Result<()> {
        let mut m = Msg::new(
            libc::RTM_NEWLINK,
            (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16,
        );
        let up = libc::IFF_UP as u32;
        m.bytes(&ifinfomsg(0, up, up));
        m.attr_str(libc::IFLA_IFNAME, host);
        m.attr_u32(libc::IFLA_MASTER, master);
        if let Some(mtu) = mtu {
            m.attr_u32(libc::IFLA_MTU, mtu);
        }
        let li = m.nest(libc::IFLA_LINKINFO);
        m.attr_str(IFLA_INFO_KIND, "veth");
        let data = m.nest(IFLA_INFO_DATA);
        let p = m.nest(VETH_INFO_PEER);
        m.bytes(&ifinfomsg(0, 0, 0));
        m.attr_str(libc::IFLA_IFNAME, peer);
        m.attr_u32(libc::IFLA_NET_NS_FD, netns.as_raw_fd() as u32);
        m.attr(libc::IFLA_ADDRESS, &mac);
        if let Some(mtu) = mtu {
            m.attr_u32(libc::IFLA_MTU, mtu);
        }
        m.end_nest(p);
        m.end_nest(data);
        m.end_nest(li);
        self.request(m)
    }

    /// Deletes a link by name; a link already gone is fine.
    pub(crate) fn del_link(&mut self, name: &str) -> io::Result<()> {
        let mut m = Msg::new(libc::RTM_DELLINK, 0);
        m.bytes(&ifinfomsg(0, 0, 0));
        m.attr_str(libc::IFLA_IFNAME, name);
        ignore(self.request(m), libc::ENODEV)
    }

    pub(crate) fn set_mtu(&mut self, index: u32, mtu: u32) -> io::Result<()> {
        let mut m = Msg::new(libc::RTM_NEWLINK, 0);
        m.bytes(&ifinfomsg(index as i32, 0, 0));
        m.attr_u32(libc::IFLA_MTU, mtu);
        self.request(m)
    }

    pub(crate) fn set_up(&mut self, index: u32) -> io::Result<()> {
        let mut m = Msg::new(libc::RTM_NEWLINK, 0);
        let up = libc::IFF_UP as u32;
        m.bytes(&ifinfomsg(index as i32, up, up));
        self.request(m)
    }

    /// Adds `addr/prefix` (with its broadcast address) to a link; present already is fine.
    pub(crate) fn add_addr(&mut self, index: u32, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
        let mut m = Msg::new(
            libc::RTM_NEWADDR,
            (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16,
        );
        let mut ifa = [0u8; 8];
        ifa[0] = libc::AF_INET as u8;
        ifa[1] = prefix;
        ifa[4..8].copy_from_slice(&index.to_ne_bytes());
        m.bytes(&ifa);
        m.attr(libc::IFA_LOCAL, &addr.octets());
        m.attr(libc::IFA_ADDRESS, &addr.octets());
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix))
        };
        let brd = Ipv4Addr::from(u32::from(addr) | !mask);
        m.attr(libc::IFA_BROADCAST, &brd.octets());
        ignore(self.request(m), libc::EEXIST)
    }

    /// Adds the default route via `gateway` out of `index`.
    pub(crate) fn add_default_route(&mut self, index: u32, gateway: Ipv4Addr) -> io::Result<()> {
        let mut m = Msg::new(
            libc::RTM_NEWROUTE,
            (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16,
        );
        let mut rt = [0u8; 12];
        rt[0] = libc::AF_INET as u8;
        rt[4] = libc::RT_TABLE_MAIN;
        rt[5] = libc::RTPROT_BOOT;
        rt[6] = libc::RT_SCOPE_UNIVERSE;
        rt[7] = libc::RTN_UNICAST;
        m.bytes(&rt);
        m.attr(libc::RTA_GATEWAY, &gateway.octets());
        m.attr_u32(libc::RTA_OIF, index);
        self.request(m)
    }
}

fn ignore(r: io::Result<()>, errno: i32) -> io::Result<()> {
    match r {
        Err(e) if e.raw_os_error() == Some(errno) => Ok(()),
        r => r,
    }
}

/// Finds the NLMSG_ERROR answering `seq` in a datagram: `Some(Ok)` for an ack.
fn find_ack(mut buf: &[u8], seq: u32) -> Option<io::Result<()>> {
    while buf.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        let mseq = u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]);
        if len < NLMSG_HDRLEN || len > buf.len() {
            return Some(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "truncated netlink message",
            )));
        }
        if kind == libc::NLMSG_ERROR as u16 && mseq == seq && len >= NLMSG_HDRLEN + 4 {
            let b = &buf[NLMSG_HDRLEN..NLMSG_HDRLEN + 4];
            let code = i32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
            return Some(if code == 0 {
                Ok(())
            } else {
                Err(io::Error::from_raw_os_error(-code))
            });
        }
        let step = (len + 3) & !3;
        buf = &buf[step.min(buf.len())..];
    }
    None
}

/// The index of a link in the calling thread's network namespace.
pub(crate) fn index(name: &str) -> io::Result<u32> {
    let c = CString::new(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: c is a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(i)
    }
}

/// Runs `f` with the calling thread inside the network namespace `ns`, then returns it to
/// the namespace it started in. Only this thread moves (setns is per thread), so other
/// threads of the process are unaffected.
pub(crate) fn in_netns<T>(ns: &File, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    let home = File::open("/proc/thread-self/ns/net")?;
    setns(ns)?;
    let r = f();
    // Failing to return would leave this thread configuring the wrong namespace; that
    // error wins over whatever f produced.
    setns(&home)?;
    r
}

fn setns(ns: &File) -> io::Result<()> {
    // SAFETY: setns on a descriptor we hold open.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Writes a sysctl-style file under /proc/sys or /sys, e.g. bridge port settings.
pub(crate) fn write_knob(path: &Path, value: &str) -> io::Result<()> {
    std::fs::write(path, value)
}
