//! Proxy tokens: long random bearer tokens that let a service use the proxy
//! and relays with a person's OAuth tokens, without ever holding them.
//!
//! They live in the store (memory or Redis), so every instance sharing it
//! sees them, and survive the browser's logout until revoked. Only hashes
//! of a token are stored: the record's key and a verification hash compared
//! in constant time.
//!
//! Each owner (see [`AccessGrant::owner`]) has a set of members, one per
//! token, `PUBLIC_ID:RECORD_ID`: ids, never secrets. A token's record and
//! its member are created together and deleted together, each in one atomic
//! store operation, so no instance can lose track of a token that works.
//! A member whose record expired is dropped when the set is read.
//!
//! A token authenticated in the last [`RECENT_TOKEN_TTL`] is trusted again
//! without reading the store. Revoking a token forgets it at once on the
//! instance that revoked it; other instances sharing a Redis store may
//! accept it for up to that long after.

pub(crate) mod audit;
mod cache;
pub(crate) mod scope;

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store;

use self::audit::{CallRecord, KEPT_CALLS};
use self::cache::{Recent, RecentKey, RecentTokens};
use self::scope::Scope;
use crate::hex;
use crate::oauth::grant::AccessGrant;
use crate::secret::Secret;
use crate::session::{SetInsert, SetKey, Store, random_token};

/// Prefix of every proxy token, so they are easy to spot (and to scan for).
pub const TOKEN_PREFIX: &str = "ocsp_";

/// How long a proxy token lasts unless told otherwise (or its access
/// token's expiry, when sooner).
const DEFAULT_LIFETIME: time::Duration = time::Duration::days(90);
/// The shortest life a token may be given.
const MIN_LIFETIME: time::Duration = time::Duration::hours(1);
/// Most addresses and networks one token may name.
const MAX_ALLOWED_IPS: usize = 50;

/// A use is written back at most this often, to spare the store.
const LAST_USE_RESOLUTION: time::Duration = time::Duration::seconds(60);

const TOKEN_FIELD: &str = "proxy_token";
/// The per-owner index of earlier versions: one record, read, changed and
/// written back. Read once more to move its entries into the owner's set.
const LEGACY_INDEX_FIELD: &str = "proxy_token_index";

/// The store failed, or holds something unreadable.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TokenError {
    /// The backend failed.
    #[error("the token store is unavailable: {0}")]
    Store(#[from] session_store::Error),
    /// A record could not be (de)serialized.
    #[error("a proxy-token record is unreadable: {0}")]
    Record(#[from] serde_json::Error),
    /// The owner holds as many live tokens as allowed.
    #[error("{0} proxy tokens exist already, the most one person may hold: revoke one first")]
    TooMany(usize),
    /// What was asked for a new token cannot be: the message says why.
    #[error("{0}")]
    Invalid(String),
    /// The session a token was being made from ended meanwhile.
    #[error("the session ended while the token was being made: log in again")]
    SessionEnded,
}

/// What a listing shows of a token: never the token itself.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct TokenInfo {
    /// Public identifier, used to revoke.
    pub id: String,
    /// The name its creator gave it.
    pub name: String,
    /// When it was created (listings are ordered by it).
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it was last used, to the minute.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    /// The address it was last used from (trusted-proxy-aware).
    #[serde(default)]
    pub last_used_from: Option<IpAddr>,
    /// When it stops working (`None`: a token made before expiries were
    /// chosen, which lasts as its record).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// What it may do; tokens made before scopes are `full`.
    #[serde(default)]
    pub scope: Scope,
    /// The addresses and networks it may be used from; empty: anywhere.
    #[serde(default)]
    pub allowed_ips: Vec<IpNet>,
    /// The store record it was read from (never shown: it derives from
    /// the token).
    #[serde(skip)]
    record: Option<Id>,
    /// What auditing its calls needs, worked out once per check of the
    /// record (at most once a second) rather than once per call: two
    /// hashes and a string.
    #[serde(skip)]
    audit_keys: Option<AuditKeys>,
}

/// Where a token's calls are audited.
#[derive(Clone, Debug, PartialEq, Eq)]
struct AuditKeys {
    /// Whose token it is: [`AccessGrant::owner`] of its grant.
    owner: String,
    /// The list of its recent calls.
    calls: SetKey,
}

impl TokenInfo {
    /// A token's description with the defaults: full scope, any address.
    pub(crate) fn new(id: String, name: String, created_at: OffsetDateTime) -> Self {
        Self {
            id,
            name,
            created_at,
            last_used_at: None,
            last_used_from: None,
            expires_at: None,
            scope: Scope::Full,
            allowed_ips: Vec::new(),
            record: None,
            audit_keys: None,
        }
    }

