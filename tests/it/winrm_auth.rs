//! The WinRM client against the lab for each way a Windows host is reached: Basic over
//! HTTP and HTTPS, NTLM with message encryption over HTTP, NTLM with channel binding over
//! HTTPS; and what goes wrong: a wrong password, an untrusted certificate, a shell quota,
//! an oversized envelope, receives that time out before the command ends.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lab::wsman::{WsmanConfig, router};
use lab::{self, Lab};
use secrecy::SecretString;
use winrm::acceptor::CbtHardening;
use winrm::{Auth, ClientConfig, ShellOptions, WinrmClient, WinrmError};

struct TlsLab {
    lab: Lab,
    ca: tempfile::NamedTempFile,
}

async fn lab_with_tls(hardening: CbtHardening, max_shells: usize) -> TlsLab {
    let ca = tempfile::NamedTempFile::new().expect("temp file");
    let cfg = common::lab_config(vec![])
        .without_directory()
        .with_max_shells_per_user(max_shells)
        .with_tls(lab::LOOPBACK_ANY_PORT, Some(ca.path().to_owned()))
        .with_cbt_hardening(hardening);
    let lab = Lab::start(cfg).await.expect("lab starts");
    TlsLab { lab, ca }
}

fn client(endpoint: &str, auth: Auth, password: &str, ca: Option<&std::path::Path>) -> WinrmClient {
    let mut cfg = ClientConfig::new(
        endpoint.parse().expect("endpoint URL"),
        lab::DEFAULT_USER,
        SecretString::from(password),
    );
    cfg.auth = auth;
    cfg.allow_unencrypted = auth == Auth::Basic && endpoint.starts_with("http:");
    cfg.ca_file = ca.map(|p| p.to_owned());
    cfg.connect_timeout = Duration::from_secs(5);
    WinrmClient::new(cfg).expect("client")
}

