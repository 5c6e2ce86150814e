//! Microsoft Graph, app-only with a certificate, against the lab's Graph stand-in over HTTPS
//! with CA checks on: the client gets a token and reads what Exchange Online shows for a
//! user; the stand-in refuses what Microsoft refuses, and `mailboxd check` says why.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use lab::graph::{AppCertificate, GraphUser, MAILBOX_SETTINGS_READ, USER_READ_ALL};
use lab::{Lab, graph::LAB_TENANT_ID};
use mailboxd::check::{self, Status};
use mailboxd::config::Settings;
use mailboxd::graph::{
    AssertionClaims, CloudMailboxState, GraphClient, GraphError, MailboxPurpose, UserRef,
};
use secrecy::ExposeSecret;

use crate::common;

const CLIENT_ID: &str = "0a4c1c7e-2f0b-4a57-9d5b-6c1e2f3a4b5c";
const ANNA: &str = "1b2c3d4e-0000-4000-8000-00000000a001";

/// The app's certificate (RSA generation is slow in a debug build: once per process).
fn registered_cert() -> &'static AppCertificate {
    static CERT: OnceLock<AppCertificate> = OnceLock::new();
    CERT.get_or_init(|| AppCertificate::generate("mailboxd-graph").expect("certificate"))
}

fn other_cert() -> &'static AppCertificate {
    static CERT: OnceLock<AppCertificate> = OnceLock::new();
    CERT.get_or_init(|| AppCertificate::generate("not-registered").expect("certificate"))
}

/// A lab whose tenant has mailboxd's app registered, and `[graph]` settings pointing at it,
/// signing with `cert`.
struct GraphLab {
    lab: Lab,
    _files: tempfile::TempDir,
    settings: Settings,
}

async fn graph_lab(cert: &'static AppCertificate, roles: &[&str]) -> GraphLab {
    let files = tempfile::tempdir().expect("temp dir");
    let ca = files.path().join("lab-ca.pem");
    let cfg = common::lab_config(vec![])
        .without_directory()
        .with_tls(lab::LOOPBACK_ANY_PORT, Some(ca.clone()));
    let lab = Lab::start(cfg).await.expect("lab starts");
    lab.graph()
        .register_app(CLIENT_ID, &registered_cert().certificate_der, roles);
    let graph = common::graph::settings(&lab, CLIENT_ID, cert, files.path(), ca);
    let settings = Settings {
        graph,
        ..Settings::default()
    };
    GraphLab {
        lab,
        _files: files,
        settings,
    }
}

impl GraphLab {
    fn client(&self) -> GraphClient {
        GraphClient::from_config(&self.settings.graph)
            .expect("the settings are valid")
            .expect("[graph] is configured")
    }
}

fn anna(plan: Option<&str>, mailbox: Option<&str>) -> GraphUser {
    GraphUser {
        id: ANNA.into(),
        user_principal_name: "anna.berg@corp.example".into(),
        mail: mailbox.map(|_| "anna.berg@corp.example".into()),
        proxy_addresses: vec![
            "SMTP:anna.berg@corp.example".into(),
            "smtp:anna.berg@tenant.mail.onmicrosoft.com".into(),
        ],
        licences: plan
            .map(|_| vec!["6fd2c87f-b296-42f0-b197-1e91e994b900".into()])
            .unwrap_or_default(),
        exchange_plan: plan.map(str::to_owned),
        provisioning_error: None,
        mailbox: mailbox.map(str::to_owned),
    }
}

