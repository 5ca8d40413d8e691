//! The `kubernetes` provider against a fake API server that answers as Kubernetes does: a
//! request becomes a ClusterRoleBinding or RoleBinding named after it, bound to the person's
//! Kubernetes user, read back after it is made; at the end it is deleted and read back gone. A
//! cluster that is down at the end is retried until the binding is gone; a binding someone else
//! deleted counts as gone; an object of the same name that is not jitbot's is never touched.

use std::collections::HashMap;

use jitbot::fakes::{FakeKubernetes, PagerDutyMode as Mode};
use serde_json::json;

use crate::support::*;

const TOKEN: &str = "k8s-test-token-3f9a";
const ALICE_K8S: &str = "alice@example.com";

/// The app, the cluster, and the directory holding the kubeconfig (removed when dropped).
/// The rules of the ClusterRole `manifest/kubernetes/jitbot-rbac.yaml` gives jitbot, with the
/// roles this test's policy hands out listed under `bind`, as its README asks an operator to.
fn documented_rules() -> Vec<serde_json::Value> {
    let text = include_str!("../../manifest/kubernetes/jitbot-rbac.yaml");
    let list: serde_json::Value =
        marked_yaml::from_yaml(0, text).expect("the RBAC manifest is YAML");
    let role = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|i| i["kind"] == "ClusterRole")
        .expect("a ClusterRole");
    let mut rules = role["rules"].as_array().expect("rules").clone();
    for rule in &mut rules {
        if let Some(names) = rule.get_mut("resourceNames").and_then(|n| n.as_array_mut()) {
            names.extend(["cluster-admin", "edit", "deployer"].map(|n| json!(n)));
        }
    }
    rules
}

async fn spawn_k8s(backend: Backend) -> (TestApp, FakeKubernetes, tempfile::TempDir) {
    let cluster = FakeKubernetes::start(TOKEN).await.expect("fake Kubernetes");
    // The cluster holds jitbot to the documented ClusterRole: these tests show it is enough.
    cluster.enforce(documented_rules());
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, cluster.kubeconfig(TOKEN)).expect("kubeconfig");
    let var = format!("JIT_KUBECONFIG_{}", suffix().to_uppercase());
    let policy = format!(
        r#"
settings: {{ request_ttl: 1h, min_duration: 2s }}
groups:
  dba: {{ members: [{BOB}, {CAROL}] }}
identities:
  {ALICE}: {{ k8s_user: "{ALICE_K8S}" }}
providers:
  k8s: {{ kind: kubernetes, kubeconfig_env: {var} }}
resources:
  k8s-admin:
    provider: k8s
    grant: {{ cluster_role: cluster-admin }}
    max_duration: 1h
    channel: C0REVIEW
    approvers: [dba]
  k8s-view:
    provider: k8s
    grant: {{ cluster_role: cluster-admin }}
    max_duration: 1h
    channel: C0REVIEW
    approvers: [dba]
  k8s-deploy:
    provider: k8s
    grant: {{ role: deployer, namespace: payments }}
    max_duration: 1h
    channel: C0REVIEW
    approvers: [dba]
  k8s-oncall-edit:
    provider: k8s
    grant: {{ cluster_role: edit, namespace: payments, group: oncall-responders }}
    max_duration: 1h
    channel: C0REVIEW
    approvers: [dba]
"#
    );
    let env = HashMap::from([(var, kubeconfig.display().to_string())]);
    let app = spawn_app(backend, &policy, env).await;
    (app, cluster, dir)
}

async fn a_binding_is_made_read_back_and_deleted_at_the_end(backend: Backend) {
    let (app, cluster, _kubeconfig) = spawn_k8s(backend).await;
    let admin = TestApp::id_in(&app.say(ALICE, "request k8s-admin 3s INC-20").await);
    let deploy = TestApp::id_in(&app.say(ALICE, "request k8s-deploy 3s INC-20").await);
    app.click(BOB, APPROVE, admin).await;
    app.click(BOB, APPROVE, deploy).await;
    app.wait_state(admin, "active").await;
    app.wait_state(deploy, "active").await;

    let name = format!("jitbot-{admin}");
    let crb = cluster.binding(None, &name).expect("a ClusterRoleBinding");
    assert_eq!(
        crb["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"})
    );
    assert_eq!(crb["subjects"][0]["kind"], "User");
    assert_eq!(crb["subjects"][0]["name"], ALICE_K8S);
    assert_eq!(
        crb["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "jitbot"
    );
    assert_eq!(
        crb["metadata"]["annotations"]["jitbot.dev/resource"],
        "k8s-admin"
    );
    let rb = cluster
        .binding(Some("payments"), &format!("jitbot-{deploy}"))
        .expect("a RoleBinding in payments");
    assert_eq!(rb["roleRef"]["kind"], "Role");
    assert_eq!(rb["roleRef"]["name"], "deployer");
    // Each grant was read back after it was made.
    let reads = cluster
        .calls()
        .iter()
        .filter(|c| c.method == "GET" && c.path.ends_with(&name))
        .count();
    assert!(reads >= 1, "{:?}", cluster.calls());

    // At the end both are deleted, and read back gone.
    app.wait_state(admin, "expired").await;
    app.wait_state(deploy, "expired").await;
    assert!(cluster.binding(None, &name).is_none());
    assert!(
        cluster
            .binding(Some("payments"), &format!("jitbot-{deploy}"))
            .is_none()
    );
    let calls = cluster.calls();
    let delete_at = calls
        .iter()
        .position(|c| c.method == "DELETE" && c.path.ends_with(&name))
        .expect("deleted");
    assert!(
        calls[delete_at..]
            .iter()
            .any(|c| c.method == "GET" && c.path.ends_with(&name) && c.status == 404),
        "read back after the delete: {calls:?}"
    );
    app.wait_dm(ALICE, "has expired: ended, confirmed at the target")
        .await;
    app.wait_card_update("confirmed at the target").await;
    app.finish().await;
}

