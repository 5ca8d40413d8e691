//! Wiring: config → store (migrated) → policy → router + scheduler, bound to a port.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::{Config, Env, UserError};
use crate::domain::Policy;
use crate::http::serve::EdgeLimits;
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::providers::Providers;
use crate::scheduler::{Runner, Scheduler, Wake};
use crate::service::Service;
use crate::slack::SlackApi;
use crate::store::{SingleProcess, Store};

pub struct App {
    pub addr: SocketAddr,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    listener: TcpListener,
    router: axum::Router,
    runner: Runner,
    edge: EdgeLimits,
    single: Option<SingleProcess>,
}

/// A running app; stops (as abruptly as `kill -9`, from the database's point of view) on drop.
pub struct Running {
    pub addr: SocketAddr,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    tasks: Vec<JoinHandle<()>>,
    _single: Option<SingleProcess>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Running {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Opens the store, checks that the policy's providers have what they need, and binds.
pub async fn build(config: Config, env: Env, policy: Policy) -> anyhow::Result<App> {
    let store = Store::connect(&config.database_url)
        .await
        .map_err(|e| UserError(format!("{e:#}")))?;
    store.migrate().await?;
    let single = store.single_process().await?;
    if single.is_some() {
        // This process owns the store: whatever held a lease before is gone.
        let taken = store.release_all_leases().await?;
        if taken > 0 {
            tracing::info!(jobs = taken, "took back the jobs of the previous run");
        }
    }
    for provider in policy.providers.values() {
        for var in provider.env_vars() {
            env.require(var)?;
        }
    }
    if env.get("SLACK_APP_TOKEN").is_some() {
        tracing::warn!(
            "SLACK_APP_TOKEN is set, but this version serves Slack over HTTP only (no Socket Mode yet)"
        );
    }
    let policy = Arc::new(policy);
    let metrics = Arc::new(Metrics::default());
    let wake = Arc::new(Wake::default());
    let tuning = config.tuning;
    let slack = SlackApi::new(
        &config.slack_api_url,
        config.bot_token.expose(),
        tuning.slack_timeout,
        metrics.clone(),
    )?;
    let providers = Arc::new(Providers::new(env.clone())?);
    let pacer = Arc::new(crate::scheduler::pace::Pacer::new(
        tuning.post_interval,
        tuning.post_burst,
    ));
    let service = Service {
        store: store.clone(),
        policy: policy.clone(),
        wake: wake.clone(),
        metrics: metrics.clone(),
        pacer: pacer.clone(),
    };
    let runner = Runner::new(Scheduler {
        store: store.clone(),
        policy,
        slack,
        providers,
        metrics: metrics.clone(),
        wake,
        backoff_start: tuning.retry_base,
        slack_timeout: tuning.slack_timeout,
        provider_calls: Default::default(),
        pacer,
        job_retention: tuning.job_retention,
    });
    // The store's upkeep runs every round; queueing the next one is a no-op if it is queued.
    let now = chrono::Utc::now().timestamp_millis();
    store
        .enqueue(&[crate::domain::Job::next_maintenance(now)], now)
        .await?;
    let router = http::router(AppState {
        service,
        signing_secret: config.signing_secret.clone(),
        metrics: metrics.clone(),
        body_timeout: tuning.edge.body_timeout,
    });
    let listener = TcpListener::bind(&config.listen)
        .await
        .map_err(|e| UserError(format!("cannot listen on {}: {e}", config.listen)))?;
    let addr = listener.local_addr()?;
    Ok(App {
        addr,
        store,
        metrics,
        listener,
        router,
        runner,
        edge: tuning.edge,
        single,
    })
}

/// Loads the policy named by the config, refusing it with every diagnostic when it is wrong.
pub fn load_policy(config: &Config) -> anyhow::Result<Policy> {
    let (policy, _warnings) = Policy::load(&config.policy).map_err(|e| UserError(e.to_string()))?;
    give_back_freed_memory();
    Ok(policy)
}

/// Parsing a policy keeps every YAML node with its place in the file; once it is compiled, those
/// megabytes are freed, but glibc keeps freed pages for later. Hand them back to the system, so
/// a process that will run for months does not start by holding what it will never use again.
pub fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl App {
    /// Serves HTTP and runs the scheduler in background tasks.
    pub fn spawn(self) -> Running {
        let http = tokio::spawn(http::serve::serve(self.listener, self.router, self.edge));
        let sched = tokio::spawn(self.runner.run());
        Running {
            addr: self.addr,
            store: self.store,
            metrics: self.metrics,
            tasks: vec![http, sched],
            _single: self.single,
        }
    }

    /// Serves until Ctrl-C or SIGTERM. Work in flight is safe to cut: it lives in the database.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        tracing::info!(addr = %self.addr, "jitbot is listening");
        let running = self.spawn();
        shutdown_signal().await;
        tracing::info!("stopping");
        drop(running);
        Ok(())
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// Convenience for callers that hold a config: load its policy and build.
pub async fn build_from_config(config: Config, env: Env) -> anyhow::Result<App> {
    let policy = load_policy(&config).context("loading the policy")?;
    build(config, env, policy).await
}
