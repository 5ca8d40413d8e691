//! Runs due jobs from the durable queue: grants, expiries, timeouts and Slack posts. It sleeps
//! until the next job is due (or until woken), so a grant ends within moments of `expires_at`.
//! All state is in the database: after a crash the next start picks up where it stopped.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use rand::Rng;
use serde_json::json;
use tokio::sync::Notify;

use crate::domain::{EndReason, GrantDuration, Job, Policy, ProviderConfig, State};
use crate::metrics::Metrics;
use crate::providers::{GrantSpec, Providers};
use crate::slack::SlackApi;
use crate::slack::blocks::{self, CardView};
use crate::store::{self, GrantChange, JobRow, Store, Transition};

/// Longest sleep between looks at the queue, for jobs another replica queued.
pub const IDLE_RECHECK: Duration = Duration::from_secs(5);
/// Jobs claimed per look.
const BATCH: u64 = 16;
/// First retry delay; doubles per attempt.
pub const BACKOFF_START: Duration = Duration::from_secs(1);
/// Retry delays stop growing here.
pub const BACKOFF_CAP: Duration = Duration::from_secs(300);
/// An ephemeral answer is dropped after this many attempts: it matters only for a moment.
const EPHEMERAL_ATTEMPTS: i32 = 3;
/// A grant still failing after this many attempts becomes `grant_failed`.
pub const GRANT_ATTEMPTS: i32 = 5;

#[derive(Clone)]
pub struct Scheduler {
    pub store: Store,
    pub policy: Arc<Policy>,
    pub slack: SlackApi,
    pub providers: Arc<Providers>,
    pub metrics: Arc<Metrics>,
    pub wake: Arc<Notify>,
    /// Shortened by tests and the demo; production uses [`BACKOFF_START`].
    pub backoff_start: Duration,
}

/// The delay before retry number `attempt` (1-based): exponential, capped, with ±20 % jitter.
pub fn backoff(start: Duration, attempt: i32) -> Duration {
    let exp = start.saturating_mul(1u32 << attempt.clamp(1, 20).saturating_sub(1) as u32);
    let base = exp.min(BACKOFF_CAP);
    let jitter = rand::rng().random_range(0.8..1.2);
    base.mul_f64(jitter).min(BACKOFF_CAP)
}

/// A job's outcome: done, or try again later with this error.
type Outcome = anyhow::Result<()>;

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn time(ms: Option<i64>) -> Option<DateTime<Utc>> {
    ms.and_then(DateTime::from_timestamp_millis)
}

