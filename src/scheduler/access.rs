//! Giving and taking access: grant, end access (expiry, early revoke, cancel while granting), and
//! clean-up after a failed grant. Every provider call runs under the provider's timeout and is
//! timed in `/metrics`.

use std::future::Future;
use std::time::Instant;

use anyhow::Context;
use chrono::Utc;
use serde_json::json;

use super::{GRANT_ATTEMPTS, JobError, JobResult, Scheduler, ms};
use crate::domain::policy::ProviderLimits;
use crate::domain::policy::is_slack_user;
use crate::domain::{EndReason, GrantDuration, Job, Lane, ProviderConfig, State};
use crate::metrics::{Metrics, label};
use crate::providers::GrantSpec;
use crate::providers::Provider;
use crate::slack::blocks;
use crate::store::{self, GrantChange, JobRow, Join, Leave, Transition};

/// How a grant attempt went, short of an error.
enum Granting {
    /// The access is there (`true`: the person held it before jitbot).
    Done(bool),
    /// Another grant of the same access is being established or released (request `.0`).
    WaitFor(i32),
}

/// The key under which grants of the same access are counted: the provider's own description of
/// the access, with the provider's stored configuration (which names the target), digested.
fn access_key(
    config: &ProviderConfig,
    provider: &dyn Provider,
    spec: &GrantSpec,
) -> anyhow::Result<Option<String>> {
    use sha2::{Digest, Sha256};
    let Some(access) = provider.access_key(spec) else {
        return Ok(None);
    };
    let mut digest = Sha256::new();
    digest.update(serde_json::to_string(config)?.as_bytes());
    digest.update(b"\n");
    digest.update(access.as_bytes());
    Ok(Some(hex::encode(digest.finalize())))
}

/// While a request's grant job is still running, its revoke waits this long and looks again:
/// a revoke sent before the grant lands would leave the access in place.
const GRANT_IN_FLIGHT_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

impl Scheduler {
    /// One provider call: at most `concurrency` in flight per provider (revokes and grants
    /// counted apart, so revokes never wait for grants), under the provider's timeout, timed per
    /// provider and operation.
    async fn provider_call<T>(
        &self,
        name: &str,
        op: &'static str,
        limits: ProviderLimits,
        call: impl Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        let lane = if op == "revoke" {
            Lane::Access
        } else {
            Lane::Grants
        };
        let permits = self
            .provider_calls
            .semaphore(lane, name, limits.concurrency as usize);
        let _permit = permits
            .acquire()
            .await
            .map_err(|_| anyhow::anyhow!("provider {name} is shutting down"))?;
        let started = Instant::now();
        let result = tokio::time::timeout(limits.timeout.std(), call).await;
        self.metrics.provider_calls.observe(
            &format!("provider=\"{}\",op=\"{op}\"", label(name)),
            started.elapsed(),
        );
        match result {
            Ok(result) => result,
            Err(_) => anyhow::bail!(
                "{op} at provider {name}: no answer within {}",
                limits.timeout
            ),
        }
    }

    /// A request with its grant record, which every access job needs.
    async fn request_and_grant(&self, id: i32) -> anyhow::Result<(store::Request, store::Grant)> {
        let (request, grant) = self
            .store
            .request_with_grant(id)
            .await?
            .with_context(|| format!("request #{id} is gone"))?;
        let grant = grant.with_context(|| format!("request #{id} has no grant record"))?;
        Ok((request, grant))
    }

    /// What the provider needs, from the grant's stored copy (not today's policy).
    async fn spec(
        &self,
        request: &store::Request,
        grant: store::Grant,
    ) -> anyhow::Result<(ProviderConfig, GrantSpec, store::Grant)> {
        let config: ProviderConfig =
            serde_json::from_str(&grant.provider).context("stored provider config")?;
        // Those whose approvals counted when it was approved (recorded then), not everyone who
        // clicked: an approval of someone no longer an approver did not count.
        let approved_by = if request.auto_approved {
            Vec::new()
        } else if let Some(by) = grant.approved_by.as_deref().filter(|b| !b.is_empty()) {
            by.split(',').map(str::to_string).collect()
        } else {
            self.store
                .decisions(request.id)
                .await?
                .into_iter()
                .filter(|d| d.decision == "approve")
                .map(|d| d.approver)
                .collect()
        };
        let spec = GrantSpec {
            request_id: request.id,
            resource: request.resource.clone(),
            requester: request.requester.clone(),
            identity: serde_json::from_str(&grant.identity).context("stored identity")?,
            grant: serde_json::from_str(&grant.grant_shape).context("stored grant shape")?,
            approved_by,
            auto_approved: request.auto_approved,
            expires_at: super::time(grant.expires_at),
            reason: request.reason.clone(),
        };
        Ok((config, spec, grant))
    }

