use super::*;

const GOOD: &str = r#"
settings:
  request_ttl: 2h
  min_duration: 5m
groups:
  dba:
    members: [U0DBA1, U0DBA2]
identities:
  U0ALICE: { postgres: alice, email: alice@example.com }
providers:
  pg-main:
    kind: postgres
    url_env: JIT_PG_ADMIN_URL
resources:
  prod-db:
    provider: pg-main
    grant: { role: prod_rw }
    max_duration: 4h
    channel: C0REVIEW
    approvers: [dba]
    requesters: [U0ALICE, dba]
    auto_approve:
      - requesters: [U0DBA1]
        max_duration: 30m
"#;

fn errors(text: &str) -> Vec<Diagnostic> {
    Policy::parse("p.yaml", text)
        .expect_err("policy should be refused")
        .0
}

#[test]
fn a_good_policy_compiles() {
    let (policy, _) = Policy::parse("p.yaml", GOOD).unwrap();
    let db = &policy.resources["prod-db"];
    assert!(policy.is_approver(db, "U0DBA2"));
    assert!(!policy.is_approver(db, "U0ALICE"));
    assert!(policy.may_request(db, "U0ALICE"));
    assert!(!policy.may_request(db, "U0MALLORY"));
    assert_eq!(db.default_duration.secs(), 3600);
    assert!(policy.auto_approves(db, "U0DBA1", GrantDuration::parse("30m").unwrap()));
    assert!(!policy.auto_approves(db, "U0DBA1", GrantDuration::parse("31m").unwrap()));
    assert_eq!(policy.suggest("prod_db"), Some("prod-db"));
    assert_eq!(policy.suggest("staging"), None);
}

#[test]
fn an_unknown_key_names_line_and_column() {
    let text = GOOD.replace("    max_duration: 4h", "    max_duraton: 4h");
    let errs = errors(&text);
    assert_eq!((errs[0].line, errs[0].column), (18, 5), "{errs:?}");
    assert!(errs[0].message.contains("max_duraton"), "{}", errs[0]);
}

#[test]
fn a_type_error_names_its_line() {
    let text = GOOD.replace("self_approval", "x").replace(
        "    channel: C0REVIEW",
        "    channel: C0REVIEW\n    approvals: many",
    );
    let errs = errors(&text);
    assert_eq!(errs[0].line, 20, "{errs:?}");
}

#[test]
fn a_syntax_error_names_its_line() {
    let errs = errors("resources:\n  a: [unclosed\n");
    assert!(errs[0].line >= 2, "{errs:?}");
    assert!(errs[0].message.starts_with("syntax error"));
}

#[test]
fn semantic_errors_name_the_key_path_and_line() {
    let text = GOOD.replace("approvers: [dba]", "approvers: [dbas]");
    let errs = errors(&text);
    assert_eq!(errs[0].path, "resources.prod-db.approvers[0]");
    assert_eq!(errs[0].line, 20);
    let text = GOOD.replace("channel: C0REVIEW", "channel: '#review'");
    assert_eq!(errors(&text)[0].path, "resources.prod-db.channel");
}

#[test]
fn later_provider_kinds_are_refused_by_name_and_line() {
    let text = GOOD.replace(
        "kind: postgres\n    url_env: JIT_PG_ADMIN_URL",
        "kind: aws_iam\n    region: us-east-1",
    );
    let errs = errors(&text);
    let e = errs
        .iter()
        .find(|e| e.path == "providers.pg-main.kind")
        .expect("kind error");
    assert!(
        e.message.contains("aws_iam") && e.message.contains("not supported"),
        "{e}"
    );
    assert_eq!(e.line, 12);
}

#[test]
fn group_names_must_not_look_like_ids() {
    let text = GOOD.replace("  dba:\n", "  U0TEAM:\n");
    assert!(errors(&text).iter().any(|e| e.path == "groups.U0TEAM"));
}

#[test]
fn the_shipped_example_policy_passes() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifest/policy.yaml");
    if let Err(e) = Policy::load(&path) {
        panic!("manifest/policy.yaml: {e}");
    }
}

#[test]
fn the_new_settings_compile_with_their_defaults() {
    let (p, _) = Policy::parse("p.yaml", GOOD).expect("good policy");
    assert_eq!(p.settings.grant_deadline.to_string(), "10m");
    assert_eq!(p.settings.max_open_per_user, 10);
    assert!(p.settings.admins.is_empty());
    let text = GOOD.replace(
        "  min_duration: 5m\n",
        "  min_duration: 5m\n  grant_deadline: 2m\n  admins: [dba, U0LEAD]\n  max_open_per_user: 3\n",
    );
    let (p, _) = Policy::parse("p.yaml", &text).expect("good policy");
    assert_eq!(p.settings.grant_deadline.to_string(), "2m");
    assert_eq!(p.settings.max_open_per_user, 3);
    assert!(p.is_admin("U0DBA2") && p.is_admin("U0LEAD") && !p.is_admin("U0ALICE"));
}

