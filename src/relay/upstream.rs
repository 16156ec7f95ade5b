//! The API's side of a relay: which socket, which URL is signed, and the
//! handshake (connect, upgrade, then the OAuth message).
//!
//! The upgrade is done here rather than by a WebSocket library so that the
//! pump gets the raw stream, with whatever the API sent right after its
//! handshake response.

use std::io;

use axum::http::StatusCode;
use bytes::{Buf as _, BytesMut};
use rustls::pki_types::ServerName;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use url::{Host, Position, Url};

use super::RelayError;
use super::frame::{self, Opcode};
use crate::api_stream::{self, ApiStream};
use crate::config::Config;
use crate::metrics::UpstreamOutcome;
use crate::oauth::signature::Request;
use crate::oauth::{Credentials, Signer};

/// The API's socket, once upgraded and sent the OAuth message.
#[derive(Debug)]
pub struct UpstreamSocket {
    /// The connection, over TLS for a `wss://` socket.
    pub stream: ApiStream,
    /// What the API sent past its handshake response, read along with it.
    pub read_ahead: BytesMut,
}

/// Longest handshake response accepted from the API.
const MAX_RESPONSE_HEAD_BYTES: usize = 16 * 1024;
/// Most headers in the API's handshake response.
const MAX_RESPONSE_HEADERS: usize = 64;

/// Longest application id accepted.
const MAX_APP_ID_LEN: usize = 128;

/// Which of the API's real-time streams a relay carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The account's events: `/v2/events/event-socket`.
    Events,
    /// An application's logs: `/v2/logs/logs-socket/{app_id}`.
    Logs {
        /// The application id, a plain path segment.
        app_id: String,
        /// The client's query string (`since`, `filter`, …), passed on.
        query: Option<String>,
    },
}

impl Target {
    /// The relay's path as the audit trail shows it.
    pub(crate) fn audit_path(&self) -> String {
        match self {
            Self::Events => "/ws/events".to_owned(),
            Self::Logs { app_id, .. } => format!("/ws/logs/{app_id}"),
        }
    }

    /// The logs of `app_id`, which must be a plain path segment
    /// (RFC 3986 unreserved characters, not `.` or `..`).
    pub fn logs(app_id: String, query: Option<String>) -> Result<Self, RelayError> {
        let plain = !app_id.is_empty()
            && app_id.len() <= MAX_APP_ID_LEN
            && app_id != "."
            && app_id != ".."
            && app_id.bytes().all(|byte| {
                byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
            });
        if !plain {
            return Err(RelayError::BadAppId);
        }
        let query = query.filter(|query| !query.is_empty());
        Ok(Self::Logs { app_id, query })
    }

    /// A short name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Events => "events",
            Self::Logs { .. } => "logs",
        }
    }

    /// The socket to connect to: `ws://` for an `http://` API, `wss://`
    /// for `https://`.
    pub fn socket_url(&self, api_host: &Url) -> Result<Url, RelayError> {
        let mut url = match self {
            Self::Events => join(api_host, "v2/events/event-socket")?,
            Self::Logs { app_id, query } => {
                let mut url = join(api_host, &format!("v2/logs/logs-socket/{app_id}"))?;
                url.set_query(query.as_deref());
                url
            }
        };
        let scheme = if api_host.scheme() == "https" {
            "wss"
        } else {
            "ws"
        };
        url.set_scheme(scheme)
            .map_err(|()| RelayError::BadApiHost)?;
        Ok(url)
    }

    /// The URL whose `GET` the OAuth message signs: `API_HOST/v2/events/`
    /// for events, `API_HOST/v2/logs/{app_id}` (no query) for logs.
    ///
    /// This is what the official JS client and the 2019 CLI signed, and they
    /// used HMAC-SHA512 in production for years; the API's seed
    /// documentation's older advice is to sign the socket URL itself
    /// (`…/event-socket`). With PLAINTEXT the URL does not matter. Should
    /// the API ever want the other one, this function is the only place to
    /// change.
    pub fn signed_url(&self, api_host: &Url) -> Result<Url, RelayError> {
        match self {
            Self::Events => join(api_host, "v2/events/"),
            Self::Logs { app_id, .. } => join(api_host, &format!("v2/logs/{app_id}")),
        }
    }
}

fn join(api_host: &Url, path: &str) -> Result<Url, RelayError> {
    api_host.join(path).map_err(|_| RelayError::BadApiHost)
}

