//! Rules to a BPF program. See the crate documentation for the layout.

use crate::arch::{self, Plan, X32_SYSCALL_BIT};
use crate::bpf::{self, Insn, MAX_INSNS, MAX_SHORT_JUMP, OP_JEQ, OP_JGE, OP_JGT};
use crate::rules::{self, Checked, Cond, Entry, Op, Rule, RET_KILL_PROCESS};
use crate::Error;

/// What a range of syscall numbers leads to.
#[derive(Clone, Copy)]
enum Leaf<'a> {
    Ret(u32),
    Rules(&'a [Rule]),
}

/// One architecture's part of the program.
struct Section<'a> {
    default_action: u32,
    /// Compare all 64 bits of arguments (false on 32-bit architectures,
    /// whose arguments only have a low word).
    wide: bool,
    /// Sorted, contiguous ranges of syscall numbers: each starts at `.0` and
    /// runs up to the next one's start; the first starts at 0.
    ranges: Vec<(u32, Leaf<'a>)>,
}

pub fn generate(checked: &Checked, plan: &Plan) -> Result<Vec<Insn>, Error> {
    let default = checked.default_action;
    let native_table = rules::table(checked, &|name, out| {
        if let Some(nr) = (arch::NATIVE.lookup)(name) {
            out.push(nr);
            if plan.x32 {
                out.extend(arch::x32_nr(nr));
            }
        }
    });
    // Unlisted x32 syscalls are a bad architecture. The number -1 is left to
    // the default action: it is no syscall, only what ptrace uses to skip one.
    let native_tail: &[(u32, u32)] = if arch::HAS_X32 && !plan.x32 {
        &[(X32_SYSCALL_BIT, RET_KILL_PROCESS), (u32::MAX, default)]
    } else {
        &[]
    };
    let mut prog = vec![bpf::load(bpf::OFF_ARCH)];
    let native = Section {
        default_action: default,
        wide: true,
        ranges: ranges(&native_table, default, native_tail),
    };
    emit_arch(&mut prog, arch::NATIVE.audit, &native)?;
    for compat in &plan.compat {
        let table = rules::table(checked, &|name, out| out.extend((compat.lookup)(name)));
        let section = Section {
            default_action: default,
            wide: false,
            ranges: ranges(&table, default, &[]),
        };
        emit_arch(&mut prog, compat.audit, &section)?;
    }
    for &audit in &plan.default_only {
        prog.push(bpf::jump(OP_JEQ, audit, 0, 1));
        prog.push(bpf::ret(default));
    }
    prog.push(bpf::ret(RET_KILL_PROCESS));
    if prog.len() > MAX_INSNS {
        return Err(Error::TooLong {
            len: prog.len(),
            max: MAX_INSNS,
        });
    }
    Ok(prog)
}

/// "if arch == audit { section } else skip it"; the accumulator holds the arch.
fn emit_arch(prog: &mut Vec<Insn>, audit: u32, section: &Section) -> Result<(), Error> {
    let mut body = vec![bpf::load(bpf::OFF_NR)];
    emit_tree(&mut body, section, &section.ranges)?;
    bpf::skip_if_false(prog, OP_JEQ, audit, body.len());
    prog.extend(body);
    Ok(())
}

/// Turns the per-number table into contiguous ranges, merging neighbours
/// that return the same action so an allow-list of hundreds of syscalls
/// needs only as many ranges as it has gaps. `tail` adds ranges, in
/// ascending order, starting above every table entry.
fn ranges<'a>(table: &'a [Entry], default: u32, tail: &[(u32, u32)]) -> Vec<(u32, Leaf<'a>)> {
    let mut out: Vec<(u32, Leaf<'a>)> = Vec::with_capacity(2 * table.len() + tail.len() + 1);
    let mut push = |start: u32, leaf: Leaf<'a>| match (out.last(), leaf) {
        (Some(&(_, Leaf::Ret(prev))), Leaf::Ret(now)) if prev == now => {}
        _ => out.push((start, leaf)),
    };
    let mut next: u64 = 0;
    for entry in table {
        if u64::from(entry.nr) > next {
            push(next as u32, Leaf::Ret(default));
        }
        let leaf = match entry.rules.as_slice() {
            [only] if only.conds.is_empty() => Leaf::Ret(only.action),
            rules => Leaf::Rules(rules),
        };
        push(entry.nr, leaf);
        next = u64::from(entry.nr) + 1;
    }
    if next <= u64::from(u32::MAX) {
        push(next as u32, Leaf::Ret(default));
    }
    // Tail ranges run up to the next tail range's start (the last to u32::MAX).
    for &(start, action) in tail {
        push(start, Leaf::Ret(action));
    }
    out
}

