//! The `aws_iam` provider against moto with signature checking on: each grant shape is made at
//! IAM with the SDK, read back, and undone at its end; an inline grant carries its own end (a
//! time condition), so it ends even if jitbot does not; access the user held before is left as
//! it was; a refused signature is a failure, never a grant.

use std::collections::HashMap;

use crate::support::*;

const ROLE: &str = "arn:aws:iam::123456789012:role/jit-admin";
const READ: &str = "arn:aws:iam::123456789012:policy/JitRead";
const AUDIT: &str = "arn:aws:iam::123456789012:policy/JitAudit";

fn policy(url: &str) -> String {
    format!(
        r#"
settings: {{ request_ttl: 1h, min_duration: 2s }}
groups:
  dba: {{ members: [{BOB}, {CAROL}] }}
identities:
  {ALICE}: {{ aws_iam_user: alice }}
providers:
  aws: {{ kind: aws_iam, endpoint_url: "{url}" }}
resources:
  aws-admin:
    provider: aws
    grant: {{ assume_role: "{ROLE}" }}
    max_duration: 1h
    channel: C0REVIEW
    approvers: [dba]
  aws-s3:
    provider: aws
    grant:
      policy:
        Version: "2012-10-17"
        Statement:
          - {{ Effect: Allow, Action: ["s3:GetObject"], Resource: "arn:aws:s3:::logs/*" }}
    max_duration: 1h
    channel: C0REVIEW
    approvers: [dba]
  aws-read:
    provider: aws
    grant: {{ policy_arn: "{READ}" }}
    max_duration: 1h
    channel: C0REVIEW
    approvers: [dba]
  aws-audit:
    provider: aws
    grant: {{ policy_arn: "{AUDIT}" }}
    max_duration: 1h
    channel: C0REVIEW
    approvers: [dba]
  aws-ops:
    provider: aws
    grant: {{ group: ops }}
    max_duration: 1h
    channel: C0REVIEW
    approvers: [dba]
"#
    )
}

async fn inline_policy(iam: &aws_sdk_iam::Client, name: &str) -> Option<serde_json::Value> {
    let got = iam
        .get_user_policy()
        .user_name("alice")
        .policy_name(name)
        .send()
        .await
        .ok()?;
    let text = got.policy_document();
    // IAM returns the document URL-encoded.
    let decoded: String = url_decode(text);
    serde_json::from_str(&decoded).ok()
}

fn url_decode(text: &str) -> String {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(&format!("d={}", text.replace('+', "%2B"))).unwrap_or_default();
    pairs
        .into_iter()
        .next()
        .map(|(_, v)| v)
        .unwrap_or_else(|| text.to_string())
}

async fn attached(iam: &aws_sdk_iam::Client) -> Vec<String> {
    iam.list_attached_user_policies()
        .user_name("alice")
        .send()
        .await
        .expect("attachments")
        .attached_policies()
        .iter()
        .filter_map(|p| p.policy_arn().map(str::to_string))
        .collect()
}

async fn groups(iam: &aws_sdk_iam::Client) -> Vec<String> {
    iam.list_groups_for_user()
        .user_name("alice")
        .send()
        .await
        .expect("groups")
        .groups()
        .iter()
        .map(|g| g.group_name().to_string())
        .collect()
}

