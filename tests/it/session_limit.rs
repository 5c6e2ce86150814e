//! Exchange's session limit learned from its refusal (issue 35): the text states the limit,
//! one replica's refusal teaches every replica through the store, and the limit goes back
//! up only after a quiet period, one session at a time, as far as the configured value.

use crate::common;

use std::time::Duration;

use common::TestDatabase;
use mailboxd::budget::SlotPurpose;
use mailboxd::budget::{SessionBudget, stated_session_limit};

/// The refusal as Exchange words it (the lab's copy, from a real server's transcript).
const REFUSAL: &str = "[lab-ex01.corp.example] Processing data from remote server lab-ex01.corp.example failed with the following error message: [ClientAccessServer=LAB-EX01,BackEndServer=lab-ex01.corp.example,RequestId=1,TimeStamp=2] [AuthZRequestId=3][FailureCategory=AuthZ-AuthorizationException] Fail to create a runspace because you have exceeded the maximum number of connections allowed : 6 for the policy party : MaxConcurrency. Please close existing runspace and try again.";

#[test]
fn the_refusal_states_the_limit() {
    assert_eq!(stated_session_limit(REFUSAL), Some(6));
    assert_eq!(
        stated_session_limit("… exceeded the maximum number of connections allowed : 18"),
        Some(18)
    );
    // WinRM's shell quota refusal (the lab's copy of Windows' text) names no number.
    assert_eq!(
        stated_session_limit(
            "The WS-Management service cannot process the request. The maximum number of concurrent shells for this user has been exceeded. Close existing shells or raise the quota for this user. "
        ),
        None
    );
}

/// Takes slots until none is left (a look-up that finds none waits: give up after a while).
async fn take_all(budget: &std::sync::Arc<SessionBudget>) -> Vec<mailboxd::budget::SlotGuard> {
    let mut held = Vec::new();
    while let Ok(slot) = tokio::time::timeout(
        Duration::from_millis(700),
        budget.acquire(SlotPurpose::Batch),
    )
    .await
    {
        held.push(slot);
    }
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_refusal_teaches_every_replica_and_the_limit_recovers_only_when_quiet() {
    let db = TestDatabase::create_empty(&common::fresh_tag(), 8).await;
    db.migrate().await.unwrap();
    let lease = Duration::from_secs(30);
    let a = SessionBudget::start(db.store.clone(), "replica-a".into(), 18, lease, None)
        .await
        .unwrap();
    let b = SessionBudget::start(db.store.clone(), "replica-b".into(), 18, lease, None)
        .await
        .unwrap();

    // Replica a is refused by Exchange, which says it allows 6.
    a.throttled(Some(Duration::from_millis(1)), REFUSAL).await;
    let cluster = db.store.budget_use().await.unwrap();
    assert_eq!(cluster.learned_max_sessions, Some(6));

    // Replica b was never refused, yet it can take no more than 6 sessions.
    let mut held = take_all(&b).await;
    assert_eq!(held.len(), 6, "replica b adopted the stated limit");

    // Another refusal of the same burst comes back after one of the 6 ended: the 5 still
    // held do not teach 4 (the refusal is older than the limit it would correct).
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await; // the release lands
    a.throttled(Some(Duration::from_millis(1)), REFUSAL).await;
    assert_eq!(
        db.store.budget_use().await.unwrap().learned_max_sessions,
        Some(6)
    );
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await; // the releases land

    // Not quiet yet (a refusal just now): the limit stays.
    assert_eq!(
        db.store
            .raise_learned_limit(18, Duration::from_secs(600))
            .await
            .unwrap(),
        Some(6)
    );
    // Quiet long enough: one more session is offered, not the whole configured budget.
    assert_eq!(
        db.store
            .raise_learned_limit(18, Duration::ZERO)
            .await
            .unwrap(),
        Some(7)
    );
    assert_eq!(take_all(&b).await.len(), 7);
    // Back at the configured value, the learned limit is gone.
    for _ in 7..17 {
        db.store
            .raise_learned_limit(18, Duration::ZERO)
            .await
            .unwrap();
    }
    assert_eq!(
        db.store
            .raise_learned_limit(18, Duration::ZERO)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        db.store.budget_use().await.unwrap().learned_max_sessions,
        None
    );
}
