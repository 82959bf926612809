//! From the OCI spec to checked rules: actions encoded as SECCOMP_RET_*
//! values, conditions validated, and per-architecture syscall tables.
//!
//! Precedence: entries are kept in spec order and, for one syscall, the
//! first entry whose conditions all match decides (the order runc documents
//! and the runtime-spec discussion formalised as "only the first entry is
//! effective"). Two libseccomp/runc details are kept for compatibility:
//! - an entry whose action (and errno) equals the default action is dropped,
//!   as libseccomp refuses such rules and runc skips them;
//! - an entry that compares the same argument index more than once is split
//!   into one rule per condition (ORed), as runc does, since libseccomp allows
//!   only one comparison per argument in a rule.
//!
//! Unknown syscall names are skipped, as runc does: profiles list names for
//! every architecture and newer kernels.

use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompOperator, LinuxSyscall,
};

use crate::Error;

// SECCOMP_RET_* from <linux/seccomp.h>.
pub const RET_KILL_PROCESS: u32 = 0x8000_0000;
pub const RET_KILL_THREAD: u32 = 0x0000_0000;
pub const RET_TRAP: u32 = 0x0003_0000;
pub const RET_ERRNO: u32 = 0x0005_0000;
pub const RET_USER_NOTIF: u32 = 0x7fc0_0000;
pub const RET_TRACE: u32 = 0x7ff0_0000;
pub const RET_LOG: u32 = 0x7ffc_0000;
pub const RET_ALLOW: u32 = 0x7fff_0000;
/// SECCOMP_RET_DATA: the 16 bits an action can carry.
const RET_DATA_MAX: u32 = 0xffff;

const EPERM: u32 = libc::EPERM as u32;
/// seccomp_data carries six arguments.
const MAX_ARG_INDEX: usize = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Ne,
    Lt,
    Le,
    Eq,
    Ge,
    Gt,
    /// `(arg & mask) == datum`
    MaskedEq,
}

/// One argument comparison. For `MaskedEq`, `value` is the mask and
/// `value_two` the datum, as libseccomp's SCMP_CMP(arg, SCMP_CMP_MASKED_EQ,
/// mask, datum) and runc's mapping of value/valueTwo.
#[derive(Clone, Copy, Debug)]
pub struct Cond {
    pub index: u8,
    pub op: Op,
    pub value: u64,
    pub value_two: u64,
}

/// All conditions must hold for `action` to be returned.
#[derive(Clone, Debug)]
pub struct Rule {
    pub conds: Vec<Cond>,
    pub action: u32,
}

/// A syscall number and its rules in precedence order.
pub struct Entry {
    pub nr: u32,
    pub rules: Vec<Rule>,
}

/// The spec after validation, independent of syscall numbering.
pub struct Checked<'a> {
    pub default_action: u32,
    /// Per spec entry: names and the rules they get (empty when dropped).
    pub entries: Vec<(&'a [String], Vec<Rule>)>,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

fn action_name(action: LinuxSeccompAction) -> String {
    // serde gives the spec's spelling (SCMP_ACT_...).
    serde_json::to_value(action)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{action:?}"))
}

/// Encodes an action with its errno as a SECCOMP_RET_* value.
/// `errno_field` names the errno field for error messages.
pub fn encode_action(
    action: LinuxSeccompAction,
    errno: Option<u32>,
    errno_field: &str,
) -> Result<u32, Error> {
    let with_data = |base: u32| match errno.unwrap_or(EPERM) {
        e if e <= RET_DATA_MAX => Ok(base | e),
        e => Err(invalid(
            errno_field,
            format!("{e} does not fit in the 16 bits seccomp returns"),
        )),
    };
    let plain = |value: u32| match errno {
        None => Ok(value),
        Some(_) => Err(invalid(
            errno_field,
            format!("{} does not take an errno", action_name(action)),
        )),
    };
    match action {
        LinuxSeccompAction::ScmpActErrno => with_data(RET_ERRNO),
        LinuxSeccompAction::ScmpActTrace => with_data(RET_TRACE),
        // SCMP_ACT_KILL kept its historical meaning: kill the thread.
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            plain(RET_KILL_THREAD)
        }
        LinuxSeccompAction::ScmpActKillProcess => plain(RET_KILL_PROCESS),
        LinuxSeccompAction::ScmpActTrap => plain(RET_TRAP),
        LinuxSeccompAction::ScmpActNotify => plain(RET_USER_NOTIF),
        LinuxSeccompAction::ScmpActLog => plain(RET_LOG),
        LinuxSeccompAction::ScmpActAllow => plain(RET_ALLOW),
    }
}

