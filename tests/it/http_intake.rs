//! The HTTP intake (`[http_intake]`) through the daemon on its own HTTPS listener, against
//! the test's PostgreSQL: a joiner posted with a bearer token (or Basic) becomes a job and
//! is answered only once the job is committed, a repeat answers with the same job, and
//! what is refused — no or a wrong credential, an oversized body, a malformed payload, the
//! database out of reach — is told so plainly, with nothing lost: the sender keeps what
//! was not stored, and what was stored but refused is a poison row.

use crate::common;

use std::sync::Arc;

use common::TestEnv;
use mailboxd::job::JobState;
use rustls::pki_types::{CertificateDer, ServerName};
use secrecy::SecretString;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "1f0c8a4d9b7e6a5c3d2b1a09f8e7d6c5";
const USER: &str = "isc-trigger";
const PASSWORD: &str = "9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a";
/// W3C Trace Context's example `traceparent`.
const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
/// The body limit these tests configure: small, so an oversized body is cheap.
const LIMIT: usize = 4096;

/// A daemon with the HTTP intake on a free port over HTTPS, and a client that trusts it.
struct Intake {
    env: TestEnv,
    /// The IAM system's queue on the outcome exchange.
    iam: common::outcomes::OutcomeQueue,
    app: mailboxd::app::App,
    url: String,
    https: reqwest::Client,
    cert: CertificateDer<'static>,
    _dir: tempfile::TempDir,
}

async fn given_an_http_intake() -> Intake {
    let mut env = TestEnv::new(vec![common::seed("hjoiner"), common::seed("hother")]).await;
    let dir = tempfile::tempdir().unwrap();
    let cert = common::http_intake_over_https(&mut env, dir.path(), "127.0.0.1:0".into(), TOKEN);
    let h = &mut env.settings.http_intake;
    h.username = Some(USER.into());
    h.password = Some(SecretString::from(PASSWORD));
    h.max_body_bytes = LIMIT;
    h.isc_ad_sources = vec!["Corporate Active Directory".into()];
    env.settings.admin.open_reads = true;
    let iam = env.expect_outcomes().await;
    let app = env.start_daemon().await;
    let addr = app.http_intake_addr.expect("the HTTP intake listens");
    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    Intake {
        env,
        iam,
        app,
        url: format!("https://{addr}/v1/events"),
        https,
        cert: cert.der().clone(),
        _dir: dir,
    }
}

impl Intake {
    async fn post(
        &self,
        body: &[u8],
        auth: Option<&str>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        self.send(body, auth, None).await
    }

    /// `post` with a `traceparent` header.
    async fn send(
        &self,
        body: &[u8],
        auth: Option<&str>,
        traceparent: Option<&str>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut req = self
            .https
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body.to_vec());
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        if let Some(t) = traceparent {
            req = req.header("traceparent", t);
        }
        let r = req.send().await.expect("the intake answers");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.json::<Value>().await.unwrap_or(Value::Null);
        (status, headers, body)
    }
}

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

