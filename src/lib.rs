//! jitbot: a self-hosted Slack bot for just-in-time access.
//!
//! # Layout
//! - [`domain`]: pure types and rules (durations, commands, policy, states, jobs); no IO.
//! - [`store`]: the only module that knows sea-orm; guarded transitions and the job queue.
//! - [`slack`]: the only module that knows Slack JSON: signatures, payloads, Block Kit, client.
//! - [`providers`]: where access is granted and revoked (PostgreSQL roles, webhooks).
//! - [`service`]: what a command or a click does, answered at once; slow work becomes jobs.
//! - [`scheduler`]: runs due jobs (grants, expiries, timeouts, Slack posts) with retries.
//! - [`http`]: axum routes; verifies Slack signatures before reading anything.
//! - [`app`]: wiring: config → store → router + scheduler.
//! - [`directory`]: Slack user groups and PagerDuty on-call, asked and kept for the policy.
//! - [`fakes`]: recording stand-ins for the Slack Web API and a webhook receiver (demo, tests).
//! - [`demo`]: `jitbot demo`.

pub mod api;
pub mod app;
pub mod audit_export;
pub mod config;
pub mod demo;
pub mod directory;
pub mod domain;
pub mod fakes;
pub mod http;
pub mod metrics;
pub mod providers;
pub mod scheduler;
pub mod service;
pub mod slack;
pub mod store;
