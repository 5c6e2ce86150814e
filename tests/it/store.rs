//! The job store against a real PostgreSQL: idempotence, latest intent wins, claiming with
//! leases, and what a crashed replica leaves behind.

use crate::common;

use std::time::Duration;

use chrono::{TimeZone, Utc};
use common::TestDatabase;
use mailboxd::event::{Event, EventKind};
use mailboxd::job::{AttemptEnd, JobEffect, JobState, Resolution};
use mailboxd::store::{AttemptRecord, Inserted, Store};

/// A migrated database of the test's own (dropped with it); derefs to its `Store`.
async fn fresh_store() -> TestDatabase {
    let db = TestDatabase::create_empty(&common::fresh_tag(), 8).await;
    db.migrate().await.unwrap();
    // Migrating twice is harmless.
    db.migrate().await.unwrap();
    db
}

fn event(id: &str, kind: EventKind, sam: &str, minute: u32) -> Event {
    common::event_at(id, kind, sam, minute)
}

#[tokio::test]
async fn inserting_the_same_event_twice_keeps_one_job() {
    let store = fresh_store().await;
    let e = event("e1", EventKind::Joiner, "jdoe", 0);
    let first = store
        .insert_events(std::slice::from_ref(&e), 5)
        .await
        .unwrap();
    let again = store.insert_events(&[e.clone(), e], 5).await.unwrap();
    let Inserted::New(id) = first[0] else {
        panic!("{first:?}")
    };
    assert_eq!(
        again,
        vec![Inserted::Duplicate(id), Inserted::Duplicate(id)]
    );
}

/// What PostgreSQL refuses in the data itself is told apart from an outage: intake poisons
/// the one delivery instead of retrying forever (issue 29).
#[tokio::test]
async fn postgresql_refusing_a_nul_is_a_data_exception_and_the_rows_are_not_stored() {
    let store = fresh_store().await;
    let e = event("nul-reply", EventKind::Joiner, "jdoe", 0);
    let reply = mailboxd::store::ReplyTo {
        queue: Some("amq.gen-\0x".into()),
        refused: None,
        ..Default::default()
    };
    let err = store
        .insert_deliveries(std::slice::from_ref(&e), &[reply], 5)
        .await
        .unwrap_err();
    assert!(err.is_data_exception(), "{err}");
    assert!(store.job_by_event("nul-reply").await.unwrap().is_none());
    let refused = mailboxd::store::ReplyTo {
        queue: None,
        refused: Some("\"x\" not used: test".into()),
        ..Default::default()
    };
    store
        .insert_deliveries(std::slice::from_ref(&e), &[refused], 5)
        .await
        .unwrap();
    let job = store.job_by_event("nul-reply").await.unwrap().unwrap();
    assert_eq!(
        job.reply_to_refused.as_deref(),
        Some("\"x\" not used: test")
    );
}

#[tokio::test]
async fn a_newer_event_supersedes_and_an_older_one_arrives_superseded() {
    let store = fresh_store().await;
    let joiner = event("j", EventKind::Joiner, "Mover", 0);
    let leaver = event("l", EventKind::Leaver, "mover", 5); // same account, any case
    let late = event("old", EventKind::Joiner, "MOVER", 1); // older than the leaver
    store.insert_events(&[joiner], 5).await.unwrap();
    store.insert_events(&[leaver], 5).await.unwrap();
    let r = store.insert_events(&[late], 5).await.unwrap();
    assert!(matches!(r[0], Inserted::Stale(_)), "{r:?}");
    let state = |id: &str| {
        let store = store.clone();
        let id = id.to_owned();
        async move { store.job_by_event(&id).await.unwrap().unwrap().state }
    };
    assert_eq!(state("j").await, JobState::Superseded);
    assert_eq!(state("l").await, JobState::Queued);
    assert_eq!(state("old").await, JobState::Superseded);
}

