//! `mailboxd bench load`: an initial load as operators live it — N joiners (100,000 by
//! default) published at once to `mailboxd run` as its own process, against a lab whose
//! Exchange is fast (milliseconds a cmdlet) but limited to `--concurrency` sessions. Three
//! figures, each the goal: the pace against the lab's limit, the daemon's resident
//! memory throughout (sampled, and its peak from the kernel), and the dashboard's answer
//! times while the load runs (the overview and the jobs list, as an operator watching it).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::output::{Output, percentile};
use super::process::{ChildGuard, spawn_daemon, wait_healthy};
use super::support::{
    daemon_settings, free_port, joiner_bodies, lab_config, lab_limit_s, progress, publish_joiners,
    rss_mib, tempfile_dir,
};
use crate::config::Settings;
use crate::store::Store;
use lab::Lab;

/// What `mailboxd bench load` was asked for.
#[derive(Debug, clap::Args)]
pub struct Load {
    #[arg(long, default_value_t = 100_000)]
    pub accounts: usize,
    /// Opening an Exchange session in the lab.
    #[arg(long, default_value = "1s", value_parser = super::parse_dur)]
    pub session: Duration,
    /// One cmdlet in the lab.
    #[arg(long, default_value = "5ms", value_parser = super::parse_dur)]
    pub cmdlet: Duration,
    /// Exchange sessions the lab allows (the daemon's warm sessions and `max_sessions`).
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// The daemon's `worker.concurrency` (default: twice the sessions, so that one batch's
    /// directory check and recording overlap another's run in Exchange).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Exit 1 below this fraction of the lab's limit (e.g. 0.9).
    #[arg(long)]
    pub min_fraction: Option<f64>,
    /// Exit 1 when the daemon's resident memory passes this many MiB (e.g. 64).
    #[arg(long)]
    pub max_rss_mib: Option<f64>,
}

/// How often the daemon's memory is read and the dashboard asked.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// The longest the load may take before the bench gives up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(1800);

pub(crate) async fn run(settings: &Settings, l: &Load, output: &Output) -> anyhow::Result<i32> {
    let concurrency = l.concurrency.max(1);
    let password = uuid::Uuid::new_v4().simple().to_string();
    let mut cfg = lab_config(l.accounts, l.session, l.cmdlet, &password);
    cfg.throttle.max_sessions_per_user = concurrency;
    let lab = Lab::start(cfg).await?;
    let workers = l.workers.unwrap_or(2 * concurrency).max(1);
    let s = load_settings(
        daemon_settings(settings, &lab, &password).await?,
        concurrency,
        workers,
    );
    let store = Store::connect(&s.database.url, 2).await?;
    let autovacuum = store.autovacuum_on().await?;
    let dir = tempfile_dir()?;
    let mut child = ChildGuard(spawn_daemon(&s, &dir)?);
    let measured = measure(&mut child, &s, &store, l.accounts, output.json).await;
    drop(child);
    lab.stop();
    let _ = std::fs::remove_dir_all(&dir);
    let m = measured?;

    let limit_s = lab_limit_s(l.accounts, l.cmdlet, l.session, concurrency);
    let fraction = limit_s / m.elapsed_s;
    let out = serde_json::json!({
        "accounts": l.accounts,
        "succeeded": m.succeeded,
        "elapsed_s": m.elapsed_s,
        "throughput_per_s": l.accounts as f64 / m.elapsed_s,
        "limit_per_s": l.accounts as f64 / limit_s,
        "ratio_to_limit": fraction,
        "session_s": l.session.as_secs_f64(),
        "cmdlet_ms": l.cmdlet.as_secs_f64() * 1e3,
        "concurrency": concurrency,
        "workers": workers,
        "autovacuum": autovacuum,
        "measured": "VmRSS of `mailboxd run` (its own process) every 250 ms, and its VmHWM",
        "rss_max_sampled_mib": m.rss_max_mib,
        "rss_peak_mib": m.rss_peak_mib,
        "dashboard": m.pages,
    });
    if output.emit("load", &out)? {
        print_table(&out, &m);
    }
    Ok(verdict(l, &m, fraction))
}

/// A warm session per Exchange session the lab allows and `workers` claim loops (more than
/// the sessions: a batch holds a warm session only while Exchange runs it, so its directory
/// check, verification and recording overlap another batch's run), batches of 100, reads
/// open on the admin listener for the dashboard probe.
fn load_settings(mut s: Settings, concurrency: usize, workers: usize) -> Settings {
    s.exchange.batch_size = 100;
    s.exchange.batch_linger = Duration::from_millis(200);
    s.exchange.warm_sessions = concurrency;
    s.exchange.max_sessions = u32::try_from(concurrency).unwrap_or(8);
    s.worker.concurrency = u32::try_from(workers).unwrap_or(8);
    s.admin.listen = format!("127.0.0.1:{}", free_port().unwrap_or(0));
    s.admin.open_reads = true;
    s
}

/// What one load came to.
struct Measured {
    succeeded: i64,
    elapsed_s: f64,
    rss_max_mib: f64,
    rss_peak_mib: Option<f64>,
    /// Per dashboard page: requests, p50, p95 and max in ms, and how many failed.
    pages: serde_json::Value,
}

