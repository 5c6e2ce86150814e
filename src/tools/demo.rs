//! `mailboxd demo`: the embedded default, end to end on this machine — the lab as the
//! Windows host, the real daemon on local PostgreSQL and RabbitMQ, sample events through
//! the broker, progress while they run, and a summary.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use secrecy::SecretString;

use crate::app::App;
use crate::config::Settings;
use crate::event::{EventKind, MailboxType, Rename};
use crate::job::JobState;
use crate::publish::{EventSpec, Publisher};
use crate::store::{self, Job};
use lab::{self, AccountSeed, Lab, LabConfig};

const DEADLINE: Duration = Duration::from_secs(120);

/// The accounts besides the joiners, what happens to each, and the mailbox type a joiner
/// asks for (`None`: a person's).
const EXTRAS: [(EventKind, &str, Option<MailboxType>); 7] = [
    (EventKind::Leaver, "leaver01", None),
    (EventKind::Leaver, "leaver02", None),
    (EventKind::Joiner, "rehire01", None),
    (EventKind::Joiner, "d'arcy$", None),
    (EventKind::Joiner, "room01", Some(MailboxType::Room)),
    (EventKind::Joiner, "beamer01", Some(MailboxType::Equipment)),
    (EventKind::Joiner, "sales01", Some(MailboxType::Shared)),
];

/// The account a mover renames: Jane Smith, married, becomes Jane Doe (alias `jdoe01`).
const MOVER: &str = "mover01";

/// A joiner whose first day is a week ahead: created now, hidden until then.
const STARTER: &str = "starter01";

pub async fn run(joiners: usize, config: Option<&Path>) -> anyhow::Result<i32> {
    let started = Instant::now();
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let settings = Settings::load(config)?;
    // The Windows side: the lab on free loopback ports, with a password made for this run.
    let password = SecretString::from(uuid::Uuid::new_v4().simple().to_string());
    let lab = Lab::start(lab_config(joiners, password.clone()))
        .await
        .context("starting the lab")?;
    println!(
        "lab        WinRM host at {}, domain controller at {}",
        lab.endpoint(),
        lab.ldap_url().unwrap_or_default()
    );
    let settings = demo_settings(settings, &lab, password, &run_id);
    // The mover's new surname, as the IAM system's AD connector writes it before the event.
    lab.rename_person(MOVER, "Jane", "Doe");
    store::ensure_database(&settings.database.url)
        .await
        .with_context(|| format!("creating the database at {}", settings.database.url))?;
    let app = App::start(settings.clone()).await?;
    println!(
        "daemon     admin at http://{}/readyz, replica {}",
        app.admin_addr, app.replica
    );
    let events = publish_events(&settings, joiners).await?;
    let outcome = watch_progress(&app, &events, started).await?;
    let elapsed = started.elapsed();
    app.stop().await;
    let invocations = lab.invocations().len();
    let moved = lab.account(MOVER);
    let starter = lab.account(STARTER);
    lab.stop();
    print_outcomes(&events, &outcome);
    if let Some(a) = moved {
        // What the address policy gave the mover, as AD shows it.
        println!(
            "{MOVER}    primary {} (proxy addresses: {})",
            a.primary_smtp_address.unwrap_or_default(),
            a.proxy_addresses.join(", ")
        );
    }
    if let Some(a) = starter {
        // Its mailbox exists, hidden until its first day, when the scheduled step shows it.
        println!(
            "{STARTER}  hidden from the address lists: {}; visible from its first day, {}",
            a.msExchHideFromAddressLists.unwrap_or(false),
            starts_on()
        );
    }
    Ok(print_summary(&events, &outcome, elapsed, invocations))
}

/// The starter's first day: a week from today (UTC).
fn starts_on() -> String {
    (chrono::Utc::now().date_naive() + chrono::Days::new(7)).to_string()
}

/// The lab with Exchange-like timings and the demo's accounts: `joiners` plain users, two
/// leavers with a mailbox, a hidden rehire, a name with `'` and `$` in it, and the accounts of
/// a room, an equipment and a shared mailbox, and a person's mailbox for the mover.
fn lab_config(joiners: usize, password: SecretString) -> LabConfig {
    let mut accounts = lab::directory::seeded(joiners);
    accounts.extend([
        AccountSeed::remote("leaver01").disabled(),
        AccountSeed::remote("leaver02").disabled(),
        AccountSeed::remote("rehire01").hidden(),
        AccountSeed::user("d'arcy$"),
        AccountSeed::user("room01"),
        AccountSeed::user("beamer01"),
        AccountSeed::user("sales01"),
        AccountSeed::user(STARTER),
        AccountSeed {
            given_name: Some("Jane".into()),
            surname: Some("Smith".into()),
            ..AccountSeed::remote(MOVER)
        },
    ]);
    LabConfig::loopback(password)
        .with_accounts(accounts)
        .with_latency(lab::Latency {
            session: Duration::from_millis(300),
            cmdlet: Duration::from_millis(20),
            round_trip: Duration::ZERO,
        })
}

