//! What operations install, checked: the systemd unit with `systemd-analyze verify`, the
//! container image's Dockerfile, the compose stack (`compose config` and its structure) and
//! the Kubernetes manifests (schemas, the ServiceMonitor, cross-references).

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

fn root() -> &'static str {
    env!("CARGO_MANIFEST_DIR")
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// True when `line` has a URL with a password in its userinfo (`scheme://user:pass@host`).
fn url_with_password(line: &str) -> bool {
    line.match_indices("://").any(|(i, _)| {
        let rest = &line[i + 3..];
        let end = rest
            .find(|c: char| c == '/' || c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(rest.len());
        rest[..end]
            .split_once('@')
            .is_some_and(|(userinfo, _)| userinfo.contains(':'))
    })
}

/// The compose implementation that is installed, if any: `docker compose` (v2 plugin), else
/// `docker-compose` (Debian's 1.29, installed by deploy/dev/services.sh where the plugin is
/// missing). `config` needs no Docker engine: it only loads, interpolates and validates.
fn compose_cli() -> Option<(Command, &'static str)> {
    let v2 = Command::new("docker").args(["compose", "version"]).output();
    if v2.is_ok_and(|o| o.status.success()) {
        let mut c = Command::new("docker");
        c.arg("compose");
        return Some((c, "docker compose"));
    }
    let v1 = Command::new("docker-compose").arg("version").output();
    if v1.is_ok_and(|o| o.status.success()) {
        return Some((Command::new("docker-compose"), "docker-compose"));
    }
    None
}

#[test]
fn the_compose_stack_validates_and_keeps_every_password_out() {
    let compose = format!("{}/deploy/compose.yaml", root());
    no_password_is_inline_in_the_compose_file_or_what_it_mounts();
    the_real_compose_implementation_accepts_the_file(&compose);
    the_structure_has_health_checks_start_order_file_secrets_and_mounts(&compose);
}

/// 1. No password inline, in the compose file or anything it mounts.
fn no_password_is_inline_in_the_compose_file_or_what_it_mounts() {
    for path in [
        "deploy/compose.yaml",
        "deploy/compose/mailboxd.toml",
        "deploy/compose/rabbitmq.conf",
        "deploy/compose/with-secrets.sh",
    ] {
        for line in repo(path).lines() {
            let code = line.split(" #").next().unwrap_or("");
            assert!(
                !url_with_password(code),
                "{path}: password in a URL: {line}"
            );
            for inline in [
                "POSTGRES_PASSWORD:",
                "RABBITMQ_DEFAULT_PASS",
                "MAILBOXD_WINRM_PASSWORD",
                "MAILBOXD_ADMIN_TOKEN",
                "default_pass",
            ] {
                assert!(!code.contains(inline), "{path}: inline secret: {line}");
            }
        }
    }
    let ignore = repo("deploy/compose/secrets/.gitignore");
    assert!(
        ignore.lines().any(|l| l.trim() == "*"),
        "the generated secrets must never be committed"
    );
}

/// 2. The real compose implementation accepts the file.
fn the_real_compose_implementation_accepts_the_file(compose: &str) {
    match compose_cli() {
        Some((mut cmd, name)) => {
            let (ok, text) = run(cmd.args(["-f", compose, "config", "--services"]));
            assert!(ok, "{name} config rejected deploy/compose.yaml:\n{text}");
            for service in [
                "postgres",
                "rabbitmq",
                "mailpit",
                "lab",
                "migrate",
                "mailboxd-1",
                "mailboxd-2",
            ] {
                assert!(
                    text.lines().any(|l| l.trim() == service),
                    "{name} config: no service {service} in {text}"
                );
            }
            eprintln!("{name} config: deploy/compose.yaml is valid");
        }
        None => eprintln!(
            "neither `docker compose` nor `docker-compose` is installed (deploy/dev/services.sh \
             installs the latter): only the structural checks ran"
        ),
    }
}

/// 3. Structure: health checks, start order with conditions, file secrets, mounts.
fn the_structure_has_health_checks_start_order_file_secrets_and_mounts(compose: &str) {
    let (ok, text) = run(Command::new("python3")
        .arg(format!("{}/tests/deploy/check_compose.py", root()))
        .arg(compose));
    assert!(
        ok,
        "tests/deploy/check_compose.py (needs PyYAML: bash deploy/dev/services.sh):\n{text}"
    );
}

#[test]
fn the_compose_entry_point_builds_the_urls_from_the_secret_files() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join("postgres-password"), "pg-S3cret\n").expect("write");
    std::fs::write(dir.path().join("rabbitmq-password"), "mq-S3cret\n").expect("write");
    let (ok, text) = run(Command::new("sh")
        .arg(format!("{}/deploy/compose/with-secrets.sh", root()))
        // `env NAME=VALUE` prints the environment it would run a command with: the arguments
        // reach the program, and the URLs are in its environment.
        .arg("ARGUMENT_PASSED=yes")
        .env("MAILBOXD_SECRETS_DIR", dir.path())
        .env("MAILBOXD_BIN", "/usr/bin/env"));
    assert!(ok, "{text}");
    assert!(text.contains("ARGUMENT_PASSED=yes\n"), "{text}");
    assert!(
        text.contains(
            "MAILBOXD__DATABASE__URL=postgres://mailboxd:pg-S3cret@postgres:5432/mailboxd\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("MAILBOXD__AMQP__URL=amqp://mailboxd:mq-S3cret@rabbitmq:5672/%2f\n"),
        "{text}"
    );
}

