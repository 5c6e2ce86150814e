//! The Windows host's own rules, as the lab now enforces them with Windows' texts: the second
//! hop (a WinRS process's logon has no network credentials after NTLM), an AllSigned execution
//! policy, Constrained Language Mode, no Exchange cmdlets in a fresh process, and Exchange
//! sessions that count against PowerShellMaxConcurrency until removed or idled out. Each test
//! shows the lab refusing, and mailboxd saying what it means.

use crate::common;

use common::account_data as account;

use std::time::{Duration, Instant};

use common::{LAB_PASSWORD, seed};
use lab::{Lab, LabConfig, Throttle};
use mailboxd::config::{self, ExchangeMode};
use mailboxd::exchange::{AccountReply, Exchange, ExchangeError, Template};
use mailboxd::job::{ErrorClass, JobEffect};
use mailboxd::windows_host::HostProblem;
use secrecy::SecretString;
use uuid::Uuid;
use winrm::{Auth, ClientConfig, ShellOptions, WinrmClient};

const EXCHANGE_URI: &str = "http://ex01.corp.example/PowerShell/";
const EXCHANGE_USER: &str = "CORP\\mailboxd";

async fn start(cfg: LabConfig) -> Lab {
    let cfg = cfg.with_accounts(vec![seed("alice")]).without_directory();
    Lab::start(cfg).await.expect("lab starts")
}

fn lab_config() -> LabConfig {
    LabConfig::loopback(SecretString::from(LAB_PASSWORD))
}

fn client(lab: &Lab, auth: Auth) -> WinrmClient {
    let mut cfg = ClientConfig::new(
        lab.endpoint().parse().unwrap(),
        lab::DEFAULT_USER,
        SecretString::from(LAB_PASSWORD),
    );
    cfg.auth = auth;
    cfg.allow_unencrypted = auth == Auth::Basic;
    WinrmClient::new(cfg).unwrap()
}

/// Whether the Exchange section names its own account (`exchange.username`/`password`) or
/// leaves the session to the WinRS process's logon (the second hop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Credential {
    Explicit,
    FromLogon,
}

fn exchange_cfg(mode: ExchangeMode, credential: Credential) -> config::Exchange {
    let mut x = config::Exchange {
        mode,
        connection_uris: vec![EXCHANGE_URI.into()],
        ..config::Exchange::default()
    };
    if credential == Credential::Explicit {
        // The lab's domain account: the lab checks the name and the password it was sent.
        x.username = Some(EXCHANGE_USER.into());
        x.password = Some(SecretString::from(LAB_PASSWORD));
    }
    x
}

fn exchange(lab: &Lab, auth: Auth, x: &config::Exchange) -> Exchange {
    Exchange::new(client(lab, auth), x, lab.endpoint())
}

