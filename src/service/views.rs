//! What people can look up: their requests, what waits for them, what they may ask for.

use std::collections::BTreeMap;

use chrono::DateTime;

use super::{Service, label, secs};
use crate::domain::{Resource, State};
use crate::slack::blocks::{self, mention};
use crate::store::{self, BundleSpec};

/// ` (bundle: …)` on a bundle's lead, ` (with #42)` on its other resources' requests,
/// ` (extends #42)` on an extension.
fn bundle_note(r: &store::Request) -> String {
    if let Some(of) = r.extends {
        return format!(" (+{} on #{of})", secs(r.duration_secs));
    }
    if let Some(lead) = r.bundle_of {
        return format!(" (with #{lead})");
    }
    BundleSpec::of(r)
        .map(|b| format!(" (bundle: {})", b.label()))
        .unwrap_or_default()
}

/// Ended requests `/jit list` shows after the open ones.
const RECENTLY_ENDED: u64 = 5;
/// Pending requests read per query while walking them for `/jit pending`.
const PENDING_PAGE: u64 = 500;
/// The shortest line `/jit pending` writes for a request (`• #1 <@U1> wants *a* for 1m: x`).
const SHORTEST_PENDING_LINE: usize = 28;
/// Most requests `/jit pending` (and the Home tab) read for one answer: more than its messages
/// can hold. The walk stops there, so an answer costs the same with ten thousand or a million
/// waiting (measured with a million: the whole walk took 2.5 s, past Slack's deadline, and
/// 200 MB), and the answer says there are more.
pub const PENDING_READ_AT_MOST: usize = MAX_MESSAGES * MAX_MESSAGE_CHARS / SHORTEST_PENDING_LINE;
/// How many characters of lines `/jit pending` reads: what its messages hold at most, so every
/// line that can be shown is read (and [`split_messages`] says how many of them did not fit).
const PENDING_CHARS: usize = MAX_MESSAGES * MAX_MESSAGE_CHARS;
/// How much one answer holds of a list: at most `items` entries, whose sizes add up to at most
/// `chars`.
pub(super) struct Room {
    pub items: usize,
    pub chars: usize,
}
/// Longest message of a long list: Slack shows up to 40,000 characters of a message's text;
/// this leaves room and keeps each message readable.
pub const MESSAGE_CHARS: usize = 12_000;

/// Messages one answer may have: the command's own answer, then `response_url`'s five uses.
pub const MAX_MESSAGES: usize = 6;
/// The longest a message may grow to when a list would otherwise need more than
/// [`MAX_MESSAGES`] (Slack cuts a message's text at 40,000 characters).
pub const MAX_MESSAGE_CHARS: usize = 39_000;

/// Lines joined into as few messages as fit [`MESSAGE_CHARS`] each. A list too long for
/// [`MAX_MESSAGES`] such messages uses longer ones; one too long even for that ends with a line
/// that says how many lines were left out. Never cut silently.
pub fn split_messages(lines: Vec<String>) -> Vec<String> {
    let messages = pack(&lines, MESSAGE_CHARS);
    if messages.len() <= MAX_MESSAGES {
        return messages;
    }
    let messages = pack(&lines, MAX_MESSAGE_CHARS);
    if messages.len() <= MAX_MESSAGES {
        return messages;
    }
    // Keep whole messages, leaving room in the last for the note.
    let mut kept = messages;
    kept.truncate(MAX_MESSAGES);
    let last = kept.pop().unwrap_or_default();
    let mut last_lines: Vec<&str> = last.lines().collect();
    let shown_before: usize = kept.iter().map(|m| m.lines().count()).sum();
    // Characters of the last lines joined by newlines, kept as lines are dropped (counting the
    // whole body again for each drop made a long list's answer cost quadratic time).
    let mut body_chars = last.chars().count();
    loop {
        let shown = shown_before + last_lines.len();
        let note = format!(
            "…and {} more not shown: Slack takes at most {MAX_MESSAGES} messages for one answer.",
            lines.len() - shown
        );
        if last_lines.is_empty() || body_chars + 1 + note.chars().count() <= MAX_MESSAGE_CHARS {
            let body = last_lines.join("\n");
            kept.push(if body.is_empty() {
                note
            } else {
                format!("{body}\n{note}")
            });
            return kept;
        }
        if let Some(dropped) = last_lines.pop() {
            // The line and the newline before it (the first line has none).
            body_chars = body_chars.saturating_sub(dropped.chars().count() + 1);
        }
    }
}

