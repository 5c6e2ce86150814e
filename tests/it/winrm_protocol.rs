//! The WinRM client and the lab's server checked against real recorded Windows traffic
//! (tests/fixtures/winrm, see its README for sources): the client reads what Windows
//! sends, and the lab answers recorded client requests the way Windows did.

use crate::common;

use std::path::Path;

use secrecy::SecretString;
use winrm::soap::{self, Envelope};
use winrm::{ClientConfig, ShellOptions, WinrmClient, WinrmError, parse_receive, xml::Element};

fn fixture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/winrm")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn envelope(name: &str) -> Envelope {
    Envelope::parse(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn the_client_reads_every_recorded_receive_reply() {
    let done = envelope("receive_response_done.xml");
    let r = parse_receive(&done.body, "CF84C20A-0A35-43FA-AF78-0B4711DA5F30").unwrap();
    assert_eq!(
        (r.stdout.as_slice(), r.exit_code),
        (&b"hi\r\n"[..], Some(0))
    );

    let running = envelope("receive_response_running.xml");
    let r = parse_receive(&running.body, "D644AE56-61E5-4C1A-A135-E599B76B3035").unwrap();
    assert_eq!((r.stdout.as_slice(), r.exit_code), (&b"hi\n"[..], None));

    let utf8 = envelope("receive_response_utf8.xml");
    let r = parse_receive(&utf8.body, "1B922CC0-CE49-4A7E-AC46-B01C472B49A9").unwrap();
    assert_eq!(String::from_utf8(r.stdout).unwrap(), "こんにちは\n");

    let err = envelope("receive_response_stderr_exitcode_1.xml");
    let r = parse_receive(&err.body, "D37A8327-79AD-452F-BE0D-4B99A96B4A0B").unwrap();
    assert_eq!(r.stdout, b"out \r\n");
    assert_eq!(r.stderr, b"err \r\n");
    assert_eq!(r.exit_code, Some(1));

    let clixml = envelope("receive_response_clixml_stderr.xml");
    let id = clixml
        .body
        .find(soap::NS_SHELL, "Stream")
        .and_then(|s| s.attr("CommandId"))
        .unwrap()
        .to_owned();
    let r = parse_receive(&clixml.body, &id).unwrap();
    assert!(String::from_utf8_lossy(&r.stderr).starts_with("#< CLIXML"));
    assert_eq!(r.exit_code, Some(1));
    // What an operator reads: PowerShell's error text, not CLIXML.
    let text = winrm::clixml::readable(&r.stderr);
    assert!(
        text.starts_with("Write-Error \"Error\" : Error\n"),
        "{text}"
    );
    assert!(
        text.contains("FullyQualifiedErrorId") && !text.contains("<S"),
        "{text}"
    );
}

/// Each recorded fault, the code and subcode Windows sent, and the kind the worker acts on.
const RECORDED_FAULTS: [(&str, u32, &str, &str); 6] = [
    (
        "fault_receive_operation_timeout_2150858793.xml",
        2_150_858_793,
        "TimedOut",
        "operation_timeout",
    ),
    (
        "fault_invalid_selectors_unknown_command_2150858843.xml",
        2_150_858_843,
        "InvalidSelectors",
        "shell_gone",
    ),
    (
        "fault_invalid_parameter_87.xml",
        87,
        "InvalidParameter",
        "fault",
    ),
    (
        "fault_command_not_found_2147942402.xml",
        2_147_942_402,
        "InternalError",
        "fault",
    ),
    (
        "fault_invalid_header_timeout_2150858767.xml",
        2_150_858_767,
        "InvalidMessageInformationHeader",
        "fault",
    ),
    (
        "fault_shell_quota_exceeded_2150859173.xml",
        2_150_859_173,
        "QuotaLimit",
        "shell_quota",
    ),
];

#[test]
fn every_recorded_fault_becomes_a_typed_fault() {
    for (file, code, subcode, kind) in RECORDED_FAULTS {
        let f = envelope(file)
            .fault()
            .unwrap_or_else(|| panic!("{file} is a fault"));
        assert_eq!(f.code, Some(code), "{file}");
        assert_eq!(f.subcode, subcode, "{file}");
        assert!(
            f.message.as_deref().is_some_and(|m| !m.is_empty()),
            "{file}: {f:?}"
        );
        assert_eq!(WinrmError::from_fault(f).kind(), kind, "{file}");
    }
    let quota = WinrmError::from_fault(
        envelope("fault_shell_quota_exceeded_2150859173.xml")
            .fault()
            .unwrap(),
    );
    assert!(quota.is_transient(), "shell quota is worth retrying");
    let text = quota.to_string();
    assert!(
        text.contains("maximum number of 30 concurrent shells")
            && text.contains("MaxShellsPerUser"),
        "the message quotes Windows and says what to check: {text}"
    );
}

#[test]
fn recorded_requests_parse_whatever_their_prefixes() {
    for (file, action, shell) in [
        ("create_shell_request.xml", soap::ACTION_CREATE, None),
        (
            "command_request.xml",
            soap::ACTION_COMMAND,
            Some("4283CBDC-3706-415B-88BD-B385F3E51A53"),
        ),
        (
            "command_request_consolemode_stdin.xml",
            soap::ACTION_COMMAND,
            Some("11111111-1111-1111-1111-111111111113"),
        ),
        (
            "send_request_stdin.xml",
            soap::ACTION_SEND,
            Some("0D6FCA9D-2D40-44C3-B691-E665BE7AA687"),
        ),
        (
            "receive_request.xml",
            soap::ACTION_RECEIVE,
            Some("4283CBDC-3706-415B-88BD-B385F3E51A53"),
        ),
        (
            "signal_request_terminate.xml",
            soap::ACTION_SIGNAL,
            Some("11111111-1111-1111-1111-111111111113"),
        ),
        (
            "delete_shell_request.xml",
            soap::ACTION_DELETE,
            Some("4283CBDC-3706-415B-88BD-B385F3E51A53"),
        ),
    ] {
        let env = envelope(file);
        assert_eq!(env.action(), Some(action), "{file}");
        assert_eq!(
            env.header_text(soap::NS_WSMAN, "ResourceURI"),
            Some(soap::RESOURCE_CMD),
            "{file}"
        );
        assert_eq!(env.selector("ShellId"), shell, "{file}");
    }
    let env = envelope("create_shell_request_codepage_65001.xml");
    assert_eq!(env.option("WINRS_CODEPAGE"), Some("65001"));
    let env = envelope("command_request_consolemode_stdin.xml");
    assert_eq!(env.option("WINRS_CONSOLEMODE_STDIN"), Some("TRUE"));
}

/// The element structure (namespace + name, recursively), ignoring text and IDs.
fn shape(el: &Element) -> String {
    let mut s = format!("{{{}}}{}", el.ns, el.name);
    if !el.children.is_empty() {
        s.push('(');
        s.push_str(&el.children.iter().map(shape).collect::<Vec<_>>().join(","));
        s.push(')');
    }
    s
}

async fn post(http: &reqwest::Client, url: &str, body: String) -> (u16, String) {
    let r = http
        .post(url)
        .basic_auth(lab::DEFAULT_USER, Some(common::LAB_PASSWORD))
        .header("Content-Type", "application/soap+xml;charset=UTF-8")
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn the_lab_answers_a_recorded_pypsrp_session_like_windows_did() {
    let lab = common::start_lab(vec![], lab::Latency::default(), 30).await;
    let url = lab.endpoint();
    let http = common::http();
    let shell = then_create_answers_like_the_recording(&http, &url).await;
    let command = then_a_command_answers_like_the_recording(&http, &url, &shell).await;
    then_receive_gives_the_recorded_streams(&http, &url, &shell, &command).await;
    then_after_ctrl_c_a_receive_gets_windows_fault(&http, &url, &shell, &command).await;
    then_delete_answers_and_the_shell_is_gone(&http, &url, &shell).await;
}

/// Create: same reply structure as the recording, a new ShellId.
async fn then_create_answers_like_the_recording(http: &reqwest::Client, url: &str) -> String {
    let (status, text) = post(http, url, fixture("create_shell_request.xml")).await;
    assert_eq!(status, 200, "{text}");
    let reply = Envelope::parse(&text).unwrap();
    let recorded = envelope("create_shell_response.xml");
    assert_eq!(shape(&reply.body), shape(&recorded.body));
    assert_eq!(reply.action(), recorded.action());
    assert_eq!(
        reply.relates_to(),
        Some("uuid:FC40E3CD-53E9-4315-B486-6D538B25D1F5")
    );
    reply
        .body
        .find(soap::NS_SHELL, "ShellId")
        .unwrap()
        .trimmed_text()
        .to_owned()
}

/// Command `cmd.exe /c echo hi`, with the recorded request's ShellId swapped for ours.
async fn then_a_command_answers_like_the_recording(
    http: &reqwest::Client,
    url: &str,
    shell: &str,
) -> String {
    let req = fixture("command_request.xml").replace("4283CBDC-3706-415B-88BD-B385F3E51A53", shell);
    let (status, text) = post(http, url, req).await;
    assert_eq!(status, 200, "{text}");
    let reply = Envelope::parse(&text).unwrap();
    assert_eq!(
        shape(&reply.body),
        shape(&envelope("command_response.xml").body)
    );
    reply
        .body
        .find(soap::NS_SHELL, "CommandId")
        .unwrap()
        .trimmed_text()
        .to_owned()
}

/// Receive: "hi\r\n", Done, exit code 0 — the recorded reply, byte for byte in its streams.
async fn then_receive_gives_the_recorded_streams(
    http: &reqwest::Client,
    url: &str,
    shell: &str,
    command: &str,
) {
    let req = fixture("receive_request.xml")
        .replace("4283CBDC-3706-415B-88BD-B385F3E51A53", shell)
        .replace("CF84C20A-0A35-43FA-AF78-0B4711DA5F30", command);
    let (status, text) = post(http, url, req).await;
    assert_eq!(status, 200, "{text}");
    let reply = Envelope::parse(&text).unwrap();
    let recorded = envelope("receive_response_done.xml");
    assert_eq!(shape(&reply.body), shape(&recorded.body));
    let ours = parse_receive(&reply.body, command).unwrap();
    let theirs = parse_receive(&recorded.body, "CF84C20A-0A35-43FA-AF78-0B4711DA5F30").unwrap();
    assert_eq!(ours, theirs);
}

/// Signal ctrl_c, then a Receive for the released command gets Windows' fault.
async fn then_after_ctrl_c_a_receive_gets_windows_fault(
    http: &reqwest::Client,
    url: &str,
    shell: &str,
    command: &str,
) {
    let req = fixture("signal_request_ctrl_c.xml")
        .replace("4283CBDC-3706-415B-88BD-B385F3E51A53", shell)
        .replace("CF84C20A-0A35-43FA-AF78-0B4711DA5F30", command);
    let (status, text) = post(http, url, req).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        shape(&Envelope::parse(&text).unwrap().body),
        shape(&envelope("signal_response.xml").body)
    );
    let req = fixture("receive_request.xml")
        .replace("4283CBDC-3706-415B-88BD-B385F3E51A53", shell)
        .replace("CF84C20A-0A35-43FA-AF78-0B4711DA5F30", command);
    let (status, text) = post(http, url, req).await;
    assert_eq!(status, 500);
    let fault = Envelope::parse(&text).unwrap().fault().unwrap();
    let recorded = envelope("fault_invalid_selectors_unknown_command_2150858843.xml")
        .fault()
        .unwrap();
    assert_eq!(
        (fault.code, &fault.subcode, &fault.message),
        (recorded.code, &recorded.subcode, &recorded.message)
    );
}

/// Delete, then the shell is gone.
async fn then_delete_answers_and_the_shell_is_gone(http: &reqwest::Client, url: &str, shell: &str) {
    let req =
        fixture("delete_shell_request.xml").replace("4283CBDC-3706-415B-88BD-B385F3E51A53", shell);
    let (status, text) = post(http, url, req.clone()).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        shape(&Envelope::parse(&text).unwrap().body),
        shape(&envelope("delete_shell_response.xml").body)
    );
    let (status, _) = post(http, url, req).await;
    assert_eq!(status, 500);
}

