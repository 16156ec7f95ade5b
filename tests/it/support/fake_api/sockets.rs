//! The API's real-time sockets: `/v2/events/event-socket` and
//! `/v2/logs/logs-socket/{app_id}`.
//!
//! Like the real API, a socket expects `{"message_type":"oauth",
//! "authorization":"OAuth …"}` first, signed for `GET /v2/events/` or
//! `GET /v2/logs/{app_id}` with an issued access token (checked with the
//! fake's own verifier). Then it says `socket_ready`, sends heartbeat pings
//! when asked to (and counts the pongs), echoes what the client sends, and
//! sends events, log lines, floods and closes when a test tells it to
//! through a [`FakeSocket`].

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::response::Response;
use axum::routing::get;
use futures_util::SinkExt as _;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::state::TokenKind;
use super::verify::{RequestParts, SignatureMethod, SignedRequest};
use super::{SharedState, lock, unix_now};

/// How long a socket waits for the OAuth message.
const AUTH_WAIT: Duration = Duration::from_secs(10);
/// How long a test's bounded waits last before giving up.
const WAIT_LIMIT: Duration = Duration::from_secs(20);
/// The close code the real API's clients treat as "authentication failed".
pub const AUTH_FAILED_CLOSE: u16 = 4001;

pub(super) fn router() -> Router<SharedState> {
    Router::new()
        .route("/v2/events/event-socket", get(events))
        .route("/v2/logs/logs-socket/{app_id}", get(logs))
}

/// How new sockets behave, set with `FakeApi` methods.
#[derive(Debug, Clone, Default)]
pub(super) struct SocketSettings {
    /// Send a heartbeat ping this often (none when unset).
    pub heartbeat: Option<Duration>,
    /// Refuse every OAuth message, as for a revoked token.
    pub refuse_auth: bool,
}

/// What a test sees of one socket the fake accepted.
#[derive(Debug, Clone)]
pub struct FakeSocket {
    /// The path the socket was opened on.
    pub path: String,
    /// The query string of the upgrade request, without `?`.
    pub raw_query: Option<String>,
    commands: mpsc::UnboundedSender<Command>,
    record: Arc<SocketRecord>,
}

/// What happened on a socket.
#[derive(Debug, Default)]
struct SocketRecord {
    /// `Some(Ok(method))` once authenticated, `Some(Err(reason))` if refused.
    auth: Mutex<Option<Result<SignatureMethod, String>>>,
    /// Text messages from the client, heartbeat pongs excepted.
    received: Mutex<Vec<String>>,
    /// The close frame the client sent, if any.
    close_received: Mutex<Option<(u16, String)>>,
    pings_sent: AtomicUsize,
    pongs: AtomicUsize,
    flood_sent: AtomicUsize,
    ended: AtomicBool,
}

#[derive(Debug)]
enum Command {
    Send(String),
    Close(u16, String),
    Vanish,
    Flood { count: usize, pad: usize },
}

impl FakeSocket {
    /// Sends a raw text message.
    pub fn send_text(&self, text: impl Into<String>) {
        let _ = self.commands.send(Command::Send(text.into()));
    }

    /// Sends an event: `{"event":…, "date":…, "data":"<data as a JSON string>"}`.
    pub fn send_event(&self, event: &str, data: &Value) {
        let date = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
        self.send_text(
            json!({ "event": event, "date": date, "data": data.to_string() }).to_string(),
        );
    }

    /// Sends a log line: `{"_source":{"@timestamp":…, "message":…}}`.
    pub fn send_log_line(&self, message: &str) {
        let timestamp = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        self.send_text(
            json!({ "_source": { "@timestamp": timestamp, "message": message, "syslog_program": "app" } })
                .to_string(),
        );
    }

    /// Closes the socket with `code` and `reason`.
    pub fn close(&self, code: u16, reason: &str) {
        let _ = self.commands.send(Command::Close(code, reason.to_owned()));
    }

    /// Drops the connection without a close frame, like a crashed server.
    pub fn vanish(&self) {
        let _ = self.commands.send(Command::Vanish);
    }

    /// Sends `count` messages `{"n":0,"pad":"…"}`, `{"n":1,…}`, … as fast as
    /// the socket takes them, each padded with `pad` bytes.
    pub fn flood(&self, count: usize, pad: usize) {
        let _ = self.commands.send(Command::Flood { count, pad });
    }