    pub(super) async fn grant(&self, id: i32, row: &JobRow) -> JobResult {
        let (request, grant) = self.request_and_grant(id).await?;
        if request.state != State::Approved.as_str() {
            return Ok(());
        }
        let (config, mut spec, grant) = self.spec(&request, grant).await?;
        let name = grant.provider_name.clone();
        let policy = self.policy.now();
        let limits = policy.provider_limits(&name);
        let duration = chrono::TimeDelta::seconds(request.duration_secs);
        // Access starts within `grant_deadline` of the approval (and before the end it would have
        // had), or not at all: never hours later than the people who approved it expected.
        let approved_at = request.decided_at.unwrap_or(request.created_at);
        let deadline_ms = (policy.settings.grant_deadline.secs() as i64)
            .saturating_mul(1000)
            .min(request.duration_secs.saturating_mul(1000));
        let deadline = approved_at.saturating_add(deadline_ms);
        let deadline_text = GrantDuration::from_secs((deadline_ms / 1000).max(1) as u64)
            .map(|d| d.to_string())
            .unwrap_or_default();
        // The policy in force now decides this step too.
        let stop = if let Some(why) = crate::service::policy_change::refusal(&policy, &request) {
            Some(format!("policy changed: {why}"))
        } else if ms(Utc::now()) >= deadline {
            Some(format!(
                "not granted within {deadline_text} of the approval: the grant deadline has passed"
            ))
        } else {
            None
        };
        let attempt = async {
            if let Some(why) = &stop {
                anyhow::bail!("{why}");
            }
            let provider = self.providers.get(&config, limits.timeout.std())?;
            if config.uses_email()
                && is_slack_user(&request.requester)
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
            let held = match grant.already_held {
                Some(held) => held,
                None => match access_key(&config, provider.as_ref(), &spec)? {
                    // Counted with other grants of the same access (one role named by two
                    // resources): only the first asks whether the person had it before.
                    Some(key) => match self.store.join_access(id, &key).await? {
                        Join::Joined(_) => false,
                        Join::Wait(other) => return Ok(Granting::WaitFor(other)),
                        Join::First => {
                            let held = self
                                .provider_call(&name, "holds", limits, provider.holds(&spec))
                                .await?;
                            self.store.settle_access(id, held).await?
                        }
                    },
                    None => {
                        let held = self
                            .provider_call(&name, "holds", limits, provider.holds(&spec))
                            .await?;
                        self.store.set_already_held(id, held).await?
                    }
                },
            };
            spec.expires_at = Some(Utc::now() + duration);
            if !held {
                self.provider_call(&name, "grant", limits, provider.grant(&spec))
                    .await?;
                // The first holder of a counted access lets the grants waiting on it join.
                if access_key(&config, provider.as_ref(), &spec)?.is_some() {
                    self.store.granted(id).await?;
                }
            }
            anyhow::Ok(Granting::Done(held))
        }
        .await;
        let attempt = match attempt {
            Ok(Granting::WaitFor(other)) => {
                tracing::debug!(
                    request = id,
                    other,
                    "waiting for the other grant of the same access to settle"
                );
                return Err(JobError::Defer(GRANT_IN_FLIGHT_WAIT));
            }
            Ok(Granting::Done(held)) => Ok(held),
            Err(e) => Err(e),
        };
        let now = Utc::now();
        // Confirmed after the deadline: it is taken back (the clean-up revokes it), not used.
        let attempt = match attempt {
            Ok(_) if ms(now) > deadline => Err(anyhow::anyhow!(
                "the provider confirmed only after the grant deadline ({deadline_text} from the approval); the access is being taken back"
            )),
            other => other,
        };
        let past_deadline = stop.is_some() || ms(now) >= deadline;
        match attempt {
            Ok(held) => {
                Metrics::inc(&self.metrics.grants);
                let expires_at = now + duration;
                let mut t = Transition::new(id, &[State::Approved], State::Active, ms(now));
                t.grant = Some(GrantChange::Activate {
                    granted_at: ms(now),
                    expires_at: ms(expires_at),
                });
                t.jobs = vec![
                    Job::EndAccess {
                        request_id: id,
                        provider: name.clone(),
                    }
                    .at(ms(expires_at)),
                    Job::UpdateCard {
                        request_id: id,
                        channel: request.channel.clone(),
                    }
                    .at(ms(now)),
                    Job::Dm {
                        user: request.requester.clone(),
                        text: blocks::dm_approved(
                            id,
                            &request.resource,
                            &spec.approved_by,
                            request.auto_approved,
                            expires_at,
                        ),
                        done: Some(id),
                    }
                    .at(ms(now)),
                ];
                // Long enough to be reminded of its end: the requester is, with Extend.
                let remind_at = ms(expires_at) - self.ending_soon.as_millis() as i64;
                if remind_at > ms(now) + self.ending_soon.as_millis() as i64 / 2
                    && is_slack_user(&request.requester)
                {
                    t.jobs.push(
                        Job::EndingSoon {
                            request_id: id,
                            user: request.requester.clone(),
                        }
                        .at(remind_at),
                    );
                }
                t.audit = vec![store::audit(
                    "jitbot",
                    "granted",
                    json!({"expires_at": expires_at.to_rfc3339(), "already_held": held}),
                )];
                // Refused when the request was cancelled or revoked while the grant was under
                // way: its end-access job waits for this one to finish, then takes it back.
                self.commit(t).await?;
                Ok(())
            }
            Err(e) => {
                Metrics::inc(&self.metrics.grant_failures);
                let error = format!("{e:#}");
                self.store.set_grant_error(id, Some(&error), None).await?;
                if row.attempts < GRANT_ATTEMPTS && !past_deadline {
                    return Err(JobError::Retry(e));
                }
                // Say why it stops here when attempts were left: the deadline passed.
                let error = if stop.is_none() && past_deadline && row.attempts < GRANT_ATTEMPTS {
                    format!(
                        "{error}; the grant deadline ({deadline_text} from the approval) has passed"
                    )
                } else {
                    error
                };
                let mut t = Transition::new(id, &[State::Approved], State::GrantFailed, ms(now));
                t.jobs = vec![
                    Job::UpdateCard {
                        request_id: id,
                        channel: request.channel.clone(),
                    }
                    .at(ms(now)),
                    Job::Dm {
                        user: request.requester.clone(),
                        text: blocks::dm_grant_failed(id, &request.resource, &error),
                        done: None,
                    }
                    .at(ms(now)),
                    Job::ChannelNote {
                        request_id: id,
                        channel: request.channel.clone(),
                        text: blocks::note_grant_failed(id, &request.resource, &error),
                    }
                    .at(ms(now)),
                    Job::Cleanup {
                        request_id: id,
                        provider: name,
                    }
                    .at(ms(now)),
                ];
                t.grant = Some(GrantChange::End(EndReason::GrantFailed));
                t.audit = vec![store::audit(
                    "jitbot",
                    "grant_failed",
                    json!({"error": error, "attempts": row.attempts}),
                )];
                self.commit(t).await?;
                Ok(())
            }
        }
    }

