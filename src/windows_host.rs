//! What a refusal from the Windows host means and what to do about it, in words: the second
//! hop (docs/operations.md, "The second hop") and the host's PowerShell policy (an AllSigned
//! execution policy, Constrained Language Mode, no Exchange cmdlets). Shared by start-up
//! validation, `mailboxd check` and the classification of a session that will not open.
//!
//! Recognition uses what is not localized: error codes, error ids, exception type names.

/// Why the host's PowerShell could not reach Exchange, when it is the host's set-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostProblem {
    /// New-PSSession without -Credential from a logon with no network credentials
    /// (Kerberos 0x8009030e, ERROR_NO_SUCH_LOGON_SESSION).
    SecondHopExchange,
    /// The snap-in's directory access from such a logon: an anonymous LDAP bind (000004DC).
    SecondHopDirectory,
    /// Import-PSSession's temporary module refused: an AllSigned (or Restricted) execution
    /// policy from Group Policy, which `-ExecutionPolicy Bypass` cannot override.
    ExecutionPolicy,
    /// PowerShell runs in Constrained Language Mode (WDAC/AppLocker).
    ConstrainedLanguage,
    /// No Exchange cmdlets in the process: `exchange.mode = "none"` on a fresh powershell.exe.
    NoExchangeCmdlets,
    /// New-PSSession refused with "Access is denied." (`AccessDenied,PSSessionOpenFailed`):
    /// the explicit Exchange credential's password, or the account's remote PowerShell right.
    ExchangeCredentialRefused,
    /// Kerberos to the connection URI's name failed with SEC_E_WRONG_PRINCIPAL (0x80090322):
    /// a load-balanced name, an alias or an IP, whose SPN the answering server does not hold.
    WrongPrincipal,
}

/// Why a Basic WinRM logon cannot answer the second hop (learn.microsoft.com/windows/win32/
/// winrm/connectionoptions-username; PSWSMan's about_PSWSManAuthentication matrix).
pub(crate) const BASIC_IS_LOCAL: &str = "winrm.auth = \"basic\" logs on a local account of the Windows host: WinRM accepts Basic for local accounts only (\"You can supply UserName and Password for a domain account when using negotiate or Kerberos authentication, or for a local account with Basic authentication\", Microsoft's WinRM ConnectionOptions documentation), and a local account has no domain identity to authenticate onwards to Exchange or a domain controller.";

/// Why Kerberos delegation cannot answer remote mode's second hop
/// (https://learn.microsoft.com/powershell/scripting/security/remoting/ps-remoting-second-hop;
/// no public refusal text exists).
pub(crate) const DELEGATION_IS_NOT_WINRM: &str = "exchange.second_hop = \"delegation\" cannot work in remote mode: the hop from the Windows host to Exchange's /PowerShell is WinRM, and Microsoft lists classic and resource-based constrained delegation (and unconstrained) as \"Doesn't support the second hop for WinRM\" (\"Making the second hop in PowerShell Remoting\"). Delegation works for snapin mode, whose onward hop is LDAP to the domain controllers; in remote mode use an explicit Exchange credential or CredSSP.";

/// The double hop and its three remedies, as start-up and `check` explain it.
pub(crate) const SECOND_HOP_REMEDIES: &str = "WinRM logs mailboxd on to the Windows host with NTLM, Kerberos or Basic (a local account), which proves who it is but leaves the host no credentials to use onwards; the PowerShell process there then cannot authenticate to Exchange or to a domain controller (the double hop). Remedies: (1) an explicit Exchange credential: set exchange.username and exchange.password_file (New-PSSession -Credential; remote mode only); (2) snapin mode only (its onward hop is LDAP; constrained delegation does not carry WinRM's second hop to Exchange): Kerberos constrained delegation configured in AD for the host to the domain controllers, e.g. Set-ADComputer DC1 -PrincipalsAllowedToDelegateToAccount (Get-ADComputer IQSVC01) for each DC, then set exchange.second_hop = \"delegation\" and winrm.auth = \"kerberos\"; (3) CredSSP: Enable-WSManCredSSP -Role Server on the host, winrm.auth = \"credssp\", exchange.second_hop = \"credssp\". See docs/operations.md, \"The second hop\".";

