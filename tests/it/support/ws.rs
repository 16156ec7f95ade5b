//! WebSocket clients of the server's relays: open one as a browser or a
//! service, read what comes, bounded in time.

use std::time::Duration;

use futures_util::StreamExt as _;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::app::TestApp;

/// A WebSocket client of the server.
pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Longest wait for one message; only there to turn a hang into a failure.
pub const RECV_LIMIT: Duration = Duration::from_secs(20);

/// How a test's client proves who it is on the upgrade request.
#[derive(Clone, Copy)]
pub enum Auth<'a> {
    /// Nothing at all.
    Anonymous,
    /// The session cookie, sent from `origin` (none: no `Origin` header).
    Cookie {
        cookie: &'a str,
        origin: Option<&'a str>,
    },
    /// `Authorization: Bearer <token>`.
    Bearer(&'a str),
}

/// Opens `path` on `app` as `auth`; an HTTP refusal comes back as its
/// status and JSON body.
pub async fn open(
    app: &TestApp,
    path: &str,
    auth: Auth<'_>,
) -> Result<Client, (StatusCode, Value)> {
    let mut request = format!("ws://{}{path}", app.addr)
        .into_client_request()
        .expect("a valid WebSocket URL");
    let headers = request.headers_mut();
    match auth {
        Auth::Anonymous => {}
        Auth::Cookie { cookie, origin } => {
            headers.insert(
                "cookie",
                HeaderValue::from_str(cookie).expect("cookie header"),
            );
            if let Some(origin) = origin {
                headers.insert(
                    "origin",
                    HeaderValue::from_str(origin).expect("origin header"),
                );
            }
        }
        Auth::Bearer(token) => {
            let value = format!("Bearer {token}");
            headers.insert(
                "authorization",
                HeaderValue::from_str(&value).expect("bearer header"),
            );
        }
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((client, _)) => Ok(client),
        Err(tungstenite::Error::Http(response)) => {
            let status = StatusCode::from_u16(response.status().as_u16()).expect("a status");
            let body = response
                .body()
                .as_deref()
                .and_then(|body| serde_json::from_slice(body).ok())
                .unwrap_or(Value::Null);
            Err((status, body))
        }
        Err(error) => panic!("WebSocket to {path} failed: {error}"),
    }
}

/// A logged-in browser's relay on `path`, from the server's own origin.
pub async fn open_as_browser(app: &TestApp, cookie: &str, path: &str) -> Client {
    open_as_browser_result(app, cookie, path)
        .await
        .unwrap_or_else(|(status, body)| panic!("{path}: {status} {body}"))
}

/// The next message, failing after [`RECV_LIMIT`] rather than hanging.
pub async fn next(client: &mut Client) -> Option<Message> {
    match tokio::time::timeout(RECV_LIMIT, client.next()).await {
        Ok(Some(Ok(message))) => Some(message),
        Ok(Some(Err(_)) | None) => None,
        Err(_) => panic!("no message within {RECV_LIMIT:?}"),
    }
}

/// The next text message, parsed as JSON.
pub async fn next_json(client: &mut Client) -> Value {
    match next(client).await {
        Some(Message::Text(text)) => serde_json::from_str(&text).expect("relayed text is JSON"),
        other => panic!("expected a text message, got {other:?}"),
    }
}

/// Reads until the close frame; returns its code and reason.
pub async fn close_frame(client: &mut Client) -> (u16, String) {
    loop {
        match next(client).await {
            Some(Message::Close(Some(frame))) => {
                return (frame.code.into(), frame.reason.to_string());
            }
            Some(Message::Close(None)) => return (1005, String::new()),
            Some(_) => {}
            None => panic!("the stream ended without a close frame"),
        }
    }
}

/// Reads `socket_ready`, which the API sends first.
pub async fn expect_ready(client: &mut Client) {
    assert_eq!(
        next_json(client).await,
        json!({ "message_type": "socket_ready" })
    );
}

/// [`open_as_browser`], with a refusal as its status and JSON body.
pub async fn open_as_browser_result(
    app: &TestApp,
    cookie: &str,
    path: &str,
) -> Result<Client, (StatusCode, Value)> {
    let origin = app.url.clone();
    open(
        app,
        path,
        Auth::Cookie {
            cookie,
            origin: Some(&origin),
        },
    )
    .await
}
