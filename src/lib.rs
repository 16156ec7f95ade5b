//! oauth-consumer-server: a self-hosted gateway to the Clever Cloud API.
//!
//! It does the OAuth 1.0a login dance in the browser and keeps the tokens in
//! server-side sessions. [`app`] builds the whole HTTP application, so the
//! binary and the tests run the same thing.

pub mod api_stream;
pub mod auth;
pub mod config;
pub mod error;
pub mod forwarded;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod healthcheck;
pub mod hex;
pub mod metrics;
pub mod oauth;
pub mod proxy;
pub mod proxy_tokens;
pub mod relay;
pub mod secret;
pub mod serve;
pub mod session;
pub mod telemetry;
pub mod web;

use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::middleware;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::oauth::{OAuthClient, Signer};

/// What every handler may use: one `Arc`, so the several clones each
/// request makes (extractors, middleware) cost one reference count.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    /// The same state with its own pooled client to the API: each worker
    /// thread gets one, so a request and its upstream connection are served
    /// by one thread (see [`serve::serve_on_workers`]).
    pub fn with_own_api_client(&self) -> Result<Self, proxy::upstream::UrlNotAnOrigin> {
        Ok(Self(Arc::new(Shared {
            api_client: proxy::client(&self.config)?,
            ..Shared::clone(&self.0)
        })))
    }
}

/// The contents of [`AppState`].
#[derive(Clone)]
pub struct Shared {
    /// The configuration, parsed once.
    pub config: Arc<Config>,
    /// The client of the API's OAuth endpoints.
    pub oauth: OAuthClient,
    /// The session store, which also keeps proxy tokens.
    pub store: session::Store,
    /// Proxy tokens, kept in the same store.
    pub tokens: Arc<proxy_tokens::ProxyTokens>,
    /// Signs and checks the forms' CSRF tokens.
    pub(crate) csrf: web::csrf::CsrfKey,
    /// Login starts per client address.
    pub(crate) login_limiter: Arc<web::login_limit::LoginLimiter>,
    /// The proxy's pool of connections to the API.
    pub api_client: proxy::ApiClient,
    /// Cancelled when the server starts shutting down.
    pub shutdown: CancellationToken,
    /// What the server counts, for `/metrics`.
    pub metrics: Arc<metrics::Metrics>,
    /// Proxies whose `X-Forwarded-*` headers are believed.
    pub trusted_proxies: Arc<forwarded::TrustedProxies>,
    /// The open WebSocket relays.
    pub relays: Arc<relay::RelayRegistry>,
}

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
    pub fn worker_router(&self) -> Result<Router, proxy::upstream::UrlNotAnOrigin> {
        Ok(self
            .routes
            .clone()
            .with_state(self.state.with_own_api_client()?))
    }
}

/// Builds the application for `config`: routes, sessions, middleware.
pub async fn app(config: Config) -> anyhow::Result<Router> {
    app_with_shutdown(config, CancellationToken::new()).await
}

/// Like [`app`], with the token whose cancellation tells long-lived
/// connections (WebSocket relays) that the server is going away.
pub async fn app_with_shutdown(
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<Router> {
    Ok(build(config, shutdown).await?.router())
}

/// Builds the application and keeps its state at hand, for
/// [`serve::serve`].
pub async fn build(config: Config, shutdown: CancellationToken) -> anyhow::Result<App> {
    // rustls needs one process-wide crypto provider, chosen explicitly in
    // case a dependency links a second one.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let signer = Signer::new(config.oauth_signature_method);
    let oauth = OAuthClient::new(
        config.api_host.clone(),
        signer,
        config.api_connect_timeout(),
        config.oauth_call_timeout(),
    )
    .context("building the HTTP client for the OAuth endpoints")?;
    let metrics = Arc::new(metrics::Metrics::new());
    let oauth = oauth.with_metrics(Arc::clone(&metrics));
    let trusted_proxies = forwarded::TrustedProxies::from_config_and_env(&config.trusted_proxies)?;
    let security_headers = web::security::SecurityHeaders::new(&config);
    let api_client = proxy::client(&config).context("building the proxy's HTTP client")?;
    let store = session::store(&config)
        .await
        .context("setting up the session store")?;
    let session_layer = session::layer(store.clone(), &config);
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
    let router = Router::new()
        .merge(web::router())
        .merge(proxy::router())
        .merge(relay::router())
        .merge(metrics::router());
    let router = router
        .layer(web::middleware::UnlessBearerProxyCall(
            tower::ServiceBuilder::new()
                .layer(middleware::from_fn(web::middleware::answer_store_failures))
                .layer(session_layer),
        ))
        .layer(web::security::layer(security_headers))
        .layer(telemetry::Track::new(state.clone()));
    Ok(App {
        routes: router,
        state,
    })
}