    /// At `expires_at`, after `/jit revoke`, or after a cancel while the grant was under way:
    /// take the access away, retrying until the provider confirms it is gone.
    pub(super) async fn end_access(&self, id: i32) -> JobResult {
        let (request, grant) = self.request_and_grant(id).await?;
        let state = State::parse(&request.state);
        if !matches!(
            state,
            Some(State::Active | State::Revoking | State::RevokeFailed)
        ) {
            return Ok(());
        }
        // An expiry queued for an end that an extension (`/jit extend`) has since moved waits
        // for the new end.
        if state == Some(State::Active)
            && grant.end_reason.is_none()
            && let Some(end) = grant.expires_at
        {
            let early = end - ms(Utc::now());
            if early > 0 {
                return Err(JobError::Defer(std::time::Duration::from_millis(
                    early as u64,
                )));
            }
        }
        let (config, spec, grant) = self.spec(&request, grant).await?;
        // A grant that never became active may still be under way (cancelled or revoked while
        // granting): a revoke sent before it lands would leave the access in place.
        if grant.granted_at.is_none() && self.store.job_unfinished(&Job::grant_key(id)).await? {
            return Err(JobError::Defer(GRANT_IN_FLIGHT_WAIT));
        }
        // An active grant whose end nobody asked for early is expiring.
        let reason = grant
            .end_reason
            .as_deref()
            .and_then(EndReason::parse)
            .unwrap_or(EndReason::Expired);
        let result = self.revoke_at_provider(&config, &spec, &grant).await;
        let now = Utc::now();
        match result {
            Ok(at_target) => {
                Metrics::inc(&self.metrics.revokes);
                if reason == EndReason::Expired
                    && let Some(expires_at) = grant.expires_at
                {
                    let lag = (ms(now) - expires_at).max(0) as u64;
                    self.metrics
                        .revoke_lag
                        .observe(std::time::Duration::from_millis(lag));
                }
                let dm = match reason {
                    EndReason::Revoked => blocks::dm_revoked(
                        id,
                        &request.resource,
                        request
                            .decided_by
                            .as_deref()
                            .filter(|by| *by != request.requester),
                        at_target,
                    ),
                    EndReason::Cancelled => {
                        blocks::dm_cancelled_after_approval(id, &request.resource)
                    }
                    _ => blocks::dm_expired(id, &request.resource, at_target),
                };
                let mut t = Transition::new(
                    id,
                    &[State::Active, State::Revoking, State::RevokeFailed],
                    reason.final_state(),
                    ms(now),
                );
                t.grant = Some(GrantChange::Ended(reason));
                t.jobs = vec![
                    Job::UpdateCard {
                        request_id: id,
                        channel: request.channel.clone(),
                    }
                    .at(ms(now)),
                    Job::Dm {
                        user: request.requester.clone(),
                        text: dm,
                        done: None,
                    }
                    .at(ms(now)),
                ];
                let mut detail = json!({"already_held": grant.already_held.unwrap_or(false),
                                         "granted": grant.granted_at.is_some()});
                if let blocks::AtTarget::StillHeldBy(other) = at_target {
                    detail["still_held_by"] = json!(other);
                }
                if let Some(expires_at) = grant.expires_at {
                    detail["expires_at"] =
                        json!(super::time(Some(expires_at)).map(|t| t.to_rfc3339()));
                    detail["late_ms"] = json!((ms(now) - expires_at).max(0));
                }
                t.audit = vec![store::audit("jitbot", reason.as_str(), detail)];
                self.commit(t).await?;
                Ok(())
            }
            Err(e) => {
                Metrics::inc(&self.metrics.revoke_failures);
                let error = format!("{e:#}");
                self.store.set_grant_error(id, Some(&error), None).await?;
                let mut t = Transition::new(
                    id,
                    &[State::Active, State::Revoking],
                    State::RevokeFailed,
                    ms(now),
                );
                t.grant = Some(GrantChange::End(reason));
                t.jobs = vec![
                    Job::UpdateCard {
                        request_id: id,
                        channel: request.channel.clone(),
                    }
                    .at(ms(now)),
                    Job::ChannelNote {
                        request_id: id,
                        channel: request.channel.clone(),
                        text: blocks::note_revoke_failed(id, &request.resource, &error),
                    }
                    .at(ms(now)),
                ];
                t.audit = vec![store::audit(
                    "jitbot",
                    "revoke_failed",
                    json!({"error": error}),
                )];
                self.commit(t).await?;
                Err(JobError::Retry(e))
            }
        }
    }

