//! The one store of the server, whichever backend it uses: browser
//! sessions (through tower-sessions) and proxy tokens both live here, so
//! every instance sharing the backend sees the same ones. Every record is
//! sealed before it reaches the backend.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use time::OffsetDateTime;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};

use super::backend::{Backend, SetInsert, SetKey};
use super::memory::MemoryStore;
use super::recent::{RecentSessions, SessionKey};
use super::sealed::{Sealer, SealingKey};

/// A cheap handle on the configured backend (memory or Redis).
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    sealer: Arc<Sealer>,
    /// The logged-in sessions this instance read lately; a session deleted
    /// here is forgotten there at once.
    recent_sessions: Arc<RecentSessions>,
    /// The embedded backend, when that is the one: tests and operators can
    /// count what it holds.
    memory: Option<MemoryStore>,
}

impl Store {
    /// Wraps a backend, sealing its records with `key`.
    pub fn new(backend: impl Backend, key: &SealingKey) -> Self {
        Self {
            backend: Arc::new(backend),
            sealer: Arc::new(Sealer::new(key)),
            recent_sessions: Arc::default(),
            memory: None,
        }
    }

    /// The embedded store, sealing with `key`.
    pub fn in_memory(memory: MemoryStore, key: &SealingKey) -> Self {
        Self {
            memory: Some(memory.clone()),
            ..Self::new(memory, key)
        }
    }

    /// The logged-in sessions this instance read lately.
    pub fn recent_sessions(&self) -> &RecentSessions {
        &self.recent_sessions
    }

    /// How many records and sets the embedded store holds; `None` for
    /// another backend.
    pub fn embedded_len(&self) -> Option<usize> {
        self.memory.as_ref().map(MemoryStore::len)
    }

    /// Whether the backend answers right now (for `/ready`). The embedded
    /// store always does.
    pub async fn is_available(&self) -> bool {
        self.backend.is_available().await
    }

    /// The live record `id`, opened; `None` also when it does not open.
    pub async fn load_record(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let Some(sealed) = noted(self.backend.load(id).await)? else {
            return Ok(None);
        };
        let opened = self.sealer.open(&sealed);
        if opened.is_none() {
            tracing::warn!(
                "a stored record does not decrypt (another SESSION_KEY, or altered): treated as no record"
            );
        }
        Ok(opened)
    }

    /// Overwrites `record` only if it still exists: a deleted record stays
    /// deleted. `false` when there was none.
    pub async fn update_record(&self, record: &Record) -> session_store::Result<bool> {
        noted(self.backend.update(&self.sealer.seal(record)?).await)
    }

    /// Deletes record `id`.
    pub async fn delete_record(&self, id: &Id) -> session_store::Result<()> {
        noted(self.backend.delete(id).await)
    }

    /// Creates `record` and adds `member` to `set` in one atomic step (see
    /// [`Backend::create_in_set`]).
    pub async fn create_in_set(
        &self,
        record: &Record,
        set: &SetKey,
        member: &str,
        limit: usize,
        set_expiry: OffsetDateTime,
        guard: Option<&Id>,
    ) -> session_store::Result<SetInsert> {
        let sealed = self.sealer.seal(record)?;
        noted(
            self.backend
                .create_in_set(&sealed, set, member, limit, set_expiry, guard)
                .await,
        )
    }

    /// Deletes record `id` and removes `member` from `set` in one atomic
    /// step; `true` when the member was there.
    pub async fn delete_in_set(
        &self,
        id: &Id,
        set: &SetKey,
        member: &str,
    ) -> session_store::Result<bool> {
        noted(self.backend.delete_in_set(id, set, member).await)
    }

    /// The members of `set`.
    pub async fn members(&self, set: &SetKey) -> session_store::Result<Vec<String>> {
        noted(self.backend.members(set).await)
    }

    /// Adds `members` to `set`, alive at least until `set_expiry`.
    pub async fn add_members(
        &self,
        set: &SetKey,
        members: &[String],
        set_expiry: OffsetDateTime,
    ) -> session_store::Result<()> {
        noted(self.backend.add_members(set, members, set_expiry).await)
    }

    /// Removes `members` from `set`.
    pub async fn remove_members(
        &self,
        set: &SetKey,
        members: &[String],
    ) -> session_store::Result<()> {
        noted(self.backend.remove_members(set, members).await)
    }
}

impl Store {
    /// While record `owner` exists, puts `entry` first in `list`, keeping
    /// `cap` entries until `expiry`.
    pub async fn push_capped(
        &self,
        list: &SetKey,
        owner: &Id,
        entry: &str,
        cap: usize,
        expiry: OffsetDateTime,
    ) -> session_store::Result<()> {
        noted(
            self.backend
                .push_capped(list, owner, entry, cap, expiry)
                .await,
        )
    }

    /// The entries of `list`, newest first.
    pub async fn entries(&self, list: &SetKey) -> session_store::Result<Vec<String>> {
        noted(self.backend.entries(list).await)
    }

    /// Deletes `list`.
    pub async fn delete_list(&self, list: &SetKey) -> session_store::Result<()> {
        noted(self.backend.delete_list(list).await)
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

tokio::task_local! {
    /// Set when a store call fails while a request is being served.
    static STORE_FAILED: Cell<bool>;
}

/// Runs `request` and tells whether a store call failed meanwhile. The
/// session layer turns a failed save into a bare 500 without saying why;
/// this lets a middleware around it answer 503 instead.
pub async fn watch_failures<F: Future>(request: F) -> (F::Output, bool) {
    STORE_FAILED
        .scope(Cell::new(false), async move {
            let output = request.await;
            (output, STORE_FAILED.with(Cell::get))
        })
        .await
}

fn noted<T>(result: session_store::Result<T>) -> session_store::Result<T> {
    if result.is_err() {
        // Outside a request (background tasks) there is nobody to tell.
        let _ = STORE_FAILED.try_with(|failed| failed.set(true));
    }
    result
}

/// The browser sessions' side. Only a new id creates a record (`create`);
/// `save` of an existing session never re-creates one that a logout
/// deleted meanwhile, it only updates.
#[async_trait]
impl SessionStore for Store {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        loop {
            // The seal is bound to the id: seal again under each new one.
            if noted(self.backend.create(&self.sealer.seal(record)?).await)? {
                return Ok(());
            }
            record.id = Id::default();
        }
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        self.update_record(record).await.map(drop)
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        self.load_record(id).await
    }

    /// A logout, or a login cycling the id: also forgotten by this
    /// instance's remembered sessions once the record is gone (so that no
    /// read made before then is remembered after), even if the store failed.
    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        let deleted = self.delete_record(id).await;
        self.recent_sessions.forget(&SessionKey::of(id));
        deleted
    }
}
