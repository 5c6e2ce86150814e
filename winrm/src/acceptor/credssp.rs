//! The server half of CredSSP: what a WinRM listener with `Auth/CredSSP=true` does. sspi's
//! `CredSspServer` runs the TSRequests; rustls the inner TLS session in memory; this module
//! adds what sspi leaves to the caller: the lab's RSA certificate, the version floor, that the
//! delegated credentials are the account that authenticated and its configured password
//! (or, after Kerberos, an account the host admits), and Windows' error codes.

use std::sync::Arc;

use parking_lot::Mutex;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{Connection, ServerConfig, ServerConnection};
use secrecy::{ExposeSecret, SecretString};
use sspi::credssp::{
    CredSspServer, CredentialsProxy, NStatusCode, ServerError, ServerMode, ServerState, TsRequest,
};
use sspi::kerberos::ServerProperties;
use sspi::ntlm::NtlmConfig;
use sspi::{AuthIdentity, KerberosConfig, KerberosServerConfig, NegotiateConfig, Username};
use subtle::ConstantTimeEq;

use super::kerberos::KeytabEntry;
use super::ntlm::{field, from_utf16le};
use crate::credssp::{
    CredSspError, STATUS_NTLM_BLOCKED, drain, feed, seal_message, send_ts, sha256_fingerprint,
    subject_public_key, unseal_message,
};
use crate::kerberos::TcpKdc;

/// MS-CSSP v5 is the CVE-2018-0886 fix (the nonce-bound public-key hash): older is refused.
pub const MIN_VERSION: u32 = 5;
/// What Windows reports for a bad user name or password.
const STATUS_LOGON_FAILURE: u32 = 0xC000_006D;
/// The listener's CredSSP certificate and TLS settings, made once at start-up.
#[derive(Clone)]
pub struct CredSspCert {
    config: Arc<ServerConfig>,
    public_key: Vec<u8>,
    /// SHA-256 fingerprint of the certificate, for the client's pin.
    pub fingerprint: String,
}

impl std::fmt::Debug for CredSspCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredSspCert")
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

impl CredSspCert {
    /// A fresh self-signed RSA-2048 `CN=WSMAN-<hostname>` certificate, as Windows makes one.
    /// RSA because pyspnego hashes the key as PKCS#1; the `rsa` crate because ring cannot
    /// generate RSA keys. TLS 1.2 only and no session tickets (MS-CSSP 3.1.5).
    pub fn generate(hostname: &str) -> Result<CredSspCert, CredSspError> {
        use rand_rsa::SeedableRng;
        use rsa::pkcs8::EncodePrivateKey;
        let fail = |e: &dyn std::fmt::Display| CredSspError::Tls(format!("certificate: {e}"));
        let mut rng = rand_rsa::rngs::StdRng::try_from_rng(&mut rand_rsa::rngs::SysRng)
            .map_err(|e| fail(&e))?;
        let key = rsa::RsaPrivateKey::new(&mut rng, 2048).map_err(|e| fail(&e))?;
        let pkcs8 = key.to_pkcs8_der().map_err(|e| fail(&e))?;
        let pair = rcgen::KeyPair::try_from(pkcs8.as_bytes()).map_err(|e| fail(&e))?;
        let mut params =
            rcgen::CertificateParams::new(vec![hostname.to_owned()]).map_err(|e| fail(&e))?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("WSMAN-{hostname}"));
        let cert = params.self_signed(&pair).map_err(|e| fail(&e))?;
        let der: CertificateDer<'static> = cert.der().clone();
        let key = PrivateKeyDer::from(PrivatePkcs8KeyDer::from(pkcs8.as_bytes().to_vec()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS12])
            .map_err(|e| fail(&e))?
            .with_no_client_auth()
            .with_single_cert(vec![der.clone()], key)
            .map_err(|e| fail(&e))?;
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(CredSspCert {
            config: Arc::new(config),
            public_key: subject_public_key(der.as_ref())?,
            fingerprint: sha256_fingerprint(der.as_ref()),
        })
    }
}

/// Whether a CredSSP token is a TLS ClientHello: it starts a new context.
pub fn is_client_hello(token: &[u8]) -> bool {
    token.first() == Some(&0x16) && token.get(5) == Some(&0x01)
}

