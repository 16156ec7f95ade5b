//! Sessions and proxy tokens in a real Redis: shared by instances, kept
//! across restarts, expired by Redis, sealed at rest, and 503s (never a
//! hang) while Redis is away; the WebSocket relays of one instance open
//! with a session or proxy token made on another.

use std::time::Duration;

use oauth_consumer_server::session::RECENT_SESSION_TTL;
use reqwest::{Client, Response, StatusCode, header};
use serde_json::{Value, json};

use crate::support::redis::{RedisServer, TLS_PASSWORD};
use crate::support::ws::{self, Auth};
use crate::support::{ConsumerMode, FakeApi, Options, TestApp, browser, location};

/// Longest a request may take while Redis is away: the store's command
/// time-out is 2 s, and a request makes a few store calls at most.
const UNAVAILABLE_BOUND: Duration = Duration::from_secs(8);

/// Longest wait for Redis-side effects (expiry, reconnection).
const SETTLE_BOUND: Duration = Duration::from_secs(20);

fn redis_options(redis: &RedisServer) -> Options {
    crate::support::redis::options(redis, &[])
}

/// [`redis_options`] with sessions that expire after `idle_secs` unused.
fn redis_options_idle(redis: &RedisServer, idle_secs: &str) -> Options {
    let mut options = redis_options(redis);
    options
        .extra_args
        .extend(["--session-idle-secs".to_owned(), idle_secs.to_owned()]);
    options
}

/// Asserts that Redis holds one record, a session whose TTL is at least
/// `secs`: its expiry moved.
async fn assert_one_session_with_ttl_at_least(redis: &RedisServer, secs: i64) {
    let records = redis.records().await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert!(records[0].2 >= secs, "the TTL went back up: {records:?}");
}

/// What `/ready` answers: 503 while the store is unreachable.
async fn ready_status(app: &TestApp) -> StatusCode {
    app.get(&browser(), "/ready").await.status()
}

async fn within<T>(bound: Duration, what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(bound, future)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {bound:?}"))
}

/// Polls `check` until it holds; panics after `SETTLE_BOUND`.
async fn eventually<F: Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    within(SETTLE_BOUND, what, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}

async fn home(app: &TestApp, client: &Client) -> Response {
    client
        .get(app.at("/"))
        .header(header::ACCEPT, "text/html")
        .send()
        .await
        .expect("GET /")
}

async fn is_logged_in(app: &TestApp, client: &Client) -> bool {
    let response = home(app, client).await;
    match response.status() {
        StatusCode::OK => true,
        StatusCode::SEE_OTHER => {
            assert_eq!(location(&response), "/login");
            false
        }
        status => panic!("GET / answered {status}"),
    }
}

/// Creates a proxy token from `client`'s session: (token, public id).
async fn create_token(app: &TestApp, client: &Client) -> (String, String) {
    let created = app.create_proxy_token(client, "ci").await;
    (created.token, created.id)
}

async fn listed_token_ids(app: &TestApp, client: &Client) -> Vec<String> {
    let response = app.get(client, "/tokens").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Vec<Value> = response.json().await.expect("token list");
    body.iter()
        .filter_map(|token| token["id"].as_str().map(str::to_owned))
        .collect()
}

/// What the proxy answers to `GET /api/v2/self` with `client`'s cookie.
async fn api_status_with_cookie(app: &TestApp, client: &Client) -> StatusCode {
    app.get(client, "/api/v2/self").await.status()
}

