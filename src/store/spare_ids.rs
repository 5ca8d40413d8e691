//! Request ids taken from PostgreSQL's sequence ahead of need, for [`super::chained`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Request ids taken from the sequence ahead of need, so that under load a batch of new requests
/// without capped people is one round trip (the chained insert) instead of two.
///
/// How many to take ahead adapts to the flow: none at first; twice as many (up to
/// [`MOST_AHEAD`]) each time the spare ones ran out while still fresh; half as many each time
/// some went stale unused. Spare ids older than [`FRESH`] are dropped, never used: requests
/// stored by several replicas then follow the order they came in to within about that long, as
/// they do when batches commit side by side. Dropped ids leave gaps, as ids taken for a batch
/// that then fails do; under a sparse flow nothing is taken ahead, so almost none are dropped.
#[derive(Default)]
pub(super) struct SpareIds(std::sync::Mutex<Spare>);

#[derive(Default)]
struct Spare {
    /// Ascending.
    ids: VecDeque<i32>,
    /// When they were taken from the sequence.
    taken: Option<Instant>,
    /// How many to take beyond the next batch's need.
    ahead: usize,
}

/// Spare ids taken longer ago than this are dropped.
const FRESH: Duration = Duration::from_secs(1);
/// Most ids taken ahead: a few batches' worth at the bench's load (about 5,000 new requests a
/// second in batches of up to [`super::shapes::SMALL`]), so one batch in a dozen or more pays
/// the extra round trip.
const MOST_AHEAD: usize = 256;

impl SpareIds {
    fn spare(&self) -> std::sync::MutexGuard<'_, Spare> {
        // Nothing here can panic while holding it; a poisoned lock still holds valid ids.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Up to `n` fresh spare ids, ascending.
    pub(super) fn take(&self, n: usize, now: Instant) -> Vec<i32> {
        let mut spare = self.spare();
        if spare
            .taken
            .is_some_and(|taken| now.saturating_duration_since(taken) > FRESH)
        {
            if !spare.ids.is_empty() {
                spare.ahead /= 2;
            }
            spare.ids.clear();
            spare.taken = None;
        }
        let n = n.min(spare.ids.len());
        spare.ids.drain(..n).collect()
    }

    /// How many ids to take from the sequence for a batch that lacks `need`: more than that
    /// when the last ones taken ahead ran out while fresh.
    pub(super) fn to_take(&self, need: usize, now: Instant) -> usize {
        let mut spare = self.spare();
        let ran_out_fresh = spare.ids.is_empty()
            && spare
                .taken
                .is_some_and(|taken| now.saturating_duration_since(taken) <= FRESH);
        if ran_out_fresh {
            spare.ahead = (spare.ahead * 2).clamp(super::shapes::SMALL, MOST_AHEAD);
        }
        need + spare.ahead
    }

    /// Keeps `ids` (ascending, just taken from the sequence) for later batches.
    /// With none, it still notes when the last ones were taken: if the next batch comes within
    /// [`FRESH`], it finds them run out fresh and takes ahead.
    pub(super) fn keep(&self, ids: Vec<i32>, now: Instant) {
        let mut spare = self.spare();
        // Another batch's spare ones, if any, were taken earlier: they count as old as those.
        spare.taken = match spare.taken {
            Some(taken) if !spare.ids.is_empty() => Some(taken.min(now)),
            _ => Some(now),
        };
        spare.ids.extend(ids);
        spare.ids.make_contiguous().sort_unstable();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_taken_ahead_only_while_batches_come_close_together_and_never_used_stale() {
        use crate::store::shapes::SMALL;
        let ms = Duration::from_millis;
        let spare = SpareIds::default();
        let t0 = Instant::now();
        // A first batch: nothing is taken ahead.
        assert!(spare.take(3, t0).is_empty());
        assert_eq!(spare.to_take(3, t0), 3);
        spare.keep(Vec::new(), t0);
        // The next comes soon after: none were left, so it takes ahead.
        let t1 = t0 + ms(5);
        assert!(spare.take(2, t1).is_empty());
        assert_eq!(spare.to_take(2, t1), 2 + SMALL);
        spare.keep((10..10 + SMALL as i32).collect(), t1);
        // The next batches use them, in order, without the sequence.
        assert_eq!(spare.take(4, t1 + ms(1)), [10, 11, 12, 13]);
        let rest: Vec<i32> = (14..10 + SMALL as i32).collect();
        assert_eq!(
            spare.take(20, t1 + ms(2)),
            rest,
            "what is left, short of 20"
        );
        // Run out while fresh again: twice as many ahead.
        let t2 = t1 + ms(3);
        assert_eq!(spare.to_take(8, t2), 8 + 2 * SMALL);
        spare.keep((100..100 + 2 * SMALL as i32).collect(), t2);
        // Gone stale: never used, and half as many ahead next time.
        let late = t2 + FRESH + ms(1);
        assert!(spare.take(1, late).is_empty());
        assert_eq!(spare.to_take(1, late), 1 + SMALL);
        spare.keep(Vec::new(), late);
        // Close batches double it up to a bound.
        for step in 1..20 {
            let now = late + ms(step);
            assert!(spare.take(1, now).is_empty());
            let take = spare.to_take(1, now);
            assert!(take <= 1 + MOST_AHEAD, "{take}");
            spare.keep(Vec::new(), now);
        }
        assert_eq!(spare.to_take(1, late + ms(30)), 1 + MOST_AHEAD);
        // A sparse flow takes none ahead: each batch finds the last ones stale.
        let sparse = SpareIds::default();
        for step in 0..5 {
            let now = t0 + (FRESH + ms(1)) * step;
            assert!(sparse.take(1, now).is_empty());
            assert_eq!(sparse.to_take(1, now), 1, "batch {step}");
            sparse.keep(Vec::new(), now);
        }
    }
}
