//! The cloud confirmation of joiners (issue 32, `[cloud]`): after a joiner's on-premises
//! success `finish` writes a watch beside it; this service claims due watches (SKIP LOCKED
//! and a lease: any number of replicas, a replica killed mid-check gives them back), reads
//! their accounts in batches from where the cloud's state is learnt ([`CloudSource`]), and
//! ends each watch with a second outcome — `cloud_confirmed` when the cloud mailbox shows,
//! `cloud_failed` with one alert when the deadline passes — or looks again after a
//! doubling wait. No worker slot, no job attempt: the job stays `succeeded` throughout.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::alert::{AlertKind, NewAlert};
use crate::config;
use crate::directory::{Account, AccountState, Directory, DirectoryError};
use crate::health::{Health, Task, supervise};
use crate::outcome::{self, CloudAnswer, CloudFailure, CloudSourceName, DirectoryView};
use crate::shutdown::Shutdown;
use crate::store::{Store, Watch, WatchEnd, WatchNext, answered};
use crate::worker::view;

mod graph;

pub use graph::GraphSource;

/// The organisation of every Exchange Online LegacyExchangeDN: an `X500:` proxy address
/// under it is the cloud mailbox's, written back by Entra. Practitioner lore (X500/IMCEAEX
/// articles, tenants seen), not on a Microsoft page; Microsoft's writeback list only says
/// `cloudLegacyExchangeDN` → `proxyAddresses`
/// (learn.microsoft.com/entra/identity/hybrid/cloud-sync/exchange-hybrid).
const CLOUD_X500_PREFIX: &str = "x500:/o=exchangelabs/";

/// Where the watch learns the cloud's state: one variant per way, each with its `observe`.
#[derive(Clone)]
pub enum CloudSource {
    /// AD alone: Entra's Exchange hybrid writeback on the user, read on the configured DCs.
    Directory(Directory),
    /// Microsoft Graph (`[graph]`), the user found by the object ID AD shows (`graph`).
    Graph(GraphSource),
}

/// What one check saw of one watched account.
#[derive(Debug, Clone)]
pub enum Seen {
    /// The cloud mailbox exists.
    Mailbox {
        view: Box<Option<DirectoryView>>,
        answer: Evidence,
    },
    /// Not yet: why, in words an operator can act on, and what to do if it stays so.
    NotYet {
        reason: String,
        what_to_do: &'static str,
    },
    /// No answer about the cloud this time (Graph throttled or unreachable): looked at
    /// again, never ended on, even past its deadline. A stated wait is not counted a check.
    Unanswered {
        reason: String,
        retry_after: Option<Duration>,
    },
}

/// What showed the cloud mailbox.
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    pub legacy_exchange_dn: Option<String>,
    pub external_directory_object_id: Option<String>,
    pub archive_status: Option<i64>,
    pub user_principal_name: Option<String>,
    pub proxy_addresses: Vec<String>,
    pub purpose: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CloudReadError {
    #[error("cannot read the watched accounts in AD: {0} (the watches are checked again later)")]
    Directory(#[from] DirectoryError),
    /// Microsoft refuses mailboxd itself (its credential, a permission, the settings): no
    /// answer about any user, so no watch ends on it; one alert.
    #[error(
        "Microsoft Graph refuses mailboxd: {0} (the cloud watches wait and are checked again later)"
    )]
    Graph(crate::graph::GraphError),
}

impl CloudSource {
    pub fn name(&self) -> CloudSourceName {
        match self {
            CloudSource::Directory(_) => CloudSourceName::Directory,
            CloudSource::Graph(_) => CloudSourceName::Graph,
        }
    }

    /// What the cloud shows for each watch, in order: one LDAP search for the batch (and
    /// Graph's reads per account, `graph`).
    pub async fn observe(&self, watches: &[Watch]) -> Result<Vec<Seen>, CloudReadError> {
        match self {
            CloudSource::Directory(d) => {
                let sams: Vec<&str> = watches
                    .iter()
                    .map(|w| w.sam_account_name.as_str())
                    .collect();
                let found = d.read_many(&sams).await?;
                Ok(watches.iter().map(|w| seen_in_ad(w, &found)).collect())
            }
            CloudSource::Graph(g) => g.observe(watches).await,
        }
    }
}

/// What AD shows of the watched account: the cloud mailbox when an `X500:` proxy address
/// under the cloud's organisation was written back.
fn seen_in_ad(w: &Watch, found: &[Account]) -> Seen {
    account_of(w, found).map_or_else(gone, seen)
}

/// The watched account among those read: the same name and, when known, objectGUID.
fn account_of<'a>(w: &Watch, found: &'a [Account]) -> Option<&'a Account> {
    found.iter().find(|a| {
        a.sam_account_name.eq_ignore_ascii_case(&w.sam_account_name)
            && (w.object_guid.is_none() || a.object_guid == w.object_guid)
    })
}

fn gone() -> Seen {
    Seen::NotYet {
        reason: "the account is no longer in AD under this name and objectGUID".into(),
        what_to_do: outcome::CLOUD_WHAT_TO_DO,
    }
}

