//! Microsoft Graph, app-only and read-only: is a user's Exchange Online mailbox there, and if
//! not, why. The client signs in with the client-credentials grant and a certificate (a PS256
//! client assertion, `credential`), keeps the token until shortly before it expires, and reads
//! `GET /v1.0/users/{id}?$select=…` and `GET /v1.0/users/{id}/mailboxSettings` into a
//! `CloudMailboxView` (`view`). Every failure is a `GraphError` that says what to do.
//!
//! Where it connects comes from `[graph]` alone (`authority_url`, `graph_url`), never from an
//! event: a user is only ever a GUID or a UPN pushed as one escaped path segment.
//!
//! Permissions (application, admin-consented): `User.Read.All` for the user read,
//! `MailboxSettings.Read` for the mailbox read.

pub mod credential;
mod error;
mod view;

use std::time::{Duration, Instant, SystemTime};

use secrecy::{ExposeSecret, SecretString};

pub use credential::{AppCredential, AssertionClaims};
pub use error::{GraphError, parse_retry_after};
pub use view::{
    CloudMailboxState, CloudMailboxView, CloudUser, GraphUser, MailboxAnswer, MailboxPurpose,
    USER_SELECT, error_text, parse_mailbox_settings, parse_user,
};

use crate::config;
use error::{GraphErrorBody, TokenErrorBody, first_line};
pub(crate) use view::view as cloud_view;

/// The scope of an app-only token for Graph (the client-credentials grant's `.default`).
pub const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";
/// The `client_assertion_type` of a certificate credential.
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// A token is renewed this long before it expires (Graph tokens last about an hour).
const RENEW_BEFORE: Duration = Duration::from_secs(5 * 60);
/// The wait after a 429 that names none (Graph documents that it always sends Retry-After).
const DEFAULT_THROTTLE_WAIT: Duration = Duration::from_secs(30);
/// The error codes of a user Graph does not know.
const NO_SUCH_USER: &[&str] = &["Request_ResourceNotFound", "ErrorInvalidUser"];
/// The most of an answer read: Graph's user and settings answers are a few KiB.
const MAX_BODY: usize = 1 << 20;

/// Which user to read: its Entra object ID (`msDS-ExternalDirectoryObjectId` without its
/// `User_` prefix) or its UPN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserRef {
    ObjectId(uuid::Uuid),
    Upn(String),
}

impl UserRef {
    /// From AD's `msDS-ExternalDirectoryObjectId` (`User_<guid>`) or a bare object ID.
    pub fn object_id(text: &str) -> Result<UserRef, GraphError> {
        let guid = text.strip_prefix("User_").unwrap_or(text);
        uuid::Uuid::parse_str(guid)
            .map(UserRef::ObjectId)
            .map_err(|_| GraphError::NotAUser(text.to_owned()))
    }

    /// A user principal name (`name@domain`, no control characters).
    pub fn upn(text: &str) -> Result<UserRef, GraphError> {
        let ok = text.contains('@') && text.len() <= 1024 && !text.chars().any(char::is_control);
        if ok {
            Ok(UserRef::Upn(text.to_owned()))
        } else {
            Err(GraphError::Config(format!(
                "{text:?} is not a user principal name"
            )))
        }
    }

    /// The user to ask about for an AD account: its Entra object ID as Entra wrote it back
    /// (`msDS-ExternalDirectoryObjectId`), else its UPN; `None` when it shows neither.
    pub fn of_account(external_id: Option<&str>, upn: Option<&str>) -> Option<UserRef> {
        external_id
            .and_then(|id| UserRef::object_id(id).ok())
            .or_else(|| upn.and_then(|u| UserRef::upn(u).ok()))
    }

    fn segment(&self) -> String {
        match self {
            UserRef::ObjectId(g) => g.to_string(),
            UserRef::Upn(u) => u.clone(),
        }
    }
}

/// A token as the endpoint issued it (its value redacted in `Debug`).
#[derive(Debug)]
pub struct AccessToken {
    pub value: SecretString,
    pub expires_in: Duration,
}

struct CachedToken {
    value: SecretString,
    renew_at: Instant,
}

/// The read, for the permission a 403 names.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Read {
    User,
    MailboxSettings,
}

impl Read {
    fn what(self) -> &'static str {
        match self {
            Read::User => "the user read",
            Read::MailboxSettings => "the mailboxSettings read",
        }
    }

    fn permission(self) -> &'static str {
        match self {
            Read::User => "User.Read.All",
            Read::MailboxSettings => "MailboxSettings.Read",
        }
    }
}

