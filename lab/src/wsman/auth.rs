//! Who may in: HTTP Basic per request, or Negotiate (NTLM, Kerberos) or CredSSP per
//! connection — these authenticate a TCP connection, so the context lives as long as the
//! connection and seals and unseals that connection's messages.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use parking_lot::Mutex;
use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;
use winrm::acceptor::{
    self, Accepted, Acceptor, CredSspAccepted, CredSspAcceptor, KeytabEntry, KrbAcceptor,
};
use winrm::ntlm;

use super::fault::Fault;
use super::{Logon, Server, WsmanConfig};

pub(super) fn authenticate(cfg: &WsmanConfig, headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    // Basic authenticates local accounts only (Logon::local): a domain account's name
    // (`DOMAIN\\user`, `user@domain`) gets the anonymous 401, as from a host whose local
    // account database has no such user.
    if user.contains(['\\', '@']) {
        return None;
    }
    let mut found = None;
    for (u, p) in &cfg.users {
        let ok = u
            .to_lowercase()
            .as_bytes()
            .ct_eq(user.to_lowercase().as_bytes())
            & p.expose_secret().as_bytes().ct_eq(password.as_bytes());
        if bool::from(ok) {
            found = Some(u.clone());
        }
    }
    found
}

/// The anonymous 401: the schemes the listener offers (CredSSP only when enabled, as
/// `Auth/CredSSP=true` does on Windows).
pub(super) fn unauthorized(cfg: &WsmanConfig) -> Response {
    let mut r = StatusCode::UNAUTHORIZED.into_response();
    let h = r.headers_mut();
    h.append(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Negotiate"),
    );
    if cfg.credssp.is_some() {
        h.append(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("CredSSP"),
        );
    }
    h.append(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"WSMAN\""),
    );
    h.insert(
        header::SERVER,
        HeaderValue::from_static("Microsoft-HTTPAPI/2.0"),
    );
    r
}

/// Per-connection security state: NTLM authenticates a TCP connection, not a request, so the
/// listener creates one of these per connection and hands it to every request on it.
#[derive(Default)]
pub struct ConnSecurity {
    pub(super) ctx: Mutex<Option<ConnCtx>>,
    /// `tls-server-end-point` data of the listener's certificate, on TLS connections.
    pub binding: Option<Vec<u8>>,
}

impl ConnSecurity {
    pub fn tls(binding: Vec<u8>) -> ConnSecurity {
        ConnSecurity {
            ctx: Mutex::new(None),
            binding: Some(binding),
        }
    }

    /// Whether this connection's logon holds the user's network credentials (a second hop
    /// from its processes works): only a completed CredSSP logon does (the client delegated
    /// its password, which the lab checked and dropped); NTLM and Kerberos logons do not.
    pub fn carries_delegated_credentials(&self) -> bool {
        matches!(&*self.ctx.lock(), Some(ConnCtx::CredSsp(a)) if a.user().is_some())
    }
}

/// The security context a connection negotiated.
pub(super) enum ConnCtx {
    Ntlm(Box<Acceptor>),
    Kerberos(Box<KrbAcceptor>),
    CredSsp(Box<CredSspAcceptor>),
}

impl ConnCtx {
    pub(super) fn user(&self) -> Option<&str> {
        match self {
            ConnCtx::Ntlm(a) => a.user(),
            ConnCtx::Kerberos(a) => a.user(),
            ConnCtx::CredSsp(a) => a.user(),
        }
    }

    /// The logon Windows gives a process started on this connection: NTLM proves the user
    /// without handing the host anything it could reuse; Kerberos likewise, except that AD
    /// may trust the host for delegation (the host then asks for tickets for the user to
    /// other services itself — not for WinRM's second hop).
    pub(super) fn logon(&self, cfg: &WsmanConfig) -> Option<Logon> {
        let user = self.user()?.to_owned();
        Some(Logon {
            user,
            // The client delegated its password: the process can use it onwards.
            network_credentials: matches!(self, ConnCtx::CredSsp(_)),
            delegated_kerberos: matches!(self, ConnCtx::Kerberos(_)) && cfg.trusted_for_delegation,
        })
    }

    pub(super) fn wrap(&mut self, plain: &[u8]) -> Result<Vec<u8>, ntlm::NtlmError> {
        match self {
            ConnCtx::Ntlm(a) => a.wrap(plain),
            ConnCtx::Kerberos(a) => a.wrap(plain),
            ConnCtx::CredSsp(a) => a
                .wrap(plain)
                .map_err(|e| ntlm::NtlmError::Handshake(e.to_string())),
        }
    }

    /// The Content-Type of a reply sealed with this context.
    pub(super) fn sealed_content_type(&self, plain_len: usize) -> String {
        match self {
            ConnCtx::CredSsp(_) => winrm::credssp::content_type(plain_len),
            _ => ntlm::ENCRYPTED_CONTENT_TYPE.to_owned(),
        }
    }