/// What one account as AD shows it says of its cloud mailbox (also the fuzz target's, on
/// any LDAP entry: `fuzzing::ldap_entry`).
pub(crate) fn seen(a: &Account) -> Seen {
    let x500 = a
        .proxy_addresses
        .iter()
        .find(|p| p.to_ascii_lowercase().starts_with(CLOUD_X500_PREFIX));
    let Some(x500) = x500 else {
        let reason = if a.cloud_synced {
            "synced to Entra ID, but no cloud mailbox written back to AD yet (no X500:/o=ExchangeLabs proxy address)"
        } else {
            "not synced to Entra ID yet (the configured ldap.sync_rule attribute is missing)"
        };
        return Seen::NotYet {
            reason: reason.into(),
            what_to_do: outcome::CLOUD_WHAT_TO_DO,
        };
    };
    let state = AccountState {
        domain_controller: String::new(),
        url: String::new(),
        account: Some(a.clone()),
    };
    Seen::Mailbox {
        view: Box::new(view::of(&state)),
        answer: Evidence {
            legacy_exchange_dn: x500.get(5..).map(str::to_owned),
            external_directory_object_id: a.external_directory_object_id.clone(),
            archive_status: a.archive_status,
            ..Evidence::default()
        },
    }
}

/// What the cloud service needs.
pub(crate) struct Deps {
    pub store: Store,
    pub source: CloudSource,
    pub settings: config::Cloud,
    pub replica: String,
    pub health: Arc<Health>,
}

/// Checks watches until the daemon stops, supervised.
pub(crate) fn spawn(deps: Deps, shutdown: Shutdown) -> JoinHandle<()> {
    let Deps {
        store,
        source,
        settings,
        replica,
        health,
    } = deps;
    let checker = Arc::new(Checker {
        store,
        source,
        settings,
        replica,
    });
    tokio::spawn(supervise(
        Task::one("cloud_watch"),
        health,
        shutdown.clone(),
        move || checker.clone().run(shutdown.clone()),
    ))
}

struct Checker {
    store: Store,
    source: CloudSource,
    settings: config::Cloud,
    replica: String,
}

impl Checker {
    /// Claims and checks a batch; sleeps a little when none is due.
    async fn run(self: Arc<Self>, shutdown: Shutdown) {
        let idle = self.settings.poll_interval.min(Duration::from_secs(5));
        while !shutdown.is_stopping() {
            let n = i64::from(self.settings.batch_size);
            let claimed = self
                .store
                .claim_watches(&self.replica, n, self.settings.lease)
                .await;
            let busy = match claimed {
                Ok(w) if w.is_empty() => false,
                Ok(watches) => {
                    self.check(&watches).await;
                    true
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot claim cloud watches; trying again");
                    false
                }
            };
            if !busy && !shutdown.pause(idle).await {
                return;
            }
        }
    }

    /// One batch: read, then end the watches that have their answer and give back the rest.
    async fn check(&self, watches: &[Watch]) {
        let seen = match self.source.observe(watches).await {
            Ok(s) => s,
            Err(e) => {
                // An outage of the DCs is no answer about the cloud: no watch ends on it,
                // even past its deadline (MailboxdCloudWatchesOverdue says so meanwhile).
                tracing::warn!(error = %e, watches = watches.len(), "cloud check failed");
                self.alert_refusal(&e).await;
                let again: Vec<WatchNext> = watches
                    .iter()
                    .map(|w| WatchNext {
                        job_id: w.job.id,
                        wait: self.settings.poll_interval,
                        seen: e.to_string(),
                        counted: true,
                    })
                    .collect();
                if let Err(e) = self.store.watch_again(&self.replica, &again).await {
                    tracing::warn!(error = %e, "cannot reschedule cloud watches; they come back after the lease");
                }
                return;
            }
        };
        let mut ends = Vec::new();
        let mut again = Vec::new();
        for (w, s) in watches.iter().zip(seen) {
            match self.decide(w, s) {
                Ok(end) => ends.push(end),
                Err(next) => again.push(next),
            }
        }
        let failed = ends.iter().filter(|e| e.alert.is_some()).count();
        if let Err(e) = self.store.end_watches(&self.replica, &ends).await {
            tracing::warn!(error = %e, "cannot record cloud answers; they are checked again after the lease");
        } else if failed > 0 {
            metrics::counter!("mailboxd_cloud_failed_total").increment(failed as u64);
        }
        if let Err(e) = self.store.watch_again(&self.replica, &again).await {
            tracing::warn!(error = %e, "cannot reschedule cloud watches; they come back after the lease");
        }
    }

