//! The Management Tools without a server have no RBAC: in snap-in mode the WinRM account
//! writes with its own AD rights, which only "Recipient Management EMT" (created by
//! Add-PermissionForEMT.ps1) or Domain Admins grant. The lab refuses every write of an
//! account outside the group with the DC's insufficient-access-rights text; mailboxd reads
//! the same refusal on every account of a batch as the host's problem, not N accounts'.

use crate::common;

use std::time::Duration;

use common::account_data as account;
use common::ad::{TestAd, User};
use common::{LAB_PASSWORD, TestEnv, lab_config, seed};
use lab::Lab;
use mailboxd::check::Status;
use mailboxd::config::{self, ExchangeMode, WinrmAuth};
use mailboxd::exchange::{AccountReply, Exchange, ExchangeError, Template};
use mailboxd::job::{ErrorClass, JobState};
use secrecy::SecretString;
use winrm::{Auth, ClientConfig, WinrmClient};

/// Snap-in mode over CredSSP (its delegated logon reaches the DC), the account outside EMT.
async fn lab_without_emt(sams: &[&str]) -> Lab {
    let cfg = lab_config(sams.iter().map(|s| seed(s)).collect())
        .with_credssp(true)
        .with_emt_missing(true);
    Lab::start(cfg).await.expect("lab starts")
}

fn snapin(lab: &Lab) -> Exchange {
    let mut cfg = ClientConfig::new(
        lab.endpoint().parse().unwrap(),
        lab::DEFAULT_USER,
        SecretString::from(LAB_PASSWORD),
    );
    cfg.auth = Auth::CredSsp;
    cfg.credssp_cert_sha256 = lab.credssp_cert_sha256.iter().cloned().collect();
    let x = config::Exchange {
        mode: ExchangeMode::Snapin,
        ..config::Exchange::default()
    };
    Exchange::new(WinrmClient::new(cfg).unwrap(), &x, lab.endpoint())
}

#[tokio::test]
async fn the_lab_refuses_a_write_of_an_account_outside_emt_with_the_dcs_text() {
    let lab = lab_without_emt(&["emt1"]).await;
    let one = account("emt1");
    let id = one.job_id;
    let r = snapin(&lab)
        .run_batch(Template::EnableRemoteMailbox, vec![one])
        .await
        .expect("one account alone may be a protected one: no batch failure");
    let AccountReply::Failed { class, message, .. } = &r.outcomes[&id] else {
        panic!("{:?}", r.outcomes[&id]);
    };
    assert_eq!(*class, ErrorClass::Permanent);
    assert!(message.contains("Insufficient access rights to perform the operation"));
    assert!(message.contains("00002098") && message.contains("INSUFF_ACCESS_RIGHTS"));
    let enable = lab.invocations_of("Enable-RemoteMailbox");
    assert_eq!(enable[0].error.as_deref(), Some("ADOperationException"));
}

