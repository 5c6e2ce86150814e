# mailboxd template: rename-remote-mailbox (mover). Follows common.ps1.
# A rename or a change of address of a remote mailbox: a new alias, UPN and/or primary SMTP
# address. Get-RemoteMailbox first: the account must be a remote mailbox, and its
# EmailAddressPolicyEnabled decides how the primary address changes (learn.microsoft.com/
# powershell/module/exchangepowershell/set-remotemailbox, -Alias, -PrimarySmtpAddress,
# -EmailAddresses):
# - policy enabled: -Alias (and -UserPrincipalName) only; Exchange applies the policy on the
#   change, computes the new primary, and keeps the old one as a secondary smtp: address
#   (policies only add addresses). -PrimarySmtpAddress is never sent then: on a recipient
#   under a policy it turns the policy off for good (msxfaq.de, "PrimarySMTPAdress und
#   Recipientpolicies"), which is the owner's decision, not a rename's.
# - policy disabled: -PrimarySmtpAddress sets the new primary; Exchange keeps the old one as
#   a secondary proxy address.
# The remote routing address follows the new alias in the tenant's domain
# (-RemoteRoutingAddress, built by mailboxd from [windows] remote_routing_domain). With the
# policy disabled nothing adds it to the proxy addresses, so a second call adds it
# (-EmailAddresses @{Add=...}; "You can't use the EmailAddresses parameter and the
# PrimarySmtpAddress parameter in the same command", the same page).
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
    $policy = $existing.EmailAddressPolicyEnabled -eq $true
    $set = $common.Clone()
    if ($account.alias -and [string]$existing.Alias -cne [string]$account.alias) {
        $set.Alias = [string]$account.alias
    }
    if ($account.user_principal_name -and [string]$existing.UserPrincipalName -ne [string]$account.user_principal_name) {
        $set.UserPrincipalName = [string]$account.user_principal_name
    }
    $routing = [string]$account.remote_routing_address
    $currentRouting = ([string]$existing.RemoteRoutingAddress) -replace '^smtp:', ''
    $newRouting = $routing -and $currentRouting -ne $routing
    if ($newRouting) { $set.RemoteRoutingAddress = $routing }
    if (-not $policy -and $account.primary_smtp_address -and
        [string]$existing.PrimarySmtpAddress -ne [string]$account.primary_smtp_address) {
        $set.PrimarySmtpAddress = [string]$account.primary_smtp_address
    }
    if ($set.Count -eq $common.Count) { return @{ status = 'already' } }
    Set-RemoteMailbox @set
    if (-not $policy -and $newRouting) {
        $known = @($existing.EmailAddresses | ForEach-Object { ([string]$_) -replace '^smtp:', '' })
        if ($known -notcontains $routing) {
            Set-RemoteMailbox @common -EmailAddresses @{ Add = ('smtp:' + $routing) }
        }
    }
    return @{ status = 'renamed' }
}
