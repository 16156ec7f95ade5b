//! Sessions and proxy tokens in Redis, shared by every instance and kept
//! across restarts. Each record is one key whose TTL is the record's
//! expiry, so Redis itself forgets what has expired.
//!
//! Every call is bounded: a command that cannot be sent (Redis down) fails
//! at once, one that gets no answer fails after [`COMMAND_TIMEOUT`], and the
//! client reconnects in the background until Redis is back.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fred::prelude::{
    Builder, ClientLike as _, Config, ConnectionConfig, Expiration, KeysInterface as _,
    ListInterface as _, LuaInterface as _, Options, PerformanceConfig, ReconnectPolicy, SetOptions,
    SetsInterface as _,
};
use fred::types::config::{TlsConfig, TlsConnector, UnresponsiveConfig};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store;

use super::backend::{Backend, SetInsert, SetKey};
use crate::secret::Secret;

/// Longest wait for one command's answer.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for a connection (TCP, TLS, AUTH) to be set up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for the readiness PING.
const PING_TIMEOUT: Duration = Duration::from_secs(1);
/// How long start-up waits for the first connection before going on
/// without it (requests answer 503 until Redis is reachable).
const FIRST_CONNECT_WAIT: Duration = Duration::from_secs(3);
/// A connection silent this long with commands waiting is dropped and made
/// again: it catches a Redis that vanished without closing the socket.
const UNRESPONSIVE_AFTER: Duration = Duration::from_secs(3);
/// Reconnection back-off, in milliseconds: from 100 ms up to 2 s, forever.
const RECONNECT_MIN_MS: u32 = 100;
const RECONNECT_MAX_MS: u32 = 2_000;

/// Prefix of every key this server writes, so it can share a Redis.
pub const KEY_PREFIX: &str = "ocs:record:";
/// Prefix of the sets (an owner's proxy-token ids).
pub const SET_PREFIX: &str = "ocs:set:";
/// Prefix of the lists (a proxy token's recent calls).
pub const LIST_PREFIX: &str = "ocs:list:";

/// Redis could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RedisSetupError {
    /// The URL does not parse as a Redis URL (never echoed: it holds the
    /// password).
    #[error("REDIS_URL is not a valid redis:// or rediss:// URL")]
    BadUrl,
    /// `REDIS_CA_FILE` is unreadable or holds no PEM certificate.
    #[error("REDIS_CA_FILE {path}: {reason}")]
    CaFile {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The client could not be built.
    #[error("cannot set up the Redis client: {0}")]
    Client(fred::error::Error),
}

/// Records in Redis.
#[derive(Clone)]
pub struct RedisStore {
    client: fred::clients::Client,
    /// Fail at once when disconnected, and bound every answer.
    options: Options,
    /// `host:port`, for logs (never the URL: it may hold the password).
    server: Arc<str>,
}

/// What one key holds. The data is already sealed by the layer above.
#[derive(Serialize, Deserialize)]
struct StoredRecord {
    data: std::collections::HashMap<String, serde_json::Value>,
    #[serde(with = "time::serde::rfc3339")]
    expiry_date: OffsetDateTime,
}