/// Lines joined into messages of at most `max` characters each.
fn pack(lines: &[String], max: usize) -> Vec<String> {
    let mut messages = Vec::new();
    let mut current = String::new();
    // `current`'s characters, counted as it grows.
    let mut current_chars = 0;
    for line in lines {
        let line = crate::slack::blocks::cut(line, MESSAGE_CHARS);
        let line_chars = line.chars().count();
        if !current.is_empty() && current_chars + 1 + line_chars > max {
            messages.push(std::mem::take(&mut current));
            current_chars = 0;
        }
        if !current.is_empty() {
            current.push('\n');
            current_chars += 1;
        }
        current.push_str(&line);
        current_chars += line_chars;
    }
    if !current.is_empty() || messages.is_empty() {
        messages.push(current);
    }
    messages
}

impl Service {
    /// Every open request of `user` (pending, approved, active, being revoked), then the most
    /// recent ones that ended.
    pub(super) async fn list(&self, user: &str) -> anyhow::Result<Vec<String>> {
        let open = self.store.open_of(user).await?;
        let recent: Vec<_> = self
            .store
            .requests_of(user, RECENTLY_ENDED + open.len() as u64)
            .await?
            .into_iter()
            .filter(|r| !State::parse(&r.state).is_some_and(|s| State::OPEN.contains(&s)))
            .take(RECENTLY_ENDED as usize)
            .collect();
        if open.is_empty() && recent.is_empty() {
            return Ok(vec![
                "You have no requests yet. Try `/jit resources`.".into(),
            ]);
        }
        let mut lines = Vec::new();
        if !open.is_empty() {
            lines.push(format!("Your open requests ({}):", open.len()));
        }
        for (r, grant) in &open {
            let mut line = format!(
                "• #{} *{}*{} · {}",
                r.id,
                r.resource,
                bundle_note(r),
                label(&r.state)
            );
            if r.state == State::Active.as_str()
                && let Some(exp) = grant.as_ref().and_then(|g| g.expires_at)
                && let Some(t) = DateTime::from_timestamp_millis(exp)
            {
                line.push_str(&format!(" until {}", blocks::when(t)));
            }
            lines.push(line);
        }
        if !recent.is_empty() {
            lines.push("Recently ended:".into());
            lines.extend(recent.iter().map(|r| {
                format!(
                    "• #{} *{}*{} · {}",
                    r.id,
                    r.resource,
                    bundle_note(r),
                    label(&r.state)
                )
            }));
        }
        Ok(split_messages(lines))
    }

    /// Every pending request `user` may decide and has not decided yet (for an admin, every
    /// pending request), oldest first, walked page by page; past what an answer can hold the
    /// head says there are more.
    pub(super) async fn pending(&self, user: &str) -> anyhow::Result<Vec<String>> {
        let room = Room {
            items: self.pending_read_at_most,
            chars: PENDING_CHARS,
        };
        let (lines, counted_all) = self
            .awaiting(user, room, |r, may_decide| {
                let line = format!(
                    "• #{} {} wants *{}* for {}: {}{}",
                    r.id,
                    mention(&r.requester),
                    r.what(),
                    secs(r.duration_secs),
                    blocks::escape(&r.reason),
                    if may_decide {
                        ""
                    } else {
                        " _(not yours to decide)_"
                    }
                );
                // The line and its newline.
                let chars = line.chars().count() + 1;
                (line, chars)
            })
            .await?;
        Ok(if lines.is_empty() {
            vec!["Nothing is waiting for you.".into()]
        } else {
            let head = if counted_all {
                format!("Waiting for you ({}; `/jit approve <id>`):", lines.len())
            } else {
                format!(
                    "Waiting for you (over {}, oldest first; `/jit approve <id>`):",
                    lines.len()
                )
            };
            split_messages(std::iter::once(head).chain(lines).collect())
        })
    }

