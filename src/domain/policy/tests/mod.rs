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
fn an_unknown_provider_kind_is_refused_by_name_and_line() {
    let text = GOOD.replace(
        "kind: postgres\n    url_env: JIT_PG_ADMIN_URL",
        "kind: azure_ad\n    region: us-east-1",
    );
    let errs = errors(&text);
    let e = errs
        .iter()
        .find(|e| e.path == "providers.pg-main.kind")
        .expect("kind error");
    assert!(
        e.message.contains("azure_ad") && e.message.contains("unknown provider kind"),
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
    // Every key offered is one this version takes.
    assert!(message.contains("escalation"), "{message}");
    let top = format!("{GOOD}bogus: 1\n");
    assert!(errors(&top)[0].message.contains("digest"));
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

#[cfg(feature = "aws")]
mod aws;
mod bundles;
mod clients;
mod directory;
#[cfg(feature = "gcp")]
mod gcp;
#[cfg(feature = "kubernetes")]
mod kubernetes;
mod schedules;
mod templates;
