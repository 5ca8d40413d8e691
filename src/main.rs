use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use jitbot::config::{DEFAULT_DATABASE_URL, DEFAULT_POLICY, Env, UserError};
use jitbot::domain::Policy;
use jitbot::store::Store;

/// jitbot: just-in-time access, approved in Slack.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve Slack's requests and run the scheduler (applies pending migrations first).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Check a policy file; errors name file, line and column. Exit 1 on any error.
    Check {
        /// The policy file (default: $JIT_POLICY, else manifest/policy.yaml).
        policy: Option<PathBuf>,
        /// Also print every resource as expanded from templates, the bundles and the API clients.
        #[arg(long)]
        list: bool,
    },
    /// Show the whole life of a request on this machine: no Slack workspace, no cloud account.
    Demo,
    /// Ask a running `jitbot serve` whether it is healthy (for container health checks): exit 0
    /// when its /healthz answers 200 within 2 s, else 1.
    Health {
        /// The server's base URL (default: from JIT_LISTEN, http://127.0.0.1:3000).
        url: Option<String>,
    },
    /// Ask for access over the HTTP API ($JIT_API_URL, $JIT_API_TOKEN or $JIT_API_TOKEN_FILE)
    /// and wait: exit 0 once access is active, 1 if refused, denied, failed or still waiting at
    /// --timeout, 2 if jitbot answers with an error of its own. The request goes to stdout as JSON.
    Request {
        /// The resource (`prod-db`).
        resource: String,
        /// How long, such as 30m or 1h30m.
        duration: String,
        /// Why; some resources require a reason or a ticket id.
        reason: Vec<String>,
        /// Stop waiting after this long (the request stays open).
        #[arg(long, default_value = "1h")]
        timeout: String,
    },
    /// The weekly digest of the period containing --at (default now), printed; `serve` posts it.
    Digest {
        /// Print it; nothing is posted (the only mode: `serve` posts the digest on schedule).
        #[arg(long)]
        dry_run: bool,
        /// A time in the period (RFC 3339, or a date such as 2026-11-30).
        #[arg(long)]
        at: Option<String>,
        /// The policy file with the digest's schedule (default: $JIT_POLICY).
        #[arg(long)]
        policy: Option<PathBuf>,
    },
    /// The audit trail: verify its hash chain, or export it with its hashes.
    Audit {
        #[command(subcommand)]
        command: AuditCmd,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Walk the hash chain; name the first broken link and exit 1, else exit 0.
    Verify,
    /// Print the audit trail with its hashes, oldest first.
    Export {
        /// json (an array) or csv.
        #[arg(long, default_value = "json")]
        format: jitbot::audit_export::Format,
        /// Only events at or after this time (RFC 3339, or a date such as 2026-11-30).
        #[arg(long)]
        since: Option<String>,
    },
}

