//! Who may use the JSON API: named tokens (a bearer header), each a viewer (reads) or an
//! operator (also actions), recorded by name (`api:<name>`); `admin.token` is an operator
//! token named `admin.token_name`. Reads need a token unless `admin.open_reads` is set;
//! without any token the API is off. (People use the dashboard with their AD sign-in,
//! `signin`; no token is ever kept in a cookie.) The audit trail is `audit`.

use secrecy::{ExposeSecret, SecretString};

use crate::text_enum::text_enum;

text_enum! {
    /// What someone may do, whether they came with an API token (`admin.tokens[].role`) or
    /// signed in to the dashboard (from their AD groups; the `dashboard_sessions.role` column):
    /// read, or also act (retry, cancel, replay).
    pub enum Role as "role" {
        Viewer = "viewer",
        Operator = "operator",
    }
}

/// One API token: its name (what actions are recorded as), its secret and whether it may act.
#[derive(Clone)]
pub(crate) struct Token {
    pub name: String,
    pub secret: SecretString,
    pub can_act: bool,
}

/// The API's tokens and what they open.
#[derive(Clone)]
pub(crate) struct Access {
    tokens: Vec<Token>,
    open_reads: bool,
}

/// Why a caller may not do what it asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No token is configured: the API is off.
    Disabled,
    /// Tokens are configured and the caller presented none of them.
    NoToken,
    /// The caller's token may read, not act.
    ReadOnly,
}

impl Access {
    pub(crate) fn new(tokens: Vec<Token>, open_reads: bool) -> Access {
        Access { tokens, open_reads }
    }

    pub(crate) fn open_reads(&self) -> bool {
        self.open_reads
    }

    /// The token `presented` is, compared in constant time (every token is compared) so
    /// that response timing does not reveal how much of one matched.
    fn token(&self, presented: &str) -> Option<&Token> {
        let mut found = None;
        for t in &self.tokens {
            if crate::secret_eq(t.secret.expose_secret().as_bytes(), presented.as_bytes()) {
                found = Some(t);
            }
        }
        found
    }

    /// Who a caller that `presented` this token (if any) is, when they may read, or with
    /// `write` act: `api:<token name>`, or `None` for an anonymous open read.
    pub(crate) fn check(
        &self,
        presented: Option<&str>,
        write: bool,
    ) -> Result<Option<String>, Refusal> {
        let token = presented.and_then(|p| self.token(p));
        match token {
            Some(t) if write && !t.can_act => Err(Refusal::ReadOnly),
            Some(t) => Ok(Some(format!("api:{}", t.name))),
            None if !write && self.open_reads => Ok(None),
            None if self.tokens.is_empty() => Err(Refusal::Disabled),
            None => Err(Refusal::NoToken),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(tokens: &[(&str, &str, bool)], open_reads: bool) -> Access {
        let tokens = tokens
            .iter()
            .map(|(name, secret, can_act)| Token {
                name: (*name).into(),
                secret: SecretString::from(*secret),
                can_act: *can_act,
            })
            .collect();
        Access::new(tokens, open_reads)
    }

    #[test]
    fn each_token_reads_and_only_operator_tokens_act_recorded_by_name() {
        let a = access(&[("ops", "t0ken", true), ("grafana", "r3ad", false)], false);
        assert_eq!(a.check(Some("t0ken"), true), Ok(Some("api:ops".into())));
        assert_eq!(a.check(Some("r3ad"), false), Ok(Some("api:grafana".into())));
        assert_eq!(a.check(Some("r3ad"), true), Err(Refusal::ReadOnly));
        assert_eq!(a.check(Some("t0ke"), false), Err(Refusal::NoToken));
        assert_eq!(a.check(None, false), Err(Refusal::NoToken));
    }

    #[test]
    fn reads_are_open_only_when_configured_and_without_tokens_the_api_is_off() {
        let open = access(&[("ops", "t0ken", true)], true);
        assert_eq!(open.check(None, false), Ok(None));
        assert_eq!(open.check(None, true), Err(Refusal::NoToken));
        let off = access(&[], false);
        assert_eq!(off.check(Some(""), false), Err(Refusal::Disabled));
        assert_eq!(off.check(None, true), Err(Refusal::Disabled));
        assert_eq!(access(&[], true).check(None, false), Ok(None));
    }
}
