//! Which of the API's sockets a relay opens, which URL its OAuth message
//! signs (the official clients'), and that message. Pure: no I/O.

use serde_json::json;
use url::Url;

use super::RelayError;
use crate::oauth::signature::Request;
use crate::oauth::{Credentials, Signer};

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

#[cfg(test)]
mod tests {
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
}
