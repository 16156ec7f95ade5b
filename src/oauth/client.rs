//! The API's three OAuth endpoints: request token, authorize, access token.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tracing::instrument;
use url::Url;

use bytes::Bytes;

use super::grant::ApiUser;
use super::signature::{Credentials, Request, Signer};
use crate::metrics::{Metrics, UpstreamOutcome};
use crate::secret::Secret;

/// Why a token call failed, in terms the person can act on.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// The API refused the consumer (401/403 from `request_token`).
    #[error("the Clever Cloud API refused the consumer key or secret (HTTP {0})")]
    ConsumerRejected(u16),
    /// The API refused the request token or verifier (`access_token`).
    #[error("the Clever Cloud API refused the authorization (HTTP {0})")]
    VerifierRejected(u16),
    /// The API answered with an unexpected status.
    #[error("the Clever Cloud API answered HTTP {0}")]
    UnexpectedStatus(u16),
    /// The API could not be reached.
    #[error("the Clever Cloud API could not be reached")]
    Unreachable(#[source] reqwest::Error),
    /// The API took too long.
    #[error("the Clever Cloud API did not answer in time")]
    Timeout(#[source] reqwest::Error),
    /// The answer was not the form-encoded tokens expected.
    #[error("the Clever Cloud API's answer could not be understood")]
    Malformed,
}

impl From<reqwest::Error> for OAuthError {
    fn from(error: reqwest::Error) -> Self {
        // The URL can hold a token (the revocation's): errors never carry it.
        let error = error.without_url();
        if error.is_timeout() {
            Self::Timeout(error)
        } else {
            Self::Unreachable(error)
        }
    }
}

/// A request token, before the person authorizes it.
#[derive(Clone)]
pub struct RequestToken {
    /// `oauth_token`.
    pub token: String,
    /// `oauth_token_secret`.
    pub secret: Secret,
}

/// An access token: what signs API calls.
#[derive(Clone)]
pub struct AccessToken {
    /// `oauth_token`.
    pub token: String,
    /// `oauth_token_secret`.
    pub secret: Secret,
    /// `expiration_date`, ISO 8601, when the API gives it.
    pub expiration_date: Option<String>,
}

// Tokens are secrets: their `Debug` shows nothing of them.
impl std::fmt::Debug for RequestToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequestToken([redacted])")
    }
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &"[redacted]")
            .field("expiration_date", &self.expiration_date)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenAnswer {
    oauth_token: String,
    oauth_token_secret: Secret,
    expiration_date: Option<String>,
}

/// Calls the OAuth endpoints under `API_HOST/v2/oauth/`.
#[derive(Clone, Debug)]
pub struct OAuthClient {
    http: reqwest::Client,
    api_host: Url,
    signer: Signer,
    /// Where every call is counted (upstreams `oauth` and `identity`).
    metrics: Arc<Metrics>,
}

