//! Relay benchmark, driven by `bench/relay.sh`.
//!
//! `bench_relay stub ADDR` serves a stub of the API on ADDR: the OAuth token
//! endpoints (any signature accepted) and an events socket that says
//! `socket_ready`, floods on request (`{"flood":N,"size":S}`) and echoes
//! everything else.
//!
//! `bench_relay run SERVER_URL STUB_URL SERVER_PID MESSAGES IDLE_COUNTS` logs
//! in to the server (whose API is the stub), then measures:
//! - the server's memory per idle relay (RSS of SERVER_PID, delta / count)
//!   at each of IDLE_COUNTS (comma-separated, ascending);
//! - messages per second of a MESSAGES-message flood (of `MESSAGE_BYTES`
//!   bytes each, from the environment; 200 when unset), and the round-trip
//!   latency of small messages (p50, p99), through the relay and straight
//!   to the stub with the same client.
//!
//! With `BASELINE_SERVER` (a URL) and `BASELINE_PID` in the environment, the
//! floods also go through that server (an earlier build, in front of the
//! same stub), in the same alternating rounds, and the figure `relay / base`
//! compares the two builds.
//!
//! With `FORWARDER_URL` (a plain TCP forwarder in front of the stub, such as
//! socat), the floods also go through it: what any relay on that core can
//! reach at best, since it copies bytes and reads no frame.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use axum::extract::ws::{Message as AxumMessage, WebSocket, WebSocketUpgrade};
use axum::routing::get;
use futures_util::{SinkExt as _, StreamExt as _, stream};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

mod support;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Size of the flood's messages, about an event's, unless `MESSAGE_BYTES`
/// says otherwise.
const DEFAULT_MESSAGE_BYTES: usize = 200;
/// Round trips timed for the latency figures.
const LATENCY_SAMPLES: usize = 2_000;
/// Floods through each path, alternating.
const ROUNDS: usize = 15;
/// Relays opened at once while building up the idle ones.
const OPENING_CONCURRENCY: usize = 100;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match support::args().as_slice() {
        ["stub", addr] => stub(addr).await,
        ["run", server, stub, pid, messages, idle] => {
            let idle = idle
                .split(',')
                .map(str::parse)
                .collect::<Result<Vec<usize>, _>>()
                .context("IDLE_COUNTS: comma-separated numbers")?;
            run(server, stub, pid.parse()?, messages.parse()?, &idle).await
        }
        _ => bail!(
            "usage: bench_relay stub ADDR | bench_relay run SERVER_URL STUB_URL SERVER_PID MESSAGES IDLE_COUNTS"
        ),
    }
}

// ---- The API stub ----

