//! Opening the Exchange session as common.ps1 does, on a host that behaves like Windows
//! (docs/operations.md, "The second hop" and "Sessions that do not leak"): the process's
//! logon decides whether the second hop works, Group Policy's execution policy and the
//! language mode decide whether the bootstrap and Import-PSSession may run, and a session
//! nobody removed keeps counting against PowerShellMaxConcurrency until its idle timeout.
//!
//! Error texts are Windows' own, from published transcripts; where a text was composed
//! from parts or inferred, the constant says so.

use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use super::{LabState, Run, SharedState, error};
use ps_templates::{ExchangeMode, Payload, ResultLine, ResultStatus, SessionData};

/// How the Windows host itself is set up, beyond WinRM.
#[derive(Debug, Clone, Copy)]
pub struct HostPolicy {
    /// An AllSigned execution policy set by Group Policy, which `-ExecutionPolicy Bypass`
    /// cannot override: the bootstrap (a command, not a file) runs, Import-PSSession's
    /// unsigned temporary module does not.
    pub all_signed: bool,
    /// Constrained Language Mode (WDAC/AppLocker): no method calls or property setters on
    /// non-core types, so the bootstrap's first line is refused.
    pub constrained_language: bool,
    /// How long Exchange keeps a session nobody removed (New-PSSessionOption -IdleTimeout,
    /// as the server grants it).
    pub session_idle_timeout: Duration,
    /// The WinRM account is in neither "Recipient Management EMT" (the group
    /// `Add-PermissionForEMT.ps1` creates) nor Domain Admins. The Management Tools without a
    /// server have no RBAC: in `snapin` mode their writes run with the account's own AD
    /// rights, so every write is refused (reads still work).
    pub emt_missing: bool,
    /// The connection URIs name a load-balanced namespace whose `HTTP/` SPN is not on the
    /// server that answers (no alternate service account): Kerberos to it fails.
    pub load_balanced_without_asa: bool,
}

/// The code-signing certificate the lab host holds in the service account's
/// `Cert:\CurrentUser\My` and trusts as a publisher (a made-up thumbprint: the lab signs nothing).
pub const LAB_SIGNING_THUMBPRINT: &str = "6A1F0C3B9E2D4A5B8C7D6E5F4A3B2C1D0E9F8A7B";

/// The IdleTimeout common.ps1 asks for (New-PSSessionOption -IdleTimeout, milliseconds).
pub const TEMPLATE_IDLE_TIMEOUT_MS: u64 = 900_000;

impl Default for HostPolicy {
    fn default() -> Self {
        HostPolicy {
            all_signed: false,
            constrained_language: false,
            session_idle_timeout: Duration::from_millis(TEMPLATE_IDLE_TIMEOUT_MS),
            emt_missing: false,
            load_balanced_without_asa: false,
        }
    }
}

/// The exception message of the bootstrap's first line under Constrained Language Mode
/// (`[Console]::OutputEncoding = …`; verbatim, wslutilities/wslu#297).
pub const CLM_PROPERTY_SETTER: &str =
    "Cannot set property. Property setting is supported only on core types in this language mode.";

/// What a logon without network credentials gets from New-PSSession -Authentication
/// Kerberos (verbatim body: PowerShell/Win32-OpenSSH#2100 and microsoft/diskspd#171; the
/// tail from the Negotiate variant, Yowko's blog).
fn second_hop_refusal(host: &str) -> String {
    kerberos_refusal(
        host,
        "0x8009030e",
        "A specified logon session does not exist. It may already have been terminated.",
    )
}

/// Kerberos to a name whose SPN the answering server does not hold (a load-balanced
/// namespace without an alternate service account): SEC_E_WRONG_PRINCIPAL. The errorcode
/// and its text verbatim from serverfault q/580411 (the same WinRM message body);
/// learn.microsoft.com "Configure Kerberos authentication for load-balanced Client Access
/// services" is why.
fn wrong_principal(host: &str) -> String {
    kerberos_refusal(host, "0x80090322", "An unknown security error occurred.")
}

/// Its FullyQualifiedErrorId: the HRESULT as PowerShell prints it (-2146893022 =
/// 0x80090322) — medium confidence, no New-PSSession transcript with the id was found.
const WRONG_PRINCIPAL_ERROR_ID: &str = "-2146893022,PSSessionOpenFailed";

