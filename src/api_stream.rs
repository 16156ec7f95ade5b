//! Connections to the Clever Cloud API, for the proxy's pool and the
//! relays: TCP with `TCP_NODELAY`, and TLS for an `https` API (rustls on the
//! ring provider, with the web's root certificates, as reqwest's
//! `rustls-tls`).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Why a connection to the API could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The TCP connection failed (refused, unreachable, reset).
    #[error("cannot connect to the API")]
    Tcp(#[source] io::Error),
    /// The TLS handshake failed (certificate, protocol).
    #[error("the TLS handshake with the API failed")]
    Tls(#[source] io::Error),
}

impl From<ConnectError> for io::Error {
    fn from(error: ConnectError) -> Self {
        match error {
            ConnectError::Tcp(error) | ConnectError::Tls(error) => error,
        }
    }
}

/// TLS to the API: the web's root certificates on ring, HTTP/1.1 (the
/// proxy's requests and the relays' upgrades), configured once.
pub fn tls_connector() -> TlsConnector {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let roots =
            rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map(|builder| builder.with_root_certificates(roots).with_no_client_auth());
        let mut config = match config {
            Ok(config) => config,
            // ring supports the default versions; this is not reached.
            Err(_) => rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    });
    TlsConnector::from(Arc::clone(config))
}

/// A connection to `host:port`, over TLS with the given connector and
/// server name when there is one.
pub async fn connect(
    host: &str,
    port: u16,
    tls: Option<(&TlsConnector, ServerName<'static>)>,
) -> Result<ApiStream, ConnectError> {
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(ConnectError::Tcp)?;
    // A request's head and a small body, or a frame, go out in one write;
    // without this, Nagle would hold a second small write for the API's ACK.
    tcp.set_nodelay(true).map_err(ConnectError::Tcp)?;
    match tls {
        None => Ok(ApiStream::Plain(tcp)),
        Some((connector, name)) => connector
            .connect(name, tcp)
            .await
            .map(|tls| ApiStream::Tls(Box::new(tls)))
            .map_err(ConnectError::Tls),
    }
}

/// A connection to the API, plain or TLS.
#[derive(Debug)]
pub enum ApiStream {
    /// Plain TCP, for an `http` API.
    Plain(TcpStream),
    /// TLS, for an `https` API.
    Tls(Box<TlsStream<TcpStream>>),
}

impl ApiStream {
    /// Whether the connection is over TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, Self::Tls(_))
    }
}

impl AsyncRead for ApiStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ApiStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(stream) => stream.is_write_vectored(),
            Self::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}