const ALL_READS: &[&str] = &[USER_READ_ALL, MAILBOX_SETTINGS_READ];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_licensed_user_reads_as_an_existing_mailbox_with_its_cloud_addresses() {
    let t = graph_lab(registered_cert(), ALL_READS).await;
    t.lab.graph().set_user(anna(Some("Success"), Some("user")));
    let client = t.client();

    // By the object ID AD holds in msDS-ExternalDirectoryObjectId, and by UPN.
    let by_anchor = UserRef::object_id(&format!("User_{ANNA}")).expect("an object ID");
    let view = client
        .mailbox_view(&by_anchor)
        .await
        .expect("Graph answers");
    assert_eq!(view.state, CloudMailboxState::Exists);
    assert_eq!(view.purpose, Some(MailboxPurpose::User));
    let user = view.user.expect("the cloud user");
    assert_eq!(user.mail.as_deref(), Some("anna.berg@corp.example"));
    assert!(
        user.proxy_addresses
            .contains(&"smtp:anna.berg@tenant.mail.onmicrosoft.com".into())
    );

    let by_upn = UserRef::upn("anna.berg@corp.example").expect("a UPN");
    assert_eq!(
        client
            .mailbox_view(&by_upn)
            .await
            .expect("Graph answers")
            .state,
        CloudMailboxState::Exists
    );
    // Four reads, one token: it is kept until shortly before it expires.
    assert_eq!(t.lab.graph().calls().len(), 4);
    assert_eq!(t.lab.graph().tokens_issued(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mailbox_stuck_setting_up_returns_exchanges_error_text() {
    let t = graph_lab(registered_cert(), ALL_READS).await;
    t.lab.graph().set_user(anna(Some("Error"), None));
    let text = "The proxy address \"SMTP:anna.berg@corp.example\" is already being used by the proxy addresses or LegacyExchangeDN of \"olga\".";
    t.lab.graph().set_provisioning_error(ANNA, Some(text));

    let view = t
        .client()
        .mailbox_view(&UserRef::object_id(ANNA).expect("id"))
        .await
        .expect("Graph answers");
    assert_eq!(view.state, CloudMailboxState::SettingUp);
    assert_eq!(view.provisioning_errors, vec![text.to_owned()]);
    assert_eq!(view.purpose, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlicensed_user_reads_as_no_exchange_licence_and_an_unknown_one_as_not_synced() {
    let t = graph_lab(registered_cert(), ALL_READS).await;
    t.lab.graph().set_user(anna(None, None));
    let client = t.client();

    let view = client
        .mailbox_view(&UserRef::object_id(ANNA).expect("id"))
        .await
        .expect("Graph answers");
    assert_eq!(view.state, CloudMailboxState::NoExchangeLicence);
    assert_eq!(view.user.expect("the cloud user").assigned_licences, 0);

    // Licensed a moment ago: the plan is there, the mailbox not yet.
    t.lab.graph().set_licence(
        ANNA,
        Some("6fd2c87f-b296-42f0-b197-1e91e994b900"),
        Some("PendingInput"),
    );
    let view = client
        .mailbox_view(&UserRef::object_id(ANNA).expect("id"))
        .await
        .expect("Graph answers");
    assert_eq!(view.state, CloudMailboxState::Pending);

    let nobody = UserRef::upn("nobody@corp.example").expect("a UPN");
    let view = client
        .mailbox_view(&nobody)
        .await
        .expect("a 404 is an answer");
    assert_eq!(view.state, CloudMailboxState::NotSynced);
    assert!(view.user.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_says_the_registered_certificate_is_not_the_configured_one() {
    let t = graph_lab(other_cert(), ALL_READS).await;

    let probe = check::graph_probe(&t.settings).await;
    assert_eq!(probe.status, Status::Fail, "{probe:?}");
    assert!(
        probe
            .detail
            .contains("AADSTS700027: Client assertion failed signature validation."),
        "{}",
        probe.detail
    );
    assert!(
        probe.detail.contains("graph.certificate_file"),
        "{}",
        probe.detail
    );
    assert_eq!(t.lab.graph().tokens_issued(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_with_the_registered_certificate_and_fails_on_a_wrong_clock() {
    let t = graph_lab(registered_cert(), ALL_READS).await;
    let probe = check::graph_probe(&t.settings).await;
    assert_eq!(probe.status, Status::Ok, "{probe:?}");

    // Microsoft's clock is 20 minutes ahead of this host's: the assertion has expired there.
    t.lab.graph().set_clock_skew(20 * 60);
    let probe = check::graph_probe(&t.settings).await;
    assert_eq!(probe.status, Status::Fail, "{probe:?}");
    assert!(
        probe
            .detail
            .contains("AADSTS700024: Client assertion is not within its valid time range"),
        "{}",
        probe.detail
    );
    assert!(probe.detail.contains("clock"), "{}", probe.detail);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_endpoint_refuses_a_wrong_audience_an_expired_assertion_and_a_foreign_issuer() {
    let t = graph_lab(registered_cert(), ALL_READS).await;
    let client = t.client();
    let now = SystemTime::now();
    let good = AssertionClaims::new(CLIENT_ID, client.token_url(), now);
    let cases = [
        (
            AssertionClaims {
                aud: "https://login.microsoftonline.com/other/oauth2/v2.0/token".into(),
                ..good.clone()
            },
            700023,
        ),
        (
            AssertionClaims::new(
                CLIENT_ID,
                client.token_url(),
                now - Duration::from_secs(20 * 60),
            ),
            700024,
        ),
        (
            AssertionClaims {
                iss: "someone-else".into(),
                ..good.clone()
            },
            50048,
        ),
        (
            AssertionClaims {
                iss: "11111111-2222-3333-4444-555555555555".into(),
                sub: "11111111-2222-3333-4444-555555555555".into(),
                ..good.clone()
            },
            700021,
        ),
    ];
    for (claims, code) in cases {
        let assertion = client.credential().sign(&claims).expect("signed");
        let refused = client.redeem(&assertion).await.expect_err("refused");
        assert_eq!(refused.aadsts(), Some(code), "{refused}");
    }
    let assertion = client.credential().sign(&good).expect("signed");
    assert!(client.redeem(&assertion).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_hands_back_graphs_stated_wait_and_the_next_read_succeeds() {
    let t = graph_lab(registered_cert(), ALL_READS).await;
    t.lab
        .graph()
        .set_user(anna(Some("Success"), Some("shared")));
    t.lab.graph().throttle(1, Duration::from_millis(2500));
    let client = t.client();
    let anna_ref = UserRef::object_id(ANNA).expect("id");

    let throttled = client.mailbox_view(&anna_ref).await.expect_err("throttled");
    assert_eq!(
        throttled.retry_after(),
        Some(Duration::from_millis(2500)),
        "{throttled}"
    );
    assert!(throttled.is_transient());
    // The caller decides when to come back; the stand-in throttled one read only.
    let view = client.mailbox_view(&anna_ref).await.expect("Graph answers");
    assert_eq!(view.purpose, Some(MailboxPurpose::Shared));
    let statuses: Vec<u16> = t.lab.graph().calls().iter().map(|c| c.status).collect();
    assert_eq!(statuses, vec![429, 200, 200]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_permission_names_the_application_permission_to_grant() {
    let t = graph_lab(registered_cert(), &[USER_READ_ALL]).await;
    t.lab.graph().set_user(anna(Some("Success"), Some("user")));

    let denied = t
        .client()
        .mailbox_view(&UserRef::object_id(ANNA).expect("id"))
        .await
        .expect_err("denied");
    assert!(
        matches!(
            denied,
            GraphError::PermissionMissing {
                permission: "MailboxSettings.Read",
                ..
            }
        ),
        "{denied}"
    );
    assert!(
        denied
            .to_string()
            .contains("grant the application permission MailboxSettings.Read"),
        "{denied}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stand_in_answers_with_microsofts_error_shapes() {
    let t = graph_lab(registered_cert(), ALL_READS).await;
    let base = t.lab.https_url().expect("https");
    let ca = std::fs::read(t.settings.graph.ca_file.as_ref().expect("ca")).expect("ca file");
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("pem"))
        .build()
        .expect("client");

    let r = http
        .get(format!("{base}/v1.0/users/{ANNA}"))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "InvalidAuthenticationToken");

    let r = http
        .post(format!("{base}/{LAB_TENANT_ID}/oauth2/v2.0/token"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("grant_type=password&client_id={CLIENT_ID}"))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["error"], "unsupported_grant_type");
    assert_eq!(body["error_codes"], serde_json::json!([70003]));
    for field in ["timestamp", "trace_id", "correlation_id"] {
        assert!(body[field].is_string(), "{field} in {body}");
    }
    assert!(
        body["error_description"]
            .as_str()
            .expect("text")
            .starts_with("AADSTS70003: ")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_replaced_once_without_failing_the_read() {
    let t = graph_lab(registered_cert(), ALL_READS).await;
    t.lab.graph().set_user(anna(Some("Success"), Some("user")));
    let client = t.client();
    let anna_ref = UserRef::object_id(ANNA).expect("id");
    client.mailbox_view(&anna_ref).await.expect("Graph answers");

    t.lab.graph().revoke_tokens();
    let view = client
        .mailbox_view(&anna_ref)
        .await
        .expect("a fresh token, then the answer");
    assert_eq!(view.state, CloudMailboxState::Exists);
    assert_eq!(t.lab.graph().tokens_issued(), 2);
    let statuses: Vec<u16> = t.lab.graph().calls().iter().map(|c| c.status).collect();
    assert_eq!(statuses, vec![200, 200, 401, 200, 200]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_key_that_is_not_the_certificates_is_refused_before_any_request() {
    let mut t = graph_lab(registered_cert(), ALL_READS).await;
    let other_key = other_cert().private_key_pem.expose_secret().to_owned();
    t.settings.graph.private_key = Some(other_key.clone().into());

    let refused = GraphClient::from_config(&t.settings.graph).expect_err("refused");
    let text = refused.to_string();
    assert!(
        text.contains("graph.private_key_file is not the key of graph.certificate_file"),
        "{text}"
    );
    assert!(
        !text.contains(&other_key[30..60]),
        "the key never shows in an error"
    );
    assert!(t.lab.graph().calls().is_empty() && t.lab.graph().tokens_issued() == 0);
}

#[test]
fn only_an_object_id_or_a_upn_names_a_user() {
    let guid = "1b2c3d4e-0000-4000-8000-00000000a001";
    assert!(UserRef::object_id(&format!("User_{guid}")).is_ok());
    assert!(UserRef::object_id(guid).is_ok());
    for bad in ["../../users", "User_", "1b2c3d4e"] {
        assert!(
            matches!(UserRef::object_id(bad), Err(GraphError::NotAUser(_))),
            "{bad}"
        );
    }
    assert!(UserRef::upn("anna.berg@corp.example").is_ok());
    assert!(UserRef::upn("anna\r\n@corp.example").is_err());
    assert!(UserRef::upn("no-at-sign").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_404_that_is_not_graphs_no_such_user_is_not_read_as_not_synced() {
    let mut t = graph_lab(registered_cert(), ALL_READS).await;
    // graph_url pointing one level off: every read is a 404 with no Graph error code.
    t.settings.graph.graph_url = format!("{}/not-graph", t.lab.https_url().expect("https"));

    let answer = t
        .client()
        .mailbox_view(&UserRef::object_id(ANNA).expect("id"))
        .await;
    assert!(
        matches!(answer, Err(GraphError::Unexpected { status: 404, .. })),
        "{answer:?}"
    );
    let probe = check::graph_probe(&t.settings).await;
    assert_eq!(probe.status, Status::Fail, "{probe:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_checks_are_on_without_a_ca_file_the_lab_is_not_trusted() {
    let mut t = graph_lab(registered_cert(), ALL_READS).await;
    t.settings.graph.ca_file = None;

    let probe = check::graph_probe(&t.settings).await;
    assert_eq!(probe.status, Status::Fail, "{probe:?}");
    assert!(probe.detail.contains("UnknownIssuer"), "{}", probe.detail);
    assert!(probe.detail.contains("graph.ca_file"), "{}", probe.detail);
    assert_eq!(t.lab.graph().tokens_issued(), 0);
}
