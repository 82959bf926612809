//! The five capability sets. Bounding caps are dropped first (that needs CAP_SETPCAP, which
//! a later capset may remove), then capset writes effective/permitted/inheritable at once,
//! then ambient caps are raised (they must already be permitted and inheritable).

use std::str::FromStr;

use oci_spec::runtime::{Capabilities, LinuxCapabilities};

use crate::error::{Error, Result};

#[derive(Debug, Default, Clone, Copy)]
pub struct Sets {
    pub bounding: u64,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: u64,
}

fn mask(set: &Option<Capabilities>) -> u64 {
    let mut m = 0u64;
    for cap in set.iter().flatten() {
        let name = serde_json::to_value(cap)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        if let Ok(c) = caps::Capability::from_str(&name) {
            m |= 1u64 << c.index();
        }
    }
    m
}

impl Sets {
    pub fn from_spec(c: &LinuxCapabilities) -> Sets {
        Sets {
            bounding: mask(c.bounding()),
            effective: mask(c.effective()),
            permitted: mask(c.permitted()),
            inheritable: mask(c.inheritable()),
            ambient: mask(c.ambient()),
        }
    }
}

/// The highest capability the running kernel knows, read once per process (a container
/// start asks for it in the engine, then in the init it forks, for every set it drops).
pub fn last_cap() -> u32 {
    static LAST: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *LAST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(40)
    })
}

pub fn drop_bounding(keep: u64) -> Result<()> {
    for cap in 0..=last_cap() {
        if keep & (1u64 << cap) == 0 {
            // SAFETY: prctl with integer arguments only.
            let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
            if r != 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EINVAL) {
                    return Err(Error::Io {
                        context: format!("drop bounding capability {cap}"),
                        err: e,
                    });
                }
            }
        }
    }
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_V3: u32 = 0x20080522;

pub fn set(s: &Sets) -> Result<()> {
    let hdr = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    let lo = |v: u64| v as u32;
    let hi = |v: u64| (v >> 32) as u32;
    let data = [
        CapData {
            effective: lo(s.effective),
            permitted: lo(s.permitted),
            inheritable: lo(s.inheritable),
        },
        CapData {
            effective: hi(s.effective),
            permitted: hi(s.permitted),
            inheritable: hi(s.inheritable),
        },
    ];
    // SAFETY: header and two data structs as capset(2) expects for version 3.
    let r = unsafe { libc::syscall(libc::SYS_capset, &hdr as *const CapHeader, data.as_ptr()) };
    if r != 0 {
        return Err(Error::Io {
            context: "capset".into(),
            err: std::io::Error::last_os_error(),
        });
    }
    for cap in 0..=last_cap() {
        if s.ambient & (1u64 << cap) != 0 {
            // SAFETY: prctl with integer arguments only.
            let r = unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                    cap as libc::c_ulong,
                    0,
                    0,
                )
            };
            if r != 0 {
                let e = std::io::Error::last_os_error();
                return Err(Error::Io {
                    context: format!("raise ambient capability {cap}"),
                    err: e,
                });
            }
        }
    }
    Ok(())
}

/// Docker's default capability set, which `berth run` and `berth build`'s RUN steps grant.
pub const DOCKER_DEFAULT: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];
