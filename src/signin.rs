//! People sign in to the dashboard with their AD account: the password checked by the
//! directory (a bind as them), the role from their nested group membership, and a session
//! kept in PostgreSQL so any replica accepts it and a sign-out ends it everywhere.
//!
//! The cookie carries a random 32-byte session id; the database keeps only its SHA-256.
//! The CSRF token of a session is derived from its id, so nothing else is stored for it.
//!
//! Guessing is limited twice, in the database so the limits hold across replicas and
//! parallel requests: per account (its objectGUID, whatever spelling of the name was
//! typed) below AD's own lockout threshold, so the dashboard cannot be used to lock people
//! out; and per client network (an IPv4 address, an IPv6 /64), the client taken from
//! `X-Forwarded-For` only when the peer is a trusted proxy. Every refusal looks the same to
//! the person (wrong password, no group, disabled, expired, locked, too many): the reason
//! goes to the log only, so the page tells an attacker nothing about the account.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ipnet::IpNet;
use secrecy::SecretString;
use sha2::{Digest, Sha256};

use crate::access::Role;
use crate::directory::{
    Candidate, Directory, DirectoryError, LockoutPolicy, Lookup, PasswordRefused,
};
use crate::store::{NewSession, SessionLimits, Store, StoreError};

/// Failed sign-ins allowed per account within the window, at most (lower when AD's
/// lockout threshold is lower: [`SignIn::adopt_lockout_policy`]).
pub const MAX_FAILURES_PER_USER: u32 = 5;
/// Failed sign-ins allowed per client network within the window.
pub const MAX_FAILURES_PER_ADDRESS: u32 = 20;
/// The window at least (longer when AD's lockout observation window is longer).
pub(crate) const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Ended sessions are kept this long (who was signed in when), then deleted.
const KEEP_ENDED: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub(crate) enum SignInError {
    #[error(
        "sign-in with AD is off: set [ldap].urls and admin.viewer_groups or admin.operator_groups"
    )]
    Off,
    /// Shown to the person as [`REFUSED`] whatever the reason; the reason is for the log.
    #[error("{0}")]
    Refused(Refusal),
    #[error("the directory could not be asked: {0}")]
    Directory(#[from] DirectoryError),
    #[error("the session could not be kept: {0}")]
    Store(#[from] StoreError),
}

/// What every refused sign-in shows, whatever the reason.
pub const REFUSED: &str = "Sign-in refused: the user name or password is wrong, the account may not use the dashboard, or there were too many failed attempts. Try again later, or ask the administrators of the dashboard.";

/// Why a sign-in was refused: for the log, never for the page.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refusal {
    #[error("no single account in AD has this name")]
    UnknownUser,
    #[error("{0}")]
    Password(PasswordRefused),
    #[error("{0} is in none of the dashboard's AD groups")]
    NoGroup(String),
    #[error("too many failed sign-ins for this account; refused without asking AD")]
    TooManyForUser,
    #[error("too many failed sign-ins from this address; refused without asking AD")]
    TooManyFromAddress,
}

/// A signed-in person, as a request sees them.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    /// `CORP\jdoe`: what their actions are recorded as.
    pub person: String,
    pub role: Role,
    /// The token every state-changing form of this session carries.
    pub csrf: String,
    /// The hash the database knows the session by (for sign-out).
    id_hash: Vec<u8>,
}

/// How many failed sign-ins are allowed, and within what window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FailureLimits {
    pub per_user: u32,
    pub per_address: u32,
    pub window: Duration,
}

impl Default for FailureLimits {
    fn default() -> Self {
        FailureLimits {
            per_user: MAX_FAILURES_PER_USER,
            per_address: MAX_FAILURES_PER_ADDRESS,
            window: FAILURE_WINDOW,
        }
    }
}

impl FailureLimits {
    /// Limits that stay below AD's lockout: fewer failures than its threshold, counted over
    /// at least its observation window (a failure older than our window but inside AD's
    /// would still count there).
    pub(crate) fn below(self, ad: LockoutPolicy) -> FailureLimits {
        if ad.threshold == 0 {
            return self;
        }
        FailureLimits {
            per_user: self.per_user.min(ad.threshold.saturating_sub(1)).max(1),
            window: self.window.max(ad.observation_window),
            ..self
        }
    }
}

/// The settings sign-in needs, from `[admin]`.
#[derive(Debug, Clone)]
pub(crate) struct SignInConfig {
    pub viewer_groups: Vec<String>,
    pub operator_groups: Vec<String>,
    pub domain: String,
    pub limits: SessionLimits,
    pub group_check_interval: Duration,
    pub failures: FailureLimits,
}

