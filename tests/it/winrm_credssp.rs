//! CredSSP end to end: the daemon's client and pywinrm (requests-credssp) against the lab, over
//! HTTP (messages encrypted with CredSSP's TLS session) and HTTPS; and the refusals a user
//! meets: wrong password, a host without CredSSP, an unpinned certificate, an old version.

use crate::common;

use std::process::Command;

use lab::{Lab, LabConfig};
use secrecy::SecretString;
use winrm::{Auth, ClientConfig, ShellOptions, WinrmClient, WinrmError};

/// A lab over HTTP and HTTPS (its CA written to `ca`) that accepts CredSSP.
async fn lab(ca: &std::path::Path) -> Lab {
    Lab::start(lab_config(ca).with_credssp(true))
        .await
        .expect("lab starts")
}

/// The same lab as a host where CredSSP is not enabled.
async fn lab_without_credssp(ca: &std::path::Path) -> Lab {
    Lab::start(lab_config(ca)).await.expect("lab starts")
}

/// The lab's configuration with an HTTPS listener whose certificate goes to `ca`.
fn lab_config(ca: &std::path::Path) -> LabConfig {
    common::lab_config(vec![])
        .without_directory()
        .with_tls(lab::LOOPBACK_ANY_PORT, Some(ca.to_owned()))
}

fn client(endpoint: &str, password: &str, pin: Option<&str>, ca: &std::path::Path) -> ClientConfig {
    let mut cc = ClientConfig::new(
        endpoint.parse().unwrap(),
        lab::DEFAULT_USER,
        SecretString::from(password.to_owned()),
    );
    cc.auth = Auth::CredSsp;
    cc.ca_file = Some(ca.to_owned());
    cc.credssp_cert_sha256 = pin.map(|p| vec![p.to_owned()]).unwrap_or_default();
    cc
}

