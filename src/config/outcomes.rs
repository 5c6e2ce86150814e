//! `[outcomes]` and `[identityiq]`: where the answer to each event goes.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use super::*;

/// Each outcome also launched as an IdentityIQ workflow through its SCIM API (optional).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentityIq {
    /// IdentityIQ's application URL, e.g. `https://iiq.corp.example/identityiq`. Absent: off.
    pub base_url: Option<String>,
    /// The workflow launched for each outcome.
    pub workflow: String,
    pub auth: IdentityIqAuth,
    /// For `basic`: the IdentityIQ user with the SCIM API right.
    pub username: Option<String>,
    /// The password (`basic`) or the token (`bearer`); or `MAILBOXD_IDENTITYIQ_CREDENTIAL`.
    pub credential_file: Option<PathBuf>,
    /// Extra CA certificate(s), PEM, for IdentityIQ's HTTPS certificate.
    pub ca_file: Option<PathBuf>,
    /// Allow `http://` (the credential in clear text; logged as a warning). Tests only.
    pub allow_plaintext: bool,
    #[serde(with = "humantime_secs")]
    pub timeout: Duration,
    #[serde(skip)]
    pub credential: Option<SecretString>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdentityIqAuth {
    Basic,
    Bearer,
}

impl IdentityIq {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let Some(base) = &self.base_url else {
            return Ok(());
        };
        let invalid = |key, reason: &str| ConfigError::Invalid {
            key,
            reason: reason.to_owned(),
        };
        let url = url::Url::parse(base)
            .map_err(|e| invalid("identityiq.base_url", &format!("{base}: {e}")))?;
        if url.scheme() != "https" && !(url.scheme() == "http" && self.allow_plaintext) {
            return Err(invalid(
                "identityiq.base_url",
                "use https:// (or set identityiq.allow_plaintext = true knowingly)",
            ));
        }
        if self.auth == IdentityIqAuth::Basic && self.username.is_none() {
            return Err(invalid(
                "identityiq.username",
                "basic authentication needs the IdentityIQ user",
            ));
        }
        if self.credential.is_none() {
            return Err(invalid(
                "identityiq.credential_file",
                "set it (or MAILBOXD_IDENTITYIQ_CREDENTIAL): the password or bearer token",
            ));
        }
        Ok(())
    }
}

impl Default for IdentityIq {
    fn default() -> Self {
        IdentityIq {
            base_url: None,
            workflow: "mailboxd Outcome".into(),
            auth: IdentityIqAuth::Basic,
            username: None,
            credential_file: None,
            ca_file: None,
            allow_plaintext: false,
            timeout: Duration::from_secs(30),
            credential: None,
        }
    }
}

/// Outcome messages back to the IAM system (`mailboxd.outcome/v1`, docs/events.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Outcomes {
    /// The topic exchange outcomes are published to (declared durable if missing). Absent:
    /// outcomes go only to an event's `reply_to`.
    pub exchange: Option<String>,
    /// Outcomes published per round (one confirm wait per round).
    pub batch_size: u32,
    /// How long a replica holds the outcomes it is publishing before another may take them.
    #[serde(with = "humantime_secs")]
    pub lease: Duration,
    /// How often the publisher looks for outcomes when it has nothing to send.
    #[serde(with = "humantime_secs")]
    pub poll_interval: Duration,
    /// First wait after a failed publish; doubles per failure of the same outcome.
    #[serde(with = "humantime_secs")]
    pub retry_base: Duration,
    /// The longest wait between publishes of one outcome while the broker is away.
    #[serde(with = "humantime_secs")]
    pub retry_cap: Duration,
}

impl Default for Outcomes {
    fn default() -> Self {
        Outcomes {
            exchange: None,
            batch_size: 100,
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
            retry_base: Duration::from_secs(1),
            retry_cap: Duration::from_secs(60),
        }
    }
}
