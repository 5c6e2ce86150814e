//! What the outcome channels over HTTP share — IdentityIQ's workflow launches and the
//! outcome callback: the client (a timeout, no proxy, an extra CA beside the system's roots,
//! certificate checks always on), the `Authorization` header, what an answer means
//! (`Answer`), and the delivery round over the outcome outbox: claim the rows due on the
//! channel (oldest unsent of an account first, `SKIP LOCKED` + lease), deliver each, mark it
//! only after the answer, refuse a lasting 4xx with one alert, and give the rest back for
//! another try after the receiver's `Retry-After` or the outbox's doubling wait.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};
use tokio::task::JoinHandle;

use crate::alert::NewAlert;
use crate::config::{self, HttpAuth};
use crate::health::{Health, Task, supervise};
use crate::outbox;
use crate::shutdown::Shutdown;
use crate::store::{OutcomeChannel, OutcomeRow, Store, StoreError};

/// The longest `Retry-After` honoured: a receiver that asks for more is asked again then.
pub(crate) const RETRY_AFTER_CAP: Duration = Duration::from_secs(3600);

/// The same refusal again within this long is the same problem, not another email.
const REFUSED_QUIET: Duration = Duration::from_secs(3600);

/// What one delivery came to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// A 2xx.
    Delivered,
    /// Retrying cannot help: the reason, for the row and the alert.
    Refused(String),
    /// Worth another try: the reason, and when the receiver asked to be tried again.
    Failed {
        why: String,
        retry_after: Option<Duration>,
    },
}

/// Who answers, for the words of an `Answer`.
pub(crate) struct Receiver {
    /// `IdentityIQ`, `the outcome callback`.
    pub name: &'static str,
    /// The setting that names the extra CA, for a certificate that is not trusted.
    pub ca_key: &'static str,
    /// Blacked out of whatever the receiver answers before it is stored or emailed.
    pub secrets: Vec<SecretString>,
    /// Which 4xx statuses retrying cannot change.
    pub lasting: fn(u16) -> bool,
}

/// The HTTP client of a channel: `timeout` per request, no proxy, the PEM CA(s) of `ca_file`
/// trusted beside the system's roots (`ca_key` names the setting in the error).
pub(crate) fn client(
    timeout: Duration,
    ca_file: Option<&Path>,
    ca_key: &str,
) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder().timeout(timeout).no_proxy();
    if let Some(path) = ca_file {
        builder = winrm::tls::trust_ca_file(builder, ca_key, path)?;
    }
    builder
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// The `Authorization` header's value: Basic with `username`, or the bearer token.
pub(crate) fn authorization(
    auth: HttpAuth,
    username: Option<&str>,
    credential: &SecretString,
) -> SecretString {
    match auth {
        HttpAuth::Basic => {
            let pair = format!(
                "{}:{}",
                username.unwrap_or_default(),
                credential.expose_secret()
            );
            let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
            format!("Basic {encoded}").into()
        }
        HttpAuth::Bearer => format!("Bearer {}", credential.expose_secret()).into(),
    }
}

impl Receiver {
    /// What a request's outcome means: a 2xx delivered; 408, 429 and 5xx (with their
    /// `Retry-After`), a timeout or a connection error worth another try; a lasting 4xx
    /// refused. Nothing secret is kept of what the receiver said.
    pub(crate) async fn answer(&self, sent: Result<reqwest::Response, reqwest::Error>) -> Answer {
        let response = match sent {
            Ok(r) => r,
            Err(e) => {
                return Answer::Failed {
                    why: self.unreachable(&e),
                    retry_after: None,
                };
            }
        };
        let status = response.status();
        if status.is_success() {
            return Answer::Delivered;
        }
        let retry_after = retry_after(response.headers());
        let text = response.text().await.unwrap_or_default();
        let detail: String = self.redact(&text).chars().take(300).collect();
        let said = format!("{} answered {status}: {detail}", self.name);
        if (self.lasting)(status.as_u16()) {
            Answer::Refused(said)
        } else {
            Answer::Failed {
                why: said,
                retry_after: retry_after.filter(|_| matches!(status.as_u16(), 429 | 503)),
            }
        }
    }

    /// A request that got no answer, in words: every cause, and for a certificate that is
    /// not trusted, the setting to fix.
    fn unreachable(&self, e: &reqwest::Error) -> String {
        let mut chain = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            chain = format!("{chain}: {s}");
            source = s.source();
        }
        let chain = self.redact(&chain);
        // rustls's own words (not localized): "invalid peer certificate: UnknownIssuer", …
        if chain.contains("certificate") {
            format!(
                "{} unreachable: {chain} — its certificate is not trusted: set {} to the CA \
                 certificate (PEM) that signed it, or check the URL's host name",
                self.name, self.ca_key
            )
        } else {
            format!("{} unreachable: {chain}", self.name)
        }
    }

    fn redact(&self, text: &str) -> String {
        self.secrets
            .iter()
            .map(ExposeSecret::expose_secret)
            .filter(|s| !s.is_empty())
            .fold(text.to_owned(), |t, s| t.replace(s, "[REDACTED]"))
    }
}

/// `Retry-After` as seconds or an HTTP date, at most [`RETRY_AFTER_CAP`].
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    read_retry_after(headers.get(reqwest::header::RETRY_AFTER)?.as_bytes())
}

