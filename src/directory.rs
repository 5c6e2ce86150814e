//! Directory checks against Active Directory (docs/decisions.md, "What the directory decides
//! before Exchange is asked"): what is true of an account on
//! the domain controller that Exchange will be told to use.
//!
//! One `Directory` holds a small pool of bound ldap3 connections per domain controller
//! (each connection multiplexes requests). Controllers are tried in order; the first that
//! answers is the one the worker passes to Exchange as `-DomainController`, so a new
//! account that has not replicated yet cannot make Exchange look in the wrong place.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use ldap3::{
    Ldap, LdapConnAsync, LdapConnSettings, LdapError, Scope, SearchEntry, SearchOptions, StdStream,
};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use uuid::Uuid;

use crate::config::{self, SyncRule};

mod controllers;
mod entry;
mod lookup;
mod person;
use entry::first;
pub use entry::{
    account_filter, account_from_entry, escape_filter_bytes, escape_filter_value, search_entry,
};
pub use lookup::Lookup;
pub use person::{Candidate, EMT_GROUP, EmtRights, LockoutPolicy, PasswordRefused, Person};

/// msExchRecipientTypeDetails values that are remote (cloud) recipients: RemoteUserMailbox,
/// RemoteRoomMailbox, RemoteEquipmentMailbox, RemoteSharedMailbox (2147483648, 8589934592,
/// 17179869184, 34359738368).
const REMOTE_TYPES_MASK: i64 = 0xE_8000_0000;
/// msExchRecipientTypeDetails of a mail user (Enable-RemoteMailbox converts it).
const MAIL_USER: i64 = 128;
/// On-premises mailbox types: UserMailbox, LinkedMailbox, SharedMailbox, LegacyMailbox,
/// RoomMailbox, EquipmentMailbox.
const ONPREM_MAILBOX_TYPES: [i64; 6] = [1, 2, 4, 8, 16, 32];
/// userAccountControl ACCOUNTDISABLE.
const UAC_DISABLED: i64 = 0x2;

/// The attributes every account read asks for.
const ACCOUNT_ATTRS: [&str; 17] = [
    "sAMAccountName",
    "mail",
    "userPrincipalName",
    "objectGUID",
    "userAccountControl",
    "msExchRecipientTypeDetails",
    "msExchRemoteRecipientType",
    "msExchHideFromAddressLists",
    "targetAddress",
    "mailNickname",
    "proxyAddresses",
    "mS-DS-ConsistencyGuid",
    "msDS-ExternalDirectoryObjectId",
    "msExchArchiveGUID",
    "msExchArchiveName",
    "msExchArchiveStatus",
    "msExchPoliciesExcluded",
];

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error(
        "no domain controller answered ({tried}); check that they are up and reachable from this host, and [ldap].urls"
    )]
    AllUnreachable { tried: String },
    #[error(
        "domain controller {url} refused the bind as {bind_dn:?}: {reason}; check [ldap].bind_dn and the LDAP password secret"
    )]
    BindRefused {
        url: String,
        bind_dn: String,
        reason: String,
    },
    #[error("search on {domain_controller} failed: {reason}; it is retried")]
    Search {
        domain_controller: String,
        reason: String,
    },
    #[error(
        "{count} directory objects match {lookup} on {domain_controller}; fix the duplicates in AD or send the objectGUID"
    )]
    Ambiguous {
        domain_controller: String,
        lookup: String,
        count: usize,
    },
    #[error("[ldap] configuration: {0}")]
    Config(String),
    #[error("{0}: no AD account can have this name (control characters); fix the event")]
    InvalidLookup(String),
    #[error("{lookup}: {reason}")]
    UnusableName { lookup: String, reason: String },
}

impl DirectoryError {
    /// How the worker treats it: a refused bind breaks every job (systemic), a directory
    /// that cannot be reached or answer may recover (transient), duplicates need a person.
    pub fn class(&self) -> crate::job::ErrorClass {
        use crate::job::ErrorClass;
        match self {
            DirectoryError::AllUnreachable { .. } | DirectoryError::Search { .. } => {
                ErrorClass::Transient
            }
            DirectoryError::BindRefused { .. } | DirectoryError::Config(_) => ErrorClass::Systemic,
            DirectoryError::Ambiguous { .. }
            | DirectoryError::InvalidLookup(_)
            | DirectoryError::UnusableName { .. } => ErrorClass::Permanent,
        }
    }

