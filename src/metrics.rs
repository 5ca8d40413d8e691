//! A few Prometheus counters, rendered by hand in the text format.

use std::sync::atomic::{AtomicU64, Ordering};

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
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let rows: [(&str, &str, &AtomicU64); 11] = [
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
        ];
        let mut out = String::new();
        for (name, help, value) in rows {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
                value.load(Ordering::Relaxed)
            ));
        }
        out
    }
}
