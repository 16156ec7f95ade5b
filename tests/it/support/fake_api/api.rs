//! The "API": every path outside `/v2/oauth/`, behind an access-token
//! signature check. A few known calls, and a JSON echo for everything else.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes, to_bytes};
use axum::extract::{Query, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use futures_util::{StreamExt as _, TryStreamExt as _, stream};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::state::{Refusal, TokenKind, hex};
use super::verify::Params;
use super::{
    FAKE_ORGANISATION_ID, FAKE_USER_EMAIL, FAKE_USER_ID, FAKE_USER_NAME, FakeApi, SharedState,
    header_pairs, is_form, lock, signed_request, unix_now,
};

/// The largest form body read whole to check its signature.
const FORM_BODY_LIMIT: usize = 16 * 1024 * 1024;
/// Echoed bodies up to this size come back as text too.
const ECHO_TEXT_LIMIT: usize = 64 * 1024;
/// Chunk size of `/download`.
const DOWNLOAD_CHUNK: u64 = 64 * 1024;

pub(super) fn router(state: SharedState) -> Router<SharedState> {
    Router::new()
        .route("/v2/self", get(get_self))
        .route(
            "/v2/self/tokens/{token}",
            axum::routing::delete(revoke_own_token),
        )
        .route("/v2/summary", get(summary))
        .route("/v2/test/stream/sse", get(sse))
        .route("/v2/test/download", get(download))
        .route("/v2/test/slow", get(slow))
        .route("/v2/test/html", get(html))
        .merge(super::log_streams::router())
        .fallback(echo)
        .layer(middleware::from_fn_with_state(state, authenticate))
        .layer(middleware::map_response(add_api_headers))
}

/// Who called, once the signature checked out.
#[derive(Debug, Clone)]
struct Caller {
    consumer_key: String,
    token: String,
    signature_method: &'static str,
    query: Params,
}

/// Lets through only calls signed with a registered consumer and one of its
/// access tokens; answers 401 `{"error": …}` otherwise.
async fn authenticate(State(state): State<SharedState>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let (form_body, body) = if is_form(&parts) {
        match to_bytes(body, FORM_BODY_LIMIT).await {
            Ok(bytes) => (Some(bytes.clone()), Body::from(bytes)),
            Err(_) => {
                return Refusal::bad_request("form body unreadable or too large")
                    .into_json_response();
            }
        }
    } else {
        (None, body)
    };
    let caller = signed_request(&parts, form_body.as_deref()).and_then(|request| {
        lock(&state).check(&request, TokenKind::Access, unix_now())?;
        Ok(Caller {
            consumer_key: request.consumer_key().to_owned(),
            token: request.token().unwrap_or_default().to_owned(),
            signature_method: request.signature_method().as_str(),
            query: request.query().clone(),
        })
    });
    match caller {
        Ok(caller) => {
            parts.extensions.insert(caller);
            next.run(Request::from_parts(parts, body)).await
        }
        Err(refusal) => {
            // Read the refused body anyway, so the client gets its answer
            // rather than a reset connection (and the record counts it).
            body.into_data_stream()
                .for_each(|_| std::future::ready(()))
                .await;
            refusal.into_json_response()
        }
    }
}

/// Headers the proxy in front of us should handle: a cookie and a CORS
/// grant it must not let through, and a marker that the answer came from
/// here.
async fn add_api_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.append(
        header::SET_COOKIE,
        HeaderValue::from_static("api_session=should-not-leak; Path=/"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert("x-fake-api", HeaderValue::from_static("1"));
    response
}

fn fake_user() -> Value {
    user_named(FAKE_USER_ID)
}

/// The account of `id`: the fake's own user, or another person.
fn user_named(id: &str) -> Value {
    let (name, email) = if id == FAKE_USER_ID {
        (FAKE_USER_NAME.to_owned(), FAKE_USER_EMAIL.to_owned())
    } else {
        (format!("Someone {id}"), format!("{id}@example.com"))
    };
    json!({
        "id": id,
        "name": name,
        "email": email,
        "avatar": "https://example.com/avatars/ada.png",
        "creationDate": 1_437_000_000_000_u64,
        "lang": "EN",
        "emailValidated": true,
    })
}

/// Whom the calling token belongs to; 403 when the fake is told to refuse
/// (a consumer without the right to read the account).
async fn get_self(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
) -> Response {
    let mut state = lock(&state);
    state.note_identity_check(&caller.token);
    if state.fail_self {
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": "down for maintenance"})),
        )
            .into_response();
    }
    if state.refuse_self {
        return (
            axum::http::StatusCode::FORBIDDEN,
            Json(json!({"error": "this consumer may not read the account"})),
        )
            .into_response();
    }
    let user = state.owner_of(&caller.token).unwrap_or(FAKE_USER_ID);
    Json(user_named(user)).into_response()
}

/// `DELETE /v2/self/tokens/{token}`: a token revokes itself (and only
/// itself); calls signed with it are refused afterwards.
async fn revoke_own_token(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    axum::extract::Path(token): axum::extract::Path<String>,
    request: Request,
) -> Response {
    if token != caller.token {
        // Not its own: the proxy tests' echo of any path.
        let (parts, body) = request.into_parts();
        return echo(Extension(caller), Request::from_parts(parts, body)).await;
    }
    lock(&state).revoke_access_token(&token);
    axum::http::StatusCode::NO_CONTENT.into_response()
}

async fn summary() -> Json<Value> {
    Json(json!({
        "user": fake_user(),
        "organisations": [{
            "id": FAKE_USER_ID,
            "name": FAKE_USER_NAME,
            "applications": [
                {
                    "id": "app_11111111-1111-1111-1111-111111111111",
                    "name": "hello-world",
                    "state": "SHOULD_BE_UP",
                },
                {
                    "id": "app_22222222-2222-2222-2222-222222222222",
                    "name": "sleepy-worker",
                    "state": "SHOULD_BE_DOWN",
                },
            ],
            "addons": [],
        }, {
            "id": FAKE_ORGANISATION_ID,
            "name": "Analytical Engines",
            "applications": [{
                "id": "app_33333333-3333-3333-3333-333333333333",
                "name": "difference-engine",
                "state": "SHOULD_BE_UP",
            }],
            "addons": [],
        }],
    }))
}

#[derive(Debug, Deserialize)]
struct SseParams {
    count: u64,
    interval_ms: u64,
}

/// `count` events `interval_ms` apart, each sent as soon as it is due.
async fn sse(Query(params): Query<SseParams>) -> impl IntoResponse {
    let interval = Duration::from_millis(params.interval_ms);
    let events = stream::unfold(0, move |n| async move {
        if n >= params.count {
            return None;
        }
        if n > 0 {
            tokio::time::sleep(interval).await;
        }
        let event = Event::default()
            .id(n.to_string())
            .event("APPLICATION_LOG")
            .data(json!({ "n": n }).to_string());
        Some((Ok::<_, Infallible>(event), n + 1))
    });
    Sse::new(events)
}

#[derive(Debug, Deserialize)]
struct DownloadParams {
    bytes: u64,
}

/// `bytes` bytes of [`FakeApi::download_byte`], in chunks, with a length.
async fn download(Query(params): Query<DownloadParams>) -> Response {
    let total = params.bytes;
    let chunks = stream::iter((0..total).step_by(DOWNLOAD_CHUNK as usize)).map(move |start| {
        let end = total.min(start + DOWNLOAD_CHUNK);
        Ok::<_, Infallible>(Bytes::from_iter((start..end).map(FakeApi::download_byte)))
    });
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_LENGTH, total.to_string()),
        ],
        Body::from_stream(chunks),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
