//! `[outcomes]`, `[identityiq]` and `[outcome_callback]`: where the answer to each event goes.

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
    pub auth: HttpAuth,
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

/// How an HTTP channel (IdentityIQ, the outcome callback) authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpAuth {
    Basic,
    Bearer,
}

/// The checks every outcome channel over HTTP shares: a URL that parses, `https://` unless
/// plain text is allowed knowingly, Basic's user, and a credential; each error names the
/// setting to fix.
pub(super) struct HttpEndpoint<'a> {
    /// `identityiq`, `outcome_callback`: for the advice in the errors.
    pub section: &'static str,
    /// The keys of the URL, the user name and the credential file.
    pub keys: [&'static str; 3],
    pub url: &'a str,
    pub allow_plaintext: bool,
    pub auth: HttpAuth,
    pub username: Option<&'a str>,
    pub has_credential: bool,
}

impl HttpEndpoint<'_> {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let [url_key, username_key, credential_key] = self.keys;
        let invalid = |key, reason: String| ConfigError::Invalid { key, reason };
        let url = url::Url::parse(self.url)
            .map_err(|e| invalid(url_key, format!("{}: {e}", self.url)))?;
        if url.scheme() != "https" && !(url.scheme() == "http" && self.allow_plaintext) {
            return Err(invalid(
                url_key,
                format!(
                    "use https:// (or set {}.allow_plaintext = true knowingly)",
                    self.section
                ),
            ));
        }
        if self.auth == HttpAuth::Basic && self.username.is_none() {
            return Err(invalid(
                username_key,
                "basic authentication needs the user name: set it, or use auth = \"bearer\"".into(),
            ));
        }
        if !self.has_credential {
            return Err(invalid(
                credential_key,
                format!(
                    "set it (or MAILBOXD_{}_CREDENTIAL): the password or bearer token",
                    self.section.to_uppercase()
                ),
            ));
        }
        Ok(())
    }
}

impl IdentityIq {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let Some(base) = &self.base_url else {
            return Ok(());
        };
        HttpEndpoint {
            section: "identityiq",
            keys: [
                "identityiq.base_url",
                "identityiq.username",
                "identityiq.credential_file",
            ],
            url: base,
            allow_plaintext: self.allow_plaintext,
            auth: self.auth,
            username: self.username.as_deref(),
            has_credential: self.credential.is_some(),
        }
        .validate()
    }
}

impl Default for IdentityIq {
    fn default() -> Self {
        IdentityIq {
            base_url: None,
            workflow: "mailboxd Outcome".into(),
            auth: HttpAuth::Basic,
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

/// Each outcome also POSTed to an HTTP callback (optional): for senders with no broker to
/// hear outcomes on (Identity Security Cloud, a custom IAM over the HTTP intake).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutcomeCallback {
    /// Where each outcome is POSTed, e.g. `https://iam.corp.example/mailboxd/outcomes`.
    /// Absent: off.
    pub url: Option<String>,
    pub auth: HttpAuth,
    /// For `basic`: the user the receiver knows mailboxd as.
    pub username: Option<String>,
    /// The password (`basic`) or the token (`bearer`); or
    /// `MAILBOXD_OUTCOME_CALLBACK_CREDENTIAL`.
    pub credential_file: Option<PathBuf>,
    /// The key of the `X-Mailboxd-Signature` HMAC-SHA256 over the body; or
    /// `MAILBOXD_OUTCOME_CALLBACK_SIGNING_KEY`. Absent: requests are not signed.
    pub signing_key_file: Option<PathBuf>,
    /// Extra CA certificate(s), PEM, for the receiver's HTTPS certificate (the system's
    /// roots are trusted as well; certificate checks are always on).
    pub ca_file: Option<PathBuf>,
    /// Allow `http://` (the credential in clear text; logged as a warning). Tests only.
    pub allow_plaintext: bool,
    #[serde(with = "humantime_secs")]
    pub timeout: Duration,
    /// Which outcomes go there: those of events that came over the HTTP intake (the
    /// default), or all of them.
    pub outcomes: CallbackOutcomes,
    #[serde(skip)]
    pub credential: Option<SecretString>,
    #[serde(skip)]
    pub signing_key: Option<SecretString>,
}

/// Which outcomes the callback receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallbackOutcomes {
    /// Those of events that came over the HTTP intake: the senders that have no broker.
    HttpIntake,
    /// Every outcome, whichever way its event came.
    All,
}

impl OutcomeCallback {
    /// `http_intake`: whether `[http_intake]` listens (the default scope needs it).
    pub(super) fn validate(&self, http_intake: bool) -> Result<(), ConfigError> {
        let Some(url) = &self.url else {
            return Ok(());
        };
        HttpEndpoint {
            section: "outcome_callback",
            keys: [
                "outcome_callback.url",
                "outcome_callback.username",
                "outcome_callback.credential_file",
            ],
            url,
            allow_plaintext: self.allow_plaintext,
            auth: self.auth,
            username: self.username.as_deref(),
            has_credential: self.credential.is_some(),
        }
        .validate()?;
        if self.outcomes == CallbackOutcomes::HttpIntake && !http_intake {
            return Err(ConfigError::Invalid {
                key: "outcome_callback.outcomes",
                reason:
                    "\"http_intake\" (the default) sends the outcomes of events that came over \
                         the HTTP intake, which is off: set http_intake.listen, or \
                         outcome_callback.outcomes = \"all\""
                        .into(),
            });
        }
        if self
            .signing_key
            .as_ref()
            .is_some_and(|k| secrecy::ExposeSecret::expose_secret(k).is_empty())
        {
            return Err(ConfigError::Invalid {
                key: "outcome_callback.signing_key_file",
                reason: "the signing key is empty: put the shared HMAC key in it, or unset it to \
                         send unsigned"
                    .into(),
            });
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::Invalid {
                key: "outcome_callback.timeout",
                reason: "must be more than 0, e.g. \"30s\"".into(),
            });
        }
        Ok(())
    }
}

