//! User stories of the cloud answer, the AD way (`[cloud] confirm = "directory"`): a joiner
//! hears first that its remote mailbox is enabled on premises, then — through the real
//! daemon reading the lab's domain controller over LDAP — that its Exchange Online mailbox
//! exists (Entra's writeback put the cloud's X500 address on the user), or, at the
//! deadline, that it did not appear and what to check.

use crate::common;

use std::time::{Duration, Instant};

use common::TestEnv;
use common::outcomes::{OutcomeQueue, Received};
use lab::cloud::{CloudConfig, MailboxState};

/// A lab whose cloud syncs every 100 ms (or only when the test says, `sync_every: None`),
/// nobody licensed yet (a licence before the remote mailbox is the licence-first trap: EXO
/// makes a mailbox of its own); the daemon confirms joiners in the cloud by `deadline`.
async fn given_a_cloud(
    people: &[(&str, &str, &str)],
    sync_every: Option<Duration>,
    deadline: Duration,
) -> (TestEnv, OutcomeQueue) {
    let accounts = people
        .iter()
        .map(|(s, g, sn)| lab::AccountSeed::person(s, g, sn))
        .collect();
    let cloud = CloudConfig {
        mailbox_delay: Duration::ZERO,
        sync_interval: sync_every,
        licensed: Vec::new(),
    };
    let mut env = TestEnv::with_lab(common::lab_config(accounts).with_cloud(cloud)).await;
    env.confirm_in_cloud(mailboxd::config::CloudConfirmation::Directory, deadline);
    let iam = env.expect_outcomes().await;
    (env, iam)
}

