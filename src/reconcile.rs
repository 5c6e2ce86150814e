//! Reconciliation: compare Active Directory with what should be true and turn every
//! difference into an ordinary job (same store path as events: dedup, supersede, one
//! running job per account), with source `reconcile`.
//!
//! Rule: an enabled user in scope should have a visible remote mailbox (of the type it has: a
//! hidden room is made visible as a room); a disabled user in scope should have its remote
//! user mailbox hidden, or converted to shared under `leaver.action = "shared"`. A shared,
//! room or equipment mailbox whose account is disabled is how Exchange makes them, not a
//! missed leaver. On-premises mailboxes are reported and never touched. A mailbox still
//! hidden after its start date, whose step to make it visible failed or was cancelled, has
//! that step queued again (the store knows the start dates, AD whether it is still hidden).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::Serialize;

use crate::alert::NewAlert;
use crate::config::{self, DEFAULT_RECONCILE_FILTER};
use crate::directory::{Account, Directory, DirectoryError, RecipientType};
use crate::event::{self, AccountName, Event, EventKind, MailboxType};
use crate::store::{Inserted, RunRecord, Store, StoreError};

pub mod schedule;

/// Differences kept in the run record and shown to operators (all are counted).
const SAMPLE: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiffKind {
    /// Enabled user without a remote mailbox: a joiner the events missed.
    MissingMailbox,
    /// Enabled user whose remote mailbox is hidden: a rehire the events missed.
    HiddenButEnabled,
    /// Disabled user whose remote user mailbox is still in the address lists: a missed leaver.
    VisibleLeaver,
    /// Disabled user whose remote mailbox is still a user mailbox under
    /// `leaver.action = "shared"`: a leaver not kept as shared yet.
    UnsharedLeaver,
    /// Has an on-premises mailbox: reported only.
    OnPremMailbox,
    /// A remote mailbox still hidden after its joiner's start date, whose step
    /// (`make_visible`) failed or was cancelled: the step is queued again.
    OverdueStartDate,
}

impl DiffKind {
    fn job(self) -> Option<EventKind> {
        match self {
            DiffKind::MissingMailbox | DiffKind::HiddenButEnabled => Some(EventKind::Joiner),
            DiffKind::VisibleLeaver | DiffKind::UnsharedLeaver => Some(EventKind::Leaver),
            DiffKind::OnPremMailbox | DiffKind::OverdueStartDate => None,
        }
    }

