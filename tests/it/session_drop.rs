//! A dropped Exchange session, as PowerShell behaves: once Exchange drops it, the proxy
//! functions Import-PSSession made would open a new session by themselves (prompting for an
//! explicit credential, which fails under -NonInteractive; silently with CredSSP, leaving a
//! session nobody removes — the lab's own tests show both). The templates check the session
//! before each account instead: the rest of the batch is not run, mailboxd reports the drop
//! as a session failure, and no session is left behind.

use crate::common;

use common::account_data as account;
use common::{LAB_PASSWORD, seed};
use lab::{FaultRequest, Lab};
use mailboxd::config::{self, ExchangeMode};
use mailboxd::exchange::{Exchange, ExchangeError, Template};
use secrecy::SecretString;
use winrm::{Auth, WinrmClient};

/// Remote mode through `auth`; an explicit Exchange credential unless CredSSP carries one.
fn remote(lab: &Lab, auth: Auth) -> Exchange {
    let cfg = common::lab_client_config(lab, auth);
    let mut x = config::Exchange {
        mode: ExchangeMode::Remote,
        connection_uris: vec!["http://ex01.corp.example/PowerShell/".into()],
        ..config::Exchange::default()
    };
    if auth != Auth::CredSsp {
        x.username = Some("CORP\\mailboxd".into());
        x.password = Some(SecretString::from(LAB_PASSWORD));
    }
    Exchange::new(WinrmClient::new(cfg).unwrap(), &x, lab.endpoint())
}

#[tokio::test]
async fn a_dropped_session_stops_the_batch_and_leaves_no_session_behind() {
    for auth in [Auth::Ntlm, Auth::CredSsp] {
        let sams = ["drop1", "drop2", "drop3"];
        let cfg = common::lab_config(sams.iter().map(|s| seed(s)).collect()).with_credssp(true);
        let lab = Lab::start(cfg).await.expect("lab starts");
        lab.set_fault(&FaultRequest::SessionDropped { count: 1 });
        let batch = sams.iter().map(|s| account(s)).collect();
        let e = remote(&lab, auth)
            .run_batch(Template::EnableRemoteMailbox, batch)
            .await
            .expect_err("the drop fails the batch");
        let ExchangeError::SessionDropped { message } = &e else {
            panic!("{auth:?}: {e:?}");
        };
        assert!(message.contains("WSMan-InvalidShellID"), "{message}");
        // Only the account that met the drop was tried; no proxy opened a second session.
        assert_eq!(
            lab.invocations_of("Enable-RemoteMailbox").len(),
            1,
            "{auth:?}"
        );
        assert_eq!(lab.invocations_of("New-PSSession").len(), 1, "{auth:?}");
        assert_eq!(lab.exchange_sessions_open(), 0, "{auth:?}: nothing leaks");
    }
}
