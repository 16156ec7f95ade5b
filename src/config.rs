//! Typed configuration, from environment variables or command-line flags.
//!
//! Parsed once at start-up; a bad value stops the server with one line that
//! names the variable (and never echoes a secret).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::TypedValueParser as _;
use clap::{Parser, ValueEnum};
use url::Url;

use crate::oauth::{Credentials, SignatureMethod};
use crate::secret::Secret;

/// Shortest `SESSION_KEY` accepted: 32 characters, so 128 bits or more even
/// for a hex key.
pub const MIN_SESSION_KEY_LEN: usize = 32;

/// Port listened on when `PORT` is not set (and the one Clever Cloud sets).
pub const DEFAULT_PORT: u16 = 8080;

/// Every setting of the server. Each flag also reads the environment
/// variable named in `--help`.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "oauth-consumer-server",
    version,
    about,
    args_override_self = true
)]
pub struct Config {
    /// Port to listen on (Clever Cloud sets it).
    #[arg(long, env = "PORT", default_value_t = DEFAULT_PORT)]
    pub port: u16,

    /// Address to listen on.
    #[arg(long, env = "HOST", default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    pub host: IpAddr,

    /// Public base URL of this server; the OAuth callback is APP_URL + "callback".
    /// Default: http://localhost:$PORT/
    #[arg(long, env = "APP_URL")]
    pub app_url: Option<Url>,

    /// Origin of the Clever Cloud API.
    #[arg(long, env = "API_HOST", default_value = "https://api.clever-cloud.com")]
    pub api_host: Url,

    /// The operator's OAuth consumer key. Unset: visitors type their own.
    #[arg(long, env = "OAUTH_CONSUMER_KEY")]
    pub oauth_consumer_key: Option<String>,

    /// The operator's OAuth consumer secret (never shown to visitors).
    #[arg(long, env = "OAUTH_CONSUMER_SECRET", hide_env_values = true)]
    pub oauth_consumer_secret: Option<Secret>,

    /// Signature method: HMAC-SHA512, HMAC-SHA1 or PLAINTEXT.
    #[arg(long, env = "OAUTH_SIGNATURE_METHOD", default_value = "HMAC-SHA512")]
    pub oauth_signature_method: SignatureMethod,

    /// Key of the session cookie and of the secrets kept in the session store
    /// (at least 32 characters). Default: random at start, so sessions end
    /// with the process.
    #[arg(long, env = "SESSION_KEY", hide_env_values = true)]
    pub session_key: Option<Secret>,

    /// Seconds of inactivity after which a session ends.
    #[arg(long, env = "SESSION_IDLE_SECS", default_value_t = 24 * 3600)]
    pub session_idle_secs: u64,

    /// Seconds a started login waits for its callback before it is
    /// forgotten (each browser may have 5 in progress, one per tab).
    #[arg(long, env = "LOGIN_PENDING_SECS", default_value_t = 600,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub login_pending_secs: u32,

    /// Login starts (POST /login) allowed per client address and minute,
    /// on each instance; a burst of as many is allowed.
    #[arg(long, env = "LOGIN_STARTS_PER_MINUTE", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub login_starts_per_minute: u32,

    /// Live proxy tokens one person (or one login, when the API does not
    /// say whose it is) may hold.
    #[arg(long, env = "PROXY_TOKENS_PER_OWNER", default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub proxy_tokens_per_owner: u32,

    /// Log format: text or json. The level comes from RUST_LOG.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Seconds allowed to connect to the API.
    #[arg(long, env = "API_CONNECT_TIMEOUT_SECS", default_value_t = 5)]
    pub api_connect_timeout_secs: u64,

    /// Seconds allowed for a whole OAuth token call (request or access token).
    #[arg(long, env = "OAUTH_CALL_TIMEOUT_SECS", default_value_t = 15)]
    pub oauth_call_timeout_secs: u64,

    /// Seconds the proxy and relays wait for the API between two bytes
    /// (not a total time-out, which would cut streams).
    #[arg(long, env = "API_IDLE_TIMEOUT_SECS", default_value_t = 60)]
    pub api_idle_timeout_secs: u64,

