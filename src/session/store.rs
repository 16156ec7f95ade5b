//! The one session store of the server, whichever backend it uses.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};

use super::encrypted::{Sealed, SealingKey};

/// A place records can live (memory, Redis), and whether it answers.
#[async_trait]
pub trait Backend: SessionStore {
    /// Whether the backend answers right now, within a short time.
    async fn is_available(&self) -> bool;
}

/// A cheap handle on the configured backend (memory or Redis). Sessions and
/// proxy tokens both live here, so every instance sharing the backend sees
/// the same ones. Every record is sealed before it reaches the backend.
#[derive(Clone)]
pub struct Store(Arc<dyn Backend>);

impl Store {
    /// Wraps a backend, sealing its records with `key`.
    pub fn new(backend: impl Backend, key: &SealingKey) -> Self {
        Self(Arc::new(Sealed::new(backend, key)))
    }

    /// Whether the backend answers right now (for `/ready`). The embedded
    /// store always does.
    pub async fn is_available(&self) -> bool {
        self.0.is_available().await
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Store").finish_non_exhaustive()
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

#[async_trait]
impl SessionStore for Store {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        noted(self.0.create(record).await)
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        noted(self.0.save(record).await)
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        noted(self.0.load(id).await)
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        noted(self.0.delete(id).await)
    }
}
