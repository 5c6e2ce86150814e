//! Several daemon processes share one database and one queue: every job runs exactly once.

use crate::common;

use std::time::{Duration, Instant};

use common::{TestEnv, seed, wait_exit};
use mailboxd::job::JobState;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_run_every_job_exactly_once() {
    const N: usize = 2000;
    let accounts: Vec<_> = (0..N).map(|i| seed(&format!("rep{i:04}"))).collect();
    let env = TestEnv::new(accounts).await;
    let replicas: Vec<_> = (0..3)
        .map(|_| {
            env.spawn_daemon(&[
                ("MAILBOXD__EXCHANGE__BATCH_SIZE", "10"),
                ("MAILBOXD__WORKER__CONCURRENCY", "4"),
            ])
        })
        .collect();
    let publisher = env.publisher().await;
    let mut ids = Vec::with_capacity(N);
    for i in 0..N {
        let ev = env.joiner(&format!("rep{i:04}"));
        publisher.publish(&ev).await.unwrap();
        ids.push(ev.id);
    }

    wait_all_terminal(&env, N, Duration::from_secs(120)).await;
    for id in &ids {
        let job = env.store.job_by_event(id).await.unwrap().unwrap();
        assert_eq!(job.state, JobState::Succeeded, "{job:?}");
        let (_, attempts) = env.store.get_job(job.id).await.unwrap().unwrap();
        // One attempt each: no job was claimed twice or lost its lease.
        assert_eq!(attempts.len(), 1, "{attempts:?}");
    }
    then_exchange_enabled_each_account_exactly_once(&env, N);
    then_the_work_was_shared(&env, &ids).await;
    for mut child in replicas {
        let _ = nix_term(&child);
        if wait_exit(&mut child, Duration::from_secs(10)).is_none() {
            let _ = child.kill();
        }
    }
}

/// Exactly one successful Enable-RemoteMailbox per account in the lab's log.
fn then_exchange_enabled_each_account_exactly_once(env: &TestEnv, accounts: usize) {
    let mut per_identity = std::collections::HashMap::<String, usize>::new();
    for c in env
        .lab
        .invocations_of("Enable-RemoteMailbox")
        .iter()
        .filter(|c| c.succeeded())
    {
        *per_identity
            .entry(c.identity().expect("an -Identity").to_owned())
            .or_default() += 1;
    }
    assert_eq!(per_identity.len(), accounts);
    assert!(per_identity.values().all(|n| *n == 1));
}

async fn then_the_work_was_shared(env: &TestEnv, ids: &[String]) {
    let replicas_used: std::collections::HashSet<String> = {
        let mut set = std::collections::HashSet::new();
        for id in ids.iter().step_by(7) {
            let job = env.store.job_by_event(id).await.unwrap().unwrap();
            let (_, attempts) = env.store.get_job(job.id).await.unwrap().unwrap();
            set.insert(attempts[0].replica.clone());
        }
        set
    };
    assert!(replicas_used.len() >= 2, "{replicas_used:?}");
}

fn nix_term(child: &std::process::Child) -> std::io::Result<()> {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other("kill failed"))
    }
}

/// A lab whose Exchange allows `sessions` sessions (PowerShellMaxConcurrency), with a session
/// set-up and cmdlet latency, and daemons in remote mode; `n` joiner accounts `{prefix}NNNN`.
async fn throttling_env(prefix: &str, n: usize, sessions: usize, session: Duration) -> TestEnv {
    throttling_env_with(prefix, n, sessions, session, None).await
}

/// The same with Exchange's cmdlet budget (PowerShellMaxCmdlets per time period) too.
async fn throttling_env_with(
    prefix: &str,
    n: usize,
    sessions: usize,
    session: Duration,
    cmdlet_budget: Option<(u32, Duration)>,
) -> TestEnv {
    let accounts: Vec<_> = (0..n).map(|i| seed(&format!("{prefix}{i:04}"))).collect();
    let mut cfg = common::lab_config(accounts);
    cfg.throttle.max_sessions_per_user = sessions;
    cfg.throttle.cmdlet_budget = cmdlet_budget;
    cfg.latency.session = session;
    cfg.latency.cmdlet = Duration::from_millis(5);
    let mut env = TestEnv::with_lab(cfg).await;
    env.settings.exchange.mode = mailboxd::config::ExchangeMode::Remote;
    env.settings.exchange.connection_uris = vec!["http://lab-ex01.corp.example/PowerShell/".into()];
    env
}

/// The environment of one replica: concurrency 6 against a budget of 6 sessions.
fn replica_env(lease: &str) -> Vec<(&'static str, String)> {
    vec![
        ("MAILBOXD__EXCHANGE__MODE", "remote".into()),
        (
            "MAILBOXD__EXCHANGE__CONNECTION_URIS",
            "http://lab-ex01.corp.example/PowerShell/".into(),
        ),
        ("MAILBOXD__EXCHANGE__BATCH_SIZE", "20".into()),
        ("MAILBOXD__EXCHANGE__MAX_SESSIONS", "6".into()),
        ("MAILBOXD__EXCHANGE__SESSION_LEASE", lease.into()),
        ("MAILBOXD__WORKER__CONCURRENCY", "6".into()),
    ]
}

