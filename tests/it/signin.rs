//! People sign in to the dashboard with their AD account (the Samba AD DC the tests
//! provision): operators act and are named for it on the job, in the API, in
//! `mailboxd jobs show` and in the audit log; viewers read but cannot act; wrong passwords,
//! disabled accounts and people outside the groups are refused; a sign-out ends the
//! session on every replica, and leaving the groups ends it too.

use crate::common;

use std::time::{Duration, Instant};

use common::TestEnv;
use common::ad::{TestAd, User};
use common::signin::{Browser, People, csrf, people};
use mailboxd::job::JobState;
use secrecy::SecretString;

const TOKEN: &str = "signin-test-api-token-0c6e2f9a71b4";

/// A test world whose directory is the Samba DC, the dashboard's groups set, and one job
/// that failed for good (an on-premises mailbox in AD).
async fn world(ad: &TestAd, p: &People) -> (TestEnv, String) {
    let sam = format!("onprem{}", p.t);
    ad.add_user(&sam, &sam, &User::onprem()).await;
    let mut env = TestEnv::new(vec![]).await;
    p.grant(ad, &mut env.settings);
    env.settings.admin.token = Some(SecretString::from(TOKEN));
    (env, sam)
}

async fn failed_job(env: &TestEnv, sam: &str) -> uuid::Uuid {
    let publisher = env.publisher().await;
    let spec = env.joiner(sam);
    publisher.publish(&spec).await.unwrap();
    let job = env.wait_terminal(&spec.id).await;
    assert_eq!(job.state, JobState::Failed, "{job:?}");
    job.id
}

/// The daemon (the binary, logging JSON) with the dashboard's groups from a config file.
/// Keep the directory while it runs.
async fn given_a_daemon_with_the_groups_in_its_config(
    env: &TestEnv,
    p: &People,
) -> (tempfile::TempDir, common::Daemon) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mailboxd.toml");
    std::fs::write(
        &config,
        format!(
            "[admin]\noperator_groups = [{:?}]\nviewer_groups = [{:?}]\n",
            p.operators, p.viewers
        ),
    )
    .unwrap();
    let daemon = env
        .spawn_logged(
            &["--log-format", "json", "--config", config.to_str().unwrap()],
            env.daemon_env(),
        )
        .await;
    (dir, daemon)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ad_operator_retries_a_job_and_the_job_the_api_and_the_log_name_them() {
    let ad = TestAd::get();
    let p = people(&ad).await;
    let (env, sam) = world(&ad, &p).await;
    let (_dir, daemon) = given_a_daemon_with_the_groups_in_its_config(&env, &p).await;
    let id = failed_job(&env, &sam).await;
    let mut browser = Browser::new(&daemon.admin);
    let password = when_the_operator_signs_in_after_a_typo(&mut browser, &p).await;
    when_they_retry_the_job_with_the_pages_csrf_token(&browser, &p, id).await;
    let who = format!("dashboard:CORP\\{}", p.operator);
    then_the_job_the_api_and_the_cli_name_them(&env, &daemon, &browser, &who, id).await;
    then_the_sign_in_and_the_retry_are_on_the_audit_trail(&env, &who, id);
    then_the_log_has_the_retry_and_the_refusal_but_no_password(
        &daemon.logs(),
        &p,
        &who,
        id,
        &password,
    );
}

/// Not signed in: sent to the sign-in page; a typo refused, then `CORP\name` signs in with
/// a strict session cookie. Returns the password.
async fn when_the_operator_signs_in_after_a_typo(browser: &mut Browser, p: &People) -> String {
    let (status, _) = browser.get("/").await;
    assert_eq!(status, 303, "not signed in: sent to the sign-in page");
    let (status, _, _) = browser.sign_in(&p.operator, "Typo-in-the-password").await;
    assert_eq!(status, 401);
    let password = p.password(&p.operator);
    let (status, set_cookie, page) = browser
        .sign_in(&format!("CORP\\{}", p.operator), &password)
        .await;
    assert_eq!(status, 303, "{page}");
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"),
        "{set_cookie}"
    );
    assert!(
        !set_cookie.contains(TOKEN) && !set_cookie.contains(&password),
        "{set_cookie}"
    );
    password
}