async fn measure(
    child: &mut ChildGuard,
    s: &Settings,
    store: &Store,
    n: usize,
    json: bool,
) -> anyhow::Result<Measured> {
    wait_healthy(&mut child.0, &s.admin.listen).await?;
    let pid = child.0.id();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(sample_rss(pid, stop.clone()));
    let probe = tokio::spawn(probe_dashboard(s.admin.listen.clone(), stop.clone()));

    let publisher = crate::publish::Publisher::connect(&s.amqp).await?;
    let bodies = joiner_bodies(n);
    let started = Instant::now();
    publish_joiners(&publisher, &bodies).await?;
    drop(bodies);
    let waited = wait_done(store, n, json, started).await;
    let elapsed_s = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let rss_max_mib = sampler.await.context("the memory sampler")?;
    let pages = probe.await.context("the dashboard probe")?;
    waited?;
    let succeeded = store
        .job_counts()
        .await?
        .iter()
        .filter(|(st, _)| *st == crate::job::JobState::Succeeded)
        .map(|(_, c)| c)
        .sum();
    Ok(Measured {
        succeeded,
        elapsed_s,
        rss_max_mib,
        rss_peak_mib: rss_mib(pid).map(|r| r.1),
        pages,
    })
}

/// Waits until `n` jobs are terminal, showing progress every five seconds on a terminal.
async fn wait_done(store: &Store, n: usize, json: bool, started: Instant) -> anyhow::Result<()> {
    let mut shown = Instant::now();
    loop {
        let (done, _) = progress(store).await?;
        if done as usize >= n {
            if !json {
                eprintln!();
            }
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < GIVE_UP_AFTER,
            "only {done} of {n} jobs done after {GIVE_UP_AFTER:?}"
        );
        if !json && shown.elapsed() >= Duration::from_secs(5) {
            eprint!(
                "\r{done}/{n} done after {:.0} s",
                started.elapsed().as_secs_f64()
            );
            shown = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The largest VmRSS read until `stop`, in MiB.
async fn sample_rss(pid: u32, stop: Arc<AtomicBool>) -> f64 {
    let mut max: f64 = 0.0;
    while !stop.load(Ordering::Relaxed) {
        if let Some((rss, _)) = rss_mib(pid) {
            max = max.max(rss);
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
    max
}

/// The pages an operator watches during a load, asked once a second each until `stop`.
const PAGES: [(&str, &str); 3] = [
    ("overview", "/"),
    ("jobs", "/jobs"),
    ("api_jobs", "/api/v1/jobs?limit=100"),
];

async fn probe_dashboard(admin: String, stop: Arc<AtomicBool>) -> serde_json::Value {
    let http = reqwest::Client::new();
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); PAGES.len()];
    let mut failed = vec![0u32; PAGES.len()];
    while !stop.load(Ordering::Relaxed) {
        for (i, (_, path)) in PAGES.iter().enumerate() {
            let t = Instant::now();
            let ok = http
                .get(format!("http://{admin}{path}"))
                .timeout(Duration::from_secs(10))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                times[i].push(t.elapsed().as_secs_f64() * 1e3);
            } else {
                failed[i] += 1;
            }
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
    let mut pages = serde_json::Map::new();
    for (i, (name, path)) in PAGES.iter().enumerate() {
        let t = &mut times[i];
        t.sort_by(f64::total_cmp);
        pages.insert(
            (*name).into(),
            serde_json::json!({
                "path": path,
                "requests": t.len(),
                "failed": failed[i],
                "p50_ms": percentile(t, 0.50),
                "p95_ms": percentile(t, 0.95),
                "max_ms": t.last().copied().unwrap_or(0.0),
            }),
        );
    }
    serde_json::Value::Object(pages)
}

/// 1 if a guard asked for was missed, or a job did not succeed.
fn verdict(l: &Load, m: &Measured, fraction: f64) -> i32 {
    let mut code = i32::from(m.succeeded < l.accounts as i64);
    if let Some(min) = l.min_fraction
        && fraction < min
    {
        eprintln!(
            "bench load: {:.0} % of the lab's limit, below the {:.0} % floor",
            fraction * 100.0,
            min * 100.0
        );
        code = 1;
    }
    let peak = m.rss_peak_mib.unwrap_or(m.rss_max_mib).max(m.rss_max_mib);
    if let Some(max) = l.max_rss_mib
        && peak > max
    {
        eprintln!("bench load: the daemon's memory reached {peak:.1} MiB, over {max:.0} MiB");
        code = 1;
    }
    code
}

fn print_table(out: &serde_json::Value, m: &Measured) {
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
    println!(
        "{} joiners ({} succeeded) in {:.1} s = {:.0}/s; the lab's limit {:.0}/s ({:.0} %)",
        out["accounts"],
        m.succeeded,
        m.elapsed_s,
        f(&out["throughput_per_s"]),
        f(&out["limit_per_s"]),
        f(&out["ratio_to_limit"]) * 100.0
    );
    println!(
        "mailboxd run: VmRSS at most {:.1} MiB sampled, VmHWM {:.1} MiB; PostgreSQL's autovacuum {}",
        m.rss_max_mib,
        m.rss_peak_mib.unwrap_or(f64::NAN),
        if out["autovacuum"] == true {
            "on"
        } else {
            "off"
        }
    );
    println!("page during the load    requests  failed  p50 ms  p95 ms  max ms");
    if let Some(pages) = m.pages.as_object() {
        for (name, p) in pages {
            println!(
                "{:<23} {:<9} {:<7} {:<7.1} {:<7.1} {:.1}",
                format!("{name} ({})", p["path"].as_str().unwrap_or("")),
                p["requests"],
                p["failed"],
                f(&p["p50_ms"]),
                f(&p["p95_ms"]),
                f(&p["max_ms"])
            );
        }
    }
}
