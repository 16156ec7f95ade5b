//! Proxy tokens: long random bearer tokens that let a service use the proxy
//! and relays with a person's OAuth tokens, without ever holding them.
//!
//! They live in the session store backend (memory or Redis), so every
//! instance sharing it sees them, and survive the browser's logout until
//! revoked. Only hashes of a token are stored: the record's key and a
//! verification hash compared in constant time.
//!
//! A token authenticated in the last [`RECENT_TOKEN_TTL`] is trusted again
//! without reading the store (one decryption and JSON parse per request
//! otherwise). Revoking a token forgets it at once on the instance that
//! revoked it; other instances sharing a Redis store may accept it for up to
//! that long after.

use std::collections::HashMap;
use std::sync::PoisonError;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::Mutex;
use tower_sessions::SessionStore as _;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store;

use crate::hex;
use crate::secret::Secret;
use crate::session::{AccessGrant, Store, random_token};

/// Prefix of every proxy token, so they are easy to spot (and to scan for).
pub const TOKEN_PREFIX: &str = "ocsp_";

/// How long a proxy token lasts when the access token has no known expiry.
const DEFAULT_LIFETIME: time::Duration = time::Duration::days(90);

/// A use is written back at most this often, to spare the store.
const LAST_USE_RESOLUTION: time::Duration = time::Duration::seconds(60);

/// How long an authenticated token is trusted without reading the store
/// again: the longest another instance may accept a token revoked elsewhere.
pub const RECENT_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// Past this many recently authenticated tokens, stale ones are dropped (and
/// all of them if none is stale), so the memory stays bounded.
const RECENT_TOKEN_CAPACITY: usize = 4096;

const TOKEN_FIELD: &str = "proxy_token";
const INDEX_FIELD: &str = "proxy_token_index";

/// The store failed, or holds something unreadable.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The backend failed.
    #[error("the token store is unavailable: {0}")]
    Store(#[from] session_store::Error),
    /// A record could not be (de)serialized.
    #[error("a proxy-token record is unreadable: {0}")]
    Record(#[from] serde_json::Error),
}

/// What a listing shows of a token: never the token itself.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenInfo {
    /// Public identifier, used to revoke.
    pub id: String,
    /// The name its creator gave it.
    pub name: String,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it was last used, to the minute.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
}

/// A token just created: the only time its value is known.
#[derive(Debug, Serialize)]
pub struct NewToken {
    /// The bearer token to give to a service.
    pub token: Secret,
    /// Its description.
    #[serde(flatten)]
    pub info: TokenInfo,
}

/// A token's stored record.
#[derive(Debug, Serialize, Deserialize)]
struct TokenRecord {
    info: TokenInfo,
    /// SHA-256 of the token, compared in constant time.
    verifier: String,
    /// Whose tokens list it appears in.
    owner: String,
    /// The OAuth tokens it acts for.
    grant: AccessGrant,
}

/// One entry of an owner's index: which record holds which token.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct IndexEntry {
    id: String,
    /// The record's id, as a string: JSON numbers cannot hold an `i128`.
    record: String,
}

impl IndexEntry {
    fn record_id(&self) -> Option<Id> {
        self.record.parse().ok().map(Id)
    }
}

/// Creates, lists, checks and revokes proxy tokens.
#[derive(Debug)]
pub struct ProxyTokens {
    store: Store,
    /// Serialises this instance's index updates (read, change, write).
    index_lock: Mutex<()>,
    recent: RecentTokens,
}

impl ProxyTokens {
    /// Tokens kept in `store`.
    pub fn new(store: Store) -> Self {
        Self {
            store,
            index_lock: Mutex::new(()),
            recent: RecentTokens::default(),
        }
    }

