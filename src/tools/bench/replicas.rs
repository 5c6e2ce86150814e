//! `mailboxd bench burst --replicas N`: the same burst through N daemon processes sharing
//! one database, against a lab whose Exchange allows fewer sessions than N × concurrency —
//! throughput against the session limit, attempts paid for retries, throttled refusals.
//! With a cmdlet budget (`--max-cmdlets`, `--cmdlet-window`) the lab refuses cmdlets past it
//! and the daemons pace their batches to it: how much of the budget they reach (issue 35).

use std::time::{Duration, Instant};

use anyhow::Context;
use secrecy::ExposeSecret;

use crate::config::Settings;
use crate::job::JobState;
use crate::store::{JobFilter, Store};

/// What one run is asked to do.
pub(super) struct ReplicaBurst {
    pub accounts: usize,
    pub replicas: usize,
    /// worker.concurrency of each replica.
    pub concurrency: usize,
    /// Exchange's PowerShellMaxConcurrency in the lab.
    pub sessions: usize,
    /// exchange.max_sessions of the daemons (usually `sessions`).
    pub max_sessions: usize,
    pub session: Duration,
    pub cmdlet: Duration,
    pub batch_size: u32,
    /// Exchange's cmdlet budget in the lab and the daemons' `exchange.max_cmdlets` /
    /// `exchange.cmdlet_window`.
    pub cmdlet_budget: Option<(u32, Duration)>,
}

/// What the lab saw of a run.
struct Seen {
    elapsed: f64,
    succeeded: usize,
    retries: i64,
    throttled: u64,
    /// Exchange cmdlets the lab counted against the budget (its recipient cmdlets, every call).
    recipient_cmdlets: u64,
    /// Exchange sessions the lab opened.
    sessions_opened: u64,
    /// From the first recipient cmdlet to the last, seconds: the run without the daemons'
    /// start and the last batch's verification.
    active_s: f64,
}

