//! AWS IAM, with the official SDK and its credential chain (environment, shared profile, SSO,
//! web identity / IRSA, ECS and EC2 roles): jitbot needs no long-lived admin keys.
//!
//! Grant shapes and what ends the access:
//! - `{ policy: <IAM policy document> }`: an inline user policy named `jitbot-<request id>`, every
//!   statement given `DateLessThan aws:CurrentTime <end>`: the access ends at the end even if
//!   jitbot is down (layer a); the revoke deletes it (layer b); the user's own keys and session
//!   tokens are judged by their policies at each call, so nothing issued earlier outlives it.
//! - `{ assume_role: <role ARN> }`: an inline user policy allowing `sts:AssumeRole` on the role
//!   until the end (layers a and b). A role session already issued runs until its own expiry
//!   (the role's maximum session duration): keep that short for roles handed out this way.
//! - `{ policy_arn }` (attach) and `{ group }` (membership): the revoke only (layer b).
//!
//! Receipts: after a grant the user's inline policy, attachments or groups are read back and must
//! show it; after a revoke they must not. `NoSuchEntity` on a delete counts as already gone.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use async_trait::async_trait;
use aws_sdk_iam::Client;
use aws_sdk_iam::error::ProvideErrorMetadata;
use serde_json::{Value, json};

use super::aws::{Caller, caller, describe, sdk_config};
use super::{GrantSpec, Provider};
use crate::config::Env;

/// What a grant does at IAM.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// An inline policy (the document, before the time condition is added).
    Policy(Value),
    AssumeRole(String),
    PolicyArn(String),
    Group(String),
}

const SHAPES: &str = "an aws_iam grant is `{ policy: <IAM policy document> }`, `{ assume_role: <role ARN> }`, `{ policy_arn: <managed policy ARN> }` or `{ group: <group name> }`";

fn is_arn(s: &str, kind: &str) -> bool {
    // arn:<partition>:iam::<account>:<kind>/<path and name>
    let parts: Vec<&str> = s.splitn(6, ':').collect();
    parts.len() == 6
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[2] == "iam"
        && parts[3].is_empty()
        && (parts[4].len() == 12 && parts[4].chars().all(|c| c.is_ascii_digit())
            || parts[4] == "aws")
        && parts[5].starts_with(&format!("{kind}/"))
        && parts[5].len() > kind.len() + 1
}

impl Shape {
    pub fn parse(grant: &serde_json::Map<String, Value>) -> Result<Shape, String> {
        if grant.len() != 1 {
            return Err(SHAPES.to_string());
        }
        let (key, value) = grant.iter().next().ok_or_else(|| SHAPES.to_string())?;
        let text = || {
            value
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("`{key}` must be a string; {SHAPES}"))
        };
        match key.as_str() {
            "policy" => {
                let statements = statements_of(value)?;
                if statements.is_empty() {
                    return Err("the policy has no `Statement`".into());
                }
                for s in statements {
                    let effect = s.get("Effect").and_then(Value::as_str);
                    if !matches!(effect, Some("Allow" | "Deny")) {
                        return Err("each statement needs `Effect: Allow` or `Effect: Deny`".into());
                    }
                    if s.get("Action").is_none() && s.get("NotAction").is_none() {
                        return Err("each statement needs `Action` (or `NotAction`)".into());
                    }
                }
                Ok(Shape::Policy(value.clone()))
            }
            "assume_role" => {
                let arn = text()?;
                if !is_arn(&arn, "role") {
                    return Err(format!(
                        "`{arn}` is not a role ARN such as arn:aws:iam::123456789012:role/jit-admin"
                    ));
                }
                Ok(Shape::AssumeRole(arn))
            }
            "policy_arn" => {
                let arn = text()?;
                if !is_arn(&arn, "policy") {
                    return Err(format!(
                        "`{arn}` is not a policy ARN such as arn:aws:iam::aws:policy/ReadOnlyAccess"
                    ));
                }
                Ok(Shape::PolicyArn(arn))
            }
            "group" => {
                let group = text()?;
                if group.is_empty()
                    || group.len() > 128
                    || !group
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c))
                {
                    return Err(format!("`{group}` is not an IAM group name"));
                }
                Ok(Shape::Group(group))
            }
            other => Err(format!("unknown key `{other}`; {SHAPES}")),
        }
    }

    /// Does the access end at the target by itself (a time condition)?
    pub fn ends_by_itself(&self) -> bool {
        matches!(self, Shape::Policy(_) | Shape::AssumeRole(_))
    }
}

