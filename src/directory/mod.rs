//! Asks Slack and PagerDuty what the policy leaves to them: the members of Slack user groups and
//! who is on call on a PagerDuty schedule. The answers go to the policy's [`Lookups`], which
//! every decision reads without waiting. They are refreshed in the background, before an
//! escalation step pages, and, for user groups, again at each click (so someone just removed
//! from `@dba-team` cannot approve).
//!
//! Faults: every call has a deadline. A user group Slack cannot list keeps its last answer until
//! it is [`STALE_AFTER`] old, then names nobody. A PagerDuty group whose on-call person cannot be
//! found (PagerDuty down, nobody on call, an email with no Slack account) falls back to its
//! `members`, logged and said on the card.

pub mod pagerduty;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::{Env, UserError};
use crate::domain::Policy;
use crate::domain::policy::{Lookups, OnCall, STALE_AFTER};
use crate::slack::{SlackApi, SlackError};

/// A click re-reads a user group unless Slack answered for it this recently.
pub const CLICK_FRESHNESS: Duration = Duration::from_secs(10);
/// How long a click waits for those answers before it decides on the last ones (Slack wants the
/// click answered within 3 s).
const CLICK_BUDGET: Duration = Duration::from_millis(1_500);
/// Who is on call is asked again when the last answer is older than this.
pub const ON_CALL_FRESHNESS: Duration = Duration::from_secs(60);
/// The background refresh: user groups (Slack allows about 20 lists a minute) and on-call.
pub const USERGROUP_FRESHNESS: Duration = Duration::from_secs(5 * 60);
/// How long an email → Slack user answer is kept.
const EMAIL_FRESHNESS: Duration = Duration::from_secs(10 * 60);
/// How long `/jit request` waits for Slack to say what email a requester's profile shows.
pub const PROFILE_DEADLINE: Duration = Duration::from_millis(1_500);
/// Profile emails remembered at most: beyond, the cache starts over (memory stays bounded).
const MAX_PROFILES: usize = 10_000;

pub struct Directory {
    slack: SlackApi,
    http: reqwest::Client,
    env: Env,
    lookups: Arc<Lookups>,
    /// Email → Slack user (`None`: no account), with when Slack said so.
    emails: Mutex<HashMap<String, (Option<String>, Instant)>>,
    /// Slack user → the email on their profile, with when Slack said so.
    profiles: Mutex<HashMap<String, (Option<String>, Instant)>>,
}

impl Directory {
    pub fn new(slack: SlackApi, env: Env, lookups: Arc<Lookups>) -> anyhow::Result<Self> {
        Ok(Self {
            slack,
            http: pagerduty::client()?,
            env,
            lookups,
            emails: Mutex::new(HashMap::new()),
            profiles: Mutex::new(HashMap::new()),
        })
    }

    /// The email on `user`'s Slack profile (`users.info`), from a recent answer or Slack.
    pub async fn profile_email(&self, user: &str) -> anyhow::Result<Option<String>> {
        if let Some((email, at)) = self
            .profiles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(user)
            && at.elapsed() < EMAIL_FRESHNESS
        {
            return Ok(email.clone());
        }
        let email = self.slack.user_email(user).await?;
        // A profile without an email is asked again next time: its owner may just have fixed it.
        if email.is_some() {
            let mut profiles = self.profiles.lock().unwrap_or_else(|e| e.into_inner());
            if profiles.len() >= MAX_PROFILES {
                profiles.clear();
            }
            profiles.insert(user.to_string(), (email.clone(), Instant::now()));
        }
        Ok(email)
    }

    /// At start and on reload: reads every user group and PagerDuty schedule the policy names.
    /// A workspace without user groups (`plan_upgrade_required`) or a group Slack does not know
    /// is refused here, with one line, not at the first click; Slack or PagerDuty being
    /// unreachable is logged and tried again in the background.
    pub async fn check(&self, policy: &Policy) -> anyhow::Result<()> {
        let failed = self
            .read_usergroups(policy.all_usergroups(), Duration::ZERO)
            .await;
        let mut problems = Vec::new();
        for (id, e) in failed {
            match SlackError::find(&e).map(SlackError::code).as_deref() {
                Some("plan_upgrade_required") => problems.push(format!(
                    "the policy names Slack user group {id}, but this workspace's plan has no user groups (usergroups.users.list: plan_upgrade_required); list user IDs instead"
                )),
                Some("no_such_subteam") => problems.push(format!(
                    "the policy names Slack user group {id}, which this workspace does not have (usergroups.users.list: no_such_subteam)"
                )),
                Some("missing_scope") => problems.push(format!(
                    "the policy names Slack user group {id}, but the app lacks the usergroups:read scope; add it and reinstall the app"
                )),
                _ => log_unread(&id, &e),
            }
        }
        for group in policy.pagerduty.keys() {
            self.refresh_on_call(policy, group, Duration::ZERO).await;
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(UserError(problems.join("\n")).into())
        }
    }

    /// The background round: user groups older than [`USERGROUP_FRESHNESS`], on-call answers
    /// older than [`ON_CALL_FRESHNESS`].
    pub async fn refresh(&self, policy: &Policy) {
        self.refresh_usergroups(policy.all_usergroups(), USERGROUP_FRESHNESS)
            .await;
        for group in policy.pagerduty.keys() {
            self.refresh_on_call(policy, group, ON_CALL_FRESHNESS).await;
        }
    }

