//! `mailboxd bench queue`: claim-and-complete throughput of empty jobs on PostgreSQL with
//! 1, 4 and 16 workers, against the same work done by a plain `UPDATE … SKIP LOCKED
//! RETURNING` loop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::output::Output;
use super::support::bench_database_url;
use crate::config::Settings;
use crate::event::EventKind;
use crate::job::Resolution;
use crate::store::{AttemptRecord, Store};

#[derive(Serialize)]
struct QueueRow {
    workers: usize,
    mailboxd_jobs_per_s: f64,
    plain_jobs_per_s: f64,
    ratio: f64,
}

pub(crate) async fn run(
    settings: &Settings,
    jobs: usize,
    workers: &[usize],
    batch: i64,
    min_ratio: Option<f64>,
    output: &Output,
) -> anyhow::Result<i32> {
    let url = bench_database_url(&settings.database.url)?;
    // The bench's own database, new each run: a stale one from another build (its migrations
    // changed since) must not fail the CI guard that runs this.
    crate::store::recreate_database(&url).await?;
    let max_workers = workers.iter().copied().max().unwrap_or(1);
    let store = Store::connect(&url, u32::try_from(max_workers + 2).unwrap_or(32)).await?;
    store.migrate().await?;
    let mut rows = Vec::new();
    for &w in workers {
        let w = w.max(1);
        store.bench_reset().await?;
        fill(&store, jobs).await?;
        let started = Instant::now();
        let done = claim_and_finish(&store, w, batch).await?;
        let ours = done as f64 / started.elapsed().as_secs_f64();

        store.bench_requeue().await?;
        let started = Instant::now();
        let done = plain_loop(&store, w, batch).await?;
        let plain = done as f64 / started.elapsed().as_secs_f64();
        rows.push(QueueRow {
            workers: w,
            mailboxd_jobs_per_s: ours,
            plain_jobs_per_s: plain,
            ratio: ours / plain,
        });
    }
    store.bench_reset().await?;
    // Whether the server vacuums by itself: figures with it off are not a deployment's.
    let autovacuum = store.autovacuum_on().await?;
    let out =
        serde_json::json!({ "jobs": jobs, "batch": batch, "autovacuum": autovacuum, "rows": rows });
    if output.emit("queue", &out)? {
        println!(
            "{jobs} empty jobs, claimed {batch} at a time (database {url}, autovacuum {})",
            if autovacuum { "on" } else { "off" }
        );
        println!("workers  mailboxd jobs/s  plain UPDATE…RETURNING jobs/s  ratio");
        for r in &rows {
            println!(
                "{:<8} {:<16.0} {:<30.0} {:.2}",
                r.workers, r.mailboxd_jobs_per_s, r.plain_jobs_per_s, r.ratio
            );
        }
    }
    Ok(guard(&rows, min_ratio))
}

/// 1 if claim + finish fell below `min_ratio` of the plain loop with any worker count.
fn guard(rows: &[QueueRow], min_ratio: Option<f64>) -> i32 {
    let Some(min) = min_ratio else { return 0 };
    let mut code = 0;
    for r in rows.iter().filter(|r| r.ratio < min) {
        eprintln!(
            "bench queue: with {} worker(s) claim + finish ran at {:.2}× the plain loop, below the {min:.2}× floor: the queue engine got slower (see docs/performance.md)",
            r.workers, r.ratio
        );
        code = 1;
    }
    code
}

/// `jobs` joiners for distinct accounts, through the same insert path as the intake.
async fn fill(store: &Store, jobs: usize) -> anyhow::Result<()> {
    let mut i = 0;
    while i < jobs {
        let n = (jobs - i).min(1000);
        let mut events = Vec::with_capacity(n);
        for k in i..i + n {
            let spec = crate::publish::EventSpec::new(EventKind::Joiner, format!("bench{k:07}"));
            let body = serde_json::to_vec(&spec.to_json())?;
            events.push(crate::event::parse(
                &body,
                Some("application/json"),
                None,
                EventKind::Joiner.routing_key(),
            )?);
        }
        store.insert_events(&events, 3).await?;
        i += n;
    }
    Ok(())
}

/// What a worker does, minus Exchange: claim a batch with a lease, record each outcome.
async fn claim_and_finish(store: &Store, workers: usize, batch: i64) -> anyhow::Result<u64> {
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let tasks = (0..workers).map(|i| {
        let store = store.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let replica = format!("bench-{i}");
            let ok = Resolution::Succeeded {
                outcome: crate::job::JobEffect::Enabled,
            };
            loop {
                let jobs = store
                    .claim(&replica, batch, Duration::from_secs(60))
                    .await?;
                if jobs.is_empty() {
                    return Ok::<_, crate::store::StoreError>(());
                }
                let record = AttemptRecord::new(chrono::Utc::now());
                let outcomes: Vec<_> = jobs.iter().map(|j| (j, &record, &ok)).collect();
                store.finish_many(&replica, &outcomes).await?;
                done.fetch_add(jobs.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
        })
    });
    for t in futures::future::join_all(tasks).await {
        t??;
    }
    Ok(done.load(std::sync::atomic::Ordering::Relaxed))
}

async fn plain_loop(store: &Store, workers: usize, batch: i64) -> anyhow::Result<u64> {
    let tasks = (0..workers).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut n = 0;
            loop {
                let got = store.bench_plain_step(batch).await?;
                if got == 0 {
                    return Ok::<_, crate::store::StoreError>(n);
                }
                n += got;
            }
        })
    });
    let mut total = 0;
    for t in futures::future::join_all(tasks).await {
        total += t??;
    }
    Ok(total)
}
