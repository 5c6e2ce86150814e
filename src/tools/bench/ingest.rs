//! `mailboxd bench ingest`: N events waiting in the queue → committed jobs, against a plain
//! batched INSERT of the same rows as the ceiling.

use std::time::{Duration, Instant};

use super::output::Output;
use super::support::{bench_amqp, bench_database_url};
use crate::config::{Amqp, Settings};
use crate::event::{Event, EventKind};
use crate::store::Store;

pub(crate) async fn run(settings: &Settings, n: usize, output: &Output) -> anyhow::Result<i32> {
    let amqp = bench_amqp(&settings.amqp);
    let url = bench_database_url(&settings.database.url)?;
    crate::store::ensure_database(&url).await?;
    let store = Store::connect(&url, 8).await?;
    store.migrate().await?;
    store.bench_reset().await?;

    let (events, publish_s) = fill_queue(&amqp, n).await?;
    let ingest_s = drain_queue(&amqp, &store, n).await?;
    // The ceiling: the same rows, plain batched INSERTs.
    store.bench_reset().await?;
    let started = Instant::now();
    store.bench_raw_insert(&events, 200, 3).await?;
    let raw_s = started.elapsed().as_secs_f64();
    store.bench_reset().await?;
    delete_queue(&amqp).await;

    let ingest = n as f64 / ingest_s;
    let raw = n as f64 / raw_s;
    let out = serde_json::json!({
        "events": n,
        "publish_s": publish_s,
        "ingest_s": ingest_s,
        "ingest_per_s": ingest,
        "raw_insert_s": raw_s,
        "raw_insert_per_s": raw,
        "ratio": ingest / raw,
    });
    if output.emit("ingest", &out)? {
        println!("events  ingest (queue → jobs)   raw batched INSERT   ratio");
        println!(
            "{n:<7} {:<25} {:<20} {:.2}",
            format!("{ingest:.0}/s ({ingest_s:.2}s)"),
            format!("{raw:.0}/s ({raw_s:.2}s)"),
            ingest / raw
        );
        println!("(publishing {n} events with confirms took {publish_s:.2}s)");
    }
    Ok(0)
}

/// Declares the topology (intake does it on connect), then publishes `n` joiners with
/// confirms: the events as the intake will parse them, and the seconds publishing took.
async fn fill_queue(amqp: &Amqp, n: usize) -> anyhow::Result<(Vec<Event>, f64)> {
    let publisher = crate::publish::Publisher::connect(amqp).await?;
    {
        let conn = crate::broker::connect(&amqp.url, "mailboxd bench ingest").await?;
        let ch = conn.create_channel().await?;
        crate::broker::declare_topology(&ch, amqp).await?;
    }
    let mut bodies = Vec::with_capacity(n);
    let mut events = Vec::with_capacity(n);
    for i in 0..n {
        let spec = crate::publish::EventSpec::new(EventKind::Joiner, format!("ing{i:07}"));
        let body = serde_json::to_vec(&spec.to_json())?;
        events.push(crate::event::parse(&body, None, None, "ad.user.created")?);
        bodies.push((spec.id, body));
    }
    let started = Instant::now();
    super::support::publish_joiners(&publisher, &bodies).await?;
    Ok((events, started.elapsed().as_secs_f64()))
}

/// The intake alone, from a full queue to `n` committed jobs: the seconds it took.
async fn drain_queue(amqp: &Amqp, store: &Store, n: usize) -> anyhow::Result<f64> {
    let (stop, stop_rx) = crate::shutdown::Shutdown::new();
    let (connected, _) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let report = crate::intake::Reporting {
        connected,
        health: crate::health::Health::new(amqp.stall_after),
    };
    let intake = crate::intake::spawn(
        crate::intake::Deps {
            amqp: amqp.clone(),
            store: store.clone(),
            max_attempts: 3,
            report,
        },
        stop_rx,
    );
    loop {
        let stored: i64 = store.count_by_state().await?.iter().map(|(_, c)| c).sum();
        if stored as usize >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ingest_s = started.elapsed().as_secs_f64();
    stop.stop();
    let _ = tokio::time::timeout(Duration::from_secs(5), intake).await;
    Ok(ingest_s)
}

/// Deletes the bench's queue: it held this run's events only.
async fn delete_queue(amqp: &Amqp) {
    if let Ok(conn) = crate::broker::connect(&amqp.url, "mailboxd bench cleanup").await
        && let Ok(ch) = conn.create_channel().await
    {
        let _ = ch
            .queue_delete(amqp.queue.as_str().into(), Default::default())
            .await;
    }
}
