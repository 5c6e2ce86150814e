//! The lab's WinRM service: WS-Management's WinRS cmd shell as Windows answers it
//! (notes/winrm.md §12; replies shaped like the recorded traffic in tests/fixtures/winrm).
//! What a command does is up to a [`CommandHost`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use futures::future::BoxFuture;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Notify;

use subtle::ConstantTimeEq;
use winrm::acceptor::{self, Accepted, Acceptor, CbtHardening, KeytabEntry, KrbAcceptor};
use winrm::ntlm;
use winrm::soap::{self, Envelope, esc};

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

/// Decides what a command does.
pub trait CommandHost: Send + Sync + 'static {
    fn launch(&self, user: &str, command: &str, arguments: &[String]) -> Launch;
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

fn authenticate(cfg: &WsmanConfig, headers: &HeaderMap) -> Option<String> {
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

fn unauthorized() -> Response {
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

fn soap_response(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/soap+xml;charset=UTF-8"),
    );
    h.insert(
        header::SERVER,
        HeaderValue::from_static("Microsoft-HTTPAPI/2.0"),
    );
    r
}

const REPLY_NS: &str = concat!(
    r#"xml:lang="en-US" xmlns:s="http://www.w3.org/2003/05/soap-envelope" "#,
    r#"xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" "#,
    r#"xmlns:x="http://schemas.xmlsoap.org/ws/2004/09/transfer" "#,
    r#"xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" "#,
    r#"xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell" "#,
    r#"xmlns:p="http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd""#
);

fn reply(action: &str, relates_to: &str, body: &str) -> String {
    format!(
        "<s:Envelope {REPLY_NS}><s:Header><a:Action>{}</a:Action><a:MessageID>uuid:{}</a:MessageID><a:To>{}</a:To><a:RelatesTo>{}</a:RelatesTo></s:Header><s:Body>{body}</s:Body></s:Envelope>",
        esc(action),
        soap::new_guid(),
        soap::ANONYMOUS,
        esc(relates_to)
    )
}

/// A WS-Management fault, shaped like the recorded Windows faults.
struct Fault {
    action: &'static str,
    code: &'static str,
    subcode: &'static str,
    reason: &'static str,
    detail: Option<&'static str>,
    wsman_code: u32,
    message: String,
    /// Windows reports some faults (the shell quota) as a CIM `MSFT_WmiError` instead of a WSManFault.
    cim: bool,
}

const FAULT_ACTION_WSMAN: &str = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault";
const FAULT_ACTION_ADDRESSING: &str = "http://schemas.xmlsoap.org/ws/2004/08/addressing/fault";

impl Fault {
    fn invalid_selectors(message: &str) -> Fault {
        Fault {
            action: FAULT_ACTION_WSMAN,
            code: "s:Sender",
            subcode: "w:InvalidSelectors",
            reason: "The WS-Management service cannot process the request because the request contained invalid selectors for the resource. ",
            detail: Some(
                "http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/UnexpectedSelectors",
            ),
            wsman_code: soap::CODE_INVALID_SELECTORS,
            message: message.to_owned(),
            cim: false,
        }
    }

    fn unknown_shell() -> Fault {
        Fault::invalid_selectors(
            "The request for the Windows Remote Shell with ShellId specified failed because the shell was not found on the server. Possible causes are: the specified ShellId is incorrect or the shell no longer exists on the server. Provide the correct ShellId or create a new shell and retry the operation. ",
        )
    }

    fn unknown_command() -> Fault {
        Fault::invalid_selectors(
            "The Windows Remote Shell received a request to perform an operation on a command identifier that does not exist. Either the command has completed execution or the client specified an invalid command identifier. ",
        )
    }

    fn invalid_header(message: String) -> Fault {
        Fault {
            action: FAULT_ACTION_ADDRESSING,
            code: "s:Sender",
            subcode: "a:InvalidMessageInformationHeader",
            reason: "The WS-Management service cannot process the request. The request contains one or more invalid SOAP headers. ",
            detail: None,
            wsman_code: soap::CODE_INVALID_HEADER,
            message,
            cim: false,
        }
    }

    fn timed_out() -> Fault {
        let m = "The WS-Management service cannot complete the operation within the time specified in OperationTimeout.  ";
        Fault {
            action: FAULT_ACTION_WSMAN,
            code: "s:Receiver",
            subcode: "w:TimedOut",
            reason: m,
            detail: None,
            wsman_code: soap::CODE_OPERATION_TIMEOUT,
            message: m.to_owned(),
            cim: false,
        }
    }

    fn quota(max: usize) -> Fault {
        Fault {
            action: FAULT_ACTION_WSMAN,
            code: "s:Sender",
            subcode: "w:QuotaLimit",
            reason: "The WS-Management service cannot process the request. The maximum number of concurrent shells for this user has been exceeded. Close existing shells or raise the quota for this user. ",
            detail: None,
            wsman_code: soap::CODE_QUOTA_LIMIT,
            message: format!(
                "The WS-Management service cannot process the request. This user is allowed a maximum number of {max} concurrent shells, which has been exceeded. Close existing shells or raise the quota for this user. "
            ),
            cim: true,
        }
    }

    fn access_denied() -> Fault {
        Fault {
            action: FAULT_ACTION_WSMAN,
            code: "s:Sender",
            subcode: "w:AccessDenied",
            reason: "Access is denied. ",
            detail: None,
            wsman_code: 5,
            message: "Access is denied. ".into(),
            cim: false,
        }
    }

    fn invalid_parameter() -> Fault {
        Fault {
            action: FAULT_ACTION_WSMAN,
            code: "s:Sender",
            subcode: "w:InvalidParameter",
            reason: "The parameter is incorrect. ",
            detail: Some("http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/InvalidValue"),
            wsman_code: soap::CODE_INVALID_PARAMETER,
            message: "The parameter is incorrect. ".into(),
            cim: false,
        }
    }

    fn action_not_supported(action: &str) -> Fault {
        Fault {
            action: FAULT_ACTION_ADDRESSING,
            code: "s:Sender",
            subcode: "a:ActionNotSupported",
            reason: "The action is not supported by the service. ",
            detail: None,
            wsman_code: 2_150_858_771,
            message: format!(
                "The WS-Management service cannot process the request because the action {action} is not supported. "
            ),
            cim: false,
        }
    }

    /// The detail block as the recorded quota fault has it.
    fn cim_detail(&self) -> String {
        let m = esc(&self.message);
        let code = self.wsman_code;
        format!(
            concat!(
                r#"<p:MSFT_WmiError b:IsCIM_Error="true" xmlns:b="http://schemas.dmtf.org/wbem/wsman/1/cimbinding.xsd" xmlns:cim="http://schemas.dmtf.org/wbem/wscim/1/common" xmlns:p="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/MSFT_WmiError" xsi:type="p:MSFT_WmiError_Type" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">"#,
                r#"<p:CIMStatusCode xsi:type="cim:cimUnsignedInt">27</p:CIMStatusCode>"#,
                r#"<p:Message xsi:type="cim:cimString">{m}</p:Message>"#,
                r#"<p:MessageID xsi:type="cim:cimString">HRESULT 0x{code:08x}</p:MessageID>"#,
                r#"<p:error_Category xsi:type="cim:cimUnsignedInt">30</p:error_Category>"#,
                r#"<p:error_Code xsi:type="cim:cimUnsignedInt">{code}</p:error_Code>"#,
                r#"<p:error_Type xsi:type="cim:cimString">HRESULT</p:error_Type>"#,
                r#"<p:error_WindowsErrorMessage xsi:type="cim:cimString">{m}</p:error_WindowsErrorMessage>"#,
                r#"</p:MSFT_WmiError>"#
            ),
            m = m,
            code = code
        )
    }

    fn render(&self, relates_to: Option<&str>, machine: &str) -> Response {
        let detail = self
            .detail
            .map(|d| format!("<w:FaultDetail>{d}</w:FaultDetail>"))
            .unwrap_or_default();
        let wsman_fault = if self.cim {
            self.cim_detail()
        } else {
            format!(
                "<f:WSManFault xmlns:f=\"{}\" Code=\"{}\" Machine=\"{}\"><f:Message>{}</f:Message></f:WSManFault>",
                soap::NS_FAULT,
                self.wsman_code,
                esc(machine),
                esc(&self.message)
            )
        };
        let relates = relates_to
            .map(|r| format!("<a:RelatesTo>{}</a:RelatesTo>", esc(r)))
            .unwrap_or_default();
        let body = format!(
            "<s:Envelope {REPLY_NS}><s:Header><a:Action>{}</a:Action><a:MessageID>uuid:{}</a:MessageID><a:To>{}</a:To>{relates}</s:Header><s:Body><s:Fault><s:Code><s:Value>{}</s:Value><s:Subcode><s:Value>{}</s:Value></s:Subcode></s:Code><s:Reason><s:Text xml:lang=\"en-US\">{}</s:Text></s:Reason><s:Detail>{detail}{wsman_fault}</s:Detail></s:Fault></s:Body></s:Envelope>",
            self.action,
            soap::new_guid(),
            soap::ANONYMOUS,
            self.code,
            self.subcode,
            esc(self.reason),
        );
        soap_response(StatusCode::INTERNAL_SERVER_ERROR, body)
    }
}

/// Per-connection security state: NTLM authenticates a TCP connection, not a request, so the
/// listener creates one of these per connection and hands it to every request on it.
#[derive(Default)]
pub struct ConnSecurity {
    ctx: Mutex<Option<ConnCtx>>,
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
enum ConnCtx {
    Ntlm(Box<Acceptor>),
    Kerberos(Box<KrbAcceptor>),
}

impl ConnCtx {
    fn user(&self) -> Option<&str> {
        match self {
            ConnCtx::Ntlm(a) => a.user(),
            ConnCtx::Kerberos(a) => a.user(),
        }
    }

    fn wrap(&mut self, plain: &[u8]) -> Result<Vec<u8>, ntlm::NtlmError> {
        match self {
            ConnCtx::Ntlm(a) => a.wrap(plain),
            ConnCtx::Kerberos(a) => a.wrap(plain),
        }
    }

    fn unwrap(&mut self, body: &[u8]) -> Result<Vec<u8>, ntlm::NtlmError> {
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

fn challenge(token: &[u8]) -> Response {
    let mut r = with_token(StatusCode::UNAUTHORIZED.into_response(), token);
    r.headers_mut().insert(
        header::SERVER,
        HeaderValue::from_static("Microsoft-HTTPAPI/2.0"),
    );
    r
}

/// Adds `WWW-Authenticate: Negotiate <token>` (an NTLM challenge, a Kerberos AP-REP).
fn with_token(mut r: Response, token: &[u8]) -> Response {
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
fn negotiate(
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
            let (ap_rep, user) = a.accept(&token)?;
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
    let (user, reply_token) = match sender(&server, conn.as_ref(), &headers) {
        Ok(who) => who,
        Err(r) => return *r,
    };
    let sealed = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(ntlm::is_encrypted);
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
    let mut resp = soap(&server, &user, &client_ip, &body).await;
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
) -> Result<(String, Option<Vec<u8>>), Box<Response>> {
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
        Some(_) => authenticate(&server.cfg, headers)
            .map(|u| (u, None))
            .ok_or_else(|| Box::new(unauthorized())),
        // Later requests on an NTLM-authenticated connection carry no Authorization header.
        None => conn
            .and_then(|c| {
                c.ctx
                    .lock()
                    .as_ref()
                    .and_then(|a| a.user().map(str::to_owned))
            })
            .map(|u| (u, None))
            .ok_or_else(|| Box::new(unauthorized())),
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
    let wrapped = conn.and_then(|c| c.ctx.lock().as_mut().map(|a| a.wrap(&plain)));
    match wrapped {
        Some(Ok(w)) => {
            parts.headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(ntlm::ENCRYPTED_CONTENT_TYPE),
            );
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, axum::body::Body::from(w))
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Answers one (plaintext) SOAP request.
async fn soap(server: &Server, user: &str, client_ip: &str, body: &[u8]) -> Response {
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
        soap::ACTION_CREATE => create(server, &env, user, client_ip, &relates),
        soap::ACTION_COMMAND => command(server, &env, user, &relates),
        soap::ACTION_SEND => send(server, &env, &relates),
        soap::ACTION_RECEIVE => receive(server, &env, timeout, max_envelope, &relates).await,
        soap::ACTION_SIGNAL => signal(server, &env, &relates),
        soap::ACTION_DELETE => delete(server, &env, &relates),
        other => Err(Fault::action_not_supported(other)),
    };
    match result {
        Ok(xml) => soap_response(StatusCode::OK, xml),
        Err(f) => f.render(Some(&relates), &machine),
    }
}

fn config_document(cfg: &WsmanConfig) -> String {
    format!(
        "<cfg:Config xmlns:cfg=\"{}\"><cfg:MaxEnvelopeSizekb>{}</cfg:MaxEnvelopeSizekb><cfg:MaxTimeoutms>{}</cfg:MaxTimeoutms><cfg:MaxBatchItems>32000</cfg:MaxBatchItems><cfg:Service><cfg:MaxConcurrentOperationsPerUser>1500</cfg:MaxConcurrentOperationsPerUser><cfg:MaxConnections>300</cfg:MaxConnections><cfg:AllowUnencrypted>true</cfg:AllowUnencrypted><cfg:Auth><cfg:Basic>true</cfg:Basic><cfg:Kerberos>{}</cfg:Kerberos><cfg:Negotiate>true</cfg:Negotiate><cfg:Certificate>false</cfg:Certificate><cfg:CredSSP>false</cfg:CredSSP><cfg:CbtHardeningLevel>{:?}</cfg:CbtHardeningLevel></cfg:Auth></cfg:Service><cfg:Winrs><cfg:AllowRemoteShellAccess>true</cfg:AllowRemoteShellAccess><cfg:IdleTimeout>{}</cfg:IdleTimeout><cfg:MaxShellsPerUser>{}</cfg:MaxShellsPerUser></cfg:Winrs></cfg:Config>",
        soap::NS_CONFIG,
        cfg.max_envelope_kb,
        cfg.max_operation_timeout.as_millis(),
        cfg.kerberos.is_some(),
        cfg.cbt_hardening,
        DEFAULT_IDLE.as_millis(),
        cfg.max_shells_per_user
    )
}

/// Forgets shells that were idle longer than their IdleTimeOut (as WinRM does).
fn expire(shells: &mut HashMap<String, ShellState>) {
    let now = Instant::now();
    shells.retain(|_, s| {
        let keep = now.duration_since(s.last_used) < s.idle_timeout;
        if !keep {
            kill_all(s);
        }
        keep
    });
}

/// A shell that goes takes its processes with it.
fn kill_all(shell: &ShellState) {
    for c in shell.commands.values() {
        c.0.lock().kill();
    }
}

fn create(
    server: &Server,
    env: &Envelope,
    user: &str,
    client_ip: &str,
    relates: &str,
) -> Result<String, Fault> {
    let shell_el = env.body.child(soap::NS_SHELL, "Shell");
    let idle_timeout = shell_el
        .and_then(|s| s.child(soap::NS_SHELL, "IdleTimeOut"))
        .and_then(|t| soap::parse_xs_duration(t.trimmed_text()))
        .unwrap_or(DEFAULT_IDLE);
    let mut shells = server.shells.lock();
    expire(&mut shells);
    let owned = shells.values().filter(|s| s.owner == user).count();
    if owned >= server.cfg.max_shells_per_user {
        return Err(Fault::quota(server.cfg.max_shells_per_user));
    }
    let id = soap::new_guid();
    let now = Instant::now();
    shells.insert(
        id.clone(),
        ShellState {
            owner: user.to_owned(),
            client_ip: client_ip.to_owned(),
            last_used: now,
            idle_timeout,
            commands: HashMap::new(),
        },
    );
    let shell = &shells[&id];
    let body = format!(
        "<x:ResourceCreated><a:Address>http://{host}:5985/wsman</a:Address><a:ReferenceParameters><w:ResourceURI>{res}</w:ResourceURI><w:SelectorSet><w:Selector Name=\"ShellId\">{id}</w:Selector></w:SelectorSet></a:ReferenceParameters></x:ResourceCreated><rsp:Shell xmlns:rsp=\"{ns}\"><rsp:ShellId>{id}</rsp:ShellId><rsp:ResourceUri>{res}</rsp:ResourceUri><rsp:Owner>{owner}</rsp:Owner><rsp:ClientIP>{ip}</rsp:ClientIP><rsp:IdleTimeOut>PT{idle}.000S</rsp:IdleTimeOut><rsp:InputStreams>stdin</rsp:InputStreams><rsp:OutputStreams>stdout stderr</rsp:OutputStreams><rsp:ShellRunTime>P0DT0H0M0S</rsp:ShellRunTime><rsp:ShellInactivity>P0DT0H0M0S</rsp:ShellInactivity></rsp:Shell>",
        host = esc(&server.cfg.hostname),
        res = soap::RESOURCE_CMD,
        ns = soap::NS_SHELL,
        owner = esc(&shell.owner),
        ip = esc(&shell.client_ip),
        idle = shell.idle_timeout.as_secs(),
    );
    Ok(reply(
        &format!("{}Response", soap::ACTION_CREATE),
        relates,
        &body,
    ))
}

/// Looks up the shell named in the request's ShellId selector and marks it used.
fn with_shell<T>(
    server: &Server,
    env: &Envelope,
    f: impl FnOnce(&mut ShellState) -> Result<T, Fault>,
) -> Result<T, Fault> {
    let id = env.selector("ShellId").ok_or_else(Fault::unknown_shell)?;
    let mut shells = server.shells.lock();
    expire(&mut shells);
    let shell = shells.get_mut(id).ok_or_else(Fault::unknown_shell)?;
    shell.last_used = Instant::now();
    f(shell)
}

fn command(server: &Server, env: &Envelope, user: &str, relates: &str) -> Result<String, Fault> {
    let line = env
        .body
        .child(soap::NS_SHELL, "CommandLine")
        .ok_or_else(Fault::invalid_parameter)?;
    let cmd = line
        .child(soap::NS_SHELL, "Command")
        .map(|c| c.text.clone())
        .unwrap_or_default();
    let args: Vec<String> = line
        .children_named(soap::NS_SHELL, "Arguments")
        .map(|a| a.text.clone())
        .collect();
    // Make sure the shell exists before the host does anything.
    with_shell(server, env, |_| Ok(()))?;
    let launched = server.host.launch(user, &cmd, &args);
    let mut c = Command {
        stdin: Vec::new(),
        consumer: None,
        stdout: Vec::new(),
        stderr: Vec::new(),
        exit_code: None,
        stdin_tx: None,
        task: None,
    };
    let mut interactive = None;
    match launched {
        Launch::Done(out) => {
            c.stdout = out.stdout;
            c.stderr = out.stderr;
            c.exit_code = Some(out.exit_code);
        }
        Launch::AwaitStdin(f) => c.consumer = Some(f),
        Launch::Interactive(f) => {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            c.stdin_tx = Some(tx);
            interactive = Some((f, rx));
        }
    }
    let id = soap::new_guid();
    let cmd = Arc::new((Mutex::new(c), Notify::new()));
    with_shell(server, env, |shell| {
        shell.commands.insert(id.clone(), cmd.clone());
        Ok(())
    })?;
    if let Some((f, rx)) = interactive {
        let io = ProcessIo {
            stdin: rx,
            out: cmd.clone(),
        };
        let done = cmd.clone();
        let task = tokio::spawn(async move {
            let code = f(io).await;
            done.0.lock().exit_code = Some(code);
            done.1.notify_waiters();
        });
        cmd.0.lock().task = Some(task.abort_handle());
    }
    Ok(reply(
        &format!("{}Response", soap::ACTION_COMMAND),
        relates,
        &format!("<rsp:CommandResponse><rsp:CommandId>{id}</rsp:CommandId></rsp:CommandResponse>"),
    ))
}

fn find_command(
    server: &Server,
    env: &Envelope,
    command_id: Option<&str>,
) -> Result<Arc<(Mutex<Command>, Notify)>, Fault> {
    with_shell(server, env, |shell| {
        let id = command_id.ok_or_else(Fault::invalid_parameter)?;
        shell
            .commands
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(id))
            .map(|(_, v)| v.clone())
            .ok_or_else(Fault::unknown_command)
    })
}

fn send(server: &Server, env: &Envelope, relates: &str) -> Result<String, Fault> {
    let send = env
        .body
        .child(soap::NS_SHELL, "Send")
        .ok_or_else(Fault::invalid_parameter)?;
    for stream in send.children_named(soap::NS_SHELL, "Stream") {
        let cmd = find_command(server, env, stream.attr("CommandId"))?;
        let data = base64::engine::general_purpose::STANDARD
            .decode(stream.trimmed_text())
            .map_err(|_| Fault::invalid_parameter())?;
        let end = stream
            .attr("End")
            .is_some_and(|e| e.eq_ignore_ascii_case("true"));
        let mut c = cmd.0.lock();
        if let Some(tx) = &c.stdin_tx {
            if !data.is_empty() {
                let _ = tx.send(data);
            }
            if end {
                c.stdin_tx = None;
            }
            continue;
        }
        c.stdin.extend(data);
        if end && let Some(consumer) = c.consumer.take() {
            let input = std::mem::take(&mut c.stdin);
            let cmd = cmd.clone();
            tokio::spawn(async move {
                let out = consumer(input).await;
                let mut c = cmd.0.lock();
                c.stdout.extend(out.stdout);
                c.stderr.extend(out.stderr);
                c.exit_code = Some(out.exit_code);
                drop(c);
                cmd.1.notify_waiters();
            });
        }
    }
    Ok(reply(
        &format!("{}Response", soap::ACTION_SEND),
        relates,
        "<rsp:SendResponse/>",
    ))
}

async fn receive(
    server: &Server,
    env: &Envelope,
    timeout: Duration,
    max_envelope: usize,
    relates: &str,
) -> Result<String, Fault> {
    let desired = env
        .body
        .path(&[
            (soap::NS_SHELL, "Receive"),
            (soap::NS_SHELL, "DesiredStream"),
        ])
        .ok_or_else(Fault::invalid_parameter)?;
    let id = desired.attr("CommandId").map(str::to_owned);
    let cmd = find_command(server, env, id.as_deref())?;
    let id = id.unwrap_or_default();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let notified = cmd.1.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let mut c = cmd.0.lock();
            let has_output = !c.stdout.is_empty() || !c.stderr.is_empty();
            if has_output || c.exit_code.is_some() {
                return Ok(reply(
                    &format!("{}Response", soap::ACTION_RECEIVE),
                    relates,
                    &drain(&mut c, &id, max_envelope),
                ));
            }
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return Err(Fault::timed_out());
        }
    }
}

/// Takes as much output as fits in one reply; the rest waits for the next Receive.
fn drain(c: &mut Command, id: &str, max_envelope: usize) -> String {
    let budget = (max_envelope.saturating_sub(ENVELOPE_OVERHEAD).max(1024) / 4) * 3;
    let mut body = String::from("<rsp:ReceiveResponse>");
    let mut left = budget;
    for (name, buf) in [("stdout", &mut c.stdout), ("stderr", &mut c.stderr)] {
        if buf.is_empty() || left == 0 {
            continue;
        }
        let n = buf.len().min(left);
        let part: Vec<u8> = buf.drain(..n).collect();
        left -= n;
        body.push_str(&format!(
            "<rsp:Stream Name=\"{name}\" CommandId=\"{id}\">{}</rsp:Stream>",
            base64::engine::general_purpose::STANDARD.encode(part)
        ));
    }
    let finished = c.stdout.is_empty() && c.stderr.is_empty();
    match c.exit_code {
        Some(code) if finished => {
            body.push_str(&format!(
                "<rsp:Stream Name=\"stdout\" CommandId=\"{id}\" End=\"true\"></rsp:Stream><rsp:Stream Name=\"stderr\" CommandId=\"{id}\" End=\"true\"></rsp:Stream><rsp:CommandState CommandId=\"{id}\" State=\"{}\"><rsp:ExitCode>{code}</rsp:ExitCode></rsp:CommandState>",
                soap::STATE_DONE
            ));
        }
        _ => body.push_str(&format!(
            "<rsp:CommandState CommandId=\"{id}\" State=\"{}\"></rsp:CommandState>",
            soap::STATE_RUNNING
        )),
    }
    body.push_str("</rsp:ReceiveResponse>");
    body
}

fn signal(server: &Server, env: &Envelope, relates: &str) -> Result<String, Fault> {
    let sig = env
        .body
        .child(soap::NS_SHELL, "Signal")
        .ok_or_else(Fault::invalid_parameter)?;
    let id = sig.attr("CommandId").ok_or_else(Fault::invalid_parameter)?;
    with_shell(server, env, |shell| {
        let key = shell
            .commands
            .keys()
            .find(|k| k.eq_ignore_ascii_case(id))
            .cloned()
            .ok_or_else(Fault::unknown_command)?;
        if let Some(c) = shell.commands.remove(&key) {
            c.0.lock().kill();
        }
        Ok(())
    })?;
    Ok(reply(
        &format!("{}Response", soap::ACTION_SIGNAL),
        relates,
        "<rsp:SignalResponse/>",
    ))
}

fn delete(server: &Server, env: &Envelope, relates: &str) -> Result<String, Fault> {
    let id = env.selector("ShellId").ok_or_else(Fault::unknown_shell)?;
    let mut shells = server.shells.lock();
    expire(&mut shells);
    let shell = shells.remove(id).ok_or_else(Fault::unknown_shell)?;
    kill_all(&shell);
    Ok(reply(
        &format!("{}Response", soap::ACTION_DELETE),
        relates,
        "",
    ))
}
