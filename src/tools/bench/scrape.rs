//! `mailboxd bench scrape`: what `/metrics` and the dashboard overview read from the store,
//! timed with 10k, 100k and 1M jobs of history in the table (issue 35: they must stay
//! flat). The table is filled set-based (`INSERT … SELECT generate_series`), not through the
//! intake: a million jobs in seconds, in a realistic mix of states.

use std::time::Instant;

use serde::Serialize;

use super::output::{Output, ms, percentile};
use crate::config::Settings;
use crate::store::{Bucket, Store};

#[derive(Serialize)]
struct ScrapeRow {
    jobs: usize,
    metrics_p50_ms: f64,
    metrics_p95_ms: f64,
    overview_p50_ms: f64,
    overview_p95_ms: f64,
    /// The overview without its counts per state: the health section's reads.
    health_p50_ms: f64,
    health_p95_ms: f64,
}

pub(crate) async fn run(
    settings: &Settings,
    jobs: usize,
    scrapes: usize,
    output: &Output,
) -> anyhow::Result<i32> {
    // A database of its own: other benches reset theirs between runs.
    let mut url = url::Url::parse(&settings.database.url)?;
    url.set_path("/mailboxd_bench_scrape");
    let url = url.to_string();
    crate::store::recreate_database(&url).await?;
    let store = Store::connect(&url, 4).await?;
    store.migrate().await?;
    let mut rows = Vec::new();
    let mut filled = 0;
    for size in [10_000, 100_000, 1_000_000, jobs] {
        let size = size.min(jobs);
        if size <= filled {
            continue;
        }
        store.bench_fill_history(filled as i64, size as i64).await?;
        filled = size;
        store.bench_analyze().await?;
        let (metrics_p50_ms, metrics_p95_ms) = time(scrapes, || metrics(&store)).await?;
        let (overview_p50_ms, overview_p95_ms) = time(scrapes, || overview(&store)).await?;
        let (health_p50_ms, health_p95_ms) = time(scrapes, || health(&store)).await?;
        rows.push(ScrapeRow {
            jobs: size,
            metrics_p50_ms,
            metrics_p95_ms,
            overview_p50_ms,
            overview_p95_ms,
            health_p50_ms,
            health_p95_ms,
        });
    }
    let out = serde_json::json!({ "scrapes": scrapes, "rows": rows });
    if output.emit("scrape", &out)? {
        println!("{scrapes} scrapes per size (database {url})");
        println!(
            "jobs      /metrics p50 ms  p95 ms   overview p50 ms  p95 ms   health p50 ms  p95 ms"
        );
        for r in &rows {
            println!(
                "{:<9} {:<16.1} {:<8.1} {:<16.1} {:<8.1} {:<14.1} {:.1}",
                r.jobs,
                r.metrics_p50_ms,
                r.metrics_p95_ms,
                r.overview_p50_ms,
                r.overview_p95_ms,
                r.health_p50_ms,
                r.health_p95_ms
            );
        }
    }
    Ok(0)
}

/// p50 and p95 in ms of `n` runs of `f`.
async fn time<F, Fut>(n: usize, f: F) -> anyhow::Result<(f64, f64)>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut v = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        let started = Instant::now();
        f().await?;
        v.push(ms(started.elapsed()));
    }
    v.sort_by(f64::total_cmp);
    Ok((percentile(&v, 0.5), percentile(&v, 0.95)))
}

/// The store reads of a `/metrics` scrape.
async fn metrics(store: &Store) -> anyhow::Result<()> {
    crate::metrics::queue_gauges(store).await;
    Ok(())
}

/// The store reads of the dashboard overview: the counts per state and the health section.
async fn overview(store: &Store) -> anyhow::Result<()> {
    store.job_counts().await?;
    health(store).await
}

/// The overview's health section: ages, throughput per hour and per day, time to done.
async fn health(store: &Store) -> anyhow::Result<()> {
    store.queue_ages().await?;
    store.throughput(Bucket::Hour).await?;
    store.throughput(Bucket::Day).await?;
    store.time_to_done().await?;
    Ok(())
}