    /// A label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            DirectoryError::AllUnreachable { .. } => "unreachable",
            DirectoryError::BindRefused { .. } => "bind_refused",
            DirectoryError::Search { .. } => "search",
            DirectoryError::Ambiguous { .. } => "ambiguous",
            DirectoryError::Config(_) => "config",
            DirectoryError::InvalidLookup(_) => "invalid_lookup",
            DirectoryError::UnusableName { .. } => "unusable_name",
        }
    }
}

/// What msExchRecipientTypeDetails says the account is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecipientType {
    None,
    RemoteMailbox,
    OnPremMailbox,
    MailUser,
    Other,
}

impl RecipientType {
    pub(crate) fn from_type_details(v: Option<i64>) -> RecipientType {
        match v {
            None | Some(0) => RecipientType::None,
            Some(t) if t & REMOTE_TYPES_MASK != 0 => RecipientType::RemoteMailbox,
            Some(MAIL_USER) => RecipientType::MailUser,
            Some(t) if ONPREM_MAILBOX_TYPES.contains(&t) => RecipientType::OnPremMailbox,
            Some(_) => RecipientType::Other,
        }
    }
}

/// One account as a domain controller showed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Account {
    pub distinguished_name: String,
    pub sam_account_name: String,
    pub user_principal_name: Option<String>,
    pub object_guid: Option<Uuid>,
    pub user_account_control: i64,
    pub disabled: bool,
    pub recipient: RecipientType,
    pub recipient_type_details: Option<i64>,
    /// msExchRemoteRecipientType: the RemoteRecipientType flags (ProvisionMailbox 1,
    /// ProvisionArchive 2, Migrated 4, DeprovisionMailbox 8, DeprovisionArchive 16, Room 32,
    /// Equipment 64); the joiner reads the Migrated bit (`worker::plan`).
    pub remote_recipient_type: Option<i64>,
    pub hidden: bool,
    pub target_address: Option<String>,
    /// `mail`: the primary SMTP address as AD shows it (Exchange's address policy sets it).
    pub mail: Option<String>,
    /// Every proxy address, `SMTP:` (primary) and `smtp:` (secondary) prefixes kept.
    pub proxy_addresses: Vec<String>,
    /// `mailNickname`: the Exchange alias.
    pub alias: Option<String>,
    pub cloud_synced: bool,
    /// msExchArchiveGUID: the mailbox has a (cloud) archive.
    pub archive_guid: Option<Uuid>,
    /// msExchArchiveName.
    pub archive_name: Option<String>,
    /// msExchArchiveStatus, as Entra's Exchange hybrid writeback puts it (1: active archive).
    pub archive_status: Option<i64>,
    /// msDS-ExternalDirectoryObjectId (`User_<Entra object id>`), written back by Entra.
    pub external_directory_object_id: Option<String>,
    /// Exchange's email address policy applies (EmailAddressPolicyEnabled): msExchPoliciesExcluded
    /// does not hold [`entry::ALL_POLICIES_EXCLUDED`].
    pub address_policy_enabled: bool,
}

/// The answer to one read: which domain controller answered, and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountState {
    /// The controller's DNS name (its rootDSE `dnsHostName`): what Exchange is given.
    pub domain_controller: String,
    /// The URL that reached it, for the verification read after Exchange ran.
    #[serde(skip)]
    pub url: String,
    pub account: Option<Account>,
}

#[derive(Clone)]
struct Conn {
    ldap: Ldap,
    dns_host_name: String,
}

/// The directory client: ordered domain controllers, a pool of bound connections each.
#[derive(Clone)]
pub struct Directory {
    inner: Arc<Inner>,
}

struct Inner {
    urls: Vec<url::Url>,
    base_dn: String,
    bind_dn: String,
    password: Option<SecretString>,
    tls: Arc<rustls::ClientConfig>,
    starttls: bool,
    timeout: Duration,
    pool_size: usize,
    sync_rule: SyncRule,
    pool: Mutex<HashMap<String, Vec<Conn>>>,
    /// The DNS name each configured controller (by URL) reported and Exchange is given.
    learned: Mutex<HashMap<String, String>>,
    next: std::sync::atomic::AtomicUsize,
}

