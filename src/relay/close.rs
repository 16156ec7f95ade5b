//! How a relay ends and how each side is closed: the close codes, the
//! reasons, and which code crosses from one side to the other. Pure: no
//! I/O.

use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::frame::{self, Violation};

/// Close code 1000: the purpose was fulfilled.
pub const NORMAL: u16 = 1000;
/// Close code 1001: going away (server shutdown, idle relay, client gone).
pub const GOING_AWAY: u16 = 1001;
/// Close code 1002: the peer broke the WebSocket protocol.
pub const PROTOCOL_ERROR: u16 = 1002;
/// Close code 1008: policy violation (the API refused the authentication).
pub const POLICY_VIOLATION: u16 = 1008;
/// Close code 1009: a message was larger than the relay's limit.
pub const TOO_BIG: u16 = 1009;
/// Close code 1011: unexpected condition (the API's connection was lost).
pub const INTERNAL_ERROR: u16 = 1011;

/// Longest close reason: a close frame's payload is at most 125 bytes,
/// two of which hold the code.
const MAX_REASON_BYTES: usize = frame::MAX_CONTROL_PAYLOAD - 2;

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

    /// A close frame read from a socket: its code and reason.
    pub(super) fn from_wire((code, reason): (u16, String)) -> Self {
        Self::new(code, reason)
    }
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
    /// The API's frames broke the WebSocket protocol.
    UpstreamBrokeProtocol,
    /// The API refused the authentication message (error 2001).
    AuthRefused,
    /// The client closed its socket with this frame.
    ClientClosed(Option<Close>),
    /// The client's socket broke or ended without a close frame.
    ClientLost,
    /// The client sent a message larger than the limit.
    ClientTooBig,
    /// The client's frames broke the WebSocket protocol.
    ClientBrokeProtocol,
    /// No message either way for the idle time-out.
    Idle,
    /// The server is shutting down.
    Shutdown,
    /// The credential the relay was opened with was revoked or expired
    /// (the proxy token, or the browser's session).
    Revoked,
}

/// How one side of an ending relay is closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseAction {
    /// Send the queued messages, then this close frame, then wait for the
    /// peer's answer.
    Send(Close),
    /// The peer closed first: send the queued messages, then this answer
    /// to its close frame (`None`: a close frame without a code).
    Answer(Option<Close>),
    /// The socket is broken: just let it go.
    Drop,
}

impl End {
    pub(super) fn upstream_violation(violation: Violation) -> Self {
        tracing::debug!(%violation, "the API's frames were refused");
        match violation {
            Violation::TooBig => Self::UpstreamTooBig,
            Violation::Protocol(_) => Self::UpstreamBrokeProtocol,
        }
    }

    pub(super) fn client_violation(violation: Violation) -> Self {
        tracing::debug!(%violation, "the client's frames were refused");
        match violation {
            Violation::TooBig => Self::ClientTooBig,
            Violation::Protocol(_) => Self::ClientBrokeProtocol,
        }
    }

    /// How to close the client and the API's socket, in that order. Codes
    /// are carried from one side to the other when they may be sent
    /// (see [`forwardable`]).
    pub fn close_actions(&self) -> (CloseAction, CloseAction) {
        use CloseAction::{Answer, Drop, Send};
        match self {
            Self::UpstreamClosed(close) => (
                Send(forwardable(close.as_ref())),
                Answer(echo(close.as_ref())),
            ),
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
            Self::UpstreamBrokeProtocol => (
                Send(Close::new(
                    INTERNAL_ERROR,
                    "the Clever Cloud API broke the WebSocket protocol",
                )),
                Send(Close::new(PROTOCOL_ERROR, "protocol error")),
            ),
            Self::AuthRefused => (
                Send(Close::new(
                    POLICY_VIOLATION,
                    "the Clever Cloud API refused the authentication; log in again",
                )),
                Send(Close::new(NORMAL, "")),
            ),
            Self::ClientClosed(close) => (
                Answer(echo(close.as_ref())),
                Send(forwardable(close.as_ref())),
            ),
            Self::ClientLost => (Drop, Send(Close::new(GOING_AWAY, "client went away"))),
            Self::ClientTooBig => (
                Send(Close::new(TOO_BIG, "message larger than the relay's limit")),
                Send(Close::new(GOING_AWAY, "client went away")),
            ),
            Self::ClientBrokeProtocol => (
                Send(Close::new(PROTOCOL_ERROR, "protocol error")),
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
            Self::Revoked => (
                Send(Close::new(
                    POLICY_VIOLATION,
                    "the credential of this relay was revoked or expired; log in again",
                )),
                Send(Close::new(NORMAL, "")),
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

/// The answer to a peer's close frame: its code (RFC 6455 §5.5.1), or no
/// code when it sent none or one that may not be sent.
fn echo(received: Option<&Close>) -> Option<Close> {
    received
        .filter(|close| CloseCode::from(close.code).is_allowed())
        .map(|close| Close::new(close.code, ""))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