/// WinRM's Kerberos refusal as New-PSSession reports it.
fn kerberos_refusal(host: &str, code: &str, text: &str) -> String {
    format!(
        "[{host}] Connecting to remote server {host} failed with the following error message : WinRM cannot process the request. The following error with errorcode {code} occurred while using Kerberos authentication: {text}\r\n Possible causes are:\r\n  -The user name or password specified are invalid.\r\n  -Kerberos is used when no authentication method and no user name are specified.\r\n  -Kerberos accepts domain user names, but not local user names.\r\n  -The Service Principal Name (SPN) for the remote computer name and port does not exist.\r\n  -The client and remote computers are in different domains and there is no trust between the two domains.\r\n After checking for the above issues, try the following:\r\n  -Check the Event Viewer for events related to authentication.\r\n  -Change the authentication method; add the destination computer to the WinRM TrustedHosts configuration setting or use HTTPS transport.\r\n Note that computers in the TrustedHosts list might not be authenticated.\r\n   -For more information about WinRM configuration, run the following command: winrm help config. For more information, see the about_Remote_Troubleshooting Help topic."
    )
}

/// New-PSSession with a credential Exchange's domain does not accept. The text is the
/// common WinRM "Access is denied." refusal: its prefix seen verbatim for a refused remote
/// logon (irohastack.com, "Enter-PSSession -Credential domain\\user … failed with the following
/// error message : Access is"), the tail as every PSSessionOpenFailed message ends
/// (emtunc.org, a New-PSSession to Exchange). Whether Exchange's /PowerShell answers a wrong
/// password with exactly this (rather than a Kerberos logon error) is not public.
fn access_denied(host: &str) -> String {
    format!(
        "[{host}] Connecting to remote server {host} failed with the following error message : Access is denied. For more information, see the about_Remote_Troubleshooting Help topic."
    )
}

const ACCESS_DENIED_ID: &str = "AccessDenied,PSSessionOpenFailed";

/// Its FullyQualifiedErrorId (1312 = ERROR_NO_SUCH_LOGON_SESSION; seen with the Negotiate
/// wording, the Kerberos one carries the same Win32 error — medium confidence).
const SECOND_HOP_ERROR_ID: &str = "1312,PSSessionOpenFailed";

/// Import-PSSession under an AllSigned policy. COMPOSED: the Import-PSSession docs say the
/// temporary module's unsigned files are refused, and this is PowerShell 5.1's
/// MshSignature_NotSigned text (with 5.1's one-slash `https:/go`) applied to that module;
/// the exact Import-PSSession wording was not found.
fn not_signed(user: &str) -> String {
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let file =
        format!("C:\\Users\\{user}\\AppData\\Local\\Temp\\tmp_{tag}.mbx\\tmp_{tag}.mbx.psm1");
    format!(
        "File {file} cannot be loaded. The file {file} is not digitally signed. You cannot run this script on the current system. For more information about running scripts and setting execution policy, see about_Execution_Policies at https:/go.microsoft.com/fwlink/?LinkID=135170."
    )
}

/// Why the recipient cmdlets cannot work in this process, though the session "opened".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unavailable {
    /// `exchange.mode = "none"`: a fresh `powershell.exe -NoProfile` has no Exchange cmdlets.
    CmdletsMissing,
    /// The snap-in runs as a logon without network credentials: its LDAP bind is anonymous.
    AnonymousDirectory,
}

/// The error the first recipient cmdlet of a run gets when it cannot work.
pub(super) fn unavailable_error(
    why: Unavailable,
    cmdlet: &str,
    task: &str,
    dc: &str,
) -> ResultLine {
    match why {
        // Verbatim, learn.microsoft.com Q&A 1363212.
        Unavailable::CmdletsMissing => ResultLine {
            status: ResultStatus::Error,
            category: Some("ObjectNotFound".into()),
            reason: Some("CommandNotFoundException".into()),
            error_id: Some("CommandNotFoundException".into()),
            message: Some(format!(
                "The term '{cmdlet}' is not recognized as the name of a cmdlet, function, script file, or operable program. Check the spelling of the name, or if a path was included, verify that the path is correct and try again."
            )),
            ..ResultLine::default()
        },
        // INFERRED wrapper: Exchange's ADOperationException form (as in
        // `faults::insufficient_rights_message`) around what an anonymous bind gets — ADSI's
        // "An operations error occurred." and the DC's 000004DC diagnostic, each seen
        // verbatim in its own layer in published transcripts. No transcript of the snap-in
        // itself in this case was found.
        Unavailable::AnonymousDirectory => error(
            "ADOperationException",
            "NotSpecified",
            task,
            "4DC",
            format!(
                "Active Directory operation failed on {dc}. This error is not retriable. Additional information: An operations error occurred.\r\nActive directory response: 000004DC: LdapErr: DSID-0C090A5C, comment: In order to perform this operation a successful bind must be completed on the connection., data 0, v4563"
            ),
        ),
    }
}

