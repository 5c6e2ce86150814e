//! User stories of the whole pipeline: RabbitMQ → PostgreSQL → worker → WinRM → lab.

use crate::common;

use std::time::Duration;

use common::{TestEnv, remote, seed, wait_exit};
use lab::Recipient;
use lapin::options::BasicGetOptions;
use mailboxd::job::{AttemptEnd, ErrorClass, JobEffect, JobState};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_published_joiner_gets_a_remote_mailbox() {
    let env = TestEnv::new(vec![seed("jdoe")]).await;
    let app = env.start_daemon().await;
    let publisher = env.publisher().await;

    let mut ev = env.joiner("jdoe");
    ev.primary_smtp_address = Some("john.doe@corp.example".into());
    ev.archive = true;
    publisher.publish(&ev).await.unwrap();

    let job = env.wait_succeeded(&ev.id).await;
    assert_eq!(job.outcome, Some(JobEffect::Enabled));
    assert_eq!(job.attempt, 1);

    let archive_guid = then_the_lab_shows_what_exchange_would_have_written_to_ad(&env);
    then_enable_remote_mailbox_ran_twice_as_the_parameter_sets_require(&env);
    then_the_attempt_is_on_record_with_its_host_and_what_ad_showed(&env, &job, archive_guid).await;
    then_operations_see_it_through_the_cli(&env, &job);
    app.stop().await;
}

/// The lab shows what Exchange would have written to AD; returns the archive's GUID.
fn then_the_lab_shows_what_exchange_would_have_written_to_ad(env: &TestEnv) -> uuid::Uuid {
    let m = env.mailbox("jdoe");
    assert_eq!(m.recipient, Recipient::Remote);
    assert_eq!(m.msExchRecipientTypeDetails, Some(2_147_483_648i64));
    assert_eq!(
        m.targetAddress.as_deref(),
        Some("SMTP:jdoe@tenant.mail.onmicrosoft.com")
    );
    assert_eq!(
        m.primary_smtp_address.as_deref(),
        Some("john.doe@corp.example")
    );
    assert!(m.archive, "-Archive was asked for");

    m.msExchArchiveGUID.expect("msExchArchiveGUID")
}

/// Two Enable-RemoteMailbox calls, as the parameter sets require: the mailbox with the
/// values from the event, then -Archive (a set without -RemoteRoutingAddress).
fn then_enable_remote_mailbox_ran_twice_as_the_parameter_sets_require(env: &TestEnv) {
    let calls = env.lab.invocations_for("Enable-RemoteMailbox", "jdoe");
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(
        calls[0].text("RemoteRoutingAddress"),
        Some("jdoe@tenant.mail.onmicrosoft.com")
    );
    assert_eq!(
        calls[0].text("PrimarySmtpAddress"),
        Some("john.doe@corp.example")
    );
    assert_eq!(calls[0].flag("Archive"), None);
    assert_eq!(calls[1].flag("Archive"), Some(true));
    assert_eq!(calls[1].text("RemoteRoutingAddress"), None);
    assert!(calls.iter().all(|c| c.succeeded()), "{calls:?}");
}

/// The attempt is on record with the host that ran it, and with what AD showed after:
/// the mailbox and its archive, read back from the domain controller.
async fn then_the_attempt_is_on_record_with_its_host_and_what_ad_showed(
    env: &TestEnv,
    job: &mailboxd::store::Job,
    archive_guid: uuid::Uuid,
) {
    let (_, attempts) = env.store.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(attempts.len(), 1);
    let after = &attempts[0].directory.as_ref().unwrap()["after"]["account"];
    assert_eq!(after["recipient"], "remote_mailbox", "{after}");
    assert_eq!(after["archive_guid"], archive_guid.to_string(), "{after}");
    assert_eq!(after["archive_name"], "In-Place Archive - jdoe");
    assert_eq!(attempts[0].outcome, AttemptEnd::Succeeded);
    assert_eq!(
        attempts[0].host.as_deref(),
        Some(env.settings.winrm.endpoint.as_str())
    );
}

