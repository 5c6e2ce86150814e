//! The second hop through the real daemon: a joiner whose PowerShell process on the host must
//! authenticate onwards to Exchange (remote mode, no Exchange credential) or to a domain
//! controller (snap-in mode). CredSSP delegates the password, so both succeed; NTLM cannot
//! be delegated, so the daemon refuses to start and says why; Kerberos delegation carries the
//! snap-in's LDAP hop only where AD trusts the host for delegation (where it does not, the
//! failure is systemic: the circuit opens, the job keeps its attempts), and never WinRM's hop
//! to Exchange, so the daemon refuses it in remote mode.

use crate::common;

use std::time::Duration;

use common::ad::TestKdc;
use common::{TestEnv, lab_config, seed};
use mailboxd::config::{ExchangeMode, SecondHop, WinrmAuth};
use mailboxd::job::JobState;

/// A lab with CredSSP on, and the daemon's settings to log on with it (the host's CredSSP
/// certificate pinned, as docs/security.md asks).
async fn credssp_env(sam: &str, mode: ExchangeMode) -> TestEnv {
    let mut env = TestEnv::with_lab(lab_config(vec![seed(sam)]).with_credssp(true)).await;
    let pin = env.lab.credssp_cert_sha256.clone().expect("CredSSP is on");
    env.settings.winrm.auth = WinrmAuth::CredSsp;
    env.settings.winrm.credssp_cert_sha256 = vec![pin];
    env.settings.winrm.allow_unencrypted = false;
    env.settings.exchange.mode = mode;
    env.settings.exchange.username = None;
    env.settings.exchange.password = None;
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn over_credssp_a_joiner_succeeds_in_remote_mode_without_an_exchange_credential() {
    let env = credssp_env("hopremote", ExchangeMode::Remote).await;
    // `mailboxd check` tries the second hop for real and names the remedy in force.
    let probe = mailboxd::check::run(&env.settings)
        .await
        .into_iter()
        .find(|p| p.name == "Exchange session")
        .expect("an Exchange probe");
    assert_eq!(
        probe.status,
        mailboxd::check::Status::Ok,
        "{}",
        probe.detail
    );
    assert!(probe.detail.contains("CredSSP"), "{}", probe.detail);
    let app = env.start_daemon().await;
    let ev = env.joiner("hopremote");
    env.publisher().await.publish(&ev).await.expect("published");
    let job = env.wait_succeeded(&ev.id).await;
    assert_eq!(job.attempt, 1, "{job:?}");
    assert!(env.mailbox("hopremote").remote_routing_address.is_some());
    // New-PSSession ran as the delegated logon itself: no -Credential was passed.
    let opened = env.lab.invocations_of("New-PSSession");
    assert!(!opened.is_empty());
    assert!(
        opened
            .iter()
            .all(|i| i.error.is_none() && !i.parameters.contains_key("Credential")),
        "{opened:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn over_credssp_a_joiner_succeeds_in_snapin_mode() {
    let env = credssp_env("hopsnap", ExchangeMode::Snapin).await;
    let app = env.start_daemon().await;
    let ev = env.joiner("hopsnap");
    env.publisher().await.publish(&ev).await.expect("published");
    env.wait_succeeded(&ev.id).await;
    assert!(env.mailbox("hopsnap").remote_routing_address.is_some());
    assert!(!env.lab.invocations_of("Add-PSSnapin").is_empty());
    assert!(env.lab.invocations_of("New-PSSession").is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn over_ntlm_the_daemon_refuses_to_start_and_explains_the_double_hop() {
    for mode in [ExchangeMode::Remote, ExchangeMode::Snapin] {
        let mut env = TestEnv::new(vec![seed("hopntlm")]).await;
        env.settings.winrm.auth = WinrmAuth::Ntlm;
        env.settings.winrm.allow_unencrypted = false;
        env.settings.exchange.mode = mode;
        env.settings.exchange.username = None;
        env.settings.exchange.password = None;
        let refused = match mailboxd::app::App::start(env.settings.clone()).await {
            Ok(_) => panic!("{mode:?} over NTLM without an answer to the second hop started"),
            Err(e) => format!("{e:#}"),
        };
        for words in [
            "exchange.second_hop",
            "double hop",
            "exchange.username",
            "PrincipalsAllowedToDelegateToAccount",
            "Enable-WSManCredSSP -Role Server",
        ] {
            assert!(refused.contains(words), "{mode:?}: {refused}");
        }
        assert!(env.lab.invocations_of("New-PSSession").is_empty());
    }
}

/// The daemon logs on with Kerberos (the test DC's KDC) and claims delegation, in snap-in
/// mode (the hop delegation can carry: LDAP to the DCs).
/// Whether AD trusts the lab's host for (unconstrained) Kerberos delegation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HostInAd {
    TrustedForDelegation,
    NotTrusted,
}

async fn kerberos_env(sam: &str, host: HostInAd) -> TestEnv {
    let kdc = TestKdc::get();
    // The lab admits the account by its name without the realm, as Windows' ACLs do.
    let user = kdc.user.split('@').next().unwrap_or_default().to_owned();
    let cfg = lab_config(vec![seed(sam)])
        .with_kerberos(Some(kdc.lab(&[user.as_str()])))
        .with_delegation(host == HostInAd::TrustedForDelegation);
    let mut env = TestEnv::with_lab(cfg).await;
    let w = &mut env.settings.winrm;
    w.auth = WinrmAuth::Kerberos;
    w.username = kdc.user.clone();
    w.password = Some(secrecy::SecretString::from(kdc.password.clone()));
    w.kdc = Some(kdc.kdc.clone());
    w.spn = Some(kdc.spn.clone());
    w.allow_unencrypted = false;
    env.settings.exchange.second_hop = Some(SecondHop::Delegation);
    env.settings.exchange.mode = ExchangeMode::Snapin;
    env.settings.exchange.username = None;
    env.settings.exchange.password = None;
    env.settings.worker.circuit_cooldown = Duration::from_secs(30);
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kerberos_delegation_claimed_but_not_configured_opens_the_circuit_without_using_attempts() {
    let env = kerberos_env("hopkrb", HostInAd::NotTrusted).await;
    let app = env.start_daemon().await;
    let ev = env.joiner("hopkrb");
    env.publisher().await.publish(&ev).await.expect("published");
    let readyz = env.wait_circuit_open(&app).await;
    let job = env
        .wait_job(&ev.id, |j| {
            j.last_error.is_some() && j.state != JobState::Running
        })
        .await;
    assert_ne!(job.state, JobState::Failed, "{job:?}");
    // Deferred by the open circuit: the attempt was given back.
    assert_eq!(
        job.attempt, 0,
        "a systemic failure uses no attempt: {job:?}"
    );
    let error = job.last_error.unwrap_or_default();
    assert!(error.contains("the second hop failed"), "{error}");
    assert!(error.contains("000004DC"), "{error}");
    assert!(
        readyz.to_string().contains("second hop"),
        "the circuit names the cause: {readyz}"
    );
    assert!(env.mailbox("hopkrb").remote_routing_address.is_none());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kerberos_to_a_host_trusted_for_delegation_makes_the_second_hop() {
    let env = kerberos_env("hopdeleg", HostInAd::TrustedForDelegation).await;
    let app = env.start_daemon().await;
    let ev = env.joiner("hopdeleg");
    env.publisher().await.publish(&ev).await.expect("published");
    env.wait_succeeded(&ev.id).await;
    assert!(env.mailbox("hopdeleg").remote_routing_address.is_some());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kerberos_delegation_does_not_carry_winrms_second_hop_to_exchange() {
    // The lab: a host trusted for delegation, New-PSSession to Exchange without a
    // credential from a Kerberos logon — refused as without delegation.
    let env = kerberos_env("hopwinrm", HostInAd::TrustedForDelegation).await;
    let mut x = env.settings.exchange.clone();
    x.mode = ExchangeMode::Remote;
    let client = env.settings.winrm.client().expect("a Kerberos client");
    let ex = mailboxd::exchange::Exchange::new(client, &x, env.lab.endpoint());
    let e = ex
        .run_batch(
            mailboxd::exchange::Template::EnableRemoteMailbox,
            Vec::new(),
        )
        .await
        .expect_err("delegation carried WinRM's second hop");
    assert!(e.to_string().contains("0x8009030e"), "{e}");
    // mailboxd: refused at start in remote mode, saying why and what works instead.
    let mut settings = env.settings.clone();
    settings.exchange.mode = ExchangeMode::Remote;
    let refused = match mailboxd::app::App::start(settings).await {
        Ok(_) => panic!("remote mode with delegation started"),
        Err(e) => format!("{e:#}"),
    };
    for words in [
        "Doesn't support the second hop for WinRM",
        "snapin mode",
        "explicit Exchange credential",
    ] {
        assert!(refused.contains(words), "{refused}");
    }
}