/// One Graph answer that is not a failure.
pub(crate) enum Answer {
    Body(Vec<u8>),
    /// 404 `Request_ResourceNotFound` (or any 404 of a user read).
    NotFound,
    /// `MailboxNotEnabledForRESTAPI`: the user has no Exchange Online mailbox.
    NoMailbox,
}

/// The Graph client: one per daemon, shared (the token cache is inside).
pub struct GraphClient {
    http: reqwest::Client,
    token_url: String,
    graph_url: url::Url,
    credential: AppCredential,
    token: tokio::sync::Mutex<Option<CachedToken>>,
}

impl std::fmt::Debug for GraphClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphClient")
            .field("token_url", &self.token_url)
            .field("graph_url", &self.graph_url.as_str())
            .field("credential", &self.credential)
            .finish_non_exhaustive()
    }
}

impl GraphClient {
    /// `None` when `[graph]` is not configured (no `tenant_id`).
    pub fn from_config(cfg: &config::Graph) -> Result<Option<GraphClient>, GraphError> {
        let (Some(tenant), Some(client_id), Some(cert), Some(key)) = (
            &cfg.tenant_id,
            &cfg.client_id,
            &cfg.certificate_file,
            &cfg.private_key,
        ) else {
            return Ok(None);
        };
        winrm::tls::install_provider();
        let credential = AppCredential::load(client_id, cert, key)?;
        let mut builder = reqwest::Client::builder().timeout(cfg.timeout).no_proxy();
        if let Some(path) = &cfg.ca_file {
            builder = winrm::tls::trust_ca_file(builder, "graph.ca_file", path)
                .map_err(GraphError::Config)?;
        }
        let http = builder
            .build()
            .map_err(|e| GraphError::Config(format!("cannot build the HTTP client: {e}")))?;
        let graph_url = url::Url::parse(&cfg.graph_url)
            .map_err(|e| GraphError::Config(format!("graph.graph_url: {e}")))?;
        Ok(Some(GraphClient {
            http,
            token_url: format!(
                "{}/{tenant}/oauth2/v2.0/token",
                cfg.authority_url.trim_end_matches('/')
            ),
            graph_url,
            credential,
            token: tokio::sync::Mutex::new(None),
        }))
    }

    /// The token endpoint (`{authority_url}/{tenant}/oauth2/v2.0/token`): the assertion's `aud`.
    pub fn token_url(&self) -> &str {
        &self.token_url
    }

    /// The app's credential (its client ID, thumbprint, signing).
    pub fn credential(&self) -> &AppCredential {
        &self.credential
    }

    /// What Graph says about one user's Exchange Online mailbox: two reads (the user, then
    /// its mailboxSettings), none more when Graph does not know the user.
    pub async fn mailbox_view(&self, user: &UserRef) -> Result<CloudMailboxView, GraphError> {
        let segment = user.segment();
        let mut url = self.user_url(&segment);
        url.query_pairs_mut().append_pair("$select", USER_SELECT);
        let graph_user = match self.get(url, Read::User).await? {
            Answer::Body(b) => parse_user(&b).map_err(|detail| GraphError::Unexpected {
                status: 200,
                detail,
            })?,
            Answer::NotFound | Answer::NoMailbox => return Ok(view::not_synced()),
        };
        let mut url = self.user_url(&segment);
        url.path_segments_mut()
            .map_err(|_| GraphError::Config("graph.graph_url cannot be a base".into()))?
            .push("mailboxSettings");
        let mailbox = match self.get(url, Read::MailboxSettings).await? {
            Answer::Body(b) => {
                MailboxAnswer::Exists(parse_mailbox_settings(&b).map_err(|detail| {
                    GraphError::Unexpected {
                        status: 200,
                        detail,
                    }
                })?)
            }
            Answer::NoMailbox | Answer::NotFound => MailboxAnswer::None,
        };
        Ok(view::view(graph_user, mailbox))
    }

