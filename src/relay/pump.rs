//! The relay's engine: moves frames between the client's socket and the
//! API's, in one task, with bounded queues, heartbeat answers and close
//! handshakes.
//!
//! It is generic over the two sockets (any `Stream` + `Sink` of a
//! [`WsMessage`]), so the unit tests below drive it with channels.
//!
//! Back-pressure: each direction has a queue bounded by a message count and
//! a byte count. When the queue towards the client is full, the pump stops
//! reading the API's socket; the API's TCP window then fills and the API
//! stops sending. Nothing is dropped and memory stays bounded. The other
//! direction works the same way.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::future::{Future as _, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Sink, SinkExt as _, Stream, StreamExt as _};
use serde::Deserialize;
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::tungstenite::{self, Utf8Bytes, protocol::frame::coding::CloseCode};

use super::registry::RelayRegistry;

/// Close code 1000: the purpose was fulfilled.
pub const NORMAL: u16 = 1000;
/// Close code 1001: going away (server shutdown, idle relay, client gone).
pub const GOING_AWAY: u16 = 1001;
/// Close code 1008: policy violation (the API refused the authentication).
pub const POLICY_VIOLATION: u16 = 1008;
/// Close code 1009: a message was larger than the relay's limit.
pub const TOO_BIG: u16 = 1009;
/// Close code 1011: unexpected condition (the API's connection was lost).
pub const INTERNAL_ERROR: u16 = 1011;

/// Longest close reason: a close frame's payload is at most 125 bytes,
/// two of which hold the code.
const MAX_REASON_BYTES: usize = 123;

/// Control messages (heartbeats, errors) are small; longer texts are
/// relayed without being parsed.
const CONTROL_MAX_BYTES: usize = 1024;

/// How long the closing handshakes (and the last queued messages) may take
/// once a relay ends.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Rounds of reading and writing in one poll before yielding to other tasks.
const MAX_ROUNDS_PER_POLL: usize = 32;

/// The API's answer to a heartbeat ping.
const HEARTBEAT_PONG: &str = r#"{"type":"heartbeat","heartbeat_msg":"pong"}"#;

/// A close frame's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Close {
    /// The close code.
    pub code: u16,
    /// Why, in a few words (at most 123 bytes).
    pub reason: String,
}

impl Close {
    /// A close frame with `code` and `reason` (cut to the frame's limit).
    pub fn new(code: u16, reason: impl Into<String>) -> Self {
        let mut reason = reason.into();
        if reason.len() > MAX_REASON_BYTES {
            let mut end = MAX_REASON_BYTES;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
        }
        Self { code, reason }
    }
}

/// One WebSocket message, whichever library's socket it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A text message.
    Text(Utf8Bytes),
    /// A binary message.
    Binary(Bytes),
    /// A WebSocket-level ping.
    Ping(Bytes),
    /// A WebSocket-level pong.
    Pong(Bytes),
    /// A close frame; `None` when it carried no code.
    Close(Option<Close>),
}

impl Frame {
    /// A text frame.
    pub fn text(text: impl Into<Utf8Bytes>) -> Self {
        Self::Text(text.into())
    }

    /// Payload bytes, for the queues' byte limit.
    fn len(&self) -> usize {
        match self {
            Self::Text(text) => text.len(),
            Self::Binary(bytes) | Self::Ping(bytes) | Self::Pong(bytes) => bytes.len(),
            Self::Close(close) => close.as_ref().map_or(0, |close| close.reason.len() + 2),
        }
    }
}

/// A socket's message type, as the pump sees it.
pub trait WsMessage: Sized {
    /// The frame; `None` for what is never relayed (raw frames).
    fn into_frame(self) -> Option<Frame>;
    /// The message for `frame`.
    fn from_frame(frame: Frame) -> Self;
}

impl WsMessage for Frame {
    fn into_frame(self) -> Option<Frame> {
        Some(self)
    }

    fn from_frame(frame: Frame) -> Self {
        frame
    }
}

