//! Span export over OTLP/HTTP (`[telemetry]`) by the real daemon binary against the lab:
//! a stand-in collector over HTTPS checks each request as the OTLP specification documents
//! it (`POST /v1/traces`, `Content-Type: application/x-protobuf`, a protobuf
//! `ExportTraceServiceRequest`, the configured header) and answers as it says (200 with a
//! protobuf `ExportTraceServiceResponse`). A joiner published with a W3C `traceparent` comes
//! back as spans of that trace, the job's span a child of the sender's span, and the outcome
//! names the job's span; with the collector down, joiners succeed as fast as without it.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use parking_lot::Mutex;
use prost::Message as _;

use common::TestEnv;

/// The sender's trace and span (W3C Trace Context's example).
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SENDER_SPAN: &str = "00f067aa0ba902b7";
const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
/// A second sender's trace, for the event posted to the HTTP intake.
const HTTP_TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const HTTP_SENDER_SPAN: &str = "b7ad6b7169203331";
/// The HTTP intake's bearer token.
const INTAKE_TOKEN: &str = "5e0c2b7a9d4f1e8c6a3b0d9f7e5c4a21";
/// The collector's API key, sent from `otlp_headers_file`.
const API_KEY: &str = "otlp-7c1e0b9a4d2f8e6c";

/// One span as the collector received it, with the resource's `service.name`.
#[derive(Debug, Clone)]
struct Got {
    service: String,
    span: Span,
}

#[derive(Default)]
struct Seen {
    spans: Mutex<Vec<Got>>,
    problems: Mutex<Vec<String>>,
}

/// The collector stand-in: HTTPS on a loopback port with a self-signed certificate.
struct Collector {
    url: String,
    seen: Arc<Seen>,
    _dir: tempfile::TempDir,
    ca_file: std::path::PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Collector {
    async fn start() -> Collector {
        winrm::tls::install_provider();
        let dir = tempfile::tempdir().unwrap();
        let c = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).expect("rcgen");
        let ca_file = dir.path().join("collector.pem");
        std::fs::write(&ca_file, c.cert.pem()).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(c.signing_key.serialize_der().into());
        let tls = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![c.cert.der().clone()], key)
            .expect("a TLS server configuration");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let seen = Arc::new(Seen::default());
        let app = axum::Router::new()
            .route("/v1/traces", axum::routing::post(export))
            .fallback(|uri: axum::http::Uri| async move {
                (StatusCode::NOT_FOUND, format!("no {uri} here"))
            })
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, app) = (acceptor.clone(), app.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Collector {
            url: format!("https://{addr}"),
            seen,
            _dir: dir,
            ca_file,
            task,
        }
    }

    fn spans(&self) -> Vec<Got> {
        self.seen.spans.lock().clone()
    }

    /// Waits (bounded) until the spans received satisfy `done`.
    async fn wait_for(&self, what: &str, done: impl Fn(&[Got]) -> bool) -> Vec<Got> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "within 30 s the collector did not receive {what}; it has: {:#?}",
                spans.iter().map(|g| &g.span.name).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `POST /v1/traces` as OTLP/HTTP specifies it for binary protobuf: the request checked,
/// its spans kept, answered 200 with an `ExportTraceServiceResponse` (400 when malformed).
async fn export(
    State(seen): State<Arc<Seen>>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    if text("content-type") != "application/x-protobuf" {
        seen.problems
            .lock()
            .push(format!("Content-Type {:?}", text("content-type")));
    }
    if text("x-api-key") != API_KEY {
        seen.problems.lock().push("no or a wrong x-api-key".into());
    }
    let request = match ExportTraceServiceRequest::decode(body) {
        Ok(r) => r,
        Err(e) => {
            seen.problems.lock().push(format!("not protobuf: {e}"));
            return (StatusCode::BAD_REQUEST, Vec::new());
        }
    };
    for rs in request.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
            .map(|v| match v {
                AnyValue::StringValue(s) => s.clone(),
                other => format!("{other:?}"),
            })
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for span in ss.spans {
                seen.spans.lock().push(Got {
                    service: service.clone(),
                    span,
                });
            }
        }
    }
    let answer = ExportTraceServiceResponse::default().encode_to_vec();
    (StatusCode::OK, answer)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A span attribute's value as text.
