//! Alerts reach support staff by email through a real SMTP server (aiosmtpd capturing to a
//! Maildir), and an SMTP outage delays them without losing any.

use crate::common;

use std::time::{Duration, Instant};

use common::smtp::{SmtpSink, decode_parts, send_to_sink};
use common::{TestEnv, free_port, seed};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_job_reaches_support_by_email_even_after_an_smtp_outage() {
    let onprem = common::onprem("onprem");
    let mut env = TestEnv::new(vec![onprem]).await;
    let port = free_port(); // nothing listens there yet: SMTP is down
    let maildir = tempfile::tempdir().unwrap();
    send_to_sink(&mut env, port, "iam-support@corp.example");
    env.settings.smtp.retry_base = Duration::from_millis(200);
    env.settings.smtp.timeout = Duration::from_secs(5);
    env.settings.smtp.digest_window = Duration::from_millis(300);
    let app = env.start_daemon().await;

    let ev = env.joiner("onprem");
    env.publisher().await.publish(&ev).await.unwrap();
    env.wait_terminal(&ev.id).await;
    then_while_smtp_is_down_the_alert_is_kept_with_the_reason(&env).await;
    // SMTP comes back: exactly one email, the one support staff can act on.
    let sink = SmtpSink::start(port, maildir.path());
    when_smtp_comes_back_the_alert_is_delivered_and_marked_sent(&env, &sink).await;
    then_support_gets_one_email_they_can_act_on(&sink.messages());
    app.stop().await;
}

/// The send fails while SMTP is down; the alert is kept with the reason.
async fn then_while_smtp_is_down_the_alert_is_kept_with_the_reason(env: &TestEnv) {
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
}

async fn when_smtp_comes_back_the_alert_is_delivered_and_marked_sent(
    env: &TestEnv,
    sink: &SmtpSink,
) {
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
}

fn then_support_gets_one_email_they_can_act_on(mails: &[String]) {
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
    let decoded = decode_parts(mail);
    assert!(
        decoded.contains("Attempts:") && decoded.contains("#1 "),
        "{decoded}"
    );
    assert!(!mail.contains(common::LAB_PASSWORD));
}

const DIGEST_OF: usize = 50;
const PLANTED: &str = "Planted-S3cret-9";