/// A binary search over range starts with `jge`; the accumulator holds the
/// syscall number and every leaf ends in a return, so subtrees can simply
/// be laid out one after the other.
fn emit_tree(out: &mut Vec<Insn>, section: &Section, ranges: &[(u32, Leaf)]) -> Result<(), Error> {
    match ranges {
        [] => Ok(()),
        [(_, leaf)] => emit_leaf(out, section, *leaf),
        _ => {
            let mid = ranges.len() / 2;
            // Emit the low half after a placeholder, then fill in the branch
            // that skips it now that its length is known.
            let at = out.len();
            out.push(bpf::ret(0));
            emit_tree(out, section, &ranges[..mid])?;
            let mut branch = Vec::with_capacity(2);
            bpf::skip_if_true(&mut branch, OP_JGE, ranges[mid].0, out.len() - at - 1);
            out.splice(at..=at, branch);
            emit_tree(out, section, &ranges[mid..])
        }
    }
}

fn emit_leaf(out: &mut Vec<Insn>, section: &Section, leaf: Leaf) -> Result<(), Error> {
    match leaf {
        Leaf::Ret(action) => out.push(bpf::ret(action)),
        Leaf::Rules(rules) => {
            for rule in rules {
                emit_rule(out, rule, section.wide)?;
            }
            out.push(bpf::ret(section.default_action));
        }
    }
    Ok(())
}

/// Where a conditional jump inside a rule goes.
#[derive(Clone, Copy)]
enum To {
    /// Skip this many instructions (0: fall through).
    Skip(u8),
    /// Leave the rule: go to the next rule, or the default.
    Fail,
}

/// A rule under construction: conditions fall through on success, jump to
/// the end of the rule on failure, and the rule ends in its `ret`.
struct RuleCode {
    insns: Vec<Insn>,
    /// (instruction index, is `jt`) of every jump to patch to the rule's end.
    fails: Vec<(usize, bool)>,
}

impl RuleCode {
    fn push(&mut self, insn: Insn) {
        self.insns.push(insn);
    }

    fn jump(&mut self, code: u16, k: u32, jt: To, jf: To) {
        let at = self.insns.len();
        let mut offset = |to: To, is_jt: bool| match to {
            To::Skip(n) => n,
            To::Fail => {
                self.fails.push((at, is_jt));
                0
            }
        };
        let (t, f) = (offset(jt, true), offset(jf, false));
        self.insns.push(bpf::jump(code, k, t, f));
    }

    fn finish(mut self, action: u32) -> Result<Vec<Insn>, Error> {
        self.insns.push(bpf::ret(action));
        let end = self.insns.len();
        for (at, is_jt) in self.fails {
            let distance = end - at - 1;
            if distance > MAX_SHORT_JUMP {
                // A rule has at most six conditions of a few instructions each.
                return Err(Error::Codegen(format!(
                    "rule jump of {distance} instructions"
                )));
            }
            let insn = &mut self.insns[at];
            if is_jt {
                insn.jt = distance as u8;
            } else {
                insn.jf = distance as u8;
            }
        }
        Ok(self.insns)
    }
}

fn emit_rule(out: &mut Vec<Insn>, rule: &Rule, wide: bool) -> Result<(), Error> {
    let mut code = RuleCode {
        insns: Vec::new(),
        fails: Vec::new(),
    };
    for cond in &rule.conds {
        if wide {
            emit_cond64(&mut code, cond);
        } else {
            emit_cond32(&mut code, cond);
        }
    }
    out.extend(code.finish(rule.action)?);
    Ok(())
}

