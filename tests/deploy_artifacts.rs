//! What operations install, checked: the systemd unit with `systemd-analyze verify`, the
//! container image's Dockerfile for the properties the runtime relies on.

use std::process::Command;

fn repo(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let unit = repo("deploy/systemd/mailboxd.service");
    for needed in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "DynamicUser=yes",
        "LoadCredential=winrm-password:",
        "MAILBOXD__WINRM__PASSWORD_FILE=%d/winrm-password",
        "Restart=on-failure",
        "CapabilityBoundingSet=\n",
    ] {
        assert!(unit.contains(needed), "the unit lacks {needed:?}");
    }
    // No secret ever on a command line: ExecStart names only the config file.
    for line in unit.lines().filter(|l| l.starts_with("Exec")) {
        assert!(!line.to_lowercase().contains("password"), "{line}");
    }
    let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze is not installed here: only the static checks ran");
        return;
    };
    assert!(out.status.success());
    // Verify the unit as installed, with the binary this build produced in its place.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mailboxd.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/mailboxd", env!("CARGO_BIN_EXE_mailboxd")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Units it points at that this machine lacks (postgresql, rabbitmq) are not the unit's fault.
    let problems: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !l.contains("postgresql.service") && !l.contains("rabbitmq-server.service"))
        .filter(|l| !l.contains("/usr/share/doc/mailboxd"))
        .collect();
    assert!(problems.is_empty(), "systemd-analyze verify: {problems:?}");
}

#[test]
fn the_image_runs_unprivileged_with_a_health_check() {
    let df = repo("Dockerfile");
    assert!(
        df.matches("\nFROM ").count() + usize::from(df.starts_with("FROM ")) >= 2,
        "multi-stage"
    );
    assert!(
        df.contains("FROM debian:bookworm-slim"),
        "small runtime image"
    );
    assert!(df.contains("USER 10001:10001"), "non-root");
    assert!(df.contains("HEALTHCHECK") && df.contains("/healthz"));
    assert!(
        df.contains("--locked"),
        "the committed Cargo.lock is what is built"
    );
    let ignore = repo(".dockerignore");
    assert!(ignore.lines().any(|l| l.trim() == "target/"));
}
