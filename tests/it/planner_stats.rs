//! A burst of new jobs gets the planner fresh statistics (issue 35, `bench load`): an initial
//! load queues thousands of jobs in seconds, and until `jobs` is analyzed again the claim is
//! planned for the table as it was (none waiting) and reads every waiting job per batch.

use crate::common;

use std::time::{Duration, Instant};

use common::TestDatabase;
use mailboxd::store::Store;

/// When `jobs` was last analyzed by a statement (not by autovacuum), if ever.
async fn last_analyze(store: &Store) -> Option<chrono::DateTime<chrono::Utc>> {
    sqlx::query_scalar("SELECT last_analyze FROM pg_stat_user_tables WHERE relname = 'jobs'")
        .fetch_one(store.pool())
        .await
        .unwrap()
}

async fn queue(store: &Store, from: usize, n: usize) {
    let events: Vec<_> = common::joiners(from + n, |i| format!("user{i}"))
        .into_iter()
        .skip(from)
        .collect();
    store.insert_events(&events, 3).await.unwrap();
}

#[tokio::test]
async fn a_thousand_new_jobs_are_analyzed_for_the_claim_and_a_few_are_not() {
    let db = TestDatabase::create_empty(&common::fresh_tag(), 4).await;
    db.migrate().await.unwrap();
    let store = &db.store;

    queue(store, 0, 999).await;
    // The intake of 999 jobs committed; nothing was started for them (checked after the
    // next insert, which runs after any task this one could have started).
    queue(store, 999, 1).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let analyzed = loop {
        if let Some(at) = last_analyze(store).await {
            break at;
        }
        assert!(
            Instant::now() < deadline,
            "jobs was not analyzed within 20 s of its 1,000th new job"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // The statistics now know the waiting work: the planner's row estimate for the
    // claimable jobs is the thousand queued, not the empty table it saw before.
    let estimated: f32 =
        sqlx::query_scalar("SELECT reltuples FROM pg_class WHERE relname = 'jobs'")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert!(estimated >= 1_000.0, "{estimated}");

    // Then the next one only after as many new jobs as were waiting (1,000).
    queue(store, 1_000, 500).await;
    queue(store, 1_500, 1).await;
    assert_eq!(last_analyze(store).await, Some(analyzed));
}
