//! What can go wrong talking to Microsoft, each saying what to do next: the token endpoint's
//! refusals by their AADSTS code (meanings from Microsoft's "authentication and authorization
//! error codes" reference), Graph's refusals by their `error.code`, throttling with its wait.

use std::time::Duration;

/// One failed token request or Graph read.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// The `[graph]` settings or the files they name.
    #[error("graph: {0}")]
    Config(String),
    /// The text that should name a user names none: it is never sent.
    #[error(
        "{0:?} names no Entra user: expected an object ID (msDS-ExternalDirectoryObjectId, User_<GUID> or the GUID) or a user principal name"
    )]
    NotAUser(String),
    /// The token endpoint refused the request (`error`, AADSTS code, Microsoft's text).
    #[error("the token endpoint refused the client assertion: {description} — {}", remedy(*code))]
    TokenRefused {
        error: String,
        code: Option<u32>,
        description: String,
    },
    /// Graph answered 401: the token was not accepted.
    #[error(
        "Microsoft Graph refused the access token ({code}: {message}) — check that graph.graph_url is Microsoft Graph of the same cloud as graph.authority_url"
    )]
    TokenNotAccepted { code: String, message: String },
    /// Graph answered 403: the app lacks an application permission.
    #[error(
        "Microsoft Graph denied {what} ({code}: {message}) — grant the application permission {permission} to the app registration (API permissions → Microsoft Graph → Application permissions) and give admin consent"
    )]
    PermissionMissing {
        what: &'static str,
        permission: &'static str,
        code: String,
        message: String,
    },
    /// 429 or 503: come back after the wait Graph (or the token endpoint) stated.
    #[error("Microsoft throttled the request (HTTP {status}): retry after {} ms, as its Retry-After says", retry_after.as_millis())]
    Throttled { status: u16, retry_after: Duration },
    /// A 5xx without a stated wait.
    #[error("Microsoft is unavailable (HTTP {status}: {detail}) — retried later")]
    Unavailable { status: u16, detail: String },
    /// An answer mailboxd does not understand.
    #[error("Microsoft's answer was not understood (HTTP {status}: {detail})")]
    Unexpected { status: u16, detail: String },
    /// No answer: DNS, TCP, TLS (CA checks), or the deadline.
    #[error(
        "cannot reach {url}: {detail} — check the network path, and for a certificate error graph.ca_file"
    )]
    Network { url: String, detail: String },
}

impl GraphError {
    /// How long Microsoft asked to wait, when it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            GraphError::Throttled { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// Whether trying again later can help without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            GraphError::Throttled { .. }
                | GraphError::Unavailable { .. }
                | GraphError::Network { .. }
        )
    }

    /// The AADSTS code of a token refusal.
    pub fn aadsts(&self) -> Option<u32> {
        match self {
            GraphError::TokenRefused { code, .. } => *code,
            _ => None,
        }
    }
}

/// What to do about a token refusal, by its AADSTS code.
fn remedy(code: Option<u32>) -> &'static str {
    match code {
        Some(700027) => {
            "the certificate registered on the app is not the one in graph.certificate_file (upload it under App registrations → Certificates & secrets, or point graph.certificate_file and graph.private_key_file at the registered one)"
        }
        Some(700024) => {
            "the assertion is outside its valid time range: this host's clock is off (check NTP)"
        }
        Some(700016) | Some(700011) => {
            "no such application in the tenant: check graph.client_id and graph.tenant_id"
        }
        Some(90002) => "no such tenant: check graph.tenant_id",
        Some(7000112) | Some(70001) => "the application is disabled in the tenant",
        Some(700023) | Some(700021) | Some(50048) => {
            "the assertion's aud, iss or sub does not match the token endpoint or graph.client_id: check graph.authority_url and graph.client_id"
        }
        Some(50012) | Some(50017) | Some(700030) => {
            "the certificate itself is refused: use a certificate the tenant accepts"
        }
        Some(700025) => "the app is registered as a public client: it cannot use a certificate",
        _ => {
            "see the code in Microsoft's AADSTS error reference; mailboxd's request is fixed, so report it if it names a parameter"
        }
    }
}

/// The documented error body of the token endpoint (`error`, `error_description`,
/// `error_codes`, `timestamp`, `trace_id`, `correlation_id`).
#[derive(Debug, serde::Deserialize)]
pub(super) struct TokenErrorBody {
    pub(super) error: String,
    #[serde(default)]
    pub error_description: String,
    #[serde(default)]
    pub error_codes: Vec<u32>,
}

/// Graph's error body: `{"error": {"code", "message", "innerError": {…}}}`.
#[derive(Debug, serde::Deserialize)]
pub(super) struct GraphErrorBody {
    pub error: GraphErrorDetail,
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct GraphErrorDetail {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
}

/// The first line of a token refusal's description (Microsoft appends trace and correlation
/// IDs and a timestamp on further lines), at most 400 characters.
pub(super) fn first_line(description: &str) -> String {
    description
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(400)
        .collect()
}

/// `Retry-After` as Graph sends it: seconds, possibly with a fraction ("2.128", Microsoft
/// Graph throttling guidance), or an HTTP date; capped at an hour so a wild value cannot park
/// a caller for days.
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    const CAP: Duration = Duration::from_secs(3600);
    let v = value.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::from_secs_f64(secs.min(3600.0)));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let at = std::time::SystemTime::from(at);
    Some(at.duration_since(now).unwrap_or_default().min(CAP))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_fractions_and_dates() {
        let now = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(
            parse_retry_after("2.128", now),
            Some(Duration::from_millis(2128))
        );
        assert_eq!(parse_retry_after("10", now), Some(Duration::from_secs(10)));
        assert_eq!(
            parse_retry_after("999999", now),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        // 2001-09-09T01:46:40Z is the epoch + 1e9 s: 30 s later.
        let date = "Sun, 09 Sep 2001 01:47:10 GMT";
        assert_eq!(parse_retry_after(date, now), Some(Duration::from_secs(30)));
    }

    #[test]
    fn a_wrong_certificate_names_the_file_to_fix() {
        let e = GraphError::TokenRefused {
            error: "invalid_client".into(),
            code: Some(700027),
            description: "AADSTS700027: Client assertion failed signature validation.".into(),
        };
        let text = e.to_string();
        assert!(text.contains("AADSTS700027"), "{text}");
        assert!(text.contains("graph.certificate_file"), "{text}");
        assert!(!e.is_transient());
    }
}
