//! The PowerShell mailboxd runs on the Windows host, and the contract with it: the fixed
//! bootstrap, the templates, the stdin payload and the `MAILBOXD-RESULT` lines that come back
//! (docs/security.md, "Injection: no event value ever becomes code"). The daemon writes this
//! contract and the lab reads it, so it is its own crate.
//!
//! Values never go into script text: the command line is a constant (the bootstrap,
//! base64 of UTF-16LE, with `-EncodedCommand`), and everything else goes on the process's
//! stdin: first the Exchange password on a line of its own ([`secret_line`]), then one JSON
//! document (a warm process: one per line). The password is kept out of the JSON because
//! the host's module logging records `ConvertFrom-Json`'s input.

mod cmdlets;
mod result;

pub use cmdlets::{LEAST_CMDLETS_PER_ACCOUNT, MAX_CMDLETS_PER_ACCOUNT, Seen, session_cmdlets};
pub use result::{ResultLine, ResultScope, ResultStatus};

use base64::Engine;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const BOOTSTRAP: &str = include_str!("../bootstrap.ps1");
/// The warm-session bootstrap: request after request on stdin, one process.
pub const SERVE: &str = include_str!("../serve.ps1");
const COMMON: &str = include_str!("../common.ps1");
const ENABLE: &str = include_str!("../enable-remote-mailbox.ps1");
const HIDE: &str = include_str!("../hide-remote-mailbox.ps1");
const RENAME: &str = include_str!("../rename-remote-mailbox.ps1");

/// Ends the output of one request in a warm process (`MAILBOXD-DONE <id>`).
pub const DONE_MARKER: &str = "MAILBOXD-DONE ";
/// Marks a result line on stdout; anything else is transcript.
pub const RESULT_MARKER: &str = "MAILBOXD-RESULT ";
/// The bootstrap's last word when the template itself could not run.
pub const FATAL_MARKER: &str = "MAILBOXD-FATAL ";

pub const POWERSHELL: &str = "powershell.exe";

/// How the host's PowerShell reaches the Exchange recipient cmdlets (`exchange.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExchangeMode {
    /// `New-PSSession -ConfigurationName Microsoft.Exchange` to the connection URIs.
    Remote,
    /// The Exchange Management Tools' snap-in in the WinRS process itself.
    Snapin,
    /// The cmdlets are already there (a host whose profile loads them).
    None,
}

/// What a batch does: one template each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Template {
    EnableRemoteMailbox,
    HideRemoteMailbox,
    /// A mover: a new alias, UPN or primary SMTP address (`Set-RemoteMailbox`).
    RenameRemoteMailbox,
}

impl Template {
    pub const ALL: [Template; 3] = [
        Template::EnableRemoteMailbox,
        Template::HideRemoteMailbox,
        Template::RenameRemoteMailbox,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Template::EnableRemoteMailbox => "enable-remote-mailbox",
            Template::HideRemoteMailbox => "hide-remote-mailbox",
            Template::RenameRemoteMailbox => "rename-remote-mailbox",
        }
    }

    /// The full script sent on stdin: the common prelude, then the template.
    pub fn script(self) -> String {
        let body = match self {
            Template::EnableRemoteMailbox => ENABLE,
            Template::HideRemoteMailbox => HIDE,
            Template::RenameRemoteMailbox => RENAME,
        };
        format!("{COMMON}\n{body}")
    }
}

/// The arguments after `powershell.exe`: constant for every batch.
pub fn command_arguments() -> Vec<String> {
    arguments_for(BOOTSTRAP)
}

/// The arguments that start a warm process (constant too).
pub fn serve_arguments() -> Vec<String> {
    arguments_for(SERVE)
}

