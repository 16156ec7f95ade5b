//! The signed reverse proxy: `ANY /api/{*path}` goes to `API_HOST/{path}`,
//! signed with the caller's OAuth tokens.
//!
//! Bodies stream both ways with bounded memory; only a form body is read
//! whole, because its parameters are part of the signature. The rewriting
//! itself is plain functions: [`target`] (where to), [`headers`] (what
//! crosses), [`form_body_limit`] (what to read).

pub mod headers;
pub mod target;

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes, HttpBody as _};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};

use crate::auth::{Caller, Credential};
use crate::error::json_error;
use crate::forwarded::ClientInfo;
use crate::metrics::UpstreamOutcome;
use crate::oauth::Signer;
use crate::oauth::signature;
use crate::proxy_tokens::audit::{CallRecord, redact_path};
use crate::state::AppState;
use crate::upstream;

use crate::upstream::pool::UpstreamError;
pub use target::TargetError;

/// Every answer from `/api/…`, the API's or a refusal of ours, is
/// sandboxed (see [`headers::sandbox`]).
pub(crate) fn sandboxed(mut response: Response) -> Response {
    headers::sandbox(response.headers_mut());
    response
}

/// The methods forwarded to the API. Any other is refused before anything
/// is sent: a `TRACE` echoed back would show the signed `Authorization`
/// (under PLAINTEXT, both secrets), and `CONNECT` or made-up methods have
/// no business with a REST API.
pub const FORWARDED_METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
];

/// The `Allow` header of a refused method: [`FORWARDED_METHODS`].
const ALLOW: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/// Proof that the request's method is one the proxy forwards. Extracted
/// first, so a refused method is answered before authentication.
pub(crate) struct ForwardedMethod;

impl<S: Sync> FromRequestParts<S> for ForwardedMethod {
    type Rejection = ProxyError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ProxyError> {
        if FORWARDED_METHODS.contains(&parts.method) {
            Ok(Self)
        } else {
            Err(ProxyError::Method)
        }
    }
}

/// Why a request was not forwarded, or got no answer from the API.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// A method the proxy does not forward.
    #[error("this method is not forwarded to the API; use one of {ALLOW}")]
    Method,
    /// The path or request target is refused.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// A form body larger than `PROXY_FORM_LIMIT_BYTES`.
    #[error(
        "form bodies are read whole to be signed, up to {0} bytes: send a smaller one (other content types stream without limit)"
    )]
    FormTooLarge(usize),
    /// The client's body broke off or was malformed.
    #[error("the request body could not be read to its end")]
    BodyUnreadable,
    /// The session's consumer is the operator's, which is no longer configured.
    #[error(
        "the OAuth consumer of this login is no longer configured on this server: log in again"
    )]
    NoConsumer,
    /// No connection to the API.
    #[error("the Clever Cloud API could not be reached")]
    Unreachable(#[source] UpstreamError),
    /// Connecting took longer than `API_CONNECT_TIMEOUT_SECS`.
    #[error("the Clever Cloud API did not accept a connection in time")]
    ConnectTimeout(#[source] UpstreamError),
    /// Every connection of this worker's pool stayed busy.
    #[error(
        "every connection to the Clever Cloud API is busy (API_MAX_CONNECTIONS); try again shortly"
    )]
    PoolFull(#[source] UpstreamError),
    /// The API stayed silent longer than `API_IDLE_TIMEOUT_SECS`.
    #[error("the Clever Cloud API stopped answering (idle time-out)")]
    IdleTimeout(#[source] UpstreamError),
    /// The signature could not be put in a header (not expected to happen).
    #[error("internal error")]
    Signing,
    /// A proxy token whose scope has no rule for this call.
    #[error(
        "proxy token {0} may not make this call: no rule of its scope matches this method and path"
    )]
    OutOfScope(String),
}

