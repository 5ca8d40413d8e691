//! What `check` tells an operator beyond the errors: a parser's message in plain words, and
//! warnings about policies that load but probably do not say what was meant.

use std::collections::BTreeMap;

use super::check::{Checker, Key};
use super::*;

/// A parser's message in words an operator can act on: an unknown key with the keys this version
/// takes (and the closest one), a type error with what was expected.
pub(super) fn plain_error(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("Unknown field `")
        && let Some((key, expected)) = rest.split_once("`, expected ")
    {
        let choices: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        let hint = Policy::closest(key, choices.iter().copied())
            .map(|k| format!(" Did you mean `{k}`?"))
            .unwrap_or_default();
        return format!(
            "unknown key `{key}`.{hint} Keys here: {}",
            choices.join(", ")
        );
    }
    if message.contains("invalid digit found in string") || message.contains("invalid digit") {
        return "expected a whole number (such as 2), not text".into();
    }
    if message.contains("number too large") {
        return "the number is too large".into();
    }
    message.to_string()
}

impl Checker<'_> {
    /// Two resources that grant the same access (same provider, same grant) under different
    /// rules: whoever may use the looser one gets it on its terms.
    pub(super) fn same_access_twice(&mut self, resources: &BTreeMap<String, Resource>) {
        let mut seen: BTreeMap<(String, String), &Resource> = BTreeMap::new();
        for r in resources.values() {
            let key = (
                r.provider.clone(),
                serde_json::Value::Object(r.grant.clone()).to_string(),
            );
            match seen.get(&key) {
                Some(first) => {
                    let same_rules = first.approvers == r.approvers
                        && first.approvals == r.approvals
                        && first.max_duration == r.max_duration
                        && first.requesters == r.requesters
                        && first.self_approval == r.self_approval
                        && first.auto_approve.len() == r.auto_approve.len();
                    if !same_rules {
                        self.warn(
                            Key(&["resources", &r.name]),
                            format!("resources.{}", r.name),
                            format!(
                                "grants the same access as `{}` (provider {}, same grant) under different rules: the looser one decides",
                                first.name, r.provider
                            ),
                        );
                    }
                }
                None => {
                    seen.insert(key, r);
                }
            }
        }
    }
}