fn hi(v: u64) -> u32 {
    (v >> 32) as u32
}

fn lo(v: u64) -> u32 {
    v as u32
}

/// A 64-bit unsigned comparison as two 32-bit ones: the high words decide
/// unless they are equal, then the low words do.
fn emit_cond64(c: &mut RuleCode, cond: &Cond) {
    use To::{Fail, Skip};
    let (v, i) = (cond.value, cond.index);
    c.push(bpf::load(bpf::arg_hi(i)));
    match cond.op {
        Op::Eq => {
            c.jump(OP_JEQ, hi(v), Skip(0), Fail);
            c.push(bpf::load(bpf::arg_lo(i)));
            c.jump(OP_JEQ, lo(v), Skip(0), Fail);
        }
        Op::Ne => {
            // Different high words already make it "not equal": skip the
            // low-word test.
            c.jump(OP_JEQ, hi(v), Skip(0), Skip(2));
            c.push(bpf::load(bpf::arg_lo(i)));
            c.jump(OP_JEQ, lo(v), Fail, Skip(0));
        }
        Op::MaskedEq => {
            let (mask, datum) = (v, cond.value_two);
            c.push(bpf::and(hi(mask)));
            c.jump(OP_JEQ, hi(datum), Skip(0), Fail);
            c.push(bpf::load(bpf::arg_lo(i)));
            c.push(bpf::and(lo(mask)));
            c.jump(OP_JEQ, lo(datum), Skip(0), Fail);
        }
        Op::Gt | Op::Ge => {
            // hi > v.hi: true (skip the next three); hi < v.hi: false.
            c.jump(OP_JGT, hi(v), Skip(3), Skip(0));
            c.jump(OP_JEQ, hi(v), Skip(0), Fail);
            c.push(bpf::load(bpf::arg_lo(i)));
            let code = if cond.op == Op::Gt { OP_JGT } else { OP_JGE };
            c.jump(code, lo(v), Skip(0), Fail);
        }
        Op::Lt => {
            // hi < v.hi: true (skip three); hi > v.hi: false.
            c.jump(OP_JGE, hi(v), Skip(0), Skip(3));
            c.jump(OP_JEQ, hi(v), Skip(0), Fail);
            c.push(bpf::load(bpf::arg_lo(i)));
            c.jump(OP_JGE, lo(v), Fail, Skip(0));
        }
        Op::Le => {
            // hi > v.hi: false; hi < v.hi: true (skip two).
            c.jump(OP_JGT, hi(v), Fail, Skip(0));
            c.jump(OP_JEQ, hi(v), Skip(0), Skip(2));
            c.push(bpf::load(bpf::arg_lo(i)));
            c.jump(OP_JGT, lo(v), Fail, Skip(0));
        }
    }
}

/// On a 32-bit architecture only the low word is meaningful, so only it is
/// compared, against the low 32 bits of the spec's value (our choice: the
/// upper half of a 32-bit task's argument carries nothing to compare).
fn emit_cond32(c: &mut RuleCode, cond: &Cond) {
    use To::{Fail, Skip};
    let v = lo(cond.value);
    c.push(bpf::load(bpf::arg_lo(cond.index)));
    match cond.op {
        Op::Eq => c.jump(OP_JEQ, v, Skip(0), Fail),
        Op::Ne => c.jump(OP_JEQ, v, Fail, Skip(0)),
        Op::Gt => c.jump(OP_JGT, v, Skip(0), Fail),
        Op::Ge => c.jump(OP_JGE, v, Skip(0), Fail),
        Op::Lt => c.jump(OP_JGE, v, Fail, Skip(0)),
        Op::Le => c.jump(OP_JGT, v, Fail, Skip(0)),
        Op::MaskedEq => {
            c.push(bpf::and(v));
            c.jump(OP_JEQ, lo(cond.value_two), Skip(0), Fail);
        }
    }
}