impl Directory {
    /// `None` when no domain controller is configured (directory checks off).
    pub fn from_config(cfg: &config::Ldap) -> Result<Option<Directory>, DirectoryError> {
        if cfg.urls.is_empty() {
            return Ok(None);
        }
        let mut urls = Vec::new();
        for u in &cfg.urls {
            let url = url::Url::parse(u)
                .map_err(|e| DirectoryError::Config(format!("urls: {u:?} is not a URL ({e})")))?;
            match url.scheme() {
                "ldaps" => {}
                "ldap" if cfg.starttls => {}
                "ldap" if cfg.allow_plaintext => tracing::warn!(
                    url = %url,
                    "LDAP without TLS: the bind password crosses the network in clear text (allow_plaintext = true)"
                ),
                "ldap" => {
                    return Err(DirectoryError::Config(format!(
                        "{u} is plain LDAP with starttls = false; use ldaps://, StartTLS, or set allow_plaintext = true deliberately"
                    )));
                }
                other => {
                    return Err(DirectoryError::Config(format!(
                        "{u}: scheme {other:?} is not ldap or ldaps"
                    )));
                }
            }
            if url.host_str().is_none() {
                return Err(DirectoryError::Config(format!("{u} names no host")));
            }
            urls.push(url);
        }
        if cfg.base_dn.is_empty() {
            return Err(DirectoryError::Config("base_dn is empty".into()));
        }
        let tls =
            winrm::tls::client_config(cfg.ca_file.as_deref()).map_err(DirectoryError::Config)?;
        Ok(Some(Directory {
            inner: Arc::new(Inner {
                urls,
                base_dn: cfg.base_dn.clone(),
                bind_dn: cfg.bind_dn.clone(),
                password: cfg.password.clone(),
                tls,
                starttls: cfg.starttls,
                timeout: cfg.timeout,
                pool_size: cfg.pool_size.max(1),
                sync_rule: cfg.sync_rule,
                pool: Mutex::new(HashMap::new()),
                learned: Mutex::new(HashMap::new()),
                next: std::sync::atomic::AtomicUsize::new(0),
            }),
        }))
    }

    /// The configured domain controllers in the order they will be tried: the one
    /// `preferred` (the DC the account was created on, from the event) names first, then
    /// the rest. A name that is not a configured DC is ignored with a warning, never
    /// contacted (`controllers`).
    pub fn order(&self, preferred: Option<&str>) -> Vec<url::Url> {
        let learned = self.inner.learned.lock().clone();
        controllers::ordered(
            &self.inner.urls,
            |u| learned.get(u.as_str()).cloned(),
            preferred,
        )
    }

    /// Reads the account from the first domain controller that answers.
    pub async fn read(
        &self,
        lookup: &Lookup,
        preferred_dc: Option<&str>,
    ) -> Result<AccountState, DirectoryError> {
        let value = match lookup {
            Lookup::Guid(_) => "",
            Lookup::Sam(v) | Lookup::Upn(v) | Lookup::Dn(v) => v.as_str(),
        };
        // Samba ends an assertion value at an escaped \00; AD names never hold control
        // characters, so such a value can only ever be a mistake or an attack.
        if value.chars().any(char::is_control) {
            return Err(DirectoryError::InvalidLookup(lookup.to_string()));
        }
        if let Lookup::Dn(dn) = lookup {
            entry::check_under(dn, &self.inner.base_dn).map_err(|reason| {
                DirectoryError::UnusableName {
                    lookup: lookup.to_string(),
                    reason,
                }
            })?;
        }
        let mut tried = Vec::new();
        for url in self.order(preferred_dc) {
            match self.read_on(&url, lookup).await {
                Ok(state) => return Ok(state),
                Err(ReadError::Unreachable(reason)) => {
                    tracing::warn!(dc = %url, %reason, "domain controller unreachable; trying the next");
                    tried.push(format!("{url}: {reason}"));
                }
                Err(ReadError::Fatal(e)) => return Err(e),
            }
        }
        Err(DirectoryError::AllUnreachable {
            tried: tried.join("; "),
        })
    }

    /// Reads the account again on the controller that answered before (verification).
    pub(crate) async fn reread(
        &self,
        previous: &AccountState,
        lookup: &Lookup,
    ) -> Result<AccountState, DirectoryError> {
        let url = url::Url::parse(&previous.url)
            .map_err(|e| DirectoryError::Config(format!("{}: {e}", previous.url)))?;
        match self.read_on(&url, lookup).await {
            Ok(s) => Ok(s),
            Err(ReadError::Unreachable(reason)) => Err(DirectoryError::AllUnreachable {
                tried: format!("{url}: {reason}"),
            }),
            Err(ReadError::Fatal(e)) => Err(e),
        }
    }

