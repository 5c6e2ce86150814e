//! `[graph]`: Microsoft Graph, read app-only with a certificate, to see a user's Exchange Online
//! mailbox (`graph`). Off unless `tenant_id` is set.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use super::*;

/// The app registration mailboxd signs in as, and where Microsoft's endpoints are.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Graph {
    /// The Entra tenant: its ID (a GUID) or its `….onmicrosoft.com` name. Absent: off.
    pub tenant_id: Option<String>,
    /// The app registration's Application (client) ID.
    pub client_id: Option<String>,
    /// The certificate registered on the app (PEM): its SHA-256 thumbprint names the key.
    pub certificate_file: Option<PathBuf>,
    /// The certificate's RSA private key (PEM, PKCS#8 or PKCS#1); or `MAILBOXD_GRAPH_PRIVATE_KEY`.
    pub private_key_file: Option<PathBuf>,
    /// Extra CA certificate(s), PEM, for both endpoints' HTTPS certificates.
    pub ca_file: Option<PathBuf>,
    /// The Microsoft identity platform's host (national clouds have their own).
    pub authority_url: String,
    /// Microsoft Graph's host (national clouds have their own).
    pub graph_url: String,
    /// Deadline of one HTTP request (token or read).
    #[serde(with = "humantime_secs")]
    pub timeout: Duration,
    #[serde(skip)]
    pub private_key: Option<SecretString>,
}

impl Default for Graph {
    fn default() -> Self {
        Graph {
            tenant_id: None,
            client_id: None,
            certificate_file: None,
            private_key_file: None,
            ca_file: None,
            authority_url: "https://login.microsoftonline.com".into(),
            graph_url: "https://graph.microsoft.com".into(),
            timeout: Duration::from_secs(30),
            private_key: None,
        }
    }
}

impl Graph {
    /// Whether `[graph]` is in use.
    pub fn enabled(&self) -> bool {
        self.tenant_id.is_some()
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let Some(tenant) = &self.tenant_id else {
            return Ok(());
        };
        let invalid = |key, reason: String| ConfigError::Invalid { key, reason };
        // It becomes a path segment of the token URL: a GUID or a DNS name, nothing else.
        if tenant.is_empty()
            || !tenant
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return Err(invalid(
                "graph.tenant_id",
                format!("{tenant:?}: the tenant's ID (a GUID) or its domain name"),
            ));
        }
        match &self.client_id {
            Some(id) if uuid::Uuid::parse_str(id).is_ok() => {}
            _ => {
                return Err(invalid(
                    "graph.client_id",
                    "the app registration's Application (client) ID, a GUID".into(),
                ));
            }
        }
        if self.certificate_file.is_none() {
            return Err(invalid(
                "graph.certificate_file",
                "the certificate registered on the app (PEM)".into(),
            ));
        }
        if self.private_key.is_none() {
            return Err(invalid(
                "graph.private_key_file",
                "set it (or MAILBOXD_GRAPH_PRIVATE_KEY): the certificate's private key".into(),
            ));
        }
        for (key, value) in [
            ("graph.authority_url", &self.authority_url),
            ("graph.graph_url", &self.graph_url),
        ] {
            let url = url::Url::parse(value).map_err(|e| invalid(key, format!("{value}: {e}")))?;
            if url.scheme() != "https" || url.host_str().is_none() {
                return Err(invalid(key, format!("{value}: use an https:// URL")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configured() -> Graph {
        Graph {
            tenant_id: Some("contoso.onmicrosoft.com".into()),
            client_id: Some("0a4c1c7e-2f0b-4a57-9d5b-6c1e2f3a4b5c".into()),
            certificate_file: Some("/etc/mailboxd/graph.pem".into()),
            private_key: Some("-----BEGIN PRIVATE KEY-----".to_owned().into()),
            ..Graph::default()
        }
    }

    fn refused_key(g: &Graph) -> Option<&'static str> {
        match g.validate() {
            Err(ConfigError::Invalid { key, .. }) => Some(key),
            _ => None,
        }
    }

    #[test]
    fn off_by_default_and_every_part_required_once_on() {
        assert!(!Graph::default().enabled());
        assert_eq!(refused_key(&Graph::default()), None);
        assert_eq!(refused_key(&configured()), None);
        type Change = fn(&mut Graph);
        let cases: [(Change, &str); 5] = [
            (
                |g| g.tenant_id = Some("../common".into()),
                "graph.tenant_id",
            ),
            (
                |g| g.client_id = Some("not-a-guid".into()),
                "graph.client_id",
            ),
            (|g| g.certificate_file = None, "graph.certificate_file"),
            (|g| g.private_key = None, "graph.private_key_file"),
            (
                |g| g.graph_url = "http://graph.microsoft.com".into(),
                "graph.graph_url",
            ),
        ];
        for (change, key) in cases {
            let mut g = configured();
            change(&mut g);
            assert_eq!(refused_key(&g), Some(key));
        }
    }

    #[test]
    fn the_private_key_is_read_from_its_file_and_never_printed() {
        use secrecy::ExposeSecret;
        let dir = tempfile::tempdir().expect("temp dir");
        let key = dir.path().join("graph.key");
        let pem =
            "-----BEGIN PRIVATE KEY-----\nMIIEvK3y-S3cret-material\n-----END PRIVATE KEY-----\n";
        std::fs::write(&key, pem).expect("key file");
        let toml = format!(
            "[graph]\ntenant_id = \"contoso.onmicrosoft.com\"\nclient_id = \"0a4c1c7e-2f0b-4a57-9d5b-6c1e2f3a4b5c\"\ncertificate_file = \"/etc/mailboxd/graph.pem\"\nprivate_key_file = {key:?}\n"
        );
        let cfg = dir.path().join("mailboxd.toml");
        std::fs::write(&cfg, toml).expect("config file");
        let s = Settings::load(Some(&cfg)).expect("valid settings");
        let read = s.graph.private_key.as_ref().expect("the key was read");
        assert!(read.expose_secret().contains("MIIEvK3y-S3cret-material"));
        assert!(s.secret_values().iter().any(|v| v.contains("S3cret")));
        assert!(!format!("{s:?}").contains("S3cret"));
    }
}
