//! `mailboxd bench history`: what operators open and what new work costs, with an empty table
//! and again with a month of history in it (issue 35, "flat with history"): every dashboard
//! page and API list timed over HTTP against the real admin listener (p50/p95), and the drain
//! of new joiners through the daemon and the lab. The goal: every page ≤ 250 ms p95 and within
//! 3× of its empty-table time; the drain within 1.1×.
//!
//! The history is filled set-based (`Store::bench_fill_history`, the same mix as `bench
//! scrape`: 4 % failed, so 40,000 failed jobs in 1,000,000), all finished and all within the
//! retention window, from job number 10,000 on so that none of it is work at hand: the drain
//! after the fill runs exactly the same jobs as before it.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::output::{Output, ms, percentile};
use super::support::{daemon_settings, joiner_bodies_for, lab_config, progress, publish_joiners};
use crate::config::Settings;
use lab::Lab;

/// The pages and lists timed: what an operator opens first, and the lists they filter.
const PAGES: [&str; 14] = [
    "/",
    "/jobs",
    "/jobs?state=failed",
    "/failures",
    "/bulk?state=failed",
    "/alerts",
    "/poison",
    "/reconcile",
    "/api/v1/jobs",
    "/api/v1/jobs?state=failed",
    "/api/v1/jobs?state=failed&error_class=permanent",
    "/api/v1/alerts",
    "/api/v1/audit",
    "/metrics",
];

/// Where the bench's history starts: past the fill's "work at hand" rows (its first 10,000).
const HISTORY_FROM: i64 = 10_000;

#[derive(Serialize)]
struct PageRow {
    page: &'static str,
    empty_p50_ms: f64,
    empty_p95_ms: f64,
    history_p50_ms: f64,
    history_p95_ms: f64,
    ratio_p95: f64,
    ok: bool,
}

pub(crate) async fn run(
    settings: &Settings,
    history: usize,
    joiners: usize,
    requests: usize,
    output: &Output,
) -> anyhow::Result<i32> {
    let password = uuid::Uuid::new_v4().simple().to_string();
    let cfg = lab_config(joiners * 2, Duration::ZERO, Duration::ZERO, &password);
    let lab = Lab::start(cfg).await?;
    let mut s = daemon_settings(settings, &lab, &password).await?;
    s.admin.open_reads = true;
    let app = crate::app::App::start(s.clone()).await?;
    let base = format!("http://{}", app.admin_addr);
    let http = reqwest::Client::new();

    let empty_drain_s = drain(&s, &app.store, 1..=joiners).await?;
    let empty = time_pages(&http, &base, requests).await?;
    app.store
        .bench_fill_history(HISTORY_FROM, HISTORY_FROM + history as i64)
        .await?;
    app.store.bench_analyze().await?;
    let full = time_pages(&http, &base, requests).await?;
    let history_drain_s = drain(&s, &app.store, joiners + 1..=joiners * 2).await?;
    app.stop().await;
    lab.stop();

    let rows = compare(&empty, &full);
    let drain_ratio = history_drain_s / empty_drain_s;
    let ok = rows.iter().all(|r| r.ok) && drain_ratio <= 1.1;
    let out = serde_json::json!({
        "history_jobs": history,
        "requests_per_page": requests,
        "pages": rows,
        "joiners": joiners,
        "drain_empty_s": empty_drain_s,
        "drain_history_s": history_drain_s,
        "drain_ratio": drain_ratio,
        "all_within_goal": ok,
    });
    if output.emit("history", &out)? {
        print_table(&rows, history, requests);
        println!(
            "drain of {joiners} joiners: {empty_drain_s:.2} s empty, {history_drain_s:.2} s with history (×{drain_ratio:.2}; goal ≤ 1.10)"
        );
    }
    Ok(if ok { 0 } else { 1 })
}

/// Publishes joiners for `accounts` and waits until as many more jobs are finished; returns
/// the seconds it took.
async fn drain(
    s: &Settings,
    store: &crate::store::Store,
    accounts: std::ops::RangeInclusive<usize>,
) -> anyhow::Result<f64> {
    let (before, _) = progress(store).await?;
    let n = accounts.clone().count();
    let publisher = crate::publish::Publisher::connect(&s.amqp).await?;
    let bodies = joiner_bodies_for(accounts);
    let started = Instant::now();
    publish_joiners(&publisher, &bodies).await?;
    loop {
        let (done, _) = progress(store).await?;
        if (done - before) as usize >= n {
            return Ok(started.elapsed().as_secs_f64());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "the drain did not finish in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// p50 and p95 (ms) of `requests` GETs of every page, in turn.
async fn time_pages(
    http: &reqwest::Client,
    base: &str,
    requests: usize,
) -> anyhow::Result<Vec<(f64, f64)>> {
    let mut out = Vec::with_capacity(PAGES.len());
    for page in PAGES {
        let mut v = Vec::with_capacity(requests);
        for _ in 0..requests.max(1) {
            let started = Instant::now();
            let r = http.get(format!("{base}{page}")).send().await?;
            let status = r.status();
            r.bytes().await?;
            anyhow::ensure!(status.is_success(), "{page} answered {status}");
            v.push(ms(started.elapsed()));
        }
        v.sort_by(f64::total_cmp);
        out.push((percentile(&v, 0.5), percentile(&v, 0.95)));
    }
    Ok(out)
}

/// Each page against its goal: ≤ 250 ms p95 with history, within 3× of the empty table (a
/// page under 5 ms empty may take 15 ms: a ratio of sub-millisecond times says nothing).
fn compare(empty: &[(f64, f64)], full: &[(f64, f64)]) -> Vec<PageRow> {
    PAGES
        .iter()
        .zip(empty.iter().zip(full))
        .map(|(page, (&(e50, e95), &(h50, h95)))| {
            let ratio_p95 = h95 / e95.max(f64::EPSILON);
            PageRow {
                page,
                empty_p50_ms: e50,
                empty_p95_ms: e95,
                history_p50_ms: h50,
                history_p95_ms: h95,
                ratio_p95,
                ok: h95 <= 250.0 && h95 <= 3.0 * e95.max(5.0),
            }
        })
        .collect()
}

fn print_table(rows: &[PageRow], history: usize, requests: usize) {
    println!("{requests} requests per page; history: {history} finished jobs");
    println!(
        "{:<50} {:>9} {:>9} {:>11} {:>11} {:>7}  goal",
        "page", "empty p50", "p95", "history p50", "p95", "×p95"
    );
    for r in rows {
        println!(
            "{:<50} {:>9.1} {:>9.1} {:>11.1} {:>11.1} {:>7.2}  {}",
            r.page,
            r.empty_p50_ms,
            r.empty_p95_ms,
            r.history_p50_ms,
            r.history_p95_ms,
            r.ratio_p95,
            if r.ok { "met" } else { "MISSED" }
        );
    }
}
