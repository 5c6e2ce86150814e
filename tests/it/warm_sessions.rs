//! Warm sessions: long-lived PowerShell processes on the host, each opening its Exchange
//! session once and then taking batch after batch on stdin.

use crate::common;

use std::time::Duration;

use common::{TestEnv, seed};

fn latency() -> lab::Latency {
    lab::Latency {
        session: Duration::from_millis(200),
        cmdlet: Duration::from_millis(5),
        round_trip: Duration::ZERO,
    }
}

/// Publishes a joiner for each name and waits until every one succeeded.
async fn joiners_all_succeed(env: &TestEnv, names: &[String]) {
    let publisher = env.publisher().await;
    let mut ids = Vec::new();
    for n in names {
        let e = env.joiner(n);
        publisher.publish(&e).await.expect("publish");
        ids.push(e.id);
    }
    for id in &ids {
        env.wait_succeeded(id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_warm_processes_open_exchange_twice_for_many_batches() {
    let names: Vec<String> = (0..40).map(|i| format!("warm{i:02}")).collect();
    let mut env = TestEnv::with_latency(names.iter().map(|s| seed(s)).collect(), latency()).await;
    env.settings.exchange.warm_sessions = 2;
    env.settings.worker.concurrency = 2;
    env.settings.exchange.batch_size = 4;
    env.settings.exchange.batch_linger = Duration::from_millis(50);
    let app = env.start_daemon().await;
    joiners_all_succeed(&env, &names).await;
    let stats = env.lab.stats();
    // At least ten batches went through two processes: two PowerShell starts, two sessions.
    assert!(stats.powershell_runs <= 2, "{stats:?}");
    assert!(stats.exchange_sessions <= 2, "{stats:?}");
    let enabled = env.lab.successes_per_account("Enable-RemoteMailbox");
    for n in &names {
        assert_eq!(enabled.get(n), Some(&1), "{n}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_warm_process_is_replaced_after_its_request_budget() {
    let names: Vec<String> = (0..10).map(|i| format!("recy{i:02}")).collect();
    let mut env = TestEnv::with_latency(names.iter().map(|s| seed(s)).collect(), latency()).await;
    env.settings.exchange.warm_sessions = 1;
    env.settings.exchange.warm_max_requests = 2;
    env.settings.worker.concurrency = 1;
    env.settings.exchange.batch_size = 2;
    env.settings.exchange.batch_linger = Duration::from_millis(50);
    let app = env.start_daemon().await;
    joiners_all_succeed(&env, &names).await;
    let stats = env.lab.stats();
    let (runs, sessions) = (stats.powershell_runs, stats.exchange_sessions);
    // Two batches per process at most, so at least ceil(batches / 2) processes, each one session.
    assert!(runs >= 3, "{stats:?}");
    assert_eq!(
        runs, sessions,
        "one Exchange session per process: {stats:?}"
    );
    let enabled = env.lab.successes_per_account("Enable-RemoteMailbox");
    for n in &names {
        assert_eq!(enabled.get(n), Some(&1), "{n}");
    }
    // Each replaced process removed its Exchange session on its way out: only the current
    // one still counts against PowerShellMaxConcurrency. (A process killed before it reads
    // the end of its input leaves its session to Exchange's idle timeout, 15 min: a daemon
    // that recycles its processes would run out of sessions.)
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while env.lab.exchange_sessions_open() > 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} Exchange sessions still counted after {runs} processes, one of them current",
            env.lab.exchange_sessions_open()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_gone_quiet_gives_its_warm_sessions_back() {
    let names: Vec<String> = (0..8).map(|i| format!("quiet{i:02}")).collect();
    let mut env = TestEnv::with_latency(names.iter().map(|s| seed(s)).collect(), latency()).await;
    env.settings.exchange.warm_sessions = 2;
    env.settings.worker.concurrency = 2;
    env.settings.exchange.batch_size = 2;
    let app = env.start_daemon().await;
    joiners_all_succeed(&env, &names).await;
    // The warm processes stay for the next batches, each holding a session slot...
    let held = env.store.budget_use().await.unwrap().in_use;
    assert!(held >= 1, "no warm process kept");
    // ...but not for ever once no batch comes: within the idle limit (30 s) and a look.
    let deadline = std::time::Instant::now() + Duration::from_secs(45);
    loop {
        let in_use = env.store.budget_use().await.unwrap().in_use;
        if in_use == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{in_use} session slot(s) still held by idle warm processes"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    app.stop().await;
}
