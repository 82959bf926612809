//! berth's default profile for `berth run`: an allow-list with the same effect as the
//! default profile of Docker and Podman, so images that work there work here and nothing
//! more is exposed.
//!
//! The shape: everything not listed fails with EPERM; a fixed list of ordinary syscalls is
//! allowed; syscalls that only make sense with a capability are allowed only when the
//! container holds it (the kernel would refuse most of them anyway, but the filter is the
//! second wall); `clone` may not create namespaces without CAP_SYS_ADMIN, and `clone3`
//! (whose flags live in memory a filter cannot read) answers ENOSYS so that libc falls
//! back to `clone`.

use oci_spec::runtime::LinuxSeccomp;
use serde_json::{json, Value};

/// Syscalls every container may make, separated by white space. Names the host's tables
/// lack are skipped by the compiler, so one list serves every kernel and architecture.
const ALLOWED: &str = "
accept accept4 access adjtimex alarm bind brk cachestat capget capset chdir chmod chown
chown32 clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime
clock_gettime64 clock_nanosleep clock_nanosleep_time64 close close_range connect
copy_file_range creat dup dup2 dup3 epoll_create epoll_create1 epoll_ctl epoll_ctl_old
epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old eventfd eventfd2 execve execveat exit
exit_group faccessat faccessat2 fadvise64 fadvise64_64 fallocate fanotify_mark fchdir
fchmod fchmodat fchmodat2 fchown fchown32 fchownat fcntl fcntl64 fdatasync fgetxattr
flistxattr flock fork fremovexattr fsetxattr fstat fstat64 fstatat64 fstatfs fstatfs64
fsync ftruncate ftruncate64 futex futex_requeue futex_time64 futex_wait futex_waitv
futex_wake futimesat get_robust_list get_thread_area getcpu getcwd getdents getdents64
getegid getegid32 geteuid geteuid32 getgid getgid32 getgroups getgroups32 getitimer
getpeername getpgid getpgrp getpid getppid getpriority getrandom getresgid getresgid32
getresuid getresuid32 getrlimit getrusage getsid getsockname getsockopt gettid
gettimeofday getuid getuid32 getxattr getxattrat inotify_add_watch inotify_init
inotify_init1 inotify_rm_watch io_cancel io_destroy io_getevents io_pgetevents
io_pgetevents_time64 io_setup io_submit ioctl ioprio_get ioprio_set ipc kill
landlock_add_rule landlock_create_ruleset landlock_restrict_self lchown lchown32
lgetxattr link linkat listen listmount listxattr listxattrat llistxattr _llseek
lremovexattr lseek lsetxattr lstat lstat64 madvise map_shadow_stack membarrier
memfd_create memfd_secret mincore mkdir mkdirat mknod mknodat mlock mlock2 mlockall mmap
mmap2 mprotect mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedreceive_time64
mq_timedsend mq_timedsend_time64 mq_unlink mremap mseal msgctl msgget msgrcv msgsnd
msync munlock munlockall munmap name_to_handle_at nanosleep newfstatat _newselect open
openat openat2 pause pidfd_open pidfd_send_signal pipe pipe2 pkey_alloc pkey_free
pkey_mprotect poll ppoll ppoll_time64 prctl pread64 preadv preadv2 prlimit64
process_mrelease pselect6 pselect6_time64 pwrite64 pwritev pwritev2 read readahead
readlink readlinkat readv recv recvfrom recvmmsg recvmmsg_time64 recvmsg
remap_file_pages removexattr removexattrat rename renameat renameat2 restart_syscall
rmdir rseq rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn
rt_sigsuspend rt_sigtimedwait rt_sigtimedwait_time64 rt_tgsigqueueinfo
sched_get_priority_max sched_get_priority_min sched_getaffinity sched_getattr
sched_getparam sched_getscheduler sched_rr_get_interval sched_rr_get_interval_time64
sched_setaffinity sched_setattr sched_setparam sched_setscheduler sched_yield seccomp
select semctl semget semop semtimedop semtimedop_time64 send sendfile sendfile64
sendmmsg sendmsg sendto set_robust_list set_thread_area set_tid_address setfsgid
setfsgid32 setfsuid setfsuid32 setgid setgid32 setgroups setgroups32 setitimer setpgid
setpriority setregid setregid32 setresgid setresgid32 setresuid setresuid32 setreuid
setreuid32 setrlimit setsid setsockopt setuid setuid32 setxattr setxattrat shmat shmctl
shmdt shmget shutdown sigaltstack signalfd signalfd4 sigprocmask sigreturn socketcall
socketpair splice stat stat64 statfs statfs64 statmount statx symlink symlinkat sync
sync_file_range syncfs sysinfo tee tgkill time timer_create timer_delete
timer_getoverrun timer_gettime timer_gettime64 timer_settime timer_settime64
timerfd_create timerfd_gettime timerfd_gettime64 timerfd_settime timerfd_settime64 times
tkill truncate truncate64 ugetrlimit umask uname unlink unlinkat utime utimensat
utimensat_time64 utimes vfork vmsplice wait4 waitid waitpid write writev
    ptrace process_vm_readv process_vm_writev
    arch_prctl modify_ldt
