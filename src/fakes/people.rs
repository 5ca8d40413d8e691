//! The fake Slack's directory: user groups (`usergroups.users.list`) and the account behind an
//! email (`users.lookupByEmail`), answered as Slack answers them: an unknown group is
//! `no_such_subteam`, a free workspace `plan_upgrade_required`, an unknown email
//! `users_not_found`.

use std::collections::HashMap;

use serde_json::{Value, json};

#[derive(Default)]
pub(super) struct People {
    /// User group ID → its members.
    pub usergroups: HashMap<String, Vec<String>>,
    /// A free workspace: it has no user groups at all.
    pub no_usergroups: bool,
}

fn arg<'a>(body: &'a Value, key: &str) -> &'a str {
    body.get(key).and_then(Value::as_str).unwrap_or("")
}

impl People {
    /// The error Slack would answer `method` with, if any.
    pub fn refusal(
        &self,
        emails: &HashMap<String, String>,
        method: &str,
        body: &Value,
    ) -> Option<String> {
        match method {
            "usergroups.users.list" if self.no_usergroups => Some("plan_upgrade_required".into()),
            "usergroups.users.list" if !self.usergroups.contains_key(arg(body, "usergroup")) => {
                Some("no_such_subteam".into())
            }
            "users.lookupByEmail" if user_with(emails, arg(body, "email")).is_none() => {
                Some("users_not_found".into())
            }
            _ => None,
        }
    }

    /// The answer to `method` once [`People::refusal`] found nothing wrong; `None` for the
    /// methods this part does not answer.
    pub fn answer(
        &self,
        emails: &HashMap<String, String>,
        method: &str,
        body: &Value,
    ) -> Option<Value> {
        match method {
            "usergroups.users.list" => {
                let members = self.usergroups.get(arg(body, "usergroup"))?;
                Some(json!({"ok": true, "users": members}))
            }
            "users.lookupByEmail" => {
                let email = arg(body, "email");
                let user = user_with(emails, email)?;
                Some(
                    json!({"ok": true, "user": {"id": user, "deleted": false, "is_bot": false,
                                                 "profile": {"email": email}}}),
                )
            }
            _ => None,
        }
    }
}

/// The user whose profile email is `email` (Slack compares emails without case).
fn user_with(emails: &HashMap<String, String>, email: &str) -> Option<String> {
    emails
        .iter()
        .find(|(_, e)| e.eq_ignore_ascii_case(email))
        .map(|(user, _)| user.clone())
}