impl Default for OutcomeCallback {
    fn default() -> Self {
        OutcomeCallback {
            url: None,
            auth: HttpAuth::Bearer,
            username: None,
            credential_file: None,
            signing_key_file: None,
            ca_file: None,
            allow_plaintext: false,
            timeout: Duration::from_secs(30),
            outcomes: CallbackOutcomes::HttpIntake,
            credential: None,
            signing_key: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn callback() -> OutcomeCallback {
        OutcomeCallback {
            url: Some("https://iam.corp.example/mailboxd/outcomes".into()),
            credential: Some(SecretString::from("t0ken")),
            ..OutcomeCallback::default()
        }
    }

    /// The key the error names and its reason, or `None` when the settings pass.
    fn refusal(cb: &OutcomeCallback, http_intake: bool) -> Option<(&'static str, String)> {
        match cb.validate(http_intake) {
            Ok(()) => None,
            Err(ConfigError::Invalid { key, reason }) => Some((key, reason)),
            Err(e) => panic!("not an Invalid: {e}"),
        }
    }

    #[test]
    fn an_unset_callback_is_off_and_a_complete_one_passes() {
        assert_eq!(refusal(&OutcomeCallback::default(), false), None);
        assert_eq!(refusal(&callback(), true), None);
    }

    #[test]
    fn plain_http_needs_allow_plaintext_and_a_bad_url_is_named() {
        let mut cb = callback();
        cb.url = Some("http://iam.corp.example/outcomes".into());
        let (key, reason) = refusal(&cb, true).expect("refused");
        assert_eq!(key, "outcome_callback.url");
        assert!(
            reason.contains("outcome_callback.allow_plaintext = true"),
            "{reason}"
        );
        cb.allow_plaintext = true;
        assert_eq!(refusal(&cb, true), None);
        cb.url = Some("not a url".into());
        assert_eq!(
            refusal(&cb, true).expect("refused").0,
            "outcome_callback.url"
        );
    }

    #[test]
    fn basic_needs_a_user_and_every_auth_a_credential() {
        let mut cb = callback();
        cb.auth = HttpAuth::Basic;
        let (key, reason) = refusal(&cb, true).expect("refused");
        assert_eq!(key, "outcome_callback.username");
        assert!(reason.contains("auth = \"bearer\""), "{reason}");
        cb.username = Some("mailboxd".into());
        assert_eq!(refusal(&cb, true), None);
        cb.credential = None;
        let (key, reason) = refusal(&cb, true).expect("refused");
        assert_eq!(key, "outcome_callback.credential_file");
        assert!(
            reason.contains("MAILBOXD_OUTCOME_CALLBACK_CREDENTIAL"),
            "{reason}"
        );
    }

    #[test]
    fn the_default_scope_needs_the_http_intake_or_all() {
        let mut cb = callback();
        let (key, reason) = refusal(&cb, false).expect("refused");
        assert_eq!(key, "outcome_callback.outcomes");
        assert!(
            reason.contains("http_intake.listen") && reason.contains("\"all\""),
            "{reason}"
        );
        cb.outcomes = CallbackOutcomes::All;
        assert_eq!(refusal(&cb, false), None);
        cb.signing_key = Some(SecretString::from(""));
        assert_eq!(
            refusal(&cb, false).expect("refused").0,
            "outcome_callback.signing_key_file"
        );
        cb.signing_key = None;
        cb.timeout = Duration::ZERO;
        assert_eq!(
            refusal(&cb, false).expect("refused").0,
            "outcome_callback.timeout"
        );
    }

    #[test]
    fn the_keys_read_from_toml_with_their_defaults() {
        let cb: OutcomeCallback = toml_like(
            r#"{"url": "https://iam.corp.example/cb", "auth": "basic", "username": "m",
                "outcomes": "all", "timeout": "5s"}"#,
        );
        assert_eq!(cb.auth, HttpAuth::Basic);
        assert_eq!(cb.outcomes, CallbackOutcomes::All);
        assert_eq!(cb.timeout, Duration::from_secs(5));
        let d: OutcomeCallback = toml_like("{}");
        assert_eq!(
            (d.auth, d.outcomes, d.timeout),
            (
                HttpAuth::Bearer,
                CallbackOutcomes::HttpIntake,
                Duration::from_secs(30)
            )
        );
        assert!(serde_json::from_str::<OutcomeCallback>(r#"{"outcomes": "some"}"#).is_err());
    }

    fn toml_like(json: &str) -> OutcomeCallback {
        serde_json::from_str(json).expect("parses")
    }
}
