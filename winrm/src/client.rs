//! The WinRS client: open a shell, run a command with stdin, collect its output, close.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use secrecy::SecretString;

use super::credssp::{CredSspKerberos, CredSspTrust, client_tls_config, parse_sha256};
use super::error::WinrmError;
use super::soap::{self, Envelope, RequestHeader, esc};
use super::transport::{BasicTransport, Mechanism, SealedTransport};
use xml::Element;

/// How the client authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// HTTP Basic: https only, unless `allow_unencrypted`.
    Basic,
    /// NTLM through Negotiate; over http every message is sealed (WinRM message encryption),
    /// over https the TLS channel is bound into the handshake (channel binding).
    Ntlm,
    /// Kerberos through Negotiate: a password logon at `kdc`, a ticket for `spn`, mutual
    /// authentication; messages sealed over http as with NTLM.
    Kerberos,
    /// CredSSP: NTLM inside CredSSP's TLS session, then the password is delegated to the
    /// host (it can reach Exchange and AD as the account: the second hop). Messages are
    /// encrypted with that TLS session over http, plain inside https.
    CredSsp,
}

#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub endpoint: url::Url,
    pub username: String,
    pub password: SecretString,
    pub auth: Auth,
    /// Basic over plain http only when this is true.
    pub allow_unencrypted: bool,
    /// Extra PEM CA certificates, trusted besides the system roots.
    pub ca_file: Option<PathBuf>,
    /// WS-Management OperationTimeout; the HTTP read timeout is this plus 10 s.
    pub operation_timeout: Duration,
    pub connect_timeout: Duration,
    pub max_envelope_size: u32,
    /// Kerberos: the KDC, `tcp://dc1.corp.example:88`.
    pub kdc: Option<String>,
    /// Kerberos: the host's SPN; `HTTP/<endpoint host>` when not given.
    pub spn: Option<String>,
    /// CredSSP: SHA-256 fingerprints of the host's CredSSP (`CN=WSMAN-<host>`) certificate.
    pub credssp_cert_sha256: Vec<String>,
    /// CredSSP: trust any CredSSP certificate (explicit, logged at start-up).
    pub credssp_skip_cert_check: bool,
}

impl ClientConfig {
    pub fn new(endpoint: url::Url, username: impl Into<String>, password: SecretString) -> Self {
        ClientConfig {
            endpoint,
            username: username.into(),
            password,
            auth: Auth::Basic,
            allow_unencrypted: false,
            ca_file: None,
            operation_timeout: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(10),
            max_envelope_size: 153_600,
            kdc: None,
            spn: None,
            credssp_cert_sha256: Vec::new(),
            credssp_skip_cert_check: false,
        }
    }
}

#[derive(Clone, Debug)]
pub struct ShellOptions {
    /// 65001 = UTF-8 (the default: 437 would garble non-ASCII names).
    pub codepage: u32,
    pub no_profile: bool,
    /// Frees the shell on the host if mailboxd vanishes without deleting it.
    pub idle_timeout: Option<Duration>,
    pub working_directory: Option<String>,
    pub environment: Vec<(String, String)>,
}