    /// Reads every user under `base` matching `filter` with the Simple Paged Results
    /// control (`page_size` per page), handing each account to `each` as it arrives, so
    /// a directory of any size is scanned in bounded memory. Returns the DC used.
    pub(crate) async fn scan(
        &self,
        base: &str,
        filter: &str,
        page_size: i32,
        mut each: impl FnMut(Account),
    ) -> Result<String, DirectoryError> {
        let mut tried = Vec::new();
        for url in self.order(None) {
            let conn = match self.connect(&url).await {
                Ok(c) => c,
                Err(ReadError::Unreachable(r)) => {
                    tried.push(format!("{url}: {r}"));
                    continue;
                }
                Err(ReadError::Fatal(e)) => return Err(e),
            };
            let dc = conn.dns_host_name.clone();
            let search_err = |e: LdapError| DirectoryError::Search {
                domain_controller: dc.clone(),
                reason: e.to_string(),
            };
            let mut ldap = conn.ldap.clone();
            let adapters: Vec<Box<dyn ldap3::adapters::Adapter<_, _>>> = vec![
                Box::new(ldap3::adapters::EntriesOnly::new()),
                Box::new(ldap3::adapters::PagedResults::new(page_size.max(1))),
            ];
            let mut stream = ldap
                .with_timeout(self.inner.timeout)
                .streaming_search_with(
                    adapters,
                    base,
                    Scope::Subtree,
                    filter,
                    ACCOUNT_ATTRS.to_vec(),
                )
                .await
                .map_err(search_err)?;
            while let Some(entry) = stream.next().await.map_err(search_err)? {
                if let Some(entry) = search_entry(entry) {
                    each(account_from_entry(&entry, self.inner.sync_rule));
                }
            }
            let res = stream.finish().await;
            if res.rc != 0 {
                return Err(DirectoryError::Search {
                    domain_controller: dc,
                    reason: format!("LDAP result {} {}", res.rc, res.text),
                });
            }
            let _ = conn.ldap.clone().unbind().await;
            return Ok(dc);
        }
        Err(DirectoryError::AllUnreachable {
            tried: tried.join("; "),
        })
    }

    /// Reads the users with these sAMAccountNames in one search (one OR filter, every value
    /// escaped) on the first domain controller that answers: the cloud watch's batch read.
    /// Names that hold control characters are left out (no AD name holds one).
    pub(crate) async fn read_many(&self, sams: &[&str]) -> Result<Vec<Account>, DirectoryError> {
        let terms: String = sams
            .iter()
            .filter(|s| !s.chars().any(char::is_control))
            .map(|s| format!("(sAMAccountName={})", escape_filter_value(s)))
            .collect();
        if terms.is_empty() {
            return Ok(Vec::new());
        }
        let filter = format!("(&(objectCategory=person)(objectClass=user)(|{terms}))");
        let base = self.inner.base_dn.clone();
        let mut found = Vec::new();
        let page = i32::try_from(sams.len()).unwrap_or(i32::MAX);
        self.scan(&base, &filter, page, |a| found.push(a)).await?;
        Ok(found)
    }

    /// The base DN searches start from (`[ldap].base_dn`).
    pub fn base_dn(&self) -> &str {
        &self.inner.base_dn
    }

    /// Binds to every configured controller and reads its rootDSE (`mailboxd check`).
    pub async fn check(&self) -> Vec<(String, Result<String, String>)> {
        let mut out = Vec::new();
        for url in &self.inner.urls {
            let r = match self.connection(url).await {
                Ok(c) => Ok(c.dns_host_name),
                Err(ReadError::Unreachable(r)) => Err(r),
                Err(ReadError::Fatal(e)) => Err(e.to_string()),
            };
            out.push((url.to_string(), r));
        }
        out
    }

    async fn read_on(&self, url: &url::Url, lookup: &Lookup) -> Result<AccountState, ReadError> {
        // A pooled connection may have been closed by the DC (idle timeout): one fresh retry.
        for fresh in [false, true] {
            let conn = if fresh {
                self.connect(url).await?
            } else {
                self.connection(url).await?
            };
            match self.search_account(&conn, lookup).await {
                Ok(account) => {
                    return Ok(AccountState {
                        domain_controller: conn.dns_host_name.clone(),
                        url: url.to_string(),
                        account,
                    });
                }
                Err(SearchFailure::Connection(reason)) => {
                    self.drop_pooled(url);
                    if fresh {
                        return Err(ReadError::Unreachable(reason));
                    }
                }
                Err(SearchFailure::Fatal(e)) => return Err(ReadError::Fatal(e)),
            }
        }
        Err(ReadError::Unreachable("no connection".into()))
    }

