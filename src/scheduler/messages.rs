//! What people read in Slack: approval cards, card updates, DMs, channel notes, ephemeral
//! answers. A Slack error that retrying cannot fix ends the job: it is logged once, counted,
//! written to the audit trail, and when the card itself could not be posted the requester (and
//! the channel, where that still works) is told.

use anyhow::Context;
use chrono::Utc;
use serde_json::json;

use super::{JobError, JobResult, Scheduler, ms, time};
use crate::domain::policy::is_slack_user;
use crate::domain::{GrantDuration, Job, State};
use crate::metrics::label;
use crate::slack::SlackError;
use crate::slack::blocks::{self, AtTarget, CardView, Part};
use crate::store::{self, JobRow};

impl Scheduler {
    pub(super) async fn message(&self, job: &Job, row: &JobRow) -> JobResult {
        let sent = match job {
            Job::PostCard { request_id, .. } => self.post_card(*request_id).await,
            Job::UpdateCard { request_id, .. } => self.update_card(*request_id).await,
            Job::EndingSoon { request_id, user } => self.ending_soon(*request_id, user).await,
            Job::Digest {
                period_end,
                channel,
            } => self.post_digest(*period_end, channel).await,
            Job::Page {
                request_id,
                user,
                text,
                ..
            } => self.page(*request_id, user, text).await,
            // An API client has no Slack account: it follows its request through the API.
            Job::Dm { user, .. } if !is_slack_user(user) => Ok(()),
            Job::Dm {
                user,
                text,
                done: None,
            } => self.slack.post_text(user, text, None).await.map(|_| ()),
            Job::Dm {
                user,
                text,
                done: Some(id),
            } => self
                .slack
                .post_message(
                    user,
                    &blocks::plain_fallback(text),
                    Some(blocks::with_done_button(text, *id)),
                    None,
                )
                .await
                .map(|_| ()),
            Job::ChannelNote {
                request_id, text, ..
            } => self.channel_note(*request_id, text).await,
            Job::Ephemeral {
                channel,
                user,
                text,
            } => self.slack.post_ephemeral(channel, user, text).await,
            Job::Respond { url, text } => self.slack.respond(url, text).await,
            _ => Ok(()),
        };
        let Err(error) = sent else { return Ok(()) };
        match SlackError::find(&error) {
            Some(slack) if slack.is_permanent() => {
                self.report_permanent(job, row, slack).await?;
                Err(JobError::Permanent(error))
            }
            // Our own hold after a 429: wait it out without counting an attempt.
            Some(SlackError::HeldBack { wait, .. }) => Err(JobError::Defer(*wait)),
            _ => Err(JobError::Retry(error)),
        }
    }

    /// A message Slack will never take: say so once, everywhere it helps.
    async fn report_permanent(
        &self,
        job: &Job,
        row: &JobRow,
        error: &SlackError,
    ) -> anyhow::Result<()> {
        let code = error.code();
        let kind = job.kind();
        self.metrics
            .permanent_failures
            .inc(&format!("kind=\"{kind}\",error=\"{}\"", label(&code)));
        tracing::error!(
            job = row.id,
            kind,
            key = job.queue_key(),
            error = %error,
            "Slack refused a message for good; not retrying"
        );
        let now = ms(Utc::now());
        let request = match job.request_id() {
            Some(id) => self.store.request(id).await?,
            None => None,
        };
        self.store
            .audit(
                request.as_ref().map(|r| r.id),
                store::audit(
                    "jitbot",
                    "slack_failed",
                    json!({"job": kind, "to": job.queue_key(), "error": code}),
                ),
                now,
            )
            .await?;
        if let (Job::PostCard { .. }, Some(request)) = (job, request) {
            let mut jobs = vec![
                Job::Dm {
                    user: request.requester.clone(),
                    text: blocks::dm_card_failed(
                        request.id,
                        &request.resource,
                        &request.channel,
                        &code,
                    ),
                    done: None,
                }
                .at(now),
            ];
            if !error.is_about_the_channel() {
                jobs.push(
                    Job::ChannelNote {
                        request_id: request.id,
                        channel: request.channel.clone(),
                        text: blocks::note_card_failed(
                            request.id,
                            &request.resource,
                            &request.requester,
                            &code,
                        ),
                    }
                    .at(now),
                );
            }
            self.store.enqueue(&jobs, now).await?;
            self.wake.for_jobs(&jobs);
        }
        Ok(())
    }