    /// Largest form body (bytes) the proxy reads to sign its parameters.
    #[arg(long, env = "PROXY_FORM_LIMIT_BYTES", default_value_t = 1024 * 1024)]
    pub proxy_form_limit_bytes: usize,

    /// Redis URL for shared sessions and proxy tokens (redis:// or rediss://).
    /// Unset: sessions live in memory, lost on restart and not shared.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<Secret>,

    /// Redis host, used with REDIS_PORT and REDIS_PASSWORD when REDIS_URL is
    /// unset (Clever Cloud's Redis add-on sets all four).
    #[arg(long, env = "REDIS_HOST")]
    pub redis_host: Option<String>,

    /// Redis port, with REDIS_HOST (default 6379).
    #[arg(long, env = "REDIS_PORT")]
    pub redis_port: Option<u16>,

    /// Redis password, with REDIS_HOST.
    #[arg(long, env = "REDIS_PASSWORD", hide_env_values = true)]
    pub redis_password: Option<Secret>,

    /// PEM file of the CA certificates trusted for rediss:// instead of the
    /// system's (a private CA, a self-signed Redis).
    #[arg(long, env = "REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,

    /// Largest WebSocket message (bytes) a relay carries.
    #[arg(long, env = "RELAY_MAX_MESSAGE_BYTES", default_value_t = 1024 * 1024)]
    pub relay_max_message_bytes: usize,

    /// Most relays one session or proxy token may hold open at once.
    #[arg(long, env = "RELAY_MAX_PER_CALLER", default_value_t = 8)]
    pub relay_max_per_caller: usize,

    /// Most relays one person may hold open at once, across their browser
    /// session and all their proxy tokens (on this instance).
    #[arg(long, env = "RELAYS_PER_OWNER", default_value_t = 32)]
    pub relays_per_owner: usize,

    /// Seconds a relay may stay without any message before it is closed.
    #[arg(long, env = "RELAY_IDLE_TIMEOUT_SECS", default_value_t = 300)]
    pub relay_idle_timeout_secs: u64,

    /// Messages queued towards a slow WebSocket client before the relay
    /// stops reading from the API (back-pressure).
    #[arg(long, env = "RELAY_QUEUE_MESSAGES", default_value_t = 256)]
    pub relay_queue_messages: usize,

    /// Bearer token that unlocks /metrics. Unset: no metrics endpoint.
    #[arg(long, env = "METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<Secret>,

    /// Proxies whose X-Forwarded-* headers are trusted (comma-separated IPs
    /// or CIDRs); Clever Cloud's CC_REVERSE_PROXY_IPS is read too.
    #[arg(long, env = "TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,

    /// Seconds in-flight requests get to finish after SIGTERM or SIGINT.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,

    /// Seconds a client has to send a whole request head, from its
    /// connection (or from the first byte of a later request on it).
    #[arg(long, env = "HEADER_READ_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout_secs: u64,

    /// Largest request head (request line and headers, in bytes); a larger
    /// one is answered 431.
    #[arg(long, env = "MAX_REQUEST_HEAD_BYTES", default_value_t = 32 * 1024, value_parser = clap::value_parser!(u32).range(1024..))]
    pub max_request_head_bytes: u32,

    /// Seconds a kept-alive connection may stay idle between two requests.
    #[arg(long, env = "KEEPALIVE_IDLE_SECS", default_value_t = 75, value_parser = clap::value_parser!(u64).range(1..))]
    pub keepalive_idle_secs: u64,

    /// Most client connections served at once; past it, new ones wait in
    /// the listen backlog.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Most connections to the API each worker thread's pool opens; past
    /// it, a proxied request waits for one up to API_CONNECT_TIMEOUT_SECS.
    #[arg(long, env = "API_MAX_CONNECTIONS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub api_max_connections: u32,

    /// Threads serving requests, each with its own event loop and API
    /// connection pool. Unset: one per CPU core.
    #[arg(long, env = "WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub worker_threads: Option<u16>,
}

