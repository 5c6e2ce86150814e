//! `[leaver]`: what a leaver does to the person's remote mailbox.

use serde::Deserialize;

use crate::text_enum::text_enum;

text_enum! {
    /// `leaver.action`: what becomes of a leaver's remote mailbox.
    pub enum LeaverAction as "leaver action" {
        /// Hide it from the address lists; it stays a user mailbox (and needs its licence).
        Hide = "hide",
        /// Convert it to a shared mailbox on premises (`Set-RemoteMailbox -Type Shared`,
        /// which Entra Connect carries to Exchange Online, KB 2710029), hidden or not as
        /// `leaver.hide_shared` says; the outcome tells the IAM system the licence may go.
        Shared = "shared",
    }
}

text_enum! {
    /// `leaver.exchange_attributes`: where the tenant manages the mailboxes' Exchange
    /// attributes, so where a change made on premises takes effect.
    pub enum ExchangeAttributes as "place Exchange attributes are managed" {
        /// On premises (hybrid as it has always been): the directory sync carries the hide
        /// or the conversion to Exchange Online.
        OnPremises = "on_premises",
        /// In the cloud (Exchange Online's `IsExchangeCloudManaged`, on by default for a
        /// tenant with `ExchangeAttributesCloudManagedByDefault`, 2025): the sync no longer
        /// carries Exchange attributes from AD, so the change stays on premises and the
        /// outcome says to make it in Exchange Online. No documented read shows the flag to
        /// mailboxd (Graph does not expose it), so the tenant's setting is stated here.
        Cloud = "cloud",
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Leaver {
    pub action: LeaverAction,
    /// With `action = "shared"`: hide the shared mailbox from the address lists too.
    pub hide_shared: bool,
    pub exchange_attributes: ExchangeAttributes,
}

impl Default for Leaver {
    fn default() -> Self {
        Leaver {
            action: LeaverAction::Hide,
            hide_shared: true,
            exchange_attributes: ExchangeAttributes::OnPremises,
        }
    }
}

impl Leaver {
    /// Whether a leaver's mailbox is converted to shared.
    pub fn to_shared(self) -> bool {
        self.action == LeaverAction::Shared
    }

    /// Whether a change made on premises stops there (the tenant manages Exchange attributes
    /// in the cloud).
    pub fn stays_on_premises(self) -> bool {
        self.exchange_attributes == ExchangeAttributes::Cloud
    }

    /// Whether a leaver's mailbox, once shared, stays in the address lists.
    pub fn keep_visible(self) -> bool {
        self.to_shared() && !self.hide_shared
    }
}