    async fn search_account(
        &self,
        conn: &Conn,
        lookup: &Lookup,
    ) -> Result<Option<Account>, SearchFailure> {
        let mut ldap = conn.ldap.clone();
        let (base, scope, filter) = lookup.search(&self.inner.base_dn);
        let secs = i32::try_from(self.inner.timeout.as_secs().max(1)).unwrap_or(i32::MAX);
        let result = ldap
            .with_timeout(self.inner.timeout)
            .with_search_options(SearchOptions::new().sizelimit(2).timelimit(secs))
            .search(&base, scope, &filter, ACCOUNT_ATTRS.to_vec())
            .await;
        let search = match result {
            Ok(s) => s,
            Err(e) => return Err(classify_op_error(e, &conn.dns_host_name)),
        };
        // 4 = sizeLimitExceeded: more than one object matched. 32 = noSuchObject: a
        // `<GUID=…>` or DN base that names nothing. 34 = invalidDNSyntax: the DC does not
        // read the DN as one (RFC 4511, 4.1.9).
        let (entries, res) = (search.0, search.1);
        if res.rc == 32 && matches!(lookup, Lookup::Guid(_) | Lookup::Dn(_)) {
            return Ok(None);
        }
        if res.rc == 34 && matches!(lookup, Lookup::Dn(_)) {
            return Err(SearchFailure::Fatal(DirectoryError::UnusableName {
                lookup: lookup.to_string(),
                reason: format!(
                    "domain controller {} does not read it as a DN ({}); fix the event",
                    conn.dns_host_name, res.text
                ),
            }));
        }
        if res.rc != 0 && res.rc != 4 {
            return Err(SearchFailure::Fatal(DirectoryError::Search {
                domain_controller: conn.dns_host_name.clone(),
                reason: format!("LDAP result {} {}", res.rc, res.text),
            }));
        }
        let entries: Vec<SearchEntry> = entries
            .into_iter()
            .filter(|e| !e.is_ref() && !e.is_intermediate())
            .filter_map(search_entry)
            .collect();
        if entries.len() > 1 || res.rc == 4 {
            return Err(SearchFailure::Fatal(DirectoryError::Ambiguous {
                domain_controller: conn.dns_host_name.clone(),
                lookup: lookup.to_string(),
                count: entries.len().max(2),
            }));
        }
        Ok(entries
            .into_iter()
            .next()
            .map(|e| account_from_entry(&e, self.inner.sync_rule)))
    }

    async fn connection(&self, url: &url::Url) -> Result<Conn, ReadError> {
        let key = url.to_string();
        {
            let pool = self.inner.pool.lock();
            if let Some(conns) = pool.get(&key)
                && conns.len() >= self.inner.pool_size
            {
                let i = self
                    .inner
                    .next
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mut c = conns[i % conns.len()].clone();
                if !c.ldap.is_closed() {
                    return Ok(c);
                }
            }
        }
        let conn = self.connect(url).await?;
        let mut pool = self.inner.pool.lock();
        let conns = pool.entry(key).or_default();
        conns.retain(|c| !c.ldap.clone().is_closed());
        if conns.len() < self.inner.pool_size {
            conns.push(conn.clone());
        }
        Ok(conn)
    }

    fn drop_pooled(&self, url: &url::Url) {
        self.inner.pool.lock().remove(url.as_str());
    }

