//! The client's side of the WebSocket handshake (RFC 6455 §4.2), taken
//! here rather than by axum's `WebSocketUpgrade` so that the relay gets
//! the raw stream: the API's frames are then written to it as they are.

use std::future::Future;

use axum::extract::FromRequestParts;
use axum::http::header::{
    CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse as _, Response};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::error::json_error;
use crate::upstream::handshake::has_token;

/// The client's stream once upgraded.
pub type ClientStream = TokioIo<Upgraded>;

/// A valid WebSocket upgrade request (HTTP/1.1, version 13), not yet
/// accepted. Refusals answer as axum's extractor did: 405 for another
/// method, 400 for missing or wrong headers, 426 when the connection
/// cannot be upgraded.
#[derive(Debug)]
pub struct ClientUpgrade {
    accept_key: HeaderValue,
    on_upgrade: OnUpgrade,
}

impl<S: Send + Sync> FromRequestParts<S> for ClientUpgrade {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if parts.method != Method::GET {
            return Err(json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "a WebSocket upgrade must be a GET",
            ));
        }
        let headers = &parts.headers;
        let is_upgrade = header_has_token(headers, &CONNECTION, "upgrade")
            && header_has_token(headers, &UPGRADE, "websocket");
        if !is_upgrade {
            return Err(json_error(
                StatusCode::BAD_REQUEST,
                "this endpoint is a WebSocket: send `Connection: upgrade` and `Upgrade: websocket`",
            ));
        }
        if headers
            .get(SEC_WEBSOCKET_VERSION)
            .map(HeaderValue::as_bytes)
            != Some(b"13")
        {
            return Err(json_error(
                StatusCode::BAD_REQUEST,
                "only WebSocket version 13 is spoken here",
            ));
        }
        let Some(key) = headers.get(SEC_WEBSOCKET_KEY) else {
            return Err(json_error(
                StatusCode::BAD_REQUEST,
                "the upgrade has no `Sec-WebSocket-Key`",
            ));
        };
        let accept_key = HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
            .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())?;
        let Some(on_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
            return Err(json_error(
                StatusCode::UPGRADE_REQUIRED,
                "this connection cannot be upgraded to a WebSocket",
            ));
        };
        Ok(Self {
            accept_key,
            on_upgrade,
        })
    }
}

impl ClientUpgrade {
    /// Accepts the upgrade (`101`, no extension, no subprotocol) and runs
    /// `relay` on the stream in a task of its own once the switch is done.
    pub fn accept<F, Fut>(self, relay: F) -> Response
    where
        F: FnOnce(ClientStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => relay(TokioIo::new(upgraded)).await,
                Err(error) => tracing::debug!(%error, "the client's upgrade failed"),
            }
        });
        (
            StatusCode::SWITCHING_PROTOCOLS,
            [
                (CONNECTION, HeaderValue::from_static("upgrade")),
                (UPGRADE, HeaderValue::from_static("websocket")),
                (SEC_WEBSOCKET_ACCEPT, self.accept_key),
            ],
        )
            .into_response()
    }
}

fn header_has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .any(|value| has_token(value.as_bytes(), token))
}