/// A mover changes addresses, not whether the mailbox exists or shows: it never supersedes
/// a pending leaver or joiner, nor is superseded by one; a newer mover replaces an older one.
#[tokio::test]
async fn movers_have_their_own_lane_of_latest_intent() {
    let store = fresh_store().await;
    let mover = |id: &str, minute: u32| {
        let at = Utc.with_ymd_and_hms(2026, 11, 22, 10, minute, 0).unwrap();
        let json = serde_json::json!({
            "schema": "mailboxd.event/v1", "id": id, "type": "mover",
            "occurred_at": at.to_rfc3339(),
            "account": {"sam_account_name": "jsmith"},
            "rename": {"alias": format!("a{minute}")}
        });
        mailboxd::event::parse(json.to_string().as_bytes(), None, None, "ad.user.renamed").unwrap()
    };
    store
        .insert_events(&[event("leave", EventKind::Leaver, "jsmith", 1)], 5)
        .await
        .unwrap();
    store.insert_events(&[mover("m2", 2)], 5).await.unwrap();
    store.insert_events(&[mover("m3", 3)], 5).await.unwrap();
    // A mover older than the leaver is not stale for it; one older than a mover is.
    let r = store.insert_events(&[mover("m0", 0)], 5).await.unwrap();
    assert!(matches!(r[0], Inserted::Stale(_)), "{r:?}");
    let state = |id: &str| {
        let store = store.clone();
        let id = id.to_owned();
        async move { store.job_by_event(&id).await.unwrap().unwrap().state }
    };
    assert_eq!(state("leave").await, JobState::Queued);
    assert_eq!(state("m2").await, JobState::Superseded);
    assert_eq!(state("m3").await, JobState::Queued);
    assert_eq!(state("m0").await, JobState::Superseded);
    // And a newer joiner supersedes the leaver, not the mover.
    store
        .insert_events(&[event("back", EventKind::Joiner, "jsmith", 4)], 5)
        .await
        .unwrap();
    assert_eq!(state("leave").await, JobState::Superseded);
    assert_eq!(state("m3").await, JobState::Queued);
}

