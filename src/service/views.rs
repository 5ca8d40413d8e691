//! What people can look up: their requests, what waits for them, what they may ask for.

use chrono::DateTime;

use super::{Service, label, secs};
use crate::domain::State;
use crate::slack::blocks::{self, mention};

impl Service {
    pub(super) async fn list(&self, user: &str) -> anyhow::Result<String> {
        let requests = self.store.requests_of(user, 10).await?;
        if requests.is_empty() {
            return Ok("You have no requests yet. Try `/jit resources`.".into());
        }
        let mut lines = vec!["Your recent requests:".to_string()];
        for r in requests {
            let mut line = format!("• #{} *{}* · {}", r.id, r.resource, label(&r.state));
            if r.state == State::Active.as_str()
                && let Some(exp) = self.store.grant(r.id).await?.and_then(|g| g.expires_at)
                && let Some(t) = DateTime::from_timestamp_millis(exp)
            {
                line.push_str(&format!(" until {}", blocks::when(t)));
            }
            lines.push(line);
        }
        Ok(lines.join("\n"))
    }

    pub(super) async fn pending(&self, user: &str) -> anyhow::Result<String> {
        let mut lines = Vec::new();
        let waiting = self.store.requests_in_state(State::Pending, 200).await?;
        let ids: Vec<i32> = waiting.iter().map(|r| r.id).collect();
        let decided = self.store.decided_by(user, &ids).await?;
        for r in waiting {
            let Some(resource) = self.policy.resources.get(&r.resource) else {
                continue;
            };
            if !self.policy.is_approver(resource, user)
                || (r.requester == user && !resource.self_approval)
            {
                continue;
            }
            if decided.contains(&r.id) {
                continue;
            }
            lines.push(format!(
                "• #{} {} wants *{}* for {}: {}",
                r.id,
                mention(&r.requester),
                r.resource,
                secs(r.duration_secs),
                blocks::escape(&r.reason)
            ));
        }
        Ok(if lines.is_empty() {
            "Nothing is waiting for you.".into()
        } else {
            format!(
                "Waiting for you (`/jit approve <id>`):\n{}",
                lines.join("\n")
            )
        })
    }

    pub(super) fn resources(&self, user: &str) -> String {
        let lines: Vec<String> = self
            .policy
            .resources
            .values()
            .filter(|r| self.policy.may_request(r, user))
            .map(|r| {
                format!(
                    "• *{}*{} · up to {} · {} approval{}",
                    r.name,
                    if r.description.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", r.description)
                    },
                    r.max_duration,
                    r.approvals,
                    if r.approvals == 1 { "" } else { "s" }
                )
            })
            .collect();
        if lines.is_empty() {
            "There is nothing you may request.".into()
        } else {
            format!("You may request:\n{}", lines.join("\n"))
        }
    }

    pub(super) fn explain(&self, name: &str) -> Result<String, String> {
        let r = self.resource(name)?;
        let approvers: Vec<String> = self
            .policy
            .expand(&r.approvers)
            .iter()
            .map(|u| mention(u))
            .collect();
        let requesters = match &r.requesters {
            None => "anyone".to_string(),
            Some(list) => self
                .policy
                .expand(list)
                .iter()
                .map(|u| mention(u))
                .collect::<Vec<_>>()
                .join(", "),
        };
        Ok(format!(
            "*{}*{}\n• durations {} to {} (default {})\n• approvers: {} ({} needed{})\n• may request: {}\n• reason {}",
            r.name,
            if r.description.is_empty() {
                String::new()
            } else {
                format!(": {}", r.description)
            },
            r.min_duration,
            r.max_duration,
            r.default_duration,
            approvers.join(", "),
            r.approvals,
            if r.self_approval {
                ", self-approval allowed"
            } else {
                ""
            },
            requesters,
            if r.reason_required {
                "required"
            } else {
                "optional"
            }
        ))
    }
}
