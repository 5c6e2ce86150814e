//! `mailboxd bench …`: measurements that print numbers (a table, or `--json`), run against
//! the real local services and the lab. Not tests: they assert nothing, they report.
//!
//! One file per benchmark; `output` (where results go, percentiles), `support` (the lab,
//! the daemon's settings, the bench's own database and broker names) and `process`
//! (the daemon as a child process) are what they share.

mod burst;
mod history;
mod ingest;
mod lab;
mod latency;
mod load;
mod memory;
mod output;
mod process;
mod queue;
mod reconcile;
mod replicas;
mod scrape;
mod support;
mod winrm;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::config::Settings;
use output::Output;

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
        /// --exchange-sessions sessions (see bench/replicas.rs).
        #[arg(long)]
        replicas: Option<usize>,
        /// With --replicas: Exchange's session limit in the lab and exchange.max_sessions.
        #[arg(long, default_value_t = 6)]
        exchange_sessions: usize,
        /// With --replicas: exchange.max_sessions of the daemons, when it should not match
        /// the lab (e.g. 12, the default, to see the limit learned from Exchange's refusal).
        #[arg(long)]
        max_sessions: Option<usize>,
        /// With --replicas: Exchange's cmdlet budget in the lab (PowerShellMaxCmdlets), and
        /// exchange.max_cmdlets of the daemons, which pace their batches to it.
        #[arg(long, requires_all = ["cmdlet_window", "replicas"])]
        max_cmdlets: Option<u32>,
        /// With --max-cmdlets: its window (PowerShellMaxCmdletsTimePeriod, exchange.cmdlet_window).
        #[arg(long, value_parser = parse_dur, requires = "max_cmdlets")]
        cmdlet_window: Option<Duration>,
        /// Exit 1 if the daemon's throughput is below this fraction of the lab's limit
        /// measured in the same run (the CI guard: a ratio, never an absolute time).
        #[arg(long, conflicts_with = "replicas")]
        min_fraction: Option<f64>,
    },
    /// Ingest rate: N events waiting in the queue → committed jobs, against a plain batched
    /// INSERT of the same rows as the ceiling.
    Ingest {
        #[arg(long, default_value_t = 50_000)]
        events: usize,
    },
    /// Per-command overhead of each WinRM mode (Basic/NTLM/CredSSP × HTTP/HTTPS, Kerberos with --kerberos-env) against the lab:
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
        /// Exit 1 if claim + finish runs below this fraction of the plain loop measured in
        /// the same run (the CI guard: a ratio, never an absolute time).
        #[arg(long)]
        min_ratio: Option<f64>,
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
    /// An initial load: N joiners at once through `mailboxd run` (its own process) and a
    /// lab whose Exchange is fast but allows --concurrency sessions: the pace against the
    /// lab's limit, the daemon's memory throughout, the dashboard's answer times meanwhile.
    Load(load::Load),
    /// What `/metrics` and the dashboard overview read, timed (p50/p95 of --scrapes runs)
    /// with 10k, 100k and 1M jobs of history in the table (filled set-based).
    Scrape {
        #[arg(long, default_value_t = 1_000_000)]
        jobs: usize,
        #[arg(long, default_value_t = 20)]
        scrapes: usize,
    },
    /// Every dashboard page and API list (p50/p95 over HTTP) and the drain of --joiners new
    /// joiners, with an empty table and with --history finished jobs (4 % failed) in it.
    History {
        #[arg(long, default_value_t = 1_000_000)]
        history: usize,
        #[arg(long, default_value_t = 1_000)]
        joiners: usize,
        #[arg(long, default_value_t = 20)]
        requests: usize,
    },
    /// Single-event latency: one joiner at a time, N times, against a lab with zero latency;
    /// event published → job succeeded, p50/p95/p99.
    Latency {
        #[arg(long, default_value_t = 50)]
        events: usize,
    },
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
        } => self::lab::run(cmdlets, cmdlet_latency, concurrency, &out).await,
        Which::Queue {
            jobs,
            workers,
            batch,
            min_ratio,
        } => queue::run(settings, jobs, &workers, batch, min_ratio, &out).await,
        Which::Reconcile {
            accounts,
            use_config,
        } => reconcile::run(settings, accounts, use_config, &out).await,
        Which::Ingest { events } => ingest::run(settings, events, &out).await,
        Which::Memory { jobs, no_drain } => memory::run(settings, jobs, !no_drain, &out).await,
        Which::Load(l) => load::run(settings, &l, &out).await,
        Which::Scrape { jobs, scrapes } => scrape::run(settings, jobs, scrapes, &out).await,
        Which::History {
            history,
            joiners,
            requests,
        } => history::run(settings, history, joiners, requests, &out).await,
        Which::Latency { events } => latency::run(settings, events, &out).await,
        Which::Winrm {
            shells,
            commands,
            kerberos_env,
        } => self::winrm::run(shells, commands, kerberos_env.as_deref(), &out).await,
        Which::Burst {
            accounts,
            session,
            cmdlet,
            concurrency,
            batch_size,
            replicas: Some(replicas),
            exchange_sessions,
            max_sessions,
            max_cmdlets,
            cmdlet_window,
            ..
        } => {
            let b = replicas::ReplicaBurst {
                accounts,
                replicas,
                concurrency,
                sessions: exchange_sessions,
                max_sessions: max_sessions.unwrap_or(exchange_sessions),
                session,
                cmdlet,
                batch_size: batch_size.unwrap_or(20),
                cmdlet_budget: max_cmdlets.zip(cmdlet_window),
            };
            replicas::run(settings, b, &out).await
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
            min_fraction,
            ..
        } => {
            let burst = burst::Burst {
                accounts,
                session,
                cmdlet,
                concurrency,
                naive_sample,
                warm,
                batch_size,
                min_fraction,
            };
            burst::run(settings, &burst, &out).await
        }
    }
}
