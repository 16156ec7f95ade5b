//! The OAuth 1.0a login dance, driven like a browser over real sockets.

use reqwest::StatusCode;

use crate::support::fake_api::FAKE_USER_ID;
use crate::support::{
    ConsumerMode, FakeApi, Mode, Options, TestApp, browser, element_text, location,
};

/// Whether the page `response` carries contains `text`.
async fn page_says(response: reqwest::Response, text: &str) -> bool {
    response.text().await.expect("page body").contains(text)
}

const METHODS: [&str; 3] = ["HMAC-SHA512", "HMAC-SHA1", "PLAINTEXT"];

async fn credentials_page(app: &TestApp, client: &reqwest::Client) -> String {
    let home = app.get(client, "/").await;
    assert_eq!(home.status(), StatusCode::OK);
    assert_eq!(
        home.headers().get("cache-control").map(|v| v.as_bytes()),
        Some(&b"no-store"[..]),
        "a page with secrets must not be cached"
    );
    home.text().await.expect("credentials page body")
}

#[tokio::test]
async fn the_whole_dance_works_for_every_method_and_consumer_mode() {
    for consumer in [ConsumerMode::Operator, ConsumerMode::Visitor] {
        for signature_method in METHODS {
            // Arrange
            let app = TestApp::spawn_with(Options {
                consumer,
                signature_method,
                ..Options::default()
            })
            .await;
            let client = browser();

            // Act
            app.log_in(&client).await;
            let page = credentials_page(&app, &client).await;

            // Assert
            let issued = app.api.issued_access_tokens();
            assert_eq!(
                issued.len(),
                1,
                "{consumer:?}/{signature_method}: one access token"
            );
            let token = &issued[0];
            assert_eq!(
                element_text(&page, "token").as_deref(),
                Some(token.token.as_str())
            );
            assert_eq!(
                element_text(&page, "token-secret").as_deref(),
                Some(token.secret.as_str())
            );
            assert_eq!(
                element_text(&page, "consumer-key").as_deref(),
                Some(FakeApi::CONSUMER_KEY)
            );
            assert_eq!(
                element_text(&page, "user-id").as_deref(),
                Some(FAKE_USER_ID)
            );
            let oauth_calls: Vec<_> = app
                .api
                .requests()
                .into_iter()
                .filter(|request| request.path.ends_with("_token"))
                .collect();
            assert_eq!(
                oauth_calls.len(),
                2,
                "request token, then access token: {oauth_calls:?}"
            );
            assert!(oauth_calls.iter().all(|request| {
                request.header("authorization").is_some_and(|value| {
                    value.contains(&format!("oauth_signature_method=\"{signature_method}\""))
                })
            }));

            let shown_secret = element_text(&page, "consumer-secret");
            match consumer {
                ConsumerMode::Visitor => {
                    assert_eq!(shown_secret.as_deref(), Some(FakeApi::CONSUMER_SECRET));
                    let login = element_text(&page, "clever-login").unwrap_or_default();
                    assert!(
                        login.contains("--oauth-consumer-key fake-consumer-key"),
                        "{login}"
                    );
                    assert!(login.contains(&token.token));
                    let env = element_text(&page, "env-lines").unwrap_or_default();
                    assert!(
                        env.contains(&format!("CLEVER_SECRET={}", token.secret)),
                        "{env}"
                    );
                }
                ConsumerMode::Operator => {
                    assert_eq!(shown_secret, None);
                    assert!(
                        !page.contains("fake-consumer-secret"),
                        "the operator's secret leaked"
                    );
                    assert!(element_text(&page, "clever-login").is_none());
                    assert!(page.contains("proxy"));
                }
            }
        }
    }
}

#[tokio::test]
async fn the_login_page_asks_visitors_for_their_consumer_only_when_needed() {
    let operator = TestApp::spawn().await;
    let page = operator
        .get(&browser(), "/login")
        .await
        .text()
        .await
        .expect("body");
    assert!(page.contains("Log in with Clever Cloud"));
    assert!(!page.contains("name=\"consumer_secret\""));

    let visitor = TestApp::spawn_with(Options {
        consumer: ConsumerMode::Visitor,
        ..Options::default()
    })
    .await;
    let page = visitor
        .get(&browser(), "/login")
        .await
        .text()
        .await
        .expect("body");
    assert!(page.contains("name=\"consumer_key\""));
    assert!(page.contains("name=\"consumer_secret\" type=\"password\""));
    assert!(
        page.contains(&format!("{}/callback", visitor.url)),
        "the callback URL to register is shown"
    );
}

#[tokio::test]
async fn anonymous_visitors_are_sent_to_the_login_page() {
    let app = TestApp::spawn().await;
    let home = app.get(&browser(), "/").await;
    assert_eq!(home.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&home), "/login");
}

