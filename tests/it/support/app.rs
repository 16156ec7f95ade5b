//! The real application on 127.0.0.1:0, in front of a fake API, and a
//! cookie-keeping client that acts like a person's browser.

use std::net::SocketAddr;
use std::sync::Arc;

use oauth_consumer_server::config::Config;
use oauth_consumer_server::relay::RelayRegistry;
use oauth_consumer_server::session::Store;
use reqwest::header::LOCATION;
use reqwest::{Client, Response, StatusCode};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::fake_api::FakeApi;

/// Which consumer the server is set up with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsumerMode {
    /// `OAUTH_CONSUMER_KEY`/`SECRET` configured by the operator.
    Operator,
    /// None configured: visitors type the fake's registered consumer.
    Visitor,
}

/// How to start a [`TestApp`].
#[derive(Clone, Debug)]
pub struct Options {
    /// Which consumer mode.
    pub consumer: ConsumerMode,
    /// `OAUTH_SIGNATURE_METHOD`.
    pub signature_method: &'static str,
    /// Further `--flag value` arguments.
    pub extra_args: Vec<String>,
    /// Serve on this many worker threads, as the binary does
    /// (`serve_on_workers`); `None`: on the test's own runtime (`serve`).
    pub workers: Option<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            consumer: ConsumerMode::Operator,
            signature_method: "HMAC-SHA512",
            extra_args: Vec::new(),
            workers: None,
        }
    }
}

/// A running server and its fake API.
pub struct TestApp {
    /// Where the server listens.
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub url: String,
    /// The fake Clever Cloud API the server talks to (shared by the
    /// instances of a multi-instance test).
    pub api: Arc<FakeApi>,
    /// How the server was started.
    pub options: Options,
    /// The server's open relays (none for an attached server).
    relays: Option<Arc<RelayRegistry>>,
    /// The server's store (none for an attached server).
    store: Option<Store>,
    shutdown: CancellationToken,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A browser-like client: keeps cookies, follows no redirect (tests look at
/// each hop), loopback only.
pub fn browser() -> Client {
    Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .expect("test client builds")
}

/// A service's client: no cookies, no redirects, loopback only.
pub fn service_client() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .expect("test client builds")
}

/// A proxy token just created, as `POST /tokens` returns it.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct CreatedToken {
    /// The bearer token.
    pub token: String,
    /// Its public id.
    pub id: String,
}

impl TestApp {
    /// Operator consumer, HMAC-SHA512.
    pub async fn spawn() -> Self {
        Self::spawn_with(Options::default()).await
    }

    /// A server set up with `options`, in front of a new fake API.
    pub async fn spawn_with(options: Options) -> Self {
        let api = FakeApi::start().await;
        let api_url = api.url();
        Self::spawn_against(api, &api_url, options).await
    }

    /// Another instance in front of the same fake API, set up with
    /// `options` (give it the same store settings to share sessions).
    pub async fn spawn_beside(&self, options: Options) -> Self {
        Self::spawn_against(self.api.clone(), &self.api.url(), options).await
    }

    /// A server in front of `api`, reaching it at `api_url` (which may be a
    /// closed port, to play an unreachable API).
    pub async fn spawn_against(
        api: impl Into<Arc<FakeApi>>,
        api_url: &str,
        options: Options,
    ) -> Self {
        super::init_test_log();
        let api = api.into();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("bound address");
        let url = format!("http://{addr}");
        let mut args = vec![
            "oauth-consumer-server".to_owned(),
            "--port".to_owned(),
            addr.port().to_string(),
            "--app-url".to_owned(),
            format!("{url}/"),
            "--api-host".to_owned(),
            api_url.to_owned(),
            "--oauth-signature-method".to_owned(),
            options.signature_method.to_owned(),
        ];
        if options.consumer == ConsumerMode::Operator {
            args.extend([
                "--oauth-consumer-key".to_owned(),
                FakeApi::CONSUMER_KEY.to_owned(),
                "--oauth-consumer-secret".to_owned(),
                FakeApi::CONSUMER_SECRET.to_owned(),
            ]);
        }
        args.extend(options.extra_args.iter().cloned());
        let config = Config::from_args(args).expect("test configuration is valid");
        let shutdown = CancellationToken::new();
        let app = oauth_consumer_server::build(config, shutdown.clone())
            .await
            .expect("the app builds");
        let relays = Some(app.state.relays.clone());
        let store = Some(app.state.store.clone());
        // The binary's own serve loops: connection info, limits, graceful
        // shutdown; on worker threads when asked, as the binary serves.
        match options.workers {
            Some(workers) => {
                tokio::spawn(oauth_consumer_server::serve::serve_on_workers(
                    listener, app, workers,
                ));
            }
            None => {
                tokio::spawn(oauth_consumer_server::serve::serve(listener, app));
            }
        }
        Self {
            addr,
            url,
            api,
            options,
            relays,
            store,
            shutdown,
        }
    }

