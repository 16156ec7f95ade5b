//! The relay's engine: moves frames between the client's socket and the
//! API's, in one task, with bounded queues, heartbeat answers and close
//! handshakes.
//!
//! It works on raw frames, not messages. The API's frames (unmasked, as
//! the client's must be too) are copied to the client as they are, whole,
//! after a look at their header; only short unfragmented texts are looked
//! into, for heartbeats and the authentication error. The client's frames
//! (masked) are unmasked, looked into the same way, and masked again with a
//! fresh key, as a client must; they are few.
//!
//! Text is *not* checked to be UTF-8 on the way, in either direction: the
//! receiving end's WebSocket library checks it (and fails the connection
//! on anything else), so checking it here too would only cost the time
//! this design saves. Fragments are relayed as they come, each checked
//! against the message size limit as a whole.
//!
//! It is generic over the two byte streams, so the unit tests below drive
//! it over in-memory pipes with a WebSocket library at the other ends.
//!
//! Back-pressure: each direction has a queue bounded by a frame count and
//! a byte count. When the queue towards the client is full, the pump stops
//! reading the API's socket; the API's TCP window then fills and the API
//! stops sending. Nothing is dropped and memory stays bounded. The other
//! direction works the same way.

use std::future::{Future as _, poll_fn};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf as _, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use tokio::time::{Instant, Sleep};

use super::close::{Close, CloseAction, End};
use super::control::{Control, HEARTBEAT_PONG, classify};
use super::frame::{self, Next, Opcode, Reader};
use super::registry::RelayRegistry;

/// How long the closing handshakes (and the last queued messages) may take
/// once a relay ends.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Rounds of reading and writing in one poll before yielding to other tasks.
const MAX_ROUNDS_PER_POLL: usize = 32;

/// Room made in a read buffer before each read.
const READ_CHUNK_BYTES: usize = 32 * 1024;

/// How long a quiet relay that was streaming keeps its (empty) buffers
/// before giving them back, so that a stream does not allocate (and fault
/// in fresh pages) for every batch.
const BUFFER_KEEP: Duration = Duration::from_millis(100);

/// Bytes read since the buffers were last given back past which a relay
/// counts as streaming. Below it (a message or two, what most relays see
/// most of the time) a quiet relay gives its buffers back at once, so idle
/// relays hold none.
const STREAMING_BYTES: usize = 64 * 1024;

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
    /// Largest message relayed, in payload bytes; a larger one closes the
    /// relay with 1009.
    pub max_message: usize,
}

/// Who is at the other end of a socket, which decides the masking: a
/// client masks its frames, a server does not (RFC 6455 §5.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Peer {
    Client,
    Server,
}

/// Whole frames waiting to be written to one socket.
struct Outbox {
    bytes: BytesMut,
    /// Frames added since the outbox was last empty: a count that errs on
    /// the high side, which is the safe side for a limit.
    frames: usize,
    /// Frames are masked: the peer is a server.
    masked: bool,
}

impl Outbox {
    fn has_room(&self, limits: &Limits) -> bool {
        self.frames < limits.queue_messages && self.bytes.len() < limits.queue_bytes
    }

    /// Copies a frame received from another server as it is (both are
    /// unmasked).
    fn forward(&mut self, frame: &[u8]) {
        self.bytes.extend_from_slice(frame);
        self.frames += 1;
    }

    /// Adds a frame, masked with a fresh key when the peer is a server.
    fn queue(&mut self, fin: bool, opcode: Opcode, payload: &[u8]) {
        let mask = self.masked.then(rand::random::<[u8; 4]>);
        frame::encode(&mut self.bytes, fin, opcode, payload, mask);
        self.frames += 1;
    }

    /// Answers a ping. A pong that finds the queue full is dropped: the
    /// peer is not reading anyway, and a later pong answers for it.
    fn answer_ping(&mut self, payload: &[u8], limits: &Limits) {
        if self.has_room(limits) {
            self.queue(true, Opcode::Pong, payload);
        }
    }

    fn queue_close(&mut self, close: Option<&Close>) {
        let payload = close.map_or_else(Vec::new, |close| {
            frame::close_payload(close.code, &close.reason)
        });
        self.queue(true, Opcode::Close, &payload);
    }
}

