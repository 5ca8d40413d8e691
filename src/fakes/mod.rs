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