#[test]
fn redis_without_a_session_key_stops_start_up_with_one_clear_line() {
    let output = std::process::Command::new(crate::support::process::BINARY)
        .env_clear()
        .env("REDIS_URL", "redis://:hunter2@127.0.0.1:6390")
        .output()
        .expect("run the server");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("REDIS_URL") && stderr.contains("SESSION_KEY"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[tokio::test]
async fn instances_sharing_redis_share_sessions_tokens_and_logout() {
    let redis = RedisServer::start();
    let a = TestApp::spawn_with(redis_options(&redis)).await;
    let b = a.spawn_beside(redis_options(&redis)).await;

    let client = a.logged_in_browser().await;
    assert!(is_logged_in(&b, &client).await, "B reads A's session");
    assert_eq!(api_status_with_cookie(&b, &client).await, StatusCode::OK);

    let (token, id) = create_token(&a, &client).await;
    assert_eq!(listed_token_ids(&b, &client).await, [id]);
    assert_eq!(b.bearer_status(&token).await, StatusCode::OK);
    assert_eq!(
        b.bearer_status("ocsp_not-a-token").await,
        StatusCode::UNAUTHORIZED
    );

    let (made_on_b, _) = create_token(&b, &client).await;
    assert_eq!(a.bearer_status(&made_on_b).await, StatusCode::OK);

    a.log_out(&client).await;
    assert!(!is_logged_in(&b, &client).await, "logout on A ends it on B");
    assert_eq!(
        api_status_with_cookie(&b, &client).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        b.bearer_status(&token).await,
        StatusCode::OK,
        "proxy tokens outlive the browser session"
    );
}

#[tokio::test]
async fn relays_on_b_open_with_a_session_or_a_proxy_token_made_on_a() {
    // Arrange: a login and a proxy token, both made on A.
    let redis = RedisServer::start();
    let a = TestApp::spawn_with(redis_options(&redis)).await;
    let b = a.spawn_beside(redis_options(&redis)).await;
    let (client, cookie) = a.logged_in_browser_and_cookie().await;
    let token = a.create_proxy_token(&client, "relay on B").await.token;

    // Act: A's cookie jar, then A's token, open `/ws/events` on B.
    let mut by_cookie = ws::open_as_browser(&b, &cookie, "/ws/events").await;
    ws::expect_ready(&mut by_cookie).await;
    let cookie_upstream = b.api.socket(0).await;
    cookie_upstream.send_event("GIT_PUSH", &json!({ "appId": "app_1" }));
    let mut by_token = ws::open(&b, "/ws/events", Auth::Bearer(&token))
        .await
        .unwrap_or_else(|(status, body)| panic!("{status} {body}"));
    ws::expect_ready(&mut by_token).await;
    let token_upstream = b.api.socket(1).await;
    token_upstream.send_event("DEPLOYMENT_SUCCESS", &json!({ "appId": "app_2" }));

    // Assert: both relays carry the API's events, signed with A's login.
    assert_eq!(ws::next_json(&mut by_cookie).await["event"], "GIT_PUSH");
    assert_eq!(
        ws::next_json(&mut by_token).await["event"],
        "DEPLOYMENT_SUCCESS"
    );
    assert!(cookie_upstream.auth().is_some_and(|auth| auth.is_ok()));
    assert!(token_upstream.auth().is_some_and(|auth| auth.is_ok()));
}

#[tokio::test]
async fn a_restarted_instance_keeps_sessions_and_tokens() {
    let redis = RedisServer::start();
    let first = TestApp::spawn_with(redis_options(&redis)).await;
    let client = first.logged_in_browser().await;
    let (token, id) = create_token(&first, &client).await;
    let api = first.api.clone();
    drop(first);

    let again = TestApp::spawn_against(api.clone(), &api.url(), redis_options(&redis)).await;
    assert!(is_logged_in(&again, &client).await);
    assert_eq!(
        api_status_with_cookie(&again, &client).await,
        StatusCode::OK
    );
    assert_eq!(listed_token_ids(&again, &client).await, [id]);
    assert_eq!(again.bearer_status(&token).await, StatusCode::OK);
}

#[tokio::test]
async fn expired_sessions_leave_no_key_in_redis() {
    let redis = RedisServer::start();
    let app = TestApp::spawn_with(redis_options_idle(&redis, "2")).await;
    let client = app.logged_in_browser().await;

    let records = redis.records().await;
    assert_eq!(records.len(), 1, "one session: {records:?}");
    let (_, _, ttl) = &records[0];
    assert!(
        (1..=2).contains(ttl),
        "the session's TTL is its idle time: {ttl}"
    );

    eventually("Redis expiring the session", || async {
        redis.records().await.is_empty()
    })
    .await;
    assert!(!is_logged_in(&app, &client).await);
}

#[tokio::test]
async fn a_session_in_use_outlives_its_idle_time() {
    let redis = RedisServer::start();
    let app = TestApp::spawn_with(redis_options_idle(&redis, "4")).await;
    let client = app.logged_in_browser().await;

    // Used every 2.5 s (more than half the idle time), for longer than the
    // idle time: each use pushes the expiry back.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        assert!(is_logged_in(&app, &client).await);
        assert_one_session_with_ttl_at_least(&redis, 3).await;
    }
}

#[tokio::test]
async fn a_session_used_only_through_the_proxy_outlives_its_idle_time() {
    let redis = RedisServer::start();
    let app = TestApp::spawn_with(redis_options_idle(&redis, "4")).await;
    let client = app.logged_in_browser().await;

    // A page's script calling the proxy every half second, for longer than
    // the idle time (its browser takes the refreshed cookie from those
    // answers); nothing else uses the session.
    for _ in 0..14 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(api_status_with_cookie(&app, &client).await, StatusCode::OK);
    }

    assert_one_session_with_ttl_at_least(&redis, 2).await;
    assert!(is_logged_in(&app, &client).await);
}

