//! What `serve` checks before it serves: the whole configuration and policy at once (before the
//! database), the provider variables, identities that must never be granted to, and the bot
//! token with Slack.

use super::*;

/// What `serve` needs of a policy beyond `check`: every variable its providers name is set
/// (all missing ones named at once).
pub fn ready_to_serve(policy: &Policy, env: &Env) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    for (name, provider) in &policy.providers {
        for var in provider.env_vars() {
            if let Err(e) = env.require(var) {
                problems.push(format!("{e} (provider {name})"));
            }
        }
    }
    for (name, group) in &policy.pagerduty {
        if let Err(e) = env.require(&group.token_env) {
            problems.push(format!("{e} (PagerDuty group {name})"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(UserError(problems.join("\n")).into())
    }
}

/// How long `serve` (or a reload) waits for Slack and PagerDuty to say who is in the policy's
/// user groups and on call, before it goes on and asks again in the background.
const DIRECTORY_CHECK_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads the policy's Slack user groups and PagerDuty schedules: a workspace without user
/// groups, or a group it does not have, refuses the policy now rather than at the first click.
pub(super) async fn check_directory(
    directory: &crate::directory::Directory,
    policy: &Policy,
) -> anyhow::Result<()> {
    if policy.all_usergroups().is_empty() && policy.pagerduty.is_empty() {
        return Ok(());
    }
    match tokio::time::timeout(DIRECTORY_CHECK_DEADLINE, directory.check(policy)).await {
        Ok(checked) => checked,
        Err(_) => {
            tracing::warn!(
                "Slack or PagerDuty did not answer in time to read the policy's user groups and on-call schedules; going on, asking again in the background"
            );
            Ok(())
        }
    }
}

/// How long `serve` (or a reload) waits for a postgres provider to say who its superusers are.
const PRIVILEGE_CHECK_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// Refuses a policy that maps a person to a provider's superuser or to the login jitbot itself
/// connects as (`check` refuses the built-in names; this asks each postgres provider), or to the
/// principal jitbot runs as at a cloud provider. A provider
/// that cannot be reached now is logged: its grants check again and refuse such a login.
pub async fn refuse_privileged_identities(policy: &Policy, env: &Env) -> anyhow::Result<()> {
    let mut found = Vec::new();
    for (name, config) in &policy.providers {
        let crate::domain::ProviderConfig::Postgres { url_env } = config else {
            continue;
        };
        let people: Vec<(&String, &String)> = policy
            .identities
            .iter()
            .filter_map(|(user, ids)| ids.get("postgres").map(|login| (user, login)))
            .collect();
        if people.is_empty() {
            continue;
        }
        // Unset: `serve` refuses that on its own; `check` only warns.
        let Some(url) = env.secret(url_env)? else {
            continue;
        };
        let logins: Vec<String> = people.iter().map(|(_, l)| (*l).clone()).collect();
        let check = crate::providers::postgres::privileged_logins(url.expose(), &logins);
        match tokio::time::timeout(PRIVILEGE_CHECK_DEADLINE, check).await {
            Ok(Ok(privileged)) => {
                for (login, why) in privileged {
                    for (user, _) in people.iter().filter(|(_, l)| **l == login) {
                        found.push(format!(
                            "identities.{user}.postgres: `{login}` {why} at provider {name}; jitbot must never grant to or revoke from it"
                        ));
                    }
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(provider = %name, error = format!("{e:#}"), "could not check the postgres identities for superusers; each grant checks again")
            }
            Err(_) => {
                tracing::warn!(provider = %name, "the postgres provider did not answer in time to check identities for superusers; each grant checks again")
            }
        }
    }
    found.extend(refuse_own_principal(policy, env).await);
    if found.is_empty() {
        Ok(())
    } else {
        Err(UserError(found.join("\n")).into())
    }
}

/// The `identities` key each cloud provider kind grants to.
fn cloud_identity_key(kind: &str) -> Option<&'static str> {
    match kind {
        "aws_iam" => Some("aws_iam_user"),
        "aws_sso" => Some("aws_sso_user"),
        "gcp_iam" => Some("gcp_member"),
        _ => None,
    }
}

/// Of the identities the policy names for its cloud providers, those that are the principal
/// jitbot itself runs as there (STS `GetCallerIdentity`, the service account's email), each
/// with why; providers are asked at once, each within [`PRIVILEGE_CHECK_DEADLINE`]. A provider
/// that cannot say now is logged: its grants ask again and refuse such an identity.
async fn refuse_own_principal(policy: &Policy, env: &Env) -> Vec<String> {
    let providers = match crate::providers::Providers::new(env.clone()) {
        Ok(p) => p,
        Err(e) => return vec![format!("cannot build the providers: {e:#}")],
    };
    let checks = policy.providers.iter().filter_map(|(name, config)| {
        let key = cloud_identity_key(config.kind())?;
        let people: Vec<(&String, &String)> = policy
            .identities
            .iter()
            .filter_map(|(user, ids)| ids.get(key).map(|id| (user, id)))
            .collect();
        if people.is_empty() {
            return None;
        }
        // Unset variables and builds without the feature are refused elsewhere.
        let provider = providers.get(config, PRIVILEGE_CHECK_DEADLINE).ok()?;
        let resources: Vec<&crate::domain::policy::Resource> = policy
            .resources
            .values()
            .filter(|r| r.provider == *name)
            .collect();
        Some(async move {
            let ask = async {
                let mut found = std::collections::BTreeSet::new();
                for resource in &resources {
                    for (user, id) in &people {
                        let spec = crate::providers::GrantSpec {
                            request_id: 0,
                            resource: resource.name.clone(),
                            requester: (*user).clone(),
                            identity: policy.identity(user, config.kind()).unwrap_or_default(),
                            grant: resource.grant.clone(),
                            approved_by: Vec::new(),
                            auto_approved: false,
                            expires_at: None,
                            reason: String::new(),
                        };
                        if let Some(why) = provider.refuses(&spec).await? {
                            found.insert(format!(
                                "identities.{user}.{key}: `{id}`: {why}, at provider {name}; jitbot must never grant to it"
                            ));
                        }
                    }
                }
                anyhow::Ok(found)
            };
            match tokio::time::timeout(PRIVILEGE_CHECK_DEADLINE, ask).await {
                Ok(Ok(found)) => found.into_iter().collect(),
                Ok(Err(e)) => {
                    tracing::warn!(provider = %name, error = format!("{e:#}"), "could not ask who jitbot runs as at this provider; each grant asks again");
                    Vec::new()
                }
                Err(_) => {
                    tracing::warn!(provider = %name, "the provider did not say in time who jitbot runs as there; each grant asks again");
                    Vec::new()
                }
            }
        })
    });
    futures_util::future::join_all(checks)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// How long `serve` waits for `auth.test` at start before going on without it: short, since a
/// restart while Slack is slow must not hold back the revokes that fell due meanwhile.
const TOKEN_CHECK_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);

/// `auth.test` at start: a token Slack refuses (`invalid_auth`, `token_revoked`, …) stops `serve`
/// with one line; a Slack that does not answer is logged, and checked again in the background.
pub(super) async fn check_bot_token(
    slack: &SlackApi,
) -> anyhow::Result<Option<crate::slack::client::BotIdentity>> {
    match tokio::time::timeout(TOKEN_CHECK_DEADLINE, slack.auth_test()).await {
        Ok(Ok(me)) => Ok(Some(me)),
        Ok(Err(e)) => match crate::slack::SlackError::find(&e) {
            Some(error) if error.is_permanent() => Err(UserError(format!(
                "Slack refuses SLACK_BOT_TOKEN ({}): copy the Bot User OAuth Token (xoxb-…) from the app's OAuth & Permissions page",
                error.code()
            ))
            .into()),
            _ => {
                tracing::warn!(error = format!("{e:#}"), "cannot reach Slack to check the bot token; going on");
                Ok(None)
            }
        },
        Err(_) => {
            tracing::warn!("Slack did not answer auth.test in time; going on");
            Ok(None)
        }
    }
}

/// Everything `serve` needs that can be checked without the database: the configuration, the
/// policy file, and the variables its providers name. Every problem is reported at once, one
/// line each, so an operator fixes them in one go.
pub fn prepare(env: &Env) -> anyhow::Result<(Config, Policy)> {
    let mut problems = Vec::new();
    if let Some(filter) = env.get("JIT_LOG")
        && tracing_subscriber::EnvFilter::try_new(&filter).is_err()
    {
        problems.push(format!(
            "JIT_LOG={filter:?} is not a log filter (examples: info, jitbot=debug,info)"
        ));
    }
    let config = Config::from_env(env)
        .map_err(|e| problems.push(e.to_string()))
        .ok();
    let path: std::path::PathBuf = config
        .as_ref()
        .map(|c| c.policy.clone())
        .unwrap_or_else(|| {
            env.get("JIT_POLICY")
                .unwrap_or_else(|| crate::config::DEFAULT_POLICY.into())
                .into()
        });
    let policy = match Policy::load(&path) {
        Ok((policy, _warnings)) => {
            give_back_freed_memory();
            if let Err(e) = ready_to_serve(&policy, env) {
                problems.push(e.to_string());
            }
            Some(policy)
        }
        Err(e) => {
            problems.push(e.to_string());
            None
        }
    };
    match (config, policy) {
        (Some(config), Some(policy)) if problems.is_empty() => Ok((config, policy)),
        _ => Err(UserError(problems.join("\n")).into()),
    }
}