    /// Takes the grant's access away at the target, unless another grant of the same access
    /// still runs (then it is handed over) or the person held it before jitbot.
    async fn revoke_at_provider(
        &self,
        config: &ProviderConfig,
        spec: &GrantSpec,
        grant: &store::Grant,
    ) -> anyhow::Result<blocks::AtTarget> {
        let last = match self.store.leave_access(grant.request_id).await? {
            Leave::Holds(Some(other)) => return Ok(blocks::AtTarget::StillHeldBy(other)),
            // Released already (this is a retry after a confirmed revoke), or never given.
            Leave::Holds(None) => return Ok(blocks::AtTarget::of(grant.already_held, None)),
            Leave::Last => true,
            Leave::Uncounted => false,
        };
        match grant.already_held {
            // The person had this access before jitbot: leave it alone.
            Some(true) => return Ok(blocks::AtTarget::HeldBefore),
            // Never checked, so never granted (the check comes before the first grant call):
            // there is nothing of ours to take away, and the person may hold it on their own.
            None => return Ok(blocks::AtTarget::HeldBefore),
            Some(false) => {}
        }
        let limits = self.policy.now().provider_limits(&grant.provider_name);
        let provider = self.providers.get(config, limits.timeout.std())?;
        self.provider_call(
            &grant.provider_name,
            "revoke",
            limits,
            provider.revoke(spec),
        )
        .await?;
        if last {
            self.store.released(grant.request_id).await?;
        }
        Ok(blocks::AtTarget::Confirmed)
    }

    /// After `grant_failed`: revoke in case part of the grant took. Retried until it succeeds.
    pub(super) async fn cleanup(&self, id: i32) -> JobResult {
        let (request, grant) = self.request_and_grant(id).await?;
        let (config, spec, grant) = self.spec(&request, grant).await?;
        if grant.ended_at.is_some() {
            return Ok(());
        }
        if self.store.job_unfinished(&Job::grant_key(id)).await? {
            return Err(JobError::Defer(GRANT_IN_FLIGHT_WAIT));
        }
        let at_target = self.revoke_at_provider(&config, &spec, &grant).await?;
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
                    json!({"revoke_sent": at_target == blocks::AtTarget::Confirmed,
                    "still_held_by": match at_target {
                        blocks::AtTarget::StillHeldBy(other) => Some(other),
                        _ => None,
                    }}),
                ),
                now,
            )
            .await?;
        Ok(())
    }
}
