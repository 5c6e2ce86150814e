//! What a real domain asks of the Exchange session's names and files: Kerberos needs each
//! server's own name (a load-balanced namespace without an alternate service account gets
//! SEC_E_WRONG_PRINCIPAL, 0x80090322; an IP address no ticket at all), and an AllSigned
//! execution policy needs Import-PSSession's temporary module signed (-Certificate).

use crate::common;

use common::{LAB_PASSWORD, seed};
use lab::{Lab, LabConfig};
use mailboxd::config::{self, ExchangeMode, Settings};
use mailboxd::exchange::{Exchange, ExchangeError, Template};
use mailboxd::job::ErrorClass;
use secrecy::SecretString;
use winrm::{Auth, ClientConfig, WinrmClient};

/// Remote mode with an explicit Exchange credential, through NTLM.
fn remote(lab: &Lab, uri: &str, thumbprint: Option<&str>) -> Exchange {
    let mut cfg = ClientConfig::new(
        lab.endpoint().parse().unwrap(),
        lab::DEFAULT_USER,
        SecretString::from(LAB_PASSWORD),
    );
    cfg.auth = Auth::Ntlm;
    let x = config::Exchange {
        mode: ExchangeMode::Remote,
        connection_uris: vec![uri.into()],
        username: Some("CORP\\mailboxd".into()),
        password: Some(SecretString::from(LAB_PASSWORD)),
        signing_certificate_thumbprint: thumbprint.map(str::to_owned),
        ..config::Exchange::default()
    };
    Exchange::new(WinrmClient::new(cfg).unwrap(), &x, lab.endpoint())
}

async fn start(cfg: LabConfig) -> Lab {
    Lab::start(cfg.with_accounts(vec![seed("names1")]))
        .await
        .expect("lab starts")
}

/// The session's failure for an empty batch (what `mailboxd check` runs).
async fn session_error(ex: &Exchange) -> (ErrorClass, String) {
    match ex
        .run_batch(Template::EnableRemoteMailbox, Vec::new())
        .await
    {
        Err(ExchangeError::Session { class, message }) => (class, message),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn kerberos_to_a_load_balanced_name_says_to_use_each_servers_fqdn() {
    let lab = start(common::lab_config(vec![]).with_load_balanced_without_asa(true)).await;
    let ex = remote(&lab, "http://mail.corp.example/PowerShell/", None);
    let (class, message) = session_error(&ex).await;
    assert_eq!(class, ErrorClass::Systemic);
    assert!(message.contains("errorcode 0x80090322"), "{message}");
    assert!(message.contains("Use each server's FQDN"), "{message}");
    assert!(message.contains("alternate service account"), "{message}");
}

#[test]
fn an_ip_address_as_connection_uri_is_refused_at_start() {
    let mut s = Settings::default();
    s.exchange.connection_uris = vec!["http://10.0.0.5/PowerShell/".into()];
    s.exchange.username = Some("CORP\\mailboxd".into());
    s.exchange.password = Some(SecretString::from("x"));
    let e = s.validate_exchange().unwrap_err().to_string();
    assert!(e.contains("names an IP address"), "{e}");
    assert!(e.contains("FQDN"), "{e}");
}

#[tokio::test]
async fn an_allsigned_host_takes_the_module_signed_with_the_configured_certificate() {
    let lab = start(common::lab_config(vec![]).with_all_signed(true)).await;
    let uri = "http://ex01.corp.example/PowerShell/";
    let (_, unsigned) = session_error(&remote(&lab, uri, None)).await;
    assert!(
        unsigned.contains("Import-PSSession -Certificate"),
        "{unsigned}"
    );
    assert!(
        unsigned.contains("exchange.signing_certificate_thumbprint"),
        "{unsigned}"
    );
    let (_, missing) = session_error(&remote(&lab, uri, Some(&"AB".repeat(20)))).await;
    assert!(
        missing.contains("Cannot find path 'Cert:\\CurrentUser\\My\\"),
        "{missing}"
    );
    remote(&lab, uri, Some(lab::LAB_SIGNING_THUMBPRINT))
        .run_batch(Template::EnableRemoteMailbox, Vec::new())
        .await
        .expect("the signed module loads under AllSigned");
    let imports = lab.invocations_of("Import-PSSession");
    let last = imports.last().expect("an import");
    assert_eq!(last.text("Certificate"), Some(lab::LAB_SIGNING_THUMBPRINT));
    assert!(last.error.is_none());
}
