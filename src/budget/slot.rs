//! What a slot of the cluster's Exchange session budget is held for: its own file, so
//! that `store` can keep it in `exchange_session_slots.purpose` without importing the budget.

use crate::text_enum::text_enum;

text_enum! {
    /// What an Exchange session slot is held for.
    pub enum SlotPurpose as "session slot purpose" {
        /// One cold batch: a new shell and Exchange session, closed when the batch ends.
        Batch = "batch",
        /// A warm PowerShell process, for as long as it lives.
        Warm = "warm",
    }
}
