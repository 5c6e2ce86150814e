//! Emulates what mailboxd's templates do on a real host, against the lab's directory.
//!
//! The lab runs no PowerShell. It recognises the fixed bootstrap and each template by
//! exact content, then performs the template's documented steps on the JSON data it was
//! sent, recording every cmdlet call with the parameter values as received.

use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

mod recipients;
mod rename;
mod session;

use super::cmd;
use super::directory::{LabAccount, Recipient, default_alias};
use super::wsman::{CommandHost, Launch, Logon, ProcessIo, ProcessOutput};
use ps_templates::{
    self as script, AccountData, ExchangeMode, Payload, ResultLine, ResultStatus, Template,
};
pub(crate) use session::reap as reap_orphaned_sessions;
pub use session::{HostPolicy, LAB_SIGNING_THUMBPRINT};
use session::{SessionSlot, Unavailable};

/// Decodes `-EncodedCommand`'s argument (how the lab recognises the bootstrap).
fn decode_encoded_command(arg: &str) -> Option<String> {
    let bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, arg).ok()?;
    if bytes.len() % 2 != 0 {
        return None;
    }
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16(&units).ok()
}

/// Which template a script is, by its exact content: the lab runs only what mailboxd sends.
fn recognise(script: &str) -> Option<Template> {
    Template::ALL.into_iter().find(|t| t.script() == script)
}

/// The lab's Exchange server name, as it appears in error ids.
pub const EXCHANGE_SERVER: &str = "LAB-EX01";

#[derive(Debug, Clone, Serialize)]
pub struct Invocation {
    pub seq: u64,
    pub at: DateTime<Utc>,
    pub user: String,
    pub cmdlet: String,
    pub parameters: Map<String, Value>,
    /// `null` when the cmdlet succeeded; else the exception type.
    pub error: Option<String>,
}

impl Invocation {
    /// The value of parameter `name` (`-Identity` → `"Identity"`), as received.
    pub fn parameter(&self, name: &str) -> Option<&Value> {
        self.parameters.get(name)
    }

    /// A text parameter's value.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.parameter(name).and_then(Value::as_str)
    }

    /// A switch or boolean parameter's value (`-Archive` → `Some(true)`).
    pub fn flag(&self, name: &str) -> Option<bool> {
        self.parameter(name).and_then(Value::as_bool)
    }

    /// The `-Identity` it was given, when it is text.
    pub fn identity(&self) -> Option<&str> {
        self.text("Identity")
    }

    /// Whether the cmdlet succeeded (no exception).
    pub fn succeeded(&self) -> bool {
        self.error.is_none()
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    pub powershell_runs: u64,
    pub exchange_sessions: u64,
    pub accounts_processed: u64,
    pub cmdlets: u64,
    pub rejected_scripts: u64,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    /// Opening the Exchange session (once per PowerShell run).
    pub session: Duration,
    /// Each cmdlet.
    pub cmdlet: Duration,
    /// Each WinRM request (network and WinRM service), charged before it is handled.
    pub round_trip: Duration,
}

/// Shared state: the directory, the invocation log and counters.
#[derive(Default)]
pub struct LabState {
    pub accounts: Vec<LabAccount>,
    pub invocations: Vec<Invocation>,
    pub stats: Stats,
    /// Injected faults and Exchange's throttling counters.
    pub faults: super::faults::Faults,
    /// Every WinRS command line the host was asked to start (Command and Arguments joined),
    /// as a process listing or an event log on the host would show them.
    pub command_lines: Vec<String>,
    /// Exchange sessions no one removed (their process was killed), by user, and when their
    /// idle timeout gives them back to PowerShellMaxConcurrency.
    pub orphaned_sessions: Vec<(String, std::time::Instant)>,
    /// What the host's module logging (event 4103) records of the bootstrap's own cmdlets:
    /// `ConvertFrom-Json`'s pipeline input, the request as the process read it. (The Exchange
    /// cmdlets' parameters are in `invocations`.)
    pub module_log: Vec<String>,
    /// The cloud: Entra sync and Exchange Online over these accounts (`cloud`).
    pub cloud: crate::cloud::Cloud,
    /// The Graph stand-in's tenant, which the cloud feeds (`cloud::publish`).
    pub graph: crate::graph::Tenant,
    /// `accounts` by sAMAccountName, objectGUID and address: kept by whatever changes an
    /// account (`reindex`).
    pub(crate) index: crate::index::AccountIndex,
}

