//! Shared, room and equipment remote mailboxes, and leavers kept as shared mailboxes, through
//! the real daemon and the lab: `mailbox.type` picks Enable-RemoteMailbox's parameter set
//! (the lab binds it as PowerShell does and records the call), AD shows the documented type
//! values afterwards, `leaver.action = "shared"` converts with `Set-RemoteMailbox -Type
//! Shared` and the outcome says the licence may go, and a rehire converts it back.

use crate::common;

use common::outcomes::wait_all_sent;
use common::{TestEnv, remote, seed};
use lab::RemoteType;
use mailboxd::config::{ExchangeAttributes, LeaverAction};
use mailboxd::event::MailboxType;
use mailboxd::job::{JobEffect, JobState};

/// msExchRecipientTypeDetails and msExchRemoteRecipientType of each remote type
/// (docs/operations.md, "Shared, room and equipment mailboxes"; the lab's directory cites
/// the sources).
const USER: (i64, i64) = (2_147_483_648, 1);
const ROOM: (i64, i64) = (8_589_934_592, 33);
const EQUIPMENT: (i64, i64) = (17_179_869_184, 65);
const SHARED: (i64, i64) = (34_359_738_368, 97);

const SWITCHES: [&str; 3] = ["Room", "Equipment", "Shared"];

/// The (type details, remote recipient type) AD shows for `sam`.
fn types_in_ad(env: &TestEnv, sam: &str) -> (i64, i64) {
    let a = env.mailbox(sam);
    (
        a.msExchRecipientTypeDetails.unwrap_or_default(),
        a.msExchRemoteRecipientType.unwrap_or_default(),
    )
}

