//! What an outcome reports of the account: a directory read turned into the outcome
//! contract's `DirectoryView` (the addresses as AD shows them, not as the event asked).

use crate::directory::{AccountState, RecipientType};
use crate::event::MailboxType;
use crate::outcome::{self, DirectoryView, MailboxAddresses, OutcomeAccount};

/// The view of the account in `state`, if the domain controller found it.
pub(crate) fn of(state: &AccountState) -> Option<DirectoryView> {
    let a = state.account.as_ref()?;
    let primary = a.mail.clone().or_else(|| {
        a.proxy_addresses
            .iter()
            .find_map(|p| p.strip_prefix("SMTP:").map(str::to_owned))
    });
    let remote_routing_address = a.target_address.as_deref().map(|t| {
        t.split_once(':')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("smtp"))
            .map_or(t, |(_, address)| address)
            .to_owned()
    });
    Some(DirectoryView {
        account: OutcomeAccount {
            sam_account_name: Some(a.sam_account_name.clone()),
            object_guid: a.object_guid,
            user_principal_name: a.user_principal_name.clone(),
            distinguished_name: Some(a.distinguished_name.clone()),
        },
        mailbox: MailboxAddresses {
            primary_smtp_address: primary,
            proxy_addresses: a.proxy_addresses.clone(),
            remote_routing_address,
            recipient_type: recipient_type(a.recipient),
            mailbox_type: (a.recipient == RecipientType::RemoteMailbox)
                .then(|| {
                    a.recipient_type_details
                        .and_then(MailboxType::from_type_details)
                })
                .flatten(),
            archive: a.archive_guid.is_some(),
            hidden: a.hidden,
        },
    })
}

/// What the directory read says the recipient is, as the outcome contract names it.
fn recipient_type(r: RecipientType) -> outcome::RecipientType {
    match r {
        RecipientType::None => outcome::RecipientType::None,
        RecipientType::RemoteMailbox => outcome::RecipientType::RemoteMailbox,
        RecipientType::OnPremMailbox => outcome::RecipientType::OnPremMailbox,
        RecipientType::MailUser => outcome::RecipientType::MailUser,
        RecipientType::Other => outcome::RecipientType::Other,
    }
}
