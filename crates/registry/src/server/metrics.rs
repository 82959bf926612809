//! Request counters in the Prometheus text format, served at `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use hyper::header::CONTENT_TYPE;
use hyper::{Response, StatusCode};

use super::api::{finish, respond};
use super::body::{full, ResBody};

#[derive(Default)]
struct Counts {
    /// (method, status) → requests.
    requests: BTreeMap<(String, u16), u64>,
    seconds_sum: f64,
    total: u64,
}

/// Counters shared by all connections.
#[derive(Default)]
pub struct Metrics {
    counts: Mutex<Counts>,
}

impl Metrics {
    /// Counts one finished request.
    pub fn record(&self, method: &str, status: u16, took: Duration) {
        // A poisoned lock only means another request panicked mid-update; counting on is
        // better than failing requests over metrics.
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        *c.requests.entry((method.to_string(), status)).or_default() += 1;
        c.seconds_sum += took.as_secs_f64();
        c.total += 1;
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        out.push_str(
            "# HELP berth_registry_http_requests_total HTTP requests by method and status.\n",
        );
        out.push_str("# TYPE berth_registry_http_requests_total counter\n");
        for ((m, s), n) in &c.requests {
            let _ = writeln!(
                out,
                "berth_registry_http_requests_total{{method=\"{m}\",code=\"{s}\"}} {n}"
            );
        }
        out.push_str(
            "# HELP berth_registry_http_request_duration_seconds Time spent answering requests.\n",
        );
        out.push_str("# TYPE berth_registry_http_request_duration_seconds summary\n");
        let _ = writeln!(
            out,
            "berth_registry_http_request_duration_seconds_sum {}",
            c.seconds_sum
        );
        let _ = writeln!(
            out,
            "berth_registry_http_request_duration_seconds_count {}",
            c.total
        );
        out
    }

    /// The `/metrics` answer.
    pub fn response(&self) -> Response<ResBody> {
        let b = respond(StatusCode::OK).header(CONTENT_TYPE, "text/plain; version=0.0.4");
        finish(b, full(self.render()))
    }
}
