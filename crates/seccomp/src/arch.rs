//! Which architectures (seccomp_data.arch audit values) the filter handles,
//! and how a syscall name becomes a number in each.
//!
//! Choices, and why:
//! - The native architecture always gets the rules, whether or not it is
//!   listed, as libseccomp's context always contains it.
//! - x86_64 only: x32 syscalls arrive with the native audit value and
//!   `__X32_SYSCALL_BIT` set in the number. Unless `SCMP_ARCH_X32` is listed
//!   they kill the process (libseccomp's bad-arch behaviour), so an x32 entry
//!   point cannot be used to get around rules written for x86_64 numbers.
//!   When it is listed, the rules apply to the x32 numbers as well.
//! - x86_64 only: when `SCMP_ARCH_X86` is listed, i386 (int 0x80) syscalls get
//!   the same rules, looked up in the i386 table. This is what libseccomp does,
//!   and is stricter than answering every i386 syscall with the default action:
//!   with a deny-list profile (default allow) that would let `int 0x80` bypass
//!   every rule.
//! - Any other listed architecture (one this kernel cannot actually present
//!   here, or aarch64's compat arm, for which no table is wired in) gets the
//!   default action; an audit value that is not listed kills the process.

use std::collections::HashMap;
use std::sync::OnceLock;

use oci_spec::runtime::Arch;

/// `__X32_SYSCALL_BIT` from <asm/unistd.h>.
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// The architecture the filter's rules are written for.
pub struct Native {
    pub audit: u32,
    /// Number to compare syscall numbers against in the native section.
    pub lookup: fn(&str) -> Option<u32>,
}

/// A second architecture the same kernel can run (i386 on x86_64).
pub struct Compat {
    pub oci: Arch,
    pub audit: u32,
    pub lookup: fn(&str) -> Option<u32>,
}