impl LabState {
    /// One Entra sync cycle with Exchange Online's provisioning and the writeback (`cloud`).
    pub fn cloud_sync(&mut self, now: std::time::Instant) {
        crate::cloud::sync_cycle(&mut self.cloud, &mut self.accounts, &self.faults, now);
        // The writeback adds X500 addresses anywhere: index the directory anew.
        self.index = crate::index::AccountIndex::build(&self.accounts);
        self.publish_cloud();
    }

    /// What the cloud shows now, to the Graph stand-in.
    fn publish_cloud(&self) {
        crate::cloud::publish(&self.cloud, &self.accounts, &self.faults, &self.graph);
    }

    /// Changes one account's licence or provisioning error; false if there is no such account.
    pub fn cloud_change(&mut self, c: &crate::cloud::CloudUserChange) -> bool {
        let changed = crate::cloud::change(&mut self.cloud, &self.accounts, c);
        self.publish_cloud();
        changed
    }

    /// The account's user as the cloud shows it.
    pub fn cloud_user(&self, sam: &str) -> Option<crate::cloud::CloudUserView> {
        crate::cloud::view(&self.cloud, &self.accounts, &self.faults, sam)
    }

    /// The account `identity` names, as the domain controller sees it now (an account
    /// still replicating is on no DC yet): by objectGUID or sAMAccountName through the
    /// index, by UPN or DN (rare) with a scan.
    pub fn find(&self, identity: &str) -> Option<usize> {
        let id = identity.trim();
        let hit = match Uuid::parse_str(id.trim_matches(|c| c == '{' || c == '}')) {
            Ok(g) => {
                return self
                    .index
                    .guid(&self.accounts, g)
                    .filter(|i| self.visible(*i));
            }
            Err(_) => {
                let sam = id.rsplit_once('\\').map_or(id, |(_, s)| s);
                self.index.sam(&self.accounts, sam)
            }
        };
        hit.filter(|i| self.visible(*i)).or_else(|| {
            self.accounts
                .iter()
                .position(|a| a.matches(identity) && !self.faults.lagging(&a.sam_account_name))
        })
    }

    /// Whether account `i` is on the domain controllers yet (not still replicating).
    fn visible(&self, i: usize) -> bool {
        !self.faults.lagging(&self.accounts[i].sam_account_name)
    }

    /// Adds accounts to the directory, indexed.
    #[cfg(test)]
    pub(crate) fn add_accounts(&mut self, accounts: impl IntoIterator<Item = LabAccount>) {
        let from = self.accounts.len();
        self.accounts.extend(accounts);
        for i in from..self.accounts.len() {
            self.reindex(i);
        }
    }

    /// Keeps the index true to account `i` after a change to it.
    pub(crate) fn reindex(&mut self, i: usize) {
        self.index.refresh(&self.accounts, i);
    }
}

pub type SharedState = Arc<Mutex<LabState>>;

/// The `CommandHost` behind the lab's WinRM endpoint.
pub struct LabHost {
    pub state: SharedState,
    pub hostname: String,
    pub latency: Latency,
    pub policy: HostPolicy,
    /// The domain accounts (name, password) an explicit Exchange credential may name.
    pub domain_accounts: Vec<(String, SecretString)>,
}

