//! Filters installed for real: each test forks a child that installs a
//! filter, makes syscalls and reports through its exit status. Needs root
//! or the ability to set no_new_privs (any user), and a seccomp-enabled
//! kernel.

mod common;

use std::ffi::CString;

use berth_seccomp::{compile, Filter};
use common::*;
use serde_json::json;

const EPERM: i32 = libc::EPERM;
const ENOSYS: i32 = libc::ENOSYS;

#[test]
fn errno_action_returns_custom_errno() {
    let f = filter(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{ "names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38 }]
    }));
    let dir = tempfile::tempdir().unwrap();
    let path = CString::new(
        dir.path()
            .join("made")
            .into_os_string()
            .into_encoded_bytes(),
    )
    .unwrap();
    let mkdir = || errno_of(libc::SYS_mkdir, [path.as_ptr() as u64, 0o755, 0, 0, 0, 0]);
    assert_eq!(run_filtered(&f, mkdir), Outcome::Exited(38));
    assert!(!dir.path().join("made").exists(), "mkdir must not have run");
    // Other syscalls are untouched, and without the filter mkdir works.
    assert_eq!(probe_getppid(&f, [0; 6]), Outcome::Exited(0));
    assert_eq!(run_child(mkdir), Outcome::Exited(0));
}

#[test]
fn default_errno_with_allow_list() {
    let f = filter(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [{ "names": ["getpid", "exit", "exit_group"], "action": "SCMP_ACT_ALLOW" }]
    }));
    assert_eq!(
        run_filtered(&f, || errno_of(libc::SYS_getpid, [0; 6])),
        Outcome::Exited(0)
    );
    assert_eq!(probe_getppid(&f, [0; 6]), Outcome::Exited(EPERM));

    let f = filter(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 13,
        "syscalls": [{ "names": ["exit", "exit_group"], "action": "SCMP_ACT_ALLOW" }]
    }));
    assert_eq!(probe_getppid(&f, [0; 6]), Outcome::Exited(13));
}

/// A filter returning ERRNO 42 for getppid when `arg0 <op> value`.
fn arg0_filter(op: &str, value: u64, value_two: Option<u64>) -> Filter {
    let mut arg = json!({ "index": 0, "value": value, "op": op });
    if let Some(v2) = value_two {
        arg["valueTwo"] = json!(v2);
    }
    filter(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{ "names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 42, "args": [arg] }]
    }))
}

fn matches(f: &Filter, arg0: u64) -> bool {
    match probe_getppid(f, [arg0, 0, 0, 0, 0, 0]) {
        Outcome::Exited(42) => true,
        Outcome::Exited(0) => false,
        other => panic!("unexpected child outcome {other:?}"),
    }
}

const HI: u64 = 1 << 32;

#[test]
fn arg_eq_and_ne_use_both_words() {
    let eq = arg0_filter("SCMP_CMP_EQ", HI | 5, None);
    assert!(matches(&eq, HI | 5));
    assert!(!matches(&eq, 5), "same low word, different high word");
    assert!(!matches(&eq, (2 * HI) | 5));
    let ne = arg0_filter("SCMP_CMP_NE", HI | 5, None);
    assert!(!matches(&ne, HI | 5));
    assert!(matches(&ne, 5), "differs only in the high word");
    assert!(matches(&ne, HI | 6), "differs only in the low word");
}

#[test]
fn arg_ordering_is_unsigned_64_bit() {
    let gt = arg0_filter("SCMP_CMP_GT", HI | 10, None);
    assert!(matches(&gt, HI | 11));
    assert!(matches(&gt, 2 * HI), "higher high word, lower low word");
    assert!(!matches(&gt, HI | 10));
    assert!(
        !matches(&gt, 0xffff_ffff),
        "lower high word, higher low word"
    );
    assert!(matches(&gt, u64::MAX), "unsigned: -1 is the largest value");

    let ge = arg0_filter("SCMP_CMP_GE", HI | 10, None);
    assert!(matches(&ge, HI | 10));
    assert!(!matches(&ge, HI | 9));

    let lt = arg0_filter("SCMP_CMP_LT", HI | 10, None);
    assert!(matches(&lt, HI | 9));
    assert!(
        matches(&lt, 0xffff_ffff),
        "lower high word, higher low word"
    );
    assert!(!matches(&lt, HI | 10));
    assert!(!matches(&lt, 2 * HI));

    let le = arg0_filter("SCMP_CMP_LE", HI | 10, None);
    assert!(matches(&le, HI | 10));
    assert!(!matches(&le, HI | 11));
    assert!(!matches(&le, u64::MAX));
}