#[tokio::test]
async fn a_binding_is_made_read_back_and_deleted_at_the_end_on_sqlite() {
    a_binding_is_made_read_back_and_deleted_at_the_end(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_binding_is_made_read_back_and_deleted_at_the_end_on_postgres() {
    a_binding_is_made_read_back_and_deleted_at_the_end(Backend::Postgres).await;
}

#[tokio::test]
async fn a_cluster_down_at_the_end_is_retried_until_the_binding_is_gone() {
    let (app, cluster, _kubeconfig) = spawn_k8s(Backend::Sqlite).await;
    let id = TestApp::id_in(&app.say(ALICE, "request k8s-admin 2s INC-21").await);
    app.click(BOB, APPROVE, id).await;
    app.wait_state(id, "active").await;
    cluster.set_mode(Mode::Down);
    app.wait_state(id, "revoke_failed").await;
    assert!(cluster.binding(None, &format!("jitbot-{id}")).is_some());
    app.wait_channel_note("keeps retrying").await;
    cluster.set_mode(Mode::Up);
    app.wait_state(id, "expired").await;
    assert!(cluster.binding(None, &format!("jitbot-{id}")).is_none());
    app.finish().await;
}

#[tokio::test]
async fn a_binding_deleted_by_someone_else_counts_as_gone_and_a_foreign_one_is_left_alone() {
    let (app, cluster, _kubeconfig) = spawn_k8s(Backend::Sqlite).await;
    // Someone deletes jitbot's binding by hand before its end: the end still completes.
    let first = TestApp::id_in(&app.say(ALICE, "request k8s-admin 2s INC-22").await);
    app.click(BOB, APPROVE, first).await;
    app.wait_state(first, "active").await;
    cluster.remove_binding(None, &format!("jitbot-{first}"));
    app.wait_state(first, "expired").await;

    // An object already named like the next request's binding, not jitbot's: the grant fails
    // (it never adopts or deletes someone else's binding) and the object stays as it was.
    let next = first + 1;
    let foreign = json!({"kind": "ClusterRoleBinding", "metadata": {"name": format!("jitbot-{next}")},
                         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                         "subjects": [{"kind": "User", "name": "mallory", "apiGroup": "rbac.authorization.k8s.io"}]});
    cluster.put_binding(None, &format!("jitbot-{next}"), foreign.clone());
    let id = TestApp::id_in(&app.say(ALICE, "request k8s-admin 2m INC-23").await);
    assert_eq!(id, next);
    app.click(BOB, APPROVE, id).await;
    app.wait_state(id, "grant_failed").await;
    app.wait_channel_note("not this grant's").await;
    // The clean-up after the failure ran and left it alone.
    assert!(
        eventually(WAIT, || async {
            app.audit_actions(id)
                .await
                .iter()
                .any(|a| a == "cleanup_done")
        })
        .await,
        "{:?}",
        app.audit_actions(id).await
    );
    assert_eq!(
        cluster.binding(None, &format!("jitbot-{next}")),
        Some(foreign)
    );
    app.finish().await;
}

#[tokio::test]
async fn a_binding_the_cluster_keeps_after_the_delete_is_revoke_failed_never_expired() {
    let (app, cluster, _kubeconfig) = spawn_k8s(Backend::Sqlite).await;
    let id = TestApp::id_in(&app.say(ALICE, "request k8s-admin 2s INC-24").await);
    app.click(BOB, APPROVE, id).await;
    app.wait_state(id, "active").await;
    cluster.set_sticky(true);
    app.wait_state(id, "revoke_failed").await;
    app.wait_channel_note("keeps retrying").await;
    // However long it retries, it is not shown as ended while the binding stays.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(app.state(id).await, "revoke_failed");
    assert!(cluster.binding(None, &format!("jitbot-{id}")).is_some());
    // The finalizer finishes: the next retry confirms it gone.
    cluster.set_sticky(false);
    cluster.remove_binding(None, &format!("jitbot-{id}"));
    app.wait_state(id, "expired").await;
    app.finish().await;
}

#[tokio::test]
async fn two_overlapping_grants_of_one_role_end_one_after_the_other() {
    let (app, cluster, _kubeconfig) = spawn_k8s(Backend::Postgres).await;
    // k8s-admin and k8s-view both give cluster-admin; Alice holds both, ending 3 s apart.
    let short = TestApp::id_in(&app.say(ALICE, "request k8s-admin 2s INC-25").await);
    let long = TestApp::id_in(&app.say(ALICE, "request k8s-view 5s INC-25").await);
    app.click(BOB, APPROVE, short).await;
    app.click(BOB, APPROVE, long).await;
    app.wait_state(short, "active").await;
    app.wait_state(long, "active").await;
    let holds = |cluster: &FakeKubernetes| {
        [short, long]
            .iter()
            .filter_map(|id| cluster.binding(None, &format!("jitbot-{id}")))
            .any(|b| {
                b["roleRef"]["name"] == "cluster-admin" && b["subjects"][0]["name"] == ALICE_K8S
            })
    };
    // The first end leaves Alice's cluster-admin in place: the other grant still runs.
    app.wait_state(short, "expired").await;
    assert_eq!(app.state(long).await, "active");
    assert!(
        holds(&cluster),
        "the first end took the other grant's access"
    );
    // The last end removes it.
    app.wait_state(long, "expired").await;
    assert!(!holds(&cluster));
    app.finish().await;
}

#[tokio::test]
async fn group_access_binds_the_group_the_resource_names_not_the_requester() {
    let (app, cluster, _kubeconfig) = spawn_k8s(Backend::Sqlite).await;
    // Mallory has no Kubernetes identity of her own: group access does not need one.
    let id = TestApp::id_in(&app.say(MALLORY, "request k8s-oncall-edit 2s INC-26").await);
    app.click(BOB, APPROVE, id).await;
    app.wait_state(id, "active").await;
    let name = format!("jitbot-{id}");
    let rb = cluster
        .binding(Some("payments"), &name)
        .expect("a RoleBinding in payments");
    assert_eq!(
        rb["subjects"],
        json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "oncall-responders"}])
    );
    assert_eq!(rb["roleRef"]["kind"], "ClusterRole");
    assert_eq!(rb["roleRef"]["name"], "edit");
    app.wait_state(id, "expired").await;
    assert!(cluster.binding(Some("payments"), &name).is_none());
    app.wait_dm(MALLORY, "ended, confirmed at the target").await;
    app.finish().await;
}

