//! Templates: one policy entry that stands for many resources. A resource whose name holds
//! `{parameters}` and that has `for:` is expanded, before anything else is checked, into one
//! entry per combination of the parameters' values, with `{parameter}` and each `vars` value
//! substituted in every string of the entry. Expanded entries keep the template's place in the
//! file, so every later error still names the template's line.
//!
//! ```yaml
//! aws-{account}-{level}:
//!   for: { account: [prod, staging], level: [read, admin] }
//!   vars: { account_id: { prod: "111111111111", staging: "222222222222" } }
//!   grant: { assume_role: "arn:aws:iam::{account_id}:role/jit-{level}" }
//! ```

use std::collections::BTreeMap;

use marked_yaml::Node;
use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};

use super::Diagnostic;

/// The most resources one template may stand for: a typo in a list should not make a policy of
/// millions.
const MAX_EXPANSION: usize = 10_000;

/// `{name}` placeholders in `text`, in order.
fn placeholders(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else { break };
        let name = &after[..close];
        if !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            out.push(name);
        }
        rest = &after[close + 1..];
    }
    out
}

/// `text` with every `{name}` of `values` replaced; other braces are left as they are (an IAM
/// policy's `${aws:username}`, say).
fn substitute(text: &str, values: &BTreeMap<String, String>) -> String {
    let mut out = text.to_string();
    for (name, value) in values {
        out = out.replace(&format!("{{{name}}}"), value);
    }
    out
}

/// Every scalar of `node` (values, not keys) with `values` substituted.
fn substitute_node(node: &Node, values: &BTreeMap<String, String>) -> Node {
    match node {
        Node::Scalar(s) => {
            let mut new = MarkedScalarNode::new(*s.span(), substitute(s.as_str(), values));
            new.set_coerce(s.may_coerce());
            Node::Scalar(new)
        }
        Node::Mapping(m) => {
            let mut new = MarkedMappingNode::new_empty(*m.span());
            for (k, v) in m.iter() {
                new.insert(k.clone(), substitute_node(v, values));
            }
            Node::Mapping(new)
        }
        Node::Sequence(seq) => {
            let mut new = marked_yaml::types::MarkedSequenceNode::new_empty(*seq.span());
            for v in seq.iter() {
                new.push(substitute_node(v, values));
            }
            Node::Sequence(new)
        }
    }
}

fn line_of(node: &MarkedScalarNode) -> (usize, usize) {
    node.span()
        .start()
        .map(|m| (m.line(), m.column()))
        .unwrap_or((1, 1))
}

