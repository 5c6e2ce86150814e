//! `[ldap]` and `[reconcile]`: the domain controllers mailboxd checks accounts on, and the
//! scopes reconciliation scans.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use super::*;

/// Reconciliation (`mailboxd reconcile`, and scheduled in the daemon when `interval` is set).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Reconcile {
    /// How often the daemon reconciles (one replica at a time). Absent: never on its own.
    #[serde(default, with = "humantime_opt")]
    pub interval: Option<Duration>,
    /// Where to look. Empty: `[ldap].base_dn` with `DEFAULT_RECONCILE_FILTER`.
    pub scopes: Vec<ReconcileScope>,
    /// More differences than this in one run: no job is created and an alert says why (a
    /// misconfigured filter must not queue the whole directory).
    pub max_jobs_per_run: usize,
    /// Entries per page of the paged LDAP search.
    pub page_size: i32,
}

/// One base DN and the LDAP filter for the users mailboxd is responsible for there.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileScope {
    pub base_dn: String,
    #[serde(default = "default_reconcile_filter")]
    pub filter: String,
}

/// Every user account (people, not computers).
pub const DEFAULT_RECONCILE_FILTER: &str = "(&(objectCategory=person)(objectClass=user))";

fn default_reconcile_filter() -> String {
    DEFAULT_RECONCILE_FILTER.to_owned()
}

impl Default for Reconcile {
    fn default() -> Self {
        Reconcile {
            interval: None,
            scopes: Vec::new(),
            max_jobs_per_run: 500,
            page_size: 500,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Ldap {
    /// Domain controllers, tried in order (`ldaps://dc1.corp.example`, or `ldap://…` with
    /// StartTLS). Empty: directory checks are off and mailboxd relies on Exchange's own
    /// answers (see ARCHITECTURE.md).
    pub urls: Vec<String>,
    pub base_dn: String,
    pub bind_dn: String,
    pub password_file: Option<PathBuf>,
    /// Extra CA certificate (PEM) trusted besides the system roots.
    pub ca_file: Option<PathBuf>,
    /// Which attribute proves Entra Connect has picked the account up.
    pub sync_rule: SyncRule,
    /// Joiners wait (`waiting_for_sync`) until `sync_rule` says the account is synced.
    pub require_cloud_sync: bool,
    /// `ldap://` URLs upgrade with StartTLS unless this is false.
    pub starttls: bool,
    /// Plain LDAP (no TLS at all) sends the bind password in clear text: only with this set.
    pub allow_plaintext: bool,
    /// Connect, bind and search deadline per domain controller.
    #[serde(with = "humantime_secs")]
    pub timeout: Duration,
    /// Bound connections kept per domain controller (each one multiplexes requests).
    pub pool_size: usize,
    #[serde(skip)]
    pub password: Option<SecretString>,
}

/// How to tell from on-premises AD that an account reached Entra ID (docs/decisions.md,
/// "Telling from on-premises AD that an account reached Entra ID").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncRule {
    /// `mS-DS-ConsistencyGuid` present: Entra Connect has picked the object up.
    ConsistencyGuid,
    /// `msDS-ExternalDirectoryObjectId` present: the cloud object exists (hybrid writeback).
    ExternalDirectoryObjectId,
    /// Every account counts as synced.
    Off,
}

impl Default for Ldap {
    fn default() -> Self {
        Ldap {
            urls: Vec::new(),
            base_dn: String::new(),
            bind_dn: String::new(),
            password_file: None,
            ca_file: None,
            sync_rule: SyncRule::ConsistencyGuid,
            require_cloud_sync: false,
            starttls: true,
            allow_plaintext: false,
            timeout: Duration::from_secs(10),
            pool_size: 2,
            password: None,
        }
    }
}