impl Scheduler {
    /// Runs until the task is dropped.
    pub async fn run(self) {
        loop {
            let now = Utc::now();
            match self.tick(now).await {
                Ok(n) if n > 0 => continue,
                Ok(_) => {}
                Err(e) => tracing::error!(error = format!("{e:#}"), "scheduler tick failed"),
            }
            let sleep = match self.store.next_job_at().await {
                Ok(Some(at)) => Duration::from_millis(
                    (at - ms(Utc::now())).clamp(0, IDLE_RECHECK.as_millis() as i64) as u64,
                ),
                Ok(None) => IDLE_RECHECK,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "cannot read the job queue");
                    IDLE_RECHECK
                }
            };
            if sleep.is_zero() {
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = self.wake.notified() => {}
            }
        }
    }

    /// Claims and runs the jobs due at `now`; returns how many ran.
    pub async fn tick(&self, now: DateTime<Utc>) -> anyhow::Result<usize> {
        let jobs = self.store.claim_due(ms(now), BATCH).await?;
        let count = jobs.len();
        for row in jobs {
            self.run_one(row).await?;
        }
        Ok(count)
    }

    async fn run_one(&self, row: JobRow) -> anyhow::Result<()> {
        let job: Job = match serde_json::from_str(&row.payload) {
            Ok(j) => j,
            Err(e) => {
                tracing::error!(job = row.id, error = %e, "unreadable job; dropping it");
                return self.store.job_done(row.id, ms(Utc::now())).await;
            }
        };
        let kind = job.kind();
        let result = self.execute(&job, &row).await;
        let now = Utc::now();
        match result {
            Ok(()) => {
                Metrics::inc(&self.metrics.jobs_run);
                self.store.job_done(row.id, ms(now)).await
            }
            Err(e)
                if matches!(job, Job::Ephemeral { .. }) && row.attempts >= EPHEMERAL_ATTEMPTS =>
            {
                // A refusal nobody saw within a few tries is stale; let it go.
                tracing::warn!(
                    job = row.id,
                    error = format!("{e:#}"),
                    "giving up on an ephemeral answer"
                );
                self.store.job_done(row.id, ms(now)).await
            }
            Err(e) => {
                Metrics::inc(&self.metrics.jobs_failed);
                // Slack's own Retry-After wins over our backoff when it asks for longer.
                let delay = backoff(self.backoff_start, row.attempts)
                    .max(crate::slack::client::retry_after(&e).unwrap_or_default());
                let error = format!("{e:#}");
                tracing::warn!(
                    job = row.id,
                    kind,
                    attempt = row.attempts,
                    retry_in_ms = delay.as_millis() as u64,
                    error,
                    "job failed"
                );
                self.store
                    .job_retry(row.id, ms(now) + delay.as_millis() as i64, &error)
                    .await
            }
        }
    }

    async fn execute(&self, job: &Job, row: &JobRow) -> Outcome {
        match job {
            Job::PostCard { request_id } => self.post_card(*request_id).await,
            Job::UpdateCard { request_id } => self.update_card(*request_id).await,
            Job::Dm { user, text } => self.slack.post_text(user, text, None).await.map(|_| ()),
            Job::ChannelNote { request_id, text } => self.channel_note(*request_id, text).await,
            Job::Ephemeral {
                channel,
                user,
                text,
            } => self.slack.post_ephemeral(channel, user, text).await,
            Job::Grant { request_id } => self.grant(*request_id, row).await,
            Job::EndAccess { request_id } => self.end_access(*request_id).await,
            Job::Timeout { request_id } => self.timeout(*request_id).await,
            Job::Cleanup { request_id } => self.cleanup(*request_id).await,
        }
    }

    async fn card_view(&self, request: &store::Request) -> anyhow::Result<CardView> {
        let decisions = self.store.decisions(request.id).await?;
        let grant = self.store.grant(request.id).await?;
        let state = State::parse(&request.state).context("unknown state in the store")?;
        let approved_by = decisions
            .iter()
            .filter(|d| d.decision == "approve")
            .map(|d| d.approver.clone())
            .collect();
        let decided_by = match state {
            State::Denied => decisions
                .iter()
                .find(|d| d.decision == "deny")
                .map(|d| d.approver.clone())
                .or(request.decided_by.clone()),
            _ => request.decided_by.clone(),
        };
        let note = match state {
            State::RevokeFailed | State::GrantFailed => {
                grant.as_ref().and_then(|g| g.last_error.clone())
            }
            _ => request.decision_note.clone(),
        };
        Ok(CardView {
            id: request.id,
            requester: request.requester.clone(),
            resource: request.resource.clone(),
            description: self
                .policy
                .resources
                .get(&request.resource)
                .map(|r| r.description.clone())
                .unwrap_or_default(),
            duration: GrantDuration::from_secs(request.duration_secs.max(0) as u64)
                .map(|d| d.to_string())
                .unwrap_or_default(),
            reason: request.reason.clone(),
            state,
            approvals_needed: request.approvals_needed,
            approved_by,
            decided_by,
            decided_at: time(request.decided_at),
            expires_at: time(grant.as_ref().and_then(|g| g.expires_at)),
            ended_at: time(grant.as_ref().and_then(|g| g.ended_at)),
            auto_approved: request.auto_approved,
            note,
        })
    }

    async fn request(&self, id: i32) -> anyhow::Result<store::Request> {
        self.store
            .request(id)
            .await?
            .with_context(|| format!("request #{id} is gone"))
    }

    async fn post_card(&self, id: i32) -> Outcome {
        let request = self.request(id).await?;
        if request.card_ts.is_some() {
            return Ok(());
        }
        let (text, blocks) = blocks::card(&self.card_view(&request).await?);
        let ts = self
            .slack
            .post_message(&request.channel, &text, Some(blocks), None)
            .await?;
        self.store.set_card(id, &ts).await?;
        Ok(())
    }

    async fn update_card(&self, id: i32) -> Outcome {
        let request = self.request(id).await?;
        let Some(ts) = &request.card_ts else {
            // Not posted yet: the card job will draw the current state; make sure it exists.
            self.store
                .enqueue(
                    &[Job::PostCard { request_id: id }.at(ms(Utc::now()))],
                    ms(Utc::now()),
                )
                .await?;
            return Ok(());
        };
        let (text, blocks) = blocks::card(&self.card_view(&request).await?);
        self.slack
            .update_message(&request.channel, ts, &text, blocks)
            .await
    }

    async fn channel_note(&self, id: i32, text: &str) -> Outcome {
        let request = self.request(id).await?;
        self.slack
            .post_text(&request.channel, text, request.card_ts.as_deref())
            .await
            .map(|_| ())
    }

    /// What the provider needs, from the grant's stored copy (not today's policy).
    async fn spec(
        &self,
        request: &store::Request,
    ) -> anyhow::Result<(ProviderConfig, GrantSpec, store::Grant)> {
        let grant = self
            .store
            .grant(request.id)
            .await?
            .with_context(|| format!("request #{} has no grant record", request.id))?;
        let config: ProviderConfig =
            serde_json::from_str(&grant.provider).context("stored provider config")?;
        let spec = GrantSpec {
            request_id: request.id,
            resource: request.resource.clone(),
            requester: request.requester.clone(),
            identity: serde_json::from_str(&grant.identity).context("stored identity")?,
            grant: serde_json::from_str(&grant.grant_shape).context("stored grant shape")?,
            approved_by: self
                .store
                .decisions(request.id)
                .await?
                .into_iter()
                .filter(|d| d.decision == "approve")
                .map(|d| d.approver)
                .collect(),
            auto_approved: request.auto_approved,
            expires_at: time(grant.expires_at),
            reason: request.reason.clone(),
        };
        Ok((config, spec, grant))
    }

    async fn grant(&self, id: i32, row: &JobRow) -> Outcome {
        let request = self.request(id).await?;
        if request.state != State::Approved.as_str() {
            return Ok(());
        }
        let (config, mut spec, grant) = self.spec(&request).await?;
        let duration = chrono::TimeDelta::seconds(request.duration_secs);
        let attempt = async {
            let provider = self.providers.get(&config)?;
            if config.uses_email()
                && !spec.identity.contains_key("email")
                && grant.already_held.is_none()
            {
                // No email in `identities`: take the one on the Slack profile, once.
                if let Some(email) = self.slack.user_email(&request.requester).await? {
                    spec.identity.insert("email".into(), email);
                    self.store
                        .set_grant_identity(id, &serde_json::to_value(&spec.identity)?)
                        .await?;
                }
            }
            if grant.already_held.is_none() {
                let held = provider.holds(&spec).await?;
                self.store.set_already_held(id, held).await?;
            }
            let held = self
                .store
                .grant(id)
                .await?
                .and_then(|g| g.already_held)
                .unwrap_or(false);
            spec.expires_at = Some(Utc::now() + duration);
            if !held {
                provider.grant(&spec).await?;
            }
            anyhow::Ok(held)
        }
        .await;
        let now = Utc::now();
        match attempt {
            Ok(held) => {
                Metrics::inc(&self.metrics.grants);
                let expires_at = now + duration;
                let approvers = spec.approved_by.clone();
                let mut t = Transition::new(id, &[State::Approved], State::Active, ms(now));
                t.grant = Some(GrantChange::Activate {
                    granted_at: ms(now),
                    expires_at: ms(expires_at),
                });
                t.jobs = vec![
                    Job::EndAccess { request_id: id }.at(ms(expires_at)),
                    Job::UpdateCard { request_id: id }.at(ms(now)),
                    Job::Dm {
                        user: request.requester.clone(),
                        text: blocks::dm_approved(
                            id,
                            &request.resource,
                            &approvers,
                            request.auto_approved,
                            expires_at,
                        ),
                    }
                    .at(ms(now)),
                ];
                t.audit = vec![store::audit(
                    "jitbot",
                    "granted",
                    json!({"expires_at": expires_at.to_rfc3339(), "already_held": held}),
                )];
                self.store.transition(t).await?;
                self.store.set_grant_error(id, None, None).await?;
                self.wake.notify_one();
                Ok(())
            }
            Err(e) => {
                Metrics::inc(&self.metrics.grant_failures);
                let error = format!("{e:#}");
                self.store.set_grant_error(id, Some(&error), None).await?;
                let deadline =
                    request.decided_at.unwrap_or(request.created_at) + request.duration_secs * 1000;
                if row.attempts < GRANT_ATTEMPTS && ms(now) < deadline {
                    return Err(e);
                }
                let mut t = Transition::new(id, &[State::Approved], State::GrantFailed, ms(now));
                t.jobs = vec![
                    Job::UpdateCard { request_id: id }.at(ms(now)),
                    Job::Dm {
                        user: request.requester.clone(),
                        text: blocks::dm_grant_failed(id, &request.resource, &error),
                    }
                    .at(ms(now)),
                    Job::ChannelNote {
                        request_id: id,
                        text: blocks::note_grant_failed(id, &request.resource, &error),
                    }
                    .at(ms(now)),
                    Job::Cleanup { request_id: id }.at(ms(now)),
                ];
                t.grant = Some(GrantChange::End(EndReason::GrantFailed));
                t.audit = vec![store::audit(
                    "jitbot",
                    "grant_failed",
                    json!({"error": error, "attempts": row.attempts}),
                )];
                self.store.transition(t).await?;
                self.wake.notify_one();
                Ok(())
            }
        }
    }

    /// At `expires_at` (or after `/jit revoke`): take the access away, retrying until it is gone.
    async fn end_access(&self, id: i32) -> Outcome {
        let now = Utc::now();
        let mut request = self.request(id).await?;
        if request.state == State::Active.as_str() {
            let mut t = Transition::new(id, &[State::Active], State::Revoking, ms(now));
            t.grant = Some(GrantChange::End(EndReason::Expired));
            t.audit = vec![store::audit("jitbot", "expiring", json!({}))];
            self.store.transition(t).await?;
            request = self.request(id).await?;
        }
        let state = State::parse(&request.state);
        if !matches!(state, Some(State::Revoking | State::RevokeFailed)) {
            return Ok(());
        }
        let (config, spec, grant) = self.spec(&request).await?;
        let reason = grant
            .end_reason
            .as_deref()
            .and_then(EndReason::parse)
            .unwrap_or(EndReason::Expired);
        let result = self.revoke_at_provider(&config, &spec, &grant).await;
        let now = Utc::now();
        match result {
            Ok(()) => {
                Metrics::inc(&self.metrics.revokes);
                let dm = match reason {
                    EndReason::Revoked => blocks::dm_revoked(
                        id,
                        &request.resource,
                        request
                            .decided_by
                            .as_deref()
                            .filter(|by| *by != request.requester),
                    ),
                    _ => blocks::dm_expired(id, &request.resource),
                };
                let mut t = Transition::new(
                    id,
                    &[State::Revoking, State::RevokeFailed],
                    reason.final_state(),
                    ms(now),
                );
                t.grant = Some(GrantChange::Ended);
                t.jobs = vec![
                    Job::UpdateCard { request_id: id }.at(ms(now)),
                    Job::Dm {
                        user: request.requester.clone(),
                        text: dm,
                    }
                    .at(ms(now)),
                ];
                t.audit = vec![store::audit(
                    "jitbot",
                    reason.as_str(),
                    json!({"already_held": grant.already_held.unwrap_or(false)}),
                )];
                self.store.transition(t).await?;
                self.store.set_grant_error(id, None, None).await?;
                self.wake.notify_one();
                Ok(())
            }
            Err(e) => {
                Metrics::inc(&self.metrics.revoke_failures);
                let error = format!("{e:#}");
                self.store.set_grant_error(id, Some(&error), None).await?;
                let mut t = Transition::new(id, &[State::Revoking], State::RevokeFailed, ms(now));
                t.jobs = vec![
                    Job::UpdateCard { request_id: id }.at(ms(now)),
                    Job::ChannelNote {
                        request_id: id,
                        text: blocks::note_revoke_failed(id, &request.resource, &error),
                    }
                    .at(ms(now)),
                ];
                t.audit = vec![store::audit(
                    "jitbot",
                    "revoke_failed",
                    json!({"error": error}),
                )];
                if self.store.transition(t).await? {
                    self.wake.notify_one();
                }
                Err(e)
            }
        }
    }

    async fn revoke_at_provider(
        &self,
        config: &ProviderConfig,
        spec: &GrantSpec,
        grant: &store::Grant,
    ) -> anyhow::Result<()> {
        match grant.already_held {
            // The person had this access before jitbot: leave it alone.
            Some(true) => return Ok(()),
            // Never checked, so never granted (the check comes before the first grant call):
            // there is nothing of ours to take away, and the person may hold it on their own.
            None => return Ok(()),
            Some(false) => {}
        }
        self.providers.get(config)?.revoke(spec).await
    }

    async fn timeout(&self, id: i32) -> Outcome {
        let request = self.request(id).await?;
        if request.state != State::Pending.as_str() {
            return Ok(());
        }
        let now = Utc::now();
        let mut t = Transition::new(id, &[State::Pending], State::TimedOut, ms(now));
        t.jobs = vec![
            Job::UpdateCard { request_id: id }.at(ms(now)),
            Job::Dm {
                user: request.requester.clone(),
                text: blocks::dm_timed_out(
                    id,
                    &request.resource,
                    &self.policy.settings.request_ttl.to_string(),
                ),
            }
            .at(ms(now)),
        ];
        t.audit = vec![store::audit("jitbot", "timed_out", json!({}))];
        if self.store.transition(t).await? {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// After `grant_failed`: revoke in case part of the grant took. Retried until it succeeds.
    async fn cleanup(&self, id: i32) -> Outcome {
        let request = self.request(id).await?;
        let (config, spec, grant) = self.spec(&request).await?;
        if grant.ended_at.is_some() {
            return Ok(());
        }
        self.revoke_at_provider(&config, &spec, &grant).await?;
        let now = ms(Utc::now());
        self.store
            .set_grant_error(id, grant.last_error.as_deref(), Some(now))
            .await?;
        self.store
            .audit(
                Some(id),
                store::audit(
                    "jitbot",
                    "cleanup_done",
                    json!({"revoke_sent": grant.already_held == Some(false)}),
                ),
                now,
            )
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stops_at_the_cap() {
        let first = backoff(BACKOFF_START, 1);
        assert!(
            first >= Duration::from_millis(800) && first <= Duration::from_millis(1200),
            "{first:?}"
        );
        let fourth = backoff(BACKOFF_START, 4);
        assert!(fourth >= Duration::from_millis(6400), "{fourth:?}");
        assert!(backoff(BACKOFF_START, 40) <= BACKOFF_CAP);
    }
}
