//! Who may use the admin listener: one rule that the JSON API (token in a bearer header)
//! and the dashboard (token in a cookie) both enforce. Reads need the admin token unless
//! `admin.open_reads` is set, actions always need it, and without a configured token both
//! are off. Each front end only says how the token arrives and how a refusal looks.

use secrecy::{ExposeSecret, SecretString};

/// The admin token and what it opens.
#[derive(Clone)]
pub struct Access {
    token: Option<SecretString>,
    open_reads: bool,
    /// Who actions with the token are recorded as.
    token_name: String,
}

/// Why a caller may not do what it asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No admin token is configured: the API and the dashboard are off.
    Disabled,
    /// A token is configured and the caller did not present it.
    NoToken,
}

impl Access {
    pub fn new(token: Option<SecretString>, open_reads: bool, token_name: String) -> Access {
        Access {
            token,
            open_reads,
            token_name,
        }
    }

    pub fn open_reads(&self) -> bool {
        self.open_reads
    }

    /// Whether `presented` is the admin token, compared in constant time so that response
    /// timing does not reveal how much of it matched.
    pub fn is_token(&self, presented: &str) -> bool {
        self.token
            .as_ref()
            .is_some_and(|t| crate::secret_eq(t.expose_secret().as_bytes(), presented.as_bytes()))
    }

    /// Whether a caller who `presented` this token (if any) may read, or with `write` act.
    pub fn check(&self, presented: Option<&str>, write: bool) -> Result<(), Refusal> {
        if !write && self.open_reads {
            return Ok(());
        }
        if self.token.is_none() {
            return Err(Refusal::Disabled);
        }
        match presented {
            Some(p) if self.is_token(p) => Ok(()),
            _ => Err(Refusal::NoToken),
        }
    }

    /// Who an action taken with the token through `channel` (`api`, `dashboard`) is
    /// recorded as.
    pub fn actor(&self, channel: &str) -> String {
        format!("{channel}:{}", self.token_name)
    }
}

/// One structured line of the audit trail (`target: "audit"`, for a SIEM): who did what
/// to which object, and how it ended.
pub fn audit(actor: &str, action: &str, subject: &str, outcome: &str) {
    tracing::info!(target: "audit", actor, action, subject, outcome, "operator action");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(token: Option<&str>, open_reads: bool) -> Access {
        Access::new(token.map(SecretString::from), open_reads, "ops".into())
    }

    #[test]
    fn reads_are_open_only_when_configured_and_actions_always_need_the_token() {
        let closed = access(Some("t0ken"), false);
        assert_eq!(closed.check(Some("t0ken"), true), Ok(()));
        assert_eq!(closed.check(Some("t0ken"), false), Ok(()));
        assert_eq!(closed.check(Some("wrong"), false), Err(Refusal::NoToken));
        assert_eq!(closed.check(None, false), Err(Refusal::NoToken));

        let open = access(Some("t0ken"), true);
        assert_eq!(open.check(None, false), Ok(()));
        assert_eq!(open.check(None, true), Err(Refusal::NoToken));

        let off = access(None, false);
        assert_eq!(off.check(Some(""), false), Err(Refusal::Disabled));
        assert_eq!(off.check(None, true), Err(Refusal::Disabled));
        assert!(!off.is_token(""));
        assert_eq!(access(None, true).check(None, false), Ok(()));
        assert_eq!(closed.actor("api"), "api:ops");
    }
}
