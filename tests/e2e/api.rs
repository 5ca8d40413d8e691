//! The machines' API: a client's token, the same policy as people, `jitbot request` as a
//! pipeline runs it, and the OpenAPI document held to the routes.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::*;

const TOKEN: &str = "jit-test-deployer-7f3a9c1e5b2d4f6a8c0e";
const OTHER_TOKEN: &str = "jit-test-other-bot-1b3d5f7a9c2e4a6c8e0b";

fn sha(token: &str) -> String {
    hex::encode(jitbot::domain::policy::token_sha256(token))
}

/// The usual webhook policy, with two clients: `deployer` (auto-approved on `ci-deploy` up to
/// 30m) and `other-bot` (3 calls a minute).
fn with_clients(policy: String) -> String {
    let policy = policy.replacen(
        &format!("      - requesters: [{ALICE}]\n        max_duration: 30m"),
        &format!("      - requesters: [{ALICE}, deployer]\n        max_duration: 30m"),
        1,
    );
    format!(
        "{policy}clients:\n  deployer: {{ token_sha256: {} }}\n  other-bot: {{ token_sha256: {}, requests_per_minute: 3 }}\n",
        sha(TOKEN),
        sha(OTHER_TOKEN)
    )
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

async fn call(
    app_url: &str,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Answer {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(90))
        .build()
        .expect("client");
    let mut req = http.request(method, format!("{app_url}{path}"));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let response = req.send().await.expect("the API answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer {
        status,
        headers,
        body,
    }
}

/// Runs the real `jitbot request` against `url`; its exit code, stdout and stderr.
async fn jitbot_request(url: &str, token: &str, args: &[&str]) -> (i32, String, String) {
    let url = url.to_string();
    let token = token.to_string();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_jitbot"))
            .arg("request")
            .args(&args)
            .env("JIT_API_URL", url)
            .env("JIT_API_TOKEN", token)
            .env("NO_COLOR", "1")
            .output()
            .expect("jitbot request runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .expect("joined")
}

async fn a_client_within_policy_gets_access_and_the_cli_exits_0(backend: Backend) {
    let ((app, hook), _) = spawn_hook_app_with(backend, with_clients).await;
    let url = app.running.url();

    let (code, stdout, stderr) =
        jitbot_request(&url, TOKEN, &["ci-deploy", "10m", "deploy", "1234"]).await;
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    let request: Value = serde_json::from_str(stdout.trim()).expect("the request as JSON");
    assert_eq!(request["state"], "active", "{request}");
    assert_eq!(request["requester"], "deployer");
    assert_eq!(request["auto_approved"], true);
    assert!(request["expires_at"].is_string(), "{request}");
    assert!(stderr.contains("auto-approved"), "{stderr}");

    // Access is at the provider, granted to the client, before the command returned.
    let id = request["id"].as_i64().expect("id");
    let grants = hook.events_of("grant");
    let grant = grants
        .iter()
        .find(|e| e.body["request_id"] == id)
        .expect("the provider got the grant");
    assert_eq!(grant.body["requester"], "deployer");
    assert_eq!(grant.body["auto_approved"], true);
    assert_eq!(grant.body["reason"], "deploy 1234");

    // The card names the client, and nobody is sent a DM for it.
    let card = app
        .wait_calls("the card", |c| {
            c.iter()
                .any(|c| c.method == "chat.postMessage" && c.str("channel") == "C0REVIEW")
        })
        .await
        .into_iter()
        .find(|c| c.method == "chat.postMessage" && c.str("channel") == "C0REVIEW")
        .expect("card");
    assert!(
        card.body.to_string().contains("`deployer` (API client)"),
        "{}",
        card.body
    );
    assert!(
        !app.slack
            .calls()
            .iter()
            .any(|c| c.str("channel") == "deployer" || c.str("user") == "deployer"),
        "a Slack call was addressed to the client"
    );

    // Past the auto-approval's 30m the same client is refused, and the CLI says why.
    let (code, _, stderr) = jitbot_request(&url, TOKEN, &["billing-admin", "5h"]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("longer than the maximum"), "{stderr}");
    app.finish().await;
}

#[tokio::test]
async fn a_client_within_policy_gets_access_and_the_cli_exits_0_on_sqlite() {
    a_client_within_policy_gets_access_and_the_cli_exits_0(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_client_within_policy_gets_access_and_the_cli_exits_0_on_postgres() {
    a_client_within_policy_gets_access_and_the_cli_exits_0(Backend::Postgres).await;
}

async fn a_client_outside_auto_approval_waits_for_a_click(backend: Backend) {
    let ((app, hook), _) = spawn_hook_app_with(backend, with_clients).await;
    let url = app.running.url();

    let created = call(
        &url,
        Method::POST,
        "/api/v1/requests",
        Some(TOKEN),
        Some(json!({"resource": "billing-admin", "duration": "20m", "reason": "rotate keys", "wait": 5})),
    )
    .await;
    assert_eq!(created.status, 202, "{}", created.body);
    assert_eq!(created.body["state"], "pending");
    let id = created.body["id"].as_i64().expect("id") as i32;
    let card = app
        .wait_calls("the card", |c| {
            c.iter()
                .any(|c| c.method == "chat.postMessage" && c.str("channel") == "C0REVIEW")
        })
        .await
        .into_iter()
        .find(|c| c.method == "chat.postMessage" && c.str("channel") == "C0REVIEW")
        .expect("card");
    assert!(has_buttons(&card));
    assert!(card.body.to_string().contains("`deployer` (API client)"));

    // A long poll, answered when Bob approves.
    let poll_url = url.clone();
    let poll = tokio::spawn(async move {
        call(
            &poll_url,
            Method::GET,
            &format!("/api/v1/requests/{id}?wait=30"),
            Some(TOKEN),
            None,
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !poll.is_finished(),
        "the long poll answered before anything changed"
    );
    app.click(BOB, APPROVE, id).await;
    let changed = tokio::time::timeout(WAIT, poll)
        .await
        .expect("the long poll answers once the state changes")
        .expect("joined");
    assert_eq!(changed.status, 200);
    assert_ne!(changed.body["state"], "pending", "{}", changed.body);
    app.wait_state(id, "active").await;
    let active = call(
        &url,
        Method::GET,
        &format!("/api/v1/requests/{id}"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(active.body["state"], "active");
    assert_eq!(active.body["approved_by"], json!([BOB]));
    assert!(
        hook.events_of("grant")
            .iter()
            .any(|e| e.body["request_id"] == id)
    );

    // The client ends it early.
    let ended = call(
        &url,
        Method::DELETE,
        &format!("/api/v1/requests/{id}"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(ended.status, 200, "{}", ended.body);
    app.wait_state(id, "revoked").await;
    assert!(
        eventually(WAIT, || async {
            hook.events_of("revoke")
                .iter()
                .any(|e| e.body["request_id"] == id)
        })
        .await,
        "the provider got the revoke"
    );
    let again = call(
        &url,
        Method::DELETE,
        &format!("/api/v1/requests/{id}"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(again.status, 409, "{}", again.body);
    assert_eq!(again.body["code"], "not_open");
    app.finish().await;
}

#[tokio::test]
async fn a_client_outside_auto_approval_waits_for_a_click_on_sqlite() {
    a_client_outside_auto_approval_waits_for_a_click(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_client_outside_auto_approval_waits_for_a_click_on_postgres() {
    a_client_outside_auto_approval_waits_for_a_click(Backend::Postgres).await;
}

async fn a_wrong_token_is_401_with_nothing_stored(backend: Backend) {
    let ((app, hook), _) = spawn_hook_app_with(backend, with_clients).await;
    let url = app.running.url();
    let ask = json!({"resource": "ci-deploy", "duration": "10m"});
    for token in [Some("not-a-client-token"), None, Some(&TOKEN[1..])] {
        let answer = call(
            &url,
            Method::POST,
            "/api/v1/requests",
            token,
            Some(ask.clone()),
        )
        .await;
        assert_eq!(answer.status, 401, "{}", answer.body);
        assert_eq!(answer.body["code"], "unauthorized");
        assert_eq!(
            answer
                .headers
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok()),
            Some("Bearer")
        );
    }
    let (code, _, stderr) = jitbot_request(&url, "wrong", &["ci-deploy", "10m"]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("unauthorized"), "{stderr}");

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        app.store
            .requests_of("deployer", 10)
            .await
            .expect("store")
            .is_empty()
    );
    assert!(hook.events().is_empty());
    assert!(app.slack.calls_to("chat.postMessage").is_empty());
    let refused: Vec<_> = app
        .store
        .audit_events(None)
        .await
        .expect("audit")
        .into_iter()
        .filter(|e| e.action == "api_unauthorized")
        .collect();
    assert_eq!(refused.len(), 4, "one audit event per refused call");
    let metrics = call(&url, Method::GET, "/metrics", None, None).await;
    let text = metrics.body.as_str().unwrap_or_default().to_string();
    assert!(text.contains("jitbot_api_unauthorized_total 4"), "{text}");

    // The right token works, and neither token is anywhere in the store or the metrics.
    let ok = call(
        &url,
        Method::POST,
        "/api/v1/requests",
        Some(TOKEN),
        Some(ask),
    )
    .await;
    assert_eq!(ok.status, 201, "{}", ok.body);
    let id = ok.body["id"].as_i64().expect("id") as i32;
    app.wait_state(id, "active").await;
    let dump = dump_store(&app).await;
    assert!(dump.contains("deployer"), "the dump reads the store");
    for secret in [TOKEN, "not-a-client-token", &TOKEN[1..]] {
        assert!(!dump.contains(secret), "a token is in the store");
    }
    let metrics = call(&url, Method::GET, "/metrics", None, None).await;
    let text = metrics.body.as_str().unwrap_or_default().to_string();
    assert!(
        text.contains("jitbot_api_calls_total{client=\"deployer\",status=\"201\"} 1"),
        "{text}"
    );
    assert!(!text.contains(TOKEN));
    app.finish().await;
}

/// Every table of the store as text: each row of each table on PostgreSQL, the database files
/// (with the WAL) on SQLite.
async fn dump_store(app: &TestApp) -> String {
    match &app.pg {
        Some(pg) => {
            let pool = sea_orm::sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(&pg.url)
                .await
                .expect("store database");
            let tables: Vec<(String,)> = sea_orm::sqlx::query_as(
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
            )
            .fetch_all(&pool)
            .await
            .expect("tables");
            let mut dump = String::new();
            for (table,) in tables {
                let rows: Vec<(String,)> = sea_orm::sqlx::query_as(sea_orm::sqlx::AssertSqlSafe(
                    format!("SELECT t::text FROM \"{table}\" t"),
                ))
                .fetch_all(&pool)
                .await
                .expect("rows");
                for (row,) in rows {
                    dump.push_str(&row);
                    dump.push('\n');
                }
            }
            dump
        }
        None => sqlite_files(app.dir.path()),
    }
}

/// The bytes of the SQLite store files in `dir` (`jitbot.db`, its WAL and shared memory).
fn sqlite_files(dir: &std::path::Path) -> String {
    let mut stored = Vec::new();
    for entry in std::fs::read_dir(dir).expect("dir") {
        let path = entry.expect("entry").path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("jitbot.db"))
        {
            stored.extend(std::fs::read(&path).expect("store file"));
        }
    }
    String::from_utf8_lossy(&stored).into_owned()
}

#[tokio::test]
async fn a_wrong_token_is_401_with_nothing_stored_on_sqlite() {
    a_wrong_token_is_401_with_nothing_stored(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_wrong_token_is_401_with_nothing_stored_on_postgres() {
    a_wrong_token_is_401_with_nothing_stored(Backend::Postgres).await;
}

#[tokio::test]
async fn refusals_have_stable_codes_and_clients_see_only_their_own_requests() {
    let ((app, _hook), _) = spawn_hook_app_with(Backend::Sqlite, with_clients).await;
    let url = app.running.url();
    let post = |token: &'static str, body: Value| {
        let url = url.clone();
        async move {
            call(
                &url,
                Method::POST,
                "/api/v1/requests",
                Some(token),
                Some(body),
            )
            .await
        }
    };
    for (body, status, code) in [
        (json!({"resource": "biling-admin"}), 422, "unknown_resource"),
        (
            json!({"resource": "restricted", "duration": "20m", "reason": "x"}),
            403,
            "not_allowed",
        ),
        (
            json!({"resource": "billing-admin", "duration": "9h"}),
            422,
            "duration_too_long",
        ),
        (
            json!({"resource": "billing-admin", "duration": "soon"}),
            400,
            "invalid_duration",
        ),
        (
            json!({"resource": "billing-admin", "colour": "red"}),
            400,
            "invalid_body",
        ),
        (json!({"duration": "1h"}), 400, "invalid_body"),
        (
            json!({"resources": ["billing-admin", "biling-admin"]}),
            422,
            "unknown_resource",
        ),
    ] {
        let answer = post(TOKEN, body.clone()).await;
        assert_eq!(answer.status, status, "{body}: {}", answer.body);
        assert_eq!(answer.body["code"], code, "{body}: {}", answer.body);
        assert!(
            answer.body["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let unknown = post(TOKEN, json!({"resource": "biling-admin"})).await;
    assert!(
        unknown.body["message"]
            .as_str()
            .unwrap_or("")
            .contains("Did you mean `billing-admin`")
    );

    let first = post(
        TOKEN,
        json!({"resource": "billing-admin", "duration": "20m"}),
    )
    .await;
    assert_eq!(first.status, 202);
    let id = first.body["id"].as_i64().expect("id");
    let twice = post(
        TOKEN,
        json!({"resource": "billing-admin", "duration": "20m"}),
    )
    .await;
    assert_eq!(twice.status, 409);
    assert_eq!(twice.body["code"], "already_open");
    assert_eq!(twice.body["id"], id);

    // Another client cannot see or end it.
    for method in [Method::GET, Method::DELETE] {
        let answer = call(
            &url,
            method,
            &format!("/api/v1/requests/{id}"),
            Some(OTHER_TOKEN),
            None,
        )
        .await;
        assert_eq!(answer.status, 404, "{}", answer.body);
        assert_eq!(answer.body["code"], "not_found");
    }
    assert_eq!(app.state(id as i32).await, "pending");

    // other-bot may make 3 calls a minute: two 404s above, one more, then 429.
    let third = call(
        &url,
        Method::GET,
        "/api/v1/requests/999",
        Some(OTHER_TOKEN),
        None,
    )
    .await;
    assert_eq!(third.status, 404);
    let over = call(
        &url,
        Method::GET,
        "/api/v1/requests/999",
        Some(OTHER_TOKEN),
        None,
    )
    .await;
    assert_eq!(over.status, 429, "{}", over.body);
    assert_eq!(over.body["code"], "rate_limited");
    let retry: u64 = over
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=20).contains(&retry), "{retry}");
    // deployer has its own allowance.
    let mine = call(
        &url,
        Method::GET,
        &format!("/api/v1/requests/{id}"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(mine.status, 200);
    app.finish().await;
}

/// A small JSON Schema check, enough for the document's schemas: `$ref`, `type` (one or a
/// list), `required`, `properties`, `additionalProperties: false`, `enum`, `items`.
fn conforms(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.trim_start_matches("#/components/schemas/");
        return conforms(doc, &doc["components"]["schemas"][name], value, at);
    }
    let type_ok = |t: &str| match t {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        _ => false,
    };
    match &schema["type"] {
        Value::String(t) if !type_ok(t) => return Err(format!("{at}: {value} is not {t}")),
        Value::Array(ts) if !ts.iter().filter_map(Value::as_str).any(type_ok) => {
            return Err(format!("{at}: {value} is none of {schema}"));
        }
        _ => {}
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        return Err(format!("{at}: {value} is not one of {allowed:?}"));
    }
    if let Some(object) = value.as_object() {
        for field in schema["required"].as_array().into_iter().flatten() {
            let field = field.as_str().unwrap_or_default();
            if !object.contains_key(field) {
                return Err(format!("{at}: `{field}` is missing"));
            }
        }
        let properties = schema["properties"].as_object();
        for (key, v) in object {
            match properties.and_then(|p| p.get(key)) {
                Some(s) => conforms(doc, s, v, &format!("{at}.{key}"))?,
                None if properties.is_some() => {
                    return Err(format!("{at}: `{key}` is not in the document"));
                }
                None => {}
            }
        }
    }
    if let (Some(items), Some(list)) = (schema.get("items"), value.as_array()) {
        for (i, v) in list.iter().enumerate() {
            conforms(doc, items, v, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

#[tokio::test]
async fn the_openapi_document_matches_the_routes() {
    let ((app, _hook), _) = spawn_hook_app_with(Backend::Sqlite, with_clients).await;
    let url = app.running.url();
    let doc = call(&url, Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(doc.status, 200);
    let doc = doc.body;
    assert_eq!(doc["openapi"], "3.1.0");

    // The document lists exactly the routes the server is built from.
    let mut listed = Vec::new();
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        for method in ops.as_object().expect("operations").keys() {
            listed.push((method.clone(), path.clone()));
        }
    }
    listed.sort();
    let mut routes: Vec<(String, String)> = jitbot::api::openapi::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    routes.sort();
    assert_eq!(listed, routes);

    // Walk the document: call every operation (the POST first, so there is a request to name)
    // and hold each answer to the responses and schemas it documents.
    let mut id = String::new();
    let bodies = HashMap::from([(
        "post",
        json!({"resource": "billing-admin", "duration": "20m", "reason": "walk"}),
    )]);
    let mut order = listed.clone();
    order.sort_by_key(|(m, _)| (m != "post", m == "delete"));
    for (method, path) in &order {
        let operation = &doc["paths"][path][method];
        let concrete = path.replace("{id}", &id);
        let verb = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let token = (operation["security"] != json!([])).then_some(TOKEN);
        let answer = call(
            &url,
            verb,
            &concrete,
            token,
            bodies.get(method.as_str()).cloned(),
        )
        .await;
        let documented = &operation["responses"][answer.status.to_string()];
        assert!(
            documented.is_object(),
            "{method} {path} answered {} which the document does not list: {}",
            answer.status,
            answer.body
        );
        if let Some(schema) = documented["content"]["application/json"].get("schema") {
            conforms(&doc, schema, &answer.body, &format!("{method} {path}"))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        if method == "post" {
            id = answer.body["id"].to_string();
        }
        // Without a token a secured operation is 401, as documented.
        if token.is_some() {
            let verb = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let refused = call(&url, verb, &concrete, None, None).await;
            assert_eq!(refused.status, 401, "{method} {path}");
            assert!(operation["responses"]["401"].is_object());
            conforms(
                &doc,
                &operation["responses"]["401"]["content"]["application/json"]["schema"],
                &refused.body,
                "401",
            )
            .unwrap_or_else(|e| panic!("{e}"));
        }
    }
    // A method the document does not list is not served on its paths.
    for path in [
        "/api/v1/requests",
        "/api/v1/requests/1",
        "/api/v1/openapi.json",
    ] {
        let answer = call(&url, Method::PUT, path, Some(TOKEN), None).await;
        assert_eq!(answer.status, 405, "PUT {path}");
    }
    app.finish().await;
}

#[tokio::test]
async fn tokens_never_reach_the_log_or_the_sqlite_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let slack = jitbot::fakes::FakeSlack::start().await.expect("fake Slack");
    let hook = jitbot::fakes::WebhookReceiver::start("hook-secret")
        .await
        .expect("receiver");
    let env_name = format!("JIT_HOOK_{}", suffix().to_uppercase());
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, with_clients(hook_policy(&hook.url, &env_name))).expect("policy");
    let db = dir.path().join("jitbot.db");
    let db_url = format!("sqlite://{}?mode=rwc", db.display());
    let env = vec![
        (env_name.clone(), "hook-secret".to_string()),
        (
            format!("{env_name}_PG"),
            "postgres://nobody@127.0.0.1:1/none".to_string(),
        ),
        ("JIT_LOG".to_string(), "debug".to_string()),
    ];
    let server = serve(&db_url, &policy, &slack.base_url, "signing", &env);
    let (code, stdout, stderr) =
        jitbot_request(&server.url, TOKEN, &["ci-deploy", "10m", "deploy"]).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let refused = call(
        &server.url,
        Method::POST,
        "/api/v1/requests",
        Some("wrong-token-5a5a5a5a5a5a"),
        Some(json!({"resource": "ci-deploy"})),
    )
    .await;
    assert_eq!(refused.status, 401);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = server.log.lock().expect("log").join("\n");
    assert!(log.contains("refused an API call"), "{log}");
    assert!(log.contains("API request stored"), "{log}");
    drop(server);
    let stored = sqlite_files(dir.path());
    assert!(
        stored.contains("deployer"),
        "the store file holds the request"
    );
    for token in [TOKEN, "wrong-token-5a5a5a5a5a5a"] {
        assert!(!log.contains(token), "a token is in the log");
        assert!(!stored.contains(token), "a token is in the store file");
        assert!(!stderr.contains(token), "a token is in the CLI's output");
    }
}

#[tokio::test]
async fn long_polls_are_capped_so_they_cannot_take_every_connection() {
    let ((app, _hook), _) = spawn_hook_app_with(Backend::Sqlite, with_clients).await;
    let url = app.running.url();
    let created = call(
        &url,
        Method::POST,
        "/api/v1/requests",
        Some(TOKEN),
        Some(json!({"resource": "billing-admin", "duration": "20m"})),
    )
    .await;
    let id = created.body["id"].as_i64().expect("id");
    let target = format!("{url}/api/v1/requests/{id}?wait=8");
    // One client for all (building one per call costs more than the test waits).
    let http = reqwest::Client::new();
    let mut held = Vec::new();
    for _ in 0..jitbot::api::MAX_WAITING {
        let (http, target) = (http.clone(), target.clone());
        held.push(tokio::spawn(async move {
            http.get(&target).bearer_auth(TOKEN).send().await
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(held.iter().all(|h| !h.is_finished()), "the first ones wait");
    let started = std::time::Instant::now();
    let extra = call(
        &url,
        Method::GET,
        &format!("/api/v1/requests/{id}?wait=8"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(extra.status, 200);
    assert_eq!(extra.body["state"], "pending");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "one over the cap answers at once, took {:?}",
        started.elapsed()
    );
    for h in held {
        h.abort();
    }
    app.finish().await;
}
