//! Moving one SOAP envelope to the host and its reply back, per authentication scheme.
//!
//! Basic rides reqwest. NTLM, Kerberos and CredSSP authenticate a TCP connection, not a
//! request, and reqwest's pool cannot promise which connection a request takes; so those
//! schemes share one [`SealedTransport`], which drives hyper's HTTP/1.1 connection API on
//! connections it owns: each is authenticated once, carries one request at a time and its
//! own sealing state, and is kept for the next request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderValue};
use parking_lot::Mutex;
use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpStream;

use super::credssp::{CredSspError, CredSspInitiator, CredSspKerberos, STATUS_NTLM_BLOCKED};
use super::error::WinrmError;
use super::kerberos::KrbInitiator;
use super::ntlm::{self, Initiator, NtlmError};

/// A reply as it came: status and (unsealed) body.
pub struct Reply {
    pub status: u16,
    pub body: String,
}

const SOAP_CONTENT_TYPE: &str = "application/soap+xml;charset=UTF-8";
/// Windows drops an idle keep-alive connection after about two minutes; don't reuse one near that.
const MAX_IDLE: Duration = Duration::from_secs(90);

pub(crate) struct BasicTransport {
    pub http: reqwest::Client,
    pub endpoint: url::Url,
    pub username: String,
    pub password: SecretString,
}

impl BasicTransport {
    pub async fn post(&self, envelope: String) -> Result<Reply, WinrmError> {
        let resp = self
            .http
            .post(self.endpoint.clone())
            .basic_auth(&self.username, Some(self.password.expose_secret()))
            .header(reqwest::header::CONTENT_TYPE, SOAP_CONTENT_TYPE)
            .header(reqwest::header::ACCEPT_ENCODING, "identity")
            .body(envelope)
            .send()
            .await
            .map_err(reqwest_error)?;
        let status = resp.status().as_u16();
        let body = resp.text().await.map_err(reqwest_error)?;
        Ok(Reply { status, body })
    }
}

/// Names a reqwest failure by what an operator has to look at.
fn reqwest_error(e: reqwest::Error) -> WinrmError {
    if e.is_timeout() {
        return WinrmError::Timeout;
    }
    let mut chain = e.to_string();
    let mut src = std::error::Error::source(&e);
    let mut io_kind = None;
    while let Some(s) = src {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            io_kind = Some(io.kind());
        }
        src = s.source();
    }
    classify_connect(io_kind, chain)
}

fn classify_connect(io_kind: Option<std::io::ErrorKind>, chain: String) -> WinrmError {
    let lower = chain.to_ascii_lowercase();
    if io_kind == Some(std::io::ErrorKind::ConnectionRefused)
        || lower.contains("connection refused")
    {
        WinrmError::Refused(chain)
    } else if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake")
    {
        WinrmError::Tls(chain)
    } else {
        WinrmError::Unreachable(chain)
    }
}

/// Which security package authenticates the connections.
#[derive(Clone)]
pub(crate) enum Mechanism {
    Ntlm,
    /// Password logon at `kdc` (`tcp://dc:88`), ticket for `spn` (`HTTP/host.fqdn`).
    Kerberos {
        kdc: String,
        spn: String,
    },
    /// CredSSP: NTLM inside CredSSP's own TLS session (trusting its certificate as `tls`
    /// says), then the password delegated to the host.
    CredSsp {
        tls: Arc<rustls::ClientConfig>,
        /// Kerberos inside CredSSP's SPNEGO (first; NTLM when the KDC cannot be reached).
        kerberos: Option<CredSspKerberos>,
    },
}

/// An established security context of one connection.
enum SecCtx {
    Ntlm(Box<Initiator>),
    Kerberos(Box<KrbInitiator>),
    CredSsp(Box<CredSspInitiator>),
}

impl SecCtx {
    /// The sealed body and its Content-Type.
    fn wrap(&mut self, plain: &[u8]) -> Result<(Vec<u8>, String), String> {
        let spnego = |r: Result<Vec<u8>, NtlmError>| {
            r.map(|b| (b, ntlm::ENCRYPTED_CONTENT_TYPE.to_owned()))
                .map_err(|e| e.to_string())
        };
        match self {
            SecCtx::Ntlm(c) => spnego(c.wrap(plain)),
            SecCtx::Kerberos(c) => spnego(c.wrap(plain)),
            SecCtx::CredSsp(c) => c.wrap(plain).map_err(|e| e.to_string()),
        }
    }