    /// The authentication outcome: the signature method, or why refused.
    pub fn auth(&self) -> Option<Result<SignatureMethod, String>> {
        lock_record(&self.record.auth).clone()
    }

    /// Text messages received from the client (heartbeat pongs excepted).
    pub fn received(&self) -> Vec<String> {
        lock_record(&self.record.received).clone()
    }

    /// The close frame the client sent.
    pub fn close_received(&self) -> Option<(u16, String)> {
        lock_record(&self.record.close_received).clone()
    }

    /// Heartbeat pings sent so far.
    pub fn pings_sent(&self) -> usize {
        self.record.pings_sent.load(Ordering::SeqCst)
    }

    /// Heartbeat pongs received so far.
    pub fn pongs(&self) -> usize {
        self.record.pongs.load(Ordering::SeqCst)
    }

    /// Flood messages handed to the socket so far.
    pub fn flood_sent(&self) -> usize {
        self.record.flood_sent.load(Ordering::SeqCst)
    }

    /// Whether the socket's task has finished (the connection is gone).
    pub fn ended(&self) -> bool {
        self.record.ended.load(Ordering::SeqCst)
    }

    /// Waits (at most 20 s) until `condition` holds; `false` if it never did.
    pub async fn wait_until(&self, condition: impl Fn(&Self) -> bool) -> bool {
        wait_for(|| condition(self)).await
    }
}

/// Polls `condition` every 10 ms for at most [`WAIT_LIMIT`].
pub(super) async fn wait_for(condition: impl Fn() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT_LIMIT;
    while tokio::time::Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    condition()
}

fn lock_record<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn events(
    State(state): State<SharedState>,
    parts: Parts,
    upgrade: WebSocketUpgrade,
) -> Response {
    accept(state, &parts, upgrade, "/v2/events/".to_owned())
}

async fn logs(
    State(state): State<SharedState>,
    Path(app_id): Path<String>,
    parts: Parts,
    upgrade: WebSocketUpgrade,
) -> Response {
    accept(state, &parts, upgrade, format!("/v2/logs/{app_id}"))
}

/// Registers the socket and serves it; `signed_path` is what the OAuth
/// message must have signed.
fn accept(
    state: SharedState,
    parts: &Parts,
    upgrade: WebSocketUpgrade,
    signed_path: String,
) -> Response {
    let signed_url = format!("http://{}{signed_path}", host(&parts.headers));
    let (commands, receiver) = mpsc::unbounded_channel();
    let socket = FakeSocket {
        path: parts.uri.path().to_owned(),
        raw_query: parts.uri.query().map(str::to_owned),
        commands,
        record: Arc::default(),
    };
    let settings = {
        let mut state = lock(&state);
        state.sockets.push(socket.clone());
        state.socket_settings.clone()
    };
    upgrade
        .read_buffer_size(8 * 1024)
        .write_buffer_size(8 * 1024)
        .on_upgrade(move |client| async move {
            serve(state, client, socket, receiver, settings, signed_url).await;
        })
}

fn host(headers: &HeaderMap) -> &str {
    headers
        .get(axum::http::header::HOST)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
}

