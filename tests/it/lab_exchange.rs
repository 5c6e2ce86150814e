//! The Exchange driver against the lab's WinRM endpoint: each documented behaviour of the
//! templates, as the lab emulates it, seen through mailboxd's own client.

use crate::common;

use common::account_data as account;

use common::{LAB_PASSWORD, remote, seed};
use lab::{self, Lab};
use mailboxd::config::{self, ExchangeMode};
use mailboxd::exchange::{AccountReply, Exchange, Template};
use mailboxd::job::ErrorClass;
use secrecy::SecretString;
use uuid::Uuid;
use winrm::{Auth, ClientConfig, WinrmClient};

/// A lab whose domain also knows `svc-exch` (a dedicated Exchange service account).
async fn lab_with(accounts: Vec<lab::AccountSeed>) -> Lab {
    let cfg = common::lab_config(accounts)
        .with_domain_account("svc-exch", SecretString::from("Exch-S3cret!"));
    Lab::start(cfg).await.expect("lab starts")
}

/// A lab with CredSSP on (`Enable-WSManCredSSP -Role Server`), for snap-in mode.
async fn credssp_lab_with(accounts: Vec<lab::AccountSeed>) -> Lab {
    let cfg = common::lab_config(accounts).with_credssp(true);
    Lab::start(cfg).await.expect("lab starts")
}

/// A WinRM client for the lab: a domain account over NTLM (sealed over plain HTTP).
fn client(lab: &Lab) -> WinrmClient {
    client_with(lab, Auth::Ntlm)
}

fn client_with(lab: &Lab, auth: Auth) -> WinrmClient {
    WinrmClient::new(common::lab_client_config(lab, auth)).unwrap()
}

/// Remote mode with an explicit Exchange credential (the second hop from an NTLM logon);
/// snap-in mode over CredSSP, whose delegated logon reaches the domain controller.
fn exchange(lab: &Lab, mode: ExchangeMode) -> Exchange {
    let mut ex = config::Exchange {
        mode,
        connection_uris: vec!["http://ex01.corp.example/PowerShell/".into()],
        ..config::Exchange::default()
    };
    if mode == ExchangeMode::Remote {
        ex.username = Some("CORP\\mailboxd".into());
        ex.password = Some(SecretString::from(LAB_PASSWORD));
        return Exchange::new(client(lab), &ex, lab.endpoint());
    }
    Exchange::new(client_with(lab, Auth::CredSsp), &ex, lab.endpoint())
}

fn status(o: &AccountReply) -> String {
    match o {
        AccountReply::Done { outcome } => outcome.to_string(),
        AccountReply::Failed { class, message, .. } => format!("{class:?}: {message}"),
    }
}

#[tokio::test]
async fn one_batch_gives_one_outcome_per_account_in_exchanges_own_words() {
    let onprem = common::onprem("onprem");
    let lab = lab_with(vec![seed("fresh"), remote("already"), onprem]).await;
    let ex = exchange(&lab, ExchangeMode::Remote);
    let accounts = vec![
        account("fresh"),
        account("already"),
        account("onprem"),
        account("nobody"),
    ];
    let ids: Vec<Uuid> = accounts.iter().map(|a| a.job_id).collect();
    let r = ex
        .run_batch(Template::EnableRemoteMailbox, accounts)
        .await
        .unwrap();

    assert_eq!(status(&r.outcomes[&ids[0]]), "enabled");
    assert_eq!(status(&r.outcomes[&ids[1]]), "already");
    match &r.outcomes[&ids[2]] {
        AccountReply::Failed { class, message, .. } => {
            assert_eq!(*class, ErrorClass::Permanent);
            assert!(message.contains("is of type UserMailbox"), "{message}");
        }
        other => panic!("on-prem mailbox must fail: {other:?}"),
    }
    match &r.outcomes[&ids[3]] {
        AccountReply::Failed { class, message, .. } => {
            assert_eq!(
                *class,
                ErrorClass::Transient,
                "not on the DC yet may be replication"
            );
            assert!(
                message.contains("couldn't be found on 'dc1.corp.example'"),
                "{message}"
            );
        }
        other => panic!("unknown account must fail: {other:?}"),
    }
    // One session for the whole batch; the remote mode went to the configured server.
    assert_eq!(lab.stats().exchange_sessions, 1);
    let calls = lab.invocations();
    assert_eq!(calls[0].cmdlet, "New-PSSession");
    assert_eq!(
        calls[0].text("ConnectionUri"),
        Some("http://ex01.corp.example/PowerShell/")
    );
}

