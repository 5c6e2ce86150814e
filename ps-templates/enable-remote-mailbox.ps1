# mailboxd template: enable-remote-mailbox (joiner). Follows common.ps1.
# Exchange has no "already enabled" no-op: Enable-RemoteMailbox on a remote mailbox fails with
# RecipientTaskException, so that error is checked with Get-RemoteMailbox. A remote mailbox
# hidden from the address lists is a rehire: the joiner makes it visible again.
Invoke-MailboxdBatch -Session $Data.session -Accounts $Data.accounts -Action {
    param($account, $common)
    $enable = $common.Clone()
    $enable.RemoteRoutingAddress = [string]$account.remote_routing_address
    if ($account.alias) { $enable.Alias = [string]$account.alias }
    if ($account.primary_smtp_address) { $enable.PrimarySmtpAddress = [string]$account.primary_smtp_address }
    if ($account.archive -eq $true) { $enable.Archive = $true }
    try {
        Enable-RemoteMailbox @enable | Out-Null
        return @{ status = 'enabled' }
    } catch {
        $enableError = $_
        if ([string]$enableError.CategoryInfo.Reason -ne 'RecipientTaskException') { throw $enableError }
        $existing = $null
        try { $existing = Get-RemoteMailbox @common } catch { $existing = $null }
        if ($null -eq $existing) { throw $enableError }
        if ($existing.HiddenFromAddressListsEnabled) {
            Set-RemoteMailbox @common -HiddenFromAddressListsEnabled $false
            return @{ status = 'unhidden'; remote_routing_address = [string]$existing.RemoteRoutingAddress }
        }
        return @{ status = 'already'; remote_routing_address = [string]$existing.RemoteRoutingAddress }
    }
}
