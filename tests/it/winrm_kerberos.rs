//! Kerberos against a real KDC (the Samba AD DC the CI script provisions): mailboxd logs on
//! with the account's password, gets a ticket for the lab's SPN, and the lab accepts it with
//! the SPN's key from the keytab Samba exported; the host proves itself back (AP-REP).

use crate::common;

use std::time::Duration;

use common::ad::TestKdc;
use lab::Lab;
use secrecy::SecretString;
use winrm::acceptor::CbtHardening;
use winrm::{Auth, ClientConfig, ShellOptions, WinrmClient, WinrmError};

async fn lab(kdc: &TestKdc, allowed: &[&str], tls: Option<&std::path::Path>) -> Lab {
    let mut cfg = common::lab_config(vec![])
        .without_directory()
        .with_kerberos(Some(kdc.lab(allowed)));
    if let Some(ca) = tls {
        cfg = cfg.with_tls(lab::LOOPBACK_ANY_PORT, Some(ca.to_owned()));
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
            // The KDC's refusal by its RFC 4120 name, and what to fix.
            assert!(
                text.contains("KDC_ERR_PREAUTH_FAILED") && text.contains("winrm.password_file"),
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
    use winrm::acceptor::KrbAcceptor;
    use winrm::kerberos::KrbInitiator;
    let kdc = TestKdc::get();
    let (mut client, ap_req) = KrbInitiator::start(
        &kdc.user,
        &SecretString::from(kdc.password.clone()),
        &kdc.kdc,
        &kdc.spn,
        Duration::from_secs(10),
        None,
    )
    .expect("logon and ticket");
    let lab = kdc.lab(&["mailboxd-krb"]);
    let mut server = KrbAcceptor::new(&lab.spn, &lab.key).expect("acceptor");
    let (ap_rep, who) = server
        .accept(&ap_req, None, CbtHardening::Relaxed)
        .expect("accept");
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

/// http.sys with CbtHardeningLevel Strict refuses Negotiate without a channel binding token,
/// Kerberos included (HTTP_AUTHENTICATION_HARDENING_LEVELS): the binding travels in the
/// authenticator checksum's Bnd field (RFC 4121 §4.1.1.2).
#[test]
fn a_strict_acceptor_takes_only_a_kerberos_authenticator_bound_to_its_tls_channel() {
    use winrm::acceptor::KrbAcceptor;
    use winrm::kerberos::KrbInitiator;
    let kdc = TestKdc::get();
    let lab = kdc.lab(&["mailboxd-krb"]);
    let ours = winrm::ntlm::tls_server_end_point(b"the listener's certificate");
    let theirs = winrm::ntlm::tls_server_end_point(b"a man in the middle's certificate");
    let attempt = |client_binding: Option<&[u8]>, hardening| {
        let (_, ap_req) = KrbInitiator::start(
            &kdc.user,
            &SecretString::from(kdc.password.clone()),
            &kdc.kdc,
            &kdc.spn,
            Duration::from_secs(10),
            client_binding,
        )
        .expect("logon and ticket");
        let mut server = KrbAcceptor::new(&lab.spn, &lab.key).expect("acceptor");
        server
            .accept(&ap_req, Some(&ours), hardening)
            .map(|(_, who)| who)
    };
    assert_eq!(
        attempt(Some(&ours), CbtHardening::Strict).expect("bound to our channel"),
        "mailboxd-krb"
    );
    let unbound = attempt(None, CbtHardening::Strict).expect_err("no binding under Strict");
    assert!(unbound.to_string().contains("Strict"), "{unbound}");
    let relayed = attempt(Some(&theirs), CbtHardening::Strict).expect_err("another channel");
    assert!(
        relayed.to_string().contains("another TLS channel"),
        "{relayed}"
    );
    assert!(attempt(Some(&theirs), CbtHardening::Relaxed).is_err());
    assert!(attempt(None, CbtHardening::Relaxed).is_ok());
}

/// mailboxd's client binds its Kerberos logon to the host's certificate over HTTPS, so a host
/// with CbtHardeningLevel Strict lets it in; so does pywinrm's (requests-kerberos sends the
/// binding by default), which shows both ends agree on the binding's form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kerberos_over_https_passes_strict_channel_binding_hardening() {
    let kdc = TestKdc::get();
    let ca = tempfile::NamedTempFile::new().expect("temp");
    let mut cfg = common::lab_config(vec![]);
    cfg.ldap_listen = None;
    cfg.kerberos = Some(kdc.lab(&["mailboxd-krb"]));
    cfg.tls_listen = Some(([127, 0, 0, 1], 0).into());
    cfg.tls_cert_out = Some(ca.path().to_owned());
    cfg.cbt_hardening = CbtHardening::Strict;
    let lab = Lab::start(cfg).await.expect("lab");
    let https = lab.tls_endpoint().expect("TLS listener");
    let c = client(&kdc, &https, &kdc.password, Some(ca.path()));
    let shell = c.open_shell(&ShellOptions::default()).await.expect("shell");
    let out = shell.run("whoami", &[], None).await.expect("whoami");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "lab-iqsvc01\\mailboxd-krb"
    );
    shell.close().await.expect("close");
    let out = pywinrm_kerberos(&kdc, https, Some(ca.path())).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.lines().filter(|l| l.starts_with("ok ")).count(), 3);
}

