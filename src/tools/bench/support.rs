//! What the benches share: a lab and a daemon configured for one run, the bench's own
//! database and broker names (never the real queue), sample joiners, and progress and
//! memory read from the outside.

use std::time::Duration;

use anyhow::Context;
use secrecy::SecretString;

use crate::config::Settings;
use crate::event::EventKind;
use crate::exchange::{AccountData, Exchange};
use crate::store::Store;
use lab::{self, Lab, LabConfig};

/// A lab on free loopback ports (WinRM and its domain controller) with `accounts` plain
/// users, Exchange-like timings and a fresh password.
pub(crate) fn lab_config(
    accounts: usize,
    session: Duration,
    cmdlet: Duration,
    password: &str,
) -> LabConfig {
    LabConfig::loopback(SecretString::from(password.to_owned()))
        .with_accounts(lab::directory::seeded(accounts))
        .with_latency(lab::Latency {
            session,
            cmdlet,
            round_trip: Duration::ZERO,
        })
}

/// The lab's limit: every account's cmdlet through `concurrency` sessions, after one
/// session start: a burst's batches, one per session, and a load's warm sessions.
pub(crate) fn lab_limit_s(
    accounts: usize,
    cmdlet: Duration,
    session: Duration,
    concurrency: usize,
) -> f64 {
    accounts as f64 * cmdlet.as_secs_f64() / concurrency as f64 + session.as_secs_f64()
}

/// A daemon's settings for one bench run against `lab` (which accepts `password`): the
/// bench database (migrated, emptied), broker names of its own, Basic auth to the lab over
/// loopback, a remote Exchange session, the lab's domain controller, no alert emails.
pub(crate) async fn daemon_settings(
    settings: &Settings,
    lab: &Lab,
    password: &str,
) -> anyhow::Result<Settings> {
    let mut s = settings.clone();
    s.database.url = bench_database_url(&settings.database.url)?;
    s.amqp = bench_amqp(&settings.amqp);
    let secret = || SecretString::from(password.to_owned());
    crate::tools::lab_setup::point_at_lab(&mut s, lab, secret(), secret());
    s.worker.poll_interval = Duration::from_millis(200);
    s.admin.listen = "127.0.0.1:0".into();
    s.smtp.host = String::new();
    if let Some(l) = crate::tools::lab_setup::ldap_settings(
        lab,
        lab::DEFAULT_USER,
        SecretString::from(password.to_owned()),
    ) {
        s.ldap = l;
    }
    crate::store::ensure_database(&s.database.url).await?;
    let store = Store::connect(&s.database.url, 2).await?;
    store.migrate().await?;
    store.bench_reset().await?;
    Ok(s)
}

/// Broker names of this run only (they expire when unused), never the real queue.
pub(crate) fn bench_amqp(base: &crate::config::Amqp) -> crate::config::Amqp {
    let tag = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    crate::config::Amqp {
        exchange: format!("mailboxd.bench.{tag}"),
        queue: format!("mailboxd.bench.{tag}"),
        dead_letter_exchange: format!("mailboxd.bench.{tag}.dlx"),
        queue_expires: Some(Duration::from_secs(600)),
        ..base.clone()
    }
}

/// The same server as `database.url`, database `mailboxd_bench`: never the real queue.
/// `MAILBOXD_BENCH_DATABASE` names another, so that benches run side by side on one server
/// (each empties its database first) do not empty each other's.
pub(crate) fn bench_database_url(url: &str) -> anyhow::Result<String> {
    let mut u = url::Url::parse(url).context("database.url")?;
    let name = std::env::var("MAILBOXD_BENCH_DATABASE")
        .ok()
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .unwrap_or_else(|| "mailboxd_bench".to_owned());
    u.set_path(&format!("/{name}"));
    Ok(u.to_string())
}

/// mailboxd's Exchange client pointed at a lab as a deployment would be (NTLM, a remote
/// session with an explicit Exchange credential).
pub(crate) fn lab_exchange(lab: &Lab, password: String) -> anyhow::Result<Exchange> {
    let mut s = Settings::default();
    let secret = || SecretString::from(password.clone());
    crate::tools::lab_setup::point_at_lab(&mut s, lab, secret(), secret());
    let client = s.winrm.client()?;
    Ok(Exchange::new(client, &s.exchange, s.winrm.endpoint.clone()))
}

pub(crate) fn account(sam: &str) -> AccountData {
    AccountData {
        job_id: uuid::Uuid::new_v4(),
        identity: sam.to_owned(),
        sam_account_name: sam.to_owned(),
        domain_controller: None,
        remote_routing_address: Some(format!("{sam}@tenant.mail.onmicrosoft.com")),
        alias: None,
        primary_smtp_address: None,
        archive: false,
        ..AccountData::default()
    }
}

/// `n` joiners for `user00001`… as (event id, JSON body).
pub(crate) fn joiner_bodies(n: usize) -> Vec<(String, Vec<u8>)> {
    joiner_bodies_for(1..=n)
}

/// Joiners for `user{i:05}`, each `i` of `accounts`, as (event id, JSON body).
pub(crate) fn joiner_bodies_for(
    accounts: std::ops::RangeInclusive<usize>,
) -> Vec<(String, Vec<u8>)> {
    accounts
        .map(|i| {
            let spec = crate::publish::EventSpec::new(EventKind::Joiner, format!("user{i:05}"));
            let body = serde_json::to_vec(&spec.to_json()).unwrap_or_default();
            (spec.id, body)
        })
        .collect()
}

/// Publishes `bodies` as joiners, with confirms.
pub(crate) async fn publish_joiners(
    publisher: &crate::publish::Publisher,
    bodies: &[(String, Vec<u8>)],
) -> anyhow::Result<()> {
    let msgs: Vec<(&str, &[u8], Option<&str>)> = bodies
        .iter()
        .map(|(id, b)| {
            (
                EventKind::Joiner.routing_key(),
                b.as_slice(),
                Some(id.as_str()),
            )
        })
        .collect();
    publisher.publish_many(&msgs, 2000).await?;
    Ok(())
}

/// Jobs in a terminal state, and in all: from the counts kept per state (migration 0018),
/// so that polling it costs the same with a million jobs of history as with none.
pub(crate) async fn progress(store: &Store) -> anyhow::Result<(i64, i64)> {
    let counts = store.job_counts().await?;
    let done = counts
        .iter()
        .filter(|(st, _)| st.is_terminal())
        .map(|(_, c)| c)
        .sum();
    Ok((done, counts.iter().map(|(_, c)| c).sum()))
}

/// Resident memory (VmRSS) and its peak (VmHWM) of process `pid`, in MiB.
pub(crate) fn rss_mib(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<f64> {
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb / 1024.0)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Peak resident memory of this process so far (VmHWM), in MiB.
pub(crate) fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub(crate) fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!("mailboxd-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
