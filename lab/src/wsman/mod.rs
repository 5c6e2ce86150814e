//! The lab's WinRM service: WS-Management's WinRS cmd shell as Windows answers it
//! (replies shaped like the recorded traffic in tests/fixtures/winrm).
//! What a command does is up to a [`CommandHost`].
//!
//! `auth` is who may in (Basic, NTLM and Kerberos per connection, sealing), `shell` the
//! WinRS operations on shells and their commands, `fault` the faults Windows answers with.

mod auth;
mod fault;
mod shell;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use secrecy::SecretString;
use tokio::sync::Notify;
use winrm::acceptor::CbtHardening;
use winrm::ntlm;
use winrm::soap::{self, Envelope};

pub use auth::{ConnSecurity, LabCredSsp, LabKerberos, ServiceLogon};
use auth::{authenticate, credssp, negotiate, unauthorized, with_token};
use fault::{Fault, reply, soap_response};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
}

type StdinConsumer = Box<dyn FnOnce(Vec<u8>) -> BoxFuture<'static, ProcessOutput> + Send>;

type Interactive = Box<dyn FnOnce(ProcessIo) -> BoxFuture<'static, i32> + Send>;

pub enum Launch {
    /// The process does not read stdin; its output is known now.
    Done(ProcessOutput),
    /// The process reads all of stdin; its output comes once stdin is closed.
    AwaitStdin(StdinConsumer),
    /// The process reads stdin as it arrives and writes as it goes (a long-lived process fed
    /// request after request); the future's value is its exit code.
    Interactive(Interactive),
}

/// A running interactive process's ends: stdin as Send delivers it (`None` once closed),
/// and its stdout/stderr, which Receive hands out as they grow.
pub struct ProcessIo {
    pub stdin: tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
    out: Arc<(Mutex<Command>, Notify)>,
}

impl ProcessIo {
    pub fn stdout(&self, data: &[u8]) {
        self.out.0.lock().stdout.extend_from_slice(data);
        self.out.1.notify_waiters();
    }

    pub fn stderr(&self, data: &[u8]) {
        self.out.0.lock().stderr.extend_from_slice(data);
        self.out.1.notify_waiters();
    }
}

/// Who a process runs as, as the WinRM service logged the client on — the second hop
/// (docs/operations.md, "The second hop") depends on it: a process whose logon holds no network
/// credentials cannot authenticate onwards (to Exchange, to a domain controller) as the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logon {
    pub user: String,
    /// Whether the logon can authenticate onwards as a domain user to anything: CredSSP
    /// (the password was delegated); not NTLM, not Kerberos, not Basic.
    pub network_credentials: bool,
    /// A Kerberos logon to a host AD trusts for (constrained or resource-based) delegation:
    /// the host may get tickets as the user for other services — the DCs' `ldap/`, which
    /// the snap-in uses — but Microsoft lists every form of Kerberos delegation as
    /// "Doesn't support the second hop for WinRM" (learn.microsoft.com, "Making the second
    /// hop in PowerShell Remoting"), so not for
    /// New-PSSession to Exchange.
    pub delegated_kerberos: bool,
}

impl Logon {
    /// HTTP Basic: WinRM accepts Basic for local accounts only ("…or for a local account
    /// with Basic authentication", learn.microsoft.com/windows/win32/winrm/
    /// connectionoptions-username; PSWSMan's about_PSWSManAuthentication: Basic — local
    /// yes, domain no, delegation no). A local account of the jump host has no domain
    /// identity, so its processes cannot authenticate onwards to Exchange or a DC.
    pub fn local(user: impl Into<String>) -> Logon {
        Logon {
            user: user.into(),
            network_credentials: false,
            delegated_kerberos: false,
        }
    }
}

/// Decides what a command does.
pub trait CommandHost: Send + Sync + 'static {
    fn launch(&self, logon: &Logon, command: &str, arguments: &[String]) -> Launch;
}