    /// A job is queued for it: an event's, or a step run again.
    fn actionable(self) -> bool {
        self.job().is_some() || self == DiffKind::OverdueStartDate
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    pub kind: DiffKind,
    pub sam_account_name: String,
    pub object_guid: Option<uuid::Uuid>,
    pub distinguished_name: String,
    /// Another name an event may have used for the account (with the DN and the objectGUID):
    /// a job queued under it counts as the account's (`keys`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_principal_name: Option<String>,
    pub reason: String,
    /// The remote mailbox's type as AD shows it: what a joiner it becomes asks for, so a
    /// hidden room is made visible as a room, never converted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mailbox_type: Option<MailboxType>,
    /// An overdue start date: the step to run again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<uuid::Uuid>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub run_id: i64,
    pub dry_run: bool,
    pub domain_controllers: Vec<String>,
    pub scanned: usize,
    pub differences: Vec<Difference>,
    pub by_kind: BTreeMap<DiffKind, usize>,
    pub jobs_created: usize,
    /// Differences whose account already has a job in progress.
    pub skipped_pending: usize,
    /// More differences than `max_jobs_per_run`: nothing was queued.
    pub capped: bool,
    pub elapsed_s: f64,
}

/// What one account needs under `[leaver]`, if anything.
pub fn difference(a: &Account, leaver: config::Leaver) -> Option<Difference> {
    let remote_type = (a.recipient == RecipientType::RemoteMailbox)
        .then(|| {
            a.recipient_type_details
                .and_then(MailboxType::from_type_details)
        })
        .flatten();
    let user = remote_type == Some(MailboxType::User);
    let (kind, reason) = match (a.disabled, a.recipient, a.hidden) {
        (_, RecipientType::OnPremMailbox, _) => (
            DiffKind::OnPremMailbox,
            "has an on-premises mailbox; mailboxd never converts it".to_owned(),
        ),
        (false, RecipientType::None | RecipientType::MailUser, _) => (
            DiffKind::MissingMailbox,
            "enabled user without a remote mailbox".to_owned(),
        ),
        (false, RecipientType::RemoteMailbox, true) if remote_type.is_some() => (
            DiffKind::HiddenButEnabled,
            "enabled user whose remote mailbox is hidden from the address lists".to_owned(),
        ),
        (true, RecipientType::RemoteMailbox, _) if user && leaver.to_shared() => (
            DiffKind::UnsharedLeaver,
            "disabled user whose remote mailbox is still a user mailbox (leaver.action = \"shared\")"
                .to_owned(),
        ),
        (true, RecipientType::RemoteMailbox, false) if user => (
            DiffKind::VisibleLeaver,
            "disabled user whose remote mailbox is still in the address lists".to_owned(),
        ),
        _ => return None,
    };
    Some(Difference {
        kind,
        sam_account_name: a.sam_account_name.clone(),
        object_guid: a.object_guid,
        distinguished_name: a.distinguished_name.clone(),
        user_principal_name: a.user_principal_name.clone(),
        reason,
        mailbox_type: remote_type,
        step: None,
    })
}

/// An account whose start date passed with its mailbox still hidden (`overdue`: the store's
/// start steps that did not succeed, by account key), else what `[leaver]` asks of it.
fn difference_of(
    a: &Account,
    leaver: config::Leaver,
    overdue: &HashMap<String, uuid::Uuid>,
) -> Option<Difference> {
    let step = overdue.get(&a.sam_account_name.to_lowercase());
    match step {
        Some(&step) if a.recipient == RecipientType::RemoteMailbox && a.hidden => {
            Some(Difference {
                kind: DiffKind::OverdueStartDate,
                sam_account_name: a.sam_account_name.clone(),
                object_guid: a.object_guid,
                distinguished_name: a.distinguished_name.clone(),
                user_principal_name: a.user_principal_name.clone(),
                reason: "remote mailbox still hidden after its start date; its step to make it visible did not succeed".to_owned(),
                mailbox_type: None,
                step: Some(step),
            })
        }
        _ => difference(a, leaver),
    }
}

/// What a run does with the differences it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Reports them only (`mailboxd reconcile --dry-run`).
    DryRun,
    /// Queues a job for each, through the event path.
    QueueJobs,
}

/// Whether a run shows a progress line on the terminal every second (the CLI), or not (the
/// schedule, `--json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressLines {
    Shown,
    Hidden,
}

/// Scans every scope, reports the differences and (in `Mode::QueueJobs`) queues jobs for them.
pub async fn run(
    dir: &Directory,
    store: &Store,
    cfg: &config::Reconcile,
    leaver: config::Leaver,
    max_attempts: i32,
    mode: Mode,
    progress: ProgressLines,
) -> anyhow::Result<Report> {
    let dry_run = mode == Mode::DryRun;
    let started = Instant::now();
    let run_id = store
        .start_reconcile_run(crate::replica_name(), dry_run)
        .await?;
    let mut found = Scan {
        overdue: store.overdue_start_steps().await?,
        ..Scan::default()
    };
    if let Err(e) = scan_scopes(
        dir,
        cfg,
        leaver,
        Progress::new(progress == ProgressLines::Shown),
        &mut found,
    )
    .await
    {
        record_failed(store, run_id, found.scanned, &e.to_string()).await?;
        return Err(e.into());
    }
    let differences = one_per_account(found.differences);
    let actionable: Vec<&Difference> = differences.iter().filter(|d| d.kind.actionable()).collect();
    let capped = actionable.len() > cfg.max_jobs_per_run;
    let queued = match (dry_run, capped) {
        (true, _) => Queued::default(),
        (false, true) => {
            alert_capped(store, run_id, found.scanned, actionable.len(), cfg).await?;
            Queued::default()
        }
        (false, false) => queue(store, run_id, &actionable, max_attempts).await?,
    };
    let report = Report {
        run_id,
        dry_run,
        domain_controllers: found.domain_controllers,
        scanned: found.scanned,
        by_kind: count_by_kind(&differences),
        jobs_created: queued.jobs_created,
        skipped_pending: queued.skipped_pending,
        capped,
        elapsed_s: started.elapsed().as_secs_f64(),
        differences,
    };
    record_metrics(&report);
    record_finished(store, &report).await?;
    Ok(report)
}

