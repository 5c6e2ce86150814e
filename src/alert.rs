//! Alerts for support staff: written to the outbox in the same transaction as the failure
//! they report (see `Store::finish`), then delivered by SMTP from there (`sender`), so an
//! SMTP outage delays alerts and never loses them.

use crate::event::EventKind;
use crate::store::{ErrorClass, Job, NewAlert};

/// The alert for a job that failed for good: what happened and what to do next.
pub fn for_failed_job(job: &Job, class: ErrorClass, error: &str) -> NewAlert {
    let sam = job.event.account.sam_account_name.as_str();
    let what = match job.kind {
        EventKind::Joiner => "not enabled",
        EventKind::Leaver => "not hidden",
    };
    let short = shorten(error, 110);
    let next = match class {
        ErrorClass::Permanent => {
            "What to do: the account or the request is wrong; fix it in AD or in the IAM system, then retry the job."
        }
        _ => {
            "What to do: the attempts are exhausted; check the Windows host and Exchange, then retry the job."
        }
    };
    NewAlert {
        kind: class.as_str().to_owned(),
        digest_key: Some(format!(
            "{}:{}:{}",
            class.as_str(),
            job.kind,
            signature(error, sam)
        )),
        account: Some(sam.to_owned()),
        subject: format!("[mailboxd] Mailbox for {sam} {what}: {short}"),
        body: format!(
            "Job {id} ({kind} for {sam}, event {event}) failed after {n} attempt(s).\n\n\
             Error class: {class}\nLast error: {error}\n\n{next}\n\n\
             Show it:  mailboxd jobs show {id}\nRetry it: mailboxd jobs retry {id}\n",
            id = job.id,
            kind = job.kind,
            event = job.event_id,
            n = job.attempt,
            class = class.as_str(),
        ),
    }
}

/// At most `max` characters, cut at a word boundary with an ellipsis.
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let cut: String = text.chars().take(max).collect();
    let cut = cut.rsplit_once(' ').map_or(cut.as_str(), |(head, _)| head);
    format!("{}…", cut.trim_end_matches([',', ';', ':']))
}

/// The problem an error describes, without what differs between accounts (the name,
/// ids, numbers), so that the same failure for many accounts folds into one digest.
pub fn signature(error: &str, sam: &str) -> String {
    let mut text = error.replace(sam, "<account>");
    if !sam.is_empty() {
        let lower = text.to_lowercase();
        if let Some(i) = lower.find(&sam.to_lowercase()) {
            text.replace_range(i..i + sam.len(), "<account>");
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut in_hex = 0usize;
    for c in text.chars() {
        // Digits and GUID-like hex runs become '#': RequestIds, timestamps, counts.
        if c.is_ascii_digit() || (in_hex > 0 && (c.is_ascii_hexdigit() || c == '-')) {
            if !out.ends_with('#') {
                out.push('#');
            }
            in_hex += 1;
            continue;
        }
        in_hex = 0;
        out.push(c);
    }
    out.chars().take(200).collect()
}

/// The subjects of the circuit's two alerts for `endpoint`: (opened, closed). They name the
/// pair the store keeps to one per outage.
pub fn circuit_subjects(endpoint: &str) -> (String, String) {
    (
        format!("[mailboxd] Windows host {endpoint} unavailable: mailbox jobs paused"),
        format!("[mailboxd] Windows host {endpoint} available again: mailbox jobs resumed"),
    )
}

/// The one alert for operations when the circuit opens (the Windows side is down).
pub fn circuit_opened(endpoint: &str, reason: &str, pause: std::time::Duration) -> NewAlert {
    NewAlert {
        digest_key: None,
        account: None,
        kind: ErrorClass::Systemic.as_str().to_owned(),
        subject: circuit_subjects(endpoint).0,
        body: format!(
            "mailboxd stopped sending work to {endpoint} after: {reason}\n\n\
             Jobs are kept and wait; none uses up its attempts while the host is down. mailboxd \
             tries again every {secs:.1} s or so (longer while it stays down) and resumes by itself once the host answers.\n\n\
             What to do: check that the host is up, that WinRM answers on the configured endpoint, \
             and that the service account's password has not expired or been locked.\n\
             See the queue: mailboxd jobs list --state retrying\n",
            secs = pause.as_secs_f64()
        ),
    }
}

/// The one recovery alert when the circuit closes again.
pub fn circuit_closed(endpoint: &str, outage: std::time::Duration) -> NewAlert {
    NewAlert {
        digest_key: None,
        account: None,
        kind: ErrorClass::Systemic.as_str().to_owned(),
        subject: circuit_subjects(endpoint).1,
        body: format!(
            "{endpoint} answers again after about {secs} s; mailboxd has resumed the paused jobs.\n\n\
             Nothing to do, unless this keeps happening: then look at the host's availability.\n\
             See the queue: mailboxd jobs list --state retrying\n",
            secs = outage.as_secs()
        ),
    }
}

/// Sends the alert outbox by SMTP until shutdown. Without `[smtp].host` alerts stay in the
/// outbox (visible with `mailboxd alerts list`) and this returns at once.
pub mod sender {
    use std::time::Duration;

    use lettre::message::header::ContentType;
    use lettre::message::{Mailbox, Message};
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
    use secrecy::ExposeSecret;
    use tokio::sync::watch;

    use crate::config::{Smtp, SmtpTls};
    use crate::store::{Alert, Store};

    #[derive(Debug, thiserror::Error)]
    pub enum SenderError {
        #[error("smtp.{key}: {reason}")]
        Config { key: &'static str, reason: String },
    }

    fn config(key: &'static str, reason: impl std::fmt::Display) -> SenderError {
        SenderError::Config {
            key,
            reason: reason.to_string(),
        }
    }

    pub struct Sender {
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

    const HTML: &str = include_str!("alert_templates/alert.html");
    const DIGEST: &str = include_str!("alert_templates/digest.txt");

    fn html_escape(s: &str) -> String {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
            .replace('\'', "&#39;")
    }

    impl Sender {
        pub fn new(cfg: &Smtp, public_url: Option<String>) -> Result<Sender, SenderError> {
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
        fn compose(
            &self,
            alerts: &[Alert],
            note: Option<&str>,
        ) -> (String, String, Option<String>) {
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
        pub fn message(&self, alerts: &[Alert], note: Option<&str>) -> Result<Message, String> {
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
        pub async fn test_connection(&self) -> Result<bool, String> {
            self.transport
                .test_connection()
                .await
                .map_err(|e| e.to_string())
        }

        pub async fn send(&self, alerts: Vec<Alert>, note: Option<String>) -> Result<(), String> {
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

    pub async fn run(
        store: Store,
        cfg: Smtp,
        public_url: Option<String>,
        mut shutdown: watch::Receiver<bool>,
    ) {
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
        loop {
            let policy = crate::store::DeliveryPolicy {
                limit: 500,
                retry_base: cfg.retry_base,
                digest_window: cfg.digest_window,
                hourly_cap: cfg.hourly_cap,
            };
            match store
                .deliver_alerts(&policy, |alerts, note| sender.send(alerts, note))
                .await
            {
                Ok((sent, failed)) if sent + failed > 0 => {
                    tracing::info!(sent, failed, "alert outbox delivered");
                    metrics::counter!("mailboxd_alerts_sent_total").increment(u64::from(sent));
                    metrics::counter!("mailboxd_alert_send_failures_total")
                        .increment(u64::from(failed));
                    if failed == 0 {
                        continue;
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read the alert outbox"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
