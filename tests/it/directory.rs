//! Directory checks against a real Active Directory: the Samba AD DC that
//! `deploy/dev/samba-ad.sh` provisions (tests/run.sh starts it).

use crate::common;

use std::time::Duration;

use common::ad::{AddressLists, TestAd, User};
use common::{TestEnv, remote, seed};
use mailboxd::directory::{Directory, DirectoryError, Lookup, RecipientType};
use mailboxd::job::{ErrorClass, JobEffect, JobState};

fn tag() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
}

fn directory(cfg: &mailboxd::config::Ldap) -> Directory {
    Directory::from_config(cfg)
        .expect("valid [ldap] settings")
        .expect("directory configured")
}

#[tokio::test]
async fn an_account_reads_the_same_over_ldaps_and_starttls() {
    let ad = TestAd::get();
    let t = tag();
    let sam = format!("rd{t}");
    let (dn, guid) = ad
        .add_user(
            &sam,
            &sam,
            &User::remote(&format!("{sam}@tenant.mail.onmicrosoft.com")),
        )
        .await;

    let ldaps = directory(&ad.settings());
    let mut starttls_cfg = ad.settings();
    starttls_cfg.urls = vec![format!("ldap://{}", ad.host)];
    let starttls = directory(&starttls_cfg);

    for dir in [&ldaps, &starttls] {
        for lookup in [
            Lookup::Sam(sam.clone()),
            Lookup::Guid(guid),
            Lookup::Upn(format!("{sam}@corp.example")),
        ] {
            let state = dir.read(&lookup, None).await.expect("read");
            // The DC's own DNS name, which is what Exchange gets as -DomainController.
            assert_eq!(state.domain_controller, ad.name);
            let a = state
                .account
                .unwrap_or_else(|| panic!("{lookup} not found"));
            assert_eq!(a.distinguished_name, dn);
            assert_eq!(a.sam_account_name, sam);
            assert_eq!(a.object_guid, Some(guid));
            assert!(!a.disabled);
            assert_eq!(a.recipient, RecipientType::RemoteMailbox);
            assert!(!a.hidden);
            assert_eq!(
                a.target_address.as_deref(),
                Some(format!("SMTP:{sam}@tenant.mail.onmicrosoft.com").as_str())
            );
        }
    }
    let missing = ldaps
        .read(&Lookup::Sam(format!("nobody{t}")), None)
        .await
        .unwrap();
    assert_eq!(missing.account, None);
    let missing = ldaps
        .read(&Lookup::Guid(uuid::Uuid::new_v4()), None)
        .await
        .unwrap();
    assert_eq!(missing.account, None);
}

#[tokio::test]
async fn certificate_checks_are_on_and_plain_ldap_needs_an_explicit_setting() {
    let ad = TestAd::get();
    // Without the test CA the DC's certificate is not trusted: refused, hosts named.
    let mut cfg = ad.settings();
    cfg.ca_file = None;
    let err = directory(&cfg)
        .read(&Lookup::Sam("Administrator".into()), None)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, DirectoryError::AllUnreachable { .. }),
        "{err:?}"
    );
    assert!(
        text.contains("TLS") && text.contains("ldaps://127.0.0.1"),
        "{text}"
    );

    // ldap:// without StartTLS is refused at start-up unless allowed in so many words.
    let mut plain = ad.settings();
    plain.urls = vec![format!("ldap://{}", ad.host)];
    plain.starttls = false;
    let refused = Directory::from_config(&plain).err().expect("refused");
    assert!(refused.to_string().contains("allow_plaintext"), "{refused}");
    plain.allow_plaintext = true;
    let state = directory(&plain)
        .read(&Lookup::Sam("Administrator".into()), None)
        .await
        .expect("plain LDAP when explicitly allowed");
    assert!(state.account.is_some());
}