    /// A handle on a server started elsewhere (a child process) at `addr`,
    /// for the browser helpers.
    pub fn attach(api: FakeApi, addr: SocketAddr, options: Options) -> Self {
        Self {
            addr,
            url: format!("http://{addr}"),
            api: Arc::new(api),
            options,
            relays: None,
            store: None,
            shutdown: CancellationToken::new(),
        }
    }

    /// The server's open relays (only for a server spawned in this process).
    pub fn relays(&self) -> &RelayRegistry {
        self.relays
            .as_deref()
            .expect("the relays of a server in another process are out of reach")
    }

    /// How many records and sets the embedded store holds (`None` for a
    /// Redis store).
    pub fn embedded_store_len(&self) -> Option<usize> {
        self.store
            .as_ref()
            .expect("the store of a server in another process is out of reach")
            .embedded_len()
    }

    /// Starts the server's shutdown, as SIGTERM would.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// A new browser, logged in, and its session's `Cookie` header value
    /// (for clients that cannot share reqwest's cookie jar, like WebSockets).
    pub async fn logged_in_browser_and_cookie(&self) -> (Client, String) {
        let jar = Arc::new(reqwest::cookie::Jar::default());
        let client = Client::builder()
            .cookie_provider(jar.clone())
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .expect("test client builds");
        self.log_in(&client).await;
        let url = self.url.parse().expect("the server's URL parses");
        let cookie = reqwest::cookie::CookieStore::cookies(jar.as_ref(), &url)
            .expect("the logged-in browser has a session cookie");
        let cookie = cookie.to_str().expect("cookies are ASCII").to_owned();
        (client, cookie)
    }

    /// `self.url` + `path`.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// `GET path` with `client`; panics only if the request cannot be sent.
    pub async fn get(&self, client: &Client, path: &str) -> Response {
        client
            .get(self.at(path))
            .send()
            .await
            .unwrap_or_else(|error| panic!("GET {path}: {error}"))
    }

    /// The CSRF token of `client`'s session, read from the login page.
    pub async fn csrf(&self, client: &Client) -> String {
        let page = client
            .get(self.at("/login"))
            .send()
            .await
            .expect("GET /login")
            .text()
            .await
            .expect("login page body");
        hidden_field(&page, "csrf").expect("the login page has a CSRF field")
    }

    /// `POST /login` as the login form sends it, with the fake's consumer
    /// typed in when the server has none of its own.
    pub async fn start_login(&self, client: &Client) -> Response {
        self.start_login_with(client, FakeApi::CONSUMER_KEY, FakeApi::CONSUMER_SECRET)
            .await
    }

    /// `POST /login` with the given consumer typed in (ignored by a server
    /// with an operator consumer).
    pub async fn start_login_with(&self, client: &Client, key: &str, secret: &str) -> Response {
        let csrf = self.csrf(client).await;
        let mut form = vec![("csrf", csrf.as_str())];
        if self.options.consumer == ConsumerMode::Visitor {
            form.extend([("consumer_key", key), ("consumer_secret", secret)]);
        }
        client
            .post(self.at("/login"))
            .form(&form)
            .send()
            .await
            .expect("POST /login")
    }

    /// Plays the person on the API's authorize page: opens `authorize_url`,
    /// clicks "Approve", and returns the callback URL the API redirects to.
    pub async fn approve(&self, client: &Client, authorize_url: &str) -> String {
        self.approve_as(client, authorize_url, super::fake_api::FAKE_USER_ID)
            .await
    }

    /// [`Self::approve`] by the Clever Cloud user `user`.
    pub async fn approve_as(&self, client: &Client, authorize_url: &str, user: &str) -> String {
        let page = client
            .get(authorize_url)
            .send()
            .await
            .expect("GET authorize page")
            .text()
            .await
            .expect("authorize page body");
        let token = hidden_field(&page, "oauth_token").expect("authorize page names its token");
        let approved = client
            .post(format!("{}/v2/oauth/authorize", self.api.url()))
            .form(&[("oauth_token", token.as_str()), ("user", user)])
            .send()
            .await
            .expect("POST approve");
        assert_eq!(approved.status(), StatusCode::SEE_OTHER);
        location(&approved)
    }

    /// The whole dance with `client`: login, approve, callback. Panics
    /// unless it ends logged in.
    pub async fn log_in(&self, client: &Client) {
        self.log_in_as(client, super::fake_api::FAKE_USER_ID).await;
    }

