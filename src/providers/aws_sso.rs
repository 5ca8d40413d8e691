//! AWS IAM Identity Center: a grant is an account assignment (a permission set, an account, the
//! person's Identity Store user, or for group access the group the resource names), made with `CreateAccountAssignment` and taken back with
//! `DeleteAccountAssignment`. Both are asynchronous at AWS: jitbot polls the request's status
//! until it settles, and a `FAILED` status is a failure, never success. Then it reads the
//! account's assignments back (the receipt): the grant counts once the assignment is listed, the
//! revoke once it is not. An assignment the person already had is left alone.
//!
//! Deleting an assignment does not end role sessions already issued from it (up to the permission
//! set's session duration): keep that short for permission sets handed out this way.

use std::time::Duration;

use anyhow::{anyhow, bail};
use async_trait::async_trait;
use aws_sdk_identitystore::types::{AlternateIdentifier, UniqueAttribute};
use aws_sdk_ssoadmin::error::ProvideErrorMetadata;
use aws_sdk_ssoadmin::types::{
    AccountAssignmentOperationStatus, PrincipalType, StatusValues, TargetType,
};

use super::aws::{AwsBase, describe};
use super::{GrantSpec, Provider};
use crate::config::Env;

/// How often a pending assignment request is asked about.
const POLL_EVERY: Duration = Duration::from_millis(500);

/// What an `aws_sso` grant assigns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub permission_set_arn: String,
    pub account_id: String,
    /// Group access: the Identity Center group (by display name) assigned, whoever asked.
    pub group: Option<String>,
}

const SHAPE: &str = "an aws_sso grant is `{ permission_set_arn: <ARN>, account_id: <12-digit account> }`, with `group: <display name>` to assign an Identity Center group instead of the requester";

impl Assignment {
    pub fn parse(grant: &serde_json::Map<String, serde_json::Value>) -> Result<Assignment, String> {
        if let Some(other) = grant
            .keys()
            .find(|k| !matches!(k.as_str(), "permission_set_arn" | "account_id" | "group"))
        {
            return Err(format!("unknown key `{other}`; {SHAPE}"));
        }
        let text = |key: &str| {
            grant
                .get(key)
                .and_then(serde_json::Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| SHAPE.to_string())
        };
        let permission_set_arn = text("permission_set_arn")?;
        let account_id = text("account_id")?;
        if !(permission_set_arn.starts_with("arn:aws")
            && permission_set_arn.contains(":sso:::permissionSet/")
            || permission_set_arn.starts_with("arn:aws:sso:::instance/"))
        {
            return Err(format!(
                "`{permission_set_arn}` is not a permission set ARN such as arn:aws:sso:::permissionSet/ssoins-1234/ps-5678"
            ));
        }
        if account_id.len() != 12 || !account_id.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!("`{account_id}` is not a 12-digit AWS account ID"));
        }
        let group = match grant.get("group") {
            None => None,
            Some(serde_json::Value::String(g))
                if !g.trim().is_empty() && g.len() <= 1024 && !g.chars().any(char::is_control) =>
            {
                Some(g.clone())
            }
            Some(_) => {
                return Err(format!(
                    "`group` must be an Identity Center group's display name; {SHAPE}"
                ));
            }
        };
        Ok(Assignment {
            permission_set_arn,
            account_id,
            group,
        })
    }
}

/// An Identity Store user or group, as an assignment names it.
struct Principal {
    kind: PrincipalType,
    id: String,
}

fn not_found<E: ProvideErrorMetadata>(e: &aws_sdk_identitystore::error::SdkError<E>) -> bool {
    e.as_service_error()
        .and_then(ProvideErrorMetadata::code)
        .is_some_and(|c| c == "ResourceNotFoundException")
}

pub struct AwsSsoProvider {
    aws: AwsBase,
    instance_arn: String,
    identity_store_id: String,
    clients: tokio::sync::OnceCell<(aws_sdk_ssoadmin::Client, aws_sdk_identitystore::Client)>,
}

impl AwsSsoProvider {
    pub fn new(
        env: Env,
        region: Option<String>,
        endpoint_url: Option<String>,
        instance_arn: String,
        identity_store_id: String,
        timeout: Duration,
    ) -> Self {
        Self {
            aws: AwsBase::new(env, region, endpoint_url, timeout),
            instance_arn,
            identity_store_id,
            clients: tokio::sync::OnceCell::new(),
        }
    }

    async fn clients(
        &self,
    ) -> anyhow::Result<(aws_sdk_ssoadmin::Client, aws_sdk_identitystore::Client)> {
        let clients = self
            .clients
            .get_or_try_init(|| async {
                let config = self.aws.config().await?;
                anyhow::Ok((
                    aws_sdk_ssoadmin::Client::new(config),
                    aws_sdk_identitystore::Client::new(config),
                ))
            })
            .await?;
        Ok(clients.clone())
    }

