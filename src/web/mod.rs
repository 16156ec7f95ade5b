//! Browser-facing routes: pages, the login dance, static assets, health.

mod assets;
mod extract;
mod health;
mod pages;
pub mod security;
mod tokens;

use axum::Router;

use crate::AppState;

/// Every browser-facing route.
pub fn router() -> Router<AppState> {
    Router::new()
        .merge(pages::router())
        .merge(assets::router())
        .merge(tokens::router())
        .merge(health::router())
}
