//! The escalation ladder: a request nobody has decided pages, step by step, whoever each step
//! names (the person on call now for a rotation group), by DM with the card and working buttons.
//! Each step is a job keyed by the request and the step, and each page a job keyed by the
//! person too: a step happens once however many replicas run, and a decision stops the ladder
//! (a step that runs after it pages nobody). The reminder (`remind`) is step -1: the approvers.

use chrono::Utc;
use serde_json::json;

use super::{JobResult, Scheduler, ms};
use crate::domain::policy::is_slack_user;
use crate::domain::{GrantDuration, Job, State};
use crate::slack::blocks::{self, mention};
use crate::store;

impl Scheduler {
    pub(super) async fn escalate(&self, id: i32, step: i32) -> JobResult {
        let Some(request) = self.store.request(id).await? else {
            return Ok(());
        };
        if request.state != State::Pending.as_str() {
            return Ok(());
        }
        let policy = self.policy.now();
        let Some(resource) = policy.resources.get(&request.resource) else {
            return Ok(());
        };
        let now = Utc::now();
        let waited =
            GrantDuration::from_secs(((ms(now) - request.created_at).max(1000) / 1000) as u64)
                .map(|d| d.to_string())
                .unwrap_or_default();
        // Whom the policy names, as Slack and PagerDuty say now (or lately).
        let named: Vec<String> = if step < 0 {
            resource.approvers.clone()
        } else {
            usize::try_from(step)
                .ok()
                .and_then(|i| resource.escalation.get(i))
                .map(|s| vec![s.to.clone()])
                .unwrap_or_default()
        };
        self.directory
            .refresh_usergroups(
                policy.usergroups_in(&named),
                crate::directory::ON_CALL_FRESHNESS,
            )
            .await;
        for entry in &named {
            self.directory
                .refresh_on_call(&policy, entry, crate::directory::ON_CALL_FRESHNESS)
                .await;
        }
        let fallback = named
            .iter()
            .filter_map(|e| {
                policy
                    .on_call_fallback(e)
                    .map(|why| format!(" (`{e}`: {why}; its members stand in)"))
            })
            .collect::<String>();
        let (people, why, whom) = if step < 0 {
            (
                policy
                    .approvers_now(&resource.approvers, now)
                    .into_iter()
                    .collect::<Vec<_>>(),
                format!(
                    "⏳ Reminder: request #{id} for *{}* has waited {waited} for an approver.",
                    request.resource
                ),
                "its approvers".to_string(),
            )
        } else {
            let Some(s) = usize::try_from(step)
                .ok()
                .and_then(|i| resource.escalation.get(i))
            else {
                return Ok(());
            };
            let on_call = policy.is_on_call_group(&s.to);
            // When PagerDuty cannot say who is on call, the members are paged as members.
            let standing_in = policy.on_call_fallback(&s.to).is_some();
            (
                policy.paged(&s.to, now),
                format!(
                    "⏰ Request #{id} for *{}* has waited {waited} and nobody has decided it: you are {} `{}`.",
                    request.resource,
                    if standing_in {
                        "paged as a member of"
                    } else if on_call {
                        "on call for"
                    } else {
                        "paged as"
                    },
                    s.to
                ),
                format!("`{}`{}", s.to, if on_call { " (on call)" } else { "" }),
            )
        };
        let paged: Vec<String> = people
            .into_iter()
            .filter(|p| *p != request.requester && is_slack_user(p))
            .collect();
        let now_ms = ms(now);
        let mut jobs: Vec<_> = paged
            .iter()
            .map(|user| {
                Job::Page {
                    request_id: id,
                    step,
                    user: user.clone(),
                    text: why.clone(),
                }
                .at(now_ms)
            })
            .collect();
        if !paged.is_empty() {
            jobs.push(
                Job::ChannelNote {
                    request_id: id,
                    channel: request.channel.clone(),
                    text: format!(
                        "{} {} after {waited}: {}{fallback}",
                        if step < 0 {
                            "⏳ Reminded"
                        } else {
                            "⏰ Paged"
                        },
                        whom,
                        paged
                            .iter()
                            .map(|p| mention(p))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }
                .at(now_ms),
            );
        }
        self.store.enqueue(&jobs, now_ms).await?;
        self.store
            .audit(
                Some(id),
                store::audit(
                    "jitbot",
                    if step < 0 { "reminded" } else { "escalated" },
                    json!({"step": step, "paged": paged, "fallback": (!fallback.is_empty()).then(|| fallback.trim())}),
                ),
                now_ms,
            )
            .await?;
        self.wake.for_jobs(&jobs);
        Ok(())
    }

    /// DMs `user` the card of request `id` with `text` above it, if it still waits, and keeps
    /// where it went so the decision updates it.
    pub(super) async fn page(&self, id: i32, user: &str, text: &str) -> anyhow::Result<()> {
        let (request, view) = self.card(id).await?;
        if request.state != State::Pending.as_str() {
            return Ok(());
        }
        let (fallback, card) = blocks::card(&view);
        let blocks: Vec<_> = std::iter::once(blocks::text_section(text))
            .chain(card)
            .collect();
        let (channel, ts) = self
            .slack
            .post_message_in(
                user,
                &format!("{} {fallback}", blocks::plain_fallback(text)),
                blocks,
            )
            .await?;
        if !ts.is_empty() {
            self.store
                .add_page(request.id, user, &channel, &ts, ms(Utc::now()))
                .await?;
        }
        Ok(())
    }
}
