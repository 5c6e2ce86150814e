//! `[telemetry]`: where the daemon's spans go (OTLP over HTTP/protobuf, `otlp`). Off unless
//! `otlp_endpoint` is set; then HTTPS unless plain HTTP is allowed explicitly.

use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::*;

/// The environment variable that may hold the headers instead of `otlp_headers_file`.
const HEADERS_ENV: &str = "MAILBOXD_TELEMETRY_OTLP_HEADERS";

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Telemetry {
    /// The collector's OTLP/HTTP base URL (e.g. `https://otel.corp.example:4318`); spans go
    /// to `<otlp_endpoint>/v1/traces`. None: no spans are exported.
    pub otlp_endpoint: Option<String>,
    /// A file of `Name: value` lines sent with every export (`Authorization: Bearer …`, an
    /// API key header): secrets, so from a file or `MAILBOXD_TELEMETRY_OTLP_HEADERS`.
    pub otlp_headers_file: Option<PathBuf>,
    /// Extra CA certificate(s), PEM, for the collector's certificate.
    pub otlp_ca_file: Option<PathBuf>,
    /// Allows an `http://` endpoint (spans and headers in clear text); logged at start.
    pub otlp_allow_http: bool,
    /// Deadline of one export, its retries included.
    #[serde(with = "humantime_secs")]
    pub otlp_timeout: Duration,
    /// Spans waiting for export at most; more are dropped (counted, logged once), so a
    /// collector that is down never holds up provisioning.
    pub otlp_max_queue: usize,
    /// The `service.name` resource attribute the spans carry.
    pub service_name: String,
    #[serde(skip)]
    pub otlp_headers: Vec<(String, SecretString)>,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            otlp_endpoint: None,
            otlp_headers_file: None,
            otlp_ca_file: None,
            otlp_allow_http: false,
            otlp_timeout: Duration::from_secs(10),
            otlp_max_queue: 2048,
            service_name: "mailboxd".into(),
            otlp_headers: Vec::new(),
        }
    }
}

impl Telemetry {
    /// Only `[telemetry]`, read from the same sources as [`Settings::load`]: the daemon reads
    /// it before logging starts, since the span exporter is part of the log subscriber.
    pub fn load(path: Option<&Path>) -> Result<Telemetry, ConfigError> {
        let mut t: Telemetry = match sources(path)?.get("telemetry") {
            Ok(t) => t,
            Err(config::ConfigError::NotFound(_)) => Telemetry::default(),
            Err(e) => return Err(e.into()),
        };
        t.read_secrets()?;
        t.validate()?;
        Ok(t)
    }

    /// The headers, from `otlp_headers_file` or `MAILBOXD_TELEMETRY_OTLP_HEADERS`.
    pub(super) fn read_secrets(&mut self) -> Result<(), ConfigError> {
        self.otlp_headers = match secret(HEADERS_ENV, self.otlp_headers_file.as_deref())? {
            Some(text) => parse_headers(text.expose_secret())?,
            None => Vec::new(),
        };
        Ok(())
    }

    /// The collector's traces URL, when export is on.
    pub fn traces_url(&self) -> Option<String> {
        let base = self.otlp_endpoint.as_deref()?;
        Some(format!("{}/v1/traces", base.trim_end_matches('/')))
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: String| Err(ConfigError::Invalid { key, reason });
        if self.service_name.trim().is_empty() {
            return invalid("telemetry.service_name", "must not be empty".into());
        }
        if self.otlp_max_queue == 0 {
            return invalid("telemetry.otlp_max_queue", "must be at least 1".into());
        }
        if self.otlp_timeout.is_zero() {
            return invalid("telemetry.otlp_timeout", "must be more than 0".into());
        }
        let Some(endpoint) = &self.otlp_endpoint else {
            return Ok(());
        };
        let url = match url::Url::parse(endpoint) {
            Ok(u) => u,
            Err(e) => {
                return invalid(
                    "telemetry.otlp_endpoint",
                    format!(
                        "{e}: expected the collector's base URL, e.g. https://otel.corp.example:4318"
                    ),
                );
            }
        };
        match url.scheme() {
            "https" => {}
            "http" if self.otlp_allow_http => {}
            "http" => {
                return invalid(
                    "telemetry.otlp_endpoint",
                    "http:// sends spans and the export headers in clear text: use https://, or set telemetry.otlp_allow_http = true on a trusted network".into(),
                );
            }
            other => {
                return invalid(
                    "telemetry.otlp_endpoint",
                    format!("scheme {other}: OTLP/HTTP is https:// (or http:// when allowed)"),
                );
            }
        }
        if !url.username().is_empty() || url.password().is_some() {
            return invalid(
                "telemetry.otlp_endpoint",
                "holds credentials: put them in telemetry.otlp_headers_file (e.g. Authorization: Basic …) instead".into(),
            );
        }
        if url.query().is_some() || url.fragment().is_some() {
            return invalid(
                "telemetry.otlp_endpoint",
                "a base URL has no query or fragment: /v1/traces is appended to it".into(),
            );
        }
        Ok(())
    }
}