fn attr(span: &Span, key: &str) -> Option<String> {
    let v = span.attributes.iter().find(|kv| kv.key == key)?;
    Some(match v.value.as_ref()?.value.as_ref()? {
        AnyValue::StringValue(s) => s.clone(),
        AnyValue::IntValue(i) => i.to_string(),
        AnyValue::BoolValue(b) => b.to_string(),
        other => format!("{other:?}"),
    })
}

/// Publishes `ev` to the daemon's exchange, with `traceparent` as an AMQP header if given.
async fn publish(env: &TestEnv, ev: &mailboxd::publish::EventSpec, traceparent: Option<&str>) {
    let _topology = env.publisher().await;
    let mut props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2);
    if let Some(t) = traceparent {
        let mut headers = FieldTable::default();
        headers.insert("traceparent".into(), AMQPValue::LongString(t.into()));
        props = props.with_headers(headers);
    }
    common::publish_with(env, ev, props).await;
}

/// The daemon's environment exporting to `endpoint`, trusting `ca_file`, with the API key
/// header from a file in `dir`; the SDK's batch delay shortened to keep the test short.
fn exporting_env(
    env: &TestEnv,
    endpoint: &str,
    ca_file: &std::path::Path,
    dir: &std::path::Path,
    timeout: &str,
) -> Vec<(String, String)> {
    let headers = dir.join("otlp-headers");
    std::fs::write(
        &headers,
        format!("# the collector's key\nx-api-key: {API_KEY}\n"),
    )
    .unwrap();
    let mut vars = env.daemon_env();
    for (k, v) in [
        ("MAILBOXD__TELEMETRY__OTLP_ENDPOINT", endpoint.to_owned()),
        (
            "MAILBOXD__TELEMETRY__OTLP_CA_FILE",
            ca_file.display().to_string(),
        ),
        (
            "MAILBOXD__TELEMETRY__OTLP_HEADERS_FILE",
            headers.display().to_string(),
        ),
        ("MAILBOXD__TELEMETRY__OTLP_TIMEOUT", timeout.to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "200".to_owned()),
    ] {
        vars.push((k.to_owned(), v));
    }
    vars
}