    pub(super) fn unwrap(&mut self, body: &[u8]) -> Result<Vec<u8>, ntlm::NtlmError> {
        match self {
            ConnCtx::Ntlm(a) => a.unwrap(body),
            ConnCtx::Kerberos(a) => a.unwrap(body),
            ConnCtx::CredSsp(a) => a
                .unwrap(body)
                .map_err(|e| ntlm::NtlmError::Handshake(e.to_string())),
        }
    }
}

/// The lab's CredSSP listener settings: its certificate, and the domain names an account
/// may be given with (NetBIOS and DNS).
#[derive(Clone, Debug)]
pub struct LabCredSsp {
    pub cert: acceptor::CredSspCert,
    pub domains: Vec<String>,
}

/// Kerberos on the lab's listener: the SPN, its key from a keytab, and the accounts allowed in
/// (Windows' Remote Management Users).
#[derive(Clone, Debug)]
pub struct LabKerberos {
    pub spn: String,
    pub key: KeytabEntry,
    pub allowed: Vec<String>,
    /// The SPN holder's own logon (`user@REALM`, password, KDC URL), for Kerberos
    /// user-to-user, which CredSSP clients built on sspi always ask for (a Windows host
    /// answers it with its machine account's TGT); without it only plain tickets work.
    pub service_logon: Option<ServiceLogon>,
}

/// An account's password logon at a KDC.
#[derive(Clone)]
pub struct ServiceLogon {
    pub user: String,
    pub password: secrecy::SecretString,
    pub kdc: String,
}

impl std::fmt::Debug for ServiceLogon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at {} (password [REDACTED])", self.user, self.kdc)
    }
}

pub(super) fn challenge(token: &[u8]) -> Response {
    let mut r = with_token(StatusCode::UNAUTHORIZED.into_response(), token);
    r.headers_mut().insert(
        header::SERVER,
        HeaderValue::from_static("Microsoft-HTTPAPI/2.0"),
    );
    r
}

/// Adds `WWW-Authenticate: Negotiate <token>` (an NTLM challenge, a Kerberos AP-REP).
pub(super) fn with_token(mut r: Response, token: &[u8]) -> Response {
    if let Ok(v) = HeaderValue::from_str(&format!(
        "Negotiate {}",
        base64::engine::general_purpose::STANDARD.encode(token)
    )) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

/// One Negotiate leg on this connection: NTLM (a challenge to send, or the proven user) or
/// Kerberos (the AP-REQ accepted in one step; the AP-REP goes back with the reply).
pub(super) fn negotiate(
    server: &Server,
    conn: Option<&Arc<ConnSecurity>>,
    token: &str,
) -> Result<(Logon, Option<Vec<u8>>), Box<Response>> {
    let Some(conn) = conn else {
        return Err(Box::new(unauthorized(&server.cfg)));
    };
    let Ok(token) = base64::engine::general_purpose::STANDARD.decode(token.trim()) else {
        return Err(Box::new(
            (StatusCode::BAD_REQUEST, "Negotiate token is not base64").into_response(),
        ));
    };
    let mut slot = conn.ctx.lock();
    if acceptor::is_krb5_token(&token) {
        let Some(krb) = &server.cfg.kerberos else {
            tracing::info!("lab has no keytab: Kerberos refused");
            return Err(Box::new(unauthorized(&server.cfg)));
        };
        let accepted = KrbAcceptor::new(&krb.spn, &krb.key).and_then(|mut a| {
            let (ap_rep, user) =
                a.accept(&token, conn.binding.as_deref(), server.cfg.cbt_hardening)?;
            Ok((a, ap_rep, user))
        });
        return match accepted {
            Ok((a, ap_rep, user)) => {
                if !krb.allowed.iter().any(|u| u.eq_ignore_ascii_case(&user)) {
                    // Authenticated, not authorised: Windows answers with an access-denied fault.
                    return Err(Box::new(
                        Fault::access_denied().render(None, &server.cfg.hostname),
                    ));
                }
                let ctx = ConnCtx::Kerberos(Box::new(a));
                let logon = ctx.logon(&server.cfg);
                *slot = Some(ctx);
                logon
                    .map(|l| (l, Some(ap_rep)))
                    .ok_or_else(|| Box::new(unauthorized(&server.cfg)))
            }
            Err(e) => {
                *slot = None;
                tracing::info!(error = %e, "lab refused a Kerberos logon");
                Err(Box::new(unauthorized(&server.cfg)))
            }
        };
    }
    // A host denying incoming NTLM ("Network security: Restrict NTLM: Incoming NTLM
    // traffic" = Deny all accounts) blocks the logon when the AUTHENTICATE arrives, whatever
    // the password; Microsoft documents that it returns "an NTLM blocked error message"
    // (STATUS_NTLM_BLOCKED), but over WinRM's HTTP that is only a 401 with the schemes it
    // offers: no public transcript shows more, so the lab answers exactly that.
    if server.cfg.deny_ntlm && token.get(8..12) == Some(&[3, 0, 0, 0]) {
        *slot = None;
        tracing::info!("lab denies NTLM: logon refused");
        return Err(Box::new(unauthorized(&server.cfg)));
    }
    // A NEGOTIATE message starts a new context, also on a connection that had one.
    if token.get(8..12) == Some(&[1, 0, 0, 0]) {
        *slot = Some(ConnCtx::Ntlm(Box::default()));
    }
    let Some(ConnCtx::Ntlm(acceptor)) = slot.as_mut() else {
        return Err(Box::new(unauthorized(&server.cfg)));
    };
    match acceptor.step(
        &token,
        &server.cfg.users,
        conn.binding.as_deref(),
        server.cfg.cbt_hardening,
    ) {
        Ok(Accepted::Challenge(c)) => Err(Box::new(challenge(&c))),
        Ok(Accepted::User(user)) => Ok((
            Logon {
                user,
                network_credentials: false,
                delegated_kerberos: false,
            },
            None,
        )),
        Err(e) => {
            *slot = None;
            tracing::info!(error = %e, "lab refused an NTLM logon");
            Err(Box::new(unauthorized(&server.cfg)))
        }
    }
}

/// Adds `WWW-Authenticate: CredSSP <token>` (the next TLS records of CredSSP's session).
fn credssp_challenge(token: &[u8]) -> Response {
    let mut r = StatusCode::UNAUTHORIZED.into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "CredSSP {}",
        base64::engine::general_purpose::STANDARD.encode(token)
    )) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r.headers_mut().insert(
        header::SERVER,
        HeaderValue::from_static("Microsoft-HTTPAPI/2.0"),
    );
    r
}