impl CommandHost for LabHost {
    fn launch(&self, logon: &Logon, command: &str, arguments: &[String]) -> Launch {
        let user = logon.user.as_str();
        {
            let mut line = command.to_owned();
            for a in arguments {
                line.push(' ');
                line.push_str(a);
            }
            self.state.lock().command_lines.push(line);
        }
        // WinRS joins Command and Arguments with spaces; so does cmd.exe's parser.
        let mut words: Vec<String> = command.split_whitespace().map(str::to_owned).collect();
        words.extend(
            arguments
                .iter()
                .flat_map(|a| a.split_whitespace().map(str::to_owned)),
        );
        let Some(first) = words.first() else {
            return Launch::Done(cmd::run(&self.hostname, user, command, arguments));
        };
        let exe = first
            .rsplit(['\\', '/'])
            .next()
            .unwrap_or(first)
            .to_ascii_lowercase();
        if exe == "more" || exe == "more.com" {
            // Piped `more` copies its stdin to stdout: the lab's way to move data both ways.
            return Launch::AwaitStdin(Box::new(|stdin| {
                Box::pin(async move {
                    ProcessOutput {
                        stdout: stdin,
                        stderr: Vec::new(),
                        exit_code: 0,
                    }
                })
            }));
        }
        if exe != "powershell" && exe != "powershell.exe" {
            return Launch::Done(cmd::run(&self.hostname, user, command, arguments));
        }
        let encoded = words.windows(2).find_map(|w| {
            let flag = w[0].to_ascii_lowercase();
            let is_enc = flag.len() >= 2
                && (flag == "-e" || flag == "-ec" || "-encodedcommand".starts_with(flag.as_str()))
                && flag.starts_with("-e");
            is_enc.then(|| w[1].clone())
        });
        let decoded = encoded.as_deref().and_then(decode_encoded_command);
        let known = [script::SERVE, script::BOOTSTRAP].contains(&decoded.as_deref().unwrap_or(""));
        if known && self.policy.constrained_language {
            // The bootstrap's first line, inside its try: the catch prints FATAL and exits 3.
            return Launch::AwaitStdin(Box::new(|_| {
                Box::pin(async { fatal(session::CLM_PROPERTY_SETTER) })
            }));
        }
        let host = self.process(logon);
        if decoded.as_deref() == Some(script::SERVE) {
            return Launch::Interactive(Box::new(move |io: ProcessIo| {
                Box::pin(async move { serve(host, io).await })
            }));
        }
        let is_bootstrap = decoded.as_deref() == Some(script::BOOTSTRAP);
        if !is_bootstrap {
            self.state.lock().stats.rejected_scripts += 1;
            return Launch::Done(ProcessOutput {
                stdout: Vec::new(),
                stderr: b"mailboxd lab: this host emulates Exchange for mailboxd's bootstrap and templates only; it cannot run other PowerShell.\r\n".to_vec(),
                exit_code: 1,
            });
        }
        Launch::AwaitStdin(Box::new(move |stdin: Vec<u8>| {
            Box::pin(async move { run_bootstrap(host, &stdin).await })
        }))
    }
}

/// What one PowerShell process knows of its host: the shared state, and how it was logged on.
#[derive(Clone)]
struct Process {
    state: SharedState,
    latency: Latency,
    logon: Logon,
    policy: HostPolicy,
    domain_accounts: Vec<(String, SecretString)>,
    /// The SecureString the bootstrap built from stdin's first line (None: an empty line).
    secret: Option<SecretString>,
}

impl LabHost {
    fn process(&self, logon: &Logon) -> Process {
        Process {
            state: self.state.clone(),
            latency: self.latency,
            logon: logon.clone(),
            policy: self.policy,
            domain_accounts: self.domain_accounts.clone(),
            secret: None,
        }
    }
}

impl Process {
    /// One request's run, its stdout starting with a `stray_output` fault's text if any.
    fn run(&self) -> Run {
        let stray = self.state.lock().faults.stray_output.pop_front();
        Run {
            state: self.state.clone(),
            latency: self.latency,
            user: self.logon.user.clone(),
            logon: self.logon.clone(),
            policy: self.policy,
            domain_accounts: self.domain_accounts.clone(),
            secret: self.secret.clone(),
            unavailable: None,
            snapin: false,
            lines: stray.iter().cloned().collect(),
            stderr: stray.unwrap_or_default(),
        }
    }
}

impl Process {
    /// `ConvertFrom-Json` of one request, as module logging records it (its pipeline input).
    fn convert_from_json(&self, input: &[u8]) {
        let entry = format!(
            "CommandInvocation(ConvertFrom-Json): \"ConvertFrom-Json\"\r\nParameterBinding(ConvertFrom-Json): name=\"InputObject\"; value=\"{}\"",
            String::from_utf8_lossy(input).trim_end()
        );
        self.state.lock().module_log.push(entry);
    }
}

