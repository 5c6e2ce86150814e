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
    /// From the environment: DNs separated by `;` (or a JSON array), see [`dn_list`].
    #[serde(deserialize_with = "dn_list")]
    pub viewer_groups: Vec<String>,
    /// AD groups (DNs) whose members may also retry, cancel and replay; nested counts.
    #[serde(deserialize_with = "dn_list")]
    pub operator_groups: Vec<String>,
    /// Reverse proxies (CIDRs or addresses) whose `X-Forwarded-For` names the client for
    /// the sign-in limit per address; from anyone else the header is ignored.
    pub trusted_proxies: Vec<String>,
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
    /// A client must send a request's headers within this, and a kept-alive connection
    /// with no request for this long is closed.
    #[serde(with = "humantime_secs")]
    pub header_read_timeout: Duration,
    /// Connections served at once at most; more clients wait to be accepted.
    pub max_connections: usize,
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
    pub role: crate::access::Role,
    /// File holding the token (trailing newline stripped).
    pub token_file: PathBuf,
    #[serde(skip)]
    pub token: Option<SecretString>,
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
            trusted_proxies: Vec::new(),
            domain: String::new(),
            session_idle: Duration::from_secs(30 * 60),
            session_lifetime: Duration::from_secs(12 * 3600),
            group_check_interval: Duration::from_secs(5 * 60),
            tls_cert_file: None,
            tls_key_file: None,
            header_read_timeout: Duration::from_secs(10),
            max_connections: 256,
            tokens: Vec::new(),
            token: None,
        }
    }
}

impl Settings {
    /// `[admin]` across its keys: group DNs that are DNs, trusted proxies that are CIDRs, and
    /// an `admin.token` strong enough (named tokens are checked with their names).
    pub(super) fn validate_admin(&self) -> Result<(), ConfigError> {
        let a = &self.admin;
        for (key, groups) in [
            ("admin.viewer_groups", &a.viewer_groups),
            ("admin.operator_groups", &a.operator_groups),
        ] {
            if let Some(reason) = groups.iter().find_map(|dn| dn_problem(dn)) {
                return Err(ConfigError::Invalid { key, reason });
            }
        }
        a.proxies().map_err(|reason| ConfigError::Invalid {
            key: "admin.trusted_proxies",
            reason,
        })?;
        use secrecy::ExposeSecret;
        if let Some(bits) = a.token.as_ref().and_then(|t| weak_token(t.expose_secret())) {
            return Err(ConfigError::Invalid {
                key: "admin.token_file",
                reason: format!(
                    "the token (admin.token_file or MAILBOXD_ADMIN_TOKEN) has about {bits:.0} bits; {TOKEN_ADVICE}"
                ),
            });
        }
        Ok(())
    }

    /// A bind DN without a password would be an unauthenticated bind, which a DC answers
    /// with success and then serves as anonymous: refused before it can look like it works.
    pub(super) fn validate_ldap_bind(&self) -> Result<(), ConfigError> {
        use secrecy::ExposeSecret;
        let l = &self.ldap;
        let empty = l
            .password
            .as_ref()
            .is_none_or(|p| p.expose_secret().is_empty());
        if !l.bind_dn.is_empty() && empty {
            return Err(ConfigError::Invalid {
                key: "ldap.password_file",
                reason: format!(
                    "ldap.bind_dn is {:?} but there is no password (ldap.password_file or MAILBOXD_LDAP_PASSWORD, empty or unset): a bind with an empty password is an anonymous bind that AD answers with success; set the service account's password",
                    l.bind_dn
                ),
            });
        }
        Ok(())
    }
}

impl Admin {
    /// `trusted_proxies` as networks; a bare address is a network of one.
    pub fn proxies(&self) -> Result<Vec<ipnet::IpNet>, String> {
        self.trusted_proxies
            .iter()
            .map(|p| {
                let p = p.trim();
                p.parse::<ipnet::IpNet>()
                    .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        format!("{p:?} is neither a CIDR (10.0.0.0/8, fd00::/64) nor an address")
                    })
            })
            .collect()
    }
}

/// A list of DNs: an array (the TOML file), or one text (an environment variable) holding
/// the DNs separated by `;` or written as a JSON array. A comma cannot separate DNs, as
/// every DN has commas; RFC 4514 makes `;` a special character that must be escaped
/// (`\;`) inside a value, so an unescaped `;` is always between two DNs.
fn dn_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    // `deserialize_seq` with a visitor that takes a text too: the configuration's values
    // hand either to it, and the docs' tracer sees a list of strings.
    d.deserialize_seq(DnList)
}

struct DnList;

impl<'de> serde::de::Visitor<'de> for DnList {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of DNs, or DNs separated by ';', or a JSON array of DNs")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
        let mut out = Vec::new();
        while let Some(dn) = seq.next_element::<String>()? {
            out.push(dn.trim().to_owned());
        }
        Ok(out)
    }

    fn visit_str<E: serde::de::Error>(self, t: &str) -> Result<Vec<String>, E> {
        if t.trim_start().starts_with('[') {
            return serde_json::from_str::<Vec<String>>(t)
                .map(|l| l.into_iter().map(|dn| dn.trim().to_owned()).collect())
                .map_err(|e| E::custom(format!("a JSON array of DNs: {e}")));
        }
        Ok(split_unescaped(t, ';')
            .into_iter()
            .map(str::trim)
            .filter(|dn| !dn.is_empty())
            .map(str::to_owned)
            .collect())
    }
}

#[cfg(test)]
pub(super) fn dn_list_for_tests<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<String>, D::Error> {
    dn_list(d)
}

/// `text` cut at each `sep` that no backslash escapes (RFC 4514 escaping).
pub(crate) fn split_unescaped(text: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut escaped) = (0, false);
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            c if c == sep => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// Why `dn` cannot be one group's DN, if it cannot: empty, or two DNs run together (a
/// `DC=` followed by another RDN, as `CN=a,DC=corp,CN=b,DC=corp` from a comma-separated
/// environment variable of older releases).
pub(crate) fn dn_problem(dn: &str) -> Option<String> {
    let rdns: Vec<&str> = split_unescaped(dn, ',')
        .into_iter()
        .map(str::trim)
        .collect();
    let attr = |rdn: &str| {
        rdn.split_once('=')
            .map(|(k, _)| k.trim().to_ascii_uppercase())
    };
    if rdns.iter().any(|r| attr(r).is_none()) {
        return Some(format!(
            "{dn:?} is not a DN (attribute=value pairs separated by commas)"
        ));
    }
    let glued = rdns
        .windows(2)
        .any(|w| attr(w[0]).as_deref() == Some("DC") && attr(w[1]).as_deref() != Some("DC"));
    glued.then(|| {
        format!(
            "{dn:?} looks like several DNs run together: separate DNs with ';' (or give a JSON array)"
        )
    })
}
