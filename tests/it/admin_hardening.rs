//! The admin listener against an attacker (issue 29): guessing passwords in parallel under
//! several spellings of one name cannot pass the limit nor lock the account in AD; the
//! limit per address believes `X-Forwarded-For` only from trusted proxies and counts IPv6 by
//! /64; group DNs from the environment survive `CN=Users`; every answer carries the
//! security headers and a page of another site cannot post; slow and idle clients are cut
//! off and connections capped; every channel's actions land on the audit trail with who
//! did them (the CLI's user from the kernel); a newline in a value cannot forge a log line.

use crate::common;

use std::time::{Duration, Instant};

use common::TestEnv;
use common::ad::{TestAd, User};
use common::signin::{Browser, People, people};
use mailboxd::signin::{MAX_FAILURES_PER_ADDRESS, MAX_FAILURES_PER_USER, REFUSED};
use secrecy::SecretString;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "hardening-test-token-3f9a0c7e21b4d865";

/// A person of their own in the viewers' group, with a password: (sAMAccountName, DN, GUID).
async fn viewer(ad: &TestAd, p: &People, prefix: &str) -> (String, String, uuid::Uuid) {
    let sam = format!("{prefix}{}", p.t);
    let (dn, guid) = ad.add_user(&sam, &sam, &User::default()).await;
    ad.set_password(&dn, &p.password(&sam)).await;
    ad.add_member(&p.viewers, &dn).await;
    (sam, dn, guid)
}

