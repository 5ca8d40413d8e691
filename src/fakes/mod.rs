//! Recording stand-ins for what jitbot talks to, served on 127.0.0.1: the Slack Web API (with
//! Slack's Block Kit limits, and faults on demand: errors, 429s, calls that never answer) and a
//! webhook receiver that checks `X-Jit-Signature` (and can be slow, hang, or answer with any
//! status). `jitbot demo` and the tests use them.
//!
//! - [`slack`]: the fake Slack Web API;
//! - [`webhook`]: the webhook receiver;
//! - [`gcp`]: Cloud Resource Manager's IAM policies, with etags and signed bearer JWTs;
//! - [`kubernetes`]: the Kubernetes API's RBAC bindings, with its status codes;
//! - [`pagerduty`]: PagerDuty's `/oncalls`, checking the API token;
//! - [`socket`]: Slack's Socket Mode (WebSocket envelopes and acks);
//! - [`sender`]: a signed sender standing in for Slack's side of jitbot's HTTP edge.

mod blockkit;
pub mod gcp;
pub mod kubernetes;
pub mod pagerduty;
mod people;
pub mod sender;
pub mod slack;
pub mod socket;
pub mod views;
pub mod webhook;

pub use gcp::FakeGcp;
pub use kubernetes::FakeKubernetes;
pub use pagerduty::{FakePagerDuty, PagerDutyMode};
pub use sender::{Answer, SlackSender};
pub use slack::{FakeSlack, SlackCall, SlackFault};
pub use socket::FakeSocketMode;
pub use webhook::{HookFault, WebhookEvent, WebhookReceiver};

/// Serves `app` on 127.0.0.1 (a free port) from a thread and runtime of its own, so a fake keeps
/// answering while the code under test (or a test waiting on a child process) blocks the
/// caller's runtime. Sending on (or dropping) the returned sender stops it.
pub(crate) fn serve_apart(
    name: &str,
    app: axum::Router,
) -> anyhow::Result<(std::net::SocketAddr, tokio::sync::oneshot::Sender<()>)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                tokio::select! {
                    _ = axum::serve(listener, app) => {}
                    _ = stopped => {}
                }
            });
        })?;
    Ok((addr, stop))
}
