//! Outcomes POSTed back to an HTTP callback (`[outcome_callback]`, issue 34), for senders
//! with no broker to hear outcomes on (Identity Security Cloud, a custom IAM over the HTTP
//! intake). The body is the outcome's `mailboxd.outcome/v1` JSON as the broker gets it;
//! `Idempotency-Key` is the outcome's id on every resend, so a receiver can drop a repeat;
//! the event's `traceparent` goes along; with a signing key, `X-Mailboxd-Signature` is an
//! HMAC-SHA256 over the body. The contract is in docs/events.md. Delivery is the shared
//! HTTP channel's (`outcome_http`): a 2xx marks it sent; 400, 401, 403, 404, 410 and 422
//! refuse it for good with one alert; the rest is tried again.

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};

use crate::alert::{AlertKind, NewAlert};
use crate::config;
use crate::outcome_http::{self, Answer, Receiver};
use crate::store::{OutcomeChannel, OutcomeRow};
use crate::trace::TraceParent;

/// The header of the body's signature: `sha256=<hex HMAC-SHA256 of the body>`.
pub(crate) const SIGNATURE_HEADER: &str = "X-Mailboxd-Signature";

#[derive(Debug, thiserror::Error)]
pub(crate) enum CallbackError {
    #[error("outcome_callback: {0}")]
    Config(String),
}

/// The statuses that say the same request will never be accepted: a body or a credential
/// the receiver refuses, a URL that is not there. A 409, 408, 429 or 5xx is tried again.
fn lasting(status: u16) -> bool {
    matches!(status, 400 | 401 | 403 | 404 | 410 | 422)
}

#[derive(Clone)]
pub(crate) struct Client {
    http: reqwest::Client,
    url: String,
    authorization: SecretString,
    signing_key: Option<Arc<ring::hmac::Key>>,
    receiver: Arc<Receiver>,
}

impl Client {
    /// `None` when `outcome_callback.url` is not set.
    pub(crate) fn from_config(
        cfg: &config::OutcomeCallback,
    ) -> Result<Option<Client>, CallbackError> {
        let (Some(url), Some(credential)) = (&cfg.url, &cfg.credential) else {
            return Ok(None);
        };
        if url.starts_with("http://") {
            tracing::warn!(url = %url, "outcome_callback.allow_plaintext is set: the callback's credential and every outcome cross the network in clear text");
        }
        if cfg.signing_key.is_none() {
            tracing::info!(
                "outcome_callback.signing_key_file is not set: outcomes are sent without an X-Mailboxd-Signature"
            );
        }
        let http = outcome_http::client(
            cfg.timeout,
            cfg.ca_file.as_deref(),
            "outcome_callback.ca_file",
        )
        .map_err(CallbackError::Config)?;
        let signing_key = cfg.signing_key.as_ref().map(|k| {
            Arc::new(ring::hmac::Key::new(
                ring::hmac::HMAC_SHA256,
                k.expose_secret().as_bytes(),
            ))
        });
        Ok(Some(Client {
            http,
            url: url.clone(),
            authorization: outcome_http::authorization(
                cfg.auth,
                cfg.username.as_deref(),
                credential,
            ),
            signing_key,
            receiver: Arc::new(Receiver {
                name: "the outcome callback",
                ca_key: "outcome_callback.ca_file",
                secrets: [Some(credential), cfg.signing_key.as_ref()]
                    .into_iter()
                    .flatten()
                    .cloned()
                    .collect(),
                lasting,
            }),
        }))
    }
}

/// `sha256=<lower-case hex>` of the HMAC-SHA256 of `body` under `key`.
pub(crate) fn signature(key: &ring::hmac::Key, body: &[u8]) -> String {
    let tag = ring::hmac::sign(key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

impl outcome_http::Channel for Client {
    const CHANNEL: OutcomeChannel = OutcomeChannel::Callback;
    const TASK: &'static str = "outcome_callback";
    const METRIC: &'static str = "mailboxd_outcome_callback_total";
    const DELIVERED: &'static str = "delivered";

    async fn deliver(&self, row: &OutcomeRow) -> Answer {
        let body = row.body.to_string();
        let mut request = self
            .http
            .post(&self.url)
            .header("Content-Type", "application/json")
            .header("Authorization", self.authorization.expose_secret())
            .header("Idempotency-Key", row.id.to_string())
            .header(
                "User-Agent",
                concat!("mailboxd/", env!("CARGO_PKG_VERSION")),
            );
        // The event's trace, read again through its rules before it leaves.
        if let Some(trace) = row
            .body
            .get("trace_parent")
            .and_then(|t| t.as_str())
            .and_then(|t| TraceParent::parse(t.as_bytes()).ok())
        {
            request = request.header(crate::trace::HEADER, trace.to_string());
        }
        if let Some(key) = &self.signing_key {
            request = request.header(SIGNATURE_HEADER, signature(key, body.as_bytes()));
        }
        self.receiver.answer(request.body(body).send().await).await
    }

    fn refused_alert(&self, why: &str) -> NewAlert {
        NewAlert {
            kind: AlertKind::OutcomeCallback,
            subject: "The outcome callback refuses mailboxd's outcomes".into(),
            body: format!(
                "{why}\n\nWhat to do: a 401 or 403 means outcome_callback.username and its \
                 credential (or the token) are wrong or not allowed there; a 404 or 410 means \
                 outcome_callback.url names no receiver; a 400 or 422 means the receiver does \
                 not take mailboxd.outcome/v1 (docs/events.md). The refused outcomes are kept \
                 (`mailboxd outcomes list --status refused`) and are not sent there again on their \
                 own."
            ),
            digest_key: Some("outcome-callback-refused".into()),
            account: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 test case 2: HMAC-SHA256 of "what do ya want for nothing?" under "Jefe".
    #[test]
    fn the_signature_is_the_hmac_sha256_of_the_body_in_hex() {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"Jefe");
        assert_eq!(
            signature(&key, b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn only_the_statuses_that_cannot_change_are_lasting() {
        for s in [400, 401, 403, 404, 410, 422] {
            assert!(lasting(s), "{s}");
        }
        for s in [408, 409, 425, 429, 500, 502, 503, 504] {
            assert!(!lasting(s), "{s}");
        }
    }
}