/// What ConsoleHost answers a prompt under `-NonInteractive` (verbatim, in many public
/// transcripts).
#[cfg(test)]
pub(super) const NON_INTERACTIVE: &str =
    "Windows PowerShell is in NonInteractive mode. Read and Prompt functionality is not available.";

/// The template's own line for an account it did not run because the session was no longer
/// Opened (common.ps1, `Invoke-MailboxdBatch`): mailboxd's text, no Windows one.
pub(super) fn session_not_opened(state: &str) -> ResultLine {
    ResultLine {
        status: ResultStatus::Error,
        category: Some("InvalidOperation".into()),
        reason: Some("InvalidSessionState".into()),
        error_id: Some("InvalidSessionState".into()),
        message: Some(format!(
            "the Exchange session is {state}: not run, so that no implicit-remoting proxy opens a session by itself; mailboxd runs the account again with a new session"
        )),
        ..ResultLine::default()
    }
}

// What the templates before the session check met after a drop; they no longer call a
// proxy on a session that is not Opened, so only the lab's tests run this.
#[cfg(test)]
impl Run {
    /// What a proxy function made by Import-PSSession does when it is called and its session
    /// is not Opened (PowerShell's ImplicitRemotingCommands.cs, `Get-PSImplicitRemotingSession`):
    /// it writes `Creating a new session for implicit remoting of "<cmdlet>" command...` with
    /// Write-Host and runs New-PSSession again. When the session had an explicit credential
    /// that New-PSSession takes `-Credential ($host.UI.PromptForCredential(…))`
    /// (`CredentialParameterTemplate`), which fails under `-NonInteractive`; without one (a
    /// CredSSP logon's own credentials) the new session opens silently, and nothing removes
    /// it: it counts against PowerShellMaxConcurrency until its idle timeout.
    pub(super) fn reconnect_by_proxy(
        &mut self,
        cmdlet: &str,
        explicit_credential: bool,
    ) -> Result<(), Box<ResultLine>> {
        self.lines.push(format!(
            "Creating a new session for implicit remoting of \"{cmdlet}\" command..."
        ));
        if explicit_credential {
            // COMPOSED: the inner text is verbatim; the wrapper is how PowerShell reports an
            // exception thrown by a .NET method ($host.UI.PromptForCredential) in a script.
            // No transcript of this exact proxy failure was found.
            return Err(Box::new(ResultLine {
                status: ResultStatus::Error,
                category: Some("NotSpecified".into()),
                reason: Some("MethodInvocationException".into()),
                error_id: Some("HostException".into()),
                message: Some(format!(
                    "Exception calling \"PromptForCredential\" with \"4\" argument(s): \"{NON_INTERACTIVE}\""
                )),
                ..ResultLine::default()
            }));
        }
        self.record("New-PSSession", Map::new(), None);
        // Opened by the proxy, removed by nobody: dropped without `remove`, so it idles out.
        let slot = SessionSlot::open(&self.state, &self.user, self.policy.session_idle_timeout);
        slot.map(drop).map_err(|m| {
            Box::new(super::error(
                "PSRemotingTransportException",
                "OpenError",
                "NewPSSession",
                "0",
                m,
            ))
        })
    }
}

/// An Exchange session counted against PowerShellMaxConcurrency: given back when the template
/// removes it, else (the process was killed) only after the idle timeout.
pub(super) struct SessionSlot {
    state: SharedState,
    user: String,
    idle_timeout: Duration,
    removed: bool,
}

impl SessionSlot {
    /// Counts a new session for `user`, or Exchange's throttling refusal.
    fn open(state: &SharedState, user: &str, idle_timeout: Duration) -> Result<Self, String> {
        {
            let mut st = state.lock();
            reap(&mut st);
            st.faults.open_session(user)?;
        }
        Ok(SessionSlot {
            state: state.clone(),
            user: user.to_owned(),
            idle_timeout,
            removed: false,
        })
    }

    /// Remove-PSSession: the session is gone at once.
    pub(super) fn remove(mut self) {
        self.removed = true;
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        let mut st = self.state.lock();
        if self.removed {
            st.faults.close_session(&self.user);
        } else {
            let until = Instant::now() + self.idle_timeout;
            st.orphaned_sessions.push((self.user.clone(), until));
        }
    }
}