/// What the scan of the scopes found so far (so far: a failed scan still says how far it got).
#[derive(Default)]
struct Scan {
    scanned: usize,
    differences: Vec<Difference>,
    domain_controllers: Vec<String>,
    /// Start steps past their day that did not succeed, by account key.
    overdue: HashMap<String, uuid::Uuid>,
}

/// The configured scopes, or the whole domain with the default filter.
fn scopes(dir: &Directory, cfg: &config::Reconcile) -> Vec<config::ReconcileScope> {
    if cfg.scopes.is_empty() {
        vec![config::ReconcileScope {
            base_dn: dir.base_dn().to_owned(),
            filter: DEFAULT_RECONCILE_FILTER.to_owned(),
        }]
    } else {
        cfg.scopes.clone()
    }
}

async fn scan_scopes(
    dir: &Directory,
    cfg: &config::Reconcile,
    leaver: config::Leaver,
    mut progress: Progress,
    found: &mut Scan,
) -> Result<(), DirectoryError> {
    for scope in scopes(dir, cfg) {
        let dc = dir
            .scan(&scope.base_dn, &scope.filter, cfg.page_size, |a| {
                found.scanned += 1;
                progress.tick(found.scanned, found.differences.len());
                if let Some(d) = difference_of(&a, leaver, &found.overdue) {
                    found.differences.push(d);
                }
            })
            .await?;
        found.domain_controllers.push(dc);
    }
    progress.finish(found.scanned, found.differences.len());
    Ok(())
}

/// Progress of a long scan, on the dashboard's metrics as on a terminal.
struct Progress {
    on_terminal: bool,
    last_shown: Instant,
}

impl Progress {
    fn new(on_terminal: bool) -> Progress {
        Progress {
            on_terminal,
            last_shown: Instant::now(),
        }
    }

    fn tick(&mut self, scanned: usize, differences: usize) {
        if scanned.is_multiple_of(1000) {
            metrics::gauge!("mailboxd_reconcile_progress").set(scanned as f64);
        }
        if self.on_terminal && self.last_shown.elapsed() >= Duration::from_secs(1) {
            eprint!("\rscanned {scanned} accounts, {differences} differences");
            self.last_shown = Instant::now();
        }
    }

    fn finish(&self, scanned: usize, differences: usize) {
        if self.on_terminal {
            eprintln!("\rscanned {scanned} accounts, {differences} differences");
        }
    }
}

/// One difference per account, sorted by name: several scopes may overlap.
fn one_per_account(mut differences: Vec<Difference>) -> Vec<Difference> {
    differences.sort_by(|a, b| {
        a.sam_account_name
            .to_lowercase()
            .cmp(&b.sam_account_name.to_lowercase())
    });
    differences.dedup_by(|a, b| a.sam_account_name.eq_ignore_ascii_case(&b.sam_account_name));
    differences
}

fn count_by_kind(differences: &[Difference]) -> BTreeMap<DiffKind, usize> {
    let mut by_kind = BTreeMap::new();
    for d in differences {
        *by_kind.entry(d.kind).or_insert(0usize) += 1;
    }
    by_kind
}

/// What queueing the differences came to.
#[derive(Default)]
struct Queued {
    jobs_created: usize,
    /// Differences whose account already has a job in progress.
    skipped_pending: usize,
}

