//! What the directory decides before Exchange is asked, and whether the directory shows
//! afterwards what Exchange said it did (the table: docs/decisions.md, "What the directory
//! decides before Exchange is asked").

pub(super) mod mover;

use crate::directory::{Account, AccountState, RecipientType};
use crate::event::{Event, EventKind, MailboxType, Rename};
use crate::exchange::{AccountData, Seen};
use crate::job::{ErrorClass, JobEffect};

/// What the directory check decided for one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Run the template against the domain controller that answered.
    Run,
    /// Already true: succeeded without touching Exchange.
    Done(JobEffect),
    /// The event is stale (a leaver whose account is enabled again).
    Cancel(String),
    /// Joiner not synced to the cloud yet.
    WaitForSync(String),
    Fail(ErrorClass, String),
}

/// What a job asks of the mailbox: a joiner its type, where it routes and whether an
/// archive; a leaver what `[leaver]` says.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Wanted<'a> {
    pub remote_routing_address: Option<&'a str>,
    /// `mailbox.archive`: the mailbox has a cloud archive too.
    pub archive: bool,
    /// `mailbox.type`: the kind of remote mailbox a joiner asks for.
    pub kind: MailboxType,
    /// A leaver: convert a user mailbox to shared (`leaver.action = "shared"`).
    pub to_shared: bool,
    /// A leaver's mailbox converted to shared stays in the address lists.
    pub keep_visible: bool,
    /// A joiner whose start date is ahead: its mailbox hidden from the address lists.
    pub hidden: bool,
    /// The step of a start date (`JobStep::MakeVisible`): the mailbox is hidden because
    /// mailboxd hid it until that day, not because the person left.
    pub scheduled: bool,
    /// A mover's new values (its remote routing address is `remote_routing_address`).
    pub rename: Option<&'a Rename>,
}

impl<'a> Wanted<'a> {
    /// What `event`, and the template data built from it, ask for.
    pub(crate) fn of(event: &'a Event, data: &'a AccountData) -> Wanted<'a> {
        Wanted {
            remote_routing_address: data.remote_routing_address.as_deref(),
            archive: data.archive,
            kind: event.mailbox.as_ref().map(|m| m.kind).unwrap_or_default(),
            to_shared: data.to_shared,
            keep_visible: data.keep_visible,
            hidden: data.hidden,
            scheduled: false,
            rename: event.rename.as_ref(),
        }
    }
}

/// The type of a remote mailbox as AD shows it; `None` for a remote type mailboxd does not
/// manage (a team mailbox, say).
fn remote_type(a: &Account) -> Option<MailboxType> {
    a.recipient_type_details
        .and_then(MailboxType::from_type_details)
}

/// Decides from what the domain controller shows whether Exchange needs to be asked.
pub(crate) fn plan(
    kind: EventKind,
    sam: &str,
    state: &AccountState,
    wanted: Wanted<'_>,
    require_cloud_sync: bool,
) -> Plan {
    let dc = &state.domain_controller;
    match (kind, &state.account) {
        (EventKind::Joiner, None) => Plan::Fail(
            ErrorClass::Transient,
            format!(
                "account {sam:?} is not on domain controller {dc} yet (replication lag, or it was never created); retried"
            ),
        ),
        (EventKind::Leaver, None) => Plan::Done(JobEffect::Gone),
        (EventKind::Joiner, Some(a)) => joiner(a, sam, dc, wanted, require_cloud_sync),
        (EventKind::Leaver, Some(a)) => leaver(a, sam, dc, wanted),
        (EventKind::Mover, a) => mover::plan(a.as_ref(), sam, dc, wanted),
    }
}