#[tokio::test]
async fn the_same_refusal_on_every_account_of_a_batch_is_systemic_and_names_the_group() {
    let lab = lab_without_emt(&["emt2", "emt3"]).await;
    let batch = vec![account("emt2"), account("emt3")];
    let e = snapin(&lab)
        .run_batch(Template::EnableRemoteMailbox, batch)
        .await
        .expect_err("the host's problem, not the accounts'");
    let ExchangeError::Session { class, message } = &e else {
        panic!("{e:?}");
    };
    assert_eq!(*class, ErrorClass::Systemic);
    assert!(message.contains("Recipient Management EMT"), "{message}");
    assert!(message.contains("Add-PermissionForEMT.ps1"), "{message}");
    assert!(message.contains("INSUFF_ACCESS_RIGHTS"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn through_the_daemon_the_circuit_opens_once_and_no_job_uses_an_attempt() {
    let cfg = lab_config(vec![seed("emt4"), seed("emt5")])
        .with_credssp(true)
        .with_emt_missing(true);
    let mut env = TestEnv::with_lab(cfg).await;
    let pin = env.lab.credssp_cert_sha256.clone().expect("CredSSP is on");
    env.settings.winrm.auth = WinrmAuth::CredSsp;
    env.settings.winrm.credssp_cert_sha256 = vec![pin];
    env.settings.winrm.allow_unencrypted = false;
    env.settings.exchange.mode = ExchangeMode::Snapin;
    env.settings.exchange.batch_linger = Duration::from_secs(2);
    // `mailboxd check` reads a recipient, which any account may: it says what it cannot see.
    let probe = mailboxd::check::run(&env.settings)
        .await
        .into_iter()
        .find(|p| p.name == "Exchange session")
        .expect("an Exchange probe");
    assert!(
        probe.detail.contains("RBAC does not apply"),
        "{}",
        probe.detail
    );
    assert!(
        probe.detail.contains("Recipient Management EMT"),
        "{}",
        probe.detail
    );
    let (a, b) = (env.joiner("emt4"), env.joiner("emt5"));
    let publisher = env.publisher().await;
    publisher.publish(&a).await.expect("published");
    publisher.publish(&b).await.expect("published");
    let app = env.start_daemon().await;
    let readyz = env.wait_circuit_open(&app).await;
    assert!(
        readyz.to_string().contains("Recipient Management EMT"),
        "{readyz}"
    );
    for ev in [&a, &b] {
        let job = env
            .wait_job(&ev.id, |j| {
                j.last_error.is_some() && j.state != JobState::Running
            })
            .await;
        assert_ne!(job.state, JobState::Failed, "{job:?}");
        assert_eq!(
            job.attempt, 0,
            "a systemic failure uses no attempt: {job:?}"
        );
    }
    assert!(env.mailbox("emt4").remote_routing_address.is_none());
    app.stop().await;
}

/// `mailboxd check` in snap-in mode with the WinRM account `sam` against the test DC.
async fn check_emt(sam: &str) -> mailboxd::check::Probe {
    let mut s = mailboxd::config::Settings {
        ldap: TestAd::get().settings(),
        ..Default::default()
    };
    s.winrm.username = format!("CORP\\{sam}");
    s.exchange.mode = ExchangeMode::Snapin;
    mailboxd::check::emt_rights(&s).await
}

#[tokio::test]
async fn check_reads_over_ldap_whether_the_account_is_nestedly_in_emt() {
    let ad = TestAd::get();
    let tag = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let emt = ad.ensure_group("Recipient Management EMT").await;
    let nested = ad.add_group(&format!("emt-ops-{tag}")).await;
    ad.add_member(&emt, &nested).await;
    let (inside, outside) = (format!("emt-in-{tag}"), format!("emt-out-{tag}"));
    let (dn, _) = ad.add_user(&inside, &inside, &User::onprem()).await;
    ad.add_member(&nested, &dn).await;
    ad.add_user(&outside, &outside, &User::onprem()).await;

    let member = check_emt(&inside).await;
    assert_eq!(member.status, Status::Ok, "{}", member.detail);
    assert!(
        member.detail.contains("Recipient Management EMT"),
        "{}",
        member.detail
    );
    assert!(
        member.detail.contains("RBAC does not apply"),
        "{}",
        member.detail
    );

    let stranger = check_emt(&outside).await;
    assert_eq!(stranger.status, Status::Fail, "{}", stranger.detail);
    assert!(
        stranger.detail.contains("nor Domain Admins"),
        "{}",
        stranger.detail
    );
    assert!(
        stranger
            .detail
            .contains("add it to \"Recipient Management EMT\""),
        "{}",
        stranger.detail
    );
}

#[tokio::test]
async fn check_finds_domain_admins_by_its_well_known_rid() {
    let ad = TestAd::get();
    let tag = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let admin = format!("emt-da-{tag}");
    let (dn, _) = ad.add_user(&admin, &admin, &User::onprem()).await;
    let domain_admins = format!("CN=Domain Admins,CN=Users,{}", ad.base_dn);
    ad.add_member(&domain_admins, &dn).await;
    let p = check_emt(&admin).await;
    assert_eq!(p.status, Status::Ok, "{}", p.detail);
    assert!(p.detail.contains("Domain Admins"), "{}", p.detail);
    ad.remove_member(&domain_admins, &dn).await;
}