impl RedisStore {
    /// Connects to `url` (`redis://` or `rediss://`, password allowed);
    /// `ca_file` replaces the system's roots for `rediss://`. Returns once
    /// connected, or after a few seconds if Redis is not reachable yet: the
    /// client keeps trying in the background.
    pub async fn connect(url: &Secret, ca_file: Option<&Path>) -> Result<Self, RedisSetupError> {
        if !crate::config::is_redis_url(url.expose()) {
            return Err(RedisSetupError::BadUrl);
        }
        let mut config = Config::from_url(url.expose()).map_err(|_| RedisSetupError::BadUrl)?;
        // Start even when Redis is down, and keep reconnecting.
        config.fail_fast = false;
        if let (Some(tls), Some(path)) = (config.tls.as_mut(), ca_file) {
            *tls = tls_trusting(path)?;
        }
        let server = config
            .server
            .hosts()
            .first()
            .map(|server| format!("{}:{}", server.host, server.port))
            .unwrap_or_default();
        let tls = config.tls.is_some();
        let client = Builder::from_config(config)
            .set_policy(ReconnectPolicy::new_exponential(
                0,
                RECONNECT_MIN_MS,
                RECONNECT_MAX_MS,
                2,
            ))
            .set_connection_config(ConnectionConfig {
                connection_timeout: CONNECT_TIMEOUT,
                internal_command_timeout: CONNECT_TIMEOUT,
                unresponsive: UnresponsiveConfig {
                    max_timeout: Some(UNRESPONSIVE_AFTER),
                    interval: Duration::from_secs(1),
                },
                ..ConnectionConfig::default()
            })
            .set_performance_config(PerformanceConfig {
                default_command_timeout: COMMAND_TIMEOUT,
                ..PerformanceConfig::default()
            })
            .build()
            .map_err(RedisSetupError::Client)?;
        // The connection task runs until the process ends.
        drop(client.connect());
        match tokio::time::timeout(FIRST_CONNECT_WAIT, client.wait_for_connect()).await {
            Ok(Ok(())) => tracing::info!(%server, tls, "connected to Redis"),
            Ok(Err(error)) => tracing::warn!(
                %server, tls, %error,
                "Redis is not reachable yet: requests that need a session answer 503 until it is"
            ),
            Err(_) => tracing::warn!(
                %server, tls,
                "Redis is not reachable yet: requests that need a session answer 503 until it is"
            ),
        }
        Ok(Self {
            client,
            options: Options {
                fail_fast: true,
                timeout: Some(COMMAND_TIMEOUT),
                ..Options::default()
            },
            server: server.into(),
        })
    }

    fn with_options(&self) -> fred::clients::WithOptions<fred::clients::Client> {
        self.client.with_options(&self.options)
    }

    /// `SET key value PXAT expiry` with `condition` (`NX` or `XX`): whether
    /// it wrote.
    async fn set_if(&self, record: &Record, condition: SetOptions) -> session_store::Result<bool> {
        let written: Option<String> = self
            .with_options()
            .set(
                redis_key(&record.id),
                stored_value(record)?,
                Some(Expiration::PXAT(unix_ms(record.expiry_date))),
                Some(condition),
                false,
            )
            .await
            .map_err(backend_error)?;
        Ok(written.is_some())
    }

