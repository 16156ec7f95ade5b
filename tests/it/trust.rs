//! Trust: whose tokens a session manages comes from the API, token
//! bookkeeping holds under concurrency and across instances, deleted
//! records stay deleted, anonymous visitors cost nothing, logins in parallel
//! tabs, login starts are limited, and access can be revoked.

use std::time::Duration;

use futures_util::future::join_all;
use reqwest::header::{ORIGIN, RETRY_AFTER};
use reqwest::{Client, StatusCode};
use serde_json::Value;

use crate::support::redis::RedisServer;
use crate::support::ws;
use crate::support::{
    FAKE_USER_ID, Options, TestApp, browser, element_text, location, service_client,
};

const OTHER_USER: &str = "user_00000000-0000-4000-8000-0000000000b0";

fn redis_options(redis: &RedisServer) -> Options {
    crate::support::redis::options(redis, &[])
}

/// Longer than the time another instance may trust a token it checked.
const PAST_TOKEN_CACHE: Duration = Duration::from_millis(1_300);

/// `POST /tokens` from `client`'s page; the status and JSON answer.
async fn try_create_token(app: &TestApp, client: &Client, name: &str) -> (StatusCode, Value) {
    let response = client
        .post(app.at("/tokens"))
        .header(ORIGIN, &app.url)
        .json(&serde_json::json!({ "name": name }))
        .send()
        .await
        .expect("POST /tokens");
    let status = response.status();
    (status, response.json().await.unwrap_or_default())
}

async fn revoke_token(app: &TestApp, client: &Client, id: &str) -> StatusCode {
    client
        .delete(app.at(&format!("/tokens/{id}")))
        .header(ORIGIN, &app.url)
        .send()
        .await
        .expect("DELETE /tokens/{id}")
        .status()
}

#[tokio::test]
async fn a_forged_user_in_the_callback_decides_nothing() {
    // Arrange: Bob has a proxy token; Ada logs in with her own account but
    // puts Bob's id in the callback.
    let app = TestApp::spawn().await;
    let bob = browser();
    app.log_in_as(&bob, OTHER_USER).await;
    let bobs = app.create_proxy_token(&bob, "bob's deploy bot").await;
    let ada = browser();
    let started = app.start_login(&ada).await;
    let callback = app.approve(&ada, &location(&started)).await;
    assert!(
        callback.contains(&format!("user={FAKE_USER_ID}")),
        "{callback}"
    );
    let forged = callback.replace(FAKE_USER_ID, OTHER_USER);

    // Act
    let finished = ada.get(forged).send().await.expect("GET /callback");
    let listed = app.listed_token_ids(&ada).await;
    let revoke = revoke_token(&app, &ada, &bobs.id).await;
    let page = app
        .get(&ada, "/")
        .await
        .text()
        .await
        .expect("dashboard body");

    // Assert
    assert_eq!(finished.status(), StatusCode::SEE_OTHER);
    assert!(
        listed.is_empty(),
        "Ada sees none of Bob's tokens: {listed:?}"
    );
    assert_eq!(revoke, StatusCode::NOT_FOUND);
    assert_eq!(app.bearer_status(&bobs.token).await, StatusCode::OK);
    assert_eq!(
        element_text(&page, "user-id"),
        Some(FAKE_USER_ID.to_owned()),
        "the dashboard shows the API's user"
    );
    assert!(!page.contains(OTHER_USER));
    assert_eq!(app.listed_token_ids(&bob).await, [bobs.id]);
}

#[tokio::test]
async fn a_consumer_refused_self_keeps_tokens_per_login_and_says_so() {
    // Arrange
    let app = TestApp::spawn().await;
    app.api.refuse_self(true);
    let first = app.logged_in_browser().await;
    let second = app.logged_in_browser().await;

    // Act
    let made = app.create_proxy_token(&first, "first login's").await;
    let page = app.get(&first, "/").await.text().await.expect("dashboard");

    // Assert: the same person logging in twice cannot be told apart, so
    // each login lists only its own tokens.
    assert_eq!(app.listed_token_ids(&first).await, [made.id]);
    assert!(app.listed_token_ids(&second).await.is_empty());
    assert!(page.contains("id=\"identity-unknown\""), "the page says so");
    assert!(!page.contains("id=\"user-id\""));
    let summary = service_client()
        .get(app.at("/api/v2/summary"))
        .bearer_auth(&made.token)
        .send()
        .await
        .expect("GET /api/v2/summary");
    assert_eq!(summary.status(), StatusCode::OK, "the token works");
}