impl ProxyError {
    fn upstream(error: UpstreamError) -> Self {
        if matches!(error, UpstreamError::PoolFull) {
            return Self::PoolFull(error);
        }
        match (error.is_timeout(), error.is_connect()) {
            (true, true) => Self::ConnectTimeout(error),
            (true, false) => Self::IdleTimeout(error),
            (false, _) => Self::Unreachable(error),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::Method => StatusCode::METHOD_NOT_ALLOWED,
            Self::Target(_) | Self::BodyUnreadable => StatusCode::BAD_REQUEST,
            Self::FormTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NoConsumer => StatusCode::UNAUTHORIZED,
            Self::Unreachable(_) => StatusCode::BAD_GATEWAY,
            Self::ConnectTimeout(_) | Self::IdleTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::PoolFull(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Signing => StatusCode::INTERNAL_SERVER_ERROR,
            Self::OutOfScope(_) => StatusCode::FORBIDDEN,
        }
    }
}

impl IntoResponse for ProxyError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            let cause = std::error::Error::source(&self).map(error_chain);
            tracing::warn!(error = %self, cause, "proxied call failed");
        } else {
            tracing::info!(error = %self, "proxied call refused");
        }
        let allow = matches!(self, Self::Method);
        let mut response = json_error(status, self.to_string());
        if allow {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(ALLOW));
        }
        response
    }
}

/// An error and its sources, joined: the first text alone leaves the cause out.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The `upstream` label of proxied calls in the metrics.
const UPSTREAM: &str = "api";

/// `ANY /api/{*path}`: checks the target, signs, forwards, streams back.
/// Its log lines belong to the request's span (`telemetry::track`), which
/// names the method and route but never the path: API paths can hold
/// secrets (`DELETE /v2/self/tokens/{token}`). A call with a proxy token is
/// also audited, allowed or refused.
pub(crate) async fn forward(
    _method: ForwardedMethod,
    State(state): State<AppState>,
    caller: Caller,
    request: Request,
) -> Result<Response, ProxyError> {
    let Credential::ProxyToken(token) = &caller.credential else {
        return send(&state, &caller, request).await;
    };
    let token = Arc::clone(token);
    let started = Instant::now();
    let call = CallRecord {
        at: time::OffsetDateTime::now_utc(),
        method: request.method().to_string(),
        path: redact_path(
            request
                .uri()
                .path()
                .strip_prefix(target::PREFIX)
                .unwrap_or_default(),
        ),
        status: 0,
        client: request
            .extensions()
            .get::<ClientInfo>()
            .map(|client| client.ip),
    };
    let answer = send(&state, &caller, request).await;
    let status = match &answer {
        Ok(response) => response.status(),
        Err(error) => error.status(),
    };
    state.tokens.audit(
        &token,
        CallRecord {
            status: status.as_u16(),
            ..call
        },
        started.elapsed(),
    );
    answer
}

/// Checks the target (and a proxy token's scope), signs, forwards.
async fn send(state: &AppState, caller: &Caller, request: Request) -> Result<Response, ProxyError> {
    let (mut parts, body) = request.into_parts();
    let config = &state.config;
    let url = target::target_url(&config.api_host, &parts.uri)?;
    if let Credential::ProxyToken(token) = &caller.credential
        && !token.scope.allows(parts.method.as_str(), url.path())
    {
        state
            .metrics
            .proxy_token_refused(crate::auth::REFUSED_SCOPE);
        return Err(ProxyError::OutOfScope(token.id.clone()));
    }
    let consumer = caller
        .grant
        .consumer
        .credentials(config.operator_consumer())
        .ok_or(ProxyError::NoConsumer)?;
    let token = caller.grant.token_credentials();

    let (form, outgoing) = if is_form(&parts.headers) {
        let form = read_form(body, config.proxy_form_limit_bytes).await?;
        // Whatever length the client announced, this is the body sent.
        parts.headers.remove(header::CONTENT_LENGTH);
        (Some(form.clone()), Body::from(form))
    } else {
        // Streamed as it comes; an empty one is sent as no body at all.
        (None, body)
    };
    let authorization =
        Signer::new(config.oauth_signature_method).authorization(&signature::Request {
            method: parts.method.as_str(),
            url: &url,
            form_body: form.as_deref(),
            consumer: &consumer,
            token: Some(&token),
            callback: None,
            verifier: None,
        });
    headers::for_api(&mut parts.headers);
    let authorization = HeaderValue::try_from(authorization).map_err(|_| ProxyError::Signing)?;
    parts.headers.insert(header::AUTHORIZATION, authorization);

    parts.uri = target::request_target(&url)?;
    let request = http::Request::from_parts(parts, outgoing);
    let answer = upstream::timed(
        &state.metrics,
        UPSTREAM,
        state.api_client.send(request),
        |answer| {
            Some(match answer {
                Ok(answer) => UpstreamOutcome::Status(answer.status().as_u16()),
                Err(error) => error.outcome(),
            })
        },
    )
    .await;
    let (mut parts, body) = answer.map_err(ProxyError::upstream)?.into_parts();
    tracing::debug!(status = parts.status.as_u16(), "proxied");
    headers::for_client(&mut parts.headers);
    Ok(Response::from_parts(parts, Body::new(body)))
}