/// The parameter set switches the account's Enable-RemoteMailbox call carried.
fn switches_sent(env: &TestEnv, sam: &str) -> Vec<&'static str> {
    let calls = env.lab.invocations_for("Enable-RemoteMailbox", sam);
    assert_eq!(calls.len(), 1, "{calls:?}");
    SWITCHES
        .into_iter()
        .filter(|s| calls[0].flag(s) == Some(true))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_room_an_equipment_and_a_shared_mailbox_are_made_in_their_own_parameter_sets() {
    let env = TestEnv::new(vec![seed("room.1"), seed("van.1"), seed("desk.1")]).await;
    let app = env.start_daemon().await;
    let publisher = env.publisher().await;
    // When the IAM system asks for a room, an equipment and a shared mailbox.
    let asked = [
        ("room.1", MailboxType::Room, "Room", ROOM),
        ("van.1", MailboxType::Equipment, "Equipment", EQUIPMENT),
        ("desk.1", MailboxType::Shared, "Shared", SHARED),
    ];
    for (sam, kind, switch, in_ad) in asked {
        let mut ev = env.joiner(sam);
        ev.mailbox_type = Some(kind);
        publisher.publish(&ev).await.unwrap();
        // Then each is enabled with its own switch alone, and verified as that type in AD.
        let job = env.wait_succeeded(&ev.id).await;
        assert_eq!(job.outcome, Some(JobEffect::Enabled), "{sam}");
        assert_eq!(switches_sent(&env, sam), [switch], "{sam}");
        assert_eq!(types_in_ad(&env, sam), in_ad, "{sam}");
        assert!(!env.mailbox(sam).hidden, "{sam}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_v1_joiner_without_a_type_still_makes_a_user_mailbox() {
    let env = TestEnv::new(vec![seed("plain.1")]).await;
    let app = env.start_daemon().await;
    let ev = env.joiner("plain.1");
    assert!(ev.to_json()["mailbox"].get("type").is_none(), "a v1 event");
    env.publisher().await.publish(&ev).await.unwrap();
    let job = env.wait_succeeded(&ev.id).await;
    assert_eq!(job.outcome, Some(JobEffect::Enabled));
    assert!(switches_sent(&env, "plain.1").is_empty(), "the Default set");
    assert_eq!(types_in_ad(&env, "plain.1"), USER);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_user_mailbox_becomes_the_room_asked_for_but_a_room_is_never_converted_away() {
    let env = TestEnv::new(vec![
        remote("was.user"),
        remote("is.room").converted(RemoteType::Room),
    ])
    .await;
    let app = env.start_daemon().await;
    let publisher = env.publisher().await;
    // A joiner asks for a room where a user mailbox exists: converted with -Type Room.
    let mut to_room = env.joiner("was.user");
    to_room.mailbox_type = Some(MailboxType::Room);
    publisher.publish(&to_room).await.unwrap();
    let job = env.wait_succeeded(&to_room.id).await;
    assert_eq!(job.outcome, Some(JobEffect::Converted));
    let sets = env.lab.invocations_for("Set-RemoteMailbox", "was.user");
    assert_eq!(sets[0].text("Type"), Some("Room"), "{sets:?}");
    assert_eq!(types_in_ad(&env, "was.user"), ROOM);
    // A joiner asks for a shared mailbox where a room exists: one failure, with what to do,
    // and Exchange is not even asked.
    let mut to_shared = env.joiner("is.room");
    to_shared.mailbox_type = Some(MailboxType::Shared);
    publisher.publish(&to_shared).await.unwrap();
    let job = env.wait_terminal(&to_shared.id).await;
    assert_eq!((job.state, job.attempt), (JobState::Failed, 1), "{job:?}");
    let error = job.last_error.unwrap_or_default();
    assert!(
        error.contains("RemoteRoomMailbox") && error.contains("-Type Shared"),
        "{error}"
    );
    assert!(
        env.lab
            .invocations_for("Enable-RemoteMailbox", "is.room")
            .is_empty()
    );
    assert_eq!(types_in_ad(&env, "is.room"), ROOM);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leaver_under_the_shared_policy_ends_shared_and_a_rehire_turns_it_back() {
    let mut env = TestEnv::new(vec![remote("leaves.1").disabled()]).await;
    env.settings.leaver.action = LeaverAction::Shared;
    let outcomes = env.expect_outcomes().await;
    let app = env.start_daemon().await;
    let publisher = env.publisher().await;
    // When the person leaves.
    let leaver = env.leaver("leaves.1");
    publisher.publish(&leaver).await.unwrap();
    let job = env.wait_succeeded(&leaver.id).await;
    // Then one Set-RemoteMailbox made it a hidden shared mailbox, as AD shows.
    assert_eq!(job.outcome, Some(JobEffect::Shared));
    let sets = env.lab.invocations_for("Set-RemoteMailbox", "leaves.1");
    assert_eq!(sets.len(), 1, "{sets:?}");
    assert_eq!(sets[0].text("Type"), Some("Shared"));
    assert_eq!(sets[0].flag("HiddenFromAddressListsEnabled"), Some(true));
    assert_eq!(types_in_ad(&env, "leaves.1"), SHARED);
    assert_eq!(
        env.mailbox("leaves.1").msExchHideFromAddressLists,
        Some(true)
    );
    // And the IAM system is told the licence may go now.
    wait_all_sent(&env.store, 1).await;
    let got = outcomes.drain().await;
    assert_eq!(got[0].routing_key, "leaver.succeeded");
    assert_eq!(got[0].body["outcome"], "shared");
    assert_eq!(got[0].body["mailbox"]["mailbox_type"], "shared");
    assert_eq!(got[0].body["licence_removable"], true, "{:#}", got[0].body);
    assert_eq!(got[0].body["in_the_cloud"]["state"], "next_sync");
    let body = [got[0].body.to_string().into_bytes()];
    let verdict = &common::schema::verdicts("outcome.schema.json", &body)[0];
    assert!(verdict.valid, "{:?}", verdict.errors);
    // When the person is hired again (enabled in AD first), the joiner converts it back.
    enable_in_ad(&env, "leaves.1").await;
    let rehire = env.joiner("leaves.1");
    publisher.publish(&rehire).await.unwrap();
    let job = env.wait_succeeded(&rehire.id).await;
    assert_eq!(job.outcome, Some(JobEffect::Converted));
    assert_eq!(types_in_ad(&env, "leaves.1"), USER);
    assert!(!env.mailbox("leaves.1").hidden, "visible again");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shared_leaver_may_stay_in_the_address_lists_and_a_room_is_only_hidden() {
    let mut env = TestEnv::new(vec![
        remote("stays.1").disabled(),
        remote("room.2").converted(RemoteType::Room).disabled(),
    ])
    .await;
    env.settings.leaver.action = LeaverAction::Shared;
    env.settings.leaver.hide_shared = false;
    let app = env.start_daemon().await;
    let publisher = env.publisher().await;
    let (person, room) = (env.leaver("stays.1"), env.leaver("room.2"));
    publisher.publish(&person).await.unwrap();
    publisher.publish(&room).await.unwrap();
    let job = env.wait_succeeded(&person.id).await;
    assert_eq!(job.outcome, Some(JobEffect::Shared));
    assert_eq!(types_in_ad(&env, "stays.1"), SHARED);
    assert!(!env.mailbox("stays.1").hidden, "left in the address lists");
    let job = env.wait_succeeded(&room.id).await;
    assert_eq!(job.outcome, Some(JobEffect::Hidden));
    assert_eq!(types_in_ad(&env, "room.2"), ROOM);
    assert!(env.mailbox("room.2").hidden, "hidden, not converted");
    app.stop().await;
}

/// Clears ACCOUNTDISABLE on the lab's domain controller, as an administrator re-enabling a
/// rehire's account does (userAccountControl 512: a normal, enabled account).
async fn enable_in_ad(env: &TestEnv, sam: &str) {
    use secrecy::ExposeSecret;
    let url = env.lab.ldap_url().expect("the lab serves LDAP");
    let (conn, mut ldap) = ldap3::LdapConnAsync::new(&url)
        .await
        .expect("LDAP connects");
    ldap3::drive!(conn);
    let password = env
        .settings
        .ldap
        .password
        .as_ref()
        .expect("a bind password");
    ldap.simple_bind(&env.settings.ldap.bind_dn, password.expose_secret())
        .await
        .and_then(|r| r.success())
        .expect("bind");
    let dn = env.mailbox(sam).distinguished_name;
    let uac = ldap3::Mod::Replace("userAccountControl", ["512"].into());
    ldap.modify(&dn, vec![uac])
        .await
        .and_then(|r| r.success())
        .expect("userAccountControl replaced");
    assert!(!env.mailbox(sam).disabled);
}

/// A tenant that manages Exchange attributes in the cloud: the hide stays on premises, and
/// the leaver's outcome tells the IAM system to make it in Exchange Online.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leaver_in_a_cloud_managed_tenant_is_told_to_hide_it_in_exchange_online() {
    let mut env = TestEnv::new(vec![remote("leaves.3").disabled()]).await;
    env.settings.leaver.exchange_attributes = ExchangeAttributes::Cloud;
    let outcomes = env.expect_outcomes().await;
    let app = env.start_daemon().await;
    let leaver = env.leaver("leaves.3");
    env.publisher().await.publish(&leaver).await.unwrap();
    let job = env.wait_succeeded(&leaver.id).await;
    assert_eq!(job.outcome, Some(JobEffect::Hidden));
    assert_eq!(
        env.mailbox("leaves.3").msExchHideFromAddressLists,
        Some(true)
    );
    wait_all_sent(&env.store, 1).await;
    let got = outcomes.drain().await;
    let cloud = &got[0].body["in_the_cloud"];
    assert_eq!(cloud["state"], "cloud_managed", "{:#}", got[0].body);
    let note = cloud["note"].as_str().unwrap();
    assert!(
        note.contains("Set-Mailbox -HiddenFromAddressListsEnabled $true"),
        "{note}"
    );
    let body = [got[0].body.to_string().into_bytes()];
    let verdict = &common::schema::verdicts("outcome.schema.json", &body)[0];
    assert!(verdict.valid, "{:?}", verdict.errors);
    app.stop().await;
}
