//! Device access control on cgroup2: the kernel has no devices.allow file there, only a
//! BPF_PROG_TYPE_CGROUP_DEVICE program attached to the cgroup. No well-kept crate emits
//! such a small program without pulling in a whole eBPF toolchain, so we assemble the few
//! instructions ourselves.
//!
//! The program walks the spec's rules from last to first; the first rule that matches the
//! request decides. If none matches the request is allowed, which mirrors cgroup v1 where
//! a new cgroup starts allowing everything until a "deny all" rule is written (OCI configs
//! begin with exactly that rule).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use oci_spec::runtime::LinuxDeviceCgroup;

use super::cg_err;
use crate::error::Result;

#[repr(C)]
#[derive(Clone, Copy)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

const LDX_W: u8 = 0x61; // dst = *(u32 *)(src + off)
const AND_K: u8 = 0x57; // dst &= imm (64-bit)
const RSH_K: u8 = 0x77; // dst >>= imm (64-bit)
const MOV_X: u8 = 0xbf; // dst = src
const MOV_K: u8 = 0xb7; // dst = imm
const JNE_K: u8 = 0x55; // if dst != imm goto +off
const EXIT: u8 = 0x95;

fn ins(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;

/// One rule's test: jumps to the next rule on mismatch, else returns allow/deny.
fn rule_block(r: &LinuxDeviceCgroup) -> Vec<Insn> {
    let mut checks: Vec<(u8, i32, bool)> = Vec::new(); // (register, value, is_access)
    match r.typ().map(|t| t.as_str().to_owned()).as_deref() {
        Some("c") | Some("u") => checks.push((2, DEV_CHAR, false)),
        Some("b") => checks.push((2, DEV_BLOCK, false)),
        _ => {}
    }
    let access = r.access().clone().unwrap_or_else(|| "rwm".into());
    let mut mask = 0;
    for ch in access.chars() {
        mask |= match ch {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            _ => 0,
        };
    }
    if let Some(m) = r.major().filter(|m| *m >= 0) {
        checks.push((4, m as i32, false));
    }
    if let Some(m) = r.minor().filter(|m| *m >= 0) {
        checks.push((5, m as i32, false));
    }
    let full = mask == ACC_READ | ACC_WRITE | ACC_MKNOD;
    // Body length decides jump distances, so build the tail first and count backwards.
    let tail = [
        ins(MOV_K, 0, 0, 0, i32::from(r.allow())),
        ins(EXIT, 0, 0, 0, 0),
    ];
    let mut body: Vec<Insn> = Vec::new();
    let access_len = if full { 0 } else { 3 };
    let total_checks = checks.len() + access_len;
    let mut emitted = 0usize;
    let skip_to_end = |emitted: usize| (total_checks - emitted - 1 + tail.len()) as i16;
    for (reg, val, _) in &checks {
        body.push(ins(JNE_K, *reg, 0, skip_to_end(emitted), *val));
        emitted += 1;
    }
    if !full {
        // Allow rules match when every requested bit is granted; deny rules when any is.
        body.push(ins(MOV_X, 6, 3, 0, 0));
        emitted += 1;
        if r.allow() {
            body.push(ins(AND_K, 6, 0, 0, !mask & 7));
            emitted += 1;
            body.push(ins(JNE_K, 6, 0, skip_to_end(emitted), 0));
        } else {
            body.push(ins(AND_K, 6, 0, 0, mask));
            emitted += 1;
            // "any bit" means: skip when the masked value is zero.
            body.push(Insn {
                code: 0x15,
                regs: 6,
                off: skip_to_end(emitted),
                imm: 0,
            }); // JEQ_K
        }
    }
    body.extend(tail);
    body
}

fn program(rules: &[LinuxDeviceCgroup]) -> Vec<Insn> {
    let mut prog = vec![
        ins(LDX_W, 2, 1, 0, 0),
        ins(AND_K, 2, 0, 0, 0xffff),
        ins(LDX_W, 3, 1, 0, 0),
        ins(RSH_K, 3, 0, 0, 16),
        ins(LDX_W, 4, 1, 4, 0),
        ins(LDX_W, 5, 1, 8, 0),
    ];
    for r in rules.iter().rev() {
        let block = rule_block(r);
        let unconditional = block.len() == 2;
        prog.extend(block);
        // The verifier rejects unreachable instructions: nothing may follow a rule that
        // matches every request (typically the leading "deny all").
        if unconditional {
            return prog;
        }
    }
    prog.push(ins(MOV_K, 0, 0, 0, 1));
    prog.push(ins(EXIT, 0, 0, 0, 0));
    prog
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const ATTACH_CGROUP_DEVICE: u32 = 6;
const F_ALLOW_OVERRIDE: u32 = 1;

fn bpf(cmd: libc::c_long, attr: &mut [u8; 144]) -> std::io::Result<i32> {
    // SAFETY: attr is a zero-initialised bpf_attr-sized buffer that outlives the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r as i32)
    }
}

fn put32(a: &mut [u8; 144], off: usize, v: u32) {
    a[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}
fn put64(a: &mut [u8; 144], off: usize, v: u64) {
    a[off..off + 8].copy_from_slice(&v.to_ne_bytes());
}

pub fn attach(dir: &Path, rules: &[LinuxDeviceCgroup]) -> Result<()> {
    let prog = program(rules);
    let license = b"GPL\0";
    let mut attr = [0u8; 144];
    put32(&mut attr, 0, PROG_TYPE_CGROUP_DEVICE);
    put32(&mut attr, 4, prog.len() as u32);
    put64(&mut attr, 8, prog.as_ptr() as u64);
    put64(&mut attr, 16, license.as_ptr() as u64);
    let prog_fd = bpf(BPF_PROG_LOAD, &mut attr)
        .map_err(|e| cg_err(dir, format!("load device program: {e}")))?;
    // SAFETY: the kernel returned a new fd that we now own.
    let prog_fd = unsafe { OwnedFd::from_raw_fd(prog_fd) };
    let cg = std::fs::File::open(dir).map_err(|e| cg_err(dir, format!("open: {e}")))?;
    let mut attr = [0u8; 144];
    put32(&mut attr, 0, cg.as_raw_fd() as u32);
    put32(&mut attr, 4, prog_fd.as_raw_fd() as u32);
    put32(&mut attr, 8, ATTACH_CGROUP_DEVICE);
    put32(&mut attr, 12, F_ALLOW_OVERRIDE);
    bpf(BPF_PROG_ATTACH, &mut attr)
        .map_err(|e| cg_err(dir, format!("attach device program: {e}")))?;
    Ok(())
}