/// Opens a shell, runs `hostname` and `whoami` and a UTF-8 echo through stdin, closes it.
async fn round_trip(c: &WinrmClient) {
    let shell = c.open_shell(&ShellOptions::default()).await.expect("shell");
    let out = shell.run("hostname", &[], None).await.expect("hostname");
    assert_eq!(out.stdout, b"LAB-IQSVC01\r\n");
    let out = shell.run("whoami", &[], None).await.expect("whoami");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("lab-iqsvc01\\{}", lab::DEFAULT_USER)
    );
    shell.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_auth_mode_runs_commands_on_the_lab() {
    let t = lab_with_tls(CbtHardening::Strict, 30).await;
    let http = t.lab.endpoint();
    let https = t.lab.tls_endpoint().expect("TLS listener");
    let ca = Some(t.ca.path());
    round_trip(&client(&http, Auth::Basic, common::LAB_PASSWORD, None)).await;
    round_trip(&client(&https, Auth::Basic, common::LAB_PASSWORD, ca)).await;
    // Sealed messages over plain HTTP; the lab refuses to unseal anything out of sequence.
    round_trip(&client(&http, Auth::Ntlm, common::LAB_PASSWORD, None)).await;
    // Strict channel binding: the lab lets in only a client that bound NTLM to its certificate.
    round_trip(&client(&https, Auth::Ntlm, common::LAB_PASSWORD, ca)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ntlm_keeps_one_authenticated_connection_and_runs_many_commands_on_it() {
    let t = lab_with_tls(CbtHardening::Relaxed, 30).await;
    let c = client(&t.lab.endpoint(), Auth::Ntlm, common::LAB_PASSWORD, None);
    let shell = c.open_shell(&ShellOptions::default()).await.expect("shell");
    for i in 0..20 {
        let text = format!("Zoë Ødegård {i}");
        let out = shell
            .run("more", &[], Some(text.as_bytes()))
            .await
            .expect("command on the same connection");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(&text),
            "{:?}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    shell.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_a_clear_auth_error_not_a_hang() {
    let t = lab_with_tls(CbtHardening::Relaxed, 30).await;
    let https = t.lab.tls_endpoint().expect("TLS listener");
    for (endpoint, auth) in [
        (t.lab.endpoint(), Auth::Basic),
        (t.lab.endpoint(), Auth::Ntlm),
        (https.clone(), Auth::Ntlm),
    ] {
        let started = Instant::now();
        let c = client(&endpoint, auth, "not-the-password", Some(t.ca.path()));
        match c.open_shell(&ShellOptions::default()).await {
            Err(e @ (WinrmError::Unauthorized | WinrmError::NtlmRefused)) => {
                assert!(e.to_string().contains("winrm.username"), "{e}")
            }
            Err(e) => panic!("{auth:?} {endpoint}: expected Unauthorized, got {e}"),
            Ok(_) => panic!("{auth:?} {endpoint}: a wrong password opened a shell"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "answered at once"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_nobody_vouches_for_is_refused_unless_its_ca_is_configured() {
    let t = lab_with_tls(CbtHardening::Relaxed, 30).await;
    let https = t.lab.tls_endpoint().expect("TLS listener");
    for auth in [Auth::Basic, Auth::Ntlm] {
        let c = client(&https, auth, common::LAB_PASSWORD, None);
        match c.open_shell(&ShellOptions::default()).await {
            Err(e @ WinrmError::Tls(_)) => {
                assert!(e.to_string().contains("ca_file"), "says what to check: {e}")
            }
            Err(e) => panic!("{auth:?}: expected a TLS error, got {e}"),
            Ok(_) => panic!("{auth:?}: an untrusted certificate was accepted"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shell_quota_is_a_typed_retryable_error() {
    let t = lab_with_tls(CbtHardening::Relaxed, 2).await;
    let c = client(&t.lab.endpoint(), Auth::Ntlm, common::LAB_PASSWORD, None);
    let a = c.open_shell(&ShellOptions::default()).await.expect("first");
    let _b = c
        .open_shell(&ShellOptions::default())
        .await
        .expect("second");
    match c.open_shell(&ShellOptions::default()).await {
        Err(e @ WinrmError::ShellQuota(_)) => {
            assert!(e.is_transient());
            assert!(e.to_string().contains("MaxShellsPerUser"), "{e}");
        }
        Err(e) => panic!("expected ShellQuota, got {e}"),
        Ok(_) => panic!("a third shell beyond MaxShellsPerUser = 2"),
    }
    a.close().await.expect("close");
    c.open_shell(&ShellOptions::default())
        .await
        .expect("a closed shell frees its quota");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envelope_above_max_envelope_size_is_refused_with_what_to_change() {
    let cfg = common::lab_config(vec![])
        .without_directory()
        .with_max_envelope_kb(150);
    let lab = Lab::start(cfg).await.expect("lab");
    // A client told the host takes 500 KB sends 350 KB chunks: the host refuses them.
    let mut cc = ClientConfig::new(
        lab.endpoint().parse().expect("url"),
        lab::DEFAULT_USER,
        SecretString::from(common::LAB_PASSWORD),
    );
    cc.auth = Auth::Ntlm;
    cc.max_envelope_size = 512_000;
    let c = WinrmClient::new(cc).expect("client");
    let shell = c.open_shell(&ShellOptions::default()).await.expect("shell");
    let data = vec![b'x'; 400 * 1024];
    match shell.run("more", &[], Some(&data)).await {
        Err(e @ WinrmError::EnvelopeTooLarge(_)) => {
            assert!(e.to_string().contains("max_envelope_size"), "{e}")
        }
        Err(e) => panic!("expected EnvelopeTooLarge, got {e}"),
        Ok(_) => panic!("a 350 KB envelope passed a 150 KB limit"),
    }
    // The default client (153,600-byte envelopes) streams the same 400 KiB in chunks that fit.
    let c = client(&lab.endpoint(), Auth::Ntlm, common::LAB_PASSWORD, None);
    let shell = c.open_shell(&ShellOptions::default()).await.expect("shell");
    let out = shell
        .run("more", &[], Some(&data))
        .await
        .expect("chunked stdin");
    assert_eq!(
        out.stdout.iter().filter(|&&b| b == b'x').count(),
        data.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receive_that_times_out_twice_then_completes_is_one_result() {
    // The WS-Management service alone, with a command that takes 2.5 s and OperationTimeout 1 s.
    let faults = Arc::new(AtomicUsize::new(0));
    let counted = faults.clone();
    let app = router(
        WsmanConfig {
            users: vec![("u".into(), SecretString::from("p"))],
            max_shells_per_user: 5,
            max_operation_timeout: Duration::from_secs(60),
            hostname: "T".into(),
            max_envelope_kb: 500,
            cbt_hardening: Default::default(),
            kerberos: None,
            credssp: None,
            trusted_for_delegation: false,
            allow_remote_shell_access: true,
            deny_ntlm: false,
        },
        Arc::new(common::echo_host::EchoHost),
    )
    .layer(axum::middleware::map_response(
        move |r: axum::response::Response| {
            let counted = counted.clone();
            async move {
                if r.status() == 500 {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
                r
            }
        },
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(lab::serve(listener, app, None));
    let mut cfg = ClientConfig::new(
        format!("http://{addr}/wsman").parse().expect("url"),
        "u",
        SecretString::from("p"),
    );
    cfg.auth = Auth::Ntlm;
    cfg.operation_timeout = Duration::from_secs(1);
    let c = WinrmClient::new(cfg).expect("client");
    let shell = c.open_shell(&ShellOptions::default()).await.expect("shell");
    let out = shell
        .run("slow", &[], Some(b""))
        .await
        .expect("slow command");
    assert_eq!(out.stdout, b"late\r\n");
    assert_eq!(
        faults.load(Ordering::SeqCst),
        2,
        "two OperationTimeout faults, both polled through, nothing else"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_unreachable_hosts_are_told_apart() {
    // A port nobody listens on.
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    for auth in [Auth::Basic, Auth::Ntlm] {
        let c = client(&format!("http://127.0.0.1:{port}/wsman"), auth, "x", None);
        match c.open_shell(&ShellOptions::default()).await {
            Err(e @ WinrmError::Refused(_)) => {
                assert!(e.is_transient() && e.is_systemic());
                assert!(e.to_string().contains("firewall"), "{e}");
            }
            Err(e) => panic!("{auth:?}: expected Refused, got {e}"),
            Ok(_) => panic!("nothing listens there"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_process_takes_stdin_in_several_sends_on_a_long_lived_shell() {
    let t = lab_with_tls(CbtHardening::Relaxed, 30).await;
    let c = client(&t.lab.endpoint(), Auth::Ntlm, common::LAB_PASSWORD, None);
    let shell = c.open_shell(&ShellOptions::default()).await.expect("shell");
    for round in 0..3 {
        let mut p = shell
            .start("more", &[], winrm::Stdin::Read)
            .await
            .expect("start");
        p.send(format!("request {round}a\n").as_bytes())
            .await
            .expect("first send");
        p.send(b"request b\n").await.expect("second send");
        p.send_last(b"end\n").await.expect("last send");
        let out = p.wait().await.expect("output");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("request {round}a\nrequest b\nend\n")
        );
        p.terminate().await;
    }
    shell.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_caller_does_not_leak_its_shell() {
    // One shell allowed: if the abandoned one stayed, the next Create would hit the quota.
    let t = lab_with_tls(CbtHardening::Relaxed, 1).await;
    let c = client(&t.lab.endpoint(), Auth::Ntlm, common::LAB_PASSWORD, None);
    let c2 = c.clone();
    let cancelled = tokio::time::timeout(Duration::from_millis(300), async move {
        let shell = c2
            .open_shell(&ShellOptions::default())
            .await
            .expect("shell");
        // Waits on stdin that never closes: only the timeout ends this.
        let mut p = shell
            .start("more", &[], winrm::Stdin::Read)
            .await
            .expect("start");
        p.wait().await
    })
    .await;
    assert!(cancelled.is_err(), "the caller was cancelled");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match c.open_shell(&ShellOptions::default()).await {
            Ok(s) => {
                s.close().await.expect("close");
                break;
            }
            Err(WinrmError::ShellQuota(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("the abandoned shell was not deleted: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_drops_the_connection_gets_a_new_one_authenticated_again() {
    let cfg = common::lab_config(vec![]).without_directory();
    let lab = Lab::start(cfg).await.expect("lab");
    let addr = lab.addr;
    let c = client(&lab.endpoint(), Auth::Ntlm, common::LAB_PASSWORD, None);
    round_trip(&c).await;
    // The host restarts: every connection and its NTLM context are gone.
    lab.stop();
    drop(lab);
    let deadline = Instant::now() + Duration::from_secs(10);
    let _lab = loop {
        let mut cfg = common::lab_config(vec![]).without_directory();
        cfg.listen = addr;
        match Lab::start(cfg).await {
            Ok(l) => break l,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("cannot bind {addr} again: {e}"),
        }
    };
    // The same client carries on: a fresh connection, a fresh handshake, no error surfaced.
    round_trip(&c).await;
}
