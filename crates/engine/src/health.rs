//! One health probe (`berth container-health <id>`, started by the monitor on its timer):
//! runs the check with `berth exec`, times it out, and records the result and the
//! starting → healthy / unhealthy transition in the container's record.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use crate::record::{HealthResult, Status};
use crate::{Engine, IoContext, Result};

/// Docker keeps this many results in `State.Health.Log`.
const KEEP: usize = 5;
/// And this much of each probe's output.
const MAX_OUTPUT: usize = 4096;

impl Engine {
    /// Runs the container's health check once and records the outcome.
    pub fn health_probe(&mut self, key: &str) -> Result<()> {
        let c = self.find(key)?;
        let Some(cfg) = c.config.healthcheck.clone().filter(|h| h.enabled()) else {
            return Ok(());
        };
        if c.state.status != Status::Running {
            return Ok(());
        }
        let exe = std::env::current_exe().ctx(|| "find the berth binary".into())?;
        let out_path = self.dir(&c.id).join("health.out");
        let out =
            std::fs::File::create(&out_path).ctx(|| format!("create {}", out_path.display()))?;
        let err = out.try_clone().ctx(|| "dup health output".into())?;
        let start = berth_runtime::state::now_rfc3339();
        let timeout = Duration::from_nanos(cfg.timeout_ns());
        let began = Instant::now();
        let mut child = Command::new(exe)
            .arg("--root")
            .arg(&self.root)
            .arg("exec")
            .arg(&c.id)
            .args(cfg.argv())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .ctx(|| "start the health check".into())?;
        let (exit_code, mut output) = loop {
            match child.try_wait() {
                Ok(Some(st)) => {
                    use std::os::unix::process::ExitStatusExt;
                    let code = st.code().unwrap_or(128 + st.signal().unwrap_or(0));
                    let text = std::fs::read(&out_path).unwrap_or_default();
                    break (code, String::from_utf8_lossy(&text).into_owned());
                }
                Ok(None) if began.elapsed() >= timeout => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break (
                        -1,
                        format!(
                            "Health check exceeded timeout ({})",
                            humantime::format_duration(timeout)
                        ),
                    );
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => break (-1, format!("health check: {e}")),
            }
        };
        let _ = std::fs::remove_file(&out_path);
        if output.len() > MAX_OUTPUT {
            let mut cut = MAX_OUTPUT;
            while !output.is_char_boundary(cut) {
                cut -= 1;
            }
            output.truncate(cut);
        }
        let result = HealthResult {
            start,
            end: berth_runtime::state::now_rfc3339(),
            exit_code,
            output,
        };
        let in_start_period = humantime::parse_rfc3339_weak(&c.state.started_at)
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|ran| ran < Duration::from_nanos(cfg.start_period));
        let retries = cfg.retries_or_default();
        let before = c.state.health.as_ref().map(|h| h.status.clone());
        let after = self.db.update(&c.id, |c| {
            let h = c.state.health.get_or_insert_with(Default::default);
            let ok = result.exit_code == 0;
            h.log.push(result);
            if h.log.len() > KEEP {
                h.log.remove(0);
            }
            if ok {
                h.status = "healthy".into();
                h.failing_streak = 0;
            } else if !(in_start_period && h.status == "starting") {
                h.failing_streak += 1;
                if h.failing_streak >= retries {
                    h.status = "unhealthy".into();
                }
            }
        })?;
        let now = after.state.health.as_ref().map(|h| h.status.clone());
        if now != before {
            if let Some(status) = now {
                self.event(&after, &format!("health_status: {status}"), &[]);
            }
        }
        Ok(())
    }
}