/// A joiner: enable a remote mailbox unless the account has one or is another recipient.
/// A start date's step only makes visible the remote mailbox its joiner created.
fn joiner(a: &Account, sam: &str, dc: &str, wanted: Wanted<'_>, require_cloud_sync: bool) -> Plan {
    if wanted.scheduled && a.recipient != RecipientType::RemoteMailbox {
        return Plan::Fail(
            ErrorClass::Permanent,
            format!(
                "account {sam:?} has no remote mailbox on {dc} any more (msExchRecipientTypeDetails={}), though its joiner created one hidden until the start date: someone removed or changed it; send the joiner again (or retry the joiner's job) to create it, or leave it if that was meant",
                a.recipient_type_details.unwrap_or_default()
            ),
        );
    }
    match a.recipient {
        RecipientType::RemoteMailbox => remote_mailbox_joiner(a, sam, dc, wanted),
        RecipientType::OnPremMailbox => Plan::Fail(
            ErrorClass::Permanent,
            format!(
                "account {sam:?} has an on-premises mailbox (msExchRecipientTypeDetails={}); migrate it to Exchange Online instead of enabling a remote mailbox",
                a.recipient_type_details.unwrap_or_default()
            ),
        ),
        RecipientType::Other => Plan::Fail(
            ErrorClass::Permanent,
            format!(
                "account {sam:?} is already a mail recipient of another type (msExchRecipientTypeDetails={}); an Exchange administrator must decide",
                a.recipient_type_details.unwrap_or_default()
            ),
        ),
        RecipientType::None | RecipientType::MailUser if require_cloud_sync && !a.cloud_synced => {
            Plan::WaitForSync(format!(
                "account {sam:?} is not synced to the cloud yet (sync rule on {dc}); waiting for Entra Connect"
            ))
        }
        RecipientType::None | RecipientType::MailUser => Plan::Run,
    }
}

/// A joiner whose account has a remote mailbox already: done, a rehire to unhide, a type
/// to convert, an archive still to enable, a stale event, or a conflict when it is routed
/// elsewhere or is a resource the event does not ask for.
fn remote_mailbox_joiner(a: &Account, sam: &str, dc: &str, wanted: Wanted<'_>) -> Plan {
    let current = a.target_address.as_deref().map(|t| {
        t.strip_prefix("SMTP:")
            .or(t.strip_prefix("smtp:"))
            .unwrap_or(t)
    });
    if let (Some(cur), Some(want)) = (current, wanted.remote_routing_address)
        && !cur.eq_ignore_ascii_case(want)
    {
        return Plan::Fail(
            ErrorClass::Permanent,
            format!(
                "account {sam:?} already has a remote mailbox routed to {cur}, not {want}; fix the targetAddress in Exchange or the event"
            ),
        );
    }
    match remote_type(a) {
        // Hidden and disabled: the leaver came after this person's joiner; never unhide
        // it. (A shared or resource mailbox's account is disabled as a rule.) Not when a
        // start date hid it: a starter's account is often disabled until the first day, and
        // any later event of the account supersedes the step.
        _ if wanted.kind == MailboxType::User
            && a.hidden
            && a.disabled
            && !wanted.hidden
            && !wanted.scheduled =>
        {
            Plan::Cancel(format!(
                "account {sam:?} is disabled and hidden on {dc}: the joiner is stale (a rehire must be enabled in AD first)"
            ))
        }
        // A migrated user mailbox hidden by the leaver: it may have been purged in the
        // cloud, and then no licence brings it back (see `migrated_rehire`).
        Some(MailboxType::User) if wanted.kind == MailboxType::User && a.hidden && migrated(a) => {
            Plan::Fail(ErrorClass::Permanent, migrated_rehire(sam, a))
        }
        None => Plan::Fail(
            ErrorClass::Permanent,
            format!(
                "account {sam:?} has a remote mailbox of a type mailboxd does not manage (msExchRecipientTypeDetails={}); an Exchange administrator must decide",
                a.recipient_type_details.unwrap_or_default()
            ),
        ),
        Some(current) if current != wanted.kind && current.is_resource() => Plan::Fail(
            ErrorClass::Permanent,
            resource_conflict(sam, current, wanted.kind),
        ),
        // Another type (a leaver's converted to shared, most often): the template converts
        // it with Set-RemoteMailbox -Type, which documents every conversion between them.
        Some(current) if current != wanted.kind => Plan::Run,
        // Hidden: a rehire (or a start date's day come); the template makes it visible
        // again. Visible while a start date is ahead: the template hides it.
        Some(_) if a.hidden != wanted.hidden => Plan::Run,
        // The mailbox is there, its archive not: the template's second call adds it.
        Some(_) if wanted.archive && a.archive_guid.is_none() => Plan::Run,
        Some(_) => Plan::Done(JobEffect::Already),
    }
}