#[tokio::test]
async fn the_session_cookie_is_locked_down() {
    let app = TestApp::spawn().await;
    let login = app.get(&browser(), "/login").await;
    let cookie = login
        .headers()
        .get("set-cookie")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(
            cookie.contains(attribute),
            "{attribute} missing from {cookie}"
        );
    }
    assert!(
        !cookie.contains("Secure"),
        "plain-http APP_URL cannot use Secure cookies"
    );

    let https = TestApp::spawn_with(Options {
        extra_args: vec!["--app-url".into(), "https://gw.example.com/".into()],
        ..Options::default()
    })
    .await;
    let login = https.get(&browser(), "/login").await;
    let cookie = login
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        cookie.contains("Secure"),
        "https APP_URL needs Secure: {cookie}"
    );
}

#[tokio::test]
async fn a_callback_for_another_browsers_login_is_refused_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let (alice, mallory) = (browser(), browser());
    let alice_login = app.start_login(&alice).await;
    let alice_callback = app.approve(&alice, &location(&alice_login)).await;
    let mallory_login = app.start_login(&mallory).await;
    assert_eq!(mallory_login.status(), StatusCode::SEE_OTHER);

    // Mallory's browser is handed Alice's callback (login CSRF).
    let refused = mallory.get(&alice_callback).send().await.expect("callback");

    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert!(page_says(refused, "Unexpected callback").await);
    assert!(
        app.api.issued_access_tokens().is_empty(),
        "nothing exchanged"
    );
    let home = app.get(&mallory, "/").await;
    assert_eq!(location(&home), "/login", "Mallory is not logged in");
    // Alice's own login is untouched and still finishes.
    let finished = alice.get(&alice_callback).send().await.expect("callback");
    assert_eq!(location(&finished), "/");
}

#[tokio::test]
async fn a_callback_without_session_or_verifier_or_twice_is_refused() {
    let app = TestApp::spawn().await;
    let client = browser();
    let started = app.start_login(&client).await;
    let callback = app.approve(&client, &location(&started)).await;

    let no_session = browser().get(&callback).send().await.expect("callback");
    assert_eq!(no_session.status(), StatusCode::BAD_REQUEST);

    let without_verifier = callback
        .split('&')
        .filter(|part| !part.starts_with("oauth_verifier="))
        .collect::<Vec<_>>()
        .join("&");
    let missing = client
        .get(&without_verifier)
        .send()
        .await
        .expect("callback");
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
    assert!(app.api.issued_access_tokens().is_empty());

    let finished = client.get(&callback).send().await.expect("callback");
    assert_eq!(finished.status(), StatusCode::SEE_OTHER);
    let replayed = client.get(&callback).send().await.expect("replay");
    assert_eq!(
        replayed.status(),
        StatusCode::BAD_REQUEST,
        "a request token is good once"
    );
    assert_eq!(app.api.issued_access_tokens().len(), 1);
    let home = app.get(&client, "/").await;
    assert_eq!(
        home.status(),
        StatusCode::OK,
        "the replay did not log the browser out"
    );
}

#[tokio::test]
async fn a_wrong_consumer_secret_gives_a_clear_page_and_stores_nothing() {
    let app = TestApp::spawn_with(Options {
        consumer: ConsumerMode::Visitor,
        ..Options::default()
    })
    .await;
    let client = browser();

    let refused = app
        .start_login_with(&client, FakeApi::CONSUMER_KEY, "not-the-secret")
        .await;

    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let page = refused.text().await.unwrap_or_default();
    assert!(page.contains("Consumer refused"), "{page}");
    assert!(
        !page.contains("not-the-secret"),
        "the typed secret is not echoed"
    );
    assert!(app.api.pending_request_tokens().is_empty());
    let home = app.get(&client, "/").await;
    assert_eq!(location(&home), "/login");
}

#[tokio::test]
async fn an_empty_consumer_is_refused_before_calling_the_api() {
    let app = TestApp::spawn_with(Options {
        consumer: ConsumerMode::Visitor,
        ..Options::default()
    })
    .await;
    let refused = app.start_login_with(&browser(), "", "").await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert!(app.api.requests().is_empty());
}

#[tokio::test]
async fn a_forged_login_form_is_refused() {
    let app = TestApp::spawn().await;
    let client = browser();
    let _ = app.csrf(&client).await;
    let forged = client
        .post(app.at("/login"))
        .form(&[("csrf", "guessed")])
        .send()
        .await
        .expect("POST /login");
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert!(app.api.requests().is_empty(), "nothing sent to the API");
}

