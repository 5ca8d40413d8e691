//! `/jit explain <resource or bundle>`: a resource's terms, answered for the person who asks.

use chrono::Utc;

use super::Service;
use crate::slack::blocks::mention;

impl Service {
    /// A resource's terms, answered for the person who asks: may they request it, who approves
    /// and how many must, the durations, the reason asked for, and whether their request would be
    /// auto-approved (and up to how long).
    pub(super) fn explain(&self, user: &str, name: &str) -> Result<String, String> {
        let policy = self.policy.now();
        if let Some(resources) = policy.bundles.get(name) {
            let mine = resources.iter().all(|n| {
                policy
                    .resources
                    .get(n)
                    .is_some_and(|r| policy.may_request(r, user))
            });
            return Ok(format!(
                "*{name}* is a bundle of {}: one request, one card and one decision, with a grant at each resource. Every resource's rules apply (its approvers must approve, its limits hold): see `/jit explain <resource>` for each. {}",
                resources.join(", "),
                if mine {
                    format!("You may request it: `/jit request {name} <duration> <reason>`.")
                } else {
                    "You may not request every resource of it.".to_string()
                }
            ));
        }
        let r = Self::resource(&policy, name)?;
        let approvers: Vec<String> = policy
            .expand(&r.approvers)
            .iter()
            .map(|u| mention(u))
            .collect();
        let requesters = match &r.requesters {
            None => "anyone".to_string(),
            Some(list) => policy
                .expand(list)
                .iter()
                .map(|u| mention(u))
                .collect::<Vec<_>>()
                .join(", "),
        };
        let mut lines = vec![format!(
            "*{}*{}",
            r.name,
            if r.description.is_empty() {
                String::new()
            } else {
                format!(": {}", r.description)
            }
        )];
        let may = policy.may_request(r, user);
        let identity = policy
            .providers
            .get(&r.provider)
            .is_some_and(|p| policy.identity(user, p.kind()).is_some());
        lines.push(match (may, identity) {
            (true, true) => "• *you may request it*".to_string(),
            (true, false) => format!(
                "• you may request it, but you have no {} identity yet: ask an admin to add your login under `identities`",
                policy.providers.get(&r.provider).map(|p| p.kind()).unwrap_or("provider")
            ),
            (false, _) => "• *you may not request it*".to_string(),
        });
        lines.push(format!("• who may request it: {requesters}"));
        lines.push(format!(
            "• durations {} to {} (default {})",
            r.min_duration, r.max_duration, r.default_duration
        ));
        lines.push(format!(
            "• approvers: {} ({} needed{}{})",
            approvers.join(", "),
            r.approvals,
            if r.self_approval {
                ", self-approval allowed"
            } else {
                ""
            },
            if policy.is_approver(r, user) {
                "; you are one of them"
            } else {
                ""
            }
        ));
        // Who would be paged, and when, if nobody decides: on-call groups by who is on call now.
        let now = Utc::now();
        if let Some(remind) = r.remind {
            lines.push(format!(
                "• if nobody decides: a reminder to the approvers after {remind}"
            ));
        }
        for step in &r.escalation {
            let paged: Vec<String> = policy
                .paged(&step.to, now)
                .iter()
                .map(|u| mention(u))
                .collect();
            lines.push(format!(
                "• after {}, `{}` is paged: {}{}",
                step.after,
                step.to,
                paged.join(", "),
                match policy.on_call_fallback(&step.to) {
                    Some(why) => format!(" (its members: {why})"),
                    None if policy.is_on_call_group(&step.to) => " (on call now)".to_string(),
                    None => String::new(),
                }
            ));
        }
        if r.break_glass {
            lines.push(
                "• break-glass: a requester may approve their own request (with a reason); the channel and every approver are alerted at once".to_string(),
            );
        }
        lines.push(match &r.reason_pattern {
            Some(p) => format!("• reason required, matching `{}`", p.as_str()),
            None if r.reason_required => "• reason required".to_string(),
            None => "• reason optional".to_string(),
        });
        // The longest duration an auto-approve rule naming this person covers, if any.
        let auto = r
            .auto_approve
            .iter()
            .filter(|rule| policy.names(&rule.requesters, user))
            .map(|rule| rule.max_duration)
            .max();
        if may {
            lines.push(match auto {
                Some(max) => format!(
                    "• your request is *auto-approved* up to {max}; longer goes to the approvers"
                ),
                None => {
                    "• your request goes to the approvers (no auto-approve rule names you)".into()
                }
            });
        }
        Ok(lines.join("\n"))
    }
}
