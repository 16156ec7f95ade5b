//! What a place that keeps records (memory, Redis) must do. Every operation
//! is atomic in the backend itself, so instances sharing it never lose or
//! resurrect a record: a set command, a script or one lock, never a read,
//! change and write in this process.

use std::fmt;

use async_trait::async_trait;
use time::OffsetDateTime;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store;

/// The name of a set of record ids (an owner's proxy tokens) or of a list
/// (a token's recent calls). Made from a hash by its user: it names no
/// secret and no person in clear.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SetKey(pub String);

/// What [`Backend::create_in_set`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetInsert {
    /// The record was written and the member added.
    Created,
    /// A record with that id exists already: nothing was written.
    IdTaken,
    /// The set holds `limit` members already: nothing was written.
    SetFull,
    /// The record it was made for (a session) is gone: nothing was written.
    GuardGone,
}

/// A place records live in. Records arrive sealed (see `Store`); set
/// members are ids, never secrets.
#[async_trait]
pub trait Backend: fmt::Debug + Send + Sync + 'static {
    /// Writes `record` only if no record has its id; `false` when one has.
    async fn create(&self, record: &Record) -> session_store::Result<bool>;

    /// Overwrites `record` only if it exists; `false` when it does not (it
    /// expired or was deleted, and stays so).
    async fn update(&self, record: &Record) -> session_store::Result<bool>;

    /// The live record `id`, if any.
    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>>;

    /// Deletes record `id` (nothing if absent).
    async fn delete(&self, id: &Id) -> session_store::Result<()>;

    /// In one atomic step: unless `set` holds `limit` members already, the
    /// id is taken, or record `guard` (when given) no longer lives, writes
    /// `record` and adds `member` to `set`, which then lives at least until
    /// `set_expiry`. The guard is what the record is made for: a proxy
    /// token is made for a session, and one that ended meanwhile gets none,
    /// so that a sweep after ending it misses nothing.
    async fn create_in_set(
        &self,
        record: &Record,
        set: &SetKey,
        member: &str,
        limit: usize,
        set_expiry: OffsetDateTime,
        guard: Option<&Id>,
    ) -> session_store::Result<SetInsert>;

    /// In one atomic step: deletes record `id` and removes `member` from
    /// `set`. `true` when the member was there.
    async fn delete_in_set(
        &self,
        id: &Id,
        set: &SetKey,
        member: &str,
    ) -> session_store::Result<bool>;

    /// The members of `set` (none if it does not exist).
    async fn members(&self, set: &SetKey) -> session_store::Result<Vec<String>>;

    /// Adds `members` to `set`, which then lives at least until
    /// `set_expiry`.
    async fn add_members(
        &self,
        set: &SetKey,
        members: &[String],
        set_expiry: OffsetDateTime,
    ) -> session_store::Result<()>;

    /// Removes `members` from `set` (those whose records expired).
    async fn remove_members(&self, set: &SetKey, members: &[String]) -> session_store::Result<()>;

    /// While record `owner` exists: puts `entry` first in `list`, keeps
    /// only the first `cap` entries, and keeps the list until `expiry` (one
    /// atomic step, so a list never outlives a deleted owner by a push).
    async fn push_capped(
        &self,
        list: &SetKey,
        owner: &Id,
        entry: &str,
        cap: usize,
        expiry: OffsetDateTime,
    ) -> session_store::Result<()>;

    /// The entries of `list`, newest first (none if it does not exist).
    async fn entries(&self, list: &SetKey) -> session_store::Result<Vec<String>>;

    /// Deletes `list`.
    async fn delete_list(&self, list: &SetKey) -> session_store::Result<()>;

    /// Whether the backend answers right now, within a short time.
    async fn is_available(&self) -> bool;
}