#[test]
fn the_compose_configuration_loads_with_its_secrets() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    for name in ["lab-password", "admin-token"] {
        std::fs::write(
            dir.path().join(name),
            format!("{name}-value-5c1e9a7f3b2d8e04\n"),
        )
        .expect("write");
    }
    let toml = repo("deploy/compose/mailboxd.toml")
        .replace("/run/secrets/", &format!("{}/", dir.path().display()));
    let path = dir.path().join("mailboxd.toml");
    std::fs::write(&path, toml).expect("write");
    let s = mailboxd::config::Settings::load(Some(&path))
        .expect("deploy/compose/mailboxd.toml loads (deny_unknown_fields catches typos)");
    assert_eq!(s.winrm.endpoint, "http://lab:5985/wsman");
    assert_eq!(s.smtp.host, "mailpit");
    assert!(s.winrm.password.is_some() && s.ldap.password.is_some() && s.admin.token.is_some());
}

#[test]
fn make_secrets_writes_each_secret_once() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let script = dir.path().join("make-secrets.sh");
    std::fs::write(&script, repo("deploy/compose/make-secrets.sh")).expect("write");
    let (ok, text) = run(Command::new("bash").arg(&script));
    assert!(ok, "{text}");
    let secrets = dir.path().join("secrets");
    let read = |name: &str| {
        std::fs::read_to_string(secrets.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let token = read("admin-token");
    assert!(token.len() >= 32 && token.chars().all(|c| c.is_ascii_hexdigit()));
    let users: serde_json::Value =
        serde_json::from_str(&read("rabbitmq-users.json")).expect("rabbitmq-users.json is JSON");
    assert_eq!(users["users"][0]["name"], "mailboxd");
    assert_eq!(
        users["users"][0]["password"],
        read("rabbitmq-password").as_str()
    );
    let (ok, text) = run(Command::new("bash").arg(&script));
    assert!(ok, "{text}");
    assert_eq!(read("admin-token"), token, "a second run keeps what exists");
}

fn check_k8s(dir: &std::path::Path) -> (bool, String) {
    run(Command::new("python3")
        .arg(format!("{}/tests/deploy/check_k8s.py", root()))
        .arg(dir))
}

/// Schemas (kubernetes-validate, offline), the ServiceMonitor CRD and the cross-references:
/// tests/deploy/check_k8s.py says what it checks.
#[test]
fn the_kubernetes_manifests_validate() {
    let (ok, text) = check_k8s(std::path::Path::new(&format!("{}/deploy/k8s", root())));
    assert!(
        ok,
        "tests/deploy/check_k8s.py (needs kubernetes-validate, jsonschema and PyYAML: bash deploy/dev/services.sh):\n{text}"
    );
}

/// The checker is only worth something if it fails: each of these breaks one manifest in a
/// copy of deploy/k8s, and the check must name the problem.
/// One line broken in one manifest each: (file, the line, broken as, what the check says).
const BROKEN_MANIFESTS: [(&str, &str, &str, &str); 8] = [
    (
        "deployment.yaml",
        "  replicas: 2",
        "  replcas: 2",
        "'replcas' was unexpected",
    ),
    (
        "deployment.yaml",
        "readOnlyRootFilesystem: true",
        "readOnlyRootFilesystem: false",
        "root filesystem not read-only",
    ),
    (
        "deployment.yaml",
        "path: /readyz",
        "path: /ready",
        "readinessProbe",
    ),
    (
        "servicemonitor.yaml",
        "- port: admin",
        "- port: metrics",
        "not a port name",
    ),
    (
        "servicemonitor.yaml",
        "interval: 30s",
        "intervall: 30s",
        "'intervall' was unexpected",
    ),
    (
        "configmap.yaml",
        "secrets/ldap-password",
        "secrets/ldap-pw",
        "ldap.password_file",
    ),
    (
        "service.yaml",
        "port: 8080",
        "port: \"8080\"",
        "is not of type 'integer'",
    ),
    (
        "pdb.yaml",
        "matchLabels:\n      app.kubernetes.io/name: mailboxd",
        "matchLabels:\n      app.kubernetes.io/name: mailbox",
        "PodDisruptionBudget",
    ),
];

/// The manifests copied to a temporary directory with `from` replaced by `to` in `file`:
/// the check must fail and say `want`.
fn the_check_refuses(file: &str, from: &str, to: &str, want: &str) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    for entry in std::fs::read_dir(format!("{}/deploy/k8s", root())).expect("deploy/k8s") {
        let entry = entry.expect("a directory entry");
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).expect("copy");
    }
    let path = dir.path().join(file);
    let text = std::fs::read_to_string(&path).expect("read");
    assert!(text.contains(from), "{file} no longer contains {from:?}");
    std::fs::write(&path, text.replacen(from, to, 1)).expect("write");
    let (ok, out) = check_k8s(dir.path());
    assert!(!ok, "{file} with {to:?} passed the check");
    assert!(
        out.contains(want),
        "{file} with {to:?}: expected {want:?} in:\n{out}"
    );
}

