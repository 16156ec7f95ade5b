//! An open-loop load generator at a fixed rate, for the latency figures of
//! `bench/proxy.sh` (wrk only loads as fast as it can; wrk2, which holds a
//! rate, is not packaged by Debian).
//!
//! Each connection has its own thread and sends its share of the rate on a
//! schedule, one request at a time (HTTP/1.1 keep-alive). A thread sleeps
//! with the kernel's timer (tens of microseconds of grain, where tokio's is a
//! millisecond and would send the requests in bursts), and each latency is
//! counted from the request's scheduled time, not from when it went out: a
//! connection held up by a slow answer sends late, and that wait counts, so
//! a stalled server cannot hide behind fewer requests.
//!
//! Usage: `bench_load --rate 20000 --connections 64 --seconds 10
//! [-H 'Name: value']... http://127.0.0.1:PORT/PATH`; prints one line of
//! `key=value` figures.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper::header::{HOST, HeaderName, HeaderValue};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;

/// Requests later than this after their scheduled time are counted as late:
/// the rate was not held.
const LATE: Duration = Duration::from_millis(1);

/// Time for every connection to open before the first request is due.
const WARM_UP: Duration = Duration::from_millis(200);

#[derive(Parser)]
struct Args {
    /// Requests per second, over all connections.
    #[arg(long)]
    rate: f64,
    /// Connections, each with its share of the rate.
    #[arg(long, default_value_t = 64)]
    connections: u32,
    /// How long to send for.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// A request header, `Name: value`.
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// What to GET: `http://HOST:PORT/PATH`.
    url: Uri,
}

/// What one connection saw.
#[derive(Default)]
struct Outcome {
    /// From each request's scheduled time to the end of its answer.
    latencies: Vec<Duration>,
    /// Answers whose status was not 2xx.
    not_2xx: u64,
    /// Requests sent more than [`LATE`] after their scheduled time.
    late: u64,
}

/// The request every connection repeats.
#[derive(Clone)]
struct Template {
    uri: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Template {
    fn request(&self) -> anyhow::Result<Request<Empty<Bytes>>> {
        let mut builder = Request::get(self.uri.clone());
        for (name, value) in &self.headers {
            builder = builder.header(name, value);
        }
        Ok(builder.body(Empty::new())?)
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !(args.rate > 0.0 && args.seconds > 0.0 && args.connections > 0) {
        bail!("--rate, --seconds and --connections must be positive");
    }
    let authority = args
        .url
        .authority()
        .context("the URL needs a host and port")?
        .clone();
    let address = format!(
        "{}:{}",
        authority.host(),
        authority.port_u16().unwrap_or(80)
    );
    let mut headers = vec![(HOST, HeaderValue::from_str(authority.as_str())?)];
    for header in &args.headers {
        let (name, value) = header
            .split_once(':')
            .with_context(|| format!("not a `Name: value` header: {header}"))?;
        headers.push((name.trim().parse()?, HeaderValue::from_str(value.trim())?));
    }
    let template = Template {
        uri: args
            .url
            .path_and_query()
            .map_or("/", |path| path.as_str())
            .parse()?,
        headers,
    };

    let period = Duration::from_secs_f64(f64::from(args.connections) / args.rate);
    let first = Instant::now() + WARM_UP;
    let end = first + Duration::from_secs_f64(args.seconds);
    let threads = (0..args.connections)
        .map(|index| {
            // Spread the connections' schedules over one period.
            let start = first + period * index / args.connections;
            let (address, template) = (address.clone(), template.clone());
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || connection(&address, &template, start, period, end))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut total = Outcome::default();
    for thread in threads {
        let outcome = thread
            .join()
            .map_err(|_| anyhow::anyhow!("a connection's thread panicked"))??;
        total.latencies.extend(outcome.latencies);
        total.not_2xx += outcome.not_2xx;
        total.late += outcome.late;
    }
    report(total, args.seconds);
    Ok(())
}

/// One connection's life: its share of the schedule, from `start` every
/// `period` until `end`.
fn connection(
    address: &str,
    template: &Template,
    start: Instant,
    period: Duration,
    end: Instant,
) -> anyhow::Result<Outcome> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let stream = tokio::net::TcpStream::connect(address)
            .await
            .with_context(|| format!("connecting to {address}"))?;
        stream.set_nodelay(true)?;
        let (mut sender, driver) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake")?;
        tokio::spawn(driver);
        let mut outcome = Outcome::default();
        let mut scheduled = start;
        while scheduled < end {
            let now = Instant::now();
            if now < scheduled {
                // Nothing else runs on this thread's event loop between
                // requests, so a blocking sleep holds nothing up.
                std::thread::sleep(scheduled - now);
            } else if now - scheduled > LATE {
                outcome.late += 1;
            }
            sender.ready().await.context("the connection closed")?;
            let response = sender.send_request(template.request()?).await?;
            let status = response.status();
            response.into_body().collect().await?;
            outcome.latencies.push(scheduled.elapsed());
            if !status.is_success() {
                outcome.not_2xx += 1;
            }
            scheduled += period;
        }
        Ok(outcome)
    })
}

/// Prints the figures on one line.
fn report(mut total: Outcome, seconds: f64) {
    total.latencies.sort_unstable();
    let quantile = |q: f64| {
        let rank = (total.latencies.len() as f64 * q).ceil() as usize;
        total
            .latencies
            .get(rank.saturating_sub(1))
            .map_or(0, Duration::as_micros)
    };
    println!(
        "requests={} rate={:.0} not_2xx={} late={} p50_us={} p90_us={} p99_us={} p999_us={} max_us={}",
        total.latencies.len(),
        total.latencies.len() as f64 / seconds,
        total.not_2xx,
        total.late,
        quantile(0.50),
        quantile(0.90),
        quantile(0.99),
        quantile(0.999),
        quantile(1.0),
    );
}