/// The daemon's configuration as environment variables (the secrets too: never on a
/// command line).
fn daemon_env(s: &Settings, b: &ReplicaBurst) -> Vec<(String, String)> {
    let secret = |p: &Option<secrecy::SecretString>| {
        p.as_ref()
            .map(|p| p.expose_secret().to_owned())
            .unwrap_or_default()
    };
    [
        ("MAILBOXD__DATABASE__URL", s.database.url.clone()),
        ("MAILBOXD__AMQP__URL", s.amqp.url.clone()),
        ("MAILBOXD__AMQP__EXCHANGE", s.amqp.exchange.clone()),
        ("MAILBOXD__AMQP__QUEUE", s.amqp.queue.clone()),
        (
            "MAILBOXD__AMQP__DEAD_LETTER_EXCHANGE",
            s.amqp.dead_letter_exchange.clone(),
        ),
        ("MAILBOXD__AMQP__QUEUE_EXPIRES", "600s".into()),
        (
            "MAILBOXD__AMQP__QUEUE_TYPE",
            s.amqp.queue_type.as_str().into(),
        ),
        ("MAILBOXD__WINRM__ENDPOINT", s.winrm.endpoint.clone()),
        ("MAILBOXD__WINRM__USERNAME", s.winrm.username.clone()),
        ("MAILBOXD__WINRM__AUTH", s.winrm.auth.name().into()),
        (
            "MAILBOXD__WINRM__ALLOW_UNENCRYPTED",
            s.winrm.allow_unencrypted.to_string(),
        ),
        (
            "MAILBOXD__EXCHANGE__USERNAME",
            s.exchange.username.clone().unwrap_or_default(),
        ),
        ("MAILBOXD_EXCHANGE_PASSWORD", secret(&s.exchange.password)),
        ("MAILBOXD_WINRM_PASSWORD", secret(&s.winrm.password)),
        ("MAILBOXD__LDAP__URLS", s.ldap.urls.join(",")),
        ("MAILBOXD__LDAP__BASE_DN", s.ldap.base_dn.clone()),
        ("MAILBOXD__LDAP__BIND_DN", s.ldap.bind_dn.clone()),
        ("MAILBOXD__LDAP__STARTTLS", "false".into()),
        ("MAILBOXD__LDAP__ALLOW_PLAINTEXT", "true".into()),
        ("MAILBOXD_LDAP_PASSWORD", secret(&s.ldap.password)),
        ("MAILBOXD__EXCHANGE__MODE", "remote".into()),
        (
            "MAILBOXD__EXCHANGE__CONNECTION_URIS",
            s.exchange.connection_uris.join(","),
        ),
        ("MAILBOXD__EXCHANGE__BATCH_SIZE", b.batch_size.to_string()),
        ("MAILBOXD__EXCHANGE__BATCH_LINGER", "1s".into()),
        (
            "MAILBOXD__EXCHANGE__MAX_SESSIONS",
            b.max_sessions.to_string(),
        ),
        ("MAILBOXD__WORKER__CONCURRENCY", b.concurrency.to_string()),
        ("MAILBOXD__WORKER__POLL_INTERVAL", "200ms".into()),
        ("MAILBOXD__WORKER__BATCH_TIMEOUT", "3600s".into()),
        ("MAILBOXD__ADMIN__LISTEN", "127.0.0.1:0".into()),
        ("MAILBOXD__SMTP__HOST", String::new()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .chain(b.cmdlet_budget.into_iter().flat_map(|(max, window)| {
        [
            (
                "MAILBOXD__EXCHANGE__MAX_CMDLETS".to_owned(),
                max.to_string(),
            ),
            (
                "MAILBOXD__EXCHANGE__CMDLET_WINDOW".to_owned(),
                format!("{}ms", window.as_millis()),
            ),
        ]
    }))
    .collect()
}

/// One `mailboxd run` child configured by `env` alone.
fn spawn(env: &[(String, String)]) -> anyhow::Result<super::process::ChildGuard> {
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.arg("run")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("MAILBOXD") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    Ok(super::process::ChildGuard(
        cmd.spawn().context("starting mailboxd run")?,
    ))
}

/// Waits until every job is in a terminal state.
async fn drain(store: &Store, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        let done: i64 = store
            .count_by_state()
            .await?
            .iter()
            .filter(|(st, _)| st.is_terminal())
            .map(|(_, c)| c)
            .sum();
        if done as usize >= n {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the burst did not drain within an hour"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) async fn run(
    settings: &Settings,
    b: ReplicaBurst,
    output: &super::output::Output,
) -> anyhow::Result<i32> {
    let password = uuid::Uuid::new_v4().simple().to_string();
    let mut cfg = super::support::lab_config(b.accounts, b.session, b.cmdlet, &password);
    cfg.ldap_listen = Some(([127, 0, 0, 1], 0).into());
    cfg.throttle.max_sessions_per_user = b.sessions;
    cfg.throttle.cmdlet_budget = b.cmdlet_budget;
    let lab = lab::Lab::start(cfg).await?;
    let s = super::support::daemon_settings(settings, &lab, &password).await?;
    let env = daemon_env(&s, &b);
    let children = (0..b.replicas.max(1))
        .map(|_| spawn(&env))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let store = Store::connect(&s.database.url, 2).await?;
    let publisher = crate::publish::Publisher::connect(&s.amqp).await?;
    let bodies = super::support::joiner_bodies(b.accounts);
    // The replicas declare the queue; publishing before would lose nothing (confirms), but
    // wait for their slots table and consumers to exist.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    super::support::publish_joiners(&publisher, &bodies).await?;
    drain(&store, b.accounts).await?;
    let elapsed = started.elapsed().as_secs_f64();
    drop(children);
    let jobs = store
        .list_jobs(&JobFilter {
            limit: i64::try_from(b.accounts).unwrap_or(i64::MAX),
            ..Default::default()
        })
        .await?;
    let succeeded = jobs
        .iter()
        .filter(|j| j.state == JobState::Succeeded)
        .count();
    let retries: i64 = jobs.iter().map(|j| i64::from(j.attempt.max(1) - 1)).sum();
    let counted: Vec<_> = lab
        .invocations()
        .into_iter()
        .filter(|i| lab::parameter_sets::Cmdlet::find(&i.cmdlet).is_some())
        .map(|i| i.at)
        .collect();
    let active_s = match (counted.iter().min(), counted.iter().max()) {
        (Some(first), Some(last)) => (*last - *first).num_milliseconds() as f64 / 1e3,
        _ => 0.0,
    };
    let seen = Seen {
        elapsed,
        succeeded,
        retries,
        throttled: lab.throttled(),
        recipient_cmdlets: counted.len() as u64,
        sessions_opened: lab.stats().exchange_sessions,
        active_s,
    };
    lab.stop();
    report(&b, &s, &seen, output)
}

/// How much of the cmdlet budget the run used: every cmdlet Exchange counted — the lab's
/// recipient cmdlets and each remote session's import — against what the budget allows in
/// the run's time.
fn budget_reached(b: &ReplicaBurst, s: &Settings, seen: &Seen) -> Option<serde_json::Value> {
    let (max, window) = b.cmdlet_budget?;
    let client = s.winrm.client().ok()?;
    // The daemons run a remote session (`daemon_env`).
    let mut exchange = s.exchange.clone();
    exchange.mode = crate::config::ExchangeMode::Remote;
    let session = crate::exchange::Exchange::new(client, &exchange, s.winrm.endpoint.clone())
        .session_cmdlets();
    let session_cmdlets = u64::from(session) * seen.sessions_opened;
    let counted = seen.recipient_cmdlets + session_cmdlets;
    let allowed_per_s = f64::from(max) / window.as_secs_f64();
    Some(serde_json::json!({
        "max_cmdlets": max,
        "cmdlet_window_s": window.as_secs_f64(),
        "recipient_cmdlets": seen.recipient_cmdlets,
        "session_cmdlets": session_cmdlets,
        "cmdlets_per_s": counted as f64 / seen.elapsed,
        "budget_per_s": allowed_per_s,
        "fraction_of_budget": counted as f64 / seen.elapsed / allowed_per_s,
        // While cmdlets ran: the most a sliding window allows in that span is one window's
        // worth more than the rate, so this one is taken against (span + window).
        "active_s": seen.active_s,
        "fraction_while_active": counted as f64 / ((seen.active_s + window.as_secs_f64()) * allowed_per_s),
    }))
}

fn report(
    b: &ReplicaBurst,
    s: &Settings,
    seen: &Seen,
    output: &super::output::Output,
) -> anyhow::Result<i32> {
    let Seen {
        elapsed,
        succeeded,
        retries,
        throttled,
        ..
    } = *seen;
    let n = b.accounts;
    let budget = budget_reached(b, s, seen);
    // The session limit: `sessions` batches at a time, each a session set-up plus its cmdlets
    // (Get-RemoteMailbox-free: one Enable-RemoteMailbox per account at least).
    let batches = n.div_ceil(b.batch_size.max(1) as usize) as f64;
    let per_batch = b.session.as_secs_f64() + f64::from(b.batch_size) * b.cmdlet.as_secs_f64();
    let limit_s = (batches / b.sessions.max(1) as f64).ceil() * per_batch;
    let out = serde_json::json!({
        "accounts": n,
        "replicas": b.replicas,
        "concurrency_per_replica": b.concurrency,
        "exchange_sessions": b.sessions,
        "max_sessions": b.max_sessions,
        "succeeded": succeeded,
        "elapsed_s": elapsed,
        "throughput_per_s": n as f64 / elapsed,
        "session_limit_per_s": n as f64 / limit_s,
        "ratio_to_limit": limit_s / elapsed,
        "retries_paid": retries,
        "throttled_refusals": throttled,
        "cmdlet_budget": budget,
    });
    if output.emit("burst-replicas", &out)? {
        println!(
            "{} replicas × concurrency {} vs {} Exchange sessions: {n} joiners ({succeeded} succeeded) in {elapsed:.1}s = {:.1}/s; session limit {:.1}/s ({:.0} %); retries paid {retries}; throttled refusals {throttled}",
            b.replicas,
            b.concurrency,
            b.sessions,
            n as f64 / elapsed,
            n as f64 / limit_s,
            limit_s / elapsed * 100.0
        );
        if let Some(c) = &budget {
            println!(
                "cmdlet budget {} per {}s: {:.1} cmdlets/s counted ({} recipient + {} session) of {:.1}/s = {:.0} % of the budget ({:.0} % while cmdlets ran, {:.1}s)",
                c["max_cmdlets"],
                c["cmdlet_window_s"],
                c["cmdlets_per_s"].as_f64().unwrap_or_default(),
                c["recipient_cmdlets"],
                c["session_cmdlets"],
                c["budget_per_s"].as_f64().unwrap_or_default(),
                c["fraction_of_budget"].as_f64().unwrap_or_default() * 100.0,
                c["fraction_while_active"].as_f64().unwrap_or_default() * 100.0,
                c["active_s"].as_f64().unwrap_or_default()
            );
        }
    }
    Ok(if succeeded == n { 0 } else { 1 })
}