#[test]
fn bad_new_settings_are_errors_with_their_line() {
    let text = GOOD.replace(
        "  min_duration: 5m\n",
        "  min_duration: 5m\n  admins: [nobody]\n  max_open_per_user: 0\n  grant_deadline: soon\n",
    );
    let errors = errors(&text);
    let paths: Vec<&str> = errors.iter().map(|d| d.path.as_str()).collect();
    assert!(paths.contains(&"settings.admins[0]"), "{errors:?}");
    assert!(paths.contains(&"settings.max_open_per_user"), "{errors:?}");
    assert!(paths.contains(&"settings.grant_deadline"), "{errors:?}");
    assert!(errors.iter().all(|d| d.line >= 4), "{errors:?}");
}

#[test]
fn an_identity_that_is_a_built_in_role_is_refused() {
    for login in [
        "postgres",
        "pg_read_all_data",
        "rdsadmin",
        "rds_superuser",
        "cloudsqlsuperuser",
    ] {
        let text = GOOD.replace("postgres: alice", &format!("postgres: {login}"));
        let errors = errors(&text);
        assert_eq!(errors.len(), 1, "{login}: {errors:?}");
        assert_eq!(errors[0].path, "identities.U0ALICE.postgres");
        assert!(errors[0].message.contains("never grant"), "{}", errors[0]);
    }
    let k8s = GOOD.replace("email: alice@example.com", "k8s_user: \"system:admin\"");
    assert_eq!(errors(&k8s)[0].path, "identities.U0ALICE.k8s_user");
}

#[test]
fn a_stored_request_is_held_to_the_policy_in_force() {
    let (p, _) = Policy::parse("p.yaml", GOOD).expect("good policy");
    let r = &p.resources["prod-db"];
    assert_eq!(p.no_longer_allows(r, "U0ALICE", 3_600), None);
    assert!(
        p.no_longer_allows(r, "U0ALICE", 5 * 3_600).is_some(),
        "over max"
    );
    assert!(p.no_longer_allows(r, "U0ALICE", 60).is_some(), "under min");
    assert!(
        p.no_longer_allows(r, "U0MALLORY", 3_600).is_some(),
        "not a requester"
    );
    // A dba member may ask but has no postgres login.
    assert!(
        p.no_longer_allows(r, "U0DBA1", 3_600)
            .is_some_and(|why| why.contains("identity"))
    );
}

#[test]
fn check_speaks_plainly_about_empty_files_unknown_keys_and_types() {
    for empty in ["", "\n", "# only a comment\n", "---\n"] {
        let errors = errors(empty);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].message.contains("empty"), "{}", errors[0]);
        assert_eq!(
            errors[0].to_string().split(':').count(),
            3,
            "no line 0: {}",
            errors[0]
        );
    }
    let typo = GOOD.replace("    provider: pg-main", "    providr: pg-main");
    let message = &errors(&typo)[0].message;
    assert!(message.contains("Did you mean `provider`?"), "{message}");
    assert!(
        !message.contains("escalation"),
        "a key this version refuses is not offered: {message}"
    );
    let top = format!("{GOOD}bogus: 1\n");
    assert!(!errors(&top)[0].message.contains("escalation"));
    let words = GOOD.replace(
        "max_duration: 4h",
        "max_duration: 4h\n    approvals: \"two\"",
    );
    let message = &errors(&words)[0].message;
    assert!(message.contains("whole number"), "{message}");
    let missing = Policy::load(std::path::Path::new("/nonexistent/p.yaml")).unwrap_err();
    assert_eq!(
        missing.to_string(),
        "/nonexistent/p.yaml: cannot read the policy file: no such file"
    );
}

