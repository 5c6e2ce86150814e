//! Errors a real Windows/Exchange side returns (docs/operations.md, "What Exchange's errors
//! mean, and what to do"), each
//! injected in the lab with its real text and seen through the daemon: the job's state, its
//! error class, the attempts used and what the operator is told to do.

use crate::common;

use common::{TestEnv, seed};
use mailboxd::config::ExchangeMode;
use mailboxd::job::{ErrorClass, JobState};
use serde_json::json;

fn remote_mode(env: &mut TestEnv) {
    env.settings.exchange.mode = ExchangeMode::Remote;
    env.settings.exchange.connection_uris = vec!["http://lab-ex01.corp.example/PowerShell/".into()];
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_protected_account_fails_once_with_what_to_do_in_the_alert() {
    let env = TestEnv::new(vec![seed("jadmin")]).await;
    env.fault(json!({"fault": "cmdlet_errors", "count": 1, "error": "insufficient_access_rights"}))
        .await;
    let app = env.start_daemon().await;
    let ev = env.joiner("jadmin");
    env.publisher().await.publish(&ev).await.unwrap();
    let job = env.wait_terminal(&ev.id).await;
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.last_error_class, Some(ErrorClass::Permanent));
    assert_eq!(
        job.attempt, 1,
        "not retried: the account's ACL will not change by itself"
    );
    let error = job.last_error.unwrap_or_default();
    assert!(
        error.starts_with("ADOperationException: Active Directory operation failed on "),
        "{error}"
    );
    assert!(
        error.contains("problem 4003 (INSUFF_ACCESS_RIGHTS)"),
        "{error}"
    );
    let alerts = env.store.list_alerts(10).await.unwrap();
    assert_eq!(alerts.len(), 1);
    let body = format!("{alerts:?}");
    assert!(
        body.contains("adminCount=1") && body.contains("enable inheritance"),
        "{body}"
    );
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_value_exchange_cannot_convert_fails_the_job_without_retries() {
    let env = TestEnv::new(vec![seed("jconvert")]).await;
    env.fault(json!({"fault": "cmdlet_errors", "count": 1, "error": "argument_transformation"}))
        .await;
    let app = env.start_daemon().await;
    let mut ev = env.joiner("jconvert");
    ev.primary_smtp_address = Some("jconvert@corp.example".into());
    env.publisher().await.publish(&ev).await.unwrap();
    let job = env.wait_terminal(&ev.id).await;
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.last_error_class, Some(ErrorClass::Permanent));
    assert_eq!(job.attempt, 1);
    let error = job.last_error.unwrap_or_default();
    assert!(
        error.contains("Cannot process argument transformation on parameter 'PrimarySmtpAddress'"),
        "{error}"
    );
    assert!(
        error.contains("correct the value in the IAM system"),
        "{error}"
    );
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_dropped_in_a_cold_run_retries_the_batch() {
    let mut env = TestEnv::new(vec![seed("jcold1"), seed("jcold2")]).await;
    remote_mode(&mut env);
    env.fault(json!({"fault": "session_dropped", "count": 1}))
        .await;
    let app = env.start_daemon().await;
    let publisher = env.publisher().await;
    let evs = [env.joiner("jcold1"), env.joiner("jcold2")];
    for ev in &evs {
        publisher.publish(ev).await.unwrap();
    }
    let mut drops = 0;
    for ev in &evs {
        let job = env.wait_succeeded(&ev.id).await;
        let (_, attempts) = env.store.get_job(job.id).await.unwrap().unwrap();
        let dropped: Vec<_> = attempts
            .iter()
            .filter(|a| {
                a.error_message
                    .as_deref()
                    .unwrap_or("")
                    .contains("WSMan-InvalidShellID")
            })
            .collect();
        // The batch (or the account's share of it) that met the drop was retried once.
        assert!(dropped.len() <= 1, "{attempts:?}");
        assert!(
            dropped
                .iter()
                .all(|a| a.error_class == Some(ErrorClass::Transient))
        );
        assert_eq!(job.attempt as usize, dropped.len() + 1, "{attempts:?}");
        drops += dropped.len();
    }
    assert!(drops >= 1, "the first batch met the dropped session");
    let enables = env.lab.successes_per_account("Enable-RemoteMailbox");
    assert!(enables.values().all(|n| *n <= 2), "{enables:?}");
    let readyz = env
        .get_json(&format!("http://{}/readyz", app.admin_addr))
        .await;
    assert_eq!(
        readyz["circuit"]["open"], false,
        "a dropped session says the host is up"
    );
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_dropped_in_a_warm_process_fails_no_account() {
    let mut env = TestEnv::new(vec![seed("jwarm0"), seed("jwarm1"), seed("jwarm2")]).await;
    remote_mode(&mut env);
    env.settings.exchange.warm_sessions = 1;
    // One batch at a time: two joiners claimed in two batches at once (a loaded machine)
    // would rightly start a second process beside the one replacing the dropped session.
    env.settings.worker.concurrency = 1;
    let app = env.start_daemon().await;
    let publisher = env.publisher().await;
    // A first joiner opens the warm session; then Exchange drops it.
    let first = env.joiner("jwarm0");
    publisher.publish(&first).await.unwrap();
    env.wait_succeeded(&first.id).await;
    env.fault(json!({"fault": "session_dropped", "count": 1}))
        .await;
    let evs = [env.joiner("jwarm1"), env.joiner("jwarm2")];
    for ev in &evs {
        publisher.publish(ev).await.unwrap();
    }
    for ev in &evs {
        let job = env.wait_succeeded(&ev.id).await;
        assert_eq!(job.attempt, 1, "the drop used no attempt: {job:?}");
        let (_, attempts) = env.store.get_job(job.id).await.unwrap().unwrap();
        assert_eq!(attempts.len(), 1);
    }
    let stats = env.lab.stats();
    assert_eq!(
        stats.powershell_runs, 2,
        "a fresh process after the drop: {stats:?}"
    );
    let calls = env.lab.invocations();
    let dropped = calls
        .iter()
        .filter(|c| c.error.as_deref() == Some("PSRemotingTransportException"))
        .count();
    assert!(dropped >= 1, "the lab did drop the session");
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn missing_exchange_cmdlets_open_the_circuit_saying_set_exchange_mode() {
    let env = TestEnv::new(vec![seed("jnone")]).await;
    env.fault(json!({"fault": "cmdlet_errors", "count": 100, "error": "command_not_found"}))
        .await;
    let app = env.start_daemon().await;
    let ev = env.joiner("jnone");
    env.publisher().await.publish(&ev).await.unwrap();
    let readyz = env.wait_circuit_open(&app).await;
    let reason = readyz["circuit"].to_string();
    assert!(reason.contains("set exchange.mode"), "{readyz}");
    assert!(
        reason.contains("is not recognized as the name of a cmdlet"),
        "{readyz}"
    );
    let job = env
        .wait_job(&ev.id, |j| j.last_error_class == Some(ErrorClass::Systemic))
        .await;
    assert_eq!(job.last_error_class, Some(ErrorClass::Systemic));
    assert!(
        job.attempt <= 1,
        "the open circuit uses no attempts: {job:?}"
    );
    let alerts = env.store.list_alerts(10).await.unwrap();
    assert!(
        format!("{alerts:?}").contains("set exchange.mode"),
        "{alerts:?}"
    );
    app.stop().await;
    env.cleanup().await;
}
