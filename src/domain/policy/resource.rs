//! One resource entry of the policy, checked: its provider and grant, durations, channel,
//! approvers, requesters and auto-approval rules.

use std::collections::BTreeMap;

use super::check::{Checker, Key, RawResource};
use super::*;

impl Checker<'_> {
    pub(super) fn resource(
        &mut self,
        name: &str,
        raw: RawResource,
        settings: &Settings,
        groups: &BTreeMap<String, Vec<String>>,
        providers: &BTreeMap<String, ProviderConfig>,
    ) -> Option<Resource> {
        let path = format!("resources.{name}");
        let before = self.errors.len();
        if name.is_empty() || name.chars().any(|c| c.is_whitespace()) {
            self.error(
                Key(&["resources", name]),
                &path,
                "a resource name is one word",
            );
        }
        let provider = providers.get(raw.provider.as_str());
        if provider.is_none() {
            self.error(
                &raw.provider,
                format!("{path}.provider"),
                format!(
                    "provider `{}` is not defined under `providers`",
                    raw.provider.as_str()
                ),
            );
        }
        let grant = raw
            .grant
            .as_ref()
            .map(|g| (**g).clone())
            .unwrap_or_default();
        if let Some(ProviderConfig::Postgres { .. }) = provider {
            let ok = grant.len() == 1
                && grant
                    .get("role")
                    .and_then(|r| r.as_str())
                    .is_some_and(|r| !r.is_empty());
            if !ok {
                match &raw.grant {
                    Some(g) => self.error(
                        g,
                        format!("{path}.grant"),
                        "a postgres grant is `{ role: <role name> }`",
                    ),
                    None => self.error(
                        Key(&["resources", name]),
                        format!("{path}.grant"),
                        "a postgres grant is `{ role: <role name> }`",
                    ),
                }
            }
        }
        #[cfg(feature = "kubernetes")]
        if let Some(ProviderConfig::Kubernetes { .. }) = provider
            && let Err(why) = crate::providers::kubernetes::Binding::parse(&grant)
        {
            match &raw.grant {
                Some(g) => self.error(g, format!("{path}.grant"), why),
                None => self.error(Key(&["resources", name]), format!("{path}.grant"), why),
            }
        }
        #[cfg(feature = "aws")]
        if let Some(ProviderConfig::AwsIam { .. }) = provider {
            match (crate::providers::aws_iam::Shape::parse(&grant), &raw.grant) {
                (Err(why), Some(g)) => self.error(g, format!("{path}.grant"), why),
                (Err(why), None) => {
                    self.error(Key(&["resources", name]), format!("{path}.grant"), why)
                }
                // Says which layers end this access: an attachment or a membership carries no
                // end of its own at IAM.
                (Ok(shape), Some(g)) if !shape.ends_by_itself() => self.warn(
                    g,
                    format!("{path}.grant"),
                    "ends only when jitbot revokes it (IAM keeps no end for an attachment or a group membership): if jitbot is down at the end, the access stays until it is back; `policy:` or `assume_role:` also end by themselves at IAM",
                ),
                (Ok(_), _) => {}
            }
        }
        #[cfg(feature = "aws")]
        if let Some(ProviderConfig::AwsSso { .. }) = provider
            && let Err(why) = crate::providers::aws_sso::Assignment::parse(&grant)
        {
            match &raw.grant {
                Some(g) => self.error(g, format!("{path}.grant"), why),
                None => self.error(Key(&["resources", name]), format!("{path}.grant"), why),
            }
        }
        #[cfg(feature = "gcp")]
        if let Some(ProviderConfig::GcpIam { .. }) = provider
            && let Err(why) = crate::providers::gcp_iam::Target::parse(&grant)
        {
            match &raw.grant {
                Some(g) => self.error(g, format!("{path}.grant"), why),
                None => self.error(Key(&["resources", name]), format!("{path}.grant"), why),
            }
        }
        let max_duration = self.duration(&raw.max_duration, &format!("{path}.max_duration"));
        let min_duration = match &raw.min_duration {
            Some(d) => self.duration(d, &format!("{path}.min_duration")),
            None => Some(settings.min_duration),
        };
        if let (Some(min), Some(max)) = (min_duration, max_duration)
            && min > max
        {
            self.error(
                &raw.max_duration,
                format!("{path}.max_duration"),
                format!("max_duration {max} is shorter than min_duration {min}"),
            );
        }
        let default_duration = match (&raw.default_duration, max_duration) {
            (Some(d), max) => {
                let d = self.duration(d, &format!("{path}.default_duration"));
                if let (Some(dd), Some(max), Some(text)) = (d, max, &raw.default_duration)
                    && dd > max
                {
                    self.error(
                        text,
                        format!("{path}.default_duration"),
                        "default_duration is longer than max_duration",
                    );
                }
                d
            }
            (None, Some(max)) => GrantDuration::from_secs(FALLBACK_DURATION_SECS.min(max.secs())),
            (None, None) => None,
        };
        if !is_channel_id(&raw.channel) {
            self.error(
                &raw.channel,
                format!("{path}.channel"),
                format!(
                    "`{}` is not a Slack channel ID (C… or G…)",
                    raw.channel.as_str()
                ),
            );
        }
        if raw.approvers.is_empty() {
            self.error(
                &raw.approvers,
                format!("{path}.approvers"),
                "name at least one approver (a group or a user ID)",
            );
        }
        let approvers = self.principals(&raw.approvers, &format!("{path}.approvers"), groups);
        let approvals = raw.approvals.as_ref().map(|a| **a).unwrap_or(1);
        if let Some(a) = &raw.approvals {
            let possible = approvers
                .iter()
                .flat_map(|e| groups.get(e).cloned().unwrap_or_else(|| vec![e.clone()]))
                .collect::<BTreeSet<_>>()
                .len();
            if approvals == 0 {
                self.error(
                    a,
                    format!("{path}.approvals"),
                    "approvals must be at least 1; use auto_approve to grant without a decision",
                );
            } else if approvals as usize > possible && self.errors.len() == before {
                self.error(
                    a,
                    format!("{path}.approvals"),
                    format!("needs {approvals} distinct approvers but only {possible} can approve"),
                );
            }
        }
        let requesters = raw
            .requesters
            .as_ref()
            .map(|r| self.requesters(r, &format!("{path}.requesters"), groups));
        // An approver who asks cannot approve their own request: if too few others remain,
        // nobody can approve it.
        if raw.self_approval != Some(true) && raw.break_glass != Some(true) {
            let expand = |list: &[String]| -> BTreeSet<String> {
                list.iter()
                    .flat_map(|e| groups.get(e).cloned().unwrap_or_else(|| vec![e.clone()]))
                    .collect()
            };
            let deciders = expand(&approvers);
            let stuck: Vec<String> = deciders
                .iter()
                .filter(|a| requesters.as_ref().is_none_or(|r| expand(r).contains(*a)))
                .filter(|_| deciders.len() - 1 < approvals as usize)
                .cloned()
                .collect();
            if !stuck.is_empty() && deciders.len() >= approvals as usize {
                self.warn(
                    Key(&["resources", name, "approvers"]),
                    format!("{path}.approvers"),
                    format!(
                        "nobody can approve a request from {}: it needs {approvals} approver(s) besides the requester and only {} remain; add approvers, or allow self_approval or break_glass",
                        stuck.join(", "),
                        deciders.len() - 1
                    ),
                );
            }
        }
        if raw.self_approval == Some(true) && approvals == 1 {
            self.warn(
                Key(&["resources", name, "self_approval"]),
                format!("{path}.self_approval"),
                "self_approval with approvals: 1 lets an approver grant themselves access with nobody else looking; consider approvals: 2 or auto_approve with a short max_duration",
            );
        }
        let escalation = self.escalation(
            raw.escalation.as_ref(),
            name,
            &path,
            groups,
            settings.request_ttl,
        );
        let remind = raw
            .remind
            .as_ref()
            .and_then(|r| self.duration(r, &format!("{path}.remind")));
        let mut auto_approve = Vec::new();
        for (i, rule) in raw.auto_approve.iter().flatten().enumerate() {
            let rule_path = format!("{path}.auto_approve[{i}]");
            let requesters =
                self.requesters(&rule.requesters, &format!("{rule_path}.requesters"), groups);
            if rule.requesters.is_empty() {
                self.error(
                    &rule.requesters,
                    format!("{rule_path}.requesters"),
                    "an auto_approve rule names who it applies to",
                );
            }
            let rule_max = self.duration(&rule.max_duration, &format!("{rule_path}.max_duration"));
            if let (Some(rule_max), Some(max)) = (rule_max, max_duration)
                && rule_max > max
            {
                self.warn(
                    &rule.max_duration,
                    format!("{rule_path}.max_duration"),
                    format!(
                        "the rule allows {rule_max} but the resource's max_duration is {max}: nothing over {max} can be asked for at all"
                    ),
                );
            }
            if let Some(rule_max) = rule_max {
                auto_approve.push(AutoApprove {
                    requesters,
                    max_duration: rule_max,
                });
            }
        }
        let reason_pattern = raw.reason_pattern.as_ref().and_then(|p| {
            match regex::RegexBuilder::new(p.as_str())
                .size_limit(REASON_PATTERN_BYTES)
                .build()
            {
                Ok(re) => Some(re),
                Err(e) => {
                    let why = e.to_string();
                    let why = why.lines().last().unwrap_or("not a valid pattern").trim();
                    self.error(
                        p,
                        format!("{path}.reason_pattern"),
                        format!("not a valid pattern: {why}"),
                    );
                    None
                }
            }
        });
        if self.errors.len() != before {
            return None;
        }
        Some(Resource {
            name: name.to_string(),
            description: raw.description.unwrap_or_default(),
            provider: raw.provider.to_string(),
            grant,
            min_duration: min_duration?,
            max_duration: max_duration?,
            default_duration: default_duration?,
            channel: raw.channel.to_string(),
            approvers,
            approvals,
            self_approval: raw.self_approval.unwrap_or(false),
            break_glass: raw.break_glass.unwrap_or(false),
            escalation,
            remind,
            // A pattern implies a reason: an empty one never names a ticket.
            reason_required: raw.reason_required.unwrap_or(false) || reason_pattern.is_some(),
            reason_pattern,
            requesters,
            auto_approve,
        })
    }
}