/// Whether the body is `application/x-www-form-urlencoded`, whose
/// parameters are signed (RFC 5849 §3.4.1.3.1).
pub fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| {
            mime.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// Reads a form body whole, refusing it as soon as it is known to exceed
/// `limit` (from its announced length, or while reading).
async fn read_form(body: Body, limit: usize) -> Result<Bytes, ProxyError> {
    let announced = body.size_hint().lower();
    if usize::try_from(announced).map_or(true, |announced| announced > limit) {
        return Err(ProxyError::FormTooLarge(limit));
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ProxyError::FormTooLarge(limit))
        }
        Err(_) => Err(ProxyError::BodyUnreadable),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn the_allow_header_names_the_forwarded_methods() {
        let named: Vec<&str> = ALLOW.split(", ").collect();
        let forwarded: Vec<&str> = FORWARDED_METHODS.iter().map(Method::as_str).collect();
        assert_eq!(named, forwarded);
        let refused = ProxyError::Method.into_response();
        assert_eq!(
            refused.headers().get(header::ALLOW),
            Some(&HeaderValue::from_static(ALLOW))
        );
    }

    #[test]
    fn form_bodies_are_recognised_by_their_media_type_alone() {
        let mut headers = HeaderMap::new();
        assert!(!is_form(&headers));
        for (value, form) in [
            ("application/x-www-form-urlencoded", true),
            ("Application/X-WWW-Form-Urlencoded; charset=UTF-8", true),
            ("application/json", false),
            ("multipart/form-data; boundary=x", false),
        ] {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            assert_eq!(is_form(&headers), form, "{value}");
        }
    }

    #[tokio::test]
    async fn form_bodies_are_read_up_to_the_limit() {
        let read = read_form(Body::from("a=1&b=2"), 7).await;
        assert_eq!(read.ok().as_deref(), Some(&b"a=1&b=2"[..]));

        let too_big = read_form(Body::from("a=1&b=22"), 7).await;
        assert!(matches!(too_big, Err(ProxyError::FormTooLarge(7))));

        // A body of unknown length is cut off while it is read.
        let chunks = futures_util::stream::iter(
            ["a=1&", "b=2&", "c=3"].map(|chunk| Ok::<_, std::io::Error>(Bytes::from(chunk))),
        );
        let streamed = read_form(Body::from_stream(chunks), 7).await;
        assert!(matches!(streamed, Err(ProxyError::FormTooLarge(7))));
    }

    #[test]
    fn errors_answer_json_with_the_right_status() {
        for (error, status) in [
            (
                ProxyError::Target(TargetError::DotSegment),
                StatusCode::BAD_REQUEST,
            ),
            (ProxyError::FormTooLarge(10), StatusCode::PAYLOAD_TOO_LARGE),
            (ProxyError::NoConsumer, StatusCode::UNAUTHORIZED),
            (ProxyError::Method, StatusCode::METHOD_NOT_ALLOWED),
        ] {
            let response = error.into_response();
            assert_eq!(response.status(), status);
            assert_eq!(
                response.headers().get(header::CONTENT_TYPE),
                Some(&HeaderValue::from_static("application/json"))
            );
        }
    }
}
