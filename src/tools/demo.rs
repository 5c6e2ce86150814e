//! `mailboxd demo`: the embedded default, end to end on this machine — the lab as the
//! Windows host, the real daemon on local PostgreSQL and RabbitMQ, sample events through
//! the broker, progress while they run, and a summary.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use secrecy::SecretString;

use crate::app::App;
use crate::config::{ExchangeMode, Settings};
use crate::event::EventKind;
use crate::publish::{EventSpec, Publisher};
use crate::store::{self, JobState};
use lab::{self, AccountSeed, Lab, LabConfig};

const DEADLINE: Duration = Duration::from_secs(120);

pub async fn run(joiners: usize, config: Option<&Path>) -> anyhow::Result<i32> {
    let started = Instant::now();
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let mut settings = Settings::load(config)?;

    // The Windows side: the lab on a free loopback port, with a password made for this run.
    let password = uuid::Uuid::new_v4().simple().to_string();
    let mut accounts = lab::directory::seeded(joiners);
    accounts.push(AccountSeed::remote("leaver01", true, false));
    accounts.push(AccountSeed::remote("leaver02", true, false));
    accounts.push(AccountSeed::remote("rehire01", false, true));
    accounts.push(AccountSeed::user("d'arcy$"));
    let lab = Lab::start(LabConfig {
        listen: "127.0.0.1:0".parse()?,
        user: lab::DEFAULT_USER.into(),
        password: SecretString::from(password.clone()),
        ldap_password: None,
        accounts,
        latency: lab::Latency {
            session: Duration::from_millis(300),
            cmdlet: Duration::from_millis(20),
            round_trip: Duration::ZERO,
        },
        max_shells_per_user: 30,
        ldap_listen: Some(([127, 0, 0, 1], 0).into()),
        throttle: Default::default(),
        faults: Vec::new(),
        max_envelope_kb: 500,
        tls_listen: None,
        tls_cert_out: None,
        cbt_hardening: Default::default(),
        kerberos: None,
    })
    .await
    .context("starting the lab")?;
    println!(
        "lab        WinRM host at {}, domain controller at {}",
        lab.endpoint(),
        lab.ldap_url().unwrap_or_default()
    );

    // The daemon, on the configured PostgreSQL and RabbitMQ, with throwaway queue names so
    // a demo never touches a real deployment's queues.
    settings.winrm.endpoint = lab.endpoint();
    settings.winrm.username = lab::DEFAULT_USER.into();
    settings.winrm.password = Some(SecretString::from(password.clone()));
    settings.winrm.allow_unencrypted = true; // loopback only
    // Directory checks against the lab's domain controller, as against AD.
    if let Some(ldap) = super::lab_setup::ldap_settings(
        &lab,
        lab::DEFAULT_USER,
        SecretString::from(password.clone()),
    ) {
        settings.ldap = ldap;
    }
    settings.exchange.mode = ExchangeMode::Remote;
    settings.exchange.connection_uris = vec!["http://lab-ex01.corp.example/PowerShell/".into()];
    settings.amqp.exchange = format!("mailboxd.demo.{run_id}");
    settings.amqp.queue = format!("mailboxd.demo.{run_id}");
    settings.amqp.dead_letter_exchange = format!("mailboxd.demo.{run_id}.dlx");
    settings.amqp.queue_expires = Some(Duration::from_secs(600));
    settings.worker.backoff_base = Duration::from_secs(1);
    settings.worker.backoff_cap = Duration::from_secs(5);
    settings.worker.poll_interval = Duration::from_millis(500);
    settings.admin.listen = "127.0.0.1:0".into();
    store::ensure_database(&settings.database.url)
        .await
        .with_context(|| format!("creating the database at {}", settings.database.url))?;
    let app = App::start(settings.clone()).await?;
    println!(
        "daemon     admin at http://{}/readyz, replica {}",
        app.admin_addr, app.replica
    );

    // The IAM system's side: events through the broker.
    let publisher = Publisher::connect(&settings.amqp).await?;
    let mut events = Vec::new();
    for i in 1..=joiners {
        events.push(EventSpec::new(EventKind::Joiner, format!("user{i:05}")));
    }
    events.push(EventSpec::new(EventKind::Leaver, "leaver01"));
    events.push(EventSpec::new(EventKind::Leaver, "leaver02"));
    events.push(EventSpec::new(EventKind::Joiner, "rehire01"));
    events.push(EventSpec::new(EventKind::Joiner, "d'arcy$"));
    for e in &mut events {
        e.source = "mailboxd-demo".into();
        publisher.publish(e).await?;
    }
    println!(
        "published  {} events to exchange {}",
        events.len(),
        settings.amqp.exchange
    );

    let tty = std::io::stdout().is_terminal();
    let mut last = String::new();
    let outcome = loop {
        let mut jobs = Vec::new();
        for e in &events {
            jobs.push(app.store.job_by_event(&e.id).await?);
        }
        let count = |s: JobState| jobs.iter().flatten().filter(|j| j.state == s).count();
        let stored = jobs.iter().flatten().count();
        let line = format!(
            "progress   stored {stored}/{n} · queued {} · running {} · retrying {} · succeeded {} · failed {}",
            count(JobState::Queued),
            count(JobState::Running),
            count(JobState::Retrying),
            count(JobState::Succeeded),
            count(JobState::Failed),
            n = events.len()
        );
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
    let elapsed = started.elapsed();
    app.stop().await;
    let invocations = lab.invocations().len();
    lab.stop();

    println!();
    println!("{:<12} {:<7} {:<12} OUTCOME", "ACCOUNT", "TYPE", "STATE");
    for (e, j) in events.iter().zip(&outcome) {
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
    let succeeded = outcome
        .iter()
        .flatten()
        .filter(|j| j.state == JobState::Succeeded)
        .count();
    let failed = outcome
        .iter()
        .flatten()
        .filter(|j| j.state == JobState::Failed)
        .count();
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
        Ok(0)
    } else {
        println!(
            "demo: {} of {} events did not succeed{}",
            events.len() - succeeded,
            events.len(),
            if started.elapsed() > DEADLINE {
                " within the deadline"
            } else {
                ""
            }
        );
        Ok(1)
    }
}