/// Whether `url` is a `redis://` or `rediss://` URL with a host.
pub fn is_redis_url(url: &str) -> bool {
    Url::parse(url).is_ok_and(|url| {
        matches!(url.scheme(), "redis" | "rediss") && url.host_str().is_some_and(|h| !h.is_empty())
    })
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A setting that parsed but makes no sense.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Only one half of the operator's consumer was given.
    #[error(
        "OAUTH_CONSUMER_KEY and OAUTH_CONSUMER_SECRET go together: set both, or neither to let visitors bring their own consumer"
    )]
    HalfConsumer,
    /// The session key is too short to be safe.
    #[error(
        "SESSION_KEY must be at least {MIN_SESSION_KEY_LEN} characters (it has {0}): generate one with `openssl rand -hex 32`"
    )]
    ShortSessionKey(usize),
    /// A URL setting is not an http(s) URL.
    #[error("{0} must be an http:// or https:// URL")]
    NotHttp(&'static str),
    /// API_HOST has a path, query or fragment.
    #[error("API_HOST must be an origin like https://api.clever-cloud.com, without path or query")]
    ApiHostWithPath,
    /// REDIS_URL (never echoed: it holds the password) is not a Redis URL.
    #[error("REDIS_URL must be a redis:// or rediss:// URL with a host")]
    NotRedis,
    /// REDIS_HOST does not make a URL.
    #[error("REDIS_HOST must be a host name or an IP address")]
    BadRedisHost,
    /// Redis without a shared key: instances could not read each other's
    /// cookies nor decrypt each other's records.
    #[error(
        "REDIS_URL needs SESSION_KEY: instances sharing Redis must share the key that reads their cookies and decrypts the stored secrets (generate one with `openssl rand -hex 32`)"
    )]
    RedisWithoutSessionKey,
}

impl Config {
    /// Reads the command line and the environment, then checks the result.
    pub fn from_env_and_args() -> Result<Self, clap::Error> {
        let config = Self::try_parse()?;
        config.validate().map_err(|error| {
            // clap prints a raw message as is: end the line.
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("{error}\n"),
            )
        })
    }

    /// Parses an explicit argument list (tests, subcommands); the
    /// environment still provides what the list does not.
    pub fn from_args<I, T>(args: I) -> anyhow::Result<Self>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Ok(Self::try_parse_from(args)?.validate()?)
    }

    /// Checks what clap cannot: pairs, lengths, URL shapes. Fills
    /// `redis_url` from `REDIS_HOST`/`PORT`/`PASSWORD` when it is unset.
    pub fn validate(mut self) -> Result<Self, ConfigError> {
        if self.oauth_consumer_key.is_some() != self.oauth_consumer_secret.is_some() {
            return Err(ConfigError::HalfConsumer);
        }
        if let Some(key) = &self.session_key {
            let length = key.expose().chars().count();
            if length < MIN_SESSION_KEY_LEN {
                return Err(ConfigError::ShortSessionKey(length));
            }
        }
        if !matches!(self.api_host.scheme(), "http" | "https") {
            return Err(ConfigError::NotHttp("API_HOST"));
        }
        if self.api_host.path() != "/"
            || self.api_host.query().is_some()
            || self.api_host.fragment().is_some()
        {
            return Err(ConfigError::ApiHostWithPath);
        }
        if let Some(app_url) = &self.app_url
            && !matches!(app_url.scheme(), "http" | "https")
        {
            return Err(ConfigError::NotHttp("APP_URL"));
        }
        if self.redis_url.is_none()
            && let Some(host) = &self.redis_host
        {
            let url = redis_url_from_parts(host, self.redis_port, self.redis_password.as_ref())?;
            self.redis_url = Some(url);
        }
        if let Some(url) = &self.redis_url {
            if !is_redis_url(url.expose()) {
                return Err(ConfigError::NotRedis);
            }
            if self.session_key.is_none() {
                return Err(ConfigError::RedisWithoutSessionKey);
            }
        }
        Ok(self)
    }

    /// Where to listen.
    pub fn listen_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }

    /// How many worker threads serve requests: `WORKER_THREADS`, else one
    /// per CPU core.
    pub fn worker_threads(&self) -> usize {
        self.worker_threads.map_or_else(
            || std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            usize::from,
        )
    }

    /// The public base URL, always ending with `/`.
    pub fn app_url(&self) -> Url {
        let mut url = self.app_url.clone().unwrap_or_else(|| {
            Url::parse(&format!("http://localhost:{}/", self.port))
                .unwrap_or_else(|_| unreachable!("a port always makes a valid URL"))
        });
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        url
    }

    /// The OAuth callback: `APP_URL` + `callback`.
    pub fn callback_url(&self) -> Url {
        let mut url = self.app_url();
        let path = format!("{}callback", url.path());
        url.set_path(&path);
        url
    }

    /// The origin browsers send in `Origin` for our own pages.
    pub fn app_origin(&self) -> String {
        self.app_url().origin().ascii_serialization()
    }

    /// Whether cookies need `Secure` (the public URL is https).
    pub fn secure_cookies(&self) -> bool {
        self.app_url().scheme() == "https"
    }

    /// The operator's consumer, when configured.
    pub fn operator_consumer(&self) -> Option<Credentials> {
        match (&self.oauth_consumer_key, &self.oauth_consumer_secret) {
            (Some(key), Some(secret)) => Some(Credentials {
                key: key.clone(),
                secret: secret.clone(),
            }),
            _ => None,
        }
    }

    /// How long a started login waits for its callback, in seconds.
    pub fn login_pending_secs(&self) -> i64 {
        i64::from(self.login_pending_secs)
    }

    /// Session inactivity limit.
    pub fn session_idle(&self) -> Duration {
        Duration::from_secs(self.session_idle_secs)
    }

    /// Time allowed to open a connection to the API.
    pub fn api_connect_timeout(&self) -> Duration {
        Duration::from_secs(self.api_connect_timeout_secs)
    }

    /// Time the API may stay silent in the middle of an answer.
    pub fn api_idle_timeout(&self) -> Duration {
        Duration::from_secs(self.api_idle_timeout_secs)
    }

    /// Time a client has to send a request head.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_secs)
    }

    /// Time a kept-alive client connection may wait for its next request.
    pub fn keepalive_idle(&self) -> Duration {
        Duration::from_secs(self.keepalive_idle_secs)
    }

    /// Time allowed for a whole request-token or access-token call.
    pub fn oauth_call_timeout(&self) -> Duration {
        Duration::from_secs(self.oauth_call_timeout_secs)
    }
}

