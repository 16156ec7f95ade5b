//! The fake API driven by hand, without the application: the OAuth dance,
//! the signature checks on API calls, the API endpoints and the modes.

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION, SET_COOKIE};
use reqwest::{Response, StatusCode};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::support::fake_api::verify::{
    Params, RequestParts, SignatureMethod, TestCredentials, parse_authorization_header, parse_form,
    percent_encode, sign_for_tests,
};
use crate::support::fake_api::{FAKE_USER_ID, FakeApi, IssuedToken, Mode};

const CALLBACK: &str = "http://127.0.0.1:9/auth/callback?from=fake";

/// A hand-signing client for the fake.
struct Caller<'a> {
    fake: &'a FakeApi,
    http: reqwest::Client,
}

impl<'a> Caller<'a> {
    fn new(fake: &'a FakeApi) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("build the HTTP client");
        Self { fake, http }
    }

    /// The `Authorization` header for `method path_and_query` (and a form
    /// body), signed now with a fresh nonce.
    fn sign(
        &self,
        method: &str,
        path_and_query: &str,
        form_body: Option<&str>,
        credentials: TestCredentials<'_>,
        extra: &[(&str, &str)],
    ) -> String {
        self.sign_at(method, path_and_query, form_body, credentials, extra, now())
    }

    fn sign_at(
        &self,
        method: &str,
        path_and_query: &str,
        form_body: Option<&str>,
        credentials: TestCredentials<'_>,
        extra: &[(&str, &str)],
        timestamp: i64,
    ) -> String {
        let url = self.fake.url() + path_and_query;
        let request = RequestParts::from_url(method, &url, form_body, None).expect("a fake URL");
        let nonce = format!("{:016x}", rand::random::<u64>());
        sign_for_tests(
            &request,
            SignatureMethod::HmacSha512,
            credentials,
            extra,
            timestamp,
            &nonce,
        )
        .expect("sign a well-formed request")
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        authorization: Option<&str>,
        form_body: Option<&str>,
    ) -> Response {
        let mut request = self.http.request(method, self.fake.url() + path_and_query);
        if let Some(authorization) = authorization {
            request = request.header(AUTHORIZATION, authorization);
        }
        if let Some(body) = form_body {
            request = request
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(body.to_owned());
        }
        request.send().await.expect("the fake answers")
    }

    /// Signs and sends a GET with an access token.
    async fn api_get(&self, path_and_query: &str, token: &IssuedToken) -> Response {
        let header = self.sign("GET", path_and_query, None, access(token), &[]);
        self.send(reqwest::Method::GET, path_and_query, Some(&header), None)
            .await
    }

    async fn request_token(&self, credentials: TestCredentials<'_>) -> Response {
        let header = self.sign(
            "POST",
            "/v2/oauth/request_token",
            None,
            credentials,
            &[("oauth_callback", CALLBACK)],
        );
        self.send(
            reqwest::Method::POST,
            "/v2/oauth/request_token",
            Some(&header),
            None,
        )
        .await
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn consumer() -> TestCredentials<'static> {
    TestCredentials {
        consumer_key: FakeApi::CONSUMER_KEY,
        consumer_secret: FakeApi::CONSUMER_SECRET,
        token: None,
    }
}

fn access(token: &IssuedToken) -> TestCredentials<'_> {
    TestCredentials {
        token: Some((&token.token, &token.secret)),
        ..consumer()
    }
}

fn value<'p>(params: &'p Params, name: &str) -> Option<&'p str> {
    params
        .iter()
        .find(|(candidate, _)| candidate == name)
        .map(|(_, value)| value.as_str())
}

async fn form_answer(response: Response) -> Params {
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[CONTENT_TYPE],
        "application/x-www-form-urlencoded"
    );
    let body = response.text().await.expect("read the answer");
    parse_form(&body).expect("a form-encoded answer")
}