async fn each_grant_shape_is_made_read_back_and_undone_at_iam(backend: Backend) {
    let moto = Moto::start(&["alice"], &["ops"], &["JitRead", "JitAudit"]).await;
    let iam = moto.iam(&moto.admin_secret).await;
    // moto checks signatures now: a wrong secret is refused.
    let refused = moto
        .iam("not-the-secret")
        .await
        .list_users()
        .send()
        .await
        .expect_err("a bad signature is refused");
    assert!(
        format!("{:?}", refused).contains("SignatureDoesNotMatch")
            || format!("{:?}", refused).contains("InvalidClientTokenId"),
        "{refused:?}"
    );
    // The role handed out by assume_role, with someone's own policy on it, a cut of Alice's
    // from an earlier grant, and one of Bob's older than the role's longest session.
    iam.create_role()
        .role_name("jit-admin")
        .assume_role_policy_document(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"sts:AssumeRole"}]}"#,
        )
        .max_session_duration(3600)
        .send()
        .await
        .expect("a role");
    let deny = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"iam:*","Resource":"*"}]}"#;
    let now = chrono::Utc::now().timestamp();
    for name in [
        "team-guardrail".to_string(),
        format!("jitbot-cut-{}-alice", now - 60),
        format!("jitbot-cut-{}-bob", now - 7200),
        format!("jitbot-cut-{}-carol", now - 600),
    ] {
        iam.put_role_policy()
            .role_name("jit-admin")
            .policy_name(name)
            .policy_document(deny)
            .send()
            .await
            .expect("a role policy");
    }
    // Alice holds JitAudit already, from before jitbot.
    iam.attach_user_policy()
        .user_name("alice")
        .policy_arn(AUDIT)
        .send()
        .await
        .expect("attached");

    let env = HashMap::from([
        ("AWS_ACCESS_KEY_ID".to_string(), moto.key_id.clone()),
        ("AWS_SECRET_ACCESS_KEY".to_string(), moto.secret.clone()),
    ]);
    let app = spawn_app(backend, &policy(&moto.url), env).await;
    let mut ids = HashMap::new();
    for resource in ["aws-admin", "aws-s3", "aws-read", "aws-audit", "aws-ops"] {
        let id = TestApp::id_in(
            &app.say(ALICE, &format!("request {resource} 4s INC-30"))
                .await,
        );
        app.click(BOB, APPROVE, id).await;
        ids.insert(resource, id);
    }
    for id in ids.values() {
        app.wait_state(*id, "active").await;
    }

    // assume_role: an inline policy allowing sts:AssumeRole on the role, until the end.
    let admin = inline_policy(&iam, &format!("jitbot-{}", ids["aws-admin"]))
        .await
        .expect("the assume_role policy");
    let statement = &admin["Statement"][0];
    assert_eq!(statement["Action"], "sts:AssumeRole");
    assert_eq!(statement["Resource"], ROLE);
    assert_eq!(
        statement["Condition"]["StringEquals"]["sts:RoleSessionName"], "${aws:username}",
        "the session is named after the user, so the revoke can end it"
    );
    let end = statement["Condition"]["DateLessThan"]["aws:CurrentTime"]
        .as_str()
        .expect("a time condition")
        .to_string();
    let end = chrono::DateTime::parse_from_rfc3339(&end).expect("a time");
    let from_now = end.signed_duration_since(chrono::Utc::now()).num_seconds();
    assert!((0..=5).contains(&from_now), "ends in {from_now} s");
    // policy: the document as written, each statement ending at the grant's end.
    let s3 = inline_policy(&iam, &format!("jitbot-{}", ids["aws-s3"]))
        .await
        .expect("the inline policy");
    assert_eq!(s3["Statement"][0]["Resource"], "arn:aws:s3:::logs/*");
    assert!(s3["Statement"][0]["Condition"]["DateLessThan"]["aws:CurrentTime"].is_string());
    // policy_arn and group.
    assert!(attached(&iam).await.contains(&READ.to_string()));
    assert!(groups(&iam).await.contains(&"ops".to_string()));

    // At the end everything jitbot added is gone; what Alice held before stays.
    for id in ids.values() {
        app.wait_state(*id, "expired").await;
    }
    for resource in ["aws-admin", "aws-s3"] {
        assert!(
            inline_policy(&iam, &format!("jitbot-{}", ids[resource]))
                .await
                .is_none(),
            "{resource}"
        );
    }
    let now_attached = attached(&iam).await;
    assert!(
        !now_attached.contains(&READ.to_string()),
        "{now_attached:?}"
    );
    assert!(
        now_attached.contains(&AUDIT.to_string()),
        "held before: {now_attached:?}"
    );
    assert!(groups(&iam).await.is_empty());
    // The sessions Alice opened of the role during the grant are ended too: one cut of hers,
    // denying sessions issued before the revoke; her older cut and Bob's spent one are pruned;
    // Carol's (still within the longest session) and the team's own policy stay.
    let mut on_role = iam
        .list_role_policies()
        .role_name("jit-admin")
        .send()
        .await
        .expect("role policies")
        .policy_names()
        .to_vec();
    on_role.sort();
    assert_eq!(on_role.len(), 3, "{on_role:?}");
    assert_eq!(on_role[0], format!("jitbot-cut-{}-carol", now - 600));
    assert_eq!(on_role[2], "team-guardrail");
    let cut = &on_role[1];
    let at: i64 = cut
        .strip_prefix("jitbot-cut-")
        .and_then(|r| r.strip_suffix("-alice"))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("a cut of Alice's: {on_role:?}"));
    assert!(at > now, "{on_role:?}");
    let document = iam
        .get_role_policy()
        .role_name("jit-admin")
        .policy_name(cut)
        .send()
        .await
        .expect("the cut");
    let document: serde_json::Value =
        serde_json::from_str(&url_decode(document.policy_document())).expect("JSON");
    let statement = &document["Statement"][0];
    assert_eq!(statement["Effect"], "Deny");
    assert_eq!(statement["Action"], "*");
    assert_eq!(
        statement["Condition"]["StringLike"]["aws:userid"],
        "*:alice"
    );
    let before = statement["Condition"]["DateLessThan"]["aws:TokenIssueTime"]
        .as_str()
        .expect("a time");
    let before = chrono::DateTime::parse_from_rfc3339(before).expect("a time");
    assert_eq!(before.timestamp(), at);
    // The DMs say so: confirmed at the target, or left as it was.
    app.wait_dm(
        ALICE,
        &format!(
            "(#{}) has expired: ended, confirmed at the target",
            ids["aws-read"]
        ),
    )
    .await;
    app.wait_dm(
        ALICE,
        &format!(
            "(#{}) has expired: ended; you held it before jitbot",
            ids["aws-audit"]
        ),
    )
    .await;
    app.finish().await;
}

