//! AWS IAM Identity Center: a grant is an account assignment (a permission set, an account, the
//! person's Identity Store user), made with `CreateAccountAssignment` and taken back with
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

use super::aws::{describe, sdk_config};
use super::{GrantSpec, Provider};
use crate::config::Env;

/// How often a pending assignment request is asked about.
const POLL_EVERY: Duration = Duration::from_millis(500);

/// What an `aws_sso` grant assigns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub permission_set_arn: String,
    pub account_id: String,
}

const SHAPE: &str =
    "an aws_sso grant is `{ permission_set_arn: <ARN>, account_id: <12-digit account> }`";

impl Assignment {
    pub fn parse(grant: &serde_json::Map<String, serde_json::Value>) -> Result<Assignment, String> {
        if let Some(other) = grant
            .keys()
            .find(|k| !matches!(k.as_str(), "permission_set_arn" | "account_id"))
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
        Ok(Assignment {
            permission_set_arn,
            account_id,
        })
    }
}

pub struct AwsSsoProvider {
    env: Env,
    region: Option<String>,
    endpoint_url: Option<String>,
    instance_arn: String,
    identity_store_id: String,
    timeout: Duration,
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
            env,
            region,
            endpoint_url,
            instance_arn,
            identity_store_id,
            timeout,
            clients: tokio::sync::OnceCell::new(),
        }
    }

    async fn clients(
        &self,
    ) -> anyhow::Result<(aws_sdk_ssoadmin::Client, aws_sdk_identitystore::Client)> {
        let clients = self
            .clients
            .get_or_try_init(|| async {
                let config = sdk_config(
                    &self.env,
                    self.region.as_deref(),
                    self.endpoint_url.as_deref(),
                    self.timeout,
                )
                .await?;
                anyhow::Ok((
                    aws_sdk_ssoadmin::Client::new(&config),
                    aws_sdk_identitystore::Client::new(&config),
                ))
            })
            .await?;
        Ok(clients.clone())
    }

    /// The person's Identity Store user ID, by `aws_sso_user` (user name) or email.
    async fn principal(
        &self,
        store: &aws_sdk_identitystore::Client,
        spec: &GrantSpec,
    ) -> anyhow::Result<String> {
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
            Ok(answer) => Ok(answer.user_id().to_string()),
            Err(e)
                if e.as_service_error()
                    .and_then(ProvideErrorMetadata::code)
                    .is_some_and(|c| c == "ResourceNotFoundException") =>
            {
                bail!("Identity Center has no user with {path} {value}")
            }
            Err(e) => Err(describe("Identity Store GetUserId", &e)),
        }
    }

    /// Is `principal` assigned the permission set on the account, as AWS lists it now?
    async fn assigned(
        &self,
        sso: &aws_sdk_ssoadmin::Client,
        a: &Assignment,
        principal: &str,
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
                x.principal_type() == Some(&PrincipalType::User)
                    && x.principal_id() == Some(principal)
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
        let principal = self.principal(&store, spec).await?;
        self.assigned(&sso, &a, &principal).await
    }

    /// An account assignment is one fact per permission set, account and principal, however
    /// many grants asked for it.
    fn access_key(&self, spec: &GrantSpec) -> Option<String> {
        let a = Assignment::parse(&spec.grant).ok()?;
        let who = match (
            spec.identity.get("aws_sso_user"),
            spec.identity.get("email"),
        ) {
            (Some(user), _) if !user.is_empty() => format!("user_name={user}"),
            (_, Some(email)) if !email.is_empty() => format!("email={email}"),
            _ => return None,
        };
        Some(format!(
            "instance={}\naccount={}\npermission_set={}\n{who}",
            self.instance_arn, a.account_id, a.permission_set_arn
        ))
    }

    async fn grant(&self, spec: &GrantSpec) -> anyhow::Result<()> {
        let a = Assignment::parse(&spec.grant).map_err(|e| anyhow!(e))?;
        let (sso, store) = self.clients().await?;
        let principal = self.principal(&store, spec).await?;
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
            .principal_type(PrincipalType::User)
            .principal_id(&principal)
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
        let principal = self.principal(&store, spec).await?;
        if !self.assigned(&sso, &a, &principal).await? {
            return Ok(());
        }
        let answer = sso
            .delete_account_assignment()
            .instance_arn(&self.instance_arn)
            .target_id(&a.account_id)
            .target_type(TargetType::AwsAccount)
            .permission_set_arn(&a.permission_set_arn)
            .principal_type(PrincipalType::User)
            .principal_id(&principal)
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
