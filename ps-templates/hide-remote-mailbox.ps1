# mailboxd template: hide-remote-mailbox (leaver). Follows common.ps1.
# Hides the remote mailbox from the address lists; never disables or removes it
# (Disable-RemoteMailbox would delete the cloud mailbox). Under leaver.action = "shared"
# (to_shared) a user mailbox is converted to shared on premises, Set-RemoteMailbox -Type
# Shared, so the change syncs and Exchange Online keeps the mailbox once unlicensed
# (KB 2710029); keep_visible leaves it in the address lists. A room or equipment mailbox is
# never converted, only hidden. One Set-RemoteMailbox call does both (-Type and
# -HiddenFromAddressListsEnabled are in its one parameter set).
Invoke-MailboxdBatch -Session $Data.session -Accounts $Data.accounts -Action {
    param($account, $common)
    try {
        $existing = Get-RemoteMailbox @common
    } catch {
        $lookupError = $_
        if ([string]$lookupError.CategoryInfo.Reason -ne 'ManagementObjectNotFoundException') { throw $lookupError }
        $failure = Get-MailboxdError -ErrorRecord $lookupError
        $failure.status = 'not_remote'
        return $failure
    }
    $kind = [string]$existing.RecipientTypeDetails
    $set = $common.Clone()
    $status = 'already'
    if ($account.to_shared -eq $true -and $kind -eq 'RemoteUserMailbox') {
        $set.Type = 'Shared'
        $status = 'shared'
    }
    $keepVisible = $account.keep_visible -eq $true -and $kind -in @('RemoteUserMailbox', 'RemoteSharedMailbox')
    if (-not $keepVisible -and -not $existing.HiddenFromAddressListsEnabled) {
        $set.HiddenFromAddressListsEnabled = $true
        if ($status -eq 'already') { $status = 'hidden' }
    }
    if ($status -ne 'already') { Set-RemoteMailbox @set }
    return @{ status = $status }
}
