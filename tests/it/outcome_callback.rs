//! The outcome callback (`[outcome_callback]`, issue 34) through the real daemon, the test's
//! PostgreSQL and an HTTPS receiver with a CA of its own: an event posted to the HTTP intake
//! has its outcome POSTed back as docs/events.md promises (the exact `mailboxd.outcome/v1`
//! body, `Idempotency-Key`, `traceparent`, the HMAC-SHA256 signature); a 503 is tried again
//! after its `Retry-After` under the same key and accepted once; a 401 is refused for good
//! with one alert email and shown to operators; a daemon killed mid-request delivers after
//! its restart; a receiver whose CA is not trusted gets nothing, and the error names the
//! setting to fix.

use crate::common;

use std::time::Duration;

use common::TestEnv;
use common::callback::{CallbackReceiver, Reply, Seen, TestCa};
use common::smtp::{SmtpSink, decode_parts, send_to_sink};
use mailboxd::outcome::HttpDelivery;
use mailboxd::store::{OutcomeFilter, OutcomeRow};
use secrecy::SecretString;
use serde_json::Value;

/// The HTTP intake's bearer token (the sender's credential to mailboxd).
const INTAKE_TOKEN: &str = "5e0f3a9c8b7d6e5f4a3b2c1d0e9f8a7b";
/// The callback's bearer token (mailboxd's credential to the receiver).
const CALLBACK_TOKEN: &str = "cb-7d1e6f0a9b8c7d6e5f4a3b2c1d0e9f8a";
const SIGNING_KEY: &str = "hmac-3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f";
/// W3C Trace Context's example `traceparent`.
const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// A test's environment with the HTTP intake on HTTPS and the callback pointed at
/// `receiver`, trusting `trusted` (the receiver's CA, or another).
struct Given {
    env: TestEnv,
    receiver: CallbackReceiver,
    /// Trusts the HTTP intake's self-signed certificate.
    https: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn given(accounts: &[&str], script: Vec<Reply>, trust_the_receivers_ca: bool) -> Given {
    let mut env = TestEnv::new(accounts.iter().map(|a| common::seed(a)).collect()).await;
    let dir = tempfile::tempdir().unwrap();
    // A fixed port: a restarted daemon listens where the first one did.
    let listen = format!("127.0.0.1:{}", common::free_port());
    let intake = common::http_intake_over_https(&mut env, dir.path(), listen, INTAKE_TOKEN);
    let ca = TestCa::new("callback receiver CA");
    let receiver = CallbackReceiver::start(&ca, script).await;
    let trusted = if trust_the_receivers_ca {
        ca.pem.clone()
    } else {
        TestCa::new("some other CA").pem
    };
    let ca_file = dir.path().join("callback-ca.pem");
    std::fs::write(&ca_file, trusted).unwrap();
    let cb = &mut env.settings.outcome_callback;
    cb.url = Some(receiver.url.clone());
    cb.credential = Some(SecretString::from(CALLBACK_TOKEN));
    cb.signing_key = Some(SecretString::from(SIGNING_KEY));
    cb.ca_file = Some(ca_file);
    let o = &mut env.settings.outcomes;
    o.poll_interval = Duration::from_millis(100);
    o.retry_base = Duration::from_millis(200);
    o.retry_cap = Duration::from_secs(1);
    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(intake.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    Given {
        env,
        receiver,
        https,
        _dir: dir,
    }
}

impl Given {
    /// Posts a joiner for `sam` to the HTTP intake (with `traceparent`); its event id.
    async fn post_joiner(&self, sam: &str) -> String {
        let ev = self.env.joiner(sam);
        let listen = self.env.settings.http_intake.listen.as_deref().unwrap();
        let r = self
            .https
            .post(format!("https://{listen}/v1/events"))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {INTAKE_TOKEN}"))
            .header("traceparent", TRACE)
            .body(ev.to_json().to_string())
            .send()
            .await
            .expect("the HTTP intake answers");
        assert_eq!(r.status().as_u16(), 202, "{:?}", r.text().await);
        ev.id
    }

    /// Waits (bounded) until the outcome of `event_id` is stored and `done` holds for it.
    async fn wait_outcome(&self, event_id: &str, done: impl Fn(&OutcomeRow) -> bool) -> OutcomeRow {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let rows = self
                .env
                .store
                .list_outcomes(OutcomeFilter::All, None, 100)
                .await
                .unwrap();
            let row = rows.into_iter().find(|o| o.event_id == event_id);
            if let Some(row) = row.filter(|r| done(r)) {
                return row;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the outcome of {event_id} did not get there within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn delivered(o: &OutcomeRow) -> bool {
    o.callback_state == Some(HttpDelivery::Sent)
}

/// `sha256=<hex>` of the HMAC-SHA256 of `body` under the signing key, computed here as a
/// receiver would.
fn expected_signature(body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SIGNING_KEY.as_bytes());
    let tag = ring::hmac::sign(&key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_over_the_http_intake_gets_its_outcome_posted_back_as_documented() {
    let g = given(&["cb.http", "cb.amqp"], Vec::new(), true).await;
    let app = g.env.start_daemon().await;
    let over_http = g.post_joiner("cb.http").await;
    // An event over the broker: its sender hears the outcome there, not on the callback.
    let over_amqp = g.env.joiner("cb.amqp");
    g.env.publisher().await.publish(&over_amqp).await.unwrap();
    let row = g.wait_outcome(&over_http, delivered).await;
    let amqp_row = g.wait_outcome(&over_amqp.id, |o| o.sent_at.is_some()).await;
    assert_eq!(
        amqp_row.callback_state, None,
        "only the HTTP intake's by default"
    );
    let accepted = g.receiver.accepted();
    assert_eq!(
        accepted.len(),
        1,
        "one request, for one outcome: {accepted:#?}"
    );
    then_the_request_is_the_documented_one(&accepted[0], &row, &over_http);
    app.stop().await;
    assert_eq!(g.receiver.seen().len(), 1, "nothing else was sent");
}

fn then_the_request_is_the_documented_one(req: &Seen, row: &OutcomeRow, event_id: &str) {
    assert_eq!(
        (req.method.as_str(), req.path.as_str()),
        ("POST", "/mailboxd/outcomes")
    );
    assert_eq!(req.header("content-type"), Some("application/json"));
    let bearer = format!("Bearer {CALLBACK_TOKEN}");
    assert_eq!(req.header("authorization"), Some(bearer.as_str()));
    assert_eq!(
        req.header("idempotency-key"),
        Some(row.id.to_string().as_str())
    );
    assert_eq!(
        req.header("traceparent"),
        Some(TRACE),
        "the event's trace goes back"
    );
    assert_eq!(
        req.header("x-mailboxd-signature"),
        Some(expected_signature(&req.body).as_str()),
        "the signature is the HMAC-SHA256 of the exact body"
    );
    let verdict =
        &common::schema::verdicts("outcome.schema.json", std::slice::from_ref(&req.body))[0];
    assert!(verdict.json && verdict.valid, "{:?}", verdict.errors);
    let body: Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(body, row.body, "the body is the stored outcome");
    assert_eq!(body["id"], row.id.to_string());
    assert_eq!(body["event_id"], event_id);
    assert_eq!(body["result"], "succeeded");
    assert_eq!(body["trace_parent"], TRACE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_503_is_tried_again_after_its_retry_after_under_the_same_key_and_accepted_once() {
    let script = vec![Reply::Status(503, Some(2))];
    let g = given(&["cb.busy"], script, true).await;
    let app = g.env.start_daemon().await;
    let id = g.post_joiner("cb.busy").await;
    let row = g.wait_outcome(&id, delivered).await;
    app.stop().await;
    let seen = g.receiver.seen();
    assert_eq!(seen.len(), 2, "the refusal and the resend: {seen:#?}");
    assert_eq!(seen[0].answered, Some(503));
    assert_eq!(g.receiver.accepted().len(), 1, "accepted exactly once");
    let key = row.id.to_string();
    for s in &seen {
        assert_eq!(s.header("idempotency-key"), Some(key.as_str()));
        assert_eq!(s.body, seen[0].body, "the same body on the resend");
    }
    let waited = seen[1].at - seen[0].at;
    assert!(
        waited >= Duration::from_millis(1900),
        "Retry-After: 2 honoured, resent after {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receiver_refusing_the_credential_raises_one_alert_and_is_not_asked_again() {
    let script = vec![Reply::Status(401, None), Reply::Status(401, None)];
    let mut g = given(&["cb.r1", "cb.r2"], script, true).await;
    let maildir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let sink = SmtpSink::start(port, maildir.path());
    send_to_sink(&mut g.env, port, "iam-ops@corp.example");
    g.env.settings.smtp.digest_window = Duration::from_secs(1);
    let app = g.env.start_daemon().await;
    for sam in ["cb.r1", "cb.r2"] {
        let id = g.post_joiner(sam).await;
        let row = g
            .wait_outcome(&id, |o| o.callback_state == Some(HttpDelivery::Refused))
            .await;
        let error = row.callback_last_error.unwrap_or_default();
        assert!(error.contains("401"), "{error}");
    }
    let mail = wait_one_mail(&sink).await;
    assert!(
        mail.contains("401") && mail.contains("outcome_callback.username"),
        "{mail}"
    );
    assert!(!mail.contains(CALLBACK_TOKEN), "the credential stays out");
    let kinds = g.env.store.list_alerts(10).await.unwrap();
    let refused = kinds
        .iter()
        .filter(|a| a.kind == mailboxd::alert::AlertKind::OutcomeCallback)
        .count();
    assert_eq!(refused, 1, "one alert for the problem: {kinds:#?}");
    // Operators see the refusal; nothing is left pending for the callback.
    let (code, out, err) = g.env.cli(&["outcomes", "list", "--status", "refused"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches("callback refused").count(), 2, "{out}");
    assert_eq!(g.env.store.outcome_counts().await.unwrap().unsent, 0);
    app.stop().await;
    assert_eq!(g.receiver.seen().len(), 2, "each tried once, not retried");
}

/// Waits (bounded) for the first email, then gives the digest window time to show a second.
async fn wait_one_mail(sink: &SmtpSink) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while sink.messages().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no alert email within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let messages = sink.messages();
    assert_eq!(messages.len(), 1, "{messages:#?}");
    decode_parts(&messages[0])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_daemon_killed_before_the_receiver_answers_delivers_after_its_restart() {
    let g = given(&["cb.kill"], vec![Reply::Hold], true).await;
    let mut env = g.env.daemon_env();
    env.extend(
        [
            ("MAILBOXD__OUTCOMES__POLL_INTERVAL", "100ms"),
            ("MAILBOXD__OUTCOMES__LEASE", "2s"),
            ("MAILBOXD__OUTCOMES__RETRY_BASE", "200ms"),
            ("MAILBOXD__OUTCOMES__RETRY_CAP", "1s"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let mut first = g.env.spawn_logged(&[], env.clone()).await;
    assert!(first.exit_status().is_none(), "{}", first.logs());
    let id = g.post_joiner("cb.kill").await;
    // The request is in flight, unanswered: kill -9.
    g.receiver.wait_requests(1).await;
    first.child.kill().expect("SIGKILL");
    first.child.wait().expect("reaped");
    let pending = g.wait_outcome(&id, |_| true).await;
    assert_eq!(
        pending.callback_state,
        Some(HttpDelivery::Pending),
        "not marked before an answer"
    );
    let second = g.env.spawn_logged(&[], env).await;
    let row = g.wait_outcome(&id, delivered).await;
    drop(second);
    let seen = g.receiver.seen();
    assert!(
        seen.len() >= 2,
        "the held request and the resend: {seen:#?}"
    );
    assert_eq!(seen[0].answered, None, "the first was never answered");
    assert_eq!(g.receiver.accepted().len(), 1, "{seen:#?}");
    let key = row.id.to_string();
    assert!(
        seen.iter()
            .all(|s| s.header("idempotency-key") == Some(key.as_str())),
        "the resend carries the same key: {seen:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receiver_whose_ca_is_not_trusted_gets_nothing_and_the_error_names_the_setting() {
    let g = given(&["cb.ca"], Vec::new(), false).await;
    let app = g.env.start_daemon().await;
    let id = g.post_joiner("cb.ca").await;
    let row = g
        .wait_outcome(&id, |o| o.callback_last_error.is_some())
        .await;
    assert_eq!(
        row.callback_state,
        Some(HttpDelivery::Pending),
        "tried again later"
    );
    let error = row.callback_last_error.unwrap_or_default();
    assert!(
        error.contains("outcome_callback.ca_file") && error.contains("certificate"),
        "{error}"
    );
    let (code, out, _) = g.env.cli(&["outcomes", "list", "--status", "failing"]);
    assert_eq!(code, 0);
    assert!(out.contains("outcome_callback.ca_file"), "{out}");
    app.stop().await;
    assert!(
        g.receiver.seen().is_empty(),
        "no request got past the handshake"
    );
}

/// The callback's rows in the store, with two replicas: only the outcomes of events that came
/// over the HTTP intake are due there (by default); of an account only the oldest due one is
/// handed out, to one replica; another replica cannot end what it does not hold; a lease that
/// runs out (its replica died) hands the row to another.
#[tokio::test]
async fn replicas_share_the_callbacks_rows_oldest_per_account_under_a_lease() {
    use mailboxd::event::EventKind;
    use mailboxd::store::{CallbackDue, OutcomeChannel, ReplyTo};
    let db = common::scratch::TestDatabase::create_empty(&common::fresh_tag(), 4).await;
    db.migrate().await.unwrap();
    let store = (*db)
        .clone()
        .delivering_to_callback(CallbackDue::HttpIntake);
    let http = ReplyTo {
        http_intake: true,
        ..ReplyTo::default()
    };
    // Per account, an older joiner superseded by a newer leaver in the same batch.
    let batch = |sam: &str| {
        [
            common::event_at(&format!("{sam}-old"), EventKind::Joiner, sam, 0),
            common::event_at(&format!("{sam}-new"), EventKind::Leaver, sam, 5),
        ]
    };
    let over_http = batch("cbhttp");
    store
        .insert_deliveries(&over_http, &[http.clone(), http], 3)
        .await
        .unwrap();
    store.insert_events(&batch("cbamqp"), 3).await.unwrap();
    // The newer leaver over HTTP is cancelled: its outcome is due after the superseded one's.
    let newer = store.job_by_event("cbhttp-new").await.unwrap().unwrap();
    assert_eq!(store.cancel_job(newer.id, "test").await.unwrap(), Ok(()));

    let lease = Duration::from_millis(300);
    let (a, b) = tokio::join!(
        store.claim_outcomes(OutcomeChannel::Callback, "a", 10, lease),
        store.claim_outcomes(OutcomeChannel::Callback, "b", 10, lease)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let held: Vec<&str> = a.iter().chain(&b).map(|o| o.event_id.as_str()).collect();
    assert_eq!(
        held,
        vec!["cbhttp-old"],
        "the broker's event is not due; the newer waits"
    );
    let (holder, other, row) = if a.is_empty() {
        ("b", "a", &b[0])
    } else {
        ("a", "b", &a[0])
    };
    assert!(
        !store
            .http_delivery_done(OutcomeChannel::Callback, other, row.id, None)
            .await
            .unwrap()
    );
    // The holder dies: once its lease is out the row goes to another replica, its attempt counted.
    tokio::time::sleep(lease + Duration::from_millis(100)).await;
    let again = store
        .claim_outcomes(OutcomeChannel::Callback, "c", 10, lease)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id, again[0].attempts), (row.id, 2));
    assert!(
        !store
            .http_delivery_done(OutcomeChannel::Callback, holder, row.id, None)
            .await
            .unwrap(),
        "the lease moved on"
    );
    assert!(
        store
            .http_delivery_done(OutcomeChannel::Callback, "c", row.id, None)
            .await
            .unwrap()
    );
    let next = store
        .claim_outcomes(OutcomeChannel::Callback, "a", 10, lease)
        .await
        .unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].event_id, "cbhttp-new");
    let amqp = store
        .list_outcomes(OutcomeFilter::All, Some("cbamqp"), 10)
        .await
        .unwrap();
    assert!(
        !amqp.is_empty() && amqp.iter().all(|o| o.callback_state.is_none()),
        "{amqp:#?}"
    );
}
