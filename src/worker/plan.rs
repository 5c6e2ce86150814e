//! What the directory decides before Exchange is asked, and whether the directory shows
//! afterwards what Exchange said it did (the table: docs/decisions.md, "What the directory
//! decides before Exchange is asked").

use crate::directory::{Account, AccountState, RecipientType};
use crate::event::EventKind;
use crate::job::{ErrorClass, JobEffect};

/// msExchRecipientTypeDetails of a remote user mailbox (RemoteUserMailbox, 0x80000000); a
/// remote shared, room or equipment mailbox has its own value.
const REMOTE_USER_MAILBOX: i64 = 2_147_483_648;

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

/// What a joiner asks for besides the mailbox: where it routes, and whether an archive.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Wanted<'a> {
    pub remote_routing_address: Option<&'a str>,
    /// `mailbox.archive`: the mailbox has a cloud archive too.
    pub archive: bool,
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
        (EventKind::Leaver, Some(a)) => leaver(a, sam, dc),
    }
}

/// A joiner: enable a remote mailbox unless the account has one or is another recipient.
fn joiner(a: &Account, sam: &str, dc: &str, wanted: Wanted<'_>, require_cloud_sync: bool) -> Plan {
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

/// A joiner whose account has a remote mailbox already: done, a rehire to unhide, an
/// archive still to enable, a stale event, or a conflict when it is routed elsewhere.
fn remote_mailbox_joiner(a: &Account, sam: &str, dc: &str, wanted: Wanted<'_>) -> Plan {
    let current = a.target_address.as_deref().map(|t| {
        t.strip_prefix("SMTP:")
            .or(t.strip_prefix("smtp:"))
            .unwrap_or(t)
    });
    match (current, wanted.remote_routing_address) {
        (Some(cur), Some(want)) if !cur.eq_ignore_ascii_case(want) => Plan::Fail(
            ErrorClass::Permanent,
            format!(
                "account {sam:?} already has a remote mailbox routed to {cur}, not {want}; fix the targetAddress in Exchange or the event"
            ),
        ),
        // Hidden and disabled: the leaver came after this joiner; never unhide it.
        _ if a.hidden && a.disabled => Plan::Cancel(format!(
            "account {sam:?} is disabled and hidden on {dc}: the joiner is stale (a rehire must be enabled in AD first)"
        )),
        // Hidden: a rehire. The template makes it visible again.
        _ if a.hidden => Plan::Run,
        // A shared, room or equipment remote mailbox (a leaver's converted to shared, most
        // often): not a person's mailbox yet. The template converts a shared one back with
        // -Type Regular and refuses a resource, with what to do.
        _ if a.recipient_type_details != Some(REMOTE_USER_MAILBOX) => Plan::Run,
        // The mailbox is there, its archive not: the template's second call adds it.
        _ if wanted.archive && a.archive_guid.is_none() => Plan::Run,
        _ => Plan::Done(JobEffect::Already),
    }
}

/// A leaver: hide the remote mailbox, unless the account is enabled again (stale) or has
/// nothing to hide.
fn leaver(a: &Account, sam: &str, dc: &str) -> Plan {
    if !a.disabled {
        Plan::Cancel(format!(
            "account {sam:?} is enabled again on {dc} (userAccountControl {}): the leaver is stale and was not applied",
            a.user_account_control
        ))
    } else if a.recipient != RecipientType::RemoteMailbox {
        Plan::Done(JobEffect::NotRemote)
    } else if a.hidden {
        Plan::Done(JobEffect::Already)
    } else {
        Plan::Run
    }
}

/// Whether the account now shows what Exchange said it did: for a joiner a visible remote
/// mailbox, and its archive (msExchArchiveGUID) when one was asked for.
pub(super) fn verified(
    kind: EventKind,
    status: JobEffect,
    after: &AccountState,
    archive: bool,
) -> Result<(), String> {
    let Some(a) = &after.account else {
        return Err(format!(
            "the account is no longer on {} after Exchange reported {status:?}",
            after.domain_controller,
            status = status.as_str()
        ));
    };
    let mailbox = a.recipient == RecipientType::RemoteMailbox && !a.hidden;
    if kind == EventKind::Joiner && mailbox && archive && a.archive_guid.is_none() {
        return Err(format!(
            "Exchange reported {status:?} but {} shows no archive (msExchArchiveGUID is not set); retried",
            after.domain_controller,
            status = status.as_str()
        ));
    }
    let ok = match (kind, status) {
        // Converted: a user mailbox now, not the shared one it was.
        (EventKind::Joiner, JobEffect::Converted) => {
            mailbox && a.recipient_type_details == Some(REMOTE_USER_MAILBOX)
        }
        (EventKind::Joiner, _) => mailbox,
        (EventKind::Leaver, JobEffect::NotRemote) => a.recipient != RecipientType::RemoteMailbox,
        (EventKind::Leaver, _) => a.hidden,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "Exchange reported {status:?} but {} shows recipient type {:?}, hidden {}; retried",
            after.domain_controller,
            a.recipient,
            a.hidden,
            status = status.as_str()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(a: Option<Account>) -> AccountState {
        AccountState {
            domain_controller: "dc1.corp.example".into(),
            url: "ldaps://dc1.corp.example".into(),
            account: a,
        }
    }

    /// An enabled, visible account synced to the cloud, with this recipient type; the
    /// `Seed` methods change one thing each.
    fn acct(recipient: RecipientType) -> Account {
        let (disabled, hidden, synced) = (false, false, true);
        Account {
            distinguished_name: "CN=j,CN=Users,DC=corp,DC=example".into(),
            sam_account_name: "j".into(),
            user_principal_name: None,
            object_guid: None,
            user_account_control: if disabled { 514 } else { 512 },
            disabled,
            recipient,
            recipient_type_details: match recipient {
                RecipientType::RemoteMailbox => Some(2_147_483_648),
                RecipientType::OnPremMailbox => Some(1),
                RecipientType::MailUser => Some(128),
                RecipientType::Other => Some(64),
                RecipientType::None => None,
            },
            hidden,
            target_address: (recipient == RecipientType::RemoteMailbox)
                .then(|| "SMTP:j@t.mail.onmicrosoft.com".into()),
            mail: None,
            proxy_addresses: Vec::new(),
            cloud_synced: synced,
            archive_guid: None,
            archive_name: None,
            archive_status: None,
            external_directory_object_id: None,
        }
    }

    trait Seed {
        fn disabled(self) -> Self;
        fn hidden(self) -> Self;
        fn not_synced(self) -> Self;
    }

    impl Seed for Account {
        fn disabled(mut self) -> Account {
            self.disabled = true;
            self.user_account_control = 514;
            self
        }
        fn hidden(mut self) -> Account {
            self.hidden = true;
            self
        }
        fn not_synced(mut self) -> Account {
            self.cloud_synced = false;
            self
        }
    }

    /// A plan without its text, to compare decisions.
    #[derive(Debug, PartialEq, Eq)]
    enum Shape {
        Run,
        Done(JobEffect),
        Cancel,
        Wait,
        Fail(ErrorClass),
    }

    fn shape(p: &Plan) -> Shape {
        match p {
            Plan::Run => Shape::Run,
            Plan::Done(o) => Shape::Done(*o),
            Plan::Cancel(_) => Shape::Cancel,
            Plan::WaitForSync(_) => Shape::Wait,
            Plan::Fail(class, _) => Shape::Fail(*class),
        }
    }

    /// What `plan` decides for an account AD shows like this (the sync required or not),
    /// the event asking for the usual remote routing address.
    fn decide(kind: EventKind, a: Option<Account>, require_sync: bool) -> Shape {
        let wanted = Wanted {
            remote_routing_address: Some("j@t.mail.onmicrosoft.com"),
            archive: false,
        };
        shape(&plan(kind, "j", &state(a), wanted, require_sync))
    }

    /// docs/decisions.md, "What the directory decides before Exchange is asked": a joiner.
    #[test]
    fn a_joiner_runs_only_where_the_directory_says_it_should() {
        use RecipientType::*;
        let (fail, done) = (Shape::Fail, Shape::Done);
        let rows = [
            (Option::None, false, fail(ErrorClass::Transient)),
            (Some(acct(None)), false, Shape::Run),
            (Some(acct(MailUser)), false, Shape::Run),
            (Some(acct(RemoteMailbox)), false, done(JobEffect::Already)),
            (Some(acct(RemoteMailbox).hidden()), false, Shape::Run),
            (
                Some(acct(RemoteMailbox).disabled().hidden()),
                false,
                Shape::Cancel,
            ),
            (
                Some(acct(OnPremMailbox)),
                false,
                fail(ErrorClass::Permanent),
            ),
            (Some(acct(Other)), false, fail(ErrorClass::Permanent)),
            (Some(acct(None).not_synced()), true, Shape::Wait),
            (Some(acct(None).not_synced()), false, Shape::Run),
        ];
        for (a, require_sync, want) in rows {
            let desc = format!("{a:?} sync={require_sync}");
            assert_eq!(decide(EventKind::Joiner, a, require_sync), want, "{desc}");
        }
    }

    /// docs/decisions.md, "What the directory decides before Exchange is asked": a leaver.
    #[test]
    fn a_leaver_runs_only_where_the_directory_says_it_should() {
        use RecipientType::*;
        let rows = [
            (Option::None, Shape::Done(JobEffect::Gone)),
            (Some(acct(RemoteMailbox)), Shape::Cancel),
            (
                Some(acct(None).disabled()),
                Shape::Done(JobEffect::NotRemote),
            ),
            (
                Some(acct(RemoteMailbox).disabled().hidden()),
                Shape::Done(JobEffect::Already),
            ),
            (Some(acct(RemoteMailbox).disabled()), Shape::Run),
        ];
        for (a, want) in rows {
            let desc = format!("{a:?}");
            assert_eq!(decide(EventKind::Leaver, a, false), want, "{desc}");
        }
    }

    /// A remote mailbox routed elsewhere is a conflict for a person, not a no-op.
    #[test]
    fn a_joiner_whose_remote_mailbox_routes_elsewhere_fails_for_a_person() {
        let p = plan(
            EventKind::Joiner,
            "j",
            &state(Some(acct(RecipientType::RemoteMailbox))),
            Wanted {
                remote_routing_address: Some("other@t.mail.onmicrosoft.com"),
                archive: false,
            },
            false,
        );
        assert_eq!(shape(&p), Shape::Fail(ErrorClass::Permanent));
    }

    #[test]
    fn a_joiner_with_an_archive_runs_until_the_archive_is_there() {
        let wanted = Wanted {
            remote_routing_address: Some("j@t.mail.onmicrosoft.com"),
            archive: true,
        };
        let mut a = acct(RecipientType::RemoteMailbox);
        let p = plan(
            EventKind::Joiner,
            "j",
            &state(Some(a.clone())),
            wanted,
            false,
        );
        assert_eq!(shape(&p), Shape::Run, "the mailbox has no archive yet");
        assert!(
            verified(
                EventKind::Joiner,
                JobEffect::Already,
                &state(Some(a.clone())),
                true
            )
            .is_err()
        );
        a.archive_guid = Some(uuid::Uuid::new_v4());
        let p = plan(
            EventKind::Joiner,
            "j",
            &state(Some(a.clone())),
            wanted,
            false,
        );
        assert_eq!(shape(&p), Shape::Done(JobEffect::Already));
        assert!(verified(EventKind::Joiner, JobEffect::Enabled, &state(Some(a)), true).is_ok());
    }

    #[test]
    fn a_joiner_on_a_converted_shared_mailbox_runs_and_counts_once_it_is_a_user_mailbox() {
        let mut a = acct(RecipientType::RemoteMailbox);
        a.recipient_type_details = Some(34_359_738_368);
        let p = plan(
            EventKind::Joiner,
            "j",
            &state(Some(a.clone())),
            Wanted::default(),
            false,
        );
        assert_eq!(shape(&p), Shape::Run, "shared is not already done");
        let still_shared = state(Some(a.clone()));
        assert!(
            verified(
                EventKind::Joiner,
                JobEffect::Converted,
                &still_shared,
                false
            )
            .is_err()
        );
        a.recipient_type_details = Some(REMOTE_USER_MAILBOX);
        let user = state(Some(a));
        assert!(verified(EventKind::Joiner, JobEffect::Converted, &user, false).is_ok());
    }

    #[test]
    fn success_counts_only_when_the_directory_shows_it() {
        let hidden = state(Some(acct(RecipientType::RemoteMailbox).disabled().hidden()));
        let visible = state(Some(acct(RecipientType::RemoteMailbox)));
        let plain = state(Some(acct(RecipientType::None).disabled()));
        assert!(verified(EventKind::Leaver, JobEffect::Hidden, &hidden, false).is_ok());
        assert!(verified(EventKind::Leaver, JobEffect::Hidden, &visible, false).is_err());
        assert!(verified(EventKind::Leaver, JobEffect::NotRemote, &plain, false).is_ok());
        assert!(verified(EventKind::Joiner, JobEffect::Enabled, &visible, false).is_ok());
        assert!(verified(EventKind::Joiner, JobEffect::Enabled, &hidden, false).is_err());
        assert!(verified(EventKind::Joiner, JobEffect::Enabled, &state(None), false).is_err());
    }
}