impl OAuthClient {
    /// A client for `api_host`, with its own time-outs and no redirects,
    /// counting its calls in `metrics`.
    pub fn new(
        api_host: Url,
        signer: Signer,
        (connect_timeout, call_timeout): (Duration, Duration),
        metrics: Arc<Metrics>,
    ) -> reqwest::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .timeout(call_timeout)
            // Following redirects would let the API's answer send our signed
            // request elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            http,
            api_host,
            signer,
            metrics,
        })
    }

    fn endpoint(&self, name: &str) -> Url {
        let mut url = self.api_host.clone();
        url.set_path(&format!("/v2/oauth/{name}"));
        url
    }

    /// Where to send the browser to authorize `request_token`.
    pub fn authorize_url(&self, request_token: &str) -> Url {
        let mut url = self.endpoint("authorize");
        url.query_pairs_mut()
            .append_pair("oauth_token", request_token);
        url
    }

    /// Asks for a request token, signed with the consumer alone.
    #[instrument(skip_all, fields(consumer_key = %consumer.key))]
    pub async fn request_token(
        &self,
        consumer: &Credentials,
        callback: &Url,
    ) -> Result<RequestToken, OAuthError> {
        let url = self.endpoint("request_token");
        let request = Request {
            method: "POST",
            url: &url,
            form_body: None,
            consumer,
            token: None,
            callback: Some(callback.as_str()),
            verifier: None,
        };
        let answer = self
            .token_call(&request)
            .await
            .map_err(|status| match status {
                Status::Refused(code) => OAuthError::ConsumerRejected(code),
                Status::Other(error) => error,
            })?;
        Ok(RequestToken {
            token: answer.oauth_token,
            secret: answer.oauth_token_secret,
        })
    }

    /// Exchanges an authorized request token and its verifier for an access
    /// token.
    #[instrument(skip_all, fields(consumer_key = %consumer.key))]
    pub async fn access_token(
        &self,
        consumer: &Credentials,
        request_token: &Credentials,
        verifier: &Secret,
    ) -> Result<AccessToken, OAuthError> {
        let url = self.endpoint("access_token");
        let request = Request {
            method: "POST",
            url: &url,
            form_body: None,
            consumer,
            token: Some(request_token),
            callback: None,
            verifier: Some(verifier),
        };
        let answer = self
            .token_call(&request)
            .await
            .map_err(|status| match status {
                Status::Refused(code) => OAuthError::VerifierRejected(code),
                Status::Other(error) => error,
            })?;
        Ok(AccessToken {
            token: answer.oauth_token,
            secret: answer.oauth_token_secret,
            expiration_date: answer.expiration_date,
        })
    }

    /// Asks the API whom an access token belongs to (`GET /v2/self`, signed
    /// with it). `None` when the API refuses to say (a consumer without the
    /// right to read the account).
    #[instrument(skip_all, fields(consumer_key = %consumer.key))]
    pub async fn whoami(
        &self,
        consumer: &Credentials,
        access_token: &Credentials,
    ) -> Result<Option<ApiUser>, OAuthError> {
        let mut url = self.api_host.clone();
        url.set_path("/v2/self");
        match self.call_as("GET", &url, consumer, access_token).await {
            Ok(body) => parse_user(&body).map(Some).ok_or(OAuthError::Malformed),
            Err(Status::Refused(_)) => Ok(None),
            Err(Status::Other(error)) => Err(error),
        }
    }

    /// Revokes an access token at the API (`DELETE /v2/self/tokens/{token}`,
    /// signed with that token). The URL holds the token, as the API wants:
    /// it is never logged, and errors carry no URL.
    #[instrument(skip_all, fields(consumer_key = %consumer.key))]
    pub async fn revoke_access_token(
        &self,
        consumer: &Credentials,
        access_token: &Credentials,
    ) -> Result<(), OAuthError> {
        let mut url = self.api_host.clone();
        url.path_segments_mut()
            .map_err(|()| OAuthError::Malformed)?
            .clear()
            .extend(["v2", "self", "tokens", access_token.key.as_str()]);
        match self.call_as("DELETE", &url, consumer, access_token).await {
            Ok(_) => Ok(()),
            Err(Status::Refused(code)) => Err(OAuthError::UnexpectedStatus(code)),
            Err(Status::Other(error)) => Err(error),
        }
    }

    /// Calls the API about the owner of `access_token`, signed with it.
    async fn call_as(
        &self,
        method: &str,
        url: &Url,
        consumer: &Credentials,
        access_token: &Credentials,
    ) -> Result<Bytes, Status> {
        let request = Request {
            method,
            url,
            form_body: None,
            consumer,
            token: Some(access_token),
            callback: None,
            verifier: None,
        };
        self.call(&request, IDENTITY).await
    }

    async fn token_call(&self, request: &Request<'_>) -> Result<TokenAnswer, Status> {
        let body = self.call(request, UPSTREAM).await?;
        parse_token_answer(&body).ok_or(Status::Other(OAuthError::Malformed))
    }

    async fn call(&self, request: &Request<'_>, upstream: &'static str) -> Result<Bytes, Status> {
        crate::upstream::timed(&self.metrics, upstream, self.send(request), |result| {
            Some(outcome(result))
        })
        .await
    }

    async fn send(&self, request: &Request<'_>) -> Result<Bytes, Status> {
        let method = reqwest::Method::from_bytes(request.method.as_bytes())
            .map_err(|_| Status::Other(OAuthError::Malformed))?;
        let mut builder = self
            .http
            .request(method, request.url.clone())
            .header(
                reqwest::header::AUTHORIZATION,
                self.signer.authorization(request),
            )
            .header(reqwest::header::ACCEPT, "application/json");
        if request.method == "POST" {
            builder = builder.header(reqwest::header::CONTENT_LENGTH, 0);
        }
        let response = builder
            .send()
            .await
            .map_err(|error| Status::Other(error.into()))?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(Status::Refused(status.as_u16()));
        }
        if !status.is_success() {
            return Err(Status::Other(OAuthError::UnexpectedStatus(status.as_u16())));
        }
        response
            .bytes()
            .await
            .map_err(|error| Status::Other(error.into()))
    }
}

