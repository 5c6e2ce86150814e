//! Operations use the JSON API: reads and actions behind the bearer token.

use crate::common;

use common::{TestEnv, seed};
use secrecy::SecretString;
use serde_json::Value;

const TOKEN: &str = "ops-token-for-tests-4b7e19c2d05a";

/// A request to the API with `token` (if any): (status, JSON body or Null).
async fn call(env: &TestEnv, method: &str, url: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = match method {
        "POST" => env.http.post(url),
        _ => env.http.get(url),
    };
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Whether the daemon's API asks for the admin token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    BehindTheToken,
    WithoutToken,
}

/// A daemon whose queue holds one failed job (`bad`, an on-premises mailbox) and one
/// succeeded one (`good`).
async fn queue_with_a_failure(
    bad: &str,
    good: &str,
    api: Api,
) -> (
    TestEnv,
    mailboxd::app::App,
    mailboxd::publish::EventSpec,
    mailboxd::publish::EventSpec,
    mailboxd::store::Job,
) {
    let onprem = common::onprem(bad);
    let mut env = TestEnv::new(vec![onprem, seed(good)]).await;
    if api == Api::BehindTheToken {
        env.settings.admin.token = Some(SecretString::from(TOKEN));
    }
    let app = env.start_daemon().await;
    let publisher = env.publisher().await;
    let bad = env.joiner(bad);
    let good = env.joiner(good);
    publisher.publish(&bad).await.unwrap();
    publisher.publish(&good).await.unwrap();
    let failed = env.wait_terminal(&bad.id).await;
    env.wait_succeeded(&good.id).await;
    (env, app, bad, good, failed)
}

