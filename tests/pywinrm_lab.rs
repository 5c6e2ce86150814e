//! pywinrm, an independent WinRM client, against the lab's WinRM endpoint.

mod common;

use std::process::Command;

use mailboxd::lab::{self, Lab, LabConfig};
use secrecy::SecretString;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pywinrm_runs_commands_on_the_lab() {
    let have = Command::new("python3")
        .args(["-c", "import winrm"])
        .status();
    assert!(
        have.is_ok_and(|s| s.success()),
        "pywinrm is missing: `python3 -m pip install pywinrm` (deploy/dev/services.sh does it)"
    );
    let lab = Lab::start(LabConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        user: lab::DEFAULT_USER.into(),
        password: SecretString::from(common::LAB_PASSWORD),
        accounts: vec![],
        latency: lab::Latency::default(),
        max_shells_per_user: 30,
    })
    .await
    .unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/pywinrm_lab.py");
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
