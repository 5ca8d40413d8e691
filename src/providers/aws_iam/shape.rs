//! What an `aws_iam` grant asks for, as the policy writes it, and the inline policy that gives it.

use anyhow::bail;
use serde_json::{Value, json};

/// What a grant does at IAM.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// An inline policy (the document, before the time condition is added).
    Policy(Value),
    AssumeRole(String),
    PolicyArn(String),
    Group(String),
}

const SHAPES: &str = "an aws_iam grant is `{ policy: <IAM policy document> }`, `{ assume_role: <role ARN> }`, `{ policy_arn: <managed policy ARN> }` or `{ group: <group name> }`";

fn is_arn(s: &str, kind: &str) -> bool {
    // arn:<partition>:iam::<account>:<kind>/<path and name>
    let parts: Vec<&str> = s.splitn(6, ':').collect();
    parts.len() == 6
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[2] == "iam"
        && parts[3].is_empty()
        && (parts[4].len() == 12 && parts[4].chars().all(|c| c.is_ascii_digit())
            || parts[4] == "aws")
        && parts[5].starts_with(&format!("{kind}/"))
        && parts[5].len() > kind.len() + 1
}

impl Shape {
    pub fn parse(grant: &serde_json::Map<String, Value>) -> Result<Shape, String> {
        if grant.len() != 1 {
            return Err(SHAPES.to_string());
        }
        let (key, value) = grant.iter().next().ok_or_else(|| SHAPES.to_string())?;
        let text = || {
            value
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("`{key}` must be a string; {SHAPES}"))
        };
        match key.as_str() {
            "policy" => {
                let statements = statements_of(value)?;
                if statements.is_empty() {
                    return Err("the policy has no `Statement`".into());
                }
                for s in statements {
                    let effect = s.get("Effect").and_then(Value::as_str);
                    if !matches!(effect, Some("Allow" | "Deny")) {
                        return Err("each statement needs `Effect: Allow` or `Effect: Deny`".into());
                    }
                    if s.get("Action").is_none() && s.get("NotAction").is_none() {
                        return Err("each statement needs `Action` (or `NotAction`)".into());
                    }
                }
                Ok(Shape::Policy(value.clone()))
            }
            "assume_role" => {
                let arn = text()?;
                if !is_arn(&arn, "role") {
                    return Err(format!(
                        "`{arn}` is not a role ARN such as arn:aws:iam::123456789012:role/jit-admin"
                    ));
                }
                Ok(Shape::AssumeRole(arn))
            }
            "policy_arn" => {
                let arn = text()?;
                if !is_arn(&arn, "policy") {
                    return Err(format!(
                        "`{arn}` is not a policy ARN such as arn:aws:iam::aws:policy/ReadOnlyAccess"
                    ));
                }
                Ok(Shape::PolicyArn(arn))
            }
            "group" => {
                let group = text()?;
                if group.is_empty()
                    || group.len() > 128
                    || !group
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c))
                {
                    return Err(format!("`{group}` is not an IAM group name"));
                }
                Ok(Shape::Group(group))
            }
            other => Err(format!("unknown key `{other}`; {SHAPES}")),
        }
    }

    /// Does the access end at the target by itself (a time condition)?
    pub fn ends_by_itself(&self) -> bool {
        matches!(self, Shape::Policy(_) | Shape::AssumeRole(_))
    }
}

/// A document's statements (one object or a list).
fn statements_of(document: &Value) -> Result<Vec<&serde_json::Map<String, Value>>, String> {
    let not_a_document =
        || "`policy` is an IAM policy document: `{ Version, Statement }`".to_string();
    let statement = document
        .as_object()
        .and_then(|d| d.get("Statement"))
        .ok_or_else(not_a_document)?;
    match statement {
        Value::Array(list) => list
            .iter()
            .map(|s| s.as_object().ok_or_else(not_a_document))
            .collect(),
        Value::Object(one) => Ok(vec![one]),
        _ => Err(not_a_document()),
    }
}

/// The inline policy document a grant puts on the user: every statement ends at `end`.
pub fn inline_document(shape: &Shape, end: &str) -> anyhow::Result<Value> {
    let mut document = match shape {
        Shape::Policy(document) => document.clone(),
        // The session must be named after the user, so the revoke can end the sessions this
        // person opened (and only theirs): see `sessions`.
        Shape::AssumeRole(arn) => json!({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": arn,
                "Condition": {"StringEquals": {"sts:RoleSessionName": "${aws:username}"}}}]
        }),
        _ => bail!("this grant has no inline policy"),
    };
    let with_end = |s: &mut serde_json::Map<String, Value>| {
        let condition = s
            .entry("Condition")
            .or_insert_with(|| json!({}))
            .as_object_mut();
        if let Some(condition) = condition {
            let before = condition.entry("DateLessThan").or_insert_with(|| json!({}));
            if let Some(before) = before.as_object_mut() {
                before.insert("aws:CurrentTime".into(), json!(end));
            }
        }
    };
    match document.get_mut("Statement") {
        Some(Value::Array(list)) => list
            .iter_mut()
            .filter_map(Value::as_object_mut)
            .for_each(with_end),
        Some(Value::Object(one)) => with_end(one),
        _ => bail!("the policy has no statements"),
    }
    if let Some(d) = document.as_object_mut() {
        d.entry("Version").or_insert_with(|| json!("2012-10-17"));
    }
    Ok(document)
}

pub fn policy_name(request_id: i32) -> String {
    format!("jitbot-{request_id}")
}

/// A role ARN's account and the role's name (the last segment of its path).
pub fn role_of(arn: &str) -> Option<(&str, &str)> {
    let (head, rest) = arn.split_once(":role/")?;
    let account = head.rsplit(':').next()?;
    let name = rest.rsplit('/').next().filter(|n| !n.is_empty())?;
    Some((account, name))
}
