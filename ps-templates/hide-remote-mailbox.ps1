# mailboxd template: hide-remote-mailbox (leaver). Follows common.ps1.
# Hides the remote mailbox from the address lists; never disables or removes it
# (Disable-RemoteMailbox would delete the cloud mailbox).
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
    if ($existing.HiddenFromAddressListsEnabled) {
        return @{ status = 'already' }
    }
    Set-RemoteMailbox @common -HiddenFromAddressListsEnabled $true
    return @{ status = 'hidden' }
}
