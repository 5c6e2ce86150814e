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

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Leaver {
    pub action: LeaverAction,
    /// With `action = "shared"`: hide the shared mailbox from the address lists too.
    pub hide_shared: bool,
}

impl Default for Leaver {
    fn default() -> Self {
        Leaver {
            action: LeaverAction::Hide,
            hide_shared: true,
        }
    }
}

impl Leaver {
    /// Whether a leaver's mailbox is converted to shared.
    pub fn to_shared(self) -> bool {
        self.action == LeaverAction::Shared
    }

    /// Whether a leaver's mailbox, once shared, stays in the address lists.
    pub fn keep_visible(self) -> bool {
        self.to_shared() && !self.hide_shared
    }
}
