//! Configuration: one TOML file plus `MAILBOXD__SECTION__KEY` environment overrides.
//!
//! Secrets are never read from the TOML file itself: each is a `*_file` path or an
//! environment variable (`MAILBOXD_WINRM_PASSWORD`, …), and is held in a
//! [`SecretString`] so `Debug` and logs show `[REDACTED]`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

mod admin;
mod broker;
mod cloud;
mod directory;
mod graph;
mod http_intake;
mod joiner;
mod leaver;
mod outcomes;
mod smtp;
mod telemetry;
mod windows;
mod worker;

pub(crate) use admin::split_unescaped;
pub use admin::*;
pub use broker::*;
pub use cloud::*;
pub use directory::*;
pub use graph::*;
pub use http_intake::*;
pub use joiner::*;
pub use leaver::*;
pub use outcomes::*;
pub use smtp::*;
pub use telemetry::*;
pub use windows::*;
pub use worker::*;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration: {0} (check the --config path and the TOML syntax)")]
    Load(#[from] config::ConfigError),
    #[error("cannot read secret file {path}: {source} (check the path and its permissions)")]
    SecretFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid setting {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

/// The whole configuration, as the daemon uses it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub database: Database,
    pub amqp: Amqp,
    pub ldap: Ldap,
    pub winrm: Winrm,
    pub exchange: Exchange,
    pub worker: Worker,
    pub smtp: Smtp,
    pub admin: Admin,
    pub reconcile: Reconcile,
    pub outcomes: Outcomes,
    pub identityiq: IdentityIq,
    pub outcome_callback: OutcomeCallback,
    pub cloud: Cloud,
    pub joiner: Joiner,
    pub leaver: Leaver,
    pub graph: Graph,
    pub http_intake: HttpIntake,
    pub telemetry: Telemetry,
}

/// The configuration's sources, in order: defaults, then the TOML file (if given or if
/// `mailboxd.toml` exists), then `MAILBOXD__SECTION__KEY` environment variables.
fn sources(path: Option<&Path>) -> Result<config::Config, ConfigError> {
    let mut builder = config::Config::builder();
    match path {
        Some(p) => {
            builder = builder.add_source(config::File::from(p).required(true));
        }
        None => {
            builder = builder.add_source(config::File::with_name("mailboxd.toml").required(false));
        }
    }
    builder = builder.add_source(
        config::Environment::with_prefix("MAILBOXD")
            .prefix_separator("__")
            .separator("__")
            .list_separator(",")
            .with_list_parse_key("ldap.urls")
            .with_list_parse_key("exchange.connection_uris")
            .with_list_parse_key("smtp.to")
            .with_list_parse_key("amqp.iiq_applications")
            .with_list_parse_key("amqp.allowed_routing_domains")
            .with_list_parse_key("amqp.reply_to_allowed")
            .with_list_parse_key("amqp.midpoint.object_classes")
            .with_list_parse_key("amqp.midpoint.login_attributes")
            .with_list_parse_key("amqp.midpoint.disabled_values")
            .with_list_parse_key("admin.trusted_proxies")
            .try_parsing(true),
    );
    Ok(builder.build()?)
}

/// Durations are written as seconds (`30`) or with a unit (`"30s"`, `"5m"`, `"1h"`, `"250ms"`).
mod humantime_secs {
    use serde::{Deserialize, Deserializer, de::Error};
    use std::time::Duration;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(u64),
        Float(f64),
        Text(String),
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Int(s) => Ok(Duration::from_secs(s)),
            Raw::Float(s) if s >= 0.0 && s.is_finite() => Ok(Duration::from_secs_f64(s)),
            Raw::Float(s) => Err(D::Error::custom(format!("invalid duration {s}"))),
            Raw::Text(t) => super::parse_duration(&t).map_err(D::Error::custom),
        }
    }
}

mod humantime_opt {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Wrap(#[serde(with = "super::humantime_secs")] Duration);
        Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
    }
}

