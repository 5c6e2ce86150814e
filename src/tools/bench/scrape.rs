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
        fill(&store, filled, size).await?;
        filled = size;
        sqlx::query("ANALYZE").execute(store.pool()).await?;
        let (metrics_p50_ms, metrics_p95_ms) = time(scrapes, || metrics(&store)).await?;
        let (overview_p50_ms, overview_p95_ms) = time(scrapes, || overview(&store)).await?;
        rows.push(ScrapeRow {
            jobs: size,
            metrics_p50_ms,
            metrics_p95_ms,
            overview_p50_ms,
            overview_p95_ms,
        });
    }
    let out = serde_json::json!({ "scrapes": scrapes, "rows": rows });
    if output.emit("scrape", &out)? {
        println!("{scrapes} scrapes per size (database {url})");
        println!("jobs      /metrics p50 ms  p95 ms   overview p50 ms  p95 ms");
        for r in &rows {
            println!(
                "{:<9} {:<16.1} {:<8.1} {:<16.1} {:.1}",
                r.jobs, r.metrics_p50_ms, r.metrics_p95_ms, r.overview_p50_ms, r.overview_p95_ms
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
    store.count_by_state().await?;
    store.queue_ages().await?;
    store.throughput(Bucket::Hour).await?;
    store.throughput(Bucket::Day).await?;
    store.time_to_done().await?;
    Ok(())
}

/// Jobs `from..to` (distinct accounts), finished ones spread over the last 29 days with an
/// outcome row each (sent). Per 1,000: 4 % failed, 10 % superseded, 0.5 % cancelled,
/// 0.5 % queued, 0.2 % retrying, 0.3 % waiting for the sync, the rest succeeded.
async fn fill(store: &Store, from: usize, to: usize) -> anyhow::Result<()> {
    const STATE: &str = "CASE WHEN g % 1000 < 40 THEN 'failed'
                              WHEN g % 1000 < 140 THEN 'superseded'
                              WHEN g % 1000 < 145 THEN 'cancelled'
                              WHEN g % 1000 < 150 THEN 'queued'
                              WHEN g % 1000 < 152 THEN 'retrying'
                              WHEN g % 1000 < 155 THEN 'waiting_for_sync'
                              ELSE 'succeeded' END";
    let step = 100_000;
    let mut lo = from;
    while lo < to {
        let hi = (lo + step).min(to);
        let sql = format!(
            "INSERT INTO jobs (id, event_id, kind, account, payload, state, max_attempts,
                               attempt, occurred_at, created_at, updated_at, finished_at,
                               last_error, last_error_class)
             SELECT gen_random_uuid(), 'bench-' || g, 'joiner', 'bench' || g,
                    jsonb_build_object('account', 'bench' || g), s, 3, 1, t, t, t + d,
                    CASE WHEN s IN ('succeeded', 'failed', 'superseded', 'cancelled')
                         THEN t + d END,
                    CASE WHEN s = 'failed' THEN 'mailbox not found' END,
                    CASE WHEN s = 'failed' THEN 'permanent' END
               FROM generate_series($1::bigint, $2::bigint - 1) AS g,
                    LATERAL (SELECT {STATE} AS s,
                                    now() - (g % (29 * 86400)) * interval '1 second' AS t,
                                    (g % 120) * interval '1 second' AS d) x"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(lo as i64)
            .bind(hi as i64)
            .execute(store.pool())
            .await?;
        sqlx::query(
            "INSERT INTO outcomes (id, job_id, account, event_id, result, routing_key, body,
                                   created_at, sent_at, delivered)
             SELECT gen_random_uuid(), j.id, j.account, j.event_id, j.state,
                    'joiner.' || j.state, '{}'::jsonb, j.finished_at, j.finished_at, 'exchange'
               FROM jobs j
              WHERE j.event_id = ANY(SELECT 'bench-' || g
                                       FROM generate_series($1::bigint, $2::bigint - 1) g)
                AND j.finished_at IS NOT NULL",
        )
        .bind(lo as i64)
        .bind(hi as i64)
        .execute(store.pool())
        .await?;
        lo = hi;
    }
    Ok(())
}
