//! Reading the `linux.seccomp` JSON with errors that name the offending
//! field. serde's own messages say "unknown variant" without a path; this
//! checks the enumerated strings first so a typo in a 300-entry profile is
//! easy to find.

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::Error;

const ROOT: &str = "linux.seccomp";

fn invalid(field: String, reason: String) -> Error {
    Error::Invalid { field, reason }
}

/// Checks that `v[key]`, if present, is a string that parses as `T`.
fn check_enum<T: DeserializeOwned>(
    v: &Value,
    key: &str,
    field: &str,
    what: &str,
) -> Result<(), Error> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(()),
        Some(s @ Value::String(name)) => match serde_json::from_value::<T>(s.clone()) {
            Ok(_) => Ok(()),
            Err(_) => Err(invalid(
                format!("{field}.{key}"),
                format!("unknown {what} {name:?}"),
            )),
        },
        Some(other) => Err(invalid(
            format!("{field}.{key}"),
            format!("expected a string, found {other}"),
        )),
    }
}

/// Checks every element of the array `v[key]` as a `T`.
fn check_enum_list<T: DeserializeOwned>(v: &Value, key: &str, what: &str) -> Result<(), Error> {
    let Some(Value::Array(items)) = v.get(key) else {
        return Ok(());
    };
    for (i, item) in items.iter().enumerate() {
        if serde_json::from_value::<T>(item.clone()).is_err() {
            return Err(invalid(
                format!("{ROOT}.{key}[{i}]"),
                format!("unknown {what} {item}"),
            ));
        }
    }
    Ok(())
}

fn check_syscalls(v: &Value) -> Result<(), Error> {
    let Some(Value::Array(calls)) = v.get("syscalls") else {
        return Ok(());
    };
    for (i, call) in calls.iter().enumerate() {
        let field = format!("{ROOT}.syscalls[{i}]");
        check_enum::<LinuxSeccompAction>(call, "action", &field, "action")?;
        let Some(Value::Array(args)) = call.get("args") else {
            continue;
        };
        for (j, arg) in args.iter().enumerate() {
            check_enum::<LinuxSeccompOperator>(
                arg,
                "op",
                &format!("{field}.args[{j}]"),
                "operator",
            )?;
        }
    }
    Ok(())
}

pub fn parse(json: &[u8]) -> Result<LinuxSeccomp, Error> {
    let v: Value = serde_json::from_slice(json).map_err(|e| invalid(ROOT.into(), e.to_string()))?;
    check_enum::<LinuxSeccompAction>(&v, "defaultAction", ROOT, "action")?;
    check_enum_list::<Arch>(&v, "architectures", "architecture")?;
    check_enum_list::<LinuxSeccompFilterFlag>(&v, "flags", "flag")?;
    check_syscalls(&v)?;
    let spec: LinuxSeccomp =
        serde_json::from_value(v).map_err(|e| invalid(ROOT.into(), e.to_string()))?;
    // Compiling checks the rest (errno values, argument indices, ...).
    crate::rules::check(&spec)?;
    Ok(spec)
}