async fn hostname(cc: ClientConfig) -> Result<String, WinrmError> {
    let c = WinrmClient::new(cc)?;
    let shell = c.open_shell(&ShellOptions::default()).await?;
    let out = shell.run("hostname", &[], None).await?;
    shell.close().await?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_runs_commands_over_credssp_on_http_and_https() {
    let ca = tempfile::NamedTempFile::new().unwrap();
    let lab = lab(ca.path()).await;
    let pin = lab.credssp_cert_sha256.clone().expect("CredSSP is on");
    for endpoint in [lab.endpoint(), lab.tls_endpoint().unwrap()] {
        let c = WinrmClient::new(client(
            &endpoint,
            common::LAB_PASSWORD,
            Some(&pin),
            ca.path(),
        ))
        .unwrap();
        let shell = c.open_shell(&ShellOptions::default()).await.unwrap();
        let out = shell.run("hostname", &[], None).await.unwrap();
        assert_eq!(out.stdout, b"LAB-IQSVC01\r\n", "{endpoint}");
        let out = shell.run("whoami", &[], None).await.unwrap();
        assert_eq!(
            out.stdout,
            format!("lab-iqsvc01\\{}\r\n", lab::DEFAULT_USER).as_bytes()
        );
        // Both directions above 16 KiB: multipart/x-multi-encrypted over http.
        let big = "y".repeat(20_000);
        let out = shell.run("echo", &[big.as_str()], None).await.unwrap();
        assert_eq!(out.stdout, format!("{big}\r\n").as_bytes(), "{endpoint}");
        shell.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_unauthorized() {
    let ca = tempfile::NamedTempFile::new().unwrap();
    let lab = lab(ca.path()).await;
    let pin = lab.credssp_cert_sha256.clone().unwrap();
    let e = hostname(client(&lab.endpoint(), "wrong", Some(&pin), ca.path()))
        .await
        .unwrap_err();
    assert!(matches!(e, WinrmError::Unauthorized), "{e:?}");
    assert!(e.is_systemic());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_without_credssp_says_what_to_enable() {
    let ca = tempfile::NamedTempFile::new().unwrap();
    let lab = lab_without_credssp(ca.path()).await;
    let pin = "00".repeat(32);
    let e = hostname(client(
        &lab.endpoint(),
        common::LAB_PASSWORD,
        Some(&pin),
        ca.path(),
    ))
    .await
    .unwrap_err();
    assert!(matches!(e, WinrmError::CredSspNotOffered(_)), "{e:?}");
    assert!(
        e.to_string().contains("Enable-WSManCredSSP -Role Server"),
        "{e}"
    );
    assert!(e.is_systemic());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_credssp_certificate_must_be_pinned() {
    let ca = tempfile::NamedTempFile::new().unwrap();
    let lab = lab(ca.path()).await;
    // Not pinned at all: refused before any connection, saying what to set.
    let e = WinrmClient::new(client(
        &lab.endpoint(),
        common::LAB_PASSWORD,
        None,
        ca.path(),
    ))
    .err()
    .expect("no pin is a configuration error");
    assert!(e.to_string().contains("winrm.credssp_cert_sha256"), "{e}");
    // Pinned to another certificate: the handshake stops before the password leaves.
    let other = "AB".repeat(32);
    let e = hostname(client(
        &lab.endpoint(),
        common::LAB_PASSWORD,
        Some(&other),
        ca.path(),
    ))
    .await
    .unwrap_err();
    let fingerprint = lab.credssp_cert_sha256.clone().unwrap();
    assert!(matches!(e, WinrmError::CredSsp(_)), "{e:?}");
    assert!(e.to_string().contains(&fingerprint), "{e}");
    // The explicit opt-out connects without a pin.
    let mut cc = client(&lab.endpoint(), common::LAB_PASSWORD, None, ca.path());
    cc.credssp_skip_cert_check = true;
    assert_eq!(hostname(cc).await.unwrap(), "LAB-IQSVC01\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pywinrm_speaks_credssp_to_the_lab() {
    let have = Command::new("python3")
        .args(["-c", "import winrm, requests_credssp"])
        .status();
    assert!(
        have.is_ok_and(|s| s.success()),
        "pywinrm or requests-credssp is missing: deploy/dev/services.sh installs them"
    );
    let ca = tempfile::NamedTempFile::new().unwrap();
    let lab = lab(ca.path()).await;
    let path = format!(
        "{}/tests/peers/pywinrm_credssp.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let args = vec![
        lab.endpoint(),
        lab.tls_endpoint().unwrap(),
        ca.path().display().to_string(),
        lab::DEFAULT_USER.to_owned(),
        "CORP".to_owned(),
    ];
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(path)
            .args(args)
            .env("LAB_PASSWORD", common::LAB_PASSWORD)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pywinrm_credssp.py failed:\n{stdout}\n{stderr}"
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok ")).count(),
        8,
        "{stdout}"
    );
}

/// The key the client binds pubKeyAuth to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BoundKey {
    /// The acceptor's own key, as an honest client sees it.
    Acceptors,
    /// Another key, as a man in the middle would bind it.
    Foreign,
}

/// sspi's own CredSSP client against the lab's acceptor in memory, announcing `version` and
/// binding pubKeyAuth to `bound`.
fn handshake_in_memory(version: u32, bound: BoundKey) -> winrm::acceptor::CredSspAccepted {
    use sspi::credssp::{ClientMode, ClientState, CredSspClient, CredSspMode, TsRequest};
    use winrm::acceptor::{CredSspAccepted, CredSspAcceptor, CredSspCert};
    use winrm::credssp::{
        CredSspTrust, client_tls_config, drain, feed, send_ts, subject_public_key,
    };
    let cert = CredSspCert::generate("LAB-IQSVC01").unwrap();
    let users = vec![(
        lab::DEFAULT_USER.to_owned(),
        SecretString::from(common::LAB_PASSWORD),
    )];
    let mut acc = CredSspAcceptor::new(&cert, &users, &["CORP".to_owned()]).unwrap();
    let name = rustls::pki_types::ServerName::try_from("lab").unwrap();
    let cfg = client_tls_config(CredSspTrust::Unverified).unwrap();
    let mut tls: rustls::Connection = rustls::ClientConnection::new(cfg, name).unwrap().into();
    while tls.is_handshaking() {
        let CredSspAccepted::Continue(back) = acc.step(&drain(&mut tls).unwrap()).unwrap() else {
            panic!("refused during TLS");
        };
        feed(&mut tls, &back).unwrap();
    }
    let der = tls.peer_certificates().unwrap()[0].clone();
    let mut key = subject_public_key(der.as_ref()).unwrap();
    if bound == BoundKey::Foreign {
        let last = key.len() - 1;
        key[last] ^= 1;
    }
    let user = sspi::Username::new(lab::DEFAULT_USER, None).unwrap();
    let identity = sspi::AuthIdentity {
        username: user,
        password: common::LAB_PASSWORD.to_owned().into(),
    };
    let mut client = CredSspClient::new_with_version(
        key,
        sspi::Credentials::AuthIdentity(identity),
        CredSspMode::WithCredentials,
        version,
        ClientMode::Ntlm(sspi::ntlm::NtlmConfig::default()),
        "HTTP/lab".into(),
    )
    .unwrap();
    let mut state = client
        .process(TsRequest::default())
        .resolve_to_result()
        .unwrap();
    loop {
        let ts = match state {
            ClientState::ReplyNeeded(ts) | ClientState::FinalMessage(ts) => ts,
        };
        match acc.step(&send_ts(&mut tls, &ts).unwrap()).unwrap() {
            CredSspAccepted::Continue(back) => {
                let reply = TsRequest::from_buffer(&feed(&mut tls, &back).unwrap()).unwrap();
                state = client.process(reply).resolve_to_result().unwrap();
            }
            done => return done,
        }
    }
}

#[test]
fn the_lab_refuses_old_versions_and_a_foreign_key_binding() {
    use winrm::acceptor::CredSspAccepted;
    match handshake_in_memory(6, BoundKey::Acceptors) {
        CredSspAccepted::Delegated(logon) => assert_eq!(logon.user, lab::DEFAULT_USER),
        _ => panic!("version 6 bound to the right key is accepted"),
    }
    match handshake_in_memory(4, BoundKey::Acceptors) {
        CredSspAccepted::Refused { reason, .. } => {
            assert!(reason.contains("version 4"), "{reason}")
        }
        _ => panic!("version 4 (no CVE-2018-0886 fix) is refused"),
    }
    assert!(
        matches!(
            handshake_in_memory(6, BoundKey::Foreign),
            CredSspAccepted::Refused { .. }
        ),
        "pubKeyAuth bound to another key is refused"
    );
}
