//! `mailboxd bench latency`: one joiner at a time, N times, against a lab with zero
//! latency; event published → job succeeded, p50/p95/p99.

use std::time::{Duration, Instant};

use super::output::{Output, percentile};
use super::support::{daemon_settings, lab_config};
use crate::config::Settings;
use crate::event::EventKind;
use crate::job::JobState;
use lab::Lab;

/// p50 target for one event, event → done, with zero lab latency (the "prove it" issue).
const LATENCY_P50_TARGET_MS: f64 = 200.0;

pub(crate) async fn run(settings: &Settings, n: usize, output: &Output) -> anyhow::Result<i32> {
    let password = uuid::Uuid::new_v4().simple().to_string();
    let lab = Lab::start(lab_config(n, Duration::ZERO, Duration::ZERO, &password)).await?;
    let mut s = daemon_settings(settings, &lab, &password).await?;
    s.exchange.batch_linger = Duration::ZERO;
    let app = crate::app::App::start(s.clone()).await?;
    let publisher = crate::publish::Publisher::connect(&s.amqp).await?;
    let result = async {
        let mut lat = Vec::with_capacity(n);
        let mut failed = 0;
        for i in 1..=n {
            let spec = crate::publish::EventSpec::new(EventKind::Joiner, format!("user{i:05}"));
            let t0 = chrono::Utc::now();
            let started = Instant::now();
            publisher.publish(&spec).await?;
            let job = loop {
                if let Some(j) = app.store.job_by_event(&spec.id).await?
                    && j.state.is_terminal()
                {
                    break j;
                }
                anyhow::ensure!(
                    started.elapsed() < Duration::from_secs(60),
                    "event {i} not done after 60 s"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            };
            if job.state != JobState::Succeeded {
                failed += 1;
            }
            let ms = job.finished_at.map_or_else(
                || started.elapsed().as_secs_f64() * 1e3,
                |f| (f - t0).num_microseconds().unwrap_or(0).max(0) as f64 / 1e3,
            );
            lat.push(ms);
        }
        Ok::<_, anyhow::Error>((lat, failed))
    }
    .await;
    app.stop().await;
    lab.stop();
    let (mut lat, failed) = result?;
    lat.sort_by(|a, b| a.total_cmp(b));
    let mean = lat.iter().sum::<f64>() / lat.len().max(1) as f64;
    let out = serde_json::json!({
        "events": n,
        "failed": failed,
        "lab_latency_ms": 0,
        "p50_ms": percentile(&lat, 0.50),
        "p95_ms": percentile(&lat, 0.95),
        "p99_ms": percentile(&lat, 0.99),
        "max_ms": lat.last().copied().unwrap_or(0.0),
        "mean_ms": mean,
        "target_p50_ms": LATENCY_P50_TARGET_MS,
        "within_target": percentile(&lat, 0.50) < LATENCY_P50_TARGET_MS,
    });
    if output.emit("latency", &out)? {
        println!(
            "{n} joiners one at a time, lab latency 0: event→done p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms, max {:.0} ms (target p50 < {LATENCY_P50_TARGET_MS:.0} ms){}",
            percentile(&lat, 0.50),
            percentile(&lat, 0.95),
            percentile(&lat, 0.99),
            lat.last().copied().unwrap_or(0.0),
            if failed > 0 {
                format!("; {failed} failed")
            } else {
                String::new()
            }
        );
    }
    Ok(i32::from(failed > 0))
}