    /// Whether the token may be used from `client` (unknown: only when any
    /// address may).
    pub fn allows_address(&self, client: Option<IpAddr>) -> bool {
        self.allowed_ips.is_empty()
            || client.is_some_and(|client| {
                let client = client.to_canonical();
                self.allowed_ips.iter().any(|net| net.contains(&client))
            })
    }
}

/// What a new token is asked to be.
#[derive(Clone, Debug)]
pub(crate) struct TokenRequest {
    /// Its name.
    pub name: String,
    /// When it should stop working; default: in 90 days, or when the
    /// access token expires if sooner.
    pub expires_at: Option<OffsetDateTime>,
    /// What it may do.
    pub scope: Scope,
    /// Where it may be used from; empty: anywhere.
    pub allowed_ips: Vec<IpNet>,
}

impl TokenRequest {
    /// A token named `name` with full scope, usable anywhere, for the
    /// default time.
    #[cfg(test)]
    pub(crate) fn named(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            expires_at: None,
            scope: Scope::Full,
            allowed_ips: Vec::new(),
        }
    }
}

/// An IP address (`192.0.2.7`, `2001:db8::1`) or network (`10.0.0.0/8`).
pub(crate) fn parse_address(text: &str) -> Result<IpNet, TokenError> {
    let text = text.trim();
    text.parse::<IpNet>()
        .map(|net| net.trunc())
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| {
            TokenError::Invalid(format!(
                "`{}` is not an IP address or network (such as 192.0.2.7 or 10.0.0.0/8)",
                text.chars().take(60).collect::<String>()
            ))
        })
}

/// A token just created: the only time its value is known.
#[derive(Debug, Serialize)]
pub(crate) struct NewToken {
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
    /// Whose set lists it.
    owner: String,
    /// The OAuth tokens it acts for.
    grant: AccessGrant,
}

/// One member of an owner's set: which public id lives in which record.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Member {
    id: String,
    record: Id,
}

impl Member {
    fn encode(&self) -> String {
        format!("{}:{}", self.id, self.record.0)
    }

    fn decode(text: &str) -> Option<Self> {
        let (id, record) = text.split_once(':')?;
        Some(Self {
            id: id.to_owned(),
            record: Id(record.parse().ok()?),
        })
    }
}

/// An entry of the legacy index record.
#[derive(Deserialize)]
struct LegacyIndexEntry {
    id: String,
    /// The record's id, as a string: JSON numbers cannot hold an `i128`.
    record: String,
}

/// Creates, lists, checks and revokes proxy tokens.
#[derive(Debug)]
pub(crate) struct ProxyTokens {
    store: Store,
    /// Live tokens one owner may hold at once.
    per_owner: usize,
    recent: RecentTokens,
}

impl ProxyTokens {
    /// Tokens kept in `store`, at most `per_owner` live ones per owner.
    pub fn new(store: Store, per_owner: usize) -> Self {
        Self {
            store,
            per_owner,
            recent: RecentTokens::default(),
        }
    }

    /// Creates a token acting for `grant` as `request` asks, from the
    /// browser session `session`; refused past the owner's limit, when the
    /// expiry is out of bounds, or once the session has ended (a logout, or
    /// "Revoke access" racing with the creation: its sweep of the grant's
    /// tokens, which follows the end of the session, then misses none).
    pub async fn create(
        &self,
        grant: &AccessGrant,
        request: TokenRequest,
        session: &Id,
    ) -> Result<NewToken, TokenError> {
        if request.allowed_ips.len() > MAX_ALLOWED_IPS {
            return Err(TokenError::Invalid(format!(
                "a token names at most {MAX_ALLOWED_IPS} addresses or networks"
            )));
        }
        // Full precision: listings are ordered by it, and a set has no order.
        let now = OffsetDateTime::now_utc();
        let expiry_date = expiry_for(grant, request.expires_at, now)?;
        let owner = grant.owner();
        let set = owner_set(&owner);
        // Expired tokens do not count against the limit.
        self.live_records(&owner).await?;
        loop {
            let token = format!("{TOKEN_PREFIX}{}", random_token());
            let info = TokenInfo {
                expires_at: Some(expiry_date),
                scope: request.scope.clone(),
                allowed_ips: request.allowed_ips.clone(),
                ..TokenInfo::new(public_id(&token), request.name.clone(), now)
            };
            let record = TokenRecord {
                info: info.clone(),
                verifier: verifier(&token),
                owner: owner.clone(),
                grant: grant.clone(),
            };
            let member = Member {
                id: info.id.clone(),
                record: token_record_id(&token),
            };
            let stored = single_field_record(member.record, TOKEN_FIELD, &record, expiry_date)?;
            match self
                .store
                .create_in_set(
                    &stored,
                    &set,
                    &member.encode(),
                    self.per_owner,
                    expiry_date,
                    Some(session),
                )
                .await?
            {
                SetInsert::Created => {
                    return Ok(NewToken {
                        token: Secret::new(token),
                        info,
                    });
                }
                SetInsert::SetFull => return Err(TokenError::TooMany(self.per_owner)),
                SetInsert::GuardGone => return Err(TokenError::SessionEnded),
                // 128 random bits met another token's: draw again.
                SetInsert::IdTaken => {}
            }
        }
    }

