//! Scoped proxy tokens over real sockets: what each of the dashboard's
//! presets lets through the proxy and both relays, and the close neighbours
//! it refuses before anything reaches the API; bad rules, expiry, address
//! lists behind a trusted proxy, the audit lines and the recent calls.

use std::time::Duration;

use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

use crate::support::app::CreatedToken;
use crate::support::fake_api::{FAKE_ORGANISATION_ID, FAKE_USER_ID};
use crate::support::process::ServerProcess;
use crate::support::ws::{self, Auth};
use crate::support::{FakeApi, Options, TestApp, browser as browser_client, service_client};

const METRICS_TOKEN: &str = "metrics-token-for-scope-tests-01234";
/// The app a scoped token is made for, in the fake's organisation.
const APP: &str = "app_33333333-3333-3333-3333-333333333333";
/// Another app of the same person.
const OTHER_APP: &str = "app_11111111-1111-1111-1111-111111111111";

/// The dashboard's presets, as its script builds them (its unit tests hold
/// it to this file), with `{org}` and `{app}` to fill in.
const PRESETS: &str = include_str!("../presets.json");

/// The scope the dashboard's preset `name` gives for [`APP`] of the fake's
/// organisation.
fn preset(name: &str) -> Value {
    let presets: Value = serde_json::from_str(PRESETS).expect("tests/presets.json is JSON");
    let template = presets[name].to_string();
    assert_ne!(template, "null", "no preset {name}");
    let filled = template
        .replace("{org}", FAKE_ORGANISATION_ID)
        .replace("{app}", APP);
    serde_json::from_str(&filled).expect("a filled preset is JSON")
}

fn with_args(args: &[&str]) -> Options {
    Options {
        extra_args: args.iter().map(|arg| (*arg).to_owned()).collect(),
        ..Options::default()
    }
}

/// A server that shows its metrics, and a browser logged in to it.
async fn app_and_browser(args: &[&str]) -> (TestApp, Client) {
    let mut args = args.to_vec();
    args.extend(["--metrics-token", METRICS_TOKEN]);
    let app = TestApp::spawn_with(with_args(&args)).await;
    let browser = app.logged_in_browser().await;
    (app, browser)
}

/// `POST /tokens` with `body`, from the browser's page.
async fn post_token(app: &TestApp, browser: &Client, body: &Value) -> reqwest::Response {
    browser
        .post(app.at("/tokens"))
        .header("origin", &app.url)
        .json(body)
        .send()
        .await
        .expect("POST /tokens")
}

/// A token with `scope` (and the rest of `extra`); panics unless created.
async fn token_with(app: &TestApp, browser: &Client, scope: Value, extra: Value) -> CreatedToken {
    let mut body = json!({ "name": "scoped", "scope": scope });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    let response = post_token(app, browser, &body).await;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    assert_eq!(status, StatusCode::CREATED, "POST /tokens {body}: {text}");
    serde_json::from_str(&text).expect("POST /tokens answers JSON")
}

/// `method /api{path}` as a service holding `token`: the status and the
/// JSON body (null when it is not JSON).
async fn call(app: &TestApp, token: &str, method: Method, path: &str) -> (StatusCode, Value) {
    call_from(app, token, method, path, None).await
}

/// [`call`] through a proxy that says the client is `forwarded_for`.
async fn call_from(
    app: &TestApp,
    token: &str,
    method: Method,
    path: &str,
    forwarded_for: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = service_client()
        .request(method.clone(), app.at(&format!("/api{path}")))
        .bearer_auth(token);
    if let Some(address) = forwarded_for {
        request = request.header("x-forwarded-for", address);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|error| panic!("{method} {path}: {error}"));
    let status = response.status();
    // A log stream does not end: its status is all that is needed.
    let json = if path.starts_with("/v4/") && status.is_success() {
        Value::Null
    } else {
        response.json().await.unwrap_or(Value::Null)
    };
    (status, json)
}

