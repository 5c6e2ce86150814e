//! `mailboxd reconcile`: one reconciliation run from the command line, under the same
//! advisory lock as the daemon's schedule, with a table of the differences it found.

use anyhow::Context;

use crate::config::Settings;
use crate::directory::Directory;
use crate::reconcile::{Mode, ProgressLines, Report};
use crate::store::Store;

/// Exit code of a run that found more differences than `reconcile.max_jobs_per_run`.
const CAPPED: i32 = 3;

pub(super) async fn run(
    dir: &Directory,
    store: &Store,
    settings: &Settings,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<i32> {
    store.migrate().await?;
    let lock = store.try_reconcile_lock().await?.context(
        "another replica is reconciling right now (the reconcile advisory lock is held); try again later",
    )?;
    let result = crate::reconcile::run(
        dir,
        store,
        &settings.reconcile,
        settings.leaver,
        settings.worker.max_attempts,
        if dry_run {
            Mode::DryRun
        } else {
            Mode::QueueJobs
        },
        if json {
            ProgressLines::Hidden
        } else {
            ProgressLines::Shown
        },
    )
    .await;
    lock.release().await?;
    let action = if dry_run {
        "reconcile dry run"
    } else {
        "reconcile"
    };
    let (subject, outcome) = match &result {
        Ok(r) => (
            format!(
                "run {}: {} differences, {} jobs queued",
                r.run_id,
                r.differences.len(),
                r.jobs_created
            ),
            if r.capped {
                "capped: nothing queued".to_owned()
            } else {
                "done".to_owned()
            },
        ),
        Err(e) => (String::new(), format!("error: {e}")),
    };
    let entry = crate::audit::Entry::new(&crate::audit::cli_actor(), action, &subject, &outcome);
    crate::audit::record(store, entry).await;
    let r = result?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print_report(&r, settings, dry_run)?;
    }
    Ok(if r.capped && !dry_run { CAPPED } else { 0 })
}

fn print_report(r: &Report, settings: &Settings, dry_run: bool) -> anyhow::Result<()> {
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
        outcome(r, settings, dry_run)
    );
    Ok(())
}

/// The end of the summary line: what the run queued, or why nothing.
fn outcome(r: &Report, settings: &Settings, dry_run: bool) -> String {
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
}