/// `Name: value` lines (blank lines and `#` comments skipped). A header the exporter sets
/// itself (`Content-Type`, `Content-Length`, `Host`) is refused.
fn parse_headers(text: &str) -> Result<Vec<(String, SecretString)>, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        key: "telemetry.otlp_headers_file",
        reason,
    };
    let mut headers = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // The value is a secret: an error names the line, never its text.
        let Some((name, value)) = line.split_once(':') else {
            return Err(invalid(format!("line {}: expected `Name: value`", n + 1)));
        };
        let name = name.trim();
        let value = value.trim();
        let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if name.is_empty() || !name.chars().all(token) {
            return Err(invalid(format!(
                "line {}: the header name is not an HTTP token",
                n + 1
            )));
        }
        if ["content-type", "content-length", "host"].contains(&name.to_ascii_lowercase().as_str())
        {
            return Err(invalid(format!(
                "line {}: {name} is set by the exporter",
                n + 1
            )));
        }
        if value.is_empty() || value.chars().any(|c| c.is_control() || !c.is_ascii()) {
            return Err(invalid(format!(
                "line {}: the value of {name} is empty or not visible ASCII",
                n + 1
            )));
        }
        headers.push((name.to_owned(), SecretString::from(value.to_owned())));
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_endpoint(url: &str) -> Telemetry {
        Telemetry {
            otlp_endpoint: Some(url.into()),
            ..Telemetry::default()
        }
    }

    fn refusal(t: &Telemetry) -> Option<(&'static str, String)> {
        match t.validate() {
            Ok(()) => None,
            Err(ConfigError::Invalid { key, reason }) => Some((key, reason)),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn off_by_default_and_https_when_on() {
        let t = Telemetry::default();
        assert_eq!(refusal(&t), None);
        assert_eq!(t.traces_url(), None);
        let t = with_endpoint("https://otel.corp.example:4318/");
        assert_eq!(refusal(&t), None);
        assert_eq!(
            t.traces_url().as_deref(),
            Some("https://otel.corp.example:4318/v1/traces")
        );
    }

    #[test]
    fn plain_http_only_when_allowed_and_no_credentials_in_the_url() {
        let mut t = with_endpoint("http://otel.corp.example:4318");
        let (key, why) = refusal(&t).expect("http refused");
        assert_eq!(key, "telemetry.otlp_endpoint");
        assert!(why.contains("otlp_allow_http"), "{why}");
        t.otlp_allow_http = true;
        assert_eq!(refusal(&t), None);
        for bad in [
            "https://user:pw@otel.corp.example",
            "https://otel.corp.example/?key=x",
            "grpc://otel.corp.example:4317",
            "otel.corp.example:4318",
        ] {
            assert_eq!(
                refusal(&with_endpoint(bad)).map(|r| r.0),
                Some("telemetry.otlp_endpoint"),
                "{bad}"
            );
        }
        let t = Telemetry {
            otlp_max_queue: 0,
            ..Telemetry::default()
        };
        assert_eq!(refusal(&t).map(|r| r.0), Some("telemetry.otlp_max_queue"));
    }

    #[test]
    fn headers_are_read_as_secrets_and_refused_without_echoing_them() {
        let h =
            parse_headers("# the collector's key\nAuthorization: Bearer s3cret\n\nx-api-key:k2 \n")
                .unwrap();
        let seen: Vec<(&str, &str)> = h
            .iter()
            .map(|(n, v)| (n.as_str(), v.expose_secret()))
            .collect();
        assert_eq!(
            seen,
            [("Authorization", "Bearer s3cret"), ("x-api-key", "k2")]
        );
        for bad in [
            "Authorization Bearer s3cret",
            "Bad Name: s3cret",
            "Content-Type: s3cret",
            "x-key: s3cr\u{7f}et",
            "x-key:",
        ] {
            let e = parse_headers(bad).expect_err(bad).to_string();
            assert!(e.contains("telemetry.otlp_headers_file"), "{e}");
            assert!(!e.contains("s3cr"), "{e}");
        }
    }
}
