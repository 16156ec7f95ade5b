//! The binary serves on worker threads (`serve_on_workers`), each with its
//! own event loop and pool of API connections; the other tests serve on
//! their own runtime. These run the main paths on the workers' way.

use reqwest::StatusCode;

use crate::support::ws::{Auth, close_frame, expect_ready, open};
use crate::support::{Options, TestApp};

fn on_workers() -> Options {
    Options {
        workers: Some(2),
        ..Options::default()
    }
}

#[tokio::test]
async fn the_dance_the_proxy_tokens_and_a_relay_work_on_worker_threads() {
    // Arrange
    let app = TestApp::spawn_with(on_workers()).await;
    let (browser, cookie) = app.logged_in_browser_and_cookie().await;

    // Act: several calls, so both workers get connections.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let fresh = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        let answer = fresh
            .get(app.at("/api/v2/summary"))
            .header("cookie", &cookie)
            .send()
            .await
            .expect("GET /api/v2/summary");
        statuses.push(answer.status());
    }
    let token = app.create_proxy_token(&browser, "on workers").await;
    let bearer = app.bearer_status(&token.token).await;
    let mut relay = open(&app, "/ws/events", Auth::Bearer(&token.token))
        .await
        .unwrap_or_else(|(status, body)| panic!("{status} {body}"));
    expect_ready(&mut relay).await;
    app.shutdown();

    // Assert
    assert!(
        statuses.iter().all(|status| *status == StatusCode::OK),
        "{statuses:?}"
    );
    assert_eq!(bearer, StatusCode::OK);
    assert_eq!(
        close_frame(&mut relay).await.0,
        1001,
        "shutdown closes relays"
    );
}

#[tokio::test]
async fn the_edge_limits_hold_on_worker_threads() {
    // Arrange
    let app = TestApp::spawn_with(on_workers()).await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");

    // Act
    let oversized = client
        .get(app.at("/health"))
        .header("x-big", "a".repeat(64 * 1024))
        .send()
        .await
        .expect("GET /health with a 64 KiB header");
    let traced = client
        .request(reqwest::Method::TRACE, app.at("/api/v2/self"))
        .send()
        .await
        .expect("TRACE");

    // Assert
    assert_eq!(
        oversized.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    assert_eq!(traced.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(app.api.api_request_count(), 0);
}