fn spawn_replicas(env: &TestEnv, n: usize, lease: &str) -> Vec<common::daemon::KillOnDrop> {
    spawn_replicas_with(env, n, lease, &[])
}

/// Replicas configured like `replica_env`, plus `extra`.
fn spawn_replicas_with(
    env: &TestEnv,
    n: usize,
    lease: &str,
    extra: &[(&'static str, &str)],
) -> Vec<common::daemon::KillOnDrop> {
    let mut vars = replica_env(lease);
    vars.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let refs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    (0..n).map(|_| env.spawn_daemon(&refs)).collect()
}

async fn publish_joiners(env: &TestEnv, prefix: &str, n: usize) -> Vec<String> {
    let publisher = env.publisher().await;
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let ev = env.joiner(&format!("{prefix}{i:04}"));
        publisher.publish(&ev).await.unwrap();
        ids.push(ev.id);
    }
    ids
}

async fn wait_all_terminal(env: &TestEnv, n: usize, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let counts = env.store.count_by_state().await.unwrap();
        let done: i64 = counts
            .iter()
            .filter(|(s, _)| s.is_terminal())
            .map(|(_, n)| n)
            .sum();
        if done as usize == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not all jobs finished: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every job succeeded at attempt 1 with one attempt row (none paid for throttling), and the
/// lab enabled each account's mailbox once.
async fn each_succeeded_at_its_first_attempt(env: &TestEnv, ids: &[String]) {
    for id in ids {
        let job = env.store.job_by_event(id).await.unwrap().unwrap();
        assert_eq!(job.state, JobState::Succeeded, "{job:?}");
        assert_eq!(job.attempt, 1, "{job:?}");
        let (_, attempts) = env.store.get_job(job.id).await.unwrap().unwrap();
        assert_eq!(attempts.len(), 1, "{attempts:?}");
    }
    assert_eq!(
        env.lab.successes_per_account("Enable-RemoteMailbox").len(),
        ids.len()
    );
}

fn stop_all(replicas: Vec<common::daemon::KillOnDrop>) {
    for mut child in replicas {
        let _ = nix_term(&child);
        if wait_exit(&mut child, Duration::from_secs(10)).is_none() {
            let _ = child.kill();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_share_six_exchange_sessions_without_one_throttled_open() {
    const N: usize = 360;
    let env = throttling_env("bud", N, 6, Duration::from_millis(300)).await;
    // 3 × 6 claim loops against Exchange's 6 sessions: without the shared budget, 12 of them
    // would open a session and be refused.
    let replicas = spawn_replicas(&env, 3, "30s");
    let ids = publish_joiners(&env, "bud", N).await;
    wait_all_terminal(&env, N, Duration::from_secs(120)).await;

    assert_eq!(env.lab.throttled(), 0, "Exchange refused sessions");
    let high_water = env.lab.exchange_sessions_high_water();
    assert!(high_water <= 6, "{high_water} Exchange sessions at once");
    each_succeeded_at_its_first_attempt(&env, &ids).await;
    stop_all(replicas);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_runspace_held_by_another_client_costs_one_refusal_not_one_per_batch() {
    const N: usize = 120;
    // Exchange allows 4 sessions and mailboxd is configured for 4, but an administrator's
    // console holds one runspace of the same account: only 3 are left for mailboxd.
    let env = throttling_env("frn", N, 4, Duration::from_millis(300)).await;
    env.lab.hold_foreign_session(&env.settings.winrm.username);
    let replica = spawn_replicas_with(
        &env,
        1,
        "30s",
        &[
            ("MAILBOXD__EXCHANGE__MAX_SESSIONS", "4"),
            ("MAILBOXD__WORKER__CONCURRENCY", "4"),
        ],
    );
    let ids = publish_joiners(&env, "frn", N).await;
    wait_all_terminal(&env, N, Duration::from_secs(120)).await;

    // The refusal ("4/4" while mailboxd held 4 with the refused one) taught the cluster 3.
    let cluster = env.store.budget_use().await.unwrap();
    assert_eq!(cluster.learned_max_sessions, Some(3), "{cluster:?}");
    let refused = env.lab.throttled();
    assert!(
        (1..=2).contains(&refused),
        "{refused} refused session opens"
    );
    assert!(env.lab.exchange_sessions_high_water() <= 4);
    for id in &ids {
        let job = env.store.job_by_event(id).await.unwrap().unwrap();
        assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    }
    stop_all(replica);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_replicas_session_slots_come_back_within_the_lease() {
    const N: usize = 240;
    const LEASE: Duration = Duration::from_secs(3);
    let env = throttling_env("kil", N, 6, Duration::from_millis(1500)).await;
    let mut replicas = spawn_replicas(&env, 2, "3s");
    let ids = publish_joiners(&env, "kil", N).await;

    // Wait until the first replica holds session slots mid-burst, then kill it (SIGKILL: no
    // release runs).
    let victim = replicas.remove(0);
    let tag = format!(":{}:", victim.id());
    let held_by_victim = |holders: &[(String, i64)]| {
        holders
            .iter()
            .filter(|(h, _)| h.contains(&tag))
            .map(|(_, n)| *n)
            .sum::<i64>()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while held_by_victim(&env.store.slot_holders().await.unwrap()) == 0 {
        assert!(Instant::now() < deadline, "the replica never held a slot");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut victim = victim;
    victim.kill().unwrap();
    let killed_at = Instant::now();
    victim.wait().unwrap();

    // Its slots are free again within the lease (plus a second for the statement's clock).
    loop {
        let holders = env.store.slot_holders().await.unwrap();
        if held_by_victim(&holders) == 0 {
            break;
        }
        assert!(
            killed_at.elapsed() < LEASE + Duration::from_secs(1),
            "the killed replica still holds slots after the lease: {holders:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The survivor finishes the burst, taking the freed slots.
    wait_all_terminal(&env, N, Duration::from_secs(120)).await;
    for id in &ids {
        let job = env.store.job_by_event(id).await.unwrap().unwrap();
        assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    }
    assert_eq!(env.lab.throttled(), 0, "Exchange refused sessions");
    stop_all(replicas);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_pace_their_batches_to_exchanges_cmdlet_budget() {
    const N: usize = 240;
    // Exchange allows 40 cmdlets per 2 s for the service account: the burst needs at least
    // 240 of them, so unpaced, 3 × 6 claim loops would run into the budget at once.
    let budget = (40, Duration::from_secs(2));
    let env = throttling_env_with("cmd", N, 18, Duration::from_millis(100), Some(budget)).await;
    let started = Instant::now();
    let replicas = spawn_replicas_with(
        &env,
        3,
        "30s",
        &[
            ("MAILBOXD__EXCHANGE__MAX_SESSIONS", "12"),
            ("MAILBOXD__EXCHANGE__MAX_CMDLETS", "40"),
            ("MAILBOXD__EXCHANGE__CMDLET_WINDOW", "2s"),
        ],
    );
    let ids = publish_joiners(&env, "cmd", N).await;
    wait_all_terminal(&env, N, Duration::from_secs(180)).await;
    let took = started.elapsed();

    assert_eq!(env.lab.throttled(), 0, "Exchange refused cmdlets");
    // Waiting for room in the window used no attempt and left no deferral behind.
    each_succeeded_at_its_first_attempt(&env, &ids).await;
    // Paced, not merely lucky: 240 cmdlets at 40 per 2 s take more than 10 s.
    assert!(took > Duration::from_secs(10), "took {took:?}");
    eprintln!("{N} joiners through 3 replicas at 40 cmdlets / 2 s: {took:?}");
    stop_all(replicas);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_running_batchs_cmdlets_stay_counted_and_a_killed_replicas_run_out() {
    const LEASE: Duration = Duration::from_secs(3);
    const WINDOW: Duration = Duration::from_secs(2);
    // Opening the session takes 8 s: the batch runs longer than the lease and the window.
    let env =
        throttling_env_with("grant", 4, 18, Duration::from_secs(8), Some((100, WINDOW))).await;
    let mut replicas = spawn_replicas_with(
        &env,
        1,
        "3s",
        &[
            ("MAILBOXD__EXCHANGE__MAX_CMDLETS", "100"),
            ("MAILBOXD__EXCHANGE__CMDLET_WINDOW", "2s"),
        ],
    );
    publish_joiners(&env, "grant", 4).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while env.store.cmdlets_in_window().await.unwrap() == 0 {
        assert!(Instant::now() < deadline, "no batch took cmdlets");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let taken = Instant::now();

    // Past the lease and the window, the running batch's cmdlets still count: renewed.
    tokio::time::sleep_until((taken + LEASE + WINDOW + Duration::from_secs(1)).into()).await;
    assert!(env.store.cmdlets_in_window().await.unwrap() > 0);

    // Killed mid-batch (no settle runs): its grant runs out within the lease and the window.
    let mut victim = replicas.remove(0);
    victim.kill().unwrap();
    let killed_at = Instant::now();
    victim.wait().unwrap();
    while env.store.cmdlets_in_window().await.unwrap() > 0 {
        assert!(
            killed_at.elapsed() < LEASE + WINDOW + Duration::from_secs(1),
            "a killed replica's cmdlets still count"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.cleanup().await;
}
