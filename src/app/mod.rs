//! Wiring: config → store (migrated) → policy → router + scheduler, bound to a port.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::{Config, Env, UserError};
use crate::domain::{LivePolicy, Policy};
use crate::http::serve::EdgeLimits;
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::providers::Providers;
use crate::scheduler::{Runner, Scheduler, Wake};
use crate::service::Service;
use crate::slack::SlackApi;
use crate::store::{SingleProcess, Store};

mod checks;
mod reload;

use checks::{check_bot_token, check_directory};
pub use checks::{prepare, ready_to_serve, refuse_privileged_identities};
pub use reload::Reloader;
use reload::reload_on_hangup;

pub struct App {
    pub addr: SocketAddr,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    listener: TcpListener,
    router: axum::Router,
    runner: Runner,
    edge: EdgeLimits,
    single: Option<SingleProcess>,
    workspace: Arc<crate::slack::Workspace>,
    reloader: Arc<Reloader>,
    /// With `SLACK_APP_TOKEN`: what Socket Mode serves, Slack's API URL, and the app token.
    socket: Option<(AppState, String, crate::config::Secret)>,
}

/// A running app; stops (as abruptly as `kill -9`, from the database's point of view) on drop.
pub struct Running {
    pub addr: SocketAddr,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    /// Puts the policy file in force again (what `SIGHUP` does).
    pub reloader: Arc<Reloader>,
    /// This process's name on the jobs it holds.
    pub worker: String,
    tasks: Vec<JoinHandle<()>>,
    /// Socket Mode, when on: told to close its connections at [`Running::stop`].
    socket: Option<(Arc<tokio::sync::Notify>, JoinHandle<()>)>,
    _single: Option<SingleProcess>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some((stop, task)) = &self.socket {
            stop.notify_one();
            task.abort();
        }
    }
}

impl Running {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops at once and hands back the jobs this process held, so another replica (or the next
    /// start) runs them now rather than after their lease runs out. A job cut off mid-way runs
    /// again from the start: every job is idempotent.
    pub async fn stop(mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some((stop, task)) = self.socket.take() {
            stop.notify_one();
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), task).await;
        }
        let released = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            self.store.release_leases_of(&self.worker),
        )
        .await;
        match released {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(jobs = n, "handed back the jobs this process held"),
            Ok(Err(e)) => tracing::warn!(
                error = format!("{e:#}"),
                "could not hand back this process's jobs; their leases run out in seconds"
            ),
            Err(_) => tracing::warn!(
                "the store did not answer in time to hand back this process's jobs; their leases run out in seconds"
            ),
        }
    }
}

