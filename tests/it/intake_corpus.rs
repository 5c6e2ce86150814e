//! Hostile and malformed messages (tests/data/poison) and IdentityIQ plans (tests/data/iiq)
//! through the real broker and daemon: each bad one ends in `poison_messages` with its
//! precise reason and a dead-lettered copy, valid neighbours still flow, and credentials in
//! IdentityIQ plans are stored nowhere.

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{TestEnv, remote, seed};
use mailboxd::job::{JobEffect, JobState};

fn data(rel: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(rel),
    )
    .unwrap_or_else(|e| panic!("tests/data/{rel}: {e}"))
}

const SECRETS: [&str; 2] = ["Pl4in-Text-S3cret", "Init1alP4ss!"];

/// A poison message as the test publishes it (the file it came from) and the words its
/// stored reason must contain.
type Expected = Vec<(String, String)>;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_hostile_message_is_poison_with_its_reason_and_neighbours_still_flow() {
    let env = TestEnv::new(vec![seed("before"), seed("after")]).await;
    let app = env.start_daemon().await;
    let publisher = env.publisher().await;

    let before = env.joiner("before");
    publisher.publish(&before).await.unwrap();
    let expected = when_every_file_of_the_corpus_and_an_oversize_message_arrive(&publisher).await;
    let after = env.joiner("after");
    publisher.publish(&after).await.unwrap();

    env.wait_succeeded(&before.id).await;
    env.wait_succeeded(&after.id).await;
    let poison = then_each_is_poison_with_its_precise_reason(&env, &expected).await;
    then_credentials_and_unreadable_bodies_are_not_kept(&env, &poison).await;
    then_every_bad_message_was_dead_lettered_too(&env, expected.len()).await;
    app.stop().await;
}

/// Publishes tests/data/poison as its manifest says, then one message a byte over the limit.
async fn when_every_file_of_the_corpus_and_an_oversize_message_arrive(
    publisher: &mailboxd::publish::Publisher,
) -> Expected {
    let manifest = String::from_utf8(data("poison/expected.tsv")).unwrap();
    let mut expected = Vec::new();
    for line in manifest
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let cols: Vec<&str> = line.split('\t').collect();
        let (file, ct, reason) = (cols[0], cols[1], cols[2]);
        let body = data(&format!("poison/{file}"));
        // Without an id in the body the AMQP message_id is the event id: that message must
        // come without one to be poison.
        let message_id = (file != "missing-id.json").then(|| format!("corpus-{file}"));
        let ct = (ct != "-").then_some(ct);
        publisher
            .publish_raw("ad.user.created", &body, ct, message_id.as_deref())
            .await
            .unwrap();
        expected.push((file.to_owned(), reason.to_owned()));
    }
    // Oversize: one byte over the limit.
    let big = vec![b' '; mailboxd::event::MAX_MESSAGE_BYTES + 1];
    publisher
        .publish_raw(
            "ad.user.created",
            &big,
            Some("application/json"),
            Some("corpus-oversize"),
        )
        .await
        .unwrap();
    expected.push(("oversize".into(), "the limit is".into()));
    expected
}

async fn then_each_is_poison_with_its_precise_reason(
    env: &TestEnv,
    expected: &Expected,
) -> Vec<mailboxd::store::PoisonMessage> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let poison = loop {
        let p = env.store.list_poison(100).await.unwrap();
        if p.len() >= expected.len() {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} poison messages stored; missing: {:?}",
            p.len(),
            expected.len(),
            expected
                .iter()
                .filter(|(f, _)| !p
                    .iter()
                    .any(|r| r.message_id.as_deref() == Some(format!("corpus-{f}").as_str())))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(poison.len(), expected.len());
    for (file, reason) in expected {
        let id = format!("corpus-{file}");
        let row = poison
            .iter()
            .find(|p| p.message_id.as_deref() == Some(id.as_str()))
            .or_else(|| poison.iter().find(|p| p.message_id.is_none()))
            .unwrap_or_else(|| panic!("{file}: no poison row"));
        assert!(
            row.reason.contains(reason.as_str()),
            "{file}: reason {:?} does not say {reason:?}",
            row.reason
        );
    }
    poison
}