fn arguments_for(bootstrap: &str) -> Vec<String> {
    let utf16: Vec<u8> = bootstrap
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    let encoded = base64::engine::general_purpose::STANDARD.encode(utf16);
    [
        "-NoLogo",
        "-NoProfile",
        "-NonInteractive",
        "-ExecutionPolicy",
        "Bypass",
        "-EncodedCommand",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain(std::iter::once(encoded))
    .collect()
}

/// How the template opens its Exchange session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionData {
    pub mode: ExchangeMode,
    pub connection_uris: Vec<String>,
    pub view_entire_forest: bool,
    /// Keep the session open for the next request (a warm process).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub warm: bool,
    /// Explicit Exchange credential (remote mode only): its user name here, its password
    /// on stdin's first line ([`secret_line`]), over the encrypted WinRM channel; never on a
    /// command line, never on disk, never through a cmdlet's parameters on the host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<CredentialData>,
    /// Thumbprint (40 hex digits, checked at start) of a code-signing certificate in the
    /// account's `Cert:\CurrentUser\My`: Import-PSSession -Certificate signs its temporary
    /// module, which an AllSigned execution policy requires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_certificate: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CredentialData {
    pub username: String,
}

/// Why a password cannot travel as stdin's first line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretLineError {
    #[error(
        "the Exchange password contains a line break, which cannot travel as one line on stdin: choose a password without CR or LF"
    )]
    LineBreak,
}

/// Stdin's first line for the bootstrap and serve.ps1: the Exchange password and CRLF (an
/// empty line when there is none). The host reads it with `ReadLine` and builds a
/// SecureString from it with method calls, which PowerShell's logging does not record.
pub fn secret_line(password: Option<&str>) -> Result<Vec<u8>, SecretLineError> {
    let password = password.unwrap_or("");
    if password.contains(['\r', '\n']) {
        return Err(SecretLineError::LineBreak);
    }
    let mut line = Vec::with_capacity(password.len() + 2);
    line.extend_from_slice(password.as_bytes());
    line.extend_from_slice(b"\r\n");
    Ok(line)
}

/// Splits stdin into its first line (the password, `None` when empty) and the rest, as the
/// bootstrap's `ReadLine` does (LF or CRLF ends the line). What the lab reads.
pub fn split_secret_line(stdin: &[u8]) -> (Option<String>, &[u8]) {
    let (line, rest) = match stdin.iter().position(|&b| b == b'\n') {
        Some(at) => (&stdin[..at], &stdin[at + 1..]),
        None => (stdin, &stdin[stdin.len()..]),
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let secret = String::from_utf8_lossy(line).into_owned();
    ((!secret.is_empty()).then_some(secret), rest)
}

/// One account in a batch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct AccountData {
    pub job_id: Uuid,
    /// `-Identity`: the objectGUID when known (unambiguous), else the sAMAccountName.
    pub identity: String,
    pub sam_account_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_controller: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_routing_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_smtp_address: Option<String>,
    /// A mover: the new `-UserPrincipalName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_principal_name: Option<String>,
    /// `-Archive`: enable the cloud archive too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub archive: bool,
    /// A joiner: the type of remote mailbox (Enable-RemoteMailbox's parameter set, and
    /// what an existing one is converted to).
    #[serde(default, skip_serializing_if = "RemoteMailboxType::is_regular")]
    pub mailbox_type: RemoteMailboxType,
    /// A leaver: convert a user mailbox to shared (`Set-RemoteMailbox -Type Shared`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub to_shared: bool,
    /// A leaver converted to shared: leave it in the address lists.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_visible: bool,
    /// A joiner whose start date is still ahead: the mailbox is hidden from the address
    /// lists (`Set-RemoteMailbox -HiddenFromAddressListsEnabled $true` right after it is
    /// enabled) until the step that makes it visible.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hidden: bool,
    /// A start date's step: the mailbox the joiner created hidden exists; only make it
    /// visible (`Get-RemoteMailbox`, then `Set-RemoteMailbox -HiddenFromAddressListsEnabled
    /// $false` if it is hidden), without calling Enable-RemoteMailbox again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub make_visible: bool,
}

/// A remote mailbox's type as `Set-RemoteMailbox -Type` names it
/// (ConvertibleRemoteMailboxSubType: Regular, Room, Equipment, Shared); the template maps
/// it to Enable-RemoteMailbox's switch through a constant table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum RemoteMailboxType {
    /// A person's mailbox: Enable-RemoteMailbox's Default parameter set.
    #[default]
    Regular,
    /// `-Shared`.
    Shared,
    /// `-Room`.
    Room,
    /// `-Equipment`.
    Equipment,
}

