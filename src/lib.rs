//! oauth-consumer-server: a self-hosted gateway to the Clever Cloud API.
//!
//! It does the OAuth 1.0a login dance in the browser, keeps the tokens in
//! server-side sessions, signs API calls for browsers and services through
//! a reverse proxy, and relays the API's WebSockets. [`build`] makes the
//! whole application, so the binary and the tests run the same thing. The
//! README's "Architecture" section draws the layers.

// Entry: the state, the one table of routes, and what builds them.
mod app;
mod router;
mod state;

// Serving, and what every layer may use.
pub mod config;
pub(crate) mod error;
pub(crate) mod forwarded;
pub mod healthcheck;
pub(crate) mod hex;
pub(crate) mod metrics;
pub mod secret;
pub mod serve;
pub mod telemetry;

// The domain: OAuth, sessions and the store, proxy tokens, who calls.
pub(crate) mod auth;
pub(crate) mod oauth;
pub mod proxy_tokens;
pub mod session;

// Out to the API, and the two ways through to it.
pub(crate) mod proxy;
pub mod relay;
pub(crate) mod upstream;

// The browser's side: pages, forms, assets, middleware.
pub(crate) mod web;

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;

pub use app::{App, build};
pub use state::{AppState, Shared};
