//! Accounts found by what the sender has (issue 34): events that name an account by its
//! distinguishedName, objectGUID or userPrincipalName instead of its sAMAccountName find it
//! on the real Samba AD DC (`deploy/dev/samba-ad.sh`), are keyed on its objectGUID once
//! found, and so supersede each other as one account whichever name each used; a name that
//! finds nothing or two accounts fails with what to do; hostile values stay data.

use crate::common;

use chrono::{TimeDelta, Utc};
use common::TestEnv;
use common::ad::{TestAd, User};
use mailboxd::job::{ErrorClass, JobEffect, JobState};
use serde_json::{Value, json};

fn tag() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
}

/// A `mailboxd.event/v1` event naming its account by `account` alone (no sAMAccountName),
/// `minutes_ago` before now.
fn event(kind: &str, account: Value, minutes_ago: i64) -> (String, Vec<u8>) {
    let id = uuid::Uuid::new_v4().to_string();
    let at = Utc::now() - TimeDelta::minutes(minutes_ago);
    let body = json!({
        "schema": "mailboxd.event/v1", "id": id, "type": kind,
        "occurred_at": at.to_rfc3339(), "account": account, "source": "account-lookup-test",
    });
    (id, body.to_string().into_bytes())
}

/// The daemon checking accounts on the Samba DC (the lab stands in for Exchange only).
async fn given_a_daemon_on_the_dc(ad: &TestAd) -> TestEnv {
    let mut env = TestEnv::new(Vec::new()).await;
    env.settings.ldap = ad.settings();
    env
}

async fn publish(env: &TestEnv, kind: &str, body: &[u8]) {
    let key = format!(
        "ad.user.{}",
        if kind == "joiner" {
            "created"
        } else {
            "disabled"
        }
    );
    env.publisher()
        .await
        .publish_raw(&key, body, Some("application/json"), None)
        .await
        .expect("published");
}

/// One disabled account without a mailbox (a leaver has nothing to hide: `not_remote`,
/// no Exchange call), named three ways by three events stored before any worker runs: a
/// joiner by DN, a joiner by UPN, then the newest, a leaver by objectGUID. Whatever order
/// the worker reads them in, the two older ones find the account, are keyed on its
/// objectGUID and superseded by the leaver; the leaver alone runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_naming_one_account_by_dn_upn_and_guid_supersede_each_other_as_one() {
    let ad = TestAd::get();
    let t = tag();
    let upn = format!("Ann.Lookup{t}@corp.example");
    let user = User {
        disabled: true,
        upn: Some(upn.clone()),
        ..User::default()
    };
    let (dn, guid) = ad
        .add_user(&format!("Ann Lookup {t}"), &format!("al{t}"), &user)
        .await;
    let env = given_a_daemon_on_the_dc(&ad).await;

    let (by_dn, dn_body) = event("joiner", json!({ "distinguished_name": dn }), 3);
    let (by_upn, upn_body) = event("joiner", json!({ "user_principal_name": upn }), 2);
    let (by_guid, guid_body) = event("leaver", json!({ "object_guid": guid.to_string() }), 1);
    let events: Vec<_> = [&dn_body, &upn_body, &guid_body]
        .iter()
        .map(|b| mailboxd::event::parse(b, None, None, "").expect("a valid event"))
        .collect();
    env.store.insert_events(&events, 5).await.expect("stored");
    let app = env.start_daemon().await;

    let leaver = env.wait_succeeded(&by_guid).await;
    assert_eq!(leaver.outcome, Some(JobEffect::NotRemote));
    for older in [&by_dn, &by_upn] {
        let job = env.wait_terminal(older).await;
        assert_eq!(job.state, JobState::Superseded, "{job:?}");
        assert_eq!(job.superseded_by, Some(leaver.id), "{job:?}");
        // Shown from then on under the name AD gives it.
        assert_eq!(job.account, format!("al{t}"), "{job:?}");
    }
    app.stop().await;
}

