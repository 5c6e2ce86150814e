//! The command line as an operator uses it.

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{TestEnv, seed};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_with_json_logs_writes_one_json_object_per_line() {
    let env = TestEnv::new(vec![]).await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailboxd"))
        .args(["run", "--log-format", "json"])
        .envs(env.daemon_env())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    // Read until the daemon says it runs (bounded by the lines it writes before that).
    let mut seen = Vec::new();
    for line in BufReader::new(stderr).lines().take(50) {
        let line = line.unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{v}");
        let running = v["message"] == "mailboxd running";
        seen.push(v);
        if running {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let last = seen.last().expect("some log lines");
    assert_eq!(last["message"], "mailboxd running", "{seen:?}");
    assert!(
        last["admin_addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    // The WinRM password given in the environment never shows up in the logs.
    assert!(
        !serde_json::to_string(&seen)
            .unwrap()
            .contains(common::LAB_PASSWORD)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publish_from_the_command_line_reaches_the_daemon() {
    let env = TestEnv::new(vec![seed("clijoe")]).await;
    let app = env.start_daemon().await;
    let (code, out, err) = env.cli(&[
        "publish",
        "joiner",
        "--sam",
        "clijoe",
        "--id",
        "cli-event-1",
        "--alias",
        "clijoe",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("cli-event-1"), "{out}");
    let job = env.wait_succeeded("cli-event-1").await;
    assert_eq!(job.event.source.as_deref(), Some("mailboxd-publish"));

    // Unknown states are refused with the list of valid ones.
    let (code, _, err) = env.cli(&["jobs", "list", "--state", "stuck"]);
    assert_ne!(code, 0);
    assert!(err.contains("waiting_for_sync"), "{err}");
    app.stop().await;
}

#[test]
fn help_lists_the_working_commands() {
    let out = Command::new(env!("CARGO_BIN_EXE_mailboxd"))
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in [
        "run",
        "migrate",
        "demo",
        "lab",
        "publish",
        "jobs",
        "poison",
        "alerts",
        "check",
        "reconcile",
        "bench",
    ] {
        assert!(text.contains(cmd), "--help lacks {cmd}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_tries_every_dependency_and_names_what_fails() {
    let env = common::TestEnv::new(vec![]).await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailboxd"))
        .args(["check", "--json"])
        .envs(env.daemon_env())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let probes: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let status = |name: &str| {
        probes
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"].as_str().unwrap().starts_with(name))
            .unwrap_or_else(|| panic!("no {name} probe: {probes}"))
            .clone()
    };
    let postgres = status("PostgreSQL");
    assert_eq!(postgres["status"], "OK");
    // A server that does not vacuum by itself is named (the queue's dead rows pile up).
    let autovacuum: String = sqlx::query_scalar("SELECT current_setting('autovacuum')")
        .fetch_one(env.store.pool())
        .await
        .unwrap();
    assert_eq!(
        postgres["detail"]
            .as_str()
            .unwrap()
            .contains("autovacuum is OFF"),
        autovacuum == "off",
        "{postgres}"
    );
    assert_eq!(status("RabbitMQ")["status"], "OK");
    assert_eq!(status("LDAP ldap://")["status"], "OK", "{probes}");
    let winrm = status("WinRM");
    assert_eq!(winrm["status"], "OK");
    assert!(
        winrm["detail"].as_str().unwrap().contains("LAB-IQSVC01"),
        "{winrm}"
    );
    assert_eq!(status("Exchange session")["status"], "OK");
    assert_eq!(status("SMTP")["status"], "SKIP");

    // The WinRM host down: FAIL with the reason, exit code 1, the rest still checked.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailboxd"))
        .arg("check")
        .envs(env.daemon_env())
        .env("MAILBOXD__WINRM__ENDPOINT", "http://127.0.0.1:9/wsman")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let table = String::from_utf8_lossy(&out.stdout);
    let line = table.lines().find(|l| l.starts_with("WinRM")).unwrap();
    assert!(line.contains("FAIL"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("PostgreSQL") && l.contains(" OK ")),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_retry_from_the_cli_answers_in_json_and_is_on_the_record() {
    let onprem = common::onprem("clionprem");
    let env = common::TestEnv::new(vec![onprem]).await;
    let app = env.start_daemon().await;
    let ev = env.joiner("clionprem");
    env.publisher().await.publish(&ev).await.unwrap();
    let job = env.wait_terminal(&ev.id).await;
    let (code, out, err) = env.cli(&["jobs", "retry", &job.id.to_string(), "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    let actions = env.store.job_actions(job.id).await.unwrap();
    assert_eq!(actions[0].action, mailboxd::job::ActionKind::Retry);
    assert!(actions[0].actor.starts_with("cli:"), "{actions:?}");
    let (code, out, _) = env.cli(&[
        "jobs",
        "cancel",
        &uuid::Uuid::new_v4().to_string(),
        "--json",
    ]);
    assert_eq!(code, 1);
    assert!(out.contains("no job"), "{out}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_migrating_at_once_do_not_race() {
    let db = common::TestDatabase::create_empty(&common::fresh_tag(), 1).await;
    let url = db.url.clone();
    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_mailboxd"))
            .arg("migrate")
            .env("MAILBOXD__DATABASE__URL", &url)
            .output()
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(spawn);
        let b = s.spawn(spawn);
        (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
    });
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(db.pool())
        .await
        .unwrap();
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .count() as i64;
    assert_eq!(applied, files, "each migration applied once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_list_lines_up_long_account_names_and_pages_a_long_list() {
    // sAMAccountName allows 20 characters; the short names sit in the same columns.
    let long = "a-twenty-char-name-x";
    let mut names: Vec<String> = (0..59).map(|i| format!("pg{i:02}")).collect();
    names.push(long.to_owned());
    let env = TestEnv::new(names.iter().map(|n| seed(n)).collect()).await;
    let app = env.start_daemon().await;
    let publisher = env.publisher().await;
    let mut ids = Vec::new();
    for n in &names {
        let ev = env.joiner(n);
        publisher.publish(&ev).await.unwrap();
        ids.push(ev.id);
    }
    for id in &ids {
        env.wait_succeeded(id).await;
    }
    app.stop().await;

    // All 60 on one page: every cell starts where its column's header does.
    let (code, out, err) = env.cli(&["jobs", "list", "--limit", "60"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<Vec<char>> = out.lines().map(|l| l.chars().collect()).collect();
    assert_eq!(lines.len(), 61, "{out}");
    assert!(out.contains(long), "{out}");
    let header: String = lines[0].iter().collect();
    for column in ["TYPE", "ACCOUNT", "STATE", "UPDATED", "DETAIL"] {
        let at = header.find(column).unwrap();
        for line in &lines[1..] {
            assert!(
                line[at - 1] == ' ' && line[at] != ' ',
                "{column} out of line:\n{out}"
            );
        }
    }

    // 25 a page: the header, 25 jobs, and how many more there are.
    let (_, out, _) = env.cli(&["jobs", "list", "--limit", "25"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 27, "{out}");
    assert_eq!(
        lines[26], "… 35 more; use --page 2 or a larger --limit",
        "{out}"
    );

    // The last page: the rest, and nothing more to say.
    let (_, out, _) = env.cli(&["jobs", "list", "--limit", "25", "--page", "3"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 11, "{out}");
    assert!(!out.contains("more;"), "{out}");
    let (_, out, _) = env.cli(&["jobs", "list", "--limit", "25", "--page", "4"]);
    assert_eq!(out.trim(), "no jobs on page 4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_prints_its_table_without_a_library_error_above_it() {
    // No daemon has run yet: the intake queue does not exist, a normal answer.
    let env = TestEnv::new(vec![]).await;
    let (code, out, err) = env.cli(&["check"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!err.contains("ERROR"), "stderr: {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("CHECK "), "{out}");
    let rabbit = lines.iter().find(|l| l.starts_with("RabbitMQ")).unwrap();
    assert!(rabbit.contains("does not exist yet"), "{out}");
    let budget = lines
        .iter()
        .find(|l| l.starts_with("Exchange session budget"))
        .unwrap();
    assert!(budget.contains("cmdlets not paced"), "{out}");
    // With the cmdlet budget set, the line says what is used of it.
    let (_, out, _) = env.cli_with(
        &["check"],
        &[
            ("MAILBOXD__EXCHANGE__MAX_CMDLETS", "400"),
            ("MAILBOXD__EXCHANGE__CMDLET_WINDOW", "60s"),
        ],
    );
    assert!(
        out.contains("cmdlets in the window now: 0 of exchange.max_cmdlets = 400 per 60 s"),
        "{out}"
    );
    // STATUS and MS line up under their headers, whatever the probe's name.
    let status_at = lines[0].find("STATUS").unwrap();
    for line in &lines[1..] {
        let status = &line[status_at..];
        assert!(
            ["OK ", "FAIL ", "SKIP "]
                .iter()
                .any(|s| status.starts_with(s)),
            "{out}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cmdlet_budget_that_cannot_work_is_refused_with_what_to_set() {
    let env = TestEnv::new(vec![]).await;
    // Half of Exchange's pair: the window is missing.
    let (code, _, err) = env.cli_with(&["check"], &[("MAILBOXD__EXCHANGE__MAX_CMDLETS", "400")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("exchange.cmdlet_window"), "{err}");

    // A budget smaller than one account's batch: the daemon does not start.
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailboxd"))
        .arg("run")
        .envs(env.daemon_env())
        .env("MAILBOXD__EXCHANGE__MAX_CMDLETS", "2")
        .env("MAILBOXD__EXCHANGE__CMDLET_WINDOW", "10s")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = common::wait_exit(&mut child, std::time::Duration::from_secs(30));
    if status.is_none() {
        let _ = child.kill();
    }
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{err}");
    assert!(
        err.contains("exchange.max_cmdlets = 2 cannot hold one account's batch"),
        "{err}"
    );
}
