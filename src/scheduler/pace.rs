//! Slack's pace for posts: `chat.postMessage` takes about one message per second per channel,
//! with short bursts. A post that cannot go out now is booked into its channel's next free slot
//! (its job is due then), so a channel's posts drain in order at Slack's rate, fifty channels
//! drain fifty times faster than one, and the queue never holds a channel's whole backlog in
//! memory or scans it at every claim.
//!
//! The pace is this process's: after a restart, or with several replicas, a channel may briefly
//! get more than its share, and Slack's 429s (honoured per channel) take over.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Default gap between posts to one channel, once its burst is spent.
pub const POST_INTERVAL: Duration = Duration::from_secs(1);
/// Default posts a quiet channel takes at once.
pub const POST_BURST: u32 = 3;
/// Channels remembered before the quiet ones are forgotten.
const REMEMBERED: usize = 10_000;

/// When a post may go out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Turn {
    Now,
    /// At this time (epoch ms).
    At(i64),
}

pub struct Pacer {
    interval_ms: i64,
    /// How far ahead of the pace a burst may run.
    burst_ms: i64,
    /// Channel → when its next post is free (epoch ms).
    next_free: Mutex<HashMap<String, i64>>,
}

impl Pacer {
    pub fn new(interval: Duration, burst: u32) -> Pacer {
        let interval_ms = interval.as_millis().max(1) as i64;
        Pacer {
            interval_ms,
            burst_ms: interval_ms * i64::from(burst.max(1) - 1),
            next_free: Mutex::new(HashMap::new()),
        }
    }

    /// Takes the next turn of `channel` for one post.
    pub fn book(&self, channel: &str, now: i64) -> Turn {
        let mut next_free = self.next_free.lock().unwrap_or_else(|e| e.into_inner());
        if next_free.len() > REMEMBERED {
            let horizon = now - self.burst_ms;
            next_free.retain(|_, free| *free > horizon);
        }
        let free = next_free.entry(channel.to_string()).or_insert(now);
        let turn = if *free <= now + self.burst_ms {
            *free = (*free).max(now);
            Turn::Now
        } else {
            Turn::At(*free - self.burst_ms)
        };
        *free += self.interval_ms;
        turn
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_takes_a_burst_then_one_post_per_interval_in_order() {
        let pacer = Pacer::new(Duration::from_secs(1), 3);
        let turns: Vec<Turn> = (0..6).map(|_| pacer.book("C1", 10_000)).collect();
        assert_eq!(
            turns,
            [
                Turn::Now,
                Turn::Now,
                Turn::Now,
                Turn::At(11_000),
                Turn::At(12_000),
                Turn::At(13_000)
            ]
        );
        // Another channel is not held back by the first.
        assert_eq!(pacer.book("C2", 10_000), Turn::Now);
        // A post that comes later queues behind the booked ones.
        assert_eq!(pacer.book("C1", 10_500), Turn::At(14_000));
        // A quiet channel gets its burst back.
        assert_eq!(pacer.book("C1", 30_000), Turn::Now);
    }
}