    /// The tokens of `grant`'s owner, oldest first.
    pub async fn list(&self, grant: &AccessGrant) -> Result<Vec<TokenInfo>, TokenError> {
        let mut tokens: Vec<_> = self
            .live_records(&grant.owner())
            .await?
            .into_iter()
            .map(|(_, record)| record.info)
            .collect();
        tokens.sort_by_key(|info| info.created_at);
        Ok(tokens)
    }

    /// The owner's token `id`, if it is live.
    pub async fn get(
        &self,
        grant: &AccessGrant,
        id: &str,
    ) -> Result<Option<TokenInfo>, TokenError> {
        Ok(self
            .live_records(&grant.owner())
            .await?
            .into_iter()
            .find(|(member, _)| member.id == id)
            .map(|(_, record)| record.info))
    }

    /// The owner's token `id`'s recent calls, newest first; `None` when
    /// the owner has no such token.
    pub async fn calls(
        &self,
        grant: &AccessGrant,
        id: &str,
    ) -> Result<Option<Vec<CallRecord>>, TokenError> {
        if self.get(grant, id).await?.is_none() {
            return Ok(None);
        }
        let entries = self.store.entries(&calls_list(id)).await?;
        Ok(Some(
            entries
                .iter()
                .filter_map(|entry| serde_json::from_str(entry).ok())
                .collect(),
        ))
    }

    /// Keeps `call` among token `info`'s last [`KEPT_CALLS`] calls, for as
    /// long as the token lives.
    pub async fn record_call(&self, info: &TokenInfo, call: &CallRecord) -> Result<(), TokenError> {
        let Some(record) = info.record else {
            return Ok(());
        };
        let expiry = info
            .expires_at
            .unwrap_or_else(|| OffsetDateTime::now_utc() + DEFAULT_LIFETIME);
        let calls = match &info.audit_keys {
            Some(keys) => Cow::Borrowed(&keys.calls),
            None => Cow::Owned(calls_list(&info.id)),
        };
        self.store
            .push_capped(
                &calls,
                &record,
                &serde_json::to_string(call)?,
                KEPT_CALLS,
                expiry,
            )
            .await?;
        Ok(())
    }

    /// Whether token `info` still lives in the store (not revoked, not
    /// expired). A store that does not answer says nothing: `Ok(true)` is
    /// not promised then, the error is returned.
    pub async fn is_live(&self, info: &TokenInfo) -> Result<bool, TokenError> {
        let Some(record) = info.record else {
            return Ok(true);
        };
        Ok(self.store.load_record(&record).await?.is_some())
    }

    /// Audits one call made with token `info` (as [`Self::authenticate`]
    /// gave it): one `audit` log line (no secret: the path is redacted, the
    /// query left out), and the call kept among the token's recent ones,
    /// written in the background so the answer does not wait for the store.
    pub fn audit(
        self: &Arc<Self>,
        info: &Arc<TokenInfo>,
        call: CallRecord,
        latency: std::time::Duration,
    ) {
        debug_assert!(
            info.audit_keys.is_some(),
            "audited tokens come from `authenticate`"
        );
        tracing::info!(
            target: "audit",
            token_id = %info.id,
            owner = info.audit_keys.as_ref().map(|keys| keys.owner.as_str()),
            method = %call.method,
            path = %call.path,
            status = call.status,
            client = call.client.map(|ip| ip.to_string()),
            latency_ms = latency.as_secs_f64() * 1000.0,
            "audit"
        );
        let (tokens, info) = (Arc::clone(self), Arc::clone(info));
        tokio::spawn(async move {
            if let Err(error) = tokens.record_call(&info, &call).await {
                tracing::warn!(%error, token_id = %info.id, "a call could not be kept among the token's recent calls");
            }
        });
    }

