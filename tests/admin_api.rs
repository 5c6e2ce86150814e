//! Operations use the JSON API: reads and actions behind the bearer token.

mod common;

use common::{TestEnv, seed};
use mailboxd::lab::Recipient;
use secrecy::SecretString;
use serde_json::Value;

const TOKEN: &str = "ops-token-for-tests";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operators_list_show_and_retry_jobs_with_the_token() {
    let mut onprem = seed("onprem");
    onprem.recipient = Recipient::Onprem;
    let mut env = TestEnv::new(vec![onprem, seed("fine")]).await;
    env.settings.admin.token = Some(SecretString::from(TOKEN));
    let app = env.start_daemon().await;
    let publisher = env.publisher().await;
    let bad = env.joiner("onprem");
    let good = env.joiner("fine");
    publisher.publish(&bad).await.unwrap();
    publisher.publish(&good).await.unwrap();
    let failed = env.wait_terminal(&bad.id).await;
    env.wait_succeeded(&good.id).await;
    let base = format!("http://{}/api/v1", app.admin_addr);
    let http = &env.http;

    // Without the token: refused, and the refusal says what to send.
    let r = http.get(format!("{base}/jobs")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("Bearer"));
    let r = http
        .get(format!("{base}/jobs"))
        .bearer_auth("wrong-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // With it: the failed job, filtered by state, with its attempts.
    let list: Value = http
        .get(format!("{base}/jobs?state=failed"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jobs = list["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{list}");
    assert_eq!(jobs[0]["id"], failed.id.to_string());
    let shown: Value = http
        .get(format!("{base}/jobs/{}", failed.id))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown["attempts"][0]["error_class"], "permanent");
    let r = http
        .get(format!("{base}/jobs?state=stuck"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let alerts: Value = http
        .get(format!("{base}/alerts"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(alerts["alerts"].as_array().unwrap().len(), 1);

    // Retry: allowed for the failed job (it runs, and fails again for the same reason),
    // refused with 409 for the succeeded one, 404 for an unknown id.
    let r = http
        .post(format!("{base}/jobs/{}/retry", failed.id))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let rerun = env
        .wait_job(&bad.id, |j| {
            j.state == mailboxd::store::JobState::Failed && j.updated_at > failed.updated_at
        })
        .await;
    assert_eq!(
        rerun.attempt, 1,
        "a retried job starts a fresh set of attempts"
    );
    let good_job = env.store.job_by_event(&good.id).await.unwrap().unwrap();
    let r = http
        .post(format!("{base}/jobs/{}/retry", good_job.id))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let r = http
        .post(format!("{base}/jobs/{}/cancel", uuid::Uuid::new_v4()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    app.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_token_the_api_is_off_and_open_reads_stay_read_only() {
    let mut env = TestEnv::new(vec![]).await;
    env.settings.admin.open_reads = true;
    let app = env.start_daemon().await;
    let base = format!("http://{}/api/v1", app.admin_addr);
    let r = env.http.get(format!("{base}/jobs")).send().await.unwrap();
    assert_eq!(r.status(), 200, "reads are open by explicit setting");
    let r = env
        .http
        .post(format!("{base}/jobs/{}/cancel", uuid::Uuid::new_v4()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "no token configured: no writes at all");
    app.stop().await;
    env.cleanup().await;
}
