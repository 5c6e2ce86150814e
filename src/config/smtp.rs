//! `[smtp]`: where alerts are sent.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    Starttls,
    Implicit,
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Smtp {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub from: String,
    pub to: Vec<String>,
    /// Extra PEM CA certificate(s) trusted for the SMTP server, besides the system roots.
    pub ca_file: Option<PathBuf>,
    #[serde(with = "humantime_secs")]
    pub timeout: Duration,
    /// First pause after a failed send; doubles per failure, up to 15 minutes.
    #[serde(with = "humantime_secs")]
    pub retry_base: Duration,
    /// Recipients per error class (`permanent`, `systemic`, `transient`, `not_synced`,
    /// `reconcile`) instead of `to`, e.g. support for account problems, operations for outages.
    pub to_by_class: std::collections::HashMap<String, Vec<String>>,
    /// Failures with the same problem within this window go out as one digest email.
    #[serde(with = "humantime_secs")]
    pub digest_window: Duration,
    /// Alert emails per hour at most; the rest stay in the outbox, marked suppressed.
    pub hourly_cap: u32,
    #[serde(skip)]
    pub password: Option<SecretString>,
}

impl Default for Smtp {
    fn default() -> Self {
        Smtp {
            host: String::new(),
            port: 587,
            tls: SmtpTls::Starttls,
            username: None,
            password_file: None,
            from: "mailboxd@localhost".into(),
            to: Vec::new(),
            ca_file: None,
            timeout: Duration::from_secs(30),
            retry_base: Duration::from_secs(10),
            to_by_class: std::collections::HashMap::new(),
            digest_window: Duration::from_secs(60),
            hourly_cap: 30,
            password: None,
        }
    }
}