/// The API side: tungstenite's own messages.
impl WsMessage for tungstenite::Message {
    fn into_frame(self) -> Option<Frame> {
        Some(match self {
            Self::Text(text) => Frame::Text(text),
            Self::Binary(bytes) => Frame::Binary(bytes),
            Self::Ping(bytes) => Frame::Ping(bytes),
            Self::Pong(bytes) => Frame::Pong(bytes),
            Self::Close(close) => Frame::Close(close.map(|close| Close {
                code: close.code.into(),
                reason: close.reason.to_string(),
            })),
            Self::Frame(_) => return None,
        })
    }

    fn from_frame(frame: Frame) -> Self {
        match frame {
            Frame::Text(text) => Self::Text(text),
            Frame::Binary(bytes) => Self::Binary(bytes),
            Frame::Ping(bytes) => Self::Ping(bytes),
            Frame::Pong(bytes) => Self::Pong(bytes),
            Frame::Close(close) => {
                Self::Close(close.map(|close| tungstenite::protocol::CloseFrame {
                    code: CloseCode::from(close.code),
                    reason: close.reason.into(),
                }))
            }
        }
    }
}

/// The client side: axum's messages.
impl WsMessage for axum::extract::ws::Message {
    fn into_frame(self) -> Option<Frame> {
        use axum::extract::ws::Message;
        Some(match self {
            Message::Text(text) => Frame::Text(retype_text(Bytes::from(text))),
            Message::Binary(bytes) => Frame::Binary(bytes),
            Message::Ping(bytes) => Frame::Ping(bytes),
            Message::Pong(bytes) => Frame::Pong(bytes),
            Message::Close(close) => Frame::Close(close.map(|close| Close {
                code: close.code,
                reason: close.reason.to_string(),
            })),
        })
    }

    fn from_frame(frame: Frame) -> Self {
        use axum::extract::ws::{CloseFrame, Message};
        match frame {
            Frame::Text(text) => Message::Text(retype_text(Bytes::from(text))),
            Frame::Binary(bytes) => Message::Binary(bytes),
            Frame::Ping(bytes) => Message::Ping(bytes),
            Frame::Pong(bytes) => Message::Pong(bytes),
            Frame::Close(close) => Message::Close(close.map(|close| CloseFrame {
                code: close.code,
                reason: close.reason.into(),
            })),
        }
    }
}

/// Moves text that is already valid UTF-8 from one library's type to the
/// other's. The check cannot fail; if it did, the text is repaired rather
/// than dropped.
fn retype_text<T>(bytes: Bytes) -> T
where
    T: TryFrom<Bytes> + From<String>,
{
    T::try_from(bytes.clone()).unwrap_or_else(|_| T::from(String::from_utf8_lossy(&bytes).into()))
}

/// A socket the pump can drive: a stream and a sink of one message type.
pub trait Socket:
    Stream<Item = Result<Self::Message, Self::Failure>>
    + Sink<Self::Message, Error = Self::Failure>
    + Unpin
    + Send
{
    /// The message type.
    type Message: WsMessage + Send;
    /// The error type.
    type Failure: std::error::Error + Send + Sync + 'static;
}

impl<S, M, E> Socket for S
where
    S: Stream<Item = Result<M, E>> + Sink<M, Error = E> + Unpin + Send,
    M: WsMessage + Send,
    E: std::error::Error + Send + Sync + 'static,
{
    type Message = M;
    type Failure = E;
}

/// What a relay's queues and timer allow.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most messages queued in each direction.
    pub queue_messages: usize,
    /// Most payload bytes queued in each direction (one message may exceed
    /// it, so that any message allowed at all gets through).
    pub queue_bytes: usize,
    /// A relay with no message either way for this long is closed.
    pub idle: Duration,
}

/// Why a relay ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// The API closed its socket with this frame.
    UpstreamClosed(Option<Close>),
    /// The API's socket broke or ended without a close frame.
    UpstreamLost,
    /// The API sent a message larger than the limit.
    UpstreamTooBig,
    /// The API refused the authentication message (error 2001).
    AuthRefused,
    /// The client closed its socket with this frame.
    ClientClosed(Option<Close>),
    /// The client's socket broke or ended without a close frame.
    ClientLost,
    /// The client sent a message larger than the limit.
    ClientTooBig,
    /// No message either way for the idle time-out.
    Idle,
    /// The server is shutting down.
    Shutdown,
}

