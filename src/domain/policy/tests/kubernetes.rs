//! The `kubernetes` provider in the policy: its settings, the shapes of its grants, and the
//! identities it must never bind.

use super::*;

fn k8s_policy(grant: &str) -> String {
    GOOD.replace("providers:\n", "providers:\n  k8s:\n    kind: kubernetes\n")
        + &format!(
            "  k8s-admin:\n    provider: k8s\n    grant: {grant}\n    max_duration: 1h\n    channel: C0REVIEW\n    approvers: [dba]\n"
        )
}

#[test]
fn a_kubernetes_grant_names_a_cluster_role_or_a_role_in_a_namespace() {
    for grant in [
        "{ cluster_role: cluster-admin }",
        "{ cluster_role: view, namespace: payments }",
        "{ role: deployer, namespace: payments }",
        "{ cluster_role: \"system:aggregate-to-view\" }",
        "{ cluster_role: edit, namespace: payments, group: oncall-responders }",
    ] {
        let (policy, _) =
            Policy::parse("p.yaml", &k8s_policy(grant)).unwrap_or_else(|e| panic!("{grant}: {e}"));
        assert_eq!(policy.providers["k8s"].kind(), "kubernetes");
    }
    for (grant, says) in [
        ("{ role: deployer }", "lives in a namespace"),
        (
            "{ cluster_role: a, role: b, namespace: c }",
            "a kubernetes grant is",
        ),
        (
            "{ cluster_role: view, namespace: Payments }",
            "not a namespace name",
        ),
        ("{ cluster_role: \"a/b\" }", "not a role name"),
        (
            "{ cluster_role: view, verbs: [get] }",
            "unknown key `verbs`",
        ),
        ("{ cluster_role: [view] }", "must be a string"),
        (
            "{ cluster_role: view, group: \"system:masters\" }",
            "Kubernetes system identity",
        ),
        (
            "{ cluster_role: view, group: \"System:Authenticated\" }",
            "never binds roles to it",
        ),
        ("{ cluster_role: view, group: \" \" }", "not a group name"),
    ] {
        let errs = errors(&k8s_policy(grant));
        assert!(
            errs.iter().any(|e| e.path == "resources.k8s-admin.grant"
                && e.message.contains(says)
                && e.line > 0),
            "{grant}: {errs:?}"
        );
    }
}

#[test]
fn a_kubernetes_provider_takes_only_its_own_settings_and_never_a_system_user() {
    let errs = errors(&GOOD.replace(
        "providers:\n",
        "providers:\n  k8s:\n    kind: kubernetes\n    url_env: X\n",
    ));
    assert!(
        errs.iter()
            .any(|e| e.path == "providers.k8s.url_env" && e.message.contains("does not apply")),
        "{errs:?}"
    );
    let errs = errors(&k8s_policy("{ cluster_role: view }").replace(
        "  U0ALICE: { postgres: alice, email: alice@example.com }\n",
        "  U0ALICE: { postgres: alice, k8s_user: \"system:admin\" }\n",
    ));
    assert!(
        errs.iter()
            .any(|e| e.path == "identities.U0ALICE.k8s_user" && e.message.contains("system")),
        "{errs:?}"
    );
    // The person's Kubernetes user, else their email.
    let (policy, _) = Policy::parse("p.yaml", &k8s_policy("{ cluster_role: view }")).unwrap();
    assert_eq!(
        policy.identity("U0ALICE", "kubernetes"),
        Some(std::collections::BTreeMap::from([(
            "email".to_string(),
            "alice@example.com".to_string()
        )]))
    );
    // A named kubeconfig variable that is unset is a warning for `check`.
    let (_, warnings) = Policy::parse(
        "p.yaml",
        &k8s_policy("{ cluster_role: view }").replace(
            "    kind: kubernetes\n",
            "    kind: kubernetes\n    kubeconfig_env: JIT_TEST_KUBECONFIG_NEVER_SET\n",
        ),
    )
    .unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.message.contains("JIT_TEST_KUBECONFIG_NEVER_SET")),
        "{warnings:?}"
    );
}