/// `redis://:PASSWORD@HOST:PORT`, the password percent-encoded.
fn redis_url_from_parts(
    host: &str,
    port: Option<u16>,
    password: Option<&Secret>,
) -> Result<Secret, ConfigError> {
    let mut url = Url::parse("redis://localhost").map_err(|_| ConfigError::BadRedisHost)?;
    url.set_host(Some(host))
        .map_err(|_| ConfigError::BadRedisHost)?;
    url.set_port(Some(port.unwrap_or(6379)))
        .map_err(|_| ConfigError::BadRedisHost)?;
    if let Some(password) = password {
        url.set_password(Some(password.expose()))
            .map_err(|_| ConfigError::BadRedisHost)?;
    }
    Ok(Secret::new(url.to_string()))
}

impl clap::builder::ValueParserFactory for Secret {
    type Parser = clap::builder::MapValueParser<
        clap::builder::NonEmptyStringValueParser,
        fn(String) -> Secret,
    >;

    fn value_parser() -> Self::Parser {
        clap::builder::NonEmptyStringValueParser::new().map(Secret::new)
    }
}

impl clap::builder::ValueParserFactory for SignatureMethod {
    type Parser = clap::builder::TryMapValueParser<
        clap::builder::NonEmptyStringValueParser,
        fn(String) -> Result<SignatureMethod, String>,
    >;