/// What the bootstrap does with its stdin: the password's line, then the request; run the
/// template.
async fn run_bootstrap(mut host: Process, stdin: &[u8]) -> ProcessOutput {
    host.state.lock().stats.powershell_runs += 1;
    let (secret, stdin) = script::split_secret_line(stdin);
    host.secret = secret.map(SecretString::from);
    host.convert_from_json(stdin);
    let payload: Payload = match serde_json::from_slice(stdin) {
        Ok(p) => p,
        Err(e) => return fatal(&format!("Conversion from JSON failed with error: {e}")),
    };
    let Some(template) = recognise(&payload.script) else {
        host.state.lock().stats.rejected_scripts += 1;
        return fatal("mailboxd lab: the script on stdin is not one of mailboxd's templates");
    };
    let mut run = host.run();
    // The session counts against PowerShellMaxConcurrency until the template's finally
    // removes it; a process killed before that leaves it to the idle timeout (the slot's drop).
    let slot = match run.open_session(&payload).await {
        Ok(slot) => slot,
        Err(failure) => return run.session_failed(failure),
    };
    run.accounts(template, &payload).await;
    if let Some(slot) = slot {
        run.remove_session(slot);
    }
    run.output()
}

/// What serve.ps1 does: request after request from stdin, the Exchange session opened by the
/// first and kept, each request's output ending with `MAILBOXD-DONE <id>`. When stdin closes
/// it removes the session; killed (terminated, its shell deleted), it leaves it to the idle
/// timeout.
async fn serve(mut host: Process, mut io: ProcessIo) -> i32 {
    host.state.lock().stats.powershell_runs += 1;
    let mut pending = Vec::new();
    let mut warm = WarmSession::default();
    // serve.ps1 reads the password's line before the first request.
    let mut secret_read = false;
    while let Some(chunk) = io.stdin.recv().await {
        pending.extend(chunk);
        while let Some(pos) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=pos).collect();
            if !secret_read {
                secret_read = true;
                host.secret = script::split_secret_line(&line).0.map(SecretString::from);
                continue;
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let out = serve_one(&host, &line, &mut warm).await;
            io.stdout(&out.stdout);
            if !out.stderr.is_empty() {
                io.stderr(&out.stderr);
            }
        }
    }
    if let Some(slot) = warm.slot.take() {
        // Remove-PSSession is a round trip to Exchange like any cmdlet: a client that kills
        // the process right after closing its input gets there first, and the session stays
        // counted until Exchange's idle timeout (`SessionSlot`'s drop).
        if !host.latency.cmdlet.is_zero() {
            tokio::time::sleep(host.latency.cmdlet).await;
        }
        host.run().remove_session(slot);
    }
    0
}

/// A warm process's Exchange session: opened by the first request that asks for it.
#[derive(Default)]
struct WarmSession {
    opened: bool,
    slot: Option<SessionSlot>,
    /// Why the cmdlets do not work in this process (it stays so with the session).
    unavailable: Option<Unavailable>,
}

async fn serve_one(host: &Process, line: &[u8], warm: &mut WarmSession) -> ProcessOutput {
    let done = |id: &str, mut out: ProcessOutput| {
        out.stdout
            .extend(format!("{}{id}\r\n", script::DONE_MARKER).into_bytes());
        out
    };
    host.convert_from_json(line);
    let request: script::WarmRequest = match serde_json::from_slice(line) {
        Ok(r) => r,
        Err(e) => {
            return done(
                "",
                fatal(&format!("Conversion from JSON failed with error: {e}")),
            );
        }
    };
    let payload = request.payload;
    let Some(template) = recognise(&payload.script) else {
        host.state.lock().stats.rejected_scripts += 1;
        return done(
            &request.id,
            fatal("mailboxd lab: the script on stdin is not one of mailboxd's templates"),
        );
    };
    let mut run = host.run();
    // The template reuses the session while it is open (common.ps1, session.warm).
    if warm.opened && payload.data.session.warm {
        run.unavailable = warm.unavailable;
        run.accounts(template, &payload).await;
        return done(&request.id, run.output());
    }
    let slot = match run.open_session(&payload).await {
        Ok(slot) => slot,
        Err(failure) => return done(&request.id, run.session_failed(failure)),
    };
    run.accounts(template, &payload).await;
    if payload.data.session.warm {
        warm.opened = true;
        warm.slot = slot;
        warm.unavailable = run.unavailable;
    } else if let Some(slot) = slot {
        run.remove_session(slot);
    }
    done(&request.id, run.output())
}