    fn unwrap(&mut self, body: &[u8]) -> Result<Vec<u8>, String> {
        match self {
            SecCtx::Ntlm(c) => c.unwrap(body).map_err(|e| e.to_string()),
            SecCtx::Kerberos(c) => c.unwrap(body).map_err(|e| e.to_string()),
            SecCtx::CredSsp(c) => c.unwrap(body).map_err(|e| e.to_string()),
        }
    }
}

/// A CredSSP failure as the worker sorts it: a refused password is Unauthorized as with NTLM.
fn credssp_error(e: CredSspError) -> WinrmError {
    match e {
        CredSspError::Refused(Some(STATUS_NTLM_BLOCKED)) => WinrmError::NtlmBlocked(
            "CredSSP's logon came back STATUS_NTLM_BLOCKED (0xC0000418)".into(),
        ),
        CredSspError::Refused(_) => WinrmError::Unauthorized,
        CredSspError::Kerberos(text) => WinrmError::Kerberos(text),
        other => WinrmError::CredSsp(other.to_string()),
    }
}

/// Where and how a connection for NTLM, Kerberos (both through `Negotiate`) or CredSSP is
/// made: authenticated once, every message on it sealed.
pub(crate) struct SealedTransport {
    pub mechanism: Mechanism,
    pub endpoint: url::Url,
    pub username: String,
    pub password: SecretString,
    /// `Some` for https endpoints.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    idle: Mutex<Vec<SealedConn>>,
}

struct SealedConn {
    sender: SendRequest<Full<Bytes>>,
    ctx: SecCtx,
    last_used: Instant,
}

impl SealedTransport {
    pub fn new(
        mechanism: Mechanism,
        endpoint: url::Url,
        username: String,
        password: SecretString,
        tls: Option<Arc<rustls::ClientConfig>>,
        connect_timeout: Duration,
        read_timeout: Duration,
    ) -> SealedTransport {
        SealedTransport {
            mechanism,
            endpoint,
            username,
            password,
            tls,
            connect_timeout,
            read_timeout,
            idle: Mutex::new(Vec::new()),
        }
    }

    fn host(&self) -> String {
        self.endpoint.host_str().unwrap_or("localhost").to_owned()
    }

    fn authority(&self) -> String {
        match self.endpoint.port() {
            Some(p) => format!("{}:{p}", self.host()),
            None => self.host(),
        }
    }

    fn take_idle(&self) -> Option<SealedConn> {
        let mut idle = self.idle.lock();
        while let Some(c) = idle.pop() {
            if !c.sender.is_closed() && c.last_used.elapsed() < MAX_IDLE {
                return Some(c);
            }
        }
        None
    }

    fn give_back(&self, mut c: SealedConn) {
        c.last_used = Instant::now();
        self.idle.lock().push(c);
    }

