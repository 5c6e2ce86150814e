//! `mailboxd bench burst`: N joiners published at once → all succeeded, through the daemon
//! and a lab with Exchange-like timings; against the lab's theoretical limit and the naive
//! way (a new shell and Exchange session per account, one at a time).

use std::time::{Duration, Instant};

use anyhow::Context;

use super::output::{Output, percentile};
use super::support::{
    account, daemon_settings, joiner_bodies, lab_config, lab_limit_s, progress, publish_joiners,
};
use crate::config::Settings;
use crate::exchange::{Exchange, Template};
use crate::job::JobState;
use crate::store::{JobFilter, Store};
use lab::Lab;

/// What `mailboxd bench burst` was asked for.
pub(crate) struct Burst {
    pub(crate) accounts: usize,
    pub(crate) session: Duration,
    pub(crate) cmdlet: Duration,
    pub(crate) concurrency: usize,
    pub(crate) naive_sample: usize,
    pub(crate) warm: bool,
    pub(crate) batch_size: Option<u32>,
    /// Exit 1 below this fraction of the lab's limit (`--min-fraction`, the CI guard).
    pub(crate) min_fraction: Option<f64>,
}

/// What the daemon achieved on the burst.
struct Measured {
    succeeded: usize,
    elapsed_s: f64,
    /// Event published → job finished, milliseconds, sorted.
    latencies_ms: Vec<f64>,
}

pub(crate) async fn run(settings: &Settings, b: &Burst, output: &Output) -> anyhow::Result<i32> {
    let concurrency = b.concurrency.max(1);
    let n = b.accounts;
    let password = uuid::Uuid::new_v4().simple().to_string();
    let mut cfg = lab_config(n + b.naive_sample, b.session, b.cmdlet, &password);
    cfg.throttle.max_sessions_per_user = concurrency;
    let lab = Lab::start(cfg).await?;
    let s = burst_settings(daemon_settings(settings, &lab, &password).await?, b);
    let measured = through_the_daemon(&s, n, output.json).await?;
    let naive_per_s = naive_rate(&s, b).await?;
    let throttled = lab.throttled();
    lab.stop();

    let limit_s = lab_limit_s(n, b.cmdlet, b.session, concurrency);
    let throughput = n as f64 / measured.elapsed_s;
    let limit_per_s = n as f64 / limit_s;
    let lat = &measured.latencies_ms;
    let out = serde_json::json!({
        "accounts": n,
        "succeeded": measured.succeeded,
        "elapsed_s": measured.elapsed_s,
        "throughput_per_s": throughput,
        "limit_per_s": limit_per_s,
        "ratio_to_limit": throughput / limit_per_s,
        "naive_per_s": naive_per_s,
        "ratio_to_naive": throughput / naive_per_s,
        "p50_ms": percentile(lat, 0.50),
        "p95_ms": percentile(lat, 0.95),
        "p99_ms": percentile(lat, 0.99),
        "session_s": b.session.as_secs_f64(),
        "cmdlet_ms": b.cmdlet.as_secs_f64() * 1e3,
        "concurrency": concurrency,
        "batch_size": s.exchange.batch_size,
        "warm_sessions": s.exchange.warm_sessions,
        "throttled_sessions": throttled,
    });
    if output.emit("burst", &out)? {
        eprintln!();
        println!(
            "{n} joiners ({} succeeded) in {:.1}s = {throughput:.1}/s; limit {limit_per_s:.1}/s ({:.0} %); naive {naive_per_s:.2}/s (×{:.0}); event→done p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms",
            measured.succeeded,
            measured.elapsed_s,
            throughput / limit_per_s * 100.0,
            throughput / naive_per_s,
            percentile(lat, 0.50),
            percentile(lat, 0.95),
            percentile(lat, 0.99)
        );
    }
    if measured.succeeded != n {
        return Ok(1);
    }
    Ok(match b.min_fraction {
        Some(floor) if throughput / limit_per_s < floor => {
            eprintln!(
                "the burst ran at {:.0} % of the lab's limit, below the floor of {:.0} %",
                throughput / limit_per_s * 100.0,
                floor * 100.0
            );
            1
        }
        _ => 0,
    })
}

