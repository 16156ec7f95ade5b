//! The proxy-token API: `POST /tokens`, `GET /tokens`, `DELETE /tokens/{id}`.
//! Browser sessions only (a proxy token cannot mint or revoke tokens), with
//! the same-origin rule of [`Caller`] for the unsafe methods.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Deserialize;

use crate::AppState;
use crate::auth::{AuthError, Caller, Credential};
use crate::error::json_error;
use crate::proxy_tokens::TokenError;

/// Longest token name accepted.
const MAX_NAME_CHARS: usize = 100;

/// `/tokens` routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/tokens", get(list).post(create))
        .route("/tokens/{id}", delete(revoke))
}

#[derive(Debug, thiserror::Error)]
enum TokensApiError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("proxy tokens are managed from a browser session, not with a proxy token")]
    NotASession,
    #[error("a token needs a name of 1 to {MAX_NAME_CHARS} characters")]
    BadName,
    #[error("no such token")]
    NotFound,
    #[error(transparent)]
    Store(#[from] TokenError),
}

impl IntoResponse for TokensApiError {
    fn into_response(self) -> Response {
        match self {
            Self::Auth(error) => error.into_response(),
            Self::NotASession => json_error(StatusCode::FORBIDDEN, self.to_string()),
            Self::BadName => json_error(StatusCode::UNPROCESSABLE_ENTITY, self.to_string()),
            Self::NotFound => json_error(StatusCode::NOT_FOUND, self.to_string()),
            Self::Store(TokenError::TooMany(_)) => {
                json_error(StatusCode::CONFLICT, self.to_string())
            }
            Self::Store(error) => AuthError::from(error).into_response(),
        }
    }
}

fn session_caller(caller: Result<Caller, AuthError>) -> Result<Caller, TokensApiError> {
    let caller = caller?;
    match caller.credential {
        Credential::Session => Ok(caller),
        Credential::ProxyToken(_) => Err(TokensApiError::NotASession),
    }
}

#[derive(Deserialize)]
struct CreateToken {
    name: String,
}

async fn create(
    State(state): State<AppState>,
    caller: Result<Caller, AuthError>,
    Json(body): Json<CreateToken>,
) -> Result<Response, TokensApiError> {
    let caller = session_caller(caller)?;
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(TokensApiError::BadName);
    }
    let created = state.tokens.create(&caller.grant, name).await?;
    tracing::info!(token_id = %created.info.id, "proxy token created");
    state.metrics.proxy_token_created();
    // The only answer that ever holds the token: no cache may keep it.
    Ok((
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, "no-store")],
        Json(created),
    )
        .into_response())
}

async fn list(
    State(state): State<AppState>,
    caller: Result<Caller, AuthError>,
) -> Result<Response, TokensApiError> {
    let caller = session_caller(caller)?;
    Ok(Json(state.tokens.list(&caller.grant).await?).into_response())
}

async fn revoke(
    State(state): State<AppState>,
    caller: Result<Caller, AuthError>,
    Path(id): Path<String>,
) -> Result<Response, TokensApiError> {
    let caller = session_caller(caller)?;
    if state.tokens.revoke(&caller.grant, &id).await? {
        tracing::info!(token_id = %id, "proxy token revoked");
        state.metrics.proxy_token_revoked();
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(TokensApiError::NotFound)
    }
}