fn joiner(env: &TestEnv, sam: &str) -> (String, Vec<u8>) {
    let spec = env.joiner(sam);
    (spec.id.clone(), spec.to_json().to_string().into_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_joiner_over_https_is_answered_with_its_job_only_after_the_commit() {
    let t = given_an_http_intake().await;
    let (id, body) = joiner(&t.env, "hjoiner");
    let (status, _, answer) = t.send(&body, Some(&bearer()), Some(TRACE)).await;
    assert_eq!(status, 202, "{answer}");
    let job_id = answer["job_id"].as_str().expect("a job id").to_owned();
    assert_eq!(answer["jobs"][0]["result"], "accepted", "{answer}");
    // The answer came after the commit: the job is there the moment the 202 is.
    let job = t
        .env
        .store
        .job_by_event(&id)
        .await
        .unwrap()
        .expect("the job row");
    assert_eq!(job.id.to_string(), job_id);
    // The W3C traceparent it came with is kept with the job, and its page shows the trace.
    assert_eq!(job.trace_parent.as_deref(), Some(TRACE));
    let page = t
        .env
        .http
        .get(format!("http://{}/jobs/{job_id}", t.app.admin_addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("<td id=\"trace-id\">4bf92f3577b34da6a3ce929d0e0e4736</td>"),
        "{page}"
    );

    // The same event again (a sender's retry): 200 with the same job, nothing new.
    let (status, _, again) = t.post(&body, Some(&bearer())).await;
    assert_eq!(
        (status, again["job_id"].as_str()),
        (200, Some(job_id.as_str())),
        "{again}"
    );
    assert_eq!(again["jobs"][0]["result"], "duplicate", "{again}");

    // The event becomes the mailbox, as one from the broker does, and its outcome carries
    // the trace back: in the body and as the AMQP header.
    t.env.wait_succeeded(&id).await;
    common::outcomes::wait_all_sent(&t.env.store, 1).await;
    let heard = t.iam.drain().await;
    let outcome = heard
        .iter()
        .find(|o| o.correlation_id.as_deref() == Some(id.as_str()))
        .expect("the joiner's outcome");
    assert_eq!(outcome.body["trace_parent"], TRACE, "{:#}", outcome.body);
    assert_eq!(outcome.traceparent.as_deref(), Some(TRACE));

    // Basic credentials work too (RFC 7617), for a sender that has no bearer token.
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let (id2, body2) = joiner(&t.env, "hother");
    // With a hostile traceparent, which is refused: the event goes on without a trace.
    let hostile = format!("{TRACE}\r\n").to_uppercase();
    let (status, _, answer) = t
        .send(
            &body2,
            Some(&format!("Basic {basic}")),
            Some(hostile.trim()),
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    let job2 = t.env.store.job_by_event(&id2).await.unwrap().unwrap();
    assert_eq!(job2.trace_parent, None);
    t.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refusals_are_clear_and_what_was_refused_is_kept_or_left_with_the_sender() {
    let t = given_an_http_intake().await;
    let (id, body) = joiner(&t.env, "hjoiner");

    // No credential, a wrong one: 401 with the challenges; nothing stored.
    let (status, headers, answer) = t.post(&body, None).await;
    assert_eq!(status, 401, "{answer}");
    let challenges: Vec<&str> = headers
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(
        challenges.iter().any(|c| c.starts_with("Bearer realm=")),
        "{challenges:?}"
    );
    assert!(
        challenges.iter().any(|c| c.starts_with("Basic realm=")),
        "{challenges:?}"
    );
    let (status, headers, answer) = t.post(&body, Some("Bearer not-the-token")).await;
    assert_eq!(status, 401, "{answer}");
    let challenge = headers.get("www-authenticate").unwrap().to_str().unwrap();
    assert!(challenge.contains("invalid_token"), "{challenge}");
    assert!(t.env.store.job_by_event(&id).await.unwrap().is_none());
    assert!(
        t.env.store.list_poison(10).await.unwrap().is_empty(),
        "unauthenticated bodies are not stored"
    );

    // A malformed payload: 400 with the reason, kept as a poison row.
    let broken = br#"{"schema":"mailboxd.event/v1","id":"h-broken","type":"joiner"}"#;
    let (status, _, answer) = t.post(broken, Some(&bearer())).await;
    assert_eq!(status, 400, "{answer}");
    let reason = answer["error"].as_str().unwrap();
    assert!(
        reason.contains("occurred_at") || reason.contains("account"),
        "{reason}"
    );
    let poison_id = answer["poison_id"].as_i64().expect("the poison row's id");
    let row = t
        .env
        .store
        .get_poison(poison_id)
        .await
        .unwrap()
        .expect("the poison row");
    assert_eq!(
        (row.exchange.as_str(), row.routing_key.as_str()),
        ("http_intake", "POST /v1/events")
    );
    assert_eq!(row.body, broken, "the body is kept as it came");
    assert_eq!(row.reason, reason);
    assert!(
        !row.headers.unwrap().to_string().contains(TOKEN),
        "no credential kept"
    );

    // An oversized body: 413, kept as a row without its body.
    let big = vec![b' '; LIMIT * 4];
    let (status, _, answer) = t.post(&big, Some(&bearer())).await;
    assert_eq!(status, 413, "{answer}");
    let row = t
        .env
        .store
        .get_poison(answer["poison_id"].as_i64().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(row.reason.contains("max_body_bytes"), "{}", row.reason);
    then_a_declared_oversized_body_is_refused_before_it_is_sent(&t).await;

    // A body for another endpoint posted to Identity Security Cloud's: refused and kept.
    let (status, answer) = t.post_isc(b"{}").await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["poison_id"].is_i64(), "{answer}");
    t.app.stop().await;
}

fn isc_sample(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/isc/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

impl Intake {
    /// POSTs `body` to Identity Security Cloud's endpoint with the bearer token.
    async fn post_isc(&self, body: &[u8]) -> (u16, Value) {
        let url = self
            .url
            .replace("/v1/events", "/v1/isc/provisioning-completed");
        let r = self
            .https
            .post(&url)
            .header("authorization", bearer())
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn identity_security_clouds_provisioning_completed_becomes_a_joiner_after_the_commit() {
    let t = given_an_http_intake().await;
    // When ISC posts its documented example (a Modify of an AD account): nothing for
    // mailboxd, answered 200 with the reason, no job.
    let (status, answer) = t.post_isc(&isc_sample("provisioning-completed.json")).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["jobs"].as_array().unwrap().is_empty(), "{answer}");
    assert!(answer["ignored"].to_string().contains("Modify"), "{answer}");
    // When it posts the same payload for an AD account it created.
    let (status, answer) = t.post_isc(&isc_sample("create.json")).await;
    // Then a joiner named by its DN, there the moment the 202 is.
    assert_eq!(status, 202, "{answer}");
    let event_id = "isc:4b4d982dddff4267ab12f0f1e72b5a6d:0";
    assert_eq!(answer["jobs"][0]["event_id"], event_id, "{answer}");
    let job = t
        .env
        .store
        .job_by_event(event_id)
        .await
        .unwrap()
        .expect("the job");
    assert_eq!(job.id.to_string(), answer["job_id"].as_str().unwrap());
    assert_eq!(job.kind, mailboxd::event::EventKind::Joiner);
    assert_eq!(
        job.event.account.distinguished_name.as_deref(),
        Some("CN=Rob.Robertson,ou=csm,ou=sales,dc=helpco,dc=com")
    );
    // And ISC's retry of it (the same trackingNumber) is the same job.
    let (status, again) = t.post_isc(&isc_sample("create.json")).await;
    assert_eq!((status, &again["job_id"]), (200, &answer["job_id"]));
    t.app.stop().await;
}

/// `Content-Length` over the limit is answered 413 from the headers alone: the client has
/// not sent a byte of the body when the answer arrives.
async fn then_a_declared_oversized_body_is_refused_before_it_is_sent(t: &Intake) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(t.cert.clone()).unwrap();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let addr = t.app.http_intake_addr.unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .expect("TLS handshake");
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\n\r\n"
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&answer).contains("\r\n\r\n") {
            let n = tls.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(read.is_ok(), "no answer before the body was sent");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_the_database_out_of_reach_the_answer_is_503_and_the_event_is_taken_later() {
    let t = given_an_http_intake().await;
    let (id, body) = joiner(&t.env, "hjoiner");
    let admin = sqlx::PgPool::connect(&format!("{}/postgres", common::pg_server()))
        .await
        .expect("the test server's postgres database");
    let db = t.env.database_name().to_owned();
    let allow = |on: bool| format!("ALTER DATABASE \"{db}\" ALLOW_CONNECTIONS {on}");
    sqlx::query(sqlx::AssertSqlSafe(allow(false)))
        .execute(&admin)
        .await
        .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&db)
        .execute(&admin)
        .await
        .unwrap();

    let (status, headers, answer) = t.post(&body, Some(&bearer())).await;
    sqlx::query(sqlx::AssertSqlSafe(allow(true)))
        .execute(&admin)
        .await
        .unwrap();
    assert_eq!(status, 503, "{answer}");
    assert!(headers.get("retry-after").is_some(), "{headers:?}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("nothing was stored"),
        "{answer}"
    );

    // The sender's retry once the database is back: stored now, not a duplicate (so the
    // 503 stored nothing), and it becomes the mailbox.
    let (status, _, answer) = t.post(&body, Some(&bearer())).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["jobs"][0]["result"], "accepted");
    let job = t.env.wait_succeeded(&id).await;
    assert_eq!(job.state, JobState::Succeeded);
    t.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_joiner_posted_twice_at_once_is_one_job() {
    let t = given_an_http_intake().await;
    let (_, body) = joiner(&t.env, "hjoiner");
    let auth = bearer();
    let (a, b) = tokio::join!(t.post(&body, Some(&auth)), t.post(&body, Some(&auth)));
    let mut statuses = [a.0, b.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 202], "{} / {}", a.2, b.2);
    assert_eq!(a.2["job_id"], b.2["job_id"]);
    t.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_traceparent_header_on_an_amqp_delivery_is_kept_and_comes_back_with_the_outcome() {
    use lapin::BasicProperties;
    use lapin::options::BasicPublishOptions;
    use lapin::types::{AMQPValue, FieldTable};
    let t = given_an_http_intake().await;
    let ev = t.env.joiner("hjoiner");
    let mut headers = FieldTable::default();
    headers.insert("traceparent".into(), AMQPValue::LongString(TRACE.into()));
    // The topology (exchange, queue, binding) is declared by `publisher()` first.
    let _topology = t.env.publisher().await;
    let conn = mailboxd::broker::connect(&t.env.settings.amqp.url, "trace test")
        .await
        .expect("RabbitMQ answers");
    let ch = conn.create_channel().await.unwrap();
    ch.basic_publish(
        t.env.settings.amqp.exchange.as_str().into(),
        ev.kind.routing_key().into(),
        BasicPublishOptions::default(),
        ev.to_json().to_string().as_bytes(),
        BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_headers(headers),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let job = t.env.wait_succeeded(&ev.id).await;
    assert_eq!(job.trace_parent.as_deref(), Some(TRACE));
    common::outcomes::wait_all_sent(&t.env.store, 1).await;
    let heard = t.iam.drain().await;
    let outcome = heard
        .iter()
        .find(|o| o.correlation_id.as_deref() == Some(ev.id.as_str()))
        .expect("the joiner's outcome");
    assert_eq!(outcome.traceparent.as_deref(), Some(TRACE));
    assert_eq!(outcome.body["trace_parent"], TRACE);
    let body = serde_json::to_vec(&outcome.body).unwrap();
    let verdict = &common::schema::verdicts("outcome.schema.json", &[body])[0];
    assert!(verdict.valid, "docs/outcome.schema.json: {verdict:?}");
    let _ = conn.close(200, "done".into()).await;
    t.app.stop().await;
}
