//! The audit trail: every operator action, from every channel (dashboard, API, CLI), is a
//! row of `audit_log` and one log line (`target: "audit"`, for a SIEM) saying who did what
//! to which object, and how it ended. Refusals (a token refused, 401/403, a form from
//! another site or without its CSRF token) are log lines only: anyone can cause them, so
//! they must not be able to fill the database.
//!
//! Who: `dashboard:CORP\jdoe` (the AD sign-in), `api:<token name>`, and `cli:<user>`, the
//! CLI's operating-system user as the kernel knows it (the real uid, and the audit login
//! uid when `sudo` changed it), never `$USER`, which the caller sets.

use std::net::IpAddr;

use crate::store::{NewAudit, Store};

/// One action on record.
#[derive(Debug, Clone)]
pub struct Entry {
    actor: String,
    action: String,
    subject: String,
    outcome: String,
    client: Option<IpAddr>,
}

/// `text` with control characters (and Unicode line breaks) escaped: what a row or a line
/// holds cannot start a new one, nor hold a NUL PostgreSQL refuses.
pub fn clean(text: &str) -> String {
    crate::telemetry::escape_controls(text, false)
}

impl Entry {
    pub fn new(actor: &str, action: &str, subject: &str, outcome: &str) -> Entry {
        Entry {
            actor: clean(actor),
            action: clean(action),
            subject: clean(subject),
            outcome: clean(outcome),
            client: None,
        }
    }

    /// The client's address (dashboard and API).
    pub fn from(mut self, client: IpAddr) -> Entry {
        self.client = Some(client);
        self
    }
}

/// Puts the action on record: the log line, then the row. A row that cannot be written is
/// an ERROR line (the action itself happened and is not undone).
pub async fn record(store: &Store, e: Entry) {
    let client = e.client.map(|c| c.to_string());
    tracing::info!(
        target: "audit",
        actor = %e.actor,
        action = %e.action,
        subject = %e.subject,
        outcome = %e.outcome,
        client = client.as_deref().unwrap_or(""),
        "operator action"
    );
    let row = NewAudit {
        actor: &e.actor,
        action: &e.action,
        subject: &e.subject,
        outcome: &e.outcome,
        client: client.as_deref(),
    };
    if let Err(err) = store.insert_audit(row).await {
        tracing::error!(target: "audit", error = %err, actor = %e.actor, action = %e.action, "the audit row could not be written");
    }
}

/// A refused request, as a log line: what was asked (`method path`), by whom if known,
/// from where, and why it was refused.
pub fn refused(status: u16, request: &str, who: &str, client: IpAddr, reason: &str) {
    tracing::warn!(
        target: "audit",
        status,
        request = %clean(request),
        actor = %clean(who),
        client = %client,
        reason = %clean(reason),
        "request refused"
    );
}

/// Who a CLI action is recorded as: `cli:<user>` for the process's real uid, with
/// `(login <user>)` when the kernel's audit login uid names someone else (a `sudo`).
pub fn cli_actor() -> String {
    use nix::unistd::{Uid, User};
    let name = |uid: Uid| {
        User::from_uid(uid)
            .ok()
            .flatten()
            .map_or_else(|| format!("uid {uid}"), |u| u.name)
    };
    let uid = nix::unistd::getuid();
    // Set by pam_loginuid at login and kept across sudo and su; only the kernel changes it.
    let login = std::fs::read_to_string("/proc/self/loginuid")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|&l| l != u32::MAX)
        .map(Uid::from_raw)
        .filter(|&l| l != uid);
    match login {
        Some(l) => format!("cli:{} (login {})", name(uid), name(l)),
        None => format!("cli:{}", name(uid)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_cannot_start_a_new_line_or_hold_a_nul() {
        assert_eq!(
            clean("jdoe\n2026-01-01 INFO forged\r\0\u{2028}\t"),
            "jdoe\\n2026-01-01 INFO forged\\r\\u{0}\\u{2028}\t"
        );
        assert_eq!(clean("CORP\\jdoe"), "CORP\\jdoe");
    }

    #[test]
    fn the_cli_user_comes_from_the_kernel_not_the_environment() {
        let me = cli_actor();
        let uid = nix::unistd::getuid();
        let name = nix::unistd::User::from_uid(uid).unwrap().unwrap().name;
        assert!(me.starts_with(&format!("cli:{name}")), "{me}");
    }
}