    /// Microsoft refusing mailboxd is one alert (per hour), not one per watch.
    async fn alert_refusal(&self, e: &CloudReadError) {
        let CloudReadError::Graph(g) = e else {
            return;
        };
        let alert = NewAlert {
            kind: AlertKind::Cloud,
            digest_key: None,
            account: None,
            subject: "[mailboxd] Microsoft Graph refuses mailboxd: cloud confirmations wait".into(),
            body: format!(
                "The cloud watches read Microsoft Graph ([cloud] confirm = \"graph\") and Microsoft refused mailboxd itself:\n\n{g}\n\nNo joiner fails on this; their watches are checked again until it is fixed (MailboxdCloudWatchesOverdue meanwhile). Try it:  mailboxd check\n"
            ),
        };
        let quiet = Duration::from_secs(3600);
        if let Err(e) = self.store.raise_alert(&alert, quiet).await {
            tracing::warn!(error = %e, "cannot write the Graph refusal's alert");
        }
    }

    /// The watch's end (its outcome), or when to look again.
    fn decide<'w>(&self, w: &'w Watch, seen: Seen) -> Result<WatchEnd<'w>, WatchNext> {
        let mut answer =
            CloudAnswer::watched(self.source.name(), w.created_at, w.deadline_at, w.checks);
        let job = answered(&w.job);
        match seen {
            Seen::Mailbox { view, answer: ev } => {
                answer.legacy_exchange_dn = ev.legacy_exchange_dn;
                answer.external_directory_object_id = ev.external_directory_object_id;
                answer.archive_status = ev.archive_status;
                answer.user_principal_name = ev.user_principal_name;
                answer.proxy_addresses = ev.proxy_addresses;
                answer.purpose = ev.purpose;
                let message =
                    outcome::cloud_message(job, w.job.attempt, (*view).as_ref(), answer, None);
                Ok(WatchEnd {
                    job: &w.job,
                    message,
                    alert: None,
                })
            }
            Seen::NotYet { reason, what_to_do } if w.past_deadline => {
                let error = failure_text(&self.settings, self.source.name(), &reason);
                let alert = cloud_alert(w, &error, what_to_do);
                let failure = CloudFailure {
                    message: &error,
                    what_to_do,
                };
                let message =
                    outcome::cloud_message(job, w.job.attempt, None, answer, Some(failure));
                Ok(WatchEnd {
                    job: &w.job,
                    message,
                    alert: Some(alert),
                })
            }
            Seen::NotYet { reason, .. } => Err(WatchNext {
                job_id: w.job.id,
                wait: next_wait(&self.settings, w.checks),
                seen: reason,
                counted: true,
            }),
            Seen::Unanswered {
                reason,
                retry_after,
            } => Err(WatchNext {
                job_id: w.job.id,
                wait: retry_after.unwrap_or(self.settings.poll_interval),
                seen: reason,
                counted: retry_after.is_none(),
            }),
        }
    }
}

/// The wait after the `checks`-th check: `poll_interval` doubling per check, up to `poll_cap`.
pub(crate) fn next_wait(s: &config::Cloud, checks: i32) -> Duration {
    let doublings = u32::try_from(checks.saturating_sub(1)).unwrap_or(0).min(20);
    s.poll_interval
        .saturating_mul(1 << doublings)
        .min(s.poll_cap)
}

/// The cloud failure's reason: what the source showed last (and, from AD, what AD cannot
/// tell).
fn failure_text(s: &config::Cloud, source: CloudSourceName, last: &str) -> String {
    if source == CloudSourceName::Graph {
        return format!(
            "no Exchange Online mailbox within {}: {last}",
            humanize(s.deadline)
        );
    }
    format!(
        "no cloud mailbox written back to AD within {}: {last}. From AD alone mailboxd cannot tell whether the Exchange Online licence is missing, a provisioning error holds the mailbox \"Setting up\", or the account is not synced",
        humanize(s.deadline)
    )
}

fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s >= 3600 && s % 3600 == 0 => format!("{} h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// The one alert of a cloud failure.
fn cloud_alert(w: &Watch, error: &str, todo: &str) -> NewAlert {
    let sam = &w.sam_account_name;
    NewAlert {
        kind: AlertKind::Cloud,
        digest_key: Some(format!("cloud:{}", crate::alert::signature(error, sam))),
        account: Some(sam.clone()),
        subject: format!("[mailboxd] No Exchange Online mailbox for {sam} by the deadline"),
        body: format!(
            "Job {id} (joiner for {sam}, event {event}) succeeded on premises at {since}, but \
             its cloud mailbox did not show by {deadline}.\n\n{error}\n\nWhat to do: {todo}\n\n\
             Show it:  mailboxd jobs show {id}\n",
            id = w.job.id,
            event = w.job.event_id,
            since = w.created_at,
            deadline = w.deadline_at,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_wait_twice_as_long_each_time_up_to_the_cap() {
        let s = config::Cloud {
            poll_interval: Duration::from_secs(60),
            poll_cap: Duration::from_secs(900),
            ..config::Cloud::default()
        };
        let waits: Vec<u64> = (1..=6).map(|n| next_wait(&s, n).as_secs()).collect();
        assert_eq!(waits, [60, 120, 240, 480, 900, 900]);
        assert_eq!(next_wait(&s, i32::MAX), Duration::from_secs(900));
    }
}
