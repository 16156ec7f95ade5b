//! Every route the server answers, and the layers around them: any
//! behaviour is two hops from here (this table, then its handler).

use axum::Router;
use axum::middleware::from_fn;
use axum::routing::{any, get, post};
use tower::ServiceBuilder;
use tower::util::MapResponseLayer;
use tower_sessions::SessionManagerLayer;
use tower_sessions::service::PrivateCookie;

use crate::session::{RememberedSessions, Store};
use crate::state::AppState;
use crate::web::security::SecurityHeaders;
use crate::web::{self, assets, health, middleware, pages, tokens};
use crate::{proxy, relay, telemetry};

/// The routes, waiting for their state. From the outside in, every request
/// is tracked (request id, log line, metrics), gets the security headers,
/// then, unless it is a call to the proxy or a relay with a bearer token or
/// the cookie of a session read lately, a session (with store failures
/// answered as 503).
pub(crate) fn routes(
    state: &AppState,
    session_layer: SessionManagerLayer<Store, PrivateCookie>,
    remembered: RememberedSessions,
    security_headers: SecurityHeaders,
) -> Router<AppState> {
    Router::new()
        // Pages and the login dance (web/pages.rs).
        .route("/", get(pages::home))
        .route("/login", get(pages::login_page).post(pages::login))
        .route("/callback", get(pages::callback))
        .route("/logout", post(pages::logout))
        .route("/revoke", post(pages::revoke_access))
        // Proxy tokens, for a browser session (web/tokens.rs).
        .route("/tokens", get(tokens::list).post(tokens::create))
        .route("/tokens/{id}", get(tokens::show).delete(tokens::revoke))
        .route("/tokens/{id}/calls", get(tokens::calls))
        // The signed reverse proxy (proxy/), every answer sandboxed.
        .route(
            "/api/{*path}",
            any(proxy::forward).layer(MapResponseLayer::new(proxy::sandboxed)),
        )
        // The WebSocket relays (relay/).
        .route("/ws/events", get(relay::events))
        .route("/ws/logs/{app_id}", get(relay::logs))
        // Operating it.
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/metrics", get(web::metrics::scrape))
        .route("/static/{name}", get(assets::serve))
        .layer(middleware::SessionLayers::new(
            ServiceBuilder::new()
                .layer(from_fn(middleware::answer_store_failures))
                .layer(session_layer),
            remembered,
        ))
        .layer(web::security::layer(security_headers))
        .layer(telemetry::Track::new(state.clone()))
}
