//! People sign in to the dashboard with their AD account: the password checked by the
//! directory (a bind as them), the role from their nested group membership, and a session
//! kept in PostgreSQL so any replica accepts it and a sign-out ends it everywhere.
//!
//! The cookie carries a random 32-byte session id; the database keeps only its SHA-256.
//! The CSRF token of a session is derived from its id, so nothing else is stored for it.
//! Failed sign-ins are counted per user name and per client address in the database, so
//! the limit holds however a load balancer spreads the attempts over replicas.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::SecretString;
use sha2::{Digest, Sha256};

use crate::directory::{Directory, DirectoryError, Lookup, PasswordRefused};
use crate::store::{NewSession, Role, SessionLimits, Store, StoreError};

/// Failed sign-ins allowed per user name within [`FAILURE_WINDOW`].
pub const MAX_FAILURES_PER_USER: usize = 5;
/// Failed sign-ins allowed per client address within [`FAILURE_WINDOW`].
pub const MAX_FAILURES_PER_ADDRESS: usize = 20;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Ended sessions are kept this long (who was signed in when), then deleted.
const KEEP_ENDED: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error(
        "sign-in with AD is off: set [ldap].urls and admin.viewer_groups or admin.operator_groups"
    )]
    Off,
    #[error("{0}")]
    Refused(PasswordRefused),
    #[error(
        "{0} is in none of the dashboard's AD groups; ask for membership of a viewer or operator group"
    )]
    NoGroup(String),
    #[error(
        "too many failed sign-ins for this user or from this address; try again in {minutes} minutes"
    )]
    TooMany { minutes: u64 },
    #[error("the directory could not be asked: {0}")]
    Directory(#[from] DirectoryError),
    #[error("the session could not be kept: {0}")]
    Store(#[from] StoreError),
}

impl From<PasswordRefused> for SignInError {
    fn from(e: PasswordRefused) -> Self {
        match e {
            PasswordRefused::Directory(d) => SignInError::Directory(d),
            other => SignInError::Refused(other),
        }
    }
}

/// A signed-in person, as a request sees them.
#[derive(Debug, Clone)]
pub struct Session {
    /// `CORP\jdoe`: what their actions are recorded as.
    pub person: String,
    pub role: Role,
    /// The token every state-changing form of this session carries.
    pub csrf: String,
    /// The hash the database knows the session by (for sign-out).
    id_hash: Vec<u8>,
}

/// The settings sign-in needs, from `[admin]`.
#[derive(Debug, Clone)]
pub struct SignInConfig {
    pub viewer_groups: Vec<String>,
    pub operator_groups: Vec<String>,
    pub domain: String,
    pub limits: SessionLimits,
    pub group_check_interval: Duration,
}

/// AD sign-in and the sessions it opens; cheap to clone.
#[derive(Clone)]
pub struct SignIn {
    directory: Option<Directory>,
    store: Store,
    cfg: Arc<SignInConfig>,
}

fn sha256(parts: &[&[u8]]) -> Vec<u8> {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().to_vec()
}

/// The session id's hash as stored, or `None` for a cookie that is not one of ours.
fn id_hash(cookie: &str) -> Option<Vec<u8>> {
    let raw = URL_SAFE_NO_PAD.decode(cookie).ok()?;
    (raw.len() == 32).then(|| sha256(&[&raw]))
}

fn csrf_of(cookie: &str) -> String {
    URL_SAFE_NO_PAD.encode(sha256(&[b"mailboxd-csrf\0", cookie.as_bytes()]))
}

/// The NetBIOS-style domain from a base DN: `DC=corp,DC=example` → `CORP`.
pub fn domain_of(base_dn: &str) -> String {
    base_dn
        .split(',')
        .find_map(|rdn| {
            let (k, v) = rdn.trim().split_once('=')?;
            k.eq_ignore_ascii_case("DC").then(|| v.to_uppercase())
        })
        .unwrap_or_default()
}

/// How a typed user name is looked up: `DOMAIN\user` and `user` by sAMAccountName
/// (another domain's name is refused), `user@domain` by UPN.
pub fn lookup(name: &str, domain: &str) -> Option<Lookup> {
    let name = name.trim();
    if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
        return None;
    }
    if let Some((d, user)) = name.split_once('\\') {
        let ours = d.eq_ignore_ascii_case(domain);
        return (ours && !user.is_empty()).then(|| Lookup::Sam(user.to_owned()));
    }
    Some(if name.contains('@') {
        Lookup::Upn(name.to_owned())
    } else {
        Lookup::Sam(name.to_owned())
    })
}

