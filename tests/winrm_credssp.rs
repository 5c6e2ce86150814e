//! CredSSP end to end: the daemon's client and pywinrm (requests-credssp) against the lab, over
//! HTTP (messages encrypted with CredSSP's TLS session) and HTTPS; and the refusals a user
//! meets: wrong password, a host without CredSSP, an unpinned certificate, an old version.

mod common;

use std::process::Command;

use lab::{Lab, LabConfig};
use secrecy::SecretString;
use winrm::{Auth, ClientConfig, ShellOptions, WinrmClient, WinrmError};

/// A lab with CredSSP on (or off), an HTTPS listener whose certificate goes to `ca`.
async fn lab(credssp: bool, ca: &std::path::Path) -> Lab {
    let cfg: LabConfig = common::lab_config(vec![])
        .without_directory()
        .with_tls(lab::LOOPBACK_ANY_PORT, Some(ca.to_owned()))
        .with_credssp(credssp);
    Lab::start(cfg).await.expect("lab starts")
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
    let lab = lab(true, ca.path()).await;
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
    let lab = lab(true, ca.path()).await;
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
    let lab = lab(false, ca.path()).await;
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
    let lab = lab(true, ca.path()).await;
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
    let lab = lab(true, ca.path()).await;
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
