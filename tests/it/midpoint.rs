//! midPoint's asynchronous provisioning through the real broker, database, lab and daemon
//! (issue 34): its documented `simplifiedJson` requests (tests/data/midpoint), published on
//! one routing key for every operation as its JMS path does, become the right jobs — the
//! body decides joiner or leaver — plain and wrapped as AMQP 1.0 (`type` `amqp-1.0`); a
//! modification that is nothing for mailboxd is kept as poison with its reason.

use crate::common;

use common::{TestEnv, remote, seed};
use lab::Recipient;
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use mailboxd::job::JobEffect;

/// The one routing key midPoint's JMS destination publishes every operation with.
const FIXED_KEY: &str = "ad.user.created";

fn sample(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/midpoint/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Publishes `body` on the fixed key with the broker's confirm, as a JMS text message
/// arrives: no content type, a message id.
async fn publish(env: &TestEnv, body: &[u8], props: BasicProperties) {
    let _topology = env.publisher().await;
    let conn = mailboxd::broker::connect(&env.settings.amqp.url, "test midPoint sender")
        .await
        .expect("RabbitMQ answers");
    let ch = conn.create_channel().await.expect("a channel");
    let exchange = env.settings.amqp.exchange.as_str();
    let options = BasicPublishOptions::default();
    let props = props.with_delivery_mode(2);
    ch.basic_publish(exchange.into(), FIXED_KEY.into(), options, body, props)
        .await
        .expect("published")
        .await
        .expect("confirmed");
}

fn with_id(message_id: &str) -> BasicProperties {
    BasicProperties::default().with_message_id(message_id.into())
}

/// `text` as AMQP 1.0 sections: a header (durable), properties whose message-id is
/// `message_id`, and an `amqp-value` string (OASIS AMQP 1.0 part 3, 3.2).
fn amqp10(text: &[u8], message_id: &str) -> Vec<u8> {
    let mut out = vec![0x00, 0x53, 0x70, 0xc0, 0x02, 0x01, 0x41];
    let id = message_id.len() as u8;
    out.extend([0x00, 0x53, 0x73, 0xc0, id + 3, 0x01, 0xa1, id]);
    out.extend(message_id.as_bytes());
    out.extend([0x00, 0x53, 0x77, 0xb1]);
    out.extend((text.len() as u32).to_be_bytes());
    out.extend(text);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_documented_add_on_the_fixed_key_enables_the_joiner() {
    // Given an account midPoint created, and the daemon.
    let env = TestEnv::new(vec![seed("jack")]).await;
    let app = env.start_daemon().await;
    // When midPoint's documented add arrives.
    publish(&env, &sample("add.json"), with_id("ID:mp-add-1")).await;
    // Then the joiner got its remote mailbox.
    let job = env.wait_succeeded("ID:mp-add-1").await;
    assert_eq!(job.outcome, Some(JobEffect::Enabled));
    assert_eq!(env.mailbox("jack").recipient, Recipient::Remote);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_disabling_modify_on_the_same_key_hides_the_leaver() {
    // Given a disabled account with a remote mailbox.
    let env = TestEnv::new(vec![remote("jack").disabled()]).await;
    let app = env.start_daemon().await;
    // When midPoint's modify sets administrativeStatus to disabled, on the joiners' key.
    publish(&env, &sample("modify-disable.json"), with_id("ID:mp-off-1")).await;
    // Then it was a leaver: the mailbox is hidden.
    let job = env.wait_succeeded("ID:mp-off-1").await;
    assert_eq!(job.outcome, Some(JobEffect::Hidden));
    assert_eq!(env.mailbox("jack").msExchHideFromAddressLists, Some(true));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_modify_that_enables_the_account_again_shows_the_rehire_its_mailbox() {
    // Given a rehired account (enabled again in AD) whose remote mailbox the leaver hid.
    let env = TestEnv::new(vec![remote("jack").hidden()]).await;
    let app = env.start_daemon().await;
    // When midPoint's modify sets administrativeStatus back to enabled, on the same key.
    let enabled =
        String::from_utf8_lossy(&sample("modify-disable.json")).replace("disabled", "enabled");
    publish(&env, enabled.as_bytes(), with_id("ID:mp-on-1")).await;
    // Then it was a joiner: the mailbox is in the address lists again.
    let job = env.wait_succeeded("ID:mp-on-1").await;
    assert_eq!(job.outcome, Some(JobEffect::Unhidden));
    assert_eq!(env.mailbox("jack").msExchHideFromAddressLists, Some(false));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_modify_is_kept_as_poison_with_its_reason() {
    // Given the daemon.
    let env = TestEnv::new(vec![seed("jack")]).await;
    let app = env.start_daemon().await;
    // When midPoint's documented modify of the full name arrives.
    publish(
        &env,
        &sample("modify-full-name.json"),
        with_id("ID:mp-mod-1"),
    )
    .await;
    // Then no job: the refusal names what changed and what would have counted.
    let poison = env.wait_poison("ID:mp-mod-1").await;
    assert!(
        poison.reason.contains("midPoint request refused"),
        "{}",
        poison.reason
    );
    assert!(poison.reason.contains("fullName"), "{}", poison.reason);
    assert!(
        poison.reason.contains("administrativeStatus"),
        "{}",
        poison.reason
    );
    assert!(
        env.store
            .job_by_event("ID:mp-mod-1")
            .await
            .unwrap()
            .is_none()
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_add_wrapped_as_amqp_1_0_enables_the_joiner() {
    // Given an account, and the add as RabbitMQ hands on a message sent over AMQP 1.0.
    let env = TestEnv::new(vec![seed("jack")]).await;
    let app = env.start_daemon().await;
    let body = amqp10(&sample("add.json"), "ID:mp-amqp10-1");
    // When it arrives with type amqp-1.0 and no 0-9-1 message id.
    let props = BasicProperties::default().with_type("amqp-1.0".into());
    publish(&env, &body, props).await;
    // Then the id is the AMQP 1.0 message-id, and the joiner got its mailbox.
    let job = env.wait_succeeded("ID:mp-amqp10-1").await;
    assert_eq!(job.outcome, Some(JobEffect::Enabled));
    assert_eq!(env.mailbox("jack").recipient, Recipient::Remote);
    app.stop().await;
}

/// Sends `files` (message id, sample name) through RabbitMQ's AMQP 1.0 plugin with Apache
/// Qpid Proton (tests/peers/amqp10_send.py) to the event exchange on the fixed key: the path
/// midPoint takes with an AMQP 1.0 JMS client. Fails, never skips, without the client.
async fn send_over_amqp10(env: &TestEnv, files: &[(&str, &str)]) {
    let have = std::process::Command::new("python3")
        .args(["-c", "import proton"])
        .status();
    assert!(
        have.is_ok_and(|s| s.success()),
        "Apache Qpid Proton (python-qpid-proton) is missing: deploy/dev/services.sh installs it"
    );
    let url = url::Url::parse(&env.settings.amqp.url).expect("the test's AMQP URL");
    let mut args = vec![
        format!("{}/tests/peers/amqp10_send.py", env!("CARGO_MANIFEST_DIR")),
        url.host_str().unwrap_or("127.0.0.1").to_owned(),
        url.port().unwrap_or(5672).to_string(),
        env.settings.amqp.exchange.clone(),
        FIXED_KEY.to_owned(),
    ];
    for (id, name) in files {
        let path = format!("{}/tests/data/midpoint/{name}", env!("CARGO_MANIFEST_DIR"));
        args.push(format!("{id}={path}"));
    }
    let user = url.username().to_owned();
    let password = url.password().unwrap_or("").to_owned();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args(args)
            .env("AMQP_USER", user)
            .env("AMQP_PASSWORD", password)
            .output()
            .expect("python3 runs")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "amqp10_send.py failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_add_sent_by_an_amqp_1_0_client_through_rabbitmq_enables_the_joiner() {
    // Given an account midPoint created, and the daemon.
    let env = TestEnv::new(vec![seed("jack")]).await;
    let _topology = env.publisher().await;
    let app = env.start_daemon().await;
    // When midPoint's add is sent by a real AMQP 1.0 client through RabbitMQ's AMQP 1.0
    // plugin on the fixed key (the broker hands the 0-9-1 consumer the AMQP 1.0 sections,
    // `type` amqp-1.0), as a JMS TextMessage over AMQP 1.0 travels.
    send_over_amqp10(&env, &[("ID:qpid-add-1", "add.json")]).await;
    // Then the body decided: the joiner got its mailbox, keyed on the JMS message id.
    let joiner = env.wait_succeeded("ID:qpid-add-1").await;
    assert_eq!(joiner.outcome, Some(JobEffect::Enabled));
    assert_eq!(env.mailbox("jack").recipient, Recipient::Remote);
    app.stop().await;
}