/// What failed sign-ins are counted under: the user name (`CORP\jdoe`, `jdoe` and
/// `jdoe@corp.example` count as one) and the client's address.
fn failure_keys(lookup: Option<&Lookup>, typed: &str, client: IpAddr) -> [String; 2] {
    let user = match lookup {
        Some(Lookup::Sam(s)) => s.as_str(),
        Some(Lookup::Upn(u)) => u.split('@').next().unwrap_or(u),
        _ => typed.trim(),
    };
    [
        format!("user:{}", user.to_lowercase()),
        format!("addr:{client}"),
    ]
}

impl SignIn {
    pub fn new(directory: Option<Directory>, store: Store, cfg: SignInConfig) -> SignIn {
        let groups = cfg.viewer_groups.len() + cfg.operator_groups.len();
        SignIn {
            directory: directory.filter(|_| groups > 0),
            store,
            cfg: Arc::new(cfg),
        }
    }

    pub fn enabled(&self) -> bool {
        self.directory.is_some()
    }

    /// Checks the name and password against AD and opens a session. Returns the cookie
    /// value (the session id) and the session.
    pub async fn sign_in(
        &self,
        name: &str,
        password: &SecretString,
        client: IpAddr,
    ) -> Result<(String, Session), SignInError> {
        let directory = self.directory.as_ref().ok_or(SignInError::Off)?;
        let lookup = lookup(name, &self.cfg.domain);
        let keys = failure_keys(lookup.as_ref(), name, client);
        if let Some(minutes) = self.blocked(&keys).await? {
            return Err(SignInError::TooMany { minutes });
        }
        let checked = match &lookup {
            Some(lookup) => directory.check_password(lookup, password).await,
            None => Err(PasswordRefused::Wrong),
        };
        let person = match checked {
            Ok(p) => p,
            Err(e) => {
                if !matches!(e, PasswordRefused::Directory(_)) {
                    self.store.record_signin_failure(&keys).await?;
                }
                return Err(e.into());
            }
        };
        let who = format!("{}\\{}", self.cfg.domain, person.sam_account_name);
        let role = self
            .role_of(directory, &person.dn)
            .await?
            .ok_or_else(|| SignInError::NoGroup(who.clone()))?;
        self.store.clear_signin_failures(&keys[0]).await?;
        let raw: [u8; 32] = rand::random();
        let cookie = URL_SAFE_NO_PAD.encode(raw);
        let hash = sha256(&[&raw]);
        self.store
            .create_session(&NewSession {
                id_hash: &hash,
                person: &who,
                user_dn: &person.dn,
                role,
            })
            .await?;
        if let Err(e) = self.store.purge_sessions(KEEP_ENDED).await {
            tracing::warn!(error = %e, "cannot delete old dashboard sessions");
        }
        let session = Session {
            person: who,
            role,
            csrf: csrf_of(&cookie),
            id_hash: hash,
        };
        Ok((cookie, session))
    }

    /// The role membership gives: operator groups first, then viewer groups.
    async fn role_of(&self, dir: &Directory, dn: &str) -> Result<Option<Role>, DirectoryError> {
        if dir.member_of_any(dn, &self.cfg.operator_groups).await? {
            return Ok(Some(Role::Operator));
        }
        if dir.member_of_any(dn, &self.cfg.viewer_groups).await? {
            return Ok(Some(Role::Viewer));
        }
        Ok(None)
    }