#[test]
fn check_warns_about_footguns_with_their_line() {
    let warnings = |text: &str| {
        Policy::parse("p.yaml", text)
            .expect("loads")
            .1
            .into_iter()
            .map(|w| w.to_string())
            .collect::<Vec<_>>()
    };
    let wide = GOOD.replace("max_duration: 30m", "max_duration: 8h");
    let w = warnings(&wide);
    assert!(
        w.iter()
            .any(|w| w.contains("auto_approve[0].max_duration") && w.contains("8h")),
        "{w:?}"
    );
    let lonely = GOOD.replace(
        "    approvers: [dba]\n",
        "    approvers: [dba]\n    self_approval: true\n",
    );
    let w = warnings(&lonely);
    assert!(
        w.iter()
            .any(|w| w.contains("self_approval") && w.contains("nobody else")),
        "{w:?}"
    );
    let twice = format!(
        "{GOOD}  prod-db-easy:\n    provider: pg-main\n    grant: {{ role: prod_rw }}\n    max_duration: 8h\n    channel: C0REVIEW\n    approvers: [dba]\n"
    );
    let w = warnings(&twice);
    assert!(
        w.iter()
            .any(|w| w.contains("same access as `prod-db`") && w.contains(":2")),
        "{w:?}"
    );
    // The example policy has none of these.
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/manifest/policy.yaml"))
            .unwrap();
    assert!(
        warnings(&example)
            .iter()
            .all(|w| w.contains("environment variable")),
        "{:?}",
        warnings(&example)
    );
}

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

#[test]
fn bundles_name_resources_of_the_policy() {
    let with = |bundles: &str| {
        GOOD.replace(
            "resources:\n",
            "resources:\n  wiki:\n    provider: pg-main\n    grant: { role: wiki }\n    max_duration: 1h\n    channel: C0OTHER\n    approvers: [dba]\n",
        ) + bundles
    };
    let (policy, warnings) =
        Policy::parse("p.yaml", &with("bundles:\n  incident: [prod-db, wiki]\n")).unwrap();
    let (name, resources) = policy.resolve("incident").unwrap();
    assert_eq!(name.as_deref(), Some("incident"));
    assert_eq!(
        resources
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        ["prod-db", "wiki"]
    );
    // Different channels: one card, in the first one's; check says so.
    assert!(
        warnings
            .iter()
            .any(|w| w.path == "bundles.incident" && w.message.contains("C0REVIEW")),
        "{warnings:?}"
    );
    let (name, resources) = policy.resolve("wiki, prod-db").unwrap();
    assert_eq!((name, resources.len()), (None, 2));
    assert!(
        policy
            .resolve("wiki,prod_db")
            .unwrap_err()
            .contains("Did you mean `prod-db`")
    );
    assert!(
        policy
            .resolve("wiki,wiki")
            .unwrap_err()
            .contains("named twice")
    );

    for (bundles, path, message) in [
        (
            "bundles:\n  prod-db: [prod-db, wiki]\n",
            "bundles.prod-db",
            "also a resource",
        ),
        ("bundles:\n  one: [wiki]\n", "bundles.one", "2 to 10"),
        (
            "bundles:\n  b: [wiki, prod_db]\n",
            "bundles.b[1]",
            "did you mean `prod-db`",
        ),
        (
            "bundles:\n  b: [wiki, wiki]\n",
            "bundles.b[1]",
            "named twice",
        ),
    ] {
        let errs = errors(&with(bundles));
        assert!(
            errs.iter()
                .any(|e| e.path == path && e.message.contains(message) && e.line > 0),
            "{bundles}: {errs:?}"
        );
    }
}

#[test]
fn a_resource_whose_approvers_cannot_approve_each_other_is_warned_about() {
    let two = GOOD.replace(
        "    approvers: [dba]\n",
        "    approvers: [dba]\n    approvals: 2\n",
    );
    let (_, warnings) = Policy::parse("p.yaml", &two).unwrap();
    let w = warnings
        .iter()
        .find(|w| w.path == "resources.prod-db.approvers")
        .unwrap_or_else(|| panic!("{warnings:?}"));
    assert!(w.message.contains("U0DBA1, U0DBA2") && w.line > 0, "{w}");
    // With self-approval, or approvers who never ask, nothing to say.
    let fine = two.replace("approvals: 2\n", "approvals: 2\n    self_approval: true\n");
    let (_, warnings) = Policy::parse("p.yaml", &fine).unwrap();
    assert!(
        !warnings
            .iter()
            .any(|w| w.path == "resources.prod-db.approvers")
    );
    let (_, warnings) = Policy::parse("p.yaml", GOOD).unwrap();
    assert!(
        !warnings
            .iter()
            .any(|w| w.path == "resources.prod-db.approvers")
    );
}

