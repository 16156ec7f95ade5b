//! `GET /metrics`: the Prometheus text, for a scraper holding
//! `METRICS_TOKEN` (and nobody at all when it is not set).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::auth::bearer_token;
use crate::metrics::CONTENT_TYPE;
use crate::secret::Secret;
use crate::state::AppState;

/// `GET /metrics`, with `Authorization: Bearer <METRICS_TOKEN>`.
pub(crate) async fn scrape(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(expected) = &state.config.metrics_token else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(bearer_token);
    if !presented.is_some_and(|token| token_matches(token, expected)) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "send Authorization: Bearer <METRICS_TOKEN>\n",
        )
            .into_response();
    }
    match state.metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(error) => {
            tracing::error!(%error, "metrics could not be encoded");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Compares digests in constant time, so neither the content nor the length
/// of the token leaks through timing.
fn token_matches(presented: &str, expected: &Secret) -> bool {
    let presented = Sha256::digest(presented.as_bytes());
    let expected = Sha256::digest(expected.expose().as_bytes());
    presented.ct_eq(&expected).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_compared_whole() {
        let expected = Secret::new("s3cret-metrics-token");
        assert!(token_matches("s3cret-metrics-token", &expected));
        assert!(!token_matches("s3cret-metrics-toke", &expected));
        assert!(!token_matches("", &expected));
    }
}