/// The HTTP intake on a free port over HTTPS (a self-signed certificate in `dir`) with a
/// bearer token, added to `vars`; its URL and a client that trusts it.
fn http_intake(
    dir: &std::path::Path,
    vars: &mut Vec<(String, String)>,
) -> (String, reqwest::Client) {
    let c = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).expect("rcgen");
    let (cert, key) = (dir.join("intake.pem"), dir.join("intake-key.pem"));
    std::fs::write(&cert, c.cert.pem()).unwrap();
    std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
    let addr = format!("127.0.0.1:{}", common::free_port());
    for (k, v) in [
        ("MAILBOXD__HTTP_INTAKE__LISTEN", addr.clone()),
        (
            "MAILBOXD__HTTP_INTAKE__TLS_CERT_FILE",
            cert.display().to_string(),
        ),
        (
            "MAILBOXD__HTTP_INTAKE__TLS_KEY_FILE",
            key.display().to_string(),
        ),
        ("MAILBOXD_HTTP_INTAKE_TOKEN", INTAKE_TOKEN.to_owned()),
    ] {
        vars.push((k.to_owned(), v));
    }
    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(c.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    (format!("https://{addr}"), https)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_joiner_with_a_traceparent_comes_back_as_spans_of_that_trace_and_its_outcome_names_mailboxds_span()
 {
    let mut env = TestEnv::new(vec![common::seed("otraced"), common::seed("ohttp")]).await;
    let iam = env.expect_outcomes().await;
    let collector = Collector::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut vars = exporting_env(&env, &collector.url, &collector.ca_file, dir.path(), "10s");
    let (intake, https) = http_intake(dir.path(), &mut vars);
    let mut daemon = env.spawn_logged(&[], vars).await;
    assert_eq!(daemon.exit_status(), None, "{}", daemon.logs());

    // One joiner over HTTPS, its traceparent an HTTP header: its intake span continues it.
    let posted = env.joiner("ohttp");
    let answer = https
        .post(format!("{intake}/v1/events"))
        .header("authorization", format!("Bearer {INTAKE_TOKEN}"))
        .header("content-type", "application/json")
        .header(
            "traceparent",
            format!("00-{HTTP_TRACE_ID}-{HTTP_SENDER_SPAN}-01"),
        )
        .body(posted.to_json().to_string())
        .send()
        .await
        .expect("the HTTP intake answers");
    assert_eq!(answer.status().as_u16(), 202);
    let http_job = env.wait_succeeded(&posted.id).await;

    let ev = env.joiner("otraced");
    publish(&env, &ev, Some(TRACE)).await;
    let job = env.wait_succeeded(&ev.id).await;
    // What the job keeps is what the sender sent (the job page shows its trace id).
    assert_eq!(job.trace_parent.as_deref(), Some(TRACE));
    common::outcomes::wait_all_sent(&env.store, 2).await;
    let heard = iam.drain().await;
    let outcome = heard
        .iter()
        .find(|o| o.correlation_id.as_deref() == Some(ev.id.as_str()))
        .expect("the joiner's outcome");
    // The outcome continues the sender's trace from mailboxd's own span, not the sender's.
    let back = outcome
        .traceparent
        .clone()
        .expect("the outcome's traceparent");
    assert_eq!(outcome.body["trace_parent"], back.as_str());
    let parts: Vec<&str> = back.split('-').collect();
    assert_eq!(parts.len(), 4, "{back}");
    assert_eq!(
        (parts[0], parts[1], parts[3]),
        ("00", TRACE_ID, "01"),
        "{back}"
    );
    let own_span = parts[2].to_owned();
    assert_ne!(
        own_span, SENDER_SPAN,
        "the outcome must name mailboxd's span"
    );
    let body = serde_json::to_vec(&outcome.body).unwrap();
    let verdict = &common::schema::verdicts("outcome.schema.json", &[body])[0];
    assert!(verdict.valid, "docs/outcome.schema.json: {verdict:?}");

    let spans = collector
        .wait_for("the intake, job, batch and publish spans", |spans| {
            [
                "intake amqp",
                "job joiner",
                "exchange batch joiner",
                "outcome publish",
            ]
            .iter()
            .all(|n| spans.iter().any(|g| g.span.name == *n))
        })
        .await;
    let problems = collector.seen.problems.lock().clone();
    assert!(
        problems.is_empty(),
        "requests not as OTLP/HTTP specifies: {problems:?}"
    );
    let named =
        |name: &str| -> Vec<&Got> { spans.iter().filter(|g| g.span.name == name).collect() };
    for g in &spans {
        assert_eq!(g.service, "mailboxd", "service.name of {}", g.span.name);
    }
    // The job's span: the span the outcome names, a child of the sender's span, in its trace.
    let job_span = named("job joiner")
        .into_iter()
        .find(|g| attr(&g.span, "job.id").as_deref() == Some(job.id.to_string().as_str()))
        .expect("the job's span");
    assert_eq!(hex(&job_span.span.trace_id), TRACE_ID);
    assert_eq!(hex(&job_span.span.parent_span_id), SENDER_SPAN);
    assert_eq!(
        hex(&job_span.span.span_id),
        own_span,
        "the outcome names the exported job span"
    );
    assert_eq!(attr(&job_span.span, "job.kind").as_deref(), Some("joiner"));
    assert_eq!(
        attr(&job_span.span, "job.account").as_deref(),
        Some("otraced")
    );
    assert_eq!(attr(&job_span.span, "job.attempt").as_deref(), Some("1"));
    assert_eq!(
        attr(&job_span.span, "job.outcome").as_deref(),
        Some("succeeded")
    );
    // The intake's span: the same parent.
    let intake = named("intake amqp")
        .into_iter()
        .find(|g| hex(&g.span.trace_id) == TRACE_ID)
        .expect("the intake's span in the sender's trace");
    assert_eq!(hex(&intake.span.parent_span_id), SENDER_SPAN);
    assert_eq!(
        attr(&intake.span, "intake.transport").as_deref(),
        Some("amqp")
    );
    // The HTTP intake's span and that job's span: children of the second sender's span.
    let posted_intake = named("intake https")
        .into_iter()
        .find(|g| hex(&g.span.trace_id) == HTTP_TRACE_ID)
        .expect("the HTTP intake's span in its sender's trace");
    assert_eq!(hex(&posted_intake.span.parent_span_id), HTTP_SENDER_SPAN);
    assert_eq!(
        attr(&posted_intake.span, "http.response.status_code").as_deref(),
        Some("202")
    );
    let posted_job = named("job joiner")
        .into_iter()
        .find(|g| attr(&g.span, "job.id").as_deref() == Some(http_job.id.to_string().as_str()))
        .expect("the posted job's span");
    assert_eq!(hex(&posted_job.span.trace_id), HTTP_TRACE_ID);
    assert_eq!(hex(&posted_job.span.parent_span_id), HTTP_SENDER_SPAN);
    // The batch: its own trace, linked to the job's span (a batch may hold several traces).
    let batch = named("exchange batch joiner")
        .into_iter()
        .find(|g| {
            g.span
                .links
                .iter()
                .any(|l| hex(&l.span_id) == own_span && hex(&l.trace_id) == TRACE_ID)
        })
        .expect("a batch span linked to the job's span");
    assert!(
        job_span
            .span
            .links
            .iter()
            .any(|l| l.span_id == batch.span.span_id && l.trace_id == batch.span.trace_id),
        "the job's span links to its batch"
    );
    // The outcome's publication: a child of the job's span.
    let publish = named("outcome publish")
        .into_iter()
        .find(|g| hex(&g.span.parent_span_id) == own_span)
        .expect("the outcome's publish span under the job's span");
    assert_eq!(hex(&publish.span.trace_id), TRACE_ID);
    // No secret and no event body in what is exported.
    let exported = format!("{spans:?}");
    for secret in [env.winrm_password.as_str(), API_KEY, INTAKE_TOKEN] {
        assert!(!exported.contains(secret), "a secret was exported");
    }
    assert!(!exported.contains(&ev.id), "the event's body was exported");
    assert!(daemon.stop().success(), "{}", daemon.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_the_collector_down_joiners_succeed_on_time_and_the_failure_is_logged_once() {
    let mut env = TestEnv::new(vec![
        common::seed("odown1"),
        common::seed("odown2"),
        common::seed("odown3"),
    ])
    .await;
    let _iam = env.expect_outcomes().await;
    // A port nobody listens on: every export is refused (and retried within its deadline).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down = format!("https://{}", closed.local_addr().unwrap());
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    let ca = Collector::start().await;
    let vars = exporting_env(&env, &down, &ca.ca_file, dir.path(), "20s");
    let mut daemon = env.spawn_logged(&[], vars).await;
    assert_eq!(daemon.exit_status(), None, "{}", daemon.logs());
    for sam in ["odown1", "odown2", "odown3"] {
        let ev = env.joiner(sam);
        let published = Instant::now();
        publish(&env, &ev, Some(TRACE)).await;
        env.wait_succeeded(&ev.id).await;
        // The lab answers a joiner in well under a second; export may never hold it up.
        let took = published.elapsed();
        assert!(
            took < Duration::from_secs(10),
            "{sam} took {took:?} with the collector down"
        );
    }
    // Each joiner's spans went out in their own export, and each export failed.
    let logs = daemon.logs();
    let failed = "span export to the collector failed";
    let deadline = Instant::now() + Duration::from_secs(30);
    while !daemon.logs().contains(failed) {
        assert!(
            Instant::now() < deadline,
            "no export failure logged: {logs}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The daemon still stops promptly: the flush at shutdown is bounded.
    let stopping = Instant::now();
    assert!(daemon.stop().success(), "{}", daemon.logs());
    assert!(
        stopping.elapsed() < Duration::from_secs(20),
        "stop took {:?}",
        stopping.elapsed()
    );
    let logs = daemon.logs();
    assert_eq!(
        logs.matches(failed).count(),
        1,
        "logged once per outage: {logs}"
    );
    assert!(!logs.contains(API_KEY), "the header's secret was logged");
    // The exported spans are no part of the log lines.
    assert!(!logs.contains("intake.transport"), "{logs}");
}
