//! The weekly digest as people read it: what needs attention first (failed grants, failing
//! revokes, messages Slack refused for good, a broken audit chain), then the week in numbers.
//! Block Kit for the channel, and the same as plain text (the fallback, `--dry-run`,
//! `/jit digest`).

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::blocks::{cut, escape, mention, text_section, when};

/// How many of each "top" list the digest shows.
pub const TOP: usize = 5;
/// How many problems the digest lists before it says how many more there are.
pub const MAX_PROBLEMS: usize = 20;

/// The week, gathered from the store.
#[derive(Clone, Debug, Default)]
pub struct Digest {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub requests: usize,
    /// Requests of the period by state now, most first.
    pub outcomes: Vec<(String, usize)>,
    /// Time from request to decision (people's decisions only), median and 95th percentile.
    pub decision_median: Option<String>,
    pub decision_p95: Option<String>,
    pub top_resources: Vec<(String, usize)>,
    pub top_requesters: Vec<(String, usize)>,
    pub auto_approved: usize,
    pub self_approved: usize,
    /// Break-glass approvals: (request id, requester, resource).
    pub break_glass: Vec<(i32, String, String)>,
    /// Grants active at the time of the digest.
    pub active_now: usize,
    /// Requests that escalated: (request id, who was paged, who answered and how).
    pub escalations: Vec<(i32, Vec<String>, String)>,
    /// What needs attention, one line each.
    pub problems: Vec<String>,
    /// The audit chain, checked now: whether it holds, and the line that says so.
    pub chain_ok: bool,
    pub chain: String,
}

fn period(d: &Digest) -> String {
    match (d.from, d.to) {
        (Some(from), Some(to)) => format!("{} to {}", when(from), when(to)),
        _ => "this week".into(),
    }
}

fn counts(list: &[(String, usize)], people: bool) -> String {
    if list.is_empty() {
        return "none".into();
    }
    list.iter()
        .map(|(name, n)| {
            let name = if people {
                mention(name)
            } else {
                format!("*{}*", escape(name))
            };
            format!("{name} {n}")
        })
        .collect::<Vec<_>>()
        .join(" · ")
}

/// The lines of the digest, in mrkdwn: the problems first.
fn lines(d: &Digest) -> Vec<String> {
    let mut out = vec![format!("*jitbot weekly digest*: {}", period(d))];
    let mut problems: Vec<String> = Vec::new();
    if !d.chain_ok {
        problems.push(format!("🚨 {}", d.chain));
    }
    problems.extend(d.problems.iter().take(MAX_PROBLEMS).cloned());
    if d.problems.len() > MAX_PROBLEMS {
        problems.push(format!(
            "…and {} more (see `jitbot audit export`)",
            d.problems.len() - MAX_PROBLEMS
        ));
    }
    if !problems.is_empty() {
        out.push(format!(
            "⚠️ *Needs attention* ({}):\n{}",
            problems.len(),
            problems
                .iter()
                .map(|p| format!("• {p}"))
                .collect::<Vec<_>>()
                .join("\n")
        ));
    }
    out.push(format!(
        "*Requests*: {} · {}",
        d.requests,
        if d.outcomes.is_empty() {
            "none".to_string()
        } else {
            d.outcomes
                .iter()
                .map(|(state, n)| format!("{} {n}", state.replace('_', " ")))
                .collect::<Vec<_>>()
                .join(" · ")
        }
    ));
    out.push(format!(
        "*Time to decision*: {}",
        match (&d.decision_median, &d.decision_p95) {
            (Some(median), Some(p95)) => format!("median {median} · 95th percentile {p95}"),
            _ => "no decisions by people".into(),
        }
    ));
    out.push(format!(
        "*Without a second person*: auto-approved {} · self-approved {} · break-glass {}",
        d.auto_approved,
        d.self_approved,
        d.break_glass.len()
    ));
    for (id, requester, resource) in &d.break_glass {
        out.push(format!(
            "🚨 break-glass #{id}: {} on *{}*",
            mention(requester),
            escape(resource)
        ));
    }
    out.push(format!("*Escalated*: {}", d.escalations.len()));
    for (id, paged, answer) in d.escalations.iter().take(MAX_PROBLEMS) {
        out.push(format!(
            "⏰ #{id}: paged {} · {answer}",
            paged
                .iter()
                .map(|p| mention(p))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    out.push(format!(
        "*Top resources*: {}",
        counts(&d.top_resources, false)
    ));
    out.push(format!(
        "*Top requesters*: {}",
        counts(&d.top_requesters, true)
    ));
    out.push(format!("*Active now*: {} grant(s)", d.active_now));
    if d.chain_ok {
        out.push(format!("🔗 {}", d.chain));
    }
    out
}

/// The digest as Block Kit (one section per part) and its plain-text fallback.
pub fn digest_message(d: &Digest) -> (String, Vec<Value>) {
    let lines = lines(d);
    let blocks: Vec<Value> =
        std::iter::once(json!({"type": "header", "text": {"type": "plain_text",
            "text": "jitbot weekly digest"}}))
        .chain(lines.iter().map(|l| text_section(&cut(l, 2_900))))
        .collect();
    (super::blocks::plain_fallback(&lines.join("\n")), blocks)
}

/// The digest as plain text (for `--dry-run` and `/jit digest`, which show mrkdwn as is).
pub fn digest_text(d: &Digest) -> String {
    lines(d).join("\n")
}