#[tokio::test]
async fn a_logout_ends_the_session_at_once_on_its_instance_and_within_the_ttl_on_others() {
    // Arrange: both instances have just served the session through the
    // proxy, so both remember it.
    let redis = RedisServer::start();
    let a = TestApp::spawn_with(redis_options(&redis)).await;
    let b = a.spawn_beside(redis_options(&redis)).await;
    let (client, cookie) = a.logged_in_browser_and_cookie().await;
    assert_eq!(a.cookie_status(&cookie).await, StatusCode::OK);
    assert_eq!(b.cookie_status(&cookie).await, StatusCode::OK);

    // Act
    a.log_out(&client).await;

    // Assert
    assert_eq!(
        a.cookie_status(&cookie).await,
        StatusCode::UNAUTHORIZED,
        "at once where the logout happened"
    );
    tokio::time::sleep(RECENT_SESSION_TTL).await;
    assert_eq!(
        b.cookie_status(&cookie).await,
        StatusCode::UNAUTHORIZED,
        "on another instance once what it remembers is stale"
    );
}

#[tokio::test]
async fn every_key_has_a_ttl_and_revoking_a_token_deletes_its_keys() {
    let redis = RedisServer::start();
    let app = TestApp::spawn_with(redis_options(&redis)).await;
    let client = app.logged_in_browser().await;
    let keys = |records: Vec<(String, String, i64)>| -> Vec<String> {
        records.into_iter().map(|(key, _, _)| key).collect()
    };
    let session_only = keys(redis.records().await);

    let (_, id) = create_token(&app, &client).await;
    let with_token = redis.records().await;
    assert_eq!(
        with_token.len(),
        session_only.len() + 2,
        "the token and its owner's set"
    );
    assert!(
        with_token.iter().all(|(_, _, ttl)| *ttl > 0),
        "nothing stays forever: {with_token:?}"
    );

    let revoked = client
        .delete(app.at(&format!("/tokens/{id}")))
        .header(header::ORIGIN, &app.url)
        .send()
        .await
        .expect("DELETE /tokens/{id}");
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    assert_eq!(keys(redis.records().await), session_only);
}

#[tokio::test]
async fn raw_redis_values_hold_no_secret_in_clear() {
    let redis = RedisServer::start();
    let options = Options {
        consumer: ConsumerMode::Visitor,
        ..redis_options(&redis)
    };
    let app = TestApp::spawn_with(options).await;
    let client = app.logged_in_browser().await;
    let (proxy_token, _) = create_token(&app, &client).await;
    let issued = app.api.issued_access_tokens();
    let access = issued.first().expect("an access token was issued");

    let records = redis.records().await;
    assert_eq!(records.len(), 3, "session, token, owner's set: {records:?}");
    let secrets = [
        ("access token", access.token.as_str()),
        ("access token secret", access.secret.as_str()),
        ("consumer secret", FakeApi::CONSUMER_SECRET),
        ("proxy token", proxy_token.as_str()),
        (
            "proxy token body",
            proxy_token.trim_start_matches(oauth_consumer_server::proxy_tokens::TOKEN_PREFIX),
        ),
    ];
    for (key, value, _) in &records {
        if key.starts_with(oauth_consumer_server::session::REDIS_SET_PREFIX) {
            // A set holds ids only: `PUBLIC_ID:RECORD_ID`.
            assert!(
                value
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '-' || c == ','),
                "{key} holds ids only: {value}"
            );
        } else {
            assert!(value.contains("ocs.sealed.v1"), "{key} is sealed");
        }
        for (what, secret) in secrets {
            assert!(!value.contains(secret), "{key} holds the {what} in clear");
            assert!(!key.contains(secret), "{key} names the {what}");
        }
    }
}

