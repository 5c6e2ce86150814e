//! Several daemon processes share one database and one queue: every job runs exactly once.

mod common;

use std::time::{Duration, Instant};

use common::{TestEnv, seed, wait_exit};
use mailboxd::store::JobState;

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

    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let counts = env.store.count_by_state().await.unwrap();
        let done: i64 = counts
            .iter()
            .filter(|(s, _)| s.is_terminal())
            .map(|(_, n)| n)
            .sum();
        if done as usize == N {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not all jobs finished: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for id in &ids {
        let job = env.store.job_by_event(id).await.unwrap().unwrap();
        assert_eq!(job.state, JobState::Succeeded, "{job:?}");
        let (_, attempts) = env.store.get_job(job.id).await.unwrap().unwrap();
        // One attempt each: no job was claimed twice or lost its lease.
        assert_eq!(attempts.len(), 1, "{attempts:?}");
    }
    // Exactly one successful Enable-RemoteMailbox per account in the lab's log.
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
    assert_eq!(per_identity.len(), N);
    assert!(per_identity.values().all(|n| *n == 1));
    // The work was shared.
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

    for mut child in replicas {
        let _ = nix_term(&child);
        if wait_exit(&mut child, Duration::from_secs(10)).is_none() {
            let _ = child.kill();
        }
    }
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