/// `{"message_type":"oauth","authorization":"OAuth …"}` for `target`,
/// signed with the consumer and the access token.
pub fn auth_message(
    signer: Signer,
    signed_url: &Url,
    consumer: &Credentials,
    token: &Credentials,
) -> String {
    let authorization = signer.authorization(&Request {
        method: "GET",
        url: signed_url,
        form_body: None,
        consumer,
        token: Some(token),
        callback: None,
        verifier: None,
    });
    json!({ "message_type": "oauth", "authorization": authorization }).to_string()
}

/// Connects to the API's socket for `target`, upgrades it to a WebSocket
/// and sends the OAuth message, all within the connect time-out.
#[tracing::instrument(skip_all, fields(stream = target.kind()))]
pub async fn connect(
    config: &Config,
    target: &Target,
    consumer: &Credentials,
    token: &Credentials,
) -> Result<UpstreamSocket, RelayError> {
    let url = target.socket_url(&config.api_host)?;
    let auth = auth_message(
        Signer::new(config.oauth_signature_method),
        &target.signed_url(&config.api_host)?,
        consumer,
        token,
    );
    let handshake = async {
        let mut stream = open_stream(&url, &api_stream::tls_connector())
            .await
            .map_err(RelayError::Unreachable)?;
        let read_ahead = upgrade(&mut stream, &url).await?;
        let mut message = BytesMut::new();
        frame::encode(
            &mut message,
            true,
            Opcode::Text,
            auth.as_bytes(),
            Some(rand::random()),
        );
        stream
            .write_all(&message)
            .await
            .map_err(RelayError::Unreachable)?;
        stream.flush().await.map_err(RelayError::Unreachable)?;
        Ok(UpstreamSocket { stream, read_ahead })
    };
    tokio::time::timeout(config.api_connect_timeout(), handshake)
        .await
        .unwrap_or(Err(RelayError::Timeout))
}

/// A connection to the socket's host, over TLS with `tls` for `wss://`.
async fn open_stream(url: &Url, tls: &TlsConnector) -> io::Result<ApiStream> {
    let host = match url.host() {
        Some(Host::Domain(domain)) => domain.to_owned(),
        Some(Host::Ipv4(address)) => address.to_string(),
        Some(Host::Ipv6(address)) => address.to_string(),
        None => return Err(invalid_data("the socket URL has no host")),
    };
    let port = url
        .port_or_known_default()
        .ok_or_else(|| invalid_data("the socket URL has no port"))?;
    let tls = if url.scheme() == "wss" {
        let name = ServerName::try_from(host.clone())
            .map_err(|_| invalid_data("not a TLS server name"))?;
        Some((tls, name))
    } else {
        None
    };
    Ok(api_stream::connect(&host, port, tls).await?)
}

/// The WebSocket upgrade (RFC 6455 §4.1) of `stream` to `url`. Returns
/// what the API sent past its response.
async fn upgrade<S>(stream: &mut S, url: &Url) -> Result<BytesMut, RelayError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let key = generate_key();
    let host = match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        (None, _) => return Err(RelayError::BadApiHost),
    };
    let path = &url[Position::BeforePath..Position::AfterQuery];
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n"
    );
    let unreachable = RelayError::Unreachable;
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(unreachable)?;
    stream.flush().await.map_err(unreachable)?;

    let mut received = BytesMut::with_capacity(1024);
    loop {
        if stream.read_buf(&mut received).await.map_err(unreachable)? == 0 {
            return Err(unreachable(io::ErrorKind::UnexpectedEof.into()));
        }
        if let Some(head_len) = handshake_response(&received, &key)? {
            received.advance(head_len);
            return Ok(received);
        }
    }
}

/// Reads the API's answer to the upgrade asked for with `key` from the
/// start of `received`: the length of its head once it is whole and
/// accepts the upgrade, `None` while more of it is to come.
pub(crate) fn handshake_response(received: &[u8], key: &str) -> Result<Option<usize>, RelayError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(received) {
        Ok(httparse::Status::Complete(head_len)) => head_len,
        Ok(httparse::Status::Partial) if received.len() < MAX_RESPONSE_HEAD_BYTES => {
            return Ok(None);
        }
        Ok(httparse::Status::Partial) => {
            return Err(RelayError::Unreachable(invalid_data(
                "the handshake response is too long",
            )));
        }
        Err(_) => {
            return Err(RelayError::Unreachable(invalid_data(
                "not an HTTP response",
            )));
        }
    };
    check_upgrade(&response, key)?;
    Ok(Some(head_len))
}

/// Whether the API's response accepts the upgrade asked for with `key`.
fn check_upgrade(response: &httparse::Response<'_, '_>, key: &str) -> Result<(), RelayError> {
    let status = response.code.unwrap_or_default();
    if status != 101 {
        return Err(RelayError::Refused(
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
        ));
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
        Err(RelayError::Unreachable(invalid_data(
            "the API's handshake response does not accept the WebSocket",
        )))
    }
}

