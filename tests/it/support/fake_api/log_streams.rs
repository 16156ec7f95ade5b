//! The API's v4 log streams, as Server-Sent Events:
//! `/v4/logs/organisations/{owner}/applications/{app}/logs` (`APPLICATION_LOG`
//! events) and `/v4/accesslogs/organisations/{owner}/applications/{app}/accesslogs`
//! (`ACCESS_LOG` events).
//!
//! Every line a test writes gets the next event id, so a client that comes
//! back with `Last-Event-ID: n` gets the lines after `n` and nothing else. A
//! stream sends what matches its query (`filter`, `deploymentId`,
//! `instanceId`), then each new line as it is written, with a `HEARTBEAT`
//! event whenever it has been quiet for the heartbeat period. A test can make
//! every open stream break off (no `END_OF_STREAM`, like a crashed server) or
//! end it cleanly with `END_OF_STREAM {"endedBy": …}`, and sees each request's
//! query and `Last-Event-ID`.

use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::stream;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{SharedState, lock};

/// How often a quiet stream says it is alive, unless a test changes it (the
/// real API sends one about every 2 s).
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);

pub(super) fn router() -> Router<SharedState> {
    Router::new()
        .route(
            "/v4/logs/organisations/{owner_id}/applications/{app_id}/logs",
            get(log_stream),
        )
        .route(
            "/v4/accesslogs/organisations/{owner_id}/applications/{app_id}/accesslogs",
            get(log_stream),
        )
}

/// Which of the two streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogKind {
    /// Application logs, `APPLICATION_LOG` events.
    Application,
    /// Access logs, `ACCESS_LOG` events.
    Access,
}

impl LogKind {
    fn event_name(self) -> &'static str {
        match self {
            Self::Application => "APPLICATION_LOG",
            Self::Access => "ACCESS_LOG",
        }
    }
}

/// An application log line a test writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppLog {
    /// The line's text.
    pub message: String,
    /// The instance that wrote it.
    pub instance_id: String,
    /// The deployment it belongs to.
    pub deployment_id: String,
    /// `INFO`, `ERROR`, …
    pub severity: String,
}

/// The instance id of lines written without one.
pub const FAKE_INSTANCE_ID: &str = "3b1f0c52-7d7e-4a0a-9c43-7f2d1c000001";
/// The deployment id of lines written without one.
pub const FAKE_DEPLOYMENT_ID: &str = "deployment_8b3e2a10-5f6c-4d1e-9a7b-000000000001";

impl AppLog {
    /// `message` at `INFO`, from the default instance and deployment.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            instance_id: FAKE_INSTANCE_ID.to_owned(),
            deployment_id: FAKE_DEPLOYMENT_ID.to_owned(),
            severity: "INFO".to_owned(),
        }
    }
}

/// An access log line a test writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLog {
    /// `GET`, `POST`, …
    pub method: String,
    /// The request's path.
    pub path: String,
    /// The answer's status code.
    pub status: u16,
    /// The caller's address.
    pub source_ip: String,
    /// How long the answer took, in milliseconds.
    pub duration_ms: u64,
}

/// One request for a log stream, as the fake received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogStreamRequest {
    /// Which stream.
    pub kind: LogKind,
    /// The owner id of the path (an organisation's or a user's id).
    pub owner_id: String,
    /// The application id of the path.
    pub app_id: String,
    /// The decoded query parameters, in order.
    pub query: Vec<(String, String)>,
    /// The `Last-Event-ID` header, if any.
    pub last_event_id: Option<String>,
}

impl LogStreamRequest {
    /// Every value of query parameter `name`, in order.
    pub fn params(&self, name: &str) -> Vec<&str> {
        self.query
            .iter()
            .filter(|(candidate, _)| candidate == name)
            .map(|(_, value)| value.as_str())
            .collect()
    }

    /// The first value of query parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params(name).first().copied()
    }
}

/// A written line: its id and where it belongs.
#[derive(Debug, Clone)]
struct StoredLine {
    id: u64,
    kind: LogKind,
    app_id: String,
    /// For `filter`, `instanceId` and `deploymentId`.
    app_log: Option<AppLog>,
    data: Value,
}

