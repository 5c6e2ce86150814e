//! `mailboxd bench reconcile`: time and peak memory of a reconciliation dry run, against a
//! lab directory of N users (started as a separate process, so the peak memory measured
//! here is mailboxd's alone), or with `--use-config` against the configured `[ldap]`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use secrecy::SecretString;

use super::output::Output;
use super::process::ChildGuard;
use super::support::{bench_database_url, free_port, peak_rss_mib, tempfile_dir};
use crate::config::{self, Settings};
use crate::reconcile::Report;
use crate::store::Store;

pub(crate) async fn run(
    settings: &Settings,
    accounts: usize,
    use_config: bool,
    output: &Output,
) -> anyhow::Result<i32> {
    let dir = tempfile_dir()?;
    let result = async {
        let (ldap, lab) = if use_config {
            (settings.ldap.clone(), None)
        } else {
            let file = write_accounts_file(&dir, accounts)?;
            let (ldap, lab) = start_lab_process(&file).await?;
            (ldap, Some(lab))
        };
        let measured = dry_run(settings, &ldap, output.json).await;
        drop(lab);
        measured
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    let (report, before, after) = result?;
    let out = serde_json::json!({
        "directory": if use_config { "configured" } else { "lab" },
        "scanned": report.scanned,
        "differences": report.differences.len(),
        "elapsed_s": report.elapsed_s,
        "accounts_per_s": report.scanned as f64 / report.elapsed_s.max(1e-9),
        "peak_rss_mib_before": before,
        "peak_rss_mib": after,
    });
    if output.emit("reconcile", &out)? {
        println!(
            "reconciled {} accounts ({} differences) in {:.2}s = {:.0}/s; peak RSS {:.1} MiB (before the scan {:.1} MiB)",
            report.scanned,
            report.differences.len(),
            report.elapsed_s,
            report.scanned as f64 / report.elapsed_s.max(1e-9),
            after.unwrap_or_default(),
            before.unwrap_or_default()
        );
    }
    Ok(0)
}

/// `accounts` lab accounts in `dir`: 90 % fine, 5 % missing a mailbox, 5 % leavers still
/// visible.
fn write_accounts_file(dir: &Path, accounts: usize) -> anyhow::Result<PathBuf> {
    let file = dir.join("accounts.jsonl");
    let mut text = String::with_capacity(accounts * 80);
    for i in 0..accounts {
        let line = match i % 20 {
            0 => format!("{{\"sam_account_name\":\"rc{i:07}\",\"synced\":true}}"),
            1 => format!(
                "{{\"sam_account_name\":\"rc{i:07}\",\"recipient\":\"remote\",\"disabled\":true}}"
            ),
            _ => format!("{{\"sam_account_name\":\"rc{i:07}\",\"recipient\":\"remote\"}}"),
        };
        text.push_str(&line);
        text.push('\n');
    }
    std::fs::write(&file, text)?;
    Ok(file)
}

/// `mailboxd lab` in its own process serving `accounts_file`, once its domain controller
/// accepts connections: the `[ldap]` settings that reach it, and the process.
async fn start_lab_process(accounts_file: &Path) -> anyhow::Result<(config::Ldap, ChildGuard)> {
    let (http, ldap) = (free_port()?, free_port()?);
    let password = uuid::Uuid::new_v4().simple().to_string();
    let child = std::process::Command::new(std::env::current_exe()?)
        .args(["lab", "--accounts", "0", "--accounts-file"])
        .arg(accounts_file)
        .args(["--listen", &format!("127.0.0.1:{http}")])
        .args(["--ldap-listen", &format!("127.0.0.1:{ldap}")])
        .env("MAILBOXD_LAB_PASSWORD", &password)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting the lab")?;
    let child = ChildGuard(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(("127.0.0.1", ldap))
        .await
        .is_err()
    {
        anyhow::ensure!(Instant::now() < deadline, "the lab did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let settings = config::Ldap {
        urls: vec![format!("ldap://127.0.0.1:{ldap}")],
        base_dn: lab::directory::LAB_BASE_DN.into(),
        bind_dn: lab::Lab::bind_dn(lab::DEFAULT_USER),
        password: Some(SecretString::from(password)),
        starttls: false,
        allow_plaintext: true,
        ..config::Ldap::default()
    };
    Ok((settings, child))
}

/// The dry run against `ldap` on the bench database: its report and this process's peak
/// memory before and after it.
async fn dry_run(
    settings: &Settings,
    ldap: &config::Ldap,
    json: bool,
) -> anyhow::Result<(Report, Option<f64>, Option<f64>)> {
    let directory =
        crate::directory::Directory::from_config(ldap)?.context("no [ldap].urls configured")?;
    let url = bench_database_url(&settings.database.url)?;
    crate::store::ensure_database(&url).await?;
    let store = Store::connect(&url, 4).await?;
    store.migrate().await?;
    let before = peak_rss_mib();
    let mut rcfg = settings.reconcile.clone();
    rcfg.max_jobs_per_run = usize::MAX;
    let report = crate::reconcile::run(
        &directory,
        &store,
        &rcfg,
        settings.leaver,
        3,
        crate::reconcile::Mode::DryRun,
        if json {
            crate::reconcile::ProgressLines::Hidden
        } else {
            crate::reconcile::ProgressLines::Shown
        },
    )
    .await?;
    Ok((report, before, peak_rss_mib()))
}
