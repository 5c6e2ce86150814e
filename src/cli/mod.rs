//! The command line (README.md lists the commands). Every command that lists or shows takes
//! `--json`.
//!
//! This file is the grammar (clap) and the dispatch; each command group that does more
//! than print one listing has a file of its own, holding its arguments with its code.

mod jobs;
mod outcomes;
mod poison;
mod publish;
mod reconcile;
mod table;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::check::{Probe, Status};
use crate::config::Settings;
use crate::directory::Directory;
use crate::store::Store;
use crate::telemetry::LogFormat;
pub use jobs::JobsCommand;
pub use poison::PoisonCommand;
pub use publish::PublishArgs;
use table::{Align, Table};

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

// Parsed once per process and matched at once: the size of its largest variant (`publish`'s
// flags) costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
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
    Lab(Box<crate::tools::lab::LabArgs>),
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
    /// The outcome outbox: what the IAM system was told, what still waits for the broker.
    #[command(subcommand)]
    Outcomes(outcomes::OutcomesCommand),
    /// The audit trail: every operator action from the dashboard, the API and the CLI.
    #[command(subcommand)]
    Audit(AuditCommand),
}

impl Command {
    /// The demo prints its own progress; its daemon only speaks up about problems. `check`
    /// looks at the queue passively: a queue that does not exist yet makes the broker close
    /// the channel (404), which lapin logs as an ERROR above the table, while the table
    /// reports it as the normal answer it is (and any other failure as FAIL).
    pub fn log_level(&self) -> &'static str {
        match self {
            #[cfg(feature = "lab")]
            Command::Demo(_) => "warn",
            Command::Check { .. } => "info,lapin::channel=off",
            _ => "info",
        }
    }
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Joiner events to publish (leavers, a rehire, a room, an equipment and a shared
    /// mailbox, and a mover are added).
    #[arg(long, default_value_t = 8)]
    pub events: usize,
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Newest first: when, who, what, on what, how it ended, from where.
    List {
        /// Only this actor's actions (e.g. `dashboard:CORP\jdoe`, `api:deploy-bot`).
        #[arg(long)]
        actor: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
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
        Command::Lab(args) => crate::tools::lab::run(*args).await,
        #[cfg(feature = "lab")]
        Command::Demo(args) => crate::tools::demo::run(args.events, cli.config.as_deref()).await,
        command => {
            let settings = Settings::load(cli.config.as_deref())?;
            with_settings(command, settings).await
        }
    }
}

async fn store(settings: &Settings) -> anyhow::Result<Store> {
    Ok(Store::connect(&settings.database.url, 2)
        .await
        .context("connecting to PostgreSQL (database.url)")?
        .delivering_to_identityiq(settings.identityiq.base_url.is_some())
        .delivering_to_callback(crate::app::callback_due(settings)))
}

async fn with_settings(command: Command, settings: Settings) -> anyhow::Result<i32> {
    match command {
        Command::Run => run(settings).await,
        Command::Migrate => {
            store(&settings).await?.migrate().await?;
            println!("migrations applied");
            Ok(0)
        }
        Command::Publish(args) => publish::run(args, &settings).await,
        #[cfg(feature = "lab")]
        Command::Bench(args) => crate::tools::bench::run(args, &settings).await,
        Command::Reconcile { dry_run, json } => {
            let dir = Directory::from_config(&settings.ldap)?
                .context("reconciliation reads AD: set [ldap].urls")?;
            let store = store(&settings).await?;
            reconcile::run(&dir, &store, &settings, dry_run, json).await
        }
        Command::Check { json } => check(&settings, json).await,
        Command::Jobs(cmd) => jobs::run(cmd, &store(&settings).await?).await,
        Command::Poison(cmd) => poison::run(cmd, &store(&settings).await?, &settings).await,
        Command::Outcomes(cmd) => outcomes::run(cmd, &store(&settings).await?).await,
        Command::Alerts(AlertsCommand::List { limit, json }) => {
            alerts(&store(&settings).await?, limit, json).await
        }
        Command::Audit(AuditCommand::List { actor, limit, json }) => {
            audit(&store(&settings).await?, actor.as_deref(), limit, json).await
        }
        #[cfg(feature = "lab")]
        Command::Lab(_) | Command::Demo(_) => unreachable!("handled before loading settings"),
    }
}

/// `mailboxd run`: the daemon, until SIGTERM or Ctrl-C.
async fn run(settings: Settings) -> anyhow::Result<i32> {
    let app = crate::app::App::start(settings).await?;
    crate::signal::stop_requested().await;
    tracing::info!("shutting down");
    app.stop().await;
    Ok(0)
}

/// `mailboxd check`: exit 1 when a probe failed.
async fn check(settings: &Settings, json: bool) -> anyhow::Result<i32> {
    let probes = crate::check::run(settings).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&probes)?);
    } else {
        print_probes(&probes)?;
    }
    Ok(i32::from(probes.iter().any(|p| p.status == Status::Fail)))
}

fn print_probes(probes: &[Probe]) -> anyhow::Result<()> {
    let mut t = Table::new(&[
        ("CHECK", Align::Left),
        ("STATUS", Align::Left),
        ("MS", Align::Right),
        ("DETAIL", Align::Left),
    ]);
    for p in probes {
        let status = serde_json::to_value(p.status)?;
        t.row(vec![
            p.name.clone(),
            status.as_str().unwrap_or_default().to_owned(),
            p.ms.to_string(),
            p.detail.clone(),
        ]);
    }
    print!("{}", t.render());
    Ok(())
}

async fn alerts(store: &Store, limit: i64, json: bool) -> anyhow::Result<i32> {
    let alerts = store.list_alerts(limit).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&alerts)?);
        return Ok(0);
    }
    let mut t = Table::new(&[
        ("ID", Align::Right),
        ("CREATED", Align::Left),
        ("KIND", Align::Left),
        ("SENT", Align::Left),
        ("SUBJECT", Align::Left),
    ]);
    for a in &alerts {
        t.row(vec![
            a.id.to_string(),
            a.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            a.kind.to_string(),
            if a.sent_at.is_some() { "yes" } else { "no" }.to_owned(),
            a.subject.clone(),
        ]);
    }
    print!("{}", t.render());
    let total = store.count_alerts().await?;
    if let Some(more) = table::more(alerts.len() as i64, total, "use a larger --limit") {
        println!("{more}");
    }
    Ok(0)
}

async fn audit(store: &Store, actor: Option<&str>, limit: i64, json: bool) -> anyhow::Result<i32> {
    let rows = store.list_audit(actor, limit.clamp(1, 100_000)).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(0);
    }
    let mut t = Table::new(&[
        ("AT", Align::Left),
        ("ACTOR", Align::Left),
        ("ACTION", Align::Left),
        ("SUBJECT", Align::Left),
        ("OUTCOME", Align::Left),
        ("CLIENT", Align::Left),
    ]);
    for r in &rows {
        t.row(vec![
            r.at.format("%Y-%m-%d %H:%M:%S").to_string(),
            r.actor.clone(),
            r.action.clone(),
            r.subject.clone(),
            r.outcome.clone(),
            r.client.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    print!("{}", t.render());
    Ok(0)
}