/// Too many differences usually mean a wrong scope or filter: nothing is queued, and
/// support hears of it (at most once an hour).
async fn alert_capped(
    store: &Store,
    run_id: i64,
    scanned: usize,
    actionable: usize,
    cfg: &config::Reconcile,
) -> anyhow::Result<()> {
    let cap = cfg.max_jobs_per_run;
    let alert = NewAlert {
        kind: crate::alert::AlertKind::Reconcile,
        digest_key: None,
        account: None,
        subject: format!(
            "[mailboxd] Reconciliation queued nothing: {actionable} differences exceed the cap of {cap}"
        ),
        body: format!(
            "Run {run_id} compared {scanned} accounts and found {actionable} that would need a job, more than \
             reconcile.max_jobs_per_run = {cap}. That usually means a scope or filter is wrong, so nothing \
             was queued.\n\nWhat to do: check the differences with `mailboxd reconcile --dry-run`; if \
             they are real, raise the cap for one run or work through them in smaller scopes.\n"
        ),
    };
    store.raise_alert(&alert, Duration::from_secs(3600)).await?;
    tracing::error!(
        run_id,
        differences = actionable,
        cap,
        "reconciliation capped: nothing queued"
    );
    Ok(())
}

/// Queues a job for each difference whose account has none in progress.
async fn queue(
    store: &Store,
    run_id: i64,
    actionable: &[&Difference],
    max_attempts: i32,
) -> anyhow::Result<Queued> {
    let all: Vec<String> = actionable.iter().flat_map(|d| keys(d)).collect();
    let pending = store.accounts_with_unfinished_jobs(&all).await?;
    let mut queued = Queued::default();
    let mut events = Vec::new();
    for d in actionable {
        if keys(d).iter().any(|k| pending.contains(k)) {
            queued.skipped_pending += 1;
            continue;
        }
        if let Some(step) = d.step {
            // Run again now, as an operator's retry would, on the audit of its job.
            let again = store.retry_job(step, "reconcile").await?;
            queued.jobs_created += usize::from(again.is_ok());
            continue;
        }
        match to_event(run_id, d) {
            Ok(e) => events.push(e),
            Err(why) => {
                tracing::warn!(account = %d.sam_account_name, %why, "difference cannot become a job")
            }
        }
    }
    for chunk in events.chunks(500) {
        let inserted = store.insert_events(chunk, max_attempts).await?;
        queued.jobs_created += inserted
            .iter()
            .filter(|i| matches!(i, Inserted::New(_)))
            .count();
    }
    Ok(queued)
}

