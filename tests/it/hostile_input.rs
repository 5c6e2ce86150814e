//! Hostile input at the broker edge, through the real broker, database, lab and daemon
//! (issue 29): no event value chooses where mailboxd connects; an IdentityIQ message meets
//! the same rules as its JSON twin; deep XML, NUL bytes and credential-bearing bodies are
//! refused or cleaned; `reply_to` only names queues an RPC client could. After each hostile
//! message an ordinary joiner still succeeds and nothing is left `running`.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{TestEnv, seed};
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable};
use mailboxd::job::JobState;
use mailboxd::store::JobFilter;
use tokio::io::AsyncReadExt;

/// Publishes `body` with the given properties on the test's exchange, waiting for the
/// broker's confirm (the topology is declared by `env.publisher()` first).
async fn publish(env: &TestEnv, routing_key: &str, body: &[u8], props: BasicProperties) {
    let _topology = env.publisher().await;
    let conn = mailboxd::broker::connect(&env.settings.amqp.url, "test hostile sender")
        .await
        .expect("RabbitMQ answers");
    let ch = conn.create_channel().await.expect("a channel");
    ch.basic_publish(
        env.settings.amqp.exchange.as_str().into(),
        routing_key.into(),
        BasicPublishOptions::default(),
        body,
        props.with_delivery_mode(2),
    )
    .await
    .expect("published")
    .await
    .expect("confirmed");
}

/// An ordinary joiner published now succeeds, and no job is left `running`: intake and
/// the workers survived what came before.
async fn an_ordinary_joiner_still_succeeds(env: &TestEnv, sam: &str) {
    let ev = env.joiner(sam);
    env.publisher().await.publish(&ev).await.unwrap();
    env.wait_succeeded(&ev.id).await;
    let running = env
        .store
        .list_jobs(&JobFilter {
            states: vec![JobState::Running],
            limit: 100,
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert!(running.is_empty(), "jobs left running: {running:#?}");
}

/// An IdentityIQ plan creating `sam` with these extra attribute requests.
fn plan(sam: &str, attributes: &str) -> Vec<u8> {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<ProvisioningPlan nativeIdentity="Hostile Person">
  <AccountRequest application="Active Directory" op="Create" nativeIdentity="CN={sam},OU=Staff,DC=corp,DC=example">
    <AttributeRequest name="sAMAccountName" value="{sam}"/>
    {attributes}
  </AccountRequest>
</ProvisioningPlan>"#
    )
    .into_bytes()
}

fn xml(message_id: &str) -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/xml".into())
        .with_message_id(message_id.into())
}

