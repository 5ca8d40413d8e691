//! Who is who in Slack: the members of a user group (`usergroups.users.list`, needs
//! `usergroups:read`) and the account behind an email (`users.lookupByEmail`, needs
//! `users:read.email`).

use serde_json::Value;

use super::SlackApi;
use super::client::SlackError;

impl SlackApi {
    /// The active members of user group `id`. A free workspace answers `plan_upgrade_required`
    /// (it has no user groups); an unknown group `no_such_subteam`: both are permanent errors.
    pub async fn usergroup_members(&self, id: &str) -> anyhow::Result<Vec<String>> {
        let session = self.client.open_session(&self.token);
        let params = vec![("usergroup", Some(id))];
        let send = session.http_session_api.http_get::<Value, _, _>(
            "usergroups.users.list",
            &params,
            None,
        );
        let answer = self.call("usergroups.users.list", "", send).await?;
        let users = answer
            .get("users")
            .and_then(Value::as_array)
            .ok_or_else(|| SlackError::Transient {
                method: "usergroups.users.list",
                detail: "an answer without `users`".into(),
            })?;
        Ok(users
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect())
    }

    /// The Slack user whose profile has `email`: `None` when nobody has it (`users_not_found`),
    /// or the account is deactivated or a bot.
    pub async fn user_by_email(&self, email: &str) -> anyhow::Result<Option<String>> {
        let session = self.client.open_session(&self.token);
        let params = vec![("email", Some(email))];
        let send =
            session
                .http_session_api
                .http_get::<Value, _, _>("users.lookupByEmail", &params, None);
        let answer = match self.call("users.lookupByEmail", "", send).await {
            Ok(answer) => answer,
            Err(e) if SlackError::find(&e).is_some_and(|s| s.code() == "users_not_found") => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let user = answer.get("user").unwrap_or(&Value::Null);
        let flag = |key: &str| user.get(key).and_then(Value::as_bool).unwrap_or(false);
        if flag("deleted") || flag("is_bot") {
            return Ok(None);
        }
        Ok(user
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| crate::domain::policy::is_user_id(id))
            .map(str::to_string))
    }
}
