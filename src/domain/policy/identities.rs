//! Who a person or client is at each provider (`identities:`), and the identities jitbot must
//! never grant to or revoke from: a provider's own admin and the built-in roles.

use std::collections::BTreeMap;

use marked_yaml::Spanned;

use super::check::{Checker, Key, Map};
use super::is_user_id;

/// Why an identity value names the provider's own admin or a built-in role, if it does:
/// PostgreSQL's `postgres` and `pg_*` roles, the managed services' admin roles (`rds*` on AWS,
/// `cloudsqlsuperuser` / `cloudsqladmin` on GCP, `azure_*` on Azure), and Kubernetes' `system:*`.
pub fn builtin_identity(key: &str, value: &str) -> Option<&'static str> {
    let lower = value.to_ascii_lowercase();
    match key {
        "postgres" if lower == "postgres" => Some("is PostgreSQL's bootstrap superuser"),
        "postgres" if lower.starts_with("pg_") => Some("is a PostgreSQL built-in role"),
        "postgres" if lower.starts_with("rds") => Some("is an Amazon RDS admin role"),
        "postgres" if matches!(lower.as_str(), "cloudsqlsuperuser" | "cloudsqladmin") => {
            Some("is a Cloud SQL admin role")
        }
        "postgres" if lower.starts_with("azure_") => Some("is an Azure admin role"),
        "k8s_user" if lower.starts_with("system:") => Some("is a Kubernetes system identity"),
        _ => None,
    }
}

const IDENTITY_KEYS: &[&str] = &[
    "postgres",
    "aws_iam_user",
    "aws_sso_user",
    "gcp_member",
    "k8s_user",
    "email",
];

impl Checker<'_> {
    pub(super) fn identities(
        &mut self,
        raw: Map<Map<Spanned<String>>>,
    ) -> BTreeMap<String, BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        for (user, fields) in raw {
            let path = format!("identities.{user}");
            if !is_user_id(&user) && !self.client_names.contains(&user) {
                self.error(
                    Key(&["identities", &user]),
                    &path,
                    "identities are keyed by Slack user ID (U… or W…) or API client name",
                );
                continue;
            }
            let mut known = BTreeMap::new();
            for (key, value) in fields {
                if let Some(why) = builtin_identity(&key, value.as_str()) {
                    self.error(
                        &value,
                        format!("{path}.{key}"),
                        format!(
                            "`{}` {why}: jitbot must never grant to or revoke from it",
                            value.as_str()
                        ),
                    );
                } else if IDENTITY_KEYS.contains(&key.as_str()) {
                    known.insert(key.to_string(), value.to_string());
                } else {
                    self.error(
                        Key(&["identities", &user, &key]),
                        format!("{path}.{key}"),
                        format!(
                            "unknown identity key; expected one of {}",
                            IDENTITY_KEYS.join(", ")
                        ),
                    );
                }
            }
            out.insert(user.to_string(), known);
        }
        out
    }
}
