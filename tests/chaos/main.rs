//! Chaos: joiners and leavers flow through three daemon replicas while replicas are killed
//! with SIGKILL and restarted, the broker's connections are closed, PostgreSQL's backends are
//! terminated, and the lab's host goes down and refuses credentials for a while. At the end
//! every event is exactly one succeeded job, every joiner was enabled by exactly one
//! successful Enable-RemoteMailbox, every leaver is hidden, nothing is left running, and the
//! outages raised circuit alerts in open/recovered pairs.
//!
//! Short by default (CI). Long: `bash tests/chaos/run.sh` (2,000 events, more rounds).

#[path = "../common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::process::Child;
use std::time::{Duration, Instant};

use common::{KillOnDrop, TestEnv, remote, seed};
use lab::Recipient;
use mailboxd::job::JobState;
use serde_json::json;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The replicas, each killed when the test ends however it ends (`KillOnDrop`): a failed
/// assertion must not leave daemons running.
struct Replicas(Vec<KillOnDrop>);

fn kill9(child: &mut Child) {
    let _ = child.kill(); // SIGKILL: no shutdown path runs
    let _ = child.wait();
}

/// The replicas' settings: batches of ten, four claim loops each.
const EXTRA: [(&str, &str); 2] = [
    ("MAILBOXD__EXCHANGE__BATCH_SIZE", "10"),
    ("MAILBOXD__WORKER__CONCURRENCY", "4"),
];

/// Half joiners, half leavers (`n` events), in a lab with Exchange-like pauses.
struct Chaos {
    n: usize,
    joiners: Vec<String>,
    leavers: Vec<String>,
    env: TestEnv,
}

