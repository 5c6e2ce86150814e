# mailboxd common prelude: prepended to every template. Output helpers and the Exchange
# session. Every value comes from $Data, never from this text.
# $Secret: the Exchange password, read by the bootstrap from stdin's first line (empty
# when there is none); it never passes through a cmdlet, which module logging would record.
param([Parameter(Mandatory = $true)] $Data, [System.Security.SecureString] $Secret)

$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'

function Write-MailboxdResult {
    param([Parameter(Mandatory = $true)] [hashtable] $Result)
    [Console]::Out.WriteLine('MAILBOXD-RESULT ' + (ConvertTo-Json -InputObject $Result -Compress -Depth 4))
}

function Get-MailboxdError {
    param([Parameter(Mandatory = $true)] $ErrorRecord)
    @{
        category = [string]$ErrorRecord.CategoryInfo.Category
        reason   = [string]$ErrorRecord.CategoryInfo.Reason
        error_id = [string]$ErrorRecord.FullyQualifiedErrorId
        message  = [string]$ErrorRecord.Exception.Message
    }
}

function Open-MailboxdExchange {
    param([Parameter(Mandatory = $true)] $Session)
    $opened = $null
    switch ([string]$Session.mode) {
        'none' { }
        'snapin' {
            Add-PSSnapin -Name 'Microsoft.Exchange.Management.PowerShell.RecipientManagement' -ErrorAction Stop
        }
        'remote' {
            $credential = $null
            if ($null -ne $Session.credential) {
                # A constructor, not New-Object: no cmdlet parameter carries the credential.
                $credential = [System.Management.Automation.PSCredential]::new([string]$Session.credential.username, $Secret)
            }
            # Set-ADServerSettings only when used: a least-privilege role may lack it, and
            # importing a name the role lacks fails the whole import.
            $commands = @('Enable-RemoteMailbox', 'Set-RemoteMailbox', 'Get-RemoteMailbox')
            if ($Session.view_entire_forest) { $commands += 'Set-ADServerSettings' }
            # A session nobody removes (a killed process) counts against Exchange's
            # PowerShellMaxConcurrency until it idles out: 15 minutes, not Exchange's default.
            $sessionOption = New-PSSessionOption -IdleTimeout 900000 -ErrorAction Stop
            $failures = @()
            foreach ($uri in $Session.connection_uris) {
                $candidate = $null
                try {
                    $options = @{
                        ConfigurationName = 'Microsoft.Exchange'
                        ConnectionUri     = [string]$uri
                        Authentication    = 'Kerberos'
                        SessionOption     = $sessionOption
                        ErrorAction       = 'Stop'
                    }
                    if ($null -ne $credential) { $options.Credential = $credential }
                    $candidate = New-PSSession @options
                    $import = @{
                        Session             = $candidate
                        CommandName         = $commands
                        DisableNameChecking = $true
                        AllowClobber        = $true
                        ErrorAction         = 'Stop'
                    }
                    # An AllSigned execution policy refuses the unsigned temporary module:
                    # Import-PSSession -Certificate signs it (the thumbprint is 40 hex digits).
                    if ($Session.signing_certificate) {
                        $import.Certificate = Get-Item -LiteralPath ('Cert:\CurrentUser\My\' + [string]$Session.signing_certificate) -ErrorAction Stop
                    }
                    Import-PSSession @import | Out-Null
                    $opened = $candidate
                    break
                } catch {
                    $failures += ('{0}: {1} ({2})' -f $uri, $_.Exception.Message, $_.FullyQualifiedErrorId)
                    # Opened but not imported: remove it, or it counts until its idle timeout.
                    # SilentlyContinue: the failure worth reporting is the one just caught.
                    if ($null -ne $candidate) { Remove-PSSession -Session $candidate -ErrorAction SilentlyContinue }
                }
            }
            if ($null -eq $opened) {
                throw ('no Exchange server could be reached: ' + ($failures -join '; '))
            }
        }
        default { throw ('unknown Exchange session mode: ' + [string]$Session.mode) }
    }
    # Remote mode only: the RecipientManagement snap-in has no Set-ADServerSettings (its
    # documented cmdlet list). There every cmdlet carries -DomainController (the DC the
    # account was found on), which reads and writes that DC's domain.
    if ($Session.view_entire_forest -and [string]$Session.mode -eq 'remote') {
        try {
            Set-ADServerSettings -ViewEntireForest $true -ErrorAction Stop
        } catch {
            if ($null -ne $opened) { Remove-PSSession -Session $opened -ErrorAction SilentlyContinue }
            throw
        }
    }
    return $opened
}

function Invoke-MailboxdBatch {
    param(
        [Parameter(Mandatory = $true)] $Session,
        [Parameter(Mandatory = $true)] [AllowEmptyCollection()] $Accounts,
        [Parameter(Mandatory = $true)] [scriptblock] $Action
    )
    try {
        # A warm process (serve.ps1) keeps its Exchange session for the next request.
        if ($Session.warm -and $global:MailboxdExchangeReady -and
            ($null -eq $global:MailboxdExchange -or $global:MailboxdExchange.State -eq 'Opened')) {
            $opened = $global:MailboxdExchange
        } else {
            $opened = Open-MailboxdExchange -Session $Session
            if ($Session.warm) {
                $global:MailboxdExchange = $opened
                $global:MailboxdExchangeReady = $true
            }
        }
        if (@($Accounts).Count -eq 0) {
            # An empty batch (mailboxd check) reads one recipient: a session that opens but
            # cannot reach the directory (the second hop) fails here, not at a real account.
            Get-RemoteMailbox -ResultSize 1 -ErrorAction Stop | Out-Null
        }
    } catch {
        # A session that opened but cannot serve (the recipient read failed) is removed too.
        if ($null -ne $opened) { Remove-PSSession -Session $opened -ErrorAction SilentlyContinue }
        $global:MailboxdExchange = $null
        $global:MailboxdExchangeReady = $false
        $failure = Get-MailboxdError -ErrorRecord $_
        $failure.scope = 'session'
        $failure.status = 'error'
        Write-MailboxdResult -Result $failure
        return
    }
    try {
        foreach ($account in $Accounts) {
            # Once Exchange dropped the session (Broken), Import-PSSession's proxies would open
            # a new one by themselves: prompting for an explicit credential, which fails under
            # -NonInteractive, or silently with CredSSP, leaving a session nobody removes.
            # The rest of the batch is not run; mailboxd runs it again with a new session.
            if ($null -ne $opened -and $opened.State -ne 'Opened') {
                Write-MailboxdResult -Result @{
                    status   = 'error'
                    category = 'InvalidOperation'
                    reason   = 'InvalidSessionState'
                    error_id = 'InvalidSessionState'
                    message  = ('the Exchange session is {0}: not run, so that no implicit-remoting proxy opens a session by itself; mailboxd runs the account again with a new session' -f $opened.State)
                    job_id   = [string]$account.job_id
                }
                continue
            }
            # ErrorAction with every call: Import-PSSession's proxy functions do not see this
            # script's $ErrorActionPreference.
            $common = @{ Identity = [string]$account.identity; ErrorAction = 'Stop' }
            if ($account.domain_controller) { $common.DomainController = [string]$account.domain_controller }
            try {
                $result = & $Action $account $common
            } catch {
                $result = Get-MailboxdError -ErrorRecord $_
                $result.status = 'error'
            }
            $result.job_id = [string]$account.job_id
            Write-MailboxdResult -Result $result
        }
    } finally {
        # The results are written; a session that will not go idles out on its own.
        if ($null -ne $opened -and -not $Session.warm) { Remove-PSSession -Session $opened -ErrorAction SilentlyContinue }
    }
}