    /// Who the assignment is for: the resource's group, else the person's Identity Store user
    /// (by `aws_sso_user`, their user name, or their email).
    async fn principal(
        &self,
        store: &aws_sdk_identitystore::Client,
        a: &Assignment,
        spec: &GrantSpec,
    ) -> anyhow::Result<Principal> {
        if let Some(group) = &a.group {
            let attribute = UniqueAttribute::builder()
                .attribute_path("displayName")
                .attribute_value(aws_smithy_types::Document::String(group.clone()))
                .build()?;
            let found = store
                .get_group_id()
                .identity_store_id(&self.identity_store_id)
                .alternate_identifier(AlternateIdentifier::UniqueAttribute(attribute))
                .send()
                .await;
            return match found {
                Ok(answer) => Ok(Principal {
                    kind: PrincipalType::Group,
                    id: answer.group_id().to_string(),
                }),
                Err(e) if not_found(&e) => {
                    bail!("Identity Center has no group named {group}")
                }
                Err(e) => Err(describe("Identity Store GetGroupId", &e)),
            };
        }
        let (path, value) = match (
            spec.identity.get("aws_sso_user"),
            spec.identity.get("email"),
        ) {
            (Some(user), _) if !user.is_empty() => ("userName", user),
            (_, Some(email)) if !email.is_empty() => ("emails.value", email),
            _ => bail!(
                "{} has no Identity Center user: add `aws_sso_user` (or `email`) under identities",
                spec.requester
            ),
        };
        let attribute = UniqueAttribute::builder()
            .attribute_path(path)
            .attribute_value(aws_smithy_types::Document::String(value.clone()))
            .build()?;
        let found = store
            .get_user_id()
            .identity_store_id(&self.identity_store_id)
            .alternate_identifier(AlternateIdentifier::UniqueAttribute(attribute))
            .send()
            .await;
        match found {
            Ok(answer) => Ok(Principal {
                kind: PrincipalType::User,
                id: answer.user_id().to_string(),
            }),
            Err(e) if not_found(&e) => bail!("Identity Center has no user with {path} {value}"),
            Err(e) => Err(describe("Identity Store GetUserId", &e)),
        }
    }

    /// Is `principal` assigned the permission set on the account, as AWS lists it now?
    async fn assigned(
        &self,
        sso: &aws_sdk_ssoadmin::Client,
        a: &Assignment,
        principal: &Principal,
    ) -> anyhow::Result<bool> {
        let mut token = None;
        loop {
            let page = sso
                .list_account_assignments()
                .instance_arn(&self.instance_arn)
                .account_id(&a.account_id)
                .permission_set_arn(&a.permission_set_arn)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| describe("Identity Center ListAccountAssignments", &e))?;
            if page.account_assignments().iter().any(|x| {
                x.principal_type() == Some(&principal.kind)
                    && x.principal_id() == Some(principal.id.as_str())
            }) {
                return Ok(true);
            }
            match page.next_token() {
                Some(next) => token = Some(next.to_string()),
                None => return Ok(false),
            }
        }
    }

    /// Waits for an assignment request to settle; `FAILED` is an error with AWS's reason.
    async fn settle(
        &self,
        sso: &aws_sdk_ssoadmin::Client,
        creating: bool,
        first: Option<&AccountAssignmentOperationStatus>,
    ) -> anyhow::Result<()> {
        let what = if creating { "creation" } else { "deletion" };
        let mut status = first.cloned();
        loop {
            let now = status.as_ref();
            match now.and_then(|s| s.status()) {
                Some(StatusValues::Succeeded) => return Ok(()),
                Some(StatusValues::Failed) => bail!(
                    "Identity Center: the assignment {what} failed: {}",
                    now.and_then(|s| s.failure_reason())
                        .unwrap_or("no reason given")
                ),
                _ => {}
            }
            let Some(id) = now.and_then(|s| s.request_id()).map(str::to_string) else {
                bail!("Identity Center gave no request ID to follow the assignment {what}");
            };
            tokio::time::sleep(POLL_EVERY).await;
            status = if creating {
                sso.describe_account_assignment_creation_status()
                    .instance_arn(&self.instance_arn)
                    .account_assignment_creation_request_id(id)
                    .send()
                    .await
                    .map_err(|e| {
                        describe(
                            "Identity Center DescribeAccountAssignmentCreationStatus",
                            &e,
                        )
                    })?
                    .account_assignment_creation_status()
                    .cloned()
            } else {
                sso.describe_account_assignment_deletion_status()
                    .instance_arn(&self.instance_arn)
                    .account_assignment_deletion_request_id(id)
                    .send()
                    .await
                    .map_err(|e| {
                        describe(
                            "Identity Center DescribeAccountAssignmentDeletionStatus",
                            &e,
                        )
                    })?
                    .account_assignment_deletion_status()
                    .cloned()
            };
        }
    }
}