async fn stub(addr: &str) -> anyhow::Result<()> {
    let app = support::oauth_stub().route(
        "/v2/events/event-socket",
        get(|upgrade: WebSocketUpgrade| async move {
            upgrade
                .read_buffer_size(8 * 1024)
                .write_buffer_size(8 * 1024)
                .on_upgrade(serve_socket)
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

async fn serve_socket(mut socket: WebSocket) {
    // The OAuth message comes first; the stub trusts it.
    if !matches!(socket.recv().await, Some(Ok(AxumMessage::Text(_)))) {
        return;
    }
    if socket
        .send(AxumMessage::text(r#"{"message_type":"socket_ready"}"#))
        .await
        .is_err()
    {
        return;
    }
    while let Some(Ok(message)) = socket.recv().await {
        let AxumMessage::Text(text) = message else {
            continue;
        };
        let request: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let sent = match (request["flood"].as_u64(), request["size"].as_u64()) {
            (Some(count), Some(size)) => flood(&mut socket, count, size).await,
            _ => socket.send(AxumMessage::Text(text)).await.is_ok(),
        };
        if !sent {
            return;
        }
    }
}

async fn flood(socket: &mut WebSocket, count: u64, size: u64) -> bool {
    let pad = "x".repeat(usize::try_from(size).unwrap_or(0).saturating_sub(20));
    for n in 0..count {
        let text = format!(r#"{{"n":{n},"pad":"{pad}"}}"#);
        if socket.feed(AxumMessage::text(text)).await.is_err() {
            return false;
        }
    }
    socket.flush().await.is_ok()
}

// ---- The client ----

/// Where a client connects, and with which headers.
struct Target {
    url: String,
    headers: Vec<(&'static str, String)>,
    /// Whether the client must send the OAuth message (straight to the stub).
    sends_auth: bool,
}

impl Target {
    async fn open(&self) -> anyhow::Result<Socket> {
        let mut request = self.url.as_str().into_client_request()?;
        for (name, value) in &self.headers {
            request
                .headers_mut()
                .insert(*name, HeaderValue::from_str(value)?);
        }
        let (mut socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .with_context(|| format!("connecting to {}", self.url))?;
        if self.sends_auth {
            socket
                .send(Message::text(
                    r#"{"message_type":"oauth","authorization":"OAuth stub"}"#,
                ))
                .await?;
        }
        match socket.next().await {
            Some(Ok(Message::Text(text))) if text.contains("socket_ready") => Ok(socket),
            other => bail!("expected socket_ready, got {other:?}"),
        }
    }
}

async fn run(
    server: &str,
    stub: &str,
    server_pid: u32,
    messages: u64,
    idle_counts: &[usize],
) -> anyhow::Result<()> {
    let message_bytes = match std::env::var("MESSAGE_BYTES") {
        Ok(bytes) => bytes.parse().context("MESSAGE_BYTES: a number of bytes")?,
        Err(_) => DEFAULT_MESSAGE_BYTES,
    };
    let cookie = support::log_in(server).await?;
    let relayed = Target {
        url: format!("{}/ws/events", server.replacen("http", "ws", 1)),
        headers: vec![("cookie", cookie), ("origin", server.to_owned())],
        sends_auth: false,
    };
    let direct = Target {
        url: format!("{}/v2/events/event-socket", stub.replacen("http", "ws", 1)),
        headers: Vec::new(),
        sends_auth: true,
    };

    // Memory first, on a server that has not yet relayed a flood.
    drop(relayed.open().await?);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = rss_kib(server_pid)?;
    let mut idle = Vec::new();
    for &count in idle_counts {
        let more = count.saturating_sub(idle.len());
        let opened: Vec<anyhow::Result<Socket>> = stream::iter(0..more)
            .map(|_| relayed.open())
            .buffer_unordered(OPENING_CONCURRENCY)
            .collect()
            .await;
        for socket in opened {
            idle.push(socket?);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let grown = rss_kib(server_pid)?.saturating_sub(baseline);
        println!(
            "idle relays: {count:>6}  server RSS +{grown} KiB  = {:.1} KiB per relay",
            grown as f64 / count as f64
        );
    }
    drop(idle);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let earlier_build = match (
        std::env::var("BASELINE_SERVER"),
        std::env::var("BASELINE_PID"),
    ) {
        (Ok(url), Ok(pid)) => {
            let cookie = support::log_in(&url).await?;
            let target = Target {
                url: format!("{}/ws/events", url.replacen("http", "ws", 1)),
                headers: vec![("cookie", cookie), ("origin", url.clone())],
                sends_auth: false,
            };
            Some((target, pid.parse::<u32>().context("BASELINE_PID")?))
        }
        _ => None,
    };
    let forwarder = std::env::var("FORWARDER_URL").ok().map(|url| Target {
        url: format!("{}/v2/events/event-socket", url.replacen("http", "ws", 1)),
        headers: Vec::new(),
        sends_auth: true,
    });
    let mut targets = vec![
        ("direct", &direct, None),
        ("relay", &relayed, Some(server_pid)),
    ];
    if let Some((target, pid)) = &earlier_build {
        targets.push(("base", target, Some(*pid)));
    }
    if let Some(target) = &forwarder {
        targets.push(("tcp", target, None));
    }

    // The targets alternate, so that the machine's other load weighs on all
    // alike; each round gives a ratio, and the median of those is the
    // figure (a best-of would let one lucky round decide).
    let mut rates = vec![Vec::new(); targets.len()];
    let mut server_cpu = vec![Duration::ZERO; targets.len()];
    for _ in 0..ROUNDS {
        for (index, (_, target, pid)) in targets.iter().enumerate() {
            let cpu_before = pid.map(cpu_time).transpose()?;
            rates[index].push(flood_rate(target, messages, message_bytes).await?);
            if let (Some(pid), Some(before)) = (pid, cpu_before) {
                server_cpu[index] += cpu_time(*pid)?.saturating_sub(before);
            }
        }
    }
    for (index, (name, target, pid)) in targets.iter().enumerate() {
        let (p50, p99) = latency(target).await?;
        println!(
            "{name:>6}: {:>9.0} messages/s ({messages} x {message_bytes} B, median of {ROUNDS})  round trip p50 {p50:?}  p99 {p99:?}",
            median(rates[index].clone())
        );
        let millions: Vec<String> = rates[index]
            .iter()
            .map(|rate| format!("{:.2}", rate / 1e6))
            .collect();
        println!("{name:>6} rounds (M messages/s): {}", millions.join(" "));
        if pid.is_some() {
            println!(
                "{name:>6}: server CPU per relayed message: {:.0} ns",
                server_cpu[index].as_nanos() as f64 / (messages as f64 * ROUNDS as f64)
            );
        }
    }
    print_ratios("relay / direct", &rates[1], &rates[0]);
    if earlier_build.is_some() {
        print_ratios("relay / base", &rates[1], &rates[2]);
    }
    if forwarder.is_some() {
        let tcp = &rates[targets.len() - 1];
        print_ratios("tcp forwarder / direct", tcp, &rates[0]);
        print_ratios("relay / tcp forwarder", &rates[1], tcp);
    }
    Ok(())
}

/// Prints the ratios of `rates` to `references`, round by round, and their median.
fn print_ratios(name: &str, rates: &[f64], references: &[f64]) {
    let ratios: Vec<f64> = rates
        .iter()
        .zip(references)
        .map(|(rate, reference)| rate / reference)
        .collect();
    let shown: Vec<String> = ratios.iter().map(|ratio| format!("{ratio:.2}")).collect();
    println!("{name} by round: {}", shown.join(" "));
    println!("{name} rate: {:.2}, the median", median(ratios));
}

/// The median of `values` (not empty).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    }
}

/// Messages per second of one flood of `messages` messages.
async fn flood_rate(target: &Target, messages: u64, bytes: usize) -> anyhow::Result<f64> {
    let mut socket = target.open().await?;
    let started = Instant::now();
    socket
        .send(Message::text(
            json!({ "flood": messages, "size": bytes }).to_string(),
        ))
        .await?;
    for expected in 0..messages {
        let Some(Ok(Message::Text(text))) = socket.next().await else {
            bail!("the flood broke off at {expected}");
        };
        if expected + 1 == messages && !text.starts_with(&format!(r#"{{"n":{expected},"#)) {
            bail!("the flood's last message is out of order");
        }
    }
    let rate = messages as f64 / started.elapsed().as_secs_f64();
    let _ = socket.close(None).await;
    Ok(rate)
}

/// Round trips of small messages, one at a time: (p50, p99).
async fn latency(target: &Target) -> anyhow::Result<(Duration, Duration)> {
    let mut socket = target.open().await?;
    let mut samples = Vec::with_capacity(LATENCY_SAMPLES);
    for n in 0..LATENCY_SAMPLES {
        let started = Instant::now();
        socket
            .send(Message::text(json!({ "ping": n }).to_string()))
            .await?;
        let Some(Ok(Message::Text(_))) = socket.next().await else {
            bail!("no echo");
        };
        samples.push(started.elapsed());
    }
    let _ = socket.close(None).await;
    samples.sort();
    Ok((
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100],
    ))
}

/// CPU time (user and system, all threads) of process `pid` so far, to
/// the kernel's tick (USER_HZ, 100 on Linux's usual ABIs).
fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    const TICKS_PER_SECOND: u64 = 100;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command, which is in parentheses and may hold spaces:
    // utime and stime are the 14th and 15th of the whole line.
    let after_command = stat.rsplit_once(')').context("/proc/PID/stat")?.1;
    let fields: Vec<&str> = after_command.split_whitespace().collect();
    let ticks: u64 = fields
        .get(11..13)
        .context("utime and stime")?
        .iter()
        .map(|field| field.parse::<u64>())
        .sum::<Result<u64, _>>()?;
    Ok(Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND))
}

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS")
}
