//! End-to-end tests: the real app on port 0, a recording fake Slack on 127.0.0.1, real SQLite
//! and real PostgreSQL stores, real PostgreSQL roles and a real webhook receiver.

mod api;
mod approvals;
mod audit;
#[cfg(feature = "aws")]
mod aws_iam;
#[cfg(feature = "aws")]
mod aws_sso;
mod break_glass;
mod bundles;
mod cli;
mod digest;
mod edge;
mod escalation;
mod extend;
mod failures;
mod footprint;
mod forms;
#[cfg(feature = "gcp")]
mod gcp_iam;
mod home;
#[cfg(feature = "kubernetes")]
mod kubernetes;
mod lanes;
mod lifecycle;
mod oncall;
mod outage;
mod overlap;
mod pace;
mod policy_change;
mod replicas;
mod restart;
mod slack_faults;
mod snapshots;
mod socket_mode;
mod support;
mod trust;
