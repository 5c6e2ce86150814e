//! Operators read and steer the queue in the dashboard (server-rendered HTML).

use crate::common;

use common::ad::{TestAd, User};
use common::signin::{Browser, csrf, people};
use common::{TestEnv, seed};
use mailboxd::job::JobState;

/// The queue of the sign-in story: one failed job and one succeeded for a name that needs
/// escaping.
struct OneFailure {
    p: common::signin::People,
    env: TestEnv,
    app: mailboxd::app::App,
    onprem: String,
    failed: mailboxd::store::Job,
}

/// In AD: an on-premises mailbox (a joiner for it fails for good) and a name that needs
/// escaping, already remote (its joiner succeeds without Exchange).
async fn given_a_failed_job_and_a_succeeded_one_with_a_hostile_name() -> OneFailure {
    let ad = TestAd::get();
    let p = people(&ad).await;
    let onprem = format!("dashonprem{}", p.t);
    let hostile = format!("o'brien&co{}", p.t);
    let onprem_user = User::onprem();
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
    OneFailure {
        p,
        env,
        app,
        onprem,
        failed,
    }
}

/// A page the signed-in browser must get with 200.
async fn page(browser: &Browser, path: &str) -> String {
    let (status, body) = browser.get(path).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_signs_in_sees_the_queue_and_retries_a_failed_job() {
    let s = given_a_failed_job_and_a_succeeded_one_with_a_hostile_name().await;
    let mut browser = Browser::new(s.app.admin_addr);
    then_without_signing_in_pages_redirect_and_actions_are_refused(&s, &mut browser).await;
    when_the_operator_signs_in_the_session_cookie_is_strict(&s, &mut browser).await;
    then_the_overview_counts_the_queue_and_the_lists_escape_names(&s, &browser).await;
    let job_page = page(&browser, &format!("/jobs/{}", s.failed.id)).await;
    then_the_job_page_tells_what_happened_with_the_buttons(&job_page);
    when_the_operator_retries_it_runs_again_and_fails_again(&s, &browser, &job_page).await;
    then_the_job_and_the_alerts_name_the_operator(&s, &browser).await;
    s.app.stop().await;
}

/// Not signed in: sent to the sign-in page; actions refused.
async fn then_without_signing_in_pages_redirect_and_actions_are_refused(
    s: &OneFailure,
    browser: &mut Browser,
) {
    let (status, _) = browser.get("/").await;
    assert_eq!(status, 303);
    let r = browser
        .post(&format!("/jobs/{}/retry", s.failed.id), &[])
        .await;
    assert_eq!(r.status(), 403);
    let (status, _, _) = browser.sign_in(&s.p.operator, "wrong").await;
    assert_eq!(status, 401);
}

/// Sign in: an HttpOnly, SameSite=Strict session cookie.
async fn when_the_operator_signs_in_the_session_cookie_is_strict(
    s: &OneFailure,
    browser: &mut Browser,
) {
    let (status, cookie, page) = browser
        .sign_in(&s.p.operator, &s.p.password(&s.p.operator))
        .await;
    assert_eq!(status, 303, "{page}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
}

async fn then_the_overview_counts_the_queue_and_the_lists_escape_names(
    s: &OneFailure,
    browser: &Browser,
) {
    let home = page(browser, "/").await;
    assert!(home.contains(r#"id="count-succeeded"><b>1</b>"#), "{home}");
    assert!(home.contains(r#"id="count-failed"><b>1</b>"#), "{home}");
    assert!(home.contains("Circuit closed"), "{home}");
    assert!(home.contains("Broker connected"), "{home}");
    assert!(home.contains("<svg id=\"chart\""), "{home}");
    assert!(home.contains("Cmdlets are not paced"), "{home}");

    // The failed list, and a search by account that escapes what it shows.
    let list = page(browser, "/jobs?state=failed").await;
    assert!(list.contains(&s.onprem), "{list}");
    assert!(!list.contains("o&#39;brien"), "only failed jobs: {list}");
    let search = page(browser, &format!("/jobs?account=o%27brien%26co{}", s.p.t)).await;
    assert!(search.contains("o&#39;brien&amp;co"), "{search}");
    assert!(!search.contains("o'brien&co"), "unescaped: {search}");
}

/// The job page: what happened, attempt by attempt, and the buttons.
fn then_the_job_page_tells_what_happened_with_the_buttons(page: &str) {
    assert!(page.contains("on-premises mailbox"), "{page}");
    assert!(
        page.contains(r#"id="attempts""#) && page.contains("permanent"),
        "{page}"
    );
    assert!(page.contains(r#"id="retry""#));
}

/// Retry from the dashboard: back on the job page, the job queued again; it runs again (a
/// second attempt on record) and fails again: still on-prem.
async fn when_the_operator_retries_it_runs_again_and_fails_again(
    s: &OneFailure,
    browser: &Browser,
    job_page: &str,
) {
    let id = s.failed.id;
    let r = browser
        .post(&format!("/jobs/{id}/retry"), &[("csrf", &csrf(job_page))])
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(
        r.headers()["location"].to_str().unwrap(),
        format!("/jobs/{id}")
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (job, attempts) = s.env.store.get_job(id).await.unwrap().unwrap();
        if attempts.len() == 2 && job.state.is_terminal() {
            assert_eq!(job.state, JobState::Failed);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not retried: {job:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn then_the_job_and_the_alerts_name_the_operator(s: &OneFailure, browser: &Browser) {
    let job_page = page(browser, &format!("/jobs/{}", s.failed.id)).await;
    assert!(
        job_page.contains(r#"id="actions""#)
            && job_page.contains(&format!("dashboard:CORP\\{}", s.p.operator)),
        "{job_page}"
    );
    for path in ["/alerts", "/poison", "/reconcile"] {
        let body = page(browser, path).await;
        assert!(body.contains("<table"), "{path}: {body}");
    }
    let alerts = page(browser, "/alerts").await;
    assert!(alerts.contains(&s.onprem), "{alerts}");
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

/// Fields as `Browser::post` takes them.
fn form<'a>(fields: &'a [(&'a str, String)]) -> Vec<(&'a str, &'a str)> {
    fields.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The value of the hidden field `name` in a form.
fn hidden<'a>(page: &'a str, name: &str) -> Vec<(&'a str, String)> {
    // The confirmation's own form, not the sign-out form in the header.
    let form = page
        .split("<form method=\"post\" action=\"/bulk/")
        .nth(1)
        .and_then(|f| f.split("</form>").next())
        .unwrap_or_else(|| panic!("no confirmation form: {page}"));
    let mut out = Vec::new();
    for part in form.split("<input type=\"hidden\" name=\"").skip(1) {
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

/// The queue of the grouped-failures story, with the people who read and steer it.
struct GroupedFailures {
    p: common::signin::People,
    env: TestEnv,
    app: mailboxd::app::App,
    /// The three on-premises joiners' jobs, failed for one reason.
    failed_ids: Vec<uuid::Uuid>,
    /// The remote account's job, whose event carried fields the schema does not know.
    fine_job: mailboxd::store::Job,
}

impl GroupedFailures {
    fn sam(&self, name: &str) -> String {
        format!("{name}{}", self.p.t)
    }

    async fn operator(&self) -> Browser {
        let mut browser = Browser::new(self.app.admin_addr);
        let (status, _, page) = browser
            .sign_in(&self.p.operator, &self.p.password(&self.p.operator))
            .await;
        assert_eq!(status, 303, "{page}");
        browser
    }
}

/// In AD: three on-premises mailboxes (their joiners fail for good, for one reason), an
/// account already remote (its joiner succeeds) and two the cloud has not seen yet.
async fn given_three_failures_for_one_reason_a_success_and_two_waiting_for_sync() -> GroupedFailures
{
    let ad = TestAd::get();
    let p = people(&ad).await;
    let sam = |name: &str| format!("{name}{}", p.t);
    let onprem = User::onprem();
    for name in ["grpann", "grpbob", "grpcy"] {
        ad.add_user(&sam(name), &sam(name), &onprem).await;
    }
    let remote = User::remote(&format!("{}@tenant.mail.onmicrosoft.com", sam("grpfine")));
    ad.add_user(&sam("grpfine"), &sam("grpfine"), &remote).await;
    for name in ["grpwait1", "grpwait2"] {
        ad.add_user(&sam(name), &sam(name), &User::default()).await;
    }
    let mut env = TestEnv::new(vec![]).await;
    p.grant(&ad, &mut env.settings);
    env.settings.ldap.require_cloud_sync = true;
    let app = env.start_daemon().await;
    let publisher = env.publisher().await;
    let mut failing = Vec::new();
    for name in ["grpann", "grpbob", "grpcy"] {
        let e = env.joiner(&sam(name));
        publisher.publish(&e).await.unwrap();
        failing.push(e);
    }
    let (fine, w1, w2) = (
        env.joiner(&sam("grpfine")),
        env.joiner(&sam("grpwait1")),
        env.joiner(&sam("grpwait2")),
    );
    for e in [&w1, &w2] {
        publisher.publish(e).await.unwrap();
    }
    when_an_iam_system_sends_more_than_the_schema_has(&publisher, &fine).await;
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
    GroupedFailures {
        p,
        env,
        app,
        failed_ids,
        fine_job,
    }
}

/// An IAM system that sends more than the schema has, a credential included.
async fn when_an_iam_system_sends_more_than_the_schema_has(
    publisher: &mailboxd::publish::Publisher,
    event: &mailboxd::publish::EventSpec,
) {
    let mut body = event.to_json();
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failures_read_as_one_group_and_bulk_actions_confirm_the_count_and_filter() {
    let s = given_three_failures_for_one_reason_a_success_and_two_waiting_for_sync().await;
    then_a_viewer_reads_the_groups_but_cannot_act(&s).await;
    let browser = s.operator().await;
    then_the_overview_is_live_with_the_health_at_a_glance(&browser).await;
    then_the_job_page_shows_the_event_without_what_the_schema_does_not_know(&s, &browser).await;
    let retry_link = then_the_failures_are_one_group_with_class_and_accounts(&s, &browser).await;
    then_the_group_retry_asks_first_and_each_job_runs_again(&s, &browser, &retry_link).await;
    then_a_bulk_cancel_never_does_more_than_its_confirmation_stated(&s, &browser).await;
    then_a_filter_it_cannot_read_is_refused(&browser).await;
    s.app.stop().await;
}

async fn then_a_viewer_reads_the_groups_but_cannot_act(s: &GroupedFailures) {
    let mut viewer = Browser::new(s.app.admin_addr);
    let (status, _, _) = viewer
        .sign_in(&s.p.viewer, &s.p.password(&s.p.viewer))
        .await;
    assert_eq!(status, 303);
    let (_, failures) = viewer.get("/failures").await;
    assert!(failures.contains("3 jobs"), "{failures}");
    assert!(!failures.contains("group-0-retry"), "{failures}");
    let (_, confirm) = viewer.get("/bulk/cancel?state=waiting_for_sync").await;
    assert!(
        confirm.contains("Only an operator can confirm this."),
        "{confirm}"
    );
}

async fn then_the_overview_is_live_with_the_health_at_a_glance(browser: &Browser) {
    let (_, home) = browser.get("/").await;
    assert!(
        home.contains(r#"<div id="live" data-refresh-ms="#) && home.contains(r#"id="updated""#),
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
}

async fn then_the_job_page_shows_the_event_without_what_the_schema_does_not_know(
    s: &GroupedFailures,
    browser: &Browser,
) {
    let (_, page) = browser.get(&format!("/jobs/{}", s.fine_job.id)).await;
    assert!(
        page.contains("The event as received")
            && page.contains(&format!("&quot;{}&quot;", s.sam("grpfine"))),
        "{page}"
    );
    assert!(!page.contains("Winter2026"), "a credential shown: {page}");
}

/// The three on-prem accounts are one group, the class and accounts named; returns the
/// group's retry link.
async fn then_the_failures_are_one_group_with_class_and_accounts(
    s: &GroupedFailures,
    browser: &Browser,
) -> String {
    let (_, failures) = browser.get("/failures").await;
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
    for name in ["grpann", "grpbob", "grpcy"] {
        assert!(failures.contains(&s.sam(name)), "{name}: {failures}");
    }
    failures
        .split(r#"id="group-0-retry" href=""#)
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .replace("&amp;", "&")
}

/// The group's retry asks first, with the exact count and the filter in words.
async fn then_the_group_retry_asks_first_and_each_job_runs_again(
    s: &GroupedFailures,
    browser: &Browser,
    retry_link: &str,
) {
    let (status, confirm) = browser.get(retry_link).await;
    assert_eq!(status, 200, "{confirm}");
    assert!(
        confirm.contains("Retry <b>3</b> jobs matching: state failed or retrying, error class permanent, error “account &quot;&lt;account&gt;&quot; has an on-premises mailbox"),
        "{confirm}"
    );
    let fields = hidden(&confirm, "expected");
    let r = browser.post("/bulk/retry", &form(&fields)).await;
    let anonymous = Browser::new(s.app.admin_addr);
    let forged = anonymous.post("/bulk/retry", &form(&fields)).await;
    assert_eq!(
        forged.status(),
        403,
        "an action needs an operator signed in"
    );
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/bulk#bulk-1");
    // Each of the three runs again (a second attempt) and fails again: still on-prem.
    for id in &s.failed_ids {
        then_the_job_page_shows_the_retry_in_its_timeline(s, browser, *id).await;
    }
    let (_, bulk) = browser.get("/bulk").await;
    assert!(
        bulk.contains(r#"<tr id="bulk-1"><td>1</td>"#)
            && bulk.contains(r#"<td>retried</td><td class="jobs">3</td>"#)
            && bulk.contains(&format!("\\{}</td>", s.p.operator))
            && bulk.contains("<td>dashboard:"),
        "{bulk}"
    );
}

/// The timeline: the first attempt, the retry, the attempt after it counted anew.
async fn then_the_job_page_shows_the_retry_in_its_timeline(
    s: &GroupedFailures,
    browser: &Browser,
    id: uuid::Uuid,
) {
    s.env.wait_attempts(id, 2).await;
    let (_, page) = browser.get(&format!("/jobs/{id}")).await;
    assert!(page.contains("bulk #1: state failed or retrying"), "{page}");
    let max = s.env.settings.worker.max_attempts;
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

/// A bulk cancel from the filtered list: never more than the confirmation stated.
async fn then_a_bulk_cancel_never_does_more_than_its_confirmation_stated(
    s: &GroupedFailures,
    browser: &Browser,
) {
    let (_, list) = browser.get("/jobs?state=waiting_for_sync").await;
    assert!(
        list.contains(&s.sam("grpwait1")) && list.contains(&s.sam("grpwait2")),
        "{list}"
    );
    assert!(!list.contains(&s.sam("grpfine")), "{list}");
    let (_, confirm) = browser.get("/bulk/cancel?state=waiting_for_sync").await;
    assert!(
        confirm.contains("Cancel <b>2</b> jobs matching: state waiting_for_sync."),
        "{confirm}"
    );
    let mut fields = hidden(&confirm, "expected");
    fields.retain(|(f, _)| *f != "expected");
    fields.push(("expected", "1".into()));
    let r = browser.post("/bulk/cancel", &form(&fields)).await;
    assert_eq!(r.status(), 303);
    let (_, confirm) = browser.get("/bulk/cancel?state=waiting_for_sync").await;
    assert!(
        confirm.contains("Cancel <b>1</b> job matching"),
        "{confirm}"
    );
    let (_, bulk) = browser.get("/bulk").await;
    assert!(
        bulk.contains(
            r#"<td>cancelled</td><td class="jobs">1</td><td>state waiting_for_sync</td>"#
        ),
        "{bulk}"
    );
}

/// A filter it cannot read is refused, never widened to every job.
async fn then_a_filter_it_cannot_read_is_refused(browser: &Browser) {
    let (status, page) = browser
        .get("/bulk/cancel?state=waiting&class=permanent")
        .await;
    assert_eq!(status, 400, "{page}");
    assert!(
        page.contains("state &quot;waiting&quot; is not valid"),
        "{page}"
    );
}