#[test]
fn the_digest_has_a_channel_and_a_schedule() {
    use chrono::TimeZone;
    let with = |digest: &str| format!("{GOOD}digest:\n{digest}");
    let (policy, _) = Policy::parse(
        "p.yaml",
        &with("  channel: C0AUDIT\n  schedule: \"0 0 9 * * Mon\"\n"),
    )
    .unwrap();
    let digest = policy.digest.expect("a digest");
    assert_eq!(digest.channel, "C0AUDIT");
    // A Wednesday is in the week from Monday 09:00 to the next Monday 09:00.
    let wednesday = chrono::Utc
        .with_ymd_and_hms(2026, 11, 25, 15, 0, 0)
        .unwrap();
    let (from, to) = digest.period(wednesday).expect("a period");
    assert_eq!(
        from,
        chrono::Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap()
    );
    assert_eq!(
        to,
        chrono::Utc.with_ymd_and_hms(2026, 11, 30, 9, 0, 0).unwrap()
    );
    // At the posting moment itself, the period is the one that starts then.
    let (from, _) = digest.period(to).expect("a period");
    assert_eq!(from, to);

    for (digest, path, says) in [
        (
            "  channel: audit\n  schedule: \"0 0 9 * * Mon\"\n",
            "digest.channel",
            "channel ID",
        ),
        (
            "  channel: C0AUDIT\n  schedule: \"every monday\"\n",
            "digest.schedule",
            "seconds field",
        ),
        ("  channel: C0AUDIT\n", "digest", "schedule"),
    ] {
        let errs = errors(&with(digest));
        assert!(
            errs.iter()
                .any(|e| e.path.starts_with(path) && e.message.contains(says) && e.line > 0),
            "{digest}: {errs:?}"
        );
    }
}

#[test]
fn a_rotation_has_one_person_on_call_and_the_ladder_is_checked() {
    use chrono::TimeZone;
    let text = GOOD
        .replace(
            "groups:\n",
            "groups:\n  sre:\n    rotation: { members: [U0SRE1, U0SRE2, U0SRE3], shift: 7d, start: \"2026-01-05T09:00:00Z\" }\n",
        )
        .replace(
            "    approvers: [dba]\n",
            "    approvers: [dba, sre]\n    remind: 10m\n    escalation:\n      - { after: 15m, to: sre }\n      - { after: 45m, to: dba }\n",
        );
    let (policy, _) = Policy::parse("p.yaml", &text).unwrap();
    let sre = &policy.rotations["sre"];
    let at = |d: u32, h: u32| chrono::Utc.with_ymd_and_hms(2026, 1, d, h, 0, 0).unwrap();
    assert_eq!(sre.on_call(at(5, 9)), "U0SRE1");
    assert_eq!(sre.on_call(at(12, 8)), "U0SRE1");
    assert_eq!(sre.on_call(at(12, 9)), "U0SRE2");
    assert_eq!(
        sre.on_call(at(26, 9)),
        "U0SRE1",
        "round again after three shifts"
    );
    let db = &policy.resources["prod-db"];
    assert_eq!(db.remind.map(|r| r.secs()), Some(600));
    assert_eq!(
        db.escalation
            .iter()
            .map(|s| (s.after.secs(), s.to.as_str()))
            .collect::<Vec<_>>(),
        [(900, "sre"), (2_700, "dba")]
    );
    // Only the person on call approves for the rotation; `approve: members` lets them all.
    let now = at(12, 10);
    assert!(policy.approves(&db.approvers, "U0SRE2", now));
    assert!(!policy.approves(&db.approvers, "U0SRE1", now));
    assert_eq!(policy.paged("sre", now), ["U0SRE2"]);
    assert_eq!(policy.paged("dba", now), ["U0DBA1", "U0DBA2"]);
    let all = text.replace(
        "start: \"2026-01-05T09:00:00Z\" }",
        "start: \"2026-01-05T09:00:00Z\" }\n    approve: members",
    );
    let (policy, _) = Policy::parse("p.yaml", &all).unwrap();
    assert!(policy.approves(&policy.resources["prod-db"].approvers, "U0SRE1", now));

    let one = GOOD.replace(
        "    approvers: [dba]\n",
        "    approvers: [dba]\n    escalation: { after: 15m, to: dba }\n",
    );
    let (policy, _) = Policy::parse("p.yaml", &one).unwrap();
    assert_eq!(policy.resources["prod-db"].escalation.len(), 1);
    for (ladder, path, says) in [
        (
            "{ after: 3h, to: dba }",
            "resources.prod-db.escalation[0].after",
            "never page",
        ),
        (
            "{ after: 15m, to: nobody }",
            "resources.prod-db.escalation[0].to",
            "neither a defined group",
        ),
    ] {
        let bad = GOOD.replace(
            "    approvers: [dba]\n",
            &format!("    approvers: [dba]\n    escalation: {ladder}\n"),
        );
        let errs = errors(&bad);
        assert!(
            errs.iter()
                .any(|e| e.path == path && e.message.contains(says)),
            "{ladder}: {errs:?}"
        );
    }
}