impl RemoteMailboxType {
    pub fn is_regular(&self) -> bool {
        *self == RemoteMailboxType::Regular
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchData {
    pub session: SessionData,
    pub accounts: Vec<AccountData>,
}

/// One line on a warm process's stdin: a request id and the same document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WarmRequest {
    pub id: String,
    #[serde(flatten)]
    pub payload: Payload,
}

/// The document on stdin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Payload {
    pub template: Template,
    pub script: String,
    pub data: BatchData,
}

impl Payload {
    pub fn new(template: Template, data: BatchData) -> Payload {
        Payload {
            template,
            script: template.script(),
            data,
        }
    }
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising plain strings and numbers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The parsed stdout of one run: result lines, a fatal message if any, and the rest. A
/// result line whose status or scope is not one the templates write is malformed: read
/// here once, the statuses are enums everywhere after.
#[derive(Debug, Default)]
pub struct ParsedOutput {
    pub results: Vec<ResultLine>,
    pub fatal: Option<String>,
    pub other: Vec<String>,
    pub malformed: Vec<String>,
}

impl ParsedOutput {
    /// Appends the output of a later run (a warm batch's second try) as if it had
    /// followed on the same stdout: its result lines after these, its fatal line (if any)
    /// the one that counts.
    pub fn extend(&mut self, later: ParsedOutput) {
        self.results.extend(later.results);
        self.fatal = later.fatal.or(self.fatal.take());
        self.other.extend(later.other);
        self.malformed.extend(later.malformed);
    }

    /// Each job's last result line: a later line (a second run's) replaces an earlier one.
    pub fn last_results(&self) -> std::collections::HashMap<&str, &ResultLine> {
        self.results
            .iter()
            .filter_map(|r| r.job_id.as_deref().map(|id| (id, r)))
            .collect()
    }
}

pub fn parse_stdout(stdout: &str) -> ParsedOutput {
    let mut out = ParsedOutput::default();
    for line in stdout.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(json) = line.strip_prefix(RESULT_MARKER) {
            match serde_json::from_str::<ResultLine>(json) {
                Ok(r) => out.results.push(r),
                Err(_) => out.malformed.push(line.to_owned()),
            }
        } else if line.starts_with(DONE_MARKER) {
            // The end of a warm request: framing, not output.
        } else if let Some(msg) = line.strip_prefix(FATAL_MARKER) {
            out.fatal = Some(msg.to_owned());
        } else if !line.trim().is_empty() {
            out.other.push(line.to_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_line_round_trips_and_refuses_line_breaks() {
        let mut stdin = secret_line(Some("pä ss")).unwrap();
        stdin.extend_from_slice(b"{\"a\":1}");
        let (secret, rest) = split_secret_line(&stdin);
        assert_eq!(secret.as_deref(), Some("pä ss"));
        assert_eq!(rest, b"{\"a\":1}");
        let empty = secret_line(None).unwrap();
        assert_eq!(empty, b"\r\n");
        assert_eq!(split_secret_line(&empty).0, None);
        assert_eq!(secret_line(Some("a\nb")), Err(SecretLineError::LineBreak));
    }

    #[test]
    fn a_status_the_templates_never_write_is_a_malformed_line() {
        let p = parse_stdout("MAILBOXD-RESULT {\"job_id\":\"a\",\"status\":\"Enabled\"}\n");
        assert!(p.results.is_empty());
        assert_eq!(p.malformed.len(), 1);
    }

    #[test]
    fn result_lines_are_separated_from_noise() {
        let stdout = "WARNING: something\r\nMAILBOXD-RESULT {\"job_id\":\"a\",\"status\":\"enabled\"}\r\nMAILBOXD-RESULT {broken\r\n\r\nMAILBOXD-FATAL boom\r\n";
        let p = parse_stdout(stdout);
        assert_eq!(p.results.len(), 1);
        assert_eq!(p.results[0].status, ResultStatus::Enabled);
        assert_eq!(p.malformed.len(), 1);
        assert_eq!(p.fatal.as_deref(), Some("boom"));
        assert_eq!(p.other, vec!["WARNING: something".to_owned()]);
    }
}
