//! The `aws_iam` provider in the policy: its settings, its grant shapes, and the identity it
//! needs; and the inline document a grant puts on the user.

use super::*;
use crate::providers::aws_iam::{Shape, inline_document};

fn aws_policy(provider: &str, grant: &str) -> String {
    GOOD.replace("providers:\n", &format!("providers:\n  aws:\n{provider}"))
        + &format!(
            "  aws-admin:\n    provider: aws\n    grant: {grant}\n    max_duration: 1h\n    channel: C0REVIEW\n    approvers: [dba]\n"
        )
}

const AWS: &str = "    kind: aws_iam\n    region: eu-west-1\n";

#[test]
fn an_aws_grant_is_a_policy_a_role_an_attachment_or_a_group() {
    for grant in [
        "{ assume_role: \"arn:aws:iam::123456789012:role/jit-admin\" }",
        "{ policy_arn: \"arn:aws:iam::aws:policy/ReadOnlyAccess\" }",
        "{ group: ops }",
        "{ policy: { Version: \"2012-10-17\", Statement: [{ Effect: Allow, Action: \"s3:*\", Resource: \"*\" }] } }",
    ] {
        let (_, warnings) = Policy::parse("p.yaml", &aws_policy(AWS, grant))
            .unwrap_or_else(|e| panic!("{grant}: {e}"));
        // `check` says which shapes end only at jitbot's revoke.
        let revoke_only = grant.contains("policy_arn") || grant.contains("group");
        let said = warnings.iter().any(|w| {
            w.path == "resources.aws-admin.grant"
                && w.message.contains("ends only when jitbot revokes it")
                && w.line > 0
        });
        assert_eq!(said, revoke_only, "{grant}: {warnings:?}");
    }
    for (grant, says) in [
        ("{ assume_role: jit-admin }", "not a role ARN"),
        (
            "{ assume_role: \"arn:aws:iam::123456789012:policy/x\" }",
            "not a role ARN",
        ),
        (
            "{ policy_arn: \"arn:aws:s3:::bucket\" }",
            "not a policy ARN",
        ),
        ("{ group: \"ops team\" }", "not an IAM group name"),
        (
            "{ policy: { Statement: [{ Effect: Maybe, Action: \"*\" }] } }",
            "Effect: Allow",
        ),
        ("{ policy: { Statement: [] } }", "no `Statement`"),
        (
            "{ group: ops, policy_arn: \"arn:aws:iam::aws:policy/X\" }",
            "an aws_iam grant is",
        ),
        ("{ role: admin }", "unknown key `role`"),
    ] {
        let errs = errors(&aws_policy(AWS, grant));
        assert!(
            errs.iter()
                .any(|e| e.path == "resources.aws-admin.grant" && e.message.contains(says)),
            "{grant}: {errs:?}"
        );
    }
    for (provider, path) in [
        (
            "    kind: aws_iam\n    region: \"EU West\"\n",
            "providers.aws.region",
        ),
        (
            "    kind: aws_iam\n    endpoint_url: \"http://iam.example.com\"\n",
            "providers.aws.endpoint_url",
        ),
        (
            "    kind: aws_iam\n    url_env: X\n",
            "providers.aws.url_env",
        ),
    ] {
        let errs = errors(&aws_policy(provider, "{ group: ops }"));
        assert!(errs.iter().any(|e| e.path == path), "{provider}: {errs:?}");
    }
    // Without `aws_iam_user`, nobody can be named at IAM: the request is refused up front.
    let (policy, _) = Policy::parse("p.yaml", &aws_policy(AWS, "{ group: ops }")).unwrap();
    assert_eq!(policy.identity("U0ALICE", "aws_iam"), None);
}

#[test]
fn every_statement_of_an_inline_grant_ends_at_the_grants_end() {
    let grant = serde_json::json!({"policy": {"Statement": [
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"},
        {"Effect": "Allow", "Action": "ec2:Describe*", "Resource": "*",
         "Condition": {"Bool": {"aws:MultiFactorAuthPresent": "true"}}}
    ]}});
    let shape = Shape::parse(grant.as_object().unwrap()).unwrap();
    let document = inline_document(&shape, "2026-12-05T10:00:00Z").unwrap();
    assert_eq!(document["Version"], "2012-10-17");
    for statement in document["Statement"].as_array().unwrap() {
        assert_eq!(
            statement["Condition"]["DateLessThan"]["aws:CurrentTime"],
            "2026-12-05T10:00:00Z"
        );
    }
    // A condition already there is kept beside the end.
    assert_eq!(
        document["Statement"][1]["Condition"]["Bool"]["aws:MultiFactorAuthPresent"],
        "true"
    );
    let role = serde_json::json!({"assume_role": "arn:aws:iam::123456789012:role/jit-admin"});
    let shape = Shape::parse(role.as_object().unwrap()).unwrap();
    let document = inline_document(&shape, "2026-12-05T10:00:00Z").unwrap();
    assert_eq!(document["Statement"][0]["Action"], "sts:AssumeRole");
    assert_eq!(
        document["Statement"][0]["Condition"]["DateLessThan"]["aws:CurrentTime"],
        "2026-12-05T10:00:00Z"
    );
}

#[test]
fn an_identity_center_provider_names_its_instance_and_store_and_grants_assignments() {
    const SSO: &str = "    kind: aws_sso\n    instance_arn: \"arn:aws:sso:::instance/ssoins-1234\"\n    identity_store_id: d-1234567890\n";
    let good = "{ permission_set_arn: \"arn:aws:sso:::permissionSet/ssoins-1234/ps-5678\", account_id: \"111111111111\" }";
    let (policy, _) = Policy::parse("p.yaml", &aws_policy(SSO, good)).unwrap();
    assert_eq!(policy.providers["aws"].kind(), "aws_sso");
    let group = "{ permission_set_arn: \"arn:aws:sso:::permissionSet/ssoins-1234/ps-5678\", account_id: \"111111111111\", group: Oncall }";
    Policy::parse("p.yaml", &aws_policy(SSO, group)).unwrap();
    // The Identity Store user, else the email (then the Slack profile's at the grant).
    assert_eq!(
        policy.identity("U0ALICE", "aws_sso"),
        Some(std::collections::BTreeMap::from([(
            "email".to_string(),
            "alice@example.com".to_string()
        )]))
    );
    for (grant, says) in [
        (
            "{ permission_set_arn: \"arn:aws:sso:::permissionSet/ssoins-1234/ps-5678\" }",
            "an aws_sso grant is",
        ),
        (
            "{ permission_set_arn: ps-5678, account_id: \"111111111111\" }",
            "not a permission set ARN",
        ),
        (
            "{ permission_set_arn: \"arn:aws:sso:::permissionSet/ssoins-1234/ps-5678\", account_id: \"1234\" }",
            "12-digit",
        ),
        (
            "{ permission_set_arn: \"arn:aws:sso:::permissionSet/ssoins-1234/ps-5678\", account_id: \"111111111111\", group: [a] }",
            "display name",
        ),
    ] {
        let errs = errors(&aws_policy(SSO, grant));
        assert!(
            errs.iter()
                .any(|e| e.path == "resources.aws-admin.grant" && e.message.contains(says)),
            "{grant}: {errs:?}"
        );
    }
    let errs = errors(&aws_policy("    kind: aws_sso\n", good));
    assert!(
        errs.iter()
            .any(|e| e.path == "providers.aws" && e.message.contains("instance_arn")),
        "{errs:?}"
    );
}