/// A document's statements (one object or a list).
fn statements_of(document: &Value) -> Result<Vec<&serde_json::Map<String, Value>>, String> {
    let not_a_document =
        || "`policy` is an IAM policy document: `{ Version, Statement }`".to_string();
    let statement = document
        .as_object()
        .and_then(|d| d.get("Statement"))
        .ok_or_else(not_a_document)?;
    match statement {
        Value::Array(list) => list
            .iter()
            .map(|s| s.as_object().ok_or_else(not_a_document))
            .collect(),
        Value::Object(one) => Ok(vec![one]),
        _ => Err(not_a_document()),
    }
}

/// The inline policy document a grant puts on the user: every statement ends at `end`.
pub fn inline_document(shape: &Shape, end: &str) -> anyhow::Result<Value> {
    let mut document = match shape {
        Shape::Policy(document) => document.clone(),
        Shape::AssumeRole(arn) => json!({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": arn}]
        }),
        _ => bail!("this grant has no inline policy"),
    };
    let with_end = |s: &mut serde_json::Map<String, Value>| {
        let condition = s
            .entry("Condition")
            .or_insert_with(|| json!({}))
            .as_object_mut();
        if let Some(condition) = condition {
            let before = condition.entry("DateLessThan").or_insert_with(|| json!({}));
            if let Some(before) = before.as_object_mut() {
                before.insert("aws:CurrentTime".into(), json!(end));
            }
        }
    };
    match document.get_mut("Statement") {
        Some(Value::Array(list)) => list
            .iter_mut()
            .filter_map(Value::as_object_mut)
            .for_each(with_end),
        Some(Value::Object(one)) => with_end(one),
        _ => bail!("the policy has no statements"),
    }
    if let Some(d) = document.as_object_mut() {
        d.entry("Version").or_insert_with(|| json!("2012-10-17"));
    }
    Ok(document)
}

pub fn policy_name(request_id: i32) -> String {
    format!("jitbot-{request_id}")
}

pub struct AwsIamProvider {
    env: Env,
    region: Option<String>,
    endpoint_url: Option<String>,
    timeout: Duration,
    client: tokio::sync::OnceCell<(Client, aws_config::SdkConfig)>,
    /// Who jitbot is at AWS, asked once.
    me: tokio::sync::OnceCell<Caller>,
}

/// A delete that found nothing to delete: already gone, which is what it was for.
fn gone_already<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
    call: &str,
    e: &aws_sdk_iam::error::SdkError<E>,
) -> anyhow::Result<()> {
    if no_such_entity(e) {
        Ok(())
    } else {
        Err(describe(call, e))
    }
}

fn no_such_entity<E: ProvideErrorMetadata>(e: &aws_sdk_iam::error::SdkError<E>) -> bool {
    e.as_service_error()
        .and_then(ProvideErrorMetadata::code)
        .is_some_and(|c| c == "NoSuchEntity")
}

impl AwsIamProvider {
    pub fn new(
        env: Env,
        region: Option<String>,
        endpoint_url: Option<String>,
        timeout: Duration,
    ) -> Self {
        Self {
            env,
            region,
            endpoint_url,
            timeout,
            client: tokio::sync::OnceCell::new(),
            me: tokio::sync::OnceCell::new(),
        }
    }

    async fn client(&self) -> anyhow::Result<Client> {
        let client = self
            .client
            .get_or_try_init(|| async {
                let config = sdk_config(
                    &self.env,
                    self.region.as_deref(),
                    self.endpoint_url.as_deref(),
                    self.timeout,
                )
                .await?;
                anyhow::Ok((Client::new(&config), config))
            })
            .await?;
        Ok(client.0.clone())
    }