#[tokio::test]
async fn an_api_failing_to_say_whose_token_it_is_fails_the_login_and_stores_nothing() {
    // Arrange
    let app = TestApp::spawn().await;
    app.api.fail_self(true);
    let client = browser();

    // Act
    let started = app.start_login(&client).await;
    let callback = app.approve(&client, &location(&started)).await;
    let finished = client
        .get(callback)
        .header("accept", "text/html")
        .send()
        .await
        .expect("GET /callback");
    let status = finished.status();
    let page = finished.text().await.unwrap_or_default();

    // Assert
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{page}");
    assert!(page.contains("Unexpected answer"), "{page}");
    let home = app.get(&client, "/").await;
    assert_eq!(home.status(), StatusCode::SEE_OTHER, "not logged in");
    assert_eq!(location(&home), "/login");
}

#[tokio::test]
async fn two_instances_sharing_redis_lose_no_token_made_at_once() {
    // Arrange: one person, logged in on two instances sharing Redis.
    let redis = RedisServer::start();
    let first = TestApp::spawn_with(redis_options(&redis)).await;
    let second = first.spawn_beside(redis_options(&redis)).await;
    let (on_first, on_second) = (
        first.logged_in_browser().await,
        second.logged_in_browser().await,
    );

    // Act: 25 creations on each at once.
    let creations = (0..50).map(|n| {
        let (app, client) = if n % 2 == 0 {
            (&first, &on_first)
        } else {
            (&second, &on_second)
        };
        async move { try_create_token(app, client, &format!("token {n}")).await }
    });
    let created: Vec<(StatusCode, Value)> = join_all(creations).await;

    // Assert: all 50 are listed on both.
    assert!(
        created
            .iter()
            .all(|(status, _)| *status == StatusCode::CREATED),
        "{created:?}"
    );
    let mut ids: Vec<String> = created
        .iter()
        .filter_map(|(_, body)| body["id"].as_str().map(str::to_owned))
        .collect();
    ids.sort();
    for app in [(&first, &on_first), (&second, &on_second)] {
        let mut listed = app.0.listed_token_ids(app.1).await;
        listed.sort();
        assert_eq!(listed, ids, "every token is listed");
    }
    let tokens: Vec<String> = created
        .iter()
        .filter_map(|(_, body)| body["token"].as_str().map(str::to_owned))
        .collect();
    for token in &tokens {
        // Checked (and so remembered) by both instances before the revoke.
        assert_eq!(first.bearer_status(token).await, StatusCode::OK);
        assert_eq!(second.bearer_status(token).await, StatusCode::OK);
    }

    // Act: all revoked at once, half through each instance.
    let revocations = ids.iter().enumerate().map(|(n, id)| {
        let (app, client) = if n % 2 == 0 {
            (&first, &on_first)
        } else {
            (&second, &on_second)
        };
        revoke_token(app, client, id)
    });
    let revoked = join_all(revocations).await;

    // Assert: all dead on both, nothing listed, no key left but sessions.
    assert!(
        revoked
            .iter()
            .all(|status| *status == StatusCode::NO_CONTENT)
    );
    tokio::time::sleep(PAST_TOKEN_CACHE).await;
    for token in &tokens {
        assert_eq!(first.bearer_status(token).await, StatusCode::UNAUTHORIZED);
        assert_eq!(second.bearer_status(token).await, StatusCode::UNAUTHORIZED);
    }
    assert!(first.listed_token_ids(&on_first).await.is_empty());
    assert_eq!(redis.records().await.len(), 2, "the two sessions only");
}