#[tokio::test]
async fn oauth_dance_issues_an_access_token_once() {
    let fake = FakeApi::start().await;
    let caller = &Caller::new(&fake);

    let tokens = form_answer(caller.request_token(consumer()).await).await;
    assert_eq!(value(&tokens, "oauth_callback_confirmed"), Some("true"));
    let request_token = value(&tokens, "oauth_token").expect("oauth_token");
    let request_secret = value(&tokens, "oauth_token_secret").expect("oauth_token_secret");
    assert_eq!(fake.pending_request_tokens()[0].callback, CALLBACK);

    let page = caller
        .send(
            reqwest::Method::GET,
            &format!("/v2/oauth/authorize?oauth_token={request_token}"),
            None,
            None,
        )
        .await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.expect("read the page");
    assert!(html.contains(&format!("Authorize {}?", FakeApi::CONSUMER_KEY)));
    assert!(html.contains("id=\"approve\""));
    assert!(html.contains(&format!("value=\"{request_token}\"")));

    let approved = caller
        .send(
            reqwest::Method::POST,
            "/v2/oauth/authorize",
            None,
            Some(&format!("oauth_token={request_token}")),
        )
        .await;
    assert_eq!(approved.status(), StatusCode::SEE_OTHER);
    let location = approved.headers()[LOCATION]
        .to_str()
        .expect("ASCII Location");
    let (callback, query) = location.split_once('?').expect("a callback with a query");
    assert_eq!(callback, "http://127.0.0.1:9/auth/callback");
    let query = parse_form(query).expect("a form-encoded callback query");
    assert_eq!(value(&query, "from"), Some("fake"));
    assert_eq!(value(&query, "oauth_token"), Some(request_token));
    assert_eq!(value(&query, "user"), Some(FAKE_USER_ID));
    let verifier = value(&query, "oauth_verifier").expect("oauth_verifier");

    let exchange = || async move {
        let credentials = TestCredentials {
            token: Some((request_token, request_secret)),
            ..consumer()
        };
        let header = caller.sign(
            "POST",
            "/v2/oauth/access_token",
            None,
            credentials,
            &[("oauth_verifier", verifier)],
        );
        caller
            .send(
                reqwest::Method::POST,
                "/v2/oauth/access_token",
                Some(&header),
                None,
            )
            .await
    };
    let access_tokens = form_answer(exchange().await).await;
    let issued = &fake.issued_access_tokens()[0];
    assert_eq!(
        value(&access_tokens, "oauth_token"),
        Some(issued.token.as_str())
    );
    assert_eq!(
        value(&access_tokens, "oauth_token_secret"),
        Some(issued.secret.as_str())
    );
    assert_eq!(
        value(&access_tokens, "expiration_date"),
        Some(issued.expiration_date.as_str())
    );
    assert_eq!(issued.consumer_key, FakeApi::CONSUMER_KEY);
    assert!(fake.pending_request_tokens().is_empty());

    assert_eq!(
        exchange().await.status(),
        StatusCode::UNAUTHORIZED,
        "a request token is good once"
    );

    let user: Value = caller
        .api_get("/v2/self", issued)
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(user["id"], FAKE_USER_ID);
    assert_eq!(user["name"], "Ada Lovelace");
    assert_eq!(user["email"], "ada@example.com");
    assert_eq!(user["emailValidated"], true);
}

#[tokio::test]
async fn request_token_takes_oauth_parameters_from_a_form_body_too() {
    let fake = FakeApi::start().await;
    let caller = Caller::new(&fake);
    let header = caller.sign(
        "POST",
        "/v2/oauth/request_token",
        None,
        consumer(),
        &[("oauth_callback", CALLBACK)],
    );
    let body = parse_authorization_header(&header)
        .expect("own header parses")
        .iter()
        .map(|(name, value)| format!("{name}={}", percent_encode(value)))
        .collect::<Vec<_>>()
        .join("&");

    let response = caller
        .send(
            reqwest::Method::POST,
            "/v2/oauth/request_token",
            None,
            Some(&body),
        )
        .await;

    let tokens = form_answer(response).await;
    assert!(
        value(&tokens, "oauth_token").is_some_and(|token| token.starts_with("fake-request-token-"))
    );
}

