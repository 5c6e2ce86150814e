//! The command line (design §7). Every command that lists or shows takes `--json`.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use uuid::Uuid;

use crate::config::Settings;
use crate::event::EventKind;
use crate::publish::{EventSpec, Publisher};
use crate::store::{ActionRefused, JobFilter, JobState, Store};
use crate::telemetry::LogFormat;

#[derive(Parser, Debug)]
#[command(
    name = "mailboxd",
    version,
    about = "Provisions hybrid Exchange remote mailboxes for IAM joiner and leaver events"
)]
pub struct Cli {
    /// Configuration file (TOML). Default: ./mailboxd.toml if present. Environment
    /// variables MAILBOXD__SECTION__KEY override it.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Log output: human (terminal) or json (one object per line, for log shippers).
    #[arg(long, global = true, value_enum, default_value = "human")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon: intake, workers, admin HTTP.
    Run,
    /// Benchmarks against the local services and the lab (they print numbers).
    #[cfg(feature = "lab")]
    Bench(crate::tools::bench::BenchArgs),
    /// Test every dependency of the configuration (PostgreSQL, RabbitMQ, LDAP, WinRM, the
    /// Exchange session, SMTP) and print OK/FAIL with the reason.
    Check {
        #[arg(long)]
        json: bool,
    },
    /// Compare AD with what should be true; queue jobs for the differences.
    Reconcile {
        /// Report the differences, queue nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Apply the embedded database migrations (idempotent, advisory-locked).
    Migrate,
    /// The embedded default: lab + daemon on local PostgreSQL and RabbitMQ, sample events, a summary.
    #[cfg(feature = "lab")]
    Demo(DemoArgs),
    /// The simulated Windows side: a WinRM host emulating Exchange's recipient cmdlets.
    #[cfg(feature = "lab")]
    Lab(crate::tools::lab::LabArgs),
    /// Publish events to RabbitMQ (with publisher confirms).
    Publish(PublishArgs),
    /// See and steer the job queue.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Messages that could not be parsed.
    #[command(subcommand)]
    Poison(PoisonCommand),
    /// The alert outbox.
    #[command(subcommand)]
    Alerts(AlertsCommand),
}

impl Command {
    /// The demo prints its own progress; its daemon only speaks up about problems.
    pub fn log_level(&self) -> &'static str {
        match self {
            #[cfg(feature = "lab")]
            Command::Demo(_) => "warn",
            _ => "info",
        }
    }
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Joiner events to publish (leavers and a rehire are added).
    #[arg(long, default_value_t = 8)]
    pub events: usize,
}

