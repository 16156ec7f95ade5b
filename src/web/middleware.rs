//! Middleware around the routes: which requests get a session, and the
//! answer when the session store fails under the session layer.

use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};

use crate::auth::{AuthError, RememberedGrant, RememberedSessionId};
use crate::error::store_unavailable_page;
use crate::session::{RememberedSessions, watch_failures};

/// Paths of the proxy and of the relays: they serve programs, who are
/// judged by [`crate::auth::Caller`] alone.
const CALLER_PREFIXES: [&str; 2] = ["/api/", "/ws/"];

/// Applies the session layers (`L`) to the requests that need them, which
/// is all but the proxy's and the relays' when:
/// - they bring `Authorization`: they are judged on their token alone (see
///   [`crate::auth::Caller`]), and making and dropping a session that
///   nothing reads cost several percent of the proxy's CPU time;
/// - their cookie is that of a session this instance read lately: its grant
///   goes to `Caller` as a [`RememberedGrant`], so that a page's calls cost
///   no store read, no decryption of the record and no JSON.
#[derive(Clone, Debug)]
pub struct SessionLayers<L> {
    layers: L,
    remembered: RememberedSessions,
}

impl<L> SessionLayers<L> {
    /// `layers` where they are needed; `remembered` finds the sessions read
    /// lately.
    pub fn new(layers: L, remembered: RememberedSessions) -> Self {
        Self { layers, remembered }
    }
}

impl<L, S> tower::Layer<S> for SessionLayers<L>
where
    L: tower::Layer<S>,
    S: Clone,
{
    type Service = SessionLayersService<S, L::Service>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionLayersService {
            plain: inner.clone(),
            layered: self.layers.layer(inner),
            remembered: self.remembered.clone(),
        }
    }
}

/// The service of [`SessionLayers`]: the inner service, plain or wrapped in
/// the session layers.
#[derive(Clone, Debug)]
pub struct SessionLayersService<S, T> {
    plain: S,
    layered: T,
    remembered: RememberedSessions,
}

impl<S, T> tower::Service<Request> for SessionLayersService<S, T>
where
    S: tower::Service<Request>,
    T: tower::Service<Request, Response = S::Response, Error = S::Error>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures_util::future::Either<S::Future, T::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::ready!(self.plain.poll_ready(cx))?;
        self.layered.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        if self.goes_around(&mut request) {
            futures_util::future::Either::Left(self.plain.call(request))
        } else {
            futures_util::future::Either::Right(self.layered.call(request))
        }
    }
}

impl<S, T> SessionLayersService<S, T> {
    /// Whether `request` goes around the session layers; a remembered grant
    /// goes with it.
    fn goes_around(&self, request: &mut Request) -> bool {
        let path = request.uri().path();
        if !CALLER_PREFIXES
            .iter()
            .any(|prefix| path.starts_with(prefix))
        {
            return false;
        }
        if request.headers().contains_key(header::AUTHORIZATION) {
            return true;
        }
        match self.remembered.grant(request.headers()) {
            Some((id, grant)) => {
                request.extensions_mut().insert(RememberedGrant(grant));
                // For the relays, which keep checking that it lives.
                request.extensions_mut().insert(RememberedSessionId(id));
                true
            }
            None => false,
        }
    }
}

/// Middleware around the session layer: when the store fails as the layer
/// saves a session (after the handler ran), the layer answers a bare 500;
/// this answers the same 503 as any other store failure instead, a page for
/// browsers and JSON for programs.
pub async fn answer_store_failures(request: Request, next: Next) -> Response {
    let wants_page = accepts_html(request.headers());
    let (response, store_failed) = watch_failures(next.run(request)).await;
    if store_failed && response.status() == StatusCode::INTERNAL_SERVER_ERROR {
        return if wants_page {
            store_unavailable_page()
        } else {
            AuthError::Unavailable.into_response()
        };
    }
    response
}