    fn value_parser() -> Self::Parser {
        clap::builder::NonEmptyStringValueParser::new().try_map(|value| value.parse())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> anyhow::Result<Config> {
        Config::from_args(std::iter::once("oauth-consumer-server").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_follow_the_port() -> anyhow::Result<()> {
        let config = parse(&["--port", "9000"])?;
        assert_eq!(config.app_url().as_str(), "http://localhost:9000/");
        assert_eq!(
            config.callback_url().as_str(),
            "http://localhost:9000/callback"
        );
        assert_eq!(config.oauth_signature_method, SignatureMethod::HmacSha512);
        assert!(!config.secure_cookies());
        Ok(())
    }

    #[test]
    fn worker_threads_default_to_the_cores_and_must_be_positive() -> anyhow::Result<()> {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(parse(&[])?.worker_threads(), cores);
        assert_eq!(parse(&["--worker-threads", "3"])?.worker_threads(), 3);
        let zero = parse(&["--worker-threads", "0"])
            .err()
            .map(|e| e.to_string());
        assert!(zero.unwrap_or_default().contains("worker-threads"));
        Ok(())
    }

    #[test]
    fn app_url_gains_its_trailing_slash() -> anyhow::Result<()> {
        let config = parse(&["--app-url", "https://gw.example.com/base"])?;
        assert_eq!(
            config.callback_url().as_str(),
            "https://gw.example.com/base/callback"
        );
        assert_eq!(config.app_origin(), "https://gw.example.com");
        assert!(config.secure_cookies());
        Ok(())
    }

    #[test]
    fn bad_values_name_their_variable_without_echoing_secrets() {
        let short = parse(&["--session-key", "tooshort-secret"])
            .err()
            .map(|e| e.to_string());
        let short = short.unwrap_or_default();
        assert!(short.contains("SESSION_KEY"), "{short}");
        assert!(!short.contains("tooshort-secret"), "{short}");

        let half = parse(&["--oauth-consumer-key", "k"])
            .err()
            .map(|e| e.to_string());
        assert!(half.unwrap_or_default().contains("OAUTH_CONSUMER_SECRET"));

        let method = parse(&["--oauth-signature-method", "RSA-SHA1"])
            .err()
            .map(|e| e.to_string());
        assert!(
            method
                .unwrap_or_default()
                .contains("OAUTH_SIGNATURE_METHOD")
        );

        let api = parse(&["--api-host", "https://api.example.com/v2"])
            .err()
            .map(|e| e.to_string());
        assert!(api.unwrap_or_default().contains("API_HOST"));

        let redis = parse(&["--redis-url", "http://:hunter2@redis.example"])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(redis.contains("REDIS_URL"), "{redis}");
        assert!(!redis.contains("hunter2"), "{redis}");
    }

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn redis_needs_the_session_key() -> anyhow::Result<()> {
        let missing = parse(&["--redis-url", "redis://:hunter2@127.0.0.1:6380"])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(missing.contains("REDIS_URL"), "{missing}");
        assert!(missing.contains("SESSION_KEY"), "{missing}");
        assert!(!missing.contains("hunter2"), "{missing}");

        let config = parse(&[
            "--redis-url",
            "rediss://u:p@redis.example:6380/2",
            "--session-key",
            KEY,
        ])?;
        assert!(config.redis_url.is_some());
        assert!(parse(&["--redis-host", "redis.example"]).is_err());
        Ok(())
    }

    #[test]
    fn clever_cloud_redis_variables_make_the_url() -> anyhow::Result<()> {
        let config = parse(&[
            "--redis-host",
            "bxyz-redis.services.clever-cloud.com",
            "--redis-port",
            "3042",
            "--redis-password",
            "p@ss:w/rd",
            "--session-key",
            KEY,
        ])?;
        let url = config.redis_url.map(|url| url.expose().to_owned());
        assert_eq!(
            url.as_deref(),
            Some("redis://:p%40ss%3Aw%2Frd@bxyz-redis.services.clever-cloud.com:3042")
        );

        let explicit = parse(&[
            "--redis-url",
            "redis://:a@first.example:1",
            "--redis-host",
            "second.example",
            "--session-key",
            KEY,
        ])?;
        let url = explicit.redis_url.map(|url| url.expose().to_owned());
        assert_eq!(
            url.as_deref(),
            Some("redis://:a@first.example:1"),
            "REDIS_URL wins"
        );

        let no_port = parse(&["--redis-host", "10.0.0.7", "--session-key", KEY])?;
        let url = no_port.redis_url.map(|url| url.expose().to_owned());
        assert_eq!(url.as_deref(), Some("redis://10.0.0.7:6379"));
        Ok(())
    }
}
