//! The lab's Exchange emulation, run directly (no WinRM).

use super::*;
use ps_templates::{BOOTSTRAP, POWERSHELL, command_arguments};
use serde_json::json;

#[test]
fn the_command_line_is_constant_and_round_trips() {
    let args = command_arguments();
    assert_eq!(args[5], "-EncodedCommand");
    assert_eq!(decode_encoded_command(&args[6]).as_deref(), Some(BOOTSTRAP));
    // Through cmd.exe the whole line must stay far below its 8191-character limit.
    let line: usize = args.iter().map(|a| a.len() + 1).sum::<usize>() + POWERSHELL.len();
    assert!(line < 8191, "command line is {line} characters");
}

#[test]
fn templates_are_recognised_by_content_only() {
    for t in Template::ALL {
        assert_eq!(recognise(&t.script()), Some(t));
    }
    let tampered = Template::EnableRemoteMailbox
        .script()
        .replace("Enable-RemoteMailbox @enable", "Remove-Mailbox @enable");
    assert_eq!(recognise(&tampered), None);
}

pub(super) fn test_run(snapin: bool, policy: HostPolicy) -> Run {
    Run {
        state: SharedState::default(),
        latency: Latency::default(),
        user: "svc".into(),
        logon: Logon::local("svc"),
        policy,
        domain_accounts: vec![("svc".into(), SecretString::from("pw"))],
        secret: None,
        unavailable: None,
        snapin,
        lines: Vec::new(),
        stderr: String::new(),
    }
}

#[test]
fn the_snapin_has_no_set_adserversettings() {
    // What common.ps1 did before in snapin mode with view_entire_forest.
    let run = test_run(true, HostPolicy::default());
    let mut p = Map::new();
    p.insert("ViewEntireForest".into(), json!(true));
    let refused = run
        .cmdlet("Set-ADServerSettings", "SetADServerSettings", p, "")
        .unwrap_err();
    assert_eq!(refused.reason.as_deref(), Some("CommandNotFoundException"));
    assert!(
        refused
            .message
            .as_deref()
            .is_some_and(|m| m.starts_with("The term 'Set-ADServerSettings' is not recognized"))
    );
    // In remote mode the session's own cmdlet works.
    let remote = test_run(false, HostPolicy::default());
    let mut p = Map::new();
    p.insert("ViewEntireForest".into(), json!(true));
    assert!(
        remote
            .cmdlet("Set-ADServerSettings", "SetADServerSettings", p, "")
            .is_ok()
    );
}

#[test]
fn without_emt_membership_the_snapins_writes_are_refused() {
    let policy = HostPolicy {
        emt_missing: true,
        ..HostPolicy::default()
    };
    let run = test_run(true, policy);
    run.state
        .lock()
        .add_accounts([LabAccount::from_seed(crate::directory::AccountSeed::user(
            "jdoe",
        ))]);
    let account: AccountData = serde_json::from_value(json!({
        "job_id": uuid::Uuid::new_v4(), "identity": "jdoe", "sam_account_name": "jdoe",
        "domain_controller": "dc1.corp.example",
        "remote_routing_address": "jdoe@tenant.mail.onmicrosoft.com"}))
    .unwrap();
    let r = run.enable(&account);
    assert_eq!(r.reason.as_deref(), Some("ADOperationException"));
    assert_eq!(
        r.message.as_deref(),
        Some(crate::faults::insufficient_rights_message("dc1.corp.example").as_str())
    );
    let st = run.state.lock();
    assert_eq!(st.accounts[0].recipient, Recipient::None, "nothing written");
}

#[test]
fn the_old_one_call_archive_is_refused_as_powershell_refuses_it() {
    let run = test_run(false, HostPolicy::default());
    // What enable-remote-mailbox.ps1 sent before: the mailbox and -Archive in one call.
    let old: Map<String, Value> = [
        ("Identity", json!("jdoe")),
        ("DomainController", json!("dc1.corp.example")),
        (
            "RemoteRoutingAddress",
            json!("jdoe@tenant.mail.onmicrosoft.com"),
        ),
        ("Archive", json!(true)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let refused = run.bind("Enable-RemoteMailbox", &old).unwrap_err();
    assert_eq!(refused.category.as_deref(), Some("InvalidArgument"));
    assert_eq!(refused.reason.as_deref(), Some("ParameterBindingException"));
    assert_eq!(
        refused.error_id.as_deref(),
        Some("AmbiguousParameterSet,Enable-RemoteMailbox")
    );
    assert_eq!(
        refused.message.as_deref(),
        Some("Parameter set cannot be resolved using the specified named parameters.")
    );
    let st = run.state.lock();
    assert_eq!(st.invocations.len(), 1);
    assert_eq!(
        st.invocations[0].error.as_deref(),
        Some("ParameterBindingException")
    );
    assert!(st.accounts.is_empty(), "nothing ran");
}