    /// Revokes the owner's token `id`; `false` when there is none.
    pub async fn revoke(&self, grant: &AccessGrant, id: &str) -> Result<bool, TokenError> {
        let owner = grant.owner();
        self.migrate_legacy_index(&owner).await?;
        let members = self.members(&owner).await?;
        let Some(member) = members.into_iter().find(|member| member.id == id) else {
            return Ok(false);
        };
        self.delete(&owner, &member).await
    }

    /// Revokes every token made from this very grant (its access token),
    /// leaving the owner's tokens from other logins; how many.
    pub async fn revoke_made_from(&self, grant: &AccessGrant) -> Result<usize, TokenError> {
        let owner = grant.owner();
        let mut revoked = 0;
        for (member, record) in self.live_records(&owner).await? {
            if record.grant.token == grant.token && self.delete(&owner, &member).await? {
                revoked += 1;
            }
        }
        Ok(revoked)
    }

    async fn delete(&self, owner: &str, member: &Member) -> Result<bool, TokenError> {
        let removed = self
            .store
            .delete_in_set(&member.record, &owner_set(owner), &member.encode())
            .await?;
        self.recent.forget(&member.id);
        self.store.delete_list(&calls_list(&member.id)).await?;
        Ok(removed)
    }

    /// The token `presented` and the grant it acts for, if it is a live
    /// token. A use from `client` is written back once a minute, or when
    /// the address changes.
    pub async fn authenticate(
        &self,
        presented: &str,
        client: Option<IpAddr>,
    ) -> Result<Option<(Arc<TokenInfo>, Arc<AccessGrant>)>, TokenError> {
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
        let Some((mut record, expiry_date)) = self.load_token(id).await? else {
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
        // A call from an address the token does not allow is refused by the
        // caller: it is no use of the token, and must not show as its last.
        let used = record.info.allows_address(client);
        let stale = record
            .info
            .last_used_at
            .is_none_or(|last| now - last >= LAST_USE_RESOLUTION)
            || (client.is_some() && record.info.last_used_from != client);
        if used && stale {
            record.info.last_used_at = Some(now);
            if client.is_some() {
                record.info.last_used_from = client;
            }
            // Update-only: a revocation that came meanwhile stays.
            let updated = self
                .store
                .update_record(&single_field_record(id, TOKEN_FIELD, &record, expiry_date)?)
                .await?;
            if !updated {
                return Ok(None);
            }
        }
        let audit_keys = AuditKeys {
            owner: record.grant.owner(),
            calls: calls_list(&record.info.id),
        };
        let info = Arc::new(TokenInfo {
            record: Some(id),
            audit_keys: Some(audit_keys),
            ..record.info
        });
        let grant = Arc::new(record.grant);
        self.recent.remember(
            recent_key,
            generation,
            Recent::new(
                checked_at,
                expiry_date,
                Arc::clone(&info),
                Arc::clone(&grant),
            ),
        );
        Ok(Some((info, grant)))
    }

    /// The owner's members and their live records; members whose record is
    /// gone (expired) are removed from the set.
    async fn live_records(&self, owner: &str) -> Result<Vec<(Member, TokenRecord)>, TokenError> {
        self.migrate_legacy_index(owner).await?;
        let mut live = Vec::new();
        let mut dead = Vec::new();
        for member in self.members(owner).await? {
            match self.load_token(member.record).await? {
                Some((record, _)) => live.push((member, record)),
                None => dead.push(member.encode()),
            }
        }
        self.store.remove_members(&owner_set(owner), &dead).await?;
        Ok(live)
    }

    async fn members(&self, owner: &str) -> Result<Vec<Member>, TokenError> {
        let members = self.store.members(&owner_set(owner)).await?;
        Ok(members
            .iter()
            .filter_map(|member| Member::decode(member))
            .collect())
    }

    async fn load_token(
        &self,
        id: Id,
    ) -> Result<Option<(TokenRecord, OffsetDateTime)>, TokenError> {
        let Some(mut record) = self.store.load_record(&id).await? else {
            return Ok(None);
        };
        let Some(value) = record.data.remove(TOKEN_FIELD) else {
            return Ok(None);
        };
        Ok(Some((serde_json::from_value(value)?, record.expiry_date)))
    }

    /// Moves the entries of an index record written by an earlier version
    /// into the owner's set, then deletes that record. Both steps can be
    /// repeated by several instances at once without harm.
    async fn migrate_legacy_index(&self, owner: &str) -> Result<(), TokenError> {
        let id = legacy_index_record_id(owner);
        let Some(mut record) = self.store.load_record(&id).await? else {
            return Ok(());
        };
        let entries: Vec<LegacyIndexEntry> = match record.data.remove(LEGACY_INDEX_FIELD) {
            Some(value) => serde_json::from_value(value)?,
            None => Vec::new(),
        };
        let members: Vec<String> = entries
            .iter()
            .filter_map(|entry| {
                let record = Id(entry.record.parse().ok()?);
                Some(
                    Member {
                        id: entry.id.clone(),
                        record,
                    }
                    .encode(),
                )
            })
            .collect();
        // In pieces: a script takes only so many arguments, and an index of
        // an earlier version had no limit.
        for piece in members.chunks(500) {
            self.store
                .add_members(&owner_set(owner), piece, record.expiry_date)
                .await?;
        }
        self.store.delete_record(&id).await?;
        Ok(())
    }
}

/// When a new token of `grant` expires: `asked`, between an hour from now
/// and the access token's own expiry, or by default in 90 days (or at the
/// access token's expiry, if sooner).
fn expiry_for(
    grant: &AccessGrant,
    asked: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Result<OffsetDateTime, TokenError> {
    let access_expiry = grant
        .expiration_date
        .as_deref()
        .and_then(|date| OffsetDateTime::parse(date, &Rfc3339).ok())
        .filter(|date| *date > now);
    let Some(asked) = asked else {
        return Ok(access_expiry.map_or(now + DEFAULT_LIFETIME, |access| {
            access.min(now + DEFAULT_LIFETIME)
        }));
    };
    if asked < now + MIN_LIFETIME {
        return Err(TokenError::Invalid(
            "expires_at must be at least an hour from now".to_owned(),
        ));
    }
    match access_expiry {
        Some(access) if asked > access => Err(TokenError::Invalid(format!(
            "expires_at may not be after the access token's own expiry ({})",
            access.format(&Rfc3339).unwrap_or_default()
        ))),
        _ => Ok(asked),
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

fn legacy_index_record_id(owner: &str) -> Id {
    derived_id("ocs/proxy-token/index/", owner)
}

/// The set of `owner`'s tokens, named by a hash: no person in clear.
fn owner_set(owner: &str) -> SetKey {
    SetKey(hex::encode(
        &sha256(&[b"ocs/proxy-token/set/", owner.as_bytes()])[..16],
    ))
}

/// The list of token `id`'s recent calls.
fn calls_list(id: &str) -> SetKey {
    SetKey(hex::encode(
        &sha256(&[b"ocs/proxy-token/calls/", id.as_bytes()])[..16],
    ))
}

fn verifier(token: &str) -> String {
    hex::encode(&sha256(&[b"ocs/proxy-token/verify/", token.as_bytes()]))
}

fn public_id(token: &str) -> String {
    hex::encode(&sha256(&[b"ocs/proxy-token/public-id/", token.as_bytes()])[..8])
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
    use crate::oauth::grant::{ApiUser, Consumer};
    use crate::session::{MemoryStore, SealingKey};

    fn grant(user: &str) -> AccessGrant {
        AccessGrant {
            token: format!("access-{user}"),
            secret: Secret::new("access-secret"),
            consumer: Consumer::Operator,
            user: Some(ApiUser {
                id: user.to_owned(),
                name: None,
                email: None,
            }),
            expiration_date: None,
        }
    }

    fn tokens_with_limit(per_owner: usize) -> ProxyTokens {
        ProxyTokens::new(
            Store::new(MemoryStore::default(), &SealingKey::random()),
            per_owner,
        )
    }

    fn tokens() -> ProxyTokens {
        tokens_with_limit(50)
    }

    /// A browser session in `tokens`' store, for tokens to be made from.
    async fn live_session(tokens: &ProxyTokens) -> Result<Id, TokenError> {
        let mut record = Record {
            id: Id::default(),
            data: HashMap::new(),
            expiry_date: OffsetDateTime::now_utc() + time::Duration::hours(1),
        };
        tower_sessions::SessionStore::create(&tokens.store, &mut record).await?;
        Ok(record.id)
    }

    /// A token store in which ada is logged in.
    async fn ada_logged_in() -> Result<(ProxyTokens, Id, AccessGrant), TokenError> {
        let tokens = tokens();
        let session = live_session(&tokens).await?;
        Ok((tokens, session, grant("ada")))
    }

    fn refused() -> TokenError {
        TokenError::Record(serde_json::Error::io(std::io::Error::other(
            "token refused",
        )))
    }

    #[tokio::test]
    async fn a_token_works_until_revoked() -> Result<(), TokenError> {
        let tokens = tokens();
        let session = live_session(&tokens).await?;
        let ada = grant("ada");
        let created = tokens
            .create(&ada, TokenRequest::named("ci"), &session)
            .await?;
        let value = created.token.expose().to_owned();
        assert!(
            value.len() >= TOKEN_PREFIX.len() + 43,
            "256 bits of randomness"
        );

        let (info, acting_for) = tokens
            .authenticate(&value, None)
            .await?
            .ok_or_else(refused)?;
        assert_eq!(info.id, created.info.id);
        assert_eq!(acting_for.token, ada.token);
        assert!(info.last_used_at.is_some());

        // Accepted again (from what this instance remembers), then refused
        // as soon as it is revoked here.
        assert!(tokens.authenticate(&value, None).await?.is_some());
        assert!(tokens.revoke(&ada, &created.info.id).await?);
        assert!(tokens.authenticate(&value, None).await?.is_none());
        assert!(tokens.list(&ada).await?.is_empty());
        assert!(!tokens.revoke(&ada, &created.info.id).await?, "once");
        Ok(())
    }

    #[tokio::test]
    async fn an_authenticated_token_is_audited_under_its_owner_and_in_its_calls()
    -> Result<(), TokenError> {
        let (tokens, session, ada) = ada_logged_in().await?;
        let created = tokens
            .create(&ada, TokenRequest::named("ci"), &session)
            .await?;
        let (info, acting_for) = tokens
            .authenticate(created.token.expose(), None)
            .await?
            .ok_or_else(refused)?;
        // Worked out once, at the check: the same owner and list as the
        // listing's and the dashboard's.
        let keys = info.audit_keys.clone().ok_or_else(refused)?;
        assert_eq!(keys.owner, acting_for.owner());
        assert_eq!(keys.owner, ada.owner());
        assert_eq!(keys.calls, calls_list(&created.info.id));

        let call = CallRecord {
            at: OffsetDateTime::UNIX_EPOCH,
            method: "GET".to_owned(),
            path: "/v2/self".to_owned(),
            status: 200,
            client: None,
        };
        tokens.record_call(&info, &call).await?;
        let kept = tokens.calls(&ada, &created.info.id).await?;
        assert_eq!(kept, Some(vec![call]));
        Ok(())
    }

    #[tokio::test]
    async fn a_call_from_a_refused_address_is_no_use_of_the_token() -> Result<(), TokenError> {
        let (tokens, session, ada) = ada_logged_in().await?;
        let request = TokenRequest {
            allowed_ips: vec![parse_address("10.0.0.0/8")?],
            ..TokenRequest::named("ci")
        };
        let created = tokens.create(&ada, request, &session).await?;
        let outside: IpAddr = [192, 0, 2, 1].into();

        // Found (the caller then refuses it for its address), but neither
        // the time nor the address is recorded as its last use.
        let (info, _) = tokens
            .authenticate(created.token.expose(), Some(outside))
            .await?
            .ok_or_else(refused)?;
        assert!(!info.allows_address(Some(outside)));
        let shown = tokens
            .get(&ada, &created.info.id)
            .await?
            .ok_or_else(refused)?;
        assert_eq!(shown.last_used_from, None);
        assert_eq!(shown.last_used_at, None);
        Ok(())
    }

    #[tokio::test]
    async fn a_session_that_ended_makes_no_token() -> Result<(), TokenError> {
        let (tokens, session, ada) = ada_logged_in().await?;
        tokens
            .create(&ada, TokenRequest::named("before"), &session)
            .await?;

        // The session ends (a logout, or "Revoke access", whose sweep of
        // the grant's tokens follows): a creation that was under way then
        // writes nothing, so the sweep cannot miss it.
        tokens.store.delete_record(&session).await?;
        let late = tokens
            .create(&ada, TokenRequest::named("racing"), &session)
            .await;
        assert!(matches!(late, Err(TokenError::SessionEnded)), "{late:?}");
        let names: Vec<String> = tokens
            .list(&ada)
            .await?
            .into_iter()
            .map(|info| info.name)
            .collect();
        assert_eq!(names, ["before"]);
        Ok(())
    }

    #[tokio::test]
    async fn listing_and_revoking_are_per_owner() -> Result<(), TokenError> {
        let tokens = tokens();
        let session = live_session(&tokens).await?;
        let (ada, bob) = (grant("ada"), grant("bob"));
        let first = tokens
            .create(&ada, TokenRequest::named("first"), &session)
            .await?;
        tokens
            .create(&ada, TokenRequest::named("second"), &session)
            .await?;
        tokens
            .create(&bob, TokenRequest::named("bob's"), &session)
            .await?;

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
        assert!(
            tokens
                .authenticate(first.token.expose(), None)
                .await?
                .is_some()
        );
        Ok(())
    }

    #[tokio::test]
    async fn an_owner_holds_at_most_the_limit() -> Result<(), TokenError> {
        let tokens = tokens_with_limit(3);
        let session = live_session(&tokens).await?;
        let ada = grant("ada");
        let mut made = Vec::new();
        for n in 0..3 {
            made.push(
                tokens
                    .create(&ada, TokenRequest::named(&format!("t{n}")), &session)
                    .await?,
            );
        }
        assert!(matches!(
            tokens
                .create(&ada, TokenRequest::named("one more"), &session)
                .await,
            Err(TokenError::TooMany(3))
        ));
        tokens
            .create(&grant("bob"), TokenRequest::named("bob's own"), &session)
            .await?;
        tokens.revoke(&ada, &made[0].info.id).await?;
        tokens
            .create(&ada, TokenRequest::named("after a revoke"), &session)
            .await?;
        Ok(())
    }

    #[tokio::test]
    async fn revoking_a_grant_takes_only_its_own_tokens() -> Result<(), TokenError> {
        let tokens = tokens();
        let session = live_session(&tokens).await?;
        let first_login = grant("ada");
        let mut second_login = grant("ada");
        second_login.token = "another-access-token".to_owned();
        let old = tokens
            .create(
                &first_login,
                TokenRequest::named("from the first login"),
                &session,
            )
            .await?;
        let new = tokens
            .create(
                &second_login,
                TokenRequest::named("from the second"),
                &session,
            )
            .await?;

        assert_eq!(tokens.revoke_made_from(&first_login).await?, 1);
        assert!(
            tokens
                .authenticate(old.token.expose(), None)
                .await?
                .is_none()
        );
        assert!(
            tokens
                .authenticate(new.token.expose(), None)
                .await?
                .is_some()
        );
        Ok(())
    }

    #[tokio::test]
    async fn near_misses_are_refused() -> Result<(), TokenError> {
        let tokens = tokens();
        let session = live_session(&tokens).await?;
        let created = tokens
            .create(&grant("ada"), TokenRequest::named("ci"), &session)
            .await?;
        let value = created.token.expose();
        let mut altered = value.to_owned();
        altered.pop();
        altered.push(if value.ends_with('A') { 'B' } else { 'A' });
        // Also after the real token was just accepted (and remembered).
        assert!(tokens.authenticate(value, None).await?.is_some());
        assert!(tokens.authenticate(&altered, None).await?.is_none());
        assert!(tokens.authenticate("", None).await?.is_none());
        assert!(
            tokens
                .authenticate(&value[TOKEN_PREFIX.len()..], None)
                .await?
                .is_none()
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_legacy_index_is_moved_into_the_set() -> Result<(), TokenError> {
        let store = Store::new(MemoryStore::default(), &SealingKey::random());
        let tokens = ProxyTokens::new(store.clone(), 50);
        let session = live_session(&tokens).await?;
        let ada = grant("ada");
        let created = tokens
            .create(&ada, TokenRequest::named("old"), &session)
            .await?;
        // What an earlier version kept: the index record, and no set member.
        let member = tokens.members(&ada.owner()).await?.remove(0);
        store
            .remove_members(&owner_set(&ada.owner()), &[member.encode()])
            .await?;
        let legacy = serde_json::json!([{"id": member.id, "record": member.record.0.to_string()}]);
        let mut index = single_field_record(
            legacy_index_record_id(&ada.owner()),
            LEGACY_INDEX_FIELD,
            &legacy,
            OffsetDateTime::now_utc() + time::Duration::days(1),
        )?;
        tower_sessions::SessionStore::create(&store, &mut index).await?;

        let listed = tokens.list(&ada).await?;
        assert_eq!(listed.len(), 1);
        assert!(tokens.revoke(&ada, &created.info.id).await?);
        assert!(
            tokens
                .authenticate(created.token.expose(), None)
                .await?
                .is_none()
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_token_recorded_before_scopes_works_as_full() -> Result<(), TokenError> {
        // Arrange: a record as the version before scopes wrote it, with no
        // scope, expiry, addresses or last address.
        let store = Store::new(MemoryStore::default(), &SealingKey::random());
        let tokens = ProxyTokens::new(store.clone(), 50);
        let ada = grant("ada");
        let token = format!("{TOKEN_PREFIX}from-an-earlier-version");
        let record = serde_json::json!({
            "info": {
                "id": public_id(&token),
                "name": "old",
                "created_at": "2026-01-01T00:00:00Z",
                "last_used_at": null,
            },
            "verifier": verifier(&token),
            "owner": ada.owner(),
            "grant": ada,
        });
        let member = Member {
            id: public_id(&token),
            record: token_record_id(&token),
        };
        let expiry = OffsetDateTime::now_utc() + time::Duration::days(1);
        let stored = single_field_record(member.record, TOKEN_FIELD, &record, expiry)?;
        store
            .create_in_set(
                &stored,
                &owner_set(&ada.owner()),
                &member.encode(),
                50,
                expiry,
                None,
            )
            .await?;

        // Act
        let (info, _) = tokens
            .authenticate(&token, None)
            .await?
            .ok_or_else(refused)?;

        // Assert
        assert_eq!(info.scope, Scope::Full);
        assert!(
            info.scope
                .allows("DELETE", "/v2/organisations/o/applications/a")
        );
        assert!(info.scope.allows_events() && info.scope.allows_logs("app_1"));
        assert!(info.allows_address("192.0.2.1".parse().ok()));
        let listed = tokens.list(&ada).await?;
        assert_eq!(listed.len(), 1);
        assert_eq!(serde_json::to_value(&listed[0])?["scope"], "full");
        Ok(())
    }

    #[test]
    fn an_expiry_is_between_an_hour_and_the_access_tokens_own() {
        let now = OffsetDateTime::now_utc();
        let mut ada = grant("ada");
        let default = expiry_for(&ada, None, now).ok();
        assert_eq!(
            default,
            Some(now + DEFAULT_LIFETIME),
            "no known expiry: 90 days"
        );

        let access = now + time::Duration::days(10);
        ada.expiration_date = access.format(&Rfc3339).ok();
        let access = OffsetDateTime::parse(ada.expiration_date.as_deref().unwrap_or(""), &Rfc3339)
            .unwrap_or(now);
        assert_eq!(
            expiry_for(&ada, None, now).ok(),
            Some(access),
            "sooner: the access token's"
        );
        let in_a_day = now + time::Duration::days(1);
        assert_eq!(expiry_for(&ada, Some(in_a_day), now).ok(), Some(in_a_day));
        assert!(expiry_for(&ada, Some(now + time::Duration::minutes(59)), now).is_err());
        assert!(expiry_for(&ada, Some(access + time::Duration::seconds(1)), now).is_err());
    }

    #[test]
    fn the_address_list_holds_addresses_and_networks() -> Result<(), TokenError> {
        let mut info = TokenInfo::new("id".into(), "n".into(), now_to_the_second());
        let ip = |text: &str| text.parse::<IpAddr>().ok();
        assert!(info.allows_address(None), "no list: anywhere");
        info.allowed_ips = vec![parse_address("192.0.2.7")?, parse_address("10.1.0.0/16")?];
        assert!(info.allows_address(ip("192.0.2.7")));
        assert!(info.allows_address(ip("10.1.200.3")));
        assert!(
            info.allows_address(ip("::ffff:10.1.0.9")),
            "IPv4-mapped IPv6"
        );
        assert!(!info.allows_address(ip("192.0.2.8")));
        assert!(!info.allows_address(ip("10.2.0.1")));
        assert!(!info.allows_address(None), "an unknown address is refused");
        assert!(parse_address("10.0.0.0/33").is_err());
        assert!(parse_address("example.com").is_err());
        assert_eq!(parse_address("10.1.2.3/16")?.to_string(), "10.1.0.0/16");
        Ok(())
    }

    #[test]
    fn the_stored_record_and_its_member_hold_no_token() -> Result<(), TokenError> {
        let token = "ocsp_example";
        let record = TokenRecord {
            info: TokenInfo::new(public_id(token), "n".into(), now_to_the_second()),
            verifier: verifier(token),
            owner: "o".into(),
            grant: grant("ada"),
        };
        let stored = serde_json::to_string(&record)?;
        assert!(!stored.contains(token));
        let member = Member {
            id: public_id(token),
            record: token_record_id(token),
        };
        assert!(!member.encode().contains("example"));
        assert_eq!(Member::decode(&member.encode()), Some(member));
        Ok(())
    }
}