    /// Opens a connection (TLS when https) and runs the NTLM handshake on it.
    async fn connect(&self) -> Result<SealedConn, WinrmError> {
        let addr = self.authority();
        let port = self.endpoint.port_or_known_default().unwrap_or(5985);
        let tcp = tokio::time::timeout(
            self.connect_timeout,
            TcpStream::connect((self.host().as_str(), port)),
        )
        .await
        .map_err(|_| {
            WinrmError::Unreachable(format!(
                "no connection to {addr} within {:?}",
                self.connect_timeout
            ))
        })?
        .map_err(|e| classify_connect(Some(e.kind()), format!("{addr}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let (mut sender, binding) = match &self.tls {
            Some(cfg) => {
                let name = rustls::pki_types::ServerName::try_from(self.host())
                    .map_err(|e| WinrmError::Config(format!("endpoint host name: {e}")))?;
                let tls = tokio_rustls::TlsConnector::from(cfg.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| WinrmError::Tls(format!("{addr}: {e}")))?;
                // Channel binding ties the NTLM proof or the Kerberos authenticator to this
                // TLS session's certificate.
                let binding = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| ntlm::tls_server_end_point(c.as_ref()));
                (handshake(tls).await?, binding)
            }
            None => (handshake(tcp).await?, None),
        };
        let ctx = match self.mechanism.clone() {
            Mechanism::Ntlm => self.ntlm_handshake(&mut sender, binding.as_deref()).await?,
            Mechanism::Kerberos { kdc, spn } => {
                self.kerberos_handshake(&mut sender, kdc, spn, binding)
                    .await?
            }
            // pubKeyAuth, not channel binding, ties CredSSP to its (inner) TLS session.
            Mechanism::CredSsp { tls, kerberos } => {
                self.credssp_handshake(&mut sender, tls, kerberos).await?
            }
        };
        Ok(SealedConn {
            sender,
            ctx,
            last_used: Instant::now(),
        })
    }

    async fn ntlm_handshake(
        &self,
        sender: &mut SendRequest<Full<Bytes>>,
        binding: Option<&[u8]>,
    ) -> Result<SecCtx, WinrmError> {
        let addr = self.authority();
        let (mut ctx, negotiate) =
            Initiator::start(&self.username, &self.password, &self.host(), binding)
                .map_err(|e| WinrmError::Config(e.to_string()))?;
        let resp = self
            .send(sender, Some(("Negotiate", &negotiate)), None)
            .await?;
        let challenge = match (resp.status().as_u16(), negotiate_token(resp.headers())) {
            (401, Some(t)) => t,
            (401, None) => {
                return Err(WinrmError::Config(format!(
                    "{addr} does not offer Negotiate authentication (WWW-Authenticate: {}); check winrm.auth and the host's Service/Auth settings",
                    offered(resp.headers())
                )));
            }
            (s, _) => {
                return Err(WinrmError::Protocol(format!(
                    "HTTP {s} to an NTLM NEGOTIATE; expected 401 with a challenge"
                )));
            }
        };
        let authenticate = ctx
            .authenticate(&challenge)
            .map_err(|e| WinrmError::Protocol(e.to_string()))?;
        // An empty body completes the handshake, as pywinrm and pypsrp do, so that the auth
        // exchange does not depend on the first request's size.
        let resp = self
            .send(sender, Some(("Negotiate", &authenticate)), None)
            .await?;
        match resp.status().as_u16() {
            200..=299 => {}
            401 => return Err(WinrmError::NtlmRefused),
            s => {
                return Err(WinrmError::Http {
                    status: s,
                    body_excerpt: "after the NTLM AUTHENTICATE message".into(),
                });
            }
        }
        drain(resp).await?;
        Ok(SecCtx::Ntlm(Box::new(ctx)))
    }

    async fn kerberos_handshake(
        &self,
        sender: &mut SendRequest<Full<Bytes>>,
        kdc: String,
        spn: String,
        binding: Option<Vec<u8>>,
    ) -> Result<SecCtx, WinrmError> {
        let (user, password, timeout) = (
            self.username.clone(),
            self.password.clone(),
            self.connect_timeout,
        );
        // The KDC exchanges are blocking calls inside sspi: off the runtime's threads.
        let (mut ctx, ap_req) = tokio::task::spawn_blocking(move || {
            KrbInitiator::start(&user, &password, &kdc, &spn, timeout, binding.as_deref())
        })
        .await
        .map_err(|e| WinrmError::Kerberos(format!("the logon task failed: {e}")))?
        .map_err(|e| WinrmError::Kerberos(e.to_string()))?;
        let resp = self
            .send(sender, Some(("Negotiate", &ap_req)), None)
            .await?;
        match resp.status().as_u16() {
            200..=299 => {}
            401 => return Err(WinrmError::Unauthorized),
            s => {
                // An authenticated but unauthorised account gets a fault (access denied).
                let body = resp
                    .into_body()
                    .collect()
                    .await
                    .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
                    .unwrap_or_default();
                if let Some(f) = super::soap::Envelope::parse(&body)
                    .ok()
                    .and_then(|e| e.fault())
                {
                    return Err(WinrmError::from_fault(f));
                }
                return Err(WinrmError::Http {
                    status: s,
                    body_excerpt: "after the Kerberos AP-REQ".into(),
                });
            }
        }
        // Mutual authentication: the host proves it holds the SPN's key.
        let ap_rep = negotiate_token(resp.headers()).ok_or_else(|| {
            WinrmError::Kerberos("the host sent no AP-REP, so it did not prove its identity".into())
        })?;
        drain(resp).await?;
        ctx.finish(&ap_rep)
            .map_err(|e| WinrmError::Kerberos(format!("the host's AP-REP: {e}")))?;
        Ok(SecCtx::Kerberos(Box::new(ctx)))
    }

    /// CredSSP's legs (MS-WSMV 2.2.9.1.3): TLS records of CredSSP's own session, then
    /// TSRequests inside it, each in `Authorization: CredSSP`, until the delegated
    /// credentials' leg is answered 200.
    async fn credssp_handshake(
        &self,
        sender: &mut SendRequest<Full<Bytes>>,
        tls: Arc<rustls::ClientConfig>,
        kerberos: Option<CredSspKerberos>,
    ) -> Result<SecCtx, WinrmError> {
        let (mut ctx, mut token) =
            CredSspInitiator::start(&self.username, &self.password, &self.host(), tls, kerberos)
                .map_err(credssp_error)?;
        // 5 legs with pywinrm's shape, 6 with sspi's own SPNEGO ordering; a bound stops a loop.
        for leg in 0..10 {
            let resp = self.send(sender, Some(("CredSSP", &token)), None).await?;
            let status = resp.status().as_u16();
            let reply = scheme_token(resp.headers(), &["credssp"]);
            let offers = offered(resp.headers());
            drain(resp).await?;
            match (status, reply) {
                (200..=299, _) if ctx.is_done() => return Ok(SecCtx::CredSsp(Box::new(ctx))),
                (401, Some(t)) => {
                    // A leg may talk to the KDC (blocking, inside sspi): off the runtime's threads.
                    let (back, next) = tokio::task::spawn_blocking(move || {
                        let next = ctx.step(&t);
                        (ctx, next)
                    })
                    .await
                    .map_err(|e| WinrmError::CredSsp(format!("the CredSSP task failed: {e}")))?;
                    ctx = back;
                    token = next.map_err(credssp_error)?;
                }
                (401, None) if leg == 0 => return Err(WinrmError::CredSspNotOffered(offers)),
                (401, None) => return Err(WinrmError::Unauthorized),
                (s, _) => {
                    return Err(WinrmError::Http {
                        status: s,
                        body_excerpt: format!("in CredSSP leg {}", leg + 1),
                    });
                }
            }
        }
        Err(WinrmError::CredSsp(
            "the handshake did not finish in 10 legs".into(),
        ))
    }

    /// A POST to the endpoint: with a `<scheme> <token>` Authorization (handshake legs)
    /// and/or a body with its Content-Type.
    fn request(
        &self,
        token: Option<(&str, &[u8])>,
        body: Option<(Vec<u8>, String)>,
    ) -> Result<hyper::Request<Full<Bytes>>, WinrmError> {
        let mut req = hyper::Request::post(self.endpoint.path())
            .header(header::HOST, self.authority())
            .header(header::ACCEPT_ENCODING, "identity")
            .header(header::USER_AGENT, "mailboxd");
        if let Some((scheme, t)) = token {
            req = req.header(
                header::AUTHORIZATION,
                format!(
                    "{scheme} {}",
                    base64::engine::general_purpose::STANDARD.encode(t)
                ),
            );
        }
        let body = match body {
            Some((b, content_type)) => {
                let value = HeaderValue::from_str(&content_type)
                    .map_err(|e| WinrmError::Protocol(e.to_string()))?;
                req = req.header(header::CONTENT_TYPE, value);
                b
            }
            None => Vec::new(),
        };
        req.body(Full::new(Bytes::from(body)))
            .map_err(|e| WinrmError::Protocol(e.to_string()))
    }

    async fn send(
        &self,
        sender: &mut SendRequest<Full<Bytes>>,
        token: Option<(&str, &[u8])>,
        body: Option<(Vec<u8>, String)>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, WinrmError> {
        let req = self.request(token, body)?;
        sender
            .ready()
            .await
            .map_err(|e| WinrmError::Unreachable(format!("the connection closed: {e}")))?;
        tokio::time::timeout(self.read_timeout, sender.send_request(req))
            .await
            .map_err(|_| WinrmError::Timeout)?
            .map_err(|e| WinrmError::Unreachable(format!("the connection broke: {e}")))
    }

    /// Sends a request on an authenticated connection, telling apart a connection that was
    /// already closed (the request never left: safe to send again elsewhere) from one that
    /// broke with the request under way.
    async fn send_unless_closed(
        &self,
        sender: &mut SendRequest<Full<Bytes>>,
        body: (Vec<u8>, String),
    ) -> Result<hyper::Response<hyper::body::Incoming>, Unsent> {
        let req = self.request(None, Some(body)).map_err(Unsent::Failed)?;
        if let Err(e) = sender.ready().await {
            return Err(Unsent::Closed(WinrmError::Unreachable(format!(
                "the connection closed: {e}"
            ))));
        }
        match tokio::time::timeout(self.read_timeout, sender.try_send_request(req)).await {
            Err(_) => Err(Unsent::Failed(WinrmError::Timeout)),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(mut e)) => {
                let never_sent = e.take_message().is_some();
                let err = WinrmError::Unreachable(format!("the connection broke: {}", e.error()));
                Err(if never_sent {
                    Unsent::Closed(err)
                } else {
                    Unsent::Failed(err)
                })
            }
        }
    }

    /// Sends one envelope sealed; a connection that lost its security context (401) is
    /// replaced once, transparently — the host did not act on a request it refused.
    pub async fn post(&self, envelope: String) -> Result<Reply, WinrmError> {
        let mut reauthenticated = false;
        // Kept connections the host has closed meanwhile: each is tried, found dead before
        // the request left, and replaced; a bound keeps a confused pool from spinning.
        for _ in 0..8 {
            let (mut conn, reused) = match self.take_idle() {
                Some(c) => (c, true),
                None => (self.connect().await?, false),
            };
            // Inside TLS the envelope travels as it is, as Windows' own client sends it.
            let body = if self.tls.is_some() {
                (envelope.clone().into_bytes(), SOAP_CONTENT_TYPE.to_owned())
            } else {
                conn.ctx
                    .wrap(envelope.as_bytes())
                    .map_err(WinrmError::Encryption)?
            };
            let resp = match self.send_unless_closed(&mut conn.sender, body).await {
                Ok(r) => r,
                Err(Unsent::Closed(e)) if reused => {
                    tracing::debug!(error = %e, "a kept WinRM connection was closed by the host; opening another");
                    continue;
                }
                Err(Unsent::Closed(e) | Unsent::Failed(e)) => return Err(e),
            };
            let status = resp.status().as_u16();
            if status == 401 {
                drop(conn);
                if !reauthenticated {
                    reauthenticated = true;
                    tracing::debug!(
                        "the WinRM host dropped the security context; authenticating again"
                    );
                    continue;
                }
                return Err(WinrmError::Unauthorized);
            }
            let encrypted = resp
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|ct| {
                    ntlm::is_encrypted(ct) || super::credssp::is_credssp_encrypted(ct)
                });
            let keep = !resp
                .headers()
                .get(header::CONNECTION)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.eq_ignore_ascii_case("close"));
            let raw = tokio::time::timeout(self.read_timeout, resp.into_body().collect())
                .await
                .map_err(|_| WinrmError::Timeout)?
                .map_err(|e| WinrmError::Unreachable(format!("the reply broke off: {e}")))?
                .to_bytes();
            let body = if encrypted {
                // A context that cannot unseal is out of step for good: the connection goes.
                let plain = conn.ctx.unwrap(&raw).map_err(WinrmError::Encryption)?;
                String::from_utf8_lossy(&plain).into_owned()
            } else {
                String::from_utf8_lossy(&raw).into_owned()
            };
            if keep {
                self.give_back(conn);
            }
            return Ok(Reply { status, body });
        }
        Err(WinrmError::Unauthorized)
    }
}

