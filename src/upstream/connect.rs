//! Connections to the Clever Cloud API, for the proxy's pool and the
//! relays: TCP with `TCP_NODELAY`, and TLS for an `https` API (rustls on the
//! ring provider, with the web's root certificates, as reqwest's
//! `rustls-tls`). The API's addresses are resolved once per
//! [`DNS_LIFETIME`], not at every connection.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

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

/// How long resolved addresses are used before resolving again. tokio's
/// resolver (the system's `getaddrinfo`) does not give the records' TTL,
/// and a resolver crate that does would be a second DNS stack to maintain
/// for one host name: 30 s follows a change of the API's addresses soon
/// enough, and spares a busy pool a resolution per connection.
pub const DNS_LIFETIME: Duration = Duration::from_secs(30);

/// Addresses resolved recently, per host and port.
#[derive(Debug, Default)]
pub struct DnsCache {
    entries: Mutex<HashMap<(String, u16), Resolved>>,
}

#[derive(Debug)]
struct Resolved {
    addresses: Arc<[SocketAddr]>,
    until: tokio::time::Instant,
}

impl DnsCache {
    /// The addresses of `host:port`: an IP address as it is, else those
    /// resolved less than [`DNS_LIFETIME`] ago, else resolved now.
    pub async fn lookup(&self, host: &str, port: u16) -> io::Result<Arc<[SocketAddr]>> {
        // `[::1]` in a URL's host.
        if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
            return Ok(Arc::new([SocketAddr::new(ip, port)]));
        }
        let key = (host.to_owned(), port);
        let now = tokio::time::Instant::now();
        if let Some(resolved) = self.lock().get(&key)
            && resolved.until > now
        {
            return Ok(Arc::clone(&resolved.addresses));
        }
        let addresses: Arc<[SocketAddr]> = tokio::net::lookup_host((host, port)).await?.collect();
        if addresses.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "the API's host name has no address",
            ));
        }
        self.lock().insert(
            key,
            Resolved {
                addresses: Arc::clone(&addresses),
                until: now + DNS_LIFETIME,
            },
        );
        Ok(addresses)
    }

    /// Forgets `host:port`'s addresses, after none of them took a
    /// connection: they may have changed.
    pub fn forget(&self, host: &str, port: u16) {
        self.lock().remove(&(host.to_owned(), port));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u16), Resolved>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The process's cache: every connection goes to the one `API_HOST`.
fn dns() -> &'static DnsCache {
    static CACHE: OnceLock<DnsCache> = OnceLock::new();
    CACHE.get_or_init(DnsCache::default)
}

/// A TCP connection to one of `host:port`'s addresses, tried in turn.
async fn connect_tcp(host: &str, port: u16) -> io::Result<TcpStream> {
    let addresses = dns().lookup(host, port).await?;
    let mut last_error = None;
    for address in addresses.iter() {
        match TcpStream::connect(address).await {
            Ok(stream) => return Ok(stream),
            Err(error) => last_error = Some(error),
        }
    }
    dns().forget(host, port);
    Err(last_error.unwrap_or_else(|| io::Error::from(io::ErrorKind::NotFound)))
}

/// A connection to `host:port`, over TLS with the given connector and
/// server name when there is one.
pub async fn connect(
    host: &str,
    port: u16,
    tls: Option<(&TlsConnector, ServerName<'static>)>,
) -> Result<ApiStream, ConnectError> {
    let tcp = connect_tcp(host, port).await.map_err(ConnectError::Tcp)?;
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
    #[cfg(test)]
    pub(crate) fn is_tls(&self) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn names_are_resolved_once_per_lifetime_and_again_once_forgotten() -> io::Result<()> {
        let cache = DnsCache::default();

        let first = cache.lookup("localhost", 8080).await?;
        let second = cache.lookup("localhost", 8080).await?;
        cache.forget("localhost", 8080);
        let third = cache.lookup("localhost", 8080).await?;

        assert!(first.iter().all(|address| address.ip().is_loopback()));
        assert!(
            Arc::ptr_eq(&first, &second),
            "the second came from the cache"
        );
        assert!(!Arc::ptr_eq(&second, &third), "forgotten, resolved again");
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn resolved_names_expire_after_their_lifetime() -> io::Result<()> {
        let cache = DnsCache::default();

        let first = cache.lookup("localhost", 443).await?;
        tokio::time::advance(DNS_LIFETIME + Duration::from_secs(1)).await;
        let later = cache.lookup("localhost", 443).await?;

        assert!(!Arc::ptr_eq(&first, &later));
        Ok(())
    }

    #[tokio::test]
    async fn ip_addresses_are_not_resolved() -> io::Result<()> {
        let cache = DnsCache::default();

        let v6 = cache.lookup("[::1]", 80).await?;
        let v4 = cache.lookup("127.0.0.1", 80).await?;

        assert_eq!(&v6[..], &["[::1]:80".parse().map_err(io::Error::other)?]);
        assert_eq!(
            &v4[..],
            &["127.0.0.1:80".parse().map_err(io::Error::other)?]
        );
        assert!(cache.lock().is_empty());
        Ok(())
    }
}
