//! User stories of the cloud answer, the Graph way (`[cloud] confirm = "graph"`): through
//! the real daemon against the lab, whose cloud feeds its Microsoft Graph stand-in, a joiner
//! hears on premises first, then what Exchange Online shows — the mailbox with the cloud's
//! addresses, or at the deadline the reason in Exchange's words and what to do. A joiner
//! whose licence came first is stopped before Enable-RemoteMailbox.

use crate::common;

use std::sync::OnceLock;
use std::time::Duration;

use common::TestEnv;
use common::outcomes::{OutcomeQueue, Received};
use lab::cloud::CloudConfig;
use lab::graph::{AppCertificate, MAILBOX_SETTINGS_READ, USER_READ_ALL};

const CLIENT_ID: &str = "7c1d2e3f-4a5b-4c6d-8e9f-0a1b2c3d4e5f";

fn app_cert() -> &'static AppCertificate {
    static CERT: OnceLock<AppCertificate> = OnceLock::new();
    CERT.get_or_init(|| AppCertificate::generate("mailboxd-cloud").expect("certificate"))
}

/// A lab whose cloud syncs every 100 ms (`licensed` licensed from the start), mailboxd's
/// app registered in its tenant, and the daemon confirming joiners through Graph.
async fn given_graph(
    people: &[(&str, &str, &str)],
    licensed: &[&str],
    deadline: Duration,
) -> (TestEnv, OutcomeQueue, tempfile::TempDir) {
    let files = tempfile::tempdir().expect("temp dir");
    let ca = files.path().join("lab-ca.pem");
    let accounts = people
        .iter()
        .map(|(s, g, sn)| lab::AccountSeed::person(s, g, sn))
        .collect();
    let cloud = CloudConfig {
        mailbox_delay: Duration::ZERO,
        sync_interval: Some(Duration::from_millis(100)),
        licensed: licensed.iter().map(|s| (*s).to_owned()).collect(),
    };
    let cfg = common::lab_config(accounts)
        .with_cloud(cloud)
        .with_tls(lab::LOOPBACK_ANY_PORT, Some(ca.clone()));
    let mut env = TestEnv::with_lab(cfg).await;
    let cert = app_cert();
    let roles = [USER_READ_ALL, MAILBOX_SETTINGS_READ];
    env.lab
        .graph()
        .register_app(CLIENT_ID, &cert.certificate_der, &roles);
    env.settings.graph = common::graph::settings(&env.lab, CLIENT_ID, cert, files.path(), ca);
    env.confirm_in_cloud(mailboxd::config::CloudConfirmation::Graph, deadline);
    let iam = env.expect_outcomes().await;
    (env, iam, files)
}

