//! Reconciliation against the real Samba AD DC: users in every situation, in and out of
//! scope; the dry run reports exactly the differences, a real run queues exactly those jobs
//! and a second run none; the cap stops a run and alerts.

use crate::common;

use common::TestEnv;
use common::ad::{TestAd, User};
use mailboxd::config::{Leaver, Reconcile, ReconcileScope};
use mailboxd::directory::Directory;
use mailboxd::reconcile::{self, DiffKind};

/// The attempts each queued job gets (`worker.max_attempts`).
const MAX_ATTEMPTS: i32 = 5;

/// `mailboxd reconcile --dry-run`: reports the differences, queues nothing.
async fn dry_run(dir: &Directory, env: &TestEnv, cfg: &Reconcile) -> reconcile::Report {
    run(dir, env, cfg, reconcile::Mode::DryRun).await
}

/// `mailboxd reconcile`: queues a job for each difference (no progress lines).
async fn real_run(dir: &Directory, env: &TestEnv, cfg: &Reconcile) -> reconcile::Report {
    run(dir, env, cfg, reconcile::Mode::QueueJobs).await
}

async fn run(
    dir: &Directory,
    env: &TestEnv,
    cfg: &Reconcile,
    mode: reconcile::Mode,
) -> reconcile::Report {
    let leaver = Leaver::default();
    let lines = reconcile::ProgressLines::Hidden;
    reconcile::run(dir, &env.store, cfg, leaver, MAX_ATTEMPTS, mode, lines)
        .await
        .unwrap()
}

struct World {
    ad: TestAd,
    t: String,
    scope: ReconcileScope,
}

impl World {
    fn n(&self, s: &str) -> String {
        format!("{s}{}", self.t)
    }
}

/// An OU in scope and one out of it, with users in every situation.
async fn world() -> World {
    let ad = TestAd::get();
    let t = uuid::Uuid::new_v4().simple().to_string()[..6].to_owned();
    let ou = ad.add_ou(&format!("rc{t}")).await;
    let other = ad.add_ou(&format!("rcx{t}")).await;
    let rra = |s: &str| format!("{s}{t}@tenant.mail.onmicrosoft.com");
    let users: Vec<(&str, User)> = vec![
        ("newhire", User::default()),
        ("fine", User::remote(&rra("fine"))),
        (
            "rehire",
            User {
                hidden: true,
                ..User::remote(&rra("rehire"))
            },
        ),
        (
            "gone",
            User {
                disabled: true,
                ..User::remote(&rra("gone"))
            },
        ),
        (
            "donegone",
            User {
                disabled: true,
                hidden: true,
                ..User::remote(&rra("donegone"))
            },
        ),
        (
            "nomail",
            User {
                disabled: true,
                ..User::default()
            },
        ),
        ("onprem", User::onprem()),
        (
            "excluded",
            User {
                description: Some("no-mailbox".into()),
                ..User::default()
            },
        ),
    ];
    for (name, u) in &users {
        let sam = format!("{name}{t}");
        ad.add_user_at(&ou, &sam, &sam, u).await;
    }
    let outside = format!("outside{t}");
    ad.add_user_at(&other, &outside, &outside, &User::default())
        .await;
    World {
        scope: ReconcileScope {
            base_dn: ou,
            filter: "(&(objectCategory=person)(objectClass=user)(!(description=no-mailbox)))"
                .into(),
        },
        ad,
        t,
    }
}

