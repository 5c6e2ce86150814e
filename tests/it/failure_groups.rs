//! The failures view's groups (issue 35): kept by the jobs table's triggers as jobs fail,
//! retry and move on, equal at every step to grouping the failed and retrying jobs by error
//! class and signature directly, and a job written without a signature (by a replica from
//! before migration 0025) joins its group once the store migrates.

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use common::TestDatabase;
use mailboxd::job::{ErrorClass, JobEffect, Resolution};
use mailboxd::store::{AttemptRecord, Store};

async fn given_joiners(store: &Store, n: usize) {
    let events = common::joiners(n, |i| format!("user{i:02}"));
    store.insert_events(&events, 3).await.unwrap();
}

/// What a worker would hand in for the n-th claimed job.
fn resolution(n: usize, account: &str) -> Resolution {
    match n % 4 {
        0 | 1 => Resolution::Failed {
            class: ErrorClass::Permanent,
            error: format!(
                "The proxy address \"SMTP:{account}@corp.example\" is already being used (RequestId {n}7f3a-19)"
            ),
            alert: None,
        },
        2 => Resolution::Retry {
            class: ErrorClass::Transient,
            error: format!("WinRM did not answer within {} s", 30 + n),
            after: Duration::from_secs(600),
        },
        _ => Resolution::Succeeded {
            outcome: JobEffect::Enabled,
        },
    }
}

/// (class, signature) → (failed, retrying), from the store's groups.
type Counts = BTreeMap<(String, String), (i64, i64)>;

async fn kept(store: &Store) -> Counts {
    store
        .failure_groups(12)
        .await
        .unwrap()
        .into_iter()
        .map(|g| {
            let class = g.class.map_or(String::new(), |c| c.as_str().to_owned());
            ((class, g.signature), (g.failed, g.retrying))
        })
        .collect()
}

/// The same, grouped here from the rows, signatures computed from the error text.
async fn direct(store: &Store) -> Counts {
    let rows: Vec<(String, String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT account, state, last_error, last_error_class FROM jobs
          WHERE state IN ('failed', 'retrying')",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    let mut counts = Counts::new();
    for (account, state, error, class) in rows {
        let signature = mailboxd::alert::signature(error.as_deref().unwrap_or(""), &account);
        let c = counts
            .entry((class.unwrap_or_default(), signature))
            .or_default();
        if state == "failed" {
            c.0 += 1;
        } else {
            c.1 += 1;
        }
    }
    counts
}

async fn sql(store: &Store, statement: &'static str) {
    sqlx::query(statement).execute(store.pool()).await.unwrap();
}

#[tokio::test]
async fn a_wave_of_one_problem_is_one_group_kept_as_the_jobs_move() {
    let db = TestDatabase::create_empty(&common::fresh_tag(), 4).await;
    db.migrate().await.unwrap();
    given_joiners(&db.store, 40).await;

    // When 40 joiners run: half fail on a taken proxy address, a quarter retry on a timeout.
    let jobs = db
        .store
        .claim("r1", 40, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(jobs.len(), 40);
    let record = AttemptRecord::new(Utc::now());
    for job in &jobs {
        // The n-th account's job, whatever order the claim returned them in.
        let n: usize = job.account.trim_start_matches("user").parse().unwrap();
        let held = db
            .store
            .finish(job, "r1", &record, &resolution(n, &job.account))
            .await
            .unwrap();
        assert!(held);
    }

    // Then the failures view shows two groups, the larger first, as a direct grouping does.
    let groups = db.store.failure_groups(12).await.unwrap();
    assert_eq!(groups.len(), 2, "{groups:?}");
    let taken = &groups[0];
    assert_eq!((taken.failed, taken.retrying), (20, 0));
    assert_eq!(taken.class, Some(ErrorClass::Permanent));
    assert_eq!(
        taken.signature,
        "The proxy address \"SMTP:<account>@corp.example\" is already being used (RequestId #)"
    );
    assert_eq!(taken.accounts.len(), 12, "at most the number asked for");
    assert!(taken.example.starts_with("The proxy address \"SMTP:user"));
    assert!(taken.first_seen <= taken.last_seen);
    assert_eq!(groups[1].signature, "WinRM did not answer within # s");
    assert_eq!((groups[1].failed, groups[1].retrying), (0, 10));
    assert_eq!(kept(&db.store).await, direct(&db.store).await);

    // When operators retry some, others are pruned, a retrying one fails, more arrive.
    sql(
        &db.store,
        "UPDATE jobs SET state = 'queued' WHERE account IN ('user00', 'user01')",
    )
    .await;
    sql(&db.store, "DELETE FROM jobs WHERE account = 'user04'").await;
    sql(
        &db.store,
        "UPDATE jobs SET state = 'failed' WHERE account = 'user02'",
    )
    .await;
    given_joiners(&db.store, 3).await;
    // Then the groups still equal a direct grouping, fold after fold.
    assert_eq!(kept(&db.store).await, direct(&db.store).await);
    assert_eq!(kept(&db.store).await, direct(&db.store).await);
    let taken = &db.store.failure_groups(12).await.unwrap()[0];
    assert_eq!(taken.failed, 17, "20 - 2 retried - 1 pruned");

    // When a replica from before the signatures writes errors (none stored with them).
    sql(
        &db.store,
        "UPDATE jobs SET error_signature = '' WHERE account IN ('user05', 'user08', 'user06')",
    )
    .await;
    assert_ne!(kept(&db.store).await, direct(&db.store).await);
    // Then migrating signs them, and they are back in their groups.
    db.store.migrate().await.unwrap();
    assert_eq!(kept(&db.store).await, direct(&db.store).await);

    // And a truncate empties the groups.
    sql(&db.store, "TRUNCATE jobs CASCADE").await;
    assert!(db.store.failure_groups(12).await.unwrap().is_empty());
}
