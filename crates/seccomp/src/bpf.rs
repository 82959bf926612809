//! Classic BPF instructions as seccomp(2) consumes them, and the handful of
//! opcodes the compiler emits.

/// One classic BPF instruction; the same layout as the kernel's
/// `struct sock_filter` (and `libc::sock_filter`), so a slice of these can be
/// handed to seccomp(2) as is.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

const _: () = assert!(std::mem::size_of::<Insn>() == std::mem::size_of::<libc::sock_filter>());

/// The kernel refuses programs longer than this (BPF_MAXINSNS).
pub const MAX_INSNS: usize = 4096;
/// Longest forward distance a conditional jump's `jt`/`jf` can express.
pub const MAX_SHORT_JUMP: usize = u8::MAX as usize;

// Opcode parts from <linux/bpf_common.h>.
const BPF_LD: u16 = 0x00;
const BPF_ALU: u16 = 0x04;
const BPF_JMP: u16 = 0x05;
const BPF_RET: u16 = 0x06;
const BPF_W: u16 = 0x00;
const BPF_ABS: u16 = 0x20;
const BPF_AND: u16 = 0x50;
const BPF_JA: u16 = 0x00;
const BPF_JEQ: u16 = 0x10;
const BPF_JGT: u16 = 0x20;
const BPF_JGE: u16 = 0x30;
const BPF_K: u16 = 0x00;

pub const OP_LD_ABS: u16 = BPF_LD | BPF_W | BPF_ABS;
pub const OP_AND: u16 = BPF_ALU | BPF_AND | BPF_K;
pub const OP_JA: u16 = BPF_JMP | BPF_JA;
pub const OP_JEQ: u16 = BPF_JMP | BPF_JEQ | BPF_K;
pub const OP_JGT: u16 = BPF_JMP | BPF_JGT | BPF_K;
pub const OP_JGE: u16 = BPF_JMP | BPF_JGE | BPF_K;
pub const OP_RET: u16 = BPF_RET | BPF_K;

// Offsets into `struct seccomp_data`.
pub const OFF_NR: u32 = 0;
pub const OFF_ARCH: u32 = 4;
const OFF_ARGS: u32 = 16;

/// Offset of the low 32-bit word of syscall argument `index`. The x86_64 and
/// aarch64 kernels are little-endian, so the low word comes first.
pub fn arg_lo(index: u8) -> u32 {
    OFF_ARGS + 8 * u32::from(index)
}

/// Offset of the high 32-bit word of syscall argument `index`.
pub fn arg_hi(index: u8) -> u32 {
    arg_lo(index) + 4
}

pub fn load(offset: u32) -> Insn {
    Insn {
        code: OP_LD_ABS,
        jt: 0,
        jf: 0,
        k: offset,
    }
}

pub fn and(k: u32) -> Insn {
    Insn {
        code: OP_AND,
        jt: 0,
        jf: 0,
        k,
    }
}

pub fn jump(code: u16, k: u32, jt: u8, jf: u8) -> Insn {
    Insn { code, jt, jf, k }
}

pub fn ja(distance: usize) -> Insn {
    // Callers keep programs under MAX_INSNS, so the distance fits.
    Insn {
        code: OP_JA,
        jt: 0,
        jf: 0,
        k: distance as u32,
    }
}

pub fn ret(k: u32) -> Insn {
    Insn {
        code: OP_RET,
        jt: 0,
        jf: 0,
        k,
    }
}

/// Emits "if (A `code` k) skip the next `distance` instructions", using a
/// short conditional jump when it reaches and `jcc; ja` otherwise.
pub fn skip_if_true(out: &mut Vec<Insn>, code: u16, k: u32, distance: usize) {
    if distance <= MAX_SHORT_JUMP {
        out.push(jump(code, k, distance as u8, 0));
    } else {
        // true -> fall into the `ja`, false -> hop over it.
        out.push(jump(code, k, 0, 1));
        out.push(ja(distance));
    }
}

/// Emits "unless (A `code` k), skip the next `distance` instructions".
pub fn skip_if_false(out: &mut Vec<Insn>, code: u16, k: u32, distance: usize) {
    if distance <= MAX_SHORT_JUMP {
        out.push(jump(code, k, 0, distance as u8));
    } else {
        // true -> hop over the `ja`, false -> take it.
        out.push(jump(code, k, 1, 0));
        out.push(ja(distance));
    }
}

/// Checks what the kernel's checker would: known opcodes, every jump lands
/// inside the program, and the program cannot run off its end. Used on
/// programs read back from bytes, which may come from a damaged cache file.
pub fn validate(prog: &[Insn]) -> Result<(), &'static str> {
    if prog.is_empty() || prog.len() > MAX_INSNS {
        return Err("program length out of range");
    }
    for (i, insn) in prog.iter().enumerate() {
        let remaining = prog.len() - i - 1;
        match insn.code {
            OP_LD_ABS => {
                // seccomp_data is 64 bytes; loads must be aligned words inside it.
                if insn.k % 4 != 0 || insn.k >= 64 {
                    return Err("load outside seccomp_data");
                }
            }
            OP_AND | OP_RET => {}
            OP_JA => {
                if insn.k as usize >= remaining {
                    return Err("jump out of range");
                }
            }
            OP_JEQ | OP_JGT | OP_JGE => {
                if usize::from(insn.jt.max(insn.jf)) >= remaining {
                    return Err("jump out of range");
                }
            }
            _ => return Err("unsupported opcode"),
        }
    }
    match prog.last() {
        Some(last) if last.code == OP_RET => Ok(()),
        _ => Err("program does not end in a return"),
    }
}
