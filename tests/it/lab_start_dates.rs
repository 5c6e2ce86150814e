//! Start dates (issue 33) through the real daemon and the lab: a joiner with
//! `mailbox.start_date` gets its mailbox now, hidden from the address lists (Enable-RemoteMailbox
//! then Set-RemoteMailbox -HiddenFromAddressListsEnabled $true in the same batch, verified in
//! AD), and a durable step in PostgreSQL — a job in state `scheduled`, due at the start
//! instant — makes it visible on that day (`joiner.visible`); a newer event of the account
//! (a leaver) supersedes the step.
//!
//! How time moves forward: the start dates are a year ahead, and the day comes by the
//! operator action the product offers for any waiting job, "retry now" (`mailboxd jobs retry`,
//! the dashboard's button, `POST /api/v1/jobs/{id}/retry`), which makes the scheduled step due
//! at once. Nothing is slept and no clock is faked: the daemon cannot tell an operator's "run
//! it now" from the day having come, because both are the same `next_attempt_at <= now()` of
//! the one claim statement every job goes through (the one retries and backoff use). A clock
//! offset in the daemon would not move the claim either: it compares against the database's
//! `now()`. What the test cannot show by itself — that the step is not run before its time —
//! it shows by the step's single attempt, which starts after the operator's retry although
//! two daemons ran claims in between.

use crate::common;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use common::outcomes::wait_all_sent;
use common::{TestEnv, seed};
use mailboxd::job::{JobEffect, JobState, JobStep};
use mailboxd::publish::EventSpec;
use mailboxd::store::Job;

/// A first day a year ahead, and the instant `[joiner]`'s defaults make of it (00:00 UTC).
fn first_day() -> (String, DateTime<Utc>) {
    let today = Utc::now().date_naive();
    let day = NaiveDate::from_ymd_opt(today.year() + 1, today.month(), 1).expect("a day");
    let instant = day.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
    (day.format("%Y-%m-%d").to_string(), instant)
}

/// The step of `event_id` once it is in `state`.
async fn step_in(env: &TestEnv, event_id: &str, state: JobState) -> Job {
    env.wait_job(&format!("{event_id}/make_visible"), |j| j.state == state)
        .await
}

/// A joiner for `sam` whose first day is a year ahead, published and succeeded (hidden);
/// the event and its scheduled step.
async fn scheduled_joiner(env: &TestEnv, sam: &str) -> (EventSpec, Job) {
    let mut ev = env.joiner(sam);
    ev.start_date = Some(first_day().0);
    env.publisher().await.publish(&ev).await.unwrap();
    env.wait_succeeded(&ev.id).await;
    let step = step_in(env, &ev.id, JobState::Scheduled).await;
    (ev, step)
}

/// Every message the IAM system received is valid against docs/outcome.schema.json.
fn assert_valid_outcomes(got: &[common::outcomes::Received]) {
    let bodies: Vec<Vec<u8>> = got
        .iter()
        .map(|m| m.body.to_string().into_bytes())
        .collect();
    for v in common::schema::verdicts("outcome.schema.json", &bodies) {
        assert!(v.valid, "{:?}", v.errors);
    }
}