/// Fifty accounts whose joiners Exchange refuses with one error that echoes the Exchange
/// credential mailboxd holds; permanent failures mailed to support, in digests.
async fn given_fifty_joiners_exchange_refuses_echoing_the_credential(
    maildir: &tempfile::TempDir,
) -> (TestEnv, SmtpSink) {
    const N: usize = DIGEST_OF;
    let accounts: Vec<_> = (0..N).map(|i| seed(&format!("dig{i:02}"))).collect();
    // The Exchange credential is a domain account the lab's domain knows.
    let cfg = common::lab_config(accounts)
        .with_domain_account("svc-exchange", secrecy::SecretString::from(PLANTED));
    let mut env = TestEnv::with_lab(cfg).await;
    let port = free_port();
    let sink = SmtpSink::start(port, maildir.path());
    send_to_sink(&mut env, port, "operations@corp.example");
    env.settings
        .smtp
        .to_by_class
        .insert("permanent".into(), vec!["iam-support@corp.example".into()]);
    env.settings.smtp.digest_window = Duration::from_secs(2);
    env.settings.admin.public_url = Some("https://mailboxd.corp.example".into());
    // The Exchange credential mailboxd holds; Exchange's error text will echo it.
    env.settings.exchange.username = Some("CORP\\svc-exchange".into());
    env.settings.exchange.password = Some(secrecy::SecretString::from(PLANTED));
    env.fault(serde_json::json!({"fault": "cmdlet_errors", "count": N, "error": {
        "reason": "ProxyAddressExistsException",
        "message": format!("The proxy address is already being used (bound as CORP\\svc-exchange with {PLANTED}).")
    }}))
    .await;
    (env, sink)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_identical_failures_become_one_digest_without_the_planted_secret() {
    const N: usize = DIGEST_OF;
    let maildir = tempfile::tempdir().unwrap();
    let (env, sink) = given_fifty_joiners_exchange_refuses_echoing_the_credential(&maildir).await;
    let app = env.start_daemon().await;
    let publisher = env.publisher().await;
    let mut ids = Vec::new();
    for i in 0..N {
        let ev = env.joiner(&format!("dig{i:02}"));
        publisher.publish(&ev).await.unwrap();
        ids.push(ev.id);
    }
    for id in &ids {
        let job = env.wait_terminal(id).await;
        assert!(!job.last_error.unwrap_or_default().contains(PLANTED));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while env
        .store
        .list_alerts(100)
        .await
        .unwrap()
        .iter()
        .any(|a| a.sent_at.is_none())
    {
        assert!(Instant::now() < deadline, "alerts not all delivered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    then_one_digest_names_every_account_without_the_secret(&sink.messages());
    let alerts = env.store.list_alerts(100).await.unwrap();
    assert_eq!(alerts.len(), N);
    assert_eq!(alerts.iter().filter(|a| a.folded_into.is_none()).count(), 1);
    app.stop().await;
}

/// One email, to the class's recipient, plain and HTML, naming every account and linking
/// the dashboard, without the planted secret.
fn then_one_digest_names_every_account_without_the_secret(mails: &[String]) {
    const N: usize = DIGEST_OF;
    assert_eq!(
        mails.len(),
        1,
        "one digest for {N} identical failures, got {}",
        mails.len()
    );
    let mail = &mails[0];
    assert!(
        mail.contains(&format!("Subject: [mailboxd] {N} accounts failed with:")),
        "{mail}"
    );
    assert!(
        mail.contains("To: iam-support@corp.example"),
        "per-class recipient: {mail}"
    );
    assert!(mail.contains("multipart/alternative"), "{mail}");
    assert!(
        mail.contains("text/plain") && mail.contains("text/html"),
        "{mail}"
    );
    let decoded = decode_parts(mail);
    for i in 0..N {
        assert!(
            decoded.contains(&format!("dig{i:02}")),
            "dig{i:02} missing from the digest"
        );
    }
    assert!(
        decoded.contains("https://mailboxd.corp.example/jobs"),
        "{decoded}"
    );
    assert!(
        !mail.contains(PLANTED) && !decoded.contains(PLANTED),
        "the secret leaked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_hourly_cap_holds_back_the_rest_and_says_so() {
    let accounts: Vec<_> = (0..3).map(|i| seed(&format!("cap{i}"))).collect();
    let mut env = TestEnv::new(accounts).await;
    let port = free_port();
    let maildir = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(port, maildir.path());
    send_to_sink(&mut env, port, "iam-support@corp.example");
    env.settings.smtp.digest_window = Duration::from_secs(1);
    env.settings.smtp.hourly_cap = 2;
    // Three different problems: three emails wanted, two allowed.
    for reason in [
        "ProxyAddressExistsException",
        "ErrorCannotFindTargetDeliveryDomainException",
        "DataValidationException",
    ] {
        env.fault(
            serde_json::json!({"fault": "cmdlet_errors", "count": 1, "error": {
                "reason": reason, "message": format!("{reason} happened")
            }}),
        )
        .await;
    }
    let app = env.start_daemon().await;
    let publisher = env.publisher().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let ev = env.joiner(&format!("cap{i}"));
        publisher.publish(&ev).await.unwrap();
        ids.push(ev.id);
    }
    for id in &ids {
        env.wait_terminal(id).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while env
        .store
        .list_alerts(10)
        .await
        .unwrap()
        .iter()
        .any(|a| a.sent_at.is_none())
    {
        assert!(Instant::now() < deadline, "alerts not all handled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mails = sink.messages();
    assert_eq!(mails.len(), 2, "{mails:?}");
    let decoded: Vec<String> = mails.iter().map(|m| decode_parts(m)).collect();
    assert!(
        decoded
            .iter()
            .any(|m| m.contains("1 more alert email(s) are suppressed this hour")),
        "{decoded:?}"
    );
    let alerts = env.store.list_alerts(10).await.unwrap();
    assert_eq!(alerts.iter().filter(|a| a.suppressed).count(), 1);
    app.stop().await;
}