impl Default for ShellOptions {
    fn default() -> Self {
        ShellOptions {
            codepage: 65001,
            no_profile: true,
            idle_timeout: Some(Duration::from_secs(300)),
            working_directory: None,
            environment: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct CommandOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i64,
}

enum Transport {
    Basic(BasicTransport),
    Sealed(SealedTransport),
}

struct Inner {
    transport: Transport,
    cfg: ClientConfig,
    session_id: String,
}

/// Whether the endpoint is https; plain http with Basic only when allowed explicitly.
fn uses_tls(cfg: &ClientConfig) -> Result<bool, WinrmError> {
    match cfg.endpoint.scheme() {
        "https" => Ok(true),
        "http" if cfg.allow_unencrypted || cfg.auth != Auth::Basic => Ok(false),
        "http" => Err(WinrmError::Config(format!(
            "{} is plain HTTP and Basic auth would send the password in clear text: use https://, auth = \"ntlm\" (messages are sealed), or allow_unencrypted = true knowingly",
            cfg.endpoint
        ))),
        other => Err(WinrmError::Config(format!(
            "unsupported URL scheme {other:?}"
        ))),
    }
}

/// reqwest for Basic: HTTP/1.1, the configured timeouts, no proxy, the extra CAs of
/// `ca_file` trusted besides the system roots.
fn basic_http_client(
    cfg: &ClientConfig,
    read_timeout: Duration,
) -> Result<reqwest::Client, WinrmError> {
    let mut builder = reqwest::Client::builder()
        .http1_only()
        .connect_timeout(cfg.connect_timeout)
        .timeout(read_timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .no_proxy();
    if let Some(path) = &cfg.ca_file {
        builder = crate::tls::trust_ca_file(builder, "winrm.ca_file", path)
            .map_err(WinrmError::Config)?;
    }
    builder
        .build()
        .map_err(|e| WinrmError::Config(format!("cannot build the HTTP client: {e}")))
}

/// NTLM, or Kerberos at the configured KDC for the host's SPN (`HTTP/<host>` by default).
fn mechanism(cfg: &ClientConfig) -> Result<Mechanism, WinrmError> {
    match cfg.auth {
        Auth::Kerberos => {}
        Auth::CredSsp => return credssp_mechanism(cfg),
        Auth::Basic | Auth::Ntlm => return Ok(Mechanism::Ntlm),
    }
    let kdc = cfg.kdc.clone().ok_or_else(|| {
        WinrmError::Config("winrm.auth = \"kerberos\" needs winrm.kdc (tcp://dc.example:88)".into())
    })?;
    let host = cfg.endpoint.host_str().unwrap_or_default().to_owned();
    let spn = cfg.spn.clone().unwrap_or_else(|| format!("HTTP/{host}"));
    Ok(Mechanism::Kerberos { kdc, spn })
}

/// CredSSP trusting the pinned certificate, or any with `credssp_skip_cert_check`.
fn credssp_mechanism(cfg: &ClientConfig) -> Result<Mechanism, WinrmError> {
    let trust = if cfg.credssp_skip_cert_check {
        tracing::warn!(
            endpoint = %cfg.endpoint,
            "winrm.credssp_skip_cert_check: the host's CredSSP certificate is not checked; only the NTLM proof ties the session to the host"
        );
        CredSspTrust::Unverified
    } else {
        let mut pins = Vec::new();
        for text in &cfg.credssp_cert_sha256 {
            pins.push(parse_sha256(text).ok_or_else(|| {
                WinrmError::Config(format!(
                    "winrm.credssp_cert_sha256 {text:?} is not a SHA-256 fingerprint (64 hex digits, colons allowed)"
                ))
            })?);
        }
        if pins.is_empty() {
            return Err(WinrmError::Config(
                "winrm.auth = \"credssp\" needs winrm.credssp_cert_sha256: the SHA-256 fingerprint of the host's CN=WSMAN-<host> certificate (or winrm.credssp_skip_cert_check = true, knowingly)".into(),
            ));
        }
        CredSspTrust::Pinned(pins)
    };
    let tls = client_tls_config(trust).map_err(|e| WinrmError::Config(e.to_string()))?;
    // With a KDC, CredSSP logs on with Kerberos first, as pyspnego's does: a domain that
    // denies NTLM (Microsoft's roadmap disables it by default) still admits the account.
    let kerberos = cfg.kdc.clone().map(|kdc| CredSspKerberos {
        kdc,
        spn: cfg
            .spn
            .clone()
            .unwrap_or_else(|| format!("HTTP/{}", cfg.endpoint.host_str().unwrap_or_default())),
        timeout: cfg.connect_timeout,
    });
    Ok(Mechanism::CredSsp { tls, kerberos })
}

/// A WinRM client for one endpoint; cheap to clone.
#[derive(Clone)]
pub struct WinrmClient {
    inner: Arc<Inner>,
}

impl WinrmClient {
    pub fn new(cfg: ClientConfig) -> Result<Self, WinrmError> {
        crate::tls::install_provider();
        let https = uses_tls(&cfg)?;
        let read_timeout = cfg.operation_timeout + Duration::from_secs(10);
        let transport = match cfg.auth {
            Auth::Basic => Transport::Basic(BasicTransport {
                http: basic_http_client(&cfg, read_timeout)?,
                endpoint: cfg.endpoint.clone(),
                username: cfg.username.clone(),
                password: cfg.password.clone(),
            }),
            Auth::Ntlm | Auth::Kerberos | Auth::CredSsp => {
                let mechanism = mechanism(&cfg)?;
                let tls = if https {
                    Some(
                        crate::tls::client_config(cfg.ca_file.as_deref())
                            .map_err(|e| WinrmError::Config(format!("winrm.{e}")))?,
                    )
                } else {
                    None
                };
                Transport::Sealed(SealedTransport::new(
                    mechanism,
                    cfg.endpoint.clone(),
                    cfg.username.clone(),
                    cfg.password.clone(),
                    tls,
                    cfg.connect_timeout,
                    read_timeout,
                ))
            }
        };
        Ok(WinrmClient {
            inner: Arc::new(Inner {
                transport,
                cfg,
                session_id: format!("uuid:{}", soap::new_guid()),
            }),
        })
    }

    pub fn endpoint(&self) -> &url::Url {
        &self.inner.cfg.endpoint
    }

    /// Sends one request envelope and returns the reply; faults become `WinrmError::Fault`.
    async fn call(
        &self,
        action: &str,
        shell_id: Option<&str>,
        options: &[(&str, &str)],
        body: &str,
    ) -> Result<Envelope, WinrmError> {
        let cfg = &self.inner.cfg;
        let message_id = format!("uuid:{}", soap::new_guid());
        let envelope = soap::request(
            &RequestHeader {
                to: cfg.endpoint.as_str(),
                action,
                resource_uri: soap::RESOURCE_CMD,
                message_id: &message_id,
                session_id: &self.inner.session_id,
                max_envelope_size: cfg.max_envelope_size,
                operation_timeout: cfg.operation_timeout,
                shell_id,
                options,
            },
            body,
        );
        let reply = match &self.inner.transport {
            Transport::Basic(t) => t.post(envelope).await?,
            Transport::Sealed(t) => t.post(envelope).await?,
        };
        let (status, text) = (reply.status, reply.body);
        match status {
            401 => return Err(WinrmError::Unauthorized),
            // http.sys refuses a request above MaxEnvelopeSizekb before WinRM sees it.
            413 => {
                return Err(WinrmError::EnvelopeTooLarge(format!(
                    "HTTP 413 for a {action} request"
                )));
            }
            _ => {}
        }
        let parsed = Envelope::parse(&text);
        if let Ok(env) = &parsed
            && let Some(fault) = env.fault()
        {
            return Err(WinrmError::from_fault(fault));
        }
        if !(200..300).contains(&status) {
            return Err(WinrmError::Http {
                status,
                body_excerpt: text.chars().take(300).collect(),
            });
        }
        let env = parsed.map_err(WinrmError::Protocol)?;
        if let Some(rel) = env.relates_to()
            && rel != message_id
        {
            return Err(WinrmError::Protocol(format!(
                "reply relates to {rel}, not to the request {message_id}"
            )));
        }
        Ok(env)
    }

    /// Creates a WinRS cmd shell.
    pub async fn open_shell(&self, opts: &ShellOptions) -> Result<Shell, WinrmError> {
        let mut body = String::from(
            "<rsp:Shell><rsp:InputStreams>stdin</rsp:InputStreams><rsp:OutputStreams>stdout stderr</rsp:OutputStreams>",
        );
        if let Some(dir) = &opts.working_directory {
            body.push_str(&format!(
                "<rsp:WorkingDirectory>{}</rsp:WorkingDirectory>",
                esc(dir)
            ));
        }
        if let Some(idle) = opts.idle_timeout {
            body.push_str(&format!(
                "<rsp:IdleTimeOut>{}</rsp:IdleTimeOut>",
                soap::xs_duration(idle)
            ));
        }
        if !opts.environment.is_empty() {
            body.push_str("<rsp:Environment>");
            for (k, v) in &opts.environment {
                body.push_str(&format!(
                    r#"<rsp:Variable Name="{}">{}</rsp:Variable>"#,
                    esc(k),
                    esc(v)
                ));
            }
            body.push_str("</rsp:Environment>");
        }
        body.push_str("</rsp:Shell>");
        let codepage = opts.codepage.to_string();
        let options = [
            (
                "WINRS_NOPROFILE",
                if opts.no_profile { "TRUE" } else { "FALSE" },
            ),
            ("WINRS_CODEPAGE", codepage.as_str()),
        ];
        let env = self
            .call(soap::ACTION_CREATE, None, &options, &body)
            .await?;
        let id = env
            .body
            .find(soap::NS_WSMAN, "SelectorSet")
            .and_then(|s| {
                s.children_named(soap::NS_WSMAN, "Selector")
                    .find(|x| x.attr("Name") == Some("ShellId"))
            })
            .or_else(|| env.body.find(soap::NS_SHELL, "ShellId"))
            .map(|e| e.trimmed_text().to_owned())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| WinrmError::Protocol("CreateResponse without a ShellId".into()))?;
        Ok(Shell {
            client: self.clone(),
            id,
            closed: false,
        })
    }
}

/// An open WinRS shell on the host.
pub struct Shell {
    client: WinrmClient,
    id: String,
    closed: bool,
}

/// One Receive reply, decoded.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReceiveChunk {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Present when the command is Done.
    pub exit_code: Option<i64>,
}

/// Reads a ReceiveResponse body: streams in document order, and the command state.
pub fn parse_receive(body: &Element, command_id: &str) -> Result<ReceiveChunk, WinrmError> {
    let resp = body
        .child(soap::NS_SHELL, "ReceiveResponse")
        .ok_or_else(|| WinrmError::Protocol("expected a ReceiveResponse".into()))?;
    let mut out = ReceiveChunk::default();
    for s in resp.children_named(soap::NS_SHELL, "Stream") {
        if s.attr("CommandId")
            .is_some_and(|c| !c.eq_ignore_ascii_case(command_id))
        {
            continue;
        }
        let data = s.trimmed_text();
        if data.is_empty() {
            continue;
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| WinrmError::Protocol(format!("stream is not base64: {e}")))?;
        match s.attr("Name") {
            Some("stdout") => out.stdout.extend(bytes),
            Some("stderr") => out.stderr.extend(bytes),
            _ => {}
        }
    }
    if let Some(state) = resp.child(soap::NS_SHELL, "CommandState")
        && state.attr("State").is_some_and(|s| s.ends_with("/Done"))
    {
        let code = state
            .child(soap::NS_SHELL, "ExitCode")
            .map(|e| e.trimmed_text())
            .unwrap_or("0");
        // 32-bit on the wire; accept signed and unsigned spellings.
        let exit = code
            .parse::<i64>()
            .map_err(|_| WinrmError::Protocol(format!("ExitCode {code:?} is not a number")))?;
        out.exit_code = Some(exit);
    }
    Ok(out)
}

impl Shell {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Starts `command arguments…` (through cmd.exe, as WinRS does by default) and returns
    /// the running process, to be fed with [`Process::send`] and read with
    /// [`Process::receive`]: one long-lived process can take request after request.
    pub async fn start(
        &self,
        command: &str,
        arguments: &[&str],
        stdin: Stdin,
    ) -> Result<Process, WinrmError> {
        let mut body = format!(
            "<rsp:CommandLine><rsp:Command>{}</rsp:Command>",
            esc(command)
        );
        for a in arguments {
            body.push_str(&format!("<rsp:Arguments>{}</rsp:Arguments>", esc(a)));
        }
        body.push_str("</rsp:CommandLine>");
        let options = [
            (
                "WINRS_CONSOLEMODE_STDIN",
                match stdin {
                    Stdin::Read => "FALSE",
                    Stdin::Unused => "TRUE",
                },
            ),
            ("WINRS_SKIP_CMD_SHELL", "FALSE"),
        ];
        let env = self
            .client
            .call(soap::ACTION_COMMAND, Some(&self.id), &options, &body)
            .await?;
        let command_id = env
            .body
            .find(soap::NS_SHELL, "CommandId")
            .map(|e| e.trimmed_text().to_owned())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| WinrmError::Protocol("CommandResponse without a CommandId".into()))?;
        Ok(Process {
            client: self.client.clone(),
            shell_id: self.id.clone(),
            command_id,
            done: None,
        })
    }

