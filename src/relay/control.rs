//! The API's control messages among the texts a relay carries: heartbeats
//! and the authentication error. Pure: no I/O.

use std::borrow::Cow;
use std::sync::LazyLock;

use memchr::memmem;
use serde::Deserialize;

/// Control messages (heartbeats, errors) are small; longer texts are
/// relayed without being parsed.
const CONTROL_MAX_BYTES: usize = 1024;

/// The API's answer to a heartbeat ping.
pub(super) const HEARTBEAT_PONG: &str = r#"{"type":"heartbeat","heartbeat_msg":"pong"}"#;

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

/// Recognises the API's control messages in a text message's payload.
/// Only short texts holding a `"type"` key are parsed, so events and log
/// lines cost a substring search.
pub fn classify(text: &[u8]) -> Control {
    #[derive(Deserialize)]
    struct Probe<'a> {
        #[serde(rename = "type", borrow)]
        kind: Option<Cow<'a, str>>,
        #[serde(borrow)]
        heartbeat_msg: Option<Cow<'a, str>>,
        id: Option<serde_json::Value>,
    }

    // Built once: building a searcher costs more than running it on a
    // short message, and every message of a flood goes through here.
    static TYPE_KEY: LazyLock<memmem::Finder<'static>> =
        LazyLock::new(|| memmem::Finder::new(b"\"type\""));

    if text.len() > CONTROL_MAX_BYTES || TYPE_KEY.find(text).is_none() {
        return Control::Other;
    }
    let Ok(probe) = serde_json::from_slice::<Probe<'_>>(text) else {
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

#[cfg(test)]
mod tests {
    use super::*;

    const PING: &str = r#"{"type":"heartbeat","heartbeat_msg":"ping","timestamp":1}"#;

    #[test]
    fn control_messages_are_recognised() {
        assert_eq!(classify(PING.as_bytes()), Control::HeartbeatPing);
        assert_eq!(classify(HEARTBEAT_PONG.as_bytes()), Control::HeartbeatPong);
        assert_eq!(
            classify(br#"{"type":"error","id":2001,"message":"x"}"#),
            Control::AuthError
        );
        assert_eq!(
            classify(br#"{"type":"error","id":"2001"}"#),
            Control::AuthError
        );
        assert_eq!(classify(br#"{"type":"error","id":5000}"#), Control::Other);
        assert_eq!(
            classify(br#"{"message_type":"socket_ready"}"#),
            Control::Other
        );
        assert_eq!(
            classify(br#"{"event":"GIT_PUSH","data":"{\"type\":\"heartbeat\",\"heartbeat_msg\":\"ping\"}"}"#),
            Control::Other,
            "a heartbeat inside an event's data is data"
        );
        assert_eq!(classify(b"not json \"type\""), Control::Other);
    }
}
