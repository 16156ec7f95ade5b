//! The browser's side, and the server's own endpoints: pages and the login
//! dance, the proxy-token API, assets, probes, metrics, and the middleware
//! every route goes through. The routes themselves are listed in
//! `crate::router`.

pub(crate) mod assets;
pub(crate) mod csrf;
pub(crate) mod dance;
mod errors;
mod extract;
pub(crate) mod health;
pub(crate) mod login_limit;
pub(crate) mod metrics;
pub(crate) mod middleware;
pub(crate) mod pages;
pub(crate) mod security;
pub(crate) mod tokens;
