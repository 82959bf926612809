//! Compiler behaviour without installing anything: program shape checked
//! with a BPF interpreter, errors, the byte form and cache, and speed.

mod common;

use std::time::Instant;

use berth_seccomp::{compile, compile_cached, parse, Error, Filter};
use common::*;
use serde_json::json;

fn fixture_json() -> &'static [u8] {
    include_bytes!("fixtures/allow-list.json")
}

fn error_of(json: serde_json::Value) -> String {
    compile(&spec(json))
        .expect_err("must be rejected")
        .to_string()
}

/// Reference semantics of the operators on full 64-bit values.
fn reference(op: &str, arg: u64, value: u64, value_two: u64) -> bool {
    match op {
        "SCMP_CMP_EQ" => arg == value,
        "SCMP_CMP_NE" => arg != value,
        "SCMP_CMP_LT" => arg < value,
        "SCMP_CMP_LE" => arg <= value,
        "SCMP_CMP_GT" => arg > value,
        "SCMP_CMP_GE" => arg >= value,
        "SCMP_CMP_MASKED_EQ" => arg & value == value_two,
        _ => unreachable!(),
    }
}

#[test]
fn every_operator_matches_reference_on_word_boundaries() {
    let interesting: Vec<u64> = [
        0,
        1,
        0xffff_fffe,
        0xffff_ffff,
        1 << 32,
        (1 << 32) | 1,
        (2 << 32) - 1,
        u64::MAX - 1,
        u64::MAX,
    ]
    .into_iter()
    .chain([0x8000_0000, 0x8000_0000_0000_0000, 0x1234_5678_9abc_def0])
    .collect();
    let ops = [
        "SCMP_CMP_EQ",
        "SCMP_CMP_NE",
        "SCMP_CMP_LT",
        "SCMP_CMP_LE",
        "SCMP_CMP_GT",
        "SCMP_CMP_GE",
        "SCMP_CMP_MASKED_EQ",
    ];
    for op in ops {
        for &value in &interesting {
            let value_two = value & 0xf0f0_f0f0_f0f0_f0f0;
            let f = filter(json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{ "names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 9,
                    "args": [{ "index": 3, "value": value, "valueTwo": value_two, "op": op }] }]
            }));
            for &arg in &interesting {
                let got = emulate(
                    f.instructions(),
                    &Data::native(libc::SYS_getppid, [0, 0, 0, arg, 0, 0]),
                );
                let want = if reference(op, arg, value, value_two) {
                    ret_errno(9)
                } else {
                    RET_ALLOW
                };
                assert_eq!(
                    got, want,
                    "{op} arg={arg:#x} value={value:#x} valueTwo={value_two:#x}"
                );
            }
        }
    }
}

#[test]
fn every_syscall_number_gets_its_action_in_the_fixture() {
    let f = compile(&parse(fixture_json()).unwrap()).unwrap();
    let listed: serde_json::Value = serde_json::from_slice(fixture_json()).unwrap();
    let allowed: Vec<&str> = listed["syscalls"][0]["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    for nr in 0..600 {
        let name = syscalls::Sysno::new(nr).map(|s| s.name());
        let want = match name {
            Some("clone3") => ret_errno(38),
            Some("personality") | Some("clone") => continue, // conditional
            Some(n) if allowed.contains(&n) => RET_ALLOW,
            _ => ret_errno(1),
        };
        let got = emulate(f.instructions(), &Data::native(nr as i64, [0; 6]));
        assert_eq!(got, want, "syscall {nr} ({name:?})");
    }
    // x32 is listed: x32 numbers get the rules (x32 ioctl is 514), unknown ones the default.
    let x32 = |nr: u32| {
        emulate(
            f.instructions(),
            &Data {
                nr: 0x4000_0000 | nr,
                arch: AUDIT_ARCH_X86_64,
                args: [0; 6],
            },
        )
    };
    assert_eq!(x32(514), RET_ALLOW);
    assert_eq!(x32(16), ret_errno(1), "x86_64's ioctl number is not x32's");
    // i386 is listed: i386 numbers are looked up in the i386 table.
    let i386 = |nr: u32| {
        emulate(
            f.instructions(),
            &Data {
                nr,
                arch: AUDIT_ARCH_I386,
                args: [0; 6],
            },
        )
    };
    assert_eq!(i386(192), RET_ALLOW, "mmap2");
    assert_eq!(i386(132), ret_errno(1), "getpgid");
    // aarch64 is not listed.
    assert_eq!(
        emulate(
            f.instructions(),
            &Data {
                nr: 0,
                arch: 0xc000_00b7,
                args: [0; 6]
            }
        ),
        RET_KILL_PROCESS
    );
}

#[test]
fn listed_foreign_arch_without_a_table_gets_the_default_action() {
    let f = filter(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"],
        "syscalls": [{ "names": ["read"], "action": "SCMP_ACT_ALLOW" }]
    }));
    let on = |arch| {
        emulate(
            f.instructions(),
            &Data {
                nr: 63,
                arch,
                args: [0; 6],
            },
        )
    };
    assert_eq!(on(0xc000_00b7), ret_errno(1));
    assert_eq!(on(AUDIT_ARCH_I386), RET_KILL_PROCESS);
}

