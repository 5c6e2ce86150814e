//! An alert before it is written to the outbox, what kind of alert it is, and the
//! circuit's paired alerts. Its own file, importing nothing of the daemon but `text_enum`,
//! because a job's `Resolution` carries the alert a final failure raises, and `store`
//! writes it.

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
        /// The outcome callback refused an outcome for good (`[outcome_callback]`).
        OutcomeCallback = "outcome_callback",
        /// A reconcile run found more differences than it may act on.
        Reconcile = "reconcile",
        /// A joiner's cloud mailbox did not show by the cloud deadline (`[cloud]`).
        Cloud = "cloud",
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

text_enum! {
    /// Which of a circuit's two alerts: the Windows side went away, or came back (the
    /// `alerts.circuit_change` column).
    pub enum CircuitChange as "circuit change" {
        Opened = "opened",
        Closed = "closed",
    }
}

/// One of a circuit's alerts: what it is about (the WinRM endpoint), which of the pair it
/// is, and its text. The store pairs them per endpoint, one pair per outage across replicas.
#[derive(Debug, Clone)]
pub struct CircuitAlert {
    pub endpoint: String,
    pub change: CircuitChange,
    pub alert: NewAlert,
}

impl CircuitAlert {
    /// The subject of `endpoint`'s alert for `change`: text for people only; the store
    /// pairs an endpoint's alerts on `alerts.circuit_endpoint` and `circuit_change`.
    pub fn subject(endpoint: &str, change: CircuitChange) -> String {
        match change {
            CircuitChange::Opened => {
                format!("[mailboxd] Windows host {endpoint} unavailable: mailbox jobs paused")
            }
            CircuitChange::Closed => {
                format!("[mailboxd] Windows host {endpoint} available again: mailbox jobs resumed")
            }
        }
    }
}
