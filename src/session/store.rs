//! The one session store of the server, whichever backend it uses.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};

/// A cheap handle on the configured backend (memory or Redis). Sessions and
/// proxy tokens both live here, so every instance sharing the backend sees
/// the same ones.
#[derive(Clone)]
pub struct Store(Arc<dyn SessionStore>);

impl Store {
    /// Wraps a backend.
    pub fn new(backend: impl SessionStore) -> Self {
        Self(Arc::new(backend))
    }

    /// Whether the backend answers right now (for `/ready`). The embedded
    /// store always does.
    pub async fn is_available(&self) -> bool {
        true
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Store").finish_non_exhaustive()
    }
}

#[async_trait]
impl SessionStore for Store {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        self.0.create(record).await
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        self.0.save(record).await
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        self.0.load(id).await
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        self.0.delete(id).await
    }
}