pub struct WsmanConfig {
    /// Accepted HTTP Basic credentials.
    pub users: Vec<(String, SecretString)>,
    /// Winrs MaxShellsPerUser.
    pub max_shells_per_user: usize,
    /// Caps the client's OperationTimeout (MaxTimeoutms).
    pub max_operation_timeout: Duration,
    /// Shown as `Machine=` in faults.
    pub hostname: String,
    /// MaxEnvelopeSizekb: larger requests get HTTP 413, as from http.sys.
    pub max_envelope_kb: usize,
    /// Channel binding on TLS connections (CbtHardeningLevel).
    pub cbt_hardening: CbtHardening,
    /// Kerberos accepted when set.
    pub kerberos: Option<LabKerberos>,
    /// CredSSP accepted (and offered) when set; Windows' default is off.
    pub credssp: Option<LabCredSsp>,
    /// The host's computer account is trusted for delegation in AD (constrained delegation
    /// to the DCs): a Kerberos logon's LDAP hop then works; WinRM's second hop does not.
    pub trusted_for_delegation: bool,
    /// Group Policy "Allow Remote Shell Access" (Windows' default: allowed); off, every
    /// shell is refused.
    pub allow_remote_shell_access: bool,
    /// "Restrict NTLM: Incoming NTLM traffic" = Deny all accounts: NTLM refused in Negotiate
    /// and in CredSSP.
    pub deny_ntlm: bool,
}

const DEFAULT_IDLE: Duration = Duration::from_secs(7200);

/// Room kept for the reply's header and markup inside MaxEnvelopeSize.
const ENVELOPE_OVERHEAD: usize = 2048;

struct Command {
    stdin: Vec<u8>,
    consumer: Option<StdinConsumer>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    exit_code: Option<i32>,
    /// An interactive process's stdin (dropped when the client closes it).
    stdin_tx: Option<tokio::sync::mpsc::UnboundedSender<Vec<u8>>>,
    /// An interactive process's task, ended when its command or shell goes.
    task: Option<tokio::task::AbortHandle>,
}

impl Command {
    /// Ends an interactive process (Signal terminate, shell deleted or expired).
    fn kill(&mut self) {
        self.stdin_tx = None;
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

struct ShellState {
    owner: String,
    client_ip: String,
    last_used: Instant,
    idle_timeout: Duration,
    commands: HashMap<String, Arc<(Mutex<Command>, Notify)>>,
}

struct Server {
    cfg: WsmanConfig,
    host: Arc<dyn CommandHost>,
    shells: Mutex<HashMap<String, ShellState>>,
}

pub fn router(cfg: WsmanConfig, host: Arc<dyn CommandHost>) -> Router {
    let server = Arc::new(Server {
        cfg,
        host,
        shells: Mutex::new(HashMap::new()),
    });
    Router::new()
        .route("/wsman", post(handle))
        .with_state(server)
}

/// One HTTP request to `/wsman`: authenticated (per request, or by the connection's
/// context), unsealed if sealed, answered, and the answer sealed the same way.
async fn handle(State(server): State<Arc<Server>>, req: axum::extract::Request) -> Response {
    let connect = req.extensions().get::<ConnectInfo<SocketAddr>>().cloned();
    let conn = req.extensions().get::<Arc<ConnSecurity>>().cloned();
    let (parts, body) = req.into_parts();
    let headers: HeaderMap = parts.headers;
    // Read before any answer, as http.sys does: a 401 that leaves the body unread would end
    // the connection, and NTLM's next leg must come on the same one. `None`: above
    // MaxEnvelopeSizekb, which http.sys refuses before WinRM sees it.
    let limit = server.cfg.max_envelope_kb * 1024;
    let raw = axum::body::to_bytes(body, limit + 4096).await.ok();
    let (logon, reply_token) = match sender(&server, conn.as_ref(), &headers) {
        Ok(who) => who,
        Err(r) => return *r,
    };
    let sealed = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ntlm::is_encrypted(ct) || winrm::credssp::is_credssp_encrypted(ct));
    let body = match plain_body(conn.as_ref(), raw, sealed, limit) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    if body.is_empty() {
        // Clients probe with an empty authenticated POST before the first envelope.
        let ok = StatusCode::OK.into_response();
        return match &reply_token {
            Some(t) => with_token(ok, t),
            None => ok,
        };
    }
    let client_ip = connect.map(|c| c.0.ip().to_string()).unwrap_or_default();
    let mut resp = soap(&server, &logon, &client_ip, &body).await;
    if let Some(t) = &reply_token {
        resp = with_token(resp, t);
    }
    if !sealed {
        return resp;
    }
    seal_reply(resp, conn.as_ref()).await
}

/// Who sent the request, and the token to send back (Kerberos' AP-REP): Negotiate (NTLM or
/// Kerberos) on this connection, Basic, or the user the connection authenticated earlier.
fn sender(
    server: &Server,
    conn: Option<&Arc<ConnSecurity>>,
    headers: &HeaderMap,
) -> Result<(Logon, Option<Vec<u8>>), Box<Response>> {
    let scheme = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split_once(' ').unwrap_or((v, "")));
    match scheme {
        Some((s, token))
            if s.eq_ignore_ascii_case("negotiate") || s.eq_ignore_ascii_case("ntlm") =>
        {
            negotiate(server, conn, token)
        }
        Some((s, token)) if s.eq_ignore_ascii_case("credssp") => credssp(server, conn, token),
        Some(_) => authenticate(&server.cfg, headers)
            .map(|u| (Logon::local(u), None))
            .ok_or_else(|| Box::new(unauthorized(&server.cfg))),
        // Later requests on an NTLM-authenticated connection carry no Authorization header.
        None => conn
            .and_then(|c| c.ctx.lock().as_ref().and_then(|a| a.logon(&server.cfg)))
            .map(|l| (l, None))
            .ok_or_else(|| Box::new(unauthorized(&server.cfg))),
    }
}