/// A name -> number map for one syscall table, built on first use.
/// `Sysno::from_str` is a chain of string comparisons over the whole table;
/// for a 350-name profile looked up in two or three tables that was most of
/// the compile time.
struct Names(OnceLock<HashMap<&'static str, u32>>);

impl Names {
    const fn new() -> Self {
        Names(OnceLock::new())
    }

    fn get<I: Iterator<Item = (&'static str, u32)>>(
        &self,
        name: &str,
        all: impl FnOnce() -> I,
    ) -> Option<u32> {
        self.0.get_or_init(|| all().collect()).get(name).copied()
    }
}

fn native_nr(name: &str) -> Option<u32> {
    static NAMES: Names = Names::new();
    NAMES.get(name, || {
        use syscalls::Sysno;
        // Not `Sysno::iter()`: in syscalls 0.8 it stops before the last entry.
        (0..=Sysno::last().id() as usize)
            .filter_map(Sysno::new)
            .map(|s| (s.name(), s.id() as u32))
    })
}

#[cfg(target_arch = "x86_64")]
pub const NATIVE: Native = Native {
    audit: 0xc000_003e,
    lookup: native_nr,
};
#[cfg(target_arch = "aarch64")]
pub const NATIVE: Native = Native {
    audit: 0xc000_00b7,
    lookup: native_nr,
};
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("berth-seccomp supports x86_64 and aarch64 hosts");

/// The OCI name of the native architecture; listing it changes nothing.
#[cfg(target_arch = "x86_64")]
pub const NATIVE_OCI: Arch = Arch::ScmpArchX86_64;
#[cfg(target_arch = "aarch64")]
pub const NATIVE_OCI: Arch = Arch::ScmpArchAarch64;

/// Whether native syscall numbers can carry `__X32_SYSCALL_BIT`.
pub const HAS_X32: bool = cfg!(target_arch = "x86_64");

#[cfg(target_arch = "x86_64")]
fn i386_nr(name: &str) -> Option<u32> {
    static NAMES: Names = Names::new();
    NAMES.get(name, || {
        use syscalls::x86::Sysno;
        (0..=Sysno::last().id() as usize)
            .filter_map(Sysno::new)
            .map(|s| (s.name(), s.id() as u32))
    })
}

#[cfg(target_arch = "x86_64")]
pub const COMPAT: &[Compat] = &[Compat {
    oci: Arch::ScmpArchX86,
    audit: 0x4000_0003,
    lookup: i386_nr,
}];
#[cfg(not(target_arch = "x86_64"))]
pub const COMPAT: &[Compat] = &[];

/// x32 syscalls whose numbers differ from x86_64's: the kernel gives them
/// numbers 512 and up (arch/x86/entry/syscalls/syscall_64.tbl, abi "x32"),
/// in this order.
const X32_RENUMBERED: [&str; 36] = [
    "rt_sigaction",
    "rt_sigreturn",
    "ioctl",
    "readv",
    "writev",
    "recvfrom",
    "sendmsg",
    "recvmsg",
    "execve",
    "ptrace",
    "rt_sigpending",
    "rt_sigtimedwait",
    "rt_sigqueueinfo",
    "sigaltstack",
    "timer_create",
    "mq_notify",
    "kexec_load",
    "waitid",
    "set_robust_list",
    "get_robust_list",
    "vmsplice",
    "move_pages",
    "preadv",
    "pwritev",
    "rt_tgsigqueueinfo",
    "recvmmsg",
    "sendmmsg",
    "process_vm_readv",
    "process_vm_writev",
    "setsockopt",
    "getsockopt",
    "io_setup",
    "io_submit",
    "execveat",
    "preadv2",
    "pwritev2",
];

/// Entries marked "64" (x86_64 only) in syscall_64.tbl that have no x32
/// counterpart at all.
const X86_64_ONLY: [&str; 12] = [
    "uselib",
    "_sysctl",
    "create_module",
    "get_kernel_syms",
    "query_module",
    "nfsservctl",
    "set_thread_area",
    "get_thread_area",
    "epoll_ctl_old",
    "epoll_wait_old",
    "vserver",
    "uretprobe",
];

/// The number an x32 task uses for the syscall x86_64 numbers `native`,
/// `__X32_SYSCALL_BIT` included. Keyed by native number so a profile's names
/// are hashed once, not compared against these lists one by one.
pub fn x32_nr(native: u32) -> Option<u32> {
    static EXCEPTIONS: OnceLock<HashMap<u32, Option<u32>>> = OnceLock::new();
    let exceptions = EXCEPTIONS.get_or_init(|| {
        let renumbered = X32_RENUMBERED
            .iter()
            .enumerate()
            .map(|(i, name)| (name, Some(X32_SYSCALL_BIT | (512 + i as u32))));
        let missing = X86_64_ONLY.iter().map(|name| (name, None));
        renumbered
            .chain(missing)
            .filter_map(|(name, x32)| Some((native_nr(name)?, x32)))
            .collect()
    });
    match exceptions.get(&native) {
        Some(&x32) => x32,
        None => Some(X32_SYSCALL_BIT | native),
    }
}

/// What `architectures` asks of the generated program.
pub struct Plan {
    pub x32: bool,
    pub compat: Vec<&'static Compat>,
    /// Listed audit values that only get the default action.
    pub default_only: Vec<u32>,
}

pub fn plan(listed: &[Arch]) -> Plan {
    let mut plan = Plan {
        x32: false,
        compat: Vec::new(),
        default_only: Vec::new(),
    };
    for &arch in listed {
        if arch == Arch::ScmpArchNative || arch == NATIVE_OCI {
            continue;
        }
        if arch == Arch::ScmpArchX32 && HAS_X32 {
            plan.x32 = true;
        } else if let Some(c) = COMPAT.iter().find(|c| c.oci == arch) {
            if !plan.compat.iter().any(|p| p.oci == arch) {
                plan.compat.push(c);
            }
        } else if arch != Arch::ScmpArchX32 {
            // oci-spec's discriminants are libseccomp's SCMP_ARCH_* values,
            // which are the kernel's AUDIT_ARCH_* values (x32 aside).
            let audit = arch as u32;
            if audit != NATIVE.audit && !plan.default_only.contains(&audit) {
                plan.default_only.push(audit);
            }
        }
    }
    plan
}