#[test]
fn rules_with_the_default_action_are_dropped_like_libseccomp() {
    let f = filter(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            { "names": ["getppid"], "action": "SCMP_ACT_ALLOW", "args": [{ "index": 0, "value": 1, "op": "SCMP_CMP_EQ" }] },
            { "names": ["getppid"], "action": "SCMP_ACT_ERRNO" }
        ]
    }));
    assert_eq!(
        emulate(
            f.instructions(),
            &Data::native(libc::SYS_getppid, [1, 0, 0, 0, 0, 0])
        ),
        ret_errno(1)
    );
}

#[test]
fn unknown_syscall_names_are_skipped() {
    let f = filter(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{ "names": ["no_such_syscall", "getppid"], "action": "SCMP_ACT_ERRNO" }]
    }));
    assert_eq!(
        emulate(f.instructions(), &Data::native(libc::SYS_getppid, [0; 6])),
        ret_errno(1)
    );
}

#[test]
fn errors_name_the_field() {
    let e = error_of(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            { "names": ["read"], "action": "SCMP_ACT_ERRNO" },
            { "names": ["write"], "action": "SCMP_ACT_ERRNO", "args": [{ "index": 6, "value": 1, "op": "SCMP_CMP_EQ" }] }
        ]
    }));
    assert!(
        e.starts_with("linux.seccomp.syscalls[1].args[0].index: 6 is out of range"),
        "{e}"
    );

    let e = error_of(json!({ "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{ "names": ["read"], "action": "SCMP_ACT_ALLOW", "errnoRet": 5 }] }));
    assert_eq!(
        e,
        "linux.seccomp.syscalls[0].errnoRet: SCMP_ACT_ALLOW does not take an errno"
    );

    let e = error_of(json!({ "defaultAction": "SCMP_ACT_KILL_PROCESS", "defaultErrnoRet": 5 }));
    assert_eq!(
        e,
        "linux.seccomp.defaultErrnoRet: SCMP_ACT_KILL_PROCESS does not take an errno"
    );

    let e = error_of(json!({ "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 70000 }));
    assert!(
        e.starts_with("linux.seccomp.defaultErrnoRet: 70000 does not fit"),
        "{e}"
    );

    let e = error_of(
        json!({ "defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{ "names": [], "action": "SCMP_ACT_ERRNO" }] }),
    );
    assert_eq!(
        e,
        "linux.seccomp.syscalls[0].names: must contain at least one syscall name"
    );

    let e = error_of(json!({ "defaultAction": "SCMP_ACT_ALLOW", "listenerMetadata": "x" }));
    assert_eq!(
        e,
        "linux.seccomp.listenerMetadata: must not be set without listenerPath"
    );
}

#[test]
fn parse_names_unknown_enumerated_values() {
    let parse_err = |v: serde_json::Value| {
        parse(v.to_string().as_bytes())
            .expect_err("rejected")
            .to_string()
    };
    let calls = |last: serde_json::Value| {
        json!({ "defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            { "names": ["a"], "action": "SCMP_ACT_ERRNO" }, { "names": ["b"], "action": "SCMP_ACT_ERRNO" },
            { "names": ["c"], "action": "SCMP_ACT_ERRNO" }, last ] })
    };
    assert_eq!(
        parse_err(calls(json!({ "names": ["d"], "action": "SCMP_ACT_FOO" }))),
        r#"linux.seccomp.syscalls[3].action: unknown action "SCMP_ACT_FOO""#
    );
    assert_eq!(
        parse_err(calls(json!({ "names": ["d"], "action": "SCMP_ACT_ERRNO",
            "args": [{ "index": 0, "value": 0, "op": "SCMP_CMP_ALMOST" }] }))),
        r#"linux.seccomp.syscalls[3].args[0].op: unknown operator "SCMP_CMP_ALMOST""#
    );
    assert_eq!(
        parse_err(json!({ "defaultAction": "SCMP_ACT_NOPE" })),
        r#"linux.seccomp.defaultAction: unknown action "SCMP_ACT_NOPE""#
    );
    assert_eq!(
        parse_err(
            json!({ "defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_VAX"] })
        ),
        r#"linux.seccomp.architectures[1]: unknown architecture "SCMP_ARCH_VAX""#
    );
    assert_eq!(
        parse_err(
            json!({ "defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_FAST"] })
        ),
        r#"linux.seccomp.flags[0]: unknown flag "SECCOMP_FILTER_FLAG_FAST""#
    );
    // Checks past the enumerations come from compile's validation.
    let e = parse_err(calls(
        json!({ "names": ["d"], "action": "SCMP_ACT_LOG", "errnoRet": 1 }),
    ));
    assert_eq!(
        e,
        "linux.seccomp.syscalls[3].errnoRet: SCMP_ACT_LOG does not take an errno"
    );
}

#[test]
fn too_long_programs_are_refused() {
    let names: Vec<&str> = (0..400)
        .filter_map(|nr| syscalls::Sysno::new(nr).map(|s| s.name()))
        .collect();
    let arg = |i| json!({ "index": i, "value": 0xff, "valueTwo": 1, "op": "SCMP_CMP_MASKED_EQ" });
    let e = compile(&spec(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{ "names": names, "action": "SCMP_ACT_ERRNO",
                       "args": [arg(0), arg(1), arg(2), arg(3), arg(4), arg(5)] }]
    })))
    .expect_err("over 4096 instructions");
    assert!(matches!(e, Error::TooLong { max: 4096, .. }), "{e}");
}

#[test]
fn bytes_round_trip_and_damage_is_detected() {
    let f = compile(&parse(fixture_json()).unwrap()).unwrap();
    let bytes = f.to_bytes();
    assert_eq!(Filter::from_bytes(&bytes).unwrap(), f);
    let mut flipped = bytes.clone();
    flipped[40] ^= 1;
    assert!(matches!(
        Filter::from_bytes(&flipped),
        Err(Error::Corrupt(_))
    ));
    assert!(matches!(
        Filter::from_bytes(&bytes[..bytes.len() - 1]),
        Err(Error::Corrupt(_))
    ));
    assert!(matches!(
        Filter::from_bytes(b"garbage"),
        Err(Error::Corrupt(_))
    ));
}

fn cache_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

#[test]
fn cache_loads_from_file_and_rewrites_a_corrupt_one() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("seccomp");
    let spec = parse(fixture_json()).unwrap();
    let compiled = compile(&spec).unwrap();

    assert_eq!(compile_cached(&spec, &cache).unwrap(), compiled);
    let files = cache_files(&cache);
    assert_eq!(
        files.len(),
        1,
        "one cache file, no temp files left: {files:?}"
    );
    let path = &files[0];
    assert_eq!(path.extension().unwrap(), "bpf");
    assert_eq!(path.file_stem().unwrap().len(), 64, "sha256 hex name");
    assert_eq!(std::fs::read(path).unwrap(), compiled.to_bytes());

    // Put a different, valid filter in the file: the next call must return
    // it, which shows it was read rather than compiled.
    let other = filter(json!({ "defaultAction": "SCMP_ACT_LOG" }));
    std::fs::write(path, other.to_bytes()).unwrap();
    assert_eq!(compile_cached(&spec, &cache).unwrap(), other);

    // A damaged file is ignored and replaced by a good one.
    std::fs::write(path, b"not a filter").unwrap();
    assert_eq!(compile_cached(&spec, &cache).unwrap(), compiled);
    assert_eq!(std::fs::read(path).unwrap(), compiled.to_bytes());
    assert_eq!(cache_files(&cache).len(), 1);

    // Another spec gets another file.
    let small = spec_json_small();
    compile_cached(&small, &cache).unwrap();
    assert_eq!(cache_files(&cache).len(), 2);
}