/// Parses `"250ms"`, `"30s"`, `"5m"`, `"1h"` or a bare number of seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (num, unit) = match t.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => (&t[..i], t[i..].trim()),
        None => (t, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected e.g. 30s, 5m, 1h"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => {
            return Err(format!(
                "invalid duration unit in {text:?}: use ms, s, m, h or d"
            ));
        }
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("invalid duration {text:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl Settings {
    /// Loads defaults, then the TOML file (if given or if `mailboxd.toml` exists), then
    /// `MAILBOXD__SECTION__KEY` environment variables, then reads the secrets.
    pub fn load(path: Option<&Path>) -> Result<Settings, ConfigError> {
        // Group DNs are not list-parsed at commas (every DN has them): `dn_list` splits them.
        let mut settings: Settings = sources(path)?.try_deserialize()?;
        settings.read_secrets()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Reads every secret from its `*_file` path or its environment variable.
    pub(crate) fn read_secrets(&mut self) -> Result<(), ConfigError> {
        self.winrm.password = secret(
            "MAILBOXD_WINRM_PASSWORD",
            self.winrm.password_file.as_deref(),
        )?;
        self.ldap.password = secret("MAILBOXD_LDAP_PASSWORD", self.ldap.password_file.as_deref())?;
        self.smtp.password = secret("MAILBOXD_SMTP_PASSWORD", self.smtp.password_file.as_deref())?;
        self.exchange.password = secret(
            "MAILBOXD_EXCHANGE_PASSWORD",
            self.exchange.password_file.as_deref(),
        )?;
        self.admin.token = secret("MAILBOXD_ADMIN_TOKEN", self.admin.token_file.as_deref())?;
        for t in &mut self.admin.tokens {
            // The file is required, so the (empty) variable name is never looked up.
            t.token = secret("", Some(&t.token_file))?;
        }
        self.identityiq.credential = secret(
            "MAILBOXD_IDENTITYIQ_CREDENTIAL",
            self.identityiq.credential_file.as_deref(),
        )?;
        let cb = &mut self.outcome_callback;
        cb.credential = secret(
            "MAILBOXD_OUTCOME_CALLBACK_CREDENTIAL",
            cb.credential_file.as_deref(),
        )?;
        cb.signing_key = secret(
            "MAILBOXD_OUTCOME_CALLBACK_SIGNING_KEY",
            cb.signing_key_file.as_deref(),
        )?;
        self.graph.private_key = secret(
            "MAILBOXD_GRAPH_PRIVATE_KEY",
            self.graph.private_key_file.as_deref(),
        )?;
        self.http_intake.token = secret(
            "MAILBOXD_HTTP_INTAKE_TOKEN",
            self.http_intake.token_file.as_deref(),
        )?;
        self.http_intake.password = secret(
            "MAILBOXD_HTTP_INTAKE_PASSWORD",
            self.http_intake.password_file.as_deref(),
        )?;
        self.telemetry.read_secrets()?;
        Ok(())
    }

    /// Every secret value this configuration holds (non-empty, longest first): what must
    /// not reach a log, a stored error, an email or a response, even when a peer echoes it.
    pub(crate) fn secret_values(&self) -> Vec<String> {
        use secrecy::ExposeSecret;
        let mut v: Vec<String> = [
            &self.winrm.password,
            &self.ldap.password,
            &self.smtp.password,
            &self.exchange.password,
            &self.admin.token,
            &self.identityiq.credential,
            &self.outcome_callback.credential,
            &self.outcome_callback.signing_key,
            &self.graph.private_key,
            &self.http_intake.token,
            &self.http_intake.password,
        ]
        .into_iter()
        .chain(self.admin.tokens.iter().map(|t| &t.token))
        .flatten()
        .chain(self.telemetry.otlp_headers.iter().map(|(_, v)| v))
        .map(|s| s.expose_secret().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
        v.sort_by_key(|s| std::cmp::Reverse(s.len()));
        v.dedup();
        v
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.identityiq.validate()?;
        self.outcome_callback
            .validate(self.http_intake.listen.is_some())?;
        self.joiner.start_of_day()?;
        self.cloud.validate()?;
        self.graph.validate()?;
        if self.cloud.confirm == CloudConfirmation::Graph && self.graph.tenant_id.is_none() {
            return Err(ConfigError::Invalid {
                key: "cloud.confirm",
                reason: "\"graph\" reads Microsoft Graph: configure [graph] (tenant_id, client_id, certificate_file, private_key_file)".into(),
            });
        }
        if self.worker.concurrency == 0 {
            return Err(ConfigError::Invalid {
                key: "worker.concurrency",
                reason: "must be at least 1".into(),
            });
        }
        if self.exchange.batch_size == 0 {
            return Err(ConfigError::Invalid {
                key: "exchange.batch_size",
                reason: "must be at least 1".into(),
            });
        }
        if self.exchange.max_sessions == 0 {
            return Err(ConfigError::Invalid {
                key: "exchange.max_sessions",
                reason: "must be at least 1 (Exchange's PowerShellMaxConcurrency is 18 by default)"
                    .into(),
            });
        }
        if self.exchange.session_lease < Duration::from_secs(1) {
            return Err(ConfigError::Invalid {
                key: "exchange.session_lease",
                reason: "must be at least 1s".into(),
            });
        }
        self.validate_cmdlet_budget()?;
        if self.worker.max_attempts < 1 {
            return Err(ConfigError::Invalid {
                key: "worker.max_attempts",
                reason: "must be at least 1".into(),
            });
        }
        self.validate_tokens()?;
        self.validate_admin()?;
        self.validate_ldap_bind()?;
        self.validate_http_intake()?;
        self.telemetry.validate()?;
        if self.admin.tls_cert_file.is_some() != self.admin.tls_key_file.is_some() {
            return Err(ConfigError::Invalid {
                key: "admin.tls_cert_file",
                reason: "set both admin.tls_cert_file and admin.tls_key_file, or neither".into(),
            });
        }
        if self.amqp.prefetch == 0 {
            return Err(ConfigError::Invalid {
                key: "amqp.prefetch",
                reason: "must be at least 1 (0 would mean unbounded)".into(),
            });
        }
        url::Url::parse(&self.winrm.endpoint).map_err(|e| ConfigError::Invalid {
            key: "winrm.endpoint",
            reason: format!("{e}: expected http(s)://host:port/wsman"),
        })?;
        // validate_exchange is not here: commands that never reach Exchange (migrate, jobs,
        // publish) need no Exchange settings. The daemon's start and `check` call it.
        Ok(())
    }

    /// The Exchange session can open on a real host: servers to connect to, and an answer
    /// to the second hop (checked when the daemon starts and by `check`, so the first batch
    /// does not find out).
    pub fn validate_exchange(&self) -> Result<(), ConfigError> {
        let x = &self.exchange;
        let invalid = |key, reason: String| Err(ConfigError::Invalid { key, reason });
        if x.mode == ExchangeMode::Remote && x.connection_uris.is_empty() {
            return invalid("exchange.connection_uris", "remote mode (the default) opens New-PSSession to these: set at least one, e.g. [\"http://ex01.corp.example/PowerShell/\"], or set exchange.mode = \"snapin\"".into());
        }
        if let Some(uri) = x.connection_uris.iter().find(|u| names_an_ip(u)) {
            return invalid(
                "exchange.connection_uris",
                format!(
                    "{uri} names an IP address: New-PSSession uses Kerberos, which does not support IP addresses (about_Remote_Troubleshooting); name each Exchange server by its FQDN"
                ),
            );
        }
        if let Some(t) = &x.signing_certificate_thumbprint
            && !(t.len() == 40 && t.chars().all(|c| c.is_ascii_hexdigit()))
        {
            return invalid("exchange.signing_certificate_thumbprint", "40 hexadecimal digits, as Get-ChildItem Cert:\\CurrentUser\\My shows a certificate's Thumbprint".into());
        }
        if x.username.is_some() && x.password.is_none() {
            return invalid("exchange.password_file", "exchange.username is set without a password: set exchange.password_file or MAILBOXD_EXCHANGE_PASSWORD".into());
        }
        self.validate_second_hop()
    }
}

/// Whether a connection URI's host is an IP address (Kerberos needs a name).
fn names_an_ip(uri: &str) -> bool {
    matches!(
        url::Url::parse(uri).ok().as_ref().and_then(url::Url::host),
        Some(url::Host::Ipv4(_) | url::Host::Ipv6(_))
    )
}

impl Settings {
    /// `exchange.max_cmdlets` and `exchange.cmdlet_window` go together, as Exchange's
    /// PowerShellMaxCmdlets and PowerShellMaxCmdletsTimePeriod do.
    fn validate_cmdlet_budget(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.into(),
            })
        };
        match (self.exchange.max_cmdlets, self.exchange.cmdlet_window) {
            (None, None) => Ok(()),
            (Some(_), None) => invalid(
                "exchange.cmdlet_window",
                "set it with exchange.max_cmdlets: the throttling policy's PowerShellMaxCmdletsTimePeriod, e.g. \"60s\"",
            ),
            (None, Some(_)) => invalid(
                "exchange.max_cmdlets",
                "set it with exchange.cmdlet_window: the throttling policy's PowerShellMaxCmdlets",
            ),
            (Some(0), _) => invalid("exchange.max_cmdlets", "must be at least 1"),
            (_, Some(w)) if w.is_zero() => {
                invalid("exchange.cmdlet_window", "must be longer than 0s")
            }
            (Some(_), Some(_)) => Ok(()),
        }
    }
}

