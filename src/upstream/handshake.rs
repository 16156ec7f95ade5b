//! The words of a WebSocket client handshake (RFC 6455 §4.1): the upgrade
//! request, and the checks of the answer. Pure: the socket side is in
//! [`super::websocket`].

use std::io;

use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use url::{Position, Url};

/// Longest handshake response accepted.
pub(crate) const MAX_RESPONSE_HEAD_BYTES: usize = 16 * 1024;
/// Most headers in a handshake response.
const MAX_RESPONSE_HEADERS: usize = 64;

/// Why a WebSocket to the API could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// No connection, or the answer was not an upgrade.
    #[error("the Clever Cloud API could not be reached: {0}")]
    Unreachable(#[source] io::Error),
    /// The API answered the upgrade with this HTTP status.
    #[error("the Clever Cloud API refused the WebSocket (HTTP {0})")]
    Refused(u16),
    /// The URL makes no socket address (no host or port).
    #[error("the socket URL has no host")]
    BadUrl,
}

/// The upgrade request for `url`, offering `key`.
pub(crate) fn upgrade_request(url: &Url, key: &str) -> Result<String, HandshakeError> {
    let host = match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        (None, _) => return Err(HandshakeError::BadUrl),
    };
    let path = &url[Position::BeforePath..Position::AfterQuery];
    Ok(format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n"
    ))
}

/// Reads the answer to the upgrade asked for with `key` from the start of
/// `received`: the length of its head once it is whole and accepts the
/// upgrade, `None` while more of it is to come.
pub(crate) fn handshake_response(
    received: &[u8],
    key: &str,
) -> Result<Option<usize>, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(received) {
        Ok(httparse::Status::Complete(head_len)) => head_len,
        Ok(httparse::Status::Partial) if received.len() < MAX_RESPONSE_HEAD_BYTES => {
            return Ok(None);
        }
        Ok(httparse::Status::Partial) => {
            return Err(unreachable("the handshake response is too long"));
        }
        Err(_) => return Err(unreachable("not an HTTP response")),
    };
    check_upgrade(&response, key)?;
    Ok(Some(head_len))
}

/// Whether `response` accepts the upgrade asked for with `key`.
fn check_upgrade(response: &httparse::Response<'_, '_>, key: &str) -> Result<(), HandshakeError> {
    let status = response.code.unwrap_or_default();
    if status != 101 {
        return Err(HandshakeError::Refused(status));
    }
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|header| header.name.eq_ignore_ascii_case(name))
            .map(|header| header.value)
    };
    let accepted = header("upgrade").is_some_and(|value| value.eq_ignore_ascii_case(b"websocket"))
        && header("connection").is_some_and(|value| has_token(value, "upgrade"))
        && header("sec-websocket-accept")
            .is_some_and(|value| value == derive_accept_key(key.as_bytes()).as_bytes());
    if accepted {
        Ok(())
    } else {
        Err(unreachable(
            "the API's handshake response does not accept the WebSocket",
        ))
    }
}

/// Whether a comma-separated header `value` holds `token` (any case).
pub(crate) fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|byte| *byte == b',')
        .any(|item| item.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

fn unreachable(why: &'static str) -> HandshakeError {
    HandshakeError::Unreachable(io::Error::new(io::ErrorKind::InvalidData, why))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn switching(key: &str) -> String {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n\r\n",
            derive_accept_key(key.as_bytes())
        )
    }

    #[test]
    fn the_request_names_the_path_query_host_and_key() -> Result<(), HandshakeError> {
        let url = Url::parse("wss://api.example.com:8443/v2/logs/logs-socket/app_1?since=x")
            .map_err(|_| HandshakeError::BadUrl)?;
        let request = upgrade_request(&url, KEY)?;
        assert!(request.starts_with("GET /v2/logs/logs-socket/app_1?since=x HTTP/1.1\r\n"));
        assert!(request.contains("\r\nHost: api.example.com:8443\r\n"));
        assert!(request.contains(&format!("\r\nSec-WebSocket-Key: {KEY}\r\n")));
        assert!(request.ends_with("\r\n\r\n"));
        Ok(())
    }

    #[test]
    fn an_accepting_answer_gives_its_head_length() {
        let answer = switching(KEY);
        let with_frame = format!("{answer}\u{81}\u{2}hi");
        assert_eq!(
            handshake_response(with_frame.as_bytes(), KEY).ok(),
            Some(Some(answer.len()))
        );
        for cut in [0, 10, answer.len() - 1] {
            assert!(
                matches!(handshake_response(&answer.as_bytes()[..cut], KEY), Ok(None)),
                "{cut}"
            );
        }
    }

    #[test]
    fn refusals_wrong_keys_and_garbage_fail() {
        let refused = handshake_response(b"HTTP/1.1 503 Unavailable\r\n\r\n", KEY);
        assert!(
            matches!(refused, Err(HandshakeError::Refused(503))),
            "{refused:?}"
        );
        let wrong = handshake_response(switching("another key").as_bytes(), KEY);
        assert!(
            matches!(wrong, Err(HandshakeError::Unreachable(_))),
            "{wrong:?}"
        );
        let garbage = handshake_response(b"SSH-2.0-OpenSSH\r\n\r\n", KEY);
        assert!(matches!(garbage, Err(HandshakeError::Unreachable(_))));
        let endless = vec![b'a'; MAX_RESPONSE_HEAD_BYTES];
        let mut head = b"HTTP/1.1 101 OK\r\nX: ".to_vec();
        head.extend_from_slice(&endless);
        assert!(matches!(
            handshake_response(&head, KEY),
            Err(HandshakeError::Unreachable(_))
        ));
    }

    #[test]
    fn header_tokens_are_found_in_lists_in_any_case() {
        assert!(has_token(b"keep-alive, Upgrade", "upgrade"));
        assert!(has_token(b"UPGRADE", "upgrade"));
        assert!(!has_token(b"upgrades", "upgrade"));
        assert!(!has_token(b"", "upgrade"));
    }
}
