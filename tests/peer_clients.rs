//! Independent WinRM clients (pywinrm, pypsrp) against the lab's WinRM endpoint: the whole
//! lab (`mailboxd lab` as users run it) and the WS-Management service alone with a test host.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use mailboxd::lab::cmd;
use mailboxd::lab::wsman::{self, CommandHost, Launch, ProcessOutput, WsmanConfig};

use mailboxd::lab;
use secrecy::SecretString;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pypsrp_runs_commands_on_the_lab() {
    let have = Command::new("python3")
        .args(["-c", "import pypsrp"])
        .status();
    assert!(
        have.is_ok_and(|s| s.success()),
        "pypsrp is missing: `python3 -m pip install pypsrp` (deploy/dev/services.sh does it)"
    );
    let lab = common::start_lab(vec![], lab::Latency::default(), 30).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/pypsrp_lab.py");
    let (host, port) = (lab.addr.ip().to_string(), lab.addr.port().to_string());
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args([script, &host, &port, lab::DEFAULT_USER])
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
        "pypsrp checks failed:\n{stdout}\n{stderr}"
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok ")).count(),
        6,
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pywinrm_runs_commands_on_the_lab() {
    let have = Command::new("python3")
        .args(["-c", "import winrm"])
        .status();
    assert!(
        have.is_ok_and(|s| s.success()),
        "pywinrm is missing: `python3 -m pip install pywinrm` (deploy/dev/services.sh does it)"
    );
    let lab = common::start_lab(vec![], lab::Latency::default(), 30).await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/peers/pywinrm_full_lab.py"
    );
    let endpoint = lab.endpoint();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args([script, &endpoint, lab::DEFAULT_USER])
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
        "pywinrm checks failed:\n{stdout}\n{stderr}"
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok ")).count(),
        8,
        "{stdout}"
    );
}

const USER: &str = "vagrant";
const PASSWORD: &str = "p@ss w0rd:\"<&>";
const HOST: &str = "LAB-IQSVC01";
const MAX_SHELLS: usize = 4;

struct PeerHost;

impl CommandHost for PeerHost {
    fn launch(&self, user: &str, command: &str, arguments: &[String]) -> Launch {
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
    let probe = Command::new("python3")
        .args(["-c", "import winrm"])
        .output()
        .expect("python3 must be installed to run the pywinrm peer test");
    assert!(
        probe.status.success(),
        "pywinrm is not importable ({}). Install it with `pip install pywinrm` — this test \
         checks the lab against an independent WinRM client and must not be skipped.",
        String::from_utf8_lossy(&probe.stderr).trim()
    );

    let cfg = WsmanConfig {
        users: vec![(USER.to_string(), SecretString::from(PASSWORD))],
        max_shells_per_user: MAX_SHELLS,
        max_operation_timeout: Duration::from_secs(1),
        hostname: HOST.to_string(),
    };
    let app = wsman::router(cfg, Arc::new(PeerHost));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });

    let script = format!(
        "{}/tests/peers/pywinrm_wsman.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let url = format!("http://{addr}/wsman");
    let max = MAX_SHELLS.to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args([script.as_str(), &url, USER, PASSWORD, HOST, &max])
            .output()
    })
    .await
    .unwrap()
    .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "pywinrm peer failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("pywinrm: all checks passed"), "{stdout}");
}