#[tokio::test]
async fn a_wrong_password_is_a_clear_bind_error() {
    let ad = TestAd::get();
    let mut cfg = ad.settings();
    cfg.password = Some(secrecy::SecretString::from("not-the-password"));
    let err = directory(&cfg)
        .read(&Lookup::Sam("Administrator".into()), None)
        .await
        .unwrap_err();
    assert!(matches!(err, DirectoryError::BindRefused { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("wrong password"), "{text}");
    assert!(
        !text.contains("not-the-password"),
        "the password leaked: {text}"
    );
}

#[tokio::test]
async fn a_dead_domain_controller_is_skipped_and_all_dead_names_every_host() {
    let ad = TestAd::get();
    let t = tag();
    let sam = format!("fo{t}");
    ad.add_user(&sam, &sam, &User::default()).await;
    then_a_dead_dc_is_skipped(&ad, &sam).await;
    then_the_dc_named_in_the_event_goes_first_when_it_is_configured(&ad, &sam).await;
    then_a_host_that_is_not_configured_is_never_contacted(&ad, &sam).await;
    then_all_dead_names_every_host_as_transient(&ad, sam).await;
}

/// Nothing listens on 127.0.0.9: connection refused at once, the next DC answers.
async fn then_a_dead_dc_is_skipped(ad: &TestAd, sam: &str) {
    let mut cfg = ad.settings();
    cfg.urls = vec!["ldaps://127.0.0.9".into(), format!("ldaps://{}", ad.host)];
    let state = directory(&cfg)
        .read(&Lookup::Sam(sam.to_owned()), None)
        .await
        .expect("second DC answers");
    assert_eq!(state.domain_controller, ad.name);
    assert!(state.account.is_some());
}

/// The DC named in the event is tried first when it is a configured one, by its URL's
/// host or the DNS name it reported.
async fn then_the_dc_named_in_the_event_goes_first_when_it_is_configured(ad: &TestAd, sam: &str) {
    let mut cfg = ad.settings();
    cfg.urls = vec!["ldaps://127.0.0.9".into(), format!("ldaps://{}", ad.host)];
    let dir = directory(&cfg);
    let order = |dir: &Directory, named| {
        dir.order(Some(named))
            .iter()
            .map(|u| u.to_string())
            .collect::<Vec<_>>()
    };
    let configured = vec![
        "ldaps://127.0.0.9".to_owned(),
        format!("ldaps://{}", ad.host),
    ];
    assert_eq!(
        order(&dir, ad.host.as_str()),
        vec![configured[1].clone(), configured[0].clone()]
    );
    assert_eq!(order(&dir, "stranger.example"), configured);
    let state = dir
        .read(&Lookup::Sam(sam.to_owned()), Some(&ad.host.to_uppercase()))
        .await
        .expect("the creating DC answers");
    assert!(state.account.is_some());
    // Its reported name now finds it too.
    assert_eq!(order(&dir, ad.name.as_str())[0], configured[1]);
}

async fn then_a_host_that_is_not_configured_is_never_contacted(ad: &TestAd, sam: &str) {
    let mut cfg = ad.settings();
    cfg.urls = vec!["ldaps://127.0.0.9".into()];
    let err = directory(&cfg)
        .read(&Lookup::Sam(sam.to_owned()), Some(&ad.host))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("127.0.0.9") && !text.contains(&ad.host),
        "an event's host was contacted: {text}"
    );
}

async fn then_all_dead_names_every_host_as_transient(ad: &TestAd, sam: String) {
    let mut cfg = ad.settings();
    cfg.urls = vec!["ldaps://127.0.0.9".into(), "ldaps://127.0.0.10:1636".into()];
    let err = directory(&cfg)
        .read(&Lookup::Sam(sam), None)
        .await
        .unwrap_err();
    assert!(matches!(err, DirectoryError::AllUnreachable { .. }));
    assert_eq!(err.class(), mailboxd::job::ErrorClass::Transient);
    let text = err.to_string();
    assert!(
        text.contains("127.0.0.9") && text.contains("127.0.0.10:1636"),
        "{text}"
    );
}

#[tokio::test]
async fn hostile_names_match_only_themselves() {
    let ad = TestAd::get();
    let t = tag();
    let dir = directory(&ad.settings());
    // Names AD accepts in sAMAccountName (it refuses "/\[]:;|=,+*?<>), with filter syntax.
    let hostile = [
        format!("o'b{t}"),
        format!("x){t}("),
        format!("a(b{t})"),
        format!("jü{t}"),
        format!("$`{t}"),
    ];
    let mut guids = Vec::new();
    for (i, sam) in hostile.iter().enumerate() {
        let (_, g) = ad
            .add_user(&format!("h{i}-{t}"), sam, &User::default())
            .await;
        guids.push(g);
    }
    for (sam, guid) in hostile.iter().zip(&guids) {
        let state = dir.read(&Lookup::Sam(sam.clone()), None).await.unwrap();
        let a = state.account.unwrap_or_else(|| panic!("{sam:?} not found"));
        assert_eq!(&a.sam_account_name, sam);
        assert_eq!(a.object_guid, Some(*guid));
    }
    // Filter syntax in a value matches nothing instead of everything.
    for probe in [
        "*".to_owned(),
        format!("x){t}(*"),
        "*)(sAMAccountName=*".to_owned(),
        format!("{t}\\2a"),
        "Administrator)(|(objectClass=*".to_owned(),
    ] {
        let state = dir.read(&Lookup::Sam(probe.clone()), None).await.unwrap();
        assert_eq!(state.account, None, "{probe:?} matched something");
    }
    // NUL cannot be in an AD name, and Samba cuts an escaped \00 short: refused up front.
    let err = dir
        .read(&Lookup::Sam(format!("jü{t}\0")), None)
        .await
        .unwrap_err();
    assert!(matches!(err, DirectoryError::InvalidLookup(_)), "{err:?}");
}

/// The real DC with an account in each situation the worker's pre-check decides on.
struct DcWorld {
    ad: TestAd,
    t: String,
    joiner_dn: String,
    joiner_guid: uuid::Uuid,
    leaver_dn: String,
    leaver_guid: uuid::Uuid,
}

impl DcWorld {
    fn n(&self, s: &str) -> String {
        format!("{s}{}", self.t)
    }
}

fn rra(s: &str) -> String {
    format!("{s}@tenant.mail.onmicrosoft.com")
}

/// The events of the story, by the account they are about.
struct DcEvents {
    already: String,
    onprem: String,
    missing: String,
    reenabled: String,
    nomailbox: String,
    was_hidden: String,
    joiner: String,
    leaver: String,
}

/// In AD: one account for each pre-check decision.
async fn given_an_account_in_every_situation() -> DcWorld {
    let ad = TestAd::get();
    let t = tag();
    let n = |s: &str| format!("{s}{t}");
    let add = |sam: &str, user: User| {
        let ad = &ad;
        let sam = n(sam);
        async move { ad.add_user(&sam, &sam, &user).await }
    };
    add("already", User::remote(&rra(&n("already")))).await;
    let onprem = User::onprem();
    add("onprem", onprem).await;
    add("reenabled", User::remote(&rra(&n("reenabled")))).await;
    let disabled = User {
        disabled: true,
        ..User::default()
    };
    add("nomailbox", disabled).await;
    let hidden_leaver = User {
        disabled: true,
        hidden: true,
        ..User::remote(&rra(&n("wasHidden")))
    };
    add("wasHidden", hidden_leaver).await;
    let leaver = User {
        disabled: true,
        ..User::remote(&rra(&n("leaver")))
    };
    let (leaver_dn, leaver_guid) = add("leaver", leaver).await;
    let (joiner_dn, joiner_guid) = add("joiner", User::default()).await;
    DcWorld {
        ad,
        t,
        joiner_dn,
        joiner_guid,
        leaver_dn,
        leaver_guid,
    }
}

/// The lab (Exchange) knows the accounts that reach it; the daemon checks against the DC.
async fn given_a_daemon_on_the_dc(w: &DcWorld) -> (TestEnv, mailboxd::app::App) {
    let mut in_exchange = vec![seed(&w.n("joiner")), remote(&w.n("leaver")).disabled()];
    in_exchange[0].object_guid = Some(w.joiner_guid);
    in_exchange[1].object_guid = Some(w.leaver_guid);
    let mut env = TestEnv::new(in_exchange).await;
    env.settings.ldap = w.ad.settings();
    let app = env.start_daemon().await;
    (env, app)
}

async fn when_an_event_arrives_for_each(w: &DcWorld, env: &TestEnv) -> DcEvents {
    let publisher = env.publisher().await;
    let publish = |spec: mailboxd::publish::EventSpec| {
        let publisher = &publisher;
        async move {
            publisher.publish(&spec).await.unwrap();
            spec.id
        }
    };
    DcEvents {
        already: publish(env.joiner(&w.n("already"))).await,
        onprem: publish(env.joiner(&w.n("onprem"))).await,
        missing: publish(env.joiner(&w.n("missing"))).await,
        reenabled: publish(env.leaver(&w.n("reenabled"))).await,
        nomailbox: publish(env.leaver(&w.n("nomailbox"))).await,
        was_hidden: publish(env.leaver(&w.n("wasHidden"))).await,
        joiner: publish(env.joiner(&w.n("joiner"))).await,
        leaver: publish(env.leaver(&w.n("leaver"))).await,
    }
}

/// The worker against the real DC: every pre-check decision of docs/decisions.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_worker_decides_from_what_the_domain_controller_shows() {
    let w = given_an_account_in_every_situation().await;
    let (env, app) = given_a_daemon_on_the_dc(&w).await;
    let ev = when_an_event_arrives_for_each(&w, &env).await;
    then_what_ad_shows_decides_without_exchange(&w, &env, &ev).await;
    then_the_joiner_runs_against_the_dc_that_answered_and_is_verified_there(&w, &env, &ev).await;
    then_the_leaver_is_hidden_and_verified_once_ad_shows_it(&w, &env, &ev).await;
    app.stop().await;
}

