//! `mailboxd bench …`: measurements that print numbers (a table, or `--json`), run against
//! the real local services and the lab. Not tests: they assert nothing, they report.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use secrecy::SecretString;
use serde::Serialize;

use crate::config::{ExchangeMode, Settings};
use crate::event::EventKind;
use crate::exchange::{AccountData, Exchange, Template};
use crate::store::{AttemptRecord, Resolution, Store};
use lab::{self, Lab, LabConfig};

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub which: Which,
    /// One JSON object instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// Also write the result as JSON to DIR/<subcommand>.json (e.g. target/proof), for
    /// `benches/proof.sh` and the figures in docs/performance.md.
    #[arg(long, global = true, value_name = "DIR")]
    pub proof_dir: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Which {
    /// The lab's own timing: N cmdlets at a given latency, C PowerShell runs at a time,
    /// against the theoretical N × latency / C.
    Lab {
        #[arg(long, default_value_t = 100)]
        cmdlets: usize,
        #[arg(long, default_value = "50ms", value_parser = parse_dur)]
        cmdlet_latency: Duration,
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
    },
    /// Time and peak memory of a reconciliation dry run: against a lab directory of N users
    /// (started as a separate process), or with --use-config against the configured [ldap].
    Reconcile {
        #[arg(long, default_value_t = 100_000)]
        accounts: usize,
        /// Reconcile the directory in the configuration (e.g. a populated Samba AD) instead.
        #[arg(long)]
        use_config: bool,
    },
    /// End to end: N joiners published at once → all succeeded, through the daemon and a lab
    /// with Exchange-like timings; against the lab's theoretical limit and the naive way
    /// (a new session per account, one at a time).
    Burst {
        #[arg(long, default_value_t = 2000)]
        accounts: usize,
        #[arg(long, default_value = "3s", value_parser = parse_dur)]
        session: Duration,
        #[arg(long, default_value = "50ms", value_parser = parse_dur)]
        cmdlet: Duration,
        /// Exchange's PowerShellMaxConcurrency in the lab, and mailboxd's concurrency.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Accounts timed the naive way (each its own shell and Exchange session).
        #[arg(long, default_value_t = 3)]
        naive_sample: usize,
        /// Warm sessions: one long-lived PowerShell process per worker, Exchange session
        /// opened once each, fed small batches (see --batch-size).
        #[arg(long)]
        warm: bool,
        /// Accounts per batch; default: the burst split evenly over the workers (cold), 20 (warm).
        #[arg(long)]
        batch_size: Option<u32>,
        /// Through this many daemon processes sharing one database, against a lab allowing
        /// --exchange-sessions sessions (see bench_replicas).
        #[arg(long)]
        replicas: Option<usize>,
        /// With --replicas: Exchange's session limit in the lab and exchange.max_sessions.
        #[arg(long, default_value_t = 6)]
        exchange_sessions: usize,
    },
    /// Ingest rate: N events waiting in the queue → committed jobs, against a plain batched
    /// INSERT of the same rows as the ceiling.
    Ingest {
        #[arg(long, default_value_t = 50_000)]
        events: usize,
    },
    /// Per-command overhead of each WinRM mode (Basic/NTLM × HTTP/HTTPS) against the lab:
    /// a fresh shell per command, and a command in an open shell.
    Winrm {
        #[arg(long, default_value_t = 50)]
        shells: usize,
        #[arg(long, default_value_t = 200)]
        commands: usize,
        /// Also measure Kerberos against the KDC this file names (the `ad.env` that
        /// deploy/dev/samba-ad.sh writes: MAILBOXD_TEST_KRB_*).
        #[arg(long)]
        kerberos_env: Option<PathBuf>,
    },
    /// Claim-and-complete throughput of empty jobs on PostgreSQL with 1, 4 and 16 workers,
    /// and the same work done by a plain `UPDATE … SKIP LOCKED RETURNING` loop.
    Queue {
        #[arg(long, default_value_t = 20_000)]
        jobs: usize,
        #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
        workers: Vec<usize>,
        /// Jobs claimed per claim (the worker's batch).
        #[arg(long, default_value_t = 50)]
        batch: i64,
    },
    /// Resident memory of the daemon (`mailboxd run` as its own process): idle, with N jobs
    /// queued (the lab stalls, so they wait), and after they drained.
    Memory {
        #[arg(long, default_value_t = 10_000)]
        jobs: usize,
        /// Skip letting the queue drain (the third figure).
        #[arg(long)]
        no_drain: bool,
    },
    /// Single-event latency: one joiner at a time, N times, against a lab with zero latency;
    /// event published → job succeeded, p50/p95/p99.
    Latency {
        #[arg(long, default_value_t = 50)]
        events: usize,
    },
}

