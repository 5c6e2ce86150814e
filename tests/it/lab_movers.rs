//! Movers through the real daemon and the lab: a rename under Exchange's email address
//! policy ends with the policy's new primary (numbered past a colleague's), the old one kept
//! as a secondary `smtp:` address; without the policy mailboxd sets the primary itself and
//! the old one stays a proxy address; the remote routing address follows the new alias in
//! the tenant's domain either way, and the outcome carries the addresses before and after.

use crate::common;

use common::outcomes::wait_all_sent;
use common::{TestEnv, remote};
use lab::AccountSeed;
use mailboxd::event::{EventKind, Rename};
use mailboxd::job::{JobEffect, JobState};
use mailboxd::publish::EventSpec;

const TENANT: &str = "tenant.mail.onmicrosoft.com";

/// A remote mailbox whose account has a given name and surname (for the address policy).
fn person(sam: &str, given: &str, surname: &str) -> AccountSeed {
    AccountSeed {
        given_name: Some(given.into()),
        surname: Some(surname.into()),
        ..remote(sam)
    }
}

fn mover(env: &TestEnv, sam: &str, rename: Rename) -> EventSpec {
    let mut ev = env.joiner(sam);
    ev.kind = EventKind::Mover;
    ev.rename = Some(rename);
    ev
}

/// The account's proxy addresses, as AD shows them.
fn proxies(env: &TestEnv, sam: &str) -> Vec<String> {
    env.mailbox(sam).proxy_addresses
}