#[tokio::test]
async fn a_token_revoked_while_in_use_and_a_session_ended_while_in_use_stay_dead() {
    // Arrange: sessions that are written back every second while used.
    let redis = RedisServer::start();
    let app = TestApp::spawn_with(crate::support::redis::options(
        &redis,
        &["--session-idle-secs", "2"],
    ))
    .await;
    let (owner, cookie) = app.logged_in_browser_and_cookie().await;
    let made = app.create_proxy_token(&owner, "busy service").await;
    let stop = tokio_util::sync::CancellationToken::new();
    let hammer = |authorization: (&'static str, String)| {
        let (url, stop) = (app.at("/api/v2/self"), stop.clone());
        tokio::spawn(async move {
            let client = service_client();
            while !stop.is_cancelled() {
                let _ = client
                    .get(&url)
                    .header(authorization.0, &authorization.1)
                    .send()
                    .await;
            }
        })
    };
    let mut users = Vec::new();
    for _ in 0..4 {
        users.push(hammer(("authorization", format!("Bearer {}", made.token))));
        users.push(hammer(("cookie", cookie.clone())));
    }
    // Long enough for last-use and keep-alive writes to be under way.
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    // Act: revoke the token and log out while they run.
    let revoked = revoke_token(&app, &owner, &made.id).await;
    app.log_out(&owner).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    stop.cancel();
    join_all(users).await;

    // Assert
    assert_eq!(revoked, StatusCode::NO_CONTENT);
    assert_eq!(
        app.bearer_status(&made.token).await,
        StatusCode::UNAUTHORIZED
    );
    let with_cookie = service_client()
        .get(app.at("/api/v2/self"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("GET /api/v2/self with the old cookie");
    assert_eq!(with_cookie.status(), StatusCode::UNAUTHORIZED);
    let left = redis.records().await;
    assert!(left.is_empty(), "nothing came back: {left:?}");
}

#[tokio::test]
async fn the_token_past_the_limit_is_refused_until_one_is_revoked() {
    // Arrange
    let app = TestApp::spawn().await;
    let client = app.logged_in_browser().await;
    let mut ids = Vec::new();
    for n in 0..50 {
        ids.push(app.create_proxy_token(&client, &format!("t{n}")).await.id);
    }

    // Act
    let (refused, body) = try_create_token(&app, &client, "the 51st").await;
    revoke_token(&app, &client, &ids[0]).await;
    let (after_revoke, _) = try_create_token(&app, &client, "in its place").await;

    // Assert
    assert_eq!(refused, StatusCode::CONFLICT);
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("50") && error.contains("revoke one first"),
        "{body}"
    );
    assert_eq!(after_revoke, StatusCode::CREATED);
    assert_eq!(app.listed_token_ids(&client).await.len(), 50);
}

/// Anonymous requests of every kind: pages, the proxy, the relays.
async fn anonymous_requests(app: &TestApp, rounds: usize) {
    for _ in 0..rounds {
        let client = browser();
        for path in ["/", "/login", "/api/v2/self", "/ws/events", "/tokens"] {
            let response = client
                .get(app.at(path))
                .send()
                .await
                .expect("anonymous request");
            for cookie in response.headers().get_all("set-cookie") {
                let cookie = cookie.to_str().unwrap_or_default();
                assert!(
                    !cookie.starts_with("ocs_session"),
                    "{path} set a session cookie: {cookie}"
                );
            }
        }
    }
}

#[tokio::test]
async fn anonymous_visitors_write_nothing_to_redis() {
    let redis = RedisServer::start();
    let app = TestApp::spawn_with(redis_options(&redis)).await;
    anonymous_requests(&app, 100).await;
    let keys = redis.records().await;
    assert!(keys.is_empty(), "{keys:?}");

    // The first write is a login start.
    app.start_login(&browser()).await;
    assert_eq!(redis.records().await.len(), 1);
}

#[tokio::test]
async fn anonymous_visitors_write_nothing_to_the_memory_store() {
    let app = TestApp::spawn().await;
    anonymous_requests(&app, 100).await;
    assert_eq!(app.embedded_store_len(), Some(0));
    app.start_login(&browser()).await;
    assert_eq!(app.embedded_store_len(), Some(1));
}

#[tokio::test]
async fn two_tabs_both_finish_in_either_order() {
    for first_approved in [0, 1] {
        // Arrange: one browser starts a login in each of two tabs.
        let app = TestApp::spawn().await;
        let client = browser();
        let tabs = [
            location(&app.start_login(&client).await),
            location(&app.start_login(&client).await),
        ];
        let order = [first_approved, 1 - first_approved];

        // Act
        let mut finished = Vec::new();
        for tab in order {
            let callback = app.approve(&client, &tabs[tab]).await;
            let answer = client.get(&callback).send().await.expect("callback");
            finished.push((answer.status(), location(&answer)));
            // A replay of the same callback is refused.
            let replay = client.get(&callback).send().await.expect("replay");
            assert_eq!(replay.status(), StatusCode::BAD_REQUEST, "replay");
        }

        // Assert: both logins finish; the session acts with the last grant.
        for (status, to) in &finished {
            assert_eq!((*status, to.as_str()), (StatusCode::SEE_OTHER, "/"));
        }
        let issued = app.api.issued_access_tokens();
        assert_eq!(issued.len(), 2);
        let page = app.get(&client, "/").await.text().await.expect("dashboard");
        assert!(
            page.contains(&issued[1].token),
            "the second grant replaced the first"
        );
    }
}

#[tokio::test]
async fn the_eleventh_login_start_in_a_minute_gets_429_and_never_reaches_the_api() {
    // Arrange
    let app = TestApp::spawn().await;
    let client = browser();
    for _ in 0..10 {
        assert_eq!(
            app.start_login(&client).await.status(),
            StatusCode::SEE_OTHER
        );
    }
    let asked_before = app
        .api
        .requests()
        .iter()
        .filter(|request| request.path == "/v2/oauth/request_token")
        .count();

    // Act
    let refused = app.start_login(&client).await;

    // Assert
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = refused
        .headers()
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .expect("a Retry-After in seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let page = refused.text().await.unwrap_or_default();
    assert!(
        page.contains(&format!("Try again in {retry_after} seconds")),
        "{page}"
    );
    let asked_after = app
        .api
        .requests()
        .iter()
        .filter(|request| request.path == "/v2/oauth/request_token")
        .count();
    assert_eq!((asked_before, asked_after), (10, 10));
}

#[tokio::test]
async fn revoking_access_revokes_the_token_at_the_api_and_every_proxy_token_made_from_it() {
    // Arrange
    let app = TestApp::spawn().await;
    let client = app.logged_in_browser().await;
    let made = [
        app.create_proxy_token(&client, "one").await,
        app.create_proxy_token(&client, "two").await,
    ];
    let access = app.api.issued_access_tokens()[0].token.clone();
    let csrf = app.csrf(&client).await;

    // Act
    let answer = client
        .post(app.at("/revoke"))
        .form(&[("csrf", csrf)])
        .send()
        .await
        .expect("POST /revoke");
    let status = answer.status();
    let page = answer.text().await.unwrap_or_default();

    // Assert: the API got its own token's signed DELETE (the fake checks
    // the signature and forgets the token).
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("2 proxy token(s)"), "{page}");
    let deletes: Vec<_> = app
        .api
        .requests()
        .into_iter()
        .filter(|request| request.method == "DELETE")
        .collect();
    assert_eq!(deletes.len(), 1);
    assert_eq!(deletes[0].path, format!("/v2/self/tokens/{access}"));
    assert!(
        deletes[0]
            .header("authorization")
            .is_some_and(|value| value.contains(&format!("oauth_token=\"{access}\"")))
    );
    assert!(
        app.api.issued_access_tokens().is_empty(),
        "revoked at the API"
    );
    for token in &made {
        assert_eq!(
            app.bearer_status(&token.token).await,
            StatusCode::UNAUTHORIZED
        );
    }
    let home = app.get(&client, "/").await;
    assert_eq!(location(&home), "/login", "the session is gone");
}

#[tokio::test]
async fn revoking_access_says_so_when_the_api_refuses_and_deletes_the_tokens_anyway() {
    // Arrange
    let app = TestApp::spawn().await;
    let client = app.logged_in_browser().await;
    let made = app.create_proxy_token(&client, "one").await;
    let csrf = app.csrf(&client).await;
    app.api
        .set_mode(crate::support::fake_api::Mode::ServerError);

    // Act
    let answer = client
        .post(app.at("/revoke"))
        .form(&[("csrf", csrf)])
        .send()
        .await
        .expect("POST /revoke");
    let status = answer.status();
    let page = answer.text().await.unwrap_or_default();
    app.api.set_mode(crate::support::fake_api::Mode::Normal);

    // Assert
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{page}");
    assert!(page.contains("did not revoke"), "{page}");
    assert!(
        page.contains("revoke it in the Clever Cloud console"),
        "{page}"
    );
    assert_eq!(
        app.bearer_status(&made.token).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(location(&app.get(&client, "/").await), "/login");
}

#[tokio::test]
async fn open_relays_close_once_their_token_is_revoked_or_their_session_ended() {
    // Arrange: a relay by proxy token and one by the session's cookie.
    let app = TestApp::spawn().await;
    let (owner, cookie) = app.logged_in_browser_and_cookie().await;
    let made = app.create_proxy_token(&owner, "streams").await;
    let mut by_token = ws::open(&app, "/ws/events", ws::Auth::Bearer(&made.token))
        .await
        .unwrap_or_else(|(status, body)| panic!("{status} {body}"));
    ws::expect_ready(&mut by_token).await;
    let mut by_cookie = ws::open_as_browser(&app, &cookie, "/ws/events").await;
    ws::expect_ready(&mut by_cookie).await;

    // Act
    revoke_token(&app, &owner, &made.id).await;
    app.log_out(&owner).await;

    // Assert: each closes with 1008 within the check period (10 s).
    for relay in [&mut by_token, &mut by_cookie] {
        let (code, reason) = tokio::time::timeout(Duration::from_secs(15), ws::close_frame(relay))
            .await
            .expect("the relay closes");
        assert_eq!(code, 1008, "{reason}");
        assert!(reason.contains("revoked"), "{reason}");
    }
}
