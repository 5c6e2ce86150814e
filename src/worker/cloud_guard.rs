//! The licence-first guard before Enable-RemoteMailbox (`[graph]` configured): a joiner AD
//! shows without any recipient is asked about in Microsoft Graph first. When Exchange Online
//! already has a mailbox for the user (its licence came before any remote mailbox, so EXO
//! made one on its own), enabling a remote mailbox would make a second, conflicting object
//! (practitioner sources: msb365.blog ?p=1126,
//! c7solutions.com ?p=2079, the benw TechNet post): the job fails once, for good, before
//! Exchange is called. Graph out of reach or refusing mailboxd is no answer: the joiner is
//! retried, never run blindly.

use crate::directory::{Account, RecipientType};
use crate::graph::{CloudMailboxState, GraphClient, UserRef};
use crate::job::ErrorClass;

/// What the operator does about a licence-first cloud mailbox. The ExchangeGuid stamp is
/// what practitioners script after Enable-RemoteMailbox (msxfaq.de exo_und_mailboxguid);
/// Microsoft documents no single fix page for this case.
const LICENCE_FIRST_TO_DO: &str = "link the on-premises user to the existing cloud mailbox instead of making a second one: Enable-RemoteMailbox, then Set-RemoteMailbox -ExchangeGuid with the cloud mailbox's ExchangeGuid (Get-Mailbox in Exchange Online), and no new event is needed; or, if the cloud mailbox holds nothing yet, remove the user's Exchange licence, wait until Exchange Online has removed the mailbox, and send the event again";

/// Whether the joiner may go on to Enable-RemoteMailbox: `Err` with its class and reason
/// when it must not (yet). Only an account without any recipient is asked about.
pub(super) async fn licence_first(
    graph: &GraphClient,
    account: Option<&Account>,
) -> Result<(), (ErrorClass, String)> {
    let Some(a) = account.filter(|a| a.recipient == RecipientType::None) else {
        return Ok(());
    };
    // Without an object ID or UPN Graph cannot be asked; the cloud watch reports the user
    // as not synced later, and nothing here can be a duplicate Graph would know of.
    let user = UserRef::of_account(
        a.external_directory_object_id.as_deref(),
        a.user_principal_name.as_deref(),
    );
    let Some(user) = user else {
        return Ok(());
    };
    match graph.mailbox_view(&user).await {
        Ok(v) if v.state == CloudMailboxState::Exists => Err((
            ErrorClass::Permanent,
            format!(
                "Exchange Online already has a mailbox for {} (licensed before it had a remote mailbox: Exchange Online made its own); Enable-RemoteMailbox would make a second, conflicting object, so mailboxd stopped before calling Exchange. What to do: {LICENCE_FIRST_TO_DO}",
                a.sam_account_name
            ),
        )),
        Ok(_) => Ok(()),
        Err(e) => Err((
            ErrorClass::Transient,
            format!(
                "cannot ask Microsoft Graph whether the user already has a cloud mailbox (the licence-first check before Enable-RemoteMailbox): {e}"
            ),
        )),
    }
}