/// The accounts as sspi asks for them. Its SPNEGO server matches user *and* domain exactly
/// against `auth_data()`, so every spelling the listener accepts is listed; raw NTLM asks by
/// the wire name, where the domain policy is applied here.
#[derive(Clone)]
struct Accounts {
    users: Vec<(String, SecretString)>,
    domains: Vec<String>,
    /// Accounts a Kerberos logon may be for (the host's Remote Management Users).
    kerberos_allowed: Vec<String>,
    /// The account sspi's Kerberos acceptor authenticated, when it asked for it by name.
    kerberos_user: Arc<Mutex<Option<String>>>,
}

impl Accounts {
    fn domain_ok(&self, domain: Option<&str>) -> bool {
        domain
            .is_none_or(|d| d.is_empty() || self.domains.iter().any(|x| x.eq_ignore_ascii_case(d)))
    }

    fn identity(username: Username, password: &SecretString) -> AuthIdentity {
        AuthIdentity {
            username,
            password: password.expose_secret().to_owned().into(),
        }
    }
}

impl CredentialsProxy for Accounts {
    type AuthenticationData = AuthIdentity;

    fn auth_data_by_user(&mut self, username: &Username) -> std::io::Result<AuthIdentity> {
        let denied =
            || std::io::Error::new(std::io::ErrorKind::PermissionDenied, "unknown account");
        if !self.domain_ok(domain_of(username)) {
            return Err(denied());
        }
        // After Kerberos the ticket proved the account; sspi wants an identity to go on with,
        // whose password it does not use. The lab cannot check a Kerberos account's password
        // (it holds only the SPN's key), so delegated credentials are not checked either.
        if let Some(k) = self
            .kerberos_allowed
            .iter()
            .find(|k| k.eq_ignore_ascii_case(username.account_name()))
            && username.inner().contains('@')
        {
            *self.kerberos_user.lock() = Some(k.clone());
            return Ok(Accounts::identity(
                username.clone(),
                &SecretString::from(""),
            ));
        }
        self.users
            .iter()
            .find(|(u, _)| u.eq_ignore_ascii_case(username.account_name()))
            .map(|(_, p)| Accounts::identity(username.clone(), p))
            .ok_or_else(denied)
    }

    fn auth_data(&mut self) -> std::io::Result<Vec<AuthIdentity>> {
        let mut all = Vec::new();
        for (user, password) in &self.users {
            let mut push = |n: Result<Username, _>| {
                if let Ok(n) = n {
                    all.push(Accounts::identity(n, password));
                }
            };
            push(Username::new(user, None));
            for d in &self.domains {
                push(Username::new(user, Some(d)));
                push(Username::parse(&format!("{user}@{d}")));
            }
        }
        // SPNEGO's mechListMIC check looks a Kerberos client up here by its UPN. No password
        // goes with it: an NTLM logon as such a name still fails in `finish`, which wants the
        // configured password delegated.
        for user in &self.kerberos_allowed {
            for d in &self.domains {
                if let Ok(n) = Username::parse(&format!("{user}@{d}")) {
                    all.push(Accounts::identity(n, &SecretString::from("")));
                }
            }
        }
        Ok(all)
    }
}

/// What one CredSSP leg came to.
pub enum CredSspAccepted {
    /// Send these bytes back: 401 + `WWW-Authenticate: CredSSP <b64>`.
    Continue(Vec<u8>),
    /// Authenticated, and the client delegated its password: the logon this gives carries
    /// network credentials (a second hop works), unlike an NTLM or Kerberos logon. The
    /// password itself was checked and dropped.
    Delegated(DelegatedLogon),
    /// Refused; `token` (a TSRequest with errorCode, may be empty) goes back with the 401.
    Refused { token: Vec<u8>, reason: String },
}

/// The account a CredSSP logon is for. That it exists means credentials were delegated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DelegatedLogon {
    /// The configured account name, as the other acceptors return it.
    pub user: String,
    /// The domain the client delegated the credentials for (empty: none given).
    pub domain: String,
}