#[tokio::test]
async fn a_role_the_documented_cluster_role_may_not_bind_is_a_failed_grant() {
    let (app, cluster, _kubeconfig) = spawn_k8s(Backend::Sqlite).await;
    // The operator listed only some roles under `bind`: granting another is refused by the
    // cluster (403), and the request fails rather than showing access that is not there.
    let mut rules = documented_rules();
    for rule in &mut rules {
        if let Some(names) = rule.get_mut("resourceNames") {
            *names = json!(["view"]);
        }
    }
    cluster.enforce(rules);
    let id = TestApp::id_in(&app.say(ALICE, "request k8s-admin 1m INC-27").await);
    app.click(BOB, APPROVE, id).await;
    app.wait_state(id, "grant_failed").await;
    assert!(cluster.binding(None, &format!("jitbot-{id}")).is_none());
    assert!(
        cluster
            .calls()
            .iter()
            .any(|c| c.method == "POST" && c.status == 403),
        "{:?}",
        cluster.calls()
    );
    app.finish().await;
}

#[tokio::test]
async fn a_requester_with_no_kubernetes_user_and_no_profile_email_is_refused_before_anything_is_stored()
 {
    let (app, cluster, _kubeconfig) = spawn_k8s(Backend::Sqlite).await;
    // Mallory has no `k8s_user`, and her Slack profile shows no email: nothing could name her
    // at the cluster, so the request is refused now, with the hint, and nothing is stored.
    let answer = app.say(MALLORY, "request k8s-admin 1m INC-28").await;
    assert!(
        answer.contains("no kubernetes identity") && answer.contains("k8s_user"),
        "{answer}"
    );
    assert_eq!(app.store.count_requests().await.unwrap(), 0);
    // Once her profile shows one, she is bound by it (read once, at the request).
    app.slack.set_email(MALLORY, "mallory@example.com");
    let id = TestApp::id_in(&app.say(MALLORY, "request k8s-admin 1m INC-28").await);
    app.click(BOB, APPROVE, id).await;
    app.wait_state(id, "active").await;
    let crb = cluster
        .binding(None, &format!("jitbot-{id}"))
        .expect("a ClusterRoleBinding");
    assert_eq!(crb["subjects"][0]["name"], "mallory@example.com");
    app.finish().await;
}