#[test]
fn arg_masked_eq_uses_value_as_mask_and_value_two_as_datum() {
    let masked = arg0_filter(
        "SCMP_CMP_MASKED_EQ",
        0xff00_0000_0000_00ff,
        Some(0x1200_0000_0000_0034),
    );
    assert!(matches(&masked, 0x12ab_cdef_0000_5634));
    assert!(
        !matches(&masked, 0x13ab_cdef_0000_5634),
        "high word differs under the mask"
    );
    assert!(
        !matches(&masked, 0x12ab_cdef_0000_5635),
        "low word differs under the mask"
    );
    // valueTwo defaults to 0: "none of these bits set", like Docker's clone rule.
    let none_set = arg0_filter("SCMP_CMP_MASKED_EQ", 0x7e02_0000, None);
    assert!(matches(&none_set, 0x0000_0100));
    assert!(!matches(&none_set, 0x1000_0000));
}

#[test]
fn args_in_one_entry_are_anded_and_entries_are_ored_first_match_wins() {
    let f = filter(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            { "names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 11,
              "args": [{ "index": 0, "value": 1, "op": "SCMP_CMP_EQ" },
                       { "index": 5, "value": HI, "op": "SCMP_CMP_EQ" }] },
            { "names": ["getpid", "getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 12,
              "args": [{ "index": 1, "value": 2, "op": "SCMP_CMP_EQ" }] },
            { "names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13 }
        ]
    }));
    assert_eq!(probe_getppid(&f, [1, 0, 0, 0, 0, HI]), Outcome::Exited(11));
    assert_eq!(
        probe_getppid(&f, [1, 2, 0, 0, 0, HI]),
        Outcome::Exited(11),
        "first entry wins"
    );
    assert_eq!(
        probe_getppid(&f, [1, 2, 0, 0, 0, 0]),
        Outcome::Exited(12),
        "second condition of the AND fails"
    );
    assert_eq!(
        probe_getppid(&f, [0, 0, 0, 0, 0, 0]),
        Outcome::Exited(13),
        "falls to the unconditional entry"
    );
    assert_eq!(
        run_filtered(&f, || errno_of(libc::SYS_getpid, [0, 2, 0, 0, 0, 0])),
        Outcome::Exited(12)
    );
    assert_eq!(
        run_filtered(&f, || errno_of(libc::SYS_getpid, [0; 6])),
        Outcome::Exited(0)
    );
}

#[test]
fn repeated_arg_index_in_one_entry_is_ored_like_runc() {
    let f = filter(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{ "names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 42,
            "args": [{ "index": 0, "value": 5, "op": "SCMP_CMP_EQ" },
                     { "index": 0, "value": 6, "op": "SCMP_CMP_EQ" }] }]
    }));
    assert!(matches(&f, 5));
    assert!(matches(&f, 6));
    assert!(!matches(&f, 7));
}

/// In the child: make SIGSYS exit with code 77, so a TRAP is told apart
/// from a kill (which no handler can catch).
fn catch_sigsys() {
    extern "C" fn on_sigsys(_: libc::c_int) {
        unsafe { libc::_exit(77) };
    }
    // SAFETY: installing a handler that only calls _exit.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigsys as extern "C" fn(libc::c_int) as usize;
        libc::sigaction(libc::SIGSYS, &sa, std::ptr::null_mut());
    }
}

fn getppid_action(action: &str) -> Filter {
    filter(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{ "names": ["getppid"], "action": action }]
    }))
}