    /// The session this cookie value opens, if it is open; its groups and account are
    /// read again from AD when `group_check_interval` has passed, and the session ends if
    /// the person left the groups or the account was disabled or locked.
    pub async fn session(&self, cookie: &str) -> Result<Option<Session>, SignInError> {
        let Some(hash) = id_hash(cookie) else {
            return Ok(None);
        };
        let Some(open) = self.store.use_session(&hash, self.cfg.limits).await? else {
            return Ok(None);
        };
        let mut role = open.role;
        let due = chrono::Utc::now() - open.groups_checked_at
            >= chrono::Duration::from_std(self.cfg.group_check_interval)
                .unwrap_or(chrono::TimeDelta::MAX);
        if let (true, Some(dir)) = (due, &self.directory) {
            let person = dir.person(&open.user_dn).await?;
            let now = match person {
                Some(p) if !p.disabled && !p.locked => self.role_of(dir, &open.user_dn).await?,
                _ => None,
            };
            let Some(now) = now else {
                self.store.end_session(&hash, "left the groups").await?;
                tracing::info!(target: "audit", person = %open.person, "dashboard session ended: no longer in the groups, or the account is disabled or locked");
                return Ok(None);
            };
            self.store.session_checked(&hash, now).await?;
            role = now;
        }
        Ok(Some(Session {
            person: open.person,
            role,
            csrf: csrf_of(cookie),
            id_hash: hash,
        }))
    }

    /// Ends the session on every replica.
    pub async fn sign_out(&self, session: &Session) -> Result<(), SignInError> {
        self.store
            .end_session(&session.id_hash, "signed out")
            .await?;
        Ok(())
    }

    /// Minutes until one of `keys` may try again, when one has used its failures.
    async fn blocked(&self, keys: &[String; 2]) -> Result<Option<u64>, StoreError> {
        let counts = self.store.signin_failures(keys, FAILURE_WINDOW).await?;
        let limits = [MAX_FAILURES_PER_USER, MAX_FAILURES_PER_ADDRESS];
        Ok(keys.iter().zip(limits).find_map(|(k, max)| {
            let (_, n, left) = counts.iter().find(|(s, ..)| s == k)?;
            (*n >= max as i64).then(|| left.as_secs() / 60 + 1)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_domain_comes_from_the_first_dc_component() {
        assert_eq!(domain_of("DC=corp,DC=example"), "CORP");
        assert_eq!(domain_of("OU=x, dc=Emea,DC=corp"), "EMEA");
        assert_eq!(domain_of(""), "");
    }

    #[test]
    fn user_names_are_looked_up_the_way_windows_takes_them() {
        assert_eq!(
            lookup("CORP\\jdoe", "CORP"),
            Some(Lookup::Sam("jdoe".into()))
        );
        assert_eq!(
            lookup("corp\\jdoe", "CORP"),
            Some(Lookup::Sam("jdoe".into()))
        );
        assert_eq!(lookup("OTHER\\jdoe", "CORP"), None);
        assert_eq!(lookup(" jdoe ", "CORP"), Some(Lookup::Sam("jdoe".into())));
        assert_eq!(
            lookup("jdoe@corp.example", "CORP"),
            Some(Lookup::Upn("jdoe@corp.example".into()))
        );
        assert_eq!(lookup("jd\0oe", "CORP"), None);
        assert_eq!(lookup("", "CORP"), None);
    }

    #[test]
    fn every_spelling_of_a_user_name_counts_its_failures_together() {
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        for typed in ["CORP\\JDoe", "jdoe", "jdoe@corp.example"] {
            let keys = failure_keys(lookup(typed, "CORP").as_ref(), typed, ip);
            assert_eq!(keys, ["user:jdoe", "addr:10.1.2.3"], "{typed}");
        }
    }

    #[test]
    fn session_cookies_that_are_not_32_bytes_open_nothing() {
        assert!(id_hash("not base64!").is_none());
        assert!(id_hash(&URL_SAFE_NO_PAD.encode([1u8; 31])).is_none());
        let ok = URL_SAFE_NO_PAD.encode([7u8; 32]);
        assert_eq!(id_hash(&ok).map(|h| h.len()), Some(32));
        assert_ne!(csrf_of(&ok), ok, "the CSRF token is not the session id");
    }
}