/// The other way round, through the broker: a joiner named by UPN is found, keyed on the
/// objectGUID and waits for the cloud sync; a newer leaver naming the account by its DN
/// (escaped: `,` and `(` in the CN) is keyed on the same objectGUID once read and
/// supersedes the waiting joiner, then runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_newer_event_by_dn_supersedes_a_waiting_joiner_named_by_upn() {
    let ad = TestAd::get();
    let t = tag();
    let upn = format!("doe.j{t}@corp.example");
    let user = User {
        upn: Some(upn.clone()),
        ..User::default()
    };
    let (dn, _) = ad
        .add_user(&format!("Doe\\, J (x{t})"), &format!("dj{t}"), &user)
        .await;
    let mut env = given_a_daemon_on_the_dc(&ad).await;
    env.settings.ldap.require_cloud_sync = true;
    env.settings.worker.sync_poll_interval = std::time::Duration::from_secs(600);
    env.settings.worker.sync_deadline = std::time::Duration::from_secs(3600);
    let app = env.start_daemon().await;

    let (joiner, body) = event("joiner", json!({ "user_principal_name": upn }), 2);
    publish(&env, "joiner", &body).await;
    let waiting = env
        .wait_job(&joiner, |j| j.state == JobState::WaitingForSync)
        .await;
    assert_eq!(waiting.account, format!("dj{t}"));

    let (leaver, body) = event("leaver", json!({ "distinguished_name": dn }), 1);
    publish(&env, "leaver", &body).await;
    let done = env.wait_terminal(&leaver).await;
    let superseded = env.wait_terminal(&joiner).await;
    assert_eq!(superseded.state, JobState::Superseded, "{superseded:?}");
    assert_eq!(superseded.superseded_by, Some(done.id));
    // The account is enabled: a leaver for it is stale.
    assert_eq!(done.state, JobState::Cancelled, "{done:?}");
    app.stop().await;
}

/// Names that find nothing, or two accounts, or lie outside the managed base, fail at once
/// with what to do; filter metacharacters in a value match only themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn names_that_find_nothing_or_two_accounts_fail_clearly_and_hostile_values_stay_data() {
    let ad = TestAd::get();
    let t = tag();
    let starred = format!("st*r{t}@corp.example");
    let gone = User {
        disabled: true,
        upn: Some(starred.clone()),
        ..User::default()
    };
    ad.add_user(&format!("Star {t}"), &format!("st{t}"), &gone)
        .await;
    let env = given_a_daemon_on_the_dc(&ad).await;
    let app = env.start_daemon().await;

    let base = &ad.base_dn;
    let cases = [
        (
            json!({ "distinguished_name": format!("CN=Nobody {t},CN=Users,{base}") }),
            "no account has distinguishedName",
        ),
        // Samba reads `=` unescaped in a value as no DN at all (AD would search for it).
        (
            json!({ "distinguished_name": format!("CN=x)(objectClass=*{t},CN=Users,{base}") }),
            "does not read it as a DN",
        ),
        (
            json!({ "user_principal_name": format!("*{t}@corp.example") }),
            "no account has userPrincipalName",
        ),
        (
            json!({ "distinguished_name": format!("CN=Administrator,CN=Users,DC=other,DC=example") }),
            "is not under [ldap].base_dn",
        ),
    ];
    for (account, reason) in cases {
        let (id, body) = event("leaver", account.clone(), 1);
        publish(&env, "leaver", &body).await;
        let job = env.wait_terminal(&id).await;
        assert_eq!(job.state, JobState::Failed, "{account}: {job:?}");
        assert_eq!(job.last_error_class, Some(ErrorClass::Permanent));
        let error = job.last_error.unwrap_or_default();
        assert!(error.contains(reason), "{account}: {error}");
        assert!(
            error.contains("send the objectGUID") || error.contains("fix the"),
            "{error}"
        );
    }
    // The UPN with a literal `*` finds its one account, and only it.
    let (id, body) = event("leaver", json!({ "user_principal_name": starred }), 1);
    publish(&env, "leaver", &body).await;
    let job = env.wait_succeeded(&id).await;
    assert_eq!(job.outcome, Some(JobEffect::NotRemote));
    assert_eq!(job.account, format!("st{t}"));
    then_samba_refuses_a_second_account_with_the_upn(&ad, &env, &t).await;
    app.stop().await;
}

/// A DC from Windows Server 2012 R2 on refuses a second account with a UPN the forest has,
/// and so does Samba: on it, a UPN cannot name two accounts.
async fn then_samba_refuses_a_second_account_with_the_upn(ad: &TestAd, env: &TestEnv, t: &str) {
    let upn = format!("twice{t}@corp.example");
    let user = User {
        upn: Some(upn.clone()),
        disabled: true,
        ..User::default()
    };
    ad.add_user(&format!("Twice A {t}"), &format!("ta{t}"), &user)
        .await;
    assert!(
        !ad.try_add_user(&format!("Twice B {t}"), &format!("tb{t}"), &user)
            .await,
        "Samba let a duplicate userPrincipalName in"
    );
    let (id, body) = event("leaver", json!({ "user_principal_name": upn }), 1);
    publish(env, "leaver", &body).await;
    assert_eq!(env.wait_succeeded(&id).await.account, format!("ta{t}"));
}

