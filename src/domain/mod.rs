//! Pure domain types: no IO, no Slack JSON, no sea-orm.

pub mod command;
pub mod duration;
pub mod job;
pub mod policy;
pub mod request;

pub use command::{Command, CommandError, RequestId};
pub use duration::GrantDuration;
pub use job::{Job, Lane, Scheduled};
pub use policy::{LivePolicy, Policy, ProviderConfig, Resource};
pub use request::{EndReason, State};
