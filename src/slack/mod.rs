//! The only module that knows Slack JSON: signatures, payloads, Block Kit, the Web API client.

pub mod blocks;
pub mod client;
pub mod digest;
pub mod error;
pub mod gate;
pub mod home;
pub mod modals;
pub mod payload;
pub mod people;
pub mod scopes;
pub mod texts;
pub mod verify;
pub mod workspace;

pub use client::{SlackApi, SlackError};
pub use workspace::{Admission, Workspace};