/// Where a result goes: a table (printed by the bench), `--json`, and `--proof-dir`.
pub(crate) struct Output {
    json: bool,
    proof_dir: Option<PathBuf>,
}

impl Output {
    /// Writes `value` to `<proof-dir>/<name>.json` if asked, prints it with `--json`.
    /// Returns whether the bench should print its table.
    pub(crate) fn emit(&self, name: &str, value: &serde_json::Value) -> anyhow::Result<bool> {
        if let Some(dir) = &self.proof_dir {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating --proof-dir {}", dir.display()))?;
            let path = dir.join(format!("{name}.json"));
            let mut text = serde_json::to_string_pretty(value)?;
            text.push('\n');
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        if self.json {
            println!("{value}");
        }
        Ok(!self.json)
    }
}

fn parse_dur(s: &str) -> Result<Duration, String> {
    crate::config::parse_duration(s)
}

pub async fn run(args: BenchArgs, settings: &Settings) -> anyhow::Result<i32> {
    let out = Output {
        json: args.json,
        proof_dir: args.proof_dir,
    };
    match args.which {
        Which::Lab {
            cmdlets,
            cmdlet_latency,
            concurrency,
        } => bench_lab(cmdlets, cmdlet_latency, concurrency, &out).await,
        Which::Queue {
            jobs,
            workers,
            batch,
        } => bench_queue(settings, jobs, &workers, batch, &out).await,
        Which::Reconcile {
            accounts,
            use_config,
        } => bench_reconcile(settings, accounts, use_config, &out).await,
        Which::Ingest { events } => bench_ingest(settings, events, &out).await,
        Which::Memory { jobs, no_drain } => bench_memory(settings, jobs, !no_drain, &out).await,
        Which::Latency { events } => bench_latency(settings, events, &out).await,
        Which::Winrm {
            shells,
            commands,
            kerberos_env,
        } => super::bench_winrm::bench_winrm(shells, commands, kerberos_env.as_deref(), &out).await,
        Which::Burst {
            accounts,
            session,
            cmdlet,
            concurrency,
            naive_sample,
            warm,
            batch_size,
            replicas: Some(replicas),
            exchange_sessions,
        } => {
            let b = super::bench_replicas::ReplicaBurst {
                accounts,
                replicas,
                concurrency,
                sessions: exchange_sessions,
                session,
                cmdlet,
                batch_size: batch_size.unwrap_or(20),
            };
            let _ = (naive_sample, warm);
            super::bench_replicas::run(settings, b, &out).await
        }
        Which::Burst {
            accounts,
            session,
            cmdlet,
            concurrency,
            naive_sample,
            warm,
            batch_size,
            replicas: None,
            ..
        } => {
            bench_burst(
                settings,
                accounts,
                session,
                cmdlet,
                concurrency,
                naive_sample,
                warm,
                batch_size,
                &out,
            )
            .await
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[allow(clippy::too_many_arguments)]
async fn bench_burst(
    settings: &Settings,
    n: usize,
    session: Duration,
    cmdlet: Duration,
    concurrency: usize,
    naive_sample: usize,
    warm: bool,
    batch_size: Option<u32>,
    output: &Output,
) -> anyhow::Result<i32> {
    let json = output.json;
    let concurrency = concurrency.max(1);
    let password = uuid::Uuid::new_v4().simple().to_string();
    let mut cfg = lab_config(n + naive_sample, session, cmdlet, &password);
    cfg.ldap_listen = Some(([127, 0, 0, 1], 0).into());
    cfg.throttle.max_sessions_per_user = concurrency;
    let lab = Lab::start(cfg).await?;
    let mut s = daemon_settings(settings, &lab, &password).await?;
    s.exchange.batch_size = batch_size.unwrap_or(if warm {
        20
    } else {
        u32::try_from(n.div_ceil(concurrency).clamp(1, 500)).unwrap_or(500)
    });
    s.exchange.batch_linger = Duration::from_secs(1);
    s.exchange.warm_sessions = if warm { concurrency } else { 0 };
    s.worker.concurrency = u32::try_from(concurrency).unwrap_or(8);
    s.worker.batch_timeout = Duration::from_secs(3600);
    let app = crate::app::App::start(s.clone()).await?;
    let publisher = crate::publish::Publisher::connect(&s.amqp).await?;
    let bodies = joiner_bodies(n);
    let started = Instant::now();
    let t0 = chrono::Utc::now();
    publish_joiners(&publisher, &bodies).await?;
    let store = app.store.clone();
    loop {
        let counts = store.count_by_state().await?;
        let done: i64 = counts
            .iter()
            .filter(|(st, _)| st.is_terminal())
            .map(|(_, c)| c)
            .sum();
        if done as usize >= n {
            break;
        }
        if !json && started.elapsed().as_secs().is_multiple_of(5) {
            eprint!(
                "\r{done}/{n} done after {:.0}s",
                started.elapsed().as_secs_f64()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let jobs = store
        .list_jobs(&crate::store::JobFilter {
            limit: i64::try_from(n).unwrap_or(i64::MAX),
            ..Default::default()
        })
        .await?;
    let succeeded = jobs
        .iter()
        .filter(|j| j.state == crate::store::JobState::Succeeded)
        .count();
    let mut lat: Vec<f64> = jobs
        .iter()
        .filter_map(|j| j.finished_at)
        .map(|f| (f - t0).num_milliseconds().max(0) as f64)
        .collect();
    lat.sort_by(|a, b| a.total_cmp(b));
    app.stop().await;

    // The naive way on a sample: one account per shell and Exchange session, in turn.
    let exchange = {
        let client = crate::app::winrm_client(&s)?;
        let mut cold = s.exchange.clone();
        cold.warm_sessions = 0;
        Exchange::new(client, &cold, s.winrm.endpoint.clone())
    };
    let naive_started = Instant::now();
    for i in 0..naive_sample {
        let sam = format!("user{:05}", n + 1 + i);
        exchange
            .run_batch(Template::EnableRemoteMailbox, vec![account(&sam)])
            .await
            .context("a naive run failed")?;
    }
    let naive_per_s = if naive_sample > 0 {
        naive_sample as f64 / naive_started.elapsed().as_secs_f64()
    } else {
        1.0 / (session + cmdlet).as_secs_f64()
    };
    let stats = lab.throttled();
    lab.stop();

    let limit_s = n as f64 * cmdlet.as_secs_f64() / concurrency as f64 + session.as_secs_f64();
    let throughput = n as f64 / elapsed;
    let limit_per_s = n as f64 / limit_s;
    let out = serde_json::json!({
        "accounts": n,
        "succeeded": succeeded,
        "elapsed_s": elapsed,
        "throughput_per_s": throughput,
        "limit_per_s": limit_per_s,
        "ratio_to_limit": throughput / limit_per_s,
        "naive_per_s": naive_per_s,
        "ratio_to_naive": throughput / naive_per_s,
        "p50_ms": percentile(&lat, 0.50),
        "p95_ms": percentile(&lat, 0.95),
        "p99_ms": percentile(&lat, 0.99),
        "session_s": session.as_secs_f64(),
        "cmdlet_ms": cmdlet.as_secs_f64() * 1e3,
        "concurrency": concurrency,
        "batch_size": s.exchange.batch_size,
        "warm_sessions": s.exchange.warm_sessions,
        "throttled_sessions": stats,
    });
    if output.emit("burst", &out)? {
        eprintln!();
        println!(
            "{n} joiners ({succeeded} succeeded) in {elapsed:.1}s = {throughput:.1}/s; limit {limit_per_s:.1}/s ({:.0} %); naive {naive_per_s:.2}/s (×{:.0}); event→done p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms",
            throughput / limit_per_s * 100.0,
            throughput / naive_per_s,
            percentile(&lat, 0.50),
            percentile(&lat, 0.95),
            percentile(&lat, 0.99)
        );
    }
    Ok(if succeeded == n { 0 } else { 1 })
}

async fn bench_ingest(settings: &Settings, n: usize, output: &Output) -> anyhow::Result<i32> {
    let amqp = bench_amqp(&settings.amqp);
    let url = bench_database_url(&settings.database.url)?;
    crate::store::ensure_database(&url).await?;
    let store = Store::connect(&url, 8).await?;
    store.migrate().await?;
    store.bench_reset().await?;

    // Declare the topology (intake does it on connect), then fill the queue.
    let publisher = crate::publish::Publisher::connect(&amqp).await?;
    {
        let conn = crate::intake::connect(&amqp.url, "mailboxd bench ingest").await?;
        let ch = conn.create_channel().await?;
        crate::intake::declare_topology(&ch, &amqp).await?;
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
    let msgs: Vec<(&str, &[u8], Option<&str>)> = bodies
        .iter()
        .map(|(id, b)| {
            (
                EventKind::Joiner.routing_key(),
                b.as_slice(),
                Some(id.as_str()),
            )
        })
        .collect();
    publisher.publish_many(&msgs, 2000).await?;
    let publish_s = started.elapsed().as_secs_f64();

    // The intake alone, from a full queue to committed jobs.
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let (connected, _) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let intake = tokio::spawn(crate::intake::run(
        amqp.clone(),
        store.clone(),
        3,
        stop_rx,
        connected,
    ));
    loop {
        let stored: i64 = store.count_by_state().await?.iter().map(|(_, c)| c).sum();
        if stored as usize >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ingest_s = started.elapsed().as_secs_f64();
    stop.send_replace(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), intake).await;

    // The ceiling: the same rows, plain batched INSERTs.
    store.bench_reset().await?;
    let started = Instant::now();
    store.bench_raw_insert(&events, 200, 3).await?;
    let raw_s = started.elapsed().as_secs_f64();
    store.bench_reset().await?;
    if let Ok(conn) = crate::intake::connect(&amqp.url, "mailboxd bench cleanup").await
        && let Ok(ch) = conn.create_channel().await
    {
        let _ = ch
            .queue_delete(amqp.queue.as_str().into(), Default::default())
            .await;
    }

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

/// A daemon's settings for one bench run against `lab` (which accepts `password`): the
/// bench database (migrated, emptied), broker names of its own, Basic auth to the lab over
/// loopback, a remote Exchange session, the lab's domain controller, no alert emails.
pub(crate) async fn daemon_settings(
    settings: &Settings,
    lab: &Lab,
    password: &str,
) -> anyhow::Result<Settings> {
    let mut s = settings.clone();
    s.database.url = bench_database_url(&settings.database.url)?;
    s.amqp = bench_amqp(&settings.amqp);
    s.winrm.endpoint = lab.endpoint();
    s.winrm.username = lab::DEFAULT_USER.into();
    s.winrm.password = Some(SecretString::from(password.to_owned()));
    s.winrm.allow_unencrypted = true;
    s.exchange.mode = ExchangeMode::Remote;
    s.exchange.connection_uris = vec!["http://lab-ex01.corp.example/PowerShell/".into()];
    s.worker.poll_interval = Duration::from_millis(200);
    s.admin.listen = "127.0.0.1:0".into();
    s.smtp.host = String::new();
    if let Some(l) = super::lab_setup::ldap_settings(
        lab,
        lab::DEFAULT_USER,
        SecretString::from(password.to_owned()),
    ) {
        s.ldap = l;
    }
    crate::store::ensure_database(&s.database.url).await?;
    let store = Store::connect(&s.database.url, 2).await?;
    store.migrate().await?;
    store.bench_reset().await?;
    Ok(s)
}

/// `n` joiners for `user00001`… as (event id, JSON body).
pub(crate) fn joiner_bodies(n: usize) -> Vec<(String, Vec<u8>)> {
    (1..=n)
        .map(|i| {
            let spec = crate::publish::EventSpec::new(EventKind::Joiner, format!("user{i:05}"));
            let body = serde_json::to_vec(&spec.to_json()).unwrap_or_default();
            (spec.id, body)
        })
        .collect()
}

/// Publishes `bodies` as joiners, with confirms.
pub(crate) async fn publish_joiners(
    publisher: &crate::publish::Publisher,
    bodies: &[(String, Vec<u8>)],
) -> anyhow::Result<()> {
    let msgs: Vec<(&str, &[u8], Option<&str>)> = bodies
        .iter()
        .map(|(id, b)| {
            (
                EventKind::Joiner.routing_key(),
                b.as_slice(),
                Some(id.as_str()),
            )
        })
        .collect();
    publisher.publish_many(&msgs, 2000).await?;
    Ok(())
}

/// Jobs in a terminal state, and in all.
async fn progress(store: &Store) -> anyhow::Result<(i64, i64)> {
    let counts = store.count_by_state().await?;
    let done = counts
        .iter()
        .filter(|(st, _)| st.is_terminal())
        .map(|(_, c)| c)
        .sum();
    Ok((done, counts.iter().map(|(_, c)| c).sum()))
}

/// Resident memory (VmRSS) and its peak (VmHWM) of process `pid`, in MiB.
fn rss_mib(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<f64> {
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb / 1024.0)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// A TOML string (JSON's escapes are TOML's).
fn toml_str(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// The daemon as its own process (`mailboxd run`), configured like `s`: a configuration
/// file and the secrets in files (never on the command line), in `dir`.
fn spawn_daemon(s: &Settings, dir: &std::path::Path) -> anyhow::Result<std::process::Child> {
    use secrecy::ExposeSecret;
    let secret_file = |name: &str, v: &Option<SecretString>| -> anyhow::Result<String> {
        let path = dir.join(name);
        std::fs::write(&path, v.as_ref().map(|p| p.expose_secret()).unwrap_or(""))?;
        Ok(toml_str(&path.to_string_lossy()))
    };
    let list = |v: &[String]| {
        format!(
            "[{}]",
            v.iter().map(|x| toml_str(x)).collect::<Vec<_>>().join(", ")
        )
    };
    let ms = |d: Duration| toml_str(&format!("{}ms", d.as_millis()));
    let toml = format!(
        "[database]\nurl = {}\n\
         [amqp]\nurl = {}\nexchange = {}\nqueue = {}\ndead_letter_exchange = {}\nqueue_expires = \"600s\"\nqueue_type = {}\nprefetch = {}\n\
         [winrm]\nendpoint = {}\nusername = {}\npassword_file = {}\nallow_unencrypted = true\n\
         [ldap]\nurls = {}\nbase_dn = {}\nbind_dn = {}\npassword_file = {}\nstarttls = false\nallow_plaintext = true\n\
         [exchange]\nmode = \"remote\"\nconnection_uris = {}\nbatch_size = {}\nbatch_linger = {}\n\
         [worker]\nconcurrency = {}\npoll_interval = {}\n\
         [admin]\nlisten = {}\n",
        toml_str(&s.database.url),
        toml_str(&s.amqp.url),
        toml_str(&s.amqp.exchange),
        toml_str(&s.amqp.queue),
        toml_str(&s.amqp.dead_letter_exchange),
        toml_str(s.amqp.queue_type.as_str()),
        s.amqp.prefetch,
        toml_str(&s.winrm.endpoint),
        toml_str(&s.winrm.username),
        secret_file("winrm-password", &s.winrm.password)?,
        list(&s.ldap.urls),
        toml_str(&s.ldap.base_dn),
        toml_str(&s.ldap.bind_dn),
        secret_file("ldap-password", &s.ldap.password)?,
        list(&s.exchange.connection_uris),
        s.exchange.batch_size,
        ms(s.exchange.batch_linger),
        s.worker.concurrency,
        ms(s.worker.poll_interval),
        toml_str(&s.admin.listen),
    );
    let config = dir.join("mailboxd.toml");
    std::fs::write(&config, toml)?;
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.arg("run")
        .arg("--config")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // Only the file configures it: no MAILBOXD_* overrides from this shell.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("MAILBOXD") {
            cmd.env_remove(k);
        }
    }
    cmd.spawn().context("starting mailboxd run")
}

/// A child process that is stopped however the bench ends (an error or a panic too), so
/// no daemon is left working on the bench database.
pub(crate) struct ChildGuard(pub(crate) std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        stop_child(&mut self.0);
    }
}

/// SIGTERM (as systemd stops it), then waits up to 30 s, then kills.
fn stop_child(child: &mut std::process::Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits (bounded) until `mailboxd run` answers on its admin listener.
async fn wait_healthy(child: &mut std::process::Child, admin: &str) -> anyhow::Result<()> {
    winrm::tls::install_provider();
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            anyhow::bail!("mailboxd run exited at start: {status}");
        }
        let ok = http
            .get(format!("http://{admin}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "mailboxd run did not answer /healthz within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// RSS target at 10,000 queued jobs (the "prove it" issue).
const RSS_TARGET_MIB: f64 = 150.0;

async fn bench_memory(
    settings: &Settings,
    n: usize,
    drain: bool,
    output: &Output,
) -> anyhow::Result<i32> {
    let password = uuid::Uuid::new_v4().simple().to_string();
    let mut cfg = lab_config(n, Duration::ZERO, Duration::ZERO, &password);
    cfg.ldap_listen = Some(([127, 0, 0, 1], 0).into());
    let lab = Lab::start(cfg).await?;
    let mut s = daemon_settings(settings, &lab, &password).await?;
    s.exchange.batch_linger = Duration::ZERO;
    s.admin.listen = format!("127.0.0.1:{}", free_port()?);
    let store = Store::connect(&s.database.url, 2).await?;
    let dir = tempfile_dir()?;
    let mut child = ChildGuard(spawn_daemon(&s, &dir)?);
    let result = async {
        wait_healthy(&mut child.0, &s.admin.listen).await?;
        let pid = child.0.id();
        // Let start-up allocations settle before the idle figure.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (idle, _) = rss_mib(pid).context("reading /proc/<pid>/status of mailboxd run")?;

        // Every WinRM request of the lab now waits: the workers hold one batch each and the
        // rest of the jobs stay queued in PostgreSQL.
        lab.set_fault(&lab::FaultRequest::Stall {
            seconds: 5.0,
            for_seconds: 0.0,
        });
        let publisher = crate::publish::Publisher::connect(&s.amqp).await?;
        let bodies = joiner_bodies(n);
        let started = Instant::now();
        publish_joiners(&publisher, &bodies).await?;
        drop(bodies);
        loop {
            let (_, stored) = progress(&store).await?;
            if stored as usize >= n {
                break;
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(600),
                "only {stored} of {n} jobs stored after 10 minutes"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let ingest_s = started.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (loaded, loaded_peak) = rss_mib(pid).context("reading VmRSS")?;
        let (done_at_load, _) = progress(&store).await?;
        let queued = n as i64 - done_at_load;

        let mut drained = None;
        let mut drain_s = None;
        if drain {
            lab.set_fault(&lab::FaultRequest::Clear);
            let started = Instant::now();
            let mut shown = Instant::now();
            loop {
                let (done, _) = progress(&store).await?;
                if done as usize >= n {
                    break;
                }
                anyhow::ensure!(
                    started.elapsed() < Duration::from_secs(900),
                    "only {done} of {n} jobs done after 15 minutes"
                );
                if !output.json && shown.elapsed() >= Duration::from_secs(5) {
                    eprint!("\rdraining: {done}/{n} done");
                    shown = Instant::now();
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            drain_s = Some(started.elapsed().as_secs_f64());
            tokio::time::sleep(Duration::from_secs(1)).await;
            drained = rss_mib(pid).map(|r| r.0);
            if !output.json {
                eprintln!();
            }
        }
        let peak = rss_mib(pid).map_or(loaded_peak, |r| r.1);
        Ok::<_, anyhow::Error>(serde_json::json!({
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
    .await;
    drop(child);
    lab.stop();
    let _ = std::fs::remove_dir_all(&dir);
    let out = result?;
    if output.emit("memory", &out)? {
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
    Ok(0)
}

/// p50 target for one event, event → done, with zero lab latency (the "prove it" issue).
const LATENCY_P50_TARGET_MS: f64 = 200.0;

async fn bench_latency(settings: &Settings, n: usize, output: &Output) -> anyhow::Result<i32> {
    let password = uuid::Uuid::new_v4().simple().to_string();
    let mut cfg = lab_config(n, Duration::ZERO, Duration::ZERO, &password);
    cfg.ldap_listen = Some(([127, 0, 0, 1], 0).into());
    let lab = Lab::start(cfg).await?;
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
            if job.state != crate::store::JobState::Succeeded {
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

/// Peak resident memory of this process so far (VmHWM), in MiB.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn bench_reconcile(
    settings: &Settings,
    accounts: usize,
    use_config: bool,
    output: &Output,
) -> anyhow::Result<i32> {
    let json = output.json;
    let mut cfg_ldap = settings.ldap.clone();
    let mut lab_child = None;
    let dir = tempfile_dir()?;
    if !use_config {
        // The lab in its own process, so the peak memory measured here is mailboxd's alone.
        let file = dir.join("accounts.jsonl");
        let mut text = String::with_capacity(accounts * 80);
        for i in 0..accounts {
            // 90 % fine, 5 % missing a mailbox, 5 % leavers still visible.
            let line = match i % 20 {
                0 => format!("{{\"sam_account_name\":\"rc{i:07}\",\"synced\":true}}"),
                1 => format!(
                    "{{\"sam_account_name\":\"rc{i:07}\",\"recipient\":\"remote\",\"disabled\":true}}"
                ),
                _ => format!("{{\"sam_account_name\":\"rc{i:07}\",\"recipient\":\"remote\"}}"),
            };
            text.push_str(&line);
            text.push('\n');
        }
        std::fs::write(&file, text)?;
        let (http, ldap) = (free_port()?, free_port()?);
        let password = uuid::Uuid::new_v4().simple().to_string();
        let child = std::process::Command::new(std::env::current_exe()?)
            .args(["lab", "--accounts", "0", "--accounts-file"])
            .arg(&file)
            .args(["--listen", &format!("127.0.0.1:{http}")])
            .args(["--ldap-listen", &format!("127.0.0.1:{ldap}")])
            .env("MAILBOXD_LAB_PASSWORD", &password)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting the lab")?;
        lab_child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while tokio::net::TcpStream::connect(("127.0.0.1", ldap))
            .await
            .is_err()
        {
            anyhow::ensure!(Instant::now() < deadline, "the lab did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        cfg_ldap = crate::config::Ldap {
            urls: vec![format!("ldap://127.0.0.1:{ldap}")],
            base_dn: lab::directory::LAB_BASE_DN.into(),
            bind_dn: format!("{}@{}", lab::DEFAULT_USER, lab::directory::LAB_DOMAIN),
            password: Some(SecretString::from(password)),
            starttls: false,
            allow_plaintext: true,
            ..crate::config::Ldap::default()
        };
    }
    let result = async {
        let directory = crate::directory::Directory::from_config(&cfg_ldap)?
            .context("no [ldap].urls configured")?;
        let url = bench_database_url(&settings.database.url)?;
        crate::store::ensure_database(&url).await?;
        let store = Store::connect(&url, 4).await?;
        store.migrate().await?;
        let before = peak_rss_mib();
        let mut rcfg = settings.reconcile.clone();
        rcfg.max_jobs_per_run = usize::MAX;
        let report = crate::reconcile::run(&directory, &store, &rcfg, 3, true, !json).await?;
        Ok::<_, anyhow::Error>((report, before, peak_rss_mib()))
    }
    .await;
    if let Some(mut c) = lab_child {
        let _ = c.kill();
        let _ = c.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
    let (report, before, after) = result?;
    let out = serde_json::json!({
        "directory": if use_config { "configured" } else { "lab" },
        "scanned": report.scanned,
        "differences": report.differences.len(),
        "elapsed_s": report.elapsed_s,
        "accounts_per_s": report.scanned as f64 / report.elapsed_s.max(1e-9),
        "peak_rss_mib_before": before,
        "peak_rss_mib": after,
    });
    if output.emit("reconcile", &out)? {
        println!(
            "reconciled {} accounts ({} differences) in {:.2}s = {:.0}/s; peak RSS {:.1} MiB (before the scan {:.1} MiB)",
            report.scanned,
            report.differences.len(),
            report.elapsed_s,
            report.scanned as f64 / report.elapsed_s.max(1e-9),
            after.unwrap_or_default(),
            before.unwrap_or_default()
        );
    }
    Ok(0)
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!("mailboxd-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

#[derive(Serialize)]
struct LabResult {
    cmdlets: usize,
    cmdlet_latency_ms: f64,
    concurrency: usize,
    elapsed_s: f64,
    theoretical_s: f64,
    overhead_pct: f64,
}

async fn bench_lab(
    cmdlets: usize,
    latency: Duration,
    concurrency: usize,
    output: &Output,
) -> anyhow::Result<i32> {
    let concurrency = concurrency.max(1);
    let password = uuid::Uuid::new_v4().simple().to_string();
    let mut cfg = lab_config(cmdlets, Duration::ZERO, latency, &password);
    cfg.max_shells_per_user = concurrency.max(30);
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

/// A lab on a free loopback port with Exchange-like timings and a fresh password.
pub(crate) fn lab_config(
    accounts: usize,
    session: Duration,
    cmdlet: Duration,
    password: &str,
) -> LabConfig {
    LabConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        user: lab::DEFAULT_USER.into(),
        password: SecretString::from(password.to_owned()),
        ldap_password: None,
        accounts: lab::directory::seeded(accounts),
        latency: lab::Latency {
            session,
            cmdlet,
            round_trip: Duration::ZERO,
        },
        max_shells_per_user: 30,
        ldap_listen: None,
        throttle: Default::default(),
        faults: Vec::new(),
        max_envelope_kb: 500,
        tls_listen: None,
        tls_cert_out: None,
        cbt_hardening: Default::default(),
        kerberos: None,
    }
}

/// Broker names of this run only (they expire when unused), never the real queue.
fn bench_amqp(base: &crate::config::Amqp) -> crate::config::Amqp {
    let tag = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    crate::config::Amqp {
        exchange: format!("mailboxd.bench.{tag}"),
        queue: format!("mailboxd.bench.{tag}"),
        dead_letter_exchange: format!("mailboxd.bench.{tag}.dlx"),
        queue_expires: Some(Duration::from_secs(600)),
        ..base.clone()
    }
}

/// mailboxd's Exchange client pointed at a lab (Basic over loopback HTTP, no session).
fn lab_exchange(lab: &Lab, password: String) -> anyhow::Result<Exchange> {
    let mut s = Settings::default();
    s.winrm.endpoint = lab.endpoint();
    s.winrm.username = lab::DEFAULT_USER.into();
    s.winrm.password = Some(SecretString::from(password));
    s.winrm.allow_unencrypted = true;
    s.exchange.mode = ExchangeMode::None;
    let client = crate::app::winrm_client(&s)?;
    Ok(Exchange::new(client, &s.exchange, s.winrm.endpoint.clone()))
}

fn account(sam: &str) -> AccountData {
    AccountData {
        job_id: uuid::Uuid::new_v4(),
        identity: sam.to_owned(),
        sam_account_name: sam.to_owned(),
        domain_controller: None,
        remote_routing_address: Some(format!("{sam}@tenant.mail.onmicrosoft.com")),
        alias: None,
        primary_smtp_address: None,
        archive: false,
    }
}

#[derive(Serialize)]
struct QueueRow {
    workers: usize,
    mailboxd_jobs_per_s: f64,
    plain_jobs_per_s: f64,
    ratio: f64,
}

async fn bench_queue(
    settings: &Settings,
    jobs: usize,
    workers: &[usize],
    batch: i64,
    output: &Output,
) -> anyhow::Result<i32> {
    let url = bench_database_url(&settings.database.url)?;
    crate::store::ensure_database(&url).await?;
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
    let out = serde_json::json!({ "jobs": jobs, "batch": batch, "rows": rows });
    if output.emit("queue", &out)? {
        println!("{jobs} empty jobs, claimed {batch} at a time (database {url})");
        println!("workers  mailboxd jobs/s  plain UPDATE…RETURNING jobs/s  ratio");
        for r in &rows {
            println!(
                "{:<8} {:<16.0} {:<30.0} {:.2}",
                r.workers, r.mailboxd_jobs_per_s, r.plain_jobs_per_s, r.ratio
            );
        }
    }
    Ok(0)
}

/// The same server as `database.url`, database `mailboxd_bench`: never the real queue.
fn bench_database_url(url: &str) -> anyhow::Result<String> {
    let mut u = url::Url::parse(url).context("database.url")?;
    u.set_path("/mailboxd_bench");
    Ok(u.to_string())
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
                outcome: crate::store::JobOutcome::Enabled,
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