    /// The pending requests `user` may decide and has not decided, oldest first, each shown by
    /// `show` (given whether it is theirs to decide; an admin sees every one), which also says
    /// how much of `room` it takes: as many as `room` holds, and whether that is all of them.
    /// The walk stops once `room` is full, so an answer costs the same however many wait.
    pub(super) async fn awaiting<T>(
        &self,
        user: &str,
        room: Room,
        show: impl Fn(&store::Waiting, bool) -> (T, usize),
    ) -> anyhow::Result<(Vec<T>, bool)> {
        let policy = self.policy.now();
        let admin = policy.is_admin(user);
        let mine: Vec<String> = policy
            .resources
            .values()
            .filter(|r| policy.is_approver(r, user))
            .map(|r| r.name.clone())
            .collect();
        // Each one shown: (request id, shown, its size).
        let mut found: Vec<(i32, T, usize)> = Vec::new();
        let mut used = 0;
        let mut after = 0;
        let mut seen = std::collections::HashSet::new();
        let mut pages_done = false;
        // Pending requests of the resources this person approves, page by page; then the
        // pending bundles, which they may approve through another of their resources.
        let bundles = self.store.waiting_bundles().await?;
        loop {
            let page = if pages_done {
                Vec::new()
            } else if admin {
                self.store.waiting_after(after, PENDING_PAGE).await?
            } else {
                self.store.waiting_for(&mine, after, PENDING_PAGE).await?
            };
            if page.len() < PENDING_PAGE as usize {
                pages_done = true;
            }
            let page: Vec<_> = if page.is_empty() {
                // Last round: the bundles not seen yet.
                let rest: Vec<_> = bundles
                    .iter()
                    .filter(|b| !seen.contains(&b.id))
                    .cloned()
                    .collect();
                if rest.is_empty() {
                    break;
                }
                rest
            } else {
                page
            };
            if let Some(last) = page.last() {
                after = after.max(last.id);
            }
            let ids: Vec<i32> = page.iter().map(|r| r.id).collect();
            let decided = self.store.decided_by(user, &ids).await?;
            for r in page {
                if !seen.insert(r.id) {
                    continue;
                }
                let may_decide = r.resources().iter().any(|name| {
                    policy.resources.get(name).is_some_and(|res| {
                        policy.is_approver(res, user) && (r.requester != user || res.self_approval)
                    })
                });
                if decided.contains(&r.id) || !(may_decide || admin) {
                    continue;
                }
                let (shown, size) = show(&r, may_decide);
                used += size;
                found.push((r.id, shown, size));
            }
            if found.len() > room.items || used > room.chars {
                // Enough read: the bundles still join (they may be older), then the cut.
                pages_done = true;
            }
        }
        found.sort_by_key(|(id, _, _)| *id);
        // The oldest that fit.
        let mut used = 0;
        let fit = found
            .iter()
            .take(room.items)
            .take_while(|(_, _, size)| {
                used += size;
                used <= room.chars
            })
            .count();
        let counted_all = fit == found.len();
        found.truncate(fit);
        Ok((
            found.into_iter().map(|(_, shown, _)| shown).collect(),
            counted_all,
        ))
    }

