//! `mailboxd bench lab`: the lab's own timing — N cmdlets at a given latency, C PowerShell
//! runs at a time, against the theoretical N × latency / C.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use super::output::Output;
use super::support::{account, lab_config, lab_exchange};
use crate::exchange::{AccountData, Template};
use lab::Lab;

#[derive(Serialize)]
struct LabResult {
    cmdlets: usize,
    cmdlet_latency_ms: f64,
    concurrency: usize,
    elapsed_s: f64,
    theoretical_s: f64,
    overhead_pct: f64,
}

pub(crate) async fn run(
    cmdlets: usize,
    latency: Duration,
    concurrency: usize,
    output: &Output,
) -> anyhow::Result<i32> {
    let concurrency = concurrency.max(1);
    let password = uuid::Uuid::new_v4().simple().to_string();
    let cfg = lab_config(cmdlets, Duration::ZERO, latency, &password)
        .without_directory()
        .with_max_shells_per_user(concurrency.max(30));
    let lab = Lab::start(cfg).await?;
    let exchange = lab_exchange(&lab, password)?;
    // Accounts dealt round-robin to `concurrency` PowerShell runs, all started at once.
    let mut batches: Vec<Vec<AccountData>> = vec![Vec::new(); concurrency];
    for i in 0..cmdlets {
        batches[i % concurrency].push(account(&format!("user{:05}", i + 1)));
    }
    let started = Instant::now();
    let runs = batches.into_iter().map(|b| {
        let ex = exchange.clone();
        async move { ex.run_batch(Template::EnableRemoteMailbox, b).await }
    });
    for r in futures::future::join_all(runs).await {
        r.context("a lab batch failed")?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    lab.stop();
    let theoretical = cmdlets as f64 * latency.as_secs_f64() / concurrency as f64;
    let r = LabResult {
        cmdlets,
        cmdlet_latency_ms: latency.as_secs_f64() * 1e3,
        concurrency,
        elapsed_s: elapsed,
        theoretical_s: theoretical,
        overhead_pct: if theoretical > 0.0 {
            (elapsed / theoretical - 1.0) * 100.0
        } else {
            0.0
        },
    };
    if output.emit("lab", &serde_json::to_value(&r)?)? {
        println!("cmdlets  latency  concurrency  elapsed   theoretical  overhead");
        println!(
            "{:<8} {:<8} {:<12} {:<9} {:<12} {:.1} %",
            r.cmdlets,
            format!("{:.0}ms", r.cmdlet_latency_ms),
            r.concurrency,
            format!("{:.3}s", r.elapsed_s),
            format!("{:.3}s", r.theoretical_s),
            r.overhead_pct
        );
    }
    Ok(0)
}