/// `proxy_token_refusals_total{reason}` as `/metrics` says.
async fn refusals(app: &TestApp, reason: &str) -> u64 {
    let text = app.metrics(METRICS_TOKEN).await;
    let prefix = format!("proxy_token_refusals_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |count| count.parse().expect("a count"))
}

/// Asserts that `error` is the refusal of token `id` for its scope.
fn assert_names_the_token(error: &Value, id: &str, what: &str) {
    let message = error["error"].as_str().unwrap_or_default();
    assert!(
        message.contains(id) && message.contains("scope"),
        "{what}: {error}"
    );
}

/// Opens relay `path` as `token`: `Ok` once the API's `socket_ready` came
/// through (then closes it), the refusal otherwise.
async fn open_relay(app: &TestApp, token: &str, path: &str) -> Result<(), (StatusCode, Value)> {
    let mut client = ws::open(app, path, Auth::Bearer(token)).await?;
    ws::expect_ready(&mut client).await;
    client.close(None).await.expect("close the relay");
    Ok(())
}

/// What a preset (or a custom scope) is checked for.
struct Case {
    name: &'static str,
    scope: Value,
    allowed: Vec<(Method, String)>,
    refused: Vec<(Method, String)>,
    relays_allowed: Vec<String>,
    relays_refused: Vec<String>,
}

fn cases() -> Vec<Case> {
    let org = FAKE_ORGANISATION_ID;
    let status = format!("/v2/organisations/{org}/applications/{APP}");
    let instances = format!("{status}/instances");
    let logs = format!("/v4/logs/organisations/{org}/applications/{APP}/logs");
    let access_logs = format!("/v4/accesslogs/organisations/{org}/applications/{APP}/accesslogs");
    let events = "/ws/events".to_owned();
    let app_relay = format!("/ws/logs/{APP}");
    let other_relay = format!("/ws/logs/{OTHER_APP}");
    vec![
        Case {
            name: "full",
            scope: preset("full"),
            allowed: vec![
                (Method::DELETE, status.clone()),
                (Method::GET, logs.clone()),
            ],
            refused: vec![],
            relays_allowed: vec![events.clone(), app_relay.clone()],
            relays_refused: vec![],
        },
        Case {
            name: "read-only",
            scope: preset("read-only"),
            allowed: vec![
                (Method::GET, "/v2/self".to_owned()),
                (Method::HEAD, status.clone()),
            ],
            // Another method.
            refused: vec![(Method::POST, instances.clone())],
            relays_allowed: vec![events.clone(), other_relay.clone()],
            relays_refused: vec![],
        },
        Case {
            name: "deploy",
            scope: preset("deploy"),
            allowed: vec![
                (Method::POST, instances.clone()),
                (Method::GET, status.clone()),
                (Method::GET, instances.clone()),
                (Method::GET, logs.clone()),
            ],
            refused: vec![
                // Another app.
                (
                    Method::POST,
                    format!("/v2/organisations/{org}/applications/{OTHER_APP}/instances"),
                ),
                // Another method.
                (Method::DELETE, instances.clone()),
                (Method::DELETE, status.clone()),
                // One segment off, either way.
                (Method::GET, format!("{status}/env")),
                (Method::GET, format!("/v2/organisations/{org}/applications")),
                (Method::POST, format!("{instances}/restart")),
            ],
            relays_allowed: vec![app_relay.clone()],
            relays_refused: vec![other_relay.clone(), events.clone()],
        },
        Case {
            name: "logs",
            scope: preset("logs"),
            allowed: vec![
                (Method::GET, logs.clone()),
                (Method::GET, access_logs.clone()),
            ],
            refused: vec![
                (
                    Method::GET,
                    format!("/v4/logs/organisations/{org}/applications/{OTHER_APP}/logs"),
                ),
                (Method::POST, logs.clone()),
                (Method::GET, status.clone()),
                (
                    Method::GET,
                    format!("/v4/logs/organisations/{org}/applications"),
                ),
            ],
            relays_allowed: vec![app_relay.clone()],
            relays_refused: vec![other_relay.clone(), events.clone()],
        },
        Case {
            name: "custom",
            scope: json!({
                "rules": ["GET,HEAD /v2/organisations/*/applications"],
                "events": true,
                "logs": [],
            }),
            allowed: vec![
                (Method::GET, format!("/v2/organisations/{org}/applications")),
                (
                    Method::HEAD,
                    format!("/v2/organisations/{FAKE_USER_ID}/applications"),
                ),
            ],
            refused: vec![
                (Method::GET, status.clone()),
                (Method::GET, format!("/v2/organisations/{org}")),
                (Method::PUT, format!("/v2/organisations/{org}/applications")),
                // Matching is case-sensitive.
                (Method::GET, format!("/v2/Organisations/{org}/applications")),
            ],
            relays_allowed: vec![events],
            relays_refused: vec![app_relay, other_relay],
        },
    ]
}

#[tokio::test]
async fn each_preset_allows_what_it_names_and_refuses_its_close_neighbours() {
    let (app, browser) = app_and_browser(&[]).await;
    let mut refused_so_far = 0;
    for case in cases() {
        // Arrange
        let token = token_with(&app, &browser, case.scope.clone(), json!({})).await;
        let name = case.name;

        // Through the proxy: what it names reaches the API…
        for (method, path) in &case.allowed {
            let before = app.api.api_request_count();
            let (status, body) = call(&app, &token.token, method.clone(), path).await;
            assert!(
                status.is_success(),
                "{name}: {method} {path} answered {status} {body}"
            );
            assert_eq!(app.api.api_request_count(), before + 1, "{name}: {path}");
        }
        // …its neighbours get a 403 naming the token, and reach nothing.
        for (method, path) in &case.refused {
            let before = app.api.api_request_count();
            let (status, body) = call(&app, &token.token, method.clone(), path).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{name}: {method} {path}");
            if *method != Method::HEAD {
                assert_names_the_token(&body, &token.id, name);
                let message = body["error"].as_str().unwrap_or_default();
                assert!(message.contains("no rule"), "{name}: {body}");
            }
            assert_eq!(
                app.api.api_request_count(),
                before,
                "{name}: {method} {path} reached the API"
            );
        }

        // Through the relays, the same.
        for path in &case.relays_allowed {
            open_relay(&app, &token.token, path)
                .await
                .unwrap_or_else(|(status, body)| panic!("{name}: {path}: {status} {body}"));
        }
        for path in &case.relays_refused {
            let before = app.api.api_request_count();
            let refused = open_relay(&app, &token.token, path).await;
            let Err((status, body)) = refused else {
                panic!("{name}: {path} opened");
            };
            assert_eq!(status, StatusCode::FORBIDDEN, "{name}: {path}");
            assert_names_the_token(&body, &token.id, name);
            assert_eq!(app.api.api_request_count(), before, "{name}: {path}");
        }

        // Every refusal is counted.
        refused_so_far += case.refused.len() + case.relays_refused.len();
        assert_eq!(
            refusals(&app, "scope").await,
            u64::try_from(refused_so_far).expect("a small count"),
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_rule_that_does_not_parse_gets_400_naming_it_and_no_token() {
    let (app, browser) = app_and_browser(&[]).await;
    let bad = [
        (
            json!({ "rules": ["GET /v2/self", "FETCH /v2/x"] }),
            "rule 2 `FETCH /v2/x`: unknown method `FETCH`",
        ),
        (
            json!({ "rules": ["GET /v2/**/self"] }),
            "rule 1 `GET /v2/**/self`: `**` may only end a pattern",
        ),
        (
            json!({ "rules": ["GET v2/self"] }),
            "rule 1 `GET v2/self`: the path pattern starts with `/`",
        ),
        (json!("everything"), "unknown scope `everything`"),
        (json!({ "logs": ["a/b"] }), "`logs` lists"),
    ];
    for (scope, expected) in bad {
        let response = post_token(&app, &browser, &json!({ "name": "bad", "scope": scope })).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{scope}");
        let body: Value = response.json().await.expect("a JSON error");
        let message = body["error"].as_str().unwrap_or_default();
        assert!(message.contains(expected), "{scope}: {message}");
    }
    for (field, value, expected) in [
        ("allowed_ips", json!(["10.0.0.0/33"]), "10.0.0.0/33"),
        ("expires_at", json!("tomorrow"), "RFC 3339"),
    ] {
        let response = post_token(&app, &browser, &json!({ "name": "bad", field: value })).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{field}");
        let body: Value = response.json().await.expect("a JSON error");
        let message = body["error"].as_str().unwrap_or_default();
        assert!(message.contains(expected), "{field}: {message}");
    }
    assert!(app.listed_token_ids(&browser).await.is_empty());
}

#[tokio::test]
async fn the_scope_comes_back_in_the_shape_it_was_given() {
    let (app, browser) = app_and_browser(&[]).await;
    let in_a_day = (time::OffsetDateTime::now_utc() + time::Duration::days(1))
        .replace_nanosecond(0)
        .expect("0 ns")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("RFC 3339");
    let given = [
        preset("full"),
        preset("read-only"),
        preset("deploy"),
        json!({ "rules": [], "events": true, "logs": [] }),
    ];
    let mut ids = Vec::new();
    for scope in &given {
        let extra = json!({ "expires_at": in_a_day, "allowed_ips": ["192.0.2.7", "10.1.2.3/16"] });
        ids.push(token_with(&app, &browser, scope.clone(), extra).await.id);
    }
    let default = app.create_proxy_token(&browser, "no scope given").await;

    let listed: Vec<Value> = app
        .get(&browser, "/tokens")
        .await
        .json()
        .await
        .expect("GET /tokens");
    for (id, scope) in ids.iter().zip(&given) {
        let shown: Value = app
            .get(&browser, &format!("/tokens/{id}"))
            .await
            .json()
            .await
            .expect("GET /tokens/{id}");
        assert_eq!(&shown["scope"], scope);
        assert_eq!(shown["expires_at"], in_a_day.as_str());
        assert_eq!(shown["allowed_ips"], json!(["192.0.2.7/32", "10.1.0.0/16"]));
        let in_list = listed.iter().find(|token| token["id"] == id.as_str());
        assert_eq!(in_list, Some(&shown), "GET /tokens shows the same");
    }
    let shown: Value = app
        .get(&browser, &format!("/tokens/{}", default.id))
        .await
        .json()
        .await
        .expect("GET /tokens/{id}");
    assert_eq!(shown["scope"], "full", "the default scope");
    assert_eq!(shown["allowed_ips"], json!([]));
    assert!(shown["expires_at"].is_string(), "{shown}");
    assert_eq!(
        app.get(&browser, "/tokens/0123456789abcdef").await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_token_stops_working_when_it_expires() {
    // Arrange: the API issues access tokens that last seconds, so a proxy
    // token made from one expires with it (its expiry cannot be later).
    let api = FakeApi::start().await;
    api.set_access_token_lifetime(time::Duration::seconds(4));
    let api_url = api.url();
    let app = TestApp::spawn_against(api, &api_url, Options::default()).await;
    let browser = app.logged_in_browser().await;
    let created = app.create_proxy_token(&browser, "short-lived").await;
    let shown: Value = app
        .get(&browser, &format!("/tokens/{}", created.id))
        .await
        .json()
        .await
        .expect("GET /tokens/{id}");
    let expires_at = time::OffsetDateTime::parse(
        shown["expires_at"].as_str().expect("an expiry"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("RFC 3339");
    let left = expires_at - time::OffsetDateTime::now_utc();
    assert!(left <= time::Duration::seconds(4), "{left}");
    assert_eq!(app.bearer_status(&created.token).await, StatusCode::OK);

    // Act: wait past its expiry.
    tokio::time::sleep(Duration::try_from(left).unwrap_or_default() + Duration::from_millis(1200))
        .await;
    let before = app.api.api_request_count();

    // Assert: refused as unknown, before the API; gone from the list.
    assert_eq!(
        app.bearer_status(&created.token).await,
        StatusCode::UNAUTHORIZED
    );
    let relay = ws::open(&app, "/ws/events", Auth::Bearer(&created.token)).await;
    assert_eq!(
        relay.err().map(|(status, _)| status),
        Some(StatusCode::UNAUTHORIZED)
    );
    assert_eq!(app.api.api_request_count(), before);
    assert!(app.listed_token_ids(&browser).await.is_empty());
}

#[tokio::test]
async fn an_expiry_out_of_bounds_is_refused() {
    let (app, browser) = app_and_browser(&[]).await;
    let format = |date: time::OffsetDateTime| {
        date.format(&time::format_description::well_known::Rfc3339)
            .expect("RFC 3339")
    };
    let now = time::OffsetDateTime::now_utc();
    for (expires_at, expected) in [
        (now + time::Duration::minutes(30), "at least an hour"),
        (now + time::Duration::days(400), "access token's own expiry"),
    ] {
        let response = post_token(
            &app,
            &browser,
            &json!({ "name": "bounds", "expires_at": format(expires_at) }),
        )
        .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body: Value = response.json().await.expect("a JSON error");
        assert!(
            body["error"]
                .as_str()
                .unwrap_or_default()
                .contains(expected),
            "{body}"
        );
    }
}

#[tokio::test]
async fn the_address_list_holds_behind_a_trusted_proxy() {
    // Arrange: the server trusts the proxy on loopback, which says who
    // the client is in X-Forwarded-For.
    let (app, browser) = app_and_browser(&["--trusted-proxies", "127.0.0.1"]).await;
    let token = token_with(
        &app,
        &browser,
        json!("full"),
        json!({ "allowed_ips": ["203.0.113.0/24", "2001:db8::7"] }),
    )
    .await;
    let call = |forwarded_for: Option<&'static str>| {
        let (app, token) = (&app, &token.token);
        async move { call_from(app, token, Method::GET, "/v2/self", forwarded_for).await }
    };

    // Act / Assert: from the networks named, allowed.
    for client in ["203.0.113.9", "198.51.100.1, 203.0.113.200", "2001:db8::7"] {
        assert_eq!(call(Some(client)).await.0, StatusCode::OK, "{client}");
    }
    // From anywhere else, refused before the API: the proxy's own
    // address, an address beside the list, and one a client forged to the
    // left of the proxy's.
    let before = app.api.api_request_count();
    for client in [None, Some("203.0.114.1"), Some("203.0.113.9, 198.51.100.1")] {
        let (status, body) = call(client).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{client:?}");
        let message = body["error"].as_str().unwrap_or_default();
        assert!(
            message.contains(&token.id) && message.contains("address"),
            "{body}"
        );
    }
    let relay = ws::open(&app, "/ws/events", Auth::Bearer(&token.token)).await;
    assert_eq!(
        relay.err().map(|(status, _)| status),
        Some(StatusCode::FORBIDDEN)
    );
    assert_eq!(app.api.api_request_count(), before);
    assert_eq!(refusals(&app, "address").await, 4);

    // The listing tells where it was last used from.
    let shown: Value = app
        .get(&browser, &format!("/tokens/{}", token.id))
        .await
        .json()
        .await
        .expect("GET /tokens/{id}");
    assert!(shown["last_used_from"].is_string(), "{shown}");
}

#[tokio::test]
async fn without_a_trusted_proxy_a_forwarded_address_does_not_count() {
    let (app, browser) = app_and_browser(&[]).await;
    let local = token_with(
        &app,
        &browser,
        json!("full"),
        json!({ "allowed_ips": ["127.0.0.1"] }),
    )
    .await;
    let elsewhere = token_with(
        &app,
        &browser,
        json!("full"),
        json!({ "allowed_ips": ["203.0.113.0/24"] }),
    )
    .await;

    let local_call = call_from(
        &app,
        &local.token,
        Method::GET,
        "/v2/self",
        Some("198.51.100.1"),
    )
    .await;
    let forged = call_from(
        &app,
        &elsewhere.token,
        Method::GET,
        "/v2/self",
        Some("203.0.113.9"),
    )
    .await;

    assert_eq!(local_call.0, StatusCode::OK, "the peer's address counts");
    assert_eq!(
        forged.0,
        StatusCode::FORBIDDEN,
        "an unproven header does not"
    );
}

/// The recent calls of token `id`, once there are at least `count`.
async fn recent_calls(app: &TestApp, browser: &Client, id: &str, count: usize) -> Vec<Value> {
    let mut calls = Vec::new();
    for _ in 0..100 {
        let response = app.get(browser, &format!("/tokens/{id}/calls")).await;
        assert_eq!(response.status(), StatusCode::OK);
        calls = response.json().await.expect("a JSON list");
        if calls.len() >= count {
            return calls;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("token {id} lists only {} calls: {calls:?}", calls.len());
}

#[tokio::test]
async fn recent_calls_list_allowed_and_refused_calls_newest_first() {
    // Arrange
    let (app, browser) = app_and_browser(&[]).await;
    let token = token_with(&app, &browser, preset("deploy"), json!({})).await;
    let status_path = format!("/v2/organisations/{FAKE_ORGANISATION_ID}/applications/{APP}");

    // Act: an allowed call, a refused one, a refused relay.
    call(
        &app,
        &token.token,
        Method::GET,
        &format!("{status_path}?secret=1"),
    )
    .await;
    call(&app, &token.token, Method::DELETE, &status_path).await;
    assert!(open_relay(&app, &token.token, "/ws/events").await.is_err());

    // Assert
    let calls = recent_calls(&app, &browser, &token.id, 3).await;
    let summary: Vec<(String, String, u64)> = calls
        .iter()
        .map(|call| {
            (
                call["method"].as_str().unwrap_or_default().to_owned(),
                call["path"].as_str().unwrap_or_default().to_owned(),
                call["status"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("GET".to_owned(), "/ws/events".to_owned(), 403),
            ("DELETE".to_owned(), status_path.clone(), 403),
            ("GET".to_owned(), status_path, 200),
        ],
        "newest first, the query left out"
    );
    for call in &calls {
        assert_eq!(call["client"], "127.0.0.1", "{call}");
        assert!(call["at"].is_string(), "{call}");
    }
    // Another person's browser cannot read them.
    let stranger = browser_client();
    app.log_in_as(&stranger, "user_stranger").await;
    let response = app
        .get(&stranger, &format!("/tokens/{}/calls", token.id))
        .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

/// The JSON lines of `target` "audit" among `lines`.
fn audit_lines(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["target"] == "audit")
        .collect()
}

#[tokio::test]
async fn audit_lines_tell_each_call_and_hold_no_secret() {
    // Arrange: the binary logging JSON, behind a trusted proxy on loopback.
    let server = ServerProcess::start(
        FakeApi::start().await,
        &[("LOG_FORMAT", "json"), ("TRUSTED_PROXIES", "127.0.0.1")],
    )
    .await;
    let app = &server.app;
    let (browser, cookie) = app.logged_in_browser_and_cookie().await;
    let scope = json!({
        "rules": ["GET /v2/self", "DELETE /v2/self/tokens/*"],
        "events": false,
        "logs": [],
    });
    let token = token_with(app, &browser, scope, json!({})).await;
    let narrow = token_with(
        app,
        &browser,
        json!("full"),
        json!({ "allowed_ips": ["192.0.2.1"] }),
    )
    .await;
    let issued = app.api.issued_access_tokens();
    let (access, access_secret) = (&issued[0].token, &issued[0].secret);
    let secret_in_path = "tok_0123456789secret";
    let session_id = cookie
        .split_once('=')
        .map_or(cookie.as_str(), |(_, value)| value);

    // Act: allowed, refused by scope, refused by address, a relay refused.
    let from = Some("198.51.100.23");
    let self_call = call_from(
        app,
        &token.token,
        Method::GET,
        "/v2/self?key=querysecret",
        from,
    )
    .await;
    let delete = format!("/v2/self/tokens/{secret_in_path}");
    let deleted = call_from(app, &token.token, Method::DELETE, &delete, from).await;
    let refused = call_from(app, &token.token, Method::POST, "/v2/self", from).await;
    let elsewhere = call_from(app, &narrow.token, Method::GET, "/v2/self", from).await;
    assert!(open_relay(app, &token.token, "/ws/events").await.is_err());
    assert_eq!(self_call.0, StatusCode::OK);
    assert!(deleted.0.is_success(), "{deleted:?}");
    assert_eq!(
        (refused.0, elsewhere.0),
        (StatusCode::FORBIDDEN, StatusCode::FORBIDDEN)
    );

    // Assert: one line per call, with what tells it.
    let wanted = 5;
    let mut lines = Vec::new();
    for _ in 0..100 {
        lines = audit_lines(&server.lines());
        if lines.len() >= wanted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let told: Vec<Value> = lines
        .iter()
        .map(|line| {
            json!([
                line["token_id"],
                line["method"],
                line["path"],
                line["status"],
                line["client"]
            ])
        })
        .collect();
    let (proxied, direct) = ("198.51.100.23", "127.0.0.1");
    assert_eq!(
        told,
        [
            json!([token.id, "GET", "/v2/self", 200, proxied]),
            json!([token.id, "DELETE", "/v2/self/tokens/{token}", 200, proxied]),
            json!([token.id, "POST", "/v2/self", 403, proxied]),
            json!([narrow.id, "GET", "/v2/self", 403, proxied]),
            json!([token.id, "GET", "/ws/events", 403, direct]),
        ]
    );
    for line in &lines {
        assert_eq!(line["message"], "audit", "{line}");
        assert!(line["owner"].is_string(), "{line}");
        assert!(line["latency_ms"].is_number(), "{line}");
    }
    let all = server.lines();
    for (what, secret) in [
        ("proxy token", token.token.as_str()),
        ("other proxy token", narrow.token.as_str()),
        ("access token", access.as_str()),
        ("access token secret", access_secret.as_str()),
        ("consumer secret", FakeApi::CONSUMER_SECRET),
        ("session cookie", session_id),
        ("token in a path", secret_in_path),
        ("query", "querysecret"),
    ] {
        for line in &all {
            assert!(!line.contains(secret), "the {what} was logged: {line}");
        }
    }
}
