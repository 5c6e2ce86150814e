//! The only module that speaks SQL (LISTEN included): jobs, their attempts, operator
//! actions, poison messages, the alert and outcome outboxes, reconciliation runs and the
//! cluster-wide Exchange session and cmdlet budgets, one file each.
//!
//! Jobs are claimed with `FOR UPDATE SKIP LOCKED` and a lease (`locked_by`,
//! `locked_until`), so any number of replicas can share one database. The vocabulary it
//! keeps — the job's (`crate::job`), the outcome contract's (`crate::outcome`), the alert
//! kinds — is defined beside `event`; `columns` maps those enums to their text columns,
//! and nothing here writes a state as a string.

mod alerts;
mod attempts;
mod audit;
/// Only the benchmarks (`tools`, feature `lab`) use these.
#[cfg(feature = "lab")]
mod bench;
mod budget;
mod cloud;
mod cmdlets;
mod columns;
mod failures;
mod jobs;
mod operator;
mod outcomes;
mod planner_stats;
mod poison;
mod queue_view;
mod reconcile;
mod sessions;
mod wake_ups;

pub use alerts::*;
pub use attempts::*;
pub(crate) use audit::*;
pub use budget::*;
pub use cloud::*;
pub use cmdlets::CmdletTake;
pub use failures::FailureGroup;
pub use jobs::*;
pub use operator::*;
pub use outcomes::*;
pub use poison::*;
pub use queue_view::TimeToDone;
pub(crate) use queue_view::*;
pub use reconcile::*;
pub use sessions::*;
pub use wake_ups::*;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Executor, PgPool};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0} (is PostgreSQL reachable at the configured database.url?)")]
    Db(#[from] sqlx::Error),
    #[error("migration failed: {0} (run `mailboxd migrate` and check its output)")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("invalid database URL: {0}")]
    Url(String),
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Whether PostgreSQL refused the data itself (SQLSTATE class 22, data exception: a
    /// NUL in text, `\u0000` in jsonb, a value out of range): retrying the same rows can
    /// never succeed, unlike an outage.
    pub fn is_data_exception(&self) -> bool {
        matches!(self, StoreError::Db(sqlx::Error::Database(e))
            if e.code().is_some_and(|c| c.starts_with("22")))
    }
}

/// A handle on the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    /// Which channels beside the broker the outcomes written through this handle are due on.
    channels: OutcomeChannels,
    /// A joiner's success written through this handle starts a cloud watch (`[cloud]`).
    cloud_watch: Option<WatchPolicy>,
    /// The last time to done, while it is worth keeping (`queue_view::DoneMemo`).
    done_memo: queue_view::DoneMemo,
    /// When to analyze `jobs` again after a burst of new jobs (`planner_stats`).
    analyze: planner_stats::AnalyzeKeeper,
    /// When to analyze `outcomes` again after a slow claim (`planner_stats`).
    outcome_analyze: planner_stats::SlowClaimKeeper,
}

impl Store {
    pub async fn connect(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        let opts = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Url(e.to_string()))?
            .application_name("mailboxd")
            // Every statement here is short, but with a month of history the planner's cost
            // estimates pass `jit_above_cost` and PostgreSQL spends 0.7 s compiling a
            // statement that then runs in 10 ms (measured on the overview's time to done).
            .options([("jit", "off")])
            .log_statements(tracing::log::LevelFilter::Trace);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await?;
        Ok(Store {
            pool,
            channels: OutcomeChannels::default(),
            cloud_watch: None,
            done_memo: queue_view::DoneMemo::default(),
            analyze: planner_stats::AnalyzeKeeper::default(),
            outcome_analyze: planner_stats::SlowClaimKeeper::default(),
        })
    }

    /// This handle starts a cloud watch for every joiner's success (when `[cloud]` confirms).
    pub fn watching_the_cloud(mut self, policy: Option<WatchPolicy>) -> Store {
        self.cloud_watch = policy;
        self
    }

    /// What `finish` writes besides the job: the outcome's channels, the cloud watch.
    fn outboxes(&self) -> (OutcomeChannels, Option<WatchPolicy>) {
        (self.channels, self.cloud_watch)
    }

    /// This handle writes outcomes due for IdentityIQ as well (when `[identityiq]` is set).
    pub(crate) fn delivering_to_identityiq(mut self, on: bool) -> Store {
        self.channels.identityiq = on;
        self
    }

    /// This handle writes outcomes due for the HTTP callback as well, those `due` names
    /// (when `[outcome_callback]` is set).
    pub fn delivering_to_callback(mut self, due: CallbackDue) -> Store {
        self.channels.callback = due;
        self
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies the embedded migrations (sqlx holds an advisory lock while it does, so
    /// replicas starting together do not race), then signs the failed and retrying jobs whose error
    /// has no signature yet (what migration 0025 cannot do in SQL: see `sign_failures`).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        self.sign_failures().await?;
        Ok(())
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.pool.execute("SELECT 1").await?;
        Ok(())
    }

    /// Whether the server runs autovacuum. Without it every job and outcome update leaves a
    /// dead row behind for good: claims walk them, partial indexes hold them, and the queue
    /// and the dashboard slow down as the tables grow.
    pub async fn autovacuum_on(&self) -> Result<bool, StoreError> {
        let on: String = sqlx::query_scalar("SELECT current_setting('autovacuum')")
            .fetch_one(&self.pool)
            .await?;
        Ok(on == "on")
    }
}

/// What `check` and the daemon's start say when the server does not vacuum by itself.
pub const AUTOVACUUM_OFF: &str = "autovacuum is OFF on this server: every job and outcome update leaves a dead row that is never reclaimed, and claims and the dashboard slow down as they pile up. Turn it on (autovacuum = on), or run VACUUM ANALYZE jobs, job_attempts, outcomes on a schedule";

/// A duration as the seconds `make_interval(secs => …)` takes.
fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// A connection to the server's `postgres` database, and the name of the database `url`
/// names: what creating or dropping that database needs.
async fn server_connection(url: &str) -> Result<(sqlx::PgConnection, String), StoreError> {
    let opts = PgConnectOptions::from_str(url).map_err(|e| StoreError::Url(e.to_string()))?;
    let name = opts
        .get_database()
        .ok_or_else(|| StoreError::Url("the URL names no database".into()))?
        .to_owned();
    Ok((opts.database("postgres").connect().await?, name))
}

/// A database name as a quoted SQL identifier.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Drops the database `url` names (closing its sessions) and creates it again, empty: for a
/// throwaway database such as the benchmarks', whose migrations may come from another build.
#[cfg(feature = "lab")]
pub(crate) async fn recreate_database(url: &str) -> Result<(), StoreError> {
    let (mut admin, name) = server_connection(url).await?;
    let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quoted(&name));
    admin.execute(sqlx::AssertSqlSafe(drop)).await?;
    ensure_database(url).await
}

/// Creates the database named in `url` if it does not exist (used by `demo` and tests):
/// connects to the server's `postgres` database to do it.
pub async fn ensure_database(url: &str) -> Result<(), StoreError> {
    let (mut admin, name) = server_connection(url).await?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_optional(&mut admin)
        .await?;
    if exists.is_none() {
        let create = format!("CREATE DATABASE {}", quoted(&name));
        match admin.execute(sqlx::AssertSqlSafe(create)).await {
            Ok(_) => {}
            // Another process created it between our check and our CREATE.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
