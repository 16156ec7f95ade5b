//! Operating the server: probes, request ids, metrics, security headers,
//! running behind a TLS-ending load balancer.

use oauth_consumer_server::config::Config;
use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, COOKIE, ORIGIN, SET_COOKIE};
use tokio_util::sync::CancellationToken;

use crate::support::{FakeApi, Options, TestApp, browser, location};

const METRICS_TOKEN: &str = "metrics-token-for-tests-0123456789";

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
}

#[tokio::test]
async fn health_and_ready_answer_and_every_answer_carries_a_request_id() {
    // Arrange
    let app = TestApp::spawn().await;
    let client = browser();

    // Act
    let health = app.get(&client, "/health").await;
    let ready = client
        .get(app.at("/ready"))
        .header("x-request-id", "probe-42.a_b:c")
        .send()
        .await
        .expect("GET /ready");
    let forged = client
        .get(app.at("/ready"))
        .header("x-request-id", "two words")
        .send()
        .await
        .expect("GET /ready");

    // Assert
    assert_eq!(health.status(), StatusCode::OK);
    let generated = header(&health, "x-request-id")
        .unwrap_or_default()
        .to_owned();
    assert_eq!(generated.len(), 32, "a generated id: {generated:?}");
    assert_eq!(ready.status(), StatusCode::OK);
    assert_eq!(header(&ready, "x-request-id"), Some("probe-42.a_b:c"));
    let replaced = header(&forged, "x-request-id").unwrap_or_default();
    assert!(replaced != "two words" && replaced.len() == 32);
}

#[tokio::test]
async fn ready_says_503_once_shutting_down() {
    // Arrange: the real router, served without the draining loop so the
    // connection stays open after the token is cancelled.
    let api = FakeApi::start().await;
    let config = Config::from_args(["oauth-consumer-server", "--api-host", &api.url()])
        .expect("valid configuration");
    let shutdown = CancellationToken::new();
    let app = oauth_consumer_server::build(config, shutdown.clone())
        .await
        .expect("the app builds");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app.router()).await });
    let client = browser();
    let before = client
        .get(format!("http://{addr}/ready"))
        .send()
        .await
        .expect("GET /ready");

    // Act
    shutdown.cancel();
    let after = client
        .get(format!("http://{addr}/ready"))
        .send()
        .await
        .expect("GET /ready");

    // Assert
    assert_eq!(before.status(), StatusCode::OK);
    assert_eq!(after.status(), StatusCode::SERVICE_UNAVAILABLE);
    let health = client
        .get(format!("http://{addr}/health"))
        .send()
        .await
        .expect("GET /health");
    assert_eq!(
        health.status(),
        StatusCode::OK,
        "still alive, only not ready"
    );
}