#[tokio::test]
async fn request_token_refuses_unknown_consumers_and_accepts_registered_ones() {
    let fake = FakeApi::start().await;
    let caller = Caller::new(&fake);
    let visitor = TestCredentials {
        consumer_key: "visitor-key",
        consumer_secret: "visitor secret/with=specials",
        token: None,
    };

    let unknown = caller.request_token(visitor).await;
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    assert!(
        unknown
            .text()
            .await
            .expect("text")
            .contains("unknown consumer")
    );

    fake.register_consumer(visitor.consumer_key, visitor.consumer_secret);
    form_answer(caller.request_token(visitor).await).await;
    assert_eq!(fake.pending_request_tokens()[0].consumer_key, "visitor-key");
}

#[tokio::test]
async fn api_checks_signature_timestamp_and_nonce() {
    let fake = FakeApi::start().await;
    let caller = Caller::new(&fake);
    let token = fake.issue_access_token(FakeApi::CONSUMER_KEY);
    let header = caller.sign("GET", "/v2/self", None, access(&token), &[]);
    let stale = caller.sign_at("GET", "/v2/self", None, access(&token), &[], now() - 3600);
    let wrong_secret = caller.sign(
        "GET",
        "/v2/self",
        None,
        TestCredentials {
            consumer_secret: "not the secret",
            ..access(&token)
        },
        &[],
    );

    let accepted = caller
        .send(reqwest::Method::GET, "/v2/self", Some(&header), None)
        .await;
    assert_eq!(accepted.status(), StatusCode::OK);
    assert_eq!(accepted.headers()["x-fake-api"], "1");
    assert_eq!(
        accepted.headers()[SET_COOKIE],
        "api_session=should-not-leak; Path=/"
    );

    for (authorization, why) in [
        (Some(header.as_str()), "already used"),
        (Some(stale.as_str()), "oauth_timestamp"),
        (Some(wrong_secret.as_str()), "invalid signature"),
        (None, "missing parameter"),
    ] {
        let refused = caller
            .send(reqwest::Method::GET, "/v2/self", authorization, None)
            .await;
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED, "{why}");
        let body: Value = refused.json().await.expect("a JSON error");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains(why), "{error:?} should mention {why:?}");
    }
    assert_eq!(
        fake.api_request_count(),
        5,
        "refused requests are recorded too"
    );
    assert_eq!(fake.requests()[4].header("authorization"), None);
}

