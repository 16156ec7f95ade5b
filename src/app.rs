//! The application: its shared state ([`crate::state`]), built once from
//! the configuration, and the routes waiting for it ([`crate::router`]).

use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::oauth::{OAuthClient, Signer};
use crate::state::{AppState, Shared};
use crate::{forwarded, metrics, proxy_tokens, relay, router, session, upstream, web};

/// The application: its routes and the state its handlers share.
pub struct App {
    /// Every route, with the middleware, waiting for its state.
    routes: Router<AppState>,
    /// The shared state (shutdown token, metrics, store, …).
    pub state: AppState,
}

impl App {
    /// The router, serving with [`App::state`].
    pub fn router(&self) -> Router {
        self.routes.clone().with_state(self.state.clone())
    }

    /// A router for one worker thread: the same routes and state, with the
    /// worker's own pooled client to the API.
    pub fn worker_router(&self) -> Result<Router, upstream::pool::UrlNotAnOrigin> {
        Ok(self
            .routes
            .clone()
            .with_state(self.state.with_own_api_client()?))
    }
}

/// Builds the application and keeps its state at hand, for
/// [`crate::serve::serve`].
pub async fn build(config: Config, shutdown: CancellationToken) -> anyhow::Result<App> {
    // rustls needs one process-wide crypto provider, chosen explicitly in
    // case a dependency links a second one.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let metrics = Arc::new(metrics::Metrics::new());
    let oauth = OAuthClient::new(
        config.api_host.clone(),
        Signer::new(config.oauth_signature_method),
        (config.api_connect_timeout(), config.oauth_call_timeout()),
        Arc::clone(&metrics),
    )
    .context("building the HTTP client for the OAuth endpoints")?;
    let trusted_proxies = forwarded::TrustedProxies::from_config_and_env(&config.trusted_proxies)?;
    let security_headers = web::security::SecurityHeaders::new(&config);
    let api_client = upstream::pool::client(&config).context("building the proxy's HTTP client")?;
    let store = session::store(&config)
        .await
        .context("setting up the session store")?;
    let session_cookie = session::SessionCookie::new(&config);
    let session_layer = session::layer(store.clone(), &config, &session_cookie);
    let relays = relay::RelayRegistry::counting_into(metrics.relays_open_gauge());
    let tokens = Arc::new(proxy_tokens::ProxyTokens::new(
        store.clone(),
        usize::try_from(config.proxy_tokens_per_owner).unwrap_or(usize::MAX),
    ));
    let csrf = web::csrf::CsrfKey::new(&config);
    let login_limiter = Arc::new(web::login_limit::LoginLimiter::per_minute(
        config.login_starts_per_minute,
    ));
    let state = AppState(Arc::new(Shared {
        config: Arc::new(config),
        oauth,
        tokens,
        csrf,
        login_limiter,
        store,
        api_client,
        shutdown,
        metrics,
        trusted_proxies: Arc::new(trusted_proxies),
        relays: Arc::new(relays),
    }));
    let remembered = session::RememberedSessions::new(session_cookie, state.store.clone());
    let routes = router::routes(&state, session_layer, remembered, security_headers);
    Ok(App { routes, state })
}
