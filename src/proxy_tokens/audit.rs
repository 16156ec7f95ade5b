//! What is kept of each call made with a proxy token: its audit line and
//! its entry among the token's recent calls. Pure: no I/O.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Calls kept per token.
pub const KEPT_CALLS: usize = 50;

/// One call made with a token, as its recent calls show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    /// When the call came.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Its method.
    pub method: String,
    /// Its path, redacted by [`redact_path`], without the query.
    pub path: String,
    /// The status it got (from the API, or this server's refusal).
    pub status: u16,
    /// The client's address (the trusted-proxy-aware one).
    pub client: Option<IpAddr>,
}

/// The path of a call as logs and the recent calls show it: ids are kept,
/// what follows a `tokens` segment (a token, in `/v2/self/tokens/{token}`)
/// is replaced by `{token}`, and the query (which may hold secrets) is
/// dropped. Long paths are cut.
pub fn redact_path(path: &str) -> String {
    const MAX_LEN: usize = 300;
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let mut redacted = String::with_capacity(path.len().min(MAX_LEN));
    let mut after_tokens = false;
    for (index, segment) in path.split('/').enumerate() {
        if index > 0 {
            redacted.push('/');
        }
        if after_tokens && !segment.is_empty() {
            redacted.push_str("{token}");
        } else {
            redacted.push_str(segment);
        }
        // As the API may read it: percent-decoded, path parameters off.
        let decoded = percent_encoding::percent_decode_str(segment).decode_utf8_lossy();
        let name = decoded.split(';').next().unwrap_or_default();
        after_tokens = name.eq_ignore_ascii_case("tokens");
        if redacted.len() > MAX_LEN {
            let mut cut = MAX_LEN;
            while !redacted.is_char_boundary(cut) {
                cut -= 1;
            }
            redacted.truncate(cut);
            redacted.push('…');
            break;
        }
    }
    redacted
}

/// The path of a request to this server as audit lines show it: the API's
/// path for a proxied call (without the proxy's `/api`, as the proxy
/// audits it), the relay's own path otherwise, redacted by [`redact_path`].
pub fn audit_path(request_path: &str) -> String {
    let api_path = request_path
        .strip_prefix("/api")
        .filter(|rest| rest.starts_with('/'));
    redact_path(api_path.unwrap_or(request_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_segments_are_redacted_and_ids_kept() {
        assert_eq!(
            redact_path("/v2/self/tokens/abc123secret"),
            "/v2/self/tokens/{token}"
        );
        assert_eq!(
            redact_path("/v2/organisations/orga_1/applications/app_1/instances"),
            "/v2/organisations/orga_1/applications/app_1/instances"
        );
        assert_eq!(
            redact_path("/v2/self/Tokens/x/more"),
            "/v2/self/Tokens/{token}/more"
        );
        assert_eq!(redact_path("/v2/self/tokens"), "/v2/self/tokens");
        assert_eq!(
            redact_path("/v2/self/%74okens/secret"),
            "/v2/self/%74okens/{token}"
        );
        assert_eq!(
            redact_path("/v2/self/tokens;x/secret"),
            "/v2/self/tokens;x/{token}"
        );
    }

    #[test]
    fn a_proxied_path_is_shown_as_the_api_path() {
        assert_eq!(
            audit_path("/api/v2/self/tokens/abc"),
            "/v2/self/tokens/{token}"
        );
        assert_eq!(audit_path("/ws/logs/app_1?since=x"), "/ws/logs/app_1");
        assert_eq!(audit_path("/apix/v2"), "/apix/v2");
    }

    #[test]
    fn the_query_never_shows() {
        assert_eq!(redact_path("/v2/self?secret=1#x"), "/v2/self");
    }

    #[test]
    fn long_paths_are_cut() {
        let long = format!("/v2/{}", "é".repeat(400));
        let redacted = redact_path(&long);
        assert!(redacted.len() <= 304, "{}", redacted.len());
        assert!(redacted.ends_with('…'));
    }
}