#[tokio::test]
async fn echo_describes_signed_requests_and_streams_big_bodies() {
    let fake = FakeApi::start().await;
    let caller = Caller::new(&fake);
    let token = fake.issue_access_token(FakeApi::CONSUMER_KEY);

    let path = "/v2/echo?q=a+b&x=1";
    let form = "x=2&note=hello+world";
    let header = caller.sign("POST", path, Some(form), access(&token), &[]);
    let echo: Value = caller
        .send(reqwest::Method::POST, path, Some(&header), Some(form))
        .await
        .json()
        .await
        .expect("JSON echo");
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/v2/echo");
    assert_eq!(echo["raw_query"], "q=a+b&x=1");
    assert_eq!(echo["query"], serde_json::json!([["q", "a b"], ["x", "1"]]));
    assert_eq!(echo["body_text"], form);
    assert_eq!(echo["body_len"], form.len());
    assert_eq!(echo["oauth"]["oauth_token"], token.token.as_str());
    assert_eq!(echo["oauth"]["oauth_signature_method"], "HMAC-SHA512");

    let big = vec![7_u8; 3 * 1024 * 1024];
    let header = caller.sign("PUT", "/v4/things", None, access(&token), &[]);
    let echo: Value = caller
        .http
        .put(fake.url() + "/v4/things")
        .header(AUTHORIZATION, header)
        .header(CONTENT_TYPE, "application/octet-stream")
        .body(big.clone())
        .send()
        .await
        .expect("the fake answers")
        .json()
        .await
        .expect("JSON echo");
    assert_eq!(echo["body_len"], big.len());
    assert_eq!(echo["body_sha256"], format!("{:x}", Sha256::digest(&big)));
    assert_eq!(echo["body_text"], Value::Null);
    assert_eq!(fake.requests()[1].body_len, big.len());

    let unsigned = caller
        .send(reqwest::Method::DELETE, "/v4/things", None, None)
        .await;
    assert_eq!(unsigned.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(unsigned.headers()["x-fake-api"], "1");
    let error: Value = unsigned.json().await.expect("a JSON error");
    assert!(error["error"].is_string());
}

#[tokio::test]
async fn summary_sse_download_and_slow_answer_as_asked() {
    let fake = FakeApi::start().await;
    let caller = Caller::new(&fake);
    let token = fake.issue_access_token(FakeApi::CONSUMER_KEY);

    let summary: Value = caller
        .api_get("/v2/summary", &token)
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(summary["user"]["id"], FAKE_USER_ID);
    let organisation = &summary["organisations"][0];
    assert_eq!(organisation["name"], "Ada Lovelace");
    assert_eq!(organisation["applications"][0]["name"], "hello-world");
    assert_eq!(organisation["addons"], serde_json::json!([]));

    let sse = caller
        .api_get("/v2/test/stream/sse?count=3&interval_ms=5", &token)
        .await;
    assert_eq!(sse.headers()[CONTENT_TYPE], "text/event-stream");
    let events = sse.text().await.expect("read the events");
    assert_eq!(events.matches("event: APPLICATION_LOG").count(), 3);
    assert!(events.contains("id: 2\n"));
    assert!(events.contains("data: {\"n\":2}"));

    let download = caller
        .api_get("/v2/test/download?bytes=200000", &token)
        .await;
    assert_eq!(download.content_length(), Some(200_000));
    let bytes = download.bytes().await.expect("read the download");
    assert!(
        bytes
            .iter()
            .zip(0..)
            .all(|(&byte, index)| byte == FakeApi::download_byte(index))
    );

    let slow = caller.api_get("/v2/test/slow?ms=1", &token).await;
    assert_eq!(slow.status(), StatusCode::OK);
}

#[tokio::test]
async fn modes_break_the_token_endpoints_as_asked() {
    let fake = FakeApi::start().await;
    let caller = Caller::new(&fake);

    fake.set_mode(Mode::RejectConsumer);
    let rejected = caller.request_token(consumer()).await;
    assert_eq!(rejected.status(), StatusCode::UNAUTHORIZED);
    assert!(!rejected.text().await.expect("text").is_empty());

    fake.set_mode(Mode::Garbage);
    let garbage = caller.request_token(consumer()).await;
    assert_eq!(garbage.status(), StatusCode::OK);
    assert!(garbage.text().await.expect("text").starts_with("<html>"));

    fake.set_mode(Mode::ServerError);
    let failed = caller.request_token(consumer()).await;
    assert_eq!(failed.status(), StatusCode::INTERNAL_SERVER_ERROR);

    fake.set_mode(Mode::Hang);
    let header = caller.sign("POST", "/v2/oauth/request_token", None, consumer(), &[]);
    let hung = caller
        .http
        .post(fake.url() + "/v2/oauth/request_token")
        .header(AUTHORIZATION, header)
        .timeout(Duration::from_millis(200))
        .send()
        .await;
    assert!(hung.is_err_and(|error| error.is_timeout()));

    fake.set_mode(Mode::Normal);
    form_answer(caller.request_token(consumer()).await).await;
    assert_eq!(fake.requests().len(), 5);
    assert_eq!(fake.api_request_count(), 0);
}
