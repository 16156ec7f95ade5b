//! The server's edge against hostile clients: slow and oversized heads,
//! made-up methods, forwarding headers, API answers a browser would render,
//! long uploads, a full API pool, and one person opening many relays.
//!
//! Timing assertions are bounds with seconds of slack, never tight figures:
//! the machine running them may be busy.

use std::time::Duration;

use futures_util::StreamExt as _;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::support::process::ServerProcess;
use crate::support::ws::{Auth, open};
use crate::support::{FakeApi, Options, TestApp, service_client};

/// Longest any test waits for something that should happen, so a broken
/// server fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(20);

/// A server with the given extra flags.
async fn spawn(extra_args: &[&str]) -> TestApp {
    TestApp::spawn_with(Options {
        extra_args: extra_args.iter().map(|arg| (*arg).to_owned()).collect(),
        ..Options::default()
    })
    .await
}

/// Reads from `socket` until the server closes it (or resets it), and
/// returns what arrived.
async fn read_until_closed(socket: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buffer = [0_u8; 4096];
    loop {
        match socket.read(&mut buffer).await {
            Ok(0) | Err(_) => return received,
            Ok(read) => received.extend_from_slice(&buffer[..read]),
        }
    }
}

/// Reads one answer to a request for `/health` (a small body of known
/// length) from `socket`; `None` if the connection closed first.
async fn read_health_answer(socket: &mut TcpStream) -> Option<String> {
    let mut received = Vec::new();
    let mut buffer = [0_u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&received).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|line| {
                    line.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|value| value.trim().parse::<usize>())
                })
                .and_then(Result::ok)
                .unwrap_or(0);
            if body.len() >= length {
                return Some(head.lines().next().unwrap_or_default().to_owned());
            }
        }
        match socket.read(&mut buffer).await {
            Ok(0) | Err(_) => return None,
            Ok(read) => received.extend_from_slice(&buffer[..read]),
        }
    }
}

const HEAD_TIMEOUT_SECS: u64 = 1;

#[tokio::test]
async fn a_silent_head_is_cut_after_the_header_read_time_out_with_408() {
    // Arrange
    let app = spawn(&["--header-read-timeout-secs", "1"]).await;
    let mut socket = TcpStream::connect(app.addr).await.expect("connect");

    // Act: half a head, then nothing.
    socket
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let received = tokio::time::timeout(PATIENCE, read_until_closed(&mut socket))
        .await
        .expect("the server closes the connection");

    // Assert
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(HEAD_TIMEOUT_SECS + 2),
        "cut after {elapsed:?}"
    );
    let received = String::from_utf8_lossy(&received);
    assert!(received.starts_with("HTTP/1.1 408"), "{received:?}");
}