    /// The principal jitbot runs as, as STS says (asked once).
    async fn me(&self) -> anyhow::Result<Caller> {
        self.client().await?;
        let me = self
            .me
            .get_or_try_init(|| async {
                let (_, config) = self.client.get().context("the IAM client")?;
                caller(config).await
            })
            .await?;
        Ok(me.clone())
    }

    async fn attached(&self, client: &Client, user: &str) -> anyhow::Result<Vec<String>> {
        let mut arns = Vec::new();
        let mut marker = None;
        loop {
            let page = client
                .list_attached_user_policies()
                .user_name(user)
                .set_marker(marker)
                .send()
                .await
                .map_err(|e| describe("IAM ListAttachedUserPolicies", &e))?;
            arns.extend(
                page.attached_policies()
                    .iter()
                    .filter_map(|p| p.policy_arn().map(str::to_string)),
            );
            if !page.is_truncated() {
                return Ok(arns);
            }
            marker = page.marker().map(str::to_string);
        }
    }

    async fn groups(&self, client: &Client, user: &str) -> anyhow::Result<Vec<String>> {
        let mut groups = Vec::new();
        let mut marker = None;
        loop {
            let page = client
                .list_groups_for_user()
                .user_name(user)
                .set_marker(marker)
                .send()
                .await
                .map_err(|e| describe("IAM ListGroupsForUser", &e))?;
            groups.extend(page.groups().iter().map(|g| g.group_name().to_string()));
            if !page.is_truncated() {
                return Ok(groups);
            }
            marker = page.marker().map(str::to_string);
        }
    }

    /// Does the user have the inline policy `name`?
    async fn has_inline(&self, client: &Client, user: &str, name: &str) -> anyhow::Result<bool> {
        match client
            .get_user_policy()
            .user_name(user)
            .policy_name(name)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if no_such_entity(&e) => Ok(false),
            Err(e) => Err(describe("IAM GetUserPolicy", &e)),
        }
    }

    /// Does the user hold what `shape` gives, as IAM says now?
    async fn shows(
        &self,
        client: &Client,
        shape: &Shape,
        user: &str,
        id: i32,
    ) -> anyhow::Result<bool> {
        match shape {
            Shape::Policy(_) | Shape::AssumeRole(_) => {
                self.has_inline(client, user, &policy_name(id)).await
            }
            Shape::PolicyArn(arn) => Ok(self.attached(client, user).await?.contains(arn)),
            Shape::Group(group) => Ok(self.groups(client, user).await?.contains(group)),
        }
    }
}

fn user_of(spec: &GrantSpec) -> anyhow::Result<String> {
    spec.identity
        .get("aws_iam_user")
        .filter(|u| !u.is_empty())
        .cloned()
        .ok_or_else(|| {
            anyhow!(
                "{} has no IAM user: add `aws_iam_user` under identities",
                spec.requester
            )
        })
}

#[async_trait]
impl Provider for AwsIamProvider {
    /// An attachment or group membership the user already has, and no running grant of jitbot's
    /// gave (those are counted, see `access_key`), was given by someone else: it is left as it
    /// is, and not removed at the end. An inline policy named
    /// after this request is never anyone else's.
    async fn holds(&self, spec: &GrantSpec) -> anyhow::Result<bool> {
        let shape = Shape::parse(&spec.grant).map_err(|e| anyhow!(e))?;
        if shape.ends_by_itself() {
            return Ok(false);
        }
        let user = user_of(spec)?;
        let client = self.client().await?;
        self.shows(&client, &shape, &user, spec.request_id).await
    }

    /// An attachment or a group membership is one fact per user, however many grants asked for
    /// it; an inline policy is named after its request.
    fn access_key(&self, spec: &GrantSpec) -> Option<String> {
        let user = user_of(spec).ok()?;
        match Shape::parse(&spec.grant).ok()? {
            Shape::PolicyArn(arn) => Some(format!("user={user}\npolicy_arn={arn}")),
            Shape::Group(group) => Some(format!("user={user}\ngroup={group}")),
            Shape::Policy(_) | Shape::AssumeRole(_) => None,
        }
    }