/// Exchange-like pauses keep the queue busy while the blows land.
async fn given_joiners_and_leavers_in_a_slow_lab(n: usize) -> Chaos {
    let joiners: Vec<String> = (0..n / 2).map(|i| format!("cj{i:05}")).collect();
    let leavers: Vec<String> = (0..n - n / 2).map(|i| format!("cl{i:05}")).collect();
    let mut accounts: Vec<_> = joiners.iter().map(|s| seed(s)).collect();
    accounts.extend(leavers.iter().map(|s| remote(s).disabled()));
    let env = TestEnv::with_latency(
        accounts,
        lab::Latency {
            session: Duration::from_millis(300),
            cmdlet: Duration::from_millis(50),
            round_trip: Duration::ZERO,
        },
    )
    .await;
    Chaos {
        n,
        joiners,
        leavers,
        env,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_event_survives_kills_broker_and_database_drops_and_host_outages() {
    let n = env_usize("MAILBOXD_CHAOS_EVENTS", 400);
    let rounds = env_usize("MAILBOXD_CHAOS_ROUNDS", 5);
    let mut c = given_joiners_and_leavers_in_a_slow_lab(n).await;
    // The IAM system listens for the answers, through every blow below.
    let mut answers = c.env.expect_outcomes().await;
    let mut replicas = Replicas((0..3).map(|_| c.env.spawn_daemon(&EXTRA)).collect());
    let ids = when_every_event_is_published(&c).await;
    // Chaos while the queue drains: one blow per round, in turn, the host's outages first.
    let mut outages = 0;
    for round in 0..rounds {
        outages += blow(&c.env, &mut replicas, round).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    then_everything_settles_every_event_one_succeeded_job(&c, &ids).await;
    then_each_joiner_was_enabled_once_and_each_leaver_hidden(&c);
    then_outages_raised_circuit_alerts_in_pairs(&c.env, outages).await;
    then_every_event_was_answered_once(&c, &mut answers, &ids).await;
    drop(replicas);
}

async fn when_every_event_is_published(c: &Chaos) -> Vec<String> {
    let publisher = c.env.publisher().await;
    let mut ids = Vec::with_capacity(c.n);
    for sam in &c.joiners {
        let ev = c.env.joiner(sam);
        publisher.publish(&ev).await.expect("publish joiner");
        ids.push(ev.id);
    }
    for sam in &c.leavers {
        let ev = c.env.leaver(sam);
        publisher.publish(&ev).await.expect("publish leaver");
        ids.push(ev.id);
    }
    ids
}

/// The blow of `round`: a replica killed and restarted, the broker's connections closed,
/// PostgreSQL's backends terminated, or the host down or refusing credentials for a
/// while. Returns the number of host outages it caused (0 or 1).
async fn blow(env: &TestEnv, replicas: &mut Replicas, round: usize) -> usize {
    let mut outages = 0;
    match [3, 0, 4, 1, 2][round % 5] {
        0 => {
            let i = round % replicas.0.len();
            kill9(&mut replicas.0[i]);
            replicas.0[i] = env.spawn_daemon(&EXTRA);
        }
        1 => {
            let out = std::process::Command::new("rabbitmqctl")
                .args(["close_all_connections", "chaos test"])
                .output()
                .expect("rabbitmqctl runs");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        2 => {
            sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                  WHERE datname = current_database() AND pid <> pg_backend_pid()",
            )
            .execute(env.store.pool())
            .await
            .expect("terminate backends");
        }
        3 => {
            env.fault(json!({"fault": "host_down", "seconds": 2.0}))
                .await;
            outages += 1;
        }
        _ => {
            env.fault(json!({"fault": "auth_refused", "seconds": 2.0}))
                .await;
            outages += 1;
        }
    }
    outages
}

/// Everything settles: every event a job, every job finished, and succeeded.
async fn then_everything_settles_every_event_one_succeeded_job(c: &Chaos, ids: &[String]) {
    let (env, n) = (&c.env, c.n);
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let counts = env.store.count_by_state().await.unwrap_or_default();
        let done: i64 = counts
            .iter()
            .filter(|(s, _)| s.is_terminal())
            .map(|(_, n)| n)
            .sum();
        let total: i64 = counts.iter().map(|(_, n)| n).sum();
        if done as usize == n && total as usize == n {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not settled: {counts:?} of {n} events"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for id in ids {
        let job = env
            .store
            .job_by_event(id)
            .await
            .expect("query")
            .unwrap_or_else(|| panic!("event {id} has no job"));
        assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    }
    let running: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE state = 'running'")
        .fetch_one(env.store.pool())
        .await
        .expect("count running");
    assert_eq!(running, 0, "no job left running");
}

/// Exactly one successful Enable-RemoteMailbox per joiner (named by sAMAccountName, or by
/// the objectGUID the directory check hands to Exchange); every leaver hidden.
fn then_each_joiner_was_enabled_once_and_each_leaver_hidden(c: &Chaos) {
    let (env, joiners, leavers) = (&c.env, &c.joiners, &c.leavers);
    let mailboxes = env.lab.accounts();
    let enabled = env.lab.successes_per_account("Enable-RemoteMailbox");
    let by_sam: HashMap<&str, &lab::LabAccount> = mailboxes
        .iter()
        .map(|m| (m.sam_account_name.as_str(), m))
        .collect();
    for sam in joiners {
        assert_eq!(enabled.get(sam), Some(&1), "{sam}: {:?}", enabled.get(sam));
        assert_eq!(by_sam[sam.as_str()].recipient, Recipient::Remote, "{sam}");
    }
    assert_eq!(enabled.len(), joiners.len(), "no other account was enabled");
    for sam in leavers {
        assert!(by_sam[sam.as_str()].hidden, "{sam}");
    }
}

/// Outages raised circuit alerts in pairs (opened, then recovered), at most one pair per
/// outage.
async fn then_outages_raised_circuit_alerts_in_pairs(env: &TestEnv, outages: usize) {
    let alerts = env.store.list_alerts(1000).await.expect("alerts");
    let live = |needle: &str| {
        alerts
            .iter()
            .filter(|a| a.subject.contains(needle) && a.folded_into.is_none() && !a.suppressed)
            .count()
    };
    let opened = live("unavailable");
    let closed = live("available again");
    if outages > 0 {
        assert!(opened >= 1, "an outage raised no alert: {alerts:?}");
    }
    assert_eq!(opened, closed, "each opened circuit alert has its recovery");
    assert!(opened <= outages, "{opened} alerts for {outages} outages");
}

/// Every event was answered once: one outcome (one message_id) per job, correlated to its
/// event; a kill between the broker's confirm and the outbox's update may resend an
/// outcome, but only with the same message_id, so the IAM system drops it.
async fn then_every_event_was_answered_once(
    c: &Chaos,
    answers: &mut common::outcomes::OutcomeQueue,
    ids: &[String],
) {
    let (env, n) = (&c.env, c.n);
    common::outcomes::wait_all_sent(&env.store, n).await;
    answers.reconnect().await;
    let received = answers.drain().await;
    let mut by_event: HashMap<String, std::collections::HashSet<String>> = HashMap::new();
    for r in &received {
        let event = r.correlation_id.clone().expect("correlation_id");
        let id = r.message_id.clone().expect("message_id");
        by_event.entry(event).or_default().insert(id);
    }
    for id in ids {
        let answered = by_event.get(id).map_or(0, |m| m.len());
        assert_eq!(answered, 1, "event {id}: {answered} distinct outcomes");
    }
    assert_eq!(by_event.len(), n, "no outcome for an event not sent");
    eprintln!(
        "chaos: {n} events, {} outcome messages received ({} resent with the same message_id)",
        received.len(),
        received.len() - n
    );
}
