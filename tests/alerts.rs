//! Alerts reach support staff by email through a real SMTP server (aiosmtpd capturing to a
//! Maildir), and an SMTP outage delays them without losing any.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{TestEnv, seed};
use mailboxd::config::SmtpTls;
use mailboxd::lab::Recipient;

/// `python3 -m aiosmtpd` capturing every message into `dir/new/` (Maildir).
struct SmtpSink {
    child: Child,
    dir: PathBuf,
}

impl SmtpSink {
    fn start(port: u16, dir: &Path) -> SmtpSink {
        let have = Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .status();
        assert!(
            have.is_ok_and(|s| s.success()),
            "aiosmtpd is missing: deploy/dev/services.sh installs it"
        );
        for sub in ["tmp", "new", "cur"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "aiosmtpd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        SmtpSink {
            child,
            dir: dir.to_owned(),
        }
    }

    fn messages(&self) -> Vec<String> {
        std::fs::read_dir(self.dir.join("new"))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_job_reaches_support_by_email_even_after_an_smtp_outage() {
    let mut onprem = seed("onprem");
    onprem.recipient = Recipient::Onprem;
    let mut env = TestEnv::new(vec![onprem]).await;
    let port = free_port(); // nothing listens there yet: SMTP is down
    let maildir = tempfile::tempdir().unwrap();
    env.settings.smtp.host = "127.0.0.1".into();
    env.settings.smtp.port = port;
    env.settings.smtp.tls = SmtpTls::None; // the sink is plain SMTP on loopback
    env.settings.smtp.from = "mailboxd@corp.example".into();
    env.settings.smtp.to = vec!["iam-support@corp.example".into()];
    env.settings.smtp.retry_base = Duration::from_millis(200);
    env.settings.smtp.timeout = Duration::from_secs(5);
    let app = env.start_daemon().await;

    let ev = env.joiner("onprem");
    env.publisher().await.publish(&ev).await.unwrap();
    env.wait_terminal(&ev.id).await;

    // The send fails while SMTP is down; the alert is kept with the reason.
    let deadline = Instant::now() + Duration::from_secs(30);
    let kept = loop {
        let alerts = env.store.list_alerts(10).await.unwrap();
        if alerts.first().is_some_and(|a| a.attempts > 0) {
            break alerts;
        }
        assert!(Instant::now() < deadline, "no send attempt: {alerts:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(kept.len(), 1);
    assert!(kept[0].sent_at.is_none());
    assert!(kept[0].last_error.is_some());

    // SMTP comes back: exactly one email, the one support staff can act on.
    let sink = SmtpSink::start(port, maildir.path());
    let deadline = Instant::now() + Duration::from_secs(30);
    while sink.messages().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the alert was never delivered: {:?}",
            env.store.list_alerts(10).await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.store.list_alerts(10).await.unwrap()[0]
        .sent_at
        .is_none()
    {
        assert!(Instant::now() < deadline, "the alert was not marked sent");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mails = sink.messages();
    assert_eq!(mails.len(), 1, "{mails:?}");
    let mail = &mails[0];
    assert!(
        mail.contains("Subject: [mailboxd] Mailbox for onprem not enabled"),
        "{mail}"
    );
    assert!(mail.contains("To: iam-support@corp.example"), "{mail}");
    assert!(mail.contains("From: mailboxd@corp.example"), "{mail}");
    assert!(mail.contains("Message-ID: <alert-"), "{mail}");
    assert!(mail.contains("What to do"), "{mail}");
    assert!(!mail.contains(common::LAB_PASSWORD));

    app.stop().await;
    env.cleanup().await;
}