    /// Runs one of this store's scripts. `EVAL` sends the script each time:
    /// it is a few hundred bytes, and only token creation and revocation
    /// use scripts, so caching it (`EVALSHA`) is not worth its reload path.
    async fn script<R: fred::types::FromValue>(
        &self,
        script: &'static str,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> session_store::Result<R> {
        self.with_options()
            .eval(script, keys, args)
            .await
            .map_err(backend_error)
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// A TLS set-up that trusts only the CA certificates in `path`.
fn tls_trusting(path: &Path) -> Result<TlsConfig, RedisSetupError> {
    let fail = |reason: String| RedisSetupError::CaFile {
        path: path.display().to_string(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(path).map_err(|e| fail(e.to_string()))? {
        roots
            .add(certificate.map_err(|e| fail(e.to_string()))?)
            .map_err(|e| fail(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(fail("no PEM certificate in it".to_owned()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(tls).into())
}

/// The key of a record: a hash of its id, so session ids never appear in
/// Redis (nor in its logs or `MONITOR`).
pub fn redis_key(id: &Id) -> String {
    let digest = Sha256::new()
        .chain_update(b"ocs/redis-key/")
        .chain_update(id.0.to_le_bytes())
        .finalize();
    format!("{KEY_PREFIX}{}", crate::hex::encode(&digest[..16]))
}

fn backend_error(error: fred::error::Error) -> session_store::Error {
    session_store::Error::Backend(format!("Redis: {error}"))
}

/// Lua run inside Redis, so that a record and its set change together
/// whatever other instances do meanwhile. `extend` keeps a set alive at
/// least until a time (PTTL and TIME rather than PEXPIRETIME, so Redis
/// before 7 works too).
macro_rules! with_extend {
    ($body:literal) => {
        concat!(
            r"
local function extend(set, until_ms)
  local now = redis.call('TIME')
  local now_ms = now[1] * 1000 + math.floor(now[2] / 1000)
  local left = redis.call('PTTL', set)
  if left < 0 or now_ms + left < until_ms then
    redis.call('PEXPIREAT', set, until_ms)
  end
end
",
            $body
        )
    };
}

/// KEYS: record, set, and the guard record if any. ARGV: value, record
/// expiry (ms), member, limit, set expiry (ms). Returns 0 created, 1 id
/// taken, 2 set full, 3 guard gone.
const CREATE_IN_SET: &str = with_extend!(
    r"
if KEYS[3] and redis.call('EXISTS', KEYS[3]) == 0 then return 3 end
if redis.call('SCARD', KEYS[2]) >= tonumber(ARGV[4]) then return 2 end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PXAT', ARGV[2]) then return 1 end
redis.call('SADD', KEYS[2], ARGV[3])
extend(KEYS[2], tonumber(ARGV[5]))
return 0
"
);

/// KEYS: record, set. ARGV: member. Returns whether the member was there.
const DELETE_IN_SET: &str = r"
redis.call('DEL', KEYS[1])
return redis.call('SREM', KEYS[2], ARGV[1])
";

/// KEYS: list, owner record. ARGV: entry, cap, expiry (ms).
const PUSH_CAPPED: &str = r"
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
return 0
";

/// KEYS: set. ARGV: set expiry (ms), then the members.
const ADD_MEMBERS: &str = with_extend!(
    r"
redis.call('SADD', KEYS[1], unpack(ARGV, 2))
extend(KEYS[1], tonumber(ARGV[1]))
return 0
"
);

fn stored_value(record: &Record) -> session_store::Result<String> {
    serde_json::to_string(&StoredRecord {
        data: record.data.clone(),
        expiry_date: record.expiry_date,
    })
    .map_err(|error| session_store::Error::Encode(error.to_string()))
}

fn unix_ms(date: OffsetDateTime) -> i64 {
    i64::try_from(date.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn set_key(set: &SetKey) -> String {
    format!("{SET_PREFIX}{}", set.0)
}

fn list_key(list: &SetKey) -> String {
    format!("{LIST_PREFIX}{}", list.0)
}

#[async_trait]
impl Backend for RedisStore {
    async fn create(&self, record: &Record) -> session_store::Result<bool> {
        if record.expiry_date <= OffsetDateTime::now_utc() {
            // Already over: nothing to keep (Redis refuses past expiries).
            return Ok(true);
        }
        self.set_if(record, SetOptions::NX).await
    }

    async fn update(&self, record: &Record) -> session_store::Result<bool> {
        if record.expiry_date <= OffsetDateTime::now_utc() {
            self.delete(&record.id).await?;
            return Ok(true);
        }
        self.set_if(record, SetOptions::XX).await
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let value: Option<String> = self
            .with_options()
            .get(redis_key(id))
            .await
            .map_err(backend_error)?;
        let Some(value) = value else {
            return Ok(None);
        };
        match serde_json::from_str::<StoredRecord>(&value) {
            Ok(stored) => Ok(Some(Record {
                id: *id,
                data: stored.data,
                expiry_date: stored.expiry_date,
            })),
            Err(_) => {
                tracing::warn!(
                    "a Redis record is not in this server's format: treated as no session"
                );
                Ok(None)
            }
        }
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        let _: i64 = self
            .with_options()
            .del(redis_key(id))
            .await
            .map_err(backend_error)?;
        Ok(())
    }

    async fn create_in_set(
        &self,
        record: &Record,
        set: &SetKey,
        member: &str,
        limit: usize,
        set_expiry: OffsetDateTime,
        guard: Option<&Id>,
    ) -> session_store::Result<SetInsert> {
        let mut keys = vec![redis_key(&record.id), set_key(set)];
        keys.extend(guard.map(redis_key));
        let outcome: i64 = self
            .script(
                CREATE_IN_SET,
                keys,
                vec![
                    stored_value(record)?,
                    unix_ms(record.expiry_date).to_string(),
                    member.to_owned(),
                    limit.to_string(),
                    unix_ms(set_expiry).to_string(),
                ],
            )
            .await?;
        Ok(match outcome {
            0 => SetInsert::Created,
            1 => SetInsert::IdTaken,
            3 => SetInsert::GuardGone,
            _ => SetInsert::SetFull,
        })
    }

    async fn delete_in_set(
        &self,
        id: &Id,
        set: &SetKey,
        member: &str,
    ) -> session_store::Result<bool> {
        let removed: i64 = self
            .script(
                DELETE_IN_SET,
                vec![redis_key(id), set_key(set)],
                vec![member.to_owned()],
            )
            .await?;
        Ok(removed > 0)
    }

    async fn members(&self, set: &SetKey) -> session_store::Result<Vec<String>> {
        self.with_options()
            .smembers(set_key(set))
            .await
            .map_err(backend_error)
    }

    async fn add_members(
        &self,
        set: &SetKey,
        members: &[String],
        set_expiry: OffsetDateTime,
    ) -> session_store::Result<()> {
        if members.is_empty() {
            return Ok(());
        }
        let mut args = vec![unix_ms(set_expiry).to_string()];
        args.extend(members.iter().cloned());
        let _: i64 = self.script(ADD_MEMBERS, vec![set_key(set)], args).await?;
        Ok(())
    }

    async fn remove_members(&self, set: &SetKey, members: &[String]) -> session_store::Result<()> {
        if members.is_empty() {
            return Ok(());
        }
        let _: i64 = self
            .with_options()
            .srem(set_key(set), members.to_vec())
            .await
            .map_err(backend_error)?;
        Ok(())
    }

    async fn push_capped(
        &self,
        list: &SetKey,
        owner: &Id,
        entry: &str,
        cap: usize,
        expiry: OffsetDateTime,
    ) -> session_store::Result<()> {
        if expiry <= OffsetDateTime::now_utc() {
            return Ok(());
        }
        let _: i64 = self
            .script(
                PUSH_CAPPED,
                vec![list_key(list), redis_key(owner)],
                vec![
                    entry.to_owned(),
                    cap.max(1).to_string(),
                    unix_ms(expiry).to_string(),
                ],
            )
            .await?;
        Ok(())
    }

    async fn entries(&self, list: &SetKey) -> session_store::Result<Vec<String>> {
        self.with_options()
            .lrange(list_key(list), 0, -1)
            .await
            .map_err(backend_error)
    }

    async fn delete_list(&self, list: &SetKey) -> session_store::Result<()> {
        let _: i64 = self
            .with_options()
            .del(list_key(list))
            .await
            .map_err(backend_error)?;
        Ok(())
    }

    async fn is_available(&self) -> bool {
        let ping = Options {
            fail_fast: true,
            timeout: Some(PING_TIMEOUT),
            ..Options::default()
        };
        let answer: Result<String, _> = self.client.with_options(&ping).ping(None).await;
        answer.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefixed_hashes_of_the_id() {
        let id = Id(0x1234_5678_9abc_def0_1234_5678_9abc_def0);
        let key = redis_key(&id);
        assert!(key.starts_with(KEY_PREFIX));
        assert_eq!(key.len(), KEY_PREFIX.len() + 32);
        assert!(!key.contains(&id.to_string()));
        assert_eq!(key, redis_key(&id), "stable across instances");
        assert_ne!(key, redis_key(&Id(id.0 + 1)));
    }

    #[tokio::test]
    async fn a_bad_url_is_refused_without_being_echoed() {
        let error = RedisStore::connect(&Secret::new("http://:hunter2@host"), None)
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("REDIS_URL"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }
}
