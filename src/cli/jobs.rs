//! `mailboxd jobs …`: list, show, retry and cancel jobs. Tables for a terminal, `--json`
//! for scripts; an action by the CLI is recorded as the operating-system user.

use clap::Subcommand;
use uuid::Uuid;

use super::table::{self, Align, Table};
use crate::job::JobState;
use crate::store::{
    ActionRefused, Attempt, CloudWatchRow, Job, JobFilter, JobPage, OutcomeRow, Store,
};

#[derive(Subcommand, Debug)]
pub enum JobsCommand {
    /// List jobs, newest first, a page at a time.
    List {
        /// Only jobs in this state (a wrong one is refused with the list of states).
        #[arg(long)]
        state: Option<JobState>,
        #[arg(long)]
        account: Option<String>,
        /// Jobs per page.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..))]
        limit: i64,
        /// Which page (1: the newest jobs).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i64).range(1..))]
        page: i64,
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

pub(super) async fn run(cmd: JobsCommand, store: &Store) -> anyhow::Result<i32> {
    match cmd {
        JobsCommand::List {
            state,
            account,
            limit,
            page,
            json,
        } => {
            let filter = JobFilter {
                states: state.into_iter().collect(),
                account,
                limit,
                offset: (page - 1).saturating_mul(limit),
                ..Default::default()
            };
            list(store, &filter, page, json).await
        }
        JobsCommand::Show { id, json } => show(store, id, json).await,
        JobsCommand::Retry { id, json } => {
            let actor = cli_actor();
            let r = store.retry_job(id, &actor).await;
            audited(store, &actor, "retry", id, &r).await;
            report(id, "retry", r?, json)
        }
        JobsCommand::Cancel { id, json } => {
            let actor = cli_actor();
            let r = store.cancel_job(id, &actor).await;
            audited(store, &actor, "cancel", id, &r).await;
            report(id, "cancel", r?, json)
        }
    }
}

async fn list(store: &Store, filter: &JobFilter, page: i64, json: bool) -> anyhow::Result<i32> {
    let listing = store.page_jobs(filter).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&listing.jobs)?);
        return Ok(0);
    }
    if listing.jobs.is_empty() {
        println!("no jobs on page {page}");
        return Ok(0);
    }
    print!("{}", job_table(&listing.jobs).render());
    let shown_through = filter.offset + listing.jobs.len() as i64;
    let how = format!("use --page {} or a larger --limit", page + 1);
    if listing.more >= JobPage::COUNTED {
        println!("… more than {} more; {how}", JobPage::COUNTED - 1);
    } else if let Some(more) = table::more(shown_through, shown_through + listing.more, &how) {
        println!("{more}");
    }
    Ok(0)
}

fn job_table(list: &[Job]) -> Table {
    let mut t = Table::new(&[
        ("ID", Align::Left),
        ("TYPE", Align::Left),
        ("ACCOUNT", Align::Left),
        ("STATE", Align::Left),
        ("ATTEMPT", Align::Right),
        ("UPDATED", Align::Left),
        ("DETAIL", Align::Left),
    ]);
    for j in list {
        let scheduled = (j.state == JobState::Scheduled)
            .then(|| j.step.map(|s| format!("{s} due {}", j.next_attempt_at)))
            .flatten();
        let detail = scheduled
            .or_else(|| j.outcome.map(|o| o.to_string()))
            .or_else(|| j.last_error.clone())
            .unwrap_or_default();
        t.row(vec![
            j.id.to_string(),
            j.kind.to_string(),
            j.event.account.name(),
            j.state.to_string(),
            format!("{}/{}", j.attempt, j.max_attempts),
            j.updated_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            detail.chars().take(80).collect(),
        ]);
    }
    t
}

async fn show(store: &Store, id: Uuid, json: bool) -> anyhow::Result<i32> {
    let Some((job, attempts)) = store.get_job(id).await? else {
        eprintln!("no job {id}");
        return Ok(1);
    };
    let actions = store.job_actions(id).await?;
    let outcomes = store.job_outcomes(id).await?;
    let watch = store.cloud_watch(id).await?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"job": job, "attempts": attempts,
                "actions": actions, "outcomes": outcomes, "cloud_watch": watch}))?
        );
    } else {
        print_job(&job);
        print_attempts(&attempts);
        print_answers(&outcomes, watch.as_ref());
        for a in &actions {
            println!(
                "  {} {} by {}{}",
                a.at.format("%Y-%m-%d %H:%M:%S"),
                a.action,
                a.actor,
                a.detail
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            );
        }
    }
    Ok(0)
}

fn print_job(job: &Job) {
    println!("job        {}", job.id);
    println!(
        "event      {} ({}, from {})",
        job.event_id,
        job.kind,
        job.event.source.as_deref().unwrap_or("?")
    );
    println!("account    {}", job.event.account.name());
    println!(
        "state      {}{}",
        job.state,
        job.outcome.map(|o| format!(" ({o})")).unwrap_or_default()
    );
    println!("attempts   {}/{}", job.attempt, job.max_attempts);
    if let Some(step) = job.step {
        println!("step       {step} (a later step of its event)");
    }
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
    if let Some(q) = &job.reply_to {
        println!("reply_to   {q}");
    }
    if let Some(why) = &job.reply_to_refused {
        println!("reply_to   refused: {why}");
    }
}

/// What the IAM system was told (the on-premises answer, then the cloud one) and, while
/// it waits, the cloud watch.
fn print_answers(outcomes: &[OutcomeRow], watch: Option<&CloudWatchRow>) {
    for o in outcomes {
        let error = o.body["error"]["message"]
            .as_str()
            .map(|m| format!(": {m}"));
        println!(
            "answer     {} at {} ({}){}",
            o.routing_key,
            o.created_at.format("%Y-%m-%d %H:%M:%S"),
            o.sent_at.map_or("not sent yet", |_| "sent"),
            error.unwrap_or_default()
        );
    }
    if let Some(w) = watch.filter(|w| w.resolved_at.is_none()) {
        println!(
            "cloud      waiting since {} (deadline {}, {} checks){}",
            w.created_at.format("%Y-%m-%d %H:%M:%S"),
            w.deadline_at.format("%Y-%m-%d %H:%M:%S"),
            w.checks,
            w.last_seen
                .as_deref()
                .map(|s| format!(": {s}"))
                .unwrap_or_default()
        );
    }
}

fn print_attempts(attempts: &[Attempt]) {
    for a in attempts {
        println!(
            "  #{} {} → {} on {} by {}{}",
            a.attempt,
            a.started_at.format("%Y-%m-%d %H:%M:%S"),
            a.outcome,
            a.host.as_deref().unwrap_or("-"),
            a.replica,
            a.error_message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        );
    }
}

/// Who a CLI action is recorded as: the operating-system user, as the kernel knows it.
fn cli_actor() -> String {
    crate::audit::cli_actor()
}

/// Puts a retry or cancel on the audit trail.
async fn audited<E>(
    store: &Store,
    actor: &str,
    action: &str,
    id: Uuid,
    r: &Result<Result<(), ActionRefused>, E>,
) {
    let entry = crate::audit::Entry::new(
        actor,
        action,
        &format!("job {id}"),
        crate::admin::outcome(r),
    );
    crate::audit::record(store, entry).await;
}

/// What became of a retry or cancel: 0 when done, 1 (with the reason) when refused.
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