/// Batches sized for the burst (split evenly over the workers, or small for warm ones),
/// one worker per Exchange session the lab allows, no batch timeout.
fn burst_settings(mut s: Settings, b: &Burst) -> Settings {
    let concurrency = b.concurrency.max(1);
    s.exchange.batch_size = b.batch_size.unwrap_or(if b.warm {
        20
    } else {
        u32::try_from(b.accounts.div_ceil(concurrency).clamp(1, 500)).unwrap_or(500)
    });
    s.exchange.batch_linger = Duration::from_secs(1);
    s.exchange.warm_sessions = if b.warm { concurrency } else { 0 };
    s.worker.concurrency = u32::try_from(concurrency).unwrap_or(8);
    s.worker.batch_timeout = Duration::from_secs(3600);
    s
}

/// Publishes `n` joiners at once to a daemon started with `s` and waits until every job is
/// terminal.
async fn through_the_daemon(s: &Settings, n: usize, json: bool) -> anyhow::Result<Measured> {
    let app = crate::app::App::start(s.clone()).await?;
    let publisher = crate::publish::Publisher::connect(&s.amqp).await?;
    let bodies = joiner_bodies(n);
    let started = Instant::now();
    let t0 = chrono::Utc::now();
    publish_joiners(&publisher, &bodies).await?;
    wait_all_terminal(&app.store, n, json, started).await?;
    let elapsed_s = started.elapsed().as_secs_f64();
    let jobs = app
        .store
        .list_jobs(&JobFilter {
            limit: i64::try_from(n).unwrap_or(i64::MAX),
            ..Default::default()
        })
        .await?;
    app.stop().await;
    let succeeded = jobs
        .iter()
        .filter(|j| j.state == JobState::Succeeded)
        .count();
    let mut latencies_ms: Vec<f64> = jobs
        .iter()
        .filter_map(|j| j.finished_at)
        .map(|f| (f - t0).num_milliseconds().max(0) as f64)
        .collect();
    latencies_ms.sort_by(f64::total_cmp);
    Ok(Measured {
        succeeded,
        elapsed_s,
        latencies_ms,
    })
}

/// Waits until `n` jobs are terminal, showing progress every five seconds on a terminal.
async fn wait_all_terminal(
    store: &Store,
    n: usize,
    json: bool,
    started: Instant,
) -> anyhow::Result<()> {
    let mut shown = 0;
    loop {
        let (done, _) = progress(store).await?;
        if done as usize >= n {
            return Ok(());
        }
        // Once per five seconds (the loop looks every 100 ms).
        let secs = started.elapsed().as_secs();
        if !json && secs >= shown + 5 {
            shown = secs;
            eprint!("\r{done}/{n} done after {secs}s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Accounts per second the naive way, on a sample: one account per shell and Exchange
/// session, in turn (the lab's timings when the sample is empty).
async fn naive_rate(s: &Settings, b: &Burst) -> anyhow::Result<f64> {
    if b.naive_sample == 0 {
        return Ok(1.0 / (b.session + b.cmdlet).as_secs_f64());
    }
    let exchange = {
        let client = s.winrm.client()?;
        let mut cold = s.exchange.clone();
        cold.warm_sessions = 0;
        Exchange::new(client, &cold, s.winrm.endpoint.clone())
    };
    let started = Instant::now();
    for i in 0..b.naive_sample {
        let sam = format!("user{:05}", b.accounts + 1 + i);
        exchange
            .run_batch(Template::EnableRemoteMailbox, vec![account(&sam)])
            .await
            .context("a naive run failed")?;
    }
    Ok(b.naive_sample as f64 / started.elapsed().as_secs_f64())
}