/// Whether the lab's directory shows the account's mailbox hidden from the address lists.
fn hidden_in_ad(env: &TestEnv, sam: &str) -> Option<bool> {
    env.mailbox(sam).msExchHideFromAddressLists
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_joiner_with_a_start_date_is_hidden_until_that_day_and_visible_after_it_across_a_restart()
{
    let mut env = TestEnv::new(vec![seed("starter.1").disabled()]).await;
    let outcomes = env.expect_outcomes().await;
    let mut daemon = env.spawn_logged(&[], env.daemon_env()).await;
    // Given a joiner whose first day is a year ahead (its account disabled until then).
    let (day, instant) = first_day();
    let mut ev = env.joiner("starter.1");
    ev.start_date = Some(day);
    env.publisher().await.publish(&ev).await.unwrap();
    // Then the mailbox is created now, hidden in the same batch, as AD shows.
    let joiner = env.wait_succeeded(&ev.id).await;
    assert_eq!(joiner.outcome, Some(JobEffect::Enabled));
    assert_eq!(hidden_in_ad(&env, "starter.1"), Some(true));
    let sets = env.lab.invocations_for("Set-RemoteMailbox", "starter.1");
    assert_eq!(sets.len(), 1, "{sets:?}");
    assert_eq!(sets[0].flag("HiddenFromAddressListsEnabled"), Some(true));
    // And the step waits in the queue, due at the start instant, shown to operators.
    let step = step_in(&env, &ev.id, JobState::Scheduled).await;
    assert_eq!(
        (step.step, step.next_attempt_at),
        (Some(JobStep::MakeVisible), instant)
    );
    // Keyed on the objectGUID the joiner's first read found, as the joiner is: the
    // account's later events supersede it whatever name they use.
    let keys: Vec<Option<uuid::Uuid>> = sqlx::query_scalar(
        "SELECT account_guid FROM jobs WHERE id = ANY($1) ORDER BY step NULLS FIRST",
    )
    .bind(vec![joiner.id, step.id])
    .fetch_all(env.store.pool())
    .await
    .unwrap();
    assert!(keys[0].is_some() && keys[0] == keys[1], "{keys:?}");
    let (code, listed, _) = env.cli(&["jobs", "list", "--state", "scheduled"]);
    assert_eq!(code, 0);
    assert!(listed.contains("make_visible due"), "{listed}");
    // When the daemon is killed and started again before the day.
    daemon.child.kill().expect("kill the daemon");
    daemon.child.wait().expect("the daemon ends");
    let _again = env.spawn_logged(&[], env.daemon_env()).await;
    let step = step_in(&env, &ev.id, JobState::Scheduled).await;
    assert_eq!(
        (step.attempt, hidden_in_ad(&env, "starter.1")),
        (0, Some(true))
    );
    // And the day comes (the operator's "run now").
    let retried_at = Utc::now();
    let (code, out, err) = env.cli(&["jobs", "retry", &step.id.to_string()]);
    assert_eq!(code, 0, "{out}{err}");
    // Then the mailbox is visible, as AD shows, after one attempt that began only then.
    let step = step_in(&env, &ev.id, JobState::Succeeded).await;
    assert_eq!((step.outcome, step.attempt), (Some(JobEffect::Unhidden), 1));
    assert!(
        step.started_at
            .is_some_and(|s| s >= retried_at - chrono::Duration::seconds(1))
    );
    assert_eq!(hidden_in_ad(&env, "starter.1"), Some(false));
    let sets = env.lab.invocations_for("Set-RemoteMailbox", "starter.1");
    assert_eq!(
        sets.last()
            .and_then(|s| s.flag("HiddenFromAddressListsEnabled")),
        Some(false)
    );
    // Made visible without Enable-RemoteMailbox again: Get-RemoteMailbox, Set-RemoteMailbox.
    let enables = env.lab.invocations_for("Enable-RemoteMailbox", "starter.1");
    assert_eq!(enables.len(), 1, "only the joiner's: {enables:?}");
    let gets = env.lab.invocations_for("Get-RemoteMailbox", "starter.1");
    assert_eq!(gets.len(), 1, "{gets:?}");
    // And the IAM system heard both, each valid against the documented schema.
    wait_all_sent(&env.store, 2).await;
    let got = outcomes.drain().await;
    let keys: Vec<&str> = got.iter().map(|m| m.routing_key.as_str()).collect();
    assert_eq!(keys, ["joiner.succeeded", "joiner.visible"]);
    let hidden_until = got[0].body["hidden_until"]
        .as_str()
        .map(str::parse::<DateTime<Utc>>);
    assert_eq!(
        hidden_until.and_then(Result::ok),
        Some(instant),
        "{:#}",
        got[0].body
    );
    assert_eq!(got[0].body["mailbox"]["hidden"], true);
    assert_eq!(got[1].body["mailbox"]["hidden"], false);
    for m in &got {
        assert_eq!(m.correlation_id.as_deref(), Some(ev.id.as_str()));
        assert_eq!(m.body["event_id"], ev.id.as_str());
    }
    assert_valid_outcomes(&got);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leaver_before_the_day_cancels_the_unhide() {
    let mut env = TestEnv::new(vec![seed("starter.2").disabled()]).await;
    let outcomes = env.expect_outcomes().await;
    let app = env.start_daemon().await;
    let publisher = env.publisher().await;
    // Given a joiner with a start date, its mailbox hidden and its step scheduled.
    let (ev, scheduled) = scheduled_joiner(&env, "starter.2").await;
    // When the person leaves before the first day.
    let leaver = env.leaver("starter.2");
    publisher.publish(&leaver).await.unwrap();
    let left = env.wait_succeeded(&leaver.id).await;
    // Then the step is superseded by the leaver, never runs, and the mailbox stays hidden.
    let step = step_in(&env, &ev.id, JobState::Superseded).await;
    assert_eq!((step.superseded_by, step.attempt), (Some(left.id), 0));
    assert_eq!(step.id, scheduled.id);
    assert_eq!(hidden_in_ad(&env, "starter.2"), Some(true));
    // And an operator cannot run it any more.
    let (code, _, _) = env.cli(&["jobs", "retry", &step.id.to_string()]);
    assert_ne!(code, 0, "a superseded step is not retried");
    // And the IAM system is told the visible step will not come.
    wait_all_sent(&env.store, 3).await;
    let got = outcomes.drain().await;
    let keys: Vec<&str> = got.iter().map(|m| m.routing_key.as_str()).collect();
    assert_eq!(
        keys,
        ["joiner.succeeded", "joiner.superseded", "leaver.succeeded"]
    );
    assert_valid_outcomes(&got);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reconciliation_runs_again_a_start_step_that_failed_after_its_day() {
    let env = TestEnv::new(vec![seed("starter.3").disabled()]).await;
    let _app = env.start_daemon().await;
    let (ev, step) = scheduled_joiner(&env, "starter.3").await;
    // Given the day came (run now) and Exchange refused the step for good.
    env.fault(serde_json::json!({"fault": "cmdlet_errors", "count": 1, "error": {
        "reason": "ProxyAddressExistsException",
        "message": "The proxy address \"SMTP:starter.3@corp.example\" is already being used by \"CN=other,CN=Users,DC=corp,DC=example\"."
    }}))
    .await;
    let (code, out, err) = env.cli(&["jobs", "retry", &step.id.to_string()]);
    assert_eq!(code, 0, "{out}{err}");
    step_in(&env, &ev.id, JobState::Failed).await;
    assert_eq!(hidden_in_ad(&env, "starter.3"), Some(true));
    // When reconciliation compares AD with what should be true.
    let (code, out, err) = env.cli(&["reconcile", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("the report is JSON");
    // Then it names the overdue start date, runs the step again, and the mailbox is visible.
    assert_eq!(report["by_kind"]["overdue_start_date"], 1, "{report:#}");
    assert_eq!(report["jobs_created"], 1, "{report:#}");
    let step = step_in(&env, &ev.id, JobState::Succeeded).await;
    assert_eq!(step.outcome, Some(JobEffect::Unhidden));
    assert_eq!(hidden_in_ad(&env, "starter.3"), Some(false));
    // And a second run finds nothing left to do.
    let (_, out, _) = env.cli(&["reconcile", "--json"]);
    let again: serde_json::Value = serde_json::from_str(&out).expect("the report is JSON");
    assert_eq!(
        again["by_kind"].get("overdue_start_date"),
        None,
        "{again:#}"
    );
}