/// A request to the API with the admin token: (status, JSON body or Null).
async fn with_token(env: &TestEnv, method: &str, url: &str) -> (u16, Value) {
    call(env, method, url, Some(TOKEN)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operators_list_show_and_retry_jobs_with_the_token() {
    let (env, app, bad, good, failed) =
        queue_with_a_failure("onprem", "fine", Api::BehindTheToken).await;
    let base = format!("http://{}/api/v1", app.admin_addr);
    then_without_the_token_the_api_says_what_to_send(&env, &base).await;
    then_with_it_the_failed_job_shows_with_its_attempts(&env, &base, &failed).await;
    when_retried_the_failed_job_runs_again_and_others_are_refused(
        &env, &base, &bad, &good, &failed,
    )
    .await;
    then_jobs_filter_by_class_time_and_page(&env, &base).await;
    then_a_poison_message_is_replayed_through_the_api(&env, &base).await;
    // The retry is on the job's record: who, what, when.
    let (_, shown) = with_token(&env, "GET", &format!("{base}/jobs/{}", failed.id)).await;
    assert_eq!(shown["actions"][0]["action"], "retry", "{shown}");
    assert_eq!(shown["actions"][0]["actor"], "api:admin");
    then_a_bulk_retry_by_filter_takes_every_failed_permanent_job(&env, &base, &failed).await;
    app.stop().await;
}

/// Without the token: refused, and the refusal says what to send.
async fn then_without_the_token_the_api_says_what_to_send(env: &TestEnv, base: &str) {
    let (status, body) = call(env, "GET", &format!("{base}/jobs"), None).await;
    assert_eq!(status, 401);
    assert!(body["error"].as_str().unwrap().contains("Bearer"), "{body}");
    let (status, _) = call(env, "GET", &format!("{base}/jobs"), Some("wrong-token")).await;
    assert_eq!(status, 401);
}

/// With it: the failed job, filtered by state, with its attempts.
async fn then_with_it_the_failed_job_shows_with_its_attempts(
    env: &TestEnv,
    base: &str,
    failed: &mailboxd::store::Job,
) {
    let (_, list) = with_token(env, "GET", &format!("{base}/jobs?state=failed")).await;
    let jobs = list["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{list}");
    assert_eq!(jobs[0]["id"], failed.id.to_string());
    let (_, shown) = with_token(env, "GET", &format!("{base}/jobs/{}", failed.id)).await;
    assert_eq!(shown["attempts"][0]["error_class"], "permanent");
    let (status, _) = with_token(env, "GET", &format!("{base}/jobs?state=stuck")).await;
    assert_eq!(status, 400);
    let (_, alerts) = with_token(env, "GET", &format!("{base}/alerts")).await;
    assert_eq!(alerts["alerts"].as_array().unwrap().len(), 1);
}

/// Retry: allowed for the failed job (it runs, and fails again for the same reason),
/// refused with 409 for the succeeded one, 404 for an unknown id.
async fn when_retried_the_failed_job_runs_again_and_others_are_refused(
    env: &TestEnv,
    base: &str,
    bad: &mailboxd::publish::EventSpec,
    good: &mailboxd::publish::EventSpec,
    failed: &mailboxd::store::Job,
) {
    let retry = format!("{base}/jobs/{}/retry", failed.id);
    assert_eq!(with_token(env, "POST", &retry).await.0, 200);
    let rerun = env
        .wait_job(&bad.id, |j| {
            j.state == mailboxd::job::JobState::Failed && j.updated_at > failed.updated_at
        })
        .await;
    assert_eq!(
        rerun.attempt, 1,
        "a retried job starts a fresh set of attempts"
    );
    let good_job = env.store.job_by_event(&good.id).await.unwrap().unwrap();
    let retry_good = format!("{base}/jobs/{}/retry", good_job.id);
    assert_eq!(with_token(env, "POST", &retry_good).await.0, 409);
    let cancel_unknown = format!("{base}/jobs/{}/cancel", uuid::Uuid::new_v4());
    assert_eq!(with_token(env, "POST", &cancel_unknown).await.0, 404);
}

/// Filters: error class, time range, pages.
async fn then_jobs_filter_by_class_time_and_page(env: &TestEnv, base: &str) {
    let (_, list) = with_token(env, "GET", &format!("{base}/jobs?error_class=permanent")).await;
    assert_eq!(list["jobs"].as_array().unwrap().len(), 1, "{list}");
    let since = format!("{base}/jobs?since=2099-01-01T00:00:00Z");
    let (_, list) = with_token(env, "GET", &since).await;
    assert!(list["jobs"].as_array().unwrap().is_empty(), "{list}");
    let (_, page1) = with_token(env, "GET", &format!("{base}/jobs?limit=1")).await;
    assert_eq!(page1["next_offset"], 1, "{page1}");
    let (_, page2) = with_token(env, "GET", &format!("{base}/jobs?limit=1&offset=1")).await;
    assert_ne!(page1["jobs"][0]["id"], page2["jobs"][0]["id"]);
    let (status, _) = with_token(env, "GET", &format!("{base}/jobs?since=yesterday")).await;
    assert_eq!(status, 400);
}

/// A poison message replayed through the API (still malformed: it comes back as poison).
async fn then_a_poison_message_is_replayed_through_the_api(env: &TestEnv, base: &str) {
    let publisher = env.publisher().await;
    publisher
        .publish_raw(
            "ad.user.created",
            b"{oops",
            Some("application/json"),
            Some("bad-1"),
        )
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while env.store.list_poison(5).await.unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let pid = env.store.list_poison(5).await.unwrap()[0].id;
    let (status, body) = with_token(env, "POST", &format!("{base}/poison/{pid}/replay")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["replayed_to"], "ad.user.created");
    let unknown = format!("{base}/poison/999999/replay");
    assert_eq!(with_token(env, "POST", &unknown).await.0, 404);
    while env.store.list_poison(5).await.unwrap().len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the replayed copy did not arrive"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let poison = env.store.get_poison(pid).await.unwrap().unwrap();
    assert!(poison.replayed_at.is_some());
}

/// Bulk retry by filter: every failed permanent job, one call.
async fn then_a_bulk_retry_by_filter_takes_every_failed_permanent_job(
    env: &TestEnv,
    base: &str,
    failed: &mailboxd::store::Job,
) {
    let (status, _) = call(
        env,
        "POST",
        &format!("{base}/jobs/retry?state=failed"),
        None,
    )
    .await;
    assert_eq!(status, 401, "writes need the token");
    let filter = format!("{base}/jobs/retry?state=failed&error_class=permanent");
    let (status, body) = with_token(env, "POST", &filter).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["retried"], 1, "{body}");
    assert_eq!(body["ids"][0], failed.id.to_string());
    let (_, shown) = with_token(env, "GET", &format!("{base}/jobs/{}", failed.id)).await;
    assert_eq!(shown["actions"][1]["detail"], "bulk retry", "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_token_the_api_is_off_and_open_reads_stay_read_only() {
    let mut env = TestEnv::new(vec![]).await;
    env.settings.admin.open_reads = true;
    let app = env.start_daemon().await;
    let base = format!("http://{}/api/v1", app.admin_addr);
    let (status, _) = call(&env, "GET", &format!("{base}/jobs"), None).await;
    assert_eq!(status, 200, "reads are open by explicit setting");
    let cancel = format!("{base}/jobs/{}/cancel", uuid::Uuid::new_v4());
    let (status, _) = call(&env, "POST", &cancel, None).await;
    assert_eq!(status, 403, "no token configured: no writes at all");
    app.stop().await;
}

const VIEWER_TOKEN: &str = "viewer-token-for-tests-91d3f0a6";
const OPERATOR_TOKEN: &str = "operator-token-for-tests-e27c58b4";

/// A daemon (the binary, logging JSON) with the shared token and two named ones from
/// files: `grafana` a viewer, `deploy-bot` an operator. Keep the directory while it runs.
async fn given_a_daemon_with_named_tokens(
    env: &mut TestEnv,
) -> (tempfile::TempDir, common::Daemon) {
    // The single shared token keeps working, as an operator token named `admin`.
    env.settings.admin.token = Some(SecretString::from(TOKEN));
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, value: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("{value}\n")).unwrap();
        path
    };
    let toml = format!(
        "[[admin.tokens]]\nname = \"grafana\"\nrole = \"viewer\"\ntoken_file = {:?}\n\
         [[admin.tokens]]\nname = \"deploy-bot\"\nrole = \"operator\"\ntoken_file = {:?}\n",
        file("viewer", VIEWER_TOKEN),
        file("operator", OPERATOR_TOKEN),
    );
    let config = file("mailboxd.toml", &toml);
    let daemon = env
        .spawn_logged(
            &["--log-format", "json", "--config", config.to_str().unwrap()],
            env.daemon_env(),
        )
        .await;
    (dir, daemon)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn named_tokens_read_or_act_as_their_role_and_are_recorded_by_name() {
    let onprem = common::onprem("tokonprem");
    let mut env = TestEnv::new(vec![onprem]).await;
    let (_dir, daemon) = given_a_daemon_with_named_tokens(&mut env).await;
    let bad = env.joiner("tokonprem");
    env.publisher().await.publish(&bad).await.unwrap();
    let failed = env.wait_terminal(&bad.id).await;
    let base = format!("http://{}/api/v1", daemon.admin);
    when_a_viewer_token_reads_but_cannot_act_and_operators_retry(&env, &base, &bad, &failed).await;
    then_the_job_and_the_audit_trail_name_each_token(&env, &base, &failed).await;
    then_the_log_has_the_actions_and_the_refusal_but_no_token(&daemon.logs(), &failed);
}

async fn when_a_viewer_token_reads_but_cannot_act_and_operators_retry(
    env: &TestEnv,
    base: &str,
    bad: &mailboxd::publish::EventSpec,
    failed: &mailboxd::store::Job,
) {
    let retry = format!("{base}/jobs/{}/retry", failed.id);
    let (status, list) = call(env, "GET", &format!("{base}/jobs"), Some(VIEWER_TOKEN)).await;
    assert_eq!(status, 200, "{list}");
    let (status, body) = call(env, "POST", &retry, Some(VIEWER_TOKEN)).await;
    assert_eq!(status, 403, "a viewer token cannot act: {body}");
    assert!(
        body["error"].as_str().unwrap().contains("only read"),
        "{body}"
    );

    let (status, body) = call(env, "POST", &retry, Some(OPERATOR_TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    env.wait_job(&bad.id, |j| {
        j.attempt == 1 && j.state.is_terminal() && j.updated_at > failed.updated_at
    })
    .await;
    let (status, body) = call(env, "POST", &retry, Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
}

/// The job names both actors; the audit trail has both actions, readable with a viewer
/// token, newest first.
async fn then_the_job_and_the_audit_trail_name_each_token(
    env: &TestEnv,
    base: &str,
    failed: &mailboxd::store::Job,
) {
    let viewer = Some(VIEWER_TOKEN);
    let (_, shown) = call(env, "GET", &format!("{base}/jobs/{}", failed.id), viewer).await;
    let actors: Vec<&str> = shown["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["actor"].as_str().unwrap())
        .collect();
    assert_eq!(actors, ["api:deploy-bot", "api:admin"], "{shown}");
    let (status, audit) = call(env, "GET", &format!("{base}/audit"), viewer).await;
    assert_eq!(status, 200, "{audit}");
    let rows: Vec<(&str, &str, &str, &str)> = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let f = |k: &str| r[k].as_str().unwrap();
            (f("actor"), f("action"), f("subject"), f("outcome"))
        })
        .collect();
    let subject = format!("job {}", failed.id);
    assert_eq!(
        rows,
        [
            ("api:admin", "retry", subject.as_str(), "done"),
            ("api:deploy-bot", "retry", subject.as_str(), "done"),
        ],
        "{audit}"
    );
    assert_eq!(audit["audit"][0]["client"], "127.0.0.1", "{audit}");
}

/// The actions and the viewer token's refused one (with why) are on the log; no token is.
fn then_the_log_has_the_actions_and_the_refusal_but_no_token(
    logs: &str,
    failed: &mailboxd::store::Job,
) {
    assert!(
        logs.lines()
            .any(|l| l.contains(r#""target":"audit""#) && l.contains("api:deploy-bot")),
        "{logs}"
    );
    let refused = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["message"] == "request refused" && l["status"] == 403)
        .unwrap_or_else(|| panic!("no log line for the refused action: {logs}"));
    assert_eq!(
        refused["request"],
        format!("POST /api/v1/jobs/{}/retry", failed.id)
    );
    assert_eq!(
        refused["reason"], "a viewer token asked to act",
        "{refused}"
    );
    for secret in [VIEWER_TOKEN, OPERATOR_TOKEN, TOKEN] {
        assert!(!logs.contains(secret), "a token reached the log");
    }
}

/// The value of the first sample of `name` whose labels contain every `labels` pair.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|p| l.contains(p)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prometheus_sees_the_queue_the_attempts_and_the_circuit() {
    let (env, app, ..) = queue_with_a_failure("monprem", "mfine", Api::WithoutToken).await;
    when_a_malformed_message_becomes_poison(&env).await;
    let text = scrape_metrics(&env, &app).await;
    then_the_gauges_show_this_tests_queue_as_its_database_has_it(&text);
    then_poison_cannot_be_replayed_without_a_token(&env, &app).await;
    then_the_counters_show_at_least_this_tests_share(&text);
    app.stop().await;
}

async fn when_a_malformed_message_becomes_poison(env: &TestEnv) {
    let publisher = env.publisher().await;
    publisher
        .publish_raw("ad.user.created", b"{nope", Some("application/json"), None)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while env.store.list_poison(5).await.unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// `/metrics`, open like /healthz (one scrape at a time in this binary).
async fn scrape_metrics(env: &TestEnv, app: &mailboxd::app::App) -> String {
    let scrape = common::METRICS_SCRAPE.lock().await;
    let r = env
        .http
        .get(format!("http://{}/metrics", app.admin_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "open like /healthz");
    let text = r.text().await.unwrap();
    drop(scrape);
    text
}

/// The queue as the database has it (this test's database), the outboxes, the circuit
/// and the broker.
fn then_the_gauges_show_this_tests_queue_as_its_database_has_it(text: &str) {
    assert_eq!(
        sample(text, "mailboxd_jobs", &[r#"state="succeeded""#]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(text, "mailboxd_jobs", &[r#"state="failed""#]),
        Some(1.0)
    );
    assert_eq!(
        sample(text, "mailboxd_jobs", &[r#"state="running""#]),
        Some(0.0)
    );
    assert_eq!(sample(text, "mailboxd_poison_messages", &[]), Some(1.0));
    assert_eq!(
        sample(text, "mailboxd_alert_outbox", &[r#"status="pending""#]),
        Some(1.0)
    );
    assert_eq!(sample(text, "mailboxd_circuit_open", &[]), Some(0.0));
    assert_eq!(sample(text, "mailboxd_broker_connected", &[]), Some(1.0));
}

/// Poison can be replayed through the API too, but not without a token configured.
async fn then_poison_cannot_be_replayed_without_a_token(env: &TestEnv, app: &mailboxd::app::App) {
    let poison = env.store.list_poison(5).await.unwrap();
    let r = env
        .http
        .post(format!(
            "http://{}/api/v1/poison/{}/replay",
            app.admin_addr, poison[0].id
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        403,
        "no token configured in this test: no writes"
    );
}

/// What happened (process-wide counters: at least this test's share).
fn then_the_counters_show_at_least_this_tests_share(text: &str) {
    assert!(
        sample(text, "mailboxd_attempts_total", &[r#"outcome="succeeded""#]).unwrap_or(0.0) >= 1.0
    );
    assert!(
        sample(
            text,
            "mailboxd_attempts_total",
            &[r#"outcome="failed""#, r#"class="permanent""#]
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    assert!(
        sample(
            text,
            "mailboxd_events_ingested_total",
            &[r#"format="json""#]
        )
        .unwrap_or(0.0)
            >= 2.0
    );
    assert!(sample(text, "mailboxd_poison_received_total", &[]).unwrap_or(0.0) >= 1.0);
    assert!(
        text.contains("mailboxd_attempt_duration_seconds_bucket"),
        "{text}"
    );
    assert!(text.contains("mailboxd_batch_size_bucket"), "{text}");
    assert!(!text.contains(common::LAB_PASSWORD));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_every_route_the_api_serves() {
    let env = TestEnv::new(vec![]).await;
    let app = env.start_daemon().await;
    let doc = env
        .get_json(&format!("http://{}/api/v1/openapi.json", app.admin_addr))
        .await;
    assert_eq!(doc["openapi"], "3.0.3");
    let src = include_str!("../../src/admin.rs");
    let mut routes = 0;
    for part in src.split(".route(\"").skip(1) {
        let path = part.split('"').next().unwrap();
        let methods: Vec<&str> = ["get", "post"]
            .into_iter()
            .filter(|m| {
                part.split(')')
                    .next()
                    .unwrap_or("")
                    .contains(&format!("{m}("))
                    || part.contains(&format!(", {m}("))
            })
            .collect();
        assert!(
            doc["paths"][path].is_object(),
            "{path} is not in openapi.json"
        );
        for m in methods {
            assert!(
                doc["paths"][path][m].is_object(),
                "{m} {path} is not in openapi.json"
            );
        }
        routes += 1;
    }
    assert!(routes >= 12, "found {routes} routes");
    app.stop().await;
}

/// Schemathesis (an independent API tester from PyPI) generates requests from the OpenAPI
/// document and checks every answer against it: no server errors, documented status codes
/// and content types, bodies matching their schemas.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schemathesis_finds_nothing_the_openapi_document_does_not_promise() {
    let (_env, app, ..) = queue_with_a_failure("stonprem", "stfine", Api::BehindTheToken).await;

    let out = tokio::process::Command::new("schemathesis")
        .args([
            "run",
            &format!("http://{}/api/v1/openapi.json", app.admin_addr),
        ])
        .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
        .args([
            "--checks",
            "all",
            "-n",
            "25",
            "--no-color",
            "--seed",
            "20261124",
        ])
        .output()
        .await
        .expect("schemathesis runs (deploy/dev/services.sh installs it from PyPI)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    app.stop().await;
}