/// One socket: the bytes read from it and not yet handled, and the frames
/// waiting to be written to it.
struct Side<S> {
    io: S,
    inbox: BytesMut,
    reader: Reader,
    outbox: Outbox,
    /// Bytes were written since the last flush.
    unflushed: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Side<S> {
    fn new(io: S, peer: Peer, limits: &Limits, already_read: BytesMut) -> Self {
        Self {
            io,
            inbox: already_read,
            reader: Reader::new(peer == Peer::Client, limits.max_message),
            outbox: Outbox {
                bytes: BytesMut::new(),
                frames: 0,
                masked: peer == Peer::Server,
            },
            unflushed: false,
        }
    }

    /// Reads what the socket has; `Ready(Ok(0))` at its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.inbox.reserve(READ_CHUNK_BYTES);
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.inbox)
    }

    /// Makes room for a frame of `frame_len` bytes in the read buffer, when
    /// it is larger than what the next read makes room for anyway.
    fn expect(&mut self, frame_len: usize) {
        if frame_len > READ_CHUNK_BYTES {
            self.inbox
                .reserve(frame_len.saturating_sub(self.inbox.len()));
        }
    }

    /// Writes the outbox while the socket takes it, then flushes. Returns
    /// whether anything was written.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> io::Result<bool> {
        let mut progress = false;
        while !self.outbox.bytes.is_empty() {
            match Pin::new(&mut self.io).poll_write(cx, &self.outbox.bytes) {
                Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(written)) => {
                    self.outbox.bytes.advance(written);
                    self.unflushed = true;
                    progress = true;
                }
                Poll::Ready(Err(error)) => return Err(error),
                Poll::Pending => break,
            }
        }
        if self.outbox.bytes.is_empty() {
            self.outbox.frames = 0;
        }
        if self.unflushed {
            match Pin::new(&mut self.io).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.unflushed = false,
                Poll::Ready(Err(error)) => return Err(error),
                Poll::Pending => {}
            }
        }
        Ok(progress)
    }

    /// Writes and flushes the whole outbox.
    fn poll_write_all(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let progress = self.poll_write(cx)?;
            if self.outbox.bytes.is_empty() && !self.unflushed {
                return Poll::Ready(Ok(()));
            }
            if !progress {
                return Poll::Pending;
            }
        }
    }

    /// Whether this side holds any buffer memory.
    fn holds_buffers(&self) -> bool {
        self.inbox.capacity() > 0 || self.outbox.bytes.capacity() > 0
    }

    /// Gives the buffers back while they are empty.
    fn release_empty_buffers(&mut self) {
        if self.inbox.is_empty() {
            self.inbox = BytesMut::new();
        }
        if self.outbox.bytes.is_empty() {
            self.outbox.bytes = BytesMut::new();
        }
    }

    /// Sends what is queued, closes with `action`, and, when this side
    /// closes first, waits for the peer to answer.
    async fn close(&mut self, action: CloseAction) {
        let closes_first = match action {
            CloseAction::Drop => return,
            CloseAction::Send(close) => {
                self.outbox.queue_close(Some(&close));
                true
            }
            CloseAction::Answer(echo) => {
                self.outbox.queue_close(echo.as_ref());
                false
            }
        };
        if poll_fn(|cx| self.poll_write_all(cx)).await.is_err() {
            return;
        }
        if closes_first {
            self.await_close_answer().await;
        }
        let _ = self.io.shutdown().await;
    }

    /// Reads (and drops) frames until the peer's close frame, the end of
    /// the stream or a broken frame.
    async fn await_close_answer(&mut self) {
        loop {
            match self.reader.next(&self.inbox) {
                Ok(Next::Frame(header)) if header.opcode == Opcode::Close => return,
                Ok(Next::Frame(header)) => {
                    self.inbox.advance(header.frame_len());
                    continue;
                }
                Ok(Next::NeedMore(frame_len)) => self.expect(frame_len),
                Err(_) => return,
            }
            match poll_fn(|cx| self.poll_fill(cx)).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
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
    /// Fires for the idle time-out, or sooner to give buffers back.
    timer: Pin<Box<Sleep>>,
    /// The timer is set to give the buffers back.
    release_armed: bool,
    /// Bytes read from either side since the buffers were given back.
    read_since_release: usize,
}

impl<C, U> Pump<C, U>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    /// A pump between `client` (the stream of an accepted WebSocket) and
    /// `upstream` (the API's, past its handshake, of which
    /// `upstream_read_ahead` was already read); back-pressure episodes are
    /// counted in `registry`.
    pub fn new(
        client: C,
        upstream: U,
        upstream_read_ahead: BytesMut,
        limits: Limits,
        registry: Arc<RelayRegistry>,
    ) -> Self {
        let now = Instant::now();
        Self {
            client: Side::new(client, Peer::Client, &limits, BytesMut::new()),
            upstream: Side::new(upstream, Peer::Server, &limits, upstream_read_ahead),
            limits,
            registry,
            paused: false,
            last_activity: now,
            timer: Box::pin(tokio::time::sleep_until(now + limits.idle)),
            release_armed: false,
            read_since_release: 0,
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
                Err(error) => return Poll::Ready(lost("client", &error, End::ClientLost)),
            };
            match self.upstream.poll_write(cx) {
                Ok(moved) => progress |= moved,
                Err(error) => return Poll::Ready(lost("API", &error, End::UpstreamLost)),
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
                return self.poll_quiet(cx);
            }
        }
        // Still busy: let other relays run, and come back at once.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Relays the API's frames, reading more while the client's queue has
    /// room. `Ready(None)`: something was relayed; `Pending`: nothing was.
    fn poll_read_upstream(&mut self, cx: &mut Context<'_>) -> Poll<Option<End>> {
        let mut moved = false;
        loop {
            match self.relay_upstream_frames() {
                Ok(relayed) => moved |= relayed,
                Err(end) => return Poll::Ready(Some(end)),
            }
            if !self.client.outbox.has_room(&self.limits) {
                if !self.paused {
                    self.paused = true;
                    self.registry.note_backpressure();
                }
                break;
            }
            self.paused = false;
            let filled = fill(
                &mut self.upstream,
                cx,
                &mut self.read_since_release,
                ("API", End::UpstreamLost),
            );
            match filled {
                Ok(true) => moved = true,
                Ok(false) => break,
                Err(end) => return Poll::Ready(Some(end)),
            }
        }
        if moved {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }

    /// Relays the client's frames, reading more while the API's queue has
    /// room.
    fn poll_read_client(&mut self, cx: &mut Context<'_>) -> Poll<Option<End>> {
        let mut moved = false;
        loop {
            match self.relay_client_frames() {
                Ok(relayed) => moved |= relayed,
                Err(end) => return Poll::Ready(Some(end)),
            }
            if !self.upstream.outbox.has_room(&self.limits) {
                break;
            }
            let filled = fill(
                &mut self.client,
                cx,
                &mut self.read_since_release,
                ("client", End::ClientLost),
            );
            match filled {
                Ok(true) => moved = true,
                Ok(false) => break,
                Err(end) => return Poll::Ready(Some(end)),
            }
        }
        if moved {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }

    /// Hands the whole frames read from the API to the client's queue while
    /// it has room; returns whether any frame was handled.
    fn relay_upstream_frames(&mut self) -> Result<bool, End> {
        let mut handled = false;
        while self.client.outbox.has_room(&self.limits) {
            let header = match self.upstream.reader.next(&self.upstream.inbox) {
                Ok(Next::Frame(header)) => header,
                Ok(Next::NeedMore(frame_len)) => {
                    self.upstream.expect(frame_len);
                    break;
                }
                Err(violation) => return Err(End::upstream_violation(violation)),
            };
            handled = true;
            let frame = &self.upstream.inbox[..header.frame_len()];
            let payload = &frame[header.payload()];
            let end = match header.opcode {
                Opcode::Text | Opcode::Binary | Opcode::Continuation => {
                    self.client.outbox.forward(frame);
                    // A text frame with FIN outside a fragmented message
                    // (the reader checks that) is a whole message.
                    let whole_text = header.opcode == Opcode::Text && header.fin;
                    match whole_text.then(|| classify(payload)) {
                        Some(Control::HeartbeatPing) => {
                            // Answered here so the API keeps the socket even
                            // for a client that knows nothing of heartbeats;
                            // the client still sees the ping.
                            if self.upstream.outbox.has_room(&self.limits) {
                                self.upstream.outbox.queue(
                                    true,
                                    Opcode::Text,
                                    HEARTBEAT_PONG.as_bytes(),
                                );
                            }
                            None
                        }
                        Some(Control::AuthError) => Some(End::AuthRefused),
                        _ => None,
                    }
                }
                Opcode::Ping => {
                    self.upstream.outbox.answer_ping(payload, &self.limits);
                    None
                }
                Opcode::Pong => None,
                Opcode::Close => Some(match frame::parse_close(payload) {
                    Ok(close) => End::UpstreamClosed(close.map(Close::from_wire)),
                    Err(violation) => End::upstream_violation(violation),
                }),
            };
            self.upstream.inbox.advance(header.frame_len());
            if let Some(end) = end {
                return Err(end);
            }
        }
        Ok(handled)
    }

    /// Hands the whole frames read from the client to the API's queue while
    /// it has room, masked afresh; returns whether any frame was handled.
    fn relay_client_frames(&mut self) -> Result<bool, End> {
        let mut handled = false;
        while self.upstream.outbox.has_room(&self.limits) {
            let header = match self.client.reader.next(&self.client.inbox) {
                Ok(Next::Frame(header)) => header,
                Ok(Next::NeedMore(frame_len)) => {
                    self.client.expect(frame_len);
                    break;
                }
                Err(violation) => return Err(End::client_violation(violation)),
            };
            handled = true;
            let payload = &mut self.client.inbox[header.payload()];
            if let Some(key) = header.mask {
                frame::apply_mask(payload, key);
            }
            let payload = &*payload;
            let end = match header.opcode {
                Opcode::Text | Opcode::Binary | Opcode::Continuation => {
                    // The relay already answered the API's ping; the
                    // client's own pong would be a second one.
                    let own_pong = header.opcode == Opcode::Text
                        && header.fin
                        && classify(payload) == Control::HeartbeatPong;
                    if !own_pong {
                        self.upstream
                            .outbox
                            .queue(header.fin, header.opcode, payload);
                    }
                    None
                }
                Opcode::Ping => {
                    self.client.outbox.answer_ping(payload, &self.limits);
                    None
                }
                Opcode::Pong => None,
                Opcode::Close => Some(match frame::parse_close(payload) {
                    Ok(close) => End::ClientClosed(close.map(Close::from_wire)),
                    Err(violation) => End::client_violation(violation),
                }),
            };
            self.client.inbox.advance(header.frame_len());
            if let Some(end) = end {
                return Err(end);
            }
        }
        Ok(handled)
    }

    /// While nothing moves: gives the buffers back (at once, or after
    /// [`BUFFER_KEEP`] of quiet for a streaming relay), and ends the relay
    /// after the idle time-out. One timer serves both; it is re-armed when
    /// it fires or when a streaming relay falls quiet, never per message.
    fn poll_quiet(&mut self, cx: &mut Context<'_>) -> Poll<End> {
        if self.read_since_release < STREAMING_BYTES {
            self.release_buffers();
        } else if !self.release_armed && self.holds_buffers() {
            self.release_armed = true;
            self.timer.as_mut().reset(self.last_activity + BUFFER_KEEP);
        }
        while self.timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            if self.release_armed && now >= self.last_activity + BUFFER_KEEP {
                self.release_buffers();
                // Buffers still holding bytes are looked at again later.
                self.release_armed = self.holds_buffers();
            }
            let idle_deadline = self.last_activity + self.limits.idle;
            if now >= idle_deadline {
                return Poll::Ready(End::Idle);
            }
            let release_at = self.last_activity + BUFFER_KEEP;
            let next = match (self.release_armed, release_at > now) {
                (false, _) => idle_deadline,
                (true, true) => release_at,
                (true, false) => now + BUFFER_KEEP,
            };
            self.timer.as_mut().reset(next.min(idle_deadline));
        }
        Poll::Pending
    }

    fn holds_buffers(&self) -> bool {
        self.client.holds_buffers() || self.upstream.holds_buffers()
    }

    fn release_buffers(&mut self) {
        self.client.release_empty_buffers();
        self.upstream.release_empty_buffers();
        self.read_since_release = 0;
    }
}

/// Reads more from `side`: `Ok(true)` when bytes came (added to
/// `read_since_release`), `Ok(false)` when none are there yet, and the
/// relay's end when the socket ended or failed (`name` and `end` say which
/// side it was).
fn fill<S: AsyncRead + AsyncWrite + Unpin>(
    side: &mut Side<S>,
    cx: &mut Context<'_>,
    read_since_release: &mut usize,
    (name, end): (&str, End),
) -> Result<bool, End> {
    match side.poll_fill(cx) {
        Poll::Ready(Ok(0)) => Err(end),
        Poll::Ready(Ok(read)) => {
            *read_since_release += read;
            Ok(true)
        }
        Poll::Ready(Err(error)) => Err(lost(name, &error, end)),
        Poll::Pending => Ok(false),
    }
}

/// `end`, for a socket that failed with `error` (logged: it carries no
/// secret, only the kind of failure).
fn lost(side: &str, error: &io::Error, end: End) -> End {
    tracing::debug!(%error, "the {side}'s socket failed");
    end
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio::io::{AsyncWriteExt as _, DuplexStream};
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

    use super::super::close::{
        GOING_AWAY, INTERNAL_ERROR, NORMAL, POLICY_VIOLATION, PROTOCOL_ERROR, TOO_BIG,
    };
    use super::*;

    /// A test's end of one of the pump's sockets, spoken by tungstenite:
    /// as a client on the client's side, as a server on the API's.
    type Peer = WebSocketStream<DuplexStream>;

    /// What a test holds of a running pump.
    struct Running {
        client: Peer,
        api: Peer,
        registry: Arc<RelayRegistry>,
        task: tokio::task::JoinHandle<End>,
    }

    fn limits(queue_messages: usize) -> Limits {
        Limits {
            queue_messages,
            queue_bytes: 1024 * 1024,
            idle: Duration::from_secs(60),
            max_message: 1024 * 1024,
        }
    }

    /// A pump over in-memory pipes of `pipe_bytes`, running until it ends;
    /// its end is returned once both sides are closed. Returns the raw API
    /// end, for tests that write frames by hand.
    fn start_raw(
        limits: Limits,
        pipe_bytes: usize,
        upstream_read_ahead: BytesMut,
    ) -> (
        DuplexStream,
        DuplexStream,
        Arc<RelayRegistry>,
        tokio::task::JoinHandle<End>,
    ) {
        let (client_io, client_end) = tokio::io::duplex(pipe_bytes);
        let (upstream_io, api_end) = tokio::io::duplex(pipe_bytes);
        let registry = Arc::new(RelayRegistry::default());
        let mut pump = Pump::new(
            client_io,
            upstream_io,
            upstream_read_ahead,
            limits,
            registry.clone(),
        );
        let task = tokio::spawn(async move {
            let end = pump.run().await;
            pump.finish(&end).await;
            end
        });
        (client_end, api_end, registry, task)
    }

    async fn start_with(limits: Limits, pipe_bytes: usize) -> Running {
        let (client_end, api_end, registry, task) = start_raw(limits, pipe_bytes, BytesMut::new());
        Running {
            client: client_peer(client_end).await,
            api: WebSocketStream::from_raw_socket(api_end, Role::Server, None).await,
            registry,
            task,
        }
    }

    async fn start(queue_messages: usize) -> Running {
        start_with(limits(queue_messages), 64 * 1024).await
    }

    async fn client_peer(end: DuplexStream) -> Peer {
        WebSocketStream::from_raw_socket(end, Role::Client, None).await
    }

    async fn send(peer: &mut Peer, message: Message) {
        assert!(peer.send(message).await.is_ok(), "the pump stopped reading");
    }

    async fn recv(peer: &mut Peer) -> Option<Message> {
        tokio::time::timeout(Duration::from_secs(5), peer.next())
            .await
            .ok()
            .flatten()
            .and_then(Result::ok)
    }

    fn text(value: &str) -> Message {
        Message::text(value)
    }

    fn close(code: u16, reason: &str) -> Message {
        Message::Close(Some(CloseFrame {
            code: code.into(),
            reason: reason.into(),
        }))
    }

    /// The code of the close frame `message` is, if it is one.
    fn close_code(message: Option<&Message>) -> Option<u16> {
        match message {
            Some(Message::Close(Some(frame))) => Some(frame.code.into()),
            _ => None,
        }
    }

    const PING: &str = r#"{"type":"heartbeat","heartbeat_msg":"ping","heartbeat_delay_ms":5000}"#;

    #[tokio::test]
    async fn messages_flow_both_ways_in_order() {
        let Running {
            mut client,
            mut api,
            task,
            ..
        } = start(4).await;

        for n in 0..50 {
            send(&mut api, text(&format!("{{\"event\":\"E\",\"n\":{n}}}"))).await;
        }
        for n in 0..50 {
            assert_eq!(
                recv(&mut client).await,
                Some(text(&format!("{{\"event\":\"E\",\"n\":{n}}}")))
            );
        }
        send(
            &mut client,
            Message::Binary(Bytes::from_static(b"\x00\x01")),
        )
        .await;
        send(&mut client, text("hello")).await;
        assert_eq!(
            recv(&mut api).await,
            Some(Message::Binary(Bytes::from_static(b"\x00\x01")))
        );
        assert_eq!(recv(&mut api).await, Some(text("hello")));

        send(&mut client, close(4000, "bye")).await;
        assert_eq!(recv(&mut api).await, Some(close(4000, "bye")));
        assert_eq!(
            recv(&mut client).await,
            Some(close(4000, "")),
            "the client's close is answered"
        );
        drop((client, api));
        let end = task.await.ok();
        assert_eq!(end, Some(End::ClientClosed(Some(Close::new(4000, "bye")))));
    }

    #[tokio::test]
    async fn the_relay_answers_heartbeats_and_drops_the_clients_pongs() {
        let Running {
            mut client,
            mut api,
            task,
            ..
        } = start(8).await;

        send(&mut api, text(PING)).await;
        assert_eq!(
            recv(&mut api).await,
            Some(text(HEARTBEAT_PONG)),
            "the relay answered"
        );
        assert_eq!(
            recv(&mut client).await,
            Some(text(PING)),
            "the client still sees it"
        );

        send(&mut client, text(HEARTBEAT_PONG)).await;
        send(&mut client, text("after")).await;
        assert_eq!(recv(&mut api).await, Some(text("after")), "no second pong");

        drop(client);
        assert_eq!(
            recv(&mut api).await,
            Some(close(GOING_AWAY, "client went away"))
        );
        drop(api);
        assert_eq!(task.await.ok(), Some(End::ClientLost));
    }

    #[tokio::test]
    async fn websocket_pings_are_answered_on_their_own_side() {
        let Running {
            mut client,
            mut api,
            task,
            ..
        } = start(8).await;

        send(&mut client, Message::Ping(Bytes::from_static(b"c"))).await;
        assert_eq!(
            recv(&mut client).await,
            Some(Message::Pong(Bytes::from_static(b"c")))
        );
        send(&mut api, Message::Ping(Bytes::from_static(b"a"))).await;
        assert_eq!(
            recv(&mut api).await,
            Some(Message::Pong(Bytes::from_static(b"a")))
        );
        send(&mut client, Message::Pong(Bytes::from_static(b"unasked"))).await;
        send(&mut client, text("after pings")).await;
        send(&mut api, text("after pings")).await;
        assert_eq!(
            recv(&mut api).await,
            Some(text("after pings")),
            "pings and pongs stay local"
        );
        assert_eq!(recv(&mut client).await, Some(text("after pings")));

        send(&mut api, close(4002, "forced")).await;
        assert_eq!(recv(&mut client).await, Some(close(4002, "forced")));
        drop((client, api));
        assert!(task.await.is_ok());
    }

    #[tokio::test]
    async fn the_apis_close_reaches_the_client_after_its_messages() {
        let Running {
            mut client,
            mut api,
            task,
            ..
        } = start(8).await;

        send(&mut api, text("last")).await;
        send(&mut api, close(4002, "forced")).await;
        assert_eq!(recv(&mut client).await, Some(text("last")));
        assert_eq!(recv(&mut client).await, Some(close(4002, "forced")));
        assert_eq!(
            recv(&mut api).await,
            Some(close(4002, "")),
            "the API's close is answered"
        );
        drop((client, api));
        assert_eq!(
            task.await.ok(),
            Some(End::UpstreamClosed(Some(Close::new(4002, "forced"))))
        );
    }

    #[tokio::test]
    async fn an_api_that_vanishes_closes_the_client_with_1011() {
        let Running {
            mut client,
            api,
            task,
            ..
        } = start(8).await;

        drop(api);
        assert_eq!(
            close_code(recv(&mut client).await.as_ref()),
            Some(INTERNAL_ERROR)
        );
        drop(client);
        assert_eq!(task.await.ok(), Some(End::UpstreamLost));
    }

    #[tokio::test]
    async fn a_refused_authentication_is_forwarded_then_closed_with_1008() {
        let Running {
            mut client,
            mut api,
            task,
            ..
        } = start(8).await;
        let refusal = r#"{"type":"error","id":2001,"message":"bad signature"}"#;

        send(&mut api, text(refusal)).await;
        assert_eq!(recv(&mut client).await, Some(text(refusal)));
        let closed = recv(&mut client).await;
        assert!(
            matches!(&closed, Some(Message::Close(Some(frame))) if u16::from(frame.code) == POLICY_VIOLATION && !frame.reason.is_empty()),
            "{closed:?}"
        );
        assert_eq!(recv(&mut api).await, Some(close(NORMAL, "")));
        drop((client, api));
        assert_eq!(task.await.ok(), Some(End::AuthRefused));
    }

    #[tokio::test]
    async fn a_slow_client_stops_the_reading_of_the_api() {
        const COUNT: usize = 10_000;
        const MESSAGE_BYTES: usize = 100;
        // Queues of 4 frames and pipes of 1 KiB: what the API gets ahead of
        // a client that does not read is the pipes, one read and the queue,
        // a few KiB.
        const MOST_AHEAD_BYTES: usize = 8 * 1024;
        let Running {
            mut client,
            api,
            registry,
            task,
        } = start_with(limits(4), 1024).await;
        let message = |n: usize| text(&format!("{n:0>MESSAGE_BYTES$}"));
        let sent = Arc::new(AtomicUsize::new(0));
        let counter = sent.clone();
        let sender = tokio::spawn(async move {
            let mut api = api;
            for n in 0..COUNT {
                send(&mut api, message(n)).await;
                counter.fetch_add(1, Ordering::SeqCst);
            }
            api
        });

        tokio::time::sleep(Duration::from_millis(200)).await;
        let sent_while_stalled = sent.load(Ordering::SeqCst);
        assert!(
            sent_while_stalled * MESSAGE_BYTES < MOST_AHEAD_BYTES,
            "the pump kept reading a stalled client's API ({sent_while_stalled} messages)"
        );
        assert!(registry.backpressure_events() >= 1);

        for n in 0..COUNT {
            assert_eq!(recv(&mut client).await, Some(message(n)), "nothing lost");
        }
        let api = sender.await.ok();
        drop((client, api));
        assert!(task.await.is_ok());
    }

    #[tokio::test]
    async fn a_silent_relay_goes_idle() {
        let short = Limits {
            idle: Duration::from_millis(100),
            ..limits(8)
        };
        let Running {
            mut client,
            mut api,
            task,
            ..
        } = start_with(short, 1024).await;
        let expected = Some(close(GOING_AWAY, "idle time-out"));

        assert_eq!(recv(&mut client).await, expected);
        assert_eq!(recv(&mut api).await, expected);
        drop((client, api));
        assert_eq!(task.await.ok(), Some(End::Idle));
    }

    /// Runs `pump` for `period`; it must not end on its own meanwhile.
    async fn run_for(pump: &mut Pump<DuplexStream, DuplexStream>, period: Duration) {
        let ran = tokio::time::timeout(period, pump.run()).await;
        assert!(ran.is_err(), "the relay ended: {ran:?}");
    }

    // On a paused clock, which moves only when every task waits: how long
    // the machine takes to run the pump does not count.
    #[tokio::test(start_paused = true)]
    async fn quiet_relays_give_their_buffers_back() {
        let (client_io, client_end) = tokio::io::duplex(256 * 1024);
        let (upstream_io, api_end) = tokio::io::duplex(256 * 1024);
        let mut pump = Pump::new(
            client_io,
            upstream_io,
            BytesMut::new(),
            limits(1024),
            Arc::default(),
        );
        let mut client = client_peer(client_end).await;
        let mut api = WebSocketStream::from_raw_socket(api_end, Role::Server, None).await;

        send(&mut api, text("one message")).await;
        run_for(&mut pump, BUFFER_KEEP / 4).await;
        assert_eq!(recv(&mut client).await, Some(text("one message")));
        assert!(!pump.holds_buffers(), "given back at once");

        let line = "x".repeat(1000);
        for _ in 0..(2 * STREAMING_BYTES / line.len()) {
            send(&mut api, text(&line)).await;
        }
        run_for(&mut pump, BUFFER_KEEP / 4).await;
        assert!(pump.holds_buffers(), "a stream keeps them a while");
        run_for(&mut pump, BUFFER_KEEP * 3).await;
        assert!(!pump.holds_buffers(), "given back once quiet");
        for _ in 0..(2 * STREAMING_BYTES / line.len()) {
            assert_eq!(recv(&mut client).await, Some(text(&line)));
        }
    }

    #[tokio::test]
    async fn messages_over_the_limit_close_with_1009() {
        let small = Limits {
            max_message: 64,
            ..limits(8)
        };
        let Running {
            mut client,
            mut api,
            task,
            ..
        } = start_with(small, 64 * 1024).await;
        send(&mut api, text(&"y".repeat(65))).await;
        assert_eq!(close_code(recv(&mut client).await.as_ref()), Some(TOO_BIG));
        assert_eq!(close_code(recv(&mut api).await.as_ref()), Some(TOO_BIG));
        drop((client, api));
        assert_eq!(task.await.ok(), Some(End::UpstreamTooBig));

        let Running {
            mut client,
            mut api,
            task,
            ..
        } = start_with(small, 64 * 1024).await;
        send(&mut client, text(&"x".repeat(65))).await;
        assert_eq!(close_code(recv(&mut client).await.as_ref()), Some(TOO_BIG));
        assert_eq!(close_code(recv(&mut api).await.as_ref()), Some(GOING_AWAY));
        drop((client, api));
        assert_eq!(task.await.ok(), Some(End::ClientTooBig));
    }

    /// One frame's bytes, as a server (unmasked) or a client (masked).
    fn raw_frame(fin: bool, opcode: Opcode, payload: &[u8], mask: Option<[u8; 4]>) -> BytesMut {
        let mut bytes = BytesMut::new();
        frame::encode(&mut bytes, fin, opcode, payload, mask);
        bytes
    }

    #[tokio::test]
    async fn frames_split_across_reads_and_fragments_arrive_whole() {
        let mut read_ahead = raw_frame(true, Opcode::Text, b"read ahead", None);
        read_ahead.extend_from_slice(&raw_frame(false, Opcode::Text, b"hel", None)[..3]);
        let (client_end, mut api_end, _, task) = start_raw(limits(8), 1024, read_ahead);
        let mut client = client_peer(client_end).await;

        // The rest of the first fragment, a ping between the fragments
        // (answered, not relayed), then the last fragment byte by byte.
        let mut rest = raw_frame(false, Opcode::Text, b"hel", None).split_off(3);
        rest.extend_from_slice(&raw_frame(true, Opcode::Ping, b"p", None));
        assert!(api_end.write_all(&rest).await.is_ok());
        for byte in raw_frame(true, Opcode::Continuation, b"lo", None) {
            assert!(api_end.write_all(&[byte]).await.is_ok());
            tokio::task::yield_now().await;
        }
        // A binary message of a 64-bit length.
        let big = vec![7_u8; 70_000];
        assert!(
            api_end
                .write_all(&raw_frame(true, Opcode::Binary, &big, None))
                .await
                .is_ok()
        );

        assert_eq!(recv(&mut client).await, Some(text("read ahead")));
        assert_eq!(recv(&mut client).await, Some(text("hello")));
        assert_eq!(recv(&mut client).await, Some(Message::Binary(big.into())));
        drop((client, api_end));
        assert_eq!(task.await.ok(), Some(End::UpstreamLost));
    }

    #[tokio::test]
    async fn frames_that_break_the_protocol_close_with_1002() {
        // A masked frame from the API.
        let (client_end, mut api_end, _, task) = start_raw(limits(8), 1024, BytesMut::new());
        let mut client = client_peer(client_end).await;
        let masked = raw_frame(true, Opcode::Text, b"x", Some([1, 2, 3, 4]));
        assert!(api_end.write_all(&masked).await.is_ok());
        assert_eq!(
            close_code(recv(&mut client).await.as_ref()),
            Some(INTERNAL_ERROR)
        );
        drop((client, api_end));
        assert_eq!(task.await.ok(), Some(End::UpstreamBrokeProtocol));

        // An unmasked frame from the client.
        let (mut client_end, api_end, _, task) = start_raw(limits(8), 1024, BytesMut::new());
        let mut api = WebSocketStream::from_raw_socket(api_end, Role::Server, None).await;
        let unmasked = raw_frame(true, Opcode::Text, b"x", None);
        assert!(client_end.write_all(&unmasked).await.is_ok());
        assert_eq!(close_code(recv(&mut api).await.as_ref()), Some(GOING_AWAY));
        let mut client = client_peer(client_end).await;
        assert_eq!(
            close_code(recv(&mut client).await.as_ref()),
            Some(PROTOCOL_ERROR)
        );
        drop((client, api));
        assert_eq!(task.await.ok(), Some(End::ClientBrokeProtocol));
    }
}