    /// `mailboxd check`: a token, then one read (`GET /v1.0/users?$top=1&$select=id`);
    /// what it found, in words.
    pub async fn probe(&self) -> Result<String, GraphError> {
        let mut url = self.graph_url.clone();
        url.path_segments_mut()
            .map_err(|_| GraphError::Config("graph.graph_url cannot be a base".into()))?
            .pop_if_empty()
            .extend(["v1.0", "users"]);
        url.query_pairs_mut()
            .append_pair("$top", "1")
            .append_pair("$select", "id");
        match self.get(url, Read::User).await? {
            Answer::Body(_) => Ok(format!(
                "token for app {} (certificate x5t#S256 {}) accepted; users readable",
                self.credential.client_id(),
                self.credential.thumbprint_s256()
            )),
            Answer::NotFound | Answer::NoMailbox => Err(GraphError::Unexpected {
                status: 404,
                detail: "GET /v1.0/users answered 404: is graph.graph_url Microsoft Graph?".into(),
            }),
        }
    }

    /// `…/v1.0/users/{segment}`, the segment escaped.
    fn user_url(&self, segment: &str) -> url::Url {
        let mut url = self.graph_url.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(["v1.0", "users", segment]);
        }
        url
    }

    /// A GET with the bearer token; a 401 drops the cached token and tries once more (a
    /// token revoked or expired early).
    async fn get(&self, url: url::Url, read: Read) -> Result<Answer, GraphError> {
        let first = self.get_once(url.clone(), read).await;
        if !matches!(first, Err(GraphError::TokenNotAccepted { .. })) {
            return first;
        }
        *self.token.lock().await = None;
        self.get_once(url, read).await
    }

    async fn get_once(&self, url: url::Url, read: Read) -> Result<Answer, GraphError> {
        let token = self.token().await?;
        let sent = self
            .http
            .get(url.clone())
            .bearer_auth(token.expose_secret())
            .header("Accept", "application/json")
            .send()
            .await;
        let response = sent.map_err(|e| network(url.as_str(), &e))?;
        let status = response.status().as_u16();
        let retry_after = retry_after_header(&response);
        let body = read_capped(response, url.as_str()).await?;
        classify(status, retry_after, &body, read)
    }

    /// A valid token: the cached one, or a fresh one from the token endpoint.
    async fn token(&self) -> Result<SecretString, GraphError> {
        let mut cached = self.token.lock().await;
        if let Some(t) = cached.as_ref().filter(|t| Instant::now() < t.renew_at) {
            return Ok(t.value.clone());
        }
        let assertion = self
            .credential
            .assertion(&self.token_url, SystemTime::now())?;
        let fresh = self.redeem(&assertion).await?;
        let keep = fresh
            .expires_in
            .saturating_sub(RENEW_BEFORE)
            .max(fresh.expires_in / 2);
        *cached = Some(CachedToken {
            value: fresh.value.clone(),
            renew_at: Instant::now() + keep,
        });
        Ok(fresh.value)
    }

    /// Redeems a client assertion at the token endpoint (client-credentials grant).
    pub async fn redeem(&self, assertion: &str) -> Result<AccessToken, GraphError> {
        let form = [
            ("client_id", self.credential.client_id()),
            ("scope", GRAPH_SCOPE),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", assertion),
            ("grant_type", "client_credentials"),
        ];
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let sent = self
            .http
            .post(&self.token_url)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await;
        let response = sent.map_err(|e| network(&self.token_url, &e))?;
        let status = response.status().as_u16();
        let retry_after = retry_after_header(&response);
        let body = read_capped(response, &self.token_url).await?;
        if (200..300).contains(&status) {
            return parse_token_response(&body)
                .map_err(|detail| GraphError::Unexpected { status, detail });
        }
        if let Some(e) = throttled(status, retry_after) {
            return Err(e);
        }
        Err(token_refusal(status, &body))
    }
}

/// A token endpoint answer's body: the token and its lifetime.
pub fn parse_token_response(body: &[u8]) -> Result<AccessToken, String> {
    #[derive(serde::Deserialize)]
    struct Body {
        token_type: String,
        expires_in: u64,
        access_token: String,
    }
    let b: Body = serde_json::from_slice(body).map_err(|e| format!("not a token answer: {e}"))?;
    if !b.token_type.eq_ignore_ascii_case("bearer") || b.access_token.is_empty() {
        return Err(format!(
            "token_type {:?}, expected a Bearer token",
            b.token_type
        ));
    }
    Ok(AccessToken {
        value: b.access_token.into(),
        expires_in: Duration::from_secs(b.expires_in.min(24 * 3600)),
    })
}