/// The request's envelope in plain text, unsealed with the connection's context when
/// `sealed`; refused (413) above MaxEnvelopeSizekb (`limit` bytes).
fn plain_body(
    conn: Option<&Arc<ConnSecurity>>,
    raw: Option<Bytes>,
    sealed: bool,
    limit: usize,
) -> Result<Bytes, Box<Response>> {
    let too_large = || Box::new(StatusCode::PAYLOAD_TOO_LARGE.into_response());
    let body = raw.ok_or_else(too_large)?;
    let body = if sealed {
        let Some(conn) = conn else {
            return Err(Box::new(StatusCode::BAD_REQUEST.into_response()));
        };
        let plain = conn
            .ctx
            .lock()
            .as_mut()
            .map(|a| a.unwrap(&body))
            .unwrap_or_else(|| Err(ntlm::NtlmError::Handshake("no security context".into())));
        match plain {
            Ok(p) => Bytes::from(p),
            Err(e) => {
                tracing::info!(error = %e, "lab cannot unseal a request");
                return Err(Box::new(
                    (StatusCode::BAD_REQUEST, "cannot decrypt the message").into_response(),
                ));
            }
        }
    } else {
        body
    };
    if body.len() > limit {
        return Err(too_large());
    }
    Ok(body)
}

/// The reply sealed with this connection's context.
async fn seal_reply(resp: Response, conn: Option<&Arc<ConnSecurity>>) -> Response {
    let (mut parts, body) = resp.into_parts();
    let plain = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let wrapped = conn.and_then(|c| {
        c.ctx
            .lock()
            .as_mut()
            .map(|a| (a.wrap(&plain), a.sealed_content_type(plain.len())))
    });
    match wrapped {
        Some((Ok(w), content_type)) => {
            let Ok(content_type) = HeaderValue::from_str(&content_type) else {
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            };
            parts.headers.insert(header::CONTENT_TYPE, content_type);
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, axum::body::Body::from(w))
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Answers one (plaintext) SOAP request.
async fn soap(server: &Server, logon: &Logon, client_ip: &str, body: &[u8]) -> Response {
    let user = logon.user.as_str();
    let machine = server.cfg.hostname.clone();
    let Ok(text) = std::str::from_utf8(body) else {
        return (StatusCode::BAD_REQUEST, "request body is not UTF-8").into_response();
    };
    let env = match Envelope::parse(text) {
        Ok(e) => e,
        Err(e) => {
            return Fault::invalid_header(format!("The WS-Management service cannot process the request because the XML is invalid: {e} ")).render(None, &machine);
        }
    };
    let message_id = env
        .header_text(soap::NS_ADDRESSING, "MessageID")
        .map(str::to_owned);
    let relates = message_id.as_deref();
    let (Some(action), Some(_), Some(resource)) = (
        env.action().map(str::to_owned),
        message_id.as_deref(),
        env.header_text(soap::NS_WSMAN, "ResourceURI")
            .map(str::to_owned),
    ) else {
        return Fault::invalid_header("The WS-Management service cannot process the request. A required SOAP header (Action, MessageID or ResourceURI) is missing. ".into())
            .render(relates, &machine);
    };
    let timeout = match env.header_text(soap::NS_WSMAN, "OperationTimeout") {
        None => Duration::from_secs(60),
        Some(t) => match soap::parse_xs_duration(t) {
            Some(d) => d.min(server.cfg.max_operation_timeout),
            None => {
                return Fault::invalid_header(format!("The WS-Management service cannot process the request. The XML contains an invalid timeout field in the SOAP header: {t}. "))
                    .render(relates, &machine);
            }
        },
    };
    let max_envelope = env
        .header_text(soap::NS_WSMAN, "MaxEnvelopeSize")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(153_600);
    let relates = relates.unwrap_or_default().to_owned();
    let result = match action.as_str() {
        soap::ACTION_GET if resource.starts_with(soap::RESOURCE_CONFIG) => Ok(reply(
            &format!("{action}Response"),
            &relates,
            &config_document(&server.cfg),
        )),
        _ if resource != soap::RESOURCE_CMD => Err(Fault::invalid_selectors(
            "The WS-Management service cannot process the request because the resource URI is not supported by the lab. ",
        )),
        soap::ACTION_CREATE => shell::create(server, &env, user, client_ip, &relates),
        soap::ACTION_COMMAND => shell::command(server, &env, logon, &relates),
        soap::ACTION_SEND => shell::send(server, &env, &relates),
        soap::ACTION_RECEIVE => shell::receive(server, &env, timeout, max_envelope, &relates).await,
        soap::ACTION_SIGNAL => shell::signal(server, &env, &relates),
        soap::ACTION_DELETE => shell::delete(server, &env, &relates),
        other => Err(Fault::action_not_supported(other)),
    };
    match result {
        Ok(xml) => soap_response(StatusCode::OK, xml),
        Err(f) => f.render(Some(&relates), &machine),
    }
}

fn config_document(cfg: &WsmanConfig) -> String {
    format!(
        "<cfg:Config xmlns:cfg=\"{}\"><cfg:MaxEnvelopeSizekb>{}</cfg:MaxEnvelopeSizekb><cfg:MaxTimeoutms>{}</cfg:MaxTimeoutms><cfg:MaxBatchItems>32000</cfg:MaxBatchItems><cfg:Service><cfg:MaxConcurrentOperationsPerUser>1500</cfg:MaxConcurrentOperationsPerUser><cfg:MaxConnections>300</cfg:MaxConnections><cfg:AllowUnencrypted>true</cfg:AllowUnencrypted><cfg:Auth><cfg:Basic>true</cfg:Basic><cfg:Kerberos>{}</cfg:Kerberos><cfg:Negotiate>true</cfg:Negotiate><cfg:Certificate>false</cfg:Certificate><cfg:CredSSP>{}</cfg:CredSSP><cfg:CbtHardeningLevel>{:?}</cfg:CbtHardeningLevel></cfg:Auth></cfg:Service><cfg:Winrs><cfg:AllowRemoteShellAccess>true</cfg:AllowRemoteShellAccess><cfg:IdleTimeout>{}</cfg:IdleTimeout><cfg:MaxShellsPerUser>{}</cfg:MaxShellsPerUser></cfg:Winrs></cfg:Config>",
        soap::NS_CONFIG,
        cfg.max_envelope_kb,
        cfg.max_operation_timeout.as_millis(),
        cfg.kerberos.is_some(),
        cfg.credssp.is_some(),
        cfg.cbt_hardening,
        DEFAULT_IDLE.as_millis(),
        cfg.max_shells_per_user
    )
}