/// How an open stream is told to finish.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fate {
    /// Break off without `END_OF_STREAM`.
    Drop,
    /// Send `END_OF_STREAM` with this `endedBy`, then close.
    End(String),
}

/// What the fake remembers of the log streams.
#[derive(Debug)]
pub(super) struct LogStreams {
    lines: Vec<StoredLine>,
    requests: Vec<LogStreamRequest>,
    /// For each request that opened a stream, how it must finish (`None`:
    /// not yet told, or already finished).
    fates: Vec<Option<Fate>>,
    pub heartbeat: Duration,
    /// The v4 endpoints answer 404, as on an API without them.
    pub missing: bool,
    /// Bumped on every change, to wake the open streams.
    changed: watch::Sender<u64>,
}

impl Default for LogStreams {
    fn default() -> Self {
        Self {
            lines: Vec::new(),
            requests: Vec::new(),
            fates: Vec::new(),
            heartbeat: DEFAULT_HEARTBEAT,
            missing: false,
            changed: watch::channel(0).0,
        }
    }
}

impl LogStreams {
    pub fn requests(&self) -> &[LogStreamRequest] {
        &self.requests
    }

    /// Stores an application log line and returns its event id.
    pub fn write_app_log(&mut self, app_id: &str, line: AppLog) -> u64 {
        let id = self.next_id();
        let data = json!({
            "id": format!("log-{id}"),
            "date": now_rfc3339(),
            "applicationId": app_id,
            "instanceId": line.instance_id,
            "deploymentId": line.deployment_id,
            "severity": line.severity,
            "message": line.message,
            "service": "bas",
            "region": "par",
            "zone": "par-1",
        });
        self.store(StoredLine {
            id,
            kind: LogKind::Application,
            app_id: app_id.to_owned(),
            app_log: Some(line),
            data,
        })
    }

    /// Stores an access log line and returns its event id.
    pub fn write_access_log(&mut self, app_id: &str, line: &AccessLog) -> u64 {
        let id = self.next_id();
        let data = json!({
            "id": format!("access-{id}"),
            "date": now_rfc3339(),
            "applicationId": app_id,
            "instanceId": FAKE_INSTANCE_ID,
            "http": {
                "request": { "method": line.method, "path": line.path, "host": "app.example.com", "scheme": "https" },
                "response": { "statusCode": line.status, "time": line.duration_ms },
            },
            "source": { "ip": line.source_ip, "port": 51234 },
            "bytesIn": 120,
            "bytesOut": 2048,
        });
        self.store(StoredLine {
            id,
            kind: LogKind::Access,
            app_id: app_id.to_owned(),
            app_log: None,
            data,
        })
    }

    /// Tells every open stream how to finish.
    pub fn finish_open_streams(&mut self, ended_by: Option<&str>) {
        let fate = ended_by.map_or(Fate::Drop, |reason| Fate::End(reason.to_owned()));
        for slot in &mut self.fates {
            if slot.is_none() {
                *slot = Some(fate.clone());
            }
        }
        self.changed.send_modify(|version| *version += 1);
    }

    fn next_id(&self) -> u64 {
        self.lines.last().map_or(1, |line| line.id + 1)
    }

    fn store(&mut self, line: StoredLine) -> u64 {
        let id = line.id;
        self.lines.push(line);
        self.changed.send_modify(|version| *version += 1);
        id
    }

    /// Remembers a stream's request; returns its index for [`Self::step`].
    fn open(&mut self, request: LogStreamRequest) -> usize {
        self.requests.push(request);
        self.fates.push(None);
        self.requests.len() - 1
    }

    /// What stream `index` sends next, having sent every line up to `after`.
    fn step(&mut self, index: usize, after: u64) -> Step {
        match self.fates.get_mut(index).and_then(Option::take) {
            // Marked finished (`take`): a later `finish_open_streams` skips it.
            Some(Fate::Drop) => return Step::Drop,
            Some(Fate::End(reason)) => return Step::End(reason),
            None => {}
        }
        let request = &self.requests[index];
        let next = self
            .lines
            .iter()
            .filter(|line| line.id > after)
            .find(|line| matches(request, line));
        match next {
            Some(line) => Step::Send(line.id, line.data.clone()),
            None => Step::Wait(self.changed.subscribe(), self.heartbeat),
        }
    }
}