    /// Before a click or `/jit approve|deny` is judged: the user groups among `approvers` are
    /// read again (unless Slack answered within [`CLICK_FRESHNESS`]), and who is on call if
    /// that answer is old, all within [`CLICK_BUDGET`]; past it the last answers decide.
    pub async fn before_decision(&self, policy: &Policy, approvers: &[&[String]]) {
        let usergroups: BTreeSet<&str> = approvers
            .iter()
            .flat_map(|a| policy.usergroups_in(a))
            .collect();
        let on_call: BTreeSet<&String> = approvers
            .iter()
            .flat_map(|a| a.iter())
            .filter(|e| policy.pagerduty.contains_key(*e))
            .collect();
        if usergroups.is_empty() && on_call.is_empty() {
            return;
        }
        let work = async {
            self.refresh_usergroups(usergroups, CLICK_FRESHNESS).await;
            for group in on_call {
                self.refresh_on_call(policy, group, ON_CALL_FRESHNESS).await;
            }
        };
        if tokio::time::timeout(CLICK_BUDGET, work).await.is_err() {
            tracing::warn!(
                "Slack or PagerDuty did not answer in time before a decision; deciding on their last answers"
            );
        }
    }

    /// Reads the user groups whose last answer is older than `max_age`; logs those that failed.
    pub async fn refresh_usergroups(&self, ids: BTreeSet<&str>, max_age: Duration) {
        for (id, e) in self.read_usergroups(ids, max_age).await {
            log_unread(&id, &e);
        }
    }

    /// Reads the user groups whose last answer is older than `max_age`; returns those that
    /// failed, with why.
    async fn read_usergroups(
        &self,
        ids: BTreeSet<&str>,
        max_age: Duration,
    ) -> Vec<(String, anyhow::Error)> {
        let mut failed = Vec::new();
        for id in ids {
            if self
                .lookups
                .usergroup_age(id)
                .is_some_and(|age| age < max_age)
            {
                continue;
            }
            match self.slack.usergroup_members(id).await {
                Ok(members) => self.lookups.set_usergroup(id, members),
                Err(e) => failed.push((id.to_string(), e)),
            }
        }
        failed
    }

    /// Asks PagerDuty who is on call for `group` unless its last answer is younger than
    /// `max_age`, and maps the person to Slack by email. Any failure is a fallback to the
    /// group's members, logged with why.
    pub async fn refresh_on_call(&self, policy: &Policy, group: &str, max_age: Duration) {
        let Some(config) = policy.pagerduty.get(group) else {
            return;
        };
        if self
            .lookups
            .on_call_age(group)
            .is_some_and(|age| age < max_age)
        {
            return;
        }
        let answer = match self.find_on_call(config).await {
            Ok(person) => OnCall::Person(person),
            Err(why) => {
                tracing::warn!(
                    group,
                    reason = %why,
                    "cannot tell who is on call from PagerDuty; the group's members stand in"
                );
                OnCall::Fallback(why)
            }
        };
        self.lookups.set_on_call(group, answer);
    }

    /// The Slack user on call on a PagerDuty schedule, or why it cannot be said.
    async fn find_on_call(
        &self,
        config: &crate::domain::policy::PagerDutyGroup,
    ) -> Result<String, String> {
        let token = match self.env.secret(&config.token_env) {
            Ok(Some(token)) => token,
            Ok(None) => return Err(format!("{} is not set", config.token_env)),
            Err(e) => return Err(format!("{e:#}")),
        };
        let email = match pagerduty::on_call_email(&self.http, config, &token).await {
            Ok(Some(email)) => email,
            Ok(None) => {
                return Err(format!(
                    "PagerDuty has nobody on call on schedule {}",
                    config.schedule_id
                ));
            }
            Err(e) => return Err(format!("PagerDuty {e}")),
        };
        match self.slack_user(&email).await {
            Ok(Some(user)) => Ok(user),
            Ok(None) => Err(format!(
                "{email}, on call in PagerDuty, has no Slack account"
            )),
            Err(e) => Err(format!(
                "cannot find {email} in Slack ({})",
                SlackError::find(&e)
                    .map(SlackError::code)
                    .unwrap_or_else(|| "no answer".into())
            )),
        }
    }

    /// The Slack user with `email`, from a recent answer or `users.lookupByEmail`.
    async fn slack_user(&self, email: &str) -> anyhow::Result<Option<String>> {
        let key = email.to_ascii_lowercase();
        if let Some((user, at)) = self
            .emails
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            && at.elapsed() < EMAIL_FRESHNESS
        {
            return Ok(user.clone());
        }
        let user = self.slack.user_by_email(email).await?;
        self.emails
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, (user.clone(), Instant::now()));
        Ok(user)
    }

    /// Refreshes in the background every `every`, reading the policy in force each round.
    pub async fn run(self: Arc<Self>, policy: Arc<crate::domain::LivePolicy>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            self.refresh(&policy.now()).await;
        }
    }
}

fn log_unread(id: &str, e: &anyhow::Error) {
    tracing::warn!(
        usergroup = id,
        error = format!("{e:#}"),
        "cannot list a Slack user group's members; its last answer stands for up to {} min",
        STALE_AFTER.as_secs() / 60
    );
}