/// Opens the store, checks that the policy's providers have what they need, and binds.
pub async fn build(config: Config, env: Env, policy: Policy) -> anyhow::Result<App> {
    let metrics = Arc::new(Metrics::default());
    let slack = SlackApi::new(
        &config.slack_api_url,
        config.bot_token.expose(),
        config.tuning.slack_timeout,
        metrics.clone(),
    )?;
    // A token Slack refuses is found now, not at the first card; Slack being unreachable is not
    // a reason to stay down (revokes do not need it).
    let me = check_bot_token(&slack).await?;
    let store = Store::connect(&config.database_url).await.map_err(|e| {
        match e.downcast::<UserError>() {
            Ok(clear) => clear,
            Err(other) => UserError(format!("{other:#}")),
        }
    })?;
    store.migrate().await?;
    let single = store.single_process().await?;
    if single.is_some() {
        // This process owns the store: whatever held a lease before is gone.
        let taken = store.release_all_leases().await?;
        if taken > 0 {
            tracing::info!(jobs = taken, "took back the jobs of the previous run");
        }
    }
    ready_to_serve(&policy, &env)?;
    refuse_privileged_identities(&policy, &env).await?;
    if let Some(token) = &config.app_token {
        http::socket::check_app_token(&config.slack_api_url, token).await?;
    }
    let policy = Arc::new(LivePolicy::new(policy));
    let directory = Arc::new(crate::directory::Directory::new(
        slack.clone(),
        env.clone(),
        policy.lookups().clone(),
    )?);
    check_directory(&directory, &policy.now()).await?;
    let wake = Arc::new(Wake::default());
    let tuning = config.tuning;
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
        directory: directory.clone(),
        pending_read_at_most: tuning.pending_read_at_most,
    };
    let reloader = Arc::new(Reloader {
        path: config.policy.clone(),
        env: env.clone(),
        directory: directory.clone(),
        policy: policy.clone(),
        service: service.clone(),
        metrics: metrics.clone(),
    });
    let runner = Runner::new(Scheduler {
        store: store.clone(),
        policy,
        slack: slack.clone(),
        providers,
        metrics: metrics.clone(),
        wake,
        backoff_start: tuning.retry_base,
        slack_timeout: tuning.slack_timeout,
        provider_calls: Default::default(),
        pacer,
        job_retention: tuning.job_retention,
        ending_soon: tuning.ending_soon,
        directory: directory.clone(),
    });
    // The store's upkeep runs every round; queueing the next one is a no-op if it is queued.
    let now = chrono::Utc::now().timestamp_millis();
    store
        .enqueue(
            &std::iter::once(crate::domain::Job::next_maintenance(now))
                .chain(crate::scheduler::digest::next_digest(
                    &service.policy.now(),
                    chrono::Utc::now(),
                ))
                .collect::<Vec<_>>(),
            now,
        )
        .await?;
    let workspace = Arc::new(crate::slack::Workspace::new(
        config.team_id.clone(),
        slack.clone(),
    ));
    if let Some(me) = &me {
        workspace.learned_from(me);
    }
    let state = AppState {
        workspace: workspace.clone(),
        service,
        signing_secret: config.signing_secret.clone(),
        metrics: metrics.clone(),
        body_timeout: tuning.edge.body_timeout,
        slack: slack.clone(),
    };
    let socket = config
        .app_token
        .clone()
        .map(|token| (state.clone(), config.slack_api_url.clone(), token));
    let router = http::router(state);
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
        workspace,
        reloader,
        socket,
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

/// How often a running jitbot gives freed memory back (see [`keep_giving_back_freed_memory`]).
const GIVE_BACK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// Its thread's name (at most 15 bytes: Linux keeps no more).
const GIVE_BACK_THREAD: &str = "jitbot-giveback";

/// glibc hands freed memory back to the system by itself only from the top of its main heap;
/// pages freed anywhere else in an arena stay resident until reused. A burst (a storm of
/// expiries, a page of `/jit pending` over a long backlog) leaves many such pages behind. So a
/// thread of its own gives them back every [`GIVE_BACK_EVERY`]; once per process, however many
/// apps a test runs in it. Measured on a store of a million requests after the footprint
/// bench's load (`malloc_trim` called from a debugger): 1.7–1.9 MB of the 10.0–10.6 MB of
/// anonymous memory was freed memory held this way; with this thread the same run ended at 9.1
/// MB against 11.1 without. A give-back took 0.4 ms on average (at most 1.6 ms, a build
/// running beside it), 0.04 % of a core; a thread allocating from the arena being given back
/// meanwhile waits for it.
fn keep_giving_back_freed_memory() {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return;
    }
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        let started = std::thread::Builder::new()
            .name(GIVE_BACK_THREAD.into())
            .spawn(|| {
                loop {
                    std::thread::sleep(GIVE_BACK_EVERY);
                    give_back_freed_memory();
                }
            });
        if let Err(e) = started {
            tracing::warn!(error = %e, "could not start the thread that gives freed memory back; memory freed after a burst stays resident");
        }
    });
}

/// glibc gives each thread that allocates while another holds an arena an arena of its own, up
/// to eight per core, and keeps each one's freed pages for later. A jitbot has a dozen threads
/// (the runtime's workers, the store's writer, one per SQLite connection, blocking tasks), so its
/// memory spread over many half-empty arenas: measured with `cargo bench --bench footprint`,
/// RSS 66-71 MB with 2,000 requests stored, 53-56 MB with one arena per core (2 cores), and
/// `scripts/bench` throughput within its noise (three alternated pairs). An operator's own
/// `MALLOC_ARENA_MAX` is left as it is. Call before any thread starts.
pub fn bound_allocator_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let arenas = libc::c_int::try_from(cores.max(2)).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only changes the allocator's settings; called before other threads.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}

