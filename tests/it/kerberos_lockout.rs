//! Kerberos refusals never lock the service account (issue 31, item E), against the Samba
//! KDC: each refusal an administrator must mend (a wrong password, an unknown SPN or account,
//! a disabled account) is recognised by its RFC 4120 code and says what to fix; through the
//! daemon, the first one opens the circuit, and no further bad password reaches the KDC while
//! AD's lockout window lasts (the account's badPwdCount, as AD counts it, stays put).

use crate::common;

use std::time::{Duration, Instant};

use common::ad::{TestAd, TestKdc, User};
use common::{TestEnv, lab_config, seed};
use lab::Lab;
use mailboxd::config::WinrmAuth;
use secrecy::SecretString;
use winrm::{Auth, ClientConfig, KdcRefusal, ShellOptions, WinrmClient, WinrmError};

fn realm(kdc: &TestKdc) -> String {
    kdc.user.split('@').nth(1).unwrap_or_default().to_owned()
}

/// A fresh AD account with a password (Kerberos needs one), and its DN.
async fn account(ad: &TestAd, password: &str) -> (String, String) {
    let sam = format!("krb-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let (dn, _) = ad.add_user(&sam, &sam, &User::default()).await;
    ad.set_password(&dn, password).await;
    (sam, dn)
}

fn client(kdc: &TestKdc, lab: &Lab, user: &str, password: &str, spn: &str) -> WinrmClient {
    let mut cfg = ClientConfig::new(
        lab.endpoint().parse().expect("url"),
        user.to_owned(),
        SecretString::from(password.to_owned()),
    );
    cfg.auth = Auth::Kerberos;
    cfg.kdc = Some(kdc.kdc.clone());
    cfg.spn = Some(spn.to_owned());
    cfg.connect_timeout = Duration::from_secs(10);
    WinrmClient::new(cfg).expect("client")
}

async fn refusal(c: &WinrmClient) -> WinrmError {
    match c.open_shell(&ShellOptions::default()).await {
        Ok(_) => panic!("the KDC let a refused logon through"),
        Err(e) => e,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kdc_refusal_is_named_with_what_to_fix() {
    let kdc = TestKdc::get();
    let ad = TestAd::get();
    let realm = realm(&kdc);
    let lab = Lab::start(lab_config(vec![]).with_kerberos(Some(kdc.lab(&["mailboxd-krb"]))))
        .await
        .expect("lab");
    let cases = [
        (
            client(&kdc, &lab, &kdc.user, "not-the-password", &kdc.spn),
            KdcRefusal::PreauthFailed,
            "KDC_ERR_PREAUTH_FAILED (24)",
            "winrm.password_file",
        ),
        (
            client(
                &kdc,
                &lab,
                &kdc.user,
                &kdc.password,
                "HTTP/nosuch.corp.example",
            ),
            KdcRefusal::ServiceUnknown,
            "KDC_ERR_S_PRINCIPAL_UNKNOWN (7)",
            "setspn",
        ),
        (
            client(&kdc, &lab, &format!("nobody-here@{realm}"), "x", &kdc.spn),
            KdcRefusal::ClientUnknown,
            "KDC_ERR_C_PRINCIPAL_UNKNOWN (6)",
            "user@REALM",
        ),
    ];
    for (c, expected, code, fix) in cases {
        let e = refusal(&c).await;
        let text = e.to_string();
        assert_eq!(e.kdc_refusal(), Some(expected), "{text}");
        assert!(text.contains(code) && text.contains(fix), "{text}");
        assert!(e.refuses_credentials() && e.is_systemic(), "{text}");
    }
    // A disabled account: the KDC revokes its credentials.
    let (sam, dn) = account(&ad, "Disabled-Pa55word!").await;
    ad.disable(&dn).await;
    let e = refusal(&client(
        &kdc,
        &lab,
        &format!("{sam}@{realm}"),
        "Disabled-Pa55word!",
        &kdc.spn,
    ))
    .await;
    assert_eq!(e.kdc_refusal(), Some(KdcRefusal::ClientRevoked), "{e}");
    assert!(
        e.to_string().contains("disabled, locked out or expired"),
        "{e}"
    );
}

#[test]
fn etype_and_skew_refusals_say_what_to_fix() {
    // Not reproducible against the test KDC (its accounts all have AES keys, its clock is
    // ours): sspi's descriptions of KDC_ERR_ETYPE_NOSUPP and KRB_AP_ERR_SKEW.
    let etype = WinrmError::Kerberos("KDC has no support for encryption type".into());
    assert_eq!(etype.kdc_refusal(), Some(KdcRefusal::EtypeNotSupported));
    assert!(
        etype
            .to_string()
            .contains("reset the password of winrm.username so it gets AES keys"),
        "{etype}"
    );
    let skew = WinrmError::Kerberos("clock skew too great".into());
    assert_eq!(skew.kdc_refusal(), Some(KdcRefusal::ClockSkew));
    assert!(skew.to_string().contains("NTP"), "{skew}");
    // A KDC that does not answer is no refusal of the credentials.
    let down = WinrmError::Kerberos("cannot reach the KDC at tcp://dc1:88".into());
    assert!(!down.refuses_credentials());
}

/// A fresh AD account under the Windows baseline's lockout threshold (10: AD counts bad
/// passwords only where a threshold applies), and a daemon given a wrong password for it.
/// Returns the account's DN.
async fn given_a_daemon_with_a_wrong_kerberos_password(
    kdc: &TestKdc,
    ad: &TestAd,
) -> (TestEnv, String) {
    let (sam, dn) = account(ad, "Right-Pa55word!").await;
    ad.lockout_policy(&dn, 10).await;
    let cfg = lab_config(vec![seed("lockme")]).with_kerberos(Some(kdc.lab(&[sam.as_str()])));
    let mut env = TestEnv::with_lab(cfg).await;
    let w = &mut env.settings.winrm;
    w.auth = WinrmAuth::Kerberos;
    w.username = format!("{sam}@{}", realm(kdc));
    w.password = Some(SecretString::from("Wrong-Pa55word!"));
    w.kdc = Some(kdc.kdc.clone());
    w.spn = Some(kdc.spn.clone());
    // An ordinary outage would be probed every 200 ms (doubling): refused credentials wait
    // for worker.credential_probe_interval (its default, 30 min) instead.
    env.settings.worker.circuit_cooldown = Duration::from_millis(200);
    (env, dn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wrong_kerberos_password_opens_the_circuit_and_sends_no_more_bad_passwords() {
    let kdc = TestKdc::get();
    let ad = TestAd::get();
    let (env, dn) = given_a_daemon_with_a_wrong_kerberos_password(&kdc, &ad).await;
    let before = ad.bad_pwd_count(&dn).await;
    let app = env.start_daemon().await;
    let ev = env.joiner("lockme");
    env.publisher().await.publish(&ev).await.expect("published");
    then_the_circuit_opens_until_the_lockout_window_ends(&env, &app).await;
    let opened = ad.bad_pwd_count(&dn).await;
    assert!(
        opened > before,
        "AD counted the bad password ({before} → {opened})"
    );
    // Ten ordinary cooldowns later: no further bad password reached the KDC.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        ad.bad_pwd_count(&dn).await,
        opened,
        "the daemon kept sending the bad password"
    );
    then_the_job_waits_without_attempts_and_one_alert_says_what_to_fix(&env, &ev.id).await;
    app.stop().await;
}

async fn then_the_circuit_opens_until_the_lockout_window_ends(
    env: &TestEnv,
    app: &mailboxd::app::App,
) {
    let readyz = env.wait_circuit_open(app).await;
    let reason = readyz["circuit"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(reason.contains("KDC_ERR_PREAUTH_FAILED"), "{readyz}");
    let retry_in = readyz["circuit"]["retry_in_s"].as_u64().unwrap_or_default();
    assert!(
        retry_in > 29 * 60,
        "the next probe waits for the lockout window: {readyz}"
    );
}

/// The job waits without spending attempts; one alert says what to fix.
async fn then_the_job_waits_without_attempts_and_one_alert_says_what_to_fix(
    env: &TestEnv,
    event: &str,
) {
    let job = env
        .wait_job(event, |j| {
            j.last_error.is_some() && j.state != mailboxd::job::JobState::Running
        })
        .await;
    assert_eq!(job.attempt, 0, "{job:?}");
    let alerts = env.store.list_alerts(20).await.expect("alerts");
    let circuit: Vec<_> = alerts
        .iter()
        .filter(|a| a.body.contains("KDC_ERR_PREAUTH_FAILED"))
        .collect();
    assert_eq!(circuit.len(), 1, "{alerts:?}");
    assert!(
        circuit[0].body.contains("winrm.password_file"),
        "{}",
        circuit[0].body
    );
}