    /// Runs a command to its end: writes `stdin` and closes it, collects stdout/stderr.
    pub async fn run(
        &self,
        command: &str,
        arguments: &[&str],
        stdin: Option<&[u8]>,
    ) -> Result<CommandOutput, WinrmError> {
        let use_stdin = if stdin.is_some() {
            Stdin::Read
        } else {
            Stdin::Unused
        };
        let mut p = self.start(command, arguments, use_stdin).await?;
        let result = async {
            if let Some(data) = stdin {
                p.send_last(data).await?;
            }
            p.wait().await
        }
        .await;
        p.terminate().await;
        result
    }
}

/// Whether a started process reads its stdin (WinRS's `WINRS_CONSOLEMODE_STDIN`: a pipe it
/// reads, or the console's input, which nobody writes to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdin {
    Read,
    Unused,
}

/// A command running in a shell (which must stay open while it runs).
pub struct Process {
    client: WinrmClient,
    shell_id: String,
    command_id: String,
    done: Option<i64>,
}

impl Process {
    pub fn command_id(&self) -> &str {
        &self.command_id
    }

    /// The exit code, once a receive saw the process end.
    pub fn exit_code(&self) -> Option<i64> {
        self.done
    }

    /// Writes to the process's stdin, which stays open for more, in as many Send envelopes as
    /// MaxEnvelopeSize needs.
    pub async fn send(&mut self, data: &[u8]) -> Result<(), WinrmError> {
        self.write_stdin(data, false).await
    }