    /// Creates a token named `name` acting for `grant`.
    pub async fn create(&self, grant: &AccessGrant, name: &str) -> Result<NewToken, TokenError> {
        let token = format!("{TOKEN_PREFIX}{}", random_token());
        let now = now_to_the_second();
        let info = TokenInfo {
            id: public_id(&token),
            name: name.to_owned(),
            created_at: now,
            last_used_at: None,
        };
        let expiry_date = grant
            .expiration_date
            .as_deref()
            .and_then(|date| OffsetDateTime::parse(date, &Rfc3339).ok())
            .filter(|date| *date > now)
            .unwrap_or(now + DEFAULT_LIFETIME);
        let record = TokenRecord {
            info: info.clone(),
            verifier: verifier(&token),
            owner: owner_of(grant),
            grant: grant.clone(),
        };
        let id = token_record_id(&token);
        self.store
            .save(&single_field_record(id, TOKEN_FIELD, &record, expiry_date)?)
            .await?;
        self.update_index(&record.owner, expiry_date, |entries| {
            entries.push(IndexEntry {
                id: info.id.clone(),
                record: id.0.to_string(),
            });
        })
        .await?;
        Ok(NewToken {
            token: Secret::new(token),
            info,
        })
    }

    /// The tokens created by the owner of `grant`, oldest first.
    pub async fn list(&self, grant: &AccessGrant) -> Result<Vec<TokenInfo>, TokenError> {
        let mut tokens = Vec::new();
        for entry in self.index(&owner_of(grant)).await? {
            let Some(id) = entry.record_id() else {
                continue;
            };
            if let Some(record) = self.load_token(id).await? {
                tokens.push(record.info);
            }
        }
        tokens.sort_by_key(|info| info.created_at);
        Ok(tokens)
    }

    /// Revokes the owner's token `id`; `false` when there is none.
    pub async fn revoke(&self, grant: &AccessGrant, id: &str) -> Result<bool, TokenError> {
        let owner = owner_of(grant);
        let Some(entry) = self
            .index(&owner)
            .await?
            .into_iter()
            .find(|entry| entry.id == id)
        else {
            return Ok(false);
        };
        if let Some(record_id) = entry.record_id() {
            self.store.delete(&record_id).await?;
        }
        self.recent.forget(&entry.id);
        let far = OffsetDateTime::now_utc() + DEFAULT_LIFETIME;
        self.update_index(&owner, far, |entries| {
            entries.retain(|kept| kept.id != entry.id);
        })
        .await?;
        Ok(true)
    }

    /// The grant `presented` acts for, if it is a live token.
    pub async fn authenticate(
        &self,
        presented: &str,
    ) -> Result<Option<(TokenInfo, AccessGrant)>, TokenError> {
        if !presented.starts_with(TOKEN_PREFIX) {
            return Ok(None);
        }
        let recent_key = RecentKey::of(presented);
        let checked_at = Instant::now();
        if let Some(recent) = self.recent.get(&recent_key, checked_at) {
            return Ok(Some(recent));
        }
        let presented_verifier = verifier(presented);
        let generation = self.recent.generation();
        let id = token_record_id(presented);
        let Some((mut record, expiry_date)) = self.load_token_with_expiry(id).await? else {
            return Ok(None);
        };
        let matches: bool = record
            .verifier
            .as_bytes()
            .ct_eq(presented_verifier.as_bytes())
            .into();
        if !matches {
            return Ok(None);
        }
        let now = now_to_the_second();
        let stale = record
            .info
            .last_used_at
            .is_none_or(|last| now - last >= LAST_USE_RESOLUTION);
        if stale {
            record.info.last_used_at = Some(now);
            self.store
                .save(&single_field_record(id, TOKEN_FIELD, &record, expiry_date)?)
                .await?;
        }
        self.recent.remember(
            recent_key,
            generation,
            Recent::new(
                checked_at,
                expiry_date,
                record.info.clone(),
                record.grant.clone(),
            ),
        );
        Ok(Some((record.info, record.grant)))
    }

    async fn load_token(&self, id: Id) -> Result<Option<TokenRecord>, TokenError> {
        Ok(self
            .load_token_with_expiry(id)
            .await?
            .map(|(record, _)| record))
    }

