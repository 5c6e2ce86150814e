//! A panic cannot wedge jobs, and a part of the pipeline that stops says so: user stories
//! through the real daemon (the binary, so that its test failpoints and its metrics are its
//! own). A batch that panics gives its jobs back with the failure recorded, and the jobs
//! batched with it finish; a claim loop that panics is started again; an intake that cannot
//! commit makes `/readyz` answer 503 with the reason until it commits again.

use crate::common;

use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::{TestEnv, seed};
use mailboxd::job::{AttemptEnd, ErrorClass, JobState};
use serde_json::Value;

/// `daemon_env()` with quick retries, one claim loop and `extra` on top.
fn env_with(env: &TestEnv, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut vars = env.daemon_env();
    for (k, v) in [
        ("MAILBOXD__WORKER__BACKOFF_BASE", "200ms"),
        ("MAILBOXD__WORKER__BACKOFF_CAP", "1s"),
        ("MAILBOXD__WORKER__CONCURRENCY", "1"),
    ]
    .iter()
    .chain(extra)
    {
        vars.push((k.to_string(), v.to_string()));
    }
    vars
}

/// `/readyz`: (status, body).
async fn readyz(env: &TestEnv, d: &Daemon) -> (u16, Value) {
    let r = env
        .http
        .get(format!("http://{}/readyz", d.admin))
        .send()
        .await
        .expect("/readyz answers");
    let status = r.status().as_u16();
    (status, r.json().await.expect("/readyz is JSON"))
}