/// msExchRemoteRecipientType's Migrated flag (RemoteRecipientType.Migrated, 4: the
/// member order of learn.microsoft.com ff443320(v=exchg.150); the values 4, 6, 20 and 100
/// practitioners list for moved mailboxes, docs/decisions.md).
const REMOTE_MIGRATED: i64 = 0x4;

/// The account's remote mailbox was moved from on premises to Exchange Online.
fn migrated(a: &Account) -> bool {
    a.remote_recipient_type
        .is_some_and(|v| v & REMOTE_MIGRATED != 0)
}

/// Why a rehire of a migrated user mailbox stops before Exchange. Microsoft's Ben Winzenz
/// (TechNet, 2018-09-18, "Dude - why isn't a mailbox being provisioned/created in Exchange
/// Online after licensing?"): a migrated mailbox left unlicensed is disconnected and, after
/// 30 days, purged; licensing the user again then provisions no mailbox, because
/// msExchRemoteRecipientType says Migrated. Tim McMichael (TechNet, 2018-04-29): with the
/// on-premises ExchangeGuid synced, Exchange Online assumes the mailbox is to be migrated
/// again. Unhiding it (what a rehire otherwise does) would report success for a mailbox
/// that may not exist; whether it still does, only Exchange Online knows.
fn migrated_rehire(sam: &str, a: &Account) -> String {
    format!(
        "account {sam:?} is a rehire whose user mailbox was migrated to Exchange Online (msExchRemoteRecipientType={} has the Migrated flag, 4) and is hidden since the person left. If its Exchange Online licence was removed more than 30 days ago, Exchange Online has purged the mailbox, and licensing the user again creates no new one: AD says the mailbox was migrated and its synced ExchangeGuid makes Exchange Online expect a mailbox move (Microsoft TechNet, benw 2018-09-18 \"Dude - why isn't a mailbox being provisioned/created in Exchange Online after licensing?\"). mailboxd stopped before calling Exchange. What to do: look the user up in Exchange Online (Get-Mailbox). If the mailbox is there, license the user again and unhide it on premises (Set-RemoteMailbox <account> -HiddenFromAddressListsEnabled $false); a retry of this job then finds it done. If it is gone, apply the fix that post gives for a migrated user who gets no mailbox, then retry this job",
        a.remote_recipient_type.unwrap_or_default()
    )
}

/// Why a joiner fails on a room or equipment mailbox it does not ask for, and what to do:
/// a resource carries its booking set-up, so converting it away is a person's decision.
fn resource_conflict(sam: &str, current: MailboxType, wanted: MailboxType) -> String {
    format!(
        "account {sam:?} has a {} ({}), not the {wanted} mailbox the event asks for; mailboxd does not convert a resource. If it really should be a {wanted} mailbox, run Set-RemoteMailbox <account> -Type {} on premises (and Set-Mailbox -Type {} in Exchange Online if the mailbox was migrated), then retry the job; otherwise correct the event's mailbox.type",
        current.recipient_type_details(),
        current,
        wanted.exchange_type(),
        wanted.exchange_type(),
    )
}

/// What the template will find of the account, as AD shows it now: the path it takes, and
/// so the cmdlets its batch reserves from Exchange's budget (`Template::expected_cmdlets`).
pub(crate) fn seen(a: &Account, wanted: Wanted<'_>) -> Seen {
    let remote_mailbox = a.recipient == RecipientType::RemoteMailbox;
    // The mover's second Set-RemoteMailbox: no address policy adds the new routing address
    // to the proxy addresses (PowerShell compares without case, as here).
    let adds_routing_address = wanted.rename.is_some()
        && !a.address_policy_enabled
        && wanted.remote_routing_address.is_some_and(|r| {
            mover::differs(mover::routing(a), Some(r))
                && !a.proxy_addresses.iter().any(|p| {
                    p.split_once(':').is_some_and(|(scheme, addr)| {
                        scheme.eq_ignore_ascii_case("smtp") && addr.eq_ignore_ascii_case(r)
                    })
                })
        });
    Seen {
        remote_mailbox,
        hidden: remote_mailbox && a.hidden,
        other_type: remote_mailbox && remote_type(a).is_some_and(|t| t != wanted.kind),
        archive: a.archive_guid.is_some(),
        adds_routing_address,
    }
}