/// How one side of an ending relay is closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseAction {
    /// Send the queued messages, then this close frame, then wait for the
    /// peer's answer.
    Send(Close),
    /// The peer closed first: finish its handshake.
    Answer,
    /// The socket is broken: just let it go.
    Drop,
}

impl End {
    /// How to close the client and the API's socket, in that order. Codes
    /// are carried from one side to the other when they may be sent
    /// (see [`forwardable`]).
    pub fn close_actions(&self) -> (CloseAction, CloseAction) {
        use CloseAction::{Answer, Drop, Send};
        match self {
            Self::UpstreamClosed(close) => (Send(forwardable(close.as_ref())), Answer),
            Self::UpstreamLost => (
                Send(Close::new(
                    INTERNAL_ERROR,
                    "the Clever Cloud API connection was lost",
                )),
                Drop,
            ),
            Self::UpstreamTooBig => (
                Send(Close::new(
                    TOO_BIG,
                    "the Clever Cloud API sent a message larger than the relay's limit",
                )),
                Send(Close::new(TOO_BIG, "message larger than the relay's limit")),
            ),
            Self::AuthRefused => (
                Send(Close::new(
                    POLICY_VIOLATION,
                    "the Clever Cloud API refused the authentication; log in again",
                )),
                Send(Close::new(NORMAL, "")),
            ),
            Self::ClientClosed(close) => (Answer, Send(forwardable(close.as_ref()))),
            Self::ClientLost => (Drop, Send(Close::new(GOING_AWAY, "client went away"))),
            Self::ClientTooBig => (
                Send(Close::new(TOO_BIG, "message larger than the relay's limit")),
                Send(Close::new(GOING_AWAY, "client went away")),
            ),
            Self::Idle => (
                Send(Close::new(GOING_AWAY, "idle time-out")),
                Send(Close::new(GOING_AWAY, "idle time-out")),
            ),
            Self::Shutdown => (
                Send(Close::new(GOING_AWAY, "server shutting down")),
                Send(Close::new(GOING_AWAY, "server shutting down")),
            ),
        }
    }
}

/// The close frame to send on for one received: a frame without a code
/// becomes 1000; codes that may not be sent (1005, 1006, 1015, reserved or
/// out of range) become 1011, keeping the reason.
pub fn forwardable(received: Option<&Close>) -> Close {
    match received {
        None => Close::new(NORMAL, ""),
        Some(close) if CloseCode::from(close.code).is_allowed() => {
            Close::new(close.code, close.reason.clone())
        }
        Some(close) => Close::new(INTERNAL_ERROR, close.reason.clone()),
    }
}

/// What a text message means to the relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// `{"type":"heartbeat","heartbeat_msg":"ping",…}`.
    HeartbeatPing,
    /// `{"type":"heartbeat","heartbeat_msg":"pong"}`.
    HeartbeatPong,
    /// `{"type":"error","id":2001,…}`: authentication refused.
    AuthError,
    /// Anything else: relayed untouched.
    Other,
}

/// Recognises the API's control messages. Only short texts holding a
/// `"type"` key are parsed, so events and log lines cost a substring search.
pub fn classify(text: &str) -> Control {
    #[derive(Deserialize)]
    struct Probe<'a> {
        #[serde(rename = "type", borrow)]
        kind: Option<Cow<'a, str>>,
        #[serde(borrow)]
        heartbeat_msg: Option<Cow<'a, str>>,
        id: Option<serde_json::Value>,
    }

    if text.len() > CONTROL_MAX_BYTES || !text.contains("\"type\"") {
        return Control::Other;
    }
    let Ok(probe) = serde_json::from_str::<Probe<'_>>(text) else {
        return Control::Other;
    };
    match (probe.kind.as_deref(), probe.heartbeat_msg.as_deref()) {
        (Some("heartbeat"), Some("ping")) => Control::HeartbeatPing,
        (Some("heartbeat"), Some("pong")) => Control::HeartbeatPong,
        (Some("error"), _) if is_auth_error_id(probe.id.as_ref()) => Control::AuthError,
        _ => Control::Other,
    }
}

fn is_auth_error_id(id: Option<&serde_json::Value>) -> bool {
    match id {
        Some(serde_json::Value::Number(number)) => number.as_u64() == Some(2001),
        Some(serde_json::Value::String(text)) => text == "2001",
        _ => false,
    }
}