/// What a stream does next.
enum Step {
    Send(u64, Value),
    Drop,
    End(String),
    /// Nothing to send: wait for a change, or send a heartbeat after this long.
    Wait(watch::Receiver<u64>, Duration),
}

/// Whether `line` belongs to the stream `request` asked for.
fn matches(request: &LogStreamRequest, line: &StoredLine) -> bool {
    if line.kind != request.kind || line.app_id != request.app_id {
        return false;
    }
    let Some(log) = &line.app_log else {
        return true;
    };
    let instances = request.params("instanceId");
    request
        .param("filter")
        .is_none_or(|text| log.message.contains(text))
        && request
            .param("deploymentId")
            .is_none_or(|id| id == log.deployment_id)
        && (instances.is_empty() || instances.contains(&log.instance_id.as_str()))
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Either stream; the path's first segment after `/v4/` says which.
async fn log_stream(
    State(state): State<SharedState>,
    Path((owner_id, app_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let kind = if uri.path().starts_with("/v4/accesslogs/") {
        LogKind::Access
    } else {
        LogKind::Application
    };
    serve(state, kind, owner_id, app_id, query, &headers)
}

fn serve(
    state: SharedState,
    kind: LogKind,
    owner_id: String,
    app_id: String,
    query: Option<String>,
    headers: &HeaderMap,
) -> Response {
    let refuse =
        |status: StatusCode, error: &str| (status, Json(json!({ "error": error }))).into_response();
    if lock(&state).log_streams.missing {
        return refuse(StatusCode::NOT_FOUND, "Not Found");
    }
    let Ok(query) = serde_urlencoded::from_str(query.as_deref().unwrap_or_default()) else {
        return refuse(StatusCode::BAD_REQUEST, "malformed query string");
    };
    let last_event_id = headers
        .get("last-event-id")
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
    let after = match last_event_id.as_deref().map(str::parse::<u64>) {
        None => 0,
        Some(Ok(id)) => id,
        Some(Err(_)) => return refuse(StatusCode::BAD_REQUEST, "Last-Event-ID is not an event id"),
    };
    let index = lock(&state).log_streams.open(LogStreamRequest {
        kind,
        owner_id,
        app_id,
        query,
        last_event_id,
    });
    Sse::new(events(state, kind, index, after)).into_response()
}

/// Where a stream is: the last line id sent, when the next heartbeat is
/// due, and whether it is over.
struct Cursor {
    after: u64,
    heartbeat_due: Option<Instant>,
    done: bool,
}

fn events(
    state: SharedState,
    kind: LogKind,
    index: usize,
    after: u64,
) -> impl futures_util::Stream<Item = Result<Event, std::io::Error>> {
    let cursor = Cursor {
        after,
        heartbeat_due: None,
        done: false,
    };
    stream::unfold(cursor, move |mut cursor| {
        let state = state.clone();
        async move {
            if cursor.done {
                return None;
            }
            loop {
                let step = lock(&state).log_streams.step(index, cursor.after);
                match step {
                    Step::Send(id, data) => {
                        cursor.after = id;
                        cursor.heartbeat_due = None;
                        let event = Event::default()
                            .id(id.to_string())
                            .event(kind.event_name())
                            .data(data.to_string());
                        return Some((Ok(event), cursor));
                    }
                    Step::Drop => {
                        cursor.done = true;
                        let broken = std::io::Error::other("the fake API dropped the stream");
                        return Some((Err(broken), cursor));
                    }
                    Step::End(reason) => {
                        cursor.done = true;
                        let event = Event::default()
                            .event("END_OF_STREAM")
                            .data(json!({ "endedBy": reason }).to_string());
                        return Some((Ok(event), cursor));
                    }
                    Step::Wait(mut changed, period) => {
                        let due = *cursor
                            .heartbeat_due
                            .get_or_insert_with(|| Instant::now() + period);
                        tokio::select! {
                            _ = changed.changed() => {}
                            () = tokio::time::sleep_until(due) => {
                                cursor.heartbeat_due = None;
                                return Some((Ok(Event::default().event("HEARTBEAT")), cursor));
                            }
                        }
                    }
                }
            }
        }
    })
}
