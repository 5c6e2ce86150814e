//! The lab's faults on demand and Exchange's throttling, each seen through the real daemon:
//! one `POST /lab/faults`, then what mailboxd does about it.

use crate::common;

use std::time::{Duration, Instant};

use common::{TestEnv, lab_config, seed};
use mailboxd::config::ExchangeMode;
use mailboxd::job::{AttemptEnd, ErrorClass, JobEffect, JobState};
use serde_json::json;

fn errors_of(calls: &[lab::Invocation]) -> Vec<String> {
    calls
        .iter()
        .map(|c| c.error.clone().unwrap_or_else(|| "ok".to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_throttled_cmdlet_defers_the_joiner_by_the_stated_wait_without_an_attempt() {
    let env = TestEnv::new(vec![seed("jthrottle")]).await;
    let f = env
        .fault(json!({"fault": "cmdlet_errors", "count": 2, "error": "throttled"}))
        .await;
    assert_eq!(f["cmdlet_errors"].as_array().unwrap().len(), 2);
    let app = env.start_daemon().await;
    let ev = env.joiner("jthrottle");
    env.publisher().await.publish(&ev).await.unwrap();
    // Exchange said "… will not be approved for at least 500 milliseconds": each try waits
    // that long, and the attempts are given back (throttling never costs an attempt).
    let job = env.wait_succeeded(&ev.id).await;
    assert_eq!(job.attempt, 1, "throttling used an attempt: {job:?}");
    let calls = env.lab.invocations_for("Enable-RemoteMailbox", "jthrottle");
    assert_eq!(
        errors_of(&calls),
        vec![
            "PSRemotingTransportException",
            "PSRemotingTransportException",
            "ok"
        ]
    );
    let (_, attempts) = env.store.get_job(job.id).await.unwrap().unwrap();
    let outcomes: Vec<_> = attempts.iter().map(|a| a.outcome).collect();
    assert_eq!(
        outcomes,
        vec![
            AttemptEnd::Deferred,
            AttemptEnd::Deferred,
            AttemptEnd::Succeeded
        ],
        "{attempts:?}"
    );
    assert!(
        attempts[0]
            .error_message
            .as_deref()
            .unwrap()
            .contains("will not be approved for at least 500 milliseconds"),
        "{attempts:?}"
    );
    // The stated wait is the retry time: no try came sooner (backoff alone is ms here).
    for pair in attempts.windows(2) {
        let gap = pair[1].started_at - pair[0].finished_at;
        assert!(
            gap >= chrono::Duration::milliseconds(500),
            "{gap} {attempts:?}"
        );
    }
    app.stop().await;
}

/// A retry runs when it is due, not at the next poll, and idle claim loops wait for that
/// time without holding a session: with the poll interval at a minute, a joiner Exchange
/// throttled twice for 500 ms still succeeds within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deferred_joiner_runs_when_it_is_due_not_at_the_next_poll() {
    let mut env = TestEnv::new(vec![seed("jdue")]).await;
    env.settings.worker.poll_interval = Duration::from_secs(60);
    env.fault(json!({"fault": "cmdlet_errors", "count": 2, "error": "throttled"}))
        .await;
    let app = env.start_daemon().await;
    let ev = env.joiner("jdue");
    env.publisher().await.publish(&ev).await.unwrap();
    let job = env.wait_succeeded(&ev.id).await;
    let took = job.finished_at.unwrap() - job.created_at;
    assert!(took < chrono::Duration::seconds(10), "took {took}");
    let calls = env.lab.invocations_for("Enable-RemoteMailbox", "jdue");
    assert_eq!(
        calls.len(),
        3,
        "two throttled tries and the one that worked"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_custom_permanent_error_fails_the_job_with_exchanges_text() {
    let env = TestEnv::new(vec![seed("jproxy")]).await;
    env.fault(json!({"fault": "cmdlet_errors", "count": 1, "error": {
        "reason": "ProxyAddressExistsException",
        "message": "The proxy address \"SMTP:jproxy@corp.example\" is already being used by \"CN=other,CN=Users,DC=corp,DC=example\"."
    }}))
    .await;
    let app = env.start_daemon().await;
    let ev = env.joiner("jproxy");
    env.publisher().await.publish(&ev).await.unwrap();
    let job = env.wait_terminal(&ev.id).await;
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.last_error_class, Some(ErrorClass::Permanent));
    assert!(job.last_error.unwrap().contains("already being used"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_credentials_open_the_circuit_until_the_host_accepts_them_again() {
    let mut env = TestEnv::new(vec![seed("jauth")]).await;
    env.settings.worker.circuit_cooldown = Duration::from_millis(300);
    let app = env.start_daemon().await;
    env.fault(json!({"fault": "auth_refused", "seconds": 1.5}))
        .await;
    let ev = env.joiner("jauth");
    env.publisher().await.publish(&ev).await.unwrap();

    env.wait_circuit_open(&app).await;
    let job = env.wait_succeeded(&ev.id).await;
    // The refusal was the host's fault, not the job's: no attempt was spent on it.
    assert_eq!(job.attempt, 1, "{job:?}");
    app.stop().await;
}

/// A probe the directory settles before Exchange is asked (the account has its mailbox
/// already) tells nothing about the host: the next claim must probe again, or the replica
/// would wait for a verdict that never comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_probe_that_never_reached_the_host_lets_the_next_one_probe() {
    let mut env = TestEnv::new(vec![seed("jprobe"), common::remote("jready")]).await;
    env.settings.worker.circuit_cooldown = Duration::from_secs(2);
    let app = env.start_daemon().await;
    env.fault(json!({"fault": "auth_refused", "seconds": 1.0}))
        .await;
    let publisher = env.publisher().await;
    let deferred = env.joiner("jprobe");
    publisher.publish(&deferred).await.unwrap();
    env.wait_circuit_open(&app).await;
    // Due before the deferred joiner: the probe takes it, and AD shows it done already.
    let ready = env.joiner("jready");
    publisher.publish(&ready).await.unwrap();
    let ready = env.wait_succeeded(&ready.id).await;
    assert_eq!(ready.outcome, Some(JobEffect::Already));
    let deferred = env.wait_succeeded(&deferred.id).await;
    assert_eq!(deferred.attempt, 1, "{deferred:?}");
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_host_that_is_down_refuses_connections_then_comes_back() {
    let mut env = TestEnv::new(vec![seed("jdown")]).await;
    // Repeated refusals open the circuit; a short cooldown lets the probe find the host back.
    env.settings.worker.circuit_cooldown = Duration::from_millis(300);
    let app = env.start_daemon().await;
    // The daemon is up first, so its first attempt comes within the outage.
    env.fault(json!({"fault": "host_down", "seconds": 2.0}))
        .await;
    // The listener is closed: a new connection is refused.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let err = reqwest::Client::new()
        .get(format!("http://{}/lab/stats", env.lab.addr))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");

    let ev = env.joiner("jdown");
    env.publisher().await.publish(&ev).await.unwrap();
    let job = env.wait_succeeded(&ev.id).await;
    let (_, attempts) = env.store.get_job(job.id).await.unwrap().unwrap();
    assert!(
        attempts.len() >= 2,
        "the first attempt met the outage: {attempts:?}"
    );
    assert!(
        attempts[0]
            .error_message
            .as_deref()
            .unwrap_or_default()
            .contains("refused"),
        "{attempts:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_host_trips_the_batch_timeout_and_the_job_runs_again() {
    let mut env = TestEnv::new(vec![seed("jstall")]).await;
    env.settings.worker.batch_timeout = Duration::from_millis(400);
    // However many attempts the stall catches on a slow machine, the next comes soon.
    env.settings.worker.backoff_base = Duration::from_millis(200);
    env.settings.worker.backoff_cap = Duration::from_secs(1);
    // Three hung batches in a row open the circuit: its pause must be as short.
    env.settings.worker.circuit_cooldown = Duration::from_millis(300);
    let app = env.start_daemon().await;
    env.fault(json!({"fault": "stall", "seconds": 1.0, "for_seconds": 1.5}))
        .await;
    let ev = env.joiner("jstall");
    env.publisher().await.publish(&ev).await.unwrap();
    let job = env.wait_succeeded(&ev.id).await;
    let (_, attempts) = env.store.get_job(job.id).await.unwrap().unwrap();
    assert!(
        attempts[0]
            .error_message
            .as_deref()
            .unwrap_or_default()
            .contains("batch_timeout"),
        "{attempts:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replication_lag_keeps_the_joiner_waiting_until_the_dc_has_the_account() {
    let env = TestEnv::new(vec![seed("jlag")]).await;
    let app = env.start_daemon().await;
    let started = Instant::now();
    env.fault(json!({"fault": "replication_lag", "account": "jlag", "seconds": 1.0}))
        .await;
    let ev = env.joiner("jlag");
    env.publisher().await.publish(&ev).await.unwrap();
    let job = env
        .wait_job(&ev.id, |j| j.state == JobState::Retrying)
        .await;
    assert!(
        job.last_error
            .as_deref()
            .unwrap()
            .contains("not on domain controller lab-dc1.corp.example"),
        "{job:?}"
    );
    let job = env.wait_succeeded(&ev.id).await;
    assert_eq!(job.outcome, Some(JobEffect::Enabled));
    // Exchange was asked only once the DC had the account.
    let calls = env.lab.invocations_for("Enable-RemoteMailbox", "jlag");
    assert_eq!(errors_of(&calls), vec!["ok"]);
    assert!(started.elapsed() >= Duration::from_secs(1));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_account_not_yet_synced_waits_without_spending_attempts() {
    let mut env = TestEnv::new(vec![seed("jsync")]).await;
    env.settings.ldap.require_cloud_sync = true;
    env.settings.worker.sync_poll_interval = Duration::from_millis(200);
    let app = env.start_daemon().await;
    env.fault(json!({"fault": "not_synced", "account": "jsync", "seconds": 1.0}))
        .await;
    let ev = env.joiner("jsync");
    env.publisher().await.publish(&ev).await.unwrap();
    env.wait_job(&ev.id, |j| j.state == JobState::WaitingForSync)
        .await;
    let job = env.wait_succeeded(&ev.id).await;
    assert_eq!(job.attempt, 1, "waiting spent attempts: {job:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exchange_session_throttling_is_enforced_and_survived() {
    let accounts: Vec<_> = (1..=6).map(|i| seed(&format!("jses{i}"))).collect();
    let cfg = lab_config(accounts)
        .with_throttle(lab::Throttle {
            max_sessions_per_user: 1,
            ..Default::default()
        })
        .with_latency(lab::Latency {
            session: Duration::from_millis(200),
            ..Default::default()
        });
    let mut env = TestEnv::with_lab(cfg).await;
    env.settings.exchange.mode = ExchangeMode::Remote;
    env.settings.exchange.connection_uris = vec!["http://lab-ex01.corp.example/PowerShell/".into()];
    env.settings.exchange.batch_size = 1;
    env.settings.worker.concurrency = 3;
    let app = env.start_daemon().await;
    let publisher = env.publisher().await;
    let mut ids = Vec::new();
    for i in 1..=6 {
        let ev = env.joiner(&format!("jses{i}"));
        publisher.publish(&ev).await.unwrap();
        ids.push(ev.id);
    }
    for id in &ids {
        env.wait_succeeded(id).await;
    }
    assert_eq!(env.lab.exchange_sessions_high_water(), 1);
    assert!(env.lab.throttled() >= 1);
    let refused: Vec<_> = env
        .lab
        .invocations_of("New-PSSession")
        .into_iter()
        .filter(|c| c.error.as_deref() == Some("PSRemotingTransportException"))
        .collect();
    assert!(!refused.is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cmdlet_budget_throttles_a_burst_and_every_job_still_succeeds() {
    let accounts: Vec<_> = (1..=5).map(|i| seed(&format!("jbud{i}"))).collect();
    let cfg = lab_config(accounts).with_throttle(lab::Throttle {
        cmdlet_budget: Some((2, Duration::from_millis(500))),
        ..Default::default()
    });
    let env = TestEnv::with_lab(cfg).await;
    let app = env.start_daemon().await;
    let publisher = env.publisher().await;
    let mut ids = Vec::new();
    for i in 1..=5 {
        let ev = env.joiner(&format!("jbud{i}"));
        publisher.publish(&ev).await.unwrap();
        ids.push(ev.id);
    }
    for id in &ids {
        env.wait_succeeded(id).await;
    }
    assert!(env.lab.throttled() >= 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exchange_refuses_a_routing_domain_the_hybrid_setup_does_not_accept() {
    let env = TestEnv::new(vec![seed("jdomain")]).await;
    let app = env.start_daemon().await;
    let mut ev = env.joiner("jdomain");
    ev.remote_routing_address = Some("jdomain@corp.example".into());
    env.publisher().await.publish(&ev).await.unwrap();
    let job = env.wait_terminal(&ev.id).await;
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.last_error_class, Some(ErrorClass::Permanent));
    assert!(
        job.last_error
            .as_deref()
            .unwrap()
            .contains("ErrorCannotFindTargetDeliveryDomainException"),
        "{job:?}"
    );
    app.stop().await;
}
