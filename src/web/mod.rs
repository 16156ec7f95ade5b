//! Browser-facing routes: pages, the login dance, static assets, health.

mod assets;
pub(crate) mod csrf;
mod errors;
mod extract;
mod health;
pub(crate) mod login_limit;
pub mod middleware;
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