#[tokio::test]
async fn unreadable_forms_and_callbacks_get_a_page_that_says_what_to_do() {
    // Arrange: a logged-in browser, so a refused logout has something to end.
    let app = TestApp::spawn().await;
    let client = app.logged_in_browser().await;
    let csrf = app.csrf(&client).await;
    let calls_before = app.api.requests().len();

    // Act
    let without_csrf = client
        .post(app.at("/login"))
        .form(&[
            ("consumer_key", "ck"),
            ("consumer_secret", "typed-secret-42"),
        ])
        .send()
        .await
        .expect("POST /login");
    let not_a_form = client
        .post(app.at("/login"))
        .json(&serde_json::json!({ "csrf": csrf }))
        .send()
        .await
        .expect("POST /login");
    let logout_without_csrf = client
        .post(app.at("/logout"))
        .form(&[("other", "field")])
        .send()
        .await
        .expect("POST /logout");
    let twice_the_token = app
        .get(
            &client,
            "/callback?oauth_token=a&oauth_token=b&oauth_verifier=v",
        )
        .await;

    // Assert
    let mut statuses = Vec::new();
    for response in [
        without_csrf,
        not_a_form,
        logout_without_csrf,
        twice_the_token,
    ] {
        let status = response.status();
        statuses.push(status);
        assert!(status.is_client_error(), "{status}");
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(content_type.starts_with("text/html"), "{content_type}");
        let page = response.text().await.expect("error page");
        assert!(page.contains("Request not understood"), "{page}");
        assert!(page.contains("go back to the login page"), "{page}");
        assert!(!page.contains("typed-secret-42"), "nothing sent is echoed");
    }
    assert_eq!(statuses[1], StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(statuses[3], StatusCode::BAD_REQUEST);
    assert_eq!(
        app.api.requests().len(),
        calls_before,
        "nothing reached the API"
    );
    let home = app.get(&client, "/").await;
    assert_eq!(
        home.status(),
        StatusCode::OK,
        "the refused logout ended nothing"
    );
}

#[tokio::test]
async fn api_failures_give_pages_that_say_what_happened() {
    for (mode, status, words) in [
        (
            Mode::Garbage,
            StatusCode::BAD_GATEWAY,
            "does not understand",
        ),
        (
            Mode::ServerError,
            StatusCode::BAD_GATEWAY,
            "does not understand",
        ),
        (
            Mode::Hang,
            StatusCode::GATEWAY_TIMEOUT,
            "did not answer in time",
        ),
    ] {
        let app = TestApp::spawn_with(Options {
            extra_args: vec!["--oauth-call-timeout-secs".into(), "1".into()],
            ..Options::default()
        })
        .await;
        app.api.set_mode(mode);
        let client = browser();

        let failed = app.start_login(&client).await;

        assert_eq!(failed.status(), status, "{mode:?}");
        assert!(page_says(failed, words).await, "{mode:?}");
        let home = app.get(&client, "/").await;
        assert_eq!(location(&home), "/login", "{mode:?}: not logged in");
    }
}

#[tokio::test]
async fn an_unreachable_api_gives_a_bad_gateway_page() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let app = TestApp::spawn_against(
        FakeApi::start().await,
        &format!("http://{closed}"),
        Options::default(),
    )
    .await;

    let failed = app.start_login(&browser()).await;

    assert_eq!(failed.status(), StatusCode::BAD_GATEWAY);
    assert!(page_says(failed, "could not reach").await);
}

#[tokio::test]
async fn a_rejected_verifier_leaves_the_browser_logged_out() {
    let app = TestApp::spawn().await;
    let client = browser();
    let started = app.start_login(&client).await;
    let callback = app.approve(&client, &location(&started)).await;
    let forged = callback.replace("oauth_verifier=", "oauth_verifier=x");

    let refused = client.get(&forged).send().await.expect("callback");

    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert!(page_says(refused, "Authorization refused").await);
    assert!(app.api.issued_access_tokens().is_empty());
}

#[tokio::test]
async fn logging_in_gives_a_new_session_id_and_logging_out_ends_it() {
    let app = TestApp::spawn().await;
    let client = browser();
    let before = app.get(&client, "/login").await;
    let old_cookie = before
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().to_owned())
        .unwrap_or_default();
    app.log_in(&client).await;

    // The cookie from before the login does not open the logged-in session.
    let stale = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let home = stale
        .get(app.at("/"))
        .header("cookie", &old_cookie)
        .send()
        .await
        .expect("GET /");
    assert_eq!(location(&home), "/login");

    let page = credentials_page(&app, &client).await;
    let csrf = crate::support::app::hidden_field(&page, "csrf").expect("logout form has CSRF");
    let out = client
        .post(app.at("/logout"))
        .form(&[("csrf", csrf)])
        .send()
        .await
        .expect("logout");
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    let home = app.get(&client, "/").await;
    assert_eq!(location(&home), "/login");
}

#[tokio::test]
async fn health_answers() {
    let app = TestApp::spawn().await;
    let health = app.get(&browser(), "/health").await;
    assert_eq!(health.status(), StatusCode::OK);
}
