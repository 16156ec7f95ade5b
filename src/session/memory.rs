//! The embedded session store: a map in memory whose expired records are
//! deleted, so memory does not grow with every visitor who never comes back.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use time::OffsetDateTime;
use tokio::sync::Mutex;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, ExpiredDeletion, SessionStore};

use super::store::Backend;

/// Sessions in this process's memory: lost on restart, not shared between
/// instances.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    records: Arc<Mutex<HashMap<Id, Record>>>,
}

impl MemoryStore {
    /// How many records the store holds, expired ones included.
    pub async fn len(&self) -> usize {
        self.records.lock().await.len()
    }

    /// Whether the store holds no record.
    pub async fn is_empty(&self) -> bool {
        self.len().await == 0
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        let mut records = self.records.lock().await;
        while records.contains_key(&record.id) {
            record.id = Id::default();
        }
        records.insert(record.id, record.clone());
        Ok(())
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        self.records.lock().await.insert(record.id, record.clone());
        Ok(())
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let now = OffsetDateTime::now_utc();
        Ok(self
            .records
            .lock()
            .await
            .get(id)
            .filter(|record| record.expiry_date > now)
            .cloned())
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        self.records.lock().await.remove(id);
        Ok(())
    }
}

#[async_trait]
impl Backend for MemoryStore {
    async fn is_available(&self) -> bool {
        true
    }
}

#[async_trait]
impl ExpiredDeletion for MemoryStore {
    async fn delete_expired(&self) -> session_store::Result<()> {
        let now = OffsetDateTime::now_utc();
        self.records
            .lock()
            .await
            .retain(|_, record| record.expiry_date > now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use time::Duration;

    use super::*;

    fn record(expires_in: Duration) -> Record {
        Record {
            id: Id::default(),
            data: HashMap::new(),
            expiry_date: OffsetDateTime::now_utc() + expires_in,
        }
    }

    #[tokio::test]
    async fn expired_records_are_invisible_then_deleted() -> session_store::Result<()> {
        let store = MemoryStore::default();
        let mut live = record(Duration::hours(1));
        let mut dead = record(Duration::seconds(-1));
        store.create(&mut live).await?;
        store.create(&mut dead).await?;

        assert!(store.load(&dead.id).await?.is_none());
        assert_eq!(store.len().await, 2);

        store.delete_expired().await?;
        assert_eq!(store.len().await, 1);
        assert!(store.load(&live.id).await?.is_some());
        Ok(())
    }
}