/// An attacker's listener on another loopback address, on the port of the configured DC
/// (where a substituted host would be dialled): it counts connections and keeps what it is
/// sent (a simple bind would carry the service account's name and password).
struct Attacker {
    connections: Arc<AtomicUsize>,
    received: Arc<parking_lot::Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

async fn given_an_attacker_listening_where_a_substituted_dc_would_be_dialled(
    env: &TestEnv,
) -> Attacker {
    let port = env.lab.ldap_addr.expect("the lab serves LDAP").port();
    let listener = tokio::net::TcpListener::bind(("127.0.0.2", port))
        .await
        .expect("127.0.0.2 is loopback on Linux");
    let connections = Arc::new(AtomicUsize::new(0));
    let received = Arc::new(parking_lot::Mutex::new(Vec::<u8>::new()));
    let attacker = tokio::spawn({
        let (connections, received) = (connections.clone(), received.clone());
        async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                connections.fetch_add(1, Ordering::SeqCst);
                let received = received.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = socket.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        received.lock().extend_from_slice(&buf[..n]);
                    }
                });
            }
        }
    });
    Attacker {
        connections,
        received,
        task: attacker,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_naming_another_host_never_makes_mailboxd_connect_or_bind_there() {
    let env = TestEnv::new(vec![seed("stranger1"), seed("named1"), seed("after1")]).await;
    let attacker = given_an_attacker_listening_where_a_substituted_dc_would_be_dialled(&env).await;
    let app = env.start_daemon().await;
    let publisher = env.publisher().await;

    let mut stranger = env.joiner("stranger1");
    stranger.created_on_server = Some("127.0.0.2".into());
    publisher.publish(&stranger).await.unwrap();
    // The name the configured DC reports for itself only reorders (one DC: nothing changes).
    let mut named = env.joiner("named1");
    named.created_on_server = Some("LAB-DC1.corp.example".into());
    publisher.publish(&named).await.unwrap();

    env.wait_succeeded(&stranger.id).await;
    env.wait_succeeded(&named.id).await;
    an_ordinary_joiner_still_succeeds(&env, "after1").await;
    app.stop().await;
    attacker.task.abort();
    then_nothing_reached_the_attacker(&env, &attacker);
    then_exchange_was_given_the_configured_dc_never_the_events(&env);
}

fn then_nothing_reached_the_attacker(env: &TestEnv, attacker: &Attacker) {
    let secret = env.settings.ldap.password.as_ref().map(|p| {
        use secrecy::ExposeSecret;
        p.expose_secret().to_owned()
    });
    let got = String::from_utf8_lossy(&attacker.received.lock()).into_owned();
    assert_eq!(
        attacker.connections.load(Ordering::SeqCst),
        0,
        "mailboxd connected to the host an event named; it was sent {got:?}"
    );
    assert!(secret.is_some_and(|s| !got.contains(&s)));
}

/// Exchange was given the configured DC (by the name it reports), never the event's.
fn then_exchange_was_given_the_configured_dc_never_the_events(env: &TestEnv) {
    for sam in ["stranger1", "named1"] {
        let calls = env.lab.invocations_for("Enable-RemoteMailbox", sam);
        assert!(!calls.is_empty(), "{sam} was not enabled");
        for call in calls {
            assert_eq!(
                call.parameter("DomainController").and_then(|v| v.as_str()),
                Some("lab-dc1.corp.example"),
                "{call:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_directory_exchange_is_never_given_the_events_domain_controller() {
    let mut env = TestEnv::new(vec![seed("nodir1")]).await;
    env.settings.ldap.urls.clear();
    let app = env.start_daemon().await;
    let mut ev = env.joiner("nodir1");
    ev.created_on_server = Some("evil-dc.attacker.example".into());
    env.publisher().await.publish(&ev).await.unwrap();
    env.wait_terminal(&ev.id).await;
    app.stop().await;
    let calls = env.lab.invocations_for("Enable-RemoteMailbox", "nodir1");
    assert!(!calls.is_empty());
    for call in calls {
        assert_eq!(call.parameter("DomainController"), None, "{call:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn identityiq_values_meet_the_same_rules_as_their_json_twins() {
    let env = TestEnv::new(vec![
        seed("kelvin1"),
        seed("kelvin2"),
        seed("dotted1"),
        seed("after2"),
    ])
    .await;
    let app = env.start_daemon().await;
    // U+212A KELVIN SIGN in mailNickname: once it panicked alert::signature and wedged a batch.
    publish(
        &env,
        "ad.user.created",
        &plan(
            "kelvin1",
            "<AttributeRequest name=\"mailNickname\" value=\"\u{212A}elvin\"/>",
        ),
        xml("iiq-kelvin"),
    )
    .await;
    let mut twin = env.joiner("kelvin2");
    twin.alias = Some("\u{212A}elvin".into());
    env.publisher().await.publish(&twin).await.unwrap();
    // A DN that is not one, from an IdentityIQ distinguishedName.
    publish(
        &env,
        "ad.user.created",
        br#"<AccountRequest application="Active Directory" op="Create" nativeIdentity="dotted1">
                 <AttributeRequest name="distinguishedName" value="just some text"/>
               </AccountRequest>"#,
        xml("iiq-bad-dn"),
    )
    .await;

    let iiq = env.wait_poison("iiq-kelvin").await;
    let json = env.wait_poison(&twin.id).await;
    assert!(
        iiq.reason.contains("invalid field mailNickname")
            && iiq.reason.contains("Exchange does not allow in an alias"),
        "{iiq:?}"
    );
    assert!(
        json.reason.contains("invalid field mailbox.alias")
            && json.reason.contains("Exchange does not allow in an alias"),
        "{json:?}"
    );
    let dn = env.wait_poison("iiq-bad-dn").await;
    assert!(
        dn.reason
            .contains("invalid field nativeIdentity or distinguishedName"),
        "{dn:?}"
    );
    for id in ["iiq-kelvin#0", "iiq-bad-dn#0", twin.id.as_str()] {
        assert!(env.store.job_by_event(id).await.unwrap().is_none(), "{id}");
    }
    an_ordinary_joiner_still_succeeds(&env, "after2").await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn identityiq_xml_nested_tens_of_thousands_deep_is_poison_and_the_daemon_keeps_going() {
    let env = TestEnv::new(vec![seed("deep1"), seed("after3")]).await;
    let app = env.start_daemon().await;
    // 36,000 levels: as deep as fits under the 256 KiB limit with closing tags.
    let levels = 36_000;
    let body = format!(
        r#"<ProvisioningPlan><AccountRequest application="Active Directory" op="Create" nativeIdentity="deep1">{}{}</AccountRequest></ProvisioningPlan>"#,
        "<a>".repeat(levels),
        "</a>".repeat(levels)
    );
    assert!(body.len() < mailboxd::event::MAX_MESSAGE_BYTES);
    publish(&env, "ad.user.created", body.as_bytes(), xml("iiq-deep")).await;

    let p = env.wait_poison("iiq-deep").await;
    assert!(p.reason.contains("nest more than 256 levels"), "{p:?}");
    let kept = String::from_utf8_lossy(&p.body);
    assert!(kept.starts_with("[body withheld by mailboxd"), "{kept}");
    an_ordinary_joiner_still_succeeds(&env, "after3").await;
    // The daemon in this process survived: it still answers.
    let health = common::http()
        .get(format!("http://{}/healthz", app.admin_addr))
        .send()
        .await
        .unwrap();
    assert!(health.status().is_success());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nul_bytes_in_headers_reply_to_and_identityiq_values_never_stop_intake() {
    let env = TestEnv::new(vec![seed("nul1"), seed("nul2"), seed("after4")]).await;
    let app = env.start_daemon().await;
    when_a_poison_messages_header_and_message_id_hold_nul(&env).await;
    let ev = when_a_valid_events_reply_to_holds_nul(&env).await;
    when_identityiq_values_hold_nul_raw_and_as_a_reference(&env).await;
    then_the_poison_is_stored_cleaned(&env).await;
    then_the_event_is_processed_and_its_reply_to_refused(&env, &ev).await;
    then_the_identityiq_plans_are_poison(&env).await;
    an_ordinary_joiner_still_succeeds(&env, "after4").await;
    app.stop().await;
}

/// 1. A poison message whose header and message id hold NUL: stored cleaned.
async fn when_a_poison_messages_header_and_message_id_hold_nul(env: &TestEnv) {
    let mut headers = FieldTable::default();
    headers.insert(
        "x-trace\0id".into(),
        AMQPValue::LongString("abc\0def".into()),
    );
    publish(
        env,
        "ad.user.created",
        b"{not json",
        BasicProperties::default()
            .with_content_type("application/json".into())
            .with_message_id("nul-header\0".into())
            .with_headers(headers),
    )
    .await;
}

/// 2. A valid event whose reply_to holds a NUL: processed, the reply_to refused.
async fn when_a_valid_events_reply_to_holds_nul(env: &TestEnv) -> mailboxd::publish::EventSpec {
    let ev = env.joiner("nul1");
    publish(
        env,
        ev.kind.routing_key(),
        ev.to_json().to_string().as_bytes(),
        BasicProperties::default()
            .with_content_type("application/json".into())
            .with_message_id(ev.id.as_str().into())
            .with_reply_to("amq.gen-\0evil".into()),
    )
    .await;
    ev
}

/// 3. An IdentityIQ value with a NUL, as a raw byte and as a character reference.
async fn when_identityiq_values_hold_nul_raw_and_as_a_reference(env: &TestEnv) {
    for (id, alias) in [("iiq-nul-raw", "a\0b"), ("iiq-nul-ref", "a&#0;b")] {
        let attr = format!("<AttributeRequest name=\"mailNickname\" value=\"{alias}\"/>");
        publish(env, "ad.user.created", &plan("nul2", &attr), xml(id)).await;
    }
}

async fn then_the_poison_is_stored_cleaned(env: &TestEnv) {
    let p = env.wait_poison("nul-header\u{FFFD}").await;
    assert!(p.reason.contains("not valid JSON"), "{p:?}");
    assert_eq!(
        p.headers,
        Some(serde_json::json!({"x-trace\u{FFFD}id": "abc\u{FFFD}def"}))
    );
}

async fn then_the_event_is_processed_and_its_reply_to_refused(
    env: &TestEnv,
    ev: &mailboxd::publish::EventSpec,
) {
    let job = env.wait_succeeded(&ev.id).await;
    assert_eq!(job.reply_to, None);
    assert!(
        job.reply_to_refused
            .as_deref()
            .is_some_and(|r| r.contains("not a queue name")),
        "{job:?}"
    );
}

async fn then_the_identityiq_plans_are_poison(env: &TestEnv) {
    for id in ["iiq-nul-raw", "iiq-nul-ref"] {
        let p = env.wait_poison(id).await;
        assert!(
            p.reason.contains("mailNickname") || p.reason.contains("XML"),
            "{p:?}"
        );
    }
    assert!(
        env.store
            .job_by_event("iiq-nul-raw#0")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reply_to_naming_mailboxds_own_queue_is_dropped_and_the_event_still_processed() {
    let env = TestEnv::new(vec![seed("loop1"), seed("after5")]).await;
    let app = env.start_daemon().await;
    let ev = env.joiner("loop1");
    publish(
        &env,
        ev.kind.routing_key(),
        ev.to_json().to_string().as_bytes(),
        BasicProperties::default()
            .with_content_type("application/json".into())
            .with_message_id(ev.id.as_str().into())
            .with_reply_to(env.settings.amqp.queue.as_str().into()),
    )
    .await;
    let job = env.wait_succeeded(&ev.id).await;
    assert_eq!(job.reply_to, None);
    assert!(
        job.reply_to_refused
            .as_deref()
            .is_some_and(|r| r.contains("one of mailboxd's own queues")),
        "{job:?}"
    );
    // An operator sees it on the job.
    let (code, out, err) = env.cli(&["jobs", "show", &job.id.to_string()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("reply_to   refused: \"") && out.contains("one of mailboxd's own queues"),
        "{out}"
    );
    an_ordinary_joiner_still_succeeds(&env, "after5").await;
    // The outcome was not fed back into mailboxd's own queue (it would be poison there).
    assert!(env.store.list_poison(10).await.unwrap().is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn credential_fields_of_a_refused_json_body_are_not_stored() {
    let env = TestEnv::new(vec![seed("after6")]).await;
    let app = env.start_daemon().await;
    let secret = format!("S3cret-{}", env.tag);
    let body = serde_json::json!({
        "schema": "mailboxd.event/v9",
        "id": "cred-1",
        "account": {"sam_account_name": "jdoe", "Password": secret},
        "auth": [{"api_token": secret}, {"nested": {"clientSecret": secret}}]
    });
    publish(
        &env,
        "ad.user.created",
        body.to_string().as_bytes(),
        BasicProperties::default()
            .with_content_type("application/json".into())
            .with_message_id("cred-1".into()),
    )
    .await;
    let p = env.wait_poison("cred-1").await;
    assert!(p.reason.contains("unknown schema"), "{p:?}");
    let kept: serde_json::Value = serde_json::from_slice(&p.body).expect("still JSON");
    assert_eq!(kept["account"]["sam_account_name"], "jdoe");
    an_ordinary_joiner_still_succeeds(&env, "after6").await;
    app.stop().await;
    let everywhere = env.database_text().await;
    let found: Vec<_> = everywhere
        .iter()
        .filter(|(_, v)| v.contains(&secret))
        .collect();
    assert!(found.is_empty(), "the credential is stored: {found:?}");
}

/// lapin decodes header tables by recursion in its own I/O thread: 1,000 nested tables (7 KB)
/// aborted the daemon with the default 2 MiB stack. The binary (not the in-process daemon:
/// this is about the process's thread stacks) must store it as poison and go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn headers_nested_a_thousand_tables_deep_do_not_abort_the_daemon() {
    let env = TestEnv::new(vec![seed("after7")]).await;
    let mut daemon = env.spawn_logged(&[], env.daemon_env()).await;
    assert!(daemon.exit_status().is_none(), "{}", daemon.logs());
    let mut deep = AMQPValue::Boolean(true);
    for _ in 0..1_000 {
        let mut t = FieldTable::default();
        t.insert("d".into(), deep);
        deep = AMQPValue::FieldTable(t);
    }
    let mut headers = FieldTable::default();
    headers.insert("x-deep".into(), deep);
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_message_id("deep-headers".into())
        .with_headers(headers);
    publish(&env, "ad.user.created", b"{not json", props).await;

    let p = env.wait_poison("deep-headers").await;
    assert!(p.reason.contains("not valid JSON"), "{p:?}");
    let kept = p.headers.map(|h| h.to_string()).unwrap_or_default();
    assert!(
        kept.contains("nested deeper than 16 levels: not kept"),
        "{kept}"
    );
    assert!(daemon.exit_status().is_none(), "{}", daemon.logs());
    let ev = env.joiner("after7");
    env.publisher().await.publish(&ev).await.unwrap();
    env.wait_succeeded(&ev.id).await;
    assert!(daemon.exit_status().is_none(), "{}", daemon.logs());
}