/// Gives back the sessions nobody removed whose idle timeout has passed.
pub(crate) fn reap(st: &mut LabState) {
    let now = Instant::now();
    let (expired, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut st.orphaned_sessions)
        .into_iter()
        .partition(|(_, until)| *until <= now);
    st.orphaned_sessions = kept;
    for (user, _) in expired {
        st.faults.close_session(&user);
    }
}

/// The host part of a connection URI (`http://ex01.corp.example/PowerShell/` → `ex01.corp.example`).
fn uri_host(uri: &str) -> &str {
    let rest = uri.split_once("://").map_or(uri, |(_, r)| r);
    rest.split(['/', ':']).next().unwrap_or(rest)
}

/// What common.ps1 throws when no connection URI worked (a thrown string: RuntimeException,
/// its text as the FullyQualifiedErrorId).
fn unreachable(failures: &[String]) -> ResultLine {
    let message = format!(
        "no Exchange server could be reached: {}",
        failures.join("; ")
    );
    ResultLine {
        status: ResultStatus::Error,
        category: Some("OperationStopped".into()),
        reason: Some("RuntimeException".into()),
        error_id: Some(message.clone()),
        message: Some(message),
        ..ResultLine::default()
    }
}

impl Run {
    /// Open-MailboxdExchange, then (for an empty batch) the one-recipient read. A remote
    /// session comes back as the slot the caller removes when the template would.
    pub(super) async fn open_session(
        &mut self,
        payload: &Payload,
    ) -> Result<Option<SessionSlot>, ResultLine> {
        let session = &payload.data.session;
        let slot = match session.mode {
            ExchangeMode::None => {
                self.unavailable = Some(Unavailable::CmdletsMissing);
                None
            }
            ExchangeMode::Snapin => {
                self.snapin().await;
                None
            }
            ExchangeMode::Remote => Some(self.remote(session).await?),
        };
        self.state.lock().stats.exchange_sessions += 1;
        match self.after_open(payload) {
            Ok(()) => Ok(slot),
            Err(failure) => {
                // The template removes the session it opened before it reports the failure.
                if let Some(slot) = slot {
                    self.remove_session(slot);
                }
                Err(*failure)
            }
        }
    }

    /// Set-ADServerSettings when asked for, and an empty batch's one-recipient read.
    fn after_open(&self, payload: &Payload) -> Result<(), Box<ResultLine>> {
        // common.ps1 calls it in remote mode only (the snap-in has no such cmdlet).
        if payload.data.session.view_entire_forest
            && payload.data.session.mode == ExchangeMode::Remote
        {
            let mut p = Map::new();
            p.insert("ViewEntireForest".into(), json!(true));
            self.cmdlet("Set-ADServerSettings", "SetADServerSettings", p, "")?;
        }
        if payload.data.accounts.is_empty() {
            let mut p = Map::new();
            p.insert("ResultSize".into(), json!(1));
            self.cmdlet(
                "Get-RemoteMailbox",
                "GetRemoteMailbox",
                p,
                "dc1.corp.example",
            )?;
        }
        Ok(())
    }

    /// A cmdlet of the session's set-up, recorded; it fails when the cmdlets cannot work.
    pub(super) fn cmdlet(
        &self,
        cmdlet: &str,
        task: &str,
        parameters: Map<String, Value>,
        dc: &str,
    ) -> Result<(), Box<ResultLine>> {
        if self.snapin && cmdlet == "Set-ADServerSettings" {
            // The RecipientManagement snap-in's documented cmdlet list has no
            // Set-ADServerSettings: PowerShell does not know the name.
            let failure = unavailable_error(Unavailable::CmdletsMissing, cmdlet, task, dc);
            self.record(cmdlet, parameters, failure.reason.as_deref());
            return Err(Box::new(failure));
        }
        // Set-ADServerSettings only changes the session's settings: no directory access.
        let why = self
            .unavailable
            .filter(|w| *w == Unavailable::CmdletsMissing || cmdlet != "Set-ADServerSettings");
        let Some(why) = why else {
            self.bind(cmdlet, &parameters)?;
            self.record(cmdlet, parameters, None);
            return Ok(());
        };
        let failure = unavailable_error(why, cmdlet, task, dc);
        self.record(cmdlet, parameters, failure.reason.as_deref());
        Err(Box::new(failure))
    }

