//! Layer (c) for `assume_role` grants: the role sessions a person opened during the grant stop
//! working at the revoke, not at their own expiry (up to the role's maximum session duration).
//!
//! The grant lets the person assume the role only under a session named after their IAM user
//! (`sts:RoleSessionName` = `${aws:username}`), so their sessions are exactly those whose
//! `aws:userid` ends in `:<user>`. At the revoke, after the user's permission to assume is gone,
//! jitbot puts an inline policy on the role that denies everything to those sessions if they were
//! issued before now (`aws:TokenIssueTime`): sessions opened later, under a later grant, are not
//! touched. One such policy is kept per person (a newer one covers all that an older one did),
//! and each is deleted once the role's maximum session duration has passed since it was put:
//! every session it denied has expired by then. So the role's policies stay few and small.
//!
//! Only a role in the account jitbot runs in can be changed this way; for a role elsewhere the
//! revoke ends the permission to assume (layers a and b) and logs that layer (c) is out of reach.

use anyhow::{Context, bail};
use aws_sdk_iam::Client;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::{gone_already, no_such_entity};
use crate::providers::aws::describe;

/// Names of jitbot's session cuts: `jitbot-cut-<unix seconds>-<user>`.
const CUT_PREFIX: &str = "jitbot-cut-";
/// IAM's default maximum session duration for a role, should `GetRole` not say.
const DEFAULT_MAX_SESSION_SECS: i64 = 3600;

pub fn cut_name(user: &str, at: DateTime<Utc>) -> String {
    format!("{CUT_PREFIX}{}-{user}", at.timestamp())
}

/// A cut's time and user, from its name.
fn parse_cut(name: &str) -> Option<(i64, &str)> {
    let (seconds, user) = name.strip_prefix(CUT_PREFIX)?.split_once('-')?;
    Some((seconds.parse().ok()?, user))
}

/// Denies everything to `user`'s sessions of the role issued before `at`.
pub fn cut_document(user: &str, at: DateTime<Utc>) -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "JitbotEndedSessions",
            "Effect": "Deny",
            "Action": "*",
            "Resource": "*",
            "Condition": {
                "StringLike": {"aws:userid": format!("*:{user}")},
                "DateLessThan": {"aws:TokenIssueTime": at.format("%Y-%m-%dT%H:%M:%SZ").to_string()}
            }
        }]
    })
}

/// Ends `user`'s sessions of `role` issued before now, prunes cuts that have done their work,
/// and reads the new cut back (the receipt).
pub async fn cut_sessions(client: &Client, role: &str, user: &str) -> anyhow::Result<()> {
    // A whole second past now: a session issued in this second, before the permission to
    // assume was deleted, is still cut.
    let now = Utc::now();
    let at = DateTime::from_timestamp(now.timestamp() + 1, 0).context("the time")?;
    let max_session = match client.get_role().role_name(role).send().await {
        Ok(found) => found
            .role()
            .and_then(|r| r.max_session_duration())
            .map_or(DEFAULT_MAX_SESSION_SECS, i64::from),
        // A role that is gone has no sessions left to end.
        Err(e) if no_such_entity(&e) => return Ok(()),
        Err(e) => return Err(describe("IAM GetRole", &e)),
    };
    let name = cut_name(user, at);
    client
        .put_role_policy()
        .role_name(role)
        .policy_name(&name)
        .policy_document(cut_document(user, at).to_string())
        .send()
        .await
        .map_err(|e| describe("IAM PutRolePolicy", &e))?;
    // Older cuts of this person's are covered by the new one; anyone's older than the longest
    // session have nothing left to deny.
    for old in role_policies(client, role).await? {
        let Some((seconds, whose)) = parse_cut(&old) else {
            continue;
        };
        let done = seconds + max_session < now.timestamp();
        if old != name && (whose == user || done) {
            client
                .delete_role_policy()
                .role_name(role)
                .policy_name(&old)
                .send()
                .await
                .map(|_| ())
                .or_else(|e| gone_already("IAM DeleteRolePolicy", &e))?;
        }
    }
    match client
        .get_role_policy()
        .role_name(role)
        .policy_name(&name)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if no_such_entity(&e) => {
            bail!(
                "the role {role} does not show the policy ending {user}'s sessions after it was put"
            )
        }
        Err(e) => Err(describe("IAM GetRolePolicy", &e)),
    }
}

async fn role_policies(client: &Client, role: &str) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    let mut marker = None;
    loop {
        let page = client
            .list_role_policies()
            .role_name(role)
            .set_marker(marker)
            .send()
            .await
            .map_err(|e| describe("IAM ListRolePolicies", &e))?;
        names.extend(page.policy_names().iter().cloned());
        if !page.is_truncated() {
            return Ok(names);
        }
        marker = page.marker().map(str::to_string);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_is_named_after_its_time_and_person_and_denies_only_their_older_sessions() {
        let at = DateTime::from_timestamp(1_780_000_000, 0).unwrap();
        let name = cut_name("alice.smith@corp", at);
        assert_eq!(name, "jitbot-cut-1780000000-alice.smith@corp");
        assert_eq!(parse_cut(&name), Some((1_780_000_000, "alice.smith@corp")));
        assert_eq!(parse_cut("jitbot-42"), None);
        assert_eq!(parse_cut("jitbot-cut-x-alice"), None);
        let d = cut_document("alice", at);
        let condition = &d["Statement"][0]["Condition"];
        assert_eq!(condition["StringLike"]["aws:userid"], "*:alice");
        assert_eq!(
            condition["DateLessThan"]["aws:TokenIssueTime"],
            "2026-05-28T20:26:40Z"
        );
        assert_eq!(d["Statement"][0]["Effect"], "Deny");
    }
}