/// The plan with credentials was kept without them; nothing unreadable that might hold a
/// credential was kept raw.
async fn then_credentials_and_unreadable_bodies_are_not_kept(
    env: &TestEnv,
    poison: &[mailboxd::store::PoisonMessage],
) {
    let row = poison
        .iter()
        .find(|p| p.message_id.as_deref() == Some("corpus-iiq-no-sam-with-password.xml"))
        .unwrap();
    let full = env.store.get_poison(row.id).await.unwrap().unwrap();
    let body = String::from_utf8_lossy(&full.body);
    for s in SECRETS {
        assert!(
            !body.contains(s),
            "credential {s} stored in the poison copy: {body}"
        );
    }
    assert!(
        body.contains("CN=Nobody"),
        "the rest of the plan is kept: {body}"
    );
    let unclosed = poison
        .iter()
        .find(|p| p.message_id.as_deref() == Some("corpus-unclosed.xml"))
        .unwrap();
    let full = env.store.get_poison(unclosed.id).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&full.body).contains("withheld"));
}

async fn then_every_bad_message_was_dead_lettered_too(env: &TestEnv, expected: usize) {
    let dead = mailboxd::broker::dead_letter_queue(&env.settings.amqp);
    let conn = mailboxd::broker::connect(&env.settings.amqp.url, "corpus test")
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut count = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while count < expected && Instant::now() < deadline {
        match ch
            .basic_get(
                dead.as_str().into(),
                lapin::options::BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap()
        {
            Some(_) => count += 1,
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert_eq!(count, expected);
}

/// Four IdentityIQ plans (create, disable, a group change, a modify that disables), the
/// create plan twice: the same plan makes the same jobs once.
async fn when_identityiq_sends_its_plans(publisher: &mailboxd::publish::Publisher) {
    for (file, id) in [
        ("iiq/create.xml", "plan-create"),
        ("iiq/disable.xml", "plan-disable"),
        ("iiq/modify-group.xml", "plan-modify-group"),
        ("iiq/modify-disable.xml", "plan-modify-disable"),
    ] {
        publisher
            .publish_raw(
                "ad.user.created",
                &data(file),
                Some("application/xml"),
                Some(id),
            )
            .await
            .unwrap();
    }
    publisher
        .publish_raw(
            "ad.user.created",
            &data("iiq/create.xml"),
            Some("application/xml"),
            Some("plan-create"),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn identityiq_plans_become_jobs_without_their_credentials() {
    let env = TestEnv::new(vec![
        seed("jjoiner"),
        remote("lleaver").disabled(),
        remote("ddisabled").disabled(),
    ])
    .await;
    let app = env.start_daemon().await;
    when_identityiq_sends_its_plans(&env.publisher().await).await;
    then_each_plan_that_changes_a_mailbox_is_one_job(&env).await;
    then_the_other_plans_made_no_job_and_nothing_was_poison(&env).await;
    then_the_credentials_are_nowhere_in_the_database(&env).await;
    app.stop().await;
}

async fn then_each_plan_that_changes_a_mailbox_is_one_job(env: &TestEnv) {
    let job = env.wait_succeeded("plan-create#0").await;
    assert_eq!(job.kind.to_string(), "joiner");
    assert_eq!(job.account, "jjoiner");
    assert_eq!(
        job.event.account.created_on_server.as_deref(),
        Some("dc1.corp.example")
    );
    assert_eq!(
        job.event.account.user_principal_name.as_deref(),
        Some("jane.joiner@corp.example")
    );
    assert_eq!(job.event.source.as_deref(), Some("identityiq"));
    let job = env.wait_succeeded("plan-disable#0").await;
    assert_eq!(
        (job.kind.to_string().as_str(), job.account.as_str()),
        ("leaver", "lleaver")
    );
    assert_eq!(job.outcome, Some(JobEffect::Hidden));
    let job = env.wait_succeeded("plan-modify-disable#0").await;
    assert_eq!(job.account, "ddisabled");
}

/// The HR Portal request and the group change made no job; nothing was poison.
async fn then_the_other_plans_made_no_job_and_nothing_was_poison(env: &TestEnv) {
    let all = env
        .store
        .list_jobs(&mailboxd::store::JobFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 3, "{all:?}");
    assert!(all.iter().all(|j| j.state == JobState::Succeeded));
    assert!(env.store.list_poison(10).await.unwrap().is_empty());
}

async fn then_the_credentials_are_nowhere_in_the_database(env: &TestEnv) {
    let dump: String =
        sqlx::query_scalar("SELECT coalesce(string_agg(payload::text, ' '), '') FROM jobs")
            .fetch_one(env.store.pool())
            .await
            .unwrap();
    for s in SECRETS {
        assert!(!dump.contains(s), "credential {s} stored in a job");
    }
    assert!(!dump.contains("svc-exchange"));
}