    /// Opens a connection (TLS or StartTLS, as configured) without binding.
    async fn open(&self, url: &url::Url) -> Result<Ldap, ReadError> {
        let inner = &self.inner;
        let tcp = connect_tcp(url, inner.timeout)
            .await
            .map_err(|e| ReadError::Unreachable(connect_reason(&e)))?;
        let settings = LdapConnSettings::new()
            .set_conn_timeout(inner.timeout)
            .set_config(inner.tls.clone())
            .set_starttls(url.scheme() == "ldap" && inner.starttls)
            .set_std_stream(StdStream::Tcp(tcp));
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, url.as_str())
            .await
            .map_err(|e| ReadError::Unreachable(connect_reason(&e)))?;
        ldap3::drive!(conn);
        ldap.with_timeout(inner.timeout);
        Ok(ldap)
    }

    /// Connects, binds as the service account, and reads the controller's DNS name.
    async fn connect(&self, url: &url::Url) -> Result<Conn, ReadError> {
        let inner = &self.inner;
        let mut ldap = self.open(url).await?;
        if !inner.bind_dn.is_empty() {
            let pw = inner
                .password
                .as_ref()
                .map(|p| p.expose_secret().to_owned())
                .unwrap_or_default();
            // An empty password makes the bind anonymous, and a DC says "success" to it.
            if pw.is_empty() {
                return Err(ReadError::Fatal(DirectoryError::BindRefused {
                    url: url.to_string(),
                    bind_dn: inner.bind_dn.clone(),
                    reason: "no password is configured (an empty one would be an anonymous bind)"
                        .into(),
                }));
            }
            let res = ldap
                .with_timeout(inner.timeout)
                .simple_bind(&inner.bind_dn, &pw)
                .await
                .map_err(|e| ReadError::Unreachable(connect_reason(&e)))?;
            if res.rc != 0 {
                return Err(ReadError::Fatal(DirectoryError::BindRefused {
                    url: url.to_string(),
                    bind_dn: inner.bind_dn.clone(),
                    reason: bind_reason(res.rc, &res.text),
                }));
            }
        }
        let root = ldap
            .with_timeout(inner.timeout)
            .search("", Scope::Base, "(objectClass=*)", vec!["dnsHostName"])
            .await
            .map_err(|e| ReadError::Unreachable(connect_reason(&e)))?;
        let reported = root
            .0
            .into_iter()
            .filter_map(search_entry)
            .find_map(|e| first(&e, "dnsHostName"));
        let dns_host_name = controllers::exchange_name(url, reported.as_deref());
        self.inner
            .learned
            .lock()
            .insert(url.to_string(), dns_host_name.clone());
        Ok(Conn {
            ldap,
            dns_host_name,
        })
    }
}

enum ReadError {
    /// Try the next domain controller.
    Unreachable(String),
    Fatal(DirectoryError),
}

enum SearchFailure {
    Connection(String),
    Fatal(DirectoryError),
}

impl From<ReadError> for SearchFailure {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Unreachable(r) => SearchFailure::Connection(r),
            ReadError::Fatal(e) => SearchFailure::Fatal(e),
        }
    }
}

fn classify_op_error(e: LdapError, dc: &str) -> SearchFailure {
    match e {
        LdapError::Timeout { .. } => SearchFailure::Fatal(DirectoryError::Search {
            domain_controller: dc.to_owned(),
            reason: "timed out".into(),
        }),
        LdapError::LdapResult { result } => SearchFailure::Fatal(DirectoryError::Search {
            domain_controller: dc.to_owned(),
            reason: format!("LDAP result {} {}", result.rc, result.text),
        }),
        other => SearchFailure::Connection(other.to_string()),
    }
}

/// The TCP connection to a DC, opened here because ldap3 opens its own without
/// `TCP_NODELAY`: the pooled connections carry several searches at once, and Nagle holds a
/// request written while another is unanswered until the DC's delayed ACK (up to 40 ms).
pub(crate) async fn connect_tcp(
    url: &url::Url,
    timeout: Duration,
) -> Result<std::net::TcpStream, LdapError> {
    let port = url
        .port()
        .unwrap_or(if url.scheme() == "ldaps" { 636 } else { 389 });
    let host = match url.host_str() {
        Some("") | None => "localhost",
        Some(h) => h.trim_start_matches('[').trim_end_matches(']'),
    };
    let tcp = tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port))).await??;
    tcp.set_nodelay(true)?;
    Ok(tcp.into_std()?)
}

fn connect_reason(e: &LdapError) -> String {
    match e {
        LdapError::Io { source } if source.kind() == std::io::ErrorKind::ConnectionRefused => {
            "connection refused".into()
        }
        LdapError::Timeout { .. } => "timed out".into(),
        other => {
            let text = other.to_string();
            if text.contains("certificate") || text.contains("Certificate") {
                format!(
                    "TLS: {text} (check [ldap].ca_file and that the DC's certificate names the host in the URL)"
                )
            } else {
                text
            }
        }
    }
}

/// AD puts the reason in the diagnostic text: `data 52e` wrong password, `533` disabled,
/// `701`/`532` expired, `775` locked out.
fn bind_reason(rc: u32, text: &str) -> String {
    let why = if text.contains("data 52e") {
        "wrong password"
    } else if text.contains("data 533") {
        "the service account is disabled"
    } else if text.contains("data 532") || text.contains("data 701") {
        "the service account's password has expired"
    } else if text.contains("data 775") {
        "the service account is locked out"
    } else if rc == 8 {
        "the DC requires TLS for simple binds"
    } else {
        "refused"
    };
    format!("{why} (LDAP result {rc})")
}
