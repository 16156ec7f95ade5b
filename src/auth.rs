//! Who is calling the proxy, the relays and the token API: a browser session
//! holding an access token, or a service with a proxy token.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use std::sync::Arc;

use crate::error::json_error;
use crate::forwarded::ClientInfo;
use crate::oauth::grant::AccessGrant;
use crate::proxy_tokens::audit::{CallRecord, audit_path};
use crate::proxy_tokens::{TokenError, TokenInfo};
use crate::session::{AppSession, SessionError, SessionKey};
use crate::state::AppState;

/// The `reason` of a proxy token refused for its address, in the metrics.
pub(crate) const REFUSED_ADDRESS: &str = "address";
/// The `reason` of a proxy-token call outside the token's scope.
pub(crate) const REFUSED_SCOPE: &str = "scope";

/// How the caller proved who it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Credential {
    /// The browser's session cookie.
    Session,
    /// `Authorization: Bearer <proxy token>`: the token (its id, scope,
    /// addresses; never its value).
    ProxyToken(Arc<TokenInfo>),
}

/// An authenticated caller and the OAuth tokens it acts with.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    /// The access token (and consumer) to sign with.
    pub(crate) grant: Arc<AccessGrant>,
    /// What authenticated the caller.
    pub(crate) credential: Credential,
}

/// The grant of a session this instance read lately, found from the cookie
/// before the session layers, which the request then goes around (see
/// [`crate::web::middleware::SessionLayers`]).
#[derive(Clone, Debug)]
pub(crate) struct RememberedGrant(pub(crate) Arc<AccessGrant>);

/// The id of a remembered session, for what must check later that it still
/// lives (an open relay). Its `Debug` shows nothing: the id is the
/// browser's credential.
#[derive(Clone)]
pub(crate) struct RememberedSessionId(pub(crate) tower_sessions::session::Id);

impl std::fmt::Debug for RememberedSessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RememberedSessionId([redacted])")
    }
}

/// Why a caller was turned away. Answers JSON: these routes serve programs.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AuthError {
    /// Neither a logged-in session nor a bearer token.
    #[error("not logged in: log in on this server, or send Authorization: Bearer <proxy token>")]
    Missing,
    /// A bearer token that is unknown, revoked or malformed.
    #[error("the proxy token is unknown or revoked")]
    BadToken,
    /// A proxy token used from an address it does not allow.
    #[error("proxy token {0} may not be used from this address")]
    AddressRefused(String),
    /// A cookie-authenticated request from another site.
    #[error(
        "cross-site request refused: cookie-authenticated calls must come from this server's own pages"
    )]
    CrossOrigin,
    /// The session or token store failed.
    #[error("the session store is unavailable; try again shortly")]
    Unavailable,
}

impl From<SessionError> for AuthError {
    fn from(error: SessionError) -> Self {
        tracing::error!(%error, "session store failed during authentication");
        Self::Unavailable
    }
}

impl From<TokenError> for AuthError {
    fn from(error: TokenError) -> Self {
        tracing::error!(%error, "token store failed during authentication");
        Self::Unavailable
    }
}

impl AuthError {
    /// The answer's status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Missing | Self::BadToken => StatusCode::UNAUTHORIZED,
            Self::CrossOrigin | Self::AddressRefused(_) => StatusCode::FORBIDDEN,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let status = self.status();
        json_error(status, self.to_string())
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AuthError> {
        if let Some(authorization) = parts.headers.get(header::AUTHORIZATION) {
            let started = std::time::Instant::now();
            // A request that brings a credential is judged on it alone.
            let token = authorization
                .to_str()
                .ok()
                .and_then(bearer_token)
                .ok_or(AuthError::BadToken)?;
            let client = parts.extensions.get::<ClientInfo>().map(|client| client.ip);
            let (info, grant) = state
                .tokens
                .authenticate(token, client)
                .await?
                .ok_or(AuthError::BadToken)?;
            if !info.allows_address(client) {
                state.metrics.proxy_token_refused(REFUSED_ADDRESS);
                let refused = AuthError::AddressRefused(info.id.clone());
                // Refused here, before the proxy or a relay audits it.
                let call = CallRecord {
                    at: time::OffsetDateTime::now_utc(),
                    method: parts.method.to_string(),
                    path: audit_path(parts.uri.path()),
                    status: refused.status().as_u16(),
                    client,
                };
                state.tokens.audit(&info, call, started.elapsed());
                return Err(refused);
            }
            return Ok(Self {
                grant,
                credential: Credential::ProxyToken(info),
            });
        }

        let grant = match parts.extensions.remove::<RememberedGrant>() {
            Some(RememberedGrant(grant)) => grant,
            None => session_grant(parts, state).await?,
        };
        if !is_safe(&parts.method) && !same_origin(&parts.headers, &state.config.app_origin()) {
            return Err(AuthError::CrossOrigin);
        }
        Ok(Self {
            grant,
            credential: Credential::Session,
        })
    }
}

/// The grant of the request's session, read through the session layer
/// (which keeps the session alive), and remembered by this instance until
/// the next keep-alive is due, for [`crate::session::RECENT_SESSION_TTL`]
/// at most.
async fn session_grant(parts: &mut Parts, state: &AppState) -> Result<Arc<AccessGrant>, AuthError> {
    let session = AppSession::from_request_parts(parts, state)
        .await
        .map_err(|_| AuthError::Missing)?;
    let recent = state.store.recent_sessions();
    let generation = recent.generation();
    let (grant, keep_alive_due_in) = session
        .access_and_keep_alive()
        .await?
        .ok_or(AuthError::Missing)?;
    let grant = Arc::new(grant);
    if let Some(id) = session.id() {
        recent.remember(
            SessionKey::of(&id),
            generation,
            keep_alive_due_in,
            Arc::clone(&grant),
        );
    }
    Ok(grant)
}

/// The token of `Bearer <token>` (scheme case-insensitive).
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Methods that change nothing, and so need no same-origin proof.
pub fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether a browser request comes from our own pages: its `Origin` is ours,
/// or the browser says `Sec-Fetch-Site: same-origin` (Chromium sends
/// `Origin: null` on same-origin POSTs under some referrer policies).
pub fn same_origin(headers: &HeaderMap, app_origin: &str) -> bool {
    let origin_matches = headers
        .get(header::ORIGIN)
        .and_then(|origin| origin.to_str().ok())
        .is_some_and(|origin| origin.eq_ignore_ascii_case(app_origin));
    let fetch_same_origin = headers
        .get("sec-fetch-site")
        .is_some_and(|site| site.as_bytes() == b"same-origin");
    origin_matches || fetch_same_origin
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn bearer_tokens_are_read_strictly() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearer"), None);
    }

    #[test]
    fn same_origin_needs_our_origin_or_the_fetch_metadata() {
        let ours = "https://gw.example.com";
        let mut headers = HeaderMap::new();
        assert!(!same_origin(&headers, ours), "no proof at all");

        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!same_origin(&headers, ours));

        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://gw.example.com"),
        );
        assert!(same_origin(&headers, ours));

        let mut fetch = HeaderMap::new();
        fetch.insert(header::ORIGIN, HeaderValue::from_static("null"));
        fetch.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(same_origin(&fetch, ours));
        fetch.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!same_origin(&fetch, ours));
    }
}