impl Settings {
    /// API tokens: each named once, none empty, no two the same secret.
    fn validate_tokens(&self) -> Result<(), ConfigError> {
        use secrecy::ExposeSecret;
        let invalid = |reason: String| ConfigError::Invalid {
            key: "admin.tokens",
            reason,
        };
        let mut names = std::collections::HashSet::new();
        let mut secrets = std::collections::HashSet::new();
        for t in &self.admin.tokens {
            if t.name.trim().is_empty() || t.name.chars().any(char::is_control) {
                return Err(invalid(
                    "every token needs a name (what its actions are recorded as)".into(),
                ));
            }
            if !names.insert(t.name.as_str()) {
                return Err(invalid(format!("the name {:?} is used twice", t.name)));
            }
            let secret = t.token.as_ref().map_or("", |s| s.expose_secret());
            if secret.is_empty() {
                return Err(invalid(format!(
                    "{}: {} is empty",
                    t.name,
                    t.token_file.display()
                )));
            }
            if let Some(weak) = weak_token(secret) {
                return Err(invalid(format!(
                    "{}: {} holds a token of about {weak:.0} bits; {TOKEN_ADVICE}",
                    t.name,
                    t.token_file.display()
                )));
            }
            if !secrets.insert(secret) {
                return Err(invalid(format!(
                    "{}: the same token as another one; give each its own",
                    t.name
                )));
            }
        }
        Ok(())
    }
}

