//! `mailboxd bench memory`: resident memory of the daemon (`mailboxd run` as its own
//! process) idle, with N jobs queued (the lab stalls, so they wait), and after they drained.

use std::time::{Duration, Instant};

use anyhow::Context;

use super::output::Output;
use super::process::{ChildGuard, spawn_daemon, wait_healthy};
use super::support::{
    daemon_settings, free_port, joiner_bodies, lab_config, progress, publish_joiners, rss_mib,
    tempfile_dir,
};
use crate::config::Settings;
use crate::store::Store;
use lab::Lab;

/// RSS target at 10,000 queued jobs (the "prove it" issue).
const RSS_TARGET_MIB: f64 = 150.0;

pub(crate) async fn run(
    settings: &Settings,
    n: usize,
    drain: bool,
    output: &Output,
) -> anyhow::Result<i32> {
    let password = uuid::Uuid::new_v4().simple().to_string();
    let lab = Lab::start(lab_config(n, Duration::ZERO, Duration::ZERO, &password)).await?;
    let mut s = daemon_settings(settings, &lab, &password).await?;
    s.exchange.batch_linger = Duration::ZERO;
    s.admin.listen = format!("127.0.0.1:{}", free_port()?);
    let store = Store::connect(&s.database.url, 2).await?;
    let dir = tempfile_dir()?;
    let mut child = ChildGuard(spawn_daemon(&s, &dir)?);
    let bench = Bench {
        lab: &lab,
        settings: &s,
        store: &store,
        n,
        json: output.json,
    };
    let result = bench.measure(&mut child, drain).await;
    drop(child);
    lab.stop();
    let _ = std::fs::remove_dir_all(&dir);
    let out = result?;
    if output.emit("memory", &out)? {
        print_table(&out, n);
    }
    Ok(0)
}

/// One run's lab, daemon settings and bench database.
struct Bench<'a> {
    lab: &'a Lab,
    settings: &'a Settings,
    store: &'a Store,
    n: usize,
    json: bool,
}

impl Bench<'_> {
    /// The three figures (idle, loaded, drained) of the daemon in `child`.
    async fn measure(
        &self,
        child: &mut ChildGuard,
        drain: bool,
    ) -> anyhow::Result<serde_json::Value> {
        let n = self.n;
        wait_healthy(&mut child.0, &self.settings.admin.listen).await?;
        let pid = child.0.id();
        // Let start-up allocations settle before the idle figure.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (idle, _) = rss_mib(pid).context("reading /proc/<pid>/status of mailboxd run")?;
        let ingest_s = self.load().await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (loaded, loaded_peak) = rss_mib(pid).context("reading VmRSS")?;
        let (done_at_load, _) = progress(self.store).await?;
        let queued = n as i64 - done_at_load;
        let (drained, drain_s) = if drain {
            let drain_s = self.drain().await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            (rss_mib(pid).map(|r| r.0), Some(drain_s))
        } else {
            (None, None)
        };
        let peak = rss_mib(pid).map_or(loaded_peak, |r| r.1);
        Ok(serde_json::json!({
            "jobs": n,
            "measured": "VmRSS of `mailboxd run` (its own process)",
            "rss_idle_mib": idle,
            "rss_loaded_mib": loaded,
            "queued_at_loaded": queued,
            "rss_drained_mib": drained,
            "rss_peak_mib": peak,
            "ingest_s": ingest_s,
            "drain_s": drain_s,
            "target_mib": RSS_TARGET_MIB,
            "within_target": loaded < RSS_TARGET_MIB,
        }))
    }

    /// Stalls the lab, publishes the joiners and waits until every job is stored: the
    /// workers hold one batch each and the rest stay queued in PostgreSQL. The seconds it took.
    async fn load(&self) -> anyhow::Result<f64> {
        let n = self.n;
        // Every WinRM request of the lab now waits.
        self.lab.set_fault(&lab::FaultRequest::Stall {
            seconds: 5.0,
            for_seconds: 0.0,
        });
        let publisher = crate::publish::Publisher::connect(&self.settings.amqp).await?;
        let bodies = joiner_bodies(n);
        let started = Instant::now();
        publish_joiners(&publisher, &bodies).await?;
        drop(bodies);
        loop {
            let (_, stored) = progress(self.store).await?;
            if stored as usize >= n {
                return Ok(started.elapsed().as_secs_f64());
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(600),
                "only {stored} of {n} jobs stored after 10 minutes"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Clears the stall and waits until every job is done: the seconds it took.
    async fn drain(&self) -> anyhow::Result<f64> {
        let n = self.n;
        self.lab.set_fault(&lab::FaultRequest::Clear);
        let started = Instant::now();
        let mut shown = Instant::now();
        loop {
            let (done, _) = progress(self.store).await?;
            if done as usize >= n {
                break;
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(900),
                "only {done} of {n} jobs done after 15 minutes"
            );
            if !self.json && shown.elapsed() >= Duration::from_secs(5) {
                eprint!("\rdraining: {done}/{n} done");
                shown = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if !self.json {
            eprintln!();
        }
        Ok(started.elapsed().as_secs_f64())
    }
}

fn print_table(out: &serde_json::Value, n: usize) {
    let f = |k: &str| {
        out[k]
            .as_f64()
            .map_or("-".to_owned(), |v| format!("{v:.1} MiB"))
    };
    let queued = format!("{n} jobs queued ({} not done yet)", out["queued_at_loaded"]);
    let drained = match out["drain_s"].as_f64() {
        Some(s) => format!("after they drained ({s:.0} s)"),
        None => "after they drained (skipped)".to_owned(),
    };
    println!(
        "{:<40} {:<10}  target",
        "mailboxd run (own process)", "VmRSS"
    );
    println!("{:<40} {:<10}", "idle, before ingest", f("rss_idle_mib"));
    println!(
        "{queued:<40} {:<10}  < {RSS_TARGET_MIB:.0} MiB: {}",
        f("rss_loaded_mib"),
        if out["within_target"] == true {
            "met"
        } else {
            "NOT met"
        }
    );
    println!("{drained:<40} {:<10}", f("rss_drained_mib"));
    println!("{:<40} {:<10}", "peak (VmHWM)", f("rss_peak_mib"));
}
