//! A domain that denies NTLM ("Network security: Restrict NTLM: Incoming NTLM traffic" = Deny
//! all accounts; Microsoft's roadmap disables network NTLM by default in the next Windows
//! Server): the lab refuses NTLM inside Negotiate and inside CredSSP; mailboxd says so, and
//! its CredSSP logs on with Kerberos first, so a host that denies NTLM still admits it.

use crate::common;

use std::time::Duration;

use common::ad::{TestAd, TestKdc};
use lab::wsman::ServiceLogon;
use lab::{Lab, LabConfig};
use secrecy::SecretString;
use winrm::acceptor::KeytabEntry;
use winrm::{Auth, ClientConfig, ShellOptions, WinrmClient, WinrmError};

/// A lab that denies NTLM, accepts CredSSP, and Kerberos tickets for the test KDC's account.
async fn lab_denying_ntlm(kdc: &TestKdc) -> Lab {
    let cfg: LabConfig = common::lab_config(vec![])
        .without_directory()
        .with_credssp(true)
        .with_kerberos(Some(kdc.lab(&["mailboxd-krb"])))
        .with_ntlm_denied(true);
    Lab::start(cfg).await.expect("lab starts")
}

fn client(lab: &Lab, auth: Auth, user: &str, password: &str) -> ClientConfig {
    let mut cc = ClientConfig::new(
        lab.endpoint().parse().unwrap(),
        user,
        SecretString::from(password.to_owned()),
    );
    cc.auth = auth;
    cc.credssp_cert_sha256 = lab.credssp_cert_sha256.iter().cloned().collect();
    cc.connect_timeout = Duration::from_secs(10);
    cc
}

/// The same client with the KDC and the host's SPN: Kerberos is possible.
fn with_kdc(mut cc: ClientConfig, kdc: &TestKdc) -> ClientConfig {
    cc.kdc = Some(kdc.kdc.clone());
    cc.spn = Some(kdc.spn.clone());
    cc
}

async fn whoami(cc: ClientConfig) -> Result<String, WinrmError> {
    let shell = WinrmClient::new(cc)?
        .open_shell(&ShellOptions::default())
        .await?;
    let out = shell.run("whoami", &[], None).await?;
    shell.close().await?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ntlm_with_the_right_password_is_refused_and_the_error_points_to_kerberos() {
    let kdc = TestKdc::get();
    let lab = lab_denying_ntlm(&kdc).await;
    let cc = client(&lab, Auth::Ntlm, lab::DEFAULT_USER, common::LAB_PASSWORD);
    let e = whoami(cc).await.unwrap_err();
    assert!(matches!(e, WinrmError::NtlmRefused), "{e:?}");
    assert!(e.to_string().contains("winrm.auth = kerberos"), "{e}");
    assert!(e.is_systemic(), "one alert, no retry storm");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credssp_over_ntlm_hears_ntlm_blocked_not_a_password_problem() {
    let kdc = TestKdc::get();
    let lab = lab_denying_ntlm(&kdc).await;
    // No KDC configured: CredSSP can only offer NTLM, which this host blocks.
    let cc = client(&lab, Auth::CredSsp, lab::DEFAULT_USER, common::LAB_PASSWORD);
    let e = whoami(cc).await.unwrap_err();
    assert!(matches!(e, WinrmError::NtlmBlocked(_)), "{e:?}");
    assert!(e.to_string().contains("the domain denies NTLM"), "{e}");
    assert!(e.to_string().contains("0xC0000418"), "{e}");
    assert!(
        !e.refuses_credentials(),
        "the password was never in question"
    );
}

/// A host that denies NTLM, whose SPN a fresh service account holds with a known password:
/// Windows answers CredSSP's Kerberos user-to-user with its own TGT, the lab does so too.
async fn kerberos_host_denying_ntlm(kdc: &TestKdc) -> (Lab, String) {
    let tag = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let (sam, spn) = (
        format!("svc-cs-{tag}"),
        format!("HTTP/cs-{tag}.corp.example"),
    );
    let password = format!("Svc-{tag}-Pw1!");
    TestAd::get()
        .add_service_account(&sam, &password, &spn)
        .await;
    let key = KeytabEntry::from_password(&spn, "CORP.EXAMPLE", &sam, &password).unwrap();
    let kerberos = lab::wsman::LabKerberos {
        spn: spn.clone(),
        key,
        allowed: vec!["mailboxd-krb".into()],
        service_logon: Some(ServiceLogon {
            user: format!("{sam}@CORP.EXAMPLE"),
            password: SecretString::from(password),
            kdc: kdc.kdc.clone(),
        }),
    };
    let cfg = common::lab_config(vec![])
        .without_directory()
        .with_credssp(true)
        .with_kerberos(Some(kerberos))
        .with_ntlm_denied(true);
    (Lab::start(cfg).await.expect("lab starts"), spn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credssp_logs_on_with_kerberos_first_where_ntlm_is_denied() {
    let kdc = TestKdc::get();
    let (lab, spn) = kerberos_host_denying_ntlm(&kdc).await;
    let mut cc = with_kdc(client(&lab, Auth::CredSsp, &kdc.user, &kdc.password), &kdc);
    cc.spn = Some(spn);
    let who = whoami(cc).await.expect("CredSSP with Kerberos inside");
    assert!(who.ends_with("\\mailboxd-krb"), "{who}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credssp_with_a_kdc_still_falls_back_to_ntlm_where_ntlm_is_allowed() {
    let kdc = TestKdc::get();
    let lab = Lab::start(
        common::lab_config(vec![])
            .without_directory()
            .with_credssp(true),
    )
    .await
    .expect("lab starts");
    // The lab account is unknown to the KDC: Kerberos is not possible, NTLM is.
    let cc = with_kdc(
        client(&lab, Auth::CredSsp, lab::DEFAULT_USER, common::LAB_PASSWORD),
        &kdc,
    );
    let who = whoami(cc).await.expect("CredSSP falls back to NTLM");
    assert!(who.ends_with(lab::DEFAULT_USER), "{who}");
}
