//! The signed reverse proxy, driven over loopback against the fake API,
//! which verifies every signature with its own code and echoes what it got.

use std::time::Duration;

use futures_util::{StreamExt as _, stream};
use reqwest::{Client, Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::support::fake_api::FAKE_USER_ID;
use crate::support::{FakeApi, Mode, Options, TestApp, browser, service_client};

const METHODS: [&str; 3] = ["HMAC-SHA512", "HMAC-SHA1", "PLAINTEXT"];

/// A query with everything that trips signers: repeated names, `&` and `=`
/// inside values, unicode, `+`, empty values, names that sort differently
/// raw and encoded.
const TRICKY_QUERY: &str =
    "a=1&a=2&b=x%26y%3Dz&c=%E2%9C%93&d=a+b&e=&A=1&a-b=2&a.b=3&a_b=4&f=x=y&g=%2B";

/// Longest any test waits for the server, so a broken proxy fails instead
/// of hanging; no test asserts on time.
const PATIENCE: Duration = Duration::from_secs(20);

/// Sends `request` and returns the status and the JSON body.
async fn send_json(request: RequestBuilder) -> (StatusCode, Value) {
    let response = tokio::time::timeout(PATIENCE, request.send())
        .await
        .expect("the proxy answers in time")
        .expect("request sent");
    let status = response.status();
    let body = response.json().await.expect("a JSON body");
    (status, body)
}

/// Sends `request`, expects the fake's echo, and returns it.
async fn echo(request: RequestBuilder) -> Value {
    let (status, body) = send_json(request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// The echo's `(name, value)` pairs of a field such as `query`.
fn pairs(echo: &Value, field: &str) -> Vec<(String, String)> {
    serde_json::from_value(echo[field].clone()).expect("pairs")
}

fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// A logged-in browser, and a proxy token made from it.
async fn browser_and_token(app: &TestApp) -> (Client, String) {
    let browser = app.logged_in_browser().await;
    let token = app.create_proxy_token(&browser, "tests").await.token;
    (browser, token)
}

/// One raw HTTP/1.1 request with `target` as written (no client library
/// normalises it), authenticated with `token`. Returns status and body.
async fn raw_get(app: &TestApp, target: &str, token: &str) -> (u16, String) {
    let mut socket = TcpStream::connect(app.addr).await.expect("connect");
    let head = format!(
        "GET {target} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n",
        app.addr
    );
    socket.write_all(head.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, socket.read_to_end(&mut answer))
        .await
        .expect("the server answers in time")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn every_method_reaches_the_api_signed_and_unchanged_for_every_signature_method() {
    for signature_method in METHODS {
        // Arrange
        let app = TestApp::spawn_with(Options {
            signature_method,
            ..Options::default()
        })
        .await;
        let (browser, token) = browser_and_token(&app).await;
        let service = service_client();
        let json_body = r#"{"name":"Ada","tags":["a&b","c=d"],"n":1}"#;
        let form_body = "name=Ada+L&x=1%262&x=&empty=&plus=%2B&u=%E2%9C%93";

        // Act and assert: GET with a tricky query, from the browser.
        let got = echo(browser.get(app.at(&format!("/api/v2/echo?{TRICKY_QUERY}")))).await;
        assert_eq!(got["method"], "GET");
        assert_eq!(got["path"], "/v2/echo");
        assert_eq!(got["raw_query"], TRICKY_QUERY, "{signature_method}");
        let expected: Vec<(String, String)> = [
            ("a", "1"),
            ("a", "2"),
            ("b", "x&y=z"),
            ("c", "✓"),
            ("d", "a b"),
            ("e", ""),
            ("A", "1"),
            ("a-b", "2"),
            ("a.b", "3"),
            ("a_b", "4"),
            ("f", "x=y"),
            ("g", "+"),
        ]
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .to_vec();
        assert_eq!(pairs(&got, "query"), expected);
        assert_eq!(got["oauth"]["oauth_signature_method"], signature_method);
        assert_eq!(got["oauth"]["oauth_consumer_key"], FakeApi::CONSUMER_KEY);

        // A form POST with a query too: both sets of parameters are signed.
        let got = echo(
            service
                .post(app.at("/api/v2/forms?a=1&a=0"))
                .bearer_auth(&token)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form_body),
        )
        .await;
        assert_eq!(got["method"], "POST");
        assert_eq!(got["raw_query"], "a=1&a=0");
        assert_eq!(got["body_text"], form_body);
        assert_eq!(got["body_len"], form_body.len());

        // JSON POST from the browser's own page.
        let got = echo(
            browser
                .post(app.at("/api/v4/things?dry_run=true"))
                .header("origin", &app.url)
                .header("content-type", "application/json")
                .body(json_body),
        )
        .await;
        assert_eq!(
            (got["method"].as_str(), got["path"].as_str()),
            (Some("POST"), Some("/v4/things"))
        );
        assert_eq!(got["body_text"], json_body);
        assert_eq!(got["body_sha256"], sha256_hex(json_body.as_bytes()));

        // PUT, PATCH and DELETE with a bearer token.
        for method in [Method::PUT, Method::PATCH] {
            let got = echo(
                service
                    .request(method.clone(), app.at("/api/v2/organisations/o/apps/a"))
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(json_body),
            )
            .await;
            assert_eq!(got["method"], method.as_str());
            assert_eq!(got["body_text"], json_body);
        }
        let got = echo(
            service
                .delete(app.at("/api/v2/self/tokens/t%2Fx"))
                .bearer_auth(&token),
        )
        .await;
        assert_eq!(got["method"], "DELETE");
        assert_eq!(got["path"], "/v2/self/tokens/t%2Fx");
        assert_eq!(got["body_len"], 0);

        // The API's own v2 and v4 answers.
        let (status, user) = send_json(browser.get(app.at("/api/v2/self"))).await;
        assert_eq!(
            (status, user["id"].as_str()),
            (StatusCode::OK, Some(FAKE_USER_ID))
        );
        let (status, summary) =
            send_json(service.get(app.at("/api/v2/summary")).bearer_auth(&token)).await;
        assert_eq!(status, StatusCode::OK);
        assert!(summary["organisations"].is_array(), "{summary}");
        let logs =
            "/v4/logs/organisations/o/applications/a/logs?since=2024-01-01T00:00:00Z&limit=10";
        let stream = service
            .get(app.at(&format!("/api{logs}")))
            .bearer_auth(&token)
            .send()
            .await
            .expect("GET the v4 logs");
        assert_eq!(stream.status(), StatusCode::OK, "the stream opened");
        let got = app
            .api
            .requests()
            .into_iter()
            .rfind(|request| request.path.starts_with("/v4/logs/"))
            .expect("the v4 logs call reached the API");
        assert_eq!(
            format!("{}?{}", got.path, got.raw_query.unwrap_or_default()),
            logs
        );
        drop(stream);

        // Every call was signed with a fresh nonce (the fake refuses reuse),
        // and the fake verified each of them.
        let signed = app
            .api
            .requests()
            .into_iter()
            .filter(|request| !request.path.starts_with("/v2/oauth/"))
            .filter(|request| {
                request.header("authorization").is_some_and(|value| {
                    value.contains(&format!("oauth_signature_method=\"{signature_method}\""))
                })
            })
            .count();
        // Nine proxied calls, and the login's own `GET /v2/self`.
        assert_eq!(signed, 10, "{signature_method}");
    }
}

#[tokio::test]
async fn no_cookie_credential_or_hop_by_hop_header_reaches_the_api_and_no_cookie_comes_back() {
    // Arrange
    let app = TestApp::spawn().await;
    let (browser, token) = browser_and_token(&app).await;

    // Act
    let from_browser = browser
        .get(app.at("/api/v2/echo"))
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "secret hop")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic c2VjcmV0")
        .header("te", "trailers")
        .header("x-custom", "kept")
        .send()
        .await
        .expect("GET through the proxy");
    let from_service = service_client()
        .get(app.at("/api/v2/echo"))
        .bearer_auth(&token)
        .header("cookie", "foreign=1")
        .send()
        .await
        .expect("GET through the proxy");

    // Assert: the answers keep the API's headers but not its cookie or CORS grant.
    for response in [&from_browser, &from_service] {
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers().get("set-cookie").is_none());
        assert!(
            response
                .headers()
                .get("access-control-allow-origin")
                .is_none()
        );
        assert_eq!(
            response.headers().get("x-fake-api").map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
    }
    let recorded = app.api.requests();
    let api_calls: Vec<_> = recorded
        .iter()
        .filter(|request| request.path == "/v2/echo")
        .collect();
    assert_eq!(api_calls.len(), 2);
    for request in api_calls {
        for name in ["cookie", "x-hop", "keep-alive", "proxy-authorization", "te"] {
            assert_eq!(request.header(name), None, "{name} reached the API");
        }
        let authorization = request.header("authorization").unwrap_or_default();
        assert!(authorization.starts_with("OAuth "), "{authorization}");
        assert!(!authorization.contains(&token));
        assert_eq!(
            request
                .headers
                .iter()
                .filter(|(name, _)| name == "authorization")
                .count(),
            1
        );
        assert_eq!(
            request.header("host"),
            Some(app.api.addr().to_string().as_str())
        );
    }
    assert_eq!(
        recorded
            .iter()
            .filter(|r| r.path == "/v2/echo")
            .filter(|r| r.header("x-custom") == Some("kept"))
            .count(),
        1
    );
}

#[tokio::test]
async fn server_sent_events_arrive_one_by_one_while_the_stream_is_open() {
    // Arrange: the second event is ten minutes away.
    let app = TestApp::spawn().await;
    let (_browser, token) = browser_and_token(&app).await;

    // Act
    let mut response = service_client()
        .get(app.at("/api/v2/test/stream/sse?count=2&interval_ms=600000"))
        .bearer_auth(&token)
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("GET the event stream");

    // Assert: the first event arrives on its own, the stream still open.
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers().get("content-type").map(|v| v.as_bytes()),
        Some(&b"text/event-stream"[..])
    );
    let mut received = String::new();
    while !received.contains("\n\n") {
        let chunk = tokio::time::timeout(PATIENCE, response.chunk())
            .await
            .expect("the first event arrives before the second is even due")
            .expect("the stream is readable")
            .expect("the stream is still open");
        received.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(received.contains("event: APPLICATION_LOG"), "{received}");
    assert!(received.contains("id: 0"), "{received}");
    assert!(received.contains(r#"data: {"n":0}"#), "{received}");
    assert!(!received.contains("id: 1"), "{received}");
}

/// Resident memory figures of this process, in KiB.
fn memory_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"))
}

/// Runs `transfer` and returns how far the process's peak resident memory
/// rose above its level before, in MiB. The peak is reset first (Linux
/// `clear_refs` 5), so an earlier peak cannot hide this one.
async fn peak_growth_mib<F: std::future::Future<Output = ()>>(transfer: F) -> u64 {
    let before = memory_kib("VmRSS");
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak resident memory");
    transfer.await;
    memory_kib("VmHWM").saturating_sub(before) / 1024
}

#[tokio::test]
async fn fifty_mib_down_and_twenty_up_pass_whole_with_bounded_memory() {
    const DOWN: u64 = 50 * 1024 * 1024;
    const UP: u64 = 20 * 1024 * 1024;
    const CHUNK: u64 = 64 * 1024;
    // Buffering a payload would raise the peak by at least its size.
    const BOUND_MIB: u64 = 12;

    // Arrange
    let app = TestApp::spawn().await;
    let (_browser, token) = browser_and_token(&app).await;
    let service = service_client();

    // Act: download, hashing as the bytes arrive.
    let mut down = (0_u64, String::new());
    let down_growth = peak_growth_mib(async {
        let mut response = service
            .get(app.at(&format!("/api/v2/test/download?bytes={DOWN}")))
            .bearer_auth(&token)
            .send()
            .await
            .expect("GET /api/v2/test/download");
        assert_eq!(response.status(), StatusCode::OK);
        let mut hasher = Sha256::new();
        while let Some(chunk) = tokio::time::timeout(PATIENCE, response.chunk())
            .await
            .expect("bytes keep coming")
            .expect("download readable")
        {
            hasher.update(&chunk);
            down.0 += chunk.len() as u64;
        }
        down.1 = format!("{:x}", hasher.finalize());
    })
    .await;

    // Act: upload a generated stream, without a length.
    let mut up = Value::Null;
    let up_growth = peak_growth_mib(async {
        let chunks = stream::iter((0..UP).step_by(CHUNK as usize)).map(|start| {
            let bytes: Vec<u8> = (start..start + CHUNK).map(FakeApi::download_byte).collect();
            Ok::<_, std::io::Error>(bytes)
        });
        up = echo(
            service
                .put(app.at("/api/v2/upload"))
                .bearer_auth(&token)
                .header("content-type", "application/octet-stream")
                .body(reqwest::Body::wrap_stream(chunks)),
        )
        .await;
    })
    .await;

    // Assert
    let mut expected = Sha256::new();
    for start in (0..DOWN).step_by(CHUNK as usize) {
        let chunk: Vec<u8> = (start..start + CHUNK).map(FakeApi::download_byte).collect();
        expected.update(&chunk);
        if start + CHUNK == UP {
            assert_eq!(
                up["body_sha256"],
                format!("{:x}", expected.clone().finalize())
            );
        }
    }
    assert_eq!(down, (DOWN, format!("{:x}", expected.finalize())));
    assert_eq!(up["body_len"], UP);
    println!("peak memory growth: download {down_growth} MiB, upload {up_growth} MiB");
    assert!(
        down_growth < BOUND_MIB,
        "download raised memory by {down_growth} MiB"
    );
    assert!(
        up_growth < BOUND_MIB,
        "upload raised memory by {up_growth} MiB"
    );
}

#[tokio::test]
async fn refused_paths_never_reach_the_api() {
    // Arrange
    let app = TestApp::spawn().await;
    let (_browser, token) = browser_and_token(&app).await;

    let dots = "dot segments";
    let empty = "empty path segments";
    let backslash = "backslashes";
    let absolute = "absolute-form";
    let refusals = [
        ("/api/../v2/self".to_owned(), dots),
        ("/api/v2/../../v2/self".to_owned(), dots),
        ("/api/v2/./self".to_owned(), dots),
        ("/api/%2e%2e/v2/self".to_owned(), dots),
        ("/api/.%2E/v2/self".to_owned(), dots),
        ("/api/%2E./v2/self".to_owned(), dots),
        ("/api/v2/..%2f..%2fself".to_owned(), dots),
        ("/api//evil.example/v2/self".to_owned(), empty),
        ("/api/v2//self".to_owned(), empty),
        ("/api/%5cevil.example/v2/self".to_owned(), backslash),
        ("/api/v2/%5C%5Cevil.example".to_owned(), backslash),
        ("/api/\\evil.example/v2/self".to_owned(), backslash),
        ("http://evil.example/api/v2/self".to_owned(), absolute),
        (format!("http://{}/api/v2/self", app.addr), absolute),
    ];

    // Act
    let mut answers = Vec::new();
    for (target, _) in &refusals {
        answers.push(raw_get(&app, target, &token).await);
    }

    // Assert
    for ((target, reason), (status, body)) in refusals.iter().zip(&answers) {
        assert_eq!(*status, 400, "{target}: {body}");
        let error: Value = serde_json::from_str(body).unwrap_or_default();
        assert!(
            error["error"]
                .as_str()
                .is_some_and(|text| text.contains(reason)),
            "{target}: {body}"
        );
    }
    assert_eq!(app.api.api_request_count(), 0, "{:?}", app.api.requests());

    // The same token and socket route do work for a clean path.
    let (status, _) = raw_get(&app, "/api/v2/self", &token).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn auth_failures_never_reach_the_api() {
    // Arrange
    let app = TestApp::spawn().await;
    let browser_client = app.logged_in_browser().await;
    let stranger = browser();

    // Act
    let answers = [
        send_json(stranger.get(app.at("/api/v2/self"))).await,
        send_json(stranger.post(app.at("/api/v2/echo")).body("x")).await,
        send_json(
            service_client()
                .get(app.at("/api/v2/self"))
                .bearer_auth("ocsp_not-a-real-token"),
        )
        .await,
        send_json(
            service_client()
                .get(app.at("/api/v2/self"))
                .header("authorization", "Basic YTpi"),
        )
        .await,
        send_json(
            browser_client
                .post(app.at("/api/v2/echo"))
                .header("origin", "https://evil.example")
                .body("x"),
        )
        .await,
        send_json(browser_client.delete(app.at("/api/v2/self/tokens/x"))).await,
    ];

    // Assert
    let statuses: Vec<StatusCode> = answers.iter().map(|(status, _)| *status).collect();
    assert_eq!(
        statuses,
        [
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::FORBIDDEN,
            StatusCode::FORBIDDEN,
        ]
    );
    assert!(answers.iter().all(|(_, body)| body["error"].is_string()));
    assert_eq!(app.api.api_request_count(), 0, "{:?}", app.api.requests());
}

#[tokio::test]
async fn an_unreachable_api_gives_502_and_a_silent_one_504() {
    // Arrange: one server whose API goes down, one whose API hangs.
    let down = TestApp::spawn().await;
    let down_browser = down.logged_in_browser().await;
    down.api.stop().await;
    let slow = TestApp::spawn_with(Options {
        extra_args: vec!["--api-idle-timeout-secs".to_owned(), "1".to_owned()],
        ..Options::default()
    })
    .await;
    let slow_browser = slow.logged_in_browser().await;
    slow.api.set_mode(Mode::Hang);

    // Act
    let (down_status, down_body) = send_json(down_browser.get(down.at("/api/v2/self"))).await;
    let (slow_status, slow_body) = send_json(slow_browser.get(slow.at("/api/v2/self"))).await;

    // Assert
    assert_eq!(down_status, StatusCode::BAD_GATEWAY, "{down_body}");
    assert!(
        down_body["error"]
            .as_str()
            .is_some_and(|e| e.contains("could not be reached")),
        "{down_body}"
    );
    assert_eq!(slow_status, StatusCode::GATEWAY_TIMEOUT, "{slow_body}");
    assert!(
        slow_body["error"]
            .as_str()
            .is_some_and(|e| e.contains("stopped answering")),
        "{slow_body}"
    );
    assert_eq!(
        slow.api.api_request_count(),
        1,
        "the hanging call did reach the API"
    );
}

#[tokio::test]
async fn form_bodies_over_the_limit_get_413_and_are_not_sent() {
    // Arrange
    let app = TestApp::spawn_with(Options {
        extra_args: vec!["--proxy-form-limit-bytes".to_owned(), "1024".to_owned()],
        ..Options::default()
    })
    .await;
    let (_browser, token) = browser_and_token(&app).await;
    let service = service_client();
    let form = |len: usize| format!("x={}", "a".repeat(len - 2));

    // Act
    let (too_big, body) = send_json(
        service
            .post(app.at("/api/v2/forms"))
            .bearer_auth(&token)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(1025)),
    )
    .await;
    let count_after_refusal = app.api.api_request_count();
    let at_limit = echo(
        service
            .post(app.at("/api/v2/forms"))
            .bearer_auth(&token)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(1024)),
    )
    .await;

    // Assert
    assert_eq!(too_big, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("1024")),
        "{body}"
    );
    assert_eq!(count_after_refusal, 0);
    assert_eq!(at_limit["body_len"], 1024);
    // Other bodies of any size stream without that limit.
    let big_json = json!({ "blob": "b".repeat(4096) }).to_string();
    let got = echo(
        service
            .post(app.at("/api/v2/blobs"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(big_json.clone()),
    )
    .await;
    assert_eq!(got["body_sha256"], sha256_hex(big_json.as_bytes()));
}

#[tokio::test]
async fn a_session_ended_here_is_refused_by_the_proxy_at_once() {
    // Arrange: the proxy has just served the session, so remembers it.
    let app = TestApp::spawn().await;
    let (browser, cookie) = app.logged_in_browser_and_cookie().await;
    for _ in 0..3 {
        assert_eq!(app.cookie_status(&cookie).await, StatusCode::OK);
    }

    // Act
    app.log_out(&browser).await;

    // Assert
    assert_eq!(app.cookie_status(&cookie).await, StatusCode::UNAUTHORIZED);
}