/// Expands the templates among `root`'s resources in place; what is wrong with them.
/// Expands every template among the resources in place; `families` gets each expanded name's
/// template (for grouping them in `/jit resources`).
pub(super) fn expand(
    root: &mut Node,
    file: &str,
    families: &mut BTreeMap<String, String>,
) -> Vec<Diagnostic> {
    let mut errors = Vec::new();
    let Some(top) = root.as_mapping_mut() else {
        return errors;
    };
    let Some(resources) = top.get_mut("resources").and_then(Node::as_mapping_mut) else {
        return errors;
    };
    let diag = |at: &MarkedScalarNode, path: String, message: String| {
        let (line, column) = line_of(at);
        Diagnostic {
            file: file.to_string(),
            line,
            column,
            path,
            message,
        }
    };
    let mut expanded = MarkedMappingNode::new_empty(*resources.span());
    // Where each name came from, for collisions.
    let mut origin: BTreeMap<String, MarkedScalarNode> = BTreeMap::new();
    let mut add = |name: MarkedScalarNode,
                   entry: Node,
                   errors: &mut Vec<Diagnostic>,
                   expanded: &mut MarkedMappingNode| {
        if let Some(first) = origin.get(name.as_str()) {
            let (line, _) = line_of(first);
            errors.push(diag(
                &name,
                format!("resources.{}", name.as_str()),
                format!(
                    "the resource `{}` is also defined at line {line}; each name must be defined once",
                    name.as_str()
                ),
            ));
            return;
        }
        origin.insert(name.as_str().to_string(), name.clone());
        expanded.insert(name, entry);
    };
    let entries: Vec<(MarkedScalarNode, Node)> = resources
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (key, value) in entries {
        let params_in_name = placeholders(key.as_str());
        let template = value.as_mapping().and_then(|m| m.get_node("for"));
        let path = format!("resources.{}", key.as_str());
        let Some(for_node) = template else {
            if !params_in_name.is_empty() {
                errors.push(diag(
                    &key,
                    path,
                    "a resource name with `{…}` is a template: give its values with `for:`".into(),
                ));
                continue;
            }
            add(key, value, &mut errors, &mut expanded);
            continue;
        };
        // The parameters and their values, in the order written.
        let mut params: Vec<(String, Vec<String>)> = Vec::new();
        let Some(for_map) = for_node.as_mapping() else {
            errors.push(diag(
                &key,
                format!("{path}.for"),
                "`for` maps each parameter to a list of values".into(),
            ));
            continue;
        };
        let mut bad = false;
        for (param, values) in for_map.iter() {
            let list: Option<Vec<String>> = values
                .as_sequence()
                .map(|seq| {
                    seq.iter()
                        .map(|v| v.as_scalar().map(|s| s.as_str().to_string()))
                        .collect()
                })
                .unwrap_or(None);
            match list {
                Some(list) if !list.is_empty() => params.push((param.as_str().to_string(), list)),
                _ => {
                    errors.push(diag(
                        param,
                        format!("{path}.for.{}", param.as_str()),
                        "a parameter's values are a non-empty list of words".into(),
                    ));
                    bad = true;
                }
            }
        }
        for name in &params_in_name {
            if !params.iter().any(|(p, _)| p == name) {
                errors.push(diag(
                    &key,
                    path.clone(),
                    format!("`{{{name}}}` in the name has no values in `for`"),
                ));
                bad = true;
            }
        }
        for (param, _) in &params {
            if !params_in_name.contains(&param.as_str()) {
                errors.push(diag(
                    &key,
                    format!("{path}.for.{param}"),
                    format!(
                        "`{param}` is not in the name: every combination would have the same name (add `{{{param}}}` to it)"
                    ),
                ));
                bad = true;
            }
        }
        // vars: name → (a parameter's value → text).
        let mut vars: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        if let Some(vars_node) = value.as_mapping().and_then(|m| m.get_node("vars")) {
            match vars_node.as_mapping() {
                Some(map) => {
                    for (var, by_value) in map.iter() {
                        let table: Option<BTreeMap<String, String>> =
                            by_value.as_mapping().map(|m| {
                                m.iter()
                                    .filter_map(|(k, v)| {
                                        v.as_scalar().map(|s| {
                                            (k.as_str().to_string(), s.as_str().to_string())
                                        })
                                    })
                                    .collect()
                            });
                        match table {
                            Some(table) => {
                                vars.insert(var.as_str().to_string(), table);
                            }
                            None => {
                                errors.push(diag(
                                    var,
                                    format!("{path}.vars.{}", var.as_str()),
                                    "a var maps parameter values to text".into(),
                                ));
                                bad = true;
                            }
                        }
                    }
                }
                None => {
                    errors.push(diag(
                        &key,
                        format!("{path}.vars"),
                        "`vars` maps names to tables of values".into(),
                    ));
                    bad = true;
                }
            }
        }
        let total = params
            .iter()
            .try_fold(1_usize, |n, (_, v)| n.checked_mul(v.len()));
        if total.is_none_or(|n| n > MAX_EXPANSION) {
            errors.push(diag(
                &key,
                format!("{path}.for"),
                format!("the template stands for more than {MAX_EXPANSION} resources"),
            ));
            bad = true;
        }
        if bad {
            continue;
        }
        let mut body = value.clone();
        if let Some(m) = body.as_mapping_mut() {
            m.remove("for");
            m.remove("vars");
        }
        // Every combination, the first parameter varying slowest.
        let mut combos: Vec<BTreeMap<String, String>> = vec![BTreeMap::new()];
        for (param, values) in &params {
            combos = combos
                .into_iter()
                .flat_map(|c| {
                    values.iter().map(move |v| {
                        let mut c = c.clone();
                        c.insert(param.clone(), v.clone());
                        c
                    })
                })
                .collect();
        }
        for mut combo in combos {
            for (var, table) in &vars {
                let found = params
                    .iter()
                    .find_map(|(p, _)| combo.get(p).and_then(|v| table.get(v)));
                match found {
                    Some(text) => {
                        combo.insert(var.clone(), text.clone());
                    }
                    None => {
                        errors.push(diag(
                            &key,
                            format!("{path}.vars.{var}"),
                            format!(
                                "`{var}` has no value for {}",
                                params
                                    .iter()
                                    .filter_map(|(p, _)| combo.get(p).map(|v| format!("{p}={v}")))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        ));
                        bad = true;
                    }
                }
            }
            if bad {
                break;
            }
            let mut name = MarkedScalarNode::new(*key.span(), substitute(key.as_str(), &combo));
            name.set_coerce(false);
            families.insert(name.as_str().to_string(), key.as_str().to_string());
            add(
                name,
                substitute_node(&body, &combo),
                &mut errors,
                &mut expanded,
            );
        }
    }
    *resources = expanded;
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_words_in_braces_and_other_braces_stay() {
        assert_eq!(
            placeholders("aws-{account}-{level}"),
            vec!["account", "level"]
        );
        assert_eq!(placeholders("${aws:username} {x"), Vec::<&str>::new());
        let values = BTreeMap::from([("level".to_string(), "read".to_string())]);
        assert_eq!(
            substitute("role/{level}/${aws:username}", &values),
            "role/read/${aws:username}"
        );
    }
}
