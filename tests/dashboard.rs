//! Operators read and steer the queue in the dashboard (server-rendered HTML).

mod common;

use common::{TestEnv, seed};
use lab::Recipient;
use mailboxd::store::JobState;
use secrecy::SecretString;

const TOKEN: &str = "dashboard-token-for-tests";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_logs_in_sees_the_queue_and_retries_a_failed_job() {
    let mut onprem = seed("dashonprem");
    onprem.recipient = Recipient::Onprem;
    let hostile = "o'brien&co";
    let mut env = TestEnv::new(vec![onprem, seed(hostile)]).await;
    env.settings.admin.token = Some(SecretString::from(TOKEN));
    let app = env.start_daemon().await;
    let publisher = env.publisher().await;
    let bad = env.joiner("dashonprem");
    let good = env.joiner(hostile);
    publisher.publish(&bad).await.unwrap();
    publisher.publish(&good).await.unwrap();
    let failed = env.wait_terminal(&bad.id).await;
    assert_eq!(failed.state, JobState::Failed);
    env.wait_succeeded(&good.id).await;

    let base = format!("http://{}", app.admin_addr);
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // Without the token: sent to the login page; actions refused.
    let r = client.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/login");
    let r = client
        .post(format!("{base}/jobs/{}/retry", failed.id))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client
        .post(format!("{base}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Log in: an HttpOnly, SameSite=Strict cookie.
    let r = client
        .post(format!("{base}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let get = |path: String| {
        let client = client.clone();
        let cookie = cookie.clone();
        async move {
            let r = client
                .get(path)
                .header("cookie", cookie)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.text().await.unwrap()
        }
    };

    let home = get(format!("{base}/")).await;
    assert!(home.contains(r#"id="count-succeeded"><b>1</b>"#), "{home}");
    assert!(home.contains(r#"id="count-failed"><b>1</b>"#), "{home}");
    assert!(home.contains("Circuit closed"), "{home}");
    assert!(home.contains("Broker connected"), "{home}");
    assert!(home.contains("<svg id=\"chart\""), "{home}");

    // The failed list, and a search by account that escapes what it shows.
    let list = get(format!("{base}/jobs?state=failed")).await;
    assert!(list.contains("dashonprem"), "{list}");
    assert!(!list.contains("o&#39;brien"), "only failed jobs: {list}");
    let search = get(format!("{base}/jobs?account=o%27brien%26co")).await;
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
    let r = client
        .post(format!("{base}/jobs/{}/retry", failed.id))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
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
        page.contains(r#"id="actions""#) && page.contains("dashboard:admin"),
        "{page}"
    );

    for path in ["/alerts", "/poison", "/reconcile"] {
        let body = get(format!("{base}{path}")).await;
        assert!(body.contains("<table"), "{path}: {body}");
    }
    let alerts = get(format!("{base}/alerts")).await;
    assert!(alerts.contains("dashonprem"), "{alerts}");

    app.stop().await;
}

/// Logs in with the admin token; the session cookie to send.
async fn login(client: &reqwest::Client, base: &str) -> String {
    let r = client
        .post(format!("{base}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap();
    cookie.split(';').next().unwrap().to_owned()
}

/// The page at `path` (status and text).
async fn fetch(client: &reqwest::Client, cookie: &str, url: String) -> (u16, String) {
    let r = client
        .get(url)
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Posts a form as the browser would, with the session cookie when there is one.
async fn post_form(
    client: &reqwest::Client,
    cookie: Option<&str>,
    url: String,
    fields: &[(&str, String)],
) -> reqwest::Response {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish();
    let mut req = client
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    req.body(body).send().await.unwrap()
}

/// The value of the hidden field `name` in a form.
fn hidden<'a>(page: &'a str, name: &str) -> Vec<(&'a str, String)> {
    let mut out = Vec::new();
    for part in page.split("<input type=\"hidden\" name=\"").skip(1) {
        let (field, rest) = part.split_once('"').unwrap();
        let value = rest
            .split("value=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let value = value
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&amp;", "&");
        out.push((field, value));
    }
    assert!(out.iter().any(|(f, _)| *f == name), "no {name}: {page}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failures_read_as_one_group_and_bulk_actions_confirm_the_count_and_filter() {
    let mut seeds = Vec::new();
    for sam in ["grpann", "grpbob", "grpcy"] {
        let mut s = seed(sam);
        s.recipient = Recipient::Onprem;
        seeds.push(s);
    }
    seeds.extend([seed("grpfine"), seed("grpwait1"), seed("grpwait2")]);
    let mut env = TestEnv::new(seeds).await;
    env.settings.admin.token = Some(SecretString::from(TOKEN));
    env.settings.ldap.require_cloud_sync = true;
    for sam in ["grpwait1", "grpwait2"] {
        env.fault(serde_json::json!({"fault": "not_synced", "account": sam, "seconds": 600}))
            .await;
    }
    let app = env.start_daemon().await;
    let publisher = env.publisher().await;
    let mut failing = Vec::new();
    for sam in ["grpann", "grpbob", "grpcy"] {
        let e = env.joiner(sam);
        publisher.publish(&e).await.unwrap();
        failing.push(e);
    }
    let (fine, w1, w2) = (
        env.joiner("grpfine"),
        env.joiner("grpwait1"),
        env.joiner("grpwait2"),
    );
    for e in [&w1, &w2] {
        publisher.publish(e).await.unwrap();
    }
    // An IAM system that sends more than the schema has, a credential included.
    let mut body = fine.to_json();
    body["initial_password"] = "Winter2026!-never-shown".into();
    body["account"]["password"] = "Winter2026!-never-shown".into();
    publisher
        .publish_raw(
            "ad.user.created",
            body.to_string().as_bytes(),
            Some("application/json"),
            None,
        )
        .await
        .unwrap();
    let mut failed_ids = Vec::new();
    for e in &failing {
        let j = env.wait_terminal(&e.id).await;
        assert_eq!(j.state, JobState::Failed);
        failed_ids.push(j.id);
    }
    let fine_job = env.wait_succeeded(&fine.id).await;
    for e in [&w1, &w2] {
        env.wait_job(&e.id, |j| j.state == JobState::WaitingForSync)
            .await;
    }

    let base = format!("http://{}", app.admin_addr);
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let cookie = login(&client, &base).await;
    let get = |path: &str| fetch(&client, &cookie, format!("{base}{path}"));

    // The overview: live, and the health at a glance.
    let (_, home) = get("/").await;
    assert!(
        home.contains(r#"<div id="live">"#) && home.contains(r#"id="updated""#),
        "{home}"
    );
    assert!(
        home.contains(r#"id="oldest"><span>Oldest queued or retrying</span><b>none waiting"#),
        "{home}"
    );
    let sync = home.split(r#"id="sync""#).nth(1).unwrap();
    assert!(sync.contains("<b>2 <small>the first fails at"), "{sync}");
    assert!(
        home.contains(r#"<svg id="chart-days""#) && home.contains(">jobs</text>"),
        "{home}"
    );
    let ttd = home.split(r#"id="time-to-done""#).nth(1).unwrap();
    assert_eq!(
        ttd.split("</table>")
            .next()
            .unwrap()
            .matches("<tr>")
            .count(),
        2,
        "one hour with a success: {ttd}"
    );

    // The job page shows the event as received, without what the schema does not know.
    let (_, page) = get(&format!("/jobs/{}", fine_job.id)).await;
    assert!(
        page.contains("The event as received") && page.contains("&quot;grpfine&quot;"),
        "{page}"
    );
    assert!(!page.contains("Winter2026"), "a credential shown: {page}");

    // Failures: the three on-prem accounts are one group, the class and accounts named.
    let (_, failures) = get("/failures").await;
    assert!(
        failures
            .contains("3 jobs — account &quot;&lt;account&gt;&quot; has an on-premises mailbox"),
        "{failures}"
    );
    assert!(
        !failures.contains(r#"id="group-1""#),
        "one group only: {failures}"
    );
    assert!(
        failures.contains("Class <b class=\"class-permanent\">permanent</b>: 3 failed, 0 retrying")
    );
    for sam in ["grpann", "grpbob", "grpcy"] {
        assert!(failures.contains(sam), "{sam}: {failures}");
    }
    let retry_link = failures
        .split(r#"id="group-0-retry" href=""#)
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .replace("&amp;", "&");

    // The group's retry asks first, with the exact count and the filter in words.
    let (status, confirm) = get(&retry_link).await;
    assert_eq!(status, 200, "{confirm}");
    assert!(
        confirm.contains("Retry <b>3</b> jobs matching: state failed or retrying, error class permanent, error “account &quot;&lt;account&gt;&quot; has an on-premises mailbox"),
        "{confirm}"
    );
    let fields = hidden(&confirm, "expected");
    let r = post_form(&client, None, format!("{base}/bulk/retry"), &fields).await;
    assert_eq!(r.status(), 401, "an action needs the token");
    let r = post_form(
        &client,
        Some(&cookie),
        format!("{base}/bulk/retry"),
        &fields,
    )
    .await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/bulk#bulk-1");
    // Each of the three runs again (a second attempt) and fails again: still on-prem.
    for id in &failed_ids {
        env.wait_attempts(*id, 2).await;
        let (_, page) = get(&format!("/jobs/{id}")).await;
        assert!(page.contains("bulk #1: state failed or retrying"), "{page}");
        // The timeline: the first attempt, the retry, the attempt after it counted anew.
        let max = env.settings.worker.max_attempts;
        let first = page
            .find(&format!(">attempt 1 of {max}</td>"))
            .expect(&page);
        let retried = page
            .find("Retried: attempts start again from 1")
            .expect(&page);
        let again = page
            .find(&format!(">attempt 1 of {max} after a manual retry</td>"))
            .expect(&page);
        assert!(first < retried && retried < again, "{page}");
        assert!(
            page.contains("The event as received") && page.contains("&quot;sam_account_name&quot;"),
            "{page}"
        );
    }
    let (_, bulk) = get("/bulk").await;
    assert!(
        bulk.contains(r#"<tr id="bulk-1"><td>1</td>"#)
            && bulk.contains(r#"<td>retried</td><td class="jobs">3</td>"#),
        "{bulk}"
    );

    // A bulk cancel from the filtered list: never more than the confirmation stated.
    let (_, list) = get("/jobs?state=waiting_for_sync").await;
    assert!(
        list.contains("grpwait1") && list.contains("grpwait2"),
        "{list}"
    );
    assert!(!list.contains("grpfine"), "{list}");
    let (_, confirm) = get("/bulk/cancel?state=waiting_for_sync").await;
    assert!(
        confirm.contains("Cancel <b>2</b> jobs matching: state waiting_for_sync."),
        "{confirm}"
    );
    let mut fields = hidden(&confirm, "expected");
    fields.retain(|(f, _)| *f != "expected");
    fields.push(("expected", "1".into()));
    let r = post_form(
        &client,
        Some(&cookie),
        format!("{base}/bulk/cancel"),
        &fields,
    )
    .await;
    assert_eq!(r.status(), 303);
    let (_, confirm) = get("/bulk/cancel?state=waiting_for_sync").await;
    assert!(
        confirm.contains("Cancel <b>1</b> job matching"),
        "{confirm}"
    );
    let (_, bulk) = get("/bulk").await;
    assert!(
        bulk.contains(
            r#"<td>cancelled</td><td class="jobs">1</td><td>state waiting_for_sync</td>"#
        ),
        "{bulk}"
    );

    // A filter it cannot read is refused, never widened to every job.
    let (status, page) = get("/bulk/cancel?state=waiting&class=permanent").await;
    assert_eq!(status, 400, "{page}");
    assert!(
        page.contains("state &quot;waiting&quot; is not valid"),
        "{page}"
    );

    app.stop().await;
}
