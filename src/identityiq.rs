//! Outcomes delivered to IdentityIQ directly: for each outcome in the outbox due for it,
//! `POST <base_url>/scim/v2/LaunchedWorkflows` launches the configured workflow with the
//! outcome as its `input` (SailPoint's LaunchedWorkflow call shape: the LaunchedWorkflow and
//! TaskResult schema URNs, `workflowName`, key/value/type entries). A 2xx marks it sent; a
//! 4xx that retrying cannot change (a bad workflow name, 401, 403) marks it refused and raises
//! one alert; anything else (network, 408, 429, 5xx) is retried with doubling waits, a 429
//! or 503 after its `Retry-After` (`outcome_http`, shared with the outcome callback).

use std::sync::Arc;

use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::alert::NewAlert;
use crate::config;
use crate::outcome_http::{self, Answer, Receiver};
use crate::store::{OutcomeChannel, OutcomeRow};

/// The schemas of a LaunchedWorkflow request.
pub(crate) const LAUNCHED_WORKFLOW_SCHEMA: &str =
    "urn:ietf:params:scim:schemas:sailpoint:1.0:LaunchedWorkflow";
pub(crate) const TASK_RESULT_SCHEMA: &str = "urn:ietf:params:scim:schemas:sailpoint:1.0:TaskResult";

#[derive(Debug, thiserror::Error)]
pub(crate) enum IdentityIqError {
    #[error("identityiq: {0}")]
    Config(String),
}

#[derive(Clone)]
pub(crate) struct Client {
    http: reqwest::Client,
    url: String,
    authorization: secrecy::SecretString,
    receiver: Arc<Receiver>,
    workflow: String,
}

impl Client {
    /// `None` when `[identityiq] base_url` is not set.
    pub(crate) fn from_config(cfg: &config::IdentityIq) -> Result<Option<Client>, IdentityIqError> {
        let (Some(base), Some(credential)) = (&cfg.base_url, &cfg.credential) else {
            return Ok(None);
        };
        if base.starts_with("http://") {
            tracing::warn!(base_url = %base, "identityiq.allow_plaintext is set: the IdentityIQ credential crosses the network in clear text");
        }
        let http = outcome_http::client(cfg.timeout, cfg.ca_file.as_deref(), "identityiq.ca_file")
            .map_err(IdentityIqError::Config)?;
        Ok(Some(Client {
            http,
            url: format!("{}/scim/v2/LaunchedWorkflows", base.trim_end_matches('/')),
            authorization: outcome_http::authorization(
                cfg.auth,
                cfg.username.as_deref(),
                credential,
            ),
            receiver: Arc::new(Receiver {
                name: "IdentityIQ",
                ca_key: "identityiq.ca_file",
                secrets: vec![credential.clone()],
                // A bad workflow name, 401, 403: every 4xx but a timeout and throttling.
                lasting: |status| (400..500).contains(&status) && !matches!(status, 408 | 429),
            }),
            workflow: cfg.workflow.clone(),
        }))
    }
}

impl outcome_http::Channel for Client {
    const CHANNEL: OutcomeChannel = OutcomeChannel::IdentityIq;
    const TASK: &'static str = "identityiq_launcher";
    const METRIC: &'static str = "mailboxd_identityiq_launches_total";
    const DELIVERED: &'static str = "launched";

    async fn deliver(&self, row: &OutcomeRow) -> Answer {
        let sent = self
            .http
            .post(&self.url)
            .header("Content-Type", "application/scim+json")
            .header("Accept", "application/scim+json, application/json")
            .header("Authorization", self.authorization.expose_secret())
            .body(request(&self.workflow, &row.body).to_string())
            .send()
            .await;
        self.receiver.answer(sent).await
    }

    fn refused_alert(&self, why: &str) -> NewAlert {
        refused_alert(why)
    }
}

/// The LaunchedWorkflow request for one outcome: every field the workflow may want as its
/// own input entry (strings), and the whole outcome as JSON in `outcome`.
pub(crate) fn request(workflow: &str, outcome: &Value) -> Value {
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        Value::Array(items) => Some(
            items
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(","),
        ),
        other => Some(other.to_string()),
    };
    let fields = [
        ("outcomeId", &outcome["id"]),
        ("eventId", &outcome["event_id"]),
        ("jobId", &outcome["job_id"]),
        ("type", &outcome["type"]),
        ("result", &outcome["result"]),
        ("outcome", &outcome["outcome"]),
        ("identityName", &outcome["identity"]),
        ("accountName", &outcome["account"]["sam_account_name"]),
        ("nativeIdentity", &outcome["account"]["distinguished_name"]),
        ("objectGuid", &outcome["account"]["object_guid"]),
        (
            "userPrincipalName",
            &outcome["account"]["user_principal_name"],
        ),
        ("email", &outcome["mailbox"]["primary_smtp_address"]),
        ("proxyAddresses", &outcome["mailbox"]["proxy_addresses"]),
        (
            "remoteRoutingAddress",
            &outcome["mailbox"]["remote_routing_address"],
        ),
        ("error", &outcome["error"]["message"]),
        ("errorClass", &outcome["error"]["class"]),
        ("whatToDo", &outcome["error"]["what_to_do"]),
    ];
    let mut input: Vec<Value> = fields
        .iter()
        .filter_map(|(key, v)| {
            text(v).map(|value| json!({"key": key, "value": value, "type": "string"}))
        })
        .collect();
    input.push(json!({"key": "outcomeJson", "value": outcome.to_string(), "type": "string"}));
    json!({
        "schemas": [LAUNCHED_WORKFLOW_SCHEMA, TASK_RESULT_SCHEMA],
        LAUNCHED_WORKFLOW_SCHEMA: {
            "workflowName": workflow,
            "input": input,
        }
    })
}

fn refused_alert(why: &str) -> NewAlert {
    NewAlert {
        kind: crate::alert::AlertKind::IdentityIq,
        subject: "IdentityIQ refuses mailboxd's workflow launches".into(),
        body: format!(
            "{why}\n\nWhat to do: a 401 or 403 means identityiq.username and its credential \
             (or the token) are wrong or lack the SCIM API right; a 404 or 400 usually means \
             identityiq.workflow names no workflow. The refused outcomes are kept \
             (`mailboxd outcomes list`) and were still published to the broker; they are not \
             launched again on their own."
        ),
        digest_key: Some("identityiq-refused".into()),
        account: None,
    }
}
