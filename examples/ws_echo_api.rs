//! The relay's WebSocket conformance run, driven by `.ci/autobahn`.
//!
//! `ws_echo_api api ADDR` serves a stand-in for the API on ADDR: the OAuth
//! token endpoints (any signature accepted) and an events socket that
//! takes the relay's OAuth message, then echoes every message it gets.
//!
//! `ws_echo_api adapter ADDR SERVER_URL` logs in to the server (whose API
//! is the stand-in), creates a proxy token, then listens on ADDR: every
//! connection's upgrade request goes to the server's `/ws/events` with
//! `Authorization: Bearer <token>`, and past it the bytes flow both ways
//! untouched. A conformance suite pointed at ADDR then tests the relay.

use anyhow::{Context as _, bail};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::routing::get;
use memchr::memmem;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite;

mod support;

/// Largest message the echo takes: past the suite's largest (16 MiB).
const MAX_MESSAGE_BYTES: usize = 64 << 20;
/// Longest upgrade request head the adapter reads.
const MAX_HEAD_BYTES: usize = 16 * 1024;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match support::args().as_slice() {
        ["api", addr] => api(addr).await,
        ["adapter", addr, server] => adapter(addr, server).await,
        _ => bail!("usage: ws_echo_api api ADDR | ws_echo_api adapter ADDR SERVER_URL"),
    }
}

// ---- The API's stand-in ----

async fn api(addr: &str) -> anyhow::Result<()> {
    let app = support::oauth_stub().route(
        "/v2/events/event-socket",
        get(|upgrade: WebSocketUpgrade| async move {
            upgrade
                .max_message_size(MAX_MESSAGE_BYTES)
                .max_frame_size(MAX_MESSAGE_BYTES)
                .on_upgrade(echo)
        }),
    );
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    axum::serve(listener, app).await?;
    Ok(())
}

/// Takes the OAuth message (trusted), then echoes texts and binaries;
/// pings and closes are answered by the WebSocket library.
async fn echo(mut socket: WebSocket) {
    if !matches!(socket.recv().await, Some(Ok(Message::Text(_)))) {
        return;
    }
    while let Some(received) = socket.recv().await {
        let echoed = match received {
            Ok(message @ (Message::Text(_) | Message::Binary(_))) => message,
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Close(_)) => continue,
            Err(error) => {
                // The relay leaves UTF-8 to the ends; the library reports
                // a bad text without closing, so the close is sent here,
                // as a conforming server does (RFC 6455 §8.1).
                if is_invalid_text(error) {
                    let close = CloseFrame {
                        code: close_code::INVALID,
                        reason: "text that is not UTF-8".into(),
                    };
                    let _ = socket.send(Message::Close(Some(close))).await;
                }
                return;
            }
        };
        if socket.send(echoed).await.is_err() {
            return;
        }
    }
}

fn is_invalid_text(error: axum::Error) -> bool {
    error
        .into_inner()
        .downcast::<tungstenite::Error>()
        .is_ok_and(|error| matches!(*error, tungstenite::Error::Utf8(_)))
}

// ---- The adapter ----

async fn adapter(addr: &str, server: &str) -> anyhow::Result<()> {
    let token = proxy_token(server).await?;
    let server_addr = server
        .strip_prefix("http://")
        .context("SERVER_URL: http://HOST:PORT")?
        .trim_end_matches('/')
        .to_owned();
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    loop {
        let (client, _) = listener.accept().await?;
        let (server_addr, token) = (server_addr.clone(), token.clone());
        tokio::spawn(async move {
            if let Err(error) = bridge(client, &server_addr, &token).await {
                eprintln!("adapter: {error:#}");
            }
        });
    }
}

/// A proxy token of a person logged in to `server`.
async fn proxy_token(server: &str) -> anyhow::Result<String> {
    let cookie = support::log_in(server).await?;
    let created: Value = reqwest::Client::builder()
        .no_proxy()
        .build()?
        .post(format!("{server}/tokens"))
        .header("cookie", cookie)
        .header("origin", server)
        .json(&json!({ "name": "conformance" }))
        .send()
        .await?
        .error_for_status()
        .context("POST /tokens")?
        .json()
        .await?;
    created["token"]
        .as_str()
        .map(str::to_owned)
        .context("POST /tokens answered no token")
}

/// Sends the client's upgrade request to `/ws/events` with the token,
/// then copies bytes both ways until either side ends.
async fn bridge(mut client: TcpStream, server_addr: &str, token: &str) -> anyhow::Result<()> {
    let mut received = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(end) = memmem::find(&received, b"\r\n\r\n") {
            break end;
        }
        if received.len() > MAX_HEAD_BYTES {
            bail!("an upgrade request head past {MAX_HEAD_BYTES} bytes");
        }
        if client.read_buf(&mut received).await? == 0 {
            // A probe of the port, or a client that gave up.
            return Ok(());
        }
    };
    let head = std::str::from_utf8(&received[..head_end]).context("a head that is not text")?;
    let headers = head
        .split("\r\n")
        .skip(1)
        .filter(|line| !line.to_ascii_lowercase().starts_with("authorization:"));
    let mut forwarded = String::from("GET /ws/events HTTP/1.1\r\n");
    for line in headers {
        forwarded.push_str(line);
        forwarded.push_str("\r\n");
    }
    forwarded.push_str(&format!("Authorization: Bearer {token}\r\n\r\n"));

    let mut server = TcpStream::connect(server_addr).await?;
    server.set_nodelay(true)?;
    client.set_nodelay(true)?;
    server.write_all(forwarded.as_bytes()).await?;
    server.write_all(&received[head_end + 4..]).await?;
    tokio::io::copy_bidirectional(&mut client, &mut server).await?;
    Ok(())
}