async fn scrape(app: &TestApp, token: Option<&str>) -> reqwest::Response {
    let mut request = browser().get(app.at("/metrics"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("GET /metrics")
}

#[tokio::test]
async fn metrics_exist_only_with_a_token_and_only_for_its_bearer() {
    let without = TestApp::spawn().await;
    assert_eq!(
        scrape(&without, Some(METRICS_TOKEN)).await.status(),
        StatusCode::NOT_FOUND
    );

    let app = TestApp::spawn_with(Options {
        extra_args: vec!["--metrics-token".into(), METRICS_TOKEN.into()],
        ..Options::default()
    })
    .await;
    let missing = scrape(&app, None).await;
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(header(&missing, "www-authenticate"), Some("Bearer"));
    assert_eq!(
        scrape(&app, Some("metrics-token-for-tests-012345678"))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let basic = browser()
        .get(app.at("/metrics"))
        .basic_auth("x", Some(METRICS_TOKEN))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        scrape(&app, Some(METRICS_TOKEN)).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn metrics_count_requests_by_route_logins_and_oauth_calls() {
    // Arrange
    let app = TestApp::spawn_with(Options {
        extra_args: vec!["--metrics-token".into(), METRICS_TOKEN.into()],
        ..Options::default()
    })
    .await;
    let client = app.logged_in_browser().await;
    let created = client
        .post(app.at("/tokens"))
        .header(ORIGIN, &app.url)
        .json(&serde_json::json!({ "name": "ci" }))
        .send()
        .await
        .expect("POST /tokens");
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_eq!(header(&created, "cache-control"), Some("no-store"));
    let proxied = app.get(&client, "/api/v2/self").await;
    assert_eq!(proxied.status(), StatusCode::OK);
    let missing = app.get(&client, "/no-such-page-4711").await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    // Act
    let response = scrape(&app, Some(METRICS_TOKEN)).await;
    let content_type = header(&response, "content-type")
        .unwrap_or_default()
        .to_owned();
    let text = response.text().await.expect("metrics body");

    // Assert
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    for expected in [
        r#"http_requests_total{method="GET",route="/callback",status="303"} 1"#,
        r#"http_requests_total{method="POST",route="/login",status="303"} 1"#,
        r#"http_requests_total{method="GET",route="unmatched",status="404"} 1"#,
        r#"http_request_duration_seconds_count{route="/callback"} 1"#,
        r#"upstream_requests_total{upstream="oauth",outcome="2xx"} 2"#,
        r#"upstream_request_duration_seconds_count{upstream="oauth"} 2"#,
        r#"http_requests_total{method="GET",route="/api/{*path}",status="200"} 1"#,
        r#"upstream_requests_total{upstream="api",outcome="2xx"} 1"#,
        r#"upstream_request_duration_seconds_count{upstream="api"} 1"#,
        "logins_total 1",
        "proxy_tokens_created_total 1",
        "relays_open 0",
    ] {
        assert!(text.contains(expected), "missing {expected} in:\n{text}");
    }
    assert!(!text.contains("4711"), "raw paths never become labels");
    assert!(
        !text.contains("oauth_verifier"),
        "queries never become labels"
    );
}

#[tokio::test]
async fn failing_oauth_calls_count_as_upstream_errors() {
    // Arrange
    let app = TestApp::spawn_with(Options {
        extra_args: vec!["--metrics-token".into(), METRICS_TOKEN.into()],
        ..Options::default()
    })
    .await;
    app.api.set_mode(crate::support::Mode::ServerError);

    // Act
    let refused = app.start_login(&browser()).await;
    let text = scrape(&app, Some(METRICS_TOKEN))
        .await
        .text()
        .await
        .expect("metrics body");

    // Assert
    assert_eq!(refused.status(), StatusCode::BAD_GATEWAY);
    assert!(
        text.contains(r#"upstream_errors_total{upstream="oauth",outcome="5xx"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn pages_carry_the_security_headers_and_assets_do_not_need_them() {
    // Arrange
    let app = TestApp::spawn().await;
    let client = app.logged_in_browser().await;

    // Act
    let credentials = app.get(&client, "/").await;
    let login = app.get(&browser(), "/login").await;
    let error = app
        .get(&browser(), "/callback?oauth_token=x&oauth_verifier=y")
        .await;
    let css = app.get(&client, "/static/app.css").await;

    // Assert
    for page in [&credentials, &login, &error] {
        let policy = header(page, CONTENT_SECURITY_POLICY.as_str()).unwrap_or_default();
        assert!(policy.contains("script-src 'self';"), "{policy}");
        assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
        assert!(
            policy.contains(&format!("form-action 'self' {};", app.api.url())),
            "the login form's redirect goes to the API: {policy}"
        );
        assert!(
            policy.contains("connect-src 'self' ws://127.0.0.1:"),
            "{policy}"
        );
        assert!(!policy.contains("unsafe-inline"), "{policy}");
        assert_eq!(header(page, "referrer-policy"), Some("same-origin"));
        assert_eq!(header(page, "x-content-type-options"), Some("nosniff"));
        assert_eq!(header(page, CACHE_CONTROL.as_str()), Some("no-store"));
    }
    assert_eq!(header(&css, "x-content-type-options"), Some("nosniff"));
    assert_eq!(header(&css, CONTENT_SECURITY_POLICY.as_str()), None);
    assert_eq!(
        header(&css, CACHE_CONTROL.as_str()),
        Some("no-cache"),
        "a handler's own cache policy is kept"
    );
}

/// Cookies carried by hand, as a browser over https would: each
/// `Set-Cookie` must be `__Host-` prefixed, Secure, for `/`, with no Domain.
#[derive(Default)]
struct HostCookies(std::collections::BTreeMap<String, String>);

impl HostCookies {
    /// Takes the cookies `response` sets; how many it set.
    fn take(&mut self, response: &reqwest::Response) -> usize {
        let mut count = 0;
        for set_cookie in response.headers().get_all(SET_COOKIE) {
            let set_cookie = set_cookie.to_str().unwrap_or_default();
            let attributes: Vec<&str> = set_cookie.split(';').map(str::trim).collect();
            assert!(
                attributes[0].starts_with("__Host-"),
                "https APP_URL means __Host- cookies: {set_cookie}"
            );
            assert!(attributes.contains(&"Secure"), "{set_cookie}");
            assert!(attributes.contains(&"Path=/"), "{set_cookie}");
            assert!(
                !set_cookie.to_ascii_lowercase().contains("domain="),
                "{set_cookie}"
            );
            if let Some((name, value)) = attributes[0].split_once('=') {
                self.0.insert(name.to_owned(), value.to_owned());
                count += 1;
            }
        }
        count
    }

    fn header(&self) -> String {
        self.0
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

#[tokio::test]
async fn behind_a_tls_ending_balancer_the_https_app_url_works_over_plain_http() {
    // Arrange: the public URL is https, the server sees plain http from
    // the balancer, which says so in X-Forwarded-Proto. Secure cookies are
    // carried by hand, as the browser would over https.
    let public = "https://gw.example.com";
    let app = TestApp::spawn_with(Options {
        extra_args: vec![
            "--app-url".into(),
            format!("{public}/"),
            "--trusted-proxies".into(),
            "127.0.0.1".into(),
        ],
        ..Options::default()
    })
    .await;
    let client = browser();
    let mut cookies = HostCookies::default();
    let login_page = client
        .get(app.at("/login"))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .expect("GET /login");
    assert_eq!(cookies.take(&login_page), 1, "the CSRF cookie only");
    assert_eq!(
        header(&login_page, "strict-transport-security"),
        Some("max-age=31536000")
    );
    let csrf =
        crate::support::app::hidden_field(&login_page.text().await.unwrap_or_default(), "csrf")
            .expect("csrf field");

    // Act: the dance, through the "balancer".
    let started = client
        .post(app.at("/login"))
        .header(COOKIE, cookies.header())
        .header(ORIGIN, public)
        .header("x-forwarded-proto", "https")
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("POST /login");
    assert_eq!(started.status(), StatusCode::SEE_OTHER);
    assert_eq!(cookies.take(&started), 1, "the session starts here");
    let callback = app.approve(&client, &location(&started)).await;
    assert!(
        callback.starts_with(&format!("{public}/callback?")),
        "{callback}"
    );
    let before_login = cookies.header();
    let finished = client
        .get(callback.replacen(public, &app.url, 1))
        .header(COOKIE, cookies.header())
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .expect("GET /callback");
    assert_eq!(finished.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        cookies.take(&finished),
        2,
        "a new session id and a new CSRF cookie after login"
    );
    assert!(
        before_login
            .split("; ")
            .all(|cookie| !cookies.header().contains(cookie)),
        "both cookies changed at login"
    );
    let cookie = cookies.header();
    let same_site = client
        .post(app.at("/tokens"))
        .header(COOKIE, &cookie)
        .header(ORIGIN, public)
        .json(&serde_json::json!({ "name": "behind the balancer" }))
        .send()
        .await
        .expect("POST /tokens");
    let plain_origin = client
        .post(app.at("/tokens"))
        .header(COOKIE, &cookie)
        .header(ORIGIN, &app.url)
        .json(&serde_json::json!({ "name": "wrong origin" }))
        .send()
        .await
        .expect("POST /tokens");

    // Assert
    assert_eq!(
        same_site.status(),
        StatusCode::CREATED,
        "the public https origin is ours"
    );
    assert_eq!(
        plain_origin.status(),
        StatusCode::FORBIDDEN,
        "the internal http origin is not"
    );
    let policy = header(&finished, CONTENT_SECURITY_POLICY.as_str());
    assert_eq!(policy, None, "a redirect is no page");
    let home = client
        .get(app.at("/"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .expect("GET /");
    let policy = header(&home, CONTENT_SECURITY_POLICY.as_str()).unwrap_or_default();
    assert!(
        policy.contains("connect-src 'self' wss://gw.example.com;"),
        "{policy}"
    );
}
