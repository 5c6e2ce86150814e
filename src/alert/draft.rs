//! An alert before it is written to the outbox, and what kind of alert it is. Its own
//! file, importing nothing of the daemon, because a job's `Resolution` carries the alert a
//! final failure raises, and `store` writes it.

use crate::text_enum::text_enum;

text_enum! {
    /// What an alert is about, as the `alerts.kind` column keeps it; `smtp.to_by_class`
    /// routes alerts to recipients by this text.
    pub enum AlertKind as "alert kind" {
        /// A job that failed for good on a transient error (attempts spent), or panicked.
        Transient = "transient",
        /// A job that waited too long for the cloud sync.
        NotSynced = "not_synced",
        /// A job that failed for good: the account or the request is wrong.
        Permanent = "permanent",
        /// The Windows side as a whole: the circuit opened or closed, a host set-up fault.
        Systemic = "systemic",
        /// IdentityIQ refused an outcome for good.
        IdentityIq = "identityiq",
        /// A reconcile run found more differences than it may act on.
        Reconcile = "reconcile",
    }
}

/// An alert to write to the outbox.
#[derive(Debug, Clone)]
pub struct NewAlert {
    pub kind: AlertKind,
    pub subject: String,
    pub body: String,
    /// Alerts with the same key within the digest window go out as one email.
    pub digest_key: Option<String>,
    pub account: Option<String>,
}