/// Operations see it through the CLI.
fn then_operations_see_it_through_the_cli(env: &TestEnv, job: &mailboxd::store::Job) {
    let (code, out, err) = env.cli(&["jobs", "list", "--json"]);
    assert_eq!(code, 0, "{err}");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list[0]["id"], job.id.to_string());
    assert_eq!(list[0]["state"], "succeeded");
    let (code, out, _) = env.cli(&["jobs", "show", &job.id.to_string(), "--json"]);
    assert_eq!(code, 0);
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["job"]["event"]["account"]["sam_account_name"], "jdoe");
    assert_eq!(shown["attempts"][0]["outcome"], "succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_event_twice_makes_one_job_and_one_enable() {
    let env = TestEnv::new(vec![seed("twice"), seed("marker")]).await;
    let app = env.start_daemon().await;
    let publisher = env.publisher().await;

    let ev = env.joiner("twice");
    publisher.publish(&ev).await.unwrap();
    publisher.publish(&ev).await.unwrap();
    // A later event on the same queue: once it is stored, both copies were handled.
    let marker = env.joiner("marker");
    publisher.publish(&marker).await.unwrap();
    env.wait_succeeded(&marker.id).await;
    env.wait_succeeded(&ev.id).await;

    let jobs = env
        .store
        .list_jobs(&mailboxd::store::JobFilter {
            account: Some("twice".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(
        env.lab
            .invocations_for("Enable-RemoteMailbox", "twice")
            .len(),
        1
    );

    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leaver_is_hidden_from_the_address_lists() {
    let env = TestEnv::new(vec![
        remote("gone").disabled(),
        remote("hidden").disabled().hidden(),
    ])
    .await;
    let app = env.start_daemon().await;
    let publisher = env.publisher().await;

    let ev = env.leaver("gone");
    publisher.publish(&ev).await.unwrap();
    let job = env.wait_succeeded(&ev.id).await;
    assert_eq!(job.outcome, Some(JobEffect::Hidden));
    let m = env.mailbox("gone");
    assert_eq!(m.msExchHideFromAddressLists, Some(true));
    assert_eq!(
        m.recipient,
        Recipient::Remote,
        "a leaver never removes the mailbox"
    );
    let sets = env.lab.invocations_for("Set-RemoteMailbox", "gone");
    assert_eq!(sets.len(), 1);
    assert_eq!(sets[0].flag("HiddenFromAddressListsEnabled"), Some(true));

    // Already hidden: a no-op, no Set-RemoteMailbox.
    let ev = env.leaver("hidden");
    publisher.publish(&ev).await.unwrap();
    let job = env.wait_succeeded(&ev.id).await;
    assert_eq!(job.outcome, Some(JobEffect::Already));
    assert!(
        env.lab
            .invocations_for("Set-RemoteMailbox", "hidden")
            .is_empty()
    );

    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unparsable_message_is_kept_as_poison_and_the_daemon_keeps_going() {
    let env = TestEnv::new(vec![seed("after")]).await;
    let app = env.start_daemon().await;
    let publisher = env.publisher().await;

    publisher
        .publish_raw(
            "ad.user.created",
            b"{this is not json",
            Some("application/json"),
            Some("bad-1"),
        )
        .await
        .unwrap();
    let after = env.joiner("after");
    publisher.publish(&after).await.unwrap();
    env.wait_succeeded(&after.id).await;

    // Recorded with its reason and raw bytes...
    let poison = env.store.list_poison(10).await.unwrap();
    assert_eq!(poison.len(), 1);
    assert!(
        poison[0].reason.contains("not valid JSON"),
        "{}",
        poison[0].reason
    );
    assert_eq!(poison[0].body, b"{this is not json");
    assert_eq!(poison[0].message_id.as_deref(), Some("bad-1"));
    // ...not turned into a job...
    assert!(env.store.job_by_event("bad-1").await.unwrap().is_none());
    // ...and dead-lettered by the broker.
    let conn = mailboxd::broker::connect(&env.settings.amqp.url, "test")
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let dead = mailboxd::broker::dead_letter_queue(&env.settings.amqp);
    let got = ch
        .basic_get(dead.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("a dead-lettered copy");
    assert_eq!(got.delivery.data, b"{this is not json");

    // Operations see it.
    let (code, out, _) = env.cli(&["poison", "list", "--json"]);
    assert_eq!(code, 0);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);

    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_account_names_reach_exchange_as_data() {
    // Legal in AD, dangerous if spliced into PowerShell.
    let nasty = "x$(calc)`'";
    let mut env = TestEnv::new(vec![seed(nasty)]).await;
    // Without a directory the name itself is Exchange's -Identity (with one, the objectGUID
    // read from AD is): the hardest case for the data path.
    env.settings.ldap = Default::default();
    let app = env.start_daemon().await;
    let publisher = env.publisher().await;

    let mut ev = env.joiner(nasty);
    ev.alias = Some("xcalc".into());
    publisher.publish(&ev).await.unwrap();
    env.wait_succeeded(&ev.id).await;

    let calls = env.lab.invocations_for("Enable-RemoteMailbox", nasty);
    assert_eq!(calls.len(), 1, "the identity arrived byte for byte");
    assert_eq!(calls[0].text("Alias"), Some("xcalc"));
    assert_eq!(env.mailbox(nasty).recipient, Recipient::Remote);

    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_between_commit_and_ack_does_not_duplicate_the_job() {
    let env = TestEnv::new(vec![seed("crashy"), seed("marker")]).await;
    let publisher = env.publisher().await;

    // The daemon aborts right after committing the job, before acking the delivery.
    let mut child = env.spawn_daemon(&[
        ("MAILBOXD_FAILPOINT", "intake-after-commit"),
        ("MAILBOXD__WORKER__LEASE", "5s"),
    ]);
    let ev = env.joiner("crashy");
    publisher.publish(&ev).await.unwrap();
    let status =
        wait_exit(&mut child, Duration::from_secs(30)).expect("the daemon hit the failpoint");
    assert!(!status.success());
    let stored = env
        .store
        .job_by_event(&ev.id)
        .await
        .unwrap()
        .expect("the job was committed");

    // Restarted normally, it gets the unacked message again from the broker.
    let _child = env.spawn_daemon(&[]);
    let marker = env.joiner("marker");
    publisher.publish(&marker).await.unwrap();
    env.wait_succeeded(&marker.id).await;
    let job = env.wait_succeeded(&ev.id).await;
    assert_eq!(job.id, stored.id, "the redelivery reused the committed job");
    let all = env
        .store
        .list_jobs(&mailboxd::store::JobFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 2, "one job per event: {all:?}");
    let enables: Vec<_> = env
        .lab
        .invocations_for("Enable-RemoteMailbox", "crashy")
        .into_iter()
        .filter(|c| c.succeeded())
        .collect();
    assert_eq!(enables.len(), 1);
    assert!(env.store.list_poison(10).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_archive_asked_for_an_existing_mailbox_is_added_once_and_then_counts_as_done() {
    let mut with_archive = remote("has.archive");
    with_archive.archive = true;
    let env = TestEnv::new(vec![remote("no.archive"), with_archive]).await;
    let app = env.start_daemon().await;
    let publisher = env.publisher().await;

    // The mailbox exists without an archive: only the -Archive call is needed.
    let mut ev = env.joiner("no.archive");
    ev.archive = true;
    publisher.publish(&ev).await.unwrap();
    let job = env.wait_succeeded(&ev.id).await;
    assert_eq!(job.outcome, Some(JobEffect::Already));
    let calls = env
        .lab
        .invocations_for("Enable-RemoteMailbox", "no.archive");
    let archive_calls: Vec<_> = calls
        .iter()
        .filter(|c| c.flag("Archive") == Some(true))
        .collect();
    assert_eq!(archive_calls.len(), 1, "{calls:?}");
    assert!(archive_calls[0].succeeded());
    assert!(env.mailbox("no.archive").msExchArchiveGUID.is_some());

    // Mailbox and archive both there: done from the directory, no Exchange call at all.
    let mut ev = env.joiner("has.archive");
    ev.archive = true;
    publisher.publish(&ev).await.unwrap();
    let job = env.wait_succeeded(&ev.id).await;
    assert_eq!(job.outcome, Some(JobEffect::Already));
    assert!(
        env.lab
            .invocations_for("Enable-RemoteMailbox", "has.archive")
            .is_empty()
    );

    app.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rehire_makes_the_hidden_mailbox_visible_again() {
    let env = TestEnv::new(vec![remote("back").hidden()]).await;
    let app = env.start_daemon().await;
    let ev = env.joiner("back");
    env.publisher().await.publish(&ev).await.unwrap();
    let job = env.wait_succeeded(&ev.id).await;
    assert_eq!(job.outcome, Some(JobEffect::Unhidden));
    assert_eq!(env.mailbox("back").msExchHideFromAddressLists, Some(false));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_permanent_exchange_error_fails_the_job_once_and_raises_one_alert() {
    // An on-premises mailbox must never be turned into a remote one.
    let onprem = common::onprem("onprem");
    let mut env = TestEnv::new(vec![onprem]).await;
    // Exchange's own refusal, not the directory pre-check (tests/it/directory.rs covers that).
    env.settings.ldap = Default::default();
    let app = env.start_daemon().await;
    let ev = env.joiner("onprem");
    env.publisher().await.publish(&ev).await.unwrap();
    let job = env.wait_terminal(&ev.id).await;
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.last_error_class, Some(ErrorClass::Permanent));
    assert!(
        job.last_error
            .as_deref()
            .unwrap_or("")
            .contains("UserMailbox"),
        "{job:?}"
    );
    assert_eq!(job.attempt, 1, "permanent errors are not retried");
    let alerts = env.store.list_alerts(10).await.unwrap();
    assert_eq!(alerts.len(), 1);
    assert!(
        alerts[0].subject.contains("Mailbox for onprem not enabled"),
        "{}",
        alerts[0].subject
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hung_windows_host_does_not_hold_jobs_forever() {
    let slow = lab::Latency {
        session: Duration::from_secs(20),
        cmdlet: Duration::ZERO,
        round_trip: Duration::ZERO,
    };
    let mut env = TestEnv::with_latency(vec![seed("stuck")], slow).await;
    env.settings.worker.batch_timeout = Duration::from_millis(500);
    env.settings.worker.max_attempts = 1;
    let app = env.start_daemon().await;
    let ev = env.joiner("stuck");
    env.publisher().await.publish(&ev).await.unwrap();
    let job = env.wait_terminal(&ev.id).await;
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.last_error_class, Some(ErrorClass::Transient));
    assert!(
        job.last_error
            .as_deref()
            .unwrap_or("")
            .contains("did not finish"),
        "{job:?}"
    );
    assert_eq!(env.store.list_alerts(10).await.unwrap().len(), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_mid_batch_leaves_nothing_half_done() {
    // The Windows side takes 2 s per session: long enough to kill the daemon in the middle.
    let slow = lab::Latency {
        session: Duration::from_secs(2),
        cmdlet: Duration::ZERO,
        round_trip: Duration::ZERO,
    };
    let env = TestEnv::with_latency(vec![seed("midway")], slow).await;
    let short_lease = [("MAILBOXD__WORKER__LEASE", "3s")];
    let mut first = env.spawn_daemon(&short_lease);
    let ev = env.joiner("midway");
    env.publisher().await.publish(&ev).await.unwrap();
    env.wait_job(&ev.id, |j| j.state == JobState::Running).await;
    first.kill().unwrap(); // SIGKILL: no cleanup, the lease stays
    first.wait().unwrap();

    // Another replica takes the job over once the lease expires, and finishes it.
    let _second = env.spawn_daemon(&short_lease);
    let job = env.wait_succeeded(&ev.id).await;
    let (_, attempts) = env.store.get_job(job.id).await.unwrap().unwrap();
    let outcomes: Vec<AttemptEnd> = attempts.iter().map(|a| a.outcome).collect();
    assert_eq!(
        outcomes,
        vec![AttemptEnd::LeaseExpired, AttemptEnd::Succeeded],
        "{attempts:?}"
    );

    // Exchange enabled the mailbox exactly once, whichever attempt got there.
    let enabled: Vec<_> = env
        .lab
        .invocations_for("Enable-RemoteMailbox", "midway")
        .into_iter()
        .filter(|c| c.succeeded())
        .collect();
    assert_eq!(enabled.len(), 1);
    assert_eq!(env.mailbox("midway").recipient, Recipient::Remote);
}

fn outage_accounts() -> Vec<lab::AccountSeed> {
    vec![seed("out1"), seed("out2"), seed("out3")]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_windows_host_outage_pauses_work_with_one_alert_and_burns_no_attempts() {
    let mut env = TestEnv::new(outage_accounts()).await;
    // Only the Windows host is down here; the replacement lab below has fresh state, which a
    // directory read from the old lab would not show, so this story runs without the DC.
    env.settings.ldap = Default::default();
    // The host goes down before the daemon ever reaches it.
    let addr = env.lab.addr;
    env.lab.stop();
    env.settings.worker.circuit_threshold = 2;
    env.settings.worker.circuit_cooldown = Duration::from_millis(300);
    env.settings.worker.max_attempts = 3;
    env.settings.exchange.batch_size = 1;
    let app = env.start_daemon().await;
    let publisher = env.publisher().await;
    let events: Vec<_> = ["out1", "out2", "out3"]
        .iter()
        .map(|s| env.joiner(s))
        .collect();
    for e in &events {
        publisher.publish(e).await.unwrap();
    }
    then_the_circuit_opens_and_readiness_says_why(&env, &app).await;
    env.lab = when_the_host_comes_back_after_a_few_failed_probes(addr).await;
    then_every_job_succeeds_having_waited_without_burning_attempts(&env, &events).await;
    then_one_alert_opened_the_outage_and_one_closed_it(&env).await;
    let readyz = format!("http://{}/readyz", app.admin_addr);
    let v: serde_json::Value = env
        .http
        .get(&readyz)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["circuit"]["open"], false, "{v}");
    app.stop().await;
}

async fn then_the_circuit_opens_and_readiness_says_why(env: &TestEnv, app: &mailboxd::app::App) {
    let status = env.wait_circuit_open(app).await;
    assert!(
        status["circuit"]["reason"]
            .as_str()
            .unwrap()
            .contains("nothing accepts connections at the WinRM endpoint"),
        "{status}"
    );
    assert_eq!(
        status["ready"], true,
        "still taking in events while the host is down"
    );
}

/// Lets the probes fail a few times (the pause doubles each time), then brings the host
/// back on its old address.
async fn when_the_host_comes_back_after_a_few_failed_probes(
    addr: std::net::SocketAddr,
) -> lab::Lab {
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut lab = None;
    for _ in 0..50 {
        let cfg = lab::LabConfig::new(
            addr,
            lab::DEFAULT_USER,
            secrecy::SecretString::from(common::LAB_PASSWORD),
        )
        .with_accounts(outage_accounts());
        match lab::Lab::start(cfg).await {
            Ok(l) => {
                lab = Some(l);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    lab.expect("the lab's port is free again")
}

async fn then_every_job_succeeds_having_waited_without_burning_attempts(
    env: &TestEnv,
    events: &[mailboxd::publish::EventSpec],
) {
    for e in events {
        let job = env.wait_succeeded(&e.id).await;
        assert!(
            job.attempt < 3,
            "attempts were burned during the outage: {job:?}"
        );
        let (_, attempts) = env.store.get_job(job.id).await.unwrap().unwrap();
        assert_eq!(attempts.last().unwrap().outcome, AttemptEnd::Succeeded);
    }
    let deferred = {
        let mut n = 0;
        for e in events {
            let job = env.store.job_by_event(&e.id).await.unwrap().unwrap();
            let (_, attempts) = env.store.get_job(job.id).await.unwrap().unwrap();
            n += attempts
                .iter()
                .filter(|a| a.outcome == AttemptEnd::Deferred)
                .count();
        }
        n
    };
    assert!(
        deferred >= 2,
        "jobs waited for the host: {deferred} deferred attempts"
    );
}

/// One alert when the outage began and one when it ended, none per job.
async fn then_one_alert_opened_the_outage_and_one_closed_it(env: &TestEnv) {
    let alerts = env.store.list_alerts(10).await.unwrap();
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    let subjects: Vec<&str> = alerts.iter().map(|a| a.subject.as_str()).collect();
    assert_eq!(
        subjects
            .iter()
            .filter(|s| s.contains("unavailable"))
            .count(),
        1,
        "{subjects:?}"
    );
    assert_eq!(
        subjects
            .iter()
            .filter(|s| s.contains("available again"))
            .count(),
        1,
        "{subjects:?}"
    );
    assert!(alerts.iter().all(|a| a.job_id.is_none()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_lets_work_finish_briefly_then_hands_it_to_another_replica() {
    let slow = lab::Latency {
        session: Duration::from_secs(3),
        cmdlet: Duration::ZERO,
        round_trip: Duration::ZERO,
    };
    let env = TestEnv::with_latency(vec![seed("term")], slow).await;
    let mut first = env.spawn_daemon(&[("MAILBOXD__WORKER__SHUTDOWN_GRACE", "300ms")]);
    let ev = env.joiner("term");
    env.publisher().await.publish(&ev).await.unwrap();
    env.wait_job(&ev.id, |j| j.state == JobState::Running).await;

    let started = std::time::Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &first.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = wait_exit(&mut first, Duration::from_secs(10)).expect("exits after SIGTERM");
    assert!(exit.success(), "{exit:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "did not wait out the batch"
    );

    // Released, not left running until its lease: due now, the attempt not counted.
    let job = env.store.job_by_event(&ev.id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Retrying, "{job:?}");
    assert_eq!(job.attempt, 0);
    let (_, attempts) = env.store.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(attempts.last().unwrap().outcome, AttemptEnd::Released);

    let app = env.start_daemon().await;
    let job = env.wait_succeeded(&ev.id).await;
    assert_eq!(job.attempt, 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn typographic_quotes_and_subexpressions_stay_data() {
    // PowerShell treats U+2018–U+201E as quotes too; `$(…)` and backticks are its syntax.
    let nasty = "q\u{2018}\u{2019}\u{201A}\u{201B}\u{201C}\u{201D}\u{201E}$(x)`";
    let mut env = TestEnv::new(vec![seed(nasty)]).await;
    // Without a directory the name itself is the -Identity Exchange receives.
    env.settings.ldap = Default::default();
    let app = env.start_daemon().await;
    let mut ev = env.joiner(nasty);
    ev.alias = Some("qquotes".into());
    env.publisher().await.publish(&ev).await.unwrap();
    env.wait_succeeded(&ev.id).await;
    let calls = env.lab.invocations();
    let enable: Vec<_> = calls
        .iter()
        .filter(|c| c.cmdlet == "Enable-RemoteMailbox")
        .collect();
    assert_eq!(enable.len(), 1, "{calls:?}");
    assert_eq!(enable[0].identity(), Some(nasty), "byte for byte");
    // Nothing but the template's cmdlets ran (and common.ps1's Exchange session).
    assert!(
        calls.iter().all(|c| [
            "Enable-RemoteMailbox",
            "Get-RemoteMailbox",
            "Set-RemoteMailbox",
            "New-PSSession",
            "Import-PSSession",
            "Remove-PSSession"
        ]
        .contains(&c.cmdlet.as_str())),
        "{calls:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_batch_reports_each_account_on_its_own() {
    let mut holder = remote("b-holder");
    holder.user_principal_name = Some("b-holder@corp.example".into());
    let mut env = TestEnv::new(vec![
        seed("b-ok"),
        remote("b-already"),
        seed("b-proxy"),
        holder,
    ])
    .await;
    // Exchange's own answers, all in one PowerShell run.
    env.settings.ldap = Default::default();
    env.settings.worker.concurrency = 1;
    env.settings.exchange.batch_size = 10;
    env.settings.exchange.batch_linger = Duration::from_millis(500);
    env.settings.worker.backoff_base = Duration::from_secs(60);
    let app = env.start_daemon().await;
    let publisher = env.publisher().await;
    let ok = env.joiner("b-ok");
    let already = env.joiner("b-already");
    let missing = env.joiner("b-missing");
    let mut proxy = env.joiner("b-proxy");
    // The primary address another account already holds.
    proxy.primary_smtp_address = Some("b-holder@corp.example".into());
    for e in [&ok, &already, &missing, &proxy] {
        publisher.publish(e).await.unwrap();
    }
    let ok = env.wait_succeeded(&ok.id).await;
    assert_eq!(ok.outcome, Some(JobEffect::Enabled));
    let already = env.wait_succeeded(&already.id).await;
    assert_eq!(already.outcome, Some(JobEffect::Already));
    let missing = env
        .wait_job(&missing.id, |j| j.state == JobState::Retrying)
        .await;
    assert_eq!(missing.last_error_class, Some(ErrorClass::Transient));
    assert!(missing.last_error.unwrap().contains("couldn't be found"));
    let proxy = env.wait_terminal(&proxy.id).await;
    assert_eq!(proxy.state, JobState::Failed);
    assert_eq!(proxy.last_error_class, Some(ErrorClass::Permanent));
    assert!(
        proxy
            .last_error
            .unwrap()
            .contains("ProxyAddressExistsException")
    );
    // One run for all four: the same attempt start, one PowerShell process.
    let mut starts = Vec::new();
    for id in [ok.id, already.id, missing.id, proxy.id] {
        let (_, attempts) = env.store.get_job(id).await.unwrap().unwrap();
        starts.push(attempts[0].started_at);
    }
    assert!(starts.iter().all(|s| *s == starts[0]), "{starts:?}");
    let stats = env.lab.stats();
    assert_eq!(stats.powershell_runs, 1, "{stats:?}");
    app.stop().await;
}