/// Polls `/readyz` (bounded) until its status is `want`; returns the body.
async fn wait_readyz(env: &TestEnv, d: &Daemon, want: u16, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = readyz(env, d).await;
        if status == want {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz still {status} after {within:?}: {body}\n{}",
            d.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of one sample of the daemon's `/metrics` (`name{labels}` exactly as written).
async fn metric(env: &TestEnv, d: &Daemon, sample: &str) -> Option<f64> {
    let text = env
        .http
        .get(format!("http://{}/metrics", d.admin))
        .send()
        .await
        .expect("/metrics answers")
        .text()
        .await
        .expect("a text body");
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
}

fn problems(body: &Value) -> String {
    body["problems"].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_that_panics_gives_its_jobs_back_and_the_jobs_batched_with_it_succeed() {
    let env = TestEnv::new(vec![
        seed("bomb"),
        seed("calm1"),
        seed("calm2"),
        seed("later"),
    ])
    .await;
    let publisher = env.publisher().await;
    // Queued before the daemon starts, so that one claim takes the three together.
    let (bomb, calm1, calm2) = (env.joiner("bomb"), env.joiner("calm1"), env.joiner("calm2"));
    for ev in [&bomb, &calm1, &calm2] {
        publisher.publish(ev).await.unwrap();
    }
    let vars = env_with(
        &env,
        &[
            ("MAILBOXD_FAILPOINT", "batch-panic:bomb"),
            ("MAILBOXD__WORKER__MAX_ATTEMPTS", "3"),
        ],
    );
    let d = env.spawn_logged(&[], vars).await;

    // The jobs batched with the one that panics finish, in their first attempt.
    for ev in [&calm1, &calm2] {
        let job = env.wait_succeeded(&ev.id).await;
        assert_eq!(job.attempt, 1, "{job:?}");
    }
    // The claim loop lives on: an event published afterwards succeeds.
    let later = env.joiner("later");
    publisher.publish(&later).await.unwrap();
    env.wait_succeeded(&later.id).await;

    then_the_job_that_panics_is_given_back_each_time_then_fails_with_an_alert(&env, &bomb).await;
    then_panics_are_counted_and_no_task_had_to_restart(&env, &d).await;
}

/// The job that panics is given back at once each time (the lease is 30 s: three expired
/// leases would take 90 s, wait_terminal gives up after 30), then fails with an alert.
async fn then_the_job_that_panics_is_given_back_each_time_then_fails_with_an_alert(
    env: &TestEnv,
    bomb: &mailboxd::publish::EventSpec,
) {
    let job = env.wait_terminal(&bomb.id).await;
    assert_eq!(job.state, JobState::Failed, "{job:?}");
    let (_, attempts) = env.store.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(attempts.len(), 3, "{attempts:#?}");
    for a in &attempts {
        assert_ne!(a.outcome, AttemptEnd::LeaseExpired, "{a:#?}");
        assert_eq!(a.error_class, Some(ErrorClass::Transient), "{a:#?}");
        let message = a.error_message.as_deref().unwrap_or_default();
        assert!(
            message.starts_with("internal error: mailboxd panicked while running this job")
                && message.contains("failpoint batch-panic"),
            "{message}"
        );
    }
    let alerts = env.store.list_alerts(50).await.unwrap();
    assert!(
        alerts.iter().any(|a| a.job_id == Some(job.id)),
        "no alert for the failed job: {alerts:#?}"
    );
    let running = env
        .store
        .count_by_state()
        .await
        .unwrap()
        .into_iter()
        .find(|(s, _)| *s == JobState::Running);
    assert_eq!(running, Some((JobState::Running, 0)));
}

/// Counted: at least once per attempt of the job that panics; no task had to restart.
async fn then_panics_are_counted_and_no_task_had_to_restart(env: &TestEnv, d: &Daemon) {
    let panics = metric(env, d, "mailboxd_batch_panics_total").await;
    assert!(panics.is_some_and(|n| n >= 3.0), "{panics:?}");
    let restarts = metric(env, d, "mailboxd_task_restarts_total{task=\"claim_loop\"}").await;
    assert_eq!(restarts, None, "the claim loop never died");
    assert_eq!(readyz(env, d).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_claim_loop_that_panics_is_not_ready_then_started_again() {
    let env = TestEnv::new(vec![seed("afterwards")]).await;
    // The only claim loop panics on its first three turns: down for 1 + 2 + 4 s.
    let vars = env_with(&env, &[("MAILBOXD_FAILPOINT", "claim-loop-panic:3")]);
    let d = env.spawn_logged(&[], vars).await;

    let body = wait_readyz(&env, &d, 503, Duration::from_secs(10)).await;
    assert!(
        problems(&body).contains("task claim_loop#0 is down: panicked: failpoint claim-loop-panic"),
        "{body}"
    );
    assert_eq!(
        metric(&env, &d, "mailboxd_tasks_down{task=\"claim_loop\"}").await,
        Some(1.0)
    );

    let ev = env.joiner("afterwards");
    env.publisher().await.publish(&ev).await.unwrap();
    env.wait_succeeded(&ev.id).await;
    let body = wait_readyz(&env, &d, 200, Duration::from_secs(5)).await;
    assert_eq!(body["problems"], serde_json::json!([]), "{body}");
    assert_eq!(
        metric(
            &env,
            &d,
            "mailboxd_task_restarts_total{task=\"claim_loop\"}"
        )
        .await,
        Some(3.0)
    );
    assert_eq!(
        metric(&env, &d, "mailboxd_tasks_down{task=\"claim_loop\"}").await,
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_intake_that_cannot_commit_is_not_ready_with_the_reason_until_it_commits() {
    let env = TestEnv::new(vec![seed("held")]).await;
    let vars = env_with(&env, &[("MAILBOXD__AMQP__STALL_AFTER", "2s")]);
    let d = env.spawn_logged(&[], vars).await;
    wait_readyz(&env, &d, 200, Duration::from_secs(10)).await;

    // PostgreSQL refuses every new job, as it refuses a value it cannot store.
    let pool = env.store.pool();
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_jobs() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN RAISE EXCEPTION 'the test refuses new jobs'; END $$;
         CREATE TRIGGER refuse_jobs BEFORE INSERT ON jobs
           FOR EACH ROW EXECUTE FUNCTION refuse_jobs();",
    )
    .execute(pool)
    .await
    .unwrap();
    let ev = env.joiner("held");
    env.publisher().await.publish(&ev).await.unwrap();

    let body = wait_readyz(&env, &d, 503, Duration::from_secs(15)).await;
    let why = problems(&body);
    assert!(
        why.contains("intake stalled") && why.contains("the test refuses new jobs"),
        "{body}"
    );
    assert_eq!(body["database"], true, "the database answers: {body}");
    assert_eq!(body["broker"], true, "the broker is connected: {body}");
    assert_eq!(metric(&env, &d, "mailboxd_intake_stalled").await, Some(1.0));
    assert!(
        env.store.job_by_event(&ev.id).await.unwrap().is_none(),
        "nothing was stored"
    );

    // The cause is gone: the held delivery is committed and the replica is ready again.
    sqlx::raw_sql("DROP TRIGGER refuse_jobs ON jobs")
        .execute(pool)
        .await
        .unwrap();
    // Intake's next try comes after its backoff (up to 30 s).
    let deadline = Instant::now() + Duration::from_secs(60);
    while env.store.job_by_event(&ev.id).await.unwrap().is_none() {
        assert!(Instant::now() < deadline, "never committed: {}", d.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    env.wait_succeeded(&ev.id).await;
    let body = wait_readyz(&env, &d, 200, Duration::from_secs(10)).await;
    assert_eq!(body["problems"], serde_json::json!([]), "{body}");
    assert_eq!(metric(&env, &d, "mailboxd_intake_stalled").await, Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_intake_whose_insert_waits_on_a_lock_is_stalled_until_the_lock_goes() {
    let env = TestEnv::new(vec![seed("locked")]).await;
    let vars = env_with(&env, &[("MAILBOXD__AMQP__STALL_AFTER", "2s")]);
    let d = env.spawn_logged(&[], vars).await;
    wait_readyz(&env, &d, 200, Duration::from_secs(10)).await;

    // Someone holds a lock on the jobs table (a long migration, a VACUUM FULL): inserts wait
    // without an error, reads go on.
    let mut lock = env.store.pool().begin().await.unwrap();
    sqlx::query("LOCK TABLE jobs IN EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let ev = env.joiner("locked");
    env.publisher().await.publish(&ev).await.unwrap();

    let body = wait_readyz(&env, &d, 503, Duration::from_secs(15)).await;
    let why = problems(&body);
    assert!(
        why.contains("intake stalled") && why.contains("0 failed tries, no answer yet"),
        "{body}"
    );
    let waited = metric(&env, &d, "mailboxd_intake_uncommitted_seconds").await;
    assert!(waited.is_some_and(|s| s >= 2.0), "{waited:?}");

    lock.rollback().await.unwrap();
    env.wait_succeeded(&ev.id).await;
    let body = wait_readyz(&env, &d, 200, Duration::from_secs(10)).await;
    assert_eq!(body["problems"], serde_json::json!([]), "{body}");
    assert_eq!(
        metric(&env, &d, "mailboxd_intake_uncommitted_seconds").await,
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_message_whose_reading_panics_is_poison_and_intake_goes_on() {
    let env = TestEnv::new(vec![seed("crasher"), seed("behind")]).await;
    let vars = env_with(&env, &[("MAILBOXD_FAILPOINT", "decode-panic:crasher")]);
    let d = env.spawn_logged(&[], vars).await;
    let publisher = env.publisher().await;
    let (crasher, behind) = (env.joiner("crasher"), env.joiner("behind"));
    publisher.publish(&crasher).await.unwrap();
    publisher.publish(&behind).await.unwrap();

    // The delivery behind it is not held up.
    env.wait_succeeded(&behind.id).await;
    let poison = env.store.list_poison(10).await.unwrap();
    assert_eq!(poison.len(), 1, "{poison:#?}");
    assert!(
        poison[0].reason.starts_with(
            "internal error: mailboxd panicked reading this message (failpoint decode-panic"
        ),
        "{poison:#?}"
    );
    assert_eq!(poison[0].message_id.as_deref(), Some(crasher.id.as_str()));
    assert!(env.store.job_by_event(&crasher.id).await.unwrap().is_none());
    assert_eq!(
        metric(&env, &d, "mailboxd_decode_panics_total").await,
        Some(1.0)
    );
    assert_eq!(
        metric(&env, &d, "mailboxd_task_restarts_total{task=\"intake\"}").await,
        None,
        "intake never stopped"
    );
    assert_eq!(readyz(&env, &d).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_whose_replica_dies_in_its_last_attempt_fails_instead_of_running_again() {
    let env = TestEnv::new(vec![seed("deadly")]).await;
    // The Windows side hangs, so the attempt is in flight when its replica dies.
    env.fault(serde_json::json!({"fault": "stall", "seconds": 60}))
        .await;
    let vars = env_with(
        &env,
        &[
            ("MAILBOXD__WORKER__MAX_ATTEMPTS", "1"),
            ("MAILBOXD__WORKER__LEASE", "2s"),
        ],
    );
    let mut first = env.spawn_logged(&[], vars.clone()).await;
    let ev = env.joiner("deadly");
    env.publisher().await.publish(&ev).await.unwrap();
    env.wait_job(&ev.id, |j| j.state == JobState::Running).await;
    // Killed as a crash kills it: nothing is released.
    first.child.kill().unwrap();
    first.child.wait().unwrap();

    env.fault(serde_json::json!({"fault": "clear"})).await;
    let _second = env.spawn_logged(&[], vars).await;
    let job = env.wait_terminal(&ev.id).await;
    assert_eq!(job.state, JobState::Failed, "{job:?}");
    let error = job.last_error.as_deref().unwrap_or_default();
    assert!(
        error.starts_with("gave up: the last of its 1 attempts ended without an outcome"),
        "{error}"
    );
    let (_, attempts) = env.store.get_job(job.id).await.unwrap().unwrap();
    let outcomes: Vec<AttemptEnd> = attempts.iter().map(|a| a.outcome).collect();
    assert_eq!(outcomes, [AttemptEnd::LeaseExpired, AttemptEnd::Failed]);
    let alerts = env.store.list_alerts(50).await.unwrap();
    assert!(
        alerts.iter().any(|a| a.job_id == Some(job.id)),
        "{alerts:#?}"
    );
}
