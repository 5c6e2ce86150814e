# mailboxd template: enable-remote-mailbox (joiner). Follows common.ps1.
# Exchange has no "already enabled" no-op: Enable-RemoteMailbox on a remote mailbox fails with
# RecipientTaskException, so that error is checked with Get-RemoteMailbox. A remote mailbox
# hidden from the address lists is a rehire: the joiner makes it visible again, unless the
# joiner's start date is still ahead (hidden): then the mailbox is hidden right after it is
# enabled (Set-RemoteMailbox -HiddenFromAddressListsEnabled, learn.microsoft.com/powershell/
# module/exchange/set-remotemailbox), or stays hidden, until mailboxd's scheduled step runs
# this template with make_visible on that day: Get-RemoteMailbox, then Set-RemoteMailbox
# -HiddenFromAddressListsEnabled $false, no Enable-RemoteMailbox.
# mailbox_type picks Enable-RemoteMailbox's parameter set: Default (a person's), or the
# -Shared, -Room or -Equipment switch, each a set of its own (learn.microsoft.com/powershell/
# module/exchange/enable-remotemailbox); the
# switch is looked up in a constant table, never taken from the data as text. A remote mailbox
# of another type is converted with Set-RemoteMailbox -Type (its documented values: Regular,
# Room, Equipment, Shared), most often a leaver's converted to shared and hired again; a room
# or equipment mailbox is never converted away: it is left for a human, with what to do.
# -Archive is a parameter set of its own, without -RemoteRoutingAddress: the archive is a
# second call once the mailbox exists, made only when it has no archive yet.
Invoke-MailboxdBatch -Session $Data.session -Accounts $Data.accounts -Action {
    param($account, $common)
    # -Type's value for each RecipientTypeDetails of a remote mailbox.
    $typeOf = @{
        RemoteUserMailbox      = 'Regular'
        RemoteSharedMailbox    = 'Shared'
        RemoteRoomMailbox      = 'Room'
        RemoteEquipmentMailbox = 'Equipment'
    }
    # Enable-RemoteMailbox's switch for each type ('Regular': none, the Default set).
    $switchOf = @{ Shared = 'Shared'; Room = 'Room'; Equipment = 'Equipment' }
    $wanted = 'Regular'
    if ($account.mailbox_type) { $wanted = [string]$account.mailbox_type }
    if ($wanted -ne 'Regular' -and -not $switchOf.ContainsKey($wanted)) {
        return @{ status = 'error'; category = 'InvalidArgument'; reason = 'UnknownMailboxType'; message = 'unknown mailbox_type' }
    }
    $enable = $common.Clone()
    $enable.RemoteRoutingAddress = [string]$account.remote_routing_address
    if ($account.alias) { $enable.Alias = [string]$account.alias }
    if ($account.primary_smtp_address) { $enable.PrimarySmtpAddress = [string]$account.primary_smtp_address }
    if ($wanted -ne 'Regular') { $enable[$switchOf[$wanted]] = $true }
    if ($account.make_visible -eq $true) {
        # The start date's step: the mailbox exists, hidden since the joiner; show it.
        $existing = Get-RemoteMailbox @common
        if (-not $existing.HiddenFromAddressListsEnabled) { return @{ status = 'already' } }
        Set-RemoteMailbox @common -HiddenFromAddressListsEnabled $false
        return @{ status = 'unhidden' }
    }
    $hidden = $account.hidden -eq $true
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
        $current = $typeOf[$kind]
        if ($current -ne $wanted) {
            if ($null -eq $current -or $current -in @('Room', 'Equipment')) {
                return @{
                    status   = 'error'
                    category = 'InvalidType'
                    reason   = 'ResourceMailbox'
                    message  = ('the account is a {0}, not the {1} mailbox the event asks for' -f $kind, $wanted)
                }
            }
            $convert = $common.Clone()
            $convert.Type = $wanted
            Set-RemoteMailbox @convert
            $result.status = 'converted'
        }
        if ($existing.HiddenFromAddressListsEnabled -and -not $hidden) {
            Set-RemoteMailbox @common -HiddenFromAddressListsEnabled $false
            if ($result.status -eq 'already') { $result.status = 'unhidden' }
        }
    }
    if ($hidden -and -not ($null -ne $existing -and $existing.HiddenFromAddressListsEnabled)) {
        Set-RemoteMailbox @common -HiddenFromAddressListsEnabled $true
        if ($result.status -eq 'already') { $result.status = 'hidden' }
    }
    if ($account.archive -eq $true) {
        $hasArchive = $null -ne $existing -and
            [string]$existing.ArchiveGuid -notin @('', '00000000-0000-0000-0000-000000000000')
        if (-not $hasArchive) { Enable-RemoteMailbox @common -Archive | Out-Null }
    }
    return $result
}
