//! `digest:`: the weekly picture of who got access to what, posted to `channel` on `schedule`
//! (cron with a seconds field, on the wall clock of `settings.timezone`).

use std::str::FromStr;

use chrono::{DateTime, Utc};
use marked_yaml::Spanned;
use serde::Deserialize;

use super::check::Checker;
use super::is_channel_id;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDigest {
    pub(super) channel: Spanned<String>,
    pub(super) schedule: Spanned<String>,
}

/// Where and when the digest is posted.
#[derive(Clone, Debug)]
pub struct DigestSettings {
    pub channel: String,
    pub schedule: cron::Schedule,
    /// `settings.timezone`: "9:00 on Monday" is nine in the morning there.
    pub tz: chrono_tz::Tz,
}

impl DigestSettings {
    /// The period containing `at`: from the last posting time at or before it to the next one
    /// after it (the digest posted at the end covers it).
    pub fn period(&self, at: DateTime<Utc>) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let end = self.schedule.after(&at.with_timezone(&self.tz)).next()?;
        let start = self.schedule.after(&end).next_back()?;
        Some((start.with_timezone(&Utc), end.with_timezone(&Utc)))
    }
}

impl Checker<'_> {
    pub(super) fn digest(&mut self, raw: RawDigest, tz: chrono_tz::Tz) -> Option<DigestSettings> {
        let mut ok = true;
        if !is_channel_id(&raw.channel) {
            self.error(
                &raw.channel,
                "digest.channel",
                format!(
                    "`{}` is not a Slack channel ID (C… or G…)",
                    raw.channel.as_str()
                ),
            );
            ok = false;
        }
        let schedule = match cron::Schedule::from_str(raw.schedule.as_str()) {
            Ok(s) if s.upcoming(tz).next().is_some() => Some(s),
            Ok(_) => {
                self.error(
                    &raw.schedule,
                    "digest.schedule",
                    "this schedule never fires",
                );
                None
            }
            Err(e) => {
                self.error(
                    &raw.schedule,
                    "digest.schedule",
                    format!(
                        "not a cron schedule with a seconds field, such as \"0 0 9 * * Mon\" ({e})"
                    ),
                );
                None
            }
        };
        match (ok, schedule) {
            (true, Some(schedule)) => Some(DigestSettings {
                channel: raw.channel.to_string(),
                schedule,
                tz,
            }),
            _ => None,
        }
    }
}
