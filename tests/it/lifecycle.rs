//! The binary's life: the healthcheck subcommand, and stopping on SIGTERM
//! or SIGINT without cutting what is in flight.

use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;

use crate::support::free_port;
use crate::support::process::{BINARY, ServerProcess};
use crate::support::ws;
use crate::support::{FakeApi, Mode, TestApp, browser, location};

/// How long the fake API takes over each call in the shutdown tests: long
/// enough that the signal surely lands while the request is in flight.
const SLOW_MS: u64 = 1500;

fn healthcheck(port: u16) -> std::process::Output {
    Command::new(BINARY)
        .arg("healthcheck")
        .env_clear()
        .env("PORT", port.to_string())
        .output()
        .expect("run the healthcheck subcommand")
}

#[tokio::test]
async fn the_healthcheck_subcommand_says_whether_the_server_answers() {
    // Arrange
    let app = TestApp::spawn().await;
    let closed_port = free_port();

    // Act
    let healthy = tokio::task::spawn_blocking(move || healthcheck(app.addr.port()));
    let unhealthy = tokio::task::spawn_blocking(move || healthcheck(closed_port));
    let (healthy, unhealthy) = (healthy.await.expect("join"), unhealthy.await.expect("join"));

    // Assert
    assert!(healthy.status.success(), "{healthy:?}");
    assert_eq!(unhealthy.status.code(), Some(1), "{unhealthy:?}");
    assert!(String::from_utf8_lossy(&unhealthy.stderr).contains("unhealthy"));
}

/// Waits (boundedly) until the fake API has received a call to `path`.
async fn wait_for_call(api: &FakeApi, path: &str) {
    for _ in 0..500 {
        if api.requests().iter().any(|request| request.path == path) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the fake API never received {path}");
}

/// Waits (boundedly) until the server's port refuses new connections.
async fn wait_until_refusing(server: &ServerProcess) {
    for _ in 0..500 {
        if server.refuses_connections() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the server kept accepting connections after SIGTERM");
}

/// Starts `GET /api/slow?ms=…` through the proxy of a logged-in browser.
async fn slow_proxied_call(
    server: &ServerProcess,
    ms: u64,
) -> tokio::task::JoinHandle<reqwest::Result<reqwest::Response>> {
    let client = server.app.logged_in_browser().await;
    let url = server.at(&format!("/api/v2/test/slow?ms={ms}"));
    let call = tokio::spawn(async move { client.get(url).send().await });
    wait_for_call(&server.app.api, "/v2/test/slow").await;
    call
}

#[tokio::test]
async fn sigterm_lets_the_request_in_flight_finish_closes_relays_with_1001_and_exits_0() {
    // Arrange: a live events relay of a logged-in browser, and a slow
    // proxied call in flight.
    let mut server =
        ServerProcess::start(FakeApi::start().await, &[("SHUTDOWN_GRACE_SECS", "20")]).await;
    let (_browser, cookie) = server.app.logged_in_browser_and_cookie().await;
    let mut relay = ws::open_as_browser(&server.app, &cookie, "/ws/events").await;
    ws::expect_ready(&mut relay).await;
    let upstream = server.app.api.socket(0).await;
    let call = slow_proxied_call(&server, SLOW_MS).await;

    // Act
    server.terminate();

    // Assert: the relay closes with 1001 on both ends, no new connections,
    // the call still completes, exit 0 without cutting anything.
    assert_eq!(ws::close_frame(&mut relay).await.0, 1001);
    assert!(
        upstream
            .wait_until(|socket| socket.close_received().is_some())
            .await
    );
    assert_eq!(upstream.close_received().map(|(code, _)| code), Some(1001));
    wait_until_refusing(&server).await;
    let answer = call
        .await
        .expect("join")
        .expect("the in-flight request completes");
    assert_eq!(answer.status(), StatusCode::OK);
    let body: serde_json::Value = answer.json().await.expect("JSON from the API");
    assert_eq!(body["slept_ms"], SLOW_MS);
    let status = server.wait_for_exit().await;
    assert!(
        status.success(),
        "exit status {status}: {}",
        server.output()
    );
    let output = server.output();
    assert!(output.contains("SIGTERM received"), "{output}");
    assert!(
        !output.contains("grace elapsed"),
        "everything ended within the grace: {output}"
    );
}

#[tokio::test]
async fn sigterm_during_a_slow_login_lets_the_login_finish() {
    // Arrange: a login whose call to the API's OAuth endpoint is slow.
    let mut server =
        ServerProcess::start(FakeApi::start().await, &[("SHUTDOWN_GRACE_SECS", "20")]).await;
    let client = browser();
    let csrf = server.app.csrf(&client).await;
    server.app.api.set_mode(Mode::Slow(SLOW_MS));
    let login = tokio::spawn({
        let client = client.clone();
        let url = server.at("/login");
        async move { client.post(url).form(&[("csrf", csrf)]).send().await }
    });
    wait_for_call(&server.app.api, "/v2/oauth/request_token").await;

    // Act
    server.terminate();

    // Assert
    let login = login
        .await
        .expect("join")
        .expect("the in-flight login completes");
    assert_eq!(login.status(), StatusCode::SEE_OTHER);
    let authorize = format!("{}/v2/oauth/authorize?", server.app.api.url());
    assert!(location(&login).starts_with(&authorize));
    let status = server.wait_for_exit().await;
    assert!(
        status.success(),
        "exit status {status}: {}",
        server.output()
    );
}

#[tokio::test]
async fn a_request_longer_than_the_grace_is_cut_and_the_server_still_exits_0() {
    // Arrange: a proxied call far longer than the one-second grace.
    let mut server =
        ServerProcess::start(FakeApi::start().await, &[("SHUTDOWN_GRACE_SECS", "1")]).await;
    let call = slow_proxied_call(&server, 20_000).await;

    // Act
    server.terminate();

    // Assert
    let status = server.wait_for_exit().await;
    assert!(
        status.success(),
        "exit status {status}: {}",
        server.output()
    );
    assert!(
        call.await.expect("join").is_err(),
        "the long request was cut"
    );
    assert!(
        server.output().contains("grace elapsed"),
        "{}",
        server.output()
    );
}

#[tokio::test]
async fn sigint_stops_an_idle_server_with_exit_0() {
    // Arrange
    let mut server = ServerProcess::start(FakeApi::start().await, &[]).await;

    // Act
    server.signal("INT");

    // Assert
    let status = server.wait_for_exit().await;
    assert!(
        status.success(),
        "exit status {status}: {}",
        server.output()
    );
    assert!(server.output().contains("SIGINT received"));
}