    async fn snapin(&mut self) {
        self.snapin = true;
        self.pause_for_session().await;
        let mut p = Map::new();
        p.insert(
            "Name".into(),
            json!("Microsoft.Exchange.Management.PowerShell.RecipientManagement"),
        );
        self.record("Add-PSSnapin", p, None);
        // The snap-in's hop is LDAP to a DC: CredSSP's password or delegated Kerberos reach it.
        if !self.logon.network_credentials && !self.logon.delegated_kerberos {
            self.unavailable = Some(Unavailable::AnonymousDirectory);
        }
    }

    async fn pause_for_session(&self) {
        if !self.latency.session.is_zero() {
            tokio::time::sleep(self.latency.session).await;
        }
    }

    /// New-PSSession and Import-PSSession for each connection URI until one works.
    async fn remote(&mut self, session: &SessionData) -> Result<SessionSlot, ResultLine> {
        let mut failures = Vec::new();
        for uri in &session.connection_uris {
            match self.remote_one(session, uri).await {
                Ok(slot) => return Ok(slot),
                Err(Refusal::Throttled(r)) => return Err(*r),
                Err(Refusal::Failed(f)) => failures.push(f),
            }
        }
        Err(unreachable(&failures))
    }

    async fn remote_one(
        &mut self,
        session: &SessionData,
        uri: &str,
    ) -> Result<SessionSlot, Refusal> {
        let mut p = Map::new();
        p.insert("ConfigurationName".into(), json!("Microsoft.Exchange"));
        p.insert("ConnectionUri".into(), json!(uri));
        p.insert("Authentication".into(), json!("Kerberos"));
        p.insert(
            "SessionOption".into(),
            json!({ "IdleTimeout": TEMPLATE_IDLE_TIMEOUT_MS }),
        );
        if self.policy.load_balanced_without_asa {
            // Kerberos is used with or without -Credential (-Authentication Kerberos).
            self.record("New-PSSession", p, Some("PSRemotingTransportException"));
            let message = wrong_principal(uri_host(uri));
            return Err(Refusal::Failed(format!(
                "{uri}: {message} ({WRONG_PRINCIPAL_ERROR_ID})"
            )));
        }
        if let Some(c) = &session.credential {
            // The credential's user name is recorded (module logging shows a PSCredential by
            // its user name); its password never is.
            p.insert("Credential".into(), json!(c.username));
            if !self.credential_accepted(&c.username) {
                self.record("New-PSSession", p, Some("PSRemotingTransportException"));
                let message = access_denied(uri_host(uri));
                return Err(Refusal::Failed(format!(
                    "{uri}: {message} ({ACCESS_DENIED_ID})"
                )));
            }
        }
        // The second hop: without -Credential, the process authenticates to Exchange as its
        // own logon, which only works when that logon holds network credentials. Kerberos
        // delegation does not carry WinRM's second hop (Microsoft lists it so for every form);
        // what Windows answers then is not public: the lab gives the same no-logon-session
        // refusal as for a logon without delegation.
        if session.credential.is_none() && !self.logon.network_credentials {
            self.record("New-PSSession", p, Some("PSRemotingTransportException"));
            let message = second_hop_refusal(uri_host(uri));
            return Err(Refusal::Failed(format!(
                "{uri}: {message} ({SECOND_HOP_ERROR_ID})"
            )));
        }
        // Counted from the moment it is being opened; a throttling refusal comes back at once.
        let idle = self.policy.session_idle_timeout;
        let slot = match SessionSlot::open(&self.state, &self.user, idle) {
            Ok(slot) => slot,
            Err(message) => {
                self.record("New-PSSession", p, Some("PSRemotingTransportException"));
                return Err(Refusal::Throttled(Box::new(ResultLine {
                    status: ResultStatus::Error,
                    category: Some("OpenError".into()),
                    reason: Some("PSRemotingTransportException".into()),
                    error_id: Some("IncorrectProtocolVersion,PSSessionOpenFailed".into()),
                    message: Some(message),
                    ..ResultLine::default()
                })));
            }
        };
        self.pause_for_session().await;
        self.record("New-PSSession", p, None);
        self.import(session, uri, slot)
    }

