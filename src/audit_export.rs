//! `jitbot audit export`: the trail with its hashes, so it can be kept elsewhere and verified
//! offline (`link` in [`crate::store::audit`] is the whole rule).

use std::io::Write;

use crate::store::{AuditEvent, Store};

/// Events read per query.
const PAGE: u64 = 5_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Json,
    Csv,
}

/// A time given on the command line, as epoch milliseconds: RFC 3339, or a date (midnight UTC).
pub fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_millis());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        && let Some(t) = d.and_hms_opt(0, 0, 0)
    {
        return Ok(t.and_utc().timestamp_millis());
    }
    Err("expected RFC 3339 (2026-11-30T09:00:00Z) or a date (2026-11-30)".into())
}

fn json_row(e: &AuditEvent) -> serde_json::Value {
    let at = chrono::DateTime::from_timestamp_millis(e.at).map(|t| t.to_rfc3339());
    serde_json::json!({
        "id": e.id, "seq": e.seq, "at_ms": e.at, "at": at, "request_id": e.request_id,
        "actor": e.actor, "action": e.action, "detail": e.detail, "hash": e.hash,
    })
}

/// One CSV field, quoted as RFC 4180 asks.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

fn csv_row(e: &AuditEvent) -> String {
    [
        e.id.to_string(),
        e.seq.map(|s| s.to_string()).unwrap_or_default(),
        e.at.to_string(),
        e.request_id.map(|r| r.to_string()).unwrap_or_default(),
        csv_field(&e.actor),
        csv_field(&e.action),
        csv_field(&e.detail),
        e.hash.clone().unwrap_or_default(),
    ]
    .join(",")
}

/// Writes the events at or after `since` (epoch ms): the linked ones in chain order, then those
/// not linked yet (`seq` and `hash` empty).
pub async fn export(
    store: &Store,
    format: Format,
    since: i64,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut first = true;
    let mut emit = |e: &AuditEvent, out: &mut dyn Write| -> std::io::Result<()> {
        match format {
            Format::Json => {
                let sep = if first { "" } else { ",\n" };
                write!(out, "{sep}{}", json_row(e))?;
            }
            Format::Csv => writeln!(out, "{}", csv_row(e))?,
        }
        first = false;
        Ok(())
    };
    match format {
        Format::Json => writeln!(out, "[")?,
        Format::Csv => writeln!(out, "id,seq,at_ms,request_id,actor,action,detail,hash")?,
    }
    let mut after = 0;
    loop {
        let page = store.audit_page(since, after, PAGE).await?;
        for e in &page {
            emit(e, out)?;
        }
        match page.last().and_then(|e| e.seq) {
            Some(seq) if page.len() == PAGE as usize => after = seq,
            _ => break,
        }
    }
    for e in store.audit_unsealed(since).await? {
        emit(&e, out)?;
    }
    if format == Format::Json {
        writeln!(out, "\n]")?;
    }
    out.flush()?;
    Ok(())
}
