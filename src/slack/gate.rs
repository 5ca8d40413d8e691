//! Slack's rate limits, as this process has met them. A 429 holds back only the method it came
//! from, and for `chat.postMessage` (limited per channel) only that channel, until its
//! `Retry-After` has passed. The scheduler reads the holds to leave such jobs in the queue.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The one method Slack limits per channel rather than per workspace.
pub const POST_MESSAGE: &str = "chat.postMessage";

#[derive(Default)]
pub struct RateGate {
    /// (method, channel or "") → held until.
    holds: Mutex<HashMap<(String, String), Instant>>,
}

/// What is held back right now.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Holds {
    /// Methods held back in every channel.
    pub methods: Vec<String>,
    /// Channels `chat.postMessage` may not post to.
    pub post_channels: Vec<String>,
}

fn key(method: &str, channel: &str) -> (String, String) {
    let channel = if method == POST_MESSAGE { channel } else { "" };
    (method.to_string(), channel.to_string())
}

impl RateGate {
    /// Slack asked us to wait `retry_after` before calling `method` (in `channel`) again.
    pub fn hold(&self, method: &str, channel: &str, retry_after: Duration) {
        let until = Instant::now() + retry_after;
        let mut holds = self.holds.lock().unwrap_or_else(|e| e.into_inner());
        let entry = holds.entry(key(method, channel)).or_insert(until);
        *entry = (*entry).max(until);
    }

    /// How much longer `method` in `channel` is held back, if it is.
    pub fn held_for(&self, method: &str, channel: &str) -> Option<Duration> {
        let now = Instant::now();
        let holds = self.holds.lock().unwrap_or_else(|e| e.into_inner());
        [key(method, channel), key(method, "")]
            .iter()
            .filter_map(|k| holds.get(k))
            .filter(|until| **until > now)
            .map(|until| *until - now)
            .max()
    }

    /// Everything held back now; forgets holds that have passed.
    pub fn holds(&self) -> Holds {
        let now = Instant::now();
        let mut holds = self.holds.lock().unwrap_or_else(|e| e.into_inner());
        holds.retain(|_, until| *until > now);
        let mut out = Holds::default();
        for (method, channel) in holds.keys() {
            if channel.is_empty() {
                out.methods.push(method.clone());
            } else {
                out.post_channels.push(channel.clone());
            }
        }
        out.methods.sort();
        out.post_channels.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_post_limit_holds_one_channel_and_other_limits_hold_the_method() {
        let gate = RateGate::default();
        gate.hold(POST_MESSAGE, "C1", Duration::from_secs(30));
        gate.hold("chat.update", "C1", Duration::from_secs(30));
        assert!(gate.held_for(POST_MESSAGE, "C1").is_some());
        assert!(gate.held_for(POST_MESSAGE, "C2").is_none());
        assert!(gate.held_for("chat.update", "C9").is_some());
        assert_eq!(
            gate.holds(),
            Holds {
                methods: vec!["chat.update".into()],
                post_channels: vec!["C1".into()],
            }
        );
        gate.hold("chat.postEphemeral", "", Duration::ZERO);
        assert!(gate.held_for("chat.postEphemeral", "").is_none());
    }
}
