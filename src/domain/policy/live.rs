//! The policy in force now. Every decision reads it at the moment it is made, so a reload
//! (`SIGHUP`) applies to the next click, command and job without a restart.

use std::sync::{Arc, RwLock};

use super::Policy;

/// The current policy, swapped whole on reload; readers keep the version they started with.
pub struct LivePolicy {
    current: RwLock<Arc<Policy>>,
}

impl LivePolicy {
    pub fn new(policy: Policy) -> Self {
        Self {
            current: RwLock::new(Arc::new(policy)),
        }
    }

    /// The policy in force now. One decision should read it once and use that copy throughout.
    pub fn now(&self) -> Arc<Policy> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Puts a checked policy in force.
    pub fn replace(&self, policy: Policy) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(policy);
    }
}
