//! `/metrics` job counts with history in the table (issue 35): read from the counts the
//! jobs table's triggers keep, equal to a direct count, and never reading `jobs` itself.

use crate::common;

use std::time::Duration;

use chrono::Utc;
use common::TestDatabase;
use mailboxd::store::Store;

async fn fresh_store() -> TestDatabase {
    let db = TestDatabase::create_empty(&common::fresh_tag(), 4).await;
    db.migrate().await.unwrap();
    db
}

async fn given_jobs(store: &Store, n: usize) {
    let events = common::joiners(n, |i| format!("user{i}"));
    store.insert_events(&events, 3).await.unwrap();
}

async fn sql(store: &Store, statements: &[&'static str]) {
    for statement in statements {
        sqlx::query(*statement).execute(store.pool()).await.unwrap();
    }
}

/// Succeeded and failed jobs per hour of their finish: from the kept counts, or counted.
async fn per_hour(store: &Store, kept: bool) -> Vec<(String, chrono::DateTime<Utc>, i64)> {
    let q = if kept {
        "SELECT state, hour, sum(n)::bigint FROM job_state_counts WHERE hour IS NOT NULL
          GROUP BY 1, 2 HAVING sum(n) <> 0 ORDER BY 1, 2"
    } else {
        "SELECT state, date_trunc('hour', finished_at, 'UTC'), count(*) FROM jobs
          WHERE state IN ('succeeded', 'failed') GROUP BY 1, 2 ORDER BY 1, 2"
    };
    sqlx::query_as(q).fetch_all(store.pool()).await.unwrap()
}

#[tokio::test]
async fn the_counts_equal_a_direct_count_through_every_kind_of_change() {
    let db = fresh_store().await;
    given_jobs(&db.store, 40).await;
    db.store
        .claim("r1", 10, Duration::from_secs(60))
        .await
        .unwrap();
    let direct = db.store.count_by_state().await.unwrap();
    assert_eq!(db.store.job_counts().await.unwrap(), direct);

    // When jobs finish, fail, retry, are deleted, and more arrive, with a fold between.
    sql(
        &db.store,
        &[
            "UPDATE jobs SET state = 'succeeded', finished_at = now() WHERE state = 'running'",
            "UPDATE jobs SET state = 'failed', finished_at = now() - interval '2 days'
          WHERE event_id IN ('e10', 'e11')",
            "UPDATE jobs SET finished_at = now() - interval '3 hours' WHERE event_id = 'e1'",
        ],
    )
    .await;
    db.store.job_counts().await.unwrap();
    sql(
        &db.store,
        &[
            "UPDATE jobs SET state = 'retrying' WHERE event_id = 'e12'",
            "UPDATE jobs SET updated_at = now()",
            "DELETE FROM jobs WHERE event_id IN ('e0', 'e13')",
        ],
    )
    .await;
    given_jobs(&db.store, 45).await;

    // Then the counts are a direct count's, fold after fold.
    let direct = db.store.count_by_state().await.unwrap();
    assert_eq!(db.store.job_counts().await.unwrap(), direct);
    assert_eq!(
        per_hour(&db.store, true).await,
        per_hour(&db.store, false).await
    );
    sql(&db.store, &["TRUNCATE jobs CASCADE"]).await;
    let after = db.store.job_counts().await.unwrap();
    assert!(after.iter().all(|(_, n)| *n == 0), "{after:?}");
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

/// Time to done per hour: an hour that is over is computed once, by the first read after it
/// ends, and kept; the hour under way is read from the jobs every time.
#[tokio::test]
async fn time_to_done_of_an_hour_that_is_over_is_computed_once_and_kept() {
    let db = fresh_store().await;
    given_jobs(&db.store, 3).await;
    sql(
        &db.store,
        &[
            "UPDATE jobs SET state = 'succeeded',
                    finished_at = date_trunc('hour', now()) - interval '150 minutes'",
            "UPDATE jobs SET created_at = finished_at - interval '60 seconds' WHERE event_id = 'e0'",
            "UPDATE jobs SET created_at = finished_at - interval '120 seconds' WHERE event_id = 'e1'",
            "UPDATE jobs SET finished_at = now(), created_at = now() - interval '30 seconds'
              WHERE event_id = 'e2'",
        ],
    )
    .await;
    let first = db.store.time_to_done().await.unwrap();
    assert_eq!(first.len(), 24, "{first:?}");
    let past = &first[20];
    assert_eq!((past.p50, past.p95), (Some(90.0), Some(117.0)), "{first:?}");
    let now = first.last().unwrap();
    assert_eq!(now.p50.map(f64::round), Some(30.0), "{first:?}");
    // Kept: changing that hour's jobs now (nothing in mailboxd does) changes nothing shown.
    sql(
        &db.store,
        &["UPDATE jobs SET created_at = finished_at - interval '1 hour' WHERE event_id = 'e0'"],
    )
    .await;
    let again = db.store.time_to_done().await.unwrap();
    assert_eq!((again[20].p50, again[20].p95), (Some(90.0), Some(117.0)));
}