fn init_tracing(env: &Env, default: &str) {
    // A filter that does not parse is reported by `serve` with the rest of the configuration.
    let filter = tracing_subscriber::EnvFilter::try_new(
        env.get("JIT_LOG").unwrap_or_else(|| default.into()),
    )
    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour only for a person at a terminal: never into pipes, files or log collectors.
    let ansi =
        std::io::IsTerminal::is_terminal(&std::io::stderr()) && env.get("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if jitbot::config::log_format(env) == Ok(jitbot::config::LogFormat::Json) {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let env = Env::default();
    match cli.command {
        Cmd::Serve => {
            init_tracing(&env, "info");
            // Every problem of the configuration and the policy, at once, before the database.
            let (config, policy) = jitbot::app::prepare(&env)?;
            let app = jitbot::app::build(config, env, policy).await?;
            app.run_until_stopped().await?;
        }
        Cmd::Migrate => {
            init_tracing(&env, "info");
            let store = open_store(&env).await?;
            store.migrate().await?;
            println!("migrations applied");
        }
        Cmd::Check { policy, list } => {
            let path = policy.unwrap_or_else(|| {
                env.get("JIT_POLICY")
                    .unwrap_or_else(|| DEFAULT_POLICY.into())
                    .into()
            });
            match Policy::load(&path) {
                Ok((policy, warnings)) => {
                    for w in &warnings {
                        eprintln!("warning: {w}");
                    }
                    // Where a postgres provider's admin URL is set here, ask it too: an identity
                    // that is a superuser or jitbot's own login is refused now, not at deploy.
                    if let Err(e) = jitbot::app::refuse_privileged_identities(&policy, &env).await {
                        for line in format!("{e:#}").lines() {
                            eprintln!("error: {}: {line}", path.display());
                        }
                        return Ok(ExitCode::from(1));
                    }
                    println!(
                        "{}: ok ({} resources, {} providers, {} groups)",
                        path.display(),
                        policy.resources.len(),
                        policy.providers.len(),
                        policy.groups.len()
                    );
                    if list {
                        for r in policy.resources.values() {
                            println!(
                                "{}\tprovider {}\tgrant {}\tup to {}\tapprovers {} ({} needed)",
                                r.name,
                                r.provider,
                                serde_json::Value::Object(r.grant.clone()),
                                r.max_duration,
                                r.approvers.join(","),
                                r.approvals
                            );
                        }
                        for (name, resources) in &policy.bundles {
                            println!("bundle {name}\t{}", resources.join(","));
                        }
                        for client in policy.clients.values() {
                            println!(
                                "client {}\tup to {} calls a minute",
                                client.name, client.requests_per_minute
                            );
                        }
                    }
                }
                Err(errors) => {
                    for e in &errors.0 {
                        eprintln!("error: {e}");
                    }
                    eprintln!("{} error(s) in {}", errors.0.len(), path.display());
                    return Ok(ExitCode::from(1));
                }
            }
        }
        Cmd::Health { url } => {
            let base = url.unwrap_or_else(|| {
                let listen = env
                    .get("JIT_LISTEN")
                    .and_then(|l| jitbot::config::listen_address(&l).ok())
                    .unwrap_or_else(|| jitbot::config::DEFAULT_LISTEN.into());
                // Every interface includes this one.
                format!("http://{}", listen.replacen("0.0.0.0:", "127.0.0.1:", 1))
            });
            let http = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(2))
                .redirect(reqwest::redirect::Policy::none())
                .build()?;
            let url = format!("{}/healthz", base.trim_end_matches('/'));
            return Ok(match http.get(&url).send().await {
                Ok(r) if r.status().is_success() => {
                    println!("healthy");
                    ExitCode::SUCCESS
                }
                Ok(r) => {
                    eprintln!("unhealthy: {url} answered HTTP {}", r.status().as_u16());
                    ExitCode::from(1)
                }
                Err(e) => {
                    eprintln!(
                        "unhealthy: no answer from {url} ({})",
                        if e.is_timeout() {
                            "timed out"
                        } else {
                            "cannot connect"
                        }
                    );
                    ExitCode::from(1)
                }
            });
        }
        Cmd::Audit { command } => {
            init_tracing(&env, "warn");
            let store = open_store(&env).await?;
            match command {
                AuditCmd::Verify => {
                    let report = store.verify_audit().await.map_err(not_migrated)?;
                    match &report.broken {
                        None => {
                            println!(
                                "the audit chain holds: {} links, head {}{}",
                                report.sealed,
                                report.head_hash,
                                if report.unsealed > 0 {
                                    format!(" ({} newer events not linked yet)", report.unsealed)
                                } else {
                                    String::new()
                                }
                            );
                        }
                        Some(broken) => {
                            eprintln!("error: the audit chain is broken: {broken}");
                            return Ok(ExitCode::from(1));
                        }
                    }
                }
                AuditCmd::Export { format, since } => {
                    let since = match since.as_deref() {
                        None => 0,
                        Some(text) => jitbot::audit_export::parse_time(text)
                            .map_err(|e| UserError(format!("--since {text:?}: {e}")))?,
                    };
                    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                    jitbot::audit_export::export(&store, format, since, &mut out)
                        .await
                        .map_err(not_migrated)?;
                }
            }
        }
        Cmd::Request {
            resource,
            duration,
            reason,
            timeout,
        } => {
            init_tracing(&env, "warn");
            let url = env.get("JIT_API_URL").ok_or_else(|| {
                UserError("JIT_API_URL is not set: the base URL of jitbot serve, such as https://jitbot.internal".into())
            })?;
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(UserError(format!(
                    "JIT_API_URL must start with http:// or https:// (it is {url:?})"
                ))
                .into());
            }
            let token = env
                .secret("JIT_API_TOKEN")?
                .ok_or_else(|| {
                    UserError(
                        "JIT_API_TOKEN (or JIT_API_TOKEN_FILE) is not set: the token of a client in the policy's `clients:`".into(),
                    )
                })?;
            let timeout = jitbot::domain::GrantDuration::parse(&timeout)
                .map_err(|e| UserError(format!("--timeout {timeout:?}: {e}")))?;
            let resources: Vec<String> = resource
                .split(',')
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(String::from)
                .collect();
            if resources.is_empty() {
                return Err(UserError(
                    "name a resource, such as `jitbot request prod-db 30m deploy 1234`".into(),
                )
                .into());
            }
            let outcome = jitbot::api::cli::run(jitbot::api::cli::Ask {
                url,
                token: token.expose().to_string(),
                resources,
                duration,
                reason: reason.join(" "),
                timeout: timeout.std(),
            })
            .await?;
            return Ok(ExitCode::from(outcome.exit_code()));
        }
        Cmd::Digest {
            dry_run,
            at,
            policy,
        } => {
            init_tracing(&env, "warn");
            if !dry_run {
                return Err(UserError(
                    "`jitbot serve` posts the digest on its schedule; `jitbot digest --dry-run` prints it".into(),
                )
                .into());
            }
            let path = policy.unwrap_or_else(|| {
                env.get("JIT_POLICY")
                    .unwrap_or_else(|| DEFAULT_POLICY.into())
                    .into()
            });
            let (policy, _) = Policy::load(&path).map_err(|e| UserError(format!("{e}")))?;
            let Some(settings) = policy.digest.as_ref() else {
                return Err(UserError(format!(
                    "{} has no `digest:` (channel and schedule)",
                    path.display()
                ))
                .into());
            };
            let now = chrono::Utc::now();
            let at = match at.as_deref() {
                None => now,
                Some(text) => jitbot::audit_export::parse_time(text)
                    .ok()
                    .and_then(chrono::DateTime::from_timestamp_millis)
                    .ok_or_else(|| {
                        UserError(format!(
                            "--at {text:?}: not a time (RFC 3339, or a date such as 2026-11-30)"
                        ))
                    })?,
            };
            let (from, to) = settings
                .period(at)
                .ok_or_else(|| UserError("the digest's schedule never fires".into()))?;
            let store = open_store(&env).await?;
            let digest = jitbot::service::digest::gather(&store, from, to.min(now.max(from)), now)
                .await
                .map_err(not_migrated)?;
            // For a terminal: Slack's markup turned into plain text.
            println!(
                "{}",
                jitbot::slack::blocks::strip_mrkdwn(&jitbot::slack::digest::digest_text(&digest))
            );
        }
        Cmd::Demo => {
            init_tracing(&env, "error");
            jitbot::demo::run().await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The store `JIT_DATABASE_URL` (or its `_FILE`) names, for the commands that only need it.
async fn open_store(env: &Env) -> anyhow::Result<Store> {
    let url = env
        .secret("JIT_DATABASE_URL")?
        .map(|s| s.expose().to_string())
        .unwrap_or_else(|| DEFAULT_DATABASE_URL.into());
    Store::connect(&url)
        .await
        .map_err(|e| UserError(format!("{e:#}")).into())
}

/// A store from before the audit chain answers with an unknown column: say what to do.
fn not_migrated(e: anyhow::Error) -> anyhow::Error {
    let text = format!("{e:#}");
    if text.contains("seq") || text.contains("audit_head") {
        UserError(format!(
            "the database has no audit chain yet: run `jitbot migrate` (or start `jitbot serve`) first ({text})"
        ))
        .into()
    } else {
        e
    }
}

fn main() -> ExitCode {
    jitbot::app::bound_allocator_arenas();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("internal error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) if e.chain().any(|c| c.is::<UserError>()) => {
            for line in format!("{e:#}").lines() {
                eprintln!("error: {line}");
            }
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("internal error: {e:#}");
            ExitCode::from(2)
        }
    }
}