/// An older DC (or a directory that lets duplicates in, as the lab's does) may hold two
/// accounts with one UPN: the event naming it fails instead of picking one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_upn_two_accounts_hold_fails_as_ambiguous_with_what_to_do() {
    let twice = |sam: &str| {
        let mut seed = common::seed(sam).disabled();
        seed.user_principal_name = Some("twice@corp.example".into());
        seed
    };
    let env = TestEnv::new(vec![twice("twice1"), twice("twice2")]).await;
    let app = env.start_daemon().await;
    let (id, body) = event(
        "leaver",
        json!({ "user_principal_name": "twice@corp.example" }),
        1,
    );
    publish(&env, "leaver", &body).await;
    let job = env.wait_terminal(&id).await;
    assert_eq!(
        (job.state, job.last_error_class),
        (JobState::Failed, Some(ErrorClass::Permanent)),
        "{job:?}"
    );
    let error = job.last_error.unwrap_or_default();
    assert!(
        error.contains("2 directory objects match userPrincipalName \"twice@corp.example\"")
            && error.contains("send the objectGUID"),
        "{error}"
    );
    app.stop().await;
}

/// The store's half, step by step (no daemon): three events name one account by its
/// objectGUID, a UPN and a DN; all three run at once (to intake they are three accounts).
/// Keyed on the GUID as each is read, the rules of an insert hold again: a job of the
/// account is running, so the UPN one waits (no attempt used); the newer DN one supersedes
/// it and waits too; an older one read later is superseded by the newest.
#[tokio::test]
async fn resolving_a_name_applies_supersede_and_one_running_job_per_account() {
    use mailboxd::store::Resolved;
    let env = TestEnv::new(Vec::new()).await;
    let guid = uuid::Uuid::new_v4();
    let sam = format!("bz{}", tag());
    let dn = format!("CN={sam},CN=Users,DC=corp,DC=example");
    let by = |account: Value, minutes_ago| event("joiner", account, minutes_ago);
    let (a, a_body) = by(
        json!({ "object_guid": guid.to_string(), "sam_account_name": sam }),
        3,
    );
    let (c, c_body) = by(
        json!({ "user_principal_name": format!("{sam}@corp.example") }),
        2,
    );
    let (b, b_body) = by(json!({ "distinguished_name": dn }), 1);
    let parse = |b: &[u8]| mailboxd::event::parse(b, None, None, "").unwrap();
    let events = [parse(&a_body), parse(&c_body), parse(&b_body)];
    env.store.insert_events(&events, 5).await.unwrap();
    let lease = std::time::Duration::from_secs(60);
    assert_eq!(env.store.claim("r1", 10, lease).await.unwrap().len(), 3);
    let job = |id: String| {
        let store = env.store.clone();
        async move { store.job_by_event(&id).await.unwrap().unwrap() }
    };
    let resolve = |id: uuid::Uuid| env.store.resolve_account(id, "r1", guid, &sam);

    assert_eq!(
        resolve(job(a.clone()).await.id).await.unwrap(),
        Resolved::Keyed
    );
    assert_eq!(
        resolve(job(c.clone()).await.id).await.unwrap(),
        Resolved::Busy
    );
    let waiting = job(c.clone()).await;
    assert_eq!(
        (waiting.state, waiting.attempt),
        (JobState::Retrying, 0),
        "{waiting:?}"
    );
    assert_eq!(
        resolve(job(b.clone()).await.id).await.unwrap(),
        Resolved::Busy
    );
    let newest = job(b.clone()).await;
    let superseded = job(c.clone()).await;
    assert_eq!(superseded.state, JobState::Superseded, "{superseded:?}");
    assert_eq!(superseded.superseded_by, Some(newest.id));
    assert_eq!(newest.account, sam, "shown under AD's name");
    assert_eq!(job(a.clone()).await.state, JobState::Running);
    // The account's jobs now share one key: one runs at a time.
    assert!(env.store.claim("r1", 10, lease).await.unwrap().is_empty());

    let (old, old_body) = by(json!({ "distinguished_name": dn }), 5);
    env.store
        .insert_events(&[parse(&old_body)], 5)
        .await
        .unwrap();
    let claimed = env.store.claim("r1", 10, lease).await.unwrap();
    assert_eq!(claimed.len(), 1, "{claimed:?}");
    let answer = resolve(job(old.clone()).await.id).await.unwrap();
    assert_eq!(answer, Resolved::Superseded(newest.id));
    assert_eq!(job(old).await.state, JobState::Superseded);
}

