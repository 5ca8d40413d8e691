//! `SIGHUP`: the policy file is loaded, checked and put in force, or refused with the old policy
//! kept.

use super::*;

/// Reloads the policy file on demand (`SIGHUP`): the new file must pass `check` and what `serve`
/// needs, or the policy in force stays and the refusal is logged and counted.
pub struct Reloader {
    pub(super) path: std::path::PathBuf,
    pub(super) env: Env,
    pub(super) directory: Arc<crate::directory::Directory>,
    pub(super) policy: Arc<LivePolicy>,
    pub(super) service: Service,
    pub(super) metrics: Arc<Metrics>,
}

impl Reloader {
    /// The policy in force, as every decision reads it.
    pub fn policy(&self) -> &Arc<LivePolicy> {
        &self.policy
    }

    /// Loads, checks and puts the file in force, then holds pending requests to it. Returns how
    /// many were cancelled; an error (the old policy still in force) when the file was refused.
    pub async fn reload(&self) -> anyhow::Result<u64> {
        let loaded = Policy::load(&self.path)
            .map_err(anyhow::Error::from)
            .and_then(|(policy, _warnings)| {
                ready_to_serve(&policy, &self.env)?;
                Ok(policy)
            });
        let loaded = match loaded {
            Ok(policy) => refuse_privileged_identities(&policy, &self.env)
                .await
                .map(|()| policy),
            Err(e) => Err(e),
        };
        let loaded = match loaded {
            Ok(policy) => super::check_directory(&self.directory, &policy)
                .await
                .map(|()| policy),
            Err(e) => Err(e),
        };
        let policy = match loaded {
            Ok(policy) => policy,
            Err(e) => {
                crate::metrics::Metrics::inc(&self.metrics.policy_reload_failures);
                tracing::error!(
                    file = %self.path.display(),
                    error = format!("{e:#}"),
                    "policy reload refused; the policy in force stays"
                );
                return Err(e);
            }
        };
        give_back_freed_memory();
        tracing::info!(
            file = %self.path.display(),
            resources = policy.resources.len(),
            "policy reloaded"
        );
        self.policy.replace(policy);
        crate::metrics::Metrics::inc(&self.metrics.policy_reloads);
        self.service.enforce_policy(chrono::Utc::now()).await
    }
}

/// Each `SIGHUP` reloads the policy (a refused file is logged and counted by [`Reloader`]).
pub(super) async fn reload_on_hangup(reloader: Arc<Reloader>) {
    #[cfg(unix)]
    {
        let mut hangups = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::hangup(),
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP; the policy cannot be reloaded");
                return;
            }
        };
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the policy");
            if let Err(e) = reloader.reload().await
                && !e.is::<crate::domain::policy::PolicyErrors>()
                && !e.is::<UserError>()
            {
                tracing::error!(error = format!("{e:#}"), "after reloading the policy");
            }
        }
    }
    #[cfg(not(unix))]
    std::future::pending::<()>().await;
}