async fn then_what_ad_shows_decides_without_exchange(w: &DcWorld, env: &TestEnv, ev: &DcEvents) {
    let job = env.wait_succeeded(&ev.already).await;
    assert_eq!(job.outcome, Some(JobEffect::Already));

    let job = env.wait_terminal(&ev.onprem).await;
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.last_error_class, Some(ErrorClass::Permanent));
    let error = job.last_error.as_deref().unwrap();
    assert!(error.contains("on-premises mailbox"), "{job:?}");

    let job = env
        .wait_job(&ev.missing, |j| j.state == JobState::Retrying)
        .await;
    assert_eq!(job.last_error_class, Some(ErrorClass::Transient));
    let error = job.last_error.as_deref().unwrap();
    let expected = format!("not on domain controller {}", w.ad.name);
    assert!(error.contains(&expected), "{job:?}");

    let job = env.wait_terminal(&ev.reenabled).await;
    assert_eq!(job.state, JobState::Cancelled);
    assert!(
        job.last_error.as_deref().unwrap().contains("enabled again"),
        "{job:?}"
    );

    let job = env.wait_succeeded(&ev.nomailbox).await;
    assert_eq!(job.outcome, Some(JobEffect::NotRemote));
    let job = env.wait_succeeded(&ev.was_hidden).await;
    assert_eq!(job.outcome, Some(JobEffect::Already));

    // None of those reached Exchange.
    let calls = env.lab.invocations();
    for s in [
        "already",
        "onprem",
        "missing",
        "reenabled",
        "nomailbox",
        "wasHidden",
    ] {
        assert!(
            !calls
                .iter()
                .any(|c| c.identity().is_some_and(|i| i.contains(&w.n(s)))),
            "{s} reached Exchange: {calls:?}"
        );
    }
}