#[tokio::test]
async fn each_grant_shape_is_made_read_back_and_undone_at_iam_on_sqlite() {
    each_grant_shape_is_made_read_back_and_undone_at_iam(Backend::Sqlite).await;
}

#[tokio::test]
async fn each_grant_shape_is_made_read_back_and_undone_at_iam_on_postgres() {
    each_grant_shape_is_made_read_back_and_undone_at_iam(Backend::Postgres).await;
}

#[tokio::test]
async fn a_refused_signature_is_a_failed_grant_never_a_grant() {
    let moto = Moto::start(&["alice"], &[], &[]).await;
    let env = HashMap::from([
        ("AWS_ACCESS_KEY_ID".to_string(), moto.key_id.clone()),
        (
            "AWS_SECRET_ACCESS_KEY".to_string(),
            "a-stale-secret".to_string(),
        ),
    ]);
    let app = spawn_app(Backend::Sqlite, &policy(&moto.url), env).await;
    let id = TestApp::id_in(&app.say(ALICE, "request aws-s3 1h INC-31").await);
    app.click(BOB, APPROVE, id).await;
    app.wait_state(id, "grant_failed").await;
    let note = app.wait_channel_note("failed").await;
    assert!(
        note.str("text").contains("SignatureDoesNotMatch"),
        "{}",
        note.body
    );
    let iam = moto.iam(&moto.admin_secret).await;
    assert!(inline_policy(&iam, &format!("jitbot-{id}")).await.is_none());
    app.finish().await;
}

#[tokio::test]
async fn serve_refuses_an_identity_that_is_the_iam_user_jitbot_runs_as() {
    let moto = Moto::start(&["alice"], &[], &[]).await;
    let env = jitbot::config::Env::with_overrides(HashMap::from([
        ("AWS_ACCESS_KEY_ID".to_string(), moto.key_id.clone()),
        ("AWS_SECRET_ACCESS_KEY".to_string(), moto.secret.clone()),
    ]));
    let good = policy(&moto.url);
    let (policy_ok, _) =
        jitbot::domain::Policy::parse("p.yaml", &good).unwrap_or_else(|e| panic!("{e}"));
    jitbot::app::refuse_privileged_identities(&policy_ok, &env)
        .await
        .expect("alice is not jitbot");
    // Carol is mapped to the IAM user whose keys jitbot holds (STS says so): refused at start.
    let bad = good.replace(
        &format!("  {ALICE}: {{ aws_iam_user: alice }}\n"),
        &format!(
            "  {ALICE}: {{ aws_iam_user: alice }}\n  {CAROL}: {{ aws_iam_user: jitbot-admin }}\n"
        ),
    );
    assert_ne!(bad, good);
    let (policy_bad, _) =
        jitbot::domain::Policy::parse("p.yaml", &bad).unwrap_or_else(|e| panic!("{e}"));
    let error = jitbot::app::refuse_privileged_identities(&policy_bad, &env)
        .await
        .expect_err("jitbot's own IAM user refused");
    let error = format!("{error}");
    assert!(
        error.contains(&format!("identities.{CAROL}.aws_iam_user"))
            && error.contains("jitbot itself runs as")
            && error.contains(":user/jitbot-admin"),
        "{error}"
    );
    // One line for Carol, however many resources name the provider.
    assert_eq!(error.lines().count(), 1, "{error}");
}
