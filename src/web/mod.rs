//! Browser-facing routes: pages, the login dance, static assets, health.

mod assets;
mod pages;
mod tokens;

use axum::Router;
use axum::routing::get;

use crate::AppState;

/// Every browser-facing route.
pub fn router() -> Router<AppState> {
    Router::new()
        .merge(pages::router())
        .merge(assets::router())
        .merge(tokens::router())
        .route("/health", get(|| async { "ok" }))
}