fn cfg(w: &World, cap: usize) -> Reconcile {
    Reconcile {
        scopes: vec![w.scope.clone()],
        max_jobs_per_run: cap,
        page_size: 3, // several pages even for a handful of users
        ..Reconcile::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dry_run_reports_exactly_the_differences() {
    let w = world().await;
    let env = TestEnv::new(vec![]).await;
    let dir = Directory::from_config(&w.ad.settings()).unwrap().unwrap();
    let r = dry_run(&dir, &env, &cfg(&w, 100)).await;
    assert_eq!(r.scanned, 7, "the filter and the scope leave 7 users");
    let mut got: Vec<(DiffKind, String)> = r
        .differences
        .iter()
        .map(|d| (d.kind, d.sam_account_name.clone()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            (DiffKind::MissingMailbox, w.n("newhire")),
            (DiffKind::HiddenButEnabled, w.n("rehire")),
            (DiffKind::VisibleLeaver, w.n("gone")),
            (DiffKind::OnPremMailbox, w.n("onprem")),
        ]
    );
    assert_eq!(r.jobs_created, 0);
    assert!(
        env.store
            .list_jobs(&Default::default())
            .await
            .unwrap()
            .is_empty()
    );
    let runs = env.store.list_reconcile_runs(5).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert!(runs[0].dry_run);
    assert_eq!(runs[0].differences, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_run_queues_those_jobs_once_and_a_second_run_none() {
    let w = world().await;
    let env = TestEnv::new(vec![]).await;
    let dir = Directory::from_config(&w.ad.settings()).unwrap().unwrap();
    let r = real_run(&dir, &env, &cfg(&w, 100)).await;
    assert_eq!(r.jobs_created, 3, "{r:?}");
    let filter = mailboxd::store::JobFilter {
        limit: 100,
        ..Default::default()
    };
    let mut jobs: Vec<(String, String)> = env
        .store
        .list_jobs(&filter)
        .await
        .unwrap()
        .into_iter()
        .map(|j| (j.account.clone(), j.kind.to_string()))
        .collect();
    jobs.sort();
    assert_eq!(
        jobs,
        vec![
            (w.n("gone"), "leaver".into()),
            (w.n("newhire"), "joiner".into()),
            (w.n("rehire"), "joiner".into()),
        ]
    );
    let job = env
        .store
        .list_jobs(&filter)
        .await
        .unwrap()
        .into_iter()
        .next()
        .unwrap();
    assert_eq!(job.event.source.as_deref(), Some("reconcile"));

    let again = real_run(&dir, &env, &cfg(&w, 100)).await;
    assert_eq!(again.jobs_created, 0);
    assert_eq!(again.skipped_pending, 3);
}

/// A job whose event named the account by its DN or UPN, queued before any worker read its
/// objectGUID, is stored under that name (`coalesce(account_guid::text, account)`): the
/// reconcile counts it as the account's unfinished job and queues nothing beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_queued_under_the_accounts_dn_or_upn_counts_as_its_unfinished_job() {
    let w = world().await;
    let env = TestEnv::new(vec![]).await;
    let dir = Directory::from_config(&w.ad.settings()).unwrap().unwrap();
    let dry = dry_run(&dir, &env, &cfg(&w, 100)).await;
    let of = |name: &str| {
        dry.differences
            .iter()
            .find(|d| d.sam_account_name == w.n(name))
            .unwrap_or_else(|| panic!("no difference for {name}: {dry:?}"))
    };
    let upn = of("gone")
        .user_principal_name
        .clone()
        .expect("AD shows its UPN");
    let by_dn = serde_json::json!({"distinguished_name": of("newhire").distinguished_name});
    let by_upn = serde_json::json!({"user_principal_name": upn});
    let events: Vec<mailboxd::event::Event> = [("joiner", by_dn), ("leaver", by_upn)]
        .into_iter()
        .map(|(kind, account)| {
            let body = serde_json::json!({
                "schema": "mailboxd.event/v1", "id": uuid::Uuid::new_v4().to_string(),
                "type": kind, "occurred_at": chrono::Utc::now().to_rfc3339(),
                "account": account, "source": "iam",
            });
            mailboxd::event::parse(body.to_string().as_bytes(), None, None, "test").unwrap()
        })
        .collect();
    env.store
        .insert_events(&events, MAX_ATTEMPTS)
        .await
        .unwrap();
    let r = real_run(&dir, &env, &cfg(&w, 100)).await;
    assert_eq!(
        r.skipped_pending, 2,
        "the DN's and the UPN's jobs count: {r:?}"
    );
    assert_eq!(r.jobs_created, 1, "only the rehire is queued: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cap_stops_a_run_and_raises_an_alert() {
    let w = world().await;
    let env = TestEnv::new(vec![]).await;
    let dir = Directory::from_config(&w.ad.settings()).unwrap().unwrap();
    let r = real_run(&dir, &env, &cfg(&w, 2)).await;
    assert!(r.capped);
    assert_eq!(r.jobs_created, 0);
    let filter = mailboxd::store::JobFilter {
        limit: 10,
        ..Default::default()
    };
    assert!(env.store.list_jobs(&filter).await.unwrap().is_empty());
    let alerts = env.store.list_alerts(10).await.unwrap();
    assert_eq!(alerts.len(), 1);
    assert!(
        alerts[0].subject.contains("exceed the cap of 2"),
        "{}",
        alerts[0].subject
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_prints_the_dry_run_as_json() {
    let w = world().await;
    let env = TestEnv::new(vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let ad = &w.ad;
    let config = dir.path().join("mailboxd.toml");
    std::fs::write(
        &config,
        format!(
            "[ldap]\nurls = [\"ldaps://{}\"]\nbase_dn = \"{}\"\nbind_dn = \"{}\"\nca_file = \"{}\"\n\
             [reconcile]\npage_size = 2\n[[reconcile.scopes]]\nbase_dn = \"{}\"\nfilter = \"{}\"\n",
            ad.host,
            ad.base_dn,
            ad.bind_dn,
            ad.ca_file.display(),
            w.scope.base_dn,
            w.scope.filter
        ),
    )
    .unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_mailboxd"));
    cmd.args([
        "--config",
        config.to_str().unwrap(),
        "reconcile",
        "--dry-run",
        "--json",
    ])
    .envs(
        env.daemon_env()
            .into_iter()
            .filter(|(k, _)| !k.starts_with("MAILBOXD__LDAP") && k != "MAILBOXD_LDAP_PASSWORD"),
    )
    .env("MAILBOXD_LDAP_PASSWORD", &ad.password);
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["scanned"], 7);
    assert_eq!(v["differences"].as_array().unwrap().len(), 4);
    assert_eq!(v["by_kind"]["missing_mailbox"], 1);
    assert_eq!(v["dry_run"], true);
}
