//! Middleware around the routes: which requests get a session, and the
//! answer when the session store fails under the session layer.

use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};

use crate::auth::AuthError;
use crate::error::store_unavailable_page;
use crate::session::watch_failures;

/// Applies the session layers (`L`) to every request but bearer calls to
/// the proxy, which are judged on their token alone (see
/// [`crate::auth::Caller`]): for those, making and dropping a session that
/// nothing reads cost several percent of the proxy's CPU time.
#[derive(Clone, Debug)]
pub struct UnlessBearerProxyCall<L>(pub L);

impl<L, S> tower::Layer<S> for UnlessBearerProxyCall<L>
where
    L: tower::Layer<S>,
    S: Clone,
{
    type Service = UnlessBearerProxyCallService<S, L::Service>;

    fn layer(&self, inner: S) -> Self::Service {
        UnlessBearerProxyCallService {
            plain: inner.clone(),
            layered: self.0.layer(inner),
        }
    }
}

/// The service of [`UnlessBearerProxyCall`]: the inner service, plain or
/// wrapped in the session layers.
#[derive(Clone, Debug)]
pub struct UnlessBearerProxyCallService<S, T> {
    plain: S,
    layered: T,
}

impl<S, T> tower::Service<Request> for UnlessBearerProxyCallService<S, T>
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

    fn call(&mut self, request: Request) -> Self::Future {
        let bearer_proxy_call = request
            .uri()
            .path()
            .starts_with(crate::proxy::target::PREFIX)
            && request.headers().contains_key(header::AUTHORIZATION);
        if bearer_proxy_call {
            futures_util::future::Either::Left(self.plain.call(request))
        } else {
            futures_util::future::Either::Right(self.layered.call(request))
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
    use crate::session::{Backend, SealingKey, SetInsert, SetKey, Store, layer};

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
            .layer(layer(store, &config));
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
    async fn only_bearer_proxy_calls_go_around_the_session_layer() {
        let config = Config::from_args(["test"]).unwrap_or_else(|e| panic!("{e}"));
        let store = Store::new(WriteFails, &SealingKey::random());
        let has_session = |request: Request| async move {
            request.extensions().get::<Session>().is_some().to_string()
        };
        let router = Router::new()
            .route("/api/{*path}", get(has_session))
            .route("/page", get(has_session))
            .layer(UnlessBearerProxyCall(layer(store, &config)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(async move { axum::serve(listener, router).await });
        let client = reqwest::Client::new();

        let mut seen = Vec::new();
        for (path, bearer) in [
            ("/api/v2/self", true),
            ("/api/v2/self", false),
            ("/page", true),
        ] {
            let mut request = client.get(format!("http://{addr}{path}"));
            if bearer {
                request = request.bearer_auth("ocsp_x");
            }
            let answer = request.send().await.unwrap_or_else(|e| panic!("{e}"));
            seen.push(answer.text().await.unwrap_or_default());
        }

        assert_eq!(seen, ["false", "true", "true"]);
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