    /// Whether the domain accepts the explicit credential: the domain account's name (bare,
    /// `DOMAIN\\user` or `user@domain`) and the password the bootstrap read from stdin.
    fn credential_accepted(&self, username: &str) -> bool {
        use secrecy::ExposeSecret;
        let bare = username
            .rsplit('\\')
            .next()
            .unwrap_or(username)
            .split('@')
            .next()
            .unwrap_or(username);
        let Some(secret) = &self.secret else {
            return false;
        };
        self.domain_accounts.iter().any(|(user, password)| {
            bare.eq_ignore_ascii_case(user) && secret.expose_secret() == password.expose_secret()
        })
    }

    /// Import-PSSession of the names the templates use; on failure the template removes the
    /// session it just opened.
    fn import(
        &self,
        session: &SessionData,
        uri: &str,
        slot: SessionSlot,
    ) -> Result<SessionSlot, Refusal> {
        let mut names = vec![
            "Enable-RemoteMailbox",
            "Set-RemoteMailbox",
            "Get-RemoteMailbox",
        ];
        if session.view_entire_forest {
            names.push("Set-ADServerSettings");
        }
        let mut p = Map::new();
        p.insert("CommandName".into(), json!(names));
        let signed = match session.signing_certificate.as_deref() {
            None => false,
            Some(t) if t.eq_ignore_ascii_case(LAB_SIGNING_THUMBPRINT) => {
                p.insert("Certificate".into(), json!(t));
                true
            }
            Some(other) => {
                // Get-Item on a thumbprint the store does not hold (PowerShell's own text).
                self.record("Get-Item", Map::new(), Some("ItemNotFoundException"));
                self.record("Remove-PSSession", Map::new(), None);
                slot.remove();
                return Err(Refusal::Failed(format!(
                    "{uri}: Cannot find path 'Cert:\\CurrentUser\\My\\{other}' because it does not exist. (PathNotFound,Microsoft.PowerShell.Commands.GetItemCommand)"
                )));
            }
        };
        // A module signed with a certificate whose publisher the host trusts runs under
        // AllSigned (about_Execution_Policies); an unsigned one does not.
        if !self.policy.all_signed || signed {
            self.record("Import-PSSession", p, None);
            return Ok(slot);
        }
        self.record("Import-PSSession", p, Some("PSSecurityException"));
        self.record("Remove-PSSession", Map::new(), None);
        slot.remove();
        let message = not_signed(&self.user);
        Err(Refusal::Failed(format!(
            "{uri}: {message} (UnauthorizedAccess)"
        )))
    }

    /// The session's failure as the template reports it: one `scope: session` line.
    pub(super) fn session_failed(mut self, failure: ResultLine) -> crate::wsman::ProcessOutput {
        let mut r = failure;
        r.scope = Some(ps_templates::ResultScope::Session);
        self.lines.push(r.to_line());
        self.output()
    }

    /// The template's finally (or serve.ps1's end): Remove-PSSession.
    pub(super) fn remove_session(&self, slot: SessionSlot) {
        self.record("Remove-PSSession", Map::new(), None);
        slot.remove();
    }
}

/// Why one connection URI did not give a session.
enum Refusal {
    /// Exchange's throttling: reported as it is, the next URI would be refused the same way.
    Throttled(Box<ResultLine>),
    /// `<uri>: <message> (<error id>)`, as common.ps1 collects it.
    Failed(String),
}

#[cfg(test)]
mod tests {
    use super::super::tests::test_run;
    use super::*;

    /// What the template met before it checked the session: the next account's proxy
    /// prompts for the explicit credential under -NonInteractive and fails.
    #[test]
    fn a_proxy_with_an_explicit_credential_prompts_and_fails_non_interactive() {
        let mut run = test_run(false, HostPolicy::default());
        let e = run
            .reconnect_by_proxy("Enable-RemoteMailbox", true)
            .unwrap_err();
        assert!(e.message.as_deref().unwrap_or("").contains(NON_INTERACTIVE));
        assert_eq!(
            run.lines,
            ["Creating a new session for implicit remoting of \"Enable-RemoteMailbox\" command..."]
        );
    }

    /// …and with CredSSP it opens a session silently, which nobody removes: it still counts
    /// against PowerShellMaxConcurrency after the process ended.
    #[test]
    fn a_proxy_without_a_credential_opens_a_session_nobody_removes() {
        let mut run = test_run(false, HostPolicy::default());
        run.reconnect_by_proxy("Enable-RemoteMailbox", false)
            .expect("opens silently");
        let mut st = run.state.lock();
        reap(&mut st);
        assert_eq!(st.orphaned_sessions.len(), 1, "left to idle out");
        assert_eq!(st.faults.sessions.get("svc"), Some(&1));
    }
}
