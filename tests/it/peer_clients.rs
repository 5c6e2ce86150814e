//! Independent WinRM clients (pywinrm, pypsrp) against the lab's WinRM endpoint: the whole
//! lab (`mailboxd lab` as users run it) and the WS-Management service alone with a test host.

use crate::common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use lab::cmd;
use lab::wsman::{self, CommandHost, Launch, Logon, ProcessOutput, WsmanConfig};

use secrecy::SecretString;

/// Runs a peer script (tests/peers/NAME) with the lab's password in its environment; fails
/// (never skips) when the Python package it needs is missing. Returns its stdout.
async fn run_peer(module: &str, script: &str, args: Vec<String>) -> String {
    let have = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .status();
    assert!(
        have.is_ok_and(|s| s.success()),
        "Python package {module} is missing: deploy/dev/services.sh installs it"
    );
    let path = format!("{}/tests/peers/{script}", env!("CARGO_MANIFEST_DIR"));
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
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{script} failed:\n{stdout}\n{stderr}");
    stdout
}

fn oks(stdout: &str) -> usize {
    stdout.lines().filter(|l| l.starts_with("ok ")).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pypsrp_runs_commands_on_the_lab() {
    let lab = common::start_lab(vec![], lab::Latency::default(), 30).await;
    let args = vec![
        lab.addr.ip().to_string(),
        lab.addr.port().to_string(),
        lab::DEFAULT_USER.into(),
    ];
    let stdout = run_peer("pypsrp", "pypsrp_lab.py", args).await;
    assert_eq!(oks(&stdout), 8, "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pywinrm_runs_commands_on_the_lab() {
    let lab = common::start_lab(vec![], lab::Latency::default(), 30).await;
    let args = vec![lab.endpoint(), lab::DEFAULT_USER.into()];
    let stdout = run_peer("winrm", "pywinrm_full_lab.py", args).await;
    assert_eq!(oks(&stdout), 8, "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pywinrm_speaks_ntlm_with_message_encryption_and_channel_binding_to_the_lab() {
    let ca = tempfile::NamedTempFile::new().unwrap();
    let cfg = common::lab_config(vec![])
        .without_directory()
        .with_tls(lab::LOOPBACK_ANY_PORT, Some(ca.path().to_owned()))
        // Strict: the lab refuses NTLM over TLS that is not bound to its certificate.
        .with_cbt_hardening(winrm::acceptor::CbtHardening::Strict);
    let lab = lab::Lab::start(cfg).await.unwrap();
    let args = vec![
        lab.endpoint(),
        lab.tls_endpoint().unwrap(),
        ca.path().display().to_string(),
        lab::DEFAULT_USER.into(),
    ];
    let stdout = run_peer("winrm", "pywinrm_ntlm.py", args).await;
    assert_eq!(oks(&stdout), 5, "{stdout}");
}

const USER: &str = "vagrant";
const PASSWORD: &str = "p@ss w0rd:\"<&>";
const HOST: &str = "LAB-IQSVC01";
const MAX_SHELLS: usize = 4;

struct PeerHost;

impl CommandHost for PeerHost {
    fn launch(&self, logon: &Logon, command: &str, arguments: &[String]) -> Launch {
        let user = logon.user.as_str();
        if command == "slow" {
            let ms: u64 = arguments.first().and_then(|a| a.parse().ok()).unwrap_or(0);
            return Launch::AwaitStdin(Box::new(move |_stdin| {
                async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    ProcessOutput {
                        stdout: b"slow done\r\n".to_vec(),
                        stderr: Vec::new(),
                        exit_code: 7,
                    }
                }
                .boxed()
            }));
        }
        Launch::Done(cmd::run(HOST, user, command, arguments))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pywinrm_sees_windows_behaviour_from_the_wsman_service() {
    let cfg = WsmanConfig {
        users: vec![(USER.to_string(), SecretString::from(PASSWORD))],
        max_shells_per_user: MAX_SHELLS,
        // Shorter than the `slow` command, so pywinrm must re-poll through TimedOut faults.
        max_operation_timeout: Duration::from_secs(1),
        hostname: HOST.to_string(),
        max_envelope_kb: 500,
        cbt_hardening: Default::default(),
        kerberos: None,
        credssp: None,
        trusted_for_delegation: false,
        allow_remote_shell_access: true,
        deny_ntlm: false,
    };
    let app = wsman::router(cfg, Arc::new(PeerHost));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(lab::serve(listener, app, None));
    let args = [
        &format!("http://{addr}/wsman"),
        USER,
        PASSWORD,
        HOST,
        &MAX_SHELLS.to_string(),
    ]
    .map(str::to_owned)
    .to_vec();
    let stdout = run_peer("winrm", "pywinrm_wsman.py", args).await;
    assert!(stdout.contains("pywinrm: all checks passed"), "{stdout}");
}
