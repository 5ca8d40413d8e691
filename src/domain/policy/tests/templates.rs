//! Templates: one entry standing for many resources.

use super::*;

const TEMPLATED: &str = r#"
groups:
  dba: { members: [U0DBA1, U0DBA2] }
providers:
  hooks: { kind: webhook, url: "https://hooks.example.com/jit", secret_env: JIT_HOOK }
resources:
  aws-{account}-{level}:
    for: { account: [prod, staging], level: [read, admin] }
    vars: { account_id: { prod: "111111111111", staging: "222222222222" } }
    description: "{level} in {account}"
    provider: hooks
    grant: { assume_role: "arn:aws:iam::{account_id}:role/jit-{level}", note: "${aws:username}" }
    max_duration: 2h
    channel: C0REVIEW
    approvers: [dba]
  billing:
    provider: hooks
    grant: { app: billing }
    max_duration: 1h
    channel: C0REVIEW
    approvers: [dba]
"#;

#[test]
fn a_template_stands_for_every_combination_with_its_values_substituted() {
    let (p, _) = Policy::parse("p.yaml", TEMPLATED).expect("expands");
    let names: Vec<&str> = p.resources.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        vec![
            "aws-prod-admin",
            "aws-prod-read",
            "aws-staging-admin",
            "aws-staging-read",
            "billing"
        ]
    );
    let r = &p.resources["aws-staging-admin"];
    assert_eq!(r.description, "admin in staging");
    assert_eq!(
        r.grant["assume_role"],
        "arn:aws:iam::222222222222:role/jit-admin"
    );
    assert_eq!(
        r.grant["note"], "${aws:username}",
        "other braces are left alone"
    );
}

#[test]
fn template_mistakes_name_their_line() {
    // A collision with an explicit resource names both lines.
    let clash = format!(
        "{TEMPLATED}  aws-prod-read:\n    provider: hooks\n    grant: {{ app: x }}\n    max_duration: 1h\n    channel: C0REVIEW\n    approvers: [dba]\n"
    );
    let found = errors(&clash);
    assert!(
        found
            .iter()
            .any(|d| d.message.contains("also defined at line 7")),
        "{found:?}"
    );
    // A var without a value for one of the combinations.
    let missing = TEMPLATED.replace(", staging: \"222222222222\"", "");
    let found = errors(&missing);
    assert!(
        found[0].message.contains("no value for account=staging"),
        "{found:?}"
    );
    assert_eq!(found[0].line, 7);
    // A parameter not in the name; a name parameter without values.
    let unnamed = TEMPLATED.replace("aws-{account}-{level}:", "aws-{account}:");
    assert!(
        errors(&unnamed)[0]
            .message
            .contains("`level` is not in the name")
    );
    let valueless = TEMPLATED.replace(
        "for: { account: [prod, staging], level: [read, admin] }",
        "for: { account: [prod, staging] }",
    );
    assert!(
        errors(&valueless)
            .iter()
            .any(|d| d.message.contains("`{level}` in the name has no values"))
    );
    // An error inside the expanded entry names the template's line.
    let bad_channel = TEMPLATED.replacen("channel: C0REVIEW", "channel: review", 1);
    let found = errors(&bad_channel);
    assert!(found.iter().all(|d| d.line == 14), "{found:?}");
}