#[tokio::test]
async fn a_proxy_address_in_use_is_a_permanent_error() {
    let lab = lab_with(vec![remote("first"), seed("second")]).await;
    let ex = exchange(&lab, ExchangeMode::Remote);
    let mut a = account("second");
    a.primary_smtp_address = Some("first@corp.example".into());
    let id = a.job_id;
    let r = ex
        .run_batch(Template::EnableRemoteMailbox, vec![a])
        .await
        .unwrap();
    match &r.outcomes[&id] {
        AccountReply::Failed { class, message, .. } => {
            assert_eq!(*class, ErrorClass::Permanent);
            assert!(
                message.starts_with("ProxyAddressExistsException"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn hiding_is_idempotent_and_never_touches_a_non_remote_account() {
    let lab = credssp_lab_with(vec![remote("leaver").disabled(), seed("plain")]).await;
    let ex = exchange(&lab, ExchangeMode::Snapin);
    let first = account("leaver");
    let plain = account("plain");
    let (a, p) = (first.job_id, plain.job_id);
    let r = ex
        .run_batch(Template::HideRemoteMailbox, vec![first, plain])
        .await
        .unwrap();
    assert_eq!(status(&r.outcomes[&a]), "hidden");
    assert_eq!(status(&r.outcomes[&p]), "not_remote");
    let again = account("leaver");
    let id = again.job_id;
    let r = ex
        .run_batch(Template::HideRemoteMailbox, vec![again])
        .await
        .unwrap();
    assert_eq!(status(&r.outcomes[&id]), "already");
    let sets = lab.invocations_of("Set-RemoteMailbox");
    assert_eq!(sets.len(), 1, "one Set-RemoteMailbox in all");
    assert_eq!(lab.invocations()[0].cmdlet, "Add-PSSnapin");
}

#[tokio::test]
async fn a_wrong_winrm_password_is_a_systemic_batch_error() {
    let lab = lab_with(vec![seed("x")]).await;
    let mut cfg = ClientConfig::new(
        lab.endpoint().parse().unwrap(),
        lab::DEFAULT_USER,
        SecretString::from("wrong"),
    );
    cfg.allow_unencrypted = true;
    let ex = Exchange::new(
        WinrmClient::new(cfg).unwrap(),
        &config::Exchange::default(),
        lab.endpoint(),
    );
    let err = ex
        .run_batch(Template::EnableRemoteMailbox, vec![account("x")])
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Systemic, "{err}");
    assert!(lab.invocations().is_empty());
}

#[tokio::test]
async fn the_explicit_exchange_credential_travels_on_stdin_and_is_never_recorded() {
    let lab = lab_with(vec![seed("cred")]).await;
    let ex_cfg = config::Exchange {
        mode: ExchangeMode::Remote,
        connection_uris: vec!["http://ex01.corp.example/PowerShell/".into()],
        username: Some("CORP\\svc-exch".into()),
        password: Some(SecretString::from("Exch-S3cret!")),
        ..config::Exchange::default()
    };
    let ex = Exchange::new(client(&lab), &ex_cfg, lab.endpoint());
    let a = account("cred");
    let id = a.job_id;
    let r = ex
        .run_batch(Template::EnableRemoteMailbox, vec![a])
        .await
        .unwrap();
    assert_eq!(status(&r.outcomes[&id]), "enabled");
    let calls = lab.invocations();
    assert_eq!(calls[0].text("Credential"), Some("CORP\\svc-exch"));
    let all = serde_json::to_string(&calls).unwrap();
    assert!(!all.contains("Exch-S3cret!"));
}

/// What the host's process listing and event log would show: the same constant command line
/// for every batch, cold or warm, with no account value and no secret in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_on_the_host_holds_no_event_value_and_no_secret() {
    let hostile = "o'brien$(calc)`;\u{2019}x";
    let lab = lab_with(vec![seed(hostile), seed("plain")]).await;
    for warm in [0, 1] {
        let ex_cfg = config::Exchange {
            mode: ExchangeMode::Remote,
            connection_uris: vec!["http://ex01.corp.example/PowerShell/".into()],
            username: Some("CORP\\svc-exch".into()),
            password: Some(SecretString::from("Exch-S3cret!")),
            warm_sessions: warm,
            ..config::Exchange::default()
        };
        let ex = Exchange::new(client(&lab), &ex_cfg, lab.endpoint());
        for who in [hostile, "plain"] {
            ex.run_batch(Template::HideRemoteMailbox, vec![account(who)])
                .await
                .unwrap();
        }
        ex.close().await;
    }
    let lines = lab.command_lines();
    assert!(lines.len() >= 3, "{lines:?}");
    let cold = format!(
        "powershell.exe {}",
        ps_templates::command_arguments().join(" ")
    );
    let warm = format!(
        "powershell.exe {}",
        ps_templates::serve_arguments().join(" ")
    );
    for l in &lines {
        assert!(*l == cold || *l == warm, "an unexpected command line: {l}");
        for value in [
            hostile,
            "plain",
            "brien",
            "Exch-S3cret!",
            LAB_PASSWORD,
            "svc-exch",
        ] {
            assert!(!l.contains(value), "{value:?} on the command line: {l}");
        }
    }
    assert!(lines.contains(&cold) && lines.contains(&warm), "{lines:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_process_lost_with_its_host_is_replaced_without_failing_the_batch() {
    let lab = lab_with(vec![seed("w1"), seed("w2")]).await;
    let addr = lab.addr;
    let ex_cfg = config::Exchange {
        mode: ExchangeMode::Remote,
        connection_uris: vec!["http://ex01.corp.example/PowerShell/".into()],
        username: Some("CORP\\mailboxd".into()),
        password: Some(SecretString::from(LAB_PASSWORD)),
        warm_sessions: 1,
        ..config::Exchange::default()
    };
    let ex = Exchange::new(client(&lab), &ex_cfg, lab.endpoint());
    let a = account("w1");
    let id = a.job_id;
    let r = ex
        .run_batch(Template::EnableRemoteMailbox, vec![a])
        .await
        .unwrap();
    assert_eq!(status(&r.outcomes[&id]), "enabled");
    // The host restarts: the warm process and its shell are gone.
    lab.stop();
    drop(lab);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let lab = loop {
        let mut c = common::lab_config(vec![seed("w1"), seed("w2")]);
        c.listen = addr;
        match Lab::start(c).await {
            Ok(l) => break l,
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await
            }
            Err(e) => panic!("cannot bind {addr} again: {e}"),
        }
    };
    let a = account("w2");
    let id = a.job_id;
    let r = ex
        .run_batch(Template::EnableRemoteMailbox, vec![a])
        .await
        .expect("a fresh warm process takes the batch");
    assert_eq!(status(&r.outcomes[&id]), "enabled");
    assert_eq!(lab.stats().powershell_runs, 1);
    ex.close().await;
}

/// The lab's HTTP API (what an operator's `curl` and the Python peers read) shows the same
/// state as its typed accessors.
/// `GET path` on the lab's own HTTP API, as JSON.
async fn lab_json(lab: &Lab, path: &str) -> serde_json::Value {
    let url = format!("http://{}{path}", lab.addr);
    let r = common::http()
        .get(url)
        .send()
        .await
        .expect("the lab answers");
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json::<serde_json::Value>().await.expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lab_serves_its_state_as_json_under_lab() {
    let lab = lab_with(vec![seed("api1"), remote("api2").disabled()]).await;
    let ex = exchange(&lab, ExchangeMode::Remote);
    ex.run_batch(Template::EnableRemoteMailbox, vec![account("api1")])
        .await
        .unwrap();
    then_lab_invocations_are_the_typed_invocations(&lab).await;
    then_lab_mailboxes_are_the_typed_accounts(&lab).await;
    then_lab_stats_are_the_typed_stats(&lab).await;
}

async fn then_lab_invocations_are_the_typed_invocations(lab: &Lab) {
    let invocations = lab_json(lab, "/lab/invocations").await;
    let typed = lab.invocations();
    assert_eq!(invocations.as_array().map(Vec::len), Some(typed.len()));
    assert_eq!(invocations[0]["cmdlet"], typed[0].cmdlet.as_str());
    let enable = lab.invocations_of("Enable-RemoteMailbox");
    let json_enable: Vec<_> = invocations
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["cmdlet"] == "Enable-RemoteMailbox")
        .collect();
    assert_eq!(json_enable.len(), 1);
    assert_eq!(json_enable[0]["parameters"]["Identity"], "api1");
    assert!(json_enable[0]["error"].is_null());
    assert_eq!(enable[0].identity(), Some("api1"));
}

async fn then_lab_mailboxes_are_the_typed_accounts(lab: &Lab) {
    let mailboxes = lab_json(lab, "/lab/mailboxes").await;
    let api1 = mailboxes
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["sam_account_name"] == "api1")
        .expect("api1 listed");
    assert_eq!(api1["recipient"], "remote");
    assert_eq!(
        api1["object_guid"],
        lab.account("api1").unwrap().object_guid.to_string()
    );
    assert_eq!(
        mailboxes.as_array().map(Vec::len),
        Some(lab.accounts().len())
    );
}

async fn then_lab_stats_are_the_typed_stats(lab: &Lab) {
    let stats = lab_json(lab, "/lab/stats").await;
    assert_eq!(
        stats["stats"]["powershell_runs"],
        lab.stats().powershell_runs
    );
    assert_eq!(stats["stats"]["cmdlets"], lab.stats().cmdlets);
    assert_eq!(stats["accounts"], 2);
    assert_eq!(stats["invocations_by_cmdlet"]["Enable-RemoteMailbox"], 1);
    assert_eq!(stats["throttled"], lab.throttled());
    assert_eq!(
        stats["exchange_sessions_open"],
        lab.exchange_sessions_open() as u64
    );
    assert_eq!(
        stats["exchange_sessions_high_water"],
        lab.exchange_sessions_high_water() as u64
    );
    assert_eq!(lab.successes_per_account("Enable-RemoteMailbox")["api1"], 1);
}
