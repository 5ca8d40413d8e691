//! The OpenAPI document of `/api/v1`, served at `/api/v1/openapi.json`. The router is built from
//! the same path constants, and a test calls every operation the document lists (and checks the
//! answers against its schemas), so the two cannot drift apart unnoticed.

use serde_json::{Value, json};

pub const REQUESTS: &str = "/api/v1/requests";
pub const REQUEST: &str = "/api/v1/requests/{id}";
pub const DOCUMENT: &str = "/api/v1/openapi.json";

/// Every operation the router serves, as (method, path).
pub const ROUTES: &[(&str, &str)] = &[
    ("post", REQUESTS),
    ("get", REQUEST),
    ("delete", REQUEST),
    ("get", DOCUMENT),
];

fn error(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    })
}

fn request(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Request"}}}
    })
}

fn time(description: &str) -> Value {
    json!({"type": ["string", "null"], "format": "date-time", "description": description})
}

pub fn document() -> Value {
    let id = json!({
        "name": "id", "in": "path", "required": true,
        "description": "The request id (`42`).",
        "schema": {"type": "string"}
    });
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "jitbot API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Just-in-time access for machines, under the same policy as people. Authenticate with the bearer token of a client declared in the policy's `clients:`. Errors are JSON `{code, message}`; `code` is stable."
        },
        "security": [{"bearer": []}],
        "paths": {
            REQUESTS: {
                "post": {
                    "operationId": "createRequest",
                    "summary": "Ask for access to a resource",
                    "description": "Held to the policy like `/jit request`. An `auto_approve` rule naming this client approves at once (201); anything else posts the approval card and waits for people (202).",
                    "requestBody": {
                        "required": true,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Ask"}}}
                    },
                    "responses": {
                        "201": request("Approved at once by an `auto_approve` rule. `state` is `approved` while the grant is under way, `active` once it took; with `wait`, the answer comes once the grant is done or has failed (or `wait` passed)."),
                        "202": request("Waiting for approval in Slack; follow it with GET."),
                        "400": error("The body is not a valid ask (`invalid_body`, `invalid_duration`)."),
                        "401": error("No bearer token, or not one of a client (`unauthorized`)."),
                        "403": error("The policy does not let this client ask for it (`not_allowed`, `no_identity`)."),
                        "409": error("This client already has an open request for it (`already_open`, with its `id`), or too many open requests (`too_many_open`)."),
                        "413": error("The body is too large (`body_too_large`)."),
                        "422": error("Refused by the policy: `unknown_resource`, `duration_too_short`, `duration_too_long`, `reason_required`, `reason_pattern`, `reason_too_long`."),
                        "429": error("Over the client's `requests_per_minute` (`rate_limited`); `Retry-After` says when to try again."),
                        "503": error("jitbot's database is slow or unreachable (`unavailable`).")
                    }
                }
            },
            REQUEST: {
                "get": {
                    "operationId": "getRequest",
                    "summary": "A request of this client",
                    "parameters": [id.clone(), {
                        "name": "wait", "in": "query", "required": false,
                        "description": "Long-poll: answer once the state changes, or after this many seconds (at most 60).",
                        "schema": {"type": "integer", "minimum": 0}
                    }],
                    "responses": {
                        "200": request("The request."),
                        "400": error("`wait` is not a whole number (`invalid_query`)."),
                        "401": error("No bearer token, or not one of a client (`unauthorized`)."),
                        "404": error("No such request of this client (`not_found`)."),
                        "429": error("Over the client's rate (`rate_limited`)."),
                        "503": error("jitbot's database is slow or unreachable (`unavailable`).")
                    }
                },
                "delete": {
                    "operationId": "endRequest",
                    "summary": "End a request early",
                    "description": "A pending request is cancelled; an approved or active one is revoked. The answer shows the request as it is now (`revoking` until the provider confirms).",
                    "parameters": [id],
                    "responses": {
                        "200": request("Ending: the request as it is now."),
                        "401": error("No bearer token, or not one of a client (`unauthorized`)."),
                        "404": error("No such request of this client (`not_found`)."),
                        "409": error("The request has already ended (`not_open`)."),
                        "429": error("Over the client's rate (`rate_limited`)."),
                        "503": error("jitbot's database is slow or unreachable (`unavailable`).")
                    }
                }
            },
            DOCUMENT: {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "security": [],
                    "responses": {
                        "200": {"description": "The OpenAPI document.", "content": {"application/json": {"schema": {"type": "object"}}}}
                    }
                }
            }
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "A client's token; the policy holds its SHA-256 in `clients.<name>.token_sha256`."}
            },
            "schemas": {
                "Ask": {
                    "type": "object",
                    "additionalProperties": false,
                    "properties": {
                        "resource": {"type": "string", "description": "The resource, or a bundle of the policy, as in `/jit request`."},
                        "resources": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 10, "description": "Instead of `resource`: several resources, in one request with one decision and one grant each."},
                        "duration": {"type": "string", "description": "Such as `30m` or `1h30m`; default: the resource's `default_duration`."},
                        "reason": {"type": "string", "description": "Shown on the card; some resources require one."},
                        "wait": {"type": "integer", "minimum": 0, "description": "For an auto-approved request: wait up to this many seconds (at most 60) for every grant to be done."}
                    }
                },
                "Request": {
                    "type": "object",
                    "required": ["id", "resource", "bundle", "resources", "active", "state", "final", "requester", "duration", "duration_secs", "reason", "auto_approved", "approvals_needed", "approved_by", "decided_by", "note", "created_at", "decided_at", "granted_at", "expires_at", "ended_at", "error"],
                    "properties": {
                        "id": {"type": "integer"},
                        "resource": {"type": "string", "description": "The first (or only) resource."},
                        "bundle": {"type": ["string", "null"], "description": "The policy's bundle name, when one was asked for."},
                        "resources": {"type": "array", "items": {"$ref": "#/components/schemas/Resource"}, "description": "Every resource asked for, with how its grant stands (one, unless several were asked for)."},
                        "active": {"type": "boolean", "description": "Access to every resource is in place."},
                        "state": {"$ref": "#/components/schemas/State"},
                        "final": {"type": "boolean", "description": "Nothing more will happen to this request."},
                        "requester": {"type": "string", "description": "The client's name."},
                        "duration": {"type": "string"},
                        "duration_secs": {"type": "integer"},
                        "reason": {"type": "string"},
                        "auto_approved": {"type": "boolean"},
                        "approvals_needed": {"type": "integer"},
                        "approved_by": {"type": "array", "items": {"type": "string"}, "description": "Slack user IDs whose approvals counted."},
                        "decided_by": {"type": ["string", "null"], "description": "Who approved, denied, cancelled or revoked it."},
                        "note": {"type": ["string", "null"]},
                        "created_at": time("When it was asked for."),
                        "decided_at": time("When it was decided."),
                        "granted_at": time("When the provider confirmed the grant."),
                        "expires_at": time("When access ends (counted from the grant)."),
                        "ended_at": time("When access was taken back."),
                        "error": {"type": ["string", "null"], "description": "Why the grant failed, or is failing."}
                    }
                },
                "State": {"type": "string", "enum": ["pending", "approved", "active", "revoking", "revoke_failed", "expired", "revoked", "denied", "cancelled", "timed_out", "grant_failed"], "description": "`approved`: being granted; `active`: access is in place until `expires_at`."},
                "Resource": {
                    "type": "object",
                    "required": ["id", "resource", "state", "expires_at", "error"],
                    "properties": {
                        "id": {"type": ["integer", "null"], "description": "The request that holds this resource's grant (the request itself for the first); null if it was left out at the approval because another request of the same client was open for it."},
                        "resource": {"type": "string"},
                        "state": {"type": ["string", "null"], "enum": ["pending", "approved", "active", "revoking", "revoke_failed", "expired", "revoked", "denied", "cancelled", "timed_out", "grant_failed", null], "description": "As the request's `state`; null if it was left out."},
                        "expires_at": time("When access to it ends."),
                        "error": {"type": ["string", "null"], "description": "Why its grant failed, or is failing."}
                    }
                },
                "Error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": {"type": "string", "description": "Stable across versions."},
                        "message": {"type": "string"},
                        "id": {"type": "integer", "description": "The request concerned, where there is one (`already_open`, `not_open`)."}
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_lists_exactly_the_routes() {
        let doc = document();
        let mut listed: Vec<(String, String)> = doc["paths"]
            .as_object()
            .expect("paths")
            .iter()
            .flat_map(|(path, ops)| {
                ops.as_object()
                    .expect("operations")
                    .keys()
                    .map(move |m| (m.clone(), path.clone()))
            })
            .collect();
        listed.sort();
        let mut routes: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        routes.sort();
        assert_eq!(listed, routes);
    }
}
