//! One conformance suite for every store backend: the embedded one and a
//! real Redis server. Each operation is checked alone and under
//! concurrency.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use oauth_consumer_server::secret::Secret;
use oauth_consumer_server::session::{Backend, MemoryStore, RedisStore, SetInsert, SetKey};
use time::OffsetDateTime;
use tower_sessions::session::{Id, Record};

use crate::support::redis::RedisServer;

fn record(value: &str, lives: time::Duration) -> Record {
    Record {
        id: Id::default(),
        data: HashMap::from([("field".to_owned(), value.into())]),
        expiry_date: OffsetDateTime::now_utc() + lives,
    }
}

fn value_of(record: Option<Record>) -> Option<String> {
    record.and_then(|record| record.data["field"].as_str().map(str::to_owned))
}

const HOUR: time::Duration = time::Duration::hours(1);

/// Every behaviour a backend must have.
async fn conformance(store: Arc<dyn Backend>) {
    // Create only if new; update only if present; delete stays deleted.
    let first = record("first", HOUR);
    assert!(store.create(&first).await.expect("create"));
    assert!(
        !store
            .create(&Record {
                data: HashMap::from([("field".to_owned(), "other".into())]),
                ..first.clone()
            })
            .await
            .expect("create again"),
        "an existing id is never overwritten by create"
    );
    assert_eq!(
        value_of(store.load(&first.id).await.expect("load")),
        Some("first".to_owned())
    );
    let mut changed = first.clone();
    changed.data.insert("field".to_owned(), "changed".into());
    assert!(store.update(&changed).await.expect("update"));
    assert_eq!(
        value_of(store.load(&first.id).await.expect("load")),
        Some("changed".to_owned())
    );
    store.delete(&first.id).await.expect("delete");
    assert!(
        !store.update(&changed).await.expect("update after delete"),
        "an update never re-creates"
    );
    assert!(store.load(&first.id).await.expect("load").is_none());

    // Expiry.
    let short = record("short", time::Duration::milliseconds(300));
    assert!(store.create(&short).await.expect("create short"));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(store.load(&short.id).await.expect("load").is_none());
    assert!(
        !store.update(&short).await.expect("update expired")
            || store.load(&short.id).await.expect("load").is_none(),
        "an expired record does not come back"
    );

    // Sets: creation under a limit, at once from many callers.
    let set = SetKey(format!("conformance-{}", rand_suffix()));
    let attempts = (0..40).map(|n| {
        let store = Arc::clone(&store);
        let set = set.clone();
        async move {
            let member = format!("m{n}:{n}");
            let created = store
                .create_in_set(
                    &record("token", HOUR),
                    &set,
                    &member,
                    25,
                    OffsetDateTime::now_utc() + HOUR,
                    None,
                )
                .await
                .expect("create_in_set");
            (created, member)
        }
    });
    let outcomes = join_all(attempts).await;
    let created: Vec<&String> = outcomes
        .iter()
        .filter(|(outcome, _)| *outcome == SetInsert::Created)
        .map(|(_, member)| member)
        .collect();
    assert_eq!(created.len(), 25, "exactly the limit: {outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|(outcome, _)| matches!(outcome, SetInsert::Created | SetInsert::SetFull))
    );
    let mut members = store.members(&set).await.expect("members");
    members.sort();
    let mut expected: Vec<String> = created.iter().map(|member| (*member).clone()).collect();
    expected.sort();
    assert_eq!(members, expected);

    // An id taken is not overwritten, and adds no member.
    let taken = record("taken", HOUR);
    assert!(store.create(&taken).await.expect("create"));
    let other_set = SetKey(format!("conformance-other-{}", rand_suffix()));
    assert_eq!(
        store
            .create_in_set(
                &taken,
                &other_set,
                "x:1",
                10,
                OffsetDateTime::now_utc() + HOUR,
                None
            )
            .await
            .expect("create_in_set"),
        SetInsert::IdTaken
    );
    assert!(store.members(&other_set).await.expect("members").is_empty());

    // A record made for another (a token for a session) is made only while
    // that one lives, and not at all once it is gone.
    let session = record("session", HOUR);
    assert!(store.create(&session).await.expect("create"));
    let guarded_set = SetKey(format!("conformance-guarded-{}", rand_suffix()));
    let guarded = |name: &'static str| {
        let (store, set, session) = (Arc::clone(&store), guarded_set.clone(), session.id);
        async move {
            let made = record(name, HOUR);
            let outcome = store
                .create_in_set(
                    &made,
                    &set,
                    &format!("{name}:1"),
                    10,
                    OffsetDateTime::now_utc() + HOUR,
                    Some(&session),
                )
                .await
                .expect("create_in_set");
            (outcome, made.id)
        }
    };
    assert_eq!(guarded("while-alive").await.0, SetInsert::Created);
    store.delete(&session.id).await.expect("delete");
    let (outcome, late) = guarded("once-gone").await;
    assert_eq!(outcome, SetInsert::GuardGone);
    assert!(store.load(&late).await.expect("load").is_none());
    assert_eq!(
        store.members(&guarded_set).await.expect("members"),
        ["while-alive:1"]
    );

    // Deleting record and member together, racing with updates.
    let victim = record("victim", HOUR);
    let set_of_one = SetKey(format!("conformance-one-{}", rand_suffix()));
    store
        .create_in_set(
            &victim,
            &set_of_one,
            "victim:1",
            10,
            OffsetDateTime::now_utc() + HOUR,
            None,
        )
        .await
        .expect("create_in_set");
    let updates = (0..20).map(|_| {
        let store = Arc::clone(&store);
        let victim = victim.clone();
        async move { store.update(&victim).await.expect("update") }
    });
    let delete = {
        let store = Arc::clone(&store);
        let (id, set) = (victim.id, set_of_one.clone());
        async move {
            store
                .delete_in_set(&id, &set, "victim:1")
                .await
                .expect("delete_in_set")
        }
    };
    let (_, removed) = tokio::join!(join_all(updates), delete);
    assert!(removed, "the member was there");
    assert!(
        store.load(&victim.id).await.expect("load").is_none(),
        "no update brought it back"
    );
    assert!(
        store
            .members(&set_of_one)
            .await
            .expect("members")
            .is_empty()
    );
    assert!(
        !store
            .delete_in_set(&victim.id, &set_of_one, "victim:1")
            .await
            .expect("delete again"),
        "once"
    );

    // Adding and removing members; a set lives as long as asked.
    let listed = SetKey(format!("conformance-list-{}", rand_suffix()));
    store
        .add_members(
            &listed,
            &["a:1".to_owned(), "b:2".to_owned()],
            OffsetDateTime::now_utc() + time::Duration::milliseconds(400),
        )
        .await
        .expect("add_members");
    store
        .add_members(
            &listed,
            &["c:3".to_owned()],
            OffsetDateTime::now_utc() + HOUR,
        )
        .await
        .expect("add_members");
    store
        .remove_members(&listed, &["a:1".to_owned()])
        .await
        .expect("remove_members");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut left = store.members(&listed).await.expect("members");
    left.sort();
    assert_eq!(left, ["b:2", "c:3"], "the later expiry holds");

    // Capped lists, kept only while their owner record lives.
    let owner = record("token", HOUR);
    assert!(store.create(&owner).await.expect("create"));
    let calls = SetKey(format!("conformance-calls-{}", rand_suffix()));
    let pushes = (0..60).map(|n| {
        let store = Arc::clone(&store);
        let (calls, owner) = (calls.clone(), owner.id);
        async move {
            store
                .push_capped(
                    &calls,
                    &owner,
                    &format!("call {n}"),
                    50,
                    OffsetDateTime::now_utc() + HOUR,
                )
                .await
                .expect("push_capped");
        }
    });
    join_all(pushes).await;
    let kept = store.entries(&calls).await.expect("entries");
    assert_eq!(kept.len(), 50, "capped");
    store
        .push_capped(
            &calls,
            &owner.id,
            "newest",
            50,
            OffsetDateTime::now_utc() + HOUR,
        )
        .await
        .expect("push_capped");
    assert_eq!(store.entries(&calls).await.expect("entries")[0], "newest");
    store.delete(&owner.id).await.expect("delete");
    store.delete_list(&calls).await.expect("delete_list");
    store
        .push_capped(
            &calls,
            &owner.id,
            "after",
            50,
            OffsetDateTime::now_utc() + HOUR,
        )
        .await
        .expect("push_capped");
    assert!(
        store.entries(&calls).await.expect("entries").is_empty(),
        "no push brings back the list of a deleted owner"
    );

    assert!(store.is_available().await);
}

fn rand_suffix() -> String {
    Id::default().to_string()
}

#[tokio::test]
async fn the_memory_store_conforms() {
    conformance(Arc::new(MemoryStore::default())).await;
}

#[tokio::test]
async fn the_redis_store_conforms() {
    let redis = RedisServer::start();
    let store = RedisStore::connect(&Secret::new(redis.url()), None)
        .await
        .expect("Redis store");
    conformance(Arc::new(store)).await;
}