fn fatal(message: &str) -> ProcessOutput {
    ProcessOutput {
        stdout: format!("{}{message}\r\n", script::FATAL_MARKER).into_bytes(),
        stderr: Vec::new(),
        exit_code: 3,
    }
}

struct Run {
    state: SharedState,
    latency: Latency,
    user: String,
    /// How the process was logged on (the second hop).
    logon: Logon,
    policy: HostPolicy,
    /// The domain accounts an explicit Exchange credential may name (user, password).
    domain_accounts: Vec<(String, SecretString)>,
    /// The Exchange password the bootstrap read from stdin's first line.
    secret: Option<SecretString>,
    /// Set when the session opened but the recipient cmdlets cannot work in this process.
    unavailable: Option<Unavailable>,
    /// The cmdlets run in the RecipientManagement snap-in (`exchange.mode = "snapin"`).
    snapin: bool,
    lines: Vec<String>,
    /// What the run prints on stderr (a `stray_output` fault).
    stderr: String,
}

/// An Exchange error as the template's `Get-MailboxdError` reports it.
fn error(reason: &str, category: &str, task: &str, hex: &str, message: String) -> ResultLine {
    ResultLine {
        status: ResultStatus::Error,
        category: Some(category.into()),
        reason: Some(reason.into()),
        error_id: Some(format!(
            "[Server={EXCHANGE_SERVER},RequestId={},TimeStamp={}] [FailureCategory=Cmdlet-{reason}] {hex},Microsoft.Exchange.Management.RecipientTasks.{task}",
            uuid::Uuid::new_v4(),
            Utc::now().format("%-m/%-d/%Y %-I:%M:%S %p")
        )),
        message: Some(message),
        ..ResultLine::default()
    }
}

fn status(s: ResultStatus) -> ResultLine {
    ResultLine::with_status(s)
}

/// The first cmdlet a template runs for `account`, and its Exchange task class.
fn first_cmdlet(template: Template, account: &AccountData) -> (&'static str, &'static str) {
    match template {
        // A start date's step looks the mailbox up first.
        Template::EnableRemoteMailbox if account.make_visible => {
            ("Get-RemoteMailbox", "GetRemoteMailbox")
        }
        Template::EnableRemoteMailbox => ("Enable-RemoteMailbox", "EnableRemoteMailbox"),
        Template::HideRemoteMailbox | Template::RenameRemoteMailbox => {
            ("Get-RemoteMailbox", "GetRemoteMailbox")
        }
    }
}

/// A ParameterBindingException as Windows PowerShell 5.1 reports it: raised by
/// the local proxy, so no routing prefix and no PSComputerName.
fn binding_error(cmdlet: &str, refused: &super::parameter_sets::BindingError) -> ResultLine {
    ResultLine {
        status: ResultStatus::Error,
        category: Some("InvalidArgument".into()),
        reason: Some("ParameterBindingException".into()),
        error_id: Some(format!("{},{cmdlet}", refused.error_id)),
        message: Some(refused.message.clone()),
        ..ResultLine::default()
    }
}