/// pywinrm's Kerberos transport (pykerberos, MIT krb5, a ticket from `kinit`) as an
/// independent client: its AP-REQ, our AP-REP, its sealed messages and ours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pywinrm_speaks_kerberos_to_the_lab() {
    let kdc = TestKdc::get();
    let lab = lab(&kdc, &["mailboxd-krb"], None).await;
    let out = pywinrm_kerberos(&kdc, lab.endpoint(), None).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok ")).count(),
        3,
        "{stdout}"
    );
}

/// Runs tests/peers/pywinrm_kerberos.py against `endpoint` with a ticket `kinit` got from
/// the test KDC; `ca` is the lab's certificate for an https endpoint.
async fn pywinrm_kerberos(
    kdc: &TestKdc,
    endpoint: String,
    ca: Option<&std::path::Path>,
) -> std::process::Output {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().expect("temp dir");
    let conf = dir.path().join("krb5.conf");
    let host_port = kdc.kdc.trim_start_matches("tcp://").to_owned();
    std::fs::write(
        &conf,
        format!(
            "[libdefaults]\n default_realm = CORP.EXAMPLE\n dns_lookup_kdc = false\n rdns = false\n dns_canonicalize_hostname = false\n udp_preference_limit = 1\n[realms]\n CORP.EXAMPLE = {{\n  kdc = {host_port}\n }}\n[domain_realm]\n .corp.example = CORP.EXAMPLE\n"
        ),
    )
    .expect("krb5.conf");
    let ccache = format!("FILE:{}", dir.path().join("cc").display());
    let have = Command::new("python3")
        .args(["-c", "import winrm, kerberos"])
        .status();
    assert!(
        have.is_ok_and(|s| s.success()),
        "pywinrm or pykerberos is missing: deploy/dev/services.sh installs them"
    );
    let mut kinit = Command::new("kinit")
        .arg(&kdc.user)
        .env("KRB5_CONFIG", &conf)
        .env("KRB5CCNAME", &ccache)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("kinit (krb5-user) runs");
    kinit
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{}\n", kdc.password).as_bytes())
        .expect("password to kinit");
    assert!(kinit.wait().expect("kinit").success(), "kinit failed");
    let spn_host = kdc.spn.split('/').nth(1).expect("SPN host").to_owned();
    let script = format!(
        "{}/tests/peers/pywinrm_kerberos.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut args = vec![script, endpoint, spn_host];
    args.extend(ca.map(|p| p.display().to_string()));
    tokio::task::spawn_blocking(move || {
        let out = Command::new("python3")
            .args(args)
            .env("KRB5_CONFIG", &conf)
            .env("KRB5CCNAME", &ccache)
            .output()
            .expect("python3 runs");
        drop(dir);
        out
    })
    .await
    .expect("join")
}