    /// The card as the request stands now.
    pub(super) async fn card(&self, id: i32) -> anyhow::Result<(store::Request, CardView)> {
        let (mut request, mut grant) = self
            .store
            .request_with_grant(id)
            .await?
            .with_context(|| format!("request #{id} is gone"))?;
        // A bundle's other resources show on their lead's card.
        if let Some(lead) = request.bundle_of {
            (request, grant) = self
                .store
                .request_with_grant(lead)
                .await?
                .with_context(|| format!("request #{lead}, the lead of #{id}, is gone"))?;
        }
        // An auto-approved request has no decisions to show.
        let decisions = if request.auto_approved {
            Vec::new()
        } else {
            self.store.decisions(request.id).await?
        };
        let lead_error = grant.as_ref().and_then(|g| g.last_error.clone());
        let granted = grant.as_ref().is_some_and(|g| g.granted_at.is_some());
        let mut view = self.card_view(&request, grant, &decisions)?;
        // A grant that was extended lists its extensions.
        if granted && request.extends.is_none() {
            view.extensions = self
                .store
                .extensions_of(request.id)
                .await?
                .iter()
                .map(|e| {
                    let by = if e.auto_approved {
                        "auto-approved by policy".to_string()
                    } else {
                        format!(
                            "approved by {}",
                            e.decided_by
                                .as_deref()
                                .unwrap_or_default()
                                .split(',')
                                .filter(|u| !u.is_empty())
                                .map(blocks::mention)
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    };
                    format!(
                        "⏩ Extended by {} (#{}, {by})",
                        GrantDuration::from_secs(e.duration_secs.max(0) as u64)
                            .map(|d| d.to_string())
                            .unwrap_or_default(),
                        e.id
                    )
                })
                .collect();
        }
        if let Some(spec) = store::BundleSpec::of(&request) {
            view.resource = spec.label();
            view.description = String::new();
            let members = self.store.bundle_members_with_grants(request.id).await?;
            view.parts = spec
                .resources
                .iter()
                .map(|name| {
                    if *name == request.resource {
                        return Part {
                            id: Some(request.id),
                            resource: name.clone(),
                            state: Some(view.state),
                            expires_at: view.expires_at,
                            error: lead_error.clone(),
                        };
                    }
                    match members.iter().find(|(m, _)| m.resource == *name) {
                        Some((m, g)) => Part {
                            id: Some(m.id),
                            resource: name.clone(),
                            state: State::parse(&m.state),
                            expires_at: time(g.as_ref().and_then(|g| g.expires_at)),
                            error: g.as_ref().and_then(|g| g.last_error.clone()),
                        },
                        None => Part {
                            id: None,
                            resource: name.clone(),
                            state: None,
                            expires_at: None,
                            error: None,
                        },
                    }
                })
                .collect();
        }
        Ok((request, view))
    }

    fn card_view(
        &self,
        request: &store::Request,
        grant: Option<store::Grant>,
        decisions: &[store::Approval],
    ) -> anyhow::Result<CardView> {
        let state = State::parse(&request.state).context("unknown state in the store")?;
        let policy = self.policy.now();
        let resource = policy.resources.get(&request.resource);
        // A bundle's approvers are those of each of its resources.
        let names = store::BundleSpec::resources_of(request);
        let resources: Vec<_> = names
            .iter()
            .filter_map(|n| policy.resources.get(n))
            .collect();
        // While a request waits, the card counts as the policy in force now does: approvals of
        // people who may no longer approve are not shown as counting.
        let counted = grant
            .as_ref()
            .and_then(|g| g.approved_by.as_deref())
            .filter(|b| !b.is_empty())
            .map(|b| b.split(',').map(str::to_string).collect::<Vec<_>>());
        let approved_by = match counted {
            // Approved: whose approvals counted then.
            Some(counted) => counted,
            None => decisions
                .iter()
                .filter(|d| d.decision == "approve")
                .filter(|d| {
                    state != State::Pending
                        || resources.iter().any(|r| {
                            policy.is_approver(r, &d.approver)
                                && (r.self_approval || d.approver != request.requester)
                        })
                })
                .map(|d| d.approver.clone())
                .collect(),
        };
        let approvals_needed = match state {
            State::Pending if !resources.is_empty() => {
                resources.iter().map(|r| r.approvals).max().unwrap_or(1) as i32
            }
            _ => request.approvals_needed,
        };
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
            description: resource.map(|r| r.description.clone()).unwrap_or_default(),
            duration: GrantDuration::from_secs(request.duration_secs.max(0) as u64)
                .map(|d| d.to_string())
                .unwrap_or_default(),
            reason: request.reason.clone(),
            state,
            approvals_needed,
            approved_by,
            decided_by,
            decided_at: time(request.decided_at),
            expires_at: time(grant.as_ref().and_then(|g| g.expires_at)),
            ended_at: time(grant.as_ref().and_then(|g| g.ended_at)),
            auto_approved: request.auto_approved,
            note,
            parts: Vec::new(),
            extends: request.extends,
            extensions: Vec::new(),
            // Shown only once the grant has ended.
            at_target: match grant.as_ref() {
                Some(g) if g.ended_at.is_some() => AtTarget::of(g.already_held, g.handed_to),
                _ => AtTarget::HeldBefore,
            },
        })
    }

    /// Posts the card as the request stands now (so a card posted late is already current).
    async fn post_card(&self, id: i32) -> anyhow::Result<()> {
        let (request, view) = self.card(id).await?;
        if request.card_ts.is_some() {
            return Ok(());
        }
        let (text, blocks) = blocks::card(&view);
        let ts = self
            .slack
            .post_message(&request.channel, &text, Some(blocks), None)
            .await?;
        self.store.set_card(id, &ts).await?;
        Ok(())
    }

    /// Redraws a posted card. Not posted yet: nothing to do, the card job draws the current
    /// state when it runs (a channel's messages run one at a time, in order).
    async fn update_card(&self, id: i32) -> anyhow::Result<()> {
        let (request, view) = self.card(id).await?;
        let (text, blocks) = blocks::card(&view);
        // The DMs that paged people about it show the same, buttons gone once decided.
        for page in self.store.pages_of(request.id).await? {
            self.slack
                .update_message(&page.channel, &page.ts, &text, blocks.clone())
                .await?;
        }
        let Some(ts) = request.card_ts.as_deref().filter(|ts| !ts.is_empty()) else {
            return Ok(());
        };
        self.slack
            .update_message(&request.channel, ts, &text, blocks)
            .await
    }

    async fn channel_note(&self, id: i32, text: &str) -> anyhow::Result<()> {
        let mut request = self.request(id).await?;
        // A note about a bundle's other resource goes under the lead's card.
        if let Some(lead) = request.bundle_of {
            request = self.request(lead).await?;
        }
        self.slack
            .post_text(
                &request.channel,
                text,
                request.card_ts.as_deref().filter(|ts| !ts.is_empty()),
            )
            .await
            .map(|_| ())
    }
}
