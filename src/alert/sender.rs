//! The SMTP side of alerts: one email (plain text and HTML) per alert or digest, sent with
//! lettre, and `spawn`, which delivers the outbox until shutdown. Without `[smtp].host` alerts
//! stay in the outbox (visible with `mailboxd alerts list`) and the task ends at once.

use std::sync::Arc;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use secrecy::ExposeSecret;
use tokio::task::JoinHandle;

use super::delivery::{self, Delivered, DeliveryPolicy};
use crate::config::{Smtp, SmtpTls};
use crate::health::{Health, Task, supervise};
use crate::outbox;
use crate::shutdown::Shutdown;
use crate::store::{Alert, Store};

#[derive(Debug, thiserror::Error)]
pub(crate) enum SenderError {
    #[error("smtp.{key}: {reason}")]
    Config { key: &'static str, reason: String },
}

fn config(key: &'static str, reason: impl std::fmt::Display) -> SenderError {
    SenderError::Config {
        key,
        reason: reason.to_string(),
    }
}

pub(crate) struct Sender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    /// Recipients by error class (`smtp.to_by_class`), instead of `to`.
    by_class: std::collections::HashMap<String, Vec<Mailbox>>,
    domain: String,
    /// `admin.public_url`: links to the job on the dashboard.
    public_url: Option<String>,
    digest_window: Duration,
}

const HTML: &str = include_str!("../alert_templates/alert.html");
const DIGEST: &str = include_str!("../alert_templates/digest.txt");

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