impl App {
    /// Serves HTTP and runs the scheduler in background tasks.
    pub fn spawn(self) -> Running {
        keep_giving_back_freed_memory();
        let http = tokio::spawn(http::serve::serve(self.listener, self.router, self.edge));
        let worker = self.runner.worker().to_string();
        let sched = tokio::spawn(self.runner.run());
        let learn = tokio::spawn(learn_workspace(self.workspace));
        let seal = tokio::spawn(seal_audit_trail(self.store.clone()));
        let directory = tokio::spawn(self.reloader.directory.clone().run(
            self.reloader.policy.clone(),
            crate::directory::ON_CALL_FRESHNESS,
        ));
        // Requests stored under an earlier policy are held to this one from the start.
        let service = self.reloader.service.clone();
        let enforce = tokio::spawn(async move {
            if let Err(e) = service.enforce_policy(chrono::Utc::now()).await {
                tracing::error!(
                    error = format!("{e:#}"),
                    "could not hold pending requests to the policy in force"
                );
            }
        });
        let socket = self.socket.map(|(state, api_url, token)| {
            let stop = Arc::new(tokio::sync::Notify::new());
            let stopped = stop.clone();
            let task = tokio::spawn(async move {
                match http::socket::start(state, &api_url, &token).await {
                    Ok(socket) => {
                        stopped.notified().await;
                        socket.shutdown().await;
                    }
                    Err(e) => tracing::error!(
                        error = format!("{e:#}"),
                        "could not start Socket Mode; Slack reaches jitbot over HTTP only"
                    ),
                }
            });
            (stop, task)
        });
        Running {
            socket,
            addr: self.addr,
            store: self.store,
            metrics: self.metrics,
            reloader: self.reloader,
            worker,
            tasks: vec![http, sched, learn, enforce, seal, directory],
            _single: self.single,
        }
    }

    /// Serves until Ctrl-C or SIGTERM; `SIGHUP` reloads the policy. Work in flight is safe to
    /// cut: it lives in the database.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        tracing::info!(addr = %self.addr, "jitbot is listening");
        let running = self.spawn();
        let reloads = tokio::spawn(reload_on_hangup(running.reloader.clone()));
        shutdown_signal().await;
        reloads.abort();
        tracing::info!("stopping");
        running.stop().await;
        Ok(())
    }
}

/// Links new audit events into the hash chain, within a second or so of their writing; with
/// several replicas, whichever holds the chain head's lock does it.
async fn seal_audit_trail(store: Store) {
    loop {
        let wait = match store.seal_audit().await {
            Ok(n) if n >= crate::store::audit::SEAL_BATCH => std::time::Duration::ZERO,
            Ok(_) => std::time::Duration::from_secs(1),
            Err(e) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "could not seal the audit trail; trying again"
                );
                std::time::Duration::from_secs(5)
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// Asks Slack which workspace to serve (unless `SLACK_TEAM_ID` says) as soon as the app starts,
/// and keeps asking while Slack does not answer, so the first payload need not wait for it.
async fn learn_workspace(workspace: Arc<crate::slack::Workspace>) {
    let mut wait = std::time::Duration::from_secs(1);
    while let Err(e) = workspace.expected().await {
        tracing::warn!(
            error = format!("{e:#}"),
            "auth.test failed; Slack payloads are refused until it answers"
        );
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(std::time::Duration::from_secs(60));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn threads_named(name: &str) -> usize {
        std::fs::read_dir("/proc/self/task")
            .map(|tasks| {
                tasks
                    .filter_map(Result::ok)
                    .filter(|task| {
                        std::fs::read_to_string(task.path().join("comm"))
                            .is_ok_and(|comm| comm.trim_end() == name)
                    })
                    .count()
            })
            .unwrap_or(0)
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn one_thread_gives_freed_memory_back_however_many_apps_start() {
        keep_giving_back_freed_memory();
        keep_giving_back_freed_memory();
        // A thread names itself as it starts.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while threads_named(GIVE_BACK_THREAD) == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(threads_named(GIVE_BACK_THREAD), 1);
    }
}
