//! `/metrics` job counts with history in the table (issue 35): read from the counts the
//! jobs table's triggers keep, equal to a direct count, and never reading `jobs` itself.

use crate::common;

use std::time::Duration;

use chrono::Utc;
use common::TestDatabase;
use mailboxd::event::{Draft, DraftAccount, EventKind};
use mailboxd::store::Store;

async fn fresh_store() -> TestDatabase {
    let db = TestDatabase::create_empty(&common::fresh_tag(), 4).await;
    db.migrate().await.unwrap();
    db
}

async fn given_jobs(store: &Store, n: usize) {
    let events: Vec<_> = (0..n)
        .map(|i| {
            Draft {
                id: format!("e{i}"),
                kind: EventKind::Joiner,
                occurred_at: Utc::now(),
                account: DraftAccount {
                    sam_account_name: format!("user{i}"),
                    ..DraftAccount::default()
                },
                mailbox: None,
                source: None,
                identity: None,
            }
            .validate(Utc::now())
            .unwrap()
        })
        .collect();
    store.insert_events(&events, 3).await.unwrap();
}

async fn sql(store: &Store, statement: &'static str) {
    sqlx::query(statement).execute(store.pool()).await.unwrap();
}

#[tokio::test]
async fn the_counts_equal_a_direct_count_through_every_kind_of_change() {
    let db = fresh_store().await;
    given_jobs(&db.store, 40).await;
    db.store
        .claim("r1", 10, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        db.store.job_counts().await.unwrap(),
        db.store.count_by_state().await.unwrap()
    );

    // When jobs finish, fail, retry, are deleted, and more arrive, with folds between.
    sql(
        &db.store,
        "UPDATE jobs SET state = 'succeeded' WHERE state = 'running'",
    )
    .await;
    sql(
        &db.store,
        "UPDATE jobs SET state = 'failed' WHERE event_id IN ('e10', 'e11')",
    )
    .await;
    db.store.job_counts().await.unwrap();
    sql(
        &db.store,
        "UPDATE jobs SET state = 'retrying' WHERE event_id = 'e12'",
    )
    .await;
    sql(&db.store, "UPDATE jobs SET updated_at = now()").await;
    sql(
        &db.store,
        "DELETE FROM jobs WHERE event_id IN ('e0', 'e13')",
    )
    .await;
    given_jobs(&db.store, 45).await;

    // Then the counts are a direct count's, fold after fold.
    let direct = db.store.count_by_state().await.unwrap();
    assert_eq!(db.store.job_counts().await.unwrap(), direct);
    assert_eq!(db.store.job_counts().await.unwrap(), direct);
    sql(&db.store, "TRUNCATE jobs CASCADE").await;
    assert!(
        db.store
            .job_counts()
            .await
            .unwrap()
            .iter()
            .all(|(_, n)| *n == 0)
    );
}

#[tokio::test]
async fn the_counts_never_read_the_jobs_table() {
    let db = fresh_store().await;
    given_jobs(&db.store, 5).await;

    // Given another transaction holding every lock on jobs (a read would wait for it).
    let mut locker = db.store.pool().begin().await.unwrap();
    sqlx::query("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *locker)
        .await
        .unwrap();

    // Then the scrape's counts still answer.
    let counts = tokio::time::timeout(Duration::from_secs(30), db.store.job_counts())
        .await
        .expect("the job counts waited for a lock on jobs: they read the table")
        .unwrap();
    locker.rollback().await.unwrap();
    let queued = counts.iter().find(|(s, _)| s.as_str() == "queued");
    assert_eq!(queued.map(|(_, n)| *n), Some(5));
}
