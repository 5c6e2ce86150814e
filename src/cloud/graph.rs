//! The cloud's state from Microsoft Graph (`[cloud] confirm = "graph"`): one LDAP search
//! for the batch finds each account's Entra object ID (`msDS-ExternalDirectoryObjectId`,
//! else its UPN), then per account the user read and, when Graph knows the user, the
//! mailboxSettings read (`GraphClient::mailbox_view`: 2 calls, 1 for an unknown user; the
//! token is cached about an hour).
//!
//! What ends a watch and what does not: a `CloudMailboxView` answers (the mailbox exists,
//! or why not: the reason and what to do, used at the deadline). Throttling postpones the
//! rest of the batch by Graph's `Retry-After` without counting a check; a network error or
//! 5xx is no answer, looked at again. A refusal of mailboxd itself (credential, permission,
//! configuration) is the whole batch's error: one alert, no watch fails on it.

use std::sync::Arc;
use std::time::Duration;

use super::{CloudReadError, Evidence, Seen, account_of};
use crate::directory::{Account, AccountState, Directory};
use crate::graph::{CloudMailboxState, CloudMailboxView, GraphClient, GraphError, UserRef};
use crate::store::Watch;
use crate::worker::view;

/// What to do when Exchange Online holds the mailbox "Setting up".
const SETTING_UP_TO_DO: &str = "fix what Exchange Online's provisioning error names (often an address or UPN another object already holds), then let Entra Connect sync the account again; Exchange Online retries the mailbox with the next sync (mailboxd does not watch again)";
/// What to do when the user has no Exchange Online plan.
const NO_LICENCE_TO_DO: &str = "assign the user a licence that includes Exchange Online (or turn its Exchange Online plan on in the licence it has); Exchange Online makes the mailbox within minutes (mailboxd does not watch again)";
/// What to do when Entra ID does not know the user.
const NOT_SYNCED_TO_DO: &str = "check that Entra Connect / Cloud Sync has the account in its sync scope and that its sync cycles run without export errors; once synced and licensed the mailbox follows (mailboxd does not watch again)";
/// What to do when the plan is still being provisioned at the deadline.
const PENDING_TO_DO: &str = "the licence is there but Exchange Online has not made the mailbox yet: check the user's Exchange plan and provisioning errors in the Microsoft 365 admin center, or open a case with Microsoft if it stays pending (mailboxd does not watch again)";

/// Graph's way: the DC mailboxd uses for the object IDs, the Graph client for the rest.
#[derive(Clone)]
pub struct GraphSource {
    pub directory: Directory,
    pub client: Arc<GraphClient>,
}

impl GraphSource {
    /// What Graph shows for each watch, in order.
    pub(super) async fn observe(&self, watches: &[Watch]) -> Result<Vec<Seen>, CloudReadError> {
        let sams: Vec<&str> = watches
            .iter()
            .map(|w| w.sam_account_name.as_str())
            .collect();
        let found = self.directory.read_many(&sams).await?;
        let mut seen = Vec::with_capacity(watches.len());
        let mut throttled: Option<(Duration, String)> = None;
        for w in watches {
            if let Some((wait, why)) = &throttled {
                seen.push(Seen::Unanswered {
                    reason: why.clone(),
                    retry_after: Some(*wait),
                });
                continue;
            }
            let Some(a) = account_of(w, &found) else {
                seen.push(super::gone());
                continue;
            };
            let Some(user) = user_ref(a) else {
                seen.push(Seen::NotYet {
                    reason: "not synced to Entra ID: AD shows neither msDS-ExternalDirectoryObjectId nor a userPrincipalName".into(),
                    what_to_do: NOT_SYNCED_TO_DO,
                });
                continue;
            };
            match self.client.mailbox_view(&user).await {
                Ok(v) => seen.push(seen_in_graph(a, v)),
                Err(e) => {
                    let one = unanswered(e)?;
                    if let Seen::Unanswered {
                        reason,
                        retry_after: Some(wait),
                    } = &one
                    {
                        throttled = Some((*wait, reason.clone()));
                    }
                    seen.push(one);
                }
            }
        }
        Ok(seen)
    }
}

/// A Graph error on one account: no answer about its cloud (throttled, unreachable), or
/// mailboxd's own refusal, which is the batch's.
fn unanswered(e: GraphError) -> Result<Seen, CloudReadError> {
    if let Some(wait) = e.retry_after() {
        return Ok(Seen::Unanswered {
            reason: e.to_string(),
            retry_after: Some(wait),
        });
    }
    if e.is_transient() {
        return Ok(Seen::Unanswered {
            reason: e.to_string(),
            retry_after: None,
        });
    }
    Err(CloudReadError::Graph(e))
}

/// The user Graph is asked about (`UserRef::of_account`).
fn user_ref(a: &Account) -> Option<UserRef> {
    UserRef::of_account(
        a.external_directory_object_id.as_deref(),
        a.user_principal_name.as_deref(),
    )
}

/// What Graph's view says of the account's cloud mailbox.
fn seen_in_graph(a: &Account, v: CloudMailboxView) -> Seen {
    let (reason, what_to_do) = match v.state {
        CloudMailboxState::Exists => return mailbox(a, v),
        CloudMailboxState::SettingUp => (setting_up(&v.provisioning_errors), SETTING_UP_TO_DO),
        CloudMailboxState::NoExchangeLicence => {
            let why = match v.user.as_ref().map_or(0, |u| u.assigned_licences) {
                0 => "the user has no licence",
                _ => "its licences have the Exchange Online plan turned off",
            };
            (format!("no Exchange licence: {why}"), NO_LICENCE_TO_DO)
        }
        CloudMailboxState::NotSynced => (
            "not synced to Entra ID: Microsoft Graph does not know the user".to_owned(),
            NOT_SYNCED_TO_DO,
        ),
        CloudMailboxState::Pending => (
            "licensed; Exchange Online has not made the mailbox yet (its Exchange plan is not provisioned)".to_owned(),
            PENDING_TO_DO,
        ),
    };
    Seen::NotYet { reason, what_to_do }
}

/// The reason of a mailbox held "Setting up", with Exchange's own words.
fn setting_up(errors: &[String]) -> String {
    let text = if errors.is_empty() {
        "its Exchange plan is in error, with no provisioning error published".to_owned()
    } else {
        errors.join("; ")
    };
    format!("Exchange Online holds the mailbox \"Setting up\": {text}")
}

/// The cloud mailbox: AD's view of the account with what the cloud holds beside it.
fn mailbox(a: &Account, v: CloudMailboxView) -> Seen {
    let state = AccountState {
        domain_controller: String::new(),
        url: String::new(),
        account: Some(a.clone()),
    };
    let user = v.user.unwrap_or_else(|| crate::graph::CloudUser {
        id: String::new(),
        user_principal_name: String::new(),
        mail: None,
        proxy_addresses: Vec::new(),
        assigned_licences: 0,
    });
    Seen::Mailbox {
        view: Box::new(view::of(&state)),
        answer: Evidence {
            external_directory_object_id: a.external_directory_object_id.clone(),
            archive_status: a.archive_status,
            user_principal_name: Some(user.user_principal_name).filter(|u| !u.is_empty()),
            proxy_addresses: user.proxy_addresses,
            purpose: v.purpose.map(|p| p.as_str().to_owned()),
            ..Evidence::default()
        },
    }
}