/// AD sign-in and the sessions it opens; cheap to clone.
#[derive(Clone)]
pub(crate) struct SignIn {
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
pub(crate) fn domain_of(base_dn: &str) -> String {
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

/// The client of a request: the peer, or, when the peer is one of `proxies`, the last
/// address of `X-Forwarded-For` that is not itself a trusted proxy (each proxy appends the
/// address it was reached from, so only the right end of the list can be believed).
pub(crate) fn client_address(
    peer: SocketAddr,
    forwarded_for: &[&str],
    proxies: &[IpNet],
) -> IpAddr {
    let trusted = |ip: &IpAddr| proxies.iter().any(|n| n.contains(ip));
    let mut client = peer.ip().to_canonical();
    if !trusted(&client) {
        return client;
    }
    let hops = forwarded_for.iter().rev().flat_map(|h| h.rsplit(','));
    for hop in hops {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = ip.to_canonical();
                if !trusted(&client) {
                    break;
                }
            }
            // A hop that is no address: believe nothing to its left.
            Err(_) => break,
        }
    }
    client
}

/// What failures from `client` are counted under: its IPv4 address, or its IPv6 /64 (one
/// host usually holds a whole /64, so single addresses would be free to rotate).
pub(crate) fn address_key(client: IpAddr) -> String {
    match client {
        IpAddr::V4(v4) => format!("addr:{v4}"),
        IpAddr::V6(v6) => {
            let net = ipnet::Ipv6Net::new(v6, 64).map_or(v6, |n| n.network());
            format!("addr:{net}/64")
        }
    }
}