/// A form POST to `/login` with `X-Forwarded-For: xff` (when given): (status, page).
async fn sign_in_from(
    http: &reqwest::Client,
    base: &str,
    user: &str,
    password: &str,
    xff: Option<&str>,
) -> (u16, String) {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([("user", user), ("password", password)])
        .finish();
    let mut r = http
        .post(format!("{base}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    if let Some(x) = xff {
        r = r.header("x-forwarded-for", x);
    }
    let r = r.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn json_lines(logs: &str) -> Vec<Value> {
    logs.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A viewer AD would lock at its sixth wrong password, and a daemon (the binary, logging
/// JSON) behind a trusted proxy at 127.0.0.1.
struct Guessed {
    ad: TestAd,
    p: People,
    sam: String,
    upn: String,
    dn: String,
    guid: uuid::Uuid,
    /// Before `env`: fields drop in order, and the daemon must go before its database.
    daemon: common::Daemon,
    env: TestEnv,
    base: String,
    http: reqwest::Client,
}

async fn given_a_viewer_ad_locks_at_the_sixth_wrong_password() -> Guessed {
    let ad = TestAd::get();
    let p = people(&ad).await;
    let (sam, dn, guid) = viewer(&ad, &p, "par").await;
    let upn = format!("{sam}@corp.example");
    // AD would lock this account at its sixth wrong password (a fine-grained policy).
    ad.lockout_policy(&dn, MAX_FAILURES_PER_USER + 1).await;
    let mut env = TestEnv::new(vec![]).await;
    p.grant(&ad, &mut env.settings);
    let mut vars = env.daemon_env();
    vars.extend([
        ("MAILBOXD__ADMIN__VIEWER_GROUPS".into(), p.viewers.clone()),
        (
            "MAILBOXD__ADMIN__TRUSTED_PROXIES".into(),
            "127.0.0.1/32".into(),
        ),
    ]);
    let daemon = env.spawn_logged(&["--log-format", "json"], vars).await;
    let base = format!("http://{}", daemon.admin);
    Guessed {
        ad,
        p,
        sam,
        upn,
        dn,
        guid,
        daemon,
        env,
        base,
        http: no_redirects(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_parallel_wrong_passwords_under_two_spellings_reach_ad_five_times_and_lock_nothing() {
    let g = given_a_viewer_ad_locks_at_the_sixth_wrong_password().await;
    when_fifty_wrong_passwords_arrive_at_once_from_fifty_addresses(&g).await;
    then_ad_saw_at_most_the_limit_and_the_rest_was_refused_without_asking(&g).await;
    then_nothing_is_locked_in_ad_and_the_limit_holds_for_the_right_password(&g).await;
    then_the_log_states_the_limits(&g.daemon.logs());
}

/// 50 guesses at once, from 50 addresses (behind the trusted proxy, so the limit per
/// address does not stop them): the limit per account alone must hold.
async fn when_fifty_wrong_passwords_arrive_at_once_from_fifty_addresses(g: &Guessed) {
    let guesses = (0..50).map(|i| {
        let user = if i % 2 == 0 {
            format!("CORP\\{}", g.sam)
        } else {
            g.upn.clone()
        };
        let (http, base) = (g.http.clone(), g.base.clone());
        async move {
            let xff = format!("198.51.100.{}", i + 1);
            sign_in_from(&http, &base, &user, &format!("guess-{i}"), Some(&xff)).await
        }
    });
    let answers = futures::future::join_all(guesses).await;
    for (status, page) in &answers {
        assert_eq!(*status, 401, "{page}");
        assert!(page.contains(REFUSED), "{page}");
    }
}

/// AD saw at most the limit: its own count of wrong passwords, and ours.
async fn then_ad_saw_at_most_the_limit_and_the_rest_was_refused_without_asking(g: &Guessed) {
    let bad: u32 =
        g.ad.attribute(&g.dn, "badPwdCount")
            .await
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
    assert!(
        (1..=MAX_FAILURES_PER_USER).contains(&bad),
        "wrong passwords that reached AD: {bad}"
    );
    let counted: i32 =
        sqlx::query_scalar("SELECT failures FROM signin_attempts WHERE subject = $1")
            .bind(format!("guid:{}", g.guid))
            .fetch_one(g.env.store.pool())
            .await
            .unwrap();
    assert_eq!(counted as u32, MAX_FAILURES_PER_USER);
    let logs = g.daemon.logs();
    let reasons: Vec<String> = json_lines(&logs)
        .iter()
        .filter(|l| l["message"] == "dashboard sign-in refused")
        .map(|l| l["reason"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(reasons.len(), 50, "{logs}");
    let asked = reasons
        .iter()
        .filter(|r| r.contains("wrong user name"))
        .count();
    let held = reasons
        .iter()
        .filter(|r| r.contains("without asking AD"))
        .count();
    assert_eq!((asked, held), (5, 45), "{reasons:?}");
    println!(
        "50 parallel guesses: {asked} reached AD (its badPwdCount {bad}), {held} refused without a bind"
    );
}

async fn then_nothing_is_locked_in_ad_and_the_limit_holds_for_the_right_password(g: &Guessed) {
    // Not locked out in AD: the account's computed lockout bit is clear...
    let computed: i64 =
        g.ad.attribute(&g.dn, "msDS-User-Account-Control-Computed")
            .await
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
    assert_eq!(computed & 0x10, 0, "locked out in AD");
    // ...and the dashboard still refuses the right password, under a third spelling,
    // without asking AD...
    let right = g.p.password(&g.sam);
    let third = g.sam.to_uppercase();
    let (status, _) = sign_in_from(&g.http, &g.base, &third, &right, Some("203.0.113.9")).await;
    assert_eq!(status, 401, "the limit holds for the right password too");
    // ...while the person's own logon works (and resets AD's count).
    assert!(
        g.ad.can_bind(&g.upn, &right).await,
        "AD refuses the right password"
    );
}

fn then_the_log_states_the_limits(logs: &str) {
    let limits = json_lines(logs)
        .into_iter()
        .find(|l| l["message"] == "dashboard sign-in limits")
        .unwrap_or_else(|| panic!("no line with the sign-in limits: {logs}"));
    assert_eq!(limits["per_user"], MAX_FAILURES_PER_USER, "{limits}");
    assert_eq!(
        limits["ad_lockout_threshold"], 0,
        "the test domain has none: {limits}"
    );
    // Without a lockout threshold AD's observation window does not matter: ours stays.
    assert_eq!(limits["window_s"], 900, "{limits}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_limit_per_address_believes_x_forwarded_for_only_from_trusted_proxies() {
    let ad = TestAd::get();
    let p = people(&ad).await;
    let right = p.password(&p.operator);
    // Untrusted peer: every guess counts against 127.0.0.1, whatever X-Forwarded-For says.
    let mut env = TestEnv::new(vec![]).await;
    p.grant(&ad, &mut env.settings);
    let app = env.start_daemon().await;
    let base = format!("http://{}", app.admin_addr);
    let http = no_redirects();
    for i in 0..MAX_FAILURES_PER_ADDRESS {
        let xff = format!("192.0.2.{}", i + 1);
        let who = format!("nobody{i}{}", p.t);
        assert_eq!(
            sign_in_from(&http, &base, &who, "x", Some(&xff)).await.0,
            401
        );
    }
    let (status, _) = sign_in_from(&http, &base, &p.operator, &right, Some("192.0.2.200")).await;
    assert_eq!(status, 401, "the header of an untrusted peer was believed");
    app.stop().await;

    // Behind a trusted proxy: the client is the proxy's last hop, IPv6 counted by /64.
    let mut env = TestEnv::new(vec![]).await;
    p.grant(&ad, &mut env.settings);
    env.settings.admin.trusted_proxies = vec!["127.0.0.1".into()];
    let app = env.start_daemon().await;
    let base = format!("http://{}", app.admin_addr);
    for i in 0..MAX_FAILURES_PER_ADDRESS {
        let who = format!("nobody{i}{}", p.t);
        // Each guess from another address of the same /64.
        let xff = format!("2001:db8:1:2::{:x}", i + 1);
        assert_eq!(
            sign_in_from(&http, &base, &who, "x", Some(&xff)).await.0,
            401
        );
    }
    let from = |xff: &'static str| sign_in_from(&http, &base, &p.operator, &right, Some(xff));
    assert_eq!(from("2001:db8:1:2:ffff::1").await.0, 401, "same /64");
    // Writing another address to the left of the real one does not help.
    assert_eq!(from("2001:db8:9:9::1, 2001:db8:1:2::77").await.0, 401);
    assert_eq!(from("2001:db8:1:3::1").await.0, 303, "another /64");
    assert_eq!(from("192.0.2.1").await.0, 303, "another client");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_dns_from_the_environment_are_split_at_semicolons_and_a_cn_users_group_works() {
    let ad = TestAd::get();
    let p = people(&ad).await;
    assert!(p.operators.contains(",CN=Users,"), "{}", p.operators);
    let mut env = TestEnv::new(vec![]).await;
    p.grant(&ad, &mut env.settings);
    // A group nobody here is in, first: the DN after the separator must count as well.
    let elsewhere = ad.add_group(&format!("mbx-none-{}", p.t)).await;
    let elsewhere = elsewhere.as_str();
    let with = |operators: String, viewers: String| {
        let mut vars = env.daemon_env();
        vars.extend([
            ("MAILBOXD__ADMIN__OPERATOR_GROUPS".to_owned(), operators),
            ("MAILBOXD__ADMIN__VIEWER_GROUPS".to_owned(), viewers),
        ]);
        vars
    };
    // `;` between DNs; a JSON array works too.
    let vars = with(
        format!("{elsewhere};{}", p.operators),
        serde_json::to_string(&[elsewhere, p.viewers.as_str()]).unwrap(),
    );
    let mut daemon = env.spawn_logged(&[], vars).await;
    let mut b = Browser::new(&daemon.admin);
    let (status, _, page) = b
        .sign_in(&format!("CORP\\{}", p.operator), &p.password(&p.operator))
        .await;
    assert_eq!(status, 303, "{page}: {}", daemon.logs());
    let (_, page) = b.get("/jobs").await;
    assert!(
        page.contains(&format!("CORP\\{} (operator)", p.operator)),
        "{page}"
    );
    let mut v = Browser::new(&daemon.admin);
    assert_eq!(v.sign_in(&p.viewer, &p.password(&p.viewer)).await.0, 303);
    assert!(v.get("/jobs").await.1.contains("(viewer)"));
    assert!(daemon.stop().success());

    // Two DNs run together with a comma (as older releases took them): refused at start,
    // saying what to do, instead of two wrong DNs that let nobody in.
    let vars = with(format!("{},{}", p.operators, p.viewers), p.viewers.clone());
    let mut refused = env.spawn_logged(&[], vars).await;
    let status = refused.stop();
    let logs = refused.logs();
    assert_eq!(status.code(), Some(2), "{logs}");
    assert!(
        logs.contains("admin.operator_groups") && logs.contains("separate DNs with ';'"),
        "{logs}"
    );
}

/// The headers every answer must carry.
fn assert_secure_headers(r: &reqwest::Response, what: &str) {
    let h = |n: &str| {
        r.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let csp = h("content-security-policy");
    for part in [
        "frame-ancestors 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "default-src 'none'",
    ] {
        assert!(csp.contains(part), "{what}: CSP {csp:?} lacks {part}");
    }
    assert!(!csp.contains("unsafe-inline"), "{what}: {csp}");
    assert_eq!(h("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(h("referrer-policy"), "no-referrer", "{what}");
    assert_eq!(
        h("strict-transport-security"),
        "",
        "{what}: no HSTS over plain HTTP"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_answer_carries_the_security_headers_and_another_sites_page_cannot_post() {
    let mut env = TestEnv::new(vec![]).await;
    env.settings.admin.token = Some(SecretString::from(TOKEN));
    let mut vars = env.daemon_env();
    vars.push(("MAILBOXD__ADMIN__OPEN_READS".into(), "true".into()));
    let daemon = env.spawn_logged(&["--log-format", "json"], vars).await;
    let base = format!("http://{}", daemon.admin);
    let http = no_redirects();
    then_pages_have_no_inline_code_and_are_never_cached(&http, &base).await;
    then_api_answers_and_refusals_carry_the_headers_too(&http, &base).await;
    then_a_form_another_sites_page_posts_is_refused(&http, &base).await;
    then_the_same_origin_and_clients_that_are_no_browser_pass(&http, &base).await;
    then_every_refusal_is_on_the_log_without_a_token(&daemon.logs());
}

/// Pages: no inline script or style (the CSP forbids them), never cached.
async fn then_pages_have_no_inline_code_and_are_never_cached(http: &reqwest::Client, base: &str) {
    for path in [
        "/",
        "/jobs",
        "/failures",
        "/bulk",
        "/alerts",
        "/poison",
        "/reconcile",
        "/login",
    ] {
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_secure_headers(&r, path);
        assert_eq!(r.headers()["cache-control"], "no-store", "{path}");
        let page = r.text().await.unwrap();
        for inline in ["<script>", "<style", "style=\"", " onclick="] {
            assert!(
                !page.contains(inline),
                "{path} has inline code {inline:?}: {page}"
            );
        }
        assert!(
            page.contains(r#"<script src="/static/dashboard.js" defer>"#),
            "{path}"
        );
    }
    for (path, kind) in [
        ("/static/dashboard.js", "text/javascript"),
        ("/static/dashboard.css", "text/css"),
    ] {
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind),
            "{path}"
        );
    }
}

/// API answers and refusals carry them too, and are never cached.
async fn then_api_answers_and_refusals_carry_the_headers_too(http: &reqwest::Client, base: &str) {
    let r = http
        .get(format!("{base}/api/v1/jobs"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_secure_headers(&r, "API");
    assert_eq!(r.headers()["cache-control"], "no-store");
    let r = http
        .post(format!("{base}/api/v1/jobs/retry"))
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_secure_headers(&r, "API refusal");
}

/// A form another site's page posts: refused before anything else, /login included.
async fn then_a_form_another_sites_page_posts_is_refused(http: &reqwest::Client, base: &str) {
    let login = "user=admin&password=guess";
    let cross = [
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-site", "same-site"),
        ("origin", "https://evil.example"),
        ("origin", "null"),
    ];
    for (name, value) in cross {
        let r = http
            .post(format!("{base}/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header(name, value)
            .body(login)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{name}: {value}");
    }
    let r = http
        .post(format!("{base}/api/v1/jobs/retry?state=failed"))
        .bearer_auth(TOKEN)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        403,
        "a token does not make a cross-site request right"
    );
}

/// The same origin (a browser on this page) and clients that are no browser pass.
async fn then_the_same_origin_and_clients_that_are_no_browser_pass(
    http: &reqwest::Client,
    base: &str,
) {
    let origin = base;
    let r = http
        .post(format!("{base}/api/v1/jobs/retry?state=failed"))
        .bearer_auth(TOKEN)
        .header("origin", origin)
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .post(format!("{base}/api/v1/jobs/retry?state=failed"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// Every refusal is on the log: the cross-site forms and the refused token.
fn then_every_refusal_is_on_the_log_without_a_token(logs: &str) {
    let refused: Vec<Value> = json_lines(logs)
        .into_iter()
        .filter(|l| l["message"] == "request refused")
        .collect();
    let cross_site = refused
        .iter()
        .filter(|l| {
            l["status"] == 403
                && l["reason"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("cross-site request")
        })
        .count();
    assert_eq!(cross_site, 5, "{refused:#?}");
    assert!(
        refused
            .iter()
            .any(|l| l["status"] == 401 && l["request"] == "POST /api/v1/jobs/retry"),
        "{refused:#?}"
    );
    assert!(
        !logs.contains("not-the-token") && !logs.contains(TOKEN),
        "a token reached the log"
    );
}

/// Reads from `s` until the server closes the connection; how long that took, or `None`
/// when it was still open after `within`.
async fn closed_within(s: &mut tokio::net::TcpStream, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        let left = within.checked_sub(start.elapsed())?;
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_and_idle_clients_are_cut_off_and_connections_are_capped() {
    let mut env = TestEnv::new(vec![]).await;
    env.settings.admin.header_read_timeout = Duration::from_secs(1);
    env.settings.admin.max_connections = 3;
    let app = env.start_daemon().await;
    let addr = app.admin_addr;
    then_a_client_sending_headers_slowly_is_cut_off_at_the_deadline(addr).await;
    then_an_idle_kept_alive_connection_is_closed(addr).await;
    then_beyond_the_cap_a_client_waits_until_a_connection_is_let_go(addr).await;
    app.stop().await;
}

/// Headers sent slowly (slowloris): the connection is closed at the header deadline.
async fn then_a_client_sending_headers_slowly_is_cut_off_at_the_deadline(
    addr: std::net::SocketAddr,
) {
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let took = closed_within(&mut slow, Duration::from_secs(5)).await;
    let took = took.expect("a client that never finishes its headers is cut off");
    assert!(took >= Duration::from_millis(900), "{took:?}");
}

/// A kept-alive connection with no next request is closed too.
async fn then_an_idle_kept_alive_connection_is_closed(addr: std::net::SocketAddr) {
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("\"ok\"") {
        let mut buf = [0u8; 1024];
        let n = idle.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before answering");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    let took = closed_within(&mut idle, Duration::from_secs(5)).await;
    assert!(took.is_some(), "an idle kept-alive connection stays open");
}

/// The cap: with three connections held, a fourth client waits until one is let go
/// (here: cut off at its header deadline); with two held it is answered at once.
async fn then_beyond_the_cap_a_client_waits_until_a_connection_is_let_go(
    addr: std::net::SocketAddr,
) {
    let connect = || tokio::net::TcpStream::connect(addr);
    // A client that keeps no connection open between requests.
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let answer_time = || async {
        let start = Instant::now();
        let r = fresh
            .get(format!("http://{addr}/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        start.elapsed()
    };
    let held: Vec<_> = futures::future::join_all((0..2).map(|_| connect())).await;
    let fast = answer_time().await;
    assert!(fast < Duration::from_millis(500), "{fast:?}");
    drop(held);
    let held: Vec<_> = futures::future::join_all((0..3).map(|_| connect())).await;
    let slow = answer_time().await;
    assert!(
        slow >= Duration::from_millis(700),
        "served beyond the cap: {slow:?}"
    );
    drop(held);
}

/// The CLI's caller as someone who claims to be mallory in the environment.
const MALLORY: [(&str, &str); 3] = [
    ("USER", "mallory"),
    ("SUDO_USER", "mallory"),
    ("LOGNAME", "mallory"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_channel_puts_its_actions_on_the_audit_trail_with_the_cli_user_from_the_kernel() {
    let onprem = common::onprem("audonprem");
    let mut env = TestEnv::new(vec![onprem]).await;
    env.settings.admin.token = Some(SecretString::from(TOKEN));
    let daemon = env
        .spawn_logged(&["--log-format", "json"], env.daemon_env())
        .await;
    let bad = env.joiner("audonprem");
    env.publisher().await.publish(&bad).await.unwrap();
    let failed = env.wait_terminal(&bad.id).await;
    when_the_api_retries_the_failed_job(&env, &daemon, &bad, &failed).await;
    let pid = when_the_cli_retries_replays_publishes_and_reconciles(&env, &failed).await;
    let me = then_the_trail_names_the_cli_user_from_the_kernel(&env, &failed, &pid);
    then_the_table_the_api_and_the_log_show_the_same_trail(&env, &daemon, &me).await;
}

async fn when_the_api_retries_the_failed_job(
    env: &TestEnv,
    daemon: &common::Daemon,
    bad: &mailboxd::publish::EventSpec,
    failed: &mailboxd::store::Job,
) {
    let r = env
        .http
        .post(format!(
            "http://{}/api/v1/jobs/{}/retry",
            daemon.admin, failed.id
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    env.wait_job(&bad.id, |j| {
        j.state.is_terminal() && j.updated_at > failed.updated_at
    })
    .await;
}

/// The CLI, run by someone who claims to be mallory in the environment: a retry, a poison
/// replay, a publish and a dry run. Returns the poison message's id.
async fn when_the_cli_retries_replays_publishes_and_reconciles(
    env: &TestEnv,
    failed: &mailboxd::store::Job,
) -> String {
    let (code, _, err) = env.cli_with(&["jobs", "retry", &failed.id.to_string()], &MALLORY);
    assert_eq!(code, 0, "{err}");
    env.publisher()
        .await
        .publish_raw(
            "ad.user.created",
            b"{oops",
            Some("application/json"),
            Some("aud-bad"),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while env.store.list_poison(5).await.unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the bad message never became poison"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = env.store.list_poison(5).await.unwrap()[0].id.to_string();
    let (code, _, err) = env.cli_with(&["poison", "replay", &pid], &MALLORY);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = env.cli_with(&["publish", "joiner", "--sam", "audnew"], &MALLORY);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = env.cli_with(&["reconcile", "--dry-run"], &MALLORY);
    assert_eq!(code, 0, "{err}");
    pid
}

/// `mailboxd audit list`: every action, newest first, the CLI's user as the kernel knows
/// it. Returns that user's actor name.
fn then_the_trail_names_the_cli_user_from_the_kernel(
    env: &TestEnv,
    failed: &mailboxd::store::Job,
    pid: &str,
) -> String {
    let (code, out, err) = env.cli(&["audit", "list", "--json"]);
    assert_eq!(code, 0, "{err}");
    let trail: Vec<Value> = serde_json::from_str(&out).unwrap();
    let me = mailboxd::audit::cli_actor();
    let rows: Vec<(String, String)> = trail
        .iter()
        .map(|r| {
            (
                r["actor"].as_str().unwrap().to_owned(),
                r["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        (me.as_str(), "reconcile dry run"),
        (me.as_str(), "publish"),
        (me.as_str(), "replay"),
        (me.as_str(), "retry"),
        ("api:admin", "retry"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(rows, expected, "{out}");
    assert!(
        !out.contains("mallory"),
        "the CLI user came from the environment: {out}"
    );
    assert_eq!(trail[3]["subject"], format!("job {}", failed.id));
    assert_eq!(trail[3]["outcome"], "done");
    assert_eq!(trail[2]["subject"], format!("poison {pid}"));
    assert_eq!(trail[1]["subject"], "joiner event for audnew");
    assert_eq!(trail[4]["client"], "127.0.0.1");
    me
}

/// The human table and the API show the same trail, and each action is an audit log line
/// of the daemon or the CLI run.
async fn then_the_table_the_api_and_the_log_show_the_same_trail(
    env: &TestEnv,
    daemon: &common::Daemon,
    me: &str,
) {
    let (_, table, _) = env.cli(&["audit", "list", "--actor", "api:admin"]);
    assert!(
        table.contains("api:admin") && !table.contains(me),
        "{table}"
    );
    let api: Value = env
        .http
        .get(format!("http://{}/api/v1/audit?limit=2", daemon.admin))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(api["audit"].as_array().unwrap().len(), 2, "{api}");
    assert_eq!(api["audit"][0]["action"], "reconcile dry run", "{api}");
    assert!(
        json_lines(&daemon.logs())
            .iter()
            .any(|l| l["target"] == "audit" && l["actor"] == "api:admin" && l["action"] == "retry"),
        "{}",
        daemon.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_newline_in_a_value_cannot_forge_a_line_of_the_human_log() {
    let env = TestEnv::new(vec![]).await;
    let mut daemon = env.spawn_logged(&[], env.daemon_env()).await;
    let forged = "2026-12-07T06:00:00.000000Z  INFO audit: operator action actor=dashboard:CORP\\boss action=\"cancel\"";
    let (status, _) = sign_in_from(
        &no_redirects(),
        &format!("http://{}", daemon.admin),
        &format!("x\n{forged}\r\n{forged}"),
        "guess",
        None,
    )
    .await;
    assert_eq!(status, 403, "sign-in is off in this test");
    assert!(daemon.stop().success());
    let logs = daemon.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("dashboard sign-in refused"))
        .unwrap_or_else(|| panic!("no line for the refused sign-in: {logs}"));
    assert!(line.contains("x\\n2026-12-07T06:00:00"), "{line}");
    assert!(
        !logs
            .lines()
            .any(|l| l.starts_with("2026-12-07T06:00:00.000000Z")),
        "a forged line: {logs}"
    );
}