/// Waits until the IAM queue has held a message with `key`; returns every message so far.
async fn until_heard(iam: &OutcomeQueue, heard: &mut Vec<Received>, key: &str) -> Received {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        heard.extend(iam.drain().await);
        if let Some(m) = heard.iter().find(|m| m.routing_key == key) {
            return m.clone();
        }
        assert!(Instant::now() < deadline, "no {key} in 30 s: {heard:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn schema_accepts(messages: &[&Received]) {
    let bodies: Vec<Vec<u8>> = messages
        .iter()
        .map(|m| m.body.to_string().into_bytes())
        .collect();
    for (m, v) in messages
        .iter()
        .zip(common::schema::verdicts("outcome.schema.json", &bodies))
    {
        assert!(
            v.valid,
            "docs/outcome.schema.json rejects {:#}: {:?}",
            m.body, v.errors
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_licensed_joiner_hears_on_premises_then_from_the_cloud_with_its_x500_address() {
    let people = [("ann.lee", "Ann", "Lee")];
    let (env, iam) = given_a_cloud(
        &people,
        Some(Duration::from_millis(100)),
        Duration::from_secs(60),
    )
    .await;
    let app = env.start_daemon().await;
    let ev = env.joiner("ann.lee");
    env.publisher().await.publish(&ev).await.unwrap();

    let mut heard = Vec::new();
    let onprem = until_heard(&iam, &mut heard, "joiner.succeeded").await;
    // The IAM system's licence step follows the on-premises answer.
    assert!(env.lab.set_licensed("ann.lee", true));
    let cloud = until_heard(&iam, &mut heard, "joiner.cloud_confirmed").await;

    assert!(
        heard
            .iter()
            .position(|m| m.routing_key == "joiner.succeeded")
            < heard
                .iter()
                .position(|m| m.routing_key == "joiner.cloud_confirmed")
    );
    assert_eq!(
        cloud.correlation_id, onprem.correlation_id,
        "both answer the event"
    );
    assert_ne!(cloud.message_id, onprem.message_id, "two answers");
    then_it_carries_the_cloud_x500_address_ad_shows(&env, &cloud);
    schema_accepts(&[&onprem, &cloud]);
    let job = env.store.job_by_event(&ev.id).await.unwrap().unwrap();
    assert_eq!(
        job.state,
        mailboxd::job::JobState::Succeeded,
        "the on-premises outcome stays"
    );
    // Operators see both answers on the job.
    let (code, shown, _) = env.cli(&["jobs", "show", &job.id.to_string()]);
    assert_eq!(code, 0);
    assert!(
        shown.contains("answer     joiner.succeeded")
            && shown.contains("answer     joiner.cloud_confirmed"),
        "{shown}"
    );
    app.stop().await;
}

/// The cloud answer names the cloud mailbox the lab's Exchange Online made, by the X500
/// address Entra wrote back, beside the addresses AD had.
fn then_it_carries_the_cloud_x500_address_ad_shows(env: &TestEnv, cloud: &Received) {
    let dn = env
        .lab
        .cloud_user("ann.lee")
        .and_then(|u| u.legacy_exchange_dn)
        .expect("EXO made the mailbox");
    let b = &cloud.body;
    assert_eq!(b["result"], "cloud_confirmed");
    assert_eq!(b["cloud"]["source"], "directory");
    assert_eq!(b["cloud"]["legacy_exchange_dn"], dn.as_str());
    let proxies: Vec<&str> = b["mailbox"]["proxy_addresses"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p.as_str())
        .collect();
    assert!(
        proxies.contains(&format!("X500:{dn}").as_str()),
        "{proxies:?}"
    );
    assert!(
        proxies.contains(&"SMTP:Ann.Lee@corp.example"),
        "{proxies:?}"
    );
    assert_eq!(b["mailbox"]["recipient_type"], "remote_mailbox");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unlicensed_joiner_and_one_held_setting_up_fail_in_the_cloud_at_the_deadline() {
    let people = [("bo.ng", "Bo", "Ng"), ("cy.ng", "Cy", "Ng")];
    let (env, iam) = given_a_cloud(
        &people,
        Some(Duration::from_millis(100)),
        Duration::from_secs(3),
    )
    .await;
    let error = "test-set provisioning error: the lab holds the mailbox";
    let app = env.start_daemon().await;
    env.joiners_succeeded(&["bo.ng", "cy.ng"]).await;
    // Only cy.ng is licensed, and a provisioning error holds its mailbox "Setting up".
    assert!(env.lab.set_provisioning_error("cy.ng", error));
    assert!(env.lab.set_licensed("cy.ng", true));

    let mut heard = Vec::new();
    until_heard(&iam, &mut heard, "joiner.cloud_failed").await;
    let failed = wait_for_both_failures(&iam, &mut heard).await;

    for m in &failed {
        let e = &m.body["error"];
        assert_eq!(e["class"], "no_cloud_mailbox");
        let text = e["message"].as_str().unwrap();
        assert!(
            text.contains("licence is missing") && text.contains("\"Setting up\""),
            "{text}"
        );
        assert!(
            e["what_to_do"]
                .as_str()
                .unwrap()
                .contains("Exchange Online licence")
        );
        // From AD alone the provisioning error's text is not visible: the answer says so
        // rather than guess.
        assert!(!text.contains(error), "{text}");
    }
    let cy = env.lab.cloud_user("cy.ng").unwrap();
    assert_eq!(
        cy.mailbox,
        MailboxState::SettingUp {
            error: error.into()
        }
    );
    let alerts = env.store.list_alerts(50).await.unwrap();
    let cloud_alerts: Vec<_> = alerts
        .iter()
        .filter(|a| a.kind == mailboxd::alert::AlertKind::Cloud)
        .collect();
    assert_eq!(cloud_alerts.len(), 2, "one alert per joiner: {alerts:#?}");
    schema_accepts(&failed.iter().collect::<Vec<_>>());
    app.stop().await;
}

async fn wait_for_both_failures(iam: &OutcomeQueue, heard: &mut Vec<Received>) -> Vec<Received> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let failed: Vec<Received> = heard
            .iter()
            .filter(|m| m.routing_key == "joiner.cloud_failed")
            .cloned()
            .collect();
        if failed.len() == 2 {
            return failed;
        }
        assert!(Instant::now() < deadline, "{heard:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        heard.extend(iam.drain().await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watch_survives_the_daemon_being_killed_and_confirms_after_the_restart() {
    let people = [("di.ho", "Di", "Ho")];
    let (env, iam) = given_a_cloud(&people, None, Duration::from_secs(120)).await;
    let mut killed = env.spawn_daemon(&[]);
    let ev = env.joiner("di.ho");
    env.publisher().await.publish(&ev).await.unwrap();
    let job = env.wait_succeeded(&ev.id).await;
    assert!(env.lab.set_licensed("di.ho", true));
    wait_checked_twice(&env, job.id).await;
    killed.kill().expect("kill -9 the daemon");
    let _ = killed.wait();

    // The cloud catches up while no daemon runs: the mailbox, then its writeback.
    env.lab.cloud_sync();
    env.lab.cloud_sync();
    let app = env.start_daemon().await;
    let mut heard = Vec::new();
    let cloud = until_heard(&iam, &mut heard, "joiner.cloud_confirmed").await;

    assert_eq!(cloud.body["job_id"], job.id.to_string());
    let watch = env
        .store
        .cloud_watch(job.id)
        .await
        .unwrap()
        .expect("the watch");
    assert_eq!(watch.result.as_deref(), Some("cloud_confirmed"));
    assert!(
        watch.checks >= 3,
        "checked before the kill and after: {watch:?}"
    );
    app.stop().await;
    heard.extend(iam.drain().await);
    let answers = heard
        .iter()
        .filter(|m| m.routing_key.starts_with("joiner.cloud_"))
        .count();
    assert_eq!(answers, 1, "one cloud answer: {heard:#?}");
}

async fn wait_checked_twice(env: &TestEnv, job: uuid::Uuid) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let w = env.store.cloud_watch(job).await.unwrap();
        if w.as_ref()
            .is_some_and(|w| w.checks >= 2 && w.last_seen.is_some())
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the watch was not checked: {w:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The lab's cloud is driven over HTTP as well (what a Graph stand-in or a demo uses): a
/// licence and two sync cycles give a remote mailbox its cloud mailbox and the writeback.
#[tokio::test]
async fn the_lab_cloud_is_driven_and_read_over_its_http_api() {
    let lab = lab::Lab::start(common::lab_config(vec![common::remote("eve")]))
        .await
        .unwrap();
    let (http, base) = (common::http(), format!("http://{}/lab/cloud", lab.addr));
    let post = |path: &str, body: serde_json::Value| {
        http.post(format!("{base}/{path}")).json(&body).send()
    };
    let licence = serde_json::json!({"account": "eve", "licensed": true});
    assert_eq!(post("users", licence).await.unwrap().status(), 204);
    let nobody = serde_json::json!({"account": "nobody", "licensed": true});
    assert_eq!(post("users", nobody).await.unwrap().status(), 404);
    let bad = serde_json::json!({"account": "eve", "licence": true});
    assert_eq!(post("users", bad).await.unwrap().status(), 400);
    for _ in 0..2 {
        post("sync", serde_json::json!({})).await.unwrap();
    }
    let eve: serde_json::Value = http
        .get(format!("{base}/users/eve"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(eve["mailbox"]["state"], "ready");
    assert_eq!(eve["recipient_type_details"], "UserMailbox");
    assert_eq!(eve["written_back"], true);
    let dn = eve["legacy_exchange_dn"].as_str().unwrap();
    let x500 = format!("X500:{dn}");
    assert!(lab.account("eve").unwrap().proxy_addresses.contains(&x500));
}