/// A token endpoint refusal, by its documented body.
pub fn token_refusal(status: u16, body: &[u8]) -> GraphError {
    match serde_json::from_slice::<TokenErrorBody>(body) {
        Ok(b) => GraphError::TokenRefused {
            code: b.error_codes.first().copied(),
            description: first_line(&b.error_description),
            error: b.error,
        },
        Err(_) if status >= 500 => GraphError::Unavailable {
            status,
            detail: snippet(body),
        },
        Err(_) => GraphError::Unexpected {
            status,
            detail: snippet(body),
        },
    }
}

/// A Graph answer into what the read found, or the failure.
pub(crate) fn classify(
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
    read: Read,
) -> Result<Answer, GraphError> {
    if (200..300).contains(&status) {
        return Ok(Answer::Body(body.to_vec()));
    }
    if let Some(e) = throttled(status, retry_after) {
        return Err(e);
    }
    let (code, message) = match serde_json::from_slice::<GraphErrorBody>(body) {
        Ok(b) => (b.error.code, b.error.message.chars().take(400).collect()),
        Err(_) => (String::new(), snippet(body)),
    };
    match status {
        _ if code == "MailboxNotEnabledForRESTAPI" => Ok(Answer::NoMailbox),
        // Graph's "no such user" (Exchange's for the mailbox reads); any other 404 is not
        // Graph answering about a user (a wrong graph_url, a proxy) and must not read as one.
        404 if NO_SUCH_USER.contains(&code.as_str()) => Ok(Answer::NotFound),
        401 => Err(GraphError::TokenNotAccepted { code, message }),
        403 => Err(GraphError::PermissionMissing {
            what: read.what(),
            permission: read.permission(),
            code,
            message,
        }),
        s if s >= 500 => Err(GraphError::Unavailable {
            status,
            detail: format!("{code}: {message}"),
        }),
        _ => Err(GraphError::Unexpected {
            status,
            detail: format!("{code}: {message}"),
        }),
    }
}

/// 429, or a 503 that states a wait: throttled, with the wait.
fn throttled(status: u16, retry_after: Option<Duration>) -> Option<GraphError> {
    match (status, retry_after) {
        (429, wait) => Some(GraphError::Throttled {
            status,
            retry_after: wait.unwrap_or(DEFAULT_THROTTLE_WAIT),
        }),
        (503, Some(wait)) => Some(GraphError::Throttled {
            status,
            retry_after: wait,
        }),
        _ => None,
    }
}

fn retry_after_header(response: &reqwest::Response) -> Option<Duration> {
    let value = response.headers().get("retry-after")?.to_str().ok()?;
    parse_retry_after(value, SystemTime::now())
}

/// The body, at most `MAX_BODY` bytes.
async fn read_capped(mut response: reqwest::Response, url: &str) -> Result<Vec<u8>, GraphError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| network(url, &e))? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(GraphError::Unexpected {
                status: response.status().as_u16(),
                detail: format!("answer over {MAX_BODY} bytes"),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A transport error with its causes (reqwest's own text leaves out the TLS reason).
fn network(url: &str, e: &reqwest::Error) -> GraphError {
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    // The URL carries no secret, but a query string is noise here.
    GraphError::Network {
        url: url.split('?').next().unwrap_or(url).to_owned(),
        detail,
    }
}

fn snippet(body: &[u8]) -> String {
    String::from_utf8_lossy(body).chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One client serves every task of the daemon: it and its reads' futures cross threads.
    #[test]
    fn the_client_and_its_reads_can_be_shared_across_tasks() {
        fn shared<T: Send + Sync + 'static>() {}
        fn send<F: std::future::Future + Send>(_: F) {}
        shared::<GraphClient>();
        let _reads = |c: &GraphClient, u: &UserRef| {
            send(c.mailbox_view(u));
            send(c.probe());
        };
    }

    #[test]
    fn a_token_refusal_keeps_microsofts_first_line_and_code() {
        let body = br#"{"error":"invalid_client","error_description":"AADSTS700024: Client assertion is not within its valid time range.\r\nTrace ID: 1\r\nCorrelation ID: 2","error_codes":[700024]}"#;
        let e = token_refusal(401, body);
        assert_eq!(e.aadsts(), Some(700024));
        let text = e.to_string();
        assert!(text.contains("valid time range. —"), "{text}");
        assert!(!text.contains("Trace ID"), "{text}");
        assert!(text.contains("clock"), "{text}");
    }
}
