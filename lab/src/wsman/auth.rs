//! Who may in: HTTP Basic per request, or Negotiate (NTLM, Kerberos) per connection — NTLM
//! authenticates a TCP connection, so its context lives as long as the connection and seals
//! and unseals that connection's messages.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use parking_lot::Mutex;
use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;
use winrm::acceptor::{self, Accepted, Acceptor, KeytabEntry, KrbAcceptor};
use winrm::ntlm;

use super::fault::Fault;
use super::{Server, WsmanConfig};

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

pub(super) fn unauthorized() -> Response {
    let mut r = StatusCode::UNAUTHORIZED.into_response();
    let h = r.headers_mut();
    h.append(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Negotiate"),
    );
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
}

/// The security context a connection negotiated.
pub(super) enum ConnCtx {
    Ntlm(Box<Acceptor>),
    Kerberos(Box<KrbAcceptor>),
}

impl ConnCtx {
    pub(super) fn user(&self) -> Option<&str> {
        match self {
            ConnCtx::Ntlm(a) => a.user(),
            ConnCtx::Kerberos(a) => a.user(),
        }
    }

    pub(super) fn wrap(&mut self, plain: &[u8]) -> Result<Vec<u8>, ntlm::NtlmError> {
        match self {
            ConnCtx::Ntlm(a) => a.wrap(plain),
            ConnCtx::Kerberos(a) => a.wrap(plain),
        }
    }

    pub(super) fn unwrap(&mut self, body: &[u8]) -> Result<Vec<u8>, ntlm::NtlmError> {
        match self {
            ConnCtx::Ntlm(a) => a.unwrap(body),
            ConnCtx::Kerberos(a) => a.unwrap(body),
        }
    }
}

/// Kerberos on the lab's listener: the SPN, its key from a keytab, and the accounts allowed in
/// (Windows' Remote Management Users).
#[derive(Clone, Debug)]
pub struct LabKerberos {
    pub spn: String,
    pub key: KeytabEntry,
    pub allowed: Vec<String>,
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
) -> Result<(String, Option<Vec<u8>>), Box<Response>> {
    let Some(conn) = conn else {
        return Err(Box::new(unauthorized()));
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
            return Err(Box::new(unauthorized()));
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
                *slot = Some(ConnCtx::Kerberos(Box::new(a)));
                Ok((user, Some(ap_rep)))
            }
            Err(e) => {
                *slot = None;
                tracing::info!(error = %e, "lab refused a Kerberos logon");
                Err(Box::new(unauthorized()))
            }
        };
    }
    // A NEGOTIATE message starts a new context, also on a connection that had one.
    if token.get(8..12) == Some(&[1, 0, 0, 0]) {
        *slot = Some(ConnCtx::Ntlm(Box::default()));
    }
    let Some(ConnCtx::Ntlm(acceptor)) = slot.as_mut() else {
        return Err(Box::new(unauthorized()));
    };
    match acceptor.step(
        &token,
        &server.cfg.users,
        conn.binding.as_deref(),
        server.cfg.cbt_hardening,
    ) {
        Ok(Accepted::Challenge(c)) => Err(Box::new(challenge(&c))),
        Ok(Accepted::User(u)) => Ok((u, None)),
        Err(e) => {
            *slot = None;
            tracing::info!(error = %e, "lab refused an NTLM logon");
            Err(Box::new(unauthorized()))
        }
    }
}