/// The batch's fast path (no daemon): a batch of joiners read in AD is keyed on their
/// objectGUIDs in one statement when nothing else of the account is pending, running or
/// newer; the rest is left for `resolve_account`, which decides each by the rules of an
/// insert — here a job whose account has a newer pending job under its GUID, and two jobs of
/// the batch that AD showed to be one account.
#[tokio::test]
async fn a_batch_is_keyed_at_once_only_where_nothing_else_of_the_account_is_pending() {
    let env = TestEnv::new(Vec::new()).await;
    let t = tag();
    let (quiet, busy, twin) = (format!("qa{t}"), format!("qb{t}"), format!("qc{t}"));
    let (quiet_guid, busy_guid, twin_guid) = (
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
    );
    let parse = |b: &[u8]| mailboxd::event::parse(b, None, None, "").unwrap();
    let by_name =
        |sam: &str, minutes_ago| event("joiner", json!({ "sam_account_name": sam }), minutes_ago);
    let (q, q_body) = by_name(&quiet, 3);
    let (b, b_body) = by_name(&busy, 3);
    let (w1, w1_body) = by_name(&twin, 3);
    let (w2, w2_body) = event(
        "joiner",
        json!({ "user_principal_name": format!("{twin}@corp.example") }),
        2,
    );
    let events = [q_body, b_body, w1_body, w2_body].map(|b| parse(&b));
    env.store.insert_events(&events, 5).await.unwrap();
    let lease = std::time::Duration::from_secs(60);
    assert_eq!(env.store.claim("r1", 10, lease).await.unwrap().len(), 4);
    // A newer event of `busy`, already keyed on its GUID, arrives while the batch runs.
    let (_, newer_body) = event(
        "leaver",
        json!({ "object_guid": busy_guid.to_string(), "sam_account_name": busy }),
        1,
    );
    env.store
        .insert_events(&[parse(&newer_body)], 5)
        .await
        .unwrap();
    let id = |e: String| {
        let store = env.store.clone();
        async move { store.job_by_event(&e).await.unwrap().unwrap().id }
    };
    let (qi, bi, w1i, w2i) = (id(q).await, id(b).await, id(w1).await, id(w2).await);
    let batch = [
        (qi, quiet_guid, quiet.as_str()),
        (bi, busy_guid, busy.as_str()),
        (w1i, twin_guid, twin.as_str()),
        (w2i, twin_guid, twin.as_str()),
    ];
    let keyed = env.store.key_quiet_accounts("r1", &batch).await.unwrap();
    assert_eq!(keyed, vec![qi], "only the quiet account is keyed at once");
    let (job, _) = env.store.get_job(qi).await.unwrap().unwrap();
    assert_eq!(
        (job.state, job.account.as_str()),
        (JobState::Running, quiet.as_str())
    );
    // Asked again (the next attempt of a keyed job), it counts as keyed, nothing changed.
    let again = env
        .store
        .key_quiet_accounts("r1", &batch[..1])
        .await
        .unwrap();
    assert_eq!(again, vec![qi]);
    // Another replica's batch keys nothing of this one's.
    assert!(
        env.store
            .key_quiet_accounts("r2", &batch)
            .await
            .unwrap()
            .is_empty()
    );
    // The others go the slow way and meet the rules of an insert.
    use mailboxd::store::Resolved;
    let newer = env
        .store
        .resolve_account(bi, "r1", busy_guid, &busy)
        .await
        .unwrap();
    assert!(matches!(newer, Resolved::Superseded(_)), "{newer:?}");
    let first = env
        .store
        .resolve_account(w1i, "r1", twin_guid, &twin)
        .await
        .unwrap();
    let second = env
        .store
        .resolve_account(w2i, "r1", twin_guid, &twin)
        .await
        .unwrap();
    assert_eq!(first, Resolved::Keyed);
    assert!(
        matches!(second, Resolved::Busy | Resolved::Superseded(_)),
        "{second:?}"
    );
}