    /// Writes the last of the process's stdin and closes it (its end of file).
    pub async fn send_last(&mut self, data: &[u8]) -> Result<(), WinrmError> {
        self.write_stdin(data, true).await
    }

    async fn write_stdin(&mut self, data: &[u8], end: bool) -> Result<(), WinrmError> {
        let c = &self.client;
        // What fits in one envelope after base64 growth, less room for the header.
        let room = (c.inner.cfg.max_envelope_size as usize)
            .saturating_sub(4096)
            .max(4096);
        let chunk = (room / 4) * 3;
        let mut chunks: Vec<&[u8]> = data.chunks(chunk).collect();
        if chunks.is_empty() {
            chunks.push(&[]);
        }
        let last = chunks.len() - 1;
        for (i, part) in chunks.into_iter().enumerate() {
            let body = format!(
                r#"<rsp:Send><rsp:Stream Name="stdin" CommandId="{}"{}>{}</rsp:Stream></rsp:Send>"#,
                esc(&self.command_id),
                if end && i == last {
                    r#" End="true""#
                } else {
                    ""
                },
                base64::engine::general_purpose::STANDARD.encode(part)
            );
            c.call(soap::ACTION_SEND, Some(&self.shell_id), &[], &body)
                .await?;
        }
        Ok(())
    }

