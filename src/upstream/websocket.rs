//! A WebSocket to the API, as a client: connect (TCP, TLS for `wss://`),
//! send the upgrade, read the answer. Done here rather than by a WebSocket
//! library so that the relay's pump gets the raw stream, with whatever the
//! API sent right after its answer.

use std::io;

use bytes::{Buf as _, BytesMut};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use url::{Host, Url};

use super::connect::{self, ApiStream};
use super::handshake::{HandshakeError, handshake_response, upgrade_request};

/// An upgraded connection to the API's socket.
#[derive(Debug)]
pub struct WebSocket {
    /// The connection, over TLS for a `wss://` socket.
    pub stream: ApiStream,
    /// What the API sent past its handshake answer, read along with it.
    pub read_ahead: BytesMut,
}

/// Opens the socket at `url` (`ws://` or `wss://`) and upgrades it.
pub async fn open(url: &Url) -> Result<WebSocket, HandshakeError> {
    let mut stream = open_stream(url, &connect::tls_connector())
        .await
        .map_err(HandshakeError::Unreachable)?;
    let read_ahead = upgrade(&mut stream, url).await?;
    Ok(WebSocket { stream, read_ahead })
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
    Ok(connect::connect(&host, port, tls).await?)
}

/// The WebSocket upgrade of `stream` to `url`. Returns what the API sent
/// past its answer.
async fn upgrade<S>(stream: &mut S, url: &Url) -> Result<BytesMut, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let key = generate_key();
    let request = upgrade_request(url, &key)?;
    let unreachable = HandshakeError::Unreachable;
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

fn invalid_data(why: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

    use super::*;

    fn api(origin: &str) -> Url {
        Url::parse(origin).unwrap_or_else(|error| panic!("{origin}: {error}"))
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

    /// A text frame from the API, unmasked: `{"message_type":"socket_ready"}`.
    fn socket_ready_frame() -> BytesMut {
        let ready = br#"{"message_type":"socket_ready"}"#;
        let mut frame = BytesMut::from(&[0x81, u8::try_from(ready.len()).unwrap_or(0)][..]);
        frame.extend_from_slice(ready);
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
            matches!(refused, Err(HandshakeError::Refused(503))),
            "{refused:?}"
        );

        let (mut ours, mut theirs) = tokio::io::duplex(4096);
        let wrong_key = |_: &str| switching("another key", b"");
        let (wrong, _) = tokio::join!(
            upgrade(&mut ours, &url),
            answer_handshake(&mut theirs, wrong_key)
        );
        assert!(
            matches!(wrong, Err(HandshakeError::Unreachable(_))),
            "{wrong:?}"
        );

        let (mut ours, theirs) = tokio::io::duplex(4096);
        drop(theirs);
        let closed = upgrade(&mut ours, &url).await;
        assert!(matches!(closed, Err(HandshakeError::Unreachable(_))));
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
                .map_err(HandshakeError::Unreachable)?;
            let read_ahead = upgrade(&mut stream, &url).await?;
            Ok::<_, HandshakeError>((stream.is_tls(), read_ahead))
        };
        let (ours, theirs) = tokio::join!(our_side, api_side);
        let (over_tls, read_ahead) = ours?;
        drop(theirs?);

        assert!(over_tls);
        assert_eq!(read_ahead, ready);
        Ok(())
    }
}