";

/// Syscalls allowed only to a container holding the capability.
const BY_CAPABILITY: &[(&str, &[&str])] = &[
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    (
        "CAP_SYS_MODULE",
        &["delete_module", "init_module", "finit_module"],
    ),
    ("CAP_SYS_PACCT", &["acct"]),
    (
        "CAP_SYS_PTRACE",
        &["kcmp", "pidfd_getfd", "process_madvise"],
    ),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    (
        "CAP_SYS_TIME",
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    (
        "CAP_SYS_NICE",
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
];

/// personality(2) values that only select an ABI flavour (PER_LINUX, PER_LINUX32,
/// UNAME26 variants, and the query value 0xffffffff).
const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// The clone flags that create namespaces (CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC |
/// NEWUSER | NEWPID | NEWNET); `clone` must not set any of them without CAP_SYS_ADMIN.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// AF_VSOCK: sockets to the hypervisor are refused, as Docker's newer profiles do.
const AF_VSOCK: u64 = 40;

/// The default profile for a container holding `capabilities` (bounding set names such
/// as `CAP_SYS_ADMIN`).
pub fn docker_default(capabilities: &[String]) -> LinuxSeccomp {
    // The JSON is fixed by this module and its shape is checked by the tests.
    serde_json::from_value(docker_default_json(capabilities))
        .expect("the default seccomp profile is well-formed")
}

/// [`docker_default`] as the runtime spec's JSON, for a caller that writes a spec as JSON
/// anyway (the engine): the typed round trip cost ~0.1 ms of every container start.
pub fn docker_default_json(capabilities: &[String]) -> Value {
    let has = |cap: &str| capabilities.iter().any(|c| c == cap);
    let mut rules = vec![allow(ALLOWED.split_whitespace().collect())];
    let granted: Vec<&str> = BY_CAPABILITY
        .iter()
        .filter(|(cap, _)| has(cap))
        .flat_map(|(_, calls)| calls.iter().copied())
        .collect();
    if !granted.is_empty() {
        rules.push(allow(granted));
    }
    for value in PERSONALITIES {
        rules.push(json!({
            "names": ["personality"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": value, "op": "SCMP_CMP_EQ"}],
        }));
    }
    rules.push(json!({
        "names": ["socket"],
        "action": "SCMP_ACT_ALLOW",
        "args": [{"index": 0, "value": AF_VSOCK, "op": "SCMP_CMP_NE"}],
    }));
    if has("CAP_SYS_ADMIN") {
        rules.push(allow(vec!["clone", "clone3"]));
    } else {
        rules.push(json!({
            "names": ["clone"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": CLONE_NAMESPACE_FLAGS, "valueTwo": 0,
                      "op": "SCMP_CMP_MASKED_EQ"}],
        }));
        rules.push(json!({
            "names": ["clone3"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": libc::ENOSYS,
        }));
    }
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": libc::EPERM,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": rules,
    })
}

fn allow(names: Vec<&str>) -> Value {
    json!({"names": names, "action": "SCMP_ACT_ALLOW"})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn allowed_names(p: &LinuxSeccomp) -> Vec<String> {
        p.syscalls()
            .iter()
            .flatten()
            .filter(|s| s.args().is_none())
            .filter(|s| format!("{:?}", s.action()) == "ScmpActAllow")
            .flat_map(|s| s.names().clone())
            .collect()
    }

    #[test]
    fn compiles_within_the_kernel_limit() {
        for set in [caps(&[]), caps(&["CAP_SYS_ADMIN", "CAP_SYS_PTRACE"])] {
            let filter = crate::compile(&docker_default(&set)).unwrap();
            assert!(filter.len() < 4096, "{} instructions", filter.len());
        }
    }

    #[test]
    fn capability_syscalls_follow_the_capabilities() {
        let plain = allowed_names(&docker_default(&caps(&["CAP_CHOWN"])));
        assert!(plain.iter().any(|n| n == "read"));
        assert!(!plain
            .iter()
            .any(|n| n == "mount" || n == "reboot" || n == "clone3"));
        let admin = allowed_names(&docker_default(&caps(&["CAP_SYS_ADMIN", "CAP_SYS_BOOT"])));
        for name in ["mount", "unshare", "setns", "reboot", "clone", "clone3"] {
            assert!(admin.iter().any(|n| n == name), "{name} not allowed");
        }
    }

    #[test]
    fn no_name_is_both_plain_and_capability_gated() {
        for (cap, calls) in BY_CAPABILITY {
            for call in *calls {
                assert!(
                    !ALLOWED.split_whitespace().any(|n| n == *call),
                    "{call} is listed plain and under {cap}"
                );
            }
        }
    }
}
