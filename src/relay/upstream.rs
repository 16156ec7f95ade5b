//! The API's side of a relay: its socket, opened, upgraded and sent the
//! OAuth message, all within the connect time-out.

use bytes::BytesMut;
use tokio::io::AsyncWriteExt as _;

use super::RelayError;
use super::frame::{self, Opcode};
use super::target::{Target, auth_message};
use crate::config::Config;
use crate::metrics::UpstreamOutcome;
use crate::oauth::{Credentials, Signer};
use crate::upstream::handshake::HandshakeError;
use crate::upstream::websocket::{self, WebSocket};

impl From<HandshakeError> for RelayError {
    fn from(error: HandshakeError) -> Self {
        match error {
            HandshakeError::Unreachable(error) => Self::Unreachable(error),
            HandshakeError::Refused(status) => Self::Refused(
                axum::http::StatusCode::from_u16(status)
                    .unwrap_or(axum::http::StatusCode::BAD_GATEWAY),
            ),
            HandshakeError::BadUrl => Self::BadApiHost,
        }
    }
}

/// Connects to the API's socket for `target`, upgrades it to a WebSocket
/// and sends the OAuth message, all within the connect time-out.
#[tracing::instrument(skip_all, fields(stream = target.kind()))]
pub async fn connect(
    config: &Config,
    target: &Target,
    consumer: &Credentials,
    token: &Credentials,
) -> Result<WebSocket, RelayError> {
    let url = target.socket_url(&config.api_host)?;
    let auth = auth_message(
        Signer::new(config.oauth_signature_method),
        &target.signed_url(&config.api_host)?,
        consumer,
        token,
    );
    let handshake = async {
        let mut socket = websocket::open(&url).await?;
        let mut message = BytesMut::new();
        frame::encode(
            &mut message,
            true,
            Opcode::Text,
            auth.as_bytes(),
            Some(rand::random()),
        );
        socket
            .stream
            .write_all(&message)
            .await
            .map_err(RelayError::Unreachable)?;
        socket
            .stream
            .flush()
            .await
            .map_err(RelayError::Unreachable)?;
        Ok(socket)
    };
    tokio::time::timeout(config.api_connect_timeout(), handshake)
        .await
        .unwrap_or(Err(RelayError::Timeout))
}

/// How the handshake with the API ended, for the upstream metrics; `None`
/// when it never reached the network (an `API_HOST` that makes no socket
/// URL). A socket that opened counts as the `101` it was answered with.
pub fn outcome(result: &Result<WebSocket, RelayError>) -> Option<UpstreamOutcome> {
    match result {
        Ok(_) => Some(UpstreamOutcome::Status(101)),
        Err(RelayError::Refused(status)) => Some(UpstreamOutcome::Status(status.as_u16())),
        Err(RelayError::Timeout) => Some(UpstreamOutcome::Timeout),
        Err(RelayError::Unreachable(_)) => Some(UpstreamOutcome::Unreachable),
        Err(_) => None,
    }
}