/// The server half of one CredSSP context (= one TCP connection).
pub struct CredSspAcceptor {
    tls: Connection,
    cert: CredSspCert,
    accounts: Accounts,
    server: Option<Box<CredSspServer<Accounts>>>,
    spnego: bool,
    /// (domain, user) of the NTLM AUTHENTICATE the client sent.
    authenticated: Option<(String, String)>,
    user: Option<String>,
    /// The SPN and its key, when the host accepts Kerberos inside CredSSP's SPNEGO.
    kerberos: Option<(String, KeytabEntry)>,
    /// The SPN holder's logon and the KDC, for user-to-user.
    u2u: Option<(AuthIdentity, String)>,
    /// "Restrict NTLM: Incoming NTLM traffic" = Deny all accounts.
    deny_ntlm: bool,
}

impl CredSspAcceptor {
    /// A context for a ClientHello; `users` are the accepted accounts, `domains` the NetBIOS
    /// and DNS names their domain may be given as.
    pub fn new(
        cert: &CredSspCert,
        users: &[(String, SecretString)],
        domains: &[String],
    ) -> Result<CredSspAcceptor, CredSspError> {
        let tls = ServerConnection::new(cert.config.clone())
            .map_err(|e| CredSspError::Tls(e.to_string()))?;
        Ok(CredSspAcceptor {
            tls: tls.into(),
            cert: cert.clone(),
            accounts: Accounts {
                users: users.to_vec(),
                domains: domains.to_vec(),
                kerberos_allowed: Vec::new(),
                kerberos_user: Arc::default(),
            },
            server: None,
            spnego: false,
            authenticated: None,
            user: None,
            kerberos: None,
            u2u: None,
            deny_ntlm: false,
        })
    }

    /// Kerberos user-to-user too (RFC 4120 §2.9.2; sspi's CredSSP client always asks for
    /// it): the SPN holder logs on at `kdc` to hand the client its TGT.
    pub fn with_user_to_user(
        mut self,
        user: &str,
        password: &SecretString,
        kdc: &str,
    ) -> CredSspAcceptor {
        if let Ok(name) = Username::parse(user) {
            self.u2u = Some((Accounts::identity(name, password), kdc.to_owned()));
        }
        self
    }

    /// Kerberos inside SPNEGO too (as Windows' CredSSP accepts it): `spn`'s key, and the
    /// accounts a ticket may be for.
    pub fn with_kerberos(
        mut self,
        spn: &str,
        key: &KeytabEntry,
        allowed: &[String],
    ) -> CredSspAcceptor {
        self.kerberos = Some((spn.to_owned(), key.clone()));
        self.accounts.kerberos_allowed = allowed.to_vec();
        self
    }

    /// The host denies incoming NTLM: an NTLM token inside CredSSP gets STATUS_NTLM_BLOCKED.
    pub fn with_ntlm_denied(mut self, denied: bool) -> CredSspAcceptor {
        self.deny_ntlm = denied;
        self
    }

    /// The account this connection authenticated as.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// One client token in, what to answer out.
    pub fn step(&mut self, token: &[u8]) -> Result<CredSspAccepted, CredSspError> {
        let plain = feed(&mut self.tls, token)?;
        let out = drain(&mut self.tls)?;
        if plain.is_empty() {
            return Ok(CredSspAccepted::Continue(out));
        }
        let ts =
            TsRequest::from_buffer(&plain).map_err(|e| CredSspError::Protocol(e.to_string()))?;
        if ts.version < MIN_VERSION {
            return self.refuse(format!(
                "CredSSP version {} (below {MIN_VERSION})",
                ts.version
            ));
        }
        // NTLM's first message, raw or inside SPNEGO, is where a host denying NTLM stops:
        // Microsoft documents that it "return[s] an NTLM blocked error message to the client"
        // ("Network security: Restrict NTLM: Incoming NTLM traffic"), and CredSSP carries
        // the NTSTATUS of a failed SPNEGO exchange in errorCode (MS-CSSP 2.2.1).
        if self.deny_ntlm
            && let Some(t) = &ts.nego_tokens
            && t.windows(8).any(|w| w == b"NTLMSSP\0")
        {
            return self.refuse_with(STATUS_NTLM_BLOCKED, "NTLM is denied on this host".into());
        }
        if let Some(t) = &ts.nego_tokens
            && let Some(who) = authenticate_user(t)
        {
            self.authenticated = Some(who);
        }
        let result = self.process(ts)?;
        match result {
            Ok(ServerState::ReplyNeeded(reply)) => {
                let mut bytes = out;
                bytes.extend(send_ts(&mut self.tls, &reply)?);
                Ok(CredSspAccepted::Continue(bytes))
            }
            Ok(ServerState::Finished(identity)) => self.finish(&identity),
            Err(ServerError { error, .. }) => self.refuse(error.to_string()),
        }
    }

