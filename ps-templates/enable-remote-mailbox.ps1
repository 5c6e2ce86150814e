# mailboxd template: enable-remote-mailbox (joiner). Follows common.ps1.
# Exchange has no "already enabled" no-op: Enable-RemoteMailbox on a remote mailbox fails with
# RecipientTaskException, so that error is checked with Get-RemoteMailbox. A remote mailbox
# hidden from the address lists is a rehire: the joiner makes it visible again. A joiner is a
# person's: a leaver's mailbox converted to shared becomes a user mailbox again (-Type
# Regular); a room or equipment mailbox is not a person's, and is left for a human.
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
        $kind = [string]$existing.RecipientTypeDetails
        if ($kind -in @('RemoteRoomMailbox', 'RemoteEquipmentMailbox')) {
            return @{
                status   = 'error'
                category = 'InvalidType'
                reason   = 'ResourceMailbox'
                message  = ('the account is a {0}, not a person''s mailbox' -f $kind)
            }
        }
        if ($kind -eq 'RemoteSharedMailbox') {
            Set-RemoteMailbox @common -Type Regular
            $result.status = 'converted'
        }
        if ($existing.HiddenFromAddressListsEnabled) {
            Set-RemoteMailbox @common -HiddenFromAddressListsEnabled $false
            if ($result.status -eq 'already') { $result.status = 'unhidden' }
        }
    }
    if ($account.archive -eq $true) {
        $hasArchive = $null -ne $existing -and
            [string]$existing.ArchiveGuid -notin @('', '00000000-0000-0000-0000-000000000000')
        if (-not $hasArchive) { Enable-RemoteMailbox @common -Archive | Out-Null }
    }
    return $result
}
