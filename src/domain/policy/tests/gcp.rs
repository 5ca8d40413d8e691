//! The `gcp_iam` provider in the policy: its settings, its grant shapes and the member it binds.

use super::*;

fn gcp_policy(provider: &str, grant: &str) -> String {
    GOOD.replace("providers:\n", &format!("providers:\n  gcp:\n{provider}"))
        + &format!(
            "  gcp-viewer:\n    provider: gcp\n    grant: {grant}\n    max_duration: 1h\n    channel: C0REVIEW\n    approvers: [dba]\n"
        )
}

const GCP: &str = "    kind: gcp_iam\n";

#[test]
fn a_gcp_grant_is_a_role_on_one_project_folder_or_organization() {
    for grant in [
        "{ role: roles/viewer, project: acme-prod }",
        "{ role: roles/browser, folder: \"123456789\" }",
        "{ role: organizations/1/roles/jitAudit, organization: \"1\" }",
    ] {
        Policy::parse("p.yaml", &gcp_policy(GCP, grant)).unwrap_or_else(|e| panic!("{grant}: {e}"));
    }
    for (grant, says) in [
        ("{ role: viewer, project: acme-prod }", "not a role"),
        ("{ role: roles/viewer }", "exactly one of project"),
        (
            "{ role: roles/viewer, project: a, folder: \"1\" }",
            "exactly one of project",
        ),
        (
            "{ role: roles/viewer, project: Acme_Prod }",
            "not a project ID",
        ),
        (
            "{ role: roles/viewer, project: acme, zone: x }",
            "unknown key `zone`",
        ),
    ] {
        let errs = errors(&gcp_policy(GCP, grant));
        assert!(
            errs.iter()
                .any(|e| e.path == "resources.gcp-viewer.grant" && e.message.contains(says)),
            "{grant}: {errs:?}"
        );
    }
    let errs = errors(&gcp_policy(
        "    kind: gcp_iam\n    endpoint_url: \"http://gcp.example.com\"\n",
        "{ role: roles/viewer, project: acme }",
    ));
    assert!(
        errs.iter().any(|e| e.path == "providers.gcp.endpoint_url"),
        "{errs:?}"
    );
    // The member: `gcp_member`, else the email.
    let (policy, _) = Policy::parse(
        "p.yaml",
        &gcp_policy(GCP, "{ role: roles/viewer, project: acme }"),
    )
    .unwrap();
    assert_eq!(
        policy.identity("U0ALICE", "gcp_iam"),
        Some(std::collections::BTreeMap::from([(
            "email".to_string(),
            "alice@example.com".to_string()
        )]))
    );
}