/// The job of `event` retrying because AD does not show yet what Exchange reported.
async fn wait_unverified(env: &TestEnv, event: &str) -> mailboxd::store::Job {
    env.wait_job(event, |j| {
        j.state == JobState::Retrying
            && j.last_error
                .as_deref()
                .is_some_and(|e| e.contains("Exchange reported"))
    })
    .await
}

/// The joiner ran in Exchange against the DC that answered, by its objectGUID. The lab
/// does not write to Samba, so the verification read finds no remote mailbox and the job
/// retries instead of trusting the script; once AD shows what Exchange wrote, the next
/// attempt is a no-op success.
async fn then_the_joiner_runs_against_the_dc_that_answered_and_is_verified_there(
    w: &DcWorld,
    env: &TestEnv,
    ev: &DcEvents,
) {
    let guid = w.joiner_guid.to_string();
    let job = wait_unverified(env, &ev.joiner).await;
    let calls = env.lab.invocations_for("Enable-RemoteMailbox", &guid);
    assert_eq!(
        calls.iter().filter(|c| c.succeeded()).count(),
        1,
        "{calls:?}"
    );
    assert_eq!(calls[0].text("DomainController"), Some(w.ad.name.as_str()));
    let (_, attempts) = env.store.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(
        attempts[0].domain_controller.as_deref(),
        Some(w.ad.name.as_str())
    );
    let seen = attempts[0].directory.as_ref().expect("directory record");
    assert_eq!(seen["before"]["account"]["recipient"], "none");
    assert_eq!(seen["after"]["account"]["recipient"], "none");

    let address = rra(&w.n("joiner"));
    w.ad.stamp_remote(&w.joiner_dn, &address, AddressLists::Shown)
        .await;
    let job = env.wait_succeeded(&ev.joiner).await;
    assert_eq!(job.outcome, Some(JobEffect::Already));
    // (A retry before the stamp may have called it again: Exchange refused that one.)
    assert_eq!(
        env.lab
            .invocations_for("Enable-RemoteMailbox", &guid)
            .iter()
            .filter(|c| c.succeeded())
            .count(),
        1,
        "Enable-RemoteMailbox ran twice"
    );
}