impl HostProblem {
    /// Recognises a host problem in a session failure's text (message and error id).
    pub fn recognise(text: &str) -> Option<HostProblem> {
        let has = |needle: &str| text.contains(needle);
        if has("AccessDenied,PSSessionOpenFailed") {
            Some(HostProblem::ExchangeCredentialRefused)
        } else if has("0x80090322") || has("-2146893022,") {
            Some(HostProblem::WrongPrincipal)
        } else if has("0x8009030e") || has("1312,PSSessionOpenFailed") {
            Some(HostProblem::SecondHopExchange)
        } else if has("000004DC") {
            Some(HostProblem::SecondHopDirectory)
        } else if has("PropertySetterNotSupportedInConstrainedLanguage")
            || has("MethodInvocationNotSupportedInConstrainedLanguage")
            || has("supported only on core types in this language mode")
        {
            // The exception message is the only thing the FATAL line carries; it is English
            // on an English host, hence the error ids too where they are present.
            Some(HostProblem::ConstrainedLanguage)
        } else if has("(UnauthorizedAccess)") || has("PSSecurityException") {
            Some(HostProblem::ExecutionPolicy)
        } else if has("CommandNotFoundException") {
            Some(HostProblem::NoExchangeCmdlets)
        } else {
            None
        }
    }

    /// `message` led by what it means and what to do, when it is the host's set-up.
    pub(crate) fn explained(message: &str) -> Option<String> {
        HostProblem::recognise(message).map(|p| format!("{} — {message}", p.explain()))
    }

    /// What it means and what to do, for an operator.
    pub(crate) fn explain(self) -> String {
        match self {
            HostProblem::SecondHopExchange => format!(
                "the second hop failed: New-PSSession to Exchange ran without a credential from a logon that has none to pass on (Kerberos 0x8009030e). {SECOND_HOP_REMEDIES}"
            ),
            HostProblem::SecondHopDirectory => format!(
                "the second hop failed: the Exchange snap-in reached the domain controller anonymously (LDAP 000004DC, a successful bind is required). {SECOND_HOP_REMEDIES}"
            ),
            HostProblem::ExecutionPolicy => "the host's execution policy (AllSigned or Restricted, set by Group Policy, which -ExecutionPolicy Bypass cannot override) refuses Import-PSSession's temporary module, whose files are unsigned. Check with Get-ExecutionPolicy -List on the host; exempt the service account or host from that policy (RemoteSigned is enough); or sign the module: set exchange.signing_certificate_thumbprint to a code-signing certificate the host trusts (in the service account's Cert:\\CurrentUser\\My), which mailboxd passes to Import-PSSession -Certificate; or use exchange.mode = \"snapin\", which imports no module.".into(),
            HostProblem::ConstrainedLanguage => "PowerShell on the host runs in Constrained Language Mode (WDAC or AppLocker): mailboxd's bootstrap reads stdin and runs its template with .NET calls that mode forbids. Check $ExecutionContext.SessionState.LanguageMode in a session as the service account; allow mailboxd's host or account in the WDAC/AppLocker policy, or run it on a host without that policy.".into(),
            HostProblem::ExchangeCredentialRefused => "Exchange refused the session's credential (Access is denied): check exchange.username and the password in exchange.password_file, that the account is not locked out, and that it may use remote PowerShell (Get-User <account> | Format-List RemotePowerShellEnabled). mailboxd does not retry it faster than worker.credential_probe_interval, since each try counts toward AD's account lockout.".into(),
            HostProblem::WrongPrincipal => "Kerberos to Exchange failed with SEC_E_WRONG_PRINCIPAL (0x80090322, \"An unknown security error occurred.\"): the name in exchange.connection_uris is not one whose HTTP/ SPN the answering server holds — typically a load-balanced namespace, a DNS alias or an IP address. Use each server's FQDN in exchange.connection_uris (mailboxd tries them in turn), or configure an alternate service account for the load-balanced namespace (learn.microsoft.com, \"Configure Kerberos authentication for load-balanced Client Access services\").".into(),
            HostProblem::NoExchangeCmdlets => "the PowerShell process has no Exchange cmdlets: a fresh powershell.exe -NoProfile loads none. Set exchange.mode = \"remote\" (with exchange.connection_uris) or \"snapin\" (Exchange Management Tools installed on the host).".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_refusals_are_named() {
        let kerberos = "ex01: [ex01] Connecting to remote server ex01 failed with the following error message : WinRM cannot process the request. The following error with errorcode 0x8009030e occurred while using Kerberos authentication: A specified logon session does not exist. (1312,PSSessionOpenFailed)";
        assert_eq!(
            HostProblem::recognise(kerberos),
            Some(HostProblem::SecondHopExchange)
        );
        assert_eq!(
            HostProblem::recognise(
                "Cannot set property. Property setting is supported only on core types in this language mode."
            ),
            Some(HostProblem::ConstrainedLanguage)
        );
        assert_eq!(
            HostProblem::recognise("The WinRM client cannot process the request."),
            None
        );
        assert!(
            HostProblem::SecondHopExchange
                .explain()
                .contains("exchange.username")
        );
    }
}