/// A `Retry-After` value (RFC 9110 §10.2.3: delay-seconds or an HTTP date) as the wait it
/// asks for, at most [`RETRY_AFTER_CAP`]; a date past is no wait; anything else is `None`.
pub(crate) fn read_retry_after(value: &[u8]) -> Option<Duration> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let wait = match text.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = chrono::DateTime::parse_from_rfc2822(text).ok()?;
            (at.with_timezone(&Utc) - Utc::now())
                .to_std()
                .unwrap_or_default()
        }
    };
    Some(wait.min(RETRY_AFTER_CAP))
}

/// One outcome channel over HTTP: how it delivers a row and what it says when refused.
pub(crate) trait Channel: Clone + Send + Sync + 'static {
    /// Its columns in the outbox.
    const CHANNEL: OutcomeChannel;
    /// The supervised task's kind (`health::TASK_KINDS`).
    const TASK: &'static str;
    /// Its counter, labelled `result` = [`Channel::DELIVERED`], `refused` or `failed`.
    const METRIC: &'static str;
    const DELIVERED: &'static str;
    fn deliver(&self, row: &OutcomeRow) -> impl Future<Output = Answer> + Send;
    /// The alert a refusal raises: what to do, in words, with a digest key (one email per
    /// problem).
    fn refused_alert(&self, why: &str) -> NewAlert;
}

/// What a channel's delivery needs.
pub(crate) struct Deps<C> {
    pub store: Store,
    pub client: C,
    pub cfg: config::Outcomes,
    pub health: Arc<Health>,
}

/// Delivers due outcomes until the daemon stops (every replica runs one; the lease keeps
/// them apart), supervised.
pub(crate) fn spawn<C: Channel>(deps: Deps<C>, shutdown: Shutdown) -> JoinHandle<()> {
    let Deps {
        store,
        client,
        cfg,
        health,
    } = deps;
    tokio::spawn(supervise(
        Task::one(C::TASK),
        health,
        shutdown.clone(),
        move || {
            let deliverer = Deliverer {
                store: store.clone(),
                client: client.clone(),
                cfg: cfg.clone(),
                replica: crate::replica_name().to_owned(),
            };
            outbox::run(deliverer, cfg.poll_interval, shutdown.clone())
        },
    ))
}

/// One replica's deliverer on one channel.
struct Deliverer<C> {
    store: Store,
    client: C,
    cfg: config::Outcomes,
    replica: String,
}

impl<C: Channel> outbox::Round for Deliverer<C> {
    async fn round(&mut self) -> usize {
        self.deliver_due().await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, channel = C::TASK, "outcome delivery failed");
            0
        })
    }
}

impl<C: Channel> Deliverer<C> {
    /// One round: claim due outcomes, deliver each, record what the receiver answered.
    async fn deliver_due(&self) -> Result<usize, StoreError> {
        let (store, replica) = (&self.store, self.replica.as_str());
        let rows = outbox::claim(store, C::CHANNEL, replica, &self.cfg).await?;
        for row in &rows {
            match self.client.deliver(row).await {
                Answer::Delivered => {
                    store
                        .http_delivery_done(C::CHANNEL, replica, row.id, None)
                        .await?;
                    metrics::counter!(C::METRIC, "result" => C::DELIVERED).increment(1);
                }
                Answer::Refused(why) => {
                    store
                        .http_delivery_done(C::CHANNEL, replica, row.id, Some(&why))
                        .await?;
                    metrics::counter!(C::METRIC, "result" => "refused").increment(1);
                    let alert = self.client.refused_alert(&why);
                    store.raise_alert(&alert, REFUSED_QUIET).await?;
                }
                Answer::Failed { why, retry_after } => {
                    metrics::counter!(C::METRIC, "result" => "failed").increment(1);
                    tracing::info!(outcome_id = %row.id, channel = C::TASK, error = %why, "outcome not delivered; it is tried again");
                    let next = match retry_after {
                        Some(wait) => {
                            Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default()
                        }
                        None => outbox::next_try(row.attempts, &self.cfg),
                    };
                    store
                        .outcomes_failed(C::CHANNEL, replica, &[row.id], &why, next)
                        .await?;
                }
            }
        }
        Ok(rows.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_read_as_seconds_or_a_date_and_capped() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("retry-after", "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert("retry-after", "86400".parse().unwrap());
        assert_eq!(retry_after(&h), Some(RETRY_AFTER_CAP));
        let soon = (Utc::now() + chrono::Duration::seconds(120)).to_rfc2822();
        h.insert("retry-after", soon.replace("+0000", "GMT").parse().unwrap());
        let wait = retry_after(&h).expect("an HTTP date");
        assert!(wait > Duration::from_secs(100) && wait <= Duration::from_secs(120));
        h.insert("retry-after", "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn basic_and_bearer_headers() {
        let secret = SecretString::from("pa:ss");
        let basic = authorization(HttpAuth::Basic, Some("iam"), &secret);
        assert_eq!(basic.expose_secret(), "Basic aWFtOnBhOnNz");
        let bearer = authorization(HttpAuth::Bearer, None, &secret);
        assert_eq!(bearer.expose_secret(), "Bearer pa:ss");
    }
}