/// The daemon, on the configured PostgreSQL and RabbitMQ, pointed at the lab, with
/// throwaway queue names so a demo never touches a real deployment's queues.
fn demo_settings(
    mut settings: Settings,
    lab: &Lab,
    password: SecretString,
    run_id: &str,
) -> Settings {
    // A domain account over NTLM, the second hop answered by an explicit Exchange credential.
    super::lab_setup::point_at_lab(&mut settings, lab, password.clone(), password.clone());
    // Directory checks against the lab's domain controller, as against AD.
    if let Some(ldap) = super::lab_setup::ldap_settings(lab, lab::DEFAULT_USER, password) {
        settings.ldap = ldap;
    }
    settings.amqp.exchange = format!("mailboxd.demo.{run_id}");
    settings.amqp.queue = format!("mailboxd.demo.{run_id}");
    settings.amqp.dead_letter_exchange = format!("mailboxd.demo.{run_id}.dlx");
    settings.amqp.queue_expires = Some(Duration::from_secs(600));
    settings.worker.backoff_base = Duration::from_secs(1);
    settings.worker.backoff_cap = Duration::from_secs(5);
    settings.worker.poll_interval = Duration::from_millis(500);
    settings.admin.listen = "127.0.0.1:0".into();
    // Leavers kept as shared mailboxes (the licence can go), to show the policy at work;
    // `hide` is the daemon's default.
    settings.leaver.action = crate::config::LeaverAction::Shared;
    settings
}

/// The IAM system's side: the demo's events through the broker.
async fn publish_events(settings: &Settings, joiners: usize) -> anyhow::Result<Vec<EventSpec>> {
    let publisher = Publisher::connect(&settings.amqp).await?;
    let mut events: Vec<EventSpec> = (1..=joiners)
        .map(|i| EventSpec::new(EventKind::Joiner, format!("user{i:05}")))
        .collect();
    events.extend(EXTRAS.map(|(kind, sam, mailbox_type)| EventSpec {
        mailbox_type,
        ..EventSpec::new(kind, sam)
    }));
    events.push(EventSpec {
        rename: Some(Rename {
            alias: Some("jdoe01".into()),
            ..Rename::default()
        }),
        ..EventSpec::new(EventKind::Mover, MOVER)
    });
    events.push(EventSpec {
        start_date: Some(starts_on()),
        ..EventSpec::new(EventKind::Joiner, STARTER)
    });
    for e in &mut events {
        e.source = "mailboxd-demo".into();
        publisher.publish(e).await?;
    }
    println!(
        "published  {} events to exchange {}",
        events.len(),
        settings.amqp.exchange
    );
    Ok(events)
}

/// Shows progress until every event's job is terminal or the deadline passed; the jobs.
async fn watch_progress(
    app: &App,
    events: &[EventSpec],
    started: Instant,
) -> anyhow::Result<Vec<Option<Job>>> {
    let tty = std::io::stdout().is_terminal();
    let mut last = String::new();
    let jobs = loop {
        let mut jobs = Vec::with_capacity(events.len());
        for e in events {
            jobs.push(app.store.job_by_event(&e.id).await?);
        }
        let line = progress_line(&jobs);
        if line != last {
            if tty {
                print!("\r{line}\x1b[K");
                let _ = std::io::stdout().flush();
            } else {
                println!("{line}");
            }
            last = line;
        }
        let done = jobs
            .iter()
            .all(|j| j.as_ref().is_some_and(|j| j.state.is_terminal()));
        if done || started.elapsed() > DEADLINE {
            break jobs;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if tty {
        println!();
    }
    Ok(jobs)
}

fn progress_line(jobs: &[Option<Job>]) -> String {
    let count = |s: JobState| jobs.iter().flatten().filter(|j| j.state == s).count();
    format!(
        "progress   stored {stored}/{n} · queued {} · running {} · retrying {} · succeeded {} · failed {}",
        count(JobState::Queued),
        count(JobState::Running),
        count(JobState::Retrying),
        count(JobState::Succeeded),
        count(JobState::Failed),
        stored = jobs.iter().flatten().count(),
        n = jobs.len()
    )
}

/// One line per event: its account, kind, state and outcome (or last error).
fn print_outcomes(events: &[EventSpec], outcome: &[Option<Job>]) {
    println!();
    println!("{:<12} {:<7} {:<12} OUTCOME", "ACCOUNT", "TYPE", "STATE");
    for (e, j) in events.iter().zip(outcome) {
        let (state, detail) = match j {
            Some(j) => (
                j.state.to_string(),
                j.outcome
                    .map(|o| o.to_string())
                    .or_else(|| j.last_error.clone())
                    .unwrap_or_default(),
            ),
            None => ("not stored".into(), String::new()),
        };
        println!(
            "{:<12} {:<7} {:<12} {detail}",
            e.sam_account_name, e.kind, state
        );
    }
}

/// The summary table and verdict; the exit code (0: every event succeeded).
fn print_summary(
    events: &[EventSpec],
    outcome: &[Option<Job>],
    elapsed: Duration,
    invocations: usize,
) -> i32 {
    let count = |s: JobState| outcome.iter().flatten().filter(|j| j.state == s).count();
    let (succeeded, failed) = (count(JobState::Succeeded), count(JobState::Failed));
    println!();
    println!("┌──────────┬───────────┬────────┬─────────┐");
    println!("│ events   │ succeeded │ failed │ elapsed │");
    println!("├──────────┼───────────┼────────┼─────────┤");
    println!(
        "│ {:<8} │ {:<9} │ {:<6} │ {:<7} │",
        events.len(),
        succeeded,
        failed,
        format!("{:.1}s", elapsed.as_secs_f64())
    );
    println!("└──────────┴───────────┴────────┴─────────┘");
    println!("lab recorded {invocations} cmdlet invocations");
    if succeeded == events.len() {
        println!("demo: all {} events provisioned", events.len());
        return 0;
    }
    println!(
        "demo: {} of {} events did not succeed{}",
        events.len() - succeeded,
        events.len(),
        if elapsed > DEADLINE {
            " within the deadline"
        } else {
            ""
        }
    );
    1
}
