//! The WebSocket relays over real sockets: a tokio-tungstenite client, the
//! real server, the fake API's sockets.

use std::time::Duration;

use futures_util::SinkExt as _;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use crate::support::fake_api::verify::SignatureMethod;
use crate::support::fake_api::{AUTH_FAILED_CLOSE, FakeSocket};
use crate::support::ws::{
    Auth, close_frame, expect_ready, next, next_json, open, open_as_browser, open_as_browser_result,
};
use crate::support::{Mode, Options, TestApp};

/// Waits until no relay is open on `app`.
async fn all_relays_closed(app: &TestApp) -> bool {
    app.api.wait_until(|_| app.relays().open() == 0).await
}

fn app_with(extra: &[&str]) -> Options {
    Options {
        extra_args: extra.iter().map(|arg| (*arg).to_owned()).collect(),
        ..Options::default()
    }
}

#[tokio::test]
async fn events_arrive_in_order_and_client_messages_reach_the_api() {
    // Arrange
    let app = TestApp::spawn().await;
    let (_browser, cookie) = app.logged_in_browser_and_cookie().await;
    let mut client = open_as_browser(&app, &cookie, "/ws/events").await;
    let socket = app.api.socket(0).await;
    expect_ready(&mut client).await;

    // Act
    for n in 0..5 {
        socket.send_event("DEPLOYMENT_ACTION_BEGIN", &json!({ "id": "app_1", "n": n }));
    }
    client
        .send(Message::text(r#"{"hello":"api"}"#))
        .await
        .expect("send");

    // Assert
    assert_eq!(socket.path, "/v2/events/event-socket");
    assert_eq!(socket.auth(), Some(Ok(SignatureMethod::HmacSha512)));
    for n in 0..5 {
        let event = next_json(&mut client).await;
        assert_eq!(event["event"], "DEPLOYMENT_ACTION_BEGIN");
        let data: Value = serde_json::from_str(event["data"].as_str().expect("data is a string"))
            .expect("data holds JSON");
        assert_eq!(data["n"], n, "in order");
    }
    assert_eq!(
        next_json(&mut client).await,
        json!({ "hello": "api" }),
        "the API's echo"
    );
    assert_eq!(socket.received(), [r#"{"hello":"api"}"#]);

    let handshake = app
        .api
        .requests()
        .into_iter()
        .find(|request| request.path == "/v2/events/event-socket")
        .expect("the upstream handshake was recorded");
    for secret_header in ["cookie", "authorization"] {
        assert_eq!(
            handshake.header(secret_header),
            None,
            "{secret_header} not passed on"
        );
    }
}

#[tokio::test]
async fn log_lines_arrive_in_order_and_the_query_reaches_the_logs_socket() {
    let app = TestApp::spawn().await;
    let (_browser, cookie) = app.logged_in_browser_and_cookie().await;
    let query = "since=2024-05-01T00%3A00%3A00Z&filter=error&deployment_id=dep_1";
    let path = format!("/ws/logs/app_00000000-0000-4000-8000-000000000001?{query}");

    let mut client = open_as_browser(&app, &cookie, &path).await;
    let socket = app.api.socket(0).await;
    expect_ready(&mut client).await;
    for line in ["starting", "listening on 8080", "ready"] {
        socket.send_log_line(line);
    }

    assert_eq!(
        socket.path,
        "/v2/logs/logs-socket/app_00000000-0000-4000-8000-000000000001"
    );
    assert_eq!(socket.raw_query.as_deref(), Some(query));
    assert_eq!(socket.auth(), Some(Ok(SignatureMethod::HmacSha512)));
    for line in ["starting", "listening on 8080", "ready"] {
        assert_eq!(next_json(&mut client).await["_source"]["message"], line);
    }
}

#[tokio::test]
async fn both_sockets_are_signed_as_the_api_expects_with_every_method() {
    for (name, method) in [
        ("HMAC-SHA512", SignatureMethod::HmacSha512),
        ("HMAC-SHA1", SignatureMethod::HmacSha1),
        ("PLAINTEXT", SignatureMethod::Plaintext),
    ] {
        let app = TestApp::spawn_with(Options {
            signature_method: name,
            ..Options::default()
        })
        .await;
        let (_browser, cookie) = app.logged_in_browser_and_cookie().await;

        let mut events = open_as_browser(&app, &cookie, "/ws/events").await;
        let mut logs = open_as_browser(&app, &cookie, "/ws/logs/app_1?since=x").await;
        expect_ready(&mut events).await;
        expect_ready(&mut logs).await;

        for socket in app.api.sockets() {
            assert_eq!(socket.auth(), Some(Ok(method)), "{name}: {}", socket.path);
        }
    }
}

const HEARTBEAT_PING: &str =
    r#"{"type":"heartbeat","heartbeat_msg":"ping","heartbeat_delay_ms":5000}"#;
const HEARTBEAT_PONG: &str = r#"{"type":"heartbeat","heartbeat_msg":"pong"}"#;

#[tokio::test]
async fn the_relay_answers_heartbeats_while_the_client_is_silent() {
    let app = TestApp::spawn().await;
    app.api
        .set_heartbeat_interval(Some(Duration::from_millis(20)));
    let (_browser, cookie) = app.logged_in_browser_and_cookie().await;
    let mut client = open_as_browser(&app, &cookie, "/ws/events").await;
    let socket = app.api.socket(0).await;

    // The client reads nothing while the API pings.
    let answered = socket.wait_until(|socket| socket.pongs() >= 5).await;

    assert!(answered, "pongs counted upstream");
    assert!(socket.pongs() <= socket.pings_sent());
    expect_ready(&mut client).await;
    let ping = next_json(&mut client).await;
    assert_eq!(
        (ping["type"].as_str(), ping["heartbeat_msg"].as_str()),
        (Some("heartbeat"), Some("ping")),
        "the pings still reach the client"
    );
}

#[tokio::test]
async fn the_clients_own_heartbeat_pongs_are_not_passed_on() {
    let app = TestApp::spawn().await;
    let (_browser, cookie) = app.logged_in_browser_and_cookie().await;
    let mut client = open_as_browser(&app, &cookie, "/ws/events").await;
    let socket = app.api.socket(0).await;
    expect_ready(&mut client).await;

    socket.send_text(HEARTBEAT_PING);
    assert_eq!(next(&mut client).await, Some(Message::text(HEARTBEAT_PING)));
    client
        .send(Message::text(HEARTBEAT_PONG))
        .await
        .expect("send pong");
    client
        .send(Message::text("marker"))
        .await
        .expect("send marker");

    // Messages keep their order, so a relayed pong would arrive before the marker.
    assert!(
        socket
            .wait_until(|socket| !socket.received().is_empty())
            .await
    );
    assert_eq!(socket.received(), ["marker"]);
    assert_eq!(
        socket.pongs(),
        1,
        "the relay's own answer, and no second one"
    );
}

#[tokio::test]
async fn the_apis_close_reaches_the_client_with_its_code() {
    let app = TestApp::spawn().await;
    let (_browser, cookie) = app.logged_in_browser_and_cookie().await;
    let mut client = open_as_browser(&app, &cookie, "/ws/events").await;
    let socket = app.api.socket(0).await;
    expect_ready(&mut client).await;

    socket.send_text("last words");
    socket.close(4002, "forced");

    assert_eq!(next(&mut client).await, Some(Message::text("last words")));
    assert_eq!(close_frame(&mut client).await, (4002, "forced".to_owned()));
    assert!(all_relays_closed(&app).await);
    assert!(socket.wait_until(FakeSocket::ended).await);
}

#[tokio::test]
async fn the_clients_close_reaches_the_api_with_its_code() {
    let app = TestApp::spawn().await;
    let (_browser, cookie) = app.logged_in_browser_and_cookie().await;
    let mut client = open_as_browser(&app, &cookie, "/ws/events").await;
    let socket = app.api.socket(0).await;
    expect_ready(&mut client).await;

    client
        .close(Some(CloseFrame {
            code: 4000.into(),
            reason: "done here".into(),
        }))
        .await
        .expect("close");

    assert!(
        socket
            .wait_until(|socket| socket.close_received().is_some())
            .await
    );
    assert_eq!(
        socket.close_received(),
        Some((4000, "done here".to_owned()))
    );
    assert_eq!(
        close_frame(&mut client).await.0,
        4000,
        "the handshake is answered"
    );
    assert!(all_relays_closed(&app).await);
}

#[tokio::test]
async fn an_api_that_drops_the_connection_closes_the_client_with_1011() {
    let app = TestApp::spawn().await;
    let (_browser, cookie) = app.logged_in_browser_and_cookie().await;
    let mut client = open_as_browser(&app, &cookie, "/ws/events").await;
    let socket = app.api.socket(0).await;
    expect_ready(&mut client).await;

    socket.vanish();

    assert_eq!(close_frame(&mut client).await.0, 1011);
    assert!(all_relays_closed(&app).await);
}

#[tokio::test]
async fn an_unreachable_or_refusing_api_answers_before_the_upgrade() {
    let app = TestApp::spawn_with(app_with(&["--api-connect-timeout-secs", "1"])).await;
    let (_browser, cookie) = app.logged_in_browser_and_cookie().await;

    app.api.set_mode(Mode::ServerError);
    let refused = open_as_browser_result(&app, &cookie, "/ws/events")
        .await
        .err();
    assert_eq!(
        refused.as_ref().map(|(status, _)| *status),
        Some(StatusCode::BAD_GATEWAY)
    );
    assert!(
        refused.is_some_and(|(_, body)| body["error"].is_string()),
        "a JSON error"
    );

    app.api.set_mode(Mode::Hang);
    let slow = open_as_browser_result(&app, &cookie, "/ws/events")
        .await
        .err();
    assert_eq!(
        slow.map(|(status, _)| status),
        Some(StatusCode::GATEWAY_TIMEOUT)
    );

    app.api.stop().await;
    let unreachable = open_as_browser_result(&app, &cookie, "/ws/events")
        .await
        .err();
    assert_eq!(
        unreachable.map(|(status, _)| status),
        Some(StatusCode::BAD_GATEWAY)
    );
    assert_eq!(app.relays().open(), 0, "nothing left open");
}

#[tokio::test]
async fn a_refused_authentication_closes_the_client_with_1008() {
    let app = TestApp::spawn().await;
    let (_browser, cookie) = app.logged_in_browser_and_cookie().await;
    app.api.refuse_socket_auth(true);

    let mut client = open_as_browser(&app, &cookie, "/ws/events").await;

    let error = next_json(&mut client).await;
    assert_eq!(
        (error["type"].as_str(), error["id"].as_u64()),
        (Some("error"), Some(2001))
    );
    let (code, reason) = close_frame(&mut client).await;
    assert_eq!(code, 1008);
    assert!(!reason.is_empty(), "the close says why");
    let socket = app.api.socket(0).await;
    assert!(matches!(socket.auth(), Some(Err(_))));
    assert!(
        socket.wait_until(FakeSocket::ended).await,
        "the API side is closed too ({AUTH_FAILED_CLOSE})"
    );
    assert!(all_relays_closed(&app).await);
}

#[tokio::test]
async fn callers_without_valid_credentials_are_refused_before_anything_opens() {
    let app = TestApp::spawn().await;
    let (_browser, cookie) = app.logged_in_browser_and_cookie().await;
    let before = app.api.api_request_count();
    let ours = app.url.clone();

    let cases = [
        ("no credentials", Auth::Anonymous, StatusCode::UNAUTHORIZED),
        (
            "unknown token",
            Auth::Bearer("ocsp_not-a-real-token"),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "foreign origin",
            Auth::Cookie {
                cookie: &cookie,
                origin: Some("https://evil.example"),
            },
            StatusCode::FORBIDDEN,
        ),
        (
            "no origin",
            Auth::Cookie {
                cookie: &cookie,
                origin: None,
            },
            StatusCode::FORBIDDEN,
        ),
        (
            "stale cookie",
            Auth::Cookie {
                cookie: "ocs_session=forged",
                origin: Some(&ours),
            },
            StatusCode::UNAUTHORIZED,
        ),
    ];
    for path in ["/ws/events", "/ws/logs/app_1"] {
        for (what, auth, status) in cases {
            let refused = open(&app, path, auth).await.err();
            assert_eq!(
                refused.as_ref().map(|(status, _)| *status),
                Some(status),
                "{what} on {path}"
            );
            assert!(
                refused.is_some_and(|(_, body)| body["error"].is_string()),
                "{what}: JSON error"
            );
        }
    }
    let bad_id = open(
        &app,
        "/ws/logs/..%2Fself",
        Auth::Cookie {
            cookie: &cookie,
            origin: Some(&ours),
        },
    )
    .await;
    assert_eq!(
        bad_id.err().map(|(status, _)| status),
        Some(StatusCode::BAD_REQUEST)
    );

    assert_eq!(
        app.api.api_request_count(),
        before,
        "nothing reached the API"
    );
    assert!(app.api.sockets().is_empty());
}

#[tokio::test]
async fn a_request_that_is_no_websocket_upgrade_is_refused_before_the_api_is_called() {
    let app = TestApp::spawn().await;
    let (_browser, cookie) = app.logged_in_browser_and_cookie().await;
    let get = |version: Option<&'static str>| {
        let mut request = crate::support::service_client()
            .get(app.at("/ws/events"))
            .header("cookie", &cookie)
            .header("origin", &app.url);
        if let Some(version) = version {
            request = request
                .header("connection", "Upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
                .header("sec-websocket-version", version);
        }
        request.send()
    };

    for (version, why) in [
        (None, "a plain GET"),
        (Some("8"), "an old protocol version"),
    ] {
        let response = get(version).await.expect("GET /ws/events");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{why}");
        let body: Value = response.json().await.expect("a JSON error");
        assert!(body["error"].is_string(), "{why}: {body}");
    }
    assert_eq!(app.relays().open(), 0);
    assert!(
        app.api
            .requests()
            .iter()
            .all(|request| request.path != "/v2/events/event-socket"),
        "the API's socket was not opened"
    );
}

#[tokio::test]
async fn a_proxy_token_opens_a_relay_without_a_cookie() {
    let app = TestApp::spawn().await;
    let browser = app.logged_in_browser().await;
    let token = app.create_proxy_token(&browser, "relay test").await.token;

    let mut client = open(&app, "/ws/events", Auth::Bearer(&token))
        .await
        .unwrap_or_else(|(status, body)| panic!("{status} {body}"));
    let socket = app.api.socket(0).await;
    expect_ready(&mut client).await;
    socket.send_event("GIT_PUSH", &json!({ "appId": "app_1" }));

    assert_eq!(socket.auth(), Some(Ok(SignatureMethod::HmacSha512)));
    assert_eq!(next_json(&mut client).await["event"], "GIT_PUSH");
}

#[tokio::test]
async fn a_caller_past_its_limit_gets_429() {
    let app = TestApp::spawn_with(app_with(&["--relay-max-per-caller", "2"])).await;
    let (browser, cookie) = app.logged_in_browser_and_cookie().await;
    let token = app.create_proxy_token(&browser, "relay test").await.token;

    let mut first = open_as_browser(&app, &cookie, "/ws/events").await;
    let _second = open_as_browser(&app, &cookie, "/ws/logs/app_1").await;
    let third = open_as_browser_result(&app, &cookie, "/ws/events")
        .await
        .err();
    let other_caller = open(&app, "/ws/events", Auth::Bearer(&token)).await;

    assert_eq!(
        third.map(|(status, _)| status),
        Some(StatusCode::TOO_MANY_REQUESTS)
    );
    assert!(
        other_caller.is_ok(),
        "the proxy token has its own allowance"
    );
    assert_eq!(
        app.api.sockets().len(),
        3,
        "the refused one opened nothing upstream"
    );

    first.close(None).await.expect("close");
    assert!(app.api.wait_until(|_| app.relays().open() == 2).await);
    assert!(
        open_as_browser_result(&app, &cookie, "/ws/events")
            .await
            .is_ok(),
        "a freed slot is usable"
    );
}

#[tokio::test]
async fn too_large_messages_close_with_1009() {
    let app = TestApp::spawn_with(app_with(&["--relay-max-message-bytes", "1024"])).await;
    let (_browser, cookie) = app.logged_in_browser_and_cookie().await;

    let mut client = open_as_browser(&app, &cookie, "/ws/events").await;
    expect_ready(&mut client).await;
    client
        .send(Message::text("x".repeat(2000)))
        .await
        .expect("send");
    assert_eq!(
        close_frame(&mut client).await.0,
        1009,
        "client's message too big"
    );

    let mut client = open_as_browser(&app, &cookie, "/ws/events").await;
    let socket = app.api.socket(1).await;
    expect_ready(&mut client).await;
    socket.send_text("y".repeat(2000));
    assert_eq!(
        close_frame(&mut client).await.0,
        1009,
        "API's message too big"
    );
    assert!(all_relays_closed(&app).await);
}

#[tokio::test]
async fn an_idle_relay_is_closed_with_1001() {
    let app = TestApp::spawn_with(app_with(&["--relay-idle-timeout-secs", "1"])).await;
    let (_browser, cookie) = app.logged_in_browser_and_cookie().await;
    let mut client = open_as_browser(&app, &cookie, "/ws/events").await;

    expect_ready(&mut client).await;
    assert_eq!(
        close_frame(&mut client).await,
        (1001, "idle time-out".to_owned())
    );
}

#[tokio::test]
async fn a_flood_reaches_a_fast_client_whole_and_in_order() {
    const COUNT: usize = 20_000;
    let app = TestApp::spawn().await;
    let (_browser, cookie) = app.logged_in_browser_and_cookie().await;
    let mut client = open_as_browser(&app, &cookie, "/ws/events").await;
    let socket = app.api.socket(0).await;
    expect_ready(&mut client).await;

    socket.flood(COUNT, 100);

    for n in 0..COUNT {
        let message = next_json(&mut client).await;
        assert_eq!(message["n"], n, "message {n} whole and in order");
    }
}

#[tokio::test]
async fn shutdown_closes_every_relay_with_1001() {
    let app = TestApp::spawn().await;
    let (browser, cookie) = app.logged_in_browser_and_cookie().await;
    let token = app.create_proxy_token(&browser, "relay test").await.token;
    let mut by_cookie = open_as_browser(&app, &cookie, "/ws/events").await;
    let mut by_token = open(&app, "/ws/logs/app_1", Auth::Bearer(&token))
        .await
        .unwrap_or_else(|(status, body)| panic!("{status} {body}"));
    expect_ready(&mut by_cookie).await;
    expect_ready(&mut by_token).await;

    app.shutdown();

    assert_eq!(close_frame(&mut by_cookie).await.0, 1001);
    assert_eq!(close_frame(&mut by_token).await.0, 1001);
    for socket in app.api.sockets() {
        assert!(
            socket
                .wait_until(|socket| socket.close_received().is_some())
                .await
        );
        assert_eq!(socket.close_received().map(|(code, _)| code), Some(1001));
    }
    assert!(all_relays_closed(&app).await);
}

#[tokio::test]
async fn metrics_count_open_relays_and_time_the_apis_handshakes() {
    const METRICS_TOKEN: &str = "metrics-token-for-relay-tests-0123";
    let app = TestApp::spawn_with(app_with(&["--metrics-token", METRICS_TOKEN])).await;
    let (_browser, cookie) = app.logged_in_browser_and_cookie().await;
    let scrape = || async {
        let response = crate::support::service_client()
            .get(app.at("/metrics"))
            .bearer_auth(METRICS_TOKEN)
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(response.status(), StatusCode::OK);
        let text = response.text().await.expect("metrics body");
        text.lines().map(str::to_owned).collect::<Vec<_>>()
    };

    let mut events = open_as_browser(&app, &cookie, "/ws/events").await;
    let mut logs = open_as_browser(&app, &cookie, "/ws/logs/app_1").await;
    expect_ready(&mut events).await;
    expect_ready(&mut logs).await;
    let while_open = scrape().await;
    app.api.set_mode(Mode::ServerError);
    let refused = open_as_browser_result(&app, &cookie, "/ws/events").await;
    events.close(None).await.expect("close events");
    logs.close(None).await.expect("close logs");
    assert!(all_relays_closed(&app).await);
    let after = scrape().await;

    assert!(refused.is_err(), "the refused handshake opened no relay");
    for expected in [
        "relays_open 2",
        r#"upstream_requests_total{upstream="events",outcome="1xx"} 1"#,
        r#"upstream_requests_total{upstream="logs",outcome="1xx"} 1"#,
        r#"upstream_request_duration_seconds_count{upstream="events"} 1"#,
        r#"upstream_request_duration_seconds_count{upstream="logs"} 1"#,
    ] {
        assert!(
            while_open.iter().any(|line| line == expected),
            "missing {expected} while open:\n{}",
            while_open.join("\n")
        );
    }
    for expected in [
        "relays_open 0",
        r#"upstream_errors_total{upstream="events",outcome="5xx"} 1"#,
        r#"upstream_request_duration_seconds_count{upstream="events"} 2"#,
    ] {
        assert!(
            after.iter().any(|line| line == expected),
            "missing {expected} after closing:\n{}",
            after.join("\n")
        );
    }
}

/// Set in the child process that runs one test alone.
const ALONE_VAR: &str = "OCS_RELAY_TEST_ALONE";

/// Whether this process is the one to run test `name`. Tests that read
/// process-wide figures (open files, memory) must not share the process
/// with the tests running in parallel: the first call re-runs this test
/// binary for `name` alone (with the open-files limit raised to the hard
/// limit), asserts it passed, and returns `false`; in that child it
/// returns `true`.
async fn alone(name: &str) -> bool {
    if std::env::var(ALONE_VAR).as_deref() == Ok(name) {
        return true;
    }
    let binary = std::env::current_exe().expect("the test binary's path");
    let output = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$0" "$@""#)
        .arg(binary)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(ALONE_VAR, name)
        .output()
        .await
        .expect("run the test alone");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "{name}, run alone, failed:\n{stdout}\n{stderr}"
    );
    false
}

/// Resident memory of this process, in KiB.
fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// Open file descriptors of this process (sockets included).
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// Live tasks of the test's runtime, which runs the server, the fake API
/// and the clients.
fn live_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// The `n` of a flood message `{"n":…,"pad":…}`, without parsing the pad.
fn flood_index(message: Option<Message>) -> Option<usize> {
    let Some(Message::Text(text)) = message else {
        return None;
    };
    let rest = text.strip_prefix(r#"{"n":"#)?;
    rest[..rest.find(',')?].parse().ok()
}

/// Samples `value` until two samples 250 ms apart agree (at most 20 s).
async fn settled(value: impl Fn() -> usize) -> usize {
    let mut last = value();
    for _ in 0..80 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = value();
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

#[tokio::test]
async fn a_stalled_client_does_not_grow_the_servers_memory() {
    if !alone("relay::a_stalled_client_does_not_grow_the_servers_memory").await {
        return;
    }
    // 100 MB of messages, far more than the queues and socket buffers hold.
    const COUNT: usize = 50_000;
    const PAD: usize = 2_000;
    const MAX_GROWTH_KIB: u64 = 64 * 1024;
    let app = TestApp::spawn().await;
    let (_browser, cookie) = app.logged_in_browser_and_cookie().await;
    let mut client = open_as_browser(&app, &cookie, "/ws/events").await;
    let socket = app.api.socket(0).await;
    expect_ready(&mut client).await;
    let before = vm_rss_kib();

    // The client reads nothing while the API floods.
    socket.flood(COUNT, PAD);
    let held_back = app
        .api
        .wait_until(|_| app.relays().backpressure_events() >= 1)
        .await;
    let sent = settled(|| socket.flood_sent()).await;
    let grown = vm_rss_kib().saturating_sub(before);

    assert!(held_back, "the relay stopped reading the API");
    assert!(
        sent < COUNT,
        "the API was held back: {sent} of {COUNT} sent"
    );
    assert!(
        grown < MAX_GROWTH_KIB,
        "memory grew by {grown} KiB while the client stalled"
    );
    eprintln!("stalled: {sent} of {COUNT} messages sent, memory +{grown} KiB");

    // Reading again, everything arrives, in order.
    for n in 0..COUNT {
        assert_eq!(flood_index(next(&mut client).await), Some(n));
    }
}

#[tokio::test]
async fn five_hundred_relays_close_and_leave_nothing_behind() {
    if !alone("relay::five_hundred_relays_close_and_leave_nothing_behind").await {
        return;
    }
    const RELAYS: usize = 500;
    let app = TestApp::spawn_with(app_with(&[
        "--relay-max-per-caller",
        "1000",
        "--relays-per-owner",
        "1000",
    ]))
    .await;
    let (_browser, cookie) = app.logged_in_browser_and_cookie().await;
    // One relay opened and closed first, so that what is made once (pools,
    // buffers) is in the baseline.
    let mut warm_up = open_as_browser(&app, &cookie, "/ws/events").await;
    expect_ready(&mut warm_up).await;
    warm_up.close(None).await.expect("close");
    while next(&mut warm_up).await.is_some() {}
    drop(warm_up);
    assert!(all_relays_closed(&app).await);
    assert!(app.api.socket(0).await.wait_until(FakeSocket::ended).await);
    let (fds, tasks) = (open_fds(), live_tasks());

    // Open 500 at once, half of each kind.
    let opening = (0..RELAYS).map(|n| {
        let path = if n % 2 == 0 {
            "/ws/events"
        } else {
            "/ws/logs/app_1?since=x"
        };
        let cookie = &cookie;
        let app = &app;
        async move {
            let mut client = open_as_browser(app, cookie, path).await;
            expect_ready(&mut client).await;
            client
        }
    });
    let mut clients = futures_util::future::join_all(opening).await;
    assert_eq!(app.relays().open(), RELAYS);
    assert!(
        open_fds() >= fds + 4 * RELAYS,
        "client, server (2) and API sockets of every relay are counted"
    );

    // Half are closed by their clients...
    let closed_by_api = clients.split_off(RELAYS / 2);
    for mut client in clients {
        client.close(None).await.expect("close");
        while next(&mut client).await.is_some() {}
    }
    assert!(
        app.api
            .wait_until(|_| app.relays().open() == RELAYS / 2)
            .await
    );
    // ...the other half by the API.
    for socket in app.api.sockets() {
        if !socket.ended() && socket.close_received().is_none() {
            socket.close(4002, "forced");
        }
    }
    for mut client in closed_by_api {
        assert_eq!(close_frame(&mut client).await.0, 4002);
        while next(&mut client).await.is_some() {}
    }

    let drained = app
        .api
        .wait_until(|_| app.relays().open() == 0 && open_fds() <= fds && live_tasks() <= tasks)
        .await;
    assert!(
        drained,
        "left behind: {} relays, {} fds (baseline {fds}), {} tasks (baseline {tasks})",
        app.relays().open(),
        open_fds(),
        live_tasks()
    );
}