    /// [`Self::log_in`] as the Clever Cloud user `user`.
    pub async fn log_in_as(&self, client: &Client, user: &str) {
        let started = self.start_login(client).await;
        let status = started.status();
        if status != StatusCode::SEE_OTHER {
            let page = started.text().await.unwrap_or_default();
            panic!("POST /login answered {status}: {page}");
        }
        let callback = self.approve_as(client, &location(&started), user).await;
        let finished = client.get(callback).send().await.expect("GET /callback");
        assert_eq!(
            finished.status(),
            StatusCode::SEE_OTHER,
            "callback redirects"
        );
        assert_eq!(location(&finished), "/");
    }

    /// Creates a proxy token named `name` from `client`'s page (same
    /// origin). Panics unless it is created.
    pub async fn create_proxy_token(&self, client: &Client, name: &str) -> CreatedToken {
        let response = client
            .post(self.at("/tokens"))
            .header("origin", &self.url)
            .json(&serde_json::json!({ "name": name }))
            .send()
            .await
            .expect("POST /tokens");
        assert_eq!(response.status(), StatusCode::CREATED, "POST /tokens");
        response.json().await.expect("POST /tokens answers JSON")
    }

    /// The ids of the proxy tokens `client`'s session lists.
    pub async fn listed_token_ids(&self, client: &Client) -> Vec<String> {
        let response = self.get(client, "/tokens").await;
        assert_eq!(response.status(), StatusCode::OK, "GET /tokens");
        let tokens: Vec<serde_json::Value> = response.json().await.expect("token list");
        tokens
            .iter()
            .filter_map(|token| token["id"].as_str().map(str::to_owned))
            .collect()
    }

    /// What `GET /api/v2/self` answers a service with proxy token `token`.
    pub async fn bearer_status(&self, token: &str) -> StatusCode {
        service_client()
            .get(self.at("/api/v2/self"))
            .bearer_auth(token)
            .send()
            .await
            .expect("GET /api/v2/self with a proxy token")
            .status()
    }

    /// The text of `GET /metrics` with `Authorization: Bearer {token}`;
    /// panics unless it answers 200.
    pub async fn metrics(&self, token: &str) -> String {
        let response = service_client()
            .get(self.at("/metrics"))
            .bearer_auth(token)
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(response.status(), StatusCode::OK, "GET /metrics");
        response.text().await.expect("the metrics")
    }

    /// What `GET /api/v2/self` answers a page's script whose browser sends
    /// `cookie` (a `Cookie` header value), even after the browser dropped it.
    pub async fn cookie_status(&self, cookie: &str) -> StatusCode {
        service_client()
            .get(self.at("/api/v2/self"))
            .header(reqwest::header::COOKIE, cookie)
            .send()
            .await
            .expect("GET /api/v2/self with a session cookie")
            .status()
    }

    /// Logs `client` out with the logout form.
    pub async fn log_out(&self, client: &Client) {
        let csrf = self.csrf(client).await;
        let response = client
            .post(self.at("/logout"))
            .form(&[("csrf", csrf)])
            .send()
            .await
            .expect("POST /logout");
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "logout redirects");
    }

    /// A new browser, logged in.
    pub async fn logged_in_browser(&self) -> Client {
        let client = browser();
        self.log_in(&client).await;
        client
    }
}

/// The `Location` header of a redirect.
pub fn location(response: &Response) -> String {
    response
        .headers()
        .get(LOCATION)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("{} has no Location", response.url()))
}

/// The value of `<input … name="NAME" value="…">` in `html`.
pub fn hidden_field(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\"");
    let tag_start = html.find(&marker)?;
    let tag = &html[html[..tag_start].rfind('<')?..];
    let tag = &tag[..tag.find('>')?];
    let value_start = tag.find("value=\"")? + "value=\"".len();
    let value = &tag[value_start..];
    Some(value[..value.find('"')?].to_owned())
}

/// The text of the element with `id` (first `>` … `<` after it), unescaped.
pub fn element_text(html: &str, id: &str) -> Option<String> {
    let marker = format!("id=\"{id}\"");
    let start = html.find(&marker)?;
    let after = &html[start..];
    let text = &after[after.find('>')? + 1..];
    let text = &text[..text.find('<')?];
    Some(unescape_html(text))
}

/// Undoes HTML escaping: named entities askama uses, and numeric ones.
pub fn unescape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let Some(semi) = after.find(';') else {
            out.push_str(&rest[amp..]);
            return out;
        };
        let entity = &after[..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|dec| dec.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(character) => {
                out.push(character);
                rest = &after[semi + 1..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}
