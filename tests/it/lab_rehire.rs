//! Rehires of converted mailboxes: a leaver's remote mailbox is often converted to shared
//! (`Set-RemoteMailbox -Type Shared`). The lab stamps the documented type values and shows
//! Get-RemoteMailbox's RecipientTypeDetails; a joiner for such an account is not "unhidden":
//! it converts it back with `-Type Regular` and says so, and refuses a room or equipment
//! mailbox with what to do. A rehire of a user mailbox that was migrated to Exchange Online
//! stops before Exchange with what to do: the cloud may have purged it, and no licence
//! brings it back (docs/decisions.md, "A rehire of a migrated mailbox").

use crate::common;

use common::{TestEnv, remote};
use lab::RemoteType;
use mailboxd::job::{JobEffect, JobState};

/// msExchRecipientTypeDetails of RemoteUserMailbox and RemoteSharedMailbox (the lab's
/// directory cites the sources).
const REMOTE_USER: i64 = 2_147_483_648;
const REMOTE_SHARED: i64 = 34_359_738_368;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rehire_of_a_mailbox_converted_to_shared_is_converted_back_and_shown() {
    let env = TestEnv::new(vec![
        remote("shared.back").converted(RemoteType::Shared).hidden(),
    ])
    .await;
    // Given the leaver's mailbox as the conversion left it.
    let before = env.mailbox("shared.back");
    assert_eq!(before.msExchRecipientTypeDetails, Some(REMOTE_SHARED));
    assert_eq!(before.msExchRemoteRecipientType, Some(97));
    // When the person is hired again.
    let app = env.start_daemon().await;
    let ev = env.joiner("shared.back");
    env.publisher().await.publish(&ev).await.unwrap();
    let job = env.wait_succeeded(&ev.id).await;
    // Then the outcome says it was converted, and AD shows a visible user mailbox.
    assert_eq!(job.outcome, Some(JobEffect::Converted));
    let after = env.mailbox("shared.back");
    assert_eq!(after.msExchRecipientTypeDetails, Some(REMOTE_USER));
    assert_eq!(after.msExchRemoteRecipientType, Some(1));
    assert_eq!(after.msExchHideFromAddressLists, Some(false));
    let sets = env.lab.invocations_of("Set-RemoteMailbox");
    assert_eq!(sets[0].text("Type"), Some("Regular"), "{sets:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_visible_shared_mailbox_is_converted_too_not_reported_already() {
    let env = TestEnv::new(vec![remote("shared.vis").converted(RemoteType::Shared)]).await;
    let app = env.start_daemon().await;
    let ev = env.joiner("shared.vis");
    env.publisher().await.publish(&ev).await.unwrap();
    let job = env.wait_succeeded(&ev.id).await;
    assert_eq!(job.outcome, Some(JobEffect::Converted));
    assert_eq!(
        env.mailbox("shared.vis").msExchRecipientTypeDetails,
        Some(REMOTE_USER)
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_joiner_on_a_room_mailbox_fails_once_with_what_to_do() {
    let env = TestEnv::new(vec![remote("room.1").converted(RemoteType::Room)]).await;
    let app = env.start_daemon().await;
    let ev = env.joiner("room.1");
    env.publisher().await.publish(&ev).await.unwrap();
    let job = env.wait_terminal(&ev.id).await;
    assert_eq!(job.state, JobState::Failed, "{job:?}");
    assert_eq!(job.attempt, 1, "permanent: no retry: {job:?}");
    let error = job.last_error.unwrap_or_default();
    assert!(error.contains("RemoteRoomMailbox"), "{error}");
    assert!(error.contains("-Type Regular"), "{error}");
    // Nothing was changed on the resource.
    assert!(env.lab.invocations_of("Set-RemoteMailbox").is_empty());
    assert_eq!(
        env.mailbox("room.1").msExchRecipientTypeDetails,
        Some(8_589_934_592)
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rehire_of_a_migrated_mailbox_stops_before_exchange_with_what_to_do() {
    let env = TestEnv::new(vec![
        remote("moved.back").migrated().hidden(),
        remote("made.back").hidden(),
    ])
    .await;
    // Given a leaver's mailbox a move request took to Exchange Online, and one that
    // Enable-RemoteMailbox made there.
    assert_eq!(env.mailbox("moved.back").msExchRemoteRecipientType, Some(4));
    assert_eq!(env.mailbox("made.back").msExchRemoteRecipientType, Some(1));
    // When both people are hired again.
    let app = env.start_daemon().await;
    let moved = env.joiner("moved.back");
    let made = env.joiner("made.back");
    env.publisher().await.publish(&moved).await.unwrap();
    env.publisher().await.publish(&made).await.unwrap();
    // Then the migrated one fails once, saying what to check and do, and Exchange was not
    // asked to change it: it stays hidden.
    let job = env.wait_terminal(&moved.id).await;
    assert_eq!(job.state, JobState::Failed, "{job:?}");
    assert_eq!(job.attempt, 1, "permanent: no retry: {job:?}");
    let error = job.last_error.unwrap_or_default();
    assert!(error.contains("Migrated"), "{error}");
    assert!(error.contains("Get-Mailbox"), "{error}");
    assert!(
        error.contains("-HiddenFromAddressListsEnabled $false"),
        "{error}"
    );
    assert_eq!(
        env.mailbox("moved.back").msExchHideFromAddressLists,
        Some(true)
    );
    // And the other rehire is made visible as before.
    let job = env.wait_succeeded(&made.id).await;
    assert_eq!(job.outcome, Some(JobEffect::Unhidden));
    let changed: Vec<String> = ["Enable-RemoteMailbox", "Set-RemoteMailbox"]
        .into_iter()
        .flat_map(|c| env.lab.invocations_of(c))
        .filter_map(|i| i.identity().map(str::to_owned))
        .collect();
    let made_guid = env.mailbox("made.back").object_guid.to_string();
    assert!(!changed.is_empty(), "the other rehire reached Exchange");
    assert!(changed.iter().all(|id| *id == made_guid), "{changed:?}");
    app.stop().await;
}
