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
    let short: String = error.chars().take(120).collect();
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

/// The one alert for operations when the circuit opens (the Windows side is down).
pub fn circuit_opened(endpoint: &str, reason: &str, pause: std::time::Duration) -> NewAlert {
    NewAlert {
        kind: ErrorClass::Systemic.as_str().to_owned(),
        subject: format!("[mailboxd] Windows host {endpoint} unavailable: mailbox jobs paused"),
        body: format!(
            "mailboxd stopped sending work to {endpoint} after: {reason}\n\n\
             Jobs are kept and wait; none uses up its attempts while the host is down. mailboxd \
             tries again every {secs} s or so and resumes by itself once the host answers.\n\n\
             What to do: check that the host is up, that WinRM answers on the configured endpoint, \
             and that the service account's password has not expired or been locked.\n\
             See the queue: mailboxd jobs list --state retrying\n",
            secs = pause.as_secs()
        ),
    }
}

/// The one recovery alert when the circuit closes again.
pub fn circuit_closed(endpoint: &str, outage: std::time::Duration) -> NewAlert {
    NewAlert {
        kind: ErrorClass::Systemic.as_str().to_owned(),
        subject: format!(
            "[mailboxd] Windows host {endpoint} available again: mailbox jobs resumed"
        ),
        body: format!(
            "{endpoint} answers again after about {secs} s; mailboxd has resumed the paused jobs.\n\n             Nothing to do, unless this keeps happening: then look at the host's availability.\n             See the queue: mailboxd jobs list --state retrying\n",
            secs = outage.as_secs()
        ),
    }
}

/// How long identical circuit alerts (from several replicas, or a flapping host) are folded.
pub const CIRCUIT_ALERT_QUIET: std::time::Duration = std::time::Duration::from_secs(300);

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
        domain: String,
    }

    impl Sender {
        pub fn new(cfg: &Smtp) -> Result<Sender, SenderError> {
            crate::install_tls_provider();
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
            let domain = from.email.domain().to_owned();
            Ok(Sender {
                transport: builder.build(),
                from,
                to,
                domain,
            })
        }

        /// The email for one alert. The Message-ID is derived from the alert, so a resend after
        /// a crash carries the same id and mail systems can drop the duplicate.
        pub fn message(&self, alert: &Alert) -> Result<Message, String> {
            let mut b = Message::builder()
                .from(self.from.clone())
                .subject(alert.subject.clone())
                .message_id(Some(format!(
                    "<alert-{}-{}@{}>",
                    alert.id,
                    alert.created_at.timestamp(),
                    self.domain
                )))
                .header(ContentType::TEXT_PLAIN);
            for t in &self.to {
                b = b.to(t.clone());
            }
            b.body(alert.body.clone()).map_err(|e| e.to_string())
        }

        pub async fn send(&self, alert: Alert) -> Result<(), String> {
            let msg = self.message(&alert)?;
            self.transport
                .send(msg)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    }

    pub async fn run(store: Store, cfg: Smtp, mut shutdown: watch::Receiver<bool>) {
        if cfg.host.is_empty() {
            tracing::warn!("no [smtp].host: alerts stay in the outbox (mailboxd alerts list)");
            return;
        }
        let sender = match Sender::new(&cfg) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "alert emails are off until the SMTP settings are fixed");
                return;
            }
        };
        loop {
            match store
                .deliver_alerts(20, cfg.retry_base, |a| sender.send(a))
                .await
            {
                Ok((sent, failed)) if sent + failed > 0 => {
                    tracing::info!(sent, failed, "alert outbox delivered");
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