    /// One Receive: what the process wrote since the last one (empty when OperationTimeout
    /// passed with nothing new), and its exit code once it ended.
    pub async fn receive(&mut self) -> Result<ReceiveChunk, WinrmError> {
        if let Some(code) = self.done {
            return Ok(ReceiveChunk {
                exit_code: Some(code),
                ..ReceiveChunk::default()
            });
        }
        let receive = format!(
            r#"<rsp:Receive><rsp:DesiredStream CommandId="{}">stdout stderr</rsp:DesiredStream></rsp:Receive>"#,
            esc(&self.command_id)
        );
        let reply = self
            .client
            .call(
                soap::ACTION_RECEIVE,
                Some(&self.shell_id),
                &[("WSMAN_CMDSHELL_OPTION_KEEPALIVE", "TRUE")],
                &receive,
            )
            .await;
        match reply {
            Ok(env) => {
                let chunk = parse_receive(&env.body, &self.command_id)?;
                self.done = chunk.exit_code;
                Ok(chunk)
            }
            // Nothing to say within OperationTimeout: the normal idle path.
            Err(WinrmError::OperationTimeout(_)) => Ok(ReceiveChunk::default()),
            Err(e) => Err(e),
        }
    }

    /// Collects output until the process ends.
    pub async fn wait(&mut self) -> Result<CommandOutput, WinrmError> {
        let mut out = CommandOutput {
            stdout: Vec::new(),
            stderr: Vec::new(),
            exit_code: 0,
        };
        loop {
            let chunk = self.receive().await?;
            out.stdout.extend(chunk.stdout);
            out.stderr.extend(chunk.stderr);
            if let Some(code) = chunk.exit_code {
                out.exit_code = code;
                return Ok(out);
            }
        }
    }

    /// Ends the process (or releases it after it ended, so the host frees it); the host's
    /// answer does not matter.
    pub async fn terminate(self) {
        let signal = format!(
            r#"<rsp:Signal CommandId="{}"><rsp:Code>{}</rsp:Code></rsp:Signal>"#,
            esc(&self.command_id),
            soap::SIGNAL_TERMINATE
        );
        if let Err(e) = self
            .client
            .call(soap::ACTION_SIGNAL, Some(&self.shell_id), &[], &signal)
            .await
        {
            tracing::debug!(error = %e, "signal to end the command was refused");
        }
    }
}

impl Shell {
    /// Deletes the shell on the host.
    pub async fn close(mut self) -> Result<(), WinrmError> {
        self.closed = true;
        self.client
            .call(soap::ACTION_DELETE, Some(&self.id), &[], "")
            .await
            .map(|_| ())
    }
}

impl Drop for Shell {
    /// A shell dropped without `close` (an error, a cancelled caller) is deleted in the
    /// background: left behind, it would hold one of the user's MaxShellsPerUser for hours.
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let client = self.client.clone();
        let id = std::mem::take(&mut self.id);
        rt.spawn(async move {
            if let Err(e) = client.call(soap::ACTION_DELETE, Some(&id), &[], "").await {
                tracing::debug!(error = %e, shell = %id, "deleting an abandoned shell failed");
            }
        });
    }
}
