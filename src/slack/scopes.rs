//! The Slack Web API methods jitbot calls and the bot scope each needs: the manifest
//! (`manifest/slack-app.yaml`) asks for exactly these, and a test holds the two together (and
//! fails when the client calls a method this table does not list).

/// (method, scopes it needs). A DM is `chat.postMessage` to a user ID, which opens the IM.
pub const METHODS: &[(&str, &[&str])] = &[
    ("chat.postMessage", &["chat:write", "im:write"]),
    ("chat.update", &["chat:write"]),
    ("chat.postEphemeral", &["chat:write"]),
    // The Slack profile's email, for providers that name people by email.
    ("users.info", &["users:read", "users:read.email"]),
    // The Slack account of the person PagerDuty has on call.
    ("users.lookupByEmail", &["users:read", "users:read.email"]),
    // The members of Slack user groups the policy names.
    ("usergroups.users.list", &["usergroups:read"]),
    ("views.open", &[]),
    ("views.publish", &[]),
    ("auth.test", &[]),
];

/// Scopes for what Slack sends jitbot rather than what it calls: the `/jit` command.
pub const INBOUND: &[&str] = &["commands"];

/// The Events API events jitbot handles (`/slack/events`).
pub const EVENTS: &[&str] = &["app_home_opened"];

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    const MANIFEST: &str = include_str!("../../manifest/slack-app.yaml");
    const CLIENT: &str = include_str!("client.rs");
    const GATE: &str = include_str!("gate.rs");
    const PEOPLE: &str = include_str!("people.rs");

    fn node<'a>(root: &'a marked_yaml::Node, path: &[&str]) -> &'a marked_yaml::Node {
        let mut node = root;
        for key in path {
            node = node
                .as_mapping()
                .and_then(|m| m.get_node(key))
                .unwrap_or_else(|| panic!("the manifest has no {}", path.join(".")));
        }
        node
    }

    fn strings(node: &marked_yaml::Node) -> BTreeSet<String> {
        node.as_sequence()
            .expect("a list")
            .iter()
            .filter_map(|n| n.as_scalar().map(|s| s.as_str().to_string()))
            .collect()
    }

    /// Every `"family.method"` string literal in the client's source.
    fn called_methods() -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        for source in [CLIENT, GATE, PEOPLE] {
            for piece in source.split('"').skip(1).step_by(2) {
                // `family.method` or `family.sub.method` (`usergroups.users.list`).
                let Some((family, method)) = piece.split_once('.') else {
                    continue;
                };
                if [
                    "chat",
                    "users",
                    "views",
                    "auth",
                    "conversations",
                    "usergroups",
                ]
                .contains(&family)
                    && method.split('.').count() <= 2
                    && method.split('.').all(|part| {
                        !part.is_empty() && part.chars().all(|c| c.is_ascii_alphabetic())
                    })
                {
                    found.insert(piece.to_string());
                }
            }
        }
        found
    }

    #[test]
    fn the_manifest_asks_for_exactly_the_scopes_the_code_uses() {
        let root = marked_yaml::parse_yaml(0, MANIFEST).expect("the manifest parses");
        let listed: BTreeSet<&str> = METHODS.iter().map(|(m, _)| *m).collect();
        for method in called_methods() {
            assert!(
                listed.contains(method.as_str()),
                "the client calls {method}, which scopes::METHODS does not list (with its scopes)"
            );
        }
        let needed: BTreeSet<String> = METHODS
            .iter()
            .flat_map(|(_, scopes)| scopes.iter())
            .chain(INBOUND)
            .map(|s| s.to_string())
            .collect();
        let asked = strings(node(&root, &["oauth_config", "scopes", "bot"]));
        assert_eq!(asked, needed, "manifest scopes vs what the code uses");
    }

    #[test]
    fn the_manifest_names_the_routes_the_command_and_the_events() {
        let root = marked_yaml::parse_yaml(0, MANIFEST).expect("the manifest parses");
        let commands = node(&root, &["features", "slash_commands"])
            .as_sequence()
            .expect("a list");
        assert_eq!(commands.len(), 1);
        let jit = &commands[0];
        assert_eq!(
            node(jit, &["command"]).as_scalar().unwrap().as_str(),
            "/jit"
        );
        let url = |path: &[&str]| node(&root, path).as_scalar().unwrap().as_str().to_string();
        assert!(
            node(jit, &["url"])
                .as_scalar()
                .unwrap()
                .as_str()
                .ends_with("/slack/commands")
        );
        assert!(
            url(&["settings", "interactivity", "request_url"]).ends_with("/slack/interactions")
        );
        assert!(
            url(&["settings", "event_subscriptions", "request_url"]).ends_with("/slack/events")
        );
        let events = strings(node(
            &root,
            &["settings", "event_subscriptions", "bot_events"],
        ));
        assert_eq!(events, EVENTS.iter().map(|e| e.to_string()).collect());
        assert_eq!(
            url(&["features", "app_home", "home_tab_enabled"]),
            "true",
            "the Home tab is published, so the manifest must enable it"
        );
    }
}