    async fn load_token_with_expiry(
        &self,
        id: Id,
    ) -> Result<Option<(TokenRecord, OffsetDateTime)>, TokenError> {
        let Some(mut record) = self.store.load(&id).await? else {
            return Ok(None);
        };
        let Some(value) = record.data.remove(TOKEN_FIELD) else {
            return Ok(None);
        };
        Ok(Some((serde_json::from_value(value)?, record.expiry_date)))
    }

    async fn index(&self, owner: &str) -> Result<Vec<IndexEntry>, TokenError> {
        match self.store.load(&index_record_id(owner)).await? {
            Some(mut record) => index_entries(&mut record),
            None => Ok(Vec::new()),
        }
    }

    async fn update_index(
        &self,
        owner: &str,
        expiry_date: OffsetDateTime,
        change: impl FnOnce(&mut Vec<IndexEntry>),
    ) -> Result<(), TokenError> {
        let _guard = self.index_lock.lock().await;
        let id = index_record_id(owner);
        let (mut entries, expiry_date) = match self.store.load(&id).await? {
            Some(mut record) => (
                index_entries(&mut record)?,
                record.expiry_date.max(expiry_date),
            ),
            None => (Vec::new(), expiry_date),
        };
        change(&mut entries);
        if entries.is_empty() {
            self.store.delete(&id).await?;
        } else {
            self.store
                .save(&single_field_record(
                    id,
                    INDEX_FIELD,
                    &entries,
                    expiry_date,
                )?)
                .await?;
        }
        Ok(())
    }
}

/// The entries of an index record (none if the field is missing).
fn index_entries(record: &mut Record) -> Result<Vec<IndexEntry>, TokenError> {
    match record.data.remove(INDEX_FIELD) {
        Some(value) => Ok(serde_json::from_value(value)?),
        None => Ok(Vec::new()),
    }
}

/// Tokens this instance authenticated lately, by a hash of the token (never
/// by the token itself).
#[derive(Debug, Default)]
struct RecentTokens(std::sync::Mutex<RecentInner>);

/// The key of a token in [`RecentTokens`]: the SHA-256 of the token alone,
/// one block to hash (the stored verifier's domain prefix makes it two),
/// kept in this process only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct RecentKey([u8; 32]);

impl RecentKey {
    fn of(token: &str) -> Self {
        Self(sha256(&[token.as_bytes()]))
    }
}

/// Hashes a [`RecentKey`] by its first bytes: it is already a SHA-256.
#[derive(Clone, Copy, Debug, Default)]
struct PrehashedKey(u64);

impl std::hash::Hasher for PrehashedKey {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for (index, byte) in bytes.iter().take(8).enumerate() {
            self.0 ^= u64::from(*byte) << (8 * index);
        }
    }
}

#[derive(Debug, Default)]
struct RecentInner {
    entries: HashMap<RecentKey, Recent, std::hash::BuildHasherDefault<PrehashedKey>>,
    /// Bumped by every revocation, so a look-up that raced with one is not
    /// remembered after it.
    generation: u64,
}

#[derive(Debug)]
struct Recent {
    /// [`RECENT_TOKEN_TTL`] after the check, or the record's own expiry if
    /// sooner: a remembered token does not outlive its record.
    fresh_until: Instant,
    info: TokenInfo,
    grant: AccessGrant,
}

impl Recent {
    fn new(
        checked_at: Instant,
        expiry_date: OffsetDateTime,
        info: TokenInfo,
        grant: AccessGrant,
    ) -> Self {
        // Converted once here, so that a look-up reads one clock, not the
        // calendar's.
        let left = (expiry_date - OffsetDateTime::now_utc()).max(time::Duration::ZERO);
        let left = std::time::Duration::try_from(left).unwrap_or_default();
        Self {
            fresh_until: checked_at + RECENT_TOKEN_TTL.min(left),
            info,
            grant,
        }
    }

