//! moto, the AWS stand-in, as a server of one test's own: started on a free port, given two users
//! with access keys while it still accepts anything (jitbot's, holding exactly the actions of the
//! policy `manifest/aws/jitbot-policy.json` documents, and the test's own admin), then switched to
//! checking every request's signature against the keys it holds and each call against the
//! caller's policy (as AWS does). So every AWS test also shows the documented policy is enough.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The Identity Center instance the tests use.
pub const SSO_INSTANCE: &str = "arn:aws:sso:::instance/ssoins-1234567890abcdef";

/// Env key naming the `moto_server` program (set by `scripts/test-services.sh`).
pub const MOTO_ENV: &str = "JIT_TEST_MOTO";

pub struct Moto {
    child: Child,
    pub url: String,
    /// jitbot's key (its user `jitbot-admin` holds the documented policy's actions).
    pub key_id: String,
    pub secret: String,
    /// The test's own key, allowed everything, for setting the scene and reading it back.
    admin_key_id: String,
    pub admin_secret: String,
    /// ARNs of the Identity Center permission sets made at start, in order.
    pub permission_sets: Vec<String>,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An IAM query call before signatures are checked (moto reads the service from the scope).
async fn unsigned(http: &reqwest::Client, url: &str, form: &[(&str, &str)]) -> String {
    let mut form = form.to_vec();
    form.push(("Version", "2010-05-08"));
    let answer = http
        .post(url)
        .header(
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=00",
        )
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string(&form).expect("a form"))
        .send()
        .await
        .expect("moto answers");
    let status = answer.status();
    let body = answer.text().await.unwrap_or_default();
    assert!(status.is_success(), "moto {form:?}: {status} {body}");
    body
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> &'a str {
    text.split(open)
        .nth(1)
        .and_then(|rest| rest.split(close).next())
        .unwrap_or_else(|| panic!("no {open} in {text}"))
}

impl Moto {
    /// Starts moto and makes `users`, `groups` and customer-managed `policies` in it, then turns
    /// on signature checking; fails, saying how to get moto, when it is not installed.
    pub async fn start(users: &[&str], groups: &[&str], policies: &[&str]) -> Moto {
        Self::start_with(users, groups, policies, &[]).await
    }

    /// Like [`Moto::start`], with Identity Center permission sets named `permission_sets` in
    /// [`SSO_INSTANCE`] (made before signatures are checked: moto's answer to
    /// `CreatePermissionSet` carries a number where the SDK expects a duration string).
    pub async fn start_with(
        users: &[&str],
        groups: &[&str],
        policies: &[&str],
        permission_sets: &[&str],
    ) -> Moto {
        let program = std::env::var(MOTO_ENV).unwrap_or_else(|_| "moto_server".into());
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            probe.local_addr().expect("its address").port()
        };
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("INITIAL_NO_AUTH_ACTION_COUNT", "1000")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "moto is not installed ({program}: {e}).\n\
                     Run `bash scripts/test-services.sh` (it installs moto into target/moto-venv) \
                     and set {MOTO_ENV} to the moto_server it prints, or run the suite with `bash scripts/test.sh`."
                )
            });
        let url = format!("http://127.0.0.1:{port}");
        let mut moto = Moto {
            child,
            url: url.clone(),
            key_id: String::new(),
            secret: String::new(),
            admin_key_id: String::new(),
            admin_secret: String::new(),
            permission_sets: Vec::new(),
        };
        let http = reqwest::Client::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while http.get(format!("{url}/moto-api/")).send().await.is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "moto did not start on {url} within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // jitbot's user holds the documented policy's actions (on any resource: moto does not
        // match resource patterns the way IAM does); the test's admin holds everything.
        let documented: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/manifest/aws/jitbot-policy.json"
            ))
            .expect("manifest/aws/jitbot-policy.json"),
        )
        .expect("the documented policy is JSON");
        let mut jitbot_policy = documented.clone();
        for statement in jitbot_policy["Statement"]
            .as_array_mut()
            .expect("statements")
        {
            statement["Resource"] = serde_json::json!("*");
        }
        let everything = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;
        for (user, policy) in [
            ("jitbot-admin", jitbot_policy.to_string()),
            ("test-admin", everything.to_string()),
        ] {
            unsigned(&http, &url, &[("Action", "CreateUser"), ("UserName", user)]).await;
            unsigned(
                &http,
                &url,
                &[
                    ("Action", "PutUserPolicy"),
                    ("UserName", user),
                    ("PolicyName", "policy"),
                    ("PolicyDocument", &policy),
                ],
            )
            .await;
            let key = unsigned(
                &http,
                &url,
                &[("Action", "CreateAccessKey"), ("UserName", user)],
            )
            .await;
            let id = between(&key, "<AccessKeyId>", "</AccessKeyId>").to_string();
            let secret = between(&key, "<SecretAccessKey>", "</SecretAccessKey>").to_string();
            if user == "jitbot-admin" {
                (moto.key_id, moto.secret) = (id, secret);
            } else {
                (moto.admin_key_id, moto.admin_secret) = (id, secret);
            }
        }
        for user in users {
            unsigned(&http, &url, &[("Action", "CreateUser"), ("UserName", user)]).await;
        }
        for group in groups {
            unsigned(
                &http,
                &url,
                &[("Action", "CreateGroup"), ("GroupName", group)],
            )
            .await;
        }
        let read = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}"#;
        for policy in policies {
            unsigned(
                &http,
                &url,
                &[
                    ("Action", "CreatePolicy"),
                    ("PolicyName", policy),
                    ("PolicyDocument", read),
                ],
            )
            .await;
        }
        for name in permission_sets {
            let answer = http
                .post(&url)
                .header(
                    "Authorization",
                    "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20260101/us-east-1/sso/aws4_request, SignedHeaders=host, Signature=00",
                )
                .header("X-Amz-Target", "SWBExternalService.CreatePermissionSet")
                .header("Content-Type", "application/x-amz-json-1.1")
                .body(serde_json::json!({"InstanceArn": SSO_INSTANCE, "Name": name}).to_string())
                .send()
                .await
                .expect("moto answers");
            let body: serde_json::Value = answer.json().await.expect("JSON");
            moto.permission_sets.push(
                body["PermissionSet"]["PermissionSetArn"]
                    .as_str()
                    .unwrap_or_else(|| panic!("a permission set: {body}"))
                    .to_string(),
            );
        }
        // From here on, every request must be signed with a key moto holds.
        let reset = http
            .post(format!("{url}/moto-api/reset-auth"))
            .body("0")
            .send()
            .await
            .expect("moto answers");
        assert!(
            reset.status().is_success(),
            "reset-auth: {}",
            reset.status()
        );
        moto
    }

    /// An IAM client signing with the test admin's key id and `secret` (another secret, to see it
    /// refused).
    pub async fn iam(&self, secret: &str) -> aws_sdk_iam::Client {
        aws_sdk_iam::Client::new(&self.config(secret).await)
    }

    /// The SDK's configuration for this moto, signing with the test admin's key id and `secret`.
    pub async fn config(&self, secret: &str) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(&self.url)
            .credentials_provider(aws_sdk_iam::config::Credentials::new(
                &self.admin_key_id,
                secret,
                None,
                None,
                "test",
            ))
            .load()
            .await
    }
}
