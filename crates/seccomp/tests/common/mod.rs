//! Helpers shared by the integration tests: building specs from JSON,
//! running code in a forked child under a filter, and a small BPF
//! interpreter for checking programs without the kernel.
#![allow(dead_code)]

use berth_seccomp::{compile, Filter, Insn};
use oci_spec::runtime::LinuxSeccomp;

/// A spec from its config.json form.
pub fn spec(json: serde_json::Value) -> LinuxSeccomp {
    serde_json::from_value(json).expect("valid linux.seccomp JSON")
}

pub fn filter(json: serde_json::Value) -> Filter {
    compile(&spec(json)).expect("compiles")
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Exited(i32),
    Signaled(i32),
}

/// Exit code of a child whose filter failed to install.
pub const INSTALL_FAILED: i32 = 200;

/// Forks; the child sets no_new_privs, installs `filter`, runs `body` and
/// exits with its result. The test harness is multi-threaded, so `body` must
/// stick to async-signal-safe calls (raw syscalls, no allocation).
pub fn run_filtered(filter: &Filter, body: impl FnOnce() -> i32) -> Outcome {
    run_child(|| {
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
        match filter.install() {
            Ok(_listener) => body(),
            Err(_) => INSTALL_FAILED,
        }
    })
}

/// Forks and runs `body` in the child, which exits with its result.
pub fn run_child(body: impl FnOnce() -> i32) -> Outcome {
    // SAFETY: the child only runs async-signal-safe code and then _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // Don't let a stuck child hang the test run.
        unsafe { libc::alarm(20) };
        let code = body();
        unsafe { libc::_exit(code) };
    }
    wait(pid)
}

pub fn wait(pid: libc::pid_t) -> Outcome {
    let mut status = 0;
    // SAFETY: waiting for our own child.
    let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(rc, pid, "waitpid");
    if libc::WIFEXITED(status) {
        Outcome::Exited(libc::WEXITSTATUS(status))
    } else {
        Outcome::Signaled(libc::WTERMSIG(status))
    }
}

/// Raw syscall with six arguments; returns 0 on success, else the errno.
pub fn errno_of(nr: libc::c_long, args: [u64; 6]) -> i32 {
    // SAFETY: callers pass syscalls that ignore or tolerate these arguments.
    let rc = unsafe { libc::syscall(nr, args[0], args[1], args[2], args[3], args[4], args[5]) };
    if rc == -1 {
        // SAFETY: errno is thread-local and async-signal-safe to read.
        unsafe { *libc::__errno_location() }
    } else {
        0
    }
}

/// getppid ignores its arguments but seccomp sees them, which makes it a
/// harmless carrier for argument-condition tests.
pub fn getppid_errno(args: [u64; 6]) -> i32 {
    errno_of(libc::SYS_getppid, args)
}

/// What a child reports for getppid(args) under `filter`.
pub fn probe_getppid(filter: &Filter, args: [u64; 6]) -> Outcome {
    run_filtered(filter, || getppid_errno(args))
}

pub const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
pub const AUDIT_ARCH_I386: u32 = 0x4000_0003;

/// The fields of `struct seccomp_data` a filter can look at.
pub struct Data {
    pub nr: u32,
    pub arch: u32,
    pub args: [u64; 6],
}

impl Data {
    pub fn native(nr: libc::c_long, args: [u64; 6]) -> Data {
        Data {
            nr: nr as u32,
            arch: AUDIT_ARCH_X86_64,
            args,
        }
    }

    fn word(&self, off: u32) -> u32 {
        match off {
            0 => self.nr,
            4 => self.arch,
            8 | 12 => 0, // instruction pointer
            _ => {
                let arg = self.args[((off - 16) / 8) as usize];
                if off & 4 == 0 {
                    arg as u32
                } else {
                    (arg >> 32) as u32
                }
            }
        }
    }
}

/// Runs a seccomp program the way the kernel would, returning the action.
/// Panics on anything the compiler should never emit.
pub fn emulate(prog: &[Insn], d: &Data) -> u32 {
    let (mut pc, mut a) = (0usize, 0u32);
    loop {
        let i = prog[pc];
        pc += 1;
        let taken = |cond: bool| {
            if cond {
                usize::from(i.jt)
            } else {
                usize::from(i.jf)
            }
        };
        match i.code {
            0x20 => a = d.word(i.k),
            0x54 => a &= i.k,
            0x05 => pc += i.k as usize,
            0x15 => pc += taken(a == i.k),
            0x25 => pc += taken(a > i.k),
            0x35 => pc += taken(a >= i.k),
            0x06 => return i.k,
            other => panic!("unexpected opcode {other:#x}"),
        }
    }
}

pub const RET_ALLOW: u32 = 0x7fff_0000;
pub const RET_KILL_PROCESS: u32 = 0x8000_0000;
pub fn ret_errno(e: u32) -> u32 {
    0x0005_0000 | e
}