async fn serve(
    state: SharedState,
    mut client: WebSocket,
    socket: FakeSocket,
    mut commands: mpsc::UnboundedReceiver<Command>,
    settings: SocketSettings,
    signed_url: String,
) {
    let record = socket.record.clone();
    let first = tokio::time::timeout(AUTH_WAIT, client.recv()).await;
    let outcome = match first {
        Ok(Some(Ok(Message::Text(text)))) if settings.refuse_auth => {
            drop(text);
            Err("token revoked".to_owned())
        }
        Ok(Some(Ok(Message::Text(text)))) => check_auth(&state, &text, &signed_url),
        _ => Err("expected the OAuth message first".to_owned()),
    };
    *lock_record(&record.auth) = Some(outcome.clone());
    if let Err(reason) = outcome {
        let error = json!({ "type": "error", "id": 2001, "message": reason });
        let _ = client.send(Message::text(error.to_string())).await;
        let _ = client
            .send(close_message(AUTH_FAILED_CLOSE, "authentication failed"))
            .await;
        drain(&mut client).await;
        record.ended.store(true, Ordering::SeqCst);
        return;
    }
    let _ = client
        .send(Message::text(r#"{"message_type":"socket_ready"}"#))
        .await;

    let mut heartbeat = settings.heartbeat.map(|period| {
        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval
    });
    loop {
        let tick = async {
            match heartbeat.as_mut() {
                Some(interval) => interval.tick().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            command = commands.recv() => {
                let Some(command) = command else { break };
                if !run_command(&mut client, &record, command).await {
                    break;
                }
            }
            message = client.recv() => {
                let Some(Ok(message)) = message else { break };
                if !on_message(&mut client, &record, message).await {
                    break;
                }
            }
            _ = tick => {
                let ping = json!({ "type": "heartbeat", "heartbeat_msg": "ping", "heartbeat_delay_ms": 5000 });
                if client.send(Message::text(ping.to_string())).await.is_err() {
                    break;
                }
                record.pings_sent.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    record.ended.store(true, Ordering::SeqCst);
}

/// Checks the OAuth message against `signed_url` and the issued tokens.
fn check_auth(
    state: &SharedState,
    text: &str,
    signed_url: &str,
) -> Result<SignatureMethod, String> {
    #[derive(Deserialize)]
    struct AuthMessage {
        message_type: String,
        authorization: String,
    }
    let message: AuthMessage =
        serde_json::from_str(text).map_err(|error| format!("not an OAuth message: {error}"))?;
    if message.message_type != "oauth" {
        return Err(format!(
            "unexpected message_type {:?}",
            message.message_type
        ));
    }
    let parts = RequestParts::from_url("GET", signed_url, None, Some(&message.authorization))
        .map_err(|error| error.to_string())?;
    let request = SignedRequest::parse(&parts).map_err(|error| error.to_string())?;
    lock(state)
        .check(&request, TokenKind::Access, unix_now())
        .map_err(|refusal| refusal.reason)?;
    Ok(request.signature_method())
}

/// Carries out a test's command; `false` once the socket is done.
async fn run_command(client: &mut WebSocket, record: &SocketRecord, command: Command) -> bool {
    match command {
        Command::Send(text) => client.send(Message::text(text)).await.is_ok(),
        Command::Close(code, reason) => {
            let _ = client.send(close_message(code, &reason)).await;
            drain(client).await;
            false
        }
        Command::Vanish => false,
        Command::Flood { count, pad } => {
            let padding = "x".repeat(pad);
            for n in 0..count {
                let text = format!(r#"{{"n":{n},"pad":"{padding}"}}"#);
                if client.feed(Message::text(text)).await.is_err() {
                    return false;
                }
                record.flood_sent.fetch_add(1, Ordering::SeqCst);
            }
            client.flush().await.is_ok()
        }
    }
}

/// Records (and echoes) a client message; `false` once the socket is done.
async fn on_message(client: &mut WebSocket, record: &SocketRecord, message: Message) -> bool {
    match message {
        Message::Text(text) => {
            if is_pong(&text) {
                record.pongs.fetch_add(1, Ordering::SeqCst);
                return true;
            }
            lock_record(&record.received).push(text.to_string());
            client.send(Message::Text(text)).await.is_ok()
        }
        Message::Binary(bytes) => client.send(Message::Binary(bytes)).await.is_ok(),
        Message::Ping(_) | Message::Pong(_) => true,
        Message::Close(frame) => {
            *lock_record(&record.close_received) =
                Some(frame.map_or((1005, String::new()), |frame| {
                    (frame.code, frame.reason.to_string())
                }));
            // Sends the close reply queued by the library.
            let _ = client.close().await;
            false
        }
    }
}

fn is_pong(text: &Utf8Bytes) -> bool {
    serde_json::from_str::<Value>(text)
        .is_ok_and(|value| value["type"] == "heartbeat" && value["heartbeat_msg"] == "pong")
}

fn close_message(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// Reads until the peer's side of the close handshake ends the stream.
async fn drain(client: &mut WebSocket) {
    let _ = tokio::time::timeout(AUTH_WAIT, async {
        while let Some(Ok(_)) = client.recv().await {}
    })
    .await;
}