    /// Hands the TSRequest to sspi, built on the first one (raw NTLM or SPNEGO, by the token).
    fn process(&mut self, ts: TsRequest) -> Result<Result<ServerState, ServerError>, CredSspError> {
        if self.server.is_none() {
            let raw = ts
                .nego_tokens
                .as_deref()
                .is_some_and(|t| t.starts_with(b"NTLMSSP\0"));
            self.spnego = !raw;
            let mode = if raw {
                ServerMode::Ntlm(NtlmConfig::default())
            } else {
                ServerMode::Negotiate(self.negotiate_config()?)
            };
            let server =
                CredSspServer::new(self.cert.public_key.clone(), self.accounts.clone(), mode)
                    .map_err(|e| CredSspError::Protocol(e.to_string()))?;
            self.server = Some(Box::new(server));
        }
        let Some(server) = self.server.as_mut() else {
            return Err(CredSspError::Protocol("no CredSSP server".into()));
        };
        // pyspnego (pywinrm's default) sends its last SPNEGO token and pubKeyAuth in ONE
        // TSRequest; sspi then drops its own mechListMIC token but spends sequence number 0
        // on it, and the client rejects the MIC. Split in two, answer both in one TSRequest.
        // User-to-user asks the KDC for the SPN holder's TGT: a blocking call, which the lab
        // (a test double on one host with its KDC) makes in place.
        let kdc = TcpKdc {
            timeout: std::time::Duration::from_secs(5),
        };
        if !(self.spnego && ts.nego_tokens.is_some() && ts.pub_key_auth.is_some()) {
            return Ok(server.process(ts).resolve_with_client(&kdc));
        }
        let mut first = ts.clone();
        first.pub_key_auth = None;
        first.client_nonce = None;
        let mut second = ts;
        second.nego_tokens = None;
        let nego = match server.process(first).resolve_to_result() {
            Ok(ServerState::ReplyNeeded(nego)) => nego,
            other => return Ok(other),
        };
        Ok(match server.process(second).resolve_to_result() {
            Ok(ServerState::ReplyNeeded(mut reply)) => {
                reply.nego_tokens = nego.nego_tokens;
                Ok(ServerState::ReplyNeeded(reply))
            }
            other => other,
        })
    }

    /// SPNEGO with Kerberos preferred when the host has a keytab, NTLM unless denied.
    fn negotiate_config(&self) -> Result<NegotiateConfig, CredSspError> {
        let packages = if self.deny_ntlm {
            "kerberos,!ntlm"
        } else {
            "kerberos,ntlm"
        };
        let Some((spn, key)) = &self.kerberos else {
            return Ok(NegotiateConfig::new(
                Box::new(NtlmConfig::default()),
                Some("ntlm".into()),
                "LAB".into(),
            ));
        };
        let parts: Vec<&str> = spn.split('/').collect();
        let logon = self
            .u2u
            .as_ref()
            .map(|(id, _)| sspi::CredentialsBuffers::AuthIdentity(id.clone().into()));
        let kdc = self.u2u.as_ref().map_or("tcp://127.0.0.1:88", |(_, k)| k);
        let server_properties = ServerProperties::new(
            &parts,
            logon,
            std::time::Duration::from_secs(300),
            Some(key.key.clone().into()),
        )
        .map_err(|e| CredSspError::Protocol(e.to_string()))?;
        Ok(NegotiateConfig::new(
            Box::new(KerberosServerConfig {
                // The KDC is contacted only for user-to-user (the SPN holder's own TGT).
                kerberos_config: KerberosConfig::new_with_kdc_url(kdc, "LAB".into()),
                server_properties,
            }),
            Some(packages.into()),
            "LAB".into(),
        ))
    }

