//! OCI hooks: each runs with the container state JSON on stdin and an optional timeout;
//! the first failing hook aborts the operation (except poststart/poststop, where the
//! spec says to warn and go on — the caller decides).

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::Hook;

use crate::error::{Error, Result};

pub fn run_all(hooks: &[Hook], state_json: &[u8]) -> Result<()> {
    for h in hooks {
        run(h, state_json)?;
    }
    Ok(())
}

pub fn run(hook: &Hook, state_json: &[u8]) -> Result<()> {
    let path = hook.path().clone();
    let err = |msg: String| Error::Hook {
        path: path.clone(),
        msg,
    };
    let mut cmd = Command::new(&path);
    let args = hook.args().clone().unwrap_or_default();
    if let Some((argv0, rest)) = args.split_first() {
        cmd.arg0(argv0).args(rest);
    }
    cmd.env_clear();
    for kv in hook.env().iter().flatten() {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| err(format!("start: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that ignores its stdin may exit before reading it: EPIPE is fine.
        let _ = stdin.write_all(state_json);
    }
    let Some(deadline) = hook
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| Instant::now() + Duration::from_secs(t as u64))
    else {
        let status = child.wait().map_err(|e| err(format!("wait: {e}")))?;
        return if status.success() {
            Ok(())
        } else {
            Err(err(format!("exited with {status}")))
        };
    };
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(err(format!("exited with {status}"))),
            Ok(None) => {}
            Err(e) => return Err(err(format!("wait: {e}"))),
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(err(format!(
                "timed out after {}s",
                hook.timeout().unwrap_or(0)
            )));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
