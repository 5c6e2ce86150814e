# mailboxd template: enable-remote-mailbox (joiner). Follows common.ps1.
# Exchange has no "already enabled" no-op: Enable-RemoteMailbox on a remote mailbox fails with
# RecipientTaskException, so that error is checked with Get-RemoteMailbox. A remote mailbox
# hidden from the address lists is a rehire: the joiner makes it visible again.
# -Archive is a parameter set of its own, without -RemoteRoutingAddress: the archive is a
# second call once the mailbox exists, made only when it has no archive yet.
Invoke-MailboxdBatch -Session $Data.session -Accounts $Data.accounts -Action {
    param($account, $common)
    $enable = $common.Clone()
    $enable.RemoteRoutingAddress = [string]$account.remote_routing_address
    if ($account.alias) { $enable.Alias = [string]$account.alias }
    if ($account.primary_smtp_address) { $enable.PrimarySmtpAddress = [string]$account.primary_smtp_address }
    $existing = $null
    try {
        Enable-RemoteMailbox @enable | Out-Null
        $result = @{ status = 'enabled' }
    } catch {
        $enableError = $_
        if ([string]$enableError.CategoryInfo.Reason -ne 'RecipientTaskException') { throw $enableError }
        try { $existing = Get-RemoteMailbox @common } catch { $existing = $null }
        if ($null -eq $existing) { throw $enableError }
        $result = @{ status = 'already'; remote_routing_address = [string]$existing.RemoteRoutingAddress }
        if ($existing.HiddenFromAddressListsEnabled) {
            Set-RemoteMailbox @common -HiddenFromAddressListsEnabled $false
            $result.status = 'unhidden'
        }
    }
    if ($account.archive -eq $true) {
        $hasArchive = $null -ne $existing -and
            [string]$existing.ArchiveGuid -notin @('', '00000000-0000-0000-0000-000000000000')
        if (-not $hasArchive) { Enable-RemoteMailbox @common -Archive | Out-Null }
    }
    return $result
}
