//! What every handler shares: the configuration, the clients, the store,
//! the counters, built once by [`crate::app::build`].

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::oauth::OAuthClient;
use crate::relay::registry::RelayRegistry;
use crate::web::csrf::CsrfKey;
use crate::{forwarded, metrics, proxy_tokens, session, upstream, web};

/// What every handler may use: one `Arc`, so the several clones each
/// request makes (extractors, middleware) cost one reference count.
#[derive(Clone)]
pub struct AppState(pub(crate) Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl axum::extract::FromRef<AppState> for CsrfKey {
    fn from_ref(state: &AppState) -> Self {
        state.csrf.clone()
    }
}

impl AppState {
    /// The same state with its own pooled client to the API: each worker
    /// thread gets one, so a request and its upstream connection are served
    /// by one thread (see [`crate::serve::serve_on_workers`]).
    pub(crate) fn with_own_api_client(&self) -> Result<Self, upstream::pool::UrlNotAnOrigin> {
        Ok(Self(Arc::new(Shared {
            api_client: upstream::pool::client(&self.config)?,
            ..Shared::clone(&self.0)
        })))
    }
}

/// The contents of [`AppState`].
#[derive(Clone)]
pub struct Shared {
    /// The configuration, parsed once.
    pub(crate) config: Arc<Config>,
    /// The client of the API's OAuth endpoints.
    pub(crate) oauth: OAuthClient,
    /// The session store, which also keeps proxy tokens.
    pub store: session::Store,
    /// Proxy tokens, kept in the same store.
    pub(crate) tokens: Arc<proxy_tokens::ProxyTokens>,
    /// Signs and checks the forms' CSRF tokens.
    pub(crate) csrf: CsrfKey,
    /// Login starts per client address.
    pub(crate) login_limiter: Arc<web::login_limit::LoginLimiter>,
    /// The proxy's pool of connections to the API.
    pub(crate) api_client: upstream::pool::ApiClient,
    /// Cancelled when the server starts shutting down.
    pub(crate) shutdown: CancellationToken,
    /// What the server counts, for `/metrics`.
    pub(crate) metrics: Arc<metrics::Metrics>,
    /// Proxies whose `X-Forwarded-*` headers are believed.
    pub(crate) trusted_proxies: Arc<forwarded::TrustedProxies>,
    /// The open WebSocket relays.
    pub relays: Arc<RelayRegistry>,
}
