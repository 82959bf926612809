//! `--filter` of the prune commands: `until=TIME` (a duration ago, RFC 3339 or Unix
//! seconds) and `label=KEY[=VALUE]` / `label!=KEY[=VALUE]`, as Docker reads them. An
//! object is pruned only when it passes every filter.

use std::collections::BTreeMap;
use std::time::SystemTime;

#[derive(Debug, Default)]
pub(crate) struct PruneFilter {
    until: Option<SystemTime>,
    /// (must match, `KEY` or `KEY=VALUE`).
    labels: Vec<(bool, String)>,
}

impl PruneFilter {
    /// `until` is refused where Docker refuses it (volumes).
    pub(crate) fn parse(list: &[String], allow_until: bool) -> Result<Self, String> {
        let mut f = PruneFilter::default();
        for item in list {
            let (key, value) = crate::format::filter_kv(item)?;
            match key {
                "until" if allow_until => f.until = Some(parse_until(value)?),
                "label" | "label!" => f.labels.push((key == "label", value.to_string())),
                _ => return Err(format!("invalid filter '{key}'")),
            }
        }
        Ok(f)
    }

    /// Whether an object created at `created` with `labels` may be pruned.
    pub(crate) fn allows(&self, created: SystemTime, labels: &BTreeMap<String, String>) -> bool {
        if self.until.is_some_and(|u| created >= u) {
            return false;
        }
        self.labels.iter().all(|(must, want)| {
            crate::format::label_matches(want, |k| labels.get(k).map(String::as_str)) == *must
        })
    }

    pub(crate) fn has_until(&self) -> bool {
        self.until.is_some()
    }

    /// Whether any filter needs the objects' labels (images keep theirs in the config).
    pub(crate) fn needs_labels(&self) -> bool {
        !self.labels.is_empty()
    }
}

/// An `until=` filter's time: a duration ago, RFC 3339 or Unix seconds.
pub(crate) fn parse_until(value: &str) -> Result<SystemTime, String> {
    crate::containers::parse_since(value)
        .map_err(|_| format!("failed to parse value of filter (until={value})"))
}

/// [`parse_until`] as seconds since the epoch (the build cache's and images' clock).
pub(crate) fn until_secs(value: &str) -> Result<i64, String> {
    let t = parse_until(value)?;
    Ok(t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64))
}

/// An RFC 3339 creation time as a `SystemTime` (the epoch when unreadable).
pub(crate) fn rfc3339(t: &str) -> SystemTime {
    humantime::parse_rfc3339_weak(t)
        .or_else(|_| humantime::parse_rfc3339(t))
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Seconds since the epoch as a `SystemTime`.
pub(crate) fn unix(secs: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_and_labels_as_docker() {
        let now = SystemTime::now();
        let old = now - std::time::Duration::from_secs(7200);
        let labels: BTreeMap<String, String> = [("env".into(), "ci".into())].into();
        let f = PruneFilter::parse(&["until=1h".into()], true).unwrap();
        assert!(f.allows(old, &labels) && !f.allows(now, &labels));
        let f = PruneFilter::parse(&["label=env=ci".into(), "label!=keep".into()], true).unwrap();
        assert!(f.allows(now, &labels));
        let keep: BTreeMap<String, String> = [("keep".into(), String::new())].into();
        assert!(!f.allows(now, &keep));
        let f = PruneFilter::parse(&["label=env=prod".into()], true).unwrap();
        assert!(!f.allows(now, &labels));
        assert!(PruneFilter::parse(&["until=1h".into()], false).is_err());
        assert!(PruneFilter::parse(&["colour=red".into()], true).is_err());
        assert!(PruneFilter::parse(&["until=soon".into()], true).is_err());
    }
}