#[async_trait]
impl Provider for AwsSsoProvider {
    async fn holds(&self, spec: &GrantSpec) -> anyhow::Result<bool> {
        let a = Assignment::parse(&spec.grant).map_err(|e| anyhow!(e))?;
        let (sso, store) = self.clients().await?;
        let principal = self.principal(&store, &a, spec).await?;
        self.assigned(&sso, &a, &principal).await
    }

    /// An account assignment is one fact per permission set, account and principal, however
    /// many grants asked for it.
    fn access_key(&self, spec: &GrantSpec) -> Option<String> {
        let a = Assignment::parse(&spec.grant).ok()?;
        let who = match (
            &a.group,
            spec.identity.get("aws_sso_user"),
            spec.identity.get("email"),
        ) {
            (Some(group), _, _) => format!("group={group}"),
            (None, Some(user), _) if !user.is_empty() => format!("user_name={user}"),
            (None, _, Some(email)) if !email.is_empty() => format!("email={email}"),
            _ => return None,
        };
        Some(format!(
            "instance={}\naccount={}\npermission_set={}\n{who}",
            self.instance_arn, a.account_id, a.permission_set_arn
        ))
    }

    /// jitbot running on an Identity Center user's session (a role `AWSReservedSSO_…` whose
    /// session is named after the user) never assigns that user more.
    async fn refuses(&self, spec: &GrantSpec) -> anyhow::Result<Option<String>> {
        let a = Assignment::parse(&spec.grant).map_err(|e| anyhow!(e))?;
        if a.group.is_some() {
            return Ok(None);
        }
        let Some(user) = spec.identity.get("aws_sso_user").filter(|u| !u.is_empty()) else {
            return Ok(None);
        };
        let me = self.aws.me().await?;
        match me.role() {
            Some((role, session))
                if role.starts_with("AWSReservedSSO_") && session.eq_ignore_ascii_case(user) =>
            {
                Ok(Some(format!(
                    "Identity Center user `{user}` is the principal jitbot itself runs as ({})",
                    me.arn
                )))
            }
            _ => Ok(None),
        }
    }

    async fn grant(&self, spec: &GrantSpec) -> anyhow::Result<()> {
        let a = Assignment::parse(&spec.grant).map_err(|e| anyhow!(e))?;
        if let Some(why) = self.refuses(spec).await? {
            bail!("refusing to grant: {why}");
        }
        let (sso, store) = self.clients().await?;
        let principal = self.principal(&store, &a, spec).await?;
        // Another grant of the same assignment made it already (they are counted): nothing to
        // create.
        if self.assigned(&sso, &a, &principal).await? {
            return Ok(());
        }
        let answer = sso
            .create_account_assignment()
            .instance_arn(&self.instance_arn)
            .target_id(&a.account_id)
            .target_type(TargetType::AwsAccount)
            .permission_set_arn(&a.permission_set_arn)
            .principal_type(principal.kind.clone())
            .principal_id(&principal.id)
            .send()
            .await
            .map_err(|e| describe("Identity Center CreateAccountAssignment", &e))?;
        self.settle(&sso, true, answer.account_assignment_creation_status())
            .await?;
        if !self.assigned(&sso, &a, &principal).await? {
            bail!("Identity Center does not list the assignment after it was made");
        }
        Ok(())
    }

    async fn revoke(&self, spec: &GrantSpec) -> anyhow::Result<()> {
        let a = Assignment::parse(&spec.grant).map_err(|e| anyhow!(e))?;
        let (sso, store) = self.clients().await?;
        let principal = self.principal(&store, &a, spec).await?;
        if !self.assigned(&sso, &a, &principal).await? {
            return Ok(());
        }
        let answer = sso
            .delete_account_assignment()
            .instance_arn(&self.instance_arn)
            .target_id(&a.account_id)
            .target_type(TargetType::AwsAccount)
            .permission_set_arn(&a.permission_set_arn)
            .principal_type(principal.kind.clone())
            .principal_id(&principal.id)
            .send()
            .await
            .map_err(|e| describe("Identity Center DeleteAccountAssignment", &e))?;
        self.settle(&sso, false, answer.account_assignment_deletion_status())
            .await?;
        if self.assigned(&sso, &a, &principal).await? {
            bail!("Identity Center still lists the assignment after it was deleted");
        }
        Ok(())
    }
}