struct SlowParams {
    ms: u64,
}

async fn slow(Query(params): Query<SlowParams>) -> Json<Value> {
    tokio::time::sleep(Duration::from_millis(params.ms)).await;
    Json(json!({ "slept_ms": params.ms }))
}

/// A page with a script and a lax policy of its own, as an API answer a
/// browser would render.
async fn html() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, "script-src *"),
            (header::X_CONTENT_TYPE_OPTIONS, "sniff"),
        ],
        "<script>fetch('/tokens', { method: 'POST' })</script>",
    )
        .into_response()
}

/// Describes the request back, reading the body as a stream.
async fn echo(Extension(caller): Extension<Caller>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(digest) = BodyDigest::read(body).await else {
        return Refusal::bad_request("request body broke off").into_json_response();
    };
    Json(json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "raw_query": parts.uri.query(),
        "query": caller.query,
        "headers": header_pairs(&parts.headers),
        "body_len": digest.len,
        "body_sha256": hex(&digest.sha256),
        "body_text": digest.text,
        "oauth": {
            "oauth_consumer_key": caller.consumer_key,
            "oauth_token": caller.token,
            "oauth_signature_method": caller.signature_method,
        },
    }))
    .into_response()
}

/// Length, SHA-256 and (when short and UTF-8) text of a body.
struct BodyDigest {
    len: usize,
    sha256: Vec<u8>,
    text: Option<String>,
}

impl BodyDigest {
    async fn read(body: Body) -> Result<Self, axum::Error> {
        let mut chunks = body.into_data_stream();
        let mut hasher = Sha256::new();
        let mut len = 0;
        let mut prefix = Some(Vec::new());
        while let Some(chunk) = chunks.try_next().await? {
            hasher.update(&chunk);
            len += chunk.len();
            prefix = prefix
                .filter(|kept| kept.len() + chunk.len() <= ECHO_TEXT_LIMIT)
                .map(|mut kept| {
                    kept.extend_from_slice(&chunk);
                    kept
                });
        }
        Ok(Self {
            len,
            sha256: hasher.finalize().to_vec(),
            text: prefix.and_then(|kept| String::from_utf8(kept).ok()),
        })
    }
}
