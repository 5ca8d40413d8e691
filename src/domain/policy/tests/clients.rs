//! API clients: hashed tokens, where clients may and may not be named.

use super::*;

const DEPLOYER_SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn with_client(extra: &str) -> String {
    GOOD.replace("requesters: [U0DBA1]", "requesters: [U0DBA1, ci-deploy]")
        .replace(
            "identities:\n",
            "identities:\n  ci-deploy: { postgres: ci_deploy }\n",
        )
        + &format!("clients:\n  ci-deploy: {{ token_sha256: {DEPLOYER_SHA} }}\n{extra}")
}

#[test]
fn a_client_is_a_requester_with_a_hashed_token() {
    let (policy, _) = Policy::parse("p.yaml", &with_client("")).unwrap();
    let db = &policy.resources["prod-db"];
    // The interface's example hash is the SHA-256 of "test".
    let client = policy
        .client_by_token("test")
        .expect("the token names the client");
    assert_eq!(client.name, "ci-deploy");
    assert_eq!(client.requests_per_minute, DEFAULT_CLIENT_RATE);
    assert!(policy.client_by_token("tes").is_none());
    assert!(
        policy.client_by_token(DEPLOYER_SHA).is_none(),
        "the hash is not the token"
    );
    assert!(policy.auto_approves(db, "ci-deploy", GrantDuration::parse("30m").unwrap()));
    assert_eq!(
        policy.identity("ci-deploy", "postgres"),
        Some(BTreeMap::from([("postgres".into(), "ci_deploy".into())]))
    );
    // `requesters: [U0ALICE, dba]` does not name the client.
    assert!(!policy.may_request(db, "ci-deploy"));
}

#[test]
fn a_client_is_refused_where_it_would_approve_or_clash() {
    let approver = with_client("").replace("approvers: [dba]", "approvers: [dba, ci-deploy]");
    let errs = errors(&approver);
    assert!(
        errs.iter()
            .any(|e| e.path == "resources.prod-db.approvers[1]"
                && e.message.contains("never approve")),
        "{errs:?}"
    );
    let cases = [
        (
            "  U0BOT: { token_sha256: 1111111111111111111111111111111111111111111111111111111111111111 }\n",
            "clients.U0BOT",
            "must not look like a Slack ID",
        ),
        (
            "  dba: { token_sha256: 1111111111111111111111111111111111111111111111111111111111111111 }\n",
            "clients.dba",
            "also a group",
        ),
        (
            "  short: { token_sha256: abc }\n",
            "clients.short.token_sha256",
            "never the token",
        ),
        (
            &format!(
                "  twin: {{ token_sha256: {} }}\n",
                DEPLOYER_SHA.to_uppercase()
            ),
            "clients.twin.token_sha256",
            "same token as client `ci-deploy`",
        ),
        (
            "  fast: { token_sha256: 2222222222222222222222222222222222222222222222222222222222222222, requests_per_minute: 0 }\n",
            "clients.fast.requests_per_minute",
            "between 1 and",
        ),
    ];
    for (extra, path, message) in cases {
        let errs = errors(&with_client(extra));
        assert!(
            errs.iter()
                .any(|e| e.path == path && e.message.contains(message) && e.line > 0),
            "{extra}: {errs:?}"
        );
    }
}
