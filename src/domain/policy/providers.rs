//! The providers of the policy, checked: each kind's fields, the variables they name, and how
//! hard jitbot may push each one (`concurrency`, `timeout`).

use std::collections::BTreeMap;

use super::check::{Checker, Key, Map, RawProvider};
use super::*;

/// What `aws_iam` and `aws_sso` providers may set (only `aws_sso` takes the last two).
const AWS_KEYS: &[&str] = &[
    "region",
    "endpoint_url",
    "instance_arn",
    "identity_store_id",
];

impl Checker<'_> {
    pub(super) fn provider_limits(
        &mut self,
        raw: &Map<RawProvider>,
    ) -> BTreeMap<String, ProviderLimits> {
        let mut out = BTreeMap::new();
        for (name, p) in raw {
            let path = format!("providers.{name}");
            let mut limits = ProviderLimits::default();
            if let Some(c) = &p.concurrency {
                if (1..=MAX_PROVIDER_CONCURRENCY).contains(&**c) {
                    limits.concurrency = **c;
                } else {
                    self.error(
                        c,
                        format!("{path}.concurrency"),
                        format!("concurrency is between 1 and {MAX_PROVIDER_CONCURRENCY}"),
                    );
                }
            }
            if let Some(t) = &p.timeout
                && let Some(d) = self.duration(t, &format!("{path}.timeout"))
            {
                if d.secs() > 300 {
                    self.error(
                        t,
                        format!("{path}.timeout"),
                        "a provider call may take at most 5m; a revoke must not wait longer",
                    );
                } else {
                    limits.timeout = d;
                }
            }
            out.insert(name.to_string(), limits);
        }
        out
    }

    pub(super) fn providers(&mut self, raw: Map<RawProvider>) -> BTreeMap<String, ProviderConfig> {
        let mut out = BTreeMap::new();
        for (name, p) in raw {
            let path = format!("providers.{name}");
            let kind = p.kind.as_str();
            let config = match kind {
                "postgres" => {
                    self.refuse_others(&p, &path, kind, &["url_env"]);
                    match &p.url_env {
                        Some(url_env) => Some(ProviderConfig::Postgres {
                            url_env: url_env.to_string(),
                        }),
                        None => {
                            self.error(&p.kind, &path, "a postgres provider needs `url_env`, the name of the variable holding its admin URL");
                            None
                        }
                    }
                }
                "webhook" => {
                    self.refuse_others(&p, &path, kind, &["url", "secret_env"]);
                    match (&p.url, &p.secret_env) {
                        (Some(url), Some(secret_env)) => {
                            if !(url.starts_with("https://") || url.starts_with("http://")) {
                                self.error(
                                    url,
                                    format!("{path}.url"),
                                    "a webhook URL starts with https:// or http://",
                                );
                            }
                            Some(ProviderConfig::Webhook {
                                url: url.to_string(),
                                secret_env: secret_env.to_string(),
                            })
                        }
                        _ => {
                            self.error(
                                &p.kind,
                                &path,
                                "a webhook provider needs `url` and `secret_env`",
                            );
                            None
                        }
                    }
                }
                "kubernetes" if !cfg!(feature = "kubernetes") => {
                    self.error(
                        &p.kind,
                        format!("{path}.kind"),
                        "this jitbot was built without the `kubernetes` feature; use a build with default features",
                    );
                    None
                }
                "kubernetes" => {
                    self.refuse_others(&p, &path, kind, &["kubeconfig_env"]);
                    Some(ProviderConfig::Kubernetes {
                        kubeconfig_env: p.kubeconfig_env.as_ref().map(|v| v.to_string()),
                    })
                }
                "aws_iam" | "aws_sso" if !cfg!(feature = "aws") => {
                    self.error(
                        &p.kind,
                        format!("{path}.kind"),
                        "this jitbot was built without the `aws` feature; use a build with default features",
                    );
                    None
                }
                "aws_iam" | "aws_sso" => {
                    let allowed = if kind == "aws_iam" {
                        &AWS_KEYS[..2]
                    } else {
                        AWS_KEYS
                    };
                    self.refuse_others(&p, &path, kind, allowed);
                    self.aws_common(&p, &path);
                    let region = p.region.as_ref().map(|r| r.to_string());
                    let endpoint_url = p.endpoint_url.as_ref().map(|u| u.to_string());
                    if kind == "aws_iam" {
                        Some(ProviderConfig::AwsIam {
                            region,
                            endpoint_url,
                        })
                    } else {
                        match (&p.instance_arn, &p.identity_store_id) {
                            (Some(instance), Some(store)) => {
                                if !instance.starts_with("arn:aws")
                                    || !instance.contains(":instance/")
                                {
                                    self.error(
                                        instance,
                                        format!("{path}.instance_arn"),
                                        "the Identity Center instance ARN, such as arn:aws:sso:::instance/ssoins-1234567890abcdef",
                                    );
                                }
                                if !store.starts_with("d-") {
                                    self.error(
                                        store,
                                        format!("{path}.identity_store_id"),
                                        "the Identity Store ID, such as d-1234567890",
                                    );
                                }
                                Some(ProviderConfig::AwsSso {
                                    region,
                                    endpoint_url,
                                    instance_arn: instance.to_string(),
                                    identity_store_id: store.to_string(),
                                })
                            }
                            _ => {
                                self.error(
                                    &p.kind,
                                    &path,
                                    "an aws_sso provider needs `instance_arn` and `identity_store_id` (IAM Identity Center → Settings)",
                                );
                                None
                            }
                        }
                    }
                }
                "gcp_iam" if !cfg!(feature = "gcp") => {
                    self.error(
                        &p.kind,
                        format!("{path}.kind"),
                        "this jitbot was built without the `gcp` feature; use a build with default features",
                    );
                    None
                }
                "gcp_iam" => {
                    self.refuse_others(&p, &path, kind, &["credentials_env", "endpoint_url"]);
                    self.aws_common(&p, &path);
                    Some(ProviderConfig::GcpIam {
                        credentials_env: p.credentials_env.as_ref().map(|v| v.to_string()),
                        endpoint_url: p.endpoint_url.as_ref().map(|u| u.to_string()),
                    })
                }
                k => {
                    self.error(
                        &p.kind,
                        format!("{path}.kind"),
                        format!(
                            "unknown provider kind `{k}`; expected postgres, webhook, kubernetes, aws_iam, aws_sso or gcp_iam"
                        ),
                    );
                    None
                }
            };
            if let Some(config) = config {
                for var in config.env_vars() {
                    if std::env::var_os(var).is_none()
                        && std::env::var_os(format!("{var}_FILE")).is_none()
                    {
                        self.warn(Key(&["providers", &name]), &path, format!("environment variable {var} is not set; `jitbot serve` will refuse to start without it"));
                    }
                }
                out.insert(name.to_string(), config);
            }
        }
        out
    }

    /// `region` and `endpoint_url`, as AWS providers take them.
    fn aws_common(&mut self, p: &RawProvider, path: &str) {
        if let Some(region) = &p.region
            && (region.is_empty()
                || !region
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
        {
            self.error(
                region,
                format!("{path}.region"),
                "an AWS region such as us-east-1",
            );
        }
        if let Some(url) = &p.endpoint_url {
            let ok = reqwest::Url::parse(url.as_str()).is_ok_and(|u| {
                u.scheme() == "https"
                    || (u.scheme() == "http"
                        && matches!(u.host_str(), Some("127.0.0.1" | "localhost")))
            });
            if !ok {
                self.error(
                    url,
                    format!("{path}.endpoint_url"),
                    "an https URL (plain http only to 127.0.0.1, for a stand-in such as moto)",
                );
            }
        }
    }

    /// Refuses every setting of `p` but `allowed`, each at its own line.
    fn refuse_others(&mut self, p: &RawProvider, path: &str, kind: &str, allowed: &[&str]) {
        let settings = [
            ("url", &p.url),
            ("url_env", &p.url_env),
            ("secret_env", &p.secret_env),
            ("region", &p.region),
            ("endpoint_url", &p.endpoint_url),
            ("kubeconfig_env", &p.kubeconfig_env),
            ("instance_arn", &p.instance_arn),
            ("identity_store_id", &p.identity_store_id),
            ("credentials_env", &p.credentials_env),
        ];
        let others: Vec<_> = settings
            .into_iter()
            .filter(|(key, _)| !allowed.contains(key))
            .collect();
        for (key, value) in others {
            if let Some(value) = value {
                self.error(
                    value,
                    format!("{path}.{key}"),
                    format!("`{key}` does not apply to a {kind} provider"),
                );
            }
        }
    }
}