fn op(op: LinuxSeccompOperator) -> Op {
    match op {
        LinuxSeccompOperator::ScmpCmpNe => Op::Ne,
        LinuxSeccompOperator::ScmpCmpLt => Op::Lt,
        LinuxSeccompOperator::ScmpCmpLe => Op::Le,
        LinuxSeccompOperator::ScmpCmpEq => Op::Eq,
        LinuxSeccompOperator::ScmpCmpGe => Op::Ge,
        LinuxSeccompOperator::ScmpCmpGt => Op::Gt,
        LinuxSeccompOperator::ScmpCmpMaskedEq => Op::MaskedEq,
    }
}

fn cond(arg: &LinuxSeccompArg, field: &str) -> Result<Cond, Error> {
    let index = arg.index();
    if index > MAX_ARG_INDEX {
        return Err(invalid(
            format!("{field}.index"),
            format!("{index} is out of range, syscalls have arguments 0 to 5"),
        ));
    }
    Ok(Cond {
        index: index as u8,
        op: op(arg.op()),
        value: arg.value(),
        value_two: arg.value_two().unwrap_or(0),
    })
}

/// The rules one spec entry stands for (see the module comment on repeated
/// argument indices).
fn entry_rules(call: &LinuxSyscall, action: u32, field: &str) -> Result<Vec<Rule>, Error> {
    let args = call.args().as_deref().unwrap_or(&[]);
    let conds = args
        .iter()
        .enumerate()
        .map(|(j, a)| cond(a, &format!("{field}.args[{j}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let mut seen = [false; MAX_ARG_INDEX + 1];
    let repeated = conds
        .iter()
        .any(|c| std::mem::replace(&mut seen[usize::from(c.index)], true));
    if repeated {
        Ok(conds
            .into_iter()
            .map(|c| Rule {
                conds: vec![c],
                action,
            })
            .collect())
    } else {
        Ok(vec![Rule { conds, action }])
    }
}

/// Validates the spec and turns it into rules.
pub fn check(spec: &LinuxSeccomp) -> Result<Checked<'_>, Error> {
    let default_action = encode_action(
        spec.default_action(),
        spec.default_errno_ret(),
        "linux.seccomp.defaultErrnoRet",
    )?;
    if spec.listener_metadata().is_some() && spec.listener_path().is_none() {
        return Err(invalid(
            "linux.seccomp.listenerMetadata",
            "must not be set without listenerPath",
        ));
    }
    let calls = spec.syscalls().as_deref().unwrap_or(&[]);
    let mut entries = Vec::with_capacity(calls.len());
    for (i, call) in calls.iter().enumerate() {
        let field = format!("linux.seccomp.syscalls[{i}]");
        if call.names().is_empty() {
            return Err(invalid(
                format!("{field}.names"),
                "must contain at least one syscall name",
            ));
        }
        let action = encode_action(
            call.action(),
            call.errno_ret(),
            &format!("{field}.errnoRet"),
        )?;
        let rules = entry_rules(call, action, &field)?;
        let rules = if action == default_action {
            Vec::new()
        } else {
            rules
        };
        entries.push((call.names().as_slice(), rules));
    }
    Ok(Checked {
        default_action,
        entries,
    })
}

/// Numbers the checked entries with `lookup` (several numbers per name are
/// possible, e.g. x86_64 and x32) and groups rules per syscall number, in
/// ascending number order, first-match order kept within each number.
pub fn table(checked: &Checked, lookup: &dyn Fn(&str, &mut Vec<u32>)) -> Vec<Entry> {
    let mut numbered: Vec<(u32, usize)> = Vec::new();
    let mut nrs = Vec::with_capacity(2);
    for (idx, (names, rules)) in checked.entries.iter().enumerate() {
        if rules.is_empty() {
            continue;
        }
        for name in names.iter() {
            nrs.clear();
            lookup(name, &mut nrs);
            numbered.extend(nrs.iter().map(|&nr| (nr, idx)));
        }
    }
    // Stable sort: entries for the same number keep spec order.
    numbered.sort_by_key(|&(nr, _)| nr);
    let mut table: Vec<Entry> = Vec::new();
    for (nr, idx) in numbered {
        let entry = match table.last_mut() {
            Some(e) if e.nr == nr => e,
            _ => {
                table.push(Entry {
                    nr,
                    rules: Vec::new(),
                });
                table.last_mut().expect("just pushed")
            }
        };
        // Rules after an unconditional one can never be reached.
        if entry.rules.last().is_some_and(|r| r.conds.is_empty()) {
            continue;
        }
        for rule in &checked.entries[idx].1 {
            entry.rules.push(rule.clone());
            if rule.conds.is_empty() {
                break;
            }
        }
    }
    table
}
