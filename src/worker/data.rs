//! What the template gets for one job (`AccountData`): built from the event, the start date
//! read with `[joiner]`, and, for a mover, its new values.

use chrono::{DateTime, Utc};

use super::Worker;
use crate::event::{EventKind, MailboxType, check_address};
use crate::exchange::{AccountData, RemoteMailboxType};
use crate::job::JobStep;
use crate::store::Job;

impl Worker {
    /// When a joiner's mailbox becomes visible, if that is still ahead at `now`: its start
    /// date (`mailbox.start_date`, a day read through `[joiner]`). The step that makes it
    /// visible (`JobStep::MakeVisible`) and a joiner whose day has come are never hidden.
    pub(super) fn hidden_until(&self, job: &Job, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if job.kind != EventKind::Joiner || job.step.is_some() {
            return None;
        }
        let start = job.event.mailbox.as_ref()?.start_date?;
        let at = start.instant(self.joiner.time, self.joiner.offset);
        (at > now).then_some(at)
    }

    /// Builds what the template needs for one job, or says why it cannot run at all.
    /// `sam`: the account's sAMAccountName, `None` while only AD can tell it (the event
    /// named the account otherwise): then the data is built again once AD has been read
    /// (`resolve`), and until then names the account as the event did.
    pub(super) fn account_data(&self, job: &Job, sam: Option<&str>) -> Result<AccountData, String> {
        let ev = &job.event;
        let named = ev.account.name();
        let known = sam;
        let sam = sam.unwrap_or(&named);
        if job.kind == EventKind::Mover {
            return self.mover_data(job, sam);
        }
        let mailbox = ev.mailbox.clone().unwrap_or_default();
        let remote_routing_address = match (job.kind, mailbox.remote_routing_address) {
            (EventKind::Leaver | EventKind::Mover, _) => None,
            (EventKind::Joiner, Some(a)) => Some(a),
            (EventKind::Joiner, None) if known.is_none() && mailbox.alias.is_none() => None,
            (EventKind::Joiner, None) => {
                let local = mailbox.alias.as_deref().unwrap_or(sam);
                let derived = format!("{local}@{}", self.remote_routing_domain);
                check_address(&derived).map_err(|r| {
                    format!(
                        "cannot derive a remote routing address from {sam:?} ({r}); send mailbox.remote_routing_address or mailbox.alias in the event"
                    )
                })?;
                Some(derived)
            }
        };
        Ok(AccountData {
            job_id: job.id,
            identity: exchange_identity(ev, sam),
            sam_account_name: sam.to_owned(),
            // Set from the configured DC that answered the directory check, never from the
            // event: no value of an event chooses where Exchange (or mailboxd) connects.
            domain_controller: None,
            remote_routing_address,
            alias: mailbox.alias,
            primary_smtp_address: mailbox.primary_smtp_address,
            archive: mailbox.archive.unwrap_or(false),
            mailbox_type: remote_type(mailbox.kind),
            // The template converts only a user mailbox, and hides a resource whatever
            // the policy; the pre-check (`plan::leaver_steps`) decides the same from AD.
            to_shared: job.kind == EventKind::Leaver && self.leaver.to_shared(),
            keep_visible: job.kind == EventKind::Leaver && self.leaver.keep_visible(),
            // Decided with the clock by `prepare` (`hidden_until`).
            hidden: false,
            make_visible: job.step == Some(JobStep::MakeVisible),
            user_principal_name: None,
        })
    }

    /// A mover's template data: its new values, and the remote routing address that follows
    /// a new alias in the tenant's domain (`windows.remote_routing_domain`, as a joiner's).
    fn mover_data(&self, job: &Job, sam: &str) -> Result<AccountData, String> {
        let ev = &job.event;
        let rename = ev.rename.clone().unwrap_or_default();
        let remote_routing_address = rename
            .alias
            .as_deref()
            .map(|alias| {
                let derived = format!("{alias}@{}", self.remote_routing_domain);
                check_address(&derived).map(|()| derived).map_err(|r| {
                    format!(
                        "cannot derive a remote routing address from the new alias {alias:?} ({r}); send another rename.alias"
                    )
                })
            })
            .transpose()?;
        Ok(AccountData {
            job_id: job.id,
            identity: exchange_identity(ev, sam),
            sam_account_name: sam.to_owned(),
            remote_routing_address,
            alias: rename.alias,
            primary_smtp_address: rename.primary_smtp_address,
            user_principal_name: rename.user_principal_name,
            ..AccountData::default()
        })
    }
}

/// `-Identity` for the event's account: its objectGUID when the event names one
/// (unambiguous), else `sam` (AD's sAMAccountName once read, or the name the event gave);
/// the directory check replaces it with the GUID AD shows.
fn exchange_identity(ev: &crate::event::Event, sam: &str) -> String {
    ev.account
        .object_guid
        .map_or_else(|| sam.to_owned(), |g| g.to_string())
}

/// The template's name for a mailbox type (`Set-RemoteMailbox -Type`'s values).
fn remote_type(kind: MailboxType) -> RemoteMailboxType {
    match kind {
        MailboxType::User => RemoteMailboxType::Regular,
        MailboxType::Shared => RemoteMailboxType::Shared,
        MailboxType::Room => RemoteMailboxType::Room,
        MailboxType::Equipment => RemoteMailboxType::Equipment,
    }
}