/// The leaver: hidden in Exchange, then verified once AD shows it.
async fn then_the_leaver_is_hidden_and_verified_once_ad_shows_it(
    w: &DcWorld,
    env: &TestEnv,
    ev: &DcEvents,
) {
    let job = wait_unverified(env, &ev.leaver).await;
    let hides = env
        .lab
        .invocations_for("Set-RemoteMailbox", &w.leaver_guid.to_string());
    assert!(!hides.is_empty(), "{job:?}");
    assert_eq!(hides[0].text("DomainController"), Some(w.ad.name.as_str()));
    assert_eq!(hides[0].flag("HiddenFromAddressListsEnabled"), Some(true));
    let address = rra(&w.n("leaver"));
    w.ad.stamp_remote(&w.leaver_dn, &address, AddressLists::Hidden)
        .await;
    let job = env.wait_succeeded(&ev.leaver).await;
    assert_eq!(job.outcome, Some(JobEffect::Already));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_joiner_waits_for_the_cloud_sync_until_its_deadline() {
    let ad = TestAd::get();
    let t = tag();
    let synced = format!("sync{t}");
    let late = format!("late{t}");
    let (dn, guid) = ad.add_user(&synced, &synced, &User::default()).await;
    ad.add_user(&late, &late, &User::default()).await;

    let mut in_exchange = seed(&synced);
    in_exchange.object_guid = Some(guid);
    let mut env = TestEnv::new(vec![in_exchange]).await;
    env.settings.ldap = ad.settings();
    env.settings.ldap.require_cloud_sync = true;
    env.settings.worker.sync_poll_interval = Duration::from_millis(200);
    env.settings.worker.sync_deadline = Duration::from_secs(3);
    let app = env.start_daemon().await;
    let publisher = env.publisher().await;
    let ev = env.joiner(&synced);
    publisher.publish(&ev).await.unwrap();
    let ev_late = env.joiner(&late);
    publisher.publish(&ev_late).await.unwrap();
    then_it_waits_for_the_sync_without_using_attempts(&env, &ev.id).await;
    // Entra Connect stamps the account: the joiner goes ahead.
    ad.stamp_synced(&dn, guid).await;
    then_the_joiner_goes_ahead(&env, &ev.id, guid).await;
    then_the_other_fails_at_the_deadline_with_the_reason(&env, &ev_late.id).await;
    app.stop().await;
}

/// Before the sync nothing runs in Exchange, and waiting uses no attempts.
async fn then_it_waits_for_the_sync_without_using_attempts(env: &TestEnv, event: &str) {
    let job = env
        .wait_job(event, |j| j.state == JobState::WaitingForSync)
        .await;
    assert_eq!(job.last_error_class, Some(ErrorClass::NotSynced));
    assert!(env.lab.invocations().is_empty(), "ran before the sync");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let job = env.store.job_by_event(event).await.unwrap().unwrap();
    assert!(
        matches!(job.state, JobState::WaitingForSync | JobState::Running),
        "{job:?}"
    );
    assert!(job.attempt <= 1, "waiting used attempts: {job:?}");
}

async fn then_the_joiner_goes_ahead(env: &TestEnv, event: &str, guid: uuid::Uuid) {
    env.wait_job(event, |j| j.state != JobState::WaitingForSync)
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while env
        .lab
        .invocations_for("Enable-RemoteMailbox", &guid.to_string())
        .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "never enabled after the sync"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The other one never syncs: it fails at the deadline with the reason.
async fn then_the_other_fails_at_the_deadline_with_the_reason(env: &TestEnv, event: &str) {
    let job = env.wait_terminal(event).await;
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.last_error_class, Some(ErrorClass::NotSynced));
    assert!(
        job.last_error.as_deref().unwrap().contains("sync_deadline"),
        "{job:?}"
    );
}