fn spec_json_small() -> oci_spec::runtime::LinuxSeccomp {
    spec(
        json!({ "defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{ "names": ["mkdir"], "action": "SCMP_ACT_ERRNO" }] }),
    )
}

#[test]
fn compile_time_of_a_docker_sized_profile() {
    let spec = parse(fixture_json()).unwrap();
    let rounds = 200;
    let start = Instant::now();
    let mut len = 0;
    for _ in 0..rounds {
        len = compile(&spec).unwrap().len();
    }
    let per = start.elapsed() / rounds;
    println!("compile of the {len}-instruction allow-list profile: {per:?} per compile");
    // Generous even for an unoptimised build on a busy machine.
    assert!(per.as_millis() < 50, "compile took {per:?}");

    let dir = tempfile::tempdir().unwrap();
    compile_cached(&spec, dir.path()).unwrap();
    let start = Instant::now();
    for _ in 0..rounds {
        compile_cached(&spec, dir.path()).unwrap();
    }
    println!(
        "compile_cached hit: {:?} per call",
        start.elapsed() / rounds
    );
}

#[test]
fn i386_rules_compare_only_the_low_word() {
    let f = filter(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "syscalls": [{ "names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 9,
            "args": [{ "index": 1, "value": (1u64 << 32) | 5, "op": "SCMP_CMP_EQ" }] }]
    }));
    const I386_GETPPID: u32 = 64;
    let i386 = |arg1: u64| {
        emulate(
            f.instructions(),
            &Data {
                nr: I386_GETPPID,
                arch: AUDIT_ARCH_I386,
                args: [0, arg1, 0, 0, 0, 0],
            },
        )
    };
    assert_eq!(
        i386(5),
        ret_errno(9),
        "32-bit arguments have no high word to compare"
    );
    assert_eq!(i386(6), RET_ALLOW);
    // The native section still compares all 64 bits.
    let native = |arg1: u64| {
        emulate(
            f.instructions(),
            &Data::native(libc::SYS_getppid, [0, arg1, 0, 0, 0, 0]),
        )
    };
    assert_eq!(native(5), RET_ALLOW);
    assert_eq!(native((1 << 32) | 5), ret_errno(9));
}
