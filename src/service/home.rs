//! What the App Home tab shows a person, read from the store as it stands.

use chrono::DateTime;
use serde_json::Value;

use super::{Service, secs};
use crate::domain::State;
use crate::slack::home::{self, ForMe, MyGrant, MyWait};
use crate::store::BundleSpec;

impl Service {
    /// The Home tab of `user`.
    pub async fn home(&self, user: &str) -> anyhow::Result<Value> {
        let open = self.store.open_of(user).await?;
        let grants: Vec<MyGrant> = open
            .iter()
            .filter(|(r, _)| r.state != State::Pending.as_str())
            .map(|(r, g)| MyGrant {
                id: r.id,
                what: BundleSpec::what(r),
                state: r.state.clone(),
                ends: g
                    .as_ref()
                    .and_then(|g| g.expires_at)
                    .and_then(DateTime::from_timestamp_millis),
            })
            .collect();
        let waits: Vec<MyWait> = open
            .iter()
            .filter(|(r, _)| r.state == State::Pending.as_str())
            .map(|(r, _)| MyWait {
                id: r.id,
                what: BundleSpec::what(r),
                duration: secs(r.duration_secs),
            })
            .collect();
        let room = super::views::Room {
            items: self.pending_read_at_most,
            chars: usize::MAX,
        };
        let (for_me, counted_all) = self
            .awaiting(user, room, |r, mine| {
                let shown = ForMe {
                    id: r.id,
                    what: r.what(),
                    duration: secs(r.duration_secs),
                    requester: r.requester.clone(),
                    reason: r.reason.clone(),
                    mine,
                };
                (shown, 0)
            })
            .await?;
        Ok(home::home_view(&grants, &waits, &for_me, counted_all))
    }
}