    /// sspi decrypted TSPasswordCreds but compared them with nothing: the delegated account
    /// must be the one that authenticated, a configured one, with its configured password.
    fn finish(&mut self, delegated: &AuthIdentity) -> Result<CredSspAccepted, CredSspError> {
        let name = delegated.username.account_name().to_owned();
        let domain = domain_of(&delegated.username)
            .unwrap_or_default()
            .to_owned();
        let kerberos_user = self.accounts.kerberos_user.lock().clone();
        let Some((auth_domain, auth_user)) = self.authenticated.clone() else {
            return match kerberos_user {
                Some(k) => self.finish_kerberos(k, name, domain),
                None => self.refuse("no NTLM AUTHENTICATE or Kerberos ticket seen".into()),
            };
        };
        if !auth_user.eq_ignore_ascii_case(&name) {
            return self.refuse(format!(
                "delegated {name:?} but authenticated {auth_user:?}"
            ));
        }
        if !self.accounts.domain_ok(Some(&domain)) || !self.accounts.domain_ok(Some(&auth_domain)) {
            return self.refuse(format!("domain {domain:?} is not the lab's"));
        }
        let mut found = None;
        for (u, p) in &self.accounts.users {
            let ok = u
                .to_lowercase()
                .as_bytes()
                .ct_eq(name.to_lowercase().as_bytes())
                & p.expose_secret()
                    .as_bytes()
                    .ct_eq(delegated.password.as_ref().as_bytes());
            if bool::from(ok) {
                found = Some(u.clone());
            }
        }
        let Some(user) = found else {
            return self.refuse(format!("the delegated password of {name:?} is not its own"));
        };
        // The context's sspi server still holds the password: it goes now.
        self.server = None;
        self.user = Some(user.clone());
        Ok(CredSspAccepted::Delegated(DelegatedLogon { user, domain }))
    }

    /// After Kerberos: the delegated account must be the ticket's.
    fn finish_kerberos(
        &mut self,
        ticket_user: String,
        name: String,
        domain: String,
    ) -> Result<CredSspAccepted, CredSspError> {
        if !ticket_user.eq_ignore_ascii_case(&name) || !self.accounts.domain_ok(Some(&domain)) {
            return self.refuse(format!(
                "delegated {name:?}@{domain:?} but the ticket is for {ticket_user:?}"
            ));
        }
        self.server = None;
        self.user = Some(ticket_user.clone());
        Ok(CredSspAccepted::Delegated(DelegatedLogon {
            user: ticket_user,
            domain,
        }))
    }

    /// Refuses with Windows' STATUS_LOGON_FAILURE in a TSRequest (sspi's own codes differ).
    fn refuse(&mut self, reason: String) -> Result<CredSspAccepted, CredSspError> {
        self.refuse_with(STATUS_LOGON_FAILURE, reason)
    }

    fn refuse_with(
        &mut self,
        status: u32,
        reason: String,
    ) -> Result<CredSspAccepted, CredSspError> {
        self.server = None;
        let ts = TsRequest {
            error_code: Some(NStatusCode(status)),
            ..TsRequest::default()
        };
        let token = send_ts(&mut self.tls, &ts).unwrap_or_default();
        Ok(CredSspAccepted::Refused { token, reason })
    }

    pub fn wrap(&mut self, plain: &[u8]) -> Result<Vec<u8>, CredSspError> {
        seal_message(&mut self.tls, plain)
    }

    pub fn unwrap(&mut self, body: &[u8]) -> Result<Vec<u8>, CredSspError> {
        unseal_message(&mut self.tls, body)
    }
}

/// The NetBIOS domain or UPN suffix of a name (either may be the lab's).
fn domain_of(name: &Username) -> Option<&str> {
    match name.parts() {
        sspi::UsernameParts::UserPrincipalName(p) => Some(p.suffix()),
        sspi::UsernameParts::DownLevelLogonName(p) => p.netbios_domain(),
    }
}

/// (domain, user) of the NTLM AUTHENTICATE message inside a negoToken (raw or SPNEGO-wrapped).
fn authenticate_user(token: &[u8]) -> Option<(String, String)> {
    let sig = b"NTLMSSP\0\x03\0\0\0";
    let at = token.windows(sig.len()).position(|w| w == sig)?;
    let msg = &token[at..];
    Some((from_utf16le(field(msg, 28)?), from_utf16le(field(msg, 36)?)))
}
