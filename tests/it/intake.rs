//! The intake under a broker that drops its connection mid-stream.

use crate::common;

use std::time::{Duration, Instant};

use common::TestEnv;

/// Closes the daemon's intake connection from the broker's side (as an operator or a broker
/// restart would). Returns whether a connection was found and closed.
async fn close_intake_connection(queue: &str) -> bool {
    let list = tokio::process::Command::new("rabbitmqctl")
        .args(["list_connections", "-q", "pid", "client_properties"])
        .output()
        .await
        .expect("rabbitmqctl runs (it comes with RabbitMQ)");
    let text = String::from_utf8_lossy(&list.stdout);
    let wanted = format!("mailboxd intake {queue} ");
    let Some(pid) = text
        .lines()
        .find(|l| l.contains(&wanted))
        .and_then(|l| l.split_whitespace().next())
    else {
        return false;
    };
    tokio::process::Command::new("rabbitmqctl")
        .args([
            "close_connection",
            pid,
            "mailboxd test: the broker drops the intake",
        ])
        .status()
        .await
        .is_ok_and(|s| s.success())
}

async fn stored(env: &TestEnv) -> i64 {
    env.store
        .count_by_state()
        .await
        .unwrap()
        .iter()
        .map(|(_, n)| n)
        .sum()
}

/// The broker closes the intake's connection twice, once 500 and once 2,500 jobs are
/// stored; returns how many were stored at each close.
async fn when_the_broker_drops_the_intake_at_500_and_2500_stored(env: &TestEnv) -> Vec<i64> {
    let queue = env.settings.amqp.queue.clone();
    let mut kills = Vec::new();
    for threshold in [500, 2_500] {
        let deadline = Instant::now() + Duration::from_secs(60);
        while stored(env).await < threshold {
            assert!(
                Instant::now() < deadline,
                "ingest stalled below {threshold}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Found only once the intake has reconnected after the previous kill.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !close_intake_connection(&queue).await {
            assert!(Instant::now() < deadline, "no intake connection to close");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        kills.push(stored(env).await);
    }
    kills
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_event_becomes_exactly_one_job_when_the_broker_drops_the_connection() {
    const EVENTS: usize = 5_000;
    let mut env = TestEnv::new(vec![]).await;
    env.settings.exchange.batch_size = 250;
    let app = env.start_daemon().await;
    let publisher = env.publisher().await;

    // Leavers for accounts without a remote mailbox: quick no-ops for the worker.
    let events: Vec<_> = (0..EVENTS)
        .map(|i| env.leaver(&format!("gone{i:05}")))
        .collect();
    let publishing = async {
        for e in &events {
            publisher.publish(e).await.unwrap();
        }
    };
    let chaos = when_the_broker_drops_the_intake_at_500_and_2500_stored(&env);
    let ((), kills) = tokio::join!(publishing, chaos);
    println!("intake connection closed by the broker at {kills:?} stored jobs");
    assert!(
        kills.iter().all(|&n| n < EVENTS as i64),
        "the connection must drop while events still flow: {kills:?}"
    );
    then_every_event_is_exactly_one_job(&env, &events).await;
    app.stop().await;
}

/// Exactly one job per event: the event id is unique, so no more than the events' rows
/// exist, and every published id has its row; nothing was poison.
async fn then_every_event_is_exactly_one_job(
    env: &TestEnv,
    events: &[mailboxd::publish::EventSpec],
) {
    let n = events.len() as i64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while stored(env).await < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} events stored",
            stored(env).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stored(env).await, n);
    for e in events.iter().step_by(97) {
        assert!(
            env.store.job_by_event(&e.id).await.unwrap().is_some(),
            "{} lost",
            e.id
        );
    }
    assert!(env.store.list_poison(10).await.unwrap().is_empty());
}