/// Whether a comma-separated header `value` holds `token` (any case).
pub(super) fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|byte| *byte == b',')
        .any(|item| item.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

fn invalid_data(why: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

/// How the handshake with the API ended, for the upstream metrics; `None`
/// when it never reached the network (an `API_HOST` that makes no socket
/// URL). A socket that opened counts as the `101` it was answered with.
pub fn outcome(result: &Result<UpstreamSocket, RelayError>) -> Option<UpstreamOutcome> {
    match result {
        Ok(_) => Some(UpstreamOutcome::Status(101)),
        Err(RelayError::Refused(status)) => Some(UpstreamOutcome::Status(status.as_u16())),
        Err(RelayError::Timeout) => Some(UpstreamOutcome::Timeout),
        Err(RelayError::Unreachable(_)) => Some(UpstreamOutcome::Unreachable),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::oauth::SignatureMethod;

    fn api(origin: &str) -> Url {
        Url::parse(origin).unwrap_or_else(|error| panic!("{origin}: {error}"))
    }

    #[test]
    fn sockets_follow_the_api_scheme() -> Result<(), RelayError> {
        let events = Target::Events;
        assert_eq!(
            events
                .socket_url(&api("https://api.clever-cloud.com"))?
                .as_str(),
            "wss://api.clever-cloud.com/v2/events/event-socket"
        );
        assert_eq!(
            events.socket_url(&api("http://127.0.0.1:8000/"))?.as_str(),
            "ws://127.0.0.1:8000/v2/events/event-socket"
        );
        let logs = Target::logs(
            "app_1-2".into(),
            Some("since=2024-01-01T00:00:00Z&filter=a%20b".into()),
        )?;
        assert_eq!(
            logs.socket_url(&api("https://api.clever-cloud.com"))?
                .as_str(),
            "wss://api.clever-cloud.com/v2/logs/logs-socket/app_1-2?since=2024-01-01T00:00:00Z&filter=a%20b"
        );
        Ok(())
    }

    #[test]
    fn the_signed_urls_are_the_official_clients() -> Result<(), RelayError> {
        let host = api("https://api.clever-cloud.com");
        assert_eq!(
            Target::Events.signed_url(&host)?.as_str(),
            "https://api.clever-cloud.com/v2/events/"
        );
        let logs = Target::logs("app_1".into(), Some("since=x".into()))?;
        assert_eq!(
            logs.signed_url(&host)?.as_str(),
            "https://api.clever-cloud.com/v2/logs/app_1"
        );
        Ok(())
    }

    #[test]
    fn app_ids_must_be_plain_segments() {
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a?b",
            "a%2Fb",
            "a b",
            "é",
            &"a".repeat(129),
        ] {
            assert!(
                Target::logs(bad.to_owned(), None).is_err(),
                "{bad:?} accepted"
            );
        }
        for good in ["app_00000000-0000-4000-8000-000000000000", "a.b", "x~y"] {
            assert!(
                Target::logs(good.to_owned(), None).is_ok(),
                "{good:?} refused"
            );
        }
    }

    #[test]
    fn the_auth_message_carries_a_plaintext_header() -> Result<(), serde_json::Error> {
        let consumer = Credentials::new("ck", "cs");
        let token = Credentials::new("tk", "ts&x");
        let url = api("https://api.clever-cloud.com/v2/events/");
        let message = auth_message(
            Signer::new(SignatureMethod::Plaintext),
            &url,
            &consumer,
            &token,
        );
        let value: serde_json::Value = serde_json::from_str(&message)?;
        assert_eq!(value["message_type"], "oauth");
        let authorization = value["authorization"].as_str().unwrap_or_default();
        assert!(authorization.starts_with("OAuth "), "{authorization}");
        assert!(
            authorization.contains("oauth_token=\"tk\""),
            "{authorization}"
        );
        assert!(
            authorization.contains("oauth_signature=\"cs%26ts%2526x\""),
            "{authorization}"
        );
        Ok(())
    }

    /// Plays the API's side of a handshake on `stream`: reads the request,
    /// answers with what `respond` makes of it and of its key, and returns
    /// the request's head.
    async fn answer_handshake<S>(stream: &mut S, respond: impl Fn(&str) -> Vec<u8>) -> String
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut request = Vec::new();
        while !request.ends_with(b"\r\n\r\n") {
            let mut byte = [0];
            assert!(
                matches!(stream.read(&mut byte).await, Ok(1)),
                "the request ended early"
            );
            request.push(byte[0]);
        }
        let request = String::from_utf8_lossy(&request).into_owned();
        let key = request
            .lines()
            .find_map(|line| line.strip_prefix("Sec-WebSocket-Key: "))
            .unwrap_or_default();
        assert!(stream.write_all(&respond(key)).await.is_ok());
        request
    }

    /// A `101` accepting `key`, followed by `extra` bytes.
    fn switching(key: &str, extra: &[u8]) -> Vec<u8> {
        let mut response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n\r\n",
            derive_accept_key(key.as_bytes())
        )
        .into_bytes();
        response.extend_from_slice(extra);
        response
    }

    fn socket_ready_frame() -> BytesMut {
        let mut frame = BytesMut::new();
        let ready = br#"{"message_type":"socket_ready"}"#;
        frame::encode(&mut frame, true, Opcode::Text, ready, None);
        frame
    }

    #[tokio::test]
    async fn the_upgrade_keeps_what_the_api_sent_past_its_response() {
        let (mut ours, mut theirs) = tokio::io::duplex(4096);
        let url = api("ws://127.0.0.1:8000/v2/logs/logs-socket/app_1?since=x");
        let ready = socket_ready_frame();
        let respond = |key: &str| switching(key, &ready);
        let (upgraded, request) = tokio::join!(
            upgrade(&mut ours, &url),
            answer_handshake(&mut theirs, respond)
        );

        assert_eq!(upgraded.ok(), Some(ready.clone()));
        assert!(
            request.starts_with("GET /v2/logs/logs-socket/app_1?since=x HTTP/1.1\r\n"),
            "{request}"
        );
        for header in [
            "Host: 127.0.0.1:8000",
            "Upgrade: websocket",
            "Sec-WebSocket-Version: 13",
        ] {
            assert!(request.contains(header), "{header} in {request}");
        }
    }

    #[tokio::test]
    async fn a_refusal_or_a_wrong_accept_key_fails_the_upgrade() {
        let url = api("ws://127.0.0.1:8000/v2/events/event-socket");
        let (mut ours, mut theirs) = tokio::io::duplex(4096);
        let refuse =
            |_: &str| b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n".to_vec();
        let (refused, _) = tokio::join!(
            upgrade(&mut ours, &url),
            answer_handshake(&mut theirs, refuse)
        );
        assert!(
            matches!(
                refused,
                Err(RelayError::Refused(StatusCode::SERVICE_UNAVAILABLE))
            ),
            "{refused:?}"
        );

        let (mut ours, mut theirs) = tokio::io::duplex(4096);
        let wrong_key = |_: &str| switching("another key", b"");
        let (wrong, _) = tokio::join!(
            upgrade(&mut ours, &url),
            answer_handshake(&mut theirs, wrong_key)
        );
        assert!(
            matches!(wrong, Err(RelayError::Unreachable(_))),
            "{wrong:?}"
        );

        let (mut ours, mut theirs) = tokio::io::duplex(4096);
        let garbage = |_: &str| b"SSH-2.0-OpenSSH\r\n\r\n".to_vec();
        let (garbled, _) = tokio::join!(
            upgrade(&mut ours, &url),
            answer_handshake(&mut theirs, garbage)
        );
        assert!(
            matches!(garbled, Err(RelayError::Unreachable(_))),
            "{garbled:?}"
        );
    }

    #[tokio::test]
    async fn wss_sockets_are_opened_over_tls() -> Result<(), Box<dyn std::error::Error>> {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivatePkcs8KeyDer::from(signing_key.serialize_der()).into(),
            )?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone())?;
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let ready = socket_ready_frame();
        let api_side = {
            let ready = ready.clone();
            async move {
                let (tcp, _) = listener.accept().await?;
                let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
                let mut tls = acceptor.accept(tcp).await?;
                answer_handshake(&mut tls, |key| switching(key, &ready)).await;
                tls.flush().await?;
                Ok::<_, io::Error>(tls)
            }
        };
        let url = api(&format!("wss://localhost:{port}/v2/events/event-socket"));
        let our_side = async {
            let mut stream = open_stream(&url, &TlsConnector::from(Arc::new(client)))
                .await
                .map_err(RelayError::Unreachable)?;
            let read_ahead = upgrade(&mut stream, &url).await?;
            Ok::<_, RelayError>((stream.is_tls(), read_ahead))
        };
        let (ours, theirs) = tokio::join!(our_side, api_side);
        let (over_tls, read_ahead) = ours?;
        drop(theirs?);

        assert!(over_tls);
        assert_eq!(read_ahead, ready);
        Ok(())
    }
}
