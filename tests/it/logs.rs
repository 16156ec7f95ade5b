//! What the binary logs: JSON lines, a request id on every line of a
//! request, one summary line per request, and never a secret.

use std::sync::Arc;

use reqwest::StatusCode;
use reqwest::cookie::CookieStore as _;
use reqwest::header::ORIGIN;
use serde_json::Value;

use crate::support::fake_api::verify::percent_encode;
use crate::support::process::ServerProcess;
use crate::support::{FakeApi, location};

/// Every value that must never reach a log line.
struct Secrets(Vec<(&'static str, String)>);

impl Secrets {
    fn add(&mut self, what: &'static str, value: impl Into<String>) {
        let value = value.into();
        assert!(
            value.len() >= 8,
            "{what} is too short to search for: {value:?}"
        );
        // Also as it would appear in a URL or an OAuth header.
        let encoded = percent_encode(&value);
        if encoded != value {
            self.0.push((what, encoded));
        }
        self.0.push((what, value));
    }

    fn assert_absent_from(&self, lines: &[String]) {
        for (what, value) in &self.0 {
            for line in lines {
                assert!(
                    !line.contains(value.as_str()),
                    "the {what} was logged: {line}"
                );
            }
        }
    }
}

fn json_lines(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}"))
        })
        .collect()
}

/// The summary lines of requests (`"message": "request"`).
fn request_lines(lines: &[Value]) -> Vec<&Value> {
    lines
        .iter()
        .filter(|line| line["message"] == "request")
        .collect()
}

/// The request id a line carries in its span list.
fn request_id_of(line: &Value) -> Option<&str> {
    line["spans"]
        .as_array()?
        .iter()
        .find_map(|span| span["request_id"].as_str())
}

#[tokio::test]
async fn a_whole_dance_logs_json_lines_with_request_ids_and_no_secret() {
    // Arrange: the real binary, logging everything it can, behind a
    // "balancer" on loopback that CC_REVERSE_PROXY_IPS names.
    let mut server = ServerProcess::start(
        FakeApi::start().await,
        &[
            ("LOG_FORMAT", "json"),
            ("RUST_LOG", "trace"),
            ("CC_REVERSE_PROXY_IPS", "127.0.0.1"),
        ],
    )
    .await;
    let app = &server.app;
    let jar = Arc::new(reqwest::cookie::Jar::default());
    let client = reqwest::Client::builder()
        .cookie_provider(Arc::clone(&jar))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .expect("client");
    let app_url = reqwest::Url::parse(&app.url).expect("url");
    let mut secrets = Secrets(Vec::new());
    secrets.add("consumer secret", FakeApi::CONSUMER_SECRET);

    // Act: log in step by step, noting every secret on the way.
    let started = app.start_login(&client).await;
    assert_eq!(started.status(), StatusCode::SEE_OTHER);
    let pre_login_cookie = jar.cookies(&app_url).expect("a session cookie");
    secrets.add(
        "pre-login session cookie",
        pre_login_cookie.to_str().unwrap_or_default(),
    );
    for pending in app.api.pending_request_tokens() {
        secrets.add("request token", pending.token);
        secrets.add("request token secret", pending.secret);
    }
    let callback = app.approve(&client, &location(&started)).await;
    let verifier = reqwest::Url::parse(&callback)
        .expect("callback URL")
        .query_pairs()
        .find(|(name, _)| name == "oauth_verifier")
        .map(|(_, value)| value.into_owned())
        .expect("a verifier");
    secrets.add("verifier", verifier);
    let finished = client
        .get(&callback)
        .header("x-request-id", "callback-request-1")
        .header("x-forwarded-for", "198.51.100.66, 203.0.113.7")
        .send()
        .await
        .expect("GET /callback");
    assert_eq!(finished.status(), StatusCode::SEE_OTHER);
    let cookie = jar.cookies(&app_url).expect("a session cookie");
    secrets.add("session cookie", cookie.to_str().unwrap_or_default());
    for issued in app.api.issued_access_tokens() {
        secrets.add("access token", issued.token);
        secrets.add("access token secret", issued.secret);
    }
    let page = app.get(&client, "/").await;
    assert_eq!(page.status(), StatusCode::OK);
    let created: Value = client
        .post(app.at("/tokens"))
        .header(ORIGIN, &app.url)
        .json(&serde_json::json!({ "name": "logs test" }))
        .send()
        .await
        .expect("POST /tokens")
        .json()
        .await
        .expect("token JSON");
    let proxy_token = created["token"].as_str().expect("a proxy token").to_owned();
    let with_token = reqwest::Client::new()
        .get(app.at("/tokens"))
        .bearer_auth(&proxy_token)
        .send()
        .await
        .expect("GET /tokens with the proxy token");
    assert_eq!(
        with_token.status(),
        StatusCode::FORBIDDEN,
        "authenticated, then refused"
    );
    let proxied = reqwest::Client::new()
        .get(app.at("/api/v2/self?tag=logs"))
        .bearer_auth(&proxy_token)
        .send()
        .await
        .expect("GET /api/v2/self with the proxy token");
    assert_eq!(proxied.status(), StatusCode::OK);
    let access_token = app.api.issued_access_tokens()[0].token.clone();
    let revoke = client
        .delete(app.at(&format!("/api/v2/self/tokens/{access_token}")))
        .header(ORIGIN, &app.url)
        .send()
        .await
        .expect("DELETE /api/v2/self/tokens/{token}");
    assert_eq!(
        revoke.status(),
        StatusCode::NO_CONTENT,
        "the fake revoked it"
    );
    secrets.add("proxy token", proxy_token);
    app.get(&client, "/health").await;
    server.terminate();
    let lines = server.lines_after_exit().await;

    // Assert: no secret anywhere, in any form.
    assert!(lines.len() > 20, "trace logging is on: {lines:?}");
    secrets.assert_absent_from(&lines);

    // One JSON object per line, with time, level and message.
    let lines = json_lines(&lines);
    for line in &lines {
        assert!(line["timestamp"].is_string(), "{line}");
        assert!(line["level"].is_string(), "{line}");
    }

    // One summary line per request, naming the route and not the path.
    let requests = request_lines(&lines);
    let callback_line = requests
        .iter()
        .find(|line| line["span"]["route"] == "/callback")
        .expect("a line for the callback");
    assert_eq!(callback_line["level"], "INFO");
    assert_eq!(callback_line["status"], 303);
    assert_eq!(callback_line["span"]["method"], "GET");
    assert!(callback_line["latency_ms"].is_number());
    assert_eq!(request_id_of(callback_line), Some("callback-request-1"));
    assert_eq!(
        callback_line["span"]["client"], "203.0.113.7",
        "the rightmost address the trusted balancer saw"
    );
    let proxied = requests
        .iter()
        .filter(|line| line["span"]["route"] == "/api/{*path}")
        .count();
    assert_eq!(proxied, 2, "proxied calls are logged by their route");
    let health = requests
        .iter()
        .find(|line| line["span"]["route"] == "/health")
        .expect("a line for /health");
    assert_eq!(health["level"], "DEBUG", "probes stay below info");

    // Every line logged while handling the callback carries its id.
    let login_line = lines
        .iter()
        .find(|line| line["message"] == "logged in")
        .expect("the login line");
    assert_eq!(request_id_of(login_line), Some("callback-request-1"));
    let access_token_call = lines
        .iter()
        .find(|line| line["span"]["name"] == "access_token")
        .expect("a line inside the access-token call");
    assert_eq!(
        request_id_of(access_token_call),
        Some("callback-request-1"),
        "lines of nested spans carry the request's id too"
    );
}
