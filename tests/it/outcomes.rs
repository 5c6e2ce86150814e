//! User stories of outcome messages: the IAM system that sent events hears back, once per
//! job, with what AD shows after the change — on the outcome exchange, on `reply_to`, and
//! after a crash at the worst moment at most once more with the same `message_id`.

use crate::common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::outcomes::{OutcomeQueue, Received, wait_all_sent};
use common::{TestEnv, remote, seed, wait_exit};
use lapin::BasicProperties;
use mailboxd::job::JobState;
use mailboxd::store::OutcomeFilter;

/// The events give no address: the lab's email address policy (%g.%s@corp.example, as
/// Exchange applies it) decides, with a collision and non-ASCII names among them.
const PEOPLE: [(&str, &str, &str); 8] = [
    ("new.01", "John", "Smith"),
    ("new.02", "John", "Smith"),
    ("new.03", "Jürgen", "Müller"),
    ("new.04", "Renée", "Straße"),
    ("new.05", "Ana María", "López"),
    ("new.06", "Ann", "Lee"),
    ("new.07", "Bo", "Lee"),
    ("new.08", "Cy", "Lee"),
];

fn joiners() -> Vec<String> {
    PEOPLE.iter().map(|(s, _, _)| s.to_string()).collect()
}

fn leavers() -> Vec<String> {
    (1..=4).map(|i| format!("old.{i:02}")).collect()
}

/// The people as persons in the lab, the leavers' remote mailboxes, and one account whose
/// joiner cannot succeed: it has an on-premises mailbox already.
async fn given_people_leavers_and_an_onprem_account() -> TestEnv {
    let mut accounts: Vec<_> = PEOPLE
        .iter()
        .map(|(s, g, sn)| lab::AccountSeed::person(s, g, sn))
        .collect();
    accounts.extend(leavers().iter().map(|s| remote(s).disabled()));
    let onprem = common::onprem("onprem");
    accounts.push(onprem);
    TestEnv::new(accounts).await
}