#[test]
fn kill_actions_kill_with_sigsys() {
    for action in [
        "SCMP_ACT_KILL_PROCESS",
        "SCMP_ACT_KILL",
        "SCMP_ACT_KILL_THREAD",
    ] {
        let f = getppid_action(action);
        let outcome = run_filtered(&f, || {
            catch_sigsys();
            getppid_errno([0; 6])
        });
        assert_eq!(outcome, Outcome::Signaled(libc::SIGSYS), "{action}");
    }
}

#[test]
fn trap_raises_sigsys() {
    let f = getppid_action("SCMP_ACT_TRAP");
    let trapped = run_filtered(&f, || {
        catch_sigsys();
        getppid_errno([0; 6])
    });
    assert_eq!(trapped, Outcome::Exited(77));
    // Uncaught, SIGSYS terminates the process.
    assert_eq!(probe_getppid(&f, [0; 6]), Outcome::Signaled(libc::SIGSYS));
}

#[test]
fn log_and_allow_let_the_syscall_run() {
    for action in ["SCMP_ACT_LOG", "SCMP_ACT_ALLOW"] {
        let f = filter(json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                { "names": ["exit", "exit_group"], "action": "SCMP_ACT_ALLOW" },
                { "names": ["getppid"], "action": action }
            ]
        }));
        assert_eq!(probe_getppid(&f, [0; 6]), Outcome::Exited(0), "{action}");
        assert_eq!(
            run_filtered(&f, || errno_of(libc::SYS_getpid, [0; 6])),
            Outcome::Exited(EPERM)
        );
    }
}

#[test]
fn trace_without_tracer_fails_with_enosys() {
    let f = getppid_action("SCMP_ACT_TRACE");
    assert_eq!(probe_getppid(&f, [0; 6]), Outcome::Exited(ENOSYS));
}

#[test]
fn flags_are_accepted_by_the_kernel() {
    let f = filter(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "flags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                  "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
        "syscalls": [{ "names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 42 }]
    }));
    // TSYNC | LOG | SPEC_ALLOW; WAIT_KILLABLE_RECV is dropped without a listener.
    assert_eq!(f.flags(), 0b111);
    assert_eq!(probe_getppid(&f, [0; 6]), Outcome::Exited(42));
}

/// struct seccomp_notif and seccomp_notif_resp from <linux/seccomp.h>.
#[repr(C)]
struct Notif {
    id: u64,
    pid: u32,
    flags: u32,
    nr: i32,
    arch: u32,
    ip: u64,
    args: [u64; 6],
}

#[repr(C)]
struct NotifResp {
    id: u64,
    val: i64,
    error: i32,
    flags: u32,
}

#[test]
fn notify_returns_a_listener_that_answers_the_syscall() {
    let f = filter(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
        "syscalls": [{ "names": ["getppid"], "action": "SCMP_ACT_NOTIFY" }]
    }));
    assert!(f.needs_listener());
    assert_eq!(
        f.flags() & 0b10_1000,
        0b10_1000,
        "NEW_LISTENER and WAIT_KILLABLE_RECV"
    );
    // The child installs the filter and supervises its own child: the
    // grandchild's getppid is answered through the listener with errno 61.
    let outcome = run_child(|| {
        unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
        let Ok(Some(listener)) = f.install() else {
            return INSTALL_FAILED;
        };
        let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            unsafe { libc::_exit(getppid_errno([7, 0, 0, 0, 0, 0])) };
        }
        let mut req: Notif = unsafe { std::mem::zeroed() };
        if unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_RECV, &mut req) } != 0 {
            return 101;
        }
        if req.nr != libc::SYS_getppid as i32 || req.args[0] != 7 || req.pid != pid as u32 {
            return 102;
        }
        let mut resp = NotifResp {
            id: req.id,
            val: 0,
            error: -61,
            flags: 0,
        };
        if unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_SEND, &mut resp) } != 0 {
            return 103;
        }
        match wait(pid) {
            Outcome::Exited(code) => code,
            Outcome::Signaled(_) => 104,
        }
    });
    assert_eq!(outcome, Outcome::Exited(61));

    let plain = getppid_action("SCMP_ACT_ERRNO");
    assert!(!plain.needs_listener());
    let no_fd = run_child(|| {
        unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
        match plain.install() {
            Ok(None) => 0,
            Ok(Some(_)) => 1,
            Err(_) => INSTALL_FAILED,
        }
    });
    assert_eq!(no_fd, Outcome::Exited(0));
}