    fn is_fresh(&self, now: Instant) -> bool {
        now < self.fresh_until
    }
}

impl RecentTokens {
    fn lock(&self) -> std::sync::MutexGuard<'_, RecentInner> {
        // Nothing panics while holding it; a poisoned map is still sound.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn get(&self, key: &RecentKey, now: Instant) -> Option<(TokenInfo, AccessGrant)> {
        let inner = self.lock();
        let recent = inner.entries.get(key)?;
        recent
            .is_fresh(now)
            .then(|| (recent.info.clone(), recent.grant.clone()))
    }

    fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Remembers a token checked against the store, unless a revocation
    /// happened since `generation` was read.
    fn remember(&self, key: RecentKey, generation: u64, recent: Recent) {
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        if inner.entries.len() >= RECENT_TOKEN_CAPACITY {
            let now = Instant::now();
            inner.entries.retain(|_, kept| kept.is_fresh(now));
            if inner.entries.len() >= RECENT_TOKEN_CAPACITY {
                inner.entries.clear();
            }
        }
        inner.entries.insert(key, recent);
    }

    /// Forgets the token whose public id is `id`.
    fn forget(&self, id: &str) {
        let mut inner = self.lock();
        inner.generation = inner.generation.wrapping_add(1);
        inner.entries.retain(|_, kept| kept.info.id != id);
    }
}

fn now_to_the_second() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(0).unwrap_or(now)
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// A store key derived from `value`; the domain keeps kinds apart.
fn derived_id(domain: &str, value: &str) -> Id {
    let digest = sha256(&[domain.as_bytes(), value.as_bytes()]);
    let mut half = [0_u8; 16];
    half.copy_from_slice(&digest[..16]);
    Id(i128::from_le_bytes(half))
}

fn token_record_id(token: &str) -> Id {
    derived_id("ocs/proxy-token/record/", token)
}

fn index_record_id(owner: &str) -> Id {
    derived_id("ocs/proxy-token/index/", owner)
}

fn verifier(token: &str) -> String {
    hex::encode(&sha256(&[b"ocs/proxy-token/verify/", token.as_bytes()]))
}

fn public_id(token: &str) -> String {
    hex::encode(&sha256(&[b"ocs/proxy-token/public-id/", token.as_bytes()])[..8])
}

/// Whose list a token joins: the Clever Cloud user (per consumer), or the
/// access token itself when the API did not name the user.
pub(crate) fn owner_of(grant: &AccessGrant) -> String {
    let consumer = match &grant.consumer {
        crate::session::Consumer::Operator => "operator",
        crate::session::Consumer::Visitor { key, .. } => key.as_str(),
    };
    match &grant.user_id {
        Some(user) => format!("{consumer}/user/{user}"),
        None => format!(
            "{consumer}/token/{}",
            hex::encode(&sha256(&[grant.token.as_bytes()]))
        ),
    }
}