impl Sender {
    pub(crate) fn new(cfg: &Smtp, public_url: Option<String>) -> Result<Sender, SenderError> {
        winrm::tls::install_provider();
        let tls = || -> Result<TlsParameters, SenderError> {
            let mut b = TlsParameters::builder(cfg.host.clone());
            if let Some(path) = &cfg.ca_file {
                let pem = std::fs::read(path)
                    .map_err(|e| config("ca_file", format!("{}: {e}", path.display())))?;
                b = b.add_root_certificate(
                    Certificate::from_pem(&pem).map_err(|e| config("ca_file", e))?,
                );
            }
            b.build_rustls().map_err(|e| config("tls", e))
        };
        let mut builder =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(cfg.host.as_str())
                .port(cfg.port)
                .timeout(Some(cfg.timeout));
        builder = match cfg.tls {
            SmtpTls::Starttls => builder.tls(Tls::Required(tls()?)),
            SmtpTls::Implicit => builder.tls(Tls::Wrapper(tls()?)),
            SmtpTls::None => {
                tracing::warn!(host = %cfg.host, "smtp.tls = \"none\": alert emails (and any SMTP password) cross the network in clear text");
                builder.tls(Tls::None)
            }
        };
        if let (Some(user), Some(password)) = (&cfg.username, &cfg.password) {
            builder = builder.credentials(Credentials::new(
                user.clone(),
                password.expose_secret().to_owned(),
            ));
        }
        let from: Mailbox = cfg.from.parse().map_err(|e| config("from", e))?;
        let to = cfg
            .to
            .iter()
            .map(|t| {
                t.parse::<Mailbox>()
                    .map_err(|e| config("to", format!("{t:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if to.is_empty() {
            return Err(config("to", "no recipients: list who receives alerts"));
        }
        let mut by_class = std::collections::HashMap::new();
        for (class, list) in &cfg.to_by_class {
            let parsed = list
                .iter()
                .map(|t| {
                    t.parse::<Mailbox>()
                        .map_err(|e| config("to_by_class", format!("{class}: {t:?}: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            by_class.insert(class.clone(), parsed);
        }
        let domain = from.email.domain().to_owned();
        Ok(Sender {
            transport: builder.build(),
            from,
            to,
            by_class,
            domain,
            public_url: public_url.map(|u| u.trim_end_matches('/').to_owned()),
            digest_window: cfg.digest_window,
        })
    }

    /// Subject and plain text of one email for `alerts` (one alert, or a digest of
    /// several with the same problem), plus the job link if there is one.
    fn compose(&self, alerts: &[Alert], note: Option<&str>) -> (String, String, Option<String>) {
        let first = &alerts[0];
        let link = match (&self.public_url, first.job_id) {
            (Some(base), Some(job)) if alerts.len() == 1 => Some(format!("{base}/jobs/{job}")),
            (Some(base), _) if alerts.len() > 1 => Some(format!("{base}/jobs?state=failed")),
            _ => None,
        };
        let (subject, mut body) = if alerts.len() == 1 {
            (first.subject.clone(), first.body.clone())
        } else {
            let problem = first
                .digest_key
                .as_deref()
                .and_then(|k| k.splitn(3, ':').nth(2))
                .unwrap_or(first.subject.as_str())
                .to_owned();
            let accounts: Vec<String> = alerts
                .iter()
                .take(500)
                .map(|a| {
                    format!(
                        "  {}  (job {}, {})",
                        a.account.as_deref().unwrap_or("-"),
                        a.job_id.map(|j| j.to_string()).unwrap_or_default(),
                        a.created_at.format("%Y-%m-%d %H:%M:%S UTC")
                    )
                })
                .collect();
            let body = DIGEST
                .replace("{{count}}", &alerts.len().to_string())
                .replace("{{window}}", &self.digest_window.as_secs().to_string())
                .replace("{{problem}}", &problem)
                .replace("{{accounts}}", &accounts.join("\n"))
                .replace("{{first}}", &first.body);
            (
                format!(
                    "[mailboxd] {} accounts failed with: {}",
                    alerts.len(),
                    problem.chars().take(120).collect::<String>()
                ),
                body,
            )
        };
        if let Some(l) = &link {
            body.push_str(&format!("\nOn the dashboard: {l}\n"));
        }
        if let Some(n) = note {
            body.push_str(&format!("\n{n}\n"));
        }
        (subject, body, link)
    }

    /// The email for one alert or a digest: a plain-text and an HTML part. The Message-ID
    /// is derived from the (first) alert, so a resend after a crash carries the same id
    /// and mail systems can drop the duplicate.
    pub(crate) fn message(&self, alerts: &[Alert], note: Option<&str>) -> Result<Message, String> {
        let first = alerts.first().ok_or("no alert to send")?;
        let (subject, text, link) = self.compose(alerts, note);
        let html = HTML
            .replace("{{subject}}", &html_escape(&subject))
            .replace("{{body}}", &html_escape(&text))
            .replace(
                "{{link}}",
                &link
                    .map(|l| {
                        format!(
                            "<p><a href=\"{}\">Open in the mailboxd dashboard</a></p>",
                            html_escape(&l)
                        )
                    })
                    .unwrap_or_default(),
            );
        let class = first.kind.as_str();
        let to = self.by_class.get(class).unwrap_or(&self.to);
        let mut b = Message::builder()
            .from(self.from.clone())
            .subject(subject)
            .message_id(Some(format!(
                "<alert-{}-{}@{}>",
                first.id,
                first.created_at.timestamp(),
                self.domain
            )));
        for t in to {
            b = b.to(t.clone());
        }
        b.multipart(
            lettre::message::MultiPart::alternative()
                .singlepart(
                    lettre::message::SinglePart::builder()
                        .header(ContentType::TEXT_PLAIN)
                        .body(text),
                )
                .singlepart(
                    lettre::message::SinglePart::builder()
                        .header(ContentType::TEXT_HTML)
                        .body(html),
                ),
        )
        .map_err(|e| e.to_string())
    }

    /// Connects (TLS and AUTH as configured) and says NOOP: `mailboxd check`.
    pub(crate) async fn test_connection(&self) -> Result<bool, String> {
        self.transport
            .test_connection()
            .await
            .map_err(|e| e.to_string())
    }

    pub(crate) async fn send(
        &self,
        alerts: Vec<Alert>,
        note: Option<String>,
    ) -> Result<(), String> {
        let msg = self.message(&alerts, note.as_deref())?;
        self.transport
            .send(msg)
            .await
            .map(|_| ())
            .map_err(|e| {
                // Kept on the alert too; the log says why nothing went out (e.g. a server
                // without STARTTLS: never a fallback to clear text).
                tracing::warn!(error = %e, alerts = alerts.len(), "cannot send the alert email; retried later");
                e.to_string()
            })
    }
}

/// What the alert sender needs.
pub struct Deps {
    pub store: Store,
    pub smtp: Smtp,
    /// The dashboard's address, for links in the emails.
    pub public_url: Option<String>,
    pub health: Arc<Health>,
}

/// Delivers the outbox until the daemon stops, supervised: a round every second, at once
/// again after a round that sent everything it took.
pub fn spawn(deps: Deps, shutdown: Shutdown) -> JoinHandle<()> {
    let Deps {
        store,
        smtp,
        public_url,
        health,
    } = deps;
    tokio::spawn(supervise(
        Task::one("alert_sender"),
        health,
        shutdown.clone(),
        move || {
            run(
                store.clone(),
                smtp.clone(),
                public_url.clone(),
                shutdown.clone(),
            )
        },
    ))
}

async fn run(store: Store, cfg: Smtp, public_url: Option<String>, shutdown: Shutdown) {
    if cfg.host.is_empty() {
        tracing::warn!("no [smtp].host: alerts stay in the outbox (mailboxd alerts list)");
        return;
    }
    let sender = match Sender::new(&cfg, public_url) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "alert emails are off until the SMTP settings are fixed");
            return;
        }
    };
    let policy = DeliveryPolicy {
        limit: 500,
        retry_base: cfg.retry_base,
        digest_window: cfg.digest_window,
        hourly_cap: cfg.hourly_cap,
    };
    let mailer = Mailer {
        store,
        sender,
        policy,
    };
    outbox::run(mailer, Duration::from_secs(1), shutdown).await;
}

/// One replica's alert emails: the outbox, the SMTP client and the delivery policy.
struct Mailer {
    store: Store,
    sender: Sender,
    policy: DeliveryPolicy,
}

impl outbox::Round for Mailer {
    /// A round with a failed email counts as nothing sent: the next waits its second.
    async fn round(&mut self) -> usize {
        let sender = &self.sender;
        match delivery::deliver(&self.store, &self.policy, |alerts, note| {
            sender.send(alerts, note)
        })
        .await
        {
            Ok(Delivered { sent, failed }) if sent + failed > 0 => {
                tracing::info!(sent, failed, "alert outbox delivered");
                metrics::counter!("mailboxd_alerts_sent_total").increment(u64::from(sent));
                metrics::counter!("mailboxd_alert_send_failures_total")
                    .increment(u64::from(failed));
                if failed == 0 { sent as usize } else { 0 }
            }
            Ok(_) => 0,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the alert outbox");
                0
            }
        }
    }
}
