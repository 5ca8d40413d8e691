//! AWS IAM, with the official SDK and its credential chain (environment, shared profile, SSO,
//! web identity / IRSA, ECS and EC2 roles): jitbot needs no long-lived admin keys.
//!
//! Grant shapes and what ends the access:
//! - `{ policy: <IAM policy document> }`: an inline user policy named `jitbot-<request id>`, every
//!   statement given `DateLessThan aws:CurrentTime <end>`: the access ends at the end even if
//!   jitbot is down (layer a); the revoke deletes it (layer b); the user's own keys and session
//!   tokens are judged by their policies at each call, so nothing issued earlier outlives it.
//! - `{ assume_role: <role ARN> }`: an inline user policy allowing `sts:AssumeRole` on the role
//!   until the end, under a session named after the user (layers a and b); at the revoke, the
//!   sessions the person opened are ended too, when the role is in jitbot's account (layer c,
//!   see `sessions`).
//! - `{ policy_arn }` (attach) and `{ group }` (membership): the revoke only (layer b).
//!
//! Receipts: after a grant the user's inline policy, attachments or groups are read back and must
//! show it; after a revoke they must not. `NoSuchEntity` on a delete counts as already gone.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use async_trait::async_trait;
use aws_sdk_iam::Client;
use aws_sdk_iam::error::ProvideErrorMetadata;

use super::aws::{AwsBase, describe};
use super::{GrantSpec, Provider};
use crate::config::Env;

mod sessions;
mod shape;

pub use shape::{Shape, inline_document, policy_name};

pub struct AwsIamProvider {
    aws: AwsBase,
    client: tokio::sync::OnceCell<Client>,
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
            aws: AwsBase::new(env, region, endpoint_url, timeout),
            client: tokio::sync::OnceCell::new(),
        }
    }

    async fn client(&self) -> anyhow::Result<Client> {
        let client = self
            .client
            .get_or_try_init(|| async { anyhow::Ok(Client::new(self.aws.config().await?)) })
            .await?;
        Ok(client.clone())
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
        let me = self.aws.me().await?;
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
        // Layer (c): the role sessions the person opened during the grant end now too.
        if let Shape::AssumeRole(arn) = &shape {
            let me = self.aws.me().await?;
            match shape::role_of(arn) {
                Some((account, role)) if account == me.account => {
                    sessions::cut_sessions(&client, role, &user).await?;
                }
                _ => tracing::info!(
                    request = spec.request_id,
                    role = %arn,
                    "the role is in another account than jitbot's: its sessions run to their own expiry"
                ),
            }
        }
        // The receipt: IAM no longer shows it (a user deleted meanwhile has nothing left).
        match self.shows(&client, &shape, &user, spec.request_id).await {
            Ok(false) => Ok(()),
            Ok(true) => bail!("IAM still shows the grant to {user} after the revoke"),
            Err(e) if format!("{e}").contains("NoSuchEntity") => Ok(()),
            Err(e) => Err(e),
        }
    }
}