#[tokio::test]
async fn the_lab_refuses_what_windows_refuses() {
    let lab = common::start_lab(vec![], lab::Latency::default(), 2).await;
    let url = lab.endpoint();
    let http = common::http();
    then_without_credentials_both_schemes_are_offered_and_get_is_refused(&http, &url).await;
    then_an_invalid_operation_timeout_is_fault_2150858767(&http, &url).await;
    then_a_receive_without_a_command_id_is_fault_87(&http, &url).await;
    then_the_third_shell_is_refused_with_quota_limit(&http, &url).await;
}

/// No credentials: 401 with both schemes offered, empty body.
async fn then_without_credentials_both_schemes_are_offered_and_get_is_refused(
    http: &reqwest::Client,
    url: &str,
) {
    let r = http
        .post(url)
        .body(fixture("create_shell_request.xml"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let schemes: Vec<_> = r
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        schemes,
        vec!["Negotiate".to_owned(), "Basic realm=\"WSMAN\"".to_owned()]
    );
    assert!(r.text().await.unwrap().is_empty());
    // GET is not WS-Management.
    assert_eq!(http.get(url).send().await.unwrap().status(), 405);
}

/// An invalid OperationTimeout: fault 2150858767, as recorded.
async fn then_an_invalid_operation_timeout_is_fault_2150858767(http: &reqwest::Client, url: &str) {
    let bad = fixture("create_shell_request.xml").replace("PT20S", "PT-1S");
    let (status, text) = post(http, url, bad).await;
    assert_eq!(status, 500);
    let f = Envelope::parse(&text).unwrap().fault().unwrap();
    assert_eq!(
        (f.code, f.subcode.as_str()),
        (Some(2_150_858_767), "InvalidMessageInformationHeader")
    );
}

/// Receive without a CommandId: fault 87.
async fn then_a_receive_without_a_command_id_is_fault_87(http: &reqwest::Client, url: &str) {
    let (_, text) = post(http, url, fixture("create_shell_request.xml")).await;
    let shell = Envelope::parse(&text)
        .unwrap()
        .body
        .find(soap::NS_SHELL, "ShellId")
        .unwrap()
        .trimmed_text()
        .to_owned();
    let req = fixture("receive_request.xml")
        .replace("4283CBDC-3706-415B-88BD-B385F3E51A53", &shell)
        .replace(" CommandId=\"CF84C20A-0A35-43FA-AF78-0B4711DA5F30\"", "");
    let (status, text) = post(http, url, req).await;
    assert_eq!(status, 500);
    assert_eq!(
        Envelope::parse(&text).unwrap().fault().unwrap().code,
        Some(87)
    );
}

/// MaxShellsPerUser (2 here, one held by the step before): the next Create is accepted, the
/// client's after it refused with QuotaLimit.
async fn then_the_third_shell_is_refused_with_quota_limit(http: &reqwest::Client, url: &str) {
    let (status, _) = post(http, url, fixture("create_shell_request.xml")).await;
    assert_eq!(status, 200);
    let mut cfg = ClientConfig::new(
        url.parse().unwrap(),
        lab::DEFAULT_USER,
        SecretString::from(common::LAB_PASSWORD),
    );
    cfg.allow_unencrypted = true;
    let client = WinrmClient::new(cfg).unwrap();
    match client.open_shell(&ShellOptions::default()).await {
        Err(WinrmError::ShellQuota(f)) => assert_eq!(f.code, Some(soap::CODE_QUOTA_LIMIT)),
        Err(e) => panic!("expected QuotaLimit, got {e}"),
        Ok(_) => panic!("expected QuotaLimit, got a shell"),
    }
}

#[tokio::test]
async fn the_client_streams_large_stdin_and_output_across_envelopes() {
    use lab::wsman::{WsmanConfig, router};
    let app = router(
        WsmanConfig {
            users: vec![("u".into(), SecretString::from("p"))],
            max_shells_per_user: 5,
            max_operation_timeout: std::time::Duration::from_secs(60),
            hostname: "T".into(),
            max_envelope_kb: 500,
            cbt_hardening: Default::default(),
            kerberos: None,
            credssp: None,
            trusted_for_delegation: false,
            allow_remote_shell_access: true,
            deny_ntlm: false,
        },
        std::sync::Arc::new(common::echo_host::EchoHost),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(lab::serve(listener, app, None));
    let mut cfg = ClientConfig::new(
        format!("http://{addr}/wsman").parse().unwrap(),
        "u",
        SecretString::from("p"),
    );
    cfg.allow_unencrypted = true;
    cfg.operation_timeout = std::time::Duration::from_secs(1);
    let client = WinrmClient::new(cfg).unwrap();
    let shell = client.open_shell(&ShellOptions::default()).await.unwrap();

    // 700 KB of every byte value: several Send envelopes in, several Receive replies out.
    let data: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
    let out = shell.run("echo-stdin", &[], Some(&data)).await.unwrap();
    assert_eq!(out.exit_code, 7);
    assert!(
        out.stdout == data && out.stderr == data,
        "output differs from input"
    );

    // A command slower than OperationTimeout: the client keeps polling through the timeout faults.
    let out = shell.run("slow", &[], Some(b"")).await.unwrap();
    assert_eq!(out.stdout, b"late\r\n");
    shell.close().await.unwrap();

    // Basic over plain HTTP is refused unless allowed.
    let cfg = ClientConfig::new(
        format!("http://{addr}/wsman").parse().unwrap(),
        "u",
        SecretString::from("p"),
    );
    assert!(matches!(WinrmClient::new(cfg), Err(WinrmError::Config(_))));
}

/// The fuzz target's inputs in small: every recorded reply, cut short at many points and with
/// bytes flipped (a fixed xorshift sequence, so a failure reproduces). Nothing may panic.
#[test]
fn damaged_replies_never_panic_the_reader() {
    let dir = format!("{}/tests/fixtures/winrm", env!("CARGO_MANIFEST_DIR"));
    let mut seed: u64 = 0x2026_1201;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut inputs = 0;
    for entry in std::fs::read_dir(&dir).expect("fixtures") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("xml") {
            continue;
        }
        let bytes = std::fs::read(&path).expect("fixture");
        for cut in (0..bytes.len()).step_by(37) {
            winrm::read_untrusted_reply(&bytes[..cut]);
            inputs += 1;
        }
        for _ in 0..200 {
            let mut b = bytes.clone();
            for _ in 0..(next() % 8 + 1) {
                let at = (next() as usize) % b.len();
                b[at] = next() as u8;
            }
            winrm::read_untrusted_reply(&b);
            inputs += 1;
        }
    }
    // The encrypted framing, damaged the same way.
    let framed = winrm::ntlm::frame(
        &winrm::ntlm::Sealed {
            signature: vec![1; 16],
            ciphertext: b"<s:Envelope/>".to_vec(),
        },
        13,
    );
    for cut in 0..framed.len() {
        winrm::read_untrusted_reply(&framed[..cut]);
        inputs += 1;
    }
    assert!(inputs > 5000, "{inputs} inputs");
}