/// Publishes a joiner for each person and `onprem`, a leaver for each leaver, and waits
/// until every job ended and its outcome was sent; returns the account of each event id.
async fn when_the_burst_is_published_and_every_outcome_sent(
    env: &TestEnv,
) -> HashMap<String, String> {
    let publisher = env.publisher().await;
    let mut events = HashMap::new();
    for sam in joiners()
        .iter()
        .chain(std::iter::once(&"onprem".to_owned()))
    {
        let ev = env.joiner(sam);
        publisher.publish(&ev).await.unwrap();
        events.insert(ev.id.clone(), sam.clone());
    }
    for sam in &leavers() {
        let ev = env.leaver(sam);
        publisher.publish(&ev).await.unwrap();
        events.insert(ev.id.clone(), sam.clone());
    }
    for id in events.keys() {
        env.wait_terminal(id).await;
    }
    wait_all_sent(&env.store, events.len()).await;
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_joiners_and_leavers_answers_each_event_once_with_what_ad_shows() {
    let mut env = given_people_leavers_and_an_onprem_account().await;
    let iam = env.expect_outcomes().await;
    let app = env.start_daemon().await;
    let events = when_the_burst_is_published_and_every_outcome_sent(&env).await;
    let got = iam.drain().await;
    then_each_job_has_exactly_one_outcome_correlated_to_its_event(&env, &events, &got).await;
    then_every_outcome_is_what_the_schema_promises(&got);
    then_a_joiners_answer_carries_the_addresses_ad_shows(&env, &got);
    then_leavers_are_hidden_and_the_failure_says_what_to_do(&got);
    then_operators_see_every_outcome_sent_in_the_cli(&env, events.len());
    app.stop().await;
}

async fn then_each_job_has_exactly_one_outcome_correlated_to_its_event(
    env: &TestEnv,
    events: &HashMap<String, String>,
    got: &[Received],
) {
    assert_eq!(got.len(), events.len(), "{got:#?}");
    let answered: HashSet<&str> = got
        .iter()
        .map(|m| m.correlation_id.as_deref().expect("correlation_id"))
        .collect();
    assert_eq!(answered.len(), events.len(), "one outcome per event");
    for m in got {
        check_envelope(m);
        let event_id = m.correlation_id.as_deref().unwrap_or_default();
        let sam = &events[event_id];
        assert_eq!(m.body["account"]["sam_account_name"], sam.as_str());
        let job = env.store.job_by_event(event_id).await.unwrap().unwrap();
        assert_eq!(m.body["job_id"], job.id.to_string());
        assert_eq!(m.body["attempts"], job.attempt);
    }
}

/// Every one is what docs/outcome.schema.json promises.
fn then_every_outcome_is_what_the_schema_promises(got: &[Received]) {
    let bodies: Vec<Vec<u8>> = got
        .iter()
        .map(|m| m.body.to_string().into_bytes())
        .collect();
    for (m, v) in got
        .iter()
        .zip(common::schema::verdicts("outcome.schema.json", &bodies))
    {
        assert!(v.valid, "{:?}\n{:#}", v.errors, m.body);
    }
}

/// A joiner's answer carries the addresses AD shows after the change, and the address
/// policy numbered the second John Smith.
fn then_a_joiners_answer_carries_the_addresses_ad_shows(env: &TestEnv, got: &[Received]) {
    for sam in &joiners() {
        let m = outcome_of(got, sam);
        assert_eq!(m.routing_key, "joiner.succeeded", "{m:#?}");
        assert_eq!(m.body["outcome"], "enabled");
        let lab = env.mailbox(sam);
        let mailbox = &m.body["mailbox"];
        assert_eq!(
            mailbox["primary_smtp_address"].as_str(),
            lab.primary_smtp_address.as_deref()
        );
        assert_eq!(
            mailbox["remote_routing_address"],
            format!("{sam}@tenant.mail.onmicrosoft.com")
        );
        assert_eq!(
            mailbox["proxy_addresses"],
            serde_json::json!(lab.proxy_addresses)
        );
        assert_eq!(mailbox["recipient_type"], "remote_mailbox");
        assert_eq!(mailbox["hidden"], false);
        let account = &m.body["account"];
        assert_eq!(account["object_guid"], lab.object_guid.to_string());
        assert_eq!(account["distinguished_name"], lab.distinguished_name);
    }
    let primary = |sam: &str| {
        outcome_of(got, sam).body["mailbox"]["primary_smtp_address"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let smiths = HashSet::from([primary("new.01"), primary("new.02")]);
    let expected = HashSet::from([
        "John.Smith@corp.example".to_owned(),
        "John.Smith2@corp.example".to_owned(),
    ]);
    assert_eq!(smiths, expected, "the second John Smith gets the number");
    assert_eq!(primary("new.03"), "Juergen.Mueller@corp.example");
    assert_eq!(primary("new.04"), "Renee.Strasse@corp.example");
    assert_eq!(primary("new.05"), "Ana-Maria.Lopez@corp.example");
    assert_eq!(primary("new.06"), "Ann.Lee@corp.example");
}

fn then_leavers_are_hidden_and_the_failure_says_what_to_do(got: &[Received]) {
    for sam in &leavers() {
        let m = outcome_of(got, sam);
        assert_eq!(m.routing_key, "leaver.succeeded", "{m:#?}");
        assert_eq!(m.body["outcome"], "hidden");
        assert_eq!(m.body["mailbox"]["hidden"], true);
    }
    let failed = outcome_of(got, "onprem");
    assert_eq!(failed.routing_key, "joiner.failed", "{failed:#?}");
    assert_eq!(failed.body["result"], "failed");
    assert_eq!(failed.body["error"]["class"], "permanent");
    assert!(
        !failed.body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
    );
    assert!(
        failed.body["error"]["what_to_do"]
            .as_str()
            .unwrap_or_default()
            .contains("correct the account")
    );
}

/// Operators see the same in `mailboxd outcomes list`, all sent to the exchange.
fn then_operators_see_every_outcome_sent_in_the_cli(env: &TestEnv, events: usize) {
    let (code, out, err) = env.cli(&["outcomes", "list", "--json", "--limit", "100"]);
    assert_eq!(code, 0, "{err}");
    let listed: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(listed.len(), events);
    assert!(listed.iter().all(|o| {
        o["sent_at"].is_string()
            && o["delivered"]
                .as_str()
                .is_some_and(|d| d.contains(&format!("test.{}.outcomes", env.tag)))
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sender_that_sets_reply_to_gets_the_outcome_there_without_an_outcome_exchange() {
    let mut env = TestEnv::new(vec![seed("asks")]).await;
    assert!(env.settings.outcomes.exchange.is_none());
    let reply =
        OutcomeQueue::declare(&env.settings.amqp.url, &format!("test.{}.reply", env.tag)).await;
    // A named reply queue is allowed only when the configuration names it (by prefix here).
    env.settings.amqp.reply_to_allowed = vec![format!("test.{}.*", env.tag)];
    let app = env.start_daemon().await;
    let _topology = env.publisher().await;

    let ev = env.joiner("asks");
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_message_id(ev.id.as_str().into())
        .with_reply_to(reply.queue.as_str().into());
    common::publish_with(&env, &ev, props).await;

    env.wait_succeeded(&ev.id).await;
    wait_all_sent(&env.store, 1).await;
    let got = reply.drain().await;
    assert_eq!(got.len(), 1, "{got:#?}");
    check_envelope(&got[0]);
    assert_eq!(got[0].correlation_id.as_deref(), Some(ev.id.as_str()));
    assert_eq!(
        got[0].routing_key, reply.queue,
        "through the default exchange"
    );
    assert_eq!(got[0].body["result"], "succeeded");
    let job = env.store.job_by_event(&ev.id).await.unwrap().unwrap();
    assert_eq!(job.reply_to.as_deref(), Some(reply.queue.as_str()));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_between_the_confirm_and_the_outbox_update_resends_with_the_same_message_id() {
    let mut env = TestEnv::new(vec![seed("crash.me"), seed("marker")]).await;
    let iam = env.expect_outcomes().await;
    let publisher = env.publisher().await;

    // The daemon aborts right after the broker confirmed the outcome, before it is marked sent.
    let mut child = env.spawn_daemon(&[("MAILBOXD_FAILPOINT", "outcomes-after-confirm")]);
    let ev = env.joiner("crash.me");
    publisher.publish(&ev).await.unwrap();
    let status =
        wait_exit(&mut child, Duration::from_secs(30)).expect("the daemon hit the failpoint");
    assert!(!status.success());
    let job = env.store.job_by_event(&ev.id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Succeeded);
    let unsent = env
        .store
        .list_outcomes(OutcomeFilter::Unsent, None, 10)
        .await
        .unwrap();
    assert_eq!(
        unsent.len(),
        1,
        "committed but not marked sent: {unsent:#?}"
    );

    // Restarted, it publishes the row again: the consumer sees the same message_id twice.
    let _child = env.spawn_daemon(&[]);
    let marker = env.joiner("marker");
    publisher.publish(&marker).await.unwrap();
    env.wait_succeeded(&marker.id).await;
    wait_all_sent(&env.store, 2).await;
    let got = iam.drain().await;
    let of_crash: Vec<&Received> = got
        .iter()
        .filter(|m| m.correlation_id.as_deref() == Some(ev.id.as_str()))
        .collect();
    assert_eq!(of_crash.len(), 2, "the one resend: {got:#?}");
    assert_eq!(of_crash[0].message_id, of_crash[1].message_id);
    assert_eq!(of_crash[0].body, of_crash[1].body);
    assert_eq!(
        of_crash[0].message_id.as_deref(),
        Some(unsent[0].id.to_string().as_str())
    );
    let of_marker = got
        .iter()
        .filter(|m| m.correlation_id.as_deref() == Some(marker.id.as_str()))
        .count();
    assert_eq!(of_marker, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_outcome_the_broker_refuses_stays_visible_and_goes_out_once_it_can() {
    let mut env = TestEnv::new(vec![seed("first"), seed("patient")]).await;
    let iam = env.expect_outcomes().await;
    env.settings.outcomes.retry_base = Duration::from_secs(3);
    env.settings.outcomes.retry_cap = Duration::from_secs(3);
    env.settings.admin.open_reads = true;
    let app = env.start_daemon().await;
    let publisher = env.publisher().await;
    let first = env.joiner("first");
    publisher.publish(&first).await.unwrap();
    env.wait_succeeded(&first.id).await;
    wait_all_sent(&env.store, 1).await;

    // The outcome exchange disappears: the broker refuses the next outcome.
    iam.delete_exchange().await;
    let ev = env.joiner("patient");
    publisher.publish(&ev).await.unwrap();
    env.wait_succeeded(&ev.id).await;
    let failing = wait_failing(&env).await;
    assert_eq!(failing.event_id, ev.id);
    assert!(failing.sent_at.is_none());
    // Operators see it: the metric, the dashboard, the CLI.
    let scrape = common::METRICS_SCRAPE.lock().await;
    let metrics = text(&env, &format!("http://{}/metrics", app.admin_addr)).await;
    drop(scrape);
    assert!(
        metrics.contains("mailboxd_outcome_outbox{status=\"failing\"} 1"),
        "{metrics}"
    );
    let overview = text(&env, &format!("http://{}/", app.admin_addr)).await;
    assert!(overview.contains("could not be published"), "{overview}");
    let (code, out, err) = env.cli(&["outcomes", "list", "--status", "failing"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("FAILING") && out.contains("joiner.succeeded"),
        "{out}"
    );

    // Back before the next try: it goes out, once, and nothing is left pending.
    iam.restore_exchange().await;
    wait_all_sent(&env.store, 2).await;
    let got = iam.drain().await;
    let of_patient: Vec<&Received> = got
        .iter()
        .filter(|m| m.correlation_id.as_deref() == Some(ev.id.as_str()))
        .collect();
    assert_eq!(of_patient.len(), 1, "{got:#?}");
    assert_eq!(
        of_patient[0].message_id.as_deref(),
        Some(failing.id.to_string().as_str())
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_joiner_waiting_for_the_sync_says_so_once_and_then_how_it_ended() {
    let mut env = TestEnv::new(vec![seed("slow.sync")]).await;
    let iam = env.expect_outcomes().await;
    env.settings.ldap.require_cloud_sync = true;
    env.settings.worker.sync_poll_interval = Duration::from_millis(200);
    let app = env.start_daemon().await;
    // Entra Connect has not picked the account up for 1.5 s: several polls.
    env.fault(serde_json::json!({"fault": "not_synced", "account": "slow.sync", "seconds": 1.5}))
        .await;
    let ev = env.joiner("slow.sync");
    env.publisher().await.publish(&ev).await.unwrap();
    env.wait_succeeded(&ev.id).await;
    wait_all_sent(&env.store, 2).await;
    let got = iam.drain().await;
    let keys: Vec<&str> = got.iter().map(|m| m.routing_key.as_str()).collect();
    assert_eq!(
        keys,
        vec!["joiner.waiting_for_sync", "joiner.succeeded"],
        "one wait, then the end, in order: {got:#?}"
    );
    assert_eq!(got[0].body["error"]["class"], "not_synced");
    assert_eq!(got[0].body["attempts"], 0, "waiting uses no attempt");
    assert_eq!(got[1].body["attempts"], 1);
    assert!(
        got.iter()
            .all(|m| m.correlation_id.as_deref() == Some(ev.id.as_str()))
    );
    assert_ne!(got[0].message_id, got[1].message_id);
    app.stop().await;
}

async fn text(env: &TestEnv, url: &str) -> String {
    let r = env.http.get(url).send().await.expect("answers");
    r.text().await.expect("a text body")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn identityiq_gets_one_well_formed_launched_workflow_per_outcome() {
    let onprem = common::onprem("iiq.onprem");
    let mut env = TestEnv::new(vec![
        lab::AccountSeed::person("iiq.a", "Ada", "Byron"),
        lab::AccountSeed::person("iiq.b", "Émile", "Zola"),
        onprem,
    ])
    .await;
    let iiq = env.expect_identityiq(None).await;
    let app = env.start_daemon().await;
    let publisher = env.publisher().await;
    let mut events = Vec::new();
    for sam in ["iiq.a", "iiq.b", "iiq.onprem"] {
        let mut ev = env.joiner(sam);
        if sam == "iiq.a" {
            ev.identity = Some("Ada.Byron".into());
        }
        publisher.publish(&ev).await.unwrap();
        events.push(ev);
    }
    for ev in &events {
        env.wait_terminal(&ev.id).await;
    }
    let rows = wait_outcomes(&env, 3, |o| {
        o.iiq_state == Some(mailboxd::outcome::HttpDelivery::Sent)
    })
    .await;
    let launches = iiq.launches();
    then_identityiq_got_one_well_formed_launch_per_stored_outcome(&launches, &rows);
    then_each_launch_carries_the_account_the_result_and_what_to_do(&launches, &events[0].id);
    app.stop().await;
}

fn then_identityiq_got_one_well_formed_launch_per_stored_outcome(
    launches: &[common::identityiq::Launch],
    rows: &[mailboxd::store::OutcomeRow],
) {
    assert_eq!(launches.len(), 3, "one launch per outcome: {launches:#?}");
    for l in launches {
        assert!(l.problems.is_empty(), "{:?}", l.problems);
        assert_eq!(l.workflow, "mailboxd Outcome");
    }
    let ids: HashSet<&str> = launches
        .iter()
        .map(|l| l.input["outcomeId"].as_str())
        .collect();
    let stored: HashSet<String> = rows.iter().map(|o| o.id.to_string()).collect();
    assert_eq!(
        ids,
        stored.iter().map(String::as_str).collect::<HashSet<_>>()
    );
}

fn then_each_launch_carries_the_account_the_result_and_what_to_do(
    launches: &[common::identityiq::Launch],
    first_event: &str,
) {
    let of = |sam: &str| {
        launches
            .iter()
            .find(|l| l.input["accountName"] == sam)
            .unwrap_or_else(|| panic!("no launch for {sam}"))
    };
    assert_eq!(of("iiq.a").input["email"], "Ada.Byron@corp.example");
    assert_eq!(
        of("iiq.a").input["identityName"],
        "Ada.Byron",
        "the event's identity"
    );
    assert!(
        !of("iiq.b").input.contains_key("identityName"),
        "none in its event"
    );
    assert_eq!(of("iiq.b").input["email"], "Emile.Zola@corp.example");
    assert_eq!(of("iiq.a").input["result"], "succeeded");
    assert_eq!(of("iiq.a").input["eventId"], first_event);
    assert!(of("iiq.a").input["nativeIdentity"].starts_with("CN=iiq.a,"));
    let failed = of("iiq.onprem");
    assert_eq!(failed.input["result"], "failed");
    assert_eq!(failed.input["errorClass"], "permanent");
    assert!(failed.input["whatToDo"].contains("correct the account"));
    let whole: serde_json::Value = serde_json::from_str(&failed.input["outcomeJson"]).unwrap();
    assert_eq!(whole["schema"], "mailboxd.outcome/v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_identityiq_that_refuses_the_credential_raises_one_alert_and_is_not_asked_again() {
    let mut env = TestEnv::new(vec![seed("iiq.x"), seed("iiq.y")]).await;
    let iiq = env.expect_identityiq(Some(401)).await;
    let app = env.start_daemon().await;
    let publisher = env.publisher().await;
    for sam in ["iiq.x", "iiq.y"] {
        let ev = env.joiner(sam);
        publisher.publish(&ev).await.unwrap();
        env.wait_succeeded(&ev.id).await;
    }
    // Both deliveries settle: IdentityIQ refused, the broker's copy sent (they run apart).
    let rows = wait_outcomes(&env, 2, |o| {
        o.iiq_state == Some(mailboxd::outcome::HttpDelivery::Refused) && o.sent_at.is_some()
    })
    .await;
    assert!(
        rows.iter().all(|o| o
            .iiq_last_error
            .as_deref()
            .unwrap_or_default()
            .contains("401")),
        "{rows:#?}"
    );
    assert_eq!(iiq.launches().len(), 2, "each tried once, not retried");
    let alerts = env.store.list_alerts(10).await.unwrap();
    let refused: Vec<_> = alerts
        .iter()
        .filter(|a| a.kind == mailboxd::alert::AlertKind::IdentityIq)
        .collect();
    assert_eq!(refused.len(), 1, "one alert for the problem: {alerts:#?}");
    assert!(refused[0].body.contains("401"));
    assert!(
        !refused[0].body.contains(&format!("iiq-{}", env.tag)),
        "the password stays out"
    );
    // Nothing is left pending for IdentityIQ.
    assert_eq!(env.store.outcome_counts().await.unwrap().unsent, 0);
    app.stop().await;
}

/// Waits (bounded) until at least `n` outcomes are stored and all satisfy `done`.
async fn wait_outcomes(
    env: &TestEnv,
    n: usize,
    done: impl Fn(&mailboxd::store::OutcomeRow) -> bool,
) -> Vec<mailboxd::store::OutcomeRow> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let rows = env
            .store
            .list_outcomes(OutcomeFilter::All, None, 100)
            .await
            .unwrap();
        if rows.len() >= n && rows.iter().all(&done) {
            return rows;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "outcomes not done within 30 s: {rows:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (bounded) for the first outcome whose publish failed.
async fn wait_failing(env: &TestEnv) -> mailboxd::store::OutcomeRow {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let rows = env
            .store
            .list_outcomes(OutcomeFilter::Failing, None, 10)
            .await
            .unwrap();
        if let Some(row) = rows.into_iter().next() {
            return row;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no outcome failed to publish within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The AMQP properties agree with the body: message_id is the outcome's id, correlation_id
/// the event's, the type names the schema, the routing key is `<type>.<result>`.
fn check_envelope(m: &Received) {
    assert_eq!(m.body["schema"], "mailboxd.outcome/v1");
    assert_eq!(m.message_id.as_deref(), m.body["id"].as_str());
    assert_eq!(m.correlation_id.as_deref(), m.body["event_id"].as_str());
    assert_eq!(m.kind.as_deref(), Some("mailboxd.outcome/v1"));
    if !m.routing_key.starts_with("test.") {
        let key = format!(
            "{}.{}",
            m.body["type"].as_str().unwrap_or_default(),
            m.body["result"].as_str().unwrap_or_default()
        );
        assert_eq!(m.routing_key, key);
    }
}

fn outcome_of<'a>(got: &'a [Received], sam: &str) -> &'a Received {
    got.iter()
        .find(|m| m.body["account"]["sam_account_name"] == sam)
        .unwrap_or_else(|| panic!("no outcome for {sam}: {got:#?}"))
}
