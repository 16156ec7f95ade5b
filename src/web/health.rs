//! Probes for the platform: liveness and readiness.

use axum::extract::State;
use axum::http::StatusCode;

use crate::state::AppState;

/// `GET /health`: the process serves.
pub(crate) async fn health() -> &'static str {
    "ok"
}

/// Ready to take traffic: the session store answers and the server is not
/// shutting down (a draining instance says 503 so the balancer moves on).
pub(crate) async fn ready(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if state.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    }
    if !state.store.is_available().await {
        return (StatusCode::SERVICE_UNAVAILABLE, "session store unavailable");
    }
    (StatusCode::OK, "ready")
}
