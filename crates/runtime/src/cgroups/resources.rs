//! Writing `linux.resources` into the cgroup files of whichever version carries each
//! controller (on hybrid hosts that differs per controller).

use std::path::Path;

use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxDeviceCgroup, LinuxMemory, LinuxResources};

use super::{cg_err, read, write, Cgroup};
use crate::error::Result;

/// Where a controller lives for this container.
enum Place<'a> {
    V1(&'a Path),
    V2(&'a Path),
}

impl Cgroup {
    fn place(&self, controller: &str) -> Option<Place<'_>> {
        if let Some(d) = self.v1_dir(controller) {
            return Some(Place::V1(d));
        }
        self.dir_for(controller).map(Place::V2)
    }

    fn need(&self, controller: &str) -> Result<Place<'_>> {
        self.place(controller).ok_or_else(|| {
            let any = self.dirs.values().next().cloned().unwrap_or_default();
            cg_err(
                &any,
                format!("the {controller} controller is not available on this host"),
            )
        })
    }

    pub fn apply(&self, res: &LinuxResources) -> Result<()> {
        if let Some(m) = res.memory() {
            self.apply_memory(m)?;
        }
        if let Some(c) = res.cpu() {
            self.apply_cpu(c)?;
        }
        if let Some(p) = res.pids() {
            let value = if p.limit() > 0 {
                p.limit().to_string()
            } else {
                "max".into()
            };
            match self.need("pids")? {
                Place::V1(d) | Place::V2(d) => write(d, "pids.max", &value)?,
            }
        }
        if let Some(b) = res.block_io() {
            self.apply_blkio(b)?;
        }
        for h in res.hugepage_limits().iter().flatten() {
            if let Place::V2(_) = self.need("hugetlb")? {
                self.enable_v2_controller("hugetlb");
            }
            match self.need("hugetlb")? {
                Place::V1(d) => write(
                    d,
                    &format!("hugetlb.{}.limit_in_bytes", h.page_size()),
                    &h.limit().to_string(),
                )?,
                Place::V2(d) => write(
                    d,
                    &format!("hugetlb.{}.max", h.page_size()),
                    &h.limit().to_string(),
                )?,
            }
        }
        if let Some(devs) = res.devices() {
            self.apply_devices(devs)?;
        }
        if let Some(net) = res.network() {
            if let Some(id) = net.class_id() {
                match self.need("net_cls")? {
                    Place::V1(d) | Place::V2(d) => write(d, "net_cls.classid", &id.to_string())?,
                }
            }
            for p in net.priorities().iter().flatten() {
                match self.need("net_prio")? {
                    Place::V1(d) | Place::V2(d) => write(
                        d,
                        "net_prio.ifpriomap",
                        &format!("{} {}", p.name(), p.priority()),
                    )?,
                }
            }
        }
        self.apply_unified(res)
    }

    fn apply_memory(&self, m: &LinuxMemory) -> Result<()> {
        match self.need("memory")? {
            Place::V1(d) => {
                if let Some(r) = m.reservation() {
                    write(d, "memory.soft_limit_in_bytes", &r.to_string())?;
                }
                // memsw must stay >= limit at every moment: order the writes by direction.
                let memsw_exists = d.join("memory.memsw.limit_in_bytes").exists();
                let cur =
                    read(d, "memory.limit_in_bytes").and_then(|s| s.trim().parse::<i64>().ok());
                let raising = matches!((m.limit(), cur), (Some(l), Some(c)) if l == -1 || l > c);
                let set_swap = |d: &Path| -> Result<()> {
                    match m.swap() {
                        Some(s) if memsw_exists => {
                            write(d, "memory.memsw.limit_in_bytes", &s.to_string())
                        }
                        Some(s) if s != -1 && Some(s) != m.limit() => Err(cg_err(
                            d,
                            "memory.swap: swap accounting is disabled on this host".into(),
                        )),
                        _ => Ok(()),
                    }
                };
                if raising {
                    set_swap(d)?;
                }
                if let Some(l) = m.limit() {
                    write(d, "memory.limit_in_bytes", &l.to_string())?;
                }
                if !raising {
                    set_swap(d)?;
                }
                if let Some(s) = m.swappiness() {
                    if s > 100 {
                        return Err(cg_err(d, format!("memory.swappiness {s} is above 100")));
                    }
                    write(d, "memory.swappiness", &s.to_string())?;
                }
                if let Some(true) = m.disable_oom_killer() {
                    write(d, "memory.oom_control", "1")?;
                }
            }
            Place::V2(d) => {
                if let Some(r) = m.reservation() {
                    write(d, "memory.low", &max_or(r))?;
                }
                if let Some(l) = m.limit() {
                    write(d, "memory.max", &max_or(l))?;
                }
                // OCI swap is memory+swap; cgroup2 counts swap alone.
                if let Some(s) = m.swap() {
                    let v = match (s, m.limit()) {
                        (-1, _) => "max".to_string(),
                        (s, Some(l)) if l > 0 => (s - l).max(0).to_string(),
                        (s, _) => s.to_string(),
                    };
                    if d.join("memory.swap.max").exists() {
                        write(d, "memory.swap.max", &v)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn apply_cpu(&self, c: &LinuxCpu) -> Result<()> {
        let wants_cpu = c.shares().is_some()
            || c.quota().is_some()
            || c.period().is_some()
            || c.realtime_runtime().is_some()
            || c.realtime_period().is_some()
            || c.idle().is_some()
            || c.burst().is_some();
        if wants_cpu {
            match self.need("cpu")? {
                Place::V1(d) => {
                    if let Some(s) = c.shares() {
                        write(d, "cpu.shares", &s.to_string())?;
                    }
                    if let Some(p) = c.period() {
                        write(d, "cpu.cfs_period_us", &p.to_string())?;
                    }
                    if let Some(q) = c.quota() {
                        write(d, "cpu.cfs_quota_us", &q.to_string())?;
                    }
                    if let Some(b) = c.burst() {
                        write(d, "cpu.cfs_burst_us", &b.to_string())?;
                    }
                    if let Some(p) = c.realtime_period() {
                        write(d, "cpu.rt_period_us", &p.to_string())?;
                    }
                    if let Some(r) = c.realtime_runtime() {
                        make_rt_room(d, r)?;
                        write(d, "cpu.rt_runtime_us", &r.to_string())?;
                    }
                }
                Place::V2(d) if c.realtime_runtime().is_some() || c.realtime_period().is_some() => {
                    return Err(cg_err(
                        d,
                        "cgroup v2 has no real-time budget (cpu.rt_runtime_us is cgroup v1's)"
                            .into(),
                    ));
                }
                Place::V2(d) => {
                    if let Some(s) = c.shares() {
                        write(d, "cpu.weight", &shares_to_weight(s).to_string())?;
                    }
                    if c.quota().is_some() || c.period().is_some() {
                        let quota = match c.quota() {
                            Some(q) if q > 0 => q.to_string(),
                            _ => "max".into(),
                        };
                        write(
                            d,
                            "cpu.max",
                            &format!("{quota} {}", c.period().unwrap_or(100_000)),
                        )?;
                    }
                    if let Some(b) = c.burst() {
                        write(d, "cpu.max.burst", &b.to_string())?;
                    }
                    if let Some(i) = c.idle() {
                        write(d, "cpu.idle", &i.to_string())?;
                    }
                }
            }
        }
        if c.cpus().is_some() || c.mems().is_some() {
            let (Place::V1(d) | Place::V2(d)) = self.need("cpuset")?;
            if let Some(cpus) = c.cpus() {
                write(d, "cpuset.cpus", cpus)?;
            }
            if let Some(mems) = c.mems() {
                write(d, "cpuset.mems", mems)?;
            }
        }
        Ok(())
    }

    fn apply_blkio(&self, b: &LinuxBlockIo) -> Result<()> {
        match self.need("blkio").or_else(|_| self.need("io"))? {
            Place::V1(d) => {
                if let Some(w) = b.weight() {
                    let file = if d.join("blkio.weight").exists() {
                        "blkio.weight"
                    } else {
                        "blkio.bfq.weight"
                    };
                    write(d, file, &w.to_string())?;
                }
                for wd in b.weight_device().iter().flatten() {
                    if let Some(w) = wd.weight() {
                        let file = if d.join("blkio.weight_device").exists() {
                            "blkio.weight_device"
                        } else {
                            "blkio.bfq.weight_device"
                        };
                        write(d, file, &format!("{}:{} {w}", wd.major(), wd.minor()))?;
                    }
                }
                let throttles = [
                    (
                        "blkio.throttle.read_bps_device",
                        b.throttle_read_bps_device(),
                    ),
                    (
                        "blkio.throttle.write_bps_device",
                        b.throttle_write_bps_device(),
                    ),
                    (
                        "blkio.throttle.read_iops_device",
                        b.throttle_read_iops_device(),
                    ),
                    (
                        "blkio.throttle.write_iops_device",
                        b.throttle_write_iops_device(),
                    ),
                ];
                for (file, list) in throttles {
                    for t in list.iter().flatten() {
                        write(
                            d,
                            file,
                            &format!("{}:{} {}", t.major(), t.minor(), t.rate()),
                        )?;
                    }
                }
            }
            Place::V2(d) => {
                if let Some(w) = b.weight() {
                    if d.join("io.bfq.weight").exists() {
                        write(d, "io.bfq.weight", &w.to_string())?;
                    } else {
                        write(
                            d,
                            "io.weight",
                            &format!("default {}", blkio_to_io_weight(w)),
                        )?;
                    }
                }
                let throttles = [
                    ("rbps", b.throttle_read_bps_device()),
                    ("wbps", b.throttle_write_bps_device()),
                    ("riops", b.throttle_read_iops_device()),
                    ("wiops", b.throttle_write_iops_device()),
                ];
                for (key, list) in throttles {
                    for t in list.iter().flatten() {
                        write(
                            d,
                            "io.max",
                            &format!("{}:{} {key}={}", t.major(), t.minor(), t.rate()),
                        )?;
                    }
                }
            }
        }
        Ok(())
    }

    fn apply_devices(&self, rules: &[LinuxDeviceCgroup]) -> Result<()> {
        match self.place("devices") {
            Some(Place::V1(d)) => {
                // The kernel takes one rule per write(2); each file is opened once for
                // all of them (a dozen opens of cgroupfs files were ~0.2 ms of a start).
                let mut files: [Option<std::fs::File>; 2] = [None, None];
                for r in rules {
                    let name = if r.allow() {
                        "devices.allow"
                    } else {
                        "devices.deny"
                    };
                    let slot = &mut files[usize::from(r.allow())];
                    let file = match slot {
                        Some(f) => f,
                        None => slot.insert(
                            std::fs::OpenOptions::new()
                                .write(true)
                                .open(d.join(name))
                                .map_err(|e| cg_err(d, format!("open {name}: {e}")))?,
                        ),
                    };
                    let rule = device_rule(r);
                    std::io::Write::write_all(file, rule.as_bytes())
                        .map_err(|e| cg_err(d, format!("write {rule:?} to {name}: {e}")))?;
                }
                Ok(())
            }
            // cgroup2 has no devices files: access control is an eBPF program.
            _ => match self.v2_dir() {
                Some(d) if super::Layout::get().is_pure_v2() => super::v2devices::attach(d, rules),
                _ => Ok(()),
            },
        }
    }

    /// `linux.resources.unified`: raw cgroup2 files; on hybrid hosts only for the
    /// controllers the cgroup2 mount carries.
    fn apply_unified(&self, res: &LinuxResources) -> Result<()> {
        let Some(map) = res.unified() else {
            return Ok(());
        };
        for (file, value) in map {
            let controller = file.split('.').next().unwrap_or_default();
            let dir = match self.v2_dir() {
                Some(d) if controller == "cgroup" || self.v1_dir(controller).is_none() => d,
                _ => {
                    let any = self.dirs.values().next().cloned().unwrap_or_default();
                    return Err(cg_err(
                        &any,
                        format!("linux.resources.unified[{file}]: not a cgroup2 file on this host"),
                    ));
                }
            };
            if file.contains('/') {
                return Err(cg_err(
                    dir,
                    format!("linux.resources.unified[{file}]: invalid file name"),
                ));
            }
            write(dir, file, value)?;
        }
        Ok(())
    }
}

pub(crate) fn device_rule(r: &LinuxDeviceCgroup) -> String {
    let typ = match r.typ() {
        Some(t) => match t.as_str() {
            "c" | "u" => "c",
            "b" => "b",
            _ => "a",
        },
        None => "a",
    };
    let num = |n: Option<i64>| {
        n.filter(|v| *v >= 0)
            .map_or("*".to_string(), |v| v.to_string())
    };
    let access = r.access().clone().unwrap_or_else(|| "rwm".into());
    format!("{typ} {}:{} {access}", num(r.major()), num(r.minor()))
}

fn max_or(v: i64) -> String {
    if v < 0 {
        "max".into()
    } else {
        v.to_string()
    }
}

/// The conversion runc and crun use, so `--cpu-shares` means the same everywhere.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 100;
    }
    1 + ((shares.clamp(2, 262_144) - 2) * 9999) / 262_142
}

fn blkio_to_io_weight(w: u16) -> u64 {
    1 + (u64::from(w.clamp(10, 1000)) - 10) * 9999 / 990
}

/// Raises the real-time budget of cgroup v1 `dir`'s ancestors as far as `dir` needs to
/// hold `need` µs beside its siblings. A new cgroup gets no real-time time at all, and
/// the kernel refuses a child more than its parent holds beside its siblings, so without
/// this `--cpu-rt-runtime` could never be granted under berth's parent cgroup (dockerd
/// configures its parent the same way). The hierarchy's root keeps the kernel's budget:
/// what it cannot give is the kernel's "invalid argument" for the container.
fn make_rt_room(dir: &Path, need: i64) -> Result<()> {
    let rt = |d: &Path| read(d, "cpu.rt_runtime_us").and_then(|v| v.trim().parse::<i64>().ok());
    let Some(parent) = dir.parent() else {
        return Ok(());
    };
    let Some(have) = rt(parent) else {
        return Ok(());
    };
    let parent_need = need.saturating_add(children_rt(parent, dir));
    let parent_is_root = parent.parent().is_none_or(|g| rt(g).is_none());
    if have >= parent_need || parent_is_root {
        return Ok(());
    }
    make_rt_room(parent, parent_need)?;
    write(parent, "cpu.rt_runtime_us", &parent_need.to_string())
}

/// The real-time budget the child cgroups of `dir` other than `except` hold.
fn children_rt(dir: &Path, except: &Path) -> i64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()) && e.path() != except)
        .filter_map(|e| read(&e.path(), "cpu.rt_runtime_us"))
        .filter_map(|v| v.trim().parse::<i64>().ok())
        .filter(|v| *v > 0)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_map_to_cgroup2_weights_like_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(0), 100);
    }

    #[test]
    fn device_rules_in_v1_syntax() {
        let rule: LinuxDeviceCgroup =
            serde_json::from_str(r#"{"allow": true, "type": "c", "major": 1, "access": "rw"}"#)
                .unwrap();
        assert_eq!(device_rule(&rule), "c 1:* rw");
        let all: LinuxDeviceCgroup = serde_json::from_str(r#"{"allow": false}"#).unwrap();
        assert_eq!(device_rule(&all), "a *:* rwm");
    }
}
