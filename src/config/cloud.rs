//! `[cloud]`: whether and how mailboxd confirms a joiner's Exchange Online mailbox after its
//! on-premises success (the second, cloud answer: docs/events.md).

use std::time::Duration;

use serde::Deserialize;

use super::*;

/// Where the cloud confirmation learns the cloud's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CloudConfirmation {
    /// No cloud answer (the default).
    #[default]
    Off,
    /// From AD alone: what Entra's Exchange hybrid writeback puts on the user once the
    /// cloud mailbox exists (the X500 proxy address), read on the configured DCs.
    Directory,
    /// From Microsoft Graph (`[graph]`): the user's Exchange plan, its provisioning errors
    /// (the text behind "Setting up") and whether its mailboxSettings answer.
    Graph,
}

/// The cloud confirmation of joiners.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Cloud {
    pub confirm: CloudConfirmation,
    /// How long after the on-premises success a missing cloud mailbox becomes a failure.
    #[serde(with = "humantime_secs")]
    pub deadline: Duration,
    /// The first check after the success; each later one waits twice as long …
    #[serde(with = "humantime_secs")]
    pub poll_interval: Duration,
    /// … up to this.
    #[serde(with = "humantime_secs")]
    pub poll_cap: Duration,
    /// Accounts read in one LDAP search.
    pub batch_size: u32,
    /// How long a replica holds the watches it is checking.
    #[serde(with = "humantime_secs")]
    pub lease: Duration,
}

impl Default for Cloud {
    fn default() -> Self {
        Cloud {
            confirm: CloudConfirmation::Off,
            deadline: Duration::from_secs(4 * 3600),
            poll_interval: Duration::from_secs(120),
            poll_cap: Duration::from_secs(900),
            batch_size: 100,
            lease: Duration::from_secs(120),
        }
    }
}

impl Cloud {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| ConfigError::Invalid {
            key,
            reason: reason.to_owned(),
        };
        if !(1..=500).contains(&self.batch_size) {
            return Err(invalid(
                "cloud.batch_size",
                "between 1 and 500 (one LDAP filter holds the batch)",
            ));
        }
        if self.poll_interval.is_zero() || self.poll_cap < self.poll_interval {
            return Err(invalid(
                "cloud.poll_cap",
                "poll_interval must be above zero and poll_cap at least poll_interval",
            ));
        }
        if self.lease.is_zero() {
            return Err(invalid("cloud.lease", "must be above zero"));
        }
        Ok(())
    }
}