/// Whether the client reads HTML (a browser navigating) rather than JSON.
fn accepts_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;
    use axum::Router;
    use axum::routing::get;
    use tower_sessions::Session;
    use tower_sessions::session::{Id, Record};
    use tower_sessions::session_store;

    use super::*;
    use crate::config::Config;
    use crate::session::{Backend, SealingKey, SessionCookie, SetInsert, SetKey, Store, layer};

    /// A backend that reads nothing and cannot write: the store going away
    /// between a handler's reads and the session layer's save.
    #[derive(Debug)]
    struct WriteFails;

    fn down<T>() -> session_store::Result<T> {
        Err(session_store::Error::Backend("down".to_owned()))
    }

    #[async_trait]
    impl Backend for WriteFails {
        async fn create(&self, _: &Record) -> session_store::Result<bool> {
            down()
        }
        async fn update(&self, _: &Record) -> session_store::Result<bool> {
            down()
        }
        async fn load(&self, _: &Id) -> session_store::Result<Option<Record>> {
            Ok(None)
        }
        async fn delete(&self, _: &Id) -> session_store::Result<()> {
            Ok(())
        }
        async fn create_in_set(
            &self,
            _: &Record,
            _: &SetKey,
            _: &str,
            _: usize,
            _: time::OffsetDateTime,
            _: Option<&Id>,
        ) -> session_store::Result<SetInsert> {
            down()
        }
        async fn delete_in_set(&self, _: &Id, _: &SetKey, _: &str) -> session_store::Result<bool> {
            down()
        }
        async fn members(&self, _: &SetKey) -> session_store::Result<Vec<String>> {
            down()
        }
        async fn add_members(
            &self,
            _: &SetKey,
            _: &[String],
            _: time::OffsetDateTime,
        ) -> session_store::Result<()> {
            down()
        }
        async fn remove_members(&self, _: &SetKey, _: &[String]) -> session_store::Result<()> {
            down()
        }
        async fn push_capped(
            &self,
            _: &SetKey,
            _: &Id,
            _: &str,
            _: usize,
            _: time::OffsetDateTime,
        ) -> session_store::Result<()> {
            down()
        }
        async fn entries(&self, _: &SetKey) -> session_store::Result<Vec<String>> {
            down()
        }
        async fn delete_list(&self, _: &SetKey) -> session_store::Result<()> {
            down()
        }
        async fn is_available(&self) -> bool {
            false
        }
    }

    async fn serve(with_middleware: bool) -> String {
        let config = Config::from_args(["test"]).unwrap_or_else(|e| panic!("{e}"));
        let store = Store::new(WriteFails, &SealingKey::random());
        let mut router = Router::new()
            .route(
                "/",
                get(|session: Session| async move {
                    let _ = session.insert("k", "v").await;
                    "saved?"
                }),
            )
            .layer(layer(store, &config, &SessionCookie::new(&config)));
        if with_middleware {
            router = router.layer(axum::middleware::from_fn(answer_store_failures));
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(async move { axum::serve(listener, router).await });
        format!("http://{addr}/")
    }

    async fn get_with_accept(url: &str, accept: &str) -> (reqwest::StatusCode, String) {
        let response = reqwest::Client::new()
            .get(url)
            .header("accept", accept)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let status = response.status();
        (status, response.text().await.unwrap_or_default())
    }

    #[tokio::test]
    async fn bearer_calls_to_the_proxy_and_relays_go_around_the_session_layer() {
        let config = Config::from_args(["test"]).unwrap_or_else(|e| panic!("{e}"));
        let store = Store::new(WriteFails, &SealingKey::random());
        let cookie = SessionCookie::new(&config);
        let has_session = |request: Request| async move {
            request.extensions().get::<Session>().is_some().to_string()
        };
        let router = Router::new()
            .route("/api/{*path}", get(has_session))
            .route("/ws/events", get(has_session))
            .route("/page", get(has_session))
            .layer(SessionLayers::new(
                layer(store.clone(), &config, &cookie),
                RememberedSessions::new(cookie, store),
            ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(async move { axum::serve(listener, router).await });
        let client = reqwest::Client::new();

        let mut seen = Vec::new();
        for (path, bearer) in [
            ("/api/v2/self", true),
            ("/ws/events", true),
            ("/api/v2/self", false),
            ("/ws/events", false),
            ("/page", true),
        ] {
            let mut request = client.get(format!("http://{addr}{path}"));
            if bearer {
                request = request.bearer_auth("ocsp_x");
            }
            let answer = request.send().await.unwrap_or_else(|e| panic!("{e}"));
            seen.push(answer.text().await.unwrap_or_default());
        }

        assert_eq!(seen, ["false", "false", "true", "true", "true"]);
    }

    #[tokio::test]
    async fn a_failed_save_answers_503_rather_than_a_bare_500() {
        let bare = serve(false).await;
        let (status, body) = get_with_accept(&bare, "*/*").await;
        assert_eq!(status, 500, "what the session layer does on its own");
        assert!(body.is_empty());

        let url = serve(true).await;
        let (status, body) = get_with_accept(&url, "text/html,*/*;q=0.8").await;
        assert_eq!(status, 503);
        assert!(body.contains("Sessions are unavailable"), "{body}");

        let (status, body) = get_with_accept(&url, "application/json").await;
        assert_eq!(status, 503);
        let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        assert!(
            json["error"]
                .as_str()
                .is_some_and(|e| e.contains("session store")),
            "{body}"
        );
    }
}