enum Status {
    Refused(u16),
    Other(OAuthError),
}

/// The metrics' name for the token endpoints.
const UPSTREAM: &str = "oauth";
/// The metrics' name for the calls about the token's owner.
const IDENTITY: &str = "identity";

fn outcome(result: &Result<Bytes, Status>) -> UpstreamOutcome {
    match result {
        Ok(_) => UpstreamOutcome::Status(200),
        Err(Status::Refused(code)) => UpstreamOutcome::Status(*code),
        Err(Status::Other(
            OAuthError::UnexpectedStatus(code)
            | OAuthError::ConsumerRejected(code)
            | OAuthError::VerifierRejected(code),
        )) => UpstreamOutcome::Status(*code),
        Err(Status::Other(OAuthError::Timeout(_))) => UpstreamOutcome::Timeout,
        Err(Status::Other(OAuthError::Unreachable(_))) => UpstreamOutcome::Unreachable,
        Err(Status::Other(OAuthError::Malformed)) => UpstreamOutcome::Invalid,
    }
}

/// Reads the `id`, `name` and `email` of a `/v2/self` answer.
fn parse_user(body: &[u8]) -> Option<ApiUser> {
    #[derive(Deserialize)]
    struct SelfAnswer {
        id: String,
        name: Option<String>,
        email: Option<String>,
    }
    let answer: SelfAnswer = serde_json::from_slice(body).ok()?;
    (!answer.id.is_empty()).then_some(ApiUser {
        id: answer.id,
        name: answer.name,
        email: answer.email,
    })
}

/// Reads `oauth_token=…&oauth_token_secret=…[&expiration_date=…]`.
fn parse_token_answer(body: &[u8]) -> Option<TokenAnswer> {
    let answer: TokenAnswer = serde_urlencoded::from_bytes(body).ok()?;
    let usable = !answer.oauth_token.is_empty() && !answer.oauth_token_secret.expose().is_empty();
    usable.then_some(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_answers_are_parsed_or_refused() {
        let good = parse_token_answer(
            b"oauth_token=t&oauth_token_secret=s%26x&oauth_callback_confirmed=true",
        );
        assert!(good.is_some_and(
            |answer| answer.oauth_token == "t" && answer.oauth_token_secret.expose() == "s&x"
        ));

        let access = parse_token_answer(
            b"oauth_token=t&oauth_token_secret=s&expiration_date=2027-02-23T00%3A00%3A00Z",
        );
        assert_eq!(
            access.and_then(|answer| answer.expiration_date).as_deref(),
            Some("2027-02-23T00:00:00Z")
        );

        assert!(parse_token_answer(b"<html>oops").is_none());
        assert!(parse_token_answer(b"oauth_token=&oauth_token_secret=s").is_none());
        assert!(parse_token_answer(b"oauth_token=t").is_none());
    }

    #[test]
    fn a_self_answer_gives_the_id_name_and_email() {
        let user =
            parse_user(br#"{"id":"user_1","name":"Ada","email":"ada@example.com","lang":"EN"}"#);
        assert_eq!(
            user,
            Some(ApiUser {
                id: "user_1".to_owned(),
                name: Some("Ada".to_owned()),
                email: Some("ada@example.com".to_owned()),
            })
        );
        assert_eq!(
            parse_user(br#"{"id":"user_2"}"#).map(|u| u.name),
            Some(None)
        );
        assert!(parse_user(br#"{"id":""}"#).is_none());
        assert!(parse_user(b"<html>").is_none());
    }
}
