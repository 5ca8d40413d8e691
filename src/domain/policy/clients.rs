//! Machines that use the HTTP API (`clients:`): a name, the SHA-256 of its bearer token (the
//! token itself is never written down anywhere jitbot reads), and how many calls a minute it may
//! make. A client is a requester like a person: `requesters` and `auto_approve` rules name it,
//! and `identities` may say who it is at a provider.

use std::collections::{BTreeMap, BTreeSet};

use marked_yaml::Spanned;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::check::{Checker, Key, Map};
use super::{Policy, looks_like_slack_id};

/// One machine allowed to use the API.
#[derive(Clone, Debug)]
pub struct Client {
    pub name: String,
    pub token_sha256: [u8; 32],
    /// Calls a minute before the API answers 429.
    pub requests_per_minute: u32,
}

/// Default `clients.*.requests_per_minute`: a pipeline asks a few times per deploy.
pub const DEFAULT_CLIENT_RATE: u32 = 60;
/// Largest `clients.*.requests_per_minute` accepted.
const MAX_CLIENT_RATE: u32 = 6_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClient {
    pub(super) token_sha256: Spanned<String>,
    pub(super) requests_per_minute: Option<Spanned<u32>>,
}

/// The SHA-256 of a token, as `token_sha256` holds it.
pub fn token_sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Policy {
    /// The client whose token this is. Every client's hash is compared, in constant time, so the
    /// answer takes as long whichever client (or none) the token belongs to.
    pub fn client_by_token(&self, token: &str) -> Option<&Client> {
        let digest = token_sha256(token);
        let mut found = None;
        for client in self.clients.values() {
            if bool::from(client.token_sha256.ct_eq(&digest)) {
                found = Some(client);
            }
        }
        found
    }

    /// Is `name` an API client of this policy?
    pub fn is_client(&self, name: &str) -> bool {
        self.clients.contains_key(name)
    }
}

impl Checker<'_> {
    pub(super) fn clients(
        &mut self,
        raw: Map<RawClient>,
        groups: &BTreeMap<String, Vec<String>>,
    ) -> BTreeMap<String, Client> {
        let mut clients = BTreeMap::new();
        let mut hashes: BTreeMap<[u8; 32], String> = BTreeMap::new();
        for (name, client) in raw {
            let path = format!("clients.{name}");
            if looks_like_slack_id(&name) || !valid_name(&name) {
                self.error(
                    Key(&["clients", &name]),
                    &path,
                    "a client name is lowercase letters, digits, `-` and `_` (such as `ci-deploy`), and must not look like a Slack ID",
                );
                continue;
            }
            if groups.contains_key(&name) {
                self.error(
                    Key(&["clients", &name]),
                    &path,
                    format!("`{name}` is also a group; a client needs a name of its own"),
                );
                continue;
            }
            let Some(token_sha256) = parse_sha256(&client.token_sha256) else {
                self.error(
                    &client.token_sha256,
                    format!("{path}.token_sha256"),
                    "not a SHA-256 in hex (64 characters): write the hash of the token, never the token (`printf %s \"$TOKEN\" | sha256sum`)",
                );
                continue;
            };
            if let Some(other) = hashes.get(&token_sha256) {
                self.error(
                    &client.token_sha256,
                    format!("{path}.token_sha256"),
                    format!(
                        "the same token as client `{other}`; each client needs a token of its own"
                    ),
                );
                continue;
            }
            let requests_per_minute = match &client.requests_per_minute {
                None => DEFAULT_CLIENT_RATE,
                Some(rate) if **rate == 0 || **rate > MAX_CLIENT_RATE => {
                    self.error(
                        rate,
                        format!("{path}.requests_per_minute"),
                        format!("must be between 1 and {MAX_CLIENT_RATE}"),
                    );
                    continue;
                }
                Some(rate) => **rate,
            };
            hashes.insert(token_sha256, name.to_string());
            clients.insert(
                name.to_string(),
                Client {
                    name: name.to_string(),
                    token_sha256,
                    requests_per_minute,
                },
            );
        }
        self.client_names = clients.keys().cloned().collect::<BTreeSet<_>>();
        clients
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn parse_sha256(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(text.to_ascii_lowercase(), &mut out).ok()?;
    Some(out)
}