    /// What `user` may ask for: each resource, with a template's resources on one line (so a
    /// template of 200 stays readable), then the bundles whose every resource they may ask for.
    pub(super) fn resources(&self, user: &str) -> Vec<String> {
        let policy = self.policy.now();
        let terms = |r: &Resource| {
            format!(
                "up to {} · {} approval{}",
                r.max_duration,
                r.approvals,
                if r.approvals == 1 { "" } else { "s" }
            )
        };
        let mut lines = Vec::new();
        let mut families: BTreeMap<&str, Vec<&Resource>> = BTreeMap::new();
        for r in policy
            .resources
            .values()
            .filter(|r| policy.may_request(r, user))
        {
            match policy.families.get(&r.name) {
                Some(family) => families.entry(family.as_str()).or_default().push(r),
                None => lines.push((
                    r.name.clone(),
                    format!(
                        "• *{}*{} · {}",
                        r.name,
                        if r.description.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", r.description)
                        },
                        terms(r)
                    ),
                )),
            }
        }
        for (family, members) in families {
            let names: Vec<&str> = members.iter().map(|r| r.name.as_str()).collect();
            // Terms shared by all of them, else each one's own is in `/jit explain`.
            let shared = if members.iter().all(|r| terms(r) == terms(members[0])) {
                format!(" · {}", terms(members[0]))
            } else {
                String::new()
            };
            lines.push((
                family.to_string(),
                format!(
                    "• *{family}* ({} resources{shared}): {}",
                    names.len(),
                    names.join(", ")
                ),
            ));
        }
        if lines.is_empty() {
            return vec!["There is nothing you may request.".into()];
        }
        lines.sort();
        let mut out = vec!["You may request:".to_string()];
        out.extend(lines.into_iter().map(|(_, line)| line));
        let bundles: Vec<String> = policy
            .bundles
            .iter()
            .filter(|(_, names)| {
                names.iter().all(|n| {
                    policy
                        .resources
                        .get(n)
                        .is_some_and(|r| policy.may_request(r, user))
                })
            })
            .map(|(name, names)| format!("• *{name}*: {}", names.join(", ")))
            .collect();
        if !bundles.is_empty() {
            out.push(
                "Bundles (one request, one decision; `/jit request <bundle> <duration> <reason>`):"
                    .into(),
            );
            out.extend(bundles);
        }
        split_messages(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_list_is_split_whole_lines_and_nothing_is_lost() {
        let lines: Vec<String> = (0..2_000).map(|i| format!("• #{i} line")).collect();
        // 2,000 short lines fit six messages of the usual size.
        let messages = split_messages(lines.clone());
        assert!(messages.len() > 1);
        assert!(messages.iter().all(|m| m.chars().count() <= MESSAGE_CHARS));
        let back: Vec<&str> = messages.iter().flat_map(|m| m.lines()).collect();
        assert_eq!(back, lines.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(split_messages(vec!["one".into()]), vec!["one".to_string()]);
        // One line over the limit is cut to fit, never dropped.
        let huge = split_messages(vec!["x".repeat(MESSAGE_CHARS * 2)]);
        assert_eq!(huge.len(), 1);
        assert!(huge[0].chars().count() <= MESSAGE_CHARS);
    }

    #[test]
    fn a_list_too_long_for_six_messages_says_how_much_was_left_out() {
        // 600 lines of 100 characters: too many for 6 × 12,000, fit in 6 × 39,000.
        let medium: Vec<String> = (0..600).map(|i| format!("{i:>100}")).collect();
        let messages = split_messages(medium.clone());
        assert!(messages.len() <= MAX_MESSAGES);
        assert!(
            messages
                .iter()
                .all(|m| m.chars().count() <= MAX_MESSAGE_CHARS)
        );
        assert_eq!(
            messages.iter().map(|m| m.lines().count()).sum::<usize>(),
            600
        );
        // 5,000 such lines cannot fit: the last message says how many were left out.
        let long: Vec<String> = (0..5_000).map(|i| format!("{i:>100}")).collect();
        let messages = split_messages(long);
        assert_eq!(messages.len(), MAX_MESSAGES);
        assert!(
            messages
                .iter()
                .all(|m| m.chars().count() <= MAX_MESSAGE_CHARS)
        );
        let shown: usize = messages.iter().map(|m| m.lines().count()).sum::<usize>() - 1;
        let note = messages.last().and_then(|m| m.lines().last()).unwrap_or("");
        assert_eq!(
            note,
            format!(
                "…and {} more not shown: Slack takes at most 6 messages for one answer.",
                5_000 - shown
            )
        );
    }
}
