//! What the example programs share: a stub of the API's OAuth endpoints
//! (any signature accepted) and a login through them.

use std::sync::Arc;

use anyhow::{Context as _, bail};
use axum::Json;
use axum::Router;
use axum::routing::{get, post};
use reqwest::StatusCode;
use reqwest::cookie::{CookieStore as _, Jar};
use serde_json::json;

/// The program's arguments after its name, to match as a slice.
pub fn args() -> Vec<&'static str> {
    // Kept for the whole run anyway.
    std::env::args().skip(1).map(|arg| &*arg.leak()).collect()
}

/// The API's token endpoints, which hand out fixed tokens to anyone, and
/// `/v2/self`, which says whom they are for.
pub fn oauth_stub() -> Router {
    Router::new()
        .route(
            "/v2/self",
            get(|| async {
                Json(json!({ "id": "user_example", "name": "Example", "email": "example@example.com" }))
            }),
        )
        .route(
            "/v2/oauth/request_token",
            post(|| async { "oauth_token=rt&oauth_token_secret=rs&oauth_callback_confirmed=true" }),
        )
        .route(
            "/v2/oauth/access_token",
            post(|| async {
                "oauth_token=at&oauth_token_secret=as&expiration_date=2099-01-01T00%3A00%3A00Z"
            }),
        )
}

/// Logs in to the server (whose API is an [`oauth_stub`]) and returns the
/// session's `Cookie` header.
pub async fn log_in(server: &str) -> anyhow::Result<String> {
    let jar = Arc::new(Jar::default());
    let client = reqwest::Client::builder()
        .cookie_provider(jar.clone())
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()?;
    let page = client
        .get(format!("{server}/login"))
        .send()
        .await?
        .text()
        .await?;
    let marker = r#"name="csrf" value=""#;
    let start = page.find(marker).context("no CSRF field on /login")? + marker.len();
    let csrf = &page[start..start + page[start..].find('"').context("CSRF value")?];
    let started = client
        .post(format!("{server}/login"))
        .form(&[("csrf", csrf)])
        .send()
        .await?;
    if started.status() != StatusCode::SEE_OTHER {
        bail!("POST /login answered {}", started.status());
    }
    let finished = client
        .get(format!(
            "{server}/callback?oauth_token=rt&oauth_verifier=v&user=user_example"
        ))
        .send()
        .await?;
    if finished.status() != StatusCode::SEE_OTHER {
        bail!("GET /callback answered {}", finished.status());
    }
    let cookie = jar
        .cookies(&server.parse()?)
        .context("no session cookie after login")?;
    Ok(cookie.to_str()?.to_owned())
}