/// Whether `error` (or what caused it) is tungstenite's "message too long".
fn is_too_big(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(tungstenite::Error::Capacity(_)) = error.downcast_ref::<tungstenite::Error>() {
            return true;
        }
        current = error.source();
    }
    false
}

/// One socket and the queue of frames waiting to be written to it.
struct Side<S> {
    socket: S,
    queue: VecDeque<Frame>,
    queued_bytes: usize,
    /// Frames were handed to the socket since its last flush.
    unflushed: bool,
}

impl<S: Socket> Side<S> {
    fn new(socket: S) -> Self {
        Self {
            socket,
            queue: VecDeque::new(),
            queued_bytes: 0,
            unflushed: false,
        }
    }

    fn push(&mut self, frame: Frame) {
        self.queued_bytes += frame.len();
        self.queue.push_back(frame);
    }

    fn has_room(&self, limits: &Limits) -> bool {
        self.queue.len() < limits.queue_messages && self.queued_bytes < limits.queue_bytes
    }

    /// Hands queued frames to the socket while it accepts them, then
    /// flushes. Returns whether anything moved.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Result<bool, S::Failure> {
        let mut progress = false;
        while !self.queue.is_empty() {
            match self.socket.poll_ready_unpin(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(error)) => return Err(error),
                Poll::Pending => return Ok(progress),
            }
            let Some(frame) = self.queue.pop_front() else {
                break;
            };
            self.queued_bytes -= frame.len();
            self.socket
                .start_send_unpin(S::Message::from_frame(frame))?;
            self.unflushed = true;
            progress = true;
        }
        if self.unflushed {
            match self.socket.poll_flush_unpin(cx) {
                Poll::Ready(Ok(())) => self.unflushed = false,
                Poll::Ready(Err(error)) => return Err(error),
                Poll::Pending => {}
            }
        }
        Ok(progress)
    }

    /// Sends what is queued, closes with `action`, and waits for the peer
    /// to finish the handshake.
    async fn close(&mut self, action: CloseAction) {
        match action {
            CloseAction::Drop => return,
            CloseAction::Send(close) => {
                self.push(Frame::Close(Some(close)));
                while let Some(frame) = self.queue.pop_front() {
                    if self
                        .socket
                        .feed(S::Message::from_frame(frame))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
            // A peer that closed first takes no more messages.
            CloseAction::Answer => self.queue.clear(),
        }
        if self.socket.close().await.is_err() {
            return;
        }
        // Read until the peer's side of the handshake ends the stream.
        while let Some(Ok(_)) = self.socket.next().await {}
    }
}

/// Relays between a client and the API until one of them ends it.
pub struct Pump<C, U> {
    client: Side<C>,
    upstream: Side<U>,
    limits: Limits,
    registry: Arc<RelayRegistry>,
    /// Reading the API is paused because the client's queue is full.
    paused: bool,
    last_activity: Instant,
    idle_timer: Pin<Box<Sleep>>,
}

impl<C: Socket, U: Socket> Pump<C, U> {
    /// A pump between `client` and `upstream`; back-pressure episodes are
    /// counted in `registry`.
    pub fn new(client: C, upstream: U, limits: Limits, registry: Arc<RelayRegistry>) -> Self {
        let now = Instant::now();
        Self {
            client: Side::new(client),
            upstream: Side::new(upstream),
            limits,
            registry,
            paused: false,
            last_activity: now,
            idle_timer: Box::pin(tokio::time::sleep_until(now + limits.idle)),
        }
    }

    /// Relays until one side closes or fails, or the relay goes idle.
    /// Cancel-safe: nothing is lost if the future is dropped, and
    /// [`Pump::finish`] still delivers what is queued.
    pub async fn run(&mut self) -> End {
        poll_fn(|cx| self.poll_run(cx)).await
    }

    /// Closes both sides as `end` requires, within a grace period; after
    /// it nothing of the relay is left open.
    pub async fn finish(mut self, end: &End) {
        let (client_action, upstream_action) = end.close_actions();
        let both = async {
            tokio::join!(
                self.client.close(client_action),
                self.upstream.close(upstream_action)
            )
        };
        let _ = tokio::time::timeout(CLOSE_GRACE, both).await;
    }

    fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<End> {
        for _ in 0..MAX_ROUNDS_PER_POLL {
            let mut progress = match self.client.poll_write(cx) {
                Ok(progress) => progress,
                Err(error) => return Poll::Ready(client_failure(&error)),
            };
            match self.upstream.poll_write(cx) {
                Ok(moved) => progress |= moved,
                Err(error) => return Poll::Ready(upstream_failure(&error)),
            }
            let mut read = false;
            match self.poll_read_upstream(cx) {
                Poll::Ready(Some(end)) => return Poll::Ready(end),
                Poll::Ready(None) => read = true,
                Poll::Pending => {}
            }
            match self.poll_read_client(cx) {
                Poll::Ready(Some(end)) => return Poll::Ready(end),
                Poll::Ready(None) => read = true,
                Poll::Pending => {}
            }
            if read {
                // Once per batch: reading the clock per message shows in
                // profiles of floods.
                self.last_activity = Instant::now();
                progress = true;
            }
            if !progress {
                return self.poll_idle(cx);
            }
        }
        // Still busy: let other relays run, and come back at once.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Reads the API while the client's queue has room. `Ready(None)`:
    /// something was read; `Pending`: nothing was.
    fn poll_read_upstream(&mut self, cx: &mut Context<'_>) -> Poll<Option<End>> {
        let mut read = false;
        while self.client.has_room(&self.limits) {
            self.paused = false;
            let message = match self.upstream.socket.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(message))) => message,
                Poll::Ready(Some(Err(error))) => {
                    return Poll::Ready(Some(upstream_failure(&error)));
                }
                Poll::Ready(None) => return Poll::Ready(Some(End::UpstreamLost)),
                Poll::Pending => break,
            };
            read = true;
            if let Some(end) = message
                .into_frame()
                .and_then(|frame| self.on_upstream_frame(frame))
            {
                return Poll::Ready(Some(end));
            }
        }
        if !self.client.has_room(&self.limits) && !self.paused {
            self.paused = true;
            self.registry.note_backpressure();
        }
        if read {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }

    /// Reads the client while the API's queue has room.
    fn poll_read_client(&mut self, cx: &mut Context<'_>) -> Poll<Option<End>> {
        let mut read = false;
        while self.upstream.has_room(&self.limits) {
            let message = match self.client.socket.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(message))) => message,
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(client_failure(&error))),
                Poll::Ready(None) => return Poll::Ready(Some(End::ClientLost)),
                Poll::Pending => break,
            };
            read = true;
            if let Some(end) = message
                .into_frame()
                .and_then(|frame| self.on_client_frame(frame))
            {
                return Poll::Ready(Some(end));
            }
        }
        if read {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }

    fn on_upstream_frame(&mut self, frame: Frame) -> Option<End> {
        match frame {
            Frame::Text(text) => match classify(&text) {
                Control::HeartbeatPing => {
                    // Answered here so the API keeps the socket even for a
                    // client that knows nothing of heartbeats; a pong that
                    // finds the API's queue full is dropped, since the API
                    // is not reading anyway.
                    if self.upstream.has_room(&self.limits) {
                        self.upstream.push(Frame::text(HEARTBEAT_PONG));
                    }
                    self.client.push(Frame::Text(text));
                }
                Control::AuthError => {
                    self.client.push(Frame::Text(text));
                    return Some(End::AuthRefused);
                }
                Control::HeartbeatPong | Control::Other => self.client.push(Frame::Text(text)),
            },
            Frame::Binary(bytes) => self.client.push(Frame::Binary(bytes)),
            // The libraries answer pings themselves.
            Frame::Ping(_) | Frame::Pong(_) => {}
            Frame::Close(close) => return Some(End::UpstreamClosed(close)),
        }
        None
    }

    fn on_client_frame(&mut self, frame: Frame) -> Option<End> {
        match frame {
            Frame::Text(text) => {
                // The relay already answered the API's ping; the client's
                // own pong would be a second one.
                if classify(&text) != Control::HeartbeatPong {
                    self.upstream.push(Frame::Text(text));
                }
            }
            Frame::Binary(bytes) => self.upstream.push(Frame::Binary(bytes)),
            Frame::Ping(_) | Frame::Pong(_) => {}
            Frame::Close(close) => return Some(End::ClientClosed(close)),
        }
        None
    }

    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<End> {
        // The timer is re-armed only when it fires, not on every message.
        while self.idle_timer.as_mut().poll(cx).is_ready() {
            let deadline = self.last_activity + self.limits.idle;
            if Instant::now() >= deadline {
                return Poll::Ready(End::Idle);
            }
            self.idle_timer.as_mut().reset(deadline);
        }
        Poll::Pending
    }
}