    /// jitbot's own IAM user is never granted to, and the role jitbot runs as is never handed
    /// out with `assume_role`.
    async fn refuses(&self, spec: &GrantSpec) -> anyhow::Result<Option<String>> {
        let shape = Shape::parse(&spec.grant).map_err(|e| anyhow!(e))?;
        let user = user_of(spec)?;
        let me = self.me().await?;
        if me.user() == Some(user.as_str()) {
            return Ok(Some(format!(
                "IAM user `{user}` is the principal jitbot itself runs as ({})",
                me.arn
            )));
        }
        if let Shape::AssumeRole(role) = &shape
            && me.is_role(role)
        {
            return Ok(Some(format!(
                "`{role}` is the role jitbot itself runs as ({})",
                me.arn
            )));
        }
        Ok(None)
    }

    async fn grant(&self, spec: &GrantSpec) -> anyhow::Result<()> {
        let shape = Shape::parse(&spec.grant).map_err(|e| anyhow!(e))?;
        let user = user_of(spec)?;
        if let Some(why) = self.refuses(spec).await? {
            bail!("refusing to grant: {why}");
        }
        let client = self.client().await?;
        match &shape {
            Shape::Policy(_) | Shape::AssumeRole(_) => {
                let end = spec
                    .expires_at
                    .context("a grant without its end")?
                    .format("%Y-%m-%dT%H:%M:%SZ")
                    .to_string();
                let document = inline_document(&shape, &end)?;
                client
                    .put_user_policy()
                    .user_name(&user)
                    .policy_name(policy_name(spec.request_id))
                    .policy_document(document.to_string())
                    .send()
                    .await
                    .map_err(|e| describe("IAM PutUserPolicy", &e))?;
            }
            Shape::PolicyArn(arn) => {
                client
                    .attach_user_policy()
                    .user_name(&user)
                    .policy_arn(arn)
                    .send()
                    .await
                    .map_err(|e| describe("IAM AttachUserPolicy", &e))?;
            }
            Shape::Group(group) => {
                client
                    .add_user_to_group()
                    .user_name(&user)
                    .group_name(group)
                    .send()
                    .await
                    .map_err(|e| describe("IAM AddUserToGroup", &e))?;
            }
        }
        // The receipt.
        if !self.shows(&client, &shape, &user, spec.request_id).await? {
            bail!("IAM does not show the grant to {user} after it was made");
        }
        Ok(())
    }

    async fn revoke(&self, spec: &GrantSpec) -> anyhow::Result<()> {
        let shape = Shape::parse(&spec.grant).map_err(|e| anyhow!(e))?;
        let user = user_of(spec)?;
        // jitbot never granted to its own principal (the grant refuses it): there is nothing of
        // ours to take back, and detaching from it could cut jitbot's own access.
        if let Some(why) = self.refuses(spec).await? {
            tracing::warn!(
                request = spec.request_id,
                why,
                "not revoking from jitbot's own principal"
            );
            return Ok(());
        }
        let client = self.client().await?;
        let gone = match &shape {
            Shape::Policy(_) | Shape::AssumeRole(_) => client
                .delete_user_policy()
                .user_name(&user)
                .policy_name(policy_name(spec.request_id))
                .send()
                .await
                .map(|_| ())
                .or_else(|e| gone_already("IAM DeleteUserPolicy", &e)),
            Shape::PolicyArn(arn) => client
                .detach_user_policy()
                .user_name(&user)
                .policy_arn(arn)
                .send()
                .await
                .map(|_| ())
                .or_else(|e| gone_already("IAM DetachUserPolicy", &e)),
            Shape::Group(group) => client
                .remove_user_from_group()
                .user_name(&user)
                .group_name(group)
                .send()
                .await
                .map(|_| ())
                .or_else(|e| gone_already("IAM RemoveUserFromGroup", &e)),
        };
        gone?;
        // The receipt: IAM no longer shows it (a user deleted meanwhile has nothing left).
        match self.shows(&client, &shape, &user, spec.request_id).await {
            Ok(false) => Ok(()),
            Ok(true) => bail!("IAM still shows the grant to {user} after the revoke"),
            Err(e) if format!("{e}").contains("NoSuchEntity") => Ok(()),
            Err(e) => Err(e),
        }
    }
}