/// Why a request on a kept connection did not get an answer.
enum Unsent {
    /// The connection was closed before the request left: try another.
    Closed(WinrmError),
    /// Anything else, including a connection that broke with the request under way.
    Failed(WinrmError),
}

async fn handshake<S>(io: S) -> Result<SendRequest<Full<Bytes>>, WinrmError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
        .await
        .map_err(|e| WinrmError::Unreachable(format!("HTTP/1.1 handshake: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "WinRM connection ended");
        }
    });
    Ok(sender)
}

async fn drain(resp: hyper::Response<hyper::body::Incoming>) -> Result<(), WinrmError> {
    resp.into_body()
        .collect()
        .await
        .map(|_| ())
        .map_err(|e| WinrmError::Unreachable(format!("the reply broke off: {e}")))
}

/// The token of a `WWW-Authenticate: Negotiate <b64>` header.
fn negotiate_token(headers: &hyper::HeaderMap) -> Option<Vec<u8>> {
    scheme_token(headers, &["negotiate", "ntlm"])
}

/// The token of a `WWW-Authenticate: <scheme> <b64>` header for one of `schemes`.
fn scheme_token(headers: &hyper::HeaderMap, schemes: &[&str]) -> Option<Vec<u8>> {
    headers
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let (scheme, token) = v.split_once(' ')?;
            if !schemes.iter().any(|s| scheme.eq_ignore_ascii_case(s)) {
                return None;
            }
            base64::engine::general_purpose::STANDARD
                .decode(token.trim())
                .ok()
        })
}

fn offered(headers: &hyper::HeaderMap) -> String {
    let v: Vec<&str> = headers
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}
