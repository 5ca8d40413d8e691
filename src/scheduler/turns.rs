//! Turns between the keys of a lane's claims (see [`Turns`]).

use std::time::Duration;

/// How often a key whose due jobs fill whole claims is passed over for one claim, so another
/// key's job due at the same time is claimed within about this long.
const PASS_OVER_EVERY: Duration = Duration::from_millis(200);

/// Keys that took the whole of a claim have more due in the store, and the next claim goes to
/// everyone else first. A key is left out of claims once it has jobs waiting in memory, but a
/// backlog the lane drains as fast as it claims it (the store, not the key, setting the pace)
/// never waits in memory: without turns, a job of another key due at the same instant would
/// wait behind that whole backlog. A claim that passes a backlog over walks past it in the
/// index, so it happens at most every [`PASS_OVER_EVERY`].
pub(super) struct Turns {
    had_their_turn: Vec<String>,
    last_pass: std::time::Instant,
}

impl Turns {
    pub(super) fn new() -> Turns {
        Turns {
            had_their_turn: Vec::new(),
            last_pass: std::time::Instant::now(),
        }
    }

    /// A full claim took only jobs of these keys.
    pub(super) fn took_whole_claim<'a>(&mut self, keys: impl Iterator<Item = &'a str>) {
        if self.last_pass.elapsed() < PASS_OVER_EVERY {
            return;
        }
        self.last_pass = std::time::Instant::now();
        for key in keys {
            if !self.had_their_turn.iter().any(|k| k == key) {
                self.had_their_turn.push(key.to_string());
            }
        }
    }

    /// Adds the keys whose turn it is not to `skip_keys`, once; whether that passed any over
    /// (the claim after it takes them in again at once).
    pub(super) fn pass_over(&mut self, skip_keys: &mut Vec<String>) -> bool {
        let mut passed_over = false;
        for key in self.had_their_turn.drain(..) {
            if !skip_keys.contains(&key) {
                skip_keys.push(key);
                passed_over = true;
            }
        }
        passed_over
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_that_fills_whole_claims_is_passed_over_for_one_claim_at_most_every_turn() {
        let mut turns = Turns::new();
        turns.last_pass -= PASS_OVER_EVERY;
        let mut skip = Vec::new();
        assert!(!turns.pass_over(&mut skip), "nothing to pass over yet");
        turns.took_whole_claim(["recorder", "recorder"].into_iter());
        assert!(turns.pass_over(&mut skip));
        assert_eq!(skip, vec!["recorder".to_string()]);
        let mut skip = Vec::new();
        assert!(
            !turns.pass_over(&mut skip),
            "the claim after takes it in again"
        );
        assert!(skip.is_empty());
        turns.took_whole_claim(["recorder"].into_iter());
        assert!(
            !turns.pass_over(&mut skip),
            "not again within {PASS_OVER_EVERY:?}"
        );
        // A key left out already (jobs waiting in memory) is no pass-over of its own.
        turns.last_pass -= PASS_OVER_EVERY;
        turns.took_whole_claim(["C1"].into_iter());
        let mut skip = vec!["C1".to_string()];
        assert!(!turns.pass_over(&mut skip));
        assert_eq!(skip, vec!["C1".to_string()]);
    }
}