fn fixture() -> oci_spec::runtime::LinuxSeccomp {
    berth_seccomp::parse(include_bytes!("fixtures/allow-list.json")).expect("fixture parses")
}

#[test]
fn big_allow_list_runs_a_real_program_and_denies_the_rest() {
    let f = compile(&fixture()).unwrap();
    println!("allow-list fixture: {} BPF instructions", f.len());
    let true_bin = CString::new("/bin/true").unwrap();
    let argv = [true_bin.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null()];
    let exec_true = || {
        // SAFETY: argv and envp are null-terminated arrays made before fork.
        unsafe { libc::execve(true_bin.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        126
    };
    assert_eq!(run_filtered(&f, exec_true), Outcome::Exited(0));
    // getpgid is left out of the list; clone3 is answered with ENOSYS.
    assert_eq!(
        run_filtered(&f, || errno_of(libc::SYS_getpgid, [0; 6])),
        Outcome::Exited(EPERM)
    );
    assert_eq!(
        run_filtered(&f, || errno_of(libc::SYS_clone3, [0; 6])),
        Outcome::Exited(ENOSYS)
    );
    // personality(0xffffffff) queries and is allowed; other values are not.
    assert_eq!(
        run_filtered(&f, || errno_of(
            libc::SYS_personality,
            [0xffff_ffff, 0, 0, 0, 0, 0]
        )),
        Outcome::Exited(0)
    );
    assert_eq!(
        run_filtered(&f, || errno_of(
            libc::SYS_personality,
            [0x0040_0000, 0, 0, 0, 0, 0]
        )),
        Outcome::Exited(EPERM)
    );
    // Without the filter getpgid works.
    assert_eq!(
        run_child(|| errno_of(libc::SYS_getpgid, [0; 6])),
        Outcome::Exited(0)
    );
}

#[test]
fn program_needing_long_jumps_is_accepted_and_correct() {
    // Every x86_64 syscall gets a conditional rule, so the search tree's
    // subtrees are far longer than a conditional jump's 255-instruction reach.
    let names: Vec<&str> = (0..400)
        .filter_map(|nr| syscalls::Sysno::new(nr).map(|s| s.name()))
        .collect();
    let f = filter(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{ "names": names, "action": "SCMP_ACT_ERRNO", "errnoRet": 42,
                       "args": [{ "index": 0, "value": 0xdead_beef_u64 << 16, "op": "SCMP_CMP_EQ" }] }]
    }));
    assert!(f.len() > 1000, "program is only {} instructions", f.len());
    assert!(
        f.instructions().iter().any(|i| i.code == 0x05),
        "expected BPF_JA long jumps"
    );
    assert_eq!(
        probe_getppid(&f, [0xdead_beef << 16, 0, 0, 0, 0, 0]),
        Outcome::Exited(42)
    );
    assert_eq!(
        probe_getppid(&f, [0xdead_beef, 0, 0, 0, 0, 0]),
        Outcome::Exited(0)
    );
}

#[test]
fn x32_syscalls_are_killed_unless_x32_is_listed() {
    const X32: libc::c_long = 0x4000_0000;
    let native_only = filter(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{ "names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 42 }]
    }));
    let outcome = run_filtered(&native_only, || errno_of(X32 | libc::SYS_getpid, [0; 6]));
    assert_eq!(outcome, Outcome::Signaled(libc::SIGSYS));

    let with_x32 = filter(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X32"],
        "syscalls": [{ "names": ["getpid", "ioctl"], "action": "SCMP_ACT_ERRNO", "errnoRet": 42 }]
    }));
    // Seccomp runs before the kernel looks the number up, so this works
    // whether or not the kernel has x32 support.
    assert_eq!(
        run_filtered(&with_x32, || errno_of(X32 | libc::SYS_getpid, [0; 6])),
        Outcome::Exited(42)
    );
    // x32's ioctl is 514, not x86_64's 16.
    assert_eq!(
        run_filtered(&with_x32, || errno_of(X32 | 514, [0; 6])),
        Outcome::Exited(42)
    );
}