fn upstream_failure(error: &(dyn std::error::Error + 'static)) -> End {
    if is_too_big(error) {
        End::UpstreamTooBig
    } else {
        tracing::debug!(%error, "the API's socket failed");
        End::UpstreamLost
    }
}

fn client_failure(error: &(dyn std::error::Error + 'static)) -> End {
    if is_too_big(error) {
        End::ClientTooBig
    } else {
        tracing::debug!(%error, "the client's socket failed");
        End::ClientLost
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc;
    use tokio_util::sync::PollSender;

    use super::*;

    /// The channel between a test and the pump broke.
    #[derive(Debug, thiserror::Error)]
    #[error("test channel closed")]
    struct ChannelClosed;

    /// One socket as the pump sees it: frames in from a channel, frames
    /// out into another.
    struct Duplex {
        incoming: mpsc::Receiver<Frame>,
        outgoing: PollSender<Frame>,
    }

    /// The test's end of a [`Duplex`].
    struct Peer {
        to_pump: mpsc::Sender<Frame>,
        from_pump: mpsc::Receiver<Frame>,
    }

    impl Peer {
        async fn send(&self, frame: Frame) {
            assert!(
                self.to_pump.send(frame).await.is_ok(),
                "pump stopped reading"
            );
        }

        async fn recv(&mut self) -> Option<Frame> {
            tokio::time::timeout(Duration::from_secs(5), self.from_pump.recv())
                .await
                .ok()
                .flatten()
        }
    }

    /// A duplex whose outgoing channel holds `capacity` frames.
    fn socket(capacity: usize) -> (Duplex, Peer) {
        let (to_pump, incoming) = mpsc::channel(capacity);
        let (outgoing, from_pump) = mpsc::channel(capacity);
        let duplex = Duplex {
            incoming,
            outgoing: PollSender::new(outgoing),
        };
        (duplex, Peer { to_pump, from_pump })
    }

    impl Stream for Duplex {
        type Item = Result<Frame, ChannelClosed>;

        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.incoming.poll_recv(cx).map(|frame| frame.map(Ok))
        }
    }

    impl Sink<Frame> for Duplex {
        type Error = ChannelClosed;

        fn poll_ready(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Result<(), ChannelClosed>> {
            self.outgoing
                .poll_ready_unpin(cx)
                .map_err(|_| ChannelClosed)
        }

        fn start_send(mut self: Pin<&mut Self>, frame: Frame) -> Result<(), ChannelClosed> {
            self.outgoing
                .start_send_unpin(frame)
                .map_err(|_| ChannelClosed)
        }

        fn poll_flush(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Result<(), ChannelClosed>> {
            self.outgoing
                .poll_flush_unpin(cx)
                .map_err(|_| ChannelClosed)
        }

        fn poll_close(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Result<(), ChannelClosed>> {
            self.outgoing
                .poll_close_unpin(cx)
                .map_err(|_| ChannelClosed)
        }
    }

    fn limits(queue_messages: usize) -> Limits {
        Limits {
            queue_messages,
            queue_bytes: 1024 * 1024,
            idle: Duration::from_secs(60),
        }
    }

    /// A pump over two channel sockets, running until it ends; its end is
    /// returned once both sides are closed.
    fn start(
        queue_messages: usize,
        capacity: usize,
    ) -> (Peer, Peer, Arc<RelayRegistry>, tokio::task::JoinHandle<End>) {
        let (client, client_peer) = socket(capacity);
        let (upstream, upstream_peer) = socket(capacity);
        let registry = Arc::new(RelayRegistry::default());
        let mut pump = Pump::new(client, upstream, limits(queue_messages), registry.clone());
        let task = tokio::spawn(async move {
            let end = pump.run().await;
            pump.finish(&end).await;
            end
        });
        (client_peer, upstream_peer, registry, task)
    }

    fn text(value: &str) -> Frame {
        Frame::text(value)
    }

    const PING: &str = r#"{"type":"heartbeat","heartbeat_msg":"ping","heartbeat_delay_ms":5000}"#;

    #[tokio::test]
    async fn messages_flow_both_ways_in_order() {
        let (mut client, mut api, _, task) = start(4, 2);

        // Far more than the queue and channels hold: the sender waits for
        // the reader, and nothing is lost or reordered.
        let to_pump = api.to_pump.clone();
        let sender = tokio::spawn(async move {
            for n in 0..50 {
                let frame = text(&format!("{{\"event\":\"E\",\"n\":{n}}}"));
                if to_pump.send(frame).await.is_err() {
                    break;
                }
            }
        });
        for n in 0..50 {
            assert_eq!(
                client.recv().await,
                Some(text(&format!("{{\"event\":\"E\",\"n\":{n}}}")))
            );
        }
        assert!(sender.await.is_ok());
        client
            .send(Frame::Binary(Bytes::from_static(b"\x00\x01")))
            .await;
        client.send(text("hello")).await;
        assert_eq!(
            api.recv().await,
            Some(Frame::Binary(Bytes::from_static(b"\x00\x01")))
        );
        assert_eq!(api.recv().await, Some(text("hello")));

        client
            .send(Frame::Close(Some(Close::new(4000, "bye"))))
            .await;
        assert_eq!(
            api.recv().await,
            Some(Frame::Close(Some(Close::new(4000, "bye"))))
        );
        drop((client, api));
        let end = task.await.ok();
        assert_eq!(end, Some(End::ClientClosed(Some(Close::new(4000, "bye")))));
    }

    #[tokio::test]
    async fn the_relay_answers_heartbeats_and_drops_the_clients_pongs() {
        let (mut client, mut api, _, task) = start(8, 8);

        api.send(text(PING)).await;
        assert_eq!(
            api.recv().await,
            Some(text(HEARTBEAT_PONG)),
            "the relay answered"
        );
        assert_eq!(
            client.recv().await,
            Some(text(PING)),
            "the client still sees it"
        );

        client.send(text(HEARTBEAT_PONG)).await;
        client.send(text("after")).await;
        assert_eq!(api.recv().await, Some(text("after")), "no second pong");

        client.send(Frame::Ping(Bytes::from_static(b"p"))).await;
        client.send(text("after ping")).await;
        assert_eq!(
            api.recv().await,
            Some(text("after ping")),
            "pings stay local"
        );

        drop(client);
        assert_eq!(
            api.recv().await,
            Some(Frame::Close(Some(Close::new(
                GOING_AWAY,
                "client went away"
            ))))
        );
        drop(api);
        assert_eq!(task.await.ok(), Some(End::ClientLost));
    }

    #[tokio::test]
    async fn the_apis_close_reaches_the_client_after_its_messages() {
        let (mut client, api, _, task) = start(8, 8);

        api.send(text("last")).await;
        api.send(Frame::Close(Some(Close::new(4002, "forced"))))
            .await;
        assert_eq!(client.recv().await, Some(text("last")));
        assert_eq!(
            client.recv().await,
            Some(Frame::Close(Some(Close::new(4002, "forced"))))
        );
        drop((client, api));
        assert!(task.await.is_ok());
    }

    #[tokio::test]
    async fn an_api_that_vanishes_closes_the_client_with_1011() {
        let (mut client, api, _, task) = start(8, 8);

        drop(api);
        let close = client.recv().await;
        assert!(
            matches!(&close, Some(Frame::Close(Some(close))) if close.code == INTERNAL_ERROR),
            "{close:?}"
        );
        drop(client);
        assert_eq!(task.await.ok(), Some(End::UpstreamLost));
    }

    #[tokio::test]
    async fn a_refused_authentication_is_forwarded_then_closed_with_1008() {
        let (mut client, mut api, _, task) = start(8, 8);
        let refusal = r#"{"type":"error","id":2001,"message":"bad signature"}"#;

        api.send(text(refusal)).await;
        assert_eq!(client.recv().await, Some(text(refusal)));
        let close = client.recv().await;
        assert!(
            matches!(&close, Some(Frame::Close(Some(close))) if close.code == POLICY_VIOLATION && !close.reason.is_empty()),
            "{close:?}"
        );
        assert_eq!(
            api.recv().await,
            Some(Frame::Close(Some(Close::new(NORMAL, ""))))
        );
        drop((client, api));
        assert_eq!(task.await.ok(), Some(End::AuthRefused));
    }

    #[tokio::test]
    async fn a_slow_client_stops_the_reading_of_the_api() {
        // Queue of 4 and channels of 2: at most 4 + 2 (client channel)
        // + 2 (API channel) + 1 (in hand) frames are taken from the API.
        let (mut client, api, registry, task) = start(4, 2);

        let mut sent = 0;
        while sent < 100 {
            match api.to_pump.try_send(text(&sent.to_string())) {
                Ok(()) => sent += 1,
                Err(_) => {
                    // Full: give the pump a chance, then check it is stuck.
                    tokio::task::yield_now().await;
                    if api.to_pump.try_send(text(&sent.to_string())).is_err() {
                        break;
                    }
                    sent += 1;
                }
            }
        }
        assert!(
            sent < 100,
            "the pump kept reading a stalled client's API ({sent})"
        );
        assert!(registry.backpressure_events() >= 1);

        for n in 0..sent {
            assert_eq!(
                client.recv().await,
                Some(text(&n.to_string())),
                "nothing lost"
            );
        }
        drop((client, api));
        assert!(task.await.is_ok());
    }

    #[tokio::test]
    async fn a_silent_relay_goes_idle() {
        let (client, client_peer) = socket(8);
        let (upstream, api_peer) = socket(8);
        let short = Limits {
            idle: Duration::from_millis(100),
            ..limits(8)
        };
        let mut pump = Pump::new(client, upstream, short, Arc::default());
        let task = tokio::spawn(async move {
            let end = pump.run().await;
            pump.finish(&end).await;
            end
        });
        let (mut client, mut api) = (client_peer, api_peer);
        let expected = Some(Frame::Close(Some(Close::new(GOING_AWAY, "idle time-out"))));

        assert_eq!(client.recv().await, expected);
        assert_eq!(api.recv().await, expected);
        drop((client, api));
        assert_eq!(task.await.ok(), Some(End::Idle));
    }

    #[test]
    fn close_codes_that_cannot_be_sent_are_mapped() {
        assert_eq!(forwardable(None), Close::new(NORMAL, ""));
        for code in [1000, 1001, 1003, 1008, 1011, 3000, 4001, 4999] {
            let close = Close::new(code, "why");
            assert_eq!(forwardable(Some(&close)), close, "{code}");
        }
        for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
            assert_eq!(
                forwardable(Some(&Close::new(code, "why"))),
                Close::new(INTERNAL_ERROR, "why"),
                "{code}"
            );
        }
    }

    #[test]
    fn close_reasons_fit_a_frame() {
        let long = "é".repeat(100);
        let close = Close::new(NORMAL, long);
        assert!(close.reason.len() <= MAX_REASON_BYTES);
        assert!(close.reason.chars().all(|c| c == 'é'));
    }

    #[test]
    fn control_messages_are_recognised() {
        assert_eq!(classify(PING), Control::HeartbeatPing);
        assert_eq!(classify(HEARTBEAT_PONG), Control::HeartbeatPong);
        assert_eq!(
            classify(r#"{"type":"error","id":2001,"message":"x"}"#),
            Control::AuthError
        );
        assert_eq!(
            classify(r#"{"type":"error","id":"2001"}"#),
            Control::AuthError
        );
        assert_eq!(classify(r#"{"type":"error","id":5000}"#), Control::Other);
        assert_eq!(
            classify(r#"{"message_type":"socket_ready"}"#),
            Control::Other
        );
        assert_eq!(
            classify(
                r#"{"event":"GIT_PUSH","data":"{\"type\":\"heartbeat\",\"heartbeat_msg\":\"ping\"}"}"#
            ),
            Control::Other,
            "a heartbeat inside an event's data is data"
        );
        assert_eq!(classify("not json \"type\""), Control::Other);
    }
}
