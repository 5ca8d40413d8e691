//! Prometheus metrics, rendered by hand in the text format: counters, labelled counters,
//! histograms, and the queue gauges read from the store at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::domain::Lane;
use crate::store::LaneStats;

/// Upper bounds (seconds) of every histogram's buckets: from a fast local call to a 5-minute lag.
const BUCKETS: [f64; 15] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// A histogram of durations.
#[derive(Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    /// Sum in microseconds (atomic integers; rendered in seconds).
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.counts[i].fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(
            d.as_micros().min(u64::MAX as u128) as u64,
            Ordering::Relaxed,
        );
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(
            out,
            "{name}_sum{braces} {}",
            self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// Histograms by label value (a Slack method, a provider and operation).
#[derive(Default)]
pub struct LabelledHistograms {
    by: Mutex<BTreeMap<String, std::sync::Arc<Histogram>>>,
}

impl LabelledHistograms {
    /// `labels` is already in Prometheus form, e.g. `method="chat.update"`.
    pub fn observe(&self, labels: &str, d: Duration) {
        let h = {
            let mut by = self.by.lock().unwrap_or_else(|e| e.into_inner());
            by.entry(labels.to_string()).or_default().clone()
        };
        h.observe(d);
    }

    fn render(&self, out: &mut String, name: &str) {
        let by = self.by.lock().unwrap_or_else(|e| e.into_inner());
        for (labels, h) in by.iter() {
            h.render(out, name, labels);
        }
    }
}

/// Counters by label value.
#[derive(Default)]
pub struct LabelledCounters {
    by: Mutex<BTreeMap<String, u64>>,
}

impl LabelledCounters {
    pub fn inc(&self, labels: &str) {
        *self
            .by
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(labels.to_string())
            .or_default() += 1;
    }

    pub fn get(&self, labels: &str) -> u64 {
        self.by
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(labels)
            .copied()
            .unwrap_or(0)
    }

    fn render(&self, out: &mut String, name: &str) {
        for (labels, value) in self.by.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

/// A label value with `\` and `"` escaped, as the text format asks.
pub fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}

#[derive(Default)]
pub struct Metrics {
    pub slack_requests: AtomicU64,
    pub signature_failures: AtomicU64,
    pub requests_created: AtomicU64,
    pub commands_refused: AtomicU64,
    pub clicks_refused: AtomicU64,
    pub grants: AtomicU64,
    pub grant_failures: AtomicU64,
    pub revokes: AtomicU64,
    pub revoke_failures: AtomicU64,
    pub jobs_run: AtomicU64,
    pub jobs_failed: AtomicU64,
    /// Signed payloads from another workspace, refused.
    pub foreign_payloads: AtomicU64,
    /// Policy files put in force by a reload (`SIGHUP`).
    pub policy_reloads: AtomicU64,
    /// Reloads refused because the file failed `check` (the old policy stayed).
    pub policy_reload_failures: AtomicU64,
    /// Requests ended because the policy in force no longer allowed them.
    pub policy_cancellations: AtomicU64,
    /// API calls answered, by client and HTTP status (never by token).
    pub api_calls: LabelledCounters,
    /// API calls refused for a missing or unknown bearer token.
    pub api_unauthorized: AtomicU64,
    /// API calls refused because their client was over its rate.
    pub api_rate_limited: AtomicU64,
    /// Jobs given up for good (a Slack error retrying cannot fix), by job kind and error.
    pub permanent_failures: LabelledCounters,
    /// From a grant's `expires_at` to its revoke confirmed by the provider.
    pub revoke_lag: Histogram,
    /// Provider calls, by provider and operation.
    pub provider_calls: LabelledHistograms,
    /// Slack Web API calls, by method.
    pub slack_calls: LabelledHistograms,
    /// Jobs this process holds, per lane (claimed, running or waiting for their key).
    pub lane_held: [AtomicU64; 4],
    /// Jobs this process is running, per lane.
    pub lane_running: [AtomicU64; 4],
}

fn lane_index(lane: Lane) -> usize {
    Lane::ALL.iter().position(|l| *l == lane).unwrap_or(0)
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn set_lane(&self, lane: Lane, held: usize, running: usize) {
        let i = lane_index(lane);
        self.lane_held[i].store(held as u64, Ordering::Relaxed);
        self.lane_running[i].store(running as u64, Ordering::Relaxed);
    }

    /// The text format; `queue` is the store's view of the lanes (absent when it did not answer
    /// in time), `now` in epoch milliseconds.
    pub fn render(&self, queue: Option<&[LaneStats]>, now: i64) -> String {
        let rows: [(&str, &str, &AtomicU64); 17] = [
            (
                "jitbot_slack_requests_total",
                "Signed requests received from Slack.",
                &self.slack_requests,
            ),
            (
                "jitbot_signature_failures_total",
                "Requests refused for a bad, missing or stale signature.",
                &self.signature_failures,
            ),
            (
                "jitbot_requests_created_total",
                "Access requests stored.",
                &self.requests_created,
            ),
            (
                "jitbot_commands_refused_total",
                "Commands answered with a refusal.",
                &self.commands_refused,
            ),
            (
                "jitbot_clicks_refused_total",
                "Approve/Deny clicks refused.",
                &self.clicks_refused,
            ),
            (
                "jitbot_grants_total",
                "Grants confirmed by a provider.",
                &self.grants,
            ),
            (
                "jitbot_grant_failures_total",
                "Grant attempts that failed.",
                &self.grant_failures,
            ),
            (
                "jitbot_revokes_total",
                "Revokes confirmed by a provider.",
                &self.revokes,
            ),
            (
                "jitbot_revoke_failures_total",
                "Revoke attempts that failed.",
                &self.revoke_failures,
            ),
            (
                "jitbot_jobs_run_total",
                "Background jobs finished.",
                &self.jobs_run,
            ),
            (
                "jitbot_jobs_failed_total",
                "Background job attempts that failed and will be retried.",
                &self.jobs_failed,
            ),
            (
                "jitbot_foreign_payloads_total",
                "Signed payloads refused because they came from another workspace.",
                &self.foreign_payloads,
            ),
            (
                "jitbot_policy_reloads_total",
                "Policy files put in force by a reload.",
                &self.policy_reloads,
            ),
            (
                "jitbot_policy_reload_failures_total",
                "Policy reloads refused because the file failed check; the old policy stayed.",
                &self.policy_reload_failures,
            ),
            (
                "jitbot_policy_cancellations_total",
                "Requests ended because the policy in force no longer allowed them.",
                &self.policy_cancellations,
            ),
            (
                "jitbot_api_unauthorized_total",
                "API calls refused for a missing or unknown bearer token.",
                &self.api_unauthorized,
            ),
            (
                "jitbot_api_rate_limited_total",
                "API calls refused because their client was over its rate.",
                &self.api_rate_limited,
            ),
        ];
        let mut out = String::new();
        for (name, help, value) in rows {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
                value.load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP jitbot_permanent_failures_total Jobs given up for good because retrying cannot help (each also an audit event).\n# TYPE jitbot_permanent_failures_total counter\n");
        self.permanent_failures
            .render(&mut out, "jitbot_permanent_failures_total");
        out.push_str("# HELP jitbot_api_calls_total API calls answered, by client and HTTP status.\n# TYPE jitbot_api_calls_total counter\n");
        self.api_calls.render(&mut out, "jitbot_api_calls_total");
        out.push_str("# HELP jitbot_revoke_lag_seconds From a grant's expires_at to the provider confirming its revoke.\n# TYPE jitbot_revoke_lag_seconds histogram\n");
        self.revoke_lag
            .render(&mut out, "jitbot_revoke_lag_seconds", "");
        out.push_str("# HELP jitbot_provider_call_seconds Provider calls, by provider and operation.\n# TYPE jitbot_provider_call_seconds histogram\n");
        self.provider_calls
            .render(&mut out, "jitbot_provider_call_seconds");
        out.push_str("# HELP jitbot_slack_call_seconds Slack Web API calls, by method.\n# TYPE jitbot_slack_call_seconds histogram\n");
        self.slack_calls
            .render(&mut out, "jitbot_slack_call_seconds");
        out.push_str("# HELP jitbot_lane_held_jobs Jobs this process holds, per lane.\n# TYPE jitbot_lane_held_jobs gauge\n");
        for lane in Lane::ALL {
            let _ = writeln!(
                out,
                "jitbot_lane_held_jobs{{lane=\"{}\"}} {}",
                lane.as_str(),
                self.lane_held[lane_index(lane)].load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP jitbot_lane_running_jobs Jobs this process is running, per lane.\n# TYPE jitbot_lane_running_jobs gauge\n");
        for lane in Lane::ALL {
            let _ = writeln!(
                out,
                "jitbot_lane_running_jobs{{lane=\"{}\"}} {}",
                lane.as_str(),
                self.lane_running[lane_index(lane)].load(Ordering::Relaxed)
            );
        }
        // SAFETY: both read SQLite's global memory counters (thread-safe, no arguments to
        // check); `highwater(0)` reads without resetting.
        let (sqlite_now, sqlite_peak) = unsafe {
            (
                rusqlite::ffi::sqlite3_memory_used(),
                rusqlite::ffi::sqlite3_memory_highwater(0),
            )
        };
        let _ = write!(
            out,
            "# HELP jitbot_sqlite_memory_bytes Memory SQLite holds now (page caches, prepared statements); 0 on PostgreSQL.\n# TYPE jitbot_sqlite_memory_bytes gauge\njitbot_sqlite_memory_bytes {sqlite_now}\n\
             # HELP jitbot_sqlite_memory_peak_bytes The most memory SQLite has held since the start.\n# TYPE jitbot_sqlite_memory_peak_bytes gauge\njitbot_sqlite_memory_peak_bytes {sqlite_peak}\n"
        );
        if let Some(queue) = queue {
            out.push_str("# HELP jitbot_queue_due_jobs Jobs due now and not finished, per lane (all replicas).\n# TYPE jitbot_queue_due_jobs gauge\n");
            for s in queue {
                let _ = writeln!(
                    out,
                    "jitbot_queue_due_jobs{{lane=\"{}\"}} {}",
                    s.lane.as_str(),
                    s.due
                );
            }
            out.push_str("# HELP jitbot_queue_oldest_due_seconds How long the oldest due job of each lane has been due.\n# TYPE jitbot_queue_oldest_due_seconds gauge\n");
            for s in queue {
                let age = s
                    .oldest_due_run_at
                    .map(|at| (now - at).max(0) as f64 / 1000.0)
                    .unwrap_or(0.0);
                let _ = writeln!(
                    out,
                    "jitbot_queue_oldest_due_seconds{{lane=\"{}\"}} {age}",
                    s.lane.as_str()
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_counts_each_sample_once_and_cumulates_buckets() {
        let m = Metrics::default();
        m.revoke_lag.observe(Duration::from_millis(3));
        m.revoke_lag.observe(Duration::from_millis(700));
        m.revoke_lag.observe(Duration::from_secs(1000));
        let text = m.render(None, 0);
        assert!(text.contains("jitbot_revoke_lag_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("jitbot_revoke_lag_seconds_bucket{le=\"1\"} 2"));
        assert!(text.contains("jitbot_revoke_lag_seconds_bucket{le=\"+Inf\"} 3"));
        assert!(text.contains("jitbot_revoke_lag_seconds_count 3"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label(r#"a"b\c"#), r#"a\"b\\c"#);
    }
}