/// One CredSSP leg on this connection: the next token to send, or the user whose
/// credentials were delegated (see [`ConnCtx::carries_delegated_credentials`]).
pub(super) fn credssp(
    server: &Server,
    conn: Option<&Arc<ConnSecurity>>,
    token: &str,
) -> Result<(Logon, Option<Vec<u8>>), Box<Response>> {
    let (Some(conn), Some(cfg)) = (conn, &server.cfg.credssp) else {
        // CredSSP off (Windows' default): the anonymous 401, which does not offer it.
        return Err(Box::new(unauthorized(&server.cfg)));
    };
    let Ok(token) = base64::engine::general_purpose::STANDARD.decode(token.trim()) else {
        return Err(Box::new(
            (StatusCode::BAD_REQUEST, "CredSSP token is not base64").into_response(),
        ));
    };
    let mut slot = conn.ctx.lock();
    // A ClientHello starts a new context, also on a connection that had one.
    if acceptor::credssp::is_client_hello(&token) {
        match CredSspAcceptor::new(&cfg.cert, &server.cfg.users, &cfg.domains) {
            Ok(mut a) => {
                // Windows' CredSSP speaks SPNEGO: Kerberos when the host has keys for it.
                if let Some(krb) = &server.cfg.kerberos {
                    a = a.with_kerberos(&krb.spn, &krb.key, &krb.allowed);
                    if let Some(l) = &krb.service_logon {
                        a = a.with_user_to_user(&l.user, &l.password, &l.kdc);
                    }
                }
                let a = a.with_ntlm_denied(server.cfg.deny_ntlm);
                *slot = Some(ConnCtx::CredSsp(Box::new(a)));
            }
            Err(e) => {
                tracing::warn!(error = %e, "lab cannot start a CredSSP context");
                return Err(Box::new(unauthorized(&server.cfg)));
            }
        }
    }
    let Some(ConnCtx::CredSsp(acceptor)) = slot.as_mut() else {
        return Err(Box::new(unauthorized(&server.cfg)));
    };
    match acceptor.step(&token) {
        Ok(CredSspAccepted::Continue(t)) => Err(Box::new(credssp_challenge(&t))),
        Ok(CredSspAccepted::Delegated(delegated)) => Ok((
            Logon {
                user: delegated.user,
                network_credentials: true,
                delegated_kerberos: false,
            },
            None,
        )),
        Ok(CredSspAccepted::Refused { token, reason }) => {
            *slot = None;
            tracing::info!(%reason, "lab refused a CredSSP logon");
            Err(Box::new(credssp_challenge(&token)))
        }
        Err(e) => {
            *slot = None;
            tracing::info!(error = %e, "lab refused a CredSSP logon");
            Err(Box::new(unauthorized(&server.cfg)))
        }
    }
}