/// Waits until the IAM queue has held `n` messages with `key`; returns them.
async fn heard(iam: &OutcomeQueue, all: &mut Vec<Received>, key: &str, n: usize) -> Vec<Received> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        all.extend(iam.drain().await);
        let found: Vec<Received> = all
            .iter()
            .filter(|m| m.routing_key == key)
            .cloned()
            .collect();
        if found.len() >= n {
            return found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {n} {key} in 30 s: {all:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn schema_accepts(m: &Received) {
    let body = m.body.to_string().into_bytes();
    let v = &common::schema::verdicts("outcome.schema.json", &[body])[0];
    assert!(v.valid, "the schema rejects {:#}: {:?}", m.body, v.errors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_licensed_joiner_hears_on_premises_then_graph_shows_its_cloud_mailbox() {
    let (env, iam, _files) =
        given_graph(&[("ann.lee", "Ann", "Lee")], &[], Duration::from_secs(60)).await;
    let app = env.start_daemon().await;
    let ev = env.joiner("ann.lee");
    env.publisher().await.publish(&ev).await.unwrap();
    let mut all = Vec::new();
    let onprem = heard(&iam, &mut all, "joiner.succeeded", 1).await.remove(0);
    // The IAM system's licence step follows the on-premises answer.
    assert!(env.lab.set_licensed("ann.lee", true));
    let cloud = heard(&iam, &mut all, "joiner.cloud_confirmed", 1)
        .await
        .remove(0);

    assert_eq!(cloud.correlation_id, onprem.correlation_id);
    let c = &cloud.body["cloud"];
    assert_eq!(c["source"], "graph");
    assert_eq!(c["purpose"], "user");
    assert_eq!(c["user_principal_name"], "ann.lee@corp.example");
    let cloud_addresses = c["proxy_addresses"].as_array().unwrap();
    assert!(
        cloud_addresses
            .iter()
            .any(|a| a == "SMTP:Ann.Lee@corp.example"),
        "{c:#}"
    );
    schema_accepts(&cloud);
    // Graph calls for this joiner: the guard before Enable-RemoteMailbox and each check.
    let id = env.lab.cloud_user("ann.lee").unwrap().object_id.to_string();
    let calls = env
        .lab
        .graph()
        .calls()
        .iter()
        .filter(|c| c.path.contains(&id))
        .count();
    let checks = cloud.body["cloud"]["checks"].as_i64().unwrap() as usize;
    eprintln!("Graph calls for one joiner: {calls} ({checks} checks)");
    assert!(calls <= 2 + 2 * checks, "{calls} calls for {checks} checks");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_licence_or_held_setting_up_the_cloud_answer_says_why_at_the_deadline() {
    let people = [("bo.ng", "Bo", "Ng"), ("cy.ng", "Cy", "Ng")];
    let (env, iam, _files) = given_graph(&people, &[], Duration::from_secs(3)).await;
    let error = "test-set provisioning error: the lab holds the mailbox";
    let app = env.start_daemon().await;
    env.joiners_succeeded(&["bo.ng", "cy.ng"]).await;
    assert!(env.lab.set_provisioning_error("cy.ng", error));
    assert!(env.lab.set_licensed("cy.ng", true));

    let failed = heard(&iam, &mut Vec::new(), "joiner.cloud_failed", 2).await;
    let said = |sam: &str| {
        let m = failed
            .iter()
            .find(|m| m.body["account"]["sam_account_name"] == sam)
            .unwrap();
        schema_accepts(m);
        (
            m.body["error"]["message"].as_str().unwrap().to_owned(),
            m.body["error"]["what_to_do"].as_str().unwrap().to_owned(),
        )
    };
    let (bo, bo_todo) = said("bo.ng");
    assert!(bo.contains("no Exchange licence"), "{bo}");
    assert!(bo_todo.contains("assign the user a licence that includes Exchange Online"));
    let (cy, cy_todo) = said("cy.ng");
    assert!(
        cy.contains(&format!(
            "Exchange Online holds the mailbox \"Setting up\": {error}"
        )),
        "{cy}"
    );
    assert!(cy_todo.contains("provisioning error"), "{cy_todo}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_joiner_licensed_before_its_remote_mailbox_is_stopped_before_enable_remote_mailbox() {
    let people = [("di.ho", "Di", "Ho")];
    let (env, _iam, _files) = given_graph(&people, &["di.ho"], Duration::from_secs(60)).await;
    // The licence came first: Exchange Online made a mailbox of its own.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !env.lab.cloud_user("di.ho").is_some_and(|u| u.licence_first) {
        assert!(
            std::time::Instant::now() < deadline,
            "no licence-first mailbox"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let app = env.start_daemon().await;
    let ev = env.joiner("di.ho");
    env.publisher().await.publish(&ev).await.unwrap();
    let job = env.wait_terminal(&ev.id).await;

    assert_eq!(job.state, mailboxd::job::JobState::Failed);
    assert_eq!(job.attempt, 1, "failed once, for good");
    let error = job.last_error.unwrap_or_default();
    assert!(
        error.contains("Exchange Online already has a mailbox for di.ho"),
        "{error}"
    );
    assert!(error.contains("Set-RemoteMailbox -ExchangeGuid"), "{error}");
    assert!(
        env.lab.invocations_of("Enable-RemoteMailbox").is_empty(),
        "Exchange was not called"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graph_throttling_postpones_the_check_without_counting_it() {
    let (env, iam, _files) =
        given_graph(&[("el.ek", "El", "Ek")], &[], Duration::from_secs(60)).await;
    let app = env.start_daemon().await;
    let ev = env.joiner("el.ek");
    env.publisher().await.publish(&ev).await.unwrap();
    env.wait_succeeded(&ev.id).await;
    env.lab.graph().throttle(3, Duration::from_millis(300));
    assert!(env.lab.set_licensed("el.ek", true));
    let cloud = heard(&iam, &mut Vec::new(), "joiner.cloud_confirmed", 1)
        .await
        .remove(0);

    let id = env.lab.cloud_user("el.ek").unwrap().object_id.to_string();
    let user_reads: Vec<u16> = env
        .lab
        .graph()
        .calls()
        .iter()
        .filter(|c| c.path == format!("/v1.0/users/{id}"))
        .map(|c| c.status)
        .collect();
    assert_eq!(
        user_reads.iter().filter(|s| **s == 429).count(),
        3,
        "{user_reads:?}"
    );
    let answered = user_reads.iter().filter(|s| **s == 200).count();
    // One answered read was the guard's before Enable-RemoteMailbox; the others the checks.
    assert_eq!(
        cloud.body["cloud"]["checks"],
        answered as i64 - 1,
        "{user_reads:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_graph_refusal_of_mailboxd_is_one_alert_and_fails_no_joiner() {
    let people = [("fi.fo", "Fi", "Fo"), ("gu.go", "Gu", "Go")];
    let (env, iam, _files) = given_graph(&people, &[], Duration::from_secs(2)).await;
    let app = env.start_daemon().await;
    let jobs = env.joiners_succeeded(&["fi.fo", "gu.go"]).await;
    // An administrator takes MailboxSettings.Read away and revokes the app's tokens.
    env.lab
        .graph()
        .register_app(CLIENT_ID, &app_cert().certificate_der, &[USER_READ_ALL]);
    env.lab.graph().revoke_tokens();
    // Checked again and again (every 200 ms: past the 2 s deadline), the watches still wait.
    for job in &jobs {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while env
            .store
            .cloud_watch(job.id)
            .await
            .unwrap()
            .is_none_or(|w| w.checks < 12)
        {
            assert!(std::time::Instant::now() < deadline, "not checked");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let w = env.store.cloud_watch(job.id).await.unwrap().unwrap();
        assert_eq!(w.result, None, "{w:?}");
        assert!(
            w.last_seen
                .unwrap_or_default()
                .contains("MailboxSettings.Read")
        );
    }
    assert!(
        iam.drain()
            .await
            .iter()
            .all(|m| m.routing_key != "joiner.cloud_failed")
    );
    let alerts = env.store.list_alerts(50).await.unwrap();
    let refusals = alerts
        .iter()
        .filter(|a| a.subject.contains("Microsoft Graph refuses"))
        .count();
    assert_eq!(refusals, 1, "one alert: {alerts:#?}");
    app.stop().await;
}
