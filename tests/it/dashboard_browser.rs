//! The dashboard in a real browser: headless Chromium driven through chromedriver (the W3C
//! WebDriver protocol over HTTP). An AD operator signs in, reads the overview and a failed
//! job, clicks Retry and sees the job run again under their name; an AD viewer sees no
//! buttons. An operator watches failures appear as one group without a reload, retries the
//! group and cancels by filter through the confirmations. Screenshots of each page land in
//! `target/screenshots/dashboard-*.png` of the checkout.

use crate::common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::TestEnv;
use common::ad::{TestAd, User};
use common::signin::people;
use serde_json::{Value, json};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// WebDriver's key codes.
const TAB: &str = "\u{E004}";
const ENTER: &str = "\u{E007}";

struct Driver {
    child: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start() -> Driver {
        let chromedriver = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect(
                "chromedriver is missing: deploy/dev/services.sh installs Debian's chromium-driver",
            );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // The viewer is an hour east of UTC (all year round in December: Berlin is UTC+1),
        // so times shown in the viewer's zone differ visibly from UTC.
        let child = Command::new(chromedriver)
            .env("TZ", "Europe/Berlin")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while http.get(format!("{base}/status")).send().await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        // The flags that work on this machine kind (no sandbox as root, no network chatter).
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                         "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync",
                         "--window-size=1280,900",
                         format!("--user-data-dir={}", profile.path().display())]
            }
        }}});
        let r: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {r}"))
            .to_owned();
        Driver {
            child,
            base,
            session,
            http,
            _profile: profile,
        }
    }

    async fn cmd(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let req = match method {
            "GET" => self.http.get(url),
            _ => self.http.post(url).json(&body),
        };
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        assert!(v["value"]["error"].is_null(), "webdriver {path}: {v}");
        v["value"].clone()
    }

    async fn go(&self, url: &str) {
        self.cmd("POST", "/url", json!({ "url": url })).await;
    }

    /// The element `css` names, waiting up to 10 s for it: a click that navigates returns
    /// before the next page is there.
    async fn find(&self, css: &str) -> String {
        let url = format!("{}/session/{}/element", self.base, self.session);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let v = loop {
            let v: Value = self
                .http
                .post(&url)
                .json(&json!({"using": "css selector", "value": css}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let missing = v["value"]["error"] == "no such element";
            if missing && std::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
            assert!(
                v["value"]["error"].is_null(),
                "webdriver /element {css}: {v}"
            );
            break v["value"].clone();
        };
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_owned()
    }

    async fn text(&self, css: &str) -> String {
        let e = self.find(css).await;
        self.cmd("GET", &format!("/element/{e}/text"), Value::Null)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    async fn click(&self, css: &str) {
        let e = self.find(css).await;
        self.cmd("POST", &format!("/element/{e}/click"), json!({}))
            .await;
    }

    /// Runs `script` in the page and returns its value.
    async fn js(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            json!({ "script": script, "args": [] }),
        )
        .await
    }

    /// Waits up to 20 s for the text of `css` to contain `want` (the page updating itself).
    async fn wait_text(&self, css: &str, want: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let found = self
                .js(&format!(
                    "var e=document.querySelector({css:?});return e?e.textContent:null;"
                ))
                .await;
            let text = found.as_str().unwrap_or_default().to_owned();
            if text.contains(want) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{css} never showed {want:?}; it shows {text:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Presses one key (a WebDriver key code such as TAB or ENTER) on whatever has the focus.
    async fn press(&self, key: &str) {
        let actions = json!({"actions": [{"type": "key", "id": "keyboard", "actions": [
            {"type": "keyDown", "value": key}, {"type": "keyUp", "value": key}]}]});
        self.cmd("POST", "/actions", actions).await;
    }

    /// Tabs through the page from its start until the element `id` has the focus, as a
    /// keyboard user would; fails if 40 presses do not reach it.
    async fn tab_to(&self, id: &str) {
        self.js("document.activeElement && document.activeElement.blur(); return null;")
            .await;
        for _ in 0..40 {
            self.press(TAB).await;
            if self.js("return document.activeElement.id;").await == id {
                return;
            }
        }
        panic!("#{id} cannot be reached with the keyboard");
    }

    /// Marks the page so that a reload (which would forget the mark) shows.
    async fn mark(&self) {
        self.js("window.__noReload = 'kept'; return null;").await;
    }

    async fn not_reloaded(&self) {
        assert_eq!(
            self.js("return window.__noReload || null;").await,
            "kept",
            "the page was reloaded"
        );
    }

    async fn screenshot(&self, name: &str) {
        use base64::Engine;
        let png = self.cmd("GET", "/screenshot", Value::Null).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        // Under the checkout's target/ (the CI artifact), wherever cargo builds.
        let dir = format!("{}/target/screenshots", env!("CARGO_MANIFEST_DIR"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(format!("{dir}/dashboard-{name}.png"), bytes).unwrap();
    }
}

impl Driver {
    /// Types `text` into the input `css`.
    async fn type_into(&self, css: &str, text: &str) {
        let input = self.find(css).await;
        self.cmd(
            "POST",
            &format!("/element/{input}/value"),
            json!({ "text": text }),
        )
        .await;
    }

    /// Fills the sign-in form, sends it and waits for the signed-in page (a click returns
    /// before the form's navigation ends; a `go` right after it could be overtaken by it).
    async fn sign_in(&self, base: &str, user: &str, password: &str) {
        self.go(&format!("{base}/login")).await;
        self.type_into("input[name=user]", user).await;
        self.type_into("input[name=password]", password).await;
        self.click("#login").await;
        self.find("#who").await;
    }
}

/// The first story's world: a failed job, a succeeded one and one waiting for the sync.
struct Queue {
    p: common::signin::People,
    env: TestEnv,
    app: mailboxd::app::App,
    failed: mailboxd::store::Job,
    base: String,
}

impl Queue {
    fn n(&self, s: &str) -> String {
        format!("{s}{}", self.p.t)
    }
}

/// In AD: an on-premises mailbox (its joiner fails), an account already remote (its joiner
/// succeeds) and one the cloud sync has not stamped (its joiner waits for it).
async fn given_a_failed_a_succeeded_and_a_waiting_job() -> Queue {
    let ad = TestAd::get();
    let p = people(&ad).await;
    let n = |s: &str| format!("{s}{}", p.t);
    let onprem = User::onprem();
    ad.add_user(&n("webonprem"), &n("webonprem"), &onprem).await;
    let fine = User::remote(&format!("{}@tenant.mail.onmicrosoft.com", n("webfine")));
    ad.add_user(&n("webfine"), &n("webfine"), &fine).await;
    ad.add_user(&n("webwait"), &n("webwait"), &User::default())
        .await;
    let mut env = TestEnv::new(vec![]).await;
    p.grant(&ad, &mut env.settings);
    env.settings.ldap.require_cloud_sync = true;
    let app = env.start_daemon().await;
    let publisher = env.publisher().await;
    let bad = env.joiner(&n("webonprem"));
    let good = env.joiner(&n("webfine"));
    let wait = env.joiner(&n("webwait"));
    for e in [&bad, &good, &wait] {
        publisher.publish(e).await.unwrap();
    }
    let failed = env.wait_terminal(&bad.id).await;
    env.wait_succeeded(&good.id).await;
    env.wait_job(&wait.id, |j| {
        j.state == mailboxd::job::JobState::WaitingForSync
    })
    .await;
    let base = format!("http://{}", app.admin_addr);
    Queue {
        p,
        env,
        app,
        failed,
        base,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_a_browser_an_operator_sees_the_queue_and_retries_a_failed_job() {
    let q = given_a_failed_a_succeeded_and_a_waiting_job().await;
    let (p, base) = (&q.p, &q.base);
    let b = Driver::start().await;
    b.go(&format!("{base}/")).await;
    // Not signed in: the sign-in form.
    b.find("input[name=user]").await;
    b.sign_in(
        base,
        &format!("CORP\\{}", p.operator),
        &p.password(&p.operator),
    )
    .await;
    then_the_overview_shows_counts_circuit_and_broker_at_a_glance(&b).await;
    then_the_failed_job_opens_from_the_failed_list(&b, &q).await;
    when_retried_the_browser_comes_back_and_the_job_runs_again(&b, &q).await;
    then_a_viewer_sees_the_same_job_without_buttons(&b, &q).await;
    drop(b);
    q.app.stop().await;
}

/// The overview: counts by state, circuit and broker at a glance.
async fn then_the_overview_shows_counts_circuit_and_broker_at_a_glance(b: &Driver) {
    assert_eq!(b.text("#count-succeeded b").await, "1");
    assert_eq!(b.text("#count-failed b").await, "1");
    assert_eq!(b.text("#count-waiting_for_sync b").await, "1");
    assert!(b.text("#circuit").await.contains("Circuit closed"));
    assert!(b.text("#broker").await.contains("Broker connected"));
    assert!(b.text("#who").await.contains("(operator)"));
    b.screenshot("overview").await;
}

async fn then_the_failed_job_opens_from_the_failed_list(b: &Driver, q: &Queue) {
    let base = &q.base;
    b.go(&format!("{base}/jobs?state=failed")).await;
    b.screenshot("jobs").await;
    b.click("#jobs a").await;
    assert_eq!(b.text("#account").await, q.n("webonprem"));
    assert_eq!(b.text("#state").await, "failed");
    b.screenshot("job").await;
}

/// Retry: the browser comes back to the job page and the job runs again.
async fn when_retried_the_browser_comes_back_and_the_job_runs_again(b: &Driver, q: &Queue) {
    let (base, failed, p) = (&q.base, &q.failed, &q.p);
    b.click("#retry").await;
    q.env.wait_attempts(failed.id, 2).await;
    b.go(&format!("{base}/jobs/{}", failed.id)).await;
    let who = format!("dashboard:CORP\\{}", p.operator);
    assert!(b.text("#actions").await.contains(&who));
    b.screenshot("job-after-retry").await;
}

/// Signed out, then in as a viewer: the same job, no buttons.
async fn then_a_viewer_sees_the_same_job_without_buttons(b: &Driver, q: &Queue) {
    let (base, failed, p) = (&q.base, &q.failed, &q.p);
    b.click("#logout").await;
    b.find("input[name=user]").await;
    b.sign_in(base, &p.viewer, &p.password(&p.viewer)).await;
    b.go(&format!("{base}/jobs/{}", failed.id)).await;
    assert!(b.text("#who").await.contains("(viewer)"));
    assert_eq!(b.text("#state").await, "failed");
    let buttons = b
        .cmd(
            "POST",
            "/elements",
            json!({"using": "css selector", "value": "#retry, #cancel"}),
        )
        .await;
    assert_eq!(buttons.as_array().map(Vec::len), Some(0), "{buttons}");
    b.screenshot("job-as-viewer").await;
}

/// The live story's world: the operator's daemon, with accounts in AD for a burst of one
/// problem, one already remote and two the cloud sync has not stamped yet.
struct Live {
    p: common::signin::People,
    env: TestEnv,
    app: mailboxd::app::App,
    publisher: mailboxd::publish::Publisher,
    base: String,
}

impl Live {
    fn n(&self, s: &str) -> String {
        format!("{s}{}", self.p.t)
    }

    fn burst(&self) -> [String; 3] {
        [self.n("burstann"), self.n("burstbob"), self.n("burstcy")]
    }
}

/// In AD: three on-premises mailboxes (one problem), an account already remote, and two
/// the cloud sync has not stamped yet.
async fn given_a_burst_a_remote_account_and_two_not_synced() -> Live {
    let ad = TestAd::get();
    let p = people(&ad).await;
    let n = |s: &str| format!("{s}{}", p.t);
    let onprem = User::onprem();
    for sam in [n("burstann"), n("burstbob"), n("burstcy")] {
        ad.add_user(&sam, &sam, &onprem).await;
    }
    let fine_user = User::remote(&format!("{}@tenant.mail.onmicrosoft.com", n("livefine")));
    ad.add_user(&n("livefine"), &n("livefine"), &fine_user)
        .await;
    for sam in [n("livewait1"), n("livewait2")] {
        ad.add_user(&sam, &sam, &User::default()).await;
    }
    let mut env = TestEnv::new(vec![]).await;
    p.grant(&ad, &mut env.settings);
    env.settings.ldap.require_cloud_sync = true;
    let app = env.start_daemon().await;
    let publisher = env.publisher().await;
    let base = format!("http://{}", app.admin_addr);
    Live {
        p,
        env,
        app,
        publisher,
        base,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_a_browser_failures_appear_live_as_one_group_are_retried_and_a_filter_cancelled() {
    let l = given_a_burst_a_remote_account_and_two_not_synced().await;
    let b = Driver::start().await;
    b.sign_in(&l.base, &l.p.operator, &l.p.password(&l.p.operator))
        .await;
    then_a_job_finishing_shows_on_the_open_overview(&b, &l).await;
    let events = then_a_burst_appears_as_one_group_without_a_reload(&b, &l).await;
    then_the_failures_view_reads_times_in_the_viewers_zone(&b, &l).await;
    when_one_confirmed_action_retries_the_group_with_the_keyboard(&b, &l, &events).await;
    when_a_bulk_cancel_from_the_filtered_list_is_confirmed(&b, &l).await;
    b.go(&format!("{}/", l.base)).await;
    b.find("#chart-days").await;
    b.js("document.getElementById('chart').scrollIntoView(); return null;")
        .await;
    b.screenshot("overview-health").await;
    drop(b);
    l.app.stop().await;
}

/// The overview, open: a job finishing shows without a reload.
async fn then_a_job_finishing_shows_on_the_open_overview(b: &Driver, l: &Live) {
    assert_eq!(b.text("#count-succeeded b").await, "0");
    b.mark().await;
    let fine = l.env.joiner(&l.n("livefine"));
    l.publisher.publish(&fine).await.unwrap();
    l.env.wait_succeeded(&fine.id).await;
    b.wait_text("#count-succeeded b", "1").await;
    b.not_reloaded().await;
    assert!(b.text("#updated").await.contains("updated"));
    b.screenshot("overview-live").await;
}

/// Still open: a burst of one problem appears as one group on the overview, without a
/// reload. Returns the burst's events.
async fn then_a_burst_appears_as_one_group_without_a_reload(
    b: &Driver,
    l: &Live,
) -> Vec<mailboxd::publish::EventSpec> {
    assert!(
        b.text("#top-failures")
            .await
            .contains("No failed or retrying job")
    );
    let events: Vec<_> = l.burst().iter().map(|sam| l.env.joiner(sam)).collect();
    for e in &events {
        l.publisher.publish(e).await.unwrap();
    }
    let top = b.wait_text("#top-failures", "3 jobs —").await;
    assert!(top.contains("has an on-premises mailbox"), "{top}");
    b.not_reloaded().await;
    b.js("document.getElementById('top-failures').scrollIntoView(); return null;")
        .await;
    b.screenshot("overview-failures").await;
    events
}

/// The failures view shows the group too; times read in the viewer's zone, UTC on hover.
async fn then_the_failures_view_reads_times_in_the_viewers_zone(b: &Driver, l: &Live) {
    b.go(&format!("{}/failures", l.base)).await;
    let t = b
        .js("var t=document.querySelector('#group-0 time');return [t.textContent,t.title,t.getAttribute('datetime')];")
        .await;
    let utc = chrono::DateTime::parse_from_rfc3339(t[2].as_str().unwrap()).unwrap();
    assert_eq!(
        t[1],
        utc.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        "UTC on hover"
    );
    let berlin = utc + chrono::Duration::hours(1);
    let shown = t[0].as_str().unwrap();
    assert!(
        shown.contains(&berlin.format("%-I:%M:%S").to_string()),
        "{shown} is not {berlin} in the viewer's zone"
    );
    b.mark().await;
    let title = b.text("#group-0-title").await;
    assert!(title.contains("3 jobs —"), "{title}");
    b.screenshot("failures").await;
}

/// One confirmed action retries the group, done with the keyboard; the jobs run again.
async fn when_one_confirmed_action_retries_the_group_with_the_keyboard(
    b: &Driver,
    l: &Live,
    events: &[mailboxd::publish::EventSpec],
) {
    b.tab_to("group-0-retry").await;
    b.press(ENTER).await;
    let count = b.text("#bulk-count").await;
    assert!(
        count.starts_with("Retry 3 jobs matching: state failed or retrying"),
        "{count}"
    );
    b.screenshot("bulk-retry-confirm").await;
    b.tab_to("confirm").await;
    b.press(ENTER).await;
    assert!(b.text("#bulk-1").await.contains("retried 3"), "the record");
    b.screenshot("bulk-actions").await;
    for e in events {
        let job = l.env.wait_terminal(&e.id).await;
        l.env.wait_attempts(job.id, 2).await;
    }
}

/// A bulk cancel from the filtered job list, through its confirmation.
async fn when_a_bulk_cancel_from_the_filtered_list_is_confirmed(b: &Driver, l: &Live) {
    let waiting: Vec<_> = [l.n("livewait1"), l.n("livewait2")]
        .iter()
        .map(|sam| l.env.joiner(sam))
        .collect();
    for e in &waiting {
        l.publisher.publish(e).await.unwrap();
        l.env
            .wait_job(&e.id, |j| {
                j.state == mailboxd::job::JobState::WaitingForSync
            })
            .await;
    }
    b.go(&format!("{}/jobs?state=waiting_for_sync", l.base))
        .await;
    b.screenshot("jobs-filtered").await;
    b.click("#bulk-cancel").await;
    let count = b.text("#bulk-count").await;
    assert_eq!(count, "Cancel 2 jobs matching: state waiting_for_sync.");
    b.screenshot("bulk-cancel-confirm").await;
    b.click("#confirm").await;
    assert!(b.text("#bulk-2").await.contains("cancelled 2"));
    for e in &waiting {
        let job = l.env.wait_terminal(&e.id).await;
        assert_eq!(job.state, mailboxd::job::JobState::Cancelled);
    }
}
