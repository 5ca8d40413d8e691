//! Approve and deny, by button or by command: one decision per person, in one transaction.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::judge::{Tally, tally};
use super::{Decided, Decision, Service, label, ms, refuse};
use crate::domain::{GrantDuration, Job, Lane, RequestId, Resource, State};
use crate::metrics::Metrics;
use crate::slack::blocks;
use crate::slack::payload::{Click, ClickAction};
use crate::store::{self, GrantChange, NewGrant, Transition, Verdict};

impl Service {
    pub(super) async fn decide_by_command(
        &self,
        user: &str,
        id: RequestId,
        decision: Decision,
        note: Option<String>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Result<String, String>> {
        let Ok(id) = i32::try_from(id.0) else {
            return Ok(Err(format!("There is no request {id}.")));
        };
        Ok(match self.decide(user, id, decision, note, now).await? {
            Decided::Accepted(text) => Ok(text),
            Decided::Refused(text) => Err(text),
        })
    }

    /// A click on a card or a DM's button. Refusals go back to the clicker as an ephemeral
    /// message. A Deny that carries a `trigger_id` decides nothing yet: the answer is the denial
    /// form to open, whose submission denies (with the reason).
    pub async fn click(
        &self,
        click: Click,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Option<serde_json::Value>> {
        // An Extend button's value is `<id>:<seconds>`; every other button's is the id.
        let (id_text, extra) = click.value.split_once(':').unwrap_or((&click.value, ""));
        let id = RequestId::parse(id_text).and_then(|id| i32::try_from(id.0).ok());
        let Some(id) = id else {
            self.store
                .audit(
                    None,
                    store::audit(
                        &click.user,
                        "click_refused",
                        json!({"reason": "bad request id", "value": click.value}),
                    ),
                    ms(now),
                )
                .await?;
            self.answer_click(&click, "That button does not name a request.".into(), now)
                .await?;
            return Ok(None);
        };
        let outcome = match click.action {
            ClickAction::Approve => {
                self.decide(&click.user, id, Decision::Approve, None, now)
                    .await?
            }
            ClickAction::Deny if !click.trigger_id.is_empty() => {
                match self.deny_form(&click.user, id, now).await? {
                    Ok(form) => return Ok(Some(form)),
                    Err(refusal) => Decided::Refused(refusal),
                }
            }
            ClickAction::Deny => {
                self.decide(&click.user, id, Decision::Deny, None, now)
                    .await?
            }
            ClickAction::Done => match self
                .revoke(&click.user, RequestId(i64::from(id)), now)
                .await?
            {
                Ok(text) => Decided::Accepted(text),
                Err(text) => Decided::Refused(text),
            },
            ClickAction::Extend => {
                let by = extra.parse::<u64>().ok().and_then(GrantDuration::from_secs);
                let answer = match by {
                    Some(by) => {
                        self.extend(&click.user, RequestId(i64::from(id)), by, now)
                            .await?
                    }
                    None => Err(
                        "That button names no duration; use `/jit extend <id> <duration>`."
                            .to_string(),
                    ),
                };
                // Either way the clicker reads the answer: the extension's, or why not.
                match answer {
                    Ok(text) => {
                        self.answer_click(&click, text, now).await?;
                        Decided::Accepted(String::new())
                    }
                    Err(text) => Decided::Refused(text),
                }
            }
        };
        if let Decided::Refused(text) = outcome {
            Metrics::inc(&self.metrics.clicks_refused);
            self.answer_click(&click, text, now).await?;
        }
        Ok(None)
    }

    /// Tells the clicker `text`: in a channel, an ephemeral message there; anywhere else (a DM
    /// from the bot, a message outside any channel) through the click's `response_url`.
    pub async fn answer_click(
        &self,
        click: &Click,
        text: String,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let answer = if !click.channel.is_empty() {
            Some(Job::Ephemeral {
                channel: click.channel.clone(),
                user: click.user.clone(),
                text,
            })
        } else if !click.response_url.is_empty() {
            Some(Job::Respond {
                url: click.response_url.clone(),
                text,
            })
        } else {
            None
        };
        match answer {
            Some(job) => {
                self.store.enqueue(&[job.at(ms(now))], ms(now)).await?;
                self.woke(&[Lane::Messages]);
            }
            None => tracing::warn!(
                user = %click.user,
                "a refused click carried neither a channel nor a response_url: nothing to answer through"
            ),
        }
        Ok(())
    }

    /// One approver's decision, counted once per person; `approvals` distinct approvals approve.
    /// The decision and everything it causes are one transaction: a crash keeps all or none,
    /// and a person who decided cannot decide again either way.
    pub async fn decide(
        &self,
        user: &str,
        id: i32,
        decision: Decision,
        note: Option<String>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Decided> {
        let now_ms = ms(now);
        let verb = decision.verb();
        let policy = self.policy.now();
        let (request, resources, break_glass) =
            match self.judge(&policy, user, id, decision).await? {
                Ok(j) => (j.request, j.resources, j.break_glass),
                Err(reason) => {
                    let known = !reason.starts_with("There is no request");
                    return self
                        .refused(user, known.then_some(id), verb, reason, now_ms)
                        .await;
                }
            };
        // A request the policy in force no longer allows ends here rather than being approved
        // (a reload cancels the rest of them).
        if decision == Decision::Approve
            && let Some(why) = resources.iter().find_map(|resource| {
                policy.no_longer_allows(resource, &request.requester, request.duration_secs)
            })
        {
            self.cancel_for_policy(&request, &why, now).await?;
            self.woke(&[Lane::Messages]);
            return self
                .refused(
                    user,
                    Some(id),
                    verb,
                    format!("Request #{id} was cancelled: the policy changed ({why})."),
                    now_ms,
                )
                .await;
        }
        // An extension moves the end of a grant that must still be running.
        let extension = match request.extends {
            None => None,
            Some(of) => match self.extension_of(&request, of, resources[0], now).await? {
                Ok(ext) => Some(ext),
                Err(why) => return self.refused(user, Some(id), verb, why, now_ms).await,
            },
        };
        // The policy in force now says how many approvals it takes and whose count: every
        // resource's rule must be met.
        let needed = resources.iter().map(|r| r.approvals).max().unwrap_or(1) as i32;
        let grants = match decision {
            Decision::Deny => None,
            Decision::Approve => {
                let mut grants = Vec::with_capacity(resources.len());
                for resource in &resources {
                    let Some(provider) = policy.providers.get(&resource.provider) else {
                        return Ok(refuse(format!(
                            "*{}* has no provider configured. Tell the jitbot admins.",
                            resource.name
                        )));
                    };
                    let identity = policy
                        .identity(&request.requester, provider.kind())
                        .unwrap_or_default();
                    grants.push(NewGrant {
                        provider_name: resource.provider.clone(),
                        provider: serde_json::to_value(provider)?,
                        grant_shape: serde_json::Value::Object(resource.grant.clone()),
                        identity: serde_json::to_value(&identity)?,
                        approved_by: Vec::new(),
                    });
                }
                Some(grants)
            }
        };
        let decider = user.to_string();
        // Break-glass: every approver of the resources and the channel are told at once.
        let alerts: Vec<crate::domain::Scheduled> = if break_glass {
            let what = store::BundleSpec::what(&request);
            let text = blocks::break_glass_alert(
                id,
                &request.requester,
                &what,
                &super::secs(request.duration_secs),
                &request.reason,
            );
            let mut people = std::collections::BTreeSet::new();
            for r in &resources {
                people.extend(policy.expand(&r.approvers));
            }
            people.remove(&request.requester);
            std::iter::once(Job::ChannelNote {
                request_id: id,
                channel: request.channel.clone(),
                text: text.clone(),
            })
            .chain(people.into_iter().map(|user| Job::Dm {
                user,
                text: text.clone(),
                done: None,
            }))
            .map(|job| job.at(now_ms))
            .collect()
        } else {
            Vec::new()
        };
        let owned: Vec<Resource> = resources.iter().map(|r| (*r).clone()).collect();
        let counts = {
            let (policy, resources) = (policy.clone(), owned.clone());
            move |requester: &str, approvers: &[String]| -> Tally {
                tally(&policy, &resources, requester, approvers)
            }
        };
        let counts_in_txn = counts.clone();
        let verdict = self
            .store
            .decide(id, user, verb, now_ms, move |req, recorded| {
                // Approvals recorded by people who may no longer approve stop counting.
                let tally = if break_glass {
                    Tally::break_glass(&decider, owned.len())
                } else {
                    counts_in_txn(&req.requester, recorded)
                };
                let approvers = tally.anyone.clone();
                let card = Job::UpdateCard {
                    request_id: id,
                    channel: req.channel.clone(),
                }
                .at(now_ms);
                let t = match grants {
                    None => {
                        let mut t = Transition::new(id, &[State::Pending], State::Denied, now_ms);
                        t.decided_by = Some(decider.clone());
                        t.note = note.clone();
                        t.jobs = vec![
                            card,
                            Job::Dm {
                                user: req.requester.clone(),
                                text: blocks::dm_denied(
                                    id,
                                    &req.resource,
                                    &decider,
                                    note.as_deref(),
                                ), done: None }
                            .at(now_ms),
                        ];
                        t.audit = vec![store::audit(&decider, "denied", json!({"reason": note}))];
                        t
                    }
                    Some(_) if !tally.met => {
                        let mut t = Transition::new(id, &[State::Pending], State::Pending, now_ms);
                        t.jobs = vec![card];
                        t.audit = vec![store::audit(
                            &decider,
                            "approval_recorded",
                            json!({"so_far": approvers.len(), "needed": needed, "recorded": recorded.len()}),
                        )];
                        t
                    }
                    Some(_) if extension.is_some() => {
                        let mut t = Transition::new(id, &[State::Pending], State::Extended, now_ms);
                        t.decided_by = Some(approvers.join(","));
                        t.extend = extension;
                        let of = req.extends.unwrap_or_default();
                        t.jobs = vec![
                            card,
                            Job::UpdateCard {
                                request_id: of,
                                channel: req.channel.clone(),
                            }
                            .at(now_ms),
                            Job::Dm {
                                user: req.requester.clone(),
                                text: blocks::dm_extended(
                                    of,
                                    &req.resource,
                                    &super::secs(req.duration_secs),
                                    id,
                                ), done: None }
                            .at(now_ms),
                        ];
                        t.audit = vec![store::audit(
                            &decider,
                            "extended",
                            json!({"of": of, "by": super::secs(req.duration_secs), "approvers": approvers}),
                        )];
                        t
                    }
                    Some(grants) => {
                        let mut grants = grants.into_iter().zip(&tally.per_resource);
                        let Some((mut grant, lead_approvers)) = grants.next() else {
                            anyhow::bail!("an approval with no resource to grant");
                        };
                        grant.approved_by = lead_approvers.clone();
                        let shared = super::create::Shared {
                            user: &req.requester,
                            channel: &req.channel,
                            duration: GrantDuration::from_secs(req.duration_secs.max(1) as u64)
                                .unwrap_or(owned[0].default_duration),
                            reason: &req.reason,
                            auto: false,
                            now_ms,
                        };
                        let members = grants
                            .zip(owned.iter().skip(1))
                            .map(|((mut grant, counted), resource)| {
                                grant.approved_by = counted.clone();
                                super::create::member(&shared, resource, grant)
                            })
                            .collect();
                        let provider = grant.provider_name.clone();
                        let mut t = Transition::new(id, &[State::Pending], State::Approved, now_ms);
                        t.decided_by = Some(approvers.join(","));
                        t.grant = Some(GrantChange::Create(grant));
                        t.members = members;
                        t.jobs = vec![
                            card,
                            Job::Grant {
                                request_id: id,
                                provider,
                            }
                            .at(now_ms),
                        ];
                        t.audit = vec![store::audit(
                            &decider,
                            "approved",
                            json!({"approvers": approvers}),
                        )];
                        if break_glass {
                            t.note = Some(blocks::BREAK_GLASS.to_string());
                            t.jobs.extend(alerts);
                            t.audit.push(store::audit(
                                &decider,
                                "break_glass",
                                json!({"reason": req.reason}),
                            ));
                        }
                        t
                    }
                };
                Ok(t)
            })
            .await?;
        match verdict {
            Verdict::Missing => {
                self.refused(
                    user,
                    None,
                    verb,
                    format!("There is no request #{id}."),
                    now_ms,
                )
                .await
            }
            // Still pending, yet not applied: the grant it extends ended meanwhile.
            Verdict::NotPending(state)
                if state == State::Pending.as_str() && request.extends.is_some() =>
            {
                let reason = format!(
                    "The access #{id} would extend has ended; there is nothing to extend. (`/jit cancel {id}` withdraws it.)"
                );
                self.refused(user, Some(id), verb, reason, now_ms).await
            }
            Verdict::NotPending(state) => {
                let reason = format!("Request #{id} is already {}.", label(&state));
                self.refused(user, Some(id), verb, reason, now_ms).await
            }
            Verdict::AlreadyDecided(previous) => {
                let done = if previous == "approve" {
                    "approved"
                } else {
                    "denied"
                };
                let reason = if previous == verb {
                    format!("You already {done} request #{id}.")
                } else {
                    format!("You already {done} request #{id}; a decision cannot be changed.")
                };
                self.refused(user, Some(id), verb, reason, now_ms).await
            }
            Verdict::Counted { approvers } => {
                let tally = if break_glass {
                    Tally::break_glass(user, resources.len())
                } else {
                    counts(&request.requester, &approvers)
                };
                self.woke(&[Lane::Messages, Lane::Grants]);
                Ok(Decided::Accepted(match decision {
                    Decision::Deny => format!("You denied request #{id}."),
                    Decision::Approve if !tally.met && (tally.anyone.len() as i32) < needed => {
                        format!(
                            "Your approval of #{id} is recorded ({} of {needed}).",
                            tally.anyone.len()
                        )
                    }
                    // A bundle: enough people, but not yet for every resource.
                    Decision::Approve if !tally.met => format!(
                        "Your approval of #{id} is recorded; it still needs approval for *{}* by its approvers.",
                        tally.missing.join(", ")
                    ),
                    Decision::Approve if break_glass => format!(
                        "You approved your own request #{id} (break-glass); access is being granted, and every approver and the channel have been told."
                    ),
                    Decision::Approve if request.extends.is_some() => format!(
                        "You approved extension #{id}: #{} lasts {} longer.",
                        request.extends.unwrap_or_default(),
                        super::secs(request.duration_secs)
                    ),
                    Decision::Approve => {
                        format!("You approved request #{id}; access is being granted.")
                    }
                }))
            }
        }
    }

    /// A decision that changes nothing: audited, and answered with why.
    pub(super) async fn refused(
        &self,
        user: &str,
        id: Option<i32>,
        verb: &str,
        reason: String,
        now_ms: i64,
    ) -> anyhow::Result<Decided> {
        self.store
            .audit(
                id,
                store::audit(
                    user,
                    "decision_refused",
                    json!({"decision": verb, "reason": reason}),
                ),
                now_ms,
            )
            .await?;
        Ok(refuse(reason))
    }
}
