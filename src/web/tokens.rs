//! The proxy-token API: `POST /tokens`, `GET /tokens`, `GET /tokens/{id}`,
//! `GET /tokens/{id}/calls`, `DELETE /tokens/{id}`.
//! Browser sessions only (a proxy token cannot mint or revoke tokens), with
//! the same-origin rule of [`Caller`] for the unsafe methods.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::auth::{AuthError, Caller, Credential};
use crate::error::json_error;
use crate::proxy_tokens::scope::Scope;
use crate::proxy_tokens::{TokenError, TokenRequest, parse_address};
use crate::session::AppSession;
use crate::state::AppState;

/// Longest token name accepted.
const MAX_NAME_CHARS: usize = 100;

#[derive(Debug, thiserror::Error)]
pub(crate) enum TokensApiError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("proxy tokens are managed from a browser session, not with a proxy token")]
    NotASession,
    #[error("a token needs a name of 1 to {MAX_NAME_CHARS} characters")]
    BadName,
    #[error("no such token")]
    NotFound,
    #[error("{0}")]
    BadRequest(String),
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
            Self::BadRequest(_) | Self::Store(TokenError::Invalid(_)) => {
                json_error(StatusCode::BAD_REQUEST, self.to_string())
            }
            Self::Store(TokenError::TooMany(_)) => {
                json_error(StatusCode::CONFLICT, self.to_string())
            }
            Self::Store(TokenError::SessionEnded) => {
                json_error(StatusCode::UNAUTHORIZED, self.to_string())
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

/// `POST /tokens`'s body. The scope is read apart, so that an error in it
/// is a 400 that names the rule.
#[derive(Deserialize)]
pub(crate) struct CreateToken {
    name: String,
    /// RFC 3339.
    expires_at: Option<String>,
    /// `"full"`, `"read-only"` or `{"rules": […], "events": …, "logs": […]}`.
    scope: Option<serde_json::Value>,
    /// IPs and CIDRs.
    allowed_ips: Option<Vec<String>>,
}

impl CreateToken {
    fn into_request(self) -> Result<TokenRequest, TokensApiError> {
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
            return Err(TokensApiError::BadName);
        }
        let expires_at = self
            .expires_at
            .map(|date| {
                time::OffsetDateTime::parse(&date, &time::format_description::well_known::Rfc3339)
                    .map_err(|_| {
                        TokensApiError::BadRequest(
                            "expires_at must be an RFC 3339 date, such as 2027-01-31T12:00:00Z"
                                .to_owned(),
                        )
                    })
            })
            .transpose()?;
        let scope = match self.scope {
            None => Scope::Full,
            Some(value) => serde_json::from_value(value)
                .map_err(|error| TokensApiError::BadRequest(format!("scope: {error}")))?,
        };
        let allowed_ips = self
            .allowed_ips
            .unwrap_or_default()
            .iter()
            .map(|text| parse_address(text))
            .collect::<Result<_, _>>()?;
        Ok(TokenRequest {
            name: name.to_owned(),
            expires_at,
            scope,
            allowed_ips,
        })
    }
}

pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Result<Caller, AuthError>,
    session: AppSession,
    Json(body): Json<CreateToken>,
) -> Result<Response, TokensApiError> {
    let caller = session_caller(caller)?;
    let request = body.into_request()?;
    // A session caller's session has an id: it was read to find the grant.
    let session = session.id().ok_or(AuthError::Missing)?;
    let created = state
        .tokens
        .create(&caller.grant, request, &session)
        .await?;
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

pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Result<Caller, AuthError>,
) -> Result<Response, TokensApiError> {
    let caller = session_caller(caller)?;
    Ok(Json(state.tokens.list(&caller.grant).await?).into_response())
}

pub(crate) async fn show(
    State(state): State<AppState>,
    caller: Result<Caller, AuthError>,
    Path(id): Path<String>,
) -> Result<Response, TokensApiError> {
    let caller = session_caller(caller)?;
    let token = state.tokens.get(&caller.grant, &id).await?;
    Ok(Json(token.ok_or(TokensApiError::NotFound)?).into_response())
}

/// The token's last calls, newest first.
pub(crate) async fn calls(
    State(state): State<AppState>,
    caller: Result<Caller, AuthError>,
    Path(id): Path<String>,
) -> Result<Response, TokensApiError> {
    let caller = session_caller(caller)?;
    let calls = state.tokens.calls(&caller.grant, &id).await?;
    Ok(Json(calls.ok_or(TokensApiError::NotFound)?).into_response())
}

pub(crate) async fn revoke(
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
