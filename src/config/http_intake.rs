//! `[http_intake]`: the HTTP intake's own listener, for senders that cannot reach a broker
//! (SailPoint Identity Security Cloud's event triggers): HTTPS, its credentials, its limits.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use super::*;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpIntake {
    /// Address to listen on (e.g. `0.0.0.0:8443`). None: no HTTP intake.
    pub listen: Option<String>,
    /// PEM certificate chain (with `tls_key_file`): required, the intake serves HTTPS only.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// File holding the bearer token a sender presents (`Authorization: Bearer …`).
    pub token_file: Option<PathBuf>,
    /// The user name of Basic authentication (with `password_file`).
    pub username: Option<String>,
    /// File holding the Basic password of `username`.
    pub password_file: Option<PathBuf>,
    /// A body over this many bytes is refused with 413, unread.
    pub max_body_bytes: usize,
    /// A client must send a request's headers within this; an idle kept-alive connection
    /// is closed after it.
    #[serde(with = "humantime_secs")]
    pub header_read_timeout: Duration,
    /// Connections (and TLS handshakes) served at once.
    pub max_connections: usize,
    /// The Identity Security Cloud sources (by name or id, without case) that are this
    /// Active Directory: only their account requests in a Provisioning Completed payload
    /// become events. Empty (the default): none do.
    pub isc_ad_sources: Vec<String>,
    #[serde(skip)]
    pub token: Option<SecretString>,
    #[serde(skip)]
    pub password: Option<SecretString>,
}

impl Default for HttpIntake {
    fn default() -> Self {
        HttpIntake {
            listen: None,
            tls_cert_file: None,
            tls_key_file: None,
            token_file: None,
            username: None,
            password_file: None,
            max_body_bytes: crate::event::MAX_MESSAGE_BYTES,
            header_read_timeout: Duration::from_secs(10),
            max_connections: 64,
            isc_ad_sources: Vec::new(),
            token: None,
            password: None,
        }
    }
}

impl Settings {
    /// `[http_intake]`, when it listens: HTTPS, at least one credential (a token strong
    /// enough, or a user with a password), a body limit the decoders accept.
    pub(super) fn validate_http_intake(&self) -> Result<(), ConfigError> {
        use secrecy::ExposeSecret;
        let h = &self.http_intake;
        if h.listen.is_none() {
            return Ok(());
        }
        let invalid = |key, reason: String| Err(ConfigError::Invalid { key, reason });
        if h.tls_cert_file.is_none() || h.tls_key_file.is_none() {
            return invalid(
                "http_intake.tls_cert_file",
                "the HTTP intake takes credentials and serves HTTPS only: set http_intake.tls_cert_file and http_intake.tls_key_file".into(),
            );
        }
        if h.token.is_none() && h.username.is_none() {
            return invalid(
                "http_intake.token_file",
                "the HTTP intake needs a credential: http_intake.token_file (or MAILBOXD_HTTP_INTAKE_TOKEN), or http_intake.username with http_intake.password_file".into(),
            );
        }
        if let Some(bits) = h.token.as_ref().and_then(|t| weak_token(t.expose_secret())) {
            return invalid(
                "http_intake.token_file",
                format!("the token has about {bits:.0} bits; {TOKEN_ADVICE}"),
            );
        }
        match (&h.username, &h.password) {
            (Some(u), _) if u.is_empty() || u.contains(':') || u.chars().any(char::is_control) => {
                return invalid(
                    "http_intake.username",
                    "a Basic user name is not empty and has no ':' or control character (RFC 7617)"
                        .into(),
                );
            }
            (Some(_), p)
                if p.as_ref()
                    .and_then(|p| weak_token(p.expose_secret()))
                    .is_some()
                    || p.is_none() =>
            {
                return invalid(
                    "http_intake.password_file",
                    format!(
                        "http_intake.username needs a password (http_intake.password_file or MAILBOXD_HTTP_INTAKE_PASSWORD) of at least 128 bits; {TOKEN_ADVICE}"
                    ),
                );
            }
            (None, Some(_)) => {
                return invalid(
                    "http_intake.username",
                    "a Basic password is set without http_intake.username".into(),
                );
            }
            _ => {}
        }
        if h.max_body_bytes == 0 || h.max_body_bytes > crate::event::MAX_MESSAGE_BYTES {
            return invalid(
                "http_intake.max_body_bytes",
                format!(
                    "between 1 and {} (the largest message the decoders read)",
                    crate::event::MAX_MESSAGE_BYTES
                ),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRONG: &str = "1f0c8a4d9b7e6a5c3d2b1a09f8e7d6c5";

    fn listening() -> Settings {
        let mut s = Settings::default();
        let h = &mut s.http_intake;
        h.listen = Some("127.0.0.1:8443".into());
        h.tls_cert_file = Some("/etc/mailboxd/intake.crt".into());
        h.tls_key_file = Some("/etc/mailboxd/intake.key".into());
        h.token = Some(SecretString::from(STRONG));
        s
    }

    fn refused_key(s: &Settings) -> Option<&'static str> {
        match s.validate_http_intake() {
            Err(ConfigError::Invalid { key, .. }) => Some(key),
            _ => None,
        }
    }

    #[test]
    fn a_listening_intake_needs_tls_a_strong_credential_and_a_readable_body_limit() {
        assert_eq!(
            refused_key(&Settings::default()),
            None,
            "off: nothing to check"
        );
        assert_eq!(refused_key(&listening()), None);
        let mut s = listening();
        s.http_intake.tls_key_file = None;
        assert_eq!(refused_key(&s), Some("http_intake.tls_cert_file"));
        let mut s = listening();
        s.http_intake.token = None;
        assert_eq!(refused_key(&s), Some("http_intake.token_file"));
        s.http_intake.token = Some(SecretString::from("password1"));
        assert_eq!(refused_key(&s), Some("http_intake.token_file"));
        let mut s = listening();
        s.http_intake.username = Some("isc".into());
        assert_eq!(
            refused_key(&s),
            Some("http_intake.password_file"),
            "no password"
        );
        s.http_intake.password = Some(SecretString::from("short"));
        assert_eq!(refused_key(&s), Some("http_intake.password_file"));
        s.http_intake.password = Some(SecretString::from(STRONG));
        assert_eq!(refused_key(&s), None);
        s.http_intake.username = Some("is:c".into());
        assert_eq!(refused_key(&s), Some("http_intake.username"));
        let mut s = listening();
        s.http_intake.password = Some(SecretString::from(STRONG));
        assert_eq!(
            refused_key(&s),
            Some("http_intake.username"),
            "a password alone"
        );
        let mut s = listening();
        s.http_intake.max_body_bytes = crate::event::MAX_MESSAGE_BYTES + 1;
        assert_eq!(refused_key(&s), Some("http_intake.max_body_bytes"));
    }
}