fn single_field_record<T: Serialize>(
    id: Id,
    field: &str,
    value: &T,
    expiry_date: OffsetDateTime,
) -> Result<Record, TokenError> {
    let data = HashMap::from([(field.to_owned(), serde_json::to_value(value)?)]);
    Ok(Record {
        id,
        data,
        expiry_date,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{Consumer, MemoryStore, SealingKey};

    fn grant(user: &str) -> AccessGrant {
        AccessGrant {
            token: format!("access-{user}"),
            secret: Secret::new("access-secret"),
            consumer: Consumer::Operator,
            user_id: Some(user.to_owned()),
            expiration_date: None,
        }
    }

    fn tokens() -> ProxyTokens {
        ProxyTokens::new(Store::new(MemoryStore::default(), &SealingKey::random()))
    }

    #[test]
    fn a_remembered_token_is_trusted_for_the_ttl_and_never_past_its_record() {
        let info = TokenInfo {
            id: "id".to_owned(),
            name: "name".to_owned(),
            created_at: OffsetDateTime::UNIX_EPOCH,
            last_used_at: None,
        };
        let remembered = |expires_in: time::Duration| {
            let now = Instant::now();
            let recent = Recent::new(
                now,
                OffsetDateTime::now_utc() + expires_in,
                info.clone(),
                grant("ada"),
            );
            (now, recent)
        };
        let short = std::time::Duration::from_millis(200);

        let (now, far) = remembered(time::Duration::days(1));
        assert!(far.is_fresh(now + RECENT_TOKEN_TTL - short));
        assert!(!far.is_fresh(now + RECENT_TOKEN_TTL));

        let (now, soon) = remembered(time::Duration::milliseconds(400));
        assert!(soon.is_fresh(now + short));
        assert!(!soon.is_fresh(now + 3 * short));

        let (now, past) = remembered(time::Duration::seconds(-1));
        assert!(!past.is_fresh(now));
    }

    #[tokio::test]
    async fn a_token_works_until_revoked() -> Result<(), TokenError> {
        let tokens = tokens();
        let ada = grant("ada");
        let created = tokens.create(&ada, "ci").await?;
        let value = created.token.expose().to_owned();
        assert!(
            value.len() >= TOKEN_PREFIX.len() + 43,
            "256 bits of randomness"
        );

        let (info, acting_for) = tokens
            .authenticate(&value)
            .await?
            .ok_or(TokenError::Record(serde_json::Error::io(
                std::io::Error::other("token refused"),
            )))?;
        assert_eq!(info.id, created.info.id);
        assert_eq!(acting_for.token, ada.token);
        assert!(info.last_used_at.is_some());

        // Accepted again (from what this instance remembers), then refused
        // as soon as it is revoked here.
        assert!(tokens.authenticate(&value).await?.is_some());
        assert!(tokens.revoke(&ada, &created.info.id).await?);
        assert!(tokens.authenticate(&value).await?.is_none());
        assert!(tokens.list(&ada).await?.is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn listing_and_revoking_are_per_owner() -> Result<(), TokenError> {
        let tokens = tokens();
        let (ada, bob) = (grant("ada"), grant("bob"));
        let first = tokens.create(&ada, "first").await?;
        tokens.create(&ada, "second").await?;
        tokens.create(&bob, "bob's").await?;

        let names: Vec<_> = tokens
            .list(&ada)
            .await?
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(names, ["first", "second"]);
        assert!(
            !tokens.revoke(&bob, &first.info.id).await?,
            "bob cannot revoke ada's token"
        );
        assert!(tokens.authenticate(first.token.expose()).await?.is_some());
        Ok(())
    }

    #[tokio::test]
    async fn near_misses_are_refused() -> Result<(), TokenError> {
        let tokens = tokens();
        let created = tokens.create(&grant("ada"), "ci").await?;
        let value = created.token.expose();
        let mut altered = value.to_owned();
        altered.pop();
        altered.push(if value.ends_with('A') { 'B' } else { 'A' });
        // Also after the real token was just accepted (and remembered).
        assert!(tokens.authenticate(value).await?.is_some());
        assert!(tokens.authenticate(&altered).await?.is_none());
        assert!(tokens.authenticate("").await?.is_none());
        assert!(
            tokens
                .authenticate(&value[TOKEN_PREFIX.len()..])
                .await?
                .is_none()
        );
        Ok(())
    }

    #[test]
    fn the_stored_record_holds_no_token() -> Result<(), TokenError> {
        let token = "ocsp_example";
        let record = TokenRecord {
            info: TokenInfo {
                id: public_id(token),
                name: "n".into(),
                created_at: now_to_the_second(),
                last_used_at: None,
            },
            verifier: verifier(token),
            owner: "o".into(),
            grant: grant("ada"),
        };
        let stored = serde_json::to_string(&record)?;
        assert!(!stored.contains(token));
        Ok(())
    }
}
