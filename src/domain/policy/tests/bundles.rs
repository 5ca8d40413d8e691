//! Bundles: resources asked for together.

use super::*;

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