#[derive(Args, Debug)]
pub struct PublishArgs {
    /// joiner or leaver (omit with --file).
    #[arg(value_parser = ["joiner", "leaver"])]
    pub kind: Option<String>,
    /// sAMAccountName of the account.
    #[arg(long)]
    pub sam: Option<String>,
    /// Event id (default: a new UUID).
    #[arg(long)]
    pub id: Option<String>,
    #[arg(long)]
    pub guid: Option<String>,
    #[arg(long)]
    pub upn: Option<String>,
    #[arg(long)]
    pub remote_routing_address: Option<String>,
    #[arg(long)]
    pub alias: Option<String>,
    #[arg(long)]
    pub primary_smtp_address: Option<String>,
    /// The DC the account was created on.
    #[arg(long)]
    pub dc: Option<String>,
    /// Publish every line of this file (JSON events, one per line) as it is.
    #[arg(long, conflicts_with_all = ["kind", "sam"])]
    pub file: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum JobsCommand {
    /// List jobs, newest first.
    List {
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        account: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// One job with its attempts.
    Show {
        id: Uuid,
        #[arg(long)]
        json: bool,
    },
    /// Run a failed, cancelled or waiting job again now.
    Retry {
        id: Uuid,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a job that has not finished.
    Cancel {
        id: Uuid,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum PoisonCommand {
    List {
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    Show {
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Publish the stored message again (optionally with a corrected body).
    Replay {
        id: i64,
        /// Replace the body with this file's content (after fixing it).
        #[arg(long)]
        body_file: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum AlertsCommand {
    List {
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
}

pub async fn main(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        #[cfg(feature = "lab")]
        Command::Lab(args) => crate::tools::lab::run(args).await,
        #[cfg(feature = "lab")]
        Command::Demo(args) => crate::tools::demo::run(args.events, cli.config.as_deref()).await,
        command => {
            let settings = Settings::load(cli.config.as_deref())?;
            with_settings(command, settings).await
        }
    }
}

async fn store(settings: &Settings) -> anyhow::Result<Store> {
    Store::connect(&settings.database.url, 2)
        .await
        .context("connecting to PostgreSQL (database.url)")
}

async fn with_settings(command: Command, settings: Settings) -> anyhow::Result<i32> {
    match command {
        Command::Run => {
            let app = crate::app::App::start(settings).await?;
            crate::signal::shutdown().await;
            tracing::info!("shutting down");
            app.stop().await;
            Ok(0)
        }
        Command::Migrate => {
            store(&settings).await?.migrate().await?;
            println!("migrations applied");
            Ok(0)
        }
        Command::Publish(args) => publish(args, &settings).await,
        #[cfg(feature = "lab")]
        Command::Bench(args) => crate::tools::bench::run(args, &settings).await,
        Command::Reconcile { dry_run, json } => reconcile(&settings, dry_run, json).await,
        Command::Check { json } => {
            let probes = crate::check::run(&settings).await;
            let failed = probes
                .iter()
                .any(|p| p.status == crate::check::Status::Fail);
            if json {
                println!("{}", serde_json::to_string_pretty(&probes)?);
            } else {
                println!("{:<40} {:<6} {:>7}  DETAIL", "CHECK", "STATUS", "MS");
                for p in &probes {
                    let status = serde_json::to_value(p.status)?;
                    println!(
                        "{:<40} {:<6} {:>7}  {}",
                        p.name,
                        status.as_str().unwrap_or_default(),
                        p.ms,
                        p.detail
                    );
                }
            }
            Ok(i32::from(failed))
        }
        Command::Jobs(cmd) => jobs(cmd, &store(&settings).await?).await,
        Command::Poison(cmd) => poison(cmd, &settings).await,
        Command::Alerts(AlertsCommand::List { limit, json }) => {
            let alerts = store(&settings).await?.list_alerts(limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&alerts)?);
            } else {
                println!(
                    "{:>6}  {:<20}  {:<10}  {:<6}  SUBJECT",
                    "ID", "CREATED", "KIND", "SENT"
                );
                for a in alerts {
                    println!(
                        "{:>6}  {:<20}  {:<10}  {:<6}  {}",
                        a.id,
                        a.created_at.format("%Y-%m-%d %H:%M:%S"),
                        a.kind,
                        if a.sent_at.is_some() { "yes" } else { "no" },
                        a.subject
                    );
                }
            }
            Ok(0)
        }
        #[cfg(feature = "lab")]
        Command::Lab(_) | Command::Demo(_) => unreachable!("handled before loading settings"),
    }
}

async fn reconcile(settings: &Settings, dry_run: bool, json: bool) -> anyhow::Result<i32> {
    let dir = crate::directory::Directory::from_config(&settings.ldap)?
        .context("reconciliation reads AD: set [ldap].urls")?;
    let store = store(settings).await?;
    store.migrate().await?;
    let lock = store.try_reconcile_lock().await?.context(
        "another replica is reconciling right now (the reconcile advisory lock is held); try again later",
    )?;
    let result = crate::reconcile::run(
        &dir,
        &store,
        &settings.reconcile,
        settings.worker.max_attempts,
        dry_run,
        !json,
    )
    .await;
    lock.release().await?;
    let r = result?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(if r.capped && !dry_run { 3 } else { 0 });
    }
    println!("{:<20} {:<24} REASON", "KIND", "ACCOUNT");
    for d in &r.differences {
        let kind = serde_json::to_value(d.kind)?;
        println!(
            "{:<20} {:<24} {}",
            kind.as_str().unwrap_or_default(),
            d.sam_account_name,
            d.reason
        );
    }
    println!(
        "run {}: scanned {} accounts on {} in {:.1}s; {} differences{}",
        r.run_id,
        r.scanned,
        r.domain_controllers.join(", "),
        r.elapsed_s,
        r.differences.len(),
        if dry_run {
            " (dry run: nothing queued)".to_owned()
        } else if r.capped {
            format!(
                "; more than reconcile.max_jobs_per_run = {}: nothing queued, an alert was raised",
                settings.reconcile.max_jobs_per_run
            )
        } else {
            format!(
                "; {} jobs queued, {} already in progress",
                r.jobs_created, r.skipped_pending
            )
        }
    );
    Ok(if r.capped && !dry_run { 3 } else { 0 })
}

async fn publish(args: PublishArgs, settings: &Settings) -> anyhow::Result<i32> {
    let publisher = Publisher::connect(&settings.amqp).await?;
    if let Some(path) = args.file {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let mut messages = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(line)
                .with_context(|| format!("{} line {}: not JSON", path.display(), i + 1))?;
            let key = match v
                .get("type")
                .and_then(|t| t.as_str())
                .and_then(EventKind::parse)
            {
                Some(k) => k.routing_key(),
                None => bail!(
                    "{} line {}: \"type\" must be joiner or leaver",
                    path.display(),
                    i + 1
                ),
            };
            let id = v.get("id").and_then(|x| x.as_str()).map(str::to_owned);
            messages.push((key, line.as_bytes(), id));
        }
        let refs: Vec<(&str, &[u8], Option<&str>)> = messages
            .iter()
            .map(|(k, b, id)| (*k, *b, id.as_deref()))
            .collect();
        let n = publisher.publish_many(&refs, 1000).await?;
        println!("published {n} events from {}", path.display());
        return Ok(0);
    }
    let (Some(kind), Some(sam)) = (args.kind.as_deref().and_then(EventKind::parse), args.sam)
    else {
        bail!("say what to publish: `mailboxd publish joiner --sam NAME` or `--file events.jsonl`");
    };
    let mut spec = EventSpec::new(kind, sam);
    if let Some(id) = args.id {
        spec.id = id;
    }
    spec.object_guid = args.guid;
    spec.user_principal_name = args.upn;
    spec.remote_routing_address = args.remote_routing_address;
    spec.alias = args.alias;
    spec.primary_smtp_address = args.primary_smtp_address;
    spec.created_on_server = args.dc;
    publisher.publish(&spec).await?;
    println!(
        "published {} event {} for {}",
        spec.kind, spec.id, spec.sam_account_name
    );
    Ok(0)
}

async fn jobs(cmd: JobsCommand, store: &Store) -> anyhow::Result<i32> {
    match cmd {
        JobsCommand::List {
            state,
            account,
            limit,
            json,
        } => {
            let state = match state {
                Some(s) => Some(JobState::parse(&s).with_context(|| {
                    format!(
                        "unknown state {s:?}; one of: {}",
                        JobState::ALL.map(JobState::as_str).join(", ")
                    )
                })?),
                None => None,
            };
            let list = store
                .list_jobs(&JobFilter {
                    state,
                    account,
                    limit,
                    ..Default::default()
                })
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(0);
            }
            println!(
                "{:<36}  {:<6}  {:<20}  {:<16}  {:>7}  {:<19}  DETAIL",
                "ID", "TYPE", "ACCOUNT", "STATE", "ATTEMPT", "UPDATED"
            );
            for j in list {
                let detail = j
                    .outcome
                    .map(|o| o.to_string())
                    .or_else(|| j.last_error.clone())
                    .unwrap_or_default();
                println!(
                    "{:<36}  {:<6}  {:<20}  {:<16}  {:>7}  {:<19}  {}",
                    j.id,
                    j.kind,
                    j.event.account.sam_account_name,
                    j.state,
                    format!("{}/{}", j.attempt, j.max_attempts),
                    j.updated_at.format("%Y-%m-%d %H:%M:%S"),
                    detail.chars().take(80).collect::<String>()
                );
            }
            Ok(0)
        }
        JobsCommand::Show { id, json } => {
            let Some((job, attempts)) = store.get_job(id).await? else {
                eprintln!("no job {id}");
                return Ok(1);
            };
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({"job": job, "attempts": attempts})
                    )?
                );
                return Ok(0);
            }
            println!("job        {}", job.id);
            println!(
                "event      {} ({}, from {})",
                job.event_id,
                job.kind,
                job.event.source.as_deref().unwrap_or("?")
            );
            println!("account    {}", job.event.account.sam_account_name);
            println!(
                "state      {}{}",
                job.state,
                job.outcome.map(|o| format!(" ({o})")).unwrap_or_default()
            );
            println!("attempts   {}/{}", job.attempt, job.max_attempts);
            println!("occurred   {}", job.occurred_at);
            println!("created    {}", job.created_at);
            if !job.state.is_terminal() {
                println!("next       {}", job.next_attempt_at);
            }
            if let Some(e) = &job.last_error {
                println!(
                    "last error [{}] {e}",
                    job.last_error_class.map_or("?", |c| c.as_str())
                );
            }
            for a in attempts {
                println!(
                    "  #{} {} → {} on {} by {}{}",
                    a.attempt,
                    a.started_at.format("%Y-%m-%d %H:%M:%S"),
                    a.outcome,
                    a.host.as_deref().unwrap_or("-"),
                    a.replica,
                    a.error_message
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default()
                );
            }
            Ok(0)
        }
        JobsCommand::Retry { id, json } => {
            report(id, "retry", store.retry_job(id, &cli_actor()).await?, json)
        }
        JobsCommand::Cancel { id, json } => report(
            id,
            "cancel",
            store.cancel_job(id, &cli_actor()).await?,
            json,
        ),
    }
}

/// Who a CLI action is recorded as: the operating-system user.
fn cli_actor() -> String {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}

fn report(id: Uuid, action: &str, r: Result<(), ActionRefused>, json: bool) -> anyhow::Result<i32> {
    if json {
        let (ok, error) = match &r {
            Ok(()) => (true, None),
            Err(ActionRefused::NotFound) => (false, Some(format!("no job {id}"))),
            Err(ActionRefused::WrongState(s)) => (false, Some(format!("the job is {s}"))),
        };
        println!(
            "{}",
            serde_json::json!({"id": id, "action": action, "ok": ok, "error": error})
        );
        return Ok(i32::from(!ok));
    }
    match r {
        Ok(()) => {
            println!("{action}: job {id} done");
            Ok(0)
        }
        Err(ActionRefused::NotFound) => {
            eprintln!("no job {id}");
            Ok(1)
        }
        Err(ActionRefused::WrongState(s)) => {
            eprintln!("cannot {action} job {id}: it is {s}");
            Ok(1)
        }
    }
}

async fn poison(cmd: PoisonCommand, settings: &Settings) -> anyhow::Result<i32> {
    let store = store(settings).await?;
    match cmd {
        PoisonCommand::List { limit, json } => {
            let list = store.list_poison(limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(0);
            }
            println!(
                "{:>6}  {:<19}  {:<18}  {:>7}  REASON",
                "ID", "RECEIVED", "ROUTING KEY", "BYTES"
            );
            for p in list {
                println!(
                    "{:>6}  {:<19}  {:<18}  {:>7}  {}",
                    p.id,
                    p.received_at.format("%Y-%m-%d %H:%M:%S"),
                    p.routing_key,
                    p.body_size,
                    p.reason
                );
            }
            Ok(0)
        }
        PoisonCommand::Show { id, json } => {
            let Some(p) = store.get_poison(id).await? else {
                eprintln!("no poison message {id}");
                return Ok(1);
            };
            let body = String::from_utf8_lossy(&p.body).into_owned();
            if json {
                let mut v = serde_json::to_value(&p)?;
                v["body"] = serde_json::json!(body);
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("poison message {} received {}", p.id, p.received_at);
                println!("reason       {}", p.reason);
                println!("routing key  {} (exchange {})", p.routing_key, p.exchange);
                println!("content type {}", p.content_type.as_deref().unwrap_or("-"));
                println!("message id   {}", p.message_id.as_deref().unwrap_or("-"));
                println!(
                    "size         {} bytes{}",
                    p.body_size,
                    if p.truncated {
                        " (stored truncated)"
                    } else {
                        ""
                    }
                );
                println!("body\n{body}");
            }
            Ok(0)
        }
        PoisonCommand::Replay {
            id,
            body_file,
            json,
        } => {
            let body = match body_file {
                Some(f) => {
                    Some(std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?)
                }
                None => None,
            };
            match crate::publish::replay_poison(&store, &settings.amqp, id, body).await {
                Ok(key) => {
                    if json {
                        println!("{}", serde_json::json!({"id": id, "replayed_to": key}));
                    } else {
                        println!("replayed poison message {id} to routing key {key}");
                    }
                    Ok(0)
                }
                Err(crate::publish::ReplayError::NotFound(_)) => {
                    eprintln!("no poison message {id}");
                    Ok(1)
                }
                Err(crate::publish::ReplayError::Truncated(_)) => {
                    bail!("poison message {id} was stored truncated; replay it with --body-file")
                }
                Err(e) => Err(e.into()),
            }
        }
    }
}
