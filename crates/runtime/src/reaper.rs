//! A minimal PID 1 for containers that ask for one (`berth run --init`, the annotation
//! [`INIT_ANNOTATION`] = "true"): the container's own init forks once more just before
//! exec, and the parent stays behind as PID 1 that forwards signals to the program and
//! reaps every orphan, then exits with the program's status.
//!
//! Why not a separate static init binary (tini, catatonit)? The runtime's init is already
//! PID 1 inside the namespaces, holds the final user, capabilities and seccomp filter at
//! this point, and is single-threaded, so staying behind costs one fork and no file in
//! the image or on the host to mount in.

use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use crate::error::{Context, Result};

/// The spec annotation that asks for the reaping PID 1.
pub const INIT_ANNOTATION: &str = "org.berth.init";

/// Forks. Returns in the child, which goes on to exec the program; the parent never
/// returns: it becomes the reaper and exits with the program's status.
pub fn fork_reaper() -> Result<()> {
    let all = SigSet::all();
    let mut old = SigSet::empty();
    // Blocked before the fork so that no signal slips between fork and sigwait.
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&all), Some(&mut old))
        .ctx(|| "block signals for the init".into())?;
    // SAFETY: the init process is single-threaded, so the child may run any code.
    match unsafe { fork() }.ctx(|| "fork the program under the init".into())? {
        ForkResult::Child => {
            nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None)
                .ctx(|| "restore the signal mask".into())?;
            Ok(())
        }
        ForkResult::Parent { child } => reap(child, &all),
    }
}

fn reap(child: Pid, all: &SigSet) -> ! {
    // Whoever waits for the program (the runtime's sync channel, pipes, the exec fifo)
    // must see our copies of those fds gone; stdio stays for the program's own use.
    // SAFETY: closing fds this process no longer uses.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    let _ = nix::sys::prctl::set_name(c"init");
    loop {
        match all.wait() {
            Ok(Signal::SIGCHLD) => {
                if let Some(code) = reap_children(child) {
                    std::process::exit(code);
                }
            }
            // Job-control signals from a terminal are not the program's business.
            Ok(Signal::SIGTTIN | Signal::SIGTTOU) => {}
            Ok(sig) => {
                let _ = kill(child, sig);
            }
            Err(_) => {}
        }
    }
}

/// Reaps every exited child; returns the exit code once the program itself is gone
/// (128 + signal when killed, as shells report it).
fn reap_children(program: Pid) -> Option<i32> {
    let mut code = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, status)) if pid == program => code = Some(status),
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == program => {
                code = Some(128 + sig as i32)
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return code,
            Ok(_) => {}
        }
    }
}
