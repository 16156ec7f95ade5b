//! A fast stand-in for the Clever Cloud API, for `bench/proxy.sh`.
//!
//! It answers the two OAuth token calls with fixed tokens (so the script can
//! log in through the real dance) and every other request with a small JSON
//! document the size of `/v2/self`, without checking signatures: the
//! benchmark measures the proxies in front of it, not the stub.
//!
//! Usage: `bench_upstream PORT` (listens on 127.0.0.1).

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::post;
use tokio::net::TcpListener;

/// About the size of a real `/v2/self` answer.
const SELF_JSON: &str = r#"{"id":"user_00000000-0000-4000-8000-00000000ada1","email":"ada@example.com","name":"Ada Lovelace","avatar":"https://example.com/avatars/ada.png","creationDate":1437000000000,"lang":"EN","emailValidated":true,"admin":false}"#;

async fn request_token() -> &'static str {
    "oauth_token=bench-request&oauth_token_secret=bench-request-secret&oauth_callback_confirmed=true"
}

async fn access_token() -> &'static str {
    "oauth_token=bench-access&oauth_token_secret=bench-access-secret"
}

async fn api() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], SELF_JSON)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let port: u16 = match std::env::args().nth(1) {
        Some(port) => port.parse()?,
        None => anyhow::bail!("usage: bench_upstream PORT"),
    };
    let app = Router::new()
        .route("/v2/oauth/request_token", post(request_token))
        .route("/v2/oauth/access_token", post(access_token))
        .fallback(api);
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