/// The least estimated strength of an API token, in bits.
pub(crate) const MIN_TOKEN_BITS: f64 = 128.0;
const TOKEN_ADVICE: &str = "API tokens need at least 128 bits (estimated as length × log2 of the character classes used: e.g. 32 hex digits or 24 base64 characters); make one with `openssl rand -hex 32`";

/// The estimated strength of a token in bits, when it is below [`MIN_TOKEN_BITS`]: its
/// length times log2 of the alphabet its character classes span (lower case 26, upper case
/// 26, digits 10, anything else 33; only hex digits: 16). An estimate for random tokens, which an API token
/// must be: a word repeated to length passes it and is still weak.
pub(crate) fn weak_token(token: &str) -> Option<f64> {
    let has = |f: fn(char) -> bool| token.chars().any(f);
    // Hex digits span 16 symbols whatever classes they touch.
    let hex = !token.is_empty() && token.chars().all(|c| c.is_ascii_hexdigit());
    let alphabet = if hex {
        16
    } else {
        [
            (has(|c| c.is_ascii_lowercase()), 26),
            (has(|c| c.is_ascii_uppercase()), 26),
            (has(|c| c.is_ascii_digit()), 10),
            (has(|c| !c.is_ascii_alphanumeric()), 33),
        ]
        .iter()
        .filter(|(used, _)| *used)
        .map(|(_, n)| n)
        .sum::<u32>()
    };
    let bits = token.chars().count() as f64 * f64::from(alphabet.max(1)).log2();
    (bits < MIN_TOKEN_BITS).then_some(bits)
}