#[tokio::test]
async fn a_hung_redis_gives_503s_in_bounded_time_and_loses_nothing() {
    let redis = RedisServer::start();
    let app = TestApp::spawn_with(redis_options(&redis)).await;
    let client = app.logged_in_browser().await;
    let (token, _) = create_token(&app, &client).await;
    assert_eq!(ready_status(&app).await, StatusCode::OK);

    redis.freeze();
    let page = within(
        UNAVAILABLE_BOUND,
        "GET / while Redis hangs",
        home(&app, &client),
    )
    .await;
    assert_eq!(page.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        page.text()
            .await
            .unwrap_or_default()
            .contains("Sessions are unavailable")
    );

    let listing = within(
        UNAVAILABLE_BOUND,
        "GET /tokens while Redis hangs",
        client.get(app.at("/tokens")).send(),
    )
    .await
    .expect("GET /tokens");
    assert_eq!(listing.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = listing.json().await.expect("JSON error");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("unavailable"))
    );

    let bearer = within(
        UNAVAILABLE_BOUND,
        "a bearer call",
        app.bearer_status(&token),
    )
    .await;
    assert_eq!(bearer, StatusCode::SERVICE_UNAVAILABLE);

    let health = within(
        UNAVAILABLE_BOUND,
        "GET /health",
        browser().get(app.at("/health")).send(),
    )
    .await
    .expect("GET /health");
    assert_eq!(health.status(), StatusCode::OK);
    let ready = within(UNAVAILABLE_BOUND, "GET /ready", ready_status(&app)).await;
    assert_eq!(ready, StatusCode::SERVICE_UNAVAILABLE);

    redis.thaw();
    eventually("the store answering again", || async {
        ready_status(&app).await == StatusCode::OK
    })
    .await;
    eventually("the session answering again", || async {
        home(&app, &client).await.status() != StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    assert!(is_logged_in(&app, &client).await, "the session survived");
    assert_eq!(app.bearer_status(&token).await, StatusCode::OK);
}

#[tokio::test]
async fn a_restarted_redis_serves_again_without_restarting_the_server() {
    let mut redis = RedisServer::start();
    let app = TestApp::spawn_with(redis_options(&redis)).await;
    let client = app.logged_in_browser().await;

    redis.stop();
    let newcomer = browser();
    let login_page = within(
        UNAVAILABLE_BOUND,
        "GET /login while Redis is down",
        newcomer.get(app.at("/login")).send(),
    )
    .await
    .expect("GET /login");
    assert_eq!(
        login_page.status(),
        StatusCode::OK,
        "the login page needs no store"
    );
    let login = within(
        UNAVAILABLE_BOUND,
        "POST /login while Redis is down",
        app.start_login(&newcomer),
    )
    .await;
    assert_eq!(login.status(), StatusCode::SERVICE_UNAVAILABLE);
    let page = within(
        UNAVAILABLE_BOUND,
        "GET / while Redis is down",
        home(&app, &client),
    )
    .await;
    assert_eq!(page.status(), StatusCode::SERVICE_UNAVAILABLE);
    let health = app.get(&browser(), "/health").await;
    assert_eq!(health.status(), StatusCode::OK);
    let ready = within(UNAVAILABLE_BOUND, "GET /ready", ready_status(&app)).await;
    assert_eq!(ready, StatusCode::SERVICE_UNAVAILABLE);

    redis.restart();
    eventually("the store reconnecting", || async {
        ready_status(&app).await == StatusCode::OK
    })
    .await;
    eventually("the server reconnecting", || async {
        home(&app, &client).await.status() != StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    assert!(
        !is_logged_in(&app, &client).await,
        "the new Redis is empty (no persistence in the test): the old cookie is no session"
    );
    app.log_in(&newcomer).await;
    assert!(is_logged_in(&app, &newcomer).await);
    create_token(&app, &newcomer).await;
}

#[tokio::test]
async fn rediss_with_a_password_works_and_checks_the_certificate() {
    let redis = RedisServer::start_tls();
    assert!(redis.url().starts_with("rediss://"));
    let mut options = redis_options(&redis);
    options.extra_args.extend([
        "--redis-ca-file".to_owned(),
        redis.ca_file().display().to_string(),
    ]);
    let app = TestApp::spawn_with(options).await;
    let client = app.logged_in_browser().await;
    let (token, _) = create_token(&app, &client).await;
    assert_eq!(app.bearer_status(&token).await, StatusCode::OK);
    // Stored in the TLS server: session, token, owner's set, and the
    // token's calls (written just after the answer).
    eventually("four keys in the TLS server", || async {
        redis.records().await.len() == 4
    })
    .await;

    // The system's roots do not know the test CA: no connection, 503s.
    let untrusting = app.spawn_beside(redis_options(&redis)).await;
    let login = within(
        UNAVAILABLE_BOUND,
        "POST /login with an untrusted certificate",
        untrusting.start_login(&browser()),
    )
    .await;
    assert_eq!(login.status(), StatusCode::SERVICE_UNAVAILABLE);

    // A wrong password: no connection either.
    let mut wrong = redis_options(&redis);
    let url = redis.url();
    let password: String = url::form_urlencoded::byte_serialize(TLS_PASSWORD.as_bytes()).collect();
    wrong.extra_args[1] = url.replace(&password, "wrong");
    wrong.extra_args.extend([
        "--redis-ca-file".to_owned(),
        redis.ca_file().display().to_string(),
    ]);
    let refused = app.spawn_beside(wrong).await;
    let login = within(
        UNAVAILABLE_BOUND,
        "POST /login with a wrong password",
        refused.start_login(&browser()),
    )
    .await;
    assert_eq!(login.status(), StatusCode::SERVICE_UNAVAILABLE);
}
