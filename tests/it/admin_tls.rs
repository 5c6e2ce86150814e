//! The admin listener over HTTPS with a configured certificate: probes and the API answer
//! on it, plain HTTP does not, answers carry HSTS, the session cookie is a `Secure`
//! `__Host-` one, and a renewed certificate
//! written over the files (or announced with SIGHUP) is served without a restart.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TestEnv;
use common::ad::TestAd;
use common::signin::people;
use rustls::pki_types::{CertificateDer, ServerName};

/// A fresh self-signed certificate for 127.0.0.1: (certificate PEM, key PEM, DER).
fn certificate() -> (String, String, CertificateDer<'static>) {
    let c = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("rcgen");
    (
        c.cert.pem(),
        c.signing_key.serialize_pem(),
        c.cert.der().clone(),
    )
}

/// The certificate the listener at `addr` presents, trusting `roots`.
async fn served(addr: std::net::SocketAddr, roots: &[CertificateDer<'static>]) -> Vec<u8> {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r.clone()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(store)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .expect("TLS handshake with the admin listener");
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// A daemon whose admin listener serves HTTPS with a certificate from files.
struct Https {
    p: common::signin::People,
    env: TestEnv,
    app: mailboxd::app::App,
    addr: std::net::SocketAddr,
    /// A client that trusts the first certificate.
    https: reqwest::Client,
    first: CertificateDer<'static>,
    cert_path: std::path::PathBuf,
    key_path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn given_an_admin_listener_with_a_certificate_from_files() -> Https {
    let ad = TestAd::get();
    let p = people(&ad).await;
    let mut env = TestEnv::new(vec![]).await;
    p.grant(&ad, &mut env.settings);
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let (pem, key, first) = certificate();
    std::fs::write(&cert_path, &pem).unwrap();
    std::fs::write(&key_path, &key).unwrap();
    env.settings.admin.tls_cert_file = Some(cert_path.clone());
    env.settings.admin.tls_key_file = Some(key_path.clone());
    let app = env.start_daemon().await;
    let addr = app.admin_addr;
    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    Https {
        p,
        env,
        app,
        addr,
        https,
        first,
        cert_path,
        key_path,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_admin_listener_serves_https_and_takes_a_renewed_certificate_without_a_restart() {
    let t = given_an_admin_listener_with_a_certificate_from_files().await;
    then_the_probes_answer_over_https_and_plain_http_gets_nothing(&t).await;
    then_behind_https_the_session_cookie_is_a_secure_host_cookie(&t).await;
    let second = when_a_renewed_certificate_is_written_over_the_files_it_is_served(&t).await;
    when_sighup_announces_files_that_look_unchanged_the_new_one_is_served(&t, second).await;
    t.app.stop().await;
}

/// The probes stay reachable, over HTTPS; plain HTTP gets no answer.
async fn then_the_probes_answer_over_https_and_plain_http_gets_nothing(t: &Https) {
    let (https, addr) = (&t.https, t.addr);
    for path in ["/healthz", "/readyz", "/metrics"] {
        let _scrape = common::METRICS_SCRAPE.lock().await;
        let r = https
            .get(format!("https://{addr}{path}"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(
            matches!(r.status().as_u16(), 200 | 503),
            "{path}: {}",
            r.status()
        );
    }
    // Plain HTTP gets no answer from it.
    let plain = t
        .env
        .http
        .get(format!("http://{addr}/healthz"))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");
}

/// Behind HTTPS the session cookie is `Secure`, and HSTS is sent.
async fn then_behind_https_the_session_cookie_is_a_secure_host_cookie(t: &Https) {
    let (https, addr, p) = (&t.https, t.addr, &t.p);
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("user", p.operator.as_str()),
            ("password", &p.password(&p.operator)),
        ])
        .finish();
    let r = https
        .post(format!("https://{addr}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(
        r.headers()["strict-transport-security"],
        "max-age=31536000",
        "HSTS over HTTPS"
    );
    // A `__Host-` cookie: only ever set over HTTPS, for this host and path alone.
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("__Host-mailboxd_session="), "{cookie}");
    assert!(
        cookie.contains("; Secure") && cookie.contains("; Path=/"),
        "{cookie}"
    );
    assert!(!cookie.to_ascii_lowercase().contains("domain="), "{cookie}");
    let session = cookie.split(';').next().unwrap();
    let r = https
        .get(format!("https://{addr}/jobs"))
        .header("cookie", session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the session cookie opens the dashboard");
    assert!(r.headers().contains_key("strict-transport-security"));
    // The plain name is not read behind HTTPS (a sibling host or HTTP page could set it).
    let plain = session.replacen("__Host-", "", 1);
    let r = https
        .get(format!("https://{addr}/jobs"))
        .header("cookie", plain)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "sent to the sign-in page");
}

/// A renewed certificate written over the files is served, the daemon still running.
async fn when_a_renewed_certificate_is_written_over_the_files_it_is_served(
    t: &Https,
) -> CertificateDer<'static> {
    let (addr, first) = (t.addr, &t.first);
    let (cert_path, key_path) = (&t.cert_path, &t.key_path);
    assert_eq!(
        served(addr, std::slice::from_ref(first)).await,
        first.to_vec()
    );
    let (pem2, key2, second) = certificate();
    std::fs::write(key_path, &key2).unwrap();
    std::fs::write(cert_path, &pem2).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while served(addr, &[first.clone(), second.clone()]).await != second.to_vec() {
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    second
}

/// SIGHUP reloads too: files replaced with their old modification times (so the watcher
/// sees no change), then the signal; the process lives on and serves the new one. The
/// signal goes to the whole test process: only daemons with an HTTPS admin listener act
/// on it (they read their files again); the others' handler ignores it.
async fn when_sighup_announces_files_that_look_unchanged_the_new_one_is_served(
    t: &Https,
    second: CertificateDer<'static>,
) {
    let (addr, first) = (t.addr, t.first.clone());
    let (cert_path, key_path) = (&t.cert_path, &t.key_path);
    let (pem3, key3, third) = certificate();
    for (path, text) in [(key_path, &key3), (cert_path, &pem3)] {
        let was = std::fs::metadata(path).unwrap().modified().unwrap();
        std::fs::write(path, text).unwrap();
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(was)
            .unwrap();
    }
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let all = [first, second, third.clone()];
    let deadline = Instant::now() + Duration::from_secs(20);
    while served(addr, &all).await != third.to_vec() {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload the certificate"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_certificate_without_its_key_is_refused_at_start() {
    let mut env = TestEnv::new(vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let (pem, _, _) = certificate();
    let (_, other_key, _) = certificate();
    std::fs::write(dir.path().join("cert.pem"), pem).unwrap();
    std::fs::write(dir.path().join("key.pem"), other_key).unwrap();
    env.settings.admin.tls_cert_file = Some(dir.path().join("cert.pem"));
    env.settings.admin.tls_key_file = Some(dir.path().join("key.pem"));
    let err = mailboxd::app::App::start(env.settings.clone())
        .await
        .err()
        .expect("a key that is not the certificate's is refused");
    assert!(
        format!("{err:#}").contains("do not make a TLS configuration"),
        "{err:#}"
    );
}