/// An i386 syscall through `int 0x80`; returns the raw result (-errno).
fn int80(nr: u32) -> i32 {
    let ret: i32;
    // SAFETY: an i386 syscall without pointer arguments; the kernel
    // clobbers r8-r11 on this path.
    unsafe {
        std::arch::asm!("int 0x80", inlateout("eax") nr as i32 => ret,
            lateout("r8") _, lateout("r9") _, lateout("r10") _, lateout("r11") _, options(nostack));
    }
    ret
}

const I386_GETPID: u32 = 20;

#[test]
fn i386_syscalls_get_the_rules_when_x86_is_listed_and_are_killed_otherwise() {
    let emulation = run_child(|| i32::from(int80(I386_GETPID) != unsafe { libc::getpid() }));
    if emulation != Outcome::Exited(0) {
        eprintln!("skipping: no IA32 emulation on this kernel ({emulation:?})");
        return;
    }
    let with_x86 = filter(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "syscalls": [{ "names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 42 }]
    }));
    assert_eq!(
        run_filtered(&with_x86, || -int80(I386_GETPID)),
        Outcome::Exited(42)
    );
    // i386's getppid (64) is not getpid: the i386 table is used, not x86_64's.
    assert_eq!(
        run_filtered(&with_x86, || i32::from(int80(64) < 0)),
        Outcome::Exited(0)
    );

    let native_only = filter(json!({ "defaultAction": "SCMP_ACT_ALLOW" }));
    assert_eq!(
        run_filtered(&native_only, || -int80(I386_GETPID)),
        Outcome::Signaled(libc::SIGSYS)
    );
}

/// The default `berth run` profile under the kernel: ordinary calls work, namespace
/// creation and mount are refused with EPERM, clone3 answers ENOSYS so libc falls back,
/// and a container holding CAP_SYS_ADMIN gets them back.
#[test]
fn default_profile_allows_ordinary_calls_and_refuses_namespaces() {
    let plain = berth_seccomp::compile(&berth_seccomp::docker_default(&["CAP_CHOWN".into()]))
        .expect("compiles");
    let outcome = run_filtered(&plain, || {
        if errno_of(libc::SYS_getpid, [0; 6]) != 0 {
            return 10;
        }
        if errno_of(libc::SYS_unshare, [libc::CLONE_NEWNS as u64, 0, 0, 0, 0, 0]) != libc::EPERM {
            return 11;
        }
        let umount = errno_of(libc::SYS_umount2, [0, 0, 0, 0, 0, 0]);
        if umount != libc::EPERM {
            return 12;
        }
        if errno_of(libc::SYS_clone3, [0, 0, 0, 0, 0, 0]) != libc::ENOSYS {
            return 13;
        }
        // clone asking for a new pid namespace is refused; AF_VSOCK sockets too.
        let newpid = (libc::CLONE_NEWPID | libc::SIGCHLD) as u64;
        if errno_of(libc::SYS_clone, [newpid, 0, 0, 0, 0, 0]) != libc::EPERM {
            return 14;
        }
        if errno_of(libc::SYS_socket, [40, libc::SOCK_STREAM as u64, 0, 0, 0, 0]) != libc::EPERM {
            return 15;
        }
        0
    });
    assert_eq!(outcome, Outcome::Exited(0));

    let admin = berth_seccomp::compile(&berth_seccomp::docker_default(&["CAP_SYS_ADMIN".into()]))
        .expect("compiles");
    // With CAP_SYS_ADMIN the filter lets umount2 through to the kernel, which then
    // answers for itself (a null path: EFAULT, not the filter's EPERM).
    let outcome = run_filtered(&admin, || {
        match errno_of(libc::SYS_umount2, [0, 0, 0, 0, 0, 0]) {
            libc::EFAULT => 0,
            e => e,
        }
    });
    assert_eq!(outcome, Outcome::Exited(0));
}
