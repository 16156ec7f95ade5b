//! The server's edge against hostile clients: slow and oversized heads,
//! made-up methods, forwarding headers, API answers a browser would render,
//! long uploads, a full API pool, and one person opening many relays.
//!
//! Timing assertions are bounds with seconds of slack, never tight figures:
//! the machine running them may be busy.

use std::time::Duration;

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::support::{Options, TestApp};

/// Longest any test waits for something that should happen, so a broken
/// server fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(20);

/// A server with the given extra flags.
async fn spawn(extra_args: &[&str]) -> TestApp {
    TestApp::spawn_with(Options {
        extra_args: extra_args.iter().map(|arg| (*arg).to_owned()).collect(),
        ..Options::default()
    })
    .await
}

/// Reads from `socket` until the server closes it (or resets it), and
/// returns what arrived.
async fn read_until_closed(socket: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buffer = [0_u8; 4096];
    loop {
        match socket.read(&mut buffer).await {
            Ok(0) | Err(_) => return received,
            Ok(read) => received.extend_from_slice(&buffer[..read]),
        }
    }
}

/// Reads one answer to a request for `/health` (a small body of known
/// length) from `socket`; `None` if the connection closed first.
async fn read_health_answer(socket: &mut TcpStream) -> Option<String> {
    let mut received = Vec::new();
    let mut buffer = [0_u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&received).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|line| {
                    line.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|value| value.trim().parse::<usize>())
                })
                .and_then(Result::ok)
                .unwrap_or(0);
            if body.len() >= length {
                return Some(head.lines().next().unwrap_or_default().to_owned());
            }
        }
        match socket.read(&mut buffer).await {
            Ok(0) | Err(_) => return None,
            Ok(read) => received.extend_from_slice(&buffer[..read]),
        }
    }
}

const HEAD_TIMEOUT_SECS: u64 = 1;

#[tokio::test]
async fn a_silent_head_is_cut_after_the_header_read_time_out_with_408() {
    // Arrange
    let app = spawn(&["--header-read-timeout-secs", "1"]).await;
    let mut socket = TcpStream::connect(app.addr).await.expect("connect");

    // Act: half a head, then nothing.
    socket
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let received = tokio::time::timeout(PATIENCE, read_until_closed(&mut socket))
        .await
        .expect("the server closes the connection");

    // Assert
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(HEAD_TIMEOUT_SECS + 2),
        "cut after {elapsed:?}"
    );
    let received = String::from_utf8_lossy(&received);
    assert!(received.starts_with("HTTP/1.1 408"), "{received:?}");
}

#[tokio::test]
async fn a_trickling_head_is_cut_after_the_header_read_time_out() {
    // Arrange
    let app = spawn(&["--header-read-timeout-secs", "1"]).await;
    let socket = TcpStream::connect(app.addr).await.expect("connect");
    let (mut reading, mut writing) = socket.into_split();

    // Act: one header line every 200 ms, for as long as the server listens.
    writing
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        for line in 0..100 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let header = format!("x-trickle-{line}: 1\r\n");
            if writing.write_all(header.as_bytes()).await.is_err() {
                return line;
            }
        }
        100
    });
    let mut buffer = [0_u8; 4096];
    let closed = tokio::time::timeout(PATIENCE, async {
        loop {
            match reading.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;

    // Assert
    let elapsed = started.elapsed();
    assert!(closed.is_ok(), "the server never closed the connection");
    assert!(
        elapsed < Duration::from_secs(HEAD_TIMEOUT_SECS + 2),
        "cut after {elapsed:?}"
    );
    trickle.abort();
}

#[tokio::test]
async fn a_kept_alive_connection_may_wait_longer_than_a_head_then_is_closed_when_idle() {
    // Arrange: heads get 1 s, a connection between requests 4 s.
    let app = spawn(&[
        "--header-read-timeout-secs",
        "1",
        "--keepalive-idle-secs",
        "4",
    ])
    .await;
    let mut socket = TcpStream::connect(app.addr).await.expect("connect");
    let request = b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n";
    socket.write_all(request).await.expect("write");
    let first = read_health_answer(&mut socket).await;

    // Act: idle for twice the head time-out, then a second request.
    tokio::time::sleep(Duration::from_secs(2)).await;
    socket.write_all(request).await.expect("write");
    let second = read_health_answer(&mut socket).await;
    let idle_from = Instant::now();
    let after_idle = tokio::time::timeout(PATIENCE, read_until_closed(&mut socket))
        .await
        .expect("the server closes an idle connection");

    // Assert
    assert_eq!(first.as_deref(), Some("HTTP/1.1 200 OK"));
    assert_eq!(second.as_deref(), Some("HTTP/1.1 200 OK"), "still open");
    let idle = idle_from.elapsed();
    assert!(idle < Duration::from_secs(4 + 2), "closed after {idle:?}");
    assert!(
        after_idle.is_empty(),
        "an idle connection is closed without an answer: {:?}",
        String::from_utf8_lossy(&after_idle)
    );
}

#[tokio::test]
async fn a_64_kib_header_gets_431() {
    // Arrange
    let app = spawn(&[]).await;
    let big = "a".repeat(64 * 1024);

    // Act
    let response = reqwest::Client::new()
        .get(app.at("/health"))
        .header("x-big", big)
        .send()
        .await
        .expect("an answer");
    let normal = reqwest::Client::new()
        .get(app.at("/health"))
        .header("x-small", "a".repeat(16 * 1024))
        .send()
        .await
        .expect("an answer");

    // Assert
    assert_eq!(
        response.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    assert_eq!(
        normal.status(),
        StatusCode::OK,
        "16 KiB is within the limit"
    );
}
