//! The API's v4 log streams (Server-Sent Events) through the proxy, with the
//! browser's session cookie as the dashboard reads them: each event as soon
//! as the API sends it, `Last-Event-ID` passed on, and a drop upstream seen
//! as a drop.

use std::time::Duration;

use reqwest::{Client, Response, StatusCode};

use crate::support::TestApp;
use crate::support::fake_api::{AppLog, FAKE_INSTANCE_ID, LogKind};

/// How long a test waits for an event before failing.
const PATIENCE: Duration = Duration::from_secs(10);
const OWNER: &str = "orga_3a9e1a4c-1f00-4d2b-8f00-000000000042";
const APP: &str = "app_11111111-1111-1111-1111-111111111111";

fn logs_path(query: &str) -> String {
    format!("/api/v4/logs/organisations/{OWNER}/applications/{APP}/logs{query}")
}

/// One event of a stream: its `id`, `event` and `data` fields.
#[derive(Debug, Default, PartialEq, Eq)]
struct SseEvent {
    id: Option<String>,
    event: String,
    data: String,
}

/// Reads a stream event by event.
struct EventReader {
    response: Response,
    buffer: String,
}

impl EventReader {
    async fn open(
        client: &Client,
        app: &TestApp,
        query: &str,
        last_event_id: Option<&str>,
    ) -> Self {
        let mut request = client
            .get(app.at(&logs_path(query)))
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.expect("GET the log stream");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["content-type"].to_str().ok(),
            Some("text/event-stream")
        );
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next chunk of the body: `Ok(None)` at a clean end, `Err` when the
    /// connection broke off; fails the test if nothing comes in time.
    async fn chunk(&mut self) -> reqwest::Result<Option<bytes::Bytes>> {
        tokio::time::timeout(PATIENCE, self.response.chunk())
            .await
            .expect("the stream sends something in time")
    }

    /// The next event; `None` if the stream ended cleanly first.
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent::default();
                for line in block.lines() {
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
                    match field {
                        "id" => event.id = Some(value),
                        "event" => event.event = value,
                        "data" => event.data = value,
                        _ => {}
                    }
                }
                return Some(event);
            }
            let chunk = self.chunk().await.expect("the stream stays readable")?;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// The next event that is not a heartbeat.
    async fn next_line(&mut self) -> Option<SseEvent> {
        let skip_heartbeats = async {
            loop {
                let event = self.next().await?;
                if event.event != "HEARTBEAT" {
                    return Some(event);
                }
            }
        };
        tokio::time::timeout(PATIENCE, skip_heartbeats)
            .await
            .expect("a line arrives in time")
    }
}

/// A logged-in browser's stream of the application's logs, unfiltered,
/// with heartbeats `heartbeat` apart.
async fn live_stream(heartbeat: Duration) -> (TestApp, EventReader) {
    let app = TestApp::spawn().await;
    app.api.set_log_heartbeat(heartbeat);
    let browser = app.logged_in_browser().await;
    let stream = EventReader::open(&browser, &app, "", None).await;
    (app, stream)
}

#[tokio::test]
async fn each_log_line_crosses_the_proxy_as_soon_as_the_api_sends_it() {
    // Arrange: no heartbeat to hide a buffered line behind.
    let (app, mut stream) = live_stream(Duration::from_secs(600)).await;

    // Act / Assert: each line arrives on its own while the stream stays open.
    for message in ["first line", "second line"] {
        let id = app.api.write_app_log(APP, AppLog::new(message));
        let event = stream.next_line().await.expect("an event");
        assert_eq!(event.event, "APPLICATION_LOG");
        assert_eq!(event.id, Some(id.to_string()));
        let data: serde_json::Value = serde_json::from_str(&event.data).expect("JSON data");
        assert_eq!(data["message"], message);
    }

    // The API ends the stream: END_OF_STREAM says why, then the body ends.
    app.api.end_log_streams("UNTIL_REACHED");
    let end = stream.next().await.expect("END_OF_STREAM");
    assert_eq!(end.event, "END_OF_STREAM");
    assert_eq!(end.data, r#"{"endedBy":"UNTIL_REACHED"}"#);
    assert!(stream.next().await.is_none(), "the stream is over");
}

#[tokio::test]
async fn last_event_id_reaches_the_api_and_the_stream_resumes_after_it() {
    // Arrange
    let app = TestApp::spawn().await;
    let browser = app.logged_in_browser().await;
    for n in 1..=3 {
        app.api.write_app_log(APP, AppLog::new(format!("line {n}")));
    }

    // Act
    let query = format!(
        "?since=2026-05-01T00%3A00%3A00.000Z&filter=line&instanceId=other&instanceId={FAKE_INSTANCE_ID}"
    );
    let mut stream = EventReader::open(&browser, &app, &query, Some("1")).await;
    let second = stream.next_line().await.expect("an event");
    let third = stream.next_line().await.expect("an event");

    // Assert: what the API got, and what came back.
    let requests = app.api.log_streams();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.kind, LogKind::Application);
    assert_eq!(
        (request.owner_id.as_str(), request.app_id.as_str()),
        (OWNER, APP)
    );
    assert_eq!(request.last_event_id.as_deref(), Some("1"));
    assert_eq!(request.param("since"), Some("2026-05-01T00:00:00.000Z"));
    assert_eq!(request.params("instanceId"), ["other", FAKE_INSTANCE_ID]);
    assert_eq!(
        (second.id.as_deref(), third.id.as_deref()),
        (Some("2"), Some("3")),
        "the lines after the last one seen, and not that one"
    );
}

#[tokio::test]
async fn a_drop_upstream_reaches_the_client_as_a_drop_not_as_an_end() {
    // Arrange
    let (app, mut stream) = live_stream(Duration::from_secs(1)).await;
    app.api.write_app_log(APP, AppLog::new("before the drop"));
    stream.next_line().await.expect("the first line");

    // Act
    app.api.drop_log_streams();

    // Assert: the body breaks off; a clean end would read as END_OF_STREAM
    // missing, which a client could not tell from a finished stream.
    let outcome = loop {
        match stream.chunk().await {
            Ok(Some(_)) => {}
            other => break other,
        }
    };
    assert!(outcome.is_err(), "the body broke off: {outcome:?}");
}

#[tokio::test]
async fn a_quiet_stream_sends_heartbeats() {
    let (_app, mut stream) = live_stream(Duration::from_millis(100)).await;

    let first = stream.next().await.expect("an event");
    let second = stream.next().await.expect("an event");

    assert_eq!(
        (first.event.as_str(), second.event.as_str()),
        ("HEARTBEAT", "HEARTBEAT")
    );
    assert_eq!(first.id, None, "a heartbeat moves no resume point");
}
