//! berth-seccomp: compiles the OCI runtime-spec `linux.seccomp` section into a
//! classic BPF program and installs it with seccomp(2), without libseccomp.
//!
//! # Program layout
//!
//! ```text
//!   ld  arch
//!   jeq AUDIT_ARCH_X86_64 ? fall : skip native section
//!   native section:
//!     ld  nr
//!     binary search over syscall-number ranges (jge), leaves:
//!       ret ACTION                        range without conditions
//!       rule; rule; ...; ret DEFAULT      syscall with argument rules
//!   jeq AUDIT_ARCH_I386 ? fall : skip     only when SCMP_ARCH_X86 is listed
//!   i386 section (same shape, i386 numbers, 32-bit arguments)
//!   jeq OTHER_LISTED_ARCH ; ret DEFAULT   per other listed architecture
//!   ret KILL_PROCESS                      any other arch: libseccomp's bad-arch
//! ```
//!
//! Ranges: the syscall-number space 0..=u32::MAX is cut into contiguous
//! ranges, and neighbours with the same unconditional action are merged. An
//! allow-list of 350 syscalls therefore has about as many ranges as it has
//! gaps, and a lookup costs about log2(ranges) comparisons (~9 for Docker's
//! profile). On x86_64, numbers with `__X32_SYSCALL_BIT` form their own range
//! that kills the process unless `SCMP_ARCH_X32` is listed (see the `arch` module).
//!
//! Each search node is `jge K` whose true branch skips the lower subtree; when
//! that subtree is longer than the 255 instructions `jt` can skip, the node
//! becomes `jge K, 0, 1; ja LEN` (BPF_JA takes a 32-bit offset), so programs
//! of any size up to the kernel's 4096 instructions stay valid.
//!
//! A rule is a run of argument checks that fall through when they hold and
//! jump past the rule's `ret ACTION` when they do not, landing on the next
//! rule of the same syscall or on `ret DEFAULT`. 64-bit comparisons test the
//! high words first and the low words only when the high words are equal.
//! Rule precedence is described in the `rules` module.

mod arch;
mod bpf;
mod cache;
mod codegen;
mod install;
mod parse;
mod profile;
mod rules;

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompFilterFlag};

pub use bpf::Insn;
pub use profile::{docker_default, docker_default_json};

/// Errors name the spec field at fault, e.g.
/// `linux.seccomp.syscalls[3].args[0].index: 7 is out of range, ...`.
#[derive(thiserror::Error, Debug)]
pub enum Error {
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error(
        "compiled seccomp program has {len} instructions, more than the kernel's limit of {max}"
    )]
    TooLong { len: usize, max: usize },
    #[error("seccomp program generation: {0}")]
    Codegen(String),
    #[error("seccomp filter bytes: {0}")]
    Corrupt(&'static str),
    #[error("seccomp cache {}: {source}", path.display())]
    Cache {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("seccomp(SECCOMP_SET_MODE_FILTER, flags {flags:#x}): {source}")]
    Install { flags: u32, source: std::io::Error },
}

/// A compiled seccomp program and the seccomp(2) flags to load it with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    insns: Vec<Insn>,
    /// SECCOMP_FILTER_FLAG_* bits; NEW_LISTENER is set when a rule or the
    /// default action is SCMP_ACT_NOTIFY.
    flags: u32,
}

/// All flag bits this crate may pass to seccomp(2).
const KNOWN_FLAGS: u32 = 0x3f;

/// Compiles the spec for the architecture this crate was built for.
pub fn compile(spec: &LinuxSeccomp) -> Result<Filter, Error> {
    let checked = rules::check(spec)?;
    let plan = arch::plan(spec.architectures().as_deref().unwrap_or(&[]));
    let insns = codegen::generate(&checked, &plan)?;
    let notify = insns
        .iter()
        .any(|i| i.code == bpf::OP_RET && i.k & 0xffff_0000 == rules::RET_USER_NOTIF);
    let flags = install::kernel_flags(spec_flags(spec), notify);
    Ok(Filter { insns, flags })
}

fn spec_flags(spec: &LinuxSeccomp) -> u32 {
    spec.flags()
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .fold(0, |acc, flag| {
            acc | match flag {
                LinuxSeccompFilterFlag::SeccompFilterFlagTsync => install::TSYNC,
                LinuxSeccompFilterFlag::SeccompFilterFlagLog => install::SECCOMP_FILTER_FLAG_LOG,
                LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                    install::SECCOMP_FILTER_FLAG_SPEC_ALLOW
                }
                LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
                    install::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
                }
            }
        })
}

/// Compile, or load from `cache_dir/<sha256 of canonical spec JSON + arch +
/// crate version>.bpf`; the cache is written atomically (temp file, rename).
/// A corrupt cache file is ignored and rewritten. Failing to write the cache
/// is not an error: the compiled filter is returned all the same.
pub fn compile_cached(spec: &LinuxSeccomp, cache_dir: &Path) -> Result<Filter, Error> {
    cache::compile_cached(spec, cache_dir)
}

/// Parses `linux.seccomp` JSON, naming the field of an unknown action,
/// operator, architecture or flag (e.g. `linux.seccomp.syscalls[3].action:
/// unknown action "SCMP_ACT_FOO"`), and checks what [`compile`] would.
pub fn parse(json: &[u8]) -> Result<LinuxSeccomp, Error> {
    parse::parse(json)
}

impl Filter {
    /// The byte form stored in the cache; see [`Filter::from_bytes`].
    pub fn to_bytes(&self) -> Vec<u8> {
        cache::to_bytes(self)
    }

    /// Reads [`Filter::to_bytes`] output back, checking its checksum and
    /// that the program is one the kernel would accept.
    pub fn from_bytes(b: &[u8]) -> Result<Filter, Error> {
        let filter = cache::from_bytes(b)?;
        if filter.flags & !KNOWN_FLAGS != 0 {
            return Err(Error::Corrupt("unknown seccomp flags"));
        }
        Ok(filter)
    }

    /// Installs on the calling thread/process with
    /// seccomp(SECCOMP_SET_MODE_FILTER, flags). Returns the user-notify
    /// listener fd when the filter uses SCMP_ACT_NOTIFY. Caller has already
    /// set no_new_privs or holds CAP_SYS_ADMIN.
    ///
    /// Makes one syscall and allocates nothing on success, so it can be
    /// called in a child between fork and exec.
    pub fn install(&self) -> Result<Option<OwnedFd>, Error> {
        install::install(self)
    }

    /// Number of BPF instructions.
    pub fn len(&self) -> usize {
        self.insns.len()
    }

    /// Never true for a compiled filter; here because `len` is.
    pub fn is_empty(&self) -> bool {
        self.insns.is_empty()
    }

    /// The program, for inspection and tests.
    pub fn instructions(&self) -> &[Insn] {
        &self.insns
    }

    /// SECCOMP_FILTER_FLAG_* bits passed to seccomp(2).
    pub fn flags(&self) -> u32 {
        self.flags
    }

    /// Whether [`Filter::install`] returns a user-notify listener fd.
    pub fn needs_listener(&self) -> bool {
        self.flags & install::SECCOMP_FILTER_FLAG_NEW_LISTENER != 0
    }
}
