//! The states of an access request. Transitions themselves are guarded database statements
//! (`store`), so two clicks or two replicas cannot both win; this module names the states and
//! says which ones are open.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// Waiting for approvers.
    Pending,
    /// Approved; the provider has not confirmed the grant yet.
    Approved,
    /// Access is in place until `expires_at`.
    Active,
    /// Access is being taken away (expiry or `/jit revoke`).
    Revoking,
    /// A revoke failed at least once and is being retried until it succeeds.
    RevokeFailed,
    Expired,
    Revoked,
    Denied,
    Cancelled,
    TimedOut,
    GrantFailed,
    /// An extension (`/jit extend`) that was approved: the grant it extends ends later.
    Extended,
}

impl State {
    pub const ALL: [State; 12] = [
        State::Pending,
        State::Approved,
        State::Active,
        State::Revoking,
        State::RevokeFailed,
        State::Expired,
        State::Revoked,
        State::Denied,
        State::Cancelled,
        State::TimedOut,
        State::GrantFailed,
        State::Extended,
    ];

    /// States in which the requester holds, may soon hold, or may still hold access.
    pub const OPEN: [State; 5] = [
        State::Pending,
        State::Approved,
        State::Active,
        State::Revoking,
        State::RevokeFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Approved => "approved",
            State::Active => "active",
            State::Revoking => "revoking",
            State::RevokeFailed => "revoke_failed",
            State::Expired => "expired",
            State::Revoked => "revoked",
            State::Denied => "denied",
            State::Cancelled => "cancelled",
            State::TimedOut => "timed_out",
            State::GrantFailed => "grant_failed",
            State::Extended => "extended",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// The state as people read it: `timed out`, `revoke failed`.
    pub fn label(self) -> String {
        self.as_str().replace('_', " ")
    }

    pub fn is_open(self) -> bool {
        State::OPEN.contains(&self)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why access ends: decides whether a finished revoke leaves the request `expired` or `revoked`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    Expired,
    Revoked,
    /// Cancelled by the requester after approval, while the grant was still under way.
    Cancelled,
    /// Clean-up after `grant_failed`: the request stays `grant_failed`.
    GrantFailed,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        self.final_state().as_str()
    }

    pub fn final_state(self) -> State {
        match self {
            EndReason::Expired => State::Expired,
            EndReason::Revoked => State::Revoked,
            EndReason::Cancelled => State::Cancelled,
            EndReason::GrantFailed => State::GrantFailed,
        }
    }

    pub fn parse(s: &str) -> Option<EndReason> {
        [
            EndReason::Expired,
            EndReason::Revoked,
            EndReason::Cancelled,
            EndReason::GrantFailed,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_round_trips_through_its_name() {
        for state in State::ALL {
            assert_eq!(State::parse(state.as_str()), Some(state));
        }
        assert_eq!(State::parse("bogus"), None);
    }
}