#[test]
fn a_broken_kubernetes_manifest_fails_the_check() {
    for (file, from, to, want) in BROKEN_MANIFESTS {
        the_check_refuses(file, from, to, want);
    }
}

/// The ConfigMap's mailboxd.toml is a configuration mailboxd accepts (unknown keys are errors).
#[test]
fn the_kubernetes_configuration_loads() {
    let cm = repo("deploy/k8s/configmap.yaml");
    let start = cm
        .find("mailboxd.toml: |\n")
        .expect("a mailboxd.toml block in the ConfigMap");
    let toml: String = cm[start..]
        .lines()
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    let dir = tempfile::tempdir().expect("a temporary directory");
    for name in [
        "winrm-password",
        "ldap-password",
        "smtp-password",
        "admin-token",
    ] {
        // Tokens must be strong enough (128 bits) to be accepted at all.
        std::fs::write(dir.path().join(name), "placeholder-4f0c2e9b7a1d6c38\n").expect("write");
    }
    let path = dir.path().join("mailboxd.toml");
    std::fs::write(
        &path,
        toml.replace(
            "/etc/mailboxd/secrets/",
            &format!("{}/", dir.path().display()),
        ),
    )
    .expect("write");
    let s =
        mailboxd::config::Settings::load(Some(&path)).expect("the ConfigMap's mailboxd.toml loads");
    assert_eq!(s.admin.listen, "0.0.0.0:8080");
    assert!(s.winrm.password.is_some() && s.smtp.password.is_some());
}