/// A form without the page's CSRF token is refused, and changes nothing; with it the
/// retry is done.
async fn when_they_retry_the_job_with_the_pages_csrf_token(
    browser: &Browser,
    p: &People,
    id: uuid::Uuid,
) {
    let (status, page) = browser.get(&format!("/jobs/{id}")).await;
    assert_eq!(status, 200);
    assert!(
        page.contains(&format!("CORP\\{} (operator)", p.operator)),
        "{page}"
    );
    assert!(page.contains(r#"id="retry""#), "{page}");
    let r = browser.post(&format!("/jobs/{id}/retry"), &[]).await;
    assert_eq!(r.status(), 403);
    let r = browser
        .post(&format!("/jobs/{id}/retry"), &[("csrf", &csrf(&page))])
        .await;
    assert_eq!(r.status(), 303);
}

async fn then_the_job_the_api_and_the_cli_name_them(
    env: &TestEnv,
    daemon: &common::Daemon,
    browser: &Browser,
    who: &str,
    id: uuid::Uuid,
) {
    let (_, page) = browser.get(&format!("/jobs/{id}")).await;
    assert!(
        page.contains(r#"id="actions""#) && page.contains(who),
        "{page}"
    );
    let api: serde_json::Value = env
        .http
        .get(format!("http://{}/api/v1/jobs/{id}", daemon.admin))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(api["actions"][0]["actor"], who, "{api}");
    assert_eq!(api["actions"][0]["action"], "retry", "{api}");
    let (code, out, err) = env.cli(&["jobs", "show", &id.to_string()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("retry by {who}")), "{out}");
}

/// The dashboard's sign-in and retry are on the audit trail, with the client.
fn then_the_sign_in_and_the_retry_are_on_the_audit_trail(env: &TestEnv, who: &str, id: uuid::Uuid) {
    let (code, out, err) = env.cli(&["audit", "list", "--json"]);
    assert_eq!(code, 0, "{err}");
    let trail: serde_json::Value = serde_json::from_str(&out).unwrap();
    let actions: Vec<(&str, &str)> = trail
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["actor"].as_str().unwrap(), r["action"].as_str().unwrap()))
        .collect();
    assert_eq!(actions, [(who, "retry"), (who, "sign in")], "{out}");
    assert_eq!(trail[0]["subject"], format!("job {id}"));
    assert_eq!(trail[0]["client"], "127.0.0.1");
}

fn then_the_log_has_the_retry_and_the_refusal_but_no_password(
    logs: &str,
    p: &People,
    who: &str,
    id: uuid::Uuid,
    password: &str,
) {
    let audit = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["target"] == "audit" && l["action"] == "retry")
        .unwrap_or_else(|| panic!("no audit line for the retry in {logs}"));
    assert_eq!(audit["actor"], who, "{audit}");
    assert_eq!(audit["subject"], format!("job {id}"), "{audit}");
    assert_eq!(audit["outcome"], "done", "{audit}");
    let refused = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["target"] == "audit" && l["user"] == p.operator.as_str())
        .unwrap_or_else(|| panic!("no log line for the refused sign-in in {logs}"));
    assert_eq!(refused["message"], "dashboard sign-in refused", "{refused}");
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("wrong user name or password"),
        "{refused}"
    );
    for secret in [password, "Typo-in-the-password"] {
        assert!(!logs.contains(secret), "a password reached the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_viewer_reads_but_cannot_act_even_with_a_forged_form() {
    let ad = TestAd::get();
    let p = people(&ad).await;
    let (env, sam) = world(&ad, &p).await;
    let app = env.start_daemon().await;
    let id = failed_job(&env, &sam).await;

    let mut viewer = Browser::new(app.admin_addr);
    // The UPN works as the user name as well.
    let (status, _, page) = viewer
        .sign_in(
            &format!("{}@corp.example", p.viewer),
            &p.password(&p.viewer),
        )
        .await;
    assert_eq!(status, 303, "{page}");
    let (status, page) = viewer.get(&format!("/jobs/{id}")).await;
    assert_eq!(status, 200);
    assert!(page.contains("(viewer)"), "{page}");
    assert!(
        !page.contains(r#"id="retry""#) && !page.contains(r#"id="cancel""#),
        "a viewer sees no action buttons: {page}"
    );
    // The viewer's own CSRF token (from the sign-out form) does not make a forged POST work.
    for action in ["retry", "cancel"] {
        let r = viewer
            .post(&format!("/jobs/{id}/{action}"), &[("csrf", &csrf(&page))])
            .await;
        assert_eq!(r.status(), 403, "{action}");
    }
    assert!(env.store.job_actions(id).await.unwrap().is_empty());
    let (job, _) = env.store.get_job(id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Failed);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_passwords_disabled_accounts_and_outsiders_get_one_refusal_and_guessing_is_limited() {
    let ad = TestAd::get();
    let p = people(&ad).await;
    let (env, _) = world(&ad, &p).await;
    let app = env.start_daemon().await;
    let mut b = Browser::new(app.admin_addr);
    let refused = then_every_refusal_is_one_page_whatever_the_reason(&ad, &p, &mut b).await;
    let spellings = when_the_allowed_failures_are_spent_under_any_spelling(&p, &mut b).await;
    let (status, _, page) = b.sign_in(&spellings[0], &p.password(&p.viewer)).await;
    assert_eq!(status, 401, "{page}");
    assert_eq!(page, refused, "the same refusal as any other");
    // Another replica counts the same failures.
    let other = env.start_daemon().await;
    let (status, _, page) = Browser::new(other.admin_addr)
        .sign_in(&spellings[2], &p.password(&p.viewer))
        .await;
    assert_eq!(status, 401, "{page}");
    other.stop().await;
    // Another person is not held up by it.
    let (status, _, page) = Browser::new(app.admin_addr)
        .sign_in(&p.operator, &p.password(&p.operator))
        .await;
    assert_eq!(status, 303, "{page}");
    app.stop().await;
}

/// Every refusal is the same status and the same page, whatever the reason: a wrong
/// password, an empty one (no anonymous bind), a disabled or locked account, someone in
/// no group, another domain, no such account. The page says nothing about the account.
/// Returns that page.
async fn then_every_refusal_is_one_page_whatever_the_reason(
    ad: &TestAd,
    p: &People,
    b: &mut Browser,
) -> String {
    let locked = format!("lck{}", p.t);
    let (locked_dn, _) = ad.add_user(&locked, &locked, &User::default()).await;
    ad.set_password(&locked_dn, &p.password(&locked)).await;
    ad.add_member(&p.team, &locked_dn).await;
    ad.lock_out(&locked_dn, &format!("{locked}@corp.example"))
        .await;
    let tries = [
        (p.operator.clone(), "not-the-password".to_owned()),
        (p.operator.clone(), String::new()),
        (p.disabled.clone(), p.password(&p.disabled)),
        (locked.clone(), p.password(&locked)),
        (p.outsider.clone(), p.password(&p.outsider)),
        ("OTHER\\someone".to_owned(), "x".to_owned()),
        (format!("nobody{}", p.t), "x".to_owned()),
    ];
    let mut pages = Vec::new();
    for (user, password) in &tries {
        let (status, set, page) = b.sign_in(user, password).await;
        assert_eq!(status, 401, "{user}: {page}");
        assert!(set.is_empty(), "no cookie for a refused sign-in");
        assert!(page.contains(mailboxd::signin::REFUSED), "{user}: {page}");
        pages.push(page);
    }
    assert!(
        pages.windows(2).all(|w| w[0] == w[1]),
        "one page for every reason"
    );
    pages.swap_remove(0)
}

/// Guessing: after the allowed failures for one account, even the right password is
/// refused, under any spelling of the name (sAMAccountName, DOMAIN\\sam, UPN, case).
/// Returns the spellings.
async fn when_the_allowed_failures_are_spent_under_any_spelling(
    p: &People,
    b: &mut Browser,
) -> [String; 5] {
    let spellings = [
        p.viewer.clone(),
        format!("CORP\\{}", p.viewer),
        format!("{}@corp.example", p.viewer),
        p.viewer.to_uppercase(),
        format!("corp\\{}", p.viewer.to_uppercase()),
    ];
    for user in &spellings[..mailboxd::signin::MAX_FAILURES_PER_USER as usize] {
        let (status, _, _) = b.sign_in(user, "guess").await;
        assert_eq!(status, 401);
    }
    spellings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signing_out_ends_the_session_on_every_replica_and_leaving_the_groups_ends_it_too() {
    let ad = TestAd::get();
    let p = people(&ad).await;
    let (mut env, _) = world(&ad, &p).await;
    env.settings.admin.group_check_interval = Duration::from_secs(1);
    let a = env.start_daemon().await;
    let b = env.start_daemon().await;

    let mut on_a = Browser::new(a.admin_addr);
    let (status, _, page) = on_a.sign_in(&p.operator, &p.password(&p.operator)).await;
    assert_eq!(status, 303, "{page}");
    let on_b = on_a.at(b.admin_addr);
    let (status, page) = on_b.get("/jobs").await;
    assert_eq!(status, 200, "replica B accepts A's session: {page}");
    let r = on_a.post("/logout", &[("csrf", &csrf(&page))]).await;
    assert_eq!(r.status(), 303);
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0"),
        "the browser forgets the cookie"
    );
    for browser in [&on_a, &on_b] {
        let (status, _) = browser.get("/jobs").await;
        assert_eq!(status, 303, "signed out everywhere");
    }

    // Removed from the team (and so from the nested operators' group): the next check
    // after group_check_interval ends the session.
    let mut again = Browser::new(a.admin_addr);
    let (status, _, _) = again.sign_in(&p.operator, &p.password(&p.operator)).await;
    assert_eq!(status, 303);
    assert_eq!(again.get("/jobs").await.0, 200);
    ad.remove_member(&p.team, &p.operator_dn).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _) = again.at(b.admin_addr).get("/jobs").await;
        if status == 303 {
            break;
        }
        assert_eq!(status, 200);
        assert!(
            Instant::now() < deadline,
            "still signed in after leaving the groups"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, _, page) = again.sign_in(&p.operator, &p.password(&p.operator)).await;
    assert_eq!(status, 401, "no group, no new session either: {page}");
    assert!(page.contains(mailboxd::signin::REFUSED), "{page}");
    a.stop().await;
    b.stop().await;
}