/// The session failure of an empty batch (what `mailboxd check` runs).
async fn session_failure(ex: &Exchange) -> ExchangeError {
    match ex
        .run_batch(Template::EnableRemoteMailbox, Vec::new())
        .await
    {
        Ok(_) => panic!("the session opened"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn after_ntlm_new_pssession_without_a_credential_fails_the_second_hop() {
    let lab = start(lab_config()).await;
    let ex = exchange(
        &lab,
        Auth::Ntlm,
        &exchange_cfg(ExchangeMode::Remote, Credential::FromLogon),
    );
    let e = session_failure(&ex).await;
    let text = e.to_string();
    // Windows' text, as New-PSSession gives it (PowerShell/Win32-OpenSSH#2100).
    assert!(text.contains("The following error with errorcode 0x8009030e occurred while using Kerberos authentication: A specified logon session does not exist. It may already have been terminated."), "{text}");
    assert!(text.contains("1312,PSSessionOpenFailed"), "{text}");
    // Systemic: the circuit opens, no retry is spent on it.
    assert_eq!(e.class(), ErrorClass::Systemic);
    assert_eq!(
        HostProblem::recognise(&text),
        Some(HostProblem::SecondHopExchange)
    );
    let calls = lab.invocations_of("New-PSSession");
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].error.as_deref(),
        Some("PSRemotingTransportException")
    );
    assert_eq!(lab.exchange_sessions_open(), 0);
}

#[tokio::test]
async fn an_explicit_exchange_credential_makes_the_second_hop_after_ntlm() {
    let lab = start(lab_config()).await;
    let ex = exchange(
        &lab,
        Auth::Ntlm,
        &exchange_cfg(ExchangeMode::Remote, Credential::Explicit),
    );
    let a = account("alice");
    let id = a.job_id;
    let run = ex
        .run_batch(Template::EnableRemoteMailbox, vec![a])
        .await
        .expect("the session opens with -Credential");
    assert!(
        matches!(&run.outcomes[&id], AccountReply::Done { outcome } if *outcome == JobEffect::Enabled),
        "{:?}",
        run.outcomes[&id]
    );
    let session = &lab.invocations_of("New-PSSession")[0];
    assert_eq!(session.text("Credential"), Some(EXCHANGE_USER));
    // The session asks for an idle timeout, and the template removes it when done.
    assert_eq!(
        session.parameter("SessionOption"),
        Some(&serde_json::json!({"IdleTimeout": 900000}))
    );
    assert_eq!(lab.invocations_of("Remove-PSSession").len(), 1);
    assert_eq!(lab.exchange_sessions_open(), 0);
}

#[tokio::test]
async fn the_snapin_after_ntlm_binds_anonymously_and_check_reads_a_recipient() {
    let lab = start(lab_config()).await;
    let ex = exchange(
        &lab,
        Auth::Ntlm,
        &exchange_cfg(ExchangeMode::Snapin, Credential::FromLogon),
    );
    // The empty batch reads one recipient, so the failure shows before any real account.
    let text = session_failure(&ex).await.to_string();
    assert!(text.contains("000004DC: LdapErr: DSID-0C090A5C, comment: In order to perform this operation a successful bind must be completed on the connection."), "{text}");
    assert_eq!(
        HostProblem::recognise(&text),
        Some(HostProblem::SecondHopDirectory)
    );
    let read = &lab.invocations_of("Get-RemoteMailbox")[0];
    assert_eq!(read.parameter("ResultSize"), Some(&serde_json::json!(1)));
    // With accounts, the anonymous bind fails each cmdlet; that is the host's set-up, not
    // one account's: the whole batch fails as systemic (circuit, one alert), with the fix.
    let e = ex
        .run_batch(
            Template::EnableRemoteMailbox,
            vec![account("alice"), account("bob")],
        )
        .await
        .expect_err("no account is judged on an anonymous bind");
    assert_eq!(e.class(), ErrorClass::Systemic);
    let text = e.to_string();
    assert!(
        text.starts_with("could not open the Exchange session: the second hop failed"),
        "{text}"
    );
    assert!(text.contains("Enable-WSManCredSSP"), "{text}");
    // Basic logs a local account on (WinRM accepts Basic for local accounts only): no domain
    // identity either, so the snap-in binds anonymously just the same.
    let basic = exchange(
        &lab,
        Auth::Basic,
        &exchange_cfg(ExchangeMode::Snapin, Credential::FromLogon),
    );
    let text = session_failure(&basic).await.to_string();
    assert_eq!(
        HostProblem::recognise(&text),
        Some(HostProblem::SecondHopDirectory),
        "{text}"
    );
}

#[tokio::test]
async fn none_mode_finds_no_exchange_cmdlets_in_a_fresh_process() {
    let lab = start(lab_config()).await;
    let ex = exchange(
        &lab,
        Auth::Basic,
        &exchange_cfg(ExchangeMode::None, Credential::FromLogon),
    );
    let a = account("alice");
    // Not one account's failure: the whole batch, systemic, with what to set.
    let e = ex
        .run_batch(Template::EnableRemoteMailbox, vec![a])
        .await
        .expect_err("no cmdlets, no batch");
    assert_eq!(e.class(), ErrorClass::Systemic);
    let text = e.to_string();
    assert!(
        text.contains("The term 'Enable-RemoteMailbox' is not recognized as the name of a cmdlet, function, script file, or operable program."),
        "{text}"
    );
    assert!(text.contains("set exchange.mode"), "{text}");
    assert!(
        lab.account("alice")
            .unwrap()
            .remote_routing_address
            .is_none()
    );
}

#[tokio::test]
async fn an_import_refused_by_allsigned_removes_its_session_and_leaks_none() {
    let throttle = Throttle {
        max_sessions_per_user: 2,
        ..Throttle::default()
    };
    let lab = start(lab_config().with_all_signed(true).with_throttle(throttle)).await;
    let ex = exchange(
        &lab,
        Auth::Ntlm,
        &exchange_cfg(ExchangeMode::Remote, Credential::Explicit),
    );
    // More failed imports than PowerShellMaxConcurrency allows sessions: none is throttled,
    // because each failed import removes its session.
    for _ in 0..4 {
        let text = session_failure(&ex).await.to_string();
        assert!(
            text.contains(
                "is not digitally signed. You cannot run this script on the current system."
            ),
            "{text}"
        );
        assert!(!text.contains("maximum number of connections"), "{text}");
        assert_eq!(
            HostProblem::recognise(&text),
            Some(HostProblem::ExecutionPolicy)
        );
    }
    assert_eq!(lab.throttled(), 0);
    assert_eq!(lab.invocations_of("Remove-PSSession").len(), 4);
    assert_eq!(lab.exchange_sessions_open(), 0);
}

#[tokio::test]
async fn constrained_language_mode_still_prints_a_fatal_line() {
    let lab = start(lab_config().with_constrained_language(true)).await;
    let ex = exchange(
        &lab,
        Auth::Ntlm,
        &exchange_cfg(ExchangeMode::Remote, Credential::Explicit),
    );
    let e = session_failure(&ex).await;
    let text = e.to_string();
    assert!(text.contains("Cannot set property. Property setting is supported only on core types in this language mode."), "{text}");
    assert_eq!(e.class(), ErrorClass::Systemic);
    assert_eq!(
        HostProblem::recognise(&text),
        Some(HostProblem::ConstrainedLanguage)
    );
}

/// One request to a warm process (serve.ps1) that opens and keeps its session; the process is
/// then killed by deleting its shell, so nothing removes the session.
async fn kill_a_warm_process(lab: &Lab) {
    let c = client(lab, Auth::Ntlm);
    let shell = c.open_shell(&ShellOptions::default()).await.unwrap();
    let args = ps_templates::serve_arguments();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut p = shell
        .start(ps_templates::POWERSHELL, &args, winrm::Stdin::Read)
        .await
        .unwrap();
    let mut data = ps_templates::BatchData {
        session: ps_templates::SessionData {
            mode: ExchangeMode::Remote,
            connection_uris: vec![EXCHANGE_URI.into()],
            view_entire_forest: false,
            warm: true,
            credential: Some(ps_templates::CredentialData {
                username: EXCHANGE_USER.into(),
            }),
            signing_certificate: None,
        },
        accounts: vec![account("alice")],
    };
    data.accounts[0].job_id = Uuid::new_v4();
    let request = ps_templates::WarmRequest {
        id: "1".into(),
        payload: ps_templates::Payload::new(Template::EnableRemoteMailbox, data),
    };
    // serve.ps1 reads the Exchange password's line first, then the requests.
    let mut line = ps_templates::secret_line(Some(LAB_PASSWORD)).unwrap();
    line.extend(serde_json::to_vec(&request).unwrap());
    line.push(b'\n');
    p.send(&line).await.unwrap();
    let mut stdout = Vec::new();
    while !String::from_utf8_lossy(&stdout).contains("MAILBOXD-DONE 1") {
        stdout.extend(p.receive().await.unwrap().stdout);
    }
    shell.close().await.unwrap();
}

#[tokio::test]
async fn a_killed_process_session_counts_until_its_idle_timeout_then_frees() {
    let idle = Duration::from_secs(2);
    let throttle = Throttle {
        max_sessions_per_user: 1,
        ..Throttle::default()
    };
    let lab = start(
        lab_config()
            .with_session_idle_timeout(idle)
            .with_throttle(throttle),
    )
    .await;
    let killed_at = Instant::now();
    kill_a_warm_process(&lab).await;
    assert_eq!(
        lab.exchange_sessions_open(),
        1,
        "the killed process's session still counts"
    );
    let ex = exchange(
        &lab,
        Auth::Ntlm,
        &exchange_cfg(ExchangeMode::Remote, Credential::Explicit),
    );
    // The leak shows up as throttling: PowerShellMaxConcurrency is 1 and the orphan holds it.
    match session_failure(&ex).await {
        ExchangeError::Throttled { .. } => {}
        other => panic!("expected throttling, got {other}"),
    }
    assert!(
        killed_at.elapsed() < idle,
        "the test machine was too slow to see the leak"
    );
    // Then Exchange's idle timeout ends it.
    let deadline = Instant::now() + idle * 10;
    while lab.exchange_sessions_open() > 0 {
        assert!(
            Instant::now() < deadline,
            "the orphaned session never idled out"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(killed_at.elapsed() >= idle);
    ex.run_batch(Template::HideRemoteMailbox, vec![account("alice")])
        .await
        .expect("a session opens once the orphan idled out");
}

/// `mailboxd check`'s Exchange probe against a lab.
async fn check_exchange(lab: &Lab, x: config::Exchange) -> mailboxd::check::Probe {
    let mut s = mailboxd::config::Settings::default();
    s.winrm.endpoint = lab.endpoint();
    s.winrm.auth = mailboxd::config::WinrmAuth::Ntlm;
    s.winrm.username = lab::DEFAULT_USER.into();
    s.winrm.password = Some(SecretString::from(LAB_PASSWORD));
    s.exchange = x;
    let probes = mailboxd::check::run(&s).await;
    probes
        .into_iter()
        .find(|p| p.name == "Exchange session")
        .expect("check has an Exchange probe")
}

#[tokio::test]
async fn check_says_in_words_what_allsigned_and_constrained_language_mean() {
    let signed = start(lab_config().with_all_signed(true)).await;
    let p = check_exchange(
        &signed,
        exchange_cfg(ExchangeMode::Remote, Credential::Explicit),
    )
    .await;
    assert_eq!(p.status, mailboxd::check::Status::Fail);
    assert!(
        p.detail
            .contains("execution policy (AllSigned or Restricted, set by Group Policy"),
        "{}",
        p.detail
    );
    assert!(
        p.detail.contains("Get-ExecutionPolicy -List"),
        "{}",
        p.detail
    );
    let clm = start(lab_config().with_constrained_language(true)).await;
    let p = check_exchange(
        &clm,
        exchange_cfg(ExchangeMode::Remote, Credential::Explicit),
    )
    .await;
    assert_eq!(p.status, mailboxd::check::Status::Fail);
    assert!(
        p.detail
            .contains("Constrained Language Mode (WDAC or AppLocker)"),
        "{}",
        p.detail
    );
    let fine = start(lab_config()).await;
    let p = check_exchange(
        &fine,
        exchange_cfg(ExchangeMode::Remote, Credential::Explicit),
    )
    .await;
    assert_eq!(p.status, mailboxd::check::Status::Ok, "{}", p.detail);
    assert!(p.detail.contains("read a recipient"), "{}", p.detail);
}

#[tokio::test]
async fn check_names_the_second_hop_and_its_fix_before_and_after_trying_it() {
    let lab = start(lab_config()).await;
    let mut s = mailboxd::config::Settings::default();
    s.winrm.endpoint = lab.endpoint();
    s.winrm.auth = mailboxd::config::WinrmAuth::Ntlm;
    s.winrm.username = lab::DEFAULT_USER.into();
    s.winrm.password = Some(SecretString::from(LAB_PASSWORD));
    s.exchange = exchange_cfg(ExchangeMode::Remote, Credential::FromLogon);
    let probe = |s: mailboxd::config::Settings| async move {
        mailboxd::check::run(&s)
            .await
            .into_iter()
            .find(|p| p.name == "Exchange session")
            .expect("an Exchange probe")
    };
    // No answer configured: refused as the daemon's start would refuse it.
    let p = probe(s.clone()).await;
    assert_eq!(p.status, mailboxd::check::Status::Fail);
    assert!(p.detail.contains("exchange.second_hop"), "{}", p.detail);
    assert!(lab.invocations_of("New-PSSession").is_empty());
    // Delegation needs a Kerberos logon (an NTLM logon is never delegated): refused before
    // anything is tried. tests/it/second_hop.rs tries Kerberos delegation for real.
    s.exchange.second_hop = Some(mailboxd::config::SecondHop::Delegation);
    let p = probe(s).await;
    assert_eq!(p.status, mailboxd::check::Status::Fail);
    assert!(p.detail.contains("winrm.auth"), "{}", p.detail);
    assert!(lab.invocations_of("New-PSSession").is_empty());
}

#[tokio::test]
async fn basic_is_a_local_logon_that_passes_nothing_on_and_mailboxd_refuses_it_at_start() {
    let lab = start(lab_config()).await;
    then_the_lab_gives_a_basic_logon_no_domain_identity(&lab).await;
    then_mailboxd_refuses_basic_without_an_explicit_credential_at_start();
}

/// The lab: a Basic logon's process has no domain identity — remote mode without a
/// credential fails the second hop as an NTLM logon does …
async fn then_the_lab_gives_a_basic_logon_no_domain_identity(lab: &Lab) {
    let ex = exchange(
        lab,
        Auth::Basic,
        &exchange_cfg(ExchangeMode::Remote, Credential::FromLogon),
    );
    let text = session_failure(&ex).await.to_string();
    assert_eq!(
        HostProblem::recognise(&text),
        Some(HostProblem::SecondHopExchange),
        "{text}"
    );
    // … a domain account's name is not accepted over Basic at all …
    let mut cfg = ClientConfig::new(
        lab.endpoint().parse().unwrap(),
        "CORP\\mailboxd",
        SecretString::from(LAB_PASSWORD),
    );
    cfg.auth = Auth::Basic;
    cfg.allow_unencrypted = true;
    let domain = WinrmClient::new(cfg).unwrap();
    let refused = domain.open_shell(&ShellOptions::default()).await;
    assert!(refused.is_err(), "Basic accepted a domain account");
    // … and an explicit Exchange credential is what works from a local logon.
    let ok = exchange(
        lab,
        Auth::Basic,
        &exchange_cfg(ExchangeMode::Remote, Credential::Explicit),
    );
    ok.run_batch(Template::EnableRemoteMailbox, Vec::new())
        .await
        .expect("New-PSSession -Credential from a local logon");
}

/// mailboxd: Basic without an explicit credential, or in snap-in mode, is refused before
/// anything is tried, saying why. The default is a logon a domain account can use.
fn then_mailboxd_refuses_basic_without_an_explicit_credential_at_start() {
    let settings = |mode, credential| {
        let mut s = mailboxd::config::Settings::default();
        s.winrm.auth = mailboxd::config::WinrmAuth::Basic;
        s.exchange = exchange_cfg(mode, credential);
        s
    };
    for (mode, credential) in [
        (ExchangeMode::Remote, Credential::FromLogon),
        (ExchangeMode::Snapin, Credential::FromLogon),
        (ExchangeMode::Snapin, Credential::Explicit),
    ] {
        match settings(mode, credential).validate_exchange() {
            Err(config::ConfigError::Invalid { key, reason }) => {
                assert_eq!(key, "winrm.auth", "{mode:?}");
                assert!(reason.contains("local account"), "{reason}");
                assert!(reason.contains("kerberos"), "{reason}");
            }
            other => panic!("{mode:?}, credential {credential:?}: {other:?}"),
        }
    }
    assert!(
        settings(ExchangeMode::Remote, Credential::Explicit)
            .validate_exchange()
            .is_ok()
    );
    assert_eq!(
        mailboxd::config::Settings::default().winrm.auth,
        mailboxd::config::WinrmAuth::Kerberos
    );
}

#[tokio::test]
async fn the_exchange_password_reaches_no_cmdlet_parameter_nor_the_module_log() {
    let lab = start(lab_config()).await;
    let cold = exchange(
        &lab,
        Auth::Ntlm,
        &exchange_cfg(ExchangeMode::Remote, Credential::Explicit),
    );
    let mut warm_cfg = exchange_cfg(ExchangeMode::Remote, Credential::Explicit);
    warm_cfg.warm_sessions = 1;
    let warm = exchange(&lab, Auth::Ntlm, &warm_cfg);
    for ex in [&cold, &warm] {
        let a = account("alice");
        let id = a.job_id;
        let run = ex
            .run_batch(Template::HideRemoteMailbox, vec![a])
            .await
            .expect("the session opens with the password from stdin's first line");
        assert!(
            matches!(&run.outcomes[&id], AccountReply::Done { .. }),
            "{:?}",
            run.outcomes[&id]
        );
    }
    warm.close().await;
    // Both processes read the request through ConvertFrom-Json, which module logging
    // records with its input: the request is there, the password is not.
    let log = lab.module_log();
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(log.iter().all(|e| e.contains("alice")), "{log:?}");
    let invocations = lab.invocations();
    assert!(invocations.iter().any(|i| i.cmdlet == "New-PSSession"));
    for text in log.iter().cloned().chain(
        invocations
            .iter()
            .map(|i| serde_json::to_string(&i.parameters).unwrap()),
    ) {
        assert!(
            !text.contains(LAB_PASSWORD),
            "the password was logged: {text}"
        );
    }
    // The lab does check the password it was given: a wrong one is refused.
    let mut wrong = exchange_cfg(ExchangeMode::Remote, Credential::Explicit);
    wrong.password = Some(SecretString::from("not-the-password"));
    let text = session_failure(&exchange(&lab, Auth::Ntlm, &wrong))
        .await
        .to_string();
    assert!(text.contains("Access is denied."), "{text}");
    assert!(text.contains("AccessDenied,PSSessionOpenFailed"), "{text}");
}

#[tokio::test]
async fn a_host_that_refuses_remote_shells_is_systemic_and_names_the_policy() {
    let lab = start(lab_config().with_remote_shells_disabled(true)).await;
    let ex = exchange(
        &lab,
        Auth::Ntlm,
        &exchange_cfg(ExchangeMode::Remote, Credential::Explicit),
    );
    let e = ex
        .run_batch(Template::EnableRemoteMailbox, vec![account("alice")])
        .await
        .expect_err("a shell opened on a host that refuses them");
    let text = e.to_string();
    // Windows' own words (jpboyce/cb_cis_windows_2016#5), then what to change.
    assert!(
        text.contains("The WS-Management service cannot process the request. The service is configured to not accept any remote shell requests"),
        "{text}"
    );
    assert!(text.contains("Allow Remote Shell Access"), "{text}");
    // The host's set-up, not the account's: systemic (the circuit opens, no attempts used).
    assert_eq!(e.class(), ErrorClass::Systemic, "{text}");
    assert!(lab.invocations().is_empty());
    assert!(
        lab.account("alice")
            .unwrap()
            .remote_routing_address
            .is_none()
    );
    // `mailboxd check` says the same.
    let p = check_exchange(
        &lab,
        exchange_cfg(ExchangeMode::Remote, Credential::Explicit),
    )
    .await;
    assert_eq!(p.status, mailboxd::check::Status::Fail);
    assert!(
        p.detail.contains("Allow Remote Shell Access"),
        "{}",
        p.detail
    );
}
