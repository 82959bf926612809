//! `exec`: a new process inside a running container — same namespaces, cgroup, and by
//! default the container's seccomp filter; user, capabilities, env and cwd from `process`.

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use nix::sched::{setns, CloneFlags};
use oci_spec::runtime::Process;

use crate::channel::{self, Tag};
use crate::container::{
    forward_signals, init_error, wait_exec, wait_exit, write_pid_file, Runtime,
};
use crate::error::{Context, Error, Result};
use crate::spawn::{clone3, Forked};
use crate::state::Status;
use crate::{init, namespaces, seccomp};

#[derive(Debug, Default, Clone)]
pub struct ExecOptions {
    pub detach: bool,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub preserve_fds: i32,
}

/// Namespaces joined by the exec'd process (pid and time are joined by us, for children).
const KINDS: [(&str, i32); 6] = [
    ("user", libc::CLONE_NEWUSER),
    ("ipc", libc::CLONE_NEWIPC),
    ("uts", libc::CLONE_NEWUTS),
    ("net", libc::CLONE_NEWNET),
    ("cgroup", libc::CLONE_NEWCGROUP),
    ("mnt", libc::CLONE_NEWNS),
];

impl Runtime {
    /// Returns the process's exit code, or 0 once it runs when detached.
    pub fn exec(&self, id: &str, process: &Process, opts: &ExecOptions) -> Result<i32> {
        let rec = self.record(id)?;
        if !matches!(rec.public.status, Status::Running | Status::Created) {
            return Err(Error::BadState {
                id: id.into(),
                status: rec.public.status.to_string(),
                msg: "cannot exec in a container that is not running".into(),
            });
        }
        let pid = rec.public.pid;
        let filter = match rec
            .config
            .linux()
            .as_ref()
            .and_then(|l| l.seccomp().as_ref())
        {
            Some(s) => Some(seccomp::compile(s, &self.root.join(".seccomp-cache"))?),
            None => None,
        };
        let (console, pty) = exec_console(process, opts)?;
        join_for_children(pid)?;
        let (parent_chan, child_chan) = channel::pair()?;
        let clone_fd = rec.cgroup.clone_into_fd();
        let child = match clone3(0, clone_fd.as_ref())? {
            Forked::Child => {
                drop(parent_chan);
                let r = rec.cgroup.join_v1_self().and_then(|()| {
                    exec_child(
                        pid,
                        process,
                        &child_chan,
                        console.as_ref(),
                        filter.as_ref(),
                        opts.preserve_fds,
                    )
                });
                match r {
                    Ok(never) => match never {},
                    Err(e) => init::fail(&child_chan, e),
                }
            }
            Forked::Parent(p) => p,
        };
        drop(child_chan);
        drop(console);
        // The child moves itself into the v1 hierarchies (see `Cgroup::join_v1_self`).
        if clone_fd.is_none() {
            if let Err(e) = rec.cgroup.add_where(child, true, false) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(child),
                    nix::sys::signal::Signal::SIGKILL,
                );
                return Err(e);
            }
        }
        parent_chan.send(Tag::Go, &[])?;
        if let Err(e) = wait_exec(&parent_chan) {
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(child), None);
            return Err(e);
        }
        if let Some(p) = &opts.pid_file {
            write_pid_file(p, child)?;
        }
        if opts.detach {
            return Ok(0);
        }
        forward_signals(child);
        Ok(match pty {
            Some(l) => crate::tty::pump_until_exit(crate::console::recv_fd(l.as_fd())?, child),
            None => wait_exit(child),
        })
    }
}

fn exec_console(
    process: &Process,
    opts: &ExecOptions,
) -> Result<(Option<OwnedFd>, Option<OwnedFd>)> {
    if !process.terminal().unwrap_or(false) {
        return Ok((None, None));
    }
    if let Some(path) = &opts.console_socket {
        let s = std::os::unix::net::UnixStream::connect(path)
            .ctx(|| format!("console socket {}", path.display()))?;
        return Ok((Some(s.into()), None));
    }
    if opts.detach {
        return Err(Error::config(
            "process.terminal",
            "a detached exec with a terminal needs --console-socket",
        ));
    }
    let (a, b) = std::os::unix::net::UnixStream::pair().ctx(|| "socketpair".into())?;
    Ok((Some(a.into()), Some(b.into())))
}

fn join_for_children(pid: i32) -> Result<()> {
    for (name, flag) in [("pid", libc::CLONE_NEWPID), ("time", libc::CLONE_NEWTIME)] {
        let theirs = format!("/proc/{pid}/ns/{name}");
        let same = std::fs::read_link(&theirs).ok()
            == std::fs::read_link(format!("/proc/self/ns/{name}")).ok();
        if same {
            continue;
        }
        let Ok(f) = std::fs::File::open(&theirs) else {
            continue;
        };
        setns(f, CloneFlags::from_bits_retain(flag)).ctx(|| format!("join {theirs}"))?;
    }
    Ok(())
}

fn exec_child(
    pid: i32,
    process: &Process,
    chan: &channel::Channel,
    console: Option<&OwnedFd>,
    filter: Option<&seccomp::Filter>,
    preserve_fds: i32,
) -> Result<init::Never> {
    match chan.recv()? {
        Some((Tag::Go, _)) => {}
        Some((tag, msg)) => return Err(init_error(tag, msg)),
        None => return Err(Error::Init("runtime went away".into())),
    }
    namespaces::join_process(pid, &KINDS)?;
    if process.terminal().unwrap_or(false) {
        if let Some(sock) = console {
            // Without a consoleSize, the size of the terminal we were run from (fd 0 is
            // still the caller's here), so the program reads it from its first moment.
            let size = process
                .console_size()
                .map(|b| (b.height() as u16, b.width() as u16))
                .or_else(|| crate::console::terminal_size(0));
            crate::console::setup(sock.as_fd(), size, false)?;
        }
    }
    init::apply_process_limits(process)?;
    let program = init::resolve_program(process)?;
    let filter = filter.map(|filter| init::Seccomp {
        filter,
        listener: None,
        state: &[],
    });
    init::become_process(process, &program, filter, preserve_fds, false)
}
