//! Kerberos against a real KDC (the Samba AD DC the CI script provisions): mailboxd logs on
//! with the account's password, gets a ticket for the lab's SPN, and the lab accepts it with
//! the SPN's key from the keytab Samba exported; the host proves itself back (AP-REP).

mod common;

use std::time::Duration;

use common::ad::TestKdc;
use mailboxd::lab::Lab;
use mailboxd::winrm::{Auth, ClientConfig, ShellOptions, WinrmClient, WinrmError};
use secrecy::SecretString;

async fn lab(kdc: &TestKdc, allowed: &[&str], tls: Option<&std::path::Path>) -> Lab {
    let mut cfg = common::lab_config(vec![]);
    cfg.ldap_listen = None;
    cfg.kerberos = Some(kdc.lab(allowed));
    if let Some(ca) = tls {
        cfg.tls_listen = Some(([127, 0, 0, 1], 0).into());
        cfg.tls_cert_out = Some(ca.to_owned());
    }
    Lab::start(cfg).await.expect("lab")
}

fn client(
    kdc: &TestKdc,
    endpoint: &str,
    password: &str,
    ca: Option<&std::path::Path>,
) -> WinrmClient {
    let mut cfg = ClientConfig::new(
        endpoint.parse().expect("url"),
        kdc.user.clone(),
        SecretString::from(password.to_owned()),
    );
    cfg.auth = Auth::Kerberos;
    cfg.kdc = Some(kdc.kdc.clone());
    // The lab listens on 127.0.0.1; its SPN names lab.corp.example.
    cfg.spn = Some(kdc.spn.clone());
    cfg.ca_file = ca.map(|p| p.to_owned());
    cfg.connect_timeout = Duration::from_secs(10);
    WinrmClient::new(cfg).expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kerberos_runs_commands_sealed_over_http_and_inside_https() {
    let kdc = TestKdc::get();
    let ca = tempfile::NamedTempFile::new().expect("temp");
    let lab = lab(&kdc, &["mailboxd-krb"], Some(ca.path())).await;
    let https = lab.tls_endpoint().expect("TLS listener");
    for endpoint in [lab.endpoint(), https] {
        let c = client(&kdc, &endpoint, &kdc.password, Some(ca.path()));
        let shell = c.open_shell(&ShellOptions::default()).await.expect("shell");
        let out = shell.run("whoami", &[], None).await.expect("whoami");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "lab-iqsvc01\\mailboxd-krb",
            "{endpoint}"
        );
        let out = shell
            .run("more", &[], Some("Zoë Ødegård".as_bytes()))
            .await
            .expect("stdin through sealed messages");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "Zoë Ødegård");
        shell.close().await.expect("close");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_fails_at_the_kdc_with_what_to_check() {
    let kdc = TestKdc::get();
    let lab = lab(&kdc, &["mailboxd-krb"], None).await;
    let c = client(&kdc, &lab.endpoint(), "not-the-password", None);
    match c.open_shell(&ShellOptions::default()).await {
        Err(e @ WinrmError::Kerberos(_)) => {
            let text = e.to_string();
            assert!(
                text.contains("winrm.kdc") && text.contains("password"),
                "{text}"
            );
            assert!(e.is_systemic() && !e.is_transient());
        }
        Err(e) => panic!("expected a Kerberos error, got {e}"),
        Ok(_) => panic!("a wrong password opened a shell"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_the_host_does_not_admit_gets_access_denied() {
    let kdc = TestKdc::get();
    // The ticket is good, but the account is not among the host's remote management users.
    let lab = lab(&kdc, &["someone-else"], None).await;
    let c = client(&kdc, &lab.endpoint(), &kdc.password, None);
    match c.open_shell(&ShellOptions::default()).await {
        Err(e @ WinrmError::AccessDenied(_)) => {
            assert!(e.to_string().contains("Remote Management Users"), "{e}");
        }
        Err(e) => panic!("expected AccessDenied, got {e}"),
        Ok(_) => panic!("an account the host does not admit opened a shell"),
    }
}

#[test]
fn kerberos_contexts_seal_for_each_other() {
    use mailboxd::winrm::kerberos::{KrbAcceptor, KrbInitiator};
    let kdc = TestKdc::get();
    let (mut client, ap_req) = KrbInitiator::start(
        &kdc.user,
        &SecretString::from(kdc.password.clone()),
        &kdc.kdc,
        &kdc.spn,
        Duration::from_secs(10),
    )
    .expect("logon and ticket");
    let lab = kdc.lab(&["mailboxd-krb"]);
    let mut server = KrbAcceptor::new(&lab.spn, &lab.key).expect("acceptor");
    let (ap_rep, who) = server.accept(&ap_req).expect("accept");
    assert_eq!(who, "mailboxd-krb");
    client.finish(&ap_rep).expect("mutual authentication");
    for i in 0..3 {
        let body = client
            .wrap(format!("request {i}").as_bytes())
            .expect("client seals");
        assert_eq!(
            server.unwrap(&body).expect("server unseals"),
            format!("request {i}").as_bytes()
        );
        let reply = server.wrap(b"reply").expect("server seals");
        assert_eq!(client.unwrap(&reply).expect("client unseals"), b"reply");
    }
}
