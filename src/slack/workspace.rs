//! The one workspace jitbot serves. A payload signed with our secret but sent from another
//! workspace (an org-wide Enterprise Grid install reaches many) is refused: the policy's Slack
//! user IDs were written for one of them.

use std::time::Duration;

use tokio::sync::OnceCell;

use super::SlackApi;
use super::client::BotIdentity;

/// How long a payload may wait for `auth.test` when the workspace is not known yet.
const LEARN_DEADLINE: Duration = Duration::from_secs(2);

/// Which workspace (`T…`) or Enterprise Grid org (`E…`) payloads must come from.
pub struct Workspace {
    /// `SLACK_TEAM_ID`, when set: it decides.
    configured: Option<String>,
    /// Else what `auth.test` said, learned once.
    learned: OnceCell<String>,
    slack: SlackApi,
}

/// Whether a payload's workspace is ours.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    Ours,
    Foreign,
    /// `auth.test` has not answered yet (Slack unreachable): nothing can be checked.
    Unknown,
}

impl Workspace {
    pub fn new(configured: Option<String>, slack: SlackApi) -> Self {
        Self {
            configured: configured.filter(|t| !t.trim().is_empty()),
            learned: OnceCell::new(),
            slack,
        }
    }

    /// The workspace or org served: `SLACK_TEAM_ID`, else `auth.test`'s (its org for an
    /// org-wide install). An error when Slack did not say.
    pub async fn expected(&self) -> anyhow::Result<&str> {
        if let Some(team) = &self.configured {
            return Ok(team);
        }
        let team = self
            .learned
            .get_or_try_init(|| async {
                let me = self.slack.auth_test().await?;
                let team = Self::team_of(&me);
                anyhow::ensure!(!team.is_empty(), "auth.test named no team");
                tracing::info!(team = %team, "serving the workspace auth.test names");
                Ok(team)
            })
            .await?;
        Ok(team)
    }

    /// What `auth.test` answered at start, so payloads need not wait for it.
    pub fn learned_from(&self, me: &BotIdentity) {
        let team = Self::team_of(me);
        if self.configured.is_none() && !team.is_empty() && self.learned.set(team.clone()).is_ok() {
            tracing::info!(team = %team, "serving the workspace auth.test names");
        }
    }

    fn team_of(me: &BotIdentity) -> String {
        match &me.enterprise_id {
            Some(org) if me.is_enterprise_install => org.clone(),
            _ => me.team_id.clone(),
        }
    }

    /// Is a payload from `team_id` (in org `enterprise_id`) ours?
    pub async fn admits(&self, team_id: &str, enterprise_id: &str) -> Admission {
        let expected = match tokio::time::timeout(LEARN_DEADLINE, self.expected()).await {
            Ok(Ok(team)) => team,
            Ok(Err(e)) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "cannot tell which workspace to serve"
                );
                return Admission::Unknown;
            }
            Err(_) => return Admission::Unknown,
        };
        let ours = if expected.starts_with('E') {
            enterprise_id == expected
        } else {
            team_id == expected
        };
        if ours {
            Admission::Ours
        } else {
            Admission::Foreign
        }
    }
}