fn record_metrics(report: &Report) {
    let mode = if report.dry_run { "dry_run" } else { "run" };
    metrics::counter!("mailboxd_reconcile_runs_total", "mode" => mode).increment(1);
    metrics::gauge!("mailboxd_reconcile_scanned").set(report.scanned as f64);
    for (kind, n) in &report.by_kind {
        let kind = serde_json::to_value(kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        metrics::gauge!("mailboxd_reconcile_differences", "kind" => kind).set(*n as f64);
    }
    metrics::counter!("mailboxd_reconcile_jobs_created_total")
        .increment(report.jobs_created as u64);
}

/// A count as the run record's `integer` column holds it.
fn column(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

async fn record_finished(store: &Store, report: &Report) -> anyhow::Result<()> {
    let sample: Vec<&Difference> = report.differences.iter().take(SAMPLE).collect();
    let record = RunRecord {
        domain_controller: report.domain_controllers.first().map(String::as_str),
        scanned: column(report.scanned),
        differences: column(report.differences.len()),
        by_kind: serde_json::to_value(&report.by_kind)?,
        sample: serde_json::to_value(&sample)?,
        jobs_created: column(report.jobs_created),
        skipped_pending: column(report.skipped_pending),
        capped: report.capped,
        error: None,
    };
    store.finish_reconcile_run(report.run_id, &record).await?;
    Ok(())
}

async fn record_failed(
    store: &Store,
    run_id: i64,
    scanned: usize,
    error: &str,
) -> Result<(), StoreError> {
    let record = RunRecord {
        domain_controller: None,
        scanned: column(scanned),
        differences: 0,
        by_kind: serde_json::json!({}),
        sample: serde_json::json!([]),
        jobs_created: 0,
        skipped_pending: 0,
        capped: false,
        error: Some(error),
    };
    store.finish_reconcile_run(run_id, &record).await
}

/// The job a difference becomes: an ordinary event, sourced `reconcile`, through the same
/// validation as an event from the broker (AD's values are checked like a sender's).
/// Every key a job of the difference's account may be stored under
/// (`coalesce(account_guid::text, account)`, migration 0023): its objectGUID once the worker
/// read it or the event gave it; until then the name the event used, lower-cased — the
/// sAMAccountName, the DN or the UPN.
fn keys(d: &Difference) -> Vec<String> {
    let names = [
        Some(&d.sam_account_name),
        Some(&d.distinguished_name),
        d.user_principal_name.as_ref(),
    ];
    d.object_guid
        .map(|g| g.to_string())
        .into_iter()
        .chain(names.into_iter().flatten().map(|n| n.to_lowercase()))
        .collect()
}

fn to_event(run_id: i64, d: &Difference) -> Result<Event, String> {
    let kind = d.kind.job().ok_or("reported only")?;
    let sam = AccountName::parse(&d.sam_account_name)?;
    let key = d.object_guid.map_or_else(|| sam.key(), |g| g.to_string());
    let now = Utc::now();
    event::Draft {
        id: format!("reconcile-{run_id}-{key}"),
        kind,
        occurred_at: now,
        account: event::DraftAccount {
            sam_account_name: Some(d.sam_account_name.clone()),
            object_guid: d.object_guid.map(|g| g.to_string()),
            distinguished_name: Some(d.distinguished_name.clone()),
            ..event::DraftAccount::default()
        },
        // A joiner asks for the type AD shows (a hidden room stays a room); none: a person's.
        mailbox: d.mailbox_type.map(|t| event::DraftMailbox {
            kind: Some(t.as_str().to_owned()),
            ..event::DraftMailbox::default()
        }),
        source: Some("reconcile".into()),
        identity: None,
        rename: None,
    }
    .validate(now)
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A disabled account with a remote mailbox of this msExchRecipientTypeDetails.
    fn remote(details: i64, disabled: bool, hidden: bool) -> Account {
        Account {
            distinguished_name: "CN=r,CN=Users,DC=corp,DC=example".into(),
            sam_account_name: "r".into(),
            user_principal_name: None,
            object_guid: None,
            user_account_control: if disabled { 514 } else { 512 },
            disabled,
            recipient: RecipientType::from_type_details(Some(details)),
            recipient_type_details: Some(details),
            remote_recipient_type: None,
            hidden,
            target_address: None,
            mail: None,
            proxy_addresses: Vec::new(),
            alias: None,
            cloud_synced: true,
            archive_guid: None,
            archive_name: None,
            archive_status: None,
            external_directory_object_id: None,
            address_policy_enabled: true,
        }
    }

    /// docs/decisions.md, "Mailbox types": a shared or resource mailbox's account is
    /// disabled by design, so only a user mailbox makes a missed leaver; a hidden room whose
    /// account is enabled becomes a joiner that asks for a room.
    #[test]
    fn only_a_person_s_mailbox_is_a_leaver_and_a_room_stays_a_room() {
        const USER: i64 = 2_147_483_648;
        const ROOM: i64 = 8_589_934_592;
        const SHARED: i64 = 34_359_738_368;
        let hide = config::Leaver::default();
        let shared = config::Leaver {
            action: config::LeaverAction::Shared,
            ..hide
        };
        let kind = |a: Account, policy| difference(&a, policy).map(|d| d.kind);
        let rows = [
            (
                remote(USER, true, false),
                hide,
                Some(DiffKind::VisibleLeaver),
            ),
            (remote(USER, true, true), hide, None),
            (
                remote(USER, true, true),
                shared,
                Some(DiffKind::UnsharedLeaver),
            ),
            (remote(SHARED, true, true), shared, None),
            (remote(SHARED, true, false), hide, None),
            (remote(ROOM, true, false), shared, None),
        ];
        for (a, policy, want) in rows {
            let desc = format!("{a:?} {policy:?}");
            assert_eq!(kind(a, policy), want, "{desc}");
        }
        let room = difference(&remote(ROOM, false, true), hide).expect("a hidden room");
        assert_eq!(room.kind, DiffKind::HiddenButEnabled);
        let ev = to_event(1, &room).expect("an event");
        assert_eq!(ev.mailbox.map(|m| m.kind), Some(MailboxType::Room));
    }
}