impl SignIn {
    pub(crate) fn new(directory: Option<Directory>, store: Store, cfg: SignInConfig) -> SignIn {
        let groups = cfg.viewer_groups.len() + cfg.operator_groups.len();
        SignIn {
            directory: directory.filter(|_| groups > 0),
            store,
            cfg: Arc::new(cfg),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.directory.is_some()
    }

    /// Reads AD's lockout policy and keeps the per-account limit below it (logged); when AD
    /// cannot be read, the configured limit stays, with a warning.
    pub(crate) async fn adopt_lockout_policy(&mut self) {
        let Some(dir) = &self.directory else { return };
        let ours = self.cfg.failures;
        match dir.lockout_policy().await {
            Ok(ad) => {
                let now = ours.below(ad);
                if ad.threshold == 1 {
                    tracing::warn!(
                        "AD locks an account after one wrong password (lockoutThreshold = 1): a single failed dashboard sign-in locks it"
                    );
                }
                if now != ours {
                    tracing::warn!(
                        threshold = ad.threshold,
                        observation_window_s = ad.observation_window.as_secs(),
                        per_user = now.per_user,
                        window_s = now.window.as_secs(),
                        "the dashboard's sign-in limit was lowered below AD's account lockout policy"
                    );
                }
                tracing::info!(
                    per_user = now.per_user,
                    per_address = now.per_address,
                    window_s = now.window.as_secs(),
                    ad_lockout_threshold = ad.threshold,
                    "dashboard sign-in limits"
                );
                Arc::make_mut(&mut self.cfg).failures = now;
            }
            Err(e) => {
                tracing::warn!(error = %e, per_user = ours.per_user, "cannot read AD's lockout policy; the sign-in limit stays as configured (keep it below lockoutThreshold)")
            }
        }
    }

    /// Checks the name and password against AD and opens a session. Returns the cookie
    /// value (the session id) and the session. One attempt of the client's network budget
    /// is taken first and one of the account's before its password reaches AD; both stay
    /// taken when the attempt fails.
    pub(crate) async fn sign_in(
        &self,
        name: &str,
        password: &SecretString,
        client: IpAddr,
    ) -> Result<(String, Session), SignInError> {
        let directory = self.directory.as_ref().ok_or(SignInError::Off)?;
        let limits = self.cfg.failures;
        let addr = address_key(client);
        let store = &self.store;
        if !store
            .take_signin_attempt(&addr, limits.per_address, limits.window)
            .await?
        {
            return Err(SignInError::Refused(Refusal::TooManyFromAddress));
        }
        let result = self.try_sign_in(directory, name, password).await;
        // The network's budget is for failures: a success or an unanswered attempt gives
        // its unit back.
        if matches!(
            result,
            Ok(_) | Err(SignInError::Directory(_) | SignInError::Store(_))
        ) {
            store.give_back_signin_attempt(&addr).await?;
        }
        result
    }

    async fn try_sign_in(
        &self,
        directory: &Directory,
        name: &str,
        password: &SecretString,
    ) -> Result<(String, Session), SignInError> {
        let refused = SignInError::Refused;
        let lookup = lookup(name, &self.cfg.domain).ok_or(refused(Refusal::UnknownUser))?;
        let found = directory
            .find_person(&lookup)
            .await?
            .ok_or(refused(Refusal::UnknownUser))?;
        self.check(directory, &found, password).await?;
        let person = found.person;
        let who = format!("{}\\{}", self.cfg.domain, person.sam_account_name);
        let role = self
            .role_of(directory, &person.dn)
            .await?
            .ok_or_else(|| refused(Refusal::NoGroup(who.clone())))?;
        self.open_session(who, &person.dn, role).await
    }

    /// The password check under the account's budget: the attempt is taken before the bind
    /// (so parallel guesses cannot pass the limit), kept when AD refused, forgotten with
    /// the whole count when AD accepted (as AD resets its own), given back when AD did not
    /// answer.
    async fn check(
        &self,
        directory: &Directory,
        found: &Candidate,
        password: &SecretString,
    ) -> Result<(), SignInError> {
        let key = format!("guid:{}", found.person.guid);
        let limits = self.cfg.failures;
        if !self
            .store
            .take_signin_attempt(&key, limits.per_user, limits.window)
            .await?
        {
            return Err(SignInError::Refused(Refusal::TooManyForUser));
        }
        match directory.check_password(found, password).await {
            Ok(()) => {
                self.store.clear_signin_attempts(&key).await?;
                Ok(())
            }
            Err(PasswordRefused::Directory(e)) => {
                self.store.give_back_signin_attempt(&key).await?;
                Err(e.into())
            }
            Err(e) => Err(SignInError::Refused(Refusal::Password(e))),
        }
    }

    async fn open_session(
        &self,
        who: String,
        dn: &str,
        role: Role,
    ) -> Result<(String, Session), SignInError> {
        let raw: [u8; 32] = rand::random();
        let cookie = URL_SAFE_NO_PAD.encode(raw);
        let hash = sha256(&[&raw]);
        self.store
            .create_session(&NewSession {
                id_hash: &hash,
                person: &who,
                user_dn: dn,
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
    pub(crate) async fn session(&self, cookie: &str) -> Result<Option<Session>, SignInError> {
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
    pub(crate) async fn sign_out(&self, session: &Session) -> Result<(), SignInError> {
        self.store
            .end_session(&session.id_hash, "signed out")
            .await?;
        Ok(())
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
    fn the_client_is_the_peer_unless_the_peer_is_a_trusted_proxy() {
        let proxies: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        let peer = |s: &str| SocketAddr::new(s.parse().unwrap(), 4000);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // Anyone else's header is ignored.
        assert_eq!(
            client_address(peer("192.0.2.7"), &["1.2.3.4"], &proxies),
            ip("192.0.2.7")
        );
        // From a proxy: the right-most hop that is not a proxy; what the client wrote to
        // the left of it is not believed.
        assert_eq!(
            client_address(
                peer("10.1.1.1"),
                &["6.6.6.6, 198.51.100.9, 10.2.2.2"],
                &proxies
            ),
            ip("198.51.100.9")
        );
        assert_eq!(
            client_address(peer("10.1.1.1"), &["6.6.6.6", "198.51.100.9"], &proxies),
            ip("198.51.100.9")
        );
        assert_eq!(
            client_address(peer("10.1.1.1"), &[], &proxies),
            ip("10.1.1.1")
        );
        assert_eq!(
            client_address(peer("10.1.1.1"), &["junk, 10.3.3.3"], &proxies),
            ip("10.3.3.3")
        );
        assert_eq!(
            client_address(peer("::ffff:192.0.2.7"), &[], &proxies),
            ip("192.0.2.7")
        );
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64_bit_prefix() {
        let a = address_key("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = address_key("2001:db8:1:2:ffff:1:2:3".parse().unwrap());
        assert_eq!(a, "addr:2001:db8:1:2::/64");
        assert_eq!(a, b);
        assert_ne!(a, address_key("2001:db8:1:3::1".parse().unwrap()));
        assert_eq!(address_key("192.0.2.7".parse().unwrap()), "addr:192.0.2.7");
    }

    #[test]
    fn the_limit_per_account_stays_below_ads_lockout_threshold() {
        let ours = FailureLimits::default();
        let ad = |threshold, mins: u64| LockoutPolicy {
            threshold,
            observation_window: Duration::from_secs(mins * 60),
        };
        assert_eq!(ours.below(ad(0, 30)), ours, "no lockout in AD: ours stays");
        assert_eq!(ours.below(ad(10, 10)), ours);
        let cis = ours.below(ad(5, 30));
        assert_eq!((cis.per_user, cis.window), (4, Duration::from_secs(1800)));
        assert_eq!(ours.below(ad(3, 15)).per_user, 2);
        assert_eq!(ours.below(ad(1, 15)).per_user, 1);
        assert_eq!(ours.below(ad(3, 15)).per_address, MAX_FAILURES_PER_ADDRESS);
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