/// A secret from a file (trailing newline stripped) or, failing that, an environment variable.
fn secret(env: &str, file: Option<&Path>) -> Result<Option<SecretString>, ConfigError> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::SecretFile {
            path: path.to_path_buf(),
            source,
        })?;
        let trimmed = text.trim_end_matches(['\r', '\n']);
        return Ok(Some(SecretString::from(trimmed.to_owned())));
    }
    Ok(std::env::var(env).ok().map(SecretString::from))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn remote(auth: WinrmAuth) -> Settings {
        let mut s = Settings::default();
        s.winrm.auth = auth;
        s.exchange.connection_uris = vec!["http://ex01.corp.example/PowerShell/".into()];
        s
    }

    fn invalid_key(s: &Settings) -> Option<(&'static str, String)> {
        match s.validate_exchange() {
            Err(ConfigError::Invalid { key, reason }) => Some((key, reason)),
            _ => None,
        }
    }

    #[test]
    fn cloud_confirmation_by_graph_without_graph_is_refused_with_what_to_configure() {
        let mut s = Settings::default();
        s.cloud.confirm = CloudConfirmation::Graph;
        match s.validate() {
            Err(ConfigError::Invalid { key, reason }) => {
                assert_eq!(key, "cloud.confirm");
                assert!(reason.contains("configure [graph]"), "{reason}");
            }
            other => panic!("not refused: {other:?}"),
        }
        s.graph.tenant_id = Some("5f1b7c3e-1ab0-4c1d-9e2f-0123456789ab".into());
        assert!(!matches!(
            s.validate(),
            Err(ConfigError::Invalid {
                key: "cloud.confirm",
                ..
            })
        ));
    }

    #[test]
    fn the_default_mode_is_remote_and_asks_for_its_servers() {
        let s = Settings::default();
        assert_eq!(s.exchange.mode, ExchangeMode::Remote);
        assert_eq!(
            invalid_key(&s).map(|k| k.0),
            Some("exchange.connection_uris")
        );
    }

    #[test]
    fn ntlm_without_an_answer_to_the_second_hop_is_refused_with_the_remedies() {
        let s = remote(WinrmAuth::Ntlm);
        let (key, reason) = invalid_key(&s).expect("refused");
        assert_eq!(key, "exchange.second_hop");
        for remedy in [
            "exchange.username",
            "PrincipalsAllowedToDelegateToAccount",
            "Enable-WSManCredSSP",
        ] {
            assert!(reason.contains(remedy), "{reason}");
        }
        let mut snapin = remote(WinrmAuth::Kerberos);
        snapin.exchange.mode = ExchangeMode::Snapin;
        assert_eq!(
            invalid_key(&snapin).map(|k| k.0),
            Some("exchange.second_hop")
        );
    }

    #[test]
    fn each_remedy_is_accepted_where_it_applies() {
        let mut credential = remote(WinrmAuth::Ntlm);
        credential.exchange.username = Some("CORP\\svc".into());
        credential.exchange.password = Some(SecretString::from("x"));
        assert!(credential.validate_exchange().is_ok());
        // Delegation carries the snap-in's LDAP hop, not WinRM's hop to Exchange.
        let mut delegation = remote(WinrmAuth::Kerberos);
        delegation.exchange.second_hop = Some(SecondHop::Delegation);
        let (key, reason) = invalid_key(&delegation).expect("refused in remote mode");
        assert_eq!(key, "exchange.second_hop");
        assert!(
            reason.contains("Doesn't support the second hop for WinRM"),
            "{reason}"
        );
        delegation.exchange.mode = ExchangeMode::Snapin;
        assert!(delegation.validate_exchange().is_ok());
        // Basic logs a local account on: no domain identity to pass on.
        assert_eq!(
            invalid_key(&remote(WinrmAuth::Basic)).map(|k| k.0),
            Some("winrm.auth")
        );
        let mut credssp = remote(WinrmAuth::Ntlm);
        credssp.exchange.second_hop = Some(SecondHop::Credssp);
        assert_eq!(invalid_key(&credssp).map(|k| k.0), Some("winrm.auth"));
        // CredSSP delegates the password: it answers the second hop by itself, in both modes.
        let mut credssp = remote(WinrmAuth::CredSsp);
        assert!(credssp.validate_exchange().is_ok());
        credssp.exchange.mode = ExchangeMode::Snapin;
        assert!(credssp.validate_exchange().is_ok());
        let mut ntlm_delegation = remote(WinrmAuth::Ntlm);
        ntlm_delegation.exchange.second_hop = Some(SecondHop::Delegation);
        assert_eq!(
            invalid_key(&ntlm_delegation).map(|k| k.0),
            Some("winrm.auth")
        );
        let mut snapin = remote(WinrmAuth::Ntlm);
        snapin.exchange.mode = ExchangeMode::Snapin;
        snapin.exchange.second_hop = Some(SecondHop::Credential);
        assert_eq!(
            invalid_key(&snapin).map(|k| k.0),
            Some("exchange.second_hop")
        );
    }

    #[test]
    fn the_shipped_example_configuration_loads_once_given_its_ldap_password() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/mailboxd.example.toml");
        // As shipped, its bind_dn has no password: refused, not an anonymous bind.
        match Settings::load(Some(&path)) {
            Err(ConfigError::Invalid { key, reason }) => {
                assert_eq!(key, "ldap.password_file");
                assert!(reason.contains("anonymous bind"), "{reason}");
            }
            other => panic!("a bind_dn without a password must be refused: {other:?}"),
        }
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("ldap-password");
        std::fs::write(&pw, "svc-password\n").unwrap();
        let text = std::fs::read_to_string(&path).unwrap().replace(
            "# password_file = \"/run/credentials/mailboxd/ldap-password\"",
            &format!("password_file = {:?}", pw),
        );
        let given = dir.path().join("mailboxd.toml");
        std::fs::write(&given, text).unwrap();
        let s = Settings::load(Some(&given)).expect("deploy/mailboxd.example.toml is valid");
        assert_eq!(s.ldap.sync_rule, SyncRule::ConsistencyGuid);
        assert_eq!(s.worker.sync_deadline, Duration::from_secs(7200));
    }

    #[test]
    fn debug_of_the_configuration_never_shows_a_secret() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = Vec::new();
        for (name, value) in [
            ("winrm", "winrm-S3cret-value"),
            ("ldap", "ldap-S3cret-value"),
            ("smtp", "smtp-S3cret-value"),
            ("exchange", "exch-S3cret-value"),
            ("token", "token-S3cret-value-0123456789"),
        ] {
            let p = dir.path().join(name);
            std::fs::write(&p, format!("{value}\n")).unwrap();
            files.push(p);
        }
        let toml = format!(
            "[winrm]\npassword_file = {:?}\n[ldap]\npassword_file = {:?}\n[smtp]\npassword_file = {:?}\n[exchange]\nusername = \"svc\"\npassword_file = {:?}\n[admin]\ntoken_file = {:?}\n",
            files[0], files[1], files[2], files[3], files[4]
        );
        let cfg_path = dir.path().join("mailboxd.toml");
        std::fs::write(&cfg_path, toml).unwrap();
        let s = Settings::load(Some(&cfg_path)).unwrap();
        // The secrets were read (trailing newline stripped)...
        assert_eq!(
            s.winrm.password.as_ref().unwrap().expose_secret(),
            "winrm-S3cret-value"
        );
        assert_eq!(
            s.admin.token.as_ref().unwrap().expose_secret(),
            "token-S3cret-value-0123456789"
        );
        // ...all five are known as what to black out of texts from outside...
        let mut all = s.secret_values();
        assert_eq!(all.len(), 5, "{}", all.len());
        assert!(
            all.windows(2).all(|w| w[0].len() >= w[1].len()),
            "longest first"
        );
        all.sort();
        assert_eq!(all[4], "winrm-S3cret-value");
        // ...and no form of printing the configuration shows any of them.
        for shown in [format!("{s:?}"), format!("{s:#?}")] {
            assert!(!shown.contains("S3cret"), "secret leaked: {shown}");
            assert!(shown.contains("REDACTED"));
        }
    }

    #[test]
    fn api_tokens_below_128_bits_are_weak() {
        for weak in [
            "ops-token-for-tests",
            "0123456789abcdef0123456789",
            "aaaaaaaaaaaaaaaaaaaa",
        ] {
            assert!(weak_token(weak).is_some(), "{weak}");
        }
        // `openssl rand -hex 32` / `-hex 16`, 22 base64 characters.
        for strong in [
            "6f1d0c2a9b3e4f5a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c",
            "6f1d0c2a9b3e4f5a6b7c8d9e0f1a2b3c",
            "q3Zx9_Lm2Pw8Rt5Yv1Bn0KsT",
            "qwZxeLmoPwhRtaYvcBnxKsTu",
        ] {
            assert!(weak_token(strong).is_none(), "{strong}");
        }
    }

    #[test]
    fn group_dns_from_the_environment_are_separated_by_semicolons_or_a_json_array() {
        #[derive(Deserialize, Debug)]
        struct G {
            #[serde(deserialize_with = "admin::dn_list_for_tests")]
            g: Vec<String>,
        }
        // Through the configuration crate, as the environment's text or a file's array.
        let from = |v: config::Value| {
            config::Config::builder()
                .set_override("g", v)
                .unwrap()
                .build()
                .unwrap()
                .try_deserialize::<G>()
                .unwrap()
                .g
        };
        let parse = |v: serde_json::Value| match v {
            serde_json::Value::String(t) => from(t.into()),
            serde_json::Value::Array(a) => from(
                a.into_iter()
                    .map(|x| x.as_str().unwrap().to_owned())
                    .collect::<Vec<_>>()
                    .into(),
            ),
            other => panic!("{other}"),
        };
        let users = "CN=mbx-operators,CN=Users,DC=corp,DC=example";
        let ou = "CN=Ops\\; Night,OU=Groups,DC=corp,DC=example";
        assert_eq!(parse(format!("{users};{ou}").into()), [users, ou]);
        assert_eq!(parse(format!(" {users} ; ").into()), [users]);
        assert_eq!(parse(serde_json::json!([users, ou])), [users, ou]);
        assert_eq!(
            parse(serde_json::to_string(&[users, ou]).unwrap().into()),
            [users, ou]
        );
        assert_eq!(admin::dn_problem(users), None);
        assert_eq!(admin::dn_problem(ou), None);
        let glued = format!("{users},CN=mbx-viewers,CN=Users,DC=corp,DC=example");
        assert!(
            admin::dn_problem(&glued)
                .unwrap()
                .contains("separate DNs with ';'")
        );
        assert!(admin::dn_problem("mbx-operators").is_some());
    }

    #[test]
    fn durations_accept_units() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("5 weeks").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn a_missing_secret_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("c.toml");
        std::fs::write(&cfg, "[winrm]\npassword_file = \"/nonexistent/pw\"\n").unwrap();
        let err = Settings::load(Some(&cfg)).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/pw"), "{err}");
    }
}
