//! The policy in force now. Every decision reads it at the moment it is made, so a reload
//! (`SIGHUP`) applies to the next click, command and job without a restart.

use std::sync::{Arc, RwLock};

use super::{Lookups, Policy};

/// The current policy, swapped whole on reload; readers keep the version they started with.
pub struct LivePolicy {
    current: RwLock<Arc<Policy>>,
    /// What Slack and PagerDuty said, kept across reloads.
    lookups: Arc<Lookups>,
}

impl LivePolicy {
    pub fn new(mut policy: Policy) -> Self {
        let lookups = policy.lookups.clone();
        policy.lookups = lookups.clone();
        Self {
            current: RwLock::new(Arc::new(policy)),
            lookups,
        }
    }

    /// Where every version of the policy reads Slack's and PagerDuty's last answers.
    pub fn lookups(&self) -> &Arc<Lookups> {
        &self.lookups
    }

    /// The policy in force now. One decision should read it once and use that copy throughout.
    pub fn now(&self) -> Arc<Policy> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Puts a checked policy in force.
    pub fn replace(&self, mut policy: Policy) {
        policy.lookups = self.lookups.clone();
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(policy);
    }
}
