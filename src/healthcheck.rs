//! `oauth-consumer-server healthcheck`: asks the running server's `/health`
//! on loopback and exits 0 or 1, for container health checks in images
//! that have no curl or wget.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use crate::config::DEFAULT_PORT;

/// The subcommand's name.
pub const SUBCOMMAND: &str = "healthcheck";

/// Time allowed to connect, and then for each read or write.
const TIMEOUT: Duration = Duration::from_secs(3);

/// Why the server does not look healthy.
#[derive(Debug, thiserror::Error)]
pub enum HealthcheckError {
    /// `PORT` is not a port number.
    #[error("PORT must be a port number")]
    BadPort,
    /// Connecting, writing or reading failed.
    #[error("cannot ask {0}: {1}")]
    Io(SocketAddr, #[source] std::io::Error),
    /// The server answered, but not 200.
    #[error("/health answered {0:?}")]
    Unhealthy(String),
}

/// Runs the check against `127.0.0.1:$PORT` and reports on stderr.
pub fn run() -> ExitCode {
    let outcome = port_from_env()
        .and_then(|port| check(SocketAddr::from((Ipv4Addr::LOCALHOST, port)), TIMEOUT));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("unhealthy: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The server's port: `PORT`, or the server's default.
fn port_from_env() -> Result<u16, HealthcheckError> {
    match std::env::var("PORT") {
        Ok(port) => port.trim().parse().map_err(|_| HealthcheckError::BadPort),
        Err(_) => Ok(DEFAULT_PORT),
    }
}

/// `GET /health` on `addr`: `Ok` when it answers 200.
pub fn check(addr: SocketAddr, timeout: Duration) -> Result<(), HealthcheckError> {
    let io = |error| HealthcheckError::Io(addr, error);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(io)?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    stream
        .write_all(
            format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .map_err(io)?;
    // The status line is all we need; 64 bytes hold it.
    let mut head = [0_u8; 64];
    let mut filled = 0;
    while filled < head.len() {
        let read = stream.read(&mut head[filled..]).map_err(io)?;
        if read == 0 {
            break;
        }
        filled += read;
        if head[..filled].contains(&b'\n') {
            break;
        }
    }
    let status_line = String::from_utf8_lossy(&head[..filled]);
    let status_line = status_line.lines().next().unwrap_or_default();
    let status = status_line.split(' ').nth(1);
    if status == Some("200") {
        Ok(())
    } else {
        Err(HealthcheckError::Unhealthy(status_line.to_owned()))
    }
}