#[tokio::test]
async fn a_trickling_head_is_cut_after_the_header_read_time_out() {
    // Arrange
    let app = spawn(&["--header-read-timeout-secs", "1"]).await;
    let socket = TcpStream::connect(app.addr).await.expect("connect");
    let (mut reading, mut writing) = socket.into_split();

    // Act: one header line every 200 ms, for as long as the server listens.
    writing
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        for line in 0..100 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let header = format!("x-trickle-{line}: 1\r\n");
            if writing.write_all(header.as_bytes()).await.is_err() {
                return line;
            }
        }
        100
    });
    let mut buffer = [0_u8; 4096];
    let closed = tokio::time::timeout(PATIENCE, async {
        loop {
            match reading.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;

    // Assert
    let elapsed = started.elapsed();
    assert!(closed.is_ok(), "the server never closed the connection");
    assert!(
        elapsed < Duration::from_secs(HEAD_TIMEOUT_SECS + 2),
        "cut after {elapsed:?}"
    );
    trickle.abort();
}

#[tokio::test]
async fn a_kept_alive_connection_may_wait_longer_than_a_head_then_is_closed_when_idle() {
    // Arrange: heads get 1 s, a connection between requests 4 s.
    let app = spawn(&[
        "--header-read-timeout-secs",
        "1",
        "--keepalive-idle-secs",
        "4",
    ])
    .await;
    let mut socket = TcpStream::connect(app.addr).await.expect("connect");
    let request = b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n";
    socket.write_all(request).await.expect("write");
    let first = read_health_answer(&mut socket).await;

    // Act: idle for twice the head time-out, then a second request.
    tokio::time::sleep(Duration::from_secs(2)).await;
    socket.write_all(request).await.expect("write");
    let second = read_health_answer(&mut socket).await;
    let idle_from = Instant::now();
    let after_idle = tokio::time::timeout(PATIENCE, read_until_closed(&mut socket))
        .await
        .expect("the server closes an idle connection");

    // Assert
    assert_eq!(first.as_deref(), Some("HTTP/1.1 200 OK"));
    assert_eq!(second.as_deref(), Some("HTTP/1.1 200 OK"), "still open");
    let idle = idle_from.elapsed();
    assert!(idle < Duration::from_secs(4 + 2), "closed after {idle:?}");
    assert!(
        after_idle.is_empty(),
        "an idle connection is closed without an answer: {:?}",
        String::from_utf8_lossy(&after_idle)
    );
}

#[tokio::test]
async fn past_max_connections_a_new_connection_waits_for_a_free_slot() {
    // Arrange: one connection at a time, and one kept open.
    let app = spawn(&["--max-connections", "1"]).await;
    let request = b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let mut holder = TcpStream::connect(app.addr).await.expect("connect");
    holder.write_all(request).await.expect("write");
    let held = read_health_answer(&mut holder).await;

    // Act: a second connection (the kernel's backlog takes it) asks too.
    let mut waiting = TcpStream::connect(app.addr).await.expect("connect");
    waiting.write_all(request).await.expect("write");
    let while_held =
        tokio::time::timeout(Duration::from_secs(1), read_health_answer(&mut waiting)).await;
    drop(holder);
    let once_freed = tokio::time::timeout(PATIENCE, read_health_answer(&mut waiting)).await;

    // Assert
    assert_eq!(held.as_deref(), Some("HTTP/1.1 200 OK"));
    assert!(
        while_held.is_err(),
        "answered past the limit: {while_held:?}"
    );
    assert_eq!(
        once_freed.ok().flatten().as_deref(),
        Some("HTTP/1.1 200 OK"),
        "served once the first connection closed"
    );
}

#[tokio::test]
async fn a_64_kib_header_gets_431() {
    // Arrange
    let app = spawn(&[]).await;
    let big = "a".repeat(64 * 1024);

    // Act
    let response = reqwest::Client::new()
        .get(app.at("/health"))
        .header("x-big", big)
        .send()
        .await
        .expect("an answer");
    let normal = reqwest::Client::new()
        .get(app.at("/health"))
        .header("x-small", "a".repeat(16 * 1024))
        .send()
        .await
        .expect("an answer");

    // Assert
    assert_eq!(
        response.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    assert_eq!(
        normal.status(),
        StatusCode::OK,
        "16 KiB is within the limit"
    );
}

/// A logged-in browser and a proxy token made from it.
async fn token_for(app: &TestApp) -> String {
    let browser = app.logged_in_browser().await;
    app.create_proxy_token(&browser, "edge tests").await.token
}

#[tokio::test]
async fn trace_and_made_up_methods_get_405_and_nothing_reaches_the_api() {
    // Arrange
    let app = spawn(&[]).await;
    let token = token_for(&app).await;
    let before = app.api.api_request_count();

    // Act
    let mut refused = Vec::new();
    for method in ["TRACE", "PROPFIND", "XM0001"] {
        let method = Method::from_bytes(method.as_bytes()).expect("a method");
        let response = service_client()
            .request(method.clone(), app.at("/api/v2/self"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("an answer");
        let status = response.status();
        let allow = response.headers().get("allow").cloned();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        refused.push((method, status, allow, body));
    }
    let allowed = service_client()
        .get(app.at("/api/v2/self"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("an answer");

    // Assert
    for (method, status, allow, body) in refused {
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(
            allow.as_ref().and_then(|value| value.to_str().ok()),
            Some("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
            "{method}"
        );
        assert!(body["error"].is_string(), "{method}: {body}");
    }
    assert_eq!(allowed.status(), StatusCode::OK);
    assert_eq!(
        app.api.api_request_count(),
        before + 1,
        "only the GET reached the API"
    );
}

#[tokio::test]
async fn the_clients_forwarding_headers_do_not_reach_the_api() {
    // Arrange
    let app = spawn(&[]).await;
    let token = token_for(&app).await;
    let forged = [
        ("forwarded", "for=203.0.113.7;host=evil.example;proto=https"),
        ("x-forwarded-for", "203.0.113.7"),
        ("x-forwarded-host", "evil.example"),
        ("x-forwarded-proto", "https"),
        ("x-real-ip", "203.0.113.7"),
        ("via", "1.1 evil.example"),
    ];

    // Act
    let mut request = service_client()
        .get(app.at("/api/v2/echo"))
        .bearer_auth(&token)
        .header("x-kept", "yes");
    for (name, value) in forged {
        request = request.header(name, value);
    }
    let response = request.send().await.expect("an answer");
    let status = response.status();

    // Assert
    assert_eq!(status, StatusCode::OK);
    let received = app
        .api
        .requests()
        .into_iter()
        .rfind(|request| request.path == "/v2/echo")
        .expect("the echo was called");
    for (name, _) in forged {
        assert_eq!(received.header(name), None, "{name} reached the API");
    }
    assert_eq!(received.header("x-kept"), Some("yes"));
}

#[tokio::test]
async fn an_html_answer_from_the_api_arrives_sandboxed() {
    // Arrange
    let app = spawn(&[]).await;
    let browser = app.logged_in_browser().await;

    // Act
    let page = app.get(&browser, "/api/v2/test/html").await;
    let json = app.get(&browser, "/api/v2/self").await;
    let refused = service_client()
        .get(app.at("/api/v2/self"))
        .send()
        .await
        .expect("an answer");

    // Assert
    assert_eq!(page.status(), StatusCode::OK);
    for response in [&page, &json, &refused] {
        let policies: Vec<_> = response
            .headers()
            .get_all("content-security-policy")
            .iter()
            .collect();
        assert_eq!(
            policies,
            ["sandbox; default-src 'none'"],
            "{}",
            response.url()
        );
        let sniffing: Vec<_> = response
            .headers()
            .get_all("x-content-type-options")
            .iter()
            .collect();
        assert_eq!(sniffing, ["nosniff"], "{}", response.url());
    }
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let user: Value = json.json().await.expect("JSON still reads as JSON");
    assert!(user["id"].is_string());
}

#[tokio::test]
async fn a_steady_upload_lasting_three_times_the_idle_time_out_succeeds() {
    // Arrange: the API may stay silent 1 s; the upload lasts about 3.5 s,
    // a chunk every 250 ms.
    let app = spawn(&["--api-idle-timeout-secs", "1"]).await;
    let token = token_for(&app).await;
    let chunks = 14;
    let chunk = vec![b'u'; 1000];
    let body = futures_util::stream::unfold(0, move |sent| {
        let chunk = chunk.clone();
        async move {
            if sent == chunks {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            Some((Ok::<_, std::io::Error>(chunk), sent + 1))
        }
    });
    let started = Instant::now();

    // Act
    let response = service_client()
        .post(app.at("/api/v2/upload"))
        .bearer_auth(&token)
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .expect("an answer");
    let elapsed = started.elapsed();
    let status = response.status();
    let echo: Value = response.json().await.expect("the echo");

    // Assert
    assert_eq!(status, StatusCode::OK, "{echo}");
    assert_eq!(echo["body_len"], 14 * 1000);
    assert!(
        elapsed >= Duration::from_secs(3),
        "the upload lasted {elapsed:?}, three idle time-outs"
    );
}

#[tokio::test]
async fn a_silent_client_upload_is_cut_after_the_idle_time_out() {
    // Arrange: a body that sends one chunk, then nothing.
    let app = spawn(&["--api-idle-timeout-secs", "1"]).await;
    let token = token_for(&app).await;
    let body = futures_util::stream::once(async { Ok::<_, std::io::Error>(vec![b'u'; 10]) })
        .chain(futures_util::stream::pending());
    let started = Instant::now();

    // Act
    let response = tokio::time::timeout(
        PATIENCE,
        service_client()
            .post(app.at("/api/v2/upload"))
            .bearer_auth(&token)
            .header("content-type", "application/octet-stream")
            .body(reqwest::Body::wrap_stream(body))
            .send(),
    )
    .await
    .expect("an answer before the patience runs out")
    .expect("an answer");

    // Assert
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() < Duration::from_secs(1 + 5));
}

#[tokio::test]
async fn metrics_series_stay_bounded_after_500_made_up_methods() {
    // Arrange
    const METRICS_TOKEN: &str = "metrics-token-for-edge-tests-01234";
    let app = spawn(&["--metrics-token", METRICS_TOKEN]).await;
    let client = service_client();
    let series = |text: &str| text.lines().filter(|line| !line.starts_with('#')).count();
    let scrape = || async {
        client
            .get(app.at("/metrics"))
            .bearer_auth(METRICS_TOKEN)
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("the metrics")
    };
    // Warm up the series one made-up method makes on each path, and the
    // scrape's own.
    for path in ["/api/v2/self", "/health", "/nowhere"] {
        let method = Method::from_bytes(b"XWARM").expect("a method");
        client
            .request(method, app.at(path))
            .send()
            .await
            .expect("an answer");
    }
    scrape().await;
    let before = scrape().await;

    // Act
    for n in 0..500 {
        let method = Method::from_bytes(format!("XM{n:04}").as_bytes()).expect("a method");
        let path = ["/api/v2/self", "/health", "/nowhere"][n % 3];
        client
            .request(method, app.at(path))
            .send()
            .await
            .expect("an answer");
    }
    let after = scrape().await;

    // Assert
    assert_eq!(series(&after), series(&before), "not one series more");
    assert!(!after.contains("XM0"), "{after}");
    assert!(after.contains(r#"method="other""#), "{after}");
}

/// `GET /api/slow?ms=…` with `token`: the status and the JSON body.
async fn slow_call(app: &TestApp, token: &str, ms: u64) -> (StatusCode, Value) {
    let response = tokio::time::timeout(
        PATIENCE,
        service_client()
            .get(app.at(&format!("/api/v2/test/slow?ms={ms}")))
            .bearer_auth(token)
            .send(),
    )
    .await
    .expect("an answer in time")
    .expect("an answer");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn at_the_pool_cap_a_request_waits_for_the_connection_then_succeeds() {
    // Arrange: one connection to the API, 5 s to wait for it.
    let app = spawn(&[
        "--api-max-connections",
        "1",
        "--api-connect-timeout-secs",
        "5",
    ])
    .await;
    let token = token_for(&app).await;
    let started = Instant::now();

    // Act: two calls of 600 ms at once.
    let (first, second) = tokio::join!(slow_call(&app, &token, 600), slow_call(&app, &token, 600));

    // Assert: both answered, one after the other on the one connection.
    assert_eq!(first.0, StatusCode::OK, "{}", first.1);
    assert_eq!(second.0, StatusCode::OK, "{}", second.1);
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1200),
        "both done in {elapsed:?}: they did not wait for each other"
    );
}

#[tokio::test]
async fn at_the_pool_cap_a_request_that_waits_past_the_connect_time_out_gets_503() {
    // Arrange: one connection to the API, 1 s to wait for it, and a call
    // that holds it for 4 s.
    let app = spawn(&[
        "--api-max-connections",
        "1",
        "--api-connect-timeout-secs",
        "1",
    ])
    .await;
    let token = token_for(&app).await;
    let holding = {
        let app_url = app.at("/api/v2/test/slow?ms=4000");
        let token = token.clone();
        tokio::spawn(async move {
            service_client()
                .get(app_url)
                .bearer_auth(token)
                .send()
                .await
                .map(|response| response.status())
        })
    };
    let fake = &app.api;
    assert!(
        fake.wait_until(|api| api.requests().iter().any(|r| r.path == "/v2/test/slow"))
            .await,
        "the first call reached the API"
    );

    // Act
    let (status, body) = slow_call(&app, &token, 0).await;

    // Assert
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|error| error.contains("API_MAX_CONNECTIONS")),
        "{body}"
    );
    let first = holding.await.expect("the first call's task");
    assert_eq!(first.ok(), Some(StatusCode::OK), "the holder was not cut");
}

#[tokio::test]
async fn the_relay_limit_holds_per_owner_across_several_proxy_tokens() {
    // Arrange: 8 relays per token, but 2 per person.
    let app = spawn(&["--relays-per-owner", "2"]).await;
    let (browser, cookie) = app.logged_in_browser_and_cookie().await;
    let mut tokens = Vec::new();
    for name in ["one", "two", "three"] {
        tokens.push(app.create_proxy_token(&browser, name).await.token);
    }

    // Act
    let first = open(&app, "/ws/events", Auth::Bearer(&tokens[0])).await;
    let second = open(&app, "/ws/events", Auth::Bearer(&tokens[1])).await;
    let third = open(&app, "/ws/events", Auth::Bearer(&tokens[2])).await;
    let browsers = open(
        &app,
        "/ws/events",
        Auth::Cookie {
            cookie: &cookie,
            origin: Some(&app.url),
        },
    )
    .await;

    // Assert
    assert!(first.is_ok() && second.is_ok());
    for refused in [third.err(), browsers.err()] {
        let (status, body) = refused.expect("refused past the owner's limit");
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
        assert!(body["error"].is_string(), "{body}");
    }
    assert_eq!(
        app.api.sockets().len(),
        2,
        "the refused ones opened nothing"
    );

    let mut first = first.expect("the first relay");
    first.close(None).await.expect("close");
    assert!(app.api.wait_until(|_| app.relays().open() == 1).await);
    assert!(
        open(&app, "/ws/events", Auth::Bearer(&tokens[2]))
            .await
            .is_ok(),
        "a freed slot is usable by another of the owner's tokens"
    );
}

#[tokio::test]
async fn the_binary_applies_the_same_limits_on_its_worker_threads() {
    // Arrange: the real binary, with two workers and a short head time-out.
    let api = FakeApi::start().await;
    let server = ServerProcess::start(
        api,
        &[("WORKER_THREADS", "2"), ("HEADER_READ_TIMEOUT_SECS", "1")],
    )
    .await;

    // Act
    let oversized = reqwest::Client::new()
        .get(server.at("/health"))
        .header("x-big", "a".repeat(64 * 1024))
        .send()
        .await
        .expect("an answer");
    let mut silent = TcpStream::connect(server.addr).await.expect("connect");
    silent
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let received = tokio::time::timeout(PATIENCE, read_until_closed(&mut silent))
        .await
        .expect("the server closes the connection");

    // Assert
    assert_eq!(
        oversized.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(1 + 2),
        "cut after {elapsed:?}"
    );
    let received = String::from_utf8_lossy(&received);
    assert!(received.starts_with("HTTP/1.1 408"), "{received:?}");
}
