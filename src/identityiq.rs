//! Outcomes delivered to IdentityIQ directly: for each outcome in the outbox due for it,
//! `POST <base_url>/scim/v2/LaunchedWorkflows` launches the configured workflow with the
//! outcome as its `input` (SailPoint's LaunchedWorkflow call shape: the LaunchedWorkflow and
//! TaskResult schema URNs, `workflowName`, key/value/type entries). A 2xx marks it sent; a
//! 4xx that retrying cannot change (a bad workflow name, 401, 403) marks it refused and raises
//! one alert; anything else (network, 408, 429, 5xx) is retried with doubling waits.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::alert::NewAlert;
use crate::config::{self, IdentityIqAuth};
use crate::health::{Health, Task, supervise};
use crate::outbox;
use crate::shutdown::Shutdown;
use crate::store::{OutcomeChannel, OutcomeRow, Store, StoreError};

/// The schemas of a LaunchedWorkflow request.
pub(crate) const LAUNCHED_WORKFLOW_SCHEMA: &str =
    "urn:ietf:params:scim:schemas:sailpoint:1.0:LaunchedWorkflow";
pub(crate) const TASK_RESULT_SCHEMA: &str = "urn:ietf:params:scim:schemas:sailpoint:1.0:TaskResult";

#[derive(Debug, thiserror::Error)]
pub(crate) enum IdentityIqError {
    #[error("identityiq: {0}")]
    Config(String),
}

/// What one launch came to.
#[derive(Debug, PartialEq, Eq)]
enum Launch {
    Launched,
    /// Retrying cannot help: the reason, for the alert.
    Refused(String),
    /// Worth another try later.
    Failed(String),
}

#[derive(Clone)]
pub(crate) struct Client {
    http: reqwest::Client,
    url: String,
    authorization: secrecy::SecretString,
    /// Blacked out of whatever IdentityIQ answers before it is stored or emailed.
    credential: secrecy::SecretString,
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
        let mut builder = reqwest::Client::builder().timeout(cfg.timeout).no_proxy();
        if let Some(path) = &cfg.ca_file {
            builder = winrm::tls::trust_ca_file(builder, "ca_file", path)
                .map_err(IdentityIqError::Config)?;
        }
        let http = builder
            .build()
            .map_err(|e| IdentityIqError::Config(format!("cannot build the HTTP client: {e}")))?;
        let authorization = match cfg.auth {
            IdentityIqAuth::Basic => {
                let user = cfg.username.as_deref().unwrap_or_default();
                let pair = format!("{user}:{}", credential.expose_secret());
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                )
            }
            IdentityIqAuth::Bearer => format!("Bearer {}", credential.expose_secret()),
        };
        Ok(Some(Client {
            http,
            url: format!("{}/scim/v2/LaunchedWorkflows", base.trim_end_matches('/')),
            authorization: authorization.into(),
            credential: credential.clone(),
            workflow: cfg.workflow.clone(),
        }))
    }

    async fn launch(&self, row: &OutcomeRow) -> Launch {
        let sent = self
            .http
            .post(&self.url)
            .header("Content-Type", "application/scim+json")
            .header("Accept", "application/scim+json, application/json")
            .header("Authorization", self.authorization.expose_secret())
            .body(request(&self.workflow, &row.body).to_string())
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => return Launch::Failed(format!("IdentityIQ unreachable: {e}")),
        };
        let status = response.status();
        if status.is_success() {
            return Launch::Launched;
        }
        let text: String = response.text().await.unwrap_or_default();
        let detail: String = text
            .replace(self.credential.expose_secret(), "[REDACTED]")
            .chars()
            .take(300)
            .collect();
        let said = format!("IdentityIQ answered {status}: {detail}");
        match status.as_u16() {
            408 | 429 => Launch::Failed(said),
            400..=499 => Launch::Refused(said),
            _ => Launch::Failed(said),
        }
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

/// What IdentityIQ delivery needs.
pub(crate) struct Deps {
    pub store: Store,
    pub client: Client,
    pub cfg: config::Outcomes,
    pub health: Arc<Health>,
}

/// Launches due outcomes until the daemon stops (every replica runs one; the lease keeps
/// them apart), supervised.
pub(crate) fn spawn(deps: Deps, shutdown: Shutdown) -> JoinHandle<()> {
    let Deps {
        store,
        client,
        cfg,
        health,
    } = deps;
    tokio::spawn(supervise(
        Task::one("identityiq_launcher"),
        health,
        shutdown.clone(),
        move || {
            let launcher = Launcher {
                store: store.clone(),
                client: client.clone(),
                cfg: cfg.clone(),
                replica: crate::replica_name().to_owned(),
            };
            outbox::run(launcher, cfg.poll_interval, shutdown.clone())
        },
    ))
}

/// One replica's launcher: the outbox it reads and the client it launches with.
struct Launcher {
    store: Store,
    client: Client,
    cfg: config::Outcomes,
    replica: String,
}

impl outbox::Round for Launcher {
    async fn round(&mut self) -> usize {
        round(&self.store, &self.client, &self.cfg, &self.replica)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "IdentityIQ delivery failed");
                0
            })
    }
}

/// One round: claim due outcomes, launch each, record what IdentityIQ answered.
async fn round(
    store: &Store,
    client: &Client,
    cfg: &config::Outcomes,
    replica: &str,
) -> Result<usize, StoreError> {
    let rows = outbox::claim(store, OutcomeChannel::IdentityIq, replica, cfg).await?;
    for row in &rows {
        match client.launch(row).await {
            Launch::Launched => {
                store.identityiq_done(replica, row.id, None).await?;
                metrics::counter!("mailboxd_identityiq_launches_total", "result" => "launched")
                    .increment(1);
            }
            Launch::Refused(why) => {
                store.identityiq_done(replica, row.id, Some(&why)).await?;
                metrics::counter!("mailboxd_identityiq_launches_total", "result" => "refused")
                    .increment(1);
                store
                    .raise_alert(&refused_alert(&why), REFUSED_QUIET)
                    .await?;
            }
            Launch::Failed(why) => {
                metrics::counter!("mailboxd_identityiq_launches_total", "result" => "failed")
                    .increment(1);
                let next = outbox::next_try(row.attempts, cfg);
                store
                    .outcomes_failed(OutcomeChannel::IdentityIq, replica, &[row.id], &why, next)
                    .await?;
            }
        }
    }
    Ok(rows.len())
}

/// The same refusal again within this long is the same problem, not another email.
const REFUSED_QUIET: Duration = Duration::from_secs(3600);

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
