//! `mailboxd check`: every dependency of the running configuration, tried for real — the
//! first thing to run after installing. Each probe says OK, FAIL (with the reason and what to
//! look at) or SKIP (not configured).

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::Settings;

#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    pub name: String,
    pub status: Status,
    pub detail: String,
    pub ms: u128,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Ok,
    Fail,
    Skip,
}

const TIMEOUT: Duration = Duration::from_secs(15);

async fn timed<F>(name: &str, f: F) -> Probe
where
    F: std::future::Future<Output = (Status, String)>,
{
    let started = Instant::now();
    let (status, detail) = match tokio::time::timeout(TIMEOUT, f).await {
        Ok(r) => r,
        Err(_) => (
            Status::Fail,
            format!("no answer within {}s", TIMEOUT.as_secs()),
        ),
    };
    Probe {
        name: name.to_owned(),
        status,
        detail,
        ms: started.elapsed().as_millis(),
    }
}

/// Runs every probe (in order: the later ones depend on nothing but their own settings).
pub async fn run(s: &Settings) -> Vec<Probe> {
    winrm::tls::install_provider();
    let mut out = Vec::new();
    out.push(
        timed("PostgreSQL", async {
            match crate::store::Store::connect(&s.database.url, 1).await {
                Ok(store) => match store.ping().await {
                    Ok(()) => (
                        Status::Ok,
                        "connected; `mailboxd migrate` keeps the schema current".into(),
                    ),
                    Err(e) => (Status::Fail, e.to_string()),
                },
                Err(e) => (Status::Fail, format!("{e} (database.url)")),
            }
        })
        .await,
    );
    out.push(
        timed("RabbitMQ", async {
            match crate::intake::connect(&s.amqp.url, "mailboxd check").await {
                Ok(conn) => match conn.create_channel().await {
                    Ok(ch) => {
                        let passive = lapin::options::QueueDeclareOptions {
                            passive: true,
                            ..Default::default()
                        };
                        match ch
                            .queue_declare(s.amqp.queue.as_str().into(), passive, Default::default())
                            .await
                        {
                            Ok(q) => (
                                Status::Ok,
                                format!("queue {} holds {} message(s)", s.amqp.queue, q.message_count()),
                            ),
                            Err(_) => (
                                Status::Ok,
                                format!(
                                    "connected; queue {} does not exist yet (the daemon declares it)",
                                    s.amqp.queue
                                ),
                            ),
                        }
                    }
                    Err(e) => (Status::Fail, e.to_string()),
                },
                Err(e) => (Status::Fail, format!("{e} (amqp.url)")),
            }
        })
        .await,
    );
    match crate::directory::Directory::from_config(&s.ldap) {
        Ok(None) => out.push(Probe {
            name: "LDAP".into(),
            status: Status::Skip,
            detail: "[ldap].urls is empty: no directory checks".into(),
            ms: 0,
        }),
        Err(e) => out.push(Probe {
            name: "LDAP".into(),
            status: Status::Fail,
            detail: e.to_string(),
            ms: 0,
        }),
        Ok(Some(dir)) => {
            let started = Instant::now();
            for (url, r) in dir.check().await {
                out.push(Probe {
                    name: format!("LDAP {url}"),
                    status: if r.is_ok() { Status::Ok } else { Status::Fail },
                    detail: match r {
                        Ok(dc) => format!("bound as {}; domain controller {dc}", s.ldap.bind_dn),
                        Err(e) => e,
                    },
                    ms: started.elapsed().as_millis(),
                });
            }
        }
    }
    out.push(
        timed("WinRM", async {
            let client = match crate::app::winrm_client(s) {
                Ok(c) => c,
                Err(e) => return (Status::Fail, e.to_string()),
            };
            let shell = match client.open_shell(&Default::default()).await {
                Ok(sh) => sh,
                Err(e) => return (Status::Fail, e.to_string()),
            };
            let r = shell.run("hostname", &[], None).await;
            let _ = shell.close().await;
            match r {
                Ok(o) if o.exit_code == 0 => (
                    Status::Ok,
                    format!(
                        "{} answers as {}",
                        s.winrm.endpoint,
                        String::from_utf8_lossy(&o.stdout).trim()
                    ),
                ),
                Ok(o) => (Status::Fail, format!("hostname exited {}", o.exit_code)),
                Err(e) => (Status::Fail, e.to_string()),
            }
        })
        .await,
    );
    out.push(
        timed("Exchange session", async {
            let client = match crate::app::winrm_client(s) {
                Ok(c) => c,
                Err(e) => return (Status::Fail, e.to_string()),
            };
            let ex = crate::exchange::Exchange::new(client, &s.exchange, s.winrm.endpoint.clone())
                .redacting(s.secret_values());
            // A batch of no accounts: opens the session in the configured mode, touches nothing.
            match ex
                .run_batch(crate::exchange::Template::EnableRemoteMailbox, Vec::new())
                .await
            {
                Ok(_) => (
                    Status::Ok,
                    format!("session opened in {:?} mode", s.exchange.mode).to_lowercase(),
                ),
                Err(e) => (Status::Fail, e.to_string()),
            }
        })
        .await,
    );
    if s.smtp.host.is_empty() {
        out.push(Probe {
            name: "SMTP".into(),
            status: Status::Skip,
            detail: "[smtp].host is empty: alerts stay in the outbox".into(),
            ms: 0,
        });
    } else {
        out.push(
            timed("SMTP", async {
                match crate::alert::sender::Sender::new(&s.smtp, None) {
                    Ok(sender) => match sender.test_connection().await {
                        Ok(true) => (
                            Status::Ok,
                            format!("{}:{} accepts connections", s.smtp.host, s.smtp.port),
                        ),
                        Ok(false) => (Status::Fail, "the server did not answer NOOP".into()),
                        Err(e) => (Status::Fail, e),
                    },
                    Err(e) => (Status::Fail, e.to_string()),
                }
            })
            .await,
        );
    }
    out
}
