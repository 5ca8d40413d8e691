//! Bundles: `bundles: { incident: [prod-db, aws-prod-read] }` names resources asked for together,
//! in one request with one card and one decision, and one grant per resource.

use std::collections::{BTreeMap, BTreeSet};

use marked_yaml::Spanned;

use super::check::{Checker, Key, Map};
use super::{Policy, Resource};

/// Most resources in one request.
pub const MAX_BUNDLE: usize = 10;

impl Policy {
    /// What a request names: a resource, a bundle of the policy, or resources joined by commas.
    /// The bundle's name (if it is one) and its resources, or why not.
    pub fn resolve(&self, asked: &str) -> Result<(Option<String>, Vec<&Resource>), String> {
        if let Some(names) = self.bundles.get(asked) {
            let resources = names
                .iter()
                .filter_map(|n| self.resources.get(n))
                .collect::<Vec<_>>();
            if resources.len() != names.len() {
                return Err(format!(
                    "The bundle `{asked}` names a resource that is no longer in the policy. Tell the jitbot admins."
                ));
            }
            return Ok((Some(asked.to_string()), resources));
        }
        let names: Vec<&str> = asked
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .collect();
        if names.len() > MAX_BUNDLE {
            return Err(format!(
                "That is {} resources; one request takes at most {MAX_BUNDLE}.",
                names.len()
            ));
        }
        let mut seen = BTreeSet::new();
        let mut resources = Vec::new();
        for name in &names {
            let resource = self
                .resources
                .get(*name)
                .ok_or_else(|| match self.suggest(name) {
                    Some(s) => format!(
                        "Unknown resource `{name}`. Did you mean `{s}`? See `/jit resources`."
                    ),
                    None => format!(
                        "Unknown resource `{name}`. See `/jit resources` for what you can ask for."
                    ),
                })?;
            if !seen.insert(resource.name.as_str()) {
                return Err(format!("`{name}` is named twice."));
            }
            resources.push(resource);
        }
        if resources.is_empty() {
            return Err("Name a resource. See `/jit resources` for what you can ask for.".into());
        }
        Ok((None, resources))
    }
}

impl Checker<'_> {
    pub(super) fn bundles(
        &mut self,
        raw: Map<Spanned<Vec<Spanned<String>>>>,
        resources: &BTreeMap<String, Resource>,
    ) -> BTreeMap<String, Vec<String>> {
        let mut bundles = BTreeMap::new();
        for (name, list) in raw {
            let path = format!("bundles.{name}");
            if resources.contains_key(&name) {
                self.error(
                    Key(&["bundles", &name]),
                    &path,
                    format!("`{name}` is also a resource; a bundle needs a name of its own"),
                );
                continue;
            }
            if name.contains(',') {
                self.error(
                    Key(&["bundles", &name]),
                    &path,
                    "a bundle name has no commas",
                );
                continue;
            }
            if list.len() < 2 || list.len() > MAX_BUNDLE {
                self.error(
                    &list,
                    &path,
                    format!("a bundle names 2 to {MAX_BUNDLE} resources"),
                );
                continue;
            }
            let mut names = Vec::new();
            let mut ok = true;
            for (i, entry) in list.iter().enumerate() {
                if !resources.contains_key(entry.as_str()) {
                    let hint = Policy::closest(entry, resources.keys().map(String::as_str))
                        .map(|s| format!("; did you mean `{s}`?"))
                        .unwrap_or_default();
                    self.error(
                        entry,
                        format!("{path}[{i}]"),
                        format!("`{}` is not a resource{hint}", entry.as_str()),
                    );
                    ok = false;
                } else if names.iter().any(|n| n == entry.as_str()) {
                    self.error(
                        entry,
                        format!("{path}[{i}]"),
                        format!("`{}` is named twice", entry.as_str()),
                    );
                    ok = false;
                } else {
                    names.push(entry.to_string());
                }
            }
            if !ok {
                continue;
            }
            let channels: BTreeSet<&str> = names
                .iter()
                .filter_map(|n| resources.get(n))
                .map(|r| r.channel.as_str())
                .collect();
            if channels.len() > 1 {
                self.warn(
                    &list,
                    &path,
                    format!(
                        "its resources' cards go to different channels; the bundle's one card goes to {}, the channel of `{}`",
                        resources[&names[0]].channel, names[0]
                    ),
                );
            }
            bundles.insert(name.to_string(), names);
        }
        bundles
    }
}
