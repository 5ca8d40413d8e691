//! Who may decide a request, and whose approvals count under the policy in force: for a
//! bundle, every resource's own approvers and rules; for an extension, whether the grant it
//! lengthens still runs.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::{Decision, Service, label, ms};
use crate::domain::{Job, Lane, Policy, Resource, State};
use crate::store::{self, BundleSpec, Transition};

/// Who may decide what, as [`Service::judge`] found it.
pub(super) struct Judged<'p> {
    pub request: store::Request,
    /// The resources decided on (a bundle's every one).
    pub resources: Vec<&'p Resource>,
    /// The requester approves their own request on a `break_glass` resource: approved at once,
    /// and everyone is told.
    pub break_glass: bool,
}

impl Service {
    /// May `user` decide request `id` now, and on which resources (a bundle's every one)? The
    /// requester's own click is refused unless a resource allows self-approval, or every one
    /// allows break-glass (and the request says why); an approver of any of the resources may
    /// decide.
    pub(super) async fn judge<'p>(
        &self,
        policy: &'p Policy,
        user: &str,
        id: i32,
        decision: Decision,
    ) -> anyhow::Result<Result<Judged<'p>, String>> {
        let Some(request) = self.store.request(id).await? else {
            return Ok(Err(format!("There is no request #{id}.")));
        };
        let names = BundleSpec::resources_of(&request);
        let mut resources = Vec::with_capacity(names.len());
        for name in &names {
            let Some(resource) = policy.resources.get(name) else {
                return Ok(Err(format!(
                    "*{name}* is no longer in the policy; request #{id} cannot be decided."
                )));
            };
            resources.push(resource);
        }
        if request.state != State::Pending.as_str() {
            return Ok(Err(format!(
                "Request #{id} is already {}.",
                label(&request.state)
            )));
        }
        if request.requester == user
            && decision == Decision::Approve
            && !resources.iter().any(|r| r.self_approval)
            && resources.iter().all(|r| r.break_glass)
        {
            if request.reason.trim().is_empty() {
                return Ok(Err(format!(
                    "Break-glass needs a reason everyone can read. `/jit cancel {id}`, then ask again with one: `/jit request {} <duration> INC-… what is on fire`.",
                    request.resource
                )));
            }
            return Ok(Ok(Judged {
                request,
                resources,
                break_glass: true,
            }));
        }
        if request.requester == user && !resources.iter().any(|r| r.self_approval) {
            let verb = if decision == Decision::Approve {
                "approve"
            } else {
                "deny"
            };
            return Ok(Err(format!(
                "You cannot {verb} your own request #{id}; someone else must decide it. (Use `/jit cancel {id}` to withdraw it.)"
            )));
        }
        let approvers: Vec<&[String]> = resources.iter().map(|r| r.approvers.as_slice()).collect();
        self.directory.before_decision(policy, &approvers).await;
        if !resources.iter().any(|r| policy.is_approver(r, user)) {
            let name = &resources[0].name;
            let what = if resources.len() > 1 {
                format!("any of {}", names.join(", "))
            } else {
                format!("*{name}*")
            };
            return Ok(Err(format!(
                "You are not an approver of {what}. See `/jit explain {name}`."
            )));
        }

        Ok(Ok(Judged {
            request,
            resources,
            break_glass: false,
        }))
    }
}

impl Service {
    /// What approving extension `ext` of request `of` would do: lengthen its grant, up to the
    /// grant's start plus the resource's `max_duration`. When that grant is no longer running,
    /// the extension is cancelled and the answer says why.
    pub(super) async fn extension_of(
        &self,
        ext: &store::Request,
        of: i32,
        resource: &Resource,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Result<store::Extension, String>> {
        let running = self
            .store
            .request_with_grant(of)
            .await?
            .filter(|(r, _)| r.state == State::Active.as_str())
            .and_then(|(_, g)| g)
            .and_then(|g| g.granted_at);
        match running {
            Some(start) => Ok(Ok(store::Extension {
                of,
                by_ms: ext.duration_secs.saturating_mul(1000),
                cap_ms: start.saturating_add(resource.max_duration.secs() as i64 * 1000),
            })),
            None => {
                let mut t = Transition::new(ext.id, &[State::Pending], State::Cancelled, ms(now));
                t.note = Some(format!("#{of} is no longer active"));
                t.jobs = vec![
                    Job::UpdateCard {
                        request_id: ext.id,
                        channel: ext.channel.clone(),
                    }
                    .at(ms(now)),
                ];
                t.audit = vec![store::audit(
                    "jitbot",
                    "cancelled",
                    json!({"reason": "the access it extends has ended", "of": of}),
                )];
                self.store.transition(t).await?;
                self.woke(&[Lane::Messages]);
                Ok(Err(format!(
                    "Request #{of} is no longer active, so extension #{} has nothing to extend; it is cancelled.",
                    ext.id
                )))
            }
        }
    }
}

/// Whose approvals count, under the policy in force, for each resource of a request.
#[derive(Clone, Debug)]
pub(super) struct Tally {
    /// Per resource (the lead's first): approvers of it, and not the requester unless it allows
    /// self-approval.
    pub(super) per_resource: Vec<Vec<String>>,
    /// Everyone whose approval counts for at least one resource.
    pub(super) anyone: Vec<String>,
    /// Every resource has the approvals it needs.
    pub(super) met: bool,
    /// The resources that do not, yet.
    pub(super) missing: Vec<String>,
}

impl Tally {
    /// A break-glass approval: the requester's own, standing for every resource.
    pub(super) fn break_glass(user: &str, resources: usize) -> Tally {
        Tally {
            per_resource: vec![vec![user.to_string()]; resources],
            anyone: vec![user.to_string()],
            met: true,
            missing: Vec::new(),
        }
    }
}

pub(super) fn tally(
    policy: &Policy,
    resources: &[Resource],
    requester: &str,
    approvers: &[String],
) -> Tally {
    let per_resource: Vec<Vec<String>> = resources
        .iter()
        .map(|r| counting(policy, r, requester, approvers))
        .collect();
    let anyone = approvers
        .iter()
        .filter(|a| per_resource.iter().any(|counted| counted.contains(a)))
        .cloned()
        .collect();
    let missing: Vec<String> = resources
        .iter()
        .zip(&per_resource)
        .filter(|(r, counted)| counted.len() < r.approvals as usize)
        .map(|(r, _)| r.name.clone())
        .collect();
    Tally {
        per_resource,
        anyone,
        met: missing.is_empty(),
        missing,
    }
}

/// Of the people who approved, those whose approval counts under `policy`: approvers of the
/// resource now, and not the requester unless the resource allows self-approval.
fn counting(
    policy: &Policy,
    resource: &Resource,
    requester: &str,
    approvers: &[String],
) -> Vec<String> {
    approvers
        .iter()
        .filter(|a| policy.is_approver(resource, a) && (resource.self_approval || *a != requester))
        .cloned()
        .collect()
}
