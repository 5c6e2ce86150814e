# mailboxd common prelude: prepended to every template. Output helpers and the Exchange
# session (design section 5). Every value comes from $Data, never from this text.
param([Parameter(Mandatory = $true)] $Data)

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
            Add-PSSnapin -Name 'Microsoft.Exchange.Management.PowerShell.RecipientManagement'
        }
        'remote' {
            $credential = $null
            if ($null -ne $Session.credential) {
                $secure = ConvertTo-SecureString -String ([string]$Session.credential.password) -AsPlainText -Force
                $credential = [System.Management.Automation.PSCredential]::new([string]$Session.credential.username, $secure)
            }
            $failures = @()
            foreach ($uri in $Session.connection_uris) {
                try {
                    $options = @{
                        ConfigurationName = 'Microsoft.Exchange'
                        ConnectionUri     = [string]$uri
                        Authentication    = 'Kerberos'
                    }
                    if ($null -ne $credential) { $options.Credential = $credential }
                    $opened = New-PSSession @options
                    $commands = 'Enable-RemoteMailbox', 'Set-RemoteMailbox', 'Get-RemoteMailbox', 'Set-ADServerSettings'
                    Import-PSSession -Session $opened -CommandName $commands -DisableNameChecking -AllowClobber | Out-Null
                    break
                } catch {
                    $failures += ('{0}: {1}' -f $uri, $_.Exception.Message)
                    $opened = $null
                }
            }
            if ($null -eq $opened) {
                throw ('no Exchange server could be reached: ' + ($failures -join '; '))
            }
        }
        default { throw ('unknown Exchange session mode: ' + [string]$Session.mode) }
    }
    if ($Session.view_entire_forest) { Set-ADServerSettings -ViewEntireForest $true }
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
    } catch {
        $failure = Get-MailboxdError -ErrorRecord $_
        $failure.scope = 'session'
        $failure.status = 'error'
        Write-MailboxdResult -Result $failure
        return
    }
    try {
        foreach ($account in $Accounts) {
            $common = @{ Identity = [string]$account.identity }
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
        if ($null -ne $opened -and -not $Session.warm) { Remove-PSSession -Session $opened }
    }
}
