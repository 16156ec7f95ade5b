//! The embedded store: records and sets in this process's memory, under one
//! lock, so every operation is atomic. Expired entries are swept out, so
//! memory does not grow with every visitor who never comes back.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store;

use super::backend::{Backend, SetInsert, SetKey};

/// Records and sets in this process's memory: lost on restart, not shared
/// between instances.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore(Arc<Mutex<Contents>>);

#[derive(Debug, Default)]
struct Contents {
    records: HashMap<Id, Record>,
    sets: HashMap<SetKey, Set>,
    lists: HashMap<SetKey, List>,
}

#[derive(Debug)]
struct List {
    /// Newest first.
    entries: VecDeque<String>,
    expiry_date: OffsetDateTime,
}

#[derive(Debug)]
struct Set {
    members: HashSet<String>,
    expiry_date: OffsetDateTime,
}

impl Contents {
    fn live_record(&self, id: &Id, now: OffsetDateTime) -> Option<&Record> {
        self.records
            .get(id)
            .filter(|record| record.expiry_date > now)
    }

    fn live_set(&mut self, set: &SetKey, now: OffsetDateTime) -> Option<&mut Set> {
        self.sets.get_mut(set).filter(|set| set.expiry_date > now)
    }

    fn add_members<'a>(
        &mut self,
        set: &SetKey,
        members: impl IntoIterator<Item = &'a String>,
        expiry_date: OffsetDateTime,
        now: OffsetDateTime,
    ) {
        let entry = self.sets.entry(set.clone()).or_insert_with(|| Set {
            members: HashSet::new(),
            expiry_date,
        });
        if entry.expiry_date <= now {
            entry.members.clear();
        }
        entry.members.extend(members.into_iter().cloned());
        entry.expiry_date = entry.expiry_date.max(expiry_date);
    }
}

impl MemoryStore {
    /// How many records and sets the store holds, expired ones included.
    pub fn len(&self) -> usize {
        let contents = self.lock();
        contents.records.len() + contents.sets.len() + contents.lists.len()
    }

    /// Whether the store holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Deletes what has expired, every `period`, for as long as the process
    /// runs.
    pub(crate) async fn sweep_expired_every(self, period: Duration) {
        let mut ticks = tokio::time::interval(period);
        loop {
            ticks.tick().await;
            self.sweep_expired();
        }
    }

    fn sweep_expired(&self) {
        let now = OffsetDateTime::now_utc();
        let mut contents = self.lock();
        contents
            .records
            .retain(|_, record| record.expiry_date > now);
        contents.sets.retain(|_, set| set.expiry_date > now);
        contents.lists.retain(|_, list| list.expiry_date > now);
    }

    fn lock(&self) -> MutexGuard<'_, Contents> {
        // Nothing panics while holding it; the maps stay sound.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl Backend for MemoryStore {
    async fn create(&self, record: &Record) -> session_store::Result<bool> {
        let now = OffsetDateTime::now_utc();
        let mut contents = self.lock();
        if contents.live_record(&record.id, now).is_some() {
            return Ok(false);
        }
        contents.records.insert(record.id, record.clone());
        Ok(true)
    }

    async fn update(&self, record: &Record) -> session_store::Result<bool> {
        let now = OffsetDateTime::now_utc();
        let mut contents = self.lock();
        if contents.live_record(&record.id, now).is_none() {
            return Ok(false);
        }
        contents.records.insert(record.id, record.clone());
        Ok(true)
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let now = OffsetDateTime::now_utc();
        Ok(self.lock().live_record(id, now).cloned())
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        self.lock().records.remove(id);
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
        let now = OffsetDateTime::now_utc();
        let mut contents = self.lock();
        if guard.is_some_and(|guard| contents.live_record(guard, now).is_none()) {
            return Ok(SetInsert::GuardGone);
        }
        let count = contents
            .live_set(set, now)
            .map_or(0, |set| set.members.len());
        if count >= limit {
            return Ok(SetInsert::SetFull);
        }
        if contents.live_record(&record.id, now).is_some() {
            return Ok(SetInsert::IdTaken);
        }
        contents.records.insert(record.id, record.clone());
        contents.add_members(set, [&member.to_owned()], set_expiry, now);
        Ok(SetInsert::Created)
    }

    async fn delete_in_set(
        &self,
        id: &Id,
        set: &SetKey,
        member: &str,
    ) -> session_store::Result<bool> {
        let now = OffsetDateTime::now_utc();
        let mut contents = self.lock();
        contents.records.remove(id);
        Ok(contents
            .live_set(set, now)
            .is_some_and(|set| set.members.remove(member)))
    }

    async fn members(&self, set: &SetKey) -> session_store::Result<Vec<String>> {
        let now = OffsetDateTime::now_utc();
        Ok(self
            .lock()
            .live_set(set, now)
            .map(|set| set.members.iter().cloned().collect())
            .unwrap_or_default())
    }

    async fn add_members(
        &self,
        set: &SetKey,
        members: &[String],
        set_expiry: OffsetDateTime,
    ) -> session_store::Result<()> {
        let now = OffsetDateTime::now_utc();
        self.lock().add_members(set, members, set_expiry, now);
        Ok(())
    }

    async fn remove_members(&self, set: &SetKey, members: &[String]) -> session_store::Result<()> {
        let now = OffsetDateTime::now_utc();
        if let Some(set) = self.lock().live_set(set, now) {
            for member in members {
                set.members.remove(member);
            }
        }
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
        let now = OffsetDateTime::now_utc();
        let mut contents = self.lock();
        if contents.live_record(owner, now).is_none() {
            return Ok(());
        }
        let list = contents.lists.entry(list.clone()).or_insert_with(|| List {
            entries: VecDeque::new(),
            expiry_date: expiry,
        });
        if list.expiry_date <= now {
            list.entries.clear();
        }
        list.entries.push_front(entry.to_owned());
        list.entries.truncate(cap);
        list.expiry_date = expiry;
        Ok(())
    }

    async fn entries(&self, list: &SetKey) -> session_store::Result<Vec<String>> {
        let now = OffsetDateTime::now_utc();
        Ok(self
            .lock()
            .lists
            .get(list)
            .filter(|list| list.expiry_date > now)
            .map(|list| list.entries.iter().cloned().collect())
            .unwrap_or_default())
    }

    async fn delete_list(&self, list: &SetKey) -> session_store::Result<()> {
        self.lock().lists.remove(list);
        Ok(())
    }

    async fn is_available(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
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
    async fn expired_records_are_invisible_then_swept() -> session_store::Result<()> {
        let store = MemoryStore::default();
        let live = record(Duration::hours(1));
        let dead = record(Duration::seconds(-1));
        assert!(store.create(&live).await?);
        assert!(store.create(&dead).await?);

        assert!(store.load(&dead.id).await?.is_none());
        assert_eq!(store.len(), 2);

        store.sweep_expired();
        assert_eq!(store.len(), 1);
        assert!(store.load(&live.id).await?.is_some());
        Ok(())
    }
}