#[tokio::test]
async fn replicas_claim_disjoint_jobs_and_never_two_for_one_account() {
    let store = fresh_store().await;
    let events: Vec<Event> = (0..40)
        .map(|i| event(&format!("e{i}"), EventKind::Joiner, &format!("u{i}"), 0))
        .collect();
    store.insert_events(&events, 5).await.unwrap();
    let lease = Duration::from_secs(60);
    let (a, b) = tokio::join!(
        store.claim("replica-a", 25, lease),
        store.claim("replica-b", 25, lease)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.len() + b.len(), 40);
    assert!(a.iter().all(|j| !b.iter().any(|k| k.id == j.id)));
    assert!(
        a.iter()
            .chain(&b)
            .all(|j| j.state == JobState::Running && j.attempt == 1)
    );
    assert!(
        store
            .claim("replica-c", 10, lease)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn an_expired_lease_makes_the_job_run_again_and_records_the_lost_attempt() {
    let store = fresh_store().await;
    store
        .insert_events(&[event("e", EventKind::Leaver, "crash", 0)], 5)
        .await
        .unwrap();
    let claimed = store
        .claim("dead-replica", 10, Duration::from_millis(200))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    // Within the lease nobody else gets it.
    assert!(
        store
            .claim("other", 10, Duration::from_secs(60))
            .await
            .unwrap()
            .is_empty()
    );
    tokio::time::sleep(Duration::from_millis(400)).await; // let the 200 ms lease run out
    // Lease rescue (every replica's `worker::rescue` service) makes it due again.
    assert_eq!(store.rescue_expired_leases().await.unwrap(), 1);
    let again = store
        .claim("other", 10, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempt, 2);
    // The dead replica's late answer is refused: it no longer holds the job.
    let record = AttemptRecord::new(Utc::now());
    let ok = Resolution::Succeeded {
        outcome: JobEffect::Hidden,
    };
    assert!(
        !store
            .finish(&claimed[0], "dead-replica", &record, &ok)
            .await
            .unwrap()
    );
    assert!(
        store
            .finish(&again[0], "other", &record, &ok)
            .await
            .unwrap()
    );
    let (job, attempts) = store.get_job(again[0].id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Succeeded);
    let outcomes: Vec<AttemptEnd> = attempts.iter().map(|a| a.outcome).collect();
    assert_eq!(
        outcomes,
        vec![AttemptEnd::LeaseExpired, AttemptEnd::Succeeded]
    );
    assert_eq!(attempts[0].replica, "dead-replica");
}

#[tokio::test]
async fn operators_can_retry_a_failed_job_and_cancel_a_queued_one() {
    let store = fresh_store().await;
    store
        .insert_events(
            &[
                event("f", EventKind::Joiner, "f1", 0),
                event("q", EventKind::Joiner, "q1", 0),
            ],
            1,
        )
        .await
        .unwrap();
    let jobs = store.claim("r", 1, Duration::from_secs(60)).await.unwrap();
    let record = AttemptRecord::new(Utc::now());
    let fail = Resolution::Failed {
        class: mailboxd::job::ErrorClass::Permanent,
        error: "ProxyAddressExistsException: taken".into(),
        alert: None,
    };
    assert!(store.finish(&jobs[0], "r", &record, &fail).await.unwrap());
    let failed = jobs[0].id;
    let other = store
        .job_by_event(if jobs[0].event_id == "f" { "q" } else { "f" })
        .await
        .unwrap()
        .unwrap();

    assert_eq!(store.retry_job(failed, "test").await.unwrap(), Ok(()));
    let job = store.get_job(failed).await.unwrap().unwrap().0;
    assert_eq!((job.state, job.attempt), (JobState::Queued, 0));
    assert_eq!(store.cancel_job(other.id, "test").await.unwrap(), Ok(()));
    assert_eq!(
        store.cancel_job(other.id, "test").await.unwrap(),
        Err(mailboxd::store::ActionRefused::WrongState(
            JobState::Cancelled
        ))
    );
    assert_eq!(
        store.retry_job(uuid::Uuid::new_v4(), "test").await.unwrap(),
        Err(mailboxd::store::ActionRefused::NotFound)
    );
}

#[tokio::test]
async fn an_event_older_than_the_last_processed_one_is_recorded_and_skipped() {
    let store = fresh_store().await;
    // The leaver (10:05) is processed first…
    store
        .insert_events(&[event("leave", EventKind::Leaver, "late", 5)], 5)
        .await
        .unwrap();
    let jobs = store.claim("r", 10, Duration::from_secs(60)).await.unwrap();
    assert_eq!(jobs.len(), 1);
    let ok = Resolution::Succeeded {
        outcome: JobEffect::Hidden,
    };
    assert!(
        store
            .finish(&jobs[0], "r", &AttemptRecord::new(Utc::now()), &ok)
            .await
            .unwrap()
    );
    // …then the joiner from 10:00 arrives late: it must not undo the leaver.
    let got = store
        .insert_events(&[event("join", EventKind::Joiner, "late", 0)], 5)
        .await
        .unwrap();
    assert!(matches!(got[0], Inserted::Stale(_)), "{got:?}");
    let job = store.job_by_event("join").await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Superseded);
    assert!(
        store
            .claim("r", 10, Duration::from_secs(60))
            .await
            .unwrap()
            .is_empty()
    );
}

/// Three jobs: one succeeded, one failed for good, one retrying in an hour.
async fn given_a_succeeded_a_failed_and_a_retrying_job(store: &Store) {
    store
        .insert_events(
            &[
                event("ok", EventKind::Joiner, "done1", 0),
                event("bad", EventKind::Joiner, "fail1", 0),
                event("again", EventKind::Joiner, "retry1", 0),
            ],
            5,
        )
        .await
        .unwrap();
    let jobs = store.claim("r", 3, Duration::from_secs(60)).await.unwrap();
    assert_eq!(jobs.len(), 3);
    let record = AttemptRecord::new(Utc::now());
    for j in &jobs {
        let res = match j.event_id.as_str() {
            "ok" => Resolution::Succeeded {
                outcome: JobEffect::Enabled,
            },
            "bad" => Resolution::Failed {
                class: mailboxd::job::ErrorClass::Permanent,
                error: "no".into(),
                alert: None,
            },
            _ => Resolution::Retry {
                class: mailboxd::job::ErrorClass::Transient,
                error: "later".into(),
                after: std::time::Duration::from_secs(3600),
            },
        };
        assert!(store.finish(j, "r", &record, &res).await.unwrap());
    }
}

#[tokio::test]
async fn retention_prunes_finished_jobs_but_keeps_failed_ones() {
    let store = fresh_store().await;
    given_a_succeeded_a_failed_and_a_retrying_job(&store).await;
    when_old_enough_only_the_succeeded_job_with_its_outcome_sent_is_pruned(&store).await;
    then_its_sent_outcome_went_with_it_and_failed_and_pending_jobs_stay(&store).await;
}

/// Nothing is old enough at first; then not while its outcome is unsent (the IAM system
/// has not heard of it yet); once sent, the succeeded job goes.
async fn when_old_enough_only_the_succeeded_job_with_its_outcome_sent_is_pruned(store: &Store) {
    assert_eq!(
        store.prune(Duration::from_secs(3600), 100).await.unwrap(),
        0
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    // Not while its outcome is unsent: the IAM system has not heard of it yet.
    assert_eq!(store.prune(Duration::from_millis(1), 100).await.unwrap(), 0);
    let outcomes = store
        .claim_outcomes(
            mailboxd::store::OutcomeChannel::Amqp,
            "r",
            10,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let sent: Vec<_> = outcomes.iter().map(|o| (o.id, "test".to_owned())).collect();
    assert_eq!(store.outcomes_sent("r", &sent).await.unwrap(), 2);
    assert_eq!(store.prune(Duration::from_millis(1), 100).await.unwrap(), 1);
}

async fn then_its_sent_outcome_went_with_it_and_failed_and_pending_jobs_stay(store: &Store) {
    assert!(store.job_by_event("ok").await.unwrap().is_none());
    let left = store
        .list_outcomes(mailboxd::store::OutcomeFilter::All, None, 10)
        .await
        .unwrap();
    assert_eq!(
        left.iter().map(|o| o.event_id.as_str()).collect::<Vec<_>>(),
        vec!["bad"],
        "the pruned job's sent outcome went with it"
    );
    assert!(
        store.job_by_event("bad").await.unwrap().is_some(),
        "failed jobs stay"
    );
    assert!(
        store.job_by_event("again").await.unwrap().is_some(),
        "pending jobs stay"
    );
}

#[tokio::test]
async fn one_batch_decides_duplicates_and_the_latest_intent_per_account() {
    let store = fresh_store().await;
    let join = event("b-join", EventKind::Joiner, "batchy", 0);
    let leave = event("b-leave", EventKind::Leaver, "batchy", 5);
    let other = event("b-other", EventKind::Joiner, "someone", 1);
    let got = store
        .insert_events(&[join.clone(), leave, join, other], 5)
        .await
        .unwrap();
    let (Inserted::Stale(stale), Inserted::New(winner), Inserted::Duplicate(dup), Inserted::New(_)) =
        (got[0], got[1], got[2], got[3])
    else {
        panic!("{got:?}")
    };
    assert_eq!(dup, stale, "the repeated event is the first one");
    assert_ne!(stale, winner);
    let j = store.job_by_event("b-join").await.unwrap().unwrap();
    assert_eq!(j.state, JobState::Superseded);
    let claimed = store.claim("r", 10, Duration::from_secs(60)).await.unwrap();
    let mut ids: Vec<_> = claimed.iter().map(|j| j.event_id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, vec!["b-leave", "b-other"]);
}

#[tokio::test]
async fn each_outage_is_one_alert_and_one_recovery_whichever_replicas_report_it() {
    let store = fresh_store().await;
    let ep = "https://iqsvc01.corp.example:5986/wsman";
    let opened = mailboxd::alert::circuit_opened(ep, "connection refused", Duration::from_secs(1));
    let closed = mailboxd::alert::circuit_closed(ep, Duration::from_secs(30));
    let raise = |a: &mailboxd::alert::CircuitAlert, _opening: bool| {
        let store = store.clone();
        let a = a.clone();
        async move { store.raise_circuit_alert(&a).await.expect("alert") }
    };
    // A recovery nobody announced is not news.
    assert!(!raise(&closed, false).await);
    // Three replicas see the host go: one alert.
    assert!(raise(&opened, true).await);
    assert!(!raise(&opened, true).await);
    assert!(!raise(&opened, true).await);
    // They see it come back: one recovery.
    assert!(raise(&closed, false).await);
    assert!(!raise(&closed, false).await);
    // A replica that noticed late, or a flap within the quiet minute: no new pair.
    assert!(!raise(&opened, true).await);
    assert!(!raise(&closed, false).await);
    let subjects: Vec<String> = store
        .list_alerts(10)
        .await
        .expect("alerts")
        .into_iter()
        .map(|a| a.subject)
        .collect();
    assert_eq!(subjects.len(), 2, "{subjects:?}");
}

#[tokio::test]
async fn a_queued_job_wakes_whoever_waits_for_work() {
    let store = fresh_store().await;
    let mut wake = store.wake_ups();
    // The listener connects in the background: a job queued before it listens wakes
    // nobody, so queue one after another until one does.
    for i in 0..20 {
        wake.mark_seen();
        let e = event(&format!("w{i}"), EventKind::Joiner, &format!("wake{i}"), 0);
        store.insert_events(&[e], 5).await.unwrap();
        if tokio::time::timeout(Duration::from_millis(500), wake.next())
            .await
            .is_ok()
        {
            return;
        }
    }
    panic!("no wake-up for 20 queued jobs");
}

/// Outcomes: every way a job ends writes its one outcome in the same transaction (a
/// supersede, an operator's cancel, a worker's finish), an account's outcomes are handed
/// out oldest first and one at a time, and two replicas never hold the same one.
const OUTCOME_LEASE: Duration = Duration::from_secs(60);

/// "mover": a joiner superseded by a newer leaver; "quit": cancelled by an operator; the
/// leaver runs and succeeds.
async fn given_a_superseded_joiner_a_cancelled_one_and_a_succeeded_leaver(store: &Store) {
    store
        .insert_events(
            &[
                event("j", EventKind::Joiner, "mover", 0),
                event("q", EventKind::Joiner, "quit", 0),
            ],
            3,
        )
        .await
        .unwrap();
    store
        .insert_events(&[event("l", EventKind::Leaver, "mover", 5)], 3)
        .await
        .unwrap();
    let quit = store.job_by_event("q").await.unwrap().unwrap();
    assert_eq!(store.cancel_job(quit.id, "test").await.unwrap(), Ok(()));
    // The leaver runs and succeeds.
    let claimed = store.claim("w", 10, OUTCOME_LEASE).await.unwrap();
    let leaver = claimed.iter().find(|j| j.event_id == "l").unwrap();
    let done = Resolution::Succeeded {
        outcome: JobEffect::Hidden,
    };
    let record = AttemptRecord::new(Utc::now());
    assert!(store.finish(leaver, "w", &record, &done).await.unwrap());
}

#[tokio::test]
async fn every_ending_writes_one_outcome_and_replicas_send_an_accounts_outcomes_in_order() {
    let store = fresh_store().await;
    given_a_superseded_joiner_a_cancelled_one_and_a_succeeded_leaver(&store).await;
    then_each_ending_wrote_one_outcome(&store).await;
    let (a, b) = then_two_replicas_get_only_the_older_outcome_of_an_account(&store).await;
    then_once_the_joiners_is_confirmed_the_leavers_is_due(&store, &a, &b).await;
}

async fn then_each_ending_wrote_one_outcome(store: &Store) {
    use mailboxd::outcome::OutcomeResult;
    use mailboxd::store::OutcomeFilter;
    let mut all = store
        .list_outcomes(OutcomeFilter::All, None, 100)
        .await
        .unwrap();
    all.reverse(); // oldest first
    let seen: Vec<(&str, OutcomeResult, &str)> = all
        .iter()
        .map(|o| (o.event_id.as_str(), o.result, o.routing_key.as_str()))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("j", OutcomeResult::Superseded, "joiner.superseded"),
            ("q", OutcomeResult::Cancelled, "joiner.cancelled"),
            ("l", OutcomeResult::Succeeded, "leaver.succeeded"),
        ]
    );
    let leaver_job = store.job_by_event("l").await.unwrap().unwrap();
    assert_eq!(all[0].body["superseded_by"], leaver_job.id.to_string());
}

/// Two replicas: "mover" has two unsent outcomes, only the older one is handed out, and
/// nobody gets what the other holds. Returns what each replica holds.
async fn then_two_replicas_get_only_the_older_outcome_of_an_account(
    store: &Store,
) -> (
    Vec<mailboxd::store::OutcomeRow>,
    Vec<mailboxd::store::OutcomeRow>,
) {
    use mailboxd::store::OutcomeChannel;
    let lease = OUTCOME_LEASE;
    let (a, b) = tokio::join!(
        store.claim_outcomes(OutcomeChannel::Amqp, "a", 10, lease),
        store.claim_outcomes(OutcomeChannel::Amqp, "b", 10, lease)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut held: Vec<&str> = a.iter().chain(&b).map(|o| o.event_id.as_str()).collect();
    held.sort();
    assert_eq!(held, vec!["j", "q"], "the leaver's waits for the joiner's");
    assert!(
        store
            .claim_outcomes(OutcomeChannel::Amqp, "c", 10, lease)
            .await
            .unwrap()
            .is_empty()
    );
    (a, b)
}

/// The joiner's outcome is confirmed: now the leaver's is due, for one replica; another
/// replica's confirm cannot mark what it does not hold.
async fn then_once_the_joiners_is_confirmed_the_leavers_is_due(
    store: &Store,
    a: &[mailboxd::store::OutcomeRow],
    b: &[mailboxd::store::OutcomeRow],
) {
    use mailboxd::store::OutcomeChannel;
    let lease = OUTCOME_LEASE;
    let (holder, row) = match a.iter().find(|o| o.event_id == "j") {
        Some(r) => ("a", r),
        None => ("b", b.iter().find(|o| o.event_id == "j").unwrap()),
    };
    let sent = store
        .outcomes_sent(holder, &[(row.id, "exchange x".into())])
        .await
        .unwrap();
    assert_eq!(sent, 1);
    assert_eq!(
        store
            .outcomes_sent("c", &[(row.id, "exchange x".into())])
            .await
            .unwrap(),
        0
    );
    let next = store
        .claim_outcomes(OutcomeChannel::Amqp, "c", 10, lease)
        .await
        .unwrap();
    assert_eq!(
        next.iter().map(|o| o.event_id.as_str()).collect::<Vec<_>>(),
        vec!["l"]
    );
    let counts = store.outcome_counts().await.unwrap();
    assert_eq!((counts.unsent, counts.failing), (2, 0));
}

#[tokio::test]
async fn dashboard_sessions_end_when_idle_too_old_or_signed_out_and_stay_ended() {
    use mailboxd::access::Role;
    use mailboxd::store::{NewSession, SessionLimits};
    let store = fresh_store().await;
    let long = Duration::from_secs(3600);
    let open = |idle, lifetime| SessionLimits { idle, lifetime };
    let session = |hash: &'static [u8]| NewSession {
        id_hash: hash,
        person: "CORP\\jdoe",
        user_dn: "CN=jdoe,CN=Users,DC=corp,DC=example",
        role: Role::Operator,
    };
    for (hash, limits) in [
        (&b"idle"[..], open(Duration::ZERO, long)),
        (&b"old"[..], open(long, Duration::ZERO)),
    ] {
        store.create_session(&session(hash)).await.unwrap();
        let s = store.use_session(hash, open(long, long)).await.unwrap();
        assert_eq!(
            s.map(|s| (s.person, s.role)),
            Some(("CORP\\jdoe".into(), Role::Operator))
        );
        assert!(
            store.use_session(hash, limits).await.unwrap().is_none(),
            "expired"
        );
        assert!(
            store
                .use_session(hash, open(long, long))
                .await
                .unwrap()
                .is_none(),
            "an expired session stays ended"
        );
    }
    store.create_session(&session(b"out")).await.unwrap();
    assert!(store.end_session(b"out", "signed out").await.unwrap());
    assert!(
        store
            .use_session(b"out", open(long, long))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .use_session(b"unknown", open(long, long))
            .await
            .unwrap()
            .is_none()
    );
}

/// Replicas share the cloud watches a joiner's success starts: a claimed watch is nobody
/// else's until its lease runs out, and a replica that lost it cannot end it.
#[tokio::test]
async fn a_joiners_success_starts_one_cloud_watch_that_replicas_claim_under_a_lease() {
    use mailboxd::outcome::{CloudAnswer, CloudSourceName, cloud_message};
    use mailboxd::store::{WatchEnd, WatchPolicy, answered};
    let db = fresh_store().await;
    let store = (*db).clone().watching_the_cloud(Some(WatchPolicy {
        source: CloudSourceName::Directory,
        first_check: Duration::ZERO,
        deadline: Duration::from_secs(3600),
    }));
    let joiner = event("j", EventKind::Joiner, "newbie", 0);
    store.insert_events(&[joiner], 5).await.unwrap();
    let job = store.claim("w", 1, Duration::from_secs(60)).await.unwrap();
    let enabled = Resolution::Succeeded {
        outcome: JobEffect::Enabled,
    };
    let record = AttemptRecord::new(Utc::now());
    assert!(store.finish(&job[0], "w", &record, &enabled).await.unwrap());

    let lease = Duration::from_millis(300);
    let first = store.claim_watches("a", 10, lease).await.unwrap();
    assert_eq!(first.len(), 1, "one watch for the joiner");
    assert_eq!(first[0].sam_account_name, "newbie");
    assert!(
        store
            .claim_watches("b", 10, lease)
            .await
            .unwrap()
            .is_empty()
    );
    tokio::time::sleep(Duration::from_millis(500)).await; // let a's lease run out
    let second = store.claim_watches("b", 10, lease).await.unwrap();
    assert_eq!((second.len(), second[0].checks), (1, 2));

    let w = &second[0];
    let answer = CloudAnswer::watched(CloudSourceName::Directory, w.created_at, w.deadline_at, 2);
    let end = WatchEnd {
        job: &w.job,
        message: cloud_message(answered(&w.job), 1, None, answer, None),
        alert: None,
    };
    assert_eq!(
        store
            .end_watches("a", std::slice::from_ref(&end))
            .await
            .unwrap(),
        0
    );
    assert_eq!(store.end_watches("b", &[end]).await.unwrap(), 1);
    let answers = store.job_outcomes(w.job.id).await.unwrap();
    let keys: Vec<&str> = answers.iter().map(|o| o.routing_key.as_str()).collect();
    assert_eq!(keys, ["joiner.succeeded", "joiner.cloud_confirmed"]);
}