fn assert_valid_outcome(body: &serde_json::Value) {
    let docs = [body.to_string().into_bytes()];
    let verdict = &common::schema::verdicts("outcome.schema.json", &docs)[0];
    assert!(verdict.valid, "{:?}\n{body:#}", verdict.errors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_the_policy_a_rename_gets_the_policys_next_address_and_keeps_the_old_one() {
    // Given Jane Smith's remote mailbox, and a colleague who holds Jane.Mueller@ already.
    let mut env = TestEnv::new(vec![
        person("jsmith.1", "Jane", "Smith"),
        remote("Jane.Mueller"),
    ])
    .await;
    let outcomes = env.expect_outcomes().await;
    let app = env.start_daemon().await;
    // When the IAM system renames her in AD (sn Müller) and sends the mover.
    assert!(env.lab.rename_person("jsmith.1", "Jane", "Müller"));
    let ev = mover(
        &env,
        "jsmith.1",
        Rename {
            alias: Some("jmueller.1".into()),
            user_principal_name: Some("jane.mueller@corp.example".into()),
            primary_smtp_address: Some("ignored.under.policy@corp.example".into()),
        },
    );
    env.publisher().await.publish(&ev).await.unwrap();
    let job = env.wait_succeeded(&ev.id).await;
    assert_eq!(job.outcome, Some(JobEffect::Renamed));
    // Then Set-RemoteMailbox got the alias, UPN and routing address, never a primary address.
    let sets = env.lab.invocations_for("Set-RemoteMailbox", "jsmith.1");
    assert_eq!(sets.len(), 1, "{sets:?}");
    assert_eq!(sets[0].text("Alias"), Some("jmueller.1"));
    assert_eq!(
        sets[0].text("UserPrincipalName"),
        Some("jane.mueller@corp.example")
    );
    let routing = format!("jmueller.1@{TENANT}");
    assert_eq!(sets[0].text("RemoteRoutingAddress"), Some(routing.as_str()));
    assert_eq!(sets[0].parameter("PrimarySmtpAddress"), None);
    // And AD shows the policy's address (numbered, transliterated), the old one kept.
    let after = env.mailbox("jsmith.1");
    assert_eq!(
        after.primary_smtp_address.as_deref(),
        Some("Jane.Mueller2@corp.example")
    );
    assert_eq!(after.targetAddress, Some(format!("SMTP:{routing}")));
    assert_eq!(
        after.msExchPoliciesExcluded, None,
        "the policy still applies"
    );
    let all = proxies(&env, "jsmith.1");
    for want in [
        "SMTP:Jane.Mueller2@corp.example".to_owned(),
        "smtp:jsmith.1@corp.example".to_owned(),
        format!("smtp:{routing}"),
    ] {
        assert!(all.contains(&want), "{want} in {all:?}");
    }
    // And the outcome carries the addresses before and after, in the documented schema.
    wait_all_sent(&env.store, 1).await;
    let got = outcomes.drain().await;
    assert_eq!(got[0].routing_key, "mover.succeeded");
    let body = &got[0].body;
    assert_eq!(body["outcome"], "renamed");
    assert_eq!(
        body["mailbox_before"]["primary_smtp_address"],
        "jsmith.1@corp.example"
    );
    assert_eq!(
        body["mailbox"]["primary_smtp_address"],
        "Jane.Mueller2@corp.example"
    );
    assert_eq!(body["mailbox"]["remote_routing_address"], routing.as_str());
    assert_eq!(
        body["account"]["user_principal_name"],
        "jane.mueller@corp.example"
    );
    assert_valid_outcome(body);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_the_policy_mailboxd_sets_the_primary_and_hostile_values_stay_data() {
    // Given a remote mailbox the address policy does not apply to.
    let mut env = TestEnv::new(vec![remote("bo.1").without_address_policy()]).await;
    let outcomes = env.expect_outcomes().await;
    let app = env.start_daemon().await;
    // When a mover with quotes, dollars and backticks in its values arrives.
    let alias = "o'neil$x`{1}";
    let primary = "o'neil$x`{1}@corp.example";
    let ev = mover(
        &env,
        "bo.1",
        Rename {
            alias: Some(alias.into()),
            primary_smtp_address: Some(primary.into()),
            ..Rename::default()
        },
    );
    env.publisher().await.publish(&ev).await.unwrap();
    let job = env.wait_succeeded(&ev.id).await;
    assert_eq!(job.outcome, Some(JobEffect::Renamed));
    // Then one call sets the primary, a second adds the new routing address (the two cannot
    // share a command), each value exactly as sent.
    let sets = env.lab.invocations_for("Set-RemoteMailbox", "bo.1");
    assert_eq!(sets.len(), 2, "{sets:?}");
    assert_eq!(sets[0].text("PrimarySmtpAddress"), Some(primary));
    assert_eq!(sets[0].text("Alias"), Some(alias));
    assert_eq!(sets[0].parameter("EmailAddresses"), None);
    let routing = format!("{alias}@{TENANT}");
    assert_eq!(
        sets[1].parameter("EmailAddresses").map(ToString::to_string),
        Some(serde_json::json!({ "Add": [format!("smtp:{routing}")] }).to_string())
    );
    // And AD shows the new primary, the old one as a proxy address, the new routing.
    let after = env.mailbox("bo.1");
    assert_eq!(after.primary_smtp_address.as_deref(), Some(primary));
    assert_eq!(after.mailNickname.as_deref(), Some(alias));
    assert_eq!(after.targetAddress, Some(format!("SMTP:{routing}")));
    let all = proxies(&env, "bo.1");
    assert_eq!(all[0], format!("SMTP:{primary}"));
    assert!(
        all.contains(&"smtp:bo.1@corp.example".to_owned()),
        "{all:?}"
    );
    assert!(all.contains(&format!("smtp:{routing}")), "{all:?}");
    assert!(after.msExchPoliciesExcluded.is_some(), "still off");
    // And the outcome says so, before and after.
    wait_all_sent(&env.store, 1).await;
    let body = &outcomes.drain().await[0].body;
    assert_eq!(
        body["mailbox_before"]["primary_smtp_address"],
        "bo.1@corp.example"
    );
    assert_eq!(body["mailbox"]["primary_smtp_address"], primary);
    assert_valid_outcome(body);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_primary_alone_under_the_policy_fails_once_with_what_to_do() {
    let mut env = TestEnv::new(vec![remote("eap.1"), AccountSeed::user("plain.2")]).await;
    let outcomes = env.expect_outcomes().await;
    let app = env.start_daemon().await;
    let publisher = env.publisher().await;
    let only_primary = Rename {
        primary_smtp_address: Some("new.name@corp.example".into()),
        ..Rename::default()
    };
    // When a mover asks the policy's recipient for a primary only, and a user without a
    // mailbox for a new alias.
    let asked = mover(&env, "eap.1", only_primary);
    publisher.publish(&asked).await.unwrap();
    let no_mailbox = mover(
        &env,
        "plain.2",
        Rename {
            alias: Some("p2".into()),
            ..Rename::default()
        },
    );
    publisher.publish(&no_mailbox).await.unwrap();
    // Then each fails on its first attempt, before Exchange is asked, saying what to do.
    for (ev, says) in [
        (&asked, "turn the policy off"),
        (&no_mailbox, "send a joiner first"),
    ] {
        let job = env.wait_terminal(&ev.id).await;
        assert_eq!((job.state, job.attempt), (JobState::Failed, 1), "{job:?}");
        let error = job.last_error.unwrap_or_default();
        assert!(error.contains(says), "{error}");
    }
    assert!(env.lab.invocations_of("Set-RemoteMailbox").is_empty());
    wait_all_sent(&env.store, 2).await;
    for got in outcomes.drain().await {
        assert_eq!(got.routing_key, "mover.failed");
        assert_valid_outcome(&got.body);
    }
    app.stop().await;
}
