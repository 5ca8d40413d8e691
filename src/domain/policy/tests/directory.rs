//! What only Slack and PagerDuty know: user groups (`S…`) and who a PagerDuty schedule has on
//! call, read from the policy's [`Lookups`] as the directory last saw them.

use super::*;

fn with_groups(groups: &str, approvers: &str) -> String {
    GOOD.replace("groups:\n", &format!("groups:\n{groups}"))
        .replace(
            "    approvers: [dba]\n",
            &format!("    approvers: {approvers}\n"),
        )
}

const SRE_PD: &str = "  sre:\n    pagerduty: { schedule_id: PSRE1, token_env: JIT_TEST_PD_TOKEN }\n    members: [U0SRE1, U0SRE2]\n";

#[test]
fn a_pagerduty_group_approves_through_the_person_on_call_or_its_members() {
    let (policy, _) = Policy::parse("p.yaml", &with_groups(SRE_PD, "[dba, sre]")).unwrap();
    let sre = &policy.pagerduty["sre"];
    assert_eq!(sre.schedule_id, "PSRE1");
    assert_eq!(sre.token_env, "JIT_TEST_PD_TOKEN");
    assert_eq!(sre.api_url, "https://api.pagerduty.com");
    assert!(!sre.everyone_approves);
    assert!(policy.is_on_call_group("sre"));
    let approvers = &policy.resources["prod-db"].approvers;
    let now = chrono::Utc::now();

    // No answer from PagerDuty yet: the members stand in, and the page says why.
    assert!(policy.approves(approvers, "U0SRE1", now));
    assert_eq!(policy.paged("sre", now), ["U0SRE1", "U0SRE2"]);
    assert!(policy.on_call_fallback("sre").is_some());

    // PagerDuty names U0SRE2: only they approve for the group and only they are paged.
    policy
        .lookups
        .set_on_call("sre", OnCall::Person("U0SRE2".into()));
    assert!(policy.approves(approvers, "U0SRE2", now));
    assert!(!policy.approves(approvers, "U0SRE1", now));
    assert!(
        policy.approves(approvers, "U0DBA1", now),
        "dba still approves"
    );
    assert_eq!(policy.paged("sre", now), ["U0SRE2"]);
    assert_eq!(policy.on_call_fallback("sre"), None);
    assert!(policy.approvers_now(approvers, now).contains("U0SRE2"));
    assert!(!policy.approvers_now(approvers, now).contains("U0SRE1"));

    // PagerDuty down: back to the members, with the reason.
    policy.lookups.set_on_call(
        "sre",
        OnCall::Fallback("PagerDuty answered HTTP 503".into()),
    );
    assert!(policy.approves(approvers, "U0SRE1", now));
    assert_eq!(
        policy.on_call_fallback("sre").as_deref(),
        Some("PagerDuty answered HTTP 503")
    );

    // `approve: members`: every member approves, the page still goes to the one on call.
    let all = with_groups(
        &SRE_PD.replace("    members:", "    approve: members\n    members:"),
        "[dba, sre]",
    );
    let (policy, _) = Policy::parse("p.yaml", &all).unwrap();
    policy
        .lookups
        .set_on_call("sre", OnCall::Person("U0SRE2".into()));
    assert!(policy.approves(&policy.resources["prod-db"].approvers, "U0SRE1", now));
    assert_eq!(policy.paged("sre", now), ["U0SRE2"]);
}

#[test]
fn a_bad_pagerduty_group_is_refused_where_it_stands() {
    for (groups, path, says) in [
        (
            "  sre:\n    pagerduty: { schedule_id: PSRE1, token_env: JIT_TEST_PD_TOKEN }\n",
            "groups.sre",
            "`members` to fall back on",
        ),
        (
            "  sre:\n    pagerduty: { schedule_id: \"P SRE\", token_env: JIT_TEST_PD_TOKEN }\n    members: [U0SRE1]\n",
            "groups.sre.pagerduty.schedule_id",
            "schedule ID",
        ),
        (
            "  sre:\n    pagerduty: { schedule_id: PSRE1, token_env: \"my token\" }\n    members: [U0SRE1]\n",
            "groups.sre.pagerduty.token_env",
            "environment variable",
        ),
        (
            "  sre:\n    pagerduty: { schedule_id: PSRE1, token_env: T, api_url: \"http://pd.example.com\" }\n    members: [U0SRE1]\n",
            "groups.sre.pagerduty.api_url",
            "https",
        ),
        (
            "  sre:\n    members: [U0SRE1]\n    approve: on_call\n",
            "groups.sre.approve",
            "on-call groups",
        ),
        (
            "  sre:\n    pagerduty: { schedule_id: PSRE1, token_env: T }\n    members: [U0SRE1]\n    approve: everyone\n",
            "groups.sre.approve",
            "`on_call`",
        ),
    ] {
        let errs = errors(&with_groups(groups, "[dba]"));
        assert!(
            errs.iter()
                .any(|e| e.path == path && e.message.contains(says) && e.line > 0),
            "{groups}: {errs:?}"
        );
    }
    // An unset token variable is a warning for `check` (`serve` refuses to start without it).
    let (_, warnings) = Policy::parse(
        "p.yaml",
        &with_groups(
            &SRE_PD.replace("JIT_TEST_PD_TOKEN", "JIT_TEST_PD_TOKEN_NEVER_SET"),
            "[dba]",
        ),
    )
    .unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.path == "groups.sre.pagerduty.token_env" && w.message.contains("not set")),
        "{warnings:?}"
    );
}

#[test]
fn a_slack_user_group_counts_as_its_members_while_its_answer_is_fresh() {
    let text = with_groups(
        "  platform:\n    members: [S0PLATFORM, U0LEAD]\n",
        "[platform, S0DBATEAM]",
    );
    let (policy, _) = Policy::parse("p.yaml", &text).unwrap();
    assert_eq!(
        policy.all_usergroups().into_iter().collect::<Vec<_>>(),
        ["S0DBATEAM", "S0PLATFORM"]
    );
    let approvers = policy.resources["prod-db"].approvers.clone();
    let now = chrono::Utc::now();
    // Slack has not answered: only the listed user approves.
    assert!(policy.approves(&approvers, "U0LEAD", now));
    assert!(!policy.approves(&approvers, "U0ANNA", now));

    policy
        .lookups
        .set_usergroup("S0PLATFORM", vec!["U0ANNA".into()]);
    policy
        .lookups
        .set_usergroup("S0DBATEAM", vec!["U0BEN".into()]);
    assert!(policy.approves(&approvers, "U0ANNA", now));
    assert!(policy.approves(&approvers, "U0BEN", now));
    assert!(!policy.approves(&approvers, "U0MALLORY", now));
    assert!(policy.expand(&approvers).contains("U0ANNA"));

    // Anna leaves the group: she no longer approves.
    policy.lookups.set_usergroup("S0PLATFORM", Vec::new());
    assert!(!policy.approves(&approvers, "U0ANNA", now));
    assert!(policy.approves(&approvers, "U0LEAD", now));

    // Something that is neither a user nor a user group is refused.
    let errs = errors(&with_groups(
        "  platform:\n    members: [s0platform]\n",
        "[platform]",
    ));
    assert!(
        errs.iter()
            .any(|e| e.path.starts_with("groups.platform.members")),
        "{errs:?}"
    );
}