impl Run {
    /// Each account of the request, in its own try/catch as the template does.
    async fn accounts(&mut self, template: Template, payload: &Payload) {
        let remote = payload.data.session.mode == ExchangeMode::Remote;
        self.snapin = payload.data.session.mode == ExchangeMode::Snapin;
        let mut dropped = false;
        // Paced against the request's start, not by a sleep per account: each sleep ends on
        // the timer's next millisecond tick or later, and 100 sleeps of 5 ms took 0.6 s — a
        // cmdlet cost of 6 ms that no Exchange charged, counted against mailboxd in `bench`.
        let started = tokio::time::Instant::now();
        for (n, account) in (1u32..).zip(&payload.data.accounts) {
            if !self.latency.cmdlet.is_zero() {
                tokio::time::sleep_until(started + self.latency.cmdlet * n).await;
            }
            if let Some(why) = self.unavailable {
                let mut r = self.unavailable_cmdlet(why, account, template);
                r.job_id = Some(account.job_id.to_string());
                self.lines.push(r.to_line());
                continue;
            }
            // The template checks the session before each account (common.ps1): once Exchange
            // dropped it, the runspace is Broken and the rest of the batch is not run, so no
            // proxy reconnects by itself (what PowerShell would do: session.rs's
            // `reconnect_by_proxy`).
            if dropped {
                let mut r = session::session_not_opened("Broken");
                r.job_id = Some(account.job_id.to_string());
                self.lines.push(r.to_line());
                continue;
            }
            let injected = {
                let mut st = self.state.lock();
                if remote && st.faults.sessions_to_drop > 0 {
                    st.faults.sessions_to_drop -= 1;
                    dropped = true;
                }
                if dropped {
                    None
                } else {
                    st.faults.next_cmdlet(&self.user)
                }
            };
            let mut result = match (injected, template) {
                _ if dropped => {
                    self.failed_call(account, template, super::faults::session_dropped())
                }
                (Some(fault), t) => self.injected(account, t, &fault),
                (None, Template::EnableRemoteMailbox) => self.enable(account),
                (None, Template::HideRemoteMailbox) => self.hide(account),
                (None, Template::RenameRemoteMailbox) => self.rename(account),
            };
            result.job_id = Some(account.job_id.to_string());
            self.state.lock().stats.accounts_processed += 1;
            self.lines.push(result.to_line());
        }
    }

    fn output(self) -> ProcessOutput {
        let mut stdout = String::new();
        for l in &self.lines {
            stdout.push_str(l);
            stdout.push_str("\r\n");
        }
        let stderr = if self.stderr.is_empty() {
            Vec::new()
        } else {
            format!("{}\r\n", self.stderr).into_bytes()
        };
        ProcessOutput {
            stdout: stdout.into_bytes(),
            stderr,
            exit_code: 0,
        }
    }

    fn record(&self, cmdlet: &str, parameters: Map<String, Value>, error: Option<&str>) {
        let mut st = self.state.lock();
        let seq = st.invocations.len() as u64 + 1;
        st.stats.cmdlets += 1;
        // Exchange counts the cmdlets run in its runspace, each call (not one per account).
        if super::parameter_sets::Cmdlet::find(cmdlet).is_some() {
            st.faults.charge_cmdlet(&self.user);
        }
        st.invocations.push(Invocation {
            seq,
            at: Utc::now(),
            user: self.user.clone(),
            cmdlet: cmdlet.to_owned(),
            parameters,
            error: error.map(str::to_owned),
        });
    }

    /// One cmdlet call through the Exchange session: its named parameters are bound against
    /// the cmdlet's documented parameter sets first, as the implicit-remoting proxy does; a
    /// call that binds is recorded as made, one that does not is recorded with the
    /// ParameterBindingException and returns the error the template would report.
    fn bind(&self, cmdlet: &str, parameters: &Map<String, Value>) -> Result<(), Box<ResultLine>> {
        let Some(spec) = super::parameter_sets::Cmdlet::find(cmdlet) else {
            return Ok(());
        };
        let Err(refused) = spec.bind(parameters) else {
            return Ok(());
        };
        self.record(
            cmdlet,
            parameters.clone(),
            Some("ParameterBindingException"),
        );
        Err(Box::new(binding_error(cmdlet, &refused)))
    }

    /// The first cmdlet of the template, where the cmdlets cannot work (session::Unavailable).
    fn unavailable_cmdlet(
        &self,
        why: Unavailable,
        account: &AccountData,
        template: Template,
    ) -> ResultLine {
        let (cmdlet, task) = first_cmdlet(template, account);
        let dc = account
            .domain_controller
            .as_deref()
            .unwrap_or("dc1.corp.example");
        let r = session::unavailable_error(why, cmdlet, task, dc);
        self.record(cmdlet, Self::common(account), r.reason.as_deref());
        self.state.lock().stats.accounts_processed += 1;
        r
    }
}

#[cfg(test)]
mod tests;
