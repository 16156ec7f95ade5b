//! Proxy tokens over HTTP: created and managed from a browser session, used
//! by services as bearer tokens on the proxy.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::fake_api::FAKE_USER_ID;
use crate::support::{TestApp, service_client};

async fn list(app: &TestApp, browser: &reqwest::Client) -> Vec<Value> {
    let response = app.get(browser, "/tokens").await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.expect("a JSON list")
}

#[tokio::test]
async fn a_token_is_created_used_listed_and_revoked() {
    // Arrange
    let app = TestApp::spawn().await;
    let browser = app.logged_in_browser().await;

    // Act: create, and use from a client without cookies.
    let created = app.create_proxy_token(&browser, "ci deploys").await;
    let user: Value = service_client()
        .get(app.at("/api/v2/self"))
        .bearer_auth(&created.token)
        .send()
        .await
        .expect("GET /api/v2/self")
        .json()
        .await
        .expect("JSON");

    // Assert: the token acts for the browser's login, and is listed with
    // its name, creation and last use, never its value.
    assert!(created.token.starts_with("ocsp_"), "{}", created.id);
    assert!(created.token.len() >= 5 + 43, "at least 256 bits");
    assert_eq!(user["id"], FAKE_USER_ID);
    let listed = list(&app, &browser).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], created.id.as_str());
    assert_eq!(listed[0]["name"], "ci deploys");
    assert!(listed[0]["created_at"].is_string(), "{listed:?}");
    assert!(listed[0]["last_used_at"].is_string(), "{listed:?}");
    assert!(!listed[0].to_string().contains(&created.token));

    // Act: revoke.
    let revoked = browser
        .delete(app.at(&format!("/tokens/{}", created.id)))
        .header("origin", &app.url)
        .send()
        .await
        .expect("DELETE /tokens/{id}");

    // Assert: gone from the list, refused on use.
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    assert!(list(&app, &browser).await.is_empty());
    assert_eq!(
        app.bearer_status(&created.token).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_token_keeps_working_after_the_browser_logs_out() {
    // Arrange
    let app = TestApp::spawn().await;
    let browser = app.logged_in_browser().await;
    let created = app.create_proxy_token(&browser, "cron").await;

    // Act
    app.log_out(&browser).await;

    // Assert
    let browser_call = app.get(&browser, "/api/v2/self").await;
    assert_eq!(browser_call.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.bearer_status(&created.token).await, StatusCode::OK);
}

#[tokio::test]
async fn a_proxy_token_cannot_manage_tokens() {
    // Arrange
    let app = TestApp::spawn().await;
    let browser = app.logged_in_browser().await;
    let created = app.create_proxy_token(&browser, "service").await;
    let service = service_client();

    // Act
    let statuses = [
        service
            .post(app.at("/tokens"))
            .bearer_auth(&created.token)
            .json(&json!({ "name": "child" }))
            .send()
            .await,
        service
            .get(app.at("/tokens"))
            .bearer_auth(&created.token)
            .send()
            .await,
        service
            .delete(app.at(&format!("/tokens/{}", created.id)))
            .bearer_auth(&created.token)
            .send()
            .await,
    ]
    .map(|response| response.expect("token API call").status());

    // Assert
    assert_eq!(statuses, [StatusCode::FORBIDDEN; 3]);
    assert_eq!(list(&app, &browser).await.len(), 1);
    assert_eq!(app.bearer_status(&created.token).await, StatusCode::OK);
}

#[tokio::test]
async fn cross_site_or_anonymous_token_calls_are_refused() {
    // Arrange
    let app = TestApp::spawn().await;
    let browser = app.logged_in_browser().await;
    let created = app.create_proxy_token(&browser, "kept").await;

    // Act
    let statuses = [
        browser
            .post(app.at("/tokens"))
            .header("origin", "https://evil.example")
            .json(&json!({ "name": "stolen" }))
            .send()
            .await,
        browser
            .post(app.at("/tokens"))
            .json(&json!({ "name": "no origin" }))
            .send()
            .await,
        browser
            .delete(app.at(&format!("/tokens/{}", created.id)))
            .header("origin", "https://evil.example")
            .send()
            .await,
        service_client().get(app.at("/tokens")).send().await,
    ]
    .map(|response| response.expect("token API call").status());

    // Assert
    assert_eq!(
        statuses,
        [
            StatusCode::FORBIDDEN,
            StatusCode::FORBIDDEN,
            StatusCode::FORBIDDEN,
            StatusCode::UNAUTHORIZED
        ]
    );
    let listed = list(&app, &browser).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["name"], "kept");
}
