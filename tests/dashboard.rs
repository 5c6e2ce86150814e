//! Operators read and steer the queue in the dashboard (server-rendered HTML).

mod common;

use common::ad::{TestAd, User};
use common::signin::{Browser, csrf, people};
use common::{TestEnv, seed};
use mailboxd::store::JobState;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_signs_in_sees_the_queue_and_retries_a_failed_job() {
    let ad = TestAd::get();
    let p = people(&ad).await;
    // In AD: an on-premises mailbox (a joiner for it fails for good) and a name that needs
    // escaping, already remote (its joiner succeeds without Exchange).
    let onprem = format!("dashonprem{}", p.t);
    let hostile = format!("o'brien&co{}", p.t);
    let onprem_user = User {
        type_details: Some(1),
        ..User::default()
    };
    ad.add_user(&onprem, &onprem, &onprem_user).await;
    let remote = User::remote(&format!("{hostile}@tenant.mail.onmicrosoft.com"));
    ad.add_user(&format!("obrien{}", p.t), &hostile, &remote)
        .await;
    let mut env = TestEnv::new(vec![]).await;
    p.grant(&ad, &mut env.settings);
    let app = env.start_daemon().await;
    let publisher = env.publisher().await;
    let bad = env.joiner(&onprem);
    let good = env.joiner(&hostile);
    publisher.publish(&bad).await.unwrap();
    publisher.publish(&good).await.unwrap();
    let failed = env.wait_terminal(&bad.id).await;
    assert_eq!(failed.state, JobState::Failed);
    env.wait_succeeded(&good.id).await;

    let base = format!("http://{}", app.admin_addr);
    let mut browser = Browser::new(app.admin_addr);

    // Not signed in: sent to the sign-in page; actions refused.
    let (status, _) = browser.get("/").await;
    assert_eq!(status, 303);
    let r = browser
        .post(&format!("/jobs/{}/retry", failed.id), &[])
        .await;
    assert_eq!(r.status(), 403);
    let (status, _, _) = browser.sign_in(&p.operator, "wrong").await;
    assert_eq!(status, 401);

    // Sign in: an HttpOnly, SameSite=Strict session cookie.
    let (status, cookie, page) = browser.sign_in(&p.operator, &p.password(&p.operator)).await;
    assert_eq!(status, 303, "{page}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let get = |path: String| {
        let browser = &browser;
        let path = path[base.len()..].to_owned();
        async move {
            let (status, body) = browser.get(&path).await;
            assert_eq!(status, 200, "{path}: {body}");
            body
        }
    };

    let home = get(format!("{base}/")).await;
    assert!(home.contains(r#"id="count-succeeded"><b>1</b>"#), "{home}");
    assert!(home.contains(r#"id="count-failed"><b>1</b>"#), "{home}");
    assert!(home.contains("Circuit closed"), "{home}");
    assert!(home.contains("Broker connected"), "{home}");
    assert!(home.contains("<svg id=\"chart\""), "{home}");
    assert!(home.contains("Cmdlets are not paced"), "{home}");

    // The failed list, and a search by account that escapes what it shows.
    let list = get(format!("{base}/jobs?state=failed")).await;
    assert!(list.contains(&onprem), "{list}");
    assert!(!list.contains("o&#39;brien"), "only failed jobs: {list}");
    let search = get(format!("{base}/jobs?account=o%27brien%26co{}", p.t)).await;
    assert!(search.contains("o&#39;brien&amp;co"), "{search}");
    assert!(!search.contains("o'brien&co"), "unescaped: {search}");

    // The job page: what happened, attempt by attempt, and the buttons.
    let page = get(format!("{base}/jobs/{}", failed.id)).await;
    assert!(page.contains("on-premises mailbox"), "{page}");
    assert!(
        page.contains(r#"id="attempts""#) && page.contains("permanent"),
        "{page}"
    );
    assert!(page.contains(r#"id="retry""#));

    // Retry from the dashboard: back on the job page, the job queued again.
    let r = browser
        .post(
            &format!("/jobs/{}/retry", failed.id),
            &[("csrf", &csrf(&page))],
        )
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(
        r.headers()["location"].to_str().unwrap(),
        format!("/jobs/{}", failed.id)
    );
    // It runs again (a second attempt on record) and fails again: still on-prem.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (job, attempts) = env.store.get_job(failed.id).await.unwrap().unwrap();
        if attempts.len() == 2 && job.state.is_terminal() {
            assert_eq!(job.state, JobState::Failed);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not retried: {job:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let page = get(format!("{base}/jobs/{}", failed.id)).await;
    assert!(
        page.contains(r#"id="actions""#)
            && page.contains(&format!("dashboard:CORP\\{}", p.operator)),
        "{page}"
    );

    for path in ["/alerts", "/poison", "/reconcile"] {
        let body = get(format!("{base}{path}")).await;
        assert!(body.contains("<table"), "{path}: {body}");
    }
    let alerts = get(format!("{base}/alerts")).await;
    assert!(alerts.contains(&onprem), "{alerts}");

    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_overview_tells_the_exchange_budget_in_words() {
    let mut env = TestEnv::new(vec![seed("dashbudget")]).await;
    env.settings.admin.open_reads = true;
    env.settings.exchange.max_sessions = 5;
    env.settings.exchange.max_cmdlets = Some(50);
    env.settings.exchange.cmdlet_window = Some(std::time::Duration::from_secs(600));
    let app = env.start_daemon().await;
    let ev = env.joiner("dashbudget");
    env.publisher().await.publish(&ev).await.unwrap();
    env.wait_succeeded(&ev.id).await;
    // Another replica on the database was refused by Exchange.
    env.store
        .record_throttled(
            "other-replica",
            None,
            "Fail to create a runspace because you have exceeded the maximum number of connections allowed : 18",
        )
        .await
        .unwrap();

    let home = env
        .http
        .get(format!("http://{}/", app.admin_addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Idle claim loops take a slot for a moment to look for work: the count in use varies.
    assert!(home.contains(" of 5 in use (all replicas)."), "{home}");
    assert!(
        home.contains("This replica may hold 5 and holds "),
        "{home}"
    );
    assert!(
        home.contains("Exchange refused 1 time(s)</b> in the last 15 minutes"),
        "{home}"
    );
    // The joiner's Enable-RemoteMailbox and the 2 counted for the remote session's
    // Import-PSSession, for the 10 minutes after its batch.
    assert!(
        home.contains("Cmdlets: 3 of 50 used in the 600 s window (all replicas); 0 batch(es) of this replica waiting for room."),
        "{home}"
    );
    app.stop().await;
}