/// What a leaver still has to do to a remote mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LeaverSteps {
    /// Convert the user mailbox to shared.
    pub to_shared: bool,
    /// Hide it from the address lists.
    pub hide: bool,
}

/// The steps `[leaver]` asks for that AD does not show done yet. Only a user mailbox is
/// converted; a shared one may stay visible when configured; a room or equipment mailbox
/// (or a type mailboxd does not manage) is only ever hidden, as under `hide`. The leaver
/// template decides the same from Get-RemoteMailbox.
pub(crate) fn leaver_steps(a: &Account, wanted: Wanted<'_>) -> LeaverSteps {
    let current = remote_type(a);
    let person_or_shared = matches!(current, Some(MailboxType::User | MailboxType::Shared));
    let keep_visible = wanted.keep_visible && person_or_shared;
    LeaverSteps {
        to_shared: wanted.to_shared && current == Some(MailboxType::User),
        hide: !keep_visible && !a.hidden,
    }
}

/// A leaver: hide (or convert to shared) the remote mailbox, unless the account is enabled
/// again (stale) or has nothing left to do.
fn leaver(a: &Account, sam: &str, dc: &str, wanted: Wanted<'_>) -> Plan {
    let steps = leaver_steps(a, wanted);
    if !a.disabled {
        Plan::Cancel(format!(
            "account {sam:?} is enabled again on {dc} (userAccountControl {}): the leaver is stale and was not applied",
            a.user_account_control
        ))
    } else if a.recipient != RecipientType::RemoteMailbox {
        Plan::Done(JobEffect::NotRemote)
    } else if !steps.to_shared && !steps.hide {
        Plan::Done(JobEffect::Already)
    } else {
        Plan::Run
    }
}

/// Whether the account now shows what Exchange said it did: for a joiner a visible remote
/// mailbox of the type asked for, and its archive (msExchArchiveGUID) when one was asked
/// for; for a leaver nothing left of what `[leaver]` asks.
pub(super) fn verified(
    kind: EventKind,
    status: JobEffect,
    after: &AccountState,
    wanted: Wanted<'_>,
) -> Result<(), String> {
    let Some(a) = &after.account else {
        return Err(format!(
            "the account is no longer on {} after Exchange reported {status:?}",
            after.domain_controller,
            status = status.as_str()
        ));
    };
    let remote = a.recipient == RecipientType::RemoteMailbox;
    // A joiner's mailbox as asked: in the address lists, or hidden until its start date.
    let mailbox = remote && a.hidden == wanted.hidden;
    if kind == EventKind::Joiner && mailbox && wanted.archive && a.archive_guid.is_none() {
        return Err(format!(
            "Exchange reported {status:?} but {} shows no archive (msExchArchiveGUID is not set); retried",
            after.domain_controller,
            status = status.as_str()
        ));
    }
    let current = remote_type(a);
    let ok = match (kind, status) {
        (EventKind::Joiner, _) => mailbox && current == Some(wanted.kind),
        (EventKind::Leaver, JobEffect::NotRemote) => !remote,
        (EventKind::Leaver, JobEffect::Shared) if current != Some(MailboxType::Shared) => false,
        (EventKind::Leaver, _) => remote && leaver_steps(a, wanted) == LeaverSteps::DONE,
        // The worker asks `mover::verified`, which compares with the read before.
        (EventKind::Mover, _) => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "Exchange reported {status:?} but {} shows recipient type {:?} ({}), hidden {}; retried",
            after.domain_controller,
            a.recipient,
            current.map_or(
                "a type mailboxd does not manage",
                MailboxType::recipient_type_details
            ),
            a.hidden,
            status = status.as_str()
        ))
    }
}

impl LeaverSteps {
    /// Nothing left to do.
    const DONE: LeaverSteps = LeaverSteps {
        to_shared: false,
        hide: false,
    };
}

#[cfg(test)]
mod tests;
