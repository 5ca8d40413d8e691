//! PagerDuty's REST API: who a schedule has on call now (`GET /oncalls`), with the person's email
//! in the same answer (`include[]=users`).

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::config::Secret;
use crate::domain::policy::PagerDutyGroup;

/// Deadline of one PagerDuty call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Pages of `/oncalls` read at most (a schedule filter keeps the answer to a few entries).
const MAX_PAGES: usize = 4;

/// The client for PagerDuty: no redirects (a 302 to a login page is not an answer), a deadline
/// per call.
pub fn client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(3))
        .timeout(CALL_TIMEOUT)
        .build()
        .context("building the PagerDuty client")
}

/// The email of the person on call now on `group`'s schedule, at the first escalation level
/// that has someone; `None` when nobody is.
pub async fn on_call_email(
    http: &reqwest::Client,
    group: &PagerDutyGroup,
    token: &Secret,
) -> anyhow::Result<Option<String>> {
    let mut best: Option<(i64, String)> = None;
    let mut offset = 0u64;
    for _ in 0..MAX_PAGES {
        let mut url = reqwest::Url::parse(&format!("{}/oncalls", group.api_url))
            .context("the PagerDuty api_url")?;
        url.query_pairs_mut()
            .append_pair("schedule_ids[]", &group.schedule_id)
            .append_pair("include[]", "users")
            .append_pair("earliest", "true")
            .append_pair("offset", &offset.to_string());
        let answer = http
            .get(url)
            .header("Authorization", format!("Token token={}", token.expose()))
            .header("Accept", "application/vnd.pagerduty+json;version=2")
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(if e.is_timeout() {
                    format!("no answer within {}s", CALL_TIMEOUT.as_secs())
                } else if e.is_connect() {
                    "cannot connect".to_string()
                } else {
                    "the call failed".to_string()
                })
            })?;
        let status = answer.status();
        if !status.is_success() {
            bail!("answered HTTP {}", status.as_u16());
        }
        let body: Value = answer
            .json()
            .await
            .map_err(|_| anyhow::anyhow!("answered something that is not JSON"))?;
        let Some(oncalls) = body.get("oncalls").and_then(Value::as_array) else {
            bail!("answered without `oncalls`");
        };
        for entry in oncalls {
            let level = entry
                .get("escalation_level")
                .and_then(Value::as_i64)
                .unwrap_or(i64::MAX);
            let Some(email) = entry
                .pointer("/user/email")
                .and_then(Value::as_str)
                .filter(|e| e.contains('@'))
            else {
                continue;
            };
            if best.as_ref().is_none_or(|(l, _)| level < *l) {
                best = Some((level, email.to_string()));
            }
        }
        let more = body.get("more").and_then(Value::as_bool).unwrap_or(false);
        if !more || oncalls.is_empty() {
            break;
        }
        offset += oncalls.len() as u64;
    }
    Ok(best.map(|(_, email)| email))
}
