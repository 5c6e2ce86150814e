//! `[admin]`: the admin listener, its sign-in, sessions, tokens and TLS.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use super::*;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Admin {
    pub listen: String,
    /// Bearer token for `/api/v1` (every write, and reads unless `open_reads`).
    pub token_file: Option<PathBuf>,
    /// Serve the read-only API without a token (logged at start). Off by default.
    pub open_reads: bool,
    /// The name operator actions done with the token are recorded under (`api:<name>`,
    /// `dashboard:<name>`), e.g. the team that holds it.
    pub token_name: String,
    /// Where operators reach the dashboard (e.g. https://mailboxd.corp.example); alert
    /// emails link to the job there.
    pub public_url: Option<String>,
    /// AD groups (DNs) whose members may read the dashboard; nested membership counts.
    pub viewer_groups: Vec<String>,
    /// AD groups (DNs) whose members may also retry, cancel and replay; nested counts.
    pub operator_groups: Vec<String>,
    /// The NetBIOS domain people are recorded under (`dashboard:CORP\jdoe`). Empty: the
    /// first `DC=` of `[ldap].base_dn`, upper-cased.
    pub domain: String,
    /// A dashboard session not used for this long ends.
    #[serde(with = "humantime_secs")]
    pub session_idle: Duration,
    /// A dashboard session ends this long after sign-in, used or not.
    #[serde(with = "humantime_secs")]
    pub session_lifetime: Duration,
    /// How often a session's group membership (and the account being enabled) is read
    /// again from AD; a person no longer in the groups is signed out.
    #[serde(with = "humantime_secs")]
    pub group_check_interval: Duration,
    /// PEM certificate chain: the admin listener serves HTTPS (with `tls_key_file`).
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// Named API tokens for automation, each a viewer or an operator (`[[admin.tokens]]`).
    pub tokens: Vec<ApiToken>,
    #[serde(skip)]
    pub token: Option<SecretString>,
}

/// One named API token: actions with it are recorded as `api:<name>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    pub name: String,
    pub role: TokenRole,
    /// File holding the token (trailing newline stripped).
    pub token_file: PathBuf,
    #[serde(skip)]
    pub token: Option<SecretString>,
}

/// What an API token may do: read, or also act (retry, cancel, replay).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenRole {
    Viewer,
    Operator,
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            listen: "127.0.0.1:8080".into(),
            token_file: None,
            open_reads: false,
            token_name: "admin".into(),
            public_url: None,
            viewer_groups: Vec::new(),
            operator_groups: Vec::new(),
            domain: String::new(),
            session_idle: Duration::from_secs(30 * 60),
            session_lifetime: Duration::from_secs(12 * 3600),
            group_check_interval: Duration::from_secs(5 * 60),
            tls_cert_file: None,
            tls_key_file: None,
            tokens: Vec::new(),
            token: None,
        }
    }
}
